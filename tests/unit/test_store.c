/* The store's durability bookkeeping (src/store/store.h, "Durability") against a model of
 * what must be on disk, and its records against a map kept beside it: random batches
 * (some writing, some not), single calls, flushes from another thread while the owner
 * commits, a close and a reopen that must find every record. */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/err.h"
#include "store/store.h"
#include "store/wal.h"

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
	_Atomic unsigned flushes;
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
 * none; a call outside a batch is durable at once; a batch's commit is not, nor does it
 * make any earlier one durable (fewer writes than a checkpoint takes); a flush makes
 * durable what had committed before it. */
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
			if (nw)
				committed++; /* (its frame is in the log, not synced) */
		} else if (what == 2) {      /* a flush, as the node's thread pool runs it */
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
		/* commits take no sync now: every 30th waits for a flush to run beside them */
		unsigned had = f.flushes;
		for (int w = 0; b % 30 == 0 && f.flushes < had + 2 && w < 5000; w++)
			nanosleep(&(struct timespec){0, 1000000}, NULL);
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

/* Copies file a of the store's directory to b (both names in dir). */
static void copy_file(const char *a, const char *b)
{
	char pa[160], pb[160];
	snprintf(pa, sizeof pa, "%s/%s", dir, a);
	snprintf(pb, sizeof pb, "%s/%s", dir, b);
	FILE *in = fopen(pa, "rb"), *out = fopen(pb, "wb");
	assert_non_null(in);
	assert_non_null(out);
	char buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof buf, in)) > 0)
		assert_int_equal(fwrite(buf, 1, n, out), n);
	fclose(in);
	fclose(out);
}

static int del(store *s, int k)
{
	rn_id id = kid_of(k);
	return store_del(s, &id);
}

/* Random batches of puts and deletes (each delete of a key the model holds), `steps` of
 * them. */
static void random_batches(store *s, uint64_t *model, uint64_t *stamp, unsigned *x, int steps)
{
	for (int b = 0; b < steps; b++) {
		assert_int_equal(store_batch_begin(s), 0);
		for (int i = 0; i < 1 + b % 5; i++) {
			*x = *x * 1103515245u + 12345u;
			int k = (int)((*x >> 8) % KEYS);
			if (model[k] && (*x >> 20) % 3 == 0) {
				assert_int_equal(del(s, k), 0);
				model[k] = 0;
			} else {
				assert_int_equal(put(s, k, *stamp), 0);
				model[k] = (*stamp)++;
			}
		}
		assert_int_equal(store_batch_end(s), 0);
	}
}

/* What the log is for: commits whose frames were synced, but which LMDB's file does not
 * hold (the machine stopped before a later sync carried their meta pages), come back when
 * the store opens. Simulated by putting back a copy of the data file taken before them,
 * beside the log as it was once they were durable. Many laps of a small log first; then
 * the store is opened again (which clears the log) and the copy is taken. */
static void test_log_gives_back_commits(void **state)
{
	(void)state;
	store *s;
	char err[200];
	assert_int_equal(store_open_sized(&s, dir, 16384, err, sizeof err), 0);
	uint64_t model[KEYS], stamp = 5000;
	for (int k = 0; k < KEYS; k++) { /* what the tests before left */
		rn_id id = kid_of(k);
		kv_record r;
		model[k] = store_get(s, &id, &r) == 0 ? r.v.stamp : 0;
	}
	unsigned x = 7;
	random_batches(s, model, &stamp, &x, 400); /* ~50 frames a lap: 8 laps or more */
	store_close(s);
	assert_int_equal(store_open_sized(&s, dir, 16384, err, sizeof err), 0);
	assert_true(store_replayed(s) == 0); /* (closing synced everything, and cleared it) */
	check_all(s, model);
	copy_file("data.mdb", "data.before");
	random_batches(s, model, &stamp, &x, 30); /* fewer frames than one lap */
	assert_int_equal(store_sync(s), 0);
	assert_true(store_durable(s) == store_committed(s));
	copy_file("kv.wal", "wal.after");
	store_close(s);
	copy_file("data.before", "data.mdb");
	copy_file("wal.after", "kv.wal");
	assert_int_equal(store_open_sized(&s, dir, 16384, err, sizeof err), 0);
	assert_true(store_replayed(s) > 0);
	check_all(s, model);
	store_close(s);
	assert_int_equal(store_open_sized(&s, dir, 16384, err, sizeof err), 0);
	assert_true(store_replayed(s) == 0); /* applied once, then cleared */
	check_all(s, model);
	store_close(s);
}

