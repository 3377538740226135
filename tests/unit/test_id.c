/* test_id.c — ring arithmetic checked against plain integer arithmetic on small rings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "lib/id.h"
#include "lib/rng.h"

static bool oc(uint64_t x, uint64_t a, uint64_t b, uint64_t mod)
{
	/* walk clockwise from a (exclusive) to b (inclusive) */
	for (uint64_t k = 1; k <= mod; k++) {
		uint64_t v = (a + k) % mod;
		if (v == x)
			return true;
		if (v == b)
			return false;
	}
	return false;
}

static bool oo(uint64_t x, uint64_t a, uint64_t b, uint64_t mod)
{
	return oc(x, a, b, mod) && (x != b || a == b) && !(a == b && x == a);
}

static void test_intervals_brute_force(void **state)
{
	(void)state;
	for (unsigned m = 1; m <= 4; m++) {
		uint64_t mod = 1ull << m;
		for (uint64_t a = 0; a < mod; a++)
			for (uint64_t b = 0; b < mod; b++)
				for (uint64_t x = 0; x < mod; x++) {
					rn_id ia, ib, ix;
					rn_id_from_u64(&ia, a, m);
					rn_id_from_u64(&ib, b, m);
					rn_id_from_u64(&ix, x, m);
					assert_int_equal(rn_id_in_oc(&ix, &ia, &ib),
					                 oc(x, a, b, mod));
					assert_int_equal(rn_id_in_oo(&ix, &ia, &ib),
					                 oo(x, a, b, mod));
				}
	}
}

static void test_add_sub_bitlen(void **state)
{
	(void)state;
	rn_rng rng;
	rn_rng_seed(&rng, 7);
	for (unsigned m = 1; m <= 40; m++) {
		uint64_t mod = 1ull << m;
		for (int t = 0; t < 200; t++) {
			uint64_t a = rn_rng_below(&rng, mod), b = rn_rng_below(&rng, mod);
			unsigned i = (unsigned)rn_rng_below(&rng, m);
			rn_id ia, ib, r;
			rn_id_from_u64(&ia, a, m);
			rn_id_from_u64(&ib, b, m);
			assert_int_equal(rn_id_to_u64(&ia, m), a);
			rn_id_add_pow2(&r, &ia, RN_ID_BITS - m + i);
			assert_int_equal(rn_id_to_u64(&r, m), (a + (1ull << i)) % mod);
			rn_id_sub(&r, &ia, &ib);
			uint64_t d = (a - b + mod) % mod;
			assert_int_equal(rn_id_to_u64(&r, m), d);
			unsigned len = 0;
			while (len < 64 && (d >> len))
				len++;
			assert_int_equal(rn_id_bitlen(&r), d ? len + RN_ID_BITS - m : 0);
			assert_int_equal(rn_id_dist_bitlen(&ia, &ib), rn_id_bitlen(&r));
		}
	}
}

static void test_word_ops_on_wide_ids(void **state)
{
	/* distances that borrow across the 64/64/32-bit word boundaries */
	(void)state;
	rn_rng rng;
	rn_rng_seed(&rng, 11);
	for (int t = 0; t < 20000; t++) {
		rn_id a, b, d;
		rn_id_random(&a, &rng, 160);
		b = a;
		/* make b differ from a only in a random suffix, so borrows chain */
		int from = (int)rn_rng_below(&rng, RN_ID_BYTES);
		for (int i = from; i < RN_ID_BYTES; i++)
			b.b[i] = (uint8_t)rn_rng_below(&rng, 256);
		rn_id_sub(&d, &a, &b);
		unsigned len = 0;
		for (int i = 0; i < RN_ID_BYTES && !len; i++)
			for (int bit = 7; bit >= 0 && !len; bit--)
				if (d.b[i] >> bit & 1)
					len =
					    (unsigned)(RN_ID_BYTES - 1 - i) * 8 + (unsigned)bit + 1;
		assert_int_equal(rn_id_dist_bitlen(&a, &b), len);
		assert_int_equal(rn_id_cmp(&a, &b) < 0, memcmp(a.b, b.b, RN_ID_BYTES) < 0);
		assert_int_equal(rn_id_cmp(&a, &b) == 0, memcmp(a.b, b.b, RN_ID_BYTES) == 0);
	}
}

static void set_words(rn_id *x, uint64_t top, uint64_t mid, uint32_t low)
{
	/* big-endian bytes: 64 top bits, 64 middle, 32 low */
	for (int i = 0; i < 8; i++) {
		x->b[i] = (uint8_t)(top >> (56 - 8 * i));
		x->b[8 + i] = (uint8_t)(mid >> (56 - 8 * i));
	}
	for (int i = 0; i < 4; i++)
		x->b[16 + i] = (uint8_t)(low >> (24 - 8 * i));
}

