/* test_traffic.c — the traffic history against a brute-force oracle: every message counted
 * is kept in a plain list with its time, and each sample still in the ring buffer must hold
 * exactly the sum of the messages of its window, its length and its number; the totals
 * must be the sum of everything. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/rng.h"
#include "net/traffic.h"

typedef struct {
	unsigned type;
	int dir;
	size_t bytes;
	uint64_t sample; /* the number of the sample it falls in */
} event;

static void run(uint64_t seed, unsigned steps)
{
	rn_rng r;
	rn_rng_seed(&r, seed);
	traffic *t = malloc(sizeof *t);
	event *ev = malloc(steps * 5 * sizeof *ev);           /* at most 4 a step */
	uint64_t *starts = calloc(steps + 1, sizeof *starts); /* when sample k began */
	assert_non_null(t);
	assert_non_null(ev);
	assert_non_null(starts);
	uint64_t now = 1000 + rn_rng_below(&r, 100000);
	traffic_init(t, now);
	starts[0] = now;
	size_t nev = 0;
	uint64_t samples = 0;
	for (unsigned s = 0; s < steps; s++) {
		now += rn_rng_below(&r, 400); /* the driver's timer: every 0-400 ms */
		unsigned k = (unsigned)rn_rng_below(&r, 5);
		for (unsigned i = 0; i < k; i++) {
			/* out-of-range types and directions are ignored, not counted */
			event e = {(unsigned)rn_rng_below(&r, TR_TYPES + 2),
			           (int)rn_rng_below(&r, 3), (size_t)rn_rng_below(&r, 5000),
			           samples};
			traffic_count(t, e.type, e.dir, e.bytes);
			if (e.type < TR_TYPES && e.dir < 2)
				ev[nev++] = e;
		}
		bool due = now >= starts[samples] + TR_INTERVAL;
		assert_int_equal(traffic_due(t, now), due);
		if (due) {
			traffic_sample(t, now);
			samples++;
			starts[samples] = now;
		}
	}
	assert_int_equal(t->seq, samples);
	uint64_t oldest = samples > TR_SLOTS ? samples - TR_SLOTS : 0;
	assert_int_equal(traffic_first(t, 0), oldest);
	assert_int_equal(traffic_first(t, samples + 5), samples);
	assert_null(traffic_get(t, samples));
	if (oldest)
		assert_null(traffic_get(t, oldest - 1));
	for (uint64_t k = oldest; k < samples; k++) {
		const tr_sample *s = traffic_get(t, k);
		assert_non_null(s);
		assert_int_equal(s->at, starts[k + 1]);
		assert_int_equal(s->ms, starts[k + 1] - starts[k]);
		for (int d = 0; d < 2; d++)
			for (unsigned y = 0; y < TR_TYPES; y++) {
				uint64_t m = 0, b = 0;
				for (size_t i = 0; i < nev; i++)
					if (ev[i].sample == k && ev[i].dir == d &&
					    ev[i].type == y) {
						m++;
						b += ev[i].bytes;
					}
				assert_int_equal(s->msgs[d][y], m);
				assert_int_equal(s->bytes[d][y], b);
			}
	}
	for (int d = 0; d < 2; d++)
		for (unsigned y = 0; y < TR_TYPES; y++) {
			uint64_t m = 0, b = 0;
			for (size_t i = 0; i < nev; i++)
				if (ev[i].dir == d && ev[i].type == y) {
					m++;
					b += ev[i].bytes;
				}
			assert_int_equal(t->msgs[d][y], m);
			assert_int_equal(t->bytes[d][y], b);
		}
	free(starts);
	free(ev);
	free(t);
}

static void test_short_run(void **state)
{
	(void)state;
	run(1, 40); /* fewer samples than slots */
}

static void test_wraps_around(void **state)
{
	(void)state;
	for (uint64_t seed = 2; seed < 6; seed++)
		run(seed, 3000); /* ~600 samples: the ring buffer wraps three times */
}

static void test_names(void **state)
{
	(void)state;
	for (unsigned k = 0; k < TR_TYPES; k++) {
		assert_non_null(traffic_type_name(k));
		for (unsigned j = 0; j < k; j++)
			assert_string_not_equal(traffic_type_name(k), traffic_type_name(j));
	}
	assert_null(traffic_type_name(TR_TYPES));
	assert_string_equal(traffic_type_name(TR_RING_BASE + 6 - 1), "ping");
	assert_string_equal(traffic_type_name(TR_KV_BASE + 1 - 1), "kv_req");
	/* the mappings from the wire's types: every one a distinct index, the rest none */
	assert_int_equal(traffic_ring_type(0), TR_TYPES);
	assert_int_equal(traffic_ring_type(9), TR_TYPES);
	assert_int_equal(traffic_kv_type(0), TR_TYPES);
	assert_int_equal(traffic_kv_type(13), TR_TYPES);
	assert_string_equal(traffic_type_name(traffic_ring_type(8)), "leave");
	assert_string_equal(traffic_type_name(traffic_kv_type(1)), "kv_req");
	assert_string_equal(traffic_type_name(traffic_kv_type(10)), "kv_purge");
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_short_run),
	                                   cmocka_unit_test(test_wraps_around),
	                                   cmocka_unit_test(test_names)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