/* A commit larger than the log is made durable by LMDB's own syncs, and the log cleared:
 * an older frame (a put of a key this commit deletes) is not replayed over it after a
 * crash (the log put back as it was then). */
static void test_commit_larger_than_log(void **state)
{
	(void)state;
	store *s;
	char err[200], path[160];
	snprintf(path, sizeof path, "%s/kv.wal", dir);
	unlink(path); /* (a log keeps the size it was made with) */
	assert_int_equal(store_open_sized(&s, dir, 4096, err, sizeof err), 0);
	assert_int_equal(store_batch_begin(s), 0);
	assert_int_equal(put(s, 1, 9000), 0);
	assert_int_equal(store_batch_end(s), 0); /* logged */
	uint64_t c = store_committed(s);
	assert_true(store_durable(s) < c);
	static char big[6000];
	memset(big, 'x', sizeof big - 1);
	big[0] = big[sizeof big - 2] = '"';
	kv_record r = {.kid = kid_of(2),
	               .v = {.stamp = 9001, .writer = 7},
	               .key = (const uint8_t *)"key2",
	               .klen = 4,
	               .val = (const uint8_t *)big,
	               .vlen = strlen(big)};
	assert_int_equal(store_batch_begin(s), 0);
	assert_int_equal(del(s, 1), 0);
	assert_int_equal(store_put(s, &r), 0);
	assert_int_equal(store_batch_end(s), 0); /* not logged: durable at once */
	assert_true(store_committed(s) == c + 1 && store_durable(s) == c + 1);
	copy_file("kv.wal", "wal.after"); /* the log as a crash would leave it */
	store_close(s);
	copy_file("wal.after", "kv.wal");
	assert_int_equal(store_open_sized(&s, dir, 4096, err, sizeof err), 0);
	rn_id id1 = kid_of(1), id2 = kid_of(2);
	kv_record got;
	assert_int_equal(store_get(s, &id1, &got), RN_ENOTFOUND);
	assert_int_equal(store_get(s, &id2, &got), 0);
	assert_int_equal(got.vlen, strlen(big));
	store_close(s);
}

static int count_op(void *arg, bool put, const rn_id *kid, const uint8_t *b, size_t len)
{
	(void)put, (void)kid, (void)b, (void)len;
	(*(int *)arg)++;
	return 0;
}

/* The log's frames on their own: replay stops at a torn or damaged frame, and at the end
 * of the lap (an older lap's frames after it are not read); a frame that does not fit
 * after the last is refused (nothing written), one larger than the log always. */
static void test_log_frames(void **state)
{
	(void)state;
	char path[160], err[200];
	snprintf(path, sizeof path, "%s/frames.wal", dir);
	wal *w;
	assert_int_equal(wal_open(&w, path, 1024, err, sizeof err), 0);
	static uint8_t val[1024];
	memset(val, 'v', sizeof val);
	rn_id id = kid_of(3);
	int frames = 0, ops = 0;
	for (;; frames++) { /* frames of 2 ops, 25 + 125 bytes and a 32-byte header */
		wal_add(w, true, &id, val, 100);
		wal_add(w, false, &id, NULL, 0);
		int rc = wal_write(w);
		if (rc == WAL_FULL)
			break;
		assert_int_equal(rc, 0);
	}
	assert_int_equal(frames, 1024 / 182);
	assert_int_equal(wal_replay(w, count_op, &ops), frames);
	assert_int_equal(ops, 2 * frames);
	int fd = open(path, O_RDWR); /* a byte of the third frame's payload goes bad */
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "X", 1, 2 * 182 + 100), 1);
	close(fd);
	ops = 0;
	assert_int_equal(wal_replay(w, count_op, &ops), 2);
	wal_rewind(w); /* a new lap: one frame at 0, the older lap's after it */
	assert_int_equal(wal_write(w), 0);
	ops = 0;
	assert_int_equal(wal_replay(w, count_op, &ops), 1);
	assert_int_equal(ops, 2);
	wal_add(w, true, &id, val, 1024); /* larger than the log */
	assert_int_equal(wal_write(w), WAL_TOO_BIG);
	assert_false(wal_pending(w));
	assert_int_equal(wal_clear(w), 0);
	assert_int_equal(wal_replay(w, count_op, &ops), 0);
	wal_close(w);
	unlink(path);
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
	const char *more[] = {"kv.wal", "data.before", "wal.after"};
	for (int i = 0; i < 3; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, more[i]);
		unlink(path);
	}
	return rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_durability_model),
	    cmocka_unit_test(test_flush_beside_commits),
	    cmocka_unit_test(test_log_gives_back_commits),
	    cmocka_unit_test(test_commit_larger_than_log),
	    cmocka_unit_test(test_log_frames),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