static void test_top_word_shortcuts(void **state)
{
	/* the _t forms decide by the top words when they can; they must agree with the
	 * full comparisons everywhere, above all on near-ties, borrows and powers of two */
	(void)state;
	static const uint64_t tops[] = {0, 1, 2, 3, 4, 5, 1ull << 63, (1ull << 63) + 1, ~0ull};
	static const uint64_t rest[] = {0, 1, 1ull << 63, ~0ull};
	enum { NT = sizeof tops / sizeof tops[0], NR = sizeof rest / sizeof rest[0] };
	rn_id ids[NT * NR];
	unsigned n = 0;
	for (unsigned t = 0; t < NT; t++)
		for (unsigned r = 0; r < NR; r++)
			set_words(&ids[n++], tops[t], rest[r], (uint32_t)rest[r]);
	rn_rng rng;
	rn_rng_seed(&rng, 5);
	for (unsigned i = 0; i < n; i++)
		for (unsigned j = 0; j < n; j++) {
			const rn_id *a = &ids[i], *b = &ids[j];
			uint64_t at = rn_id_top64(a), bt = rn_id_top64(b);
			assert_int_equal(rn_id_dist_bitlen_t(a, at, b, bt),
			                 rn_id_dist_bitlen(a, b));
			for (unsigned k = 0; k < n; k++) {
				const rn_id *x = &ids[k];
				uint64_t xt = rn_id_top64(x);
				assert_int_equal(rn_id_in_oo_t(x, xt, a, at, b, bt),
				                 rn_id_in_oo(x, a, b));
				assert_int_equal(rn_id_in_oc_t(x, xt, a, at, b, bt),
				                 rn_id_in_oc(x, a, b));
			}
		}
	for (int t = 0; t < 100000; t++) {
		rn_id x, a, b;
		rn_id_random(&x, &rng, 160);
		rn_id_random(&a, &rng, 160);
		rn_id_random(&b, &rng, 160);
		if (t & 1) /* share the top word, so the full compare must decide */
			memcpy(a.b, x.b, 8);
		uint64_t xt = rn_id_top64(&x), at = rn_id_top64(&a), bt = rn_id_top64(&b);
		assert_int_equal(rn_id_in_oo_t(&x, xt, &a, at, &b, bt), rn_id_in_oo(&x, &a, &b));
		assert_int_equal(rn_id_in_oc_t(&x, xt, &a, at, &b, bt), rn_id_in_oc(&x, &a, &b));
		assert_int_equal(rn_id_dist_bitlen_t(&x, xt, &a, at), rn_id_dist_bitlen(&x, &a));
	}
}

static void test_wraparound_at_zero(void **state)
{
	(void)state;
	rn_id max, zero, one, r;
	memset(&max, 0xff, sizeof max);
	memset(&zero, 0, sizeof zero);
	rn_id_add_pow2(&one, &zero, 0);
	rn_id_add_pow2(&r, &max, 0);
	assert_true(rn_id_eq(&r, &zero));
	assert_true(rn_id_in_oc(&zero, &max, &one));
	assert_true(rn_id_in_oo(&zero, &max, &one));
	assert_false(rn_id_in_oo(&one, &max, &one));
	assert_true(rn_id_in_oc(&max, &one, &zero));
}

static void test_hash_and_truncate(void **state)
{
	(void)state;
	rn_id h;
	char hex[RN_ID_HEX];
	rn_id_hash(&h, "abc", 3, 160);
	rn_id_to_hex(&h, hex);
	assert_string_equal(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
	rn_id_hash(&h, "abc", 3, 15);
	rn_id_to_hex(&h, hex);
	/* 0xa998 keeps the top 15 bits of 0xa999 */
	assert_string_equal(hex, "a998000000000000000000000000000000000000");
	assert_int_equal(rn_id_to_u64(&h, 15), 0xa999 >> 1);
	rn_id back;
	assert_int_equal(rn_id_from_hex(&back, hex), 0);
	assert_true(rn_id_eq(&back, &h));
	assert_int_equal(rn_id_from_hex(&back, "xyz"), -1);
	assert_int_equal(rn_id_from_hex(&back, ""), -1);
}

static void test_random_stays_on_ring(void **state)
{
	(void)state;
	rn_rng a, b;
	rn_rng_seed(&a, 42);
	rn_rng_seed(&b, 42);
	for (unsigned m = 1; m <= 160; m++) {
		rn_id x, y;
		rn_id_random(&x, &a, m);
		rn_id_random(&y, &b, m);
		assert_true(rn_id_eq(&x, &y));
		rn_id t = x;
		rn_id_truncate(&t, m);
		assert_true(rn_id_eq(&t, &x));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_intervals_brute_force), cmocka_unit_test(test_add_sub_bitlen),
	    cmocka_unit_test(test_word_ops_on_wide_ids),  cmocka_unit_test(test_top_word_shortcuts),
	    cmocka_unit_test(test_wraparound_at_zero),    cmocka_unit_test(test_hash_and_truncate),
	    cmocka_unit_test(test_random_stays_on_ring),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
