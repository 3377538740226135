/* The store's durability bookkeeping (src/store/store.h, "Durability") against a model of
 * what must be on disk, and its records against a map kept beside it: random batches
 * (some writing, some not), single calls, flushes from another thread while the owner
 * commits, a close and a reopen that must find every record. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/store.h"

enum { KEYS = 64 };

static char dir[] = "/tmp/test_store.XXXXXX";

static rn_id kid_of(int k)
{
	rn_id id;
	memset(&id, 0, sizeof id);
	id.b[0] = (uint8_t)(k * 37 + 1);
	id.b[19] = (uint8_t)k;
	return id;
}

/* Record k at version stamp, its value "v<stamp>" */
static int put(store *s, int k, uint64_t stamp)
{
	char key[16], val[32];
	snprintf(key, sizeof key, "key%d", k);
	snprintf(val, sizeof val, "\"v%llu\"", (unsigned long long)stamp);
	kv_record r = {.kid = kid_of(k),
	               .v = {.stamp = stamp, .writer = 7},
	               .key = (const uint8_t *)key,
	               .klen = strlen(key),
	               .val = (const uint8_t *)val,
	               .vlen = strlen(val)};
	return store_put(s, &r);
}

static void check_all(store *s, const uint64_t *model)
{
	for (int k = 0; k < KEYS; k++) {
		rn_id id = kid_of(k);
		kv_record r;
		int rc = store_get(s, &id, &r);
		if (!model[k]) {
			assert_int_not_equal(rc, 0);
			continue;
		}
		assert_int_equal(rc, 0);
		assert_true(r.v.stamp == model[k]);
		char val[32];
		snprintf(val, sizeof val, "\"v%llu\"", (unsigned long long)model[k]);
		assert_int_equal(r.vlen, strlen(val));
		assert_memory_equal(r.val, val, r.vlen);
	}
}

typedef struct {
	store *s;
	volatile int stop;
	int failed;
	unsigned flushes;
} flusher;

static void *flush_loop(void *arg)
{
	flusher *f = arg;
	while (!f->stop) {
		if (store_flush(f->s) < 0)
			f->failed++;
		f->flushes++;
	}
	return NULL;
}

/* Numbering: a commit that wrote takes the next number; a batch that wrote nothing takes
 * none; a call outside a batch is durable at once; a batch's commit makes every earlier
 * commit durable but not itself; a flush makes durable what had committed before it. */
static void test_durability_model(void **state)
{
	(void)state;
	store *s;
	char err[200];
	assert_int_equal(store_open(&s, dir, err, sizeof err), 0);
	uint64_t model[KEYS] = {0}, stamp = 1, committed = 0, durable = 0;
	assert_true(store_committed(s) == 0 && store_durable(s) == 0);
	unsigned x = 99;
	for (int step = 0; step < 400; step++) {
		x = x * 1103515245u + 12345u;
		unsigned what = (x >> 16) % 4;
		if (what == 0) { /* one call on its own */
			int k = (int)((x >> 8) % KEYS);
			assert_int_equal(put(s, k, stamp), 0);
			model[k] = stamp++;
			durable = ++committed;
		} else if (what == 1) { /* a batch of 0 to 5 writes */
			unsigned nw = (x >> 4) % 6;
			assert_int_equal(store_batch_begin(s), 0);
			assert_false(store_batch_dirty(s));
			for (unsigned i = 0; i < nw; i++) {
				int k = (int)((x >> (i + 3)) % KEYS);
				assert_int_equal(put(s, k, stamp), 0);
				model[k] = stamp++;
				assert_true(store_batch_dirty(s));
			}
			/* what the batch wrote is readable in it, before it commits */
			check_all(s, model);
			assert_int_equal(store_batch_end(s), 0);
			if (nw) {
				durable =
				    committed; /* (this commit's sync carried the ones before) */
				committed++;
			}
		} else if (what == 2) { /* a flush, as the node's thread pool runs it */
			uint64_t upto = store_committed(s);
			assert_int_equal(store_flush(s), 0);
			store_set_durable(s, upto);
			durable = committed;
		} else { /* a sync on the owner's thread */
			assert_int_equal(store_sync(s), 0);
			durable = committed;
		}
		assert_true(store_committed(s) == committed);
		assert_true(store_durable(s) == durable);
		assert_true(durable <= committed);
	}
	store_set_durable(s, 0); /* never goes back */
	assert_true(store_durable(s) == durable);
	check_all(s, model);
	store_close(s);
	/* closing syncs; the reopened store has every record, and nothing waits */
	assert_int_equal(store_open(&s, dir, err, sizeof err), 0);
	check_all(s, model);
	assert_true(store_durable(s) == store_committed(s));
	store_close(s);
}

/* Flushes on another thread while the owner commits batches: every flush succeeds and
 * the store holds exactly what the owner wrote. */
static void test_flush_beside_commits(void **state)
{
	(void)state;
	store *s;
	char err[200];
	assert_int_equal(store_open(&s, dir, err, sizeof err), 0);
	uint64_t model[KEYS];
	for (int k = 0; k < KEYS; k++) { /* what the first test left */
		rn_id id = kid_of(k);
		kv_record r;
		model[k] = store_get(s, &id, &r) == 0 ? r.v.stamp : 0;
	}
	flusher f = {.s = s};
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, flush_loop, &f), 0);
	uint64_t stamp = 1000;
	for (int b = 0; b < 300; b++) {
		assert_int_equal(store_batch_begin(s), 0);
		for (int i = 0; i < 1 + b % 7; i++) {
			int k = (b * 7 + i * 13) % KEYS;
			assert_int_equal(put(s, k, stamp), 0);
			model[k] = stamp++;
		}
		assert_int_equal(store_batch_end(s), 0);
	}
	f.stop = 1;
	pthread_join(t, NULL);
	assert_int_equal(f.failed, 0);
	assert_true(f.flushes > 0);
	check_all(s, model);
	store_close(s);
	assert_int_equal(store_open(&s, dir, err, sizeof err), 0);
	check_all(s, model);
	store_close(s);
}

static int setup(void **state)
{
	(void)state;
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	char path[160];
	snprintf(path, sizeof path, "%s/data.mdb", dir);
	unlink(path);
	snprintf(path, sizeof path, "%s/lock.mdb", dir);
	unlink(path);
	return rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_durability_model),
	    cmocka_unit_test(test_flush_beside_commits),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
