/* test_seen.c — the table of checked chunk contents (src/files/seen.h).
 *
 * The table against a brute-force model (per set, the names it holds from the one used
 * most lately to the one used least, at most two, the least used giving up its place);
 * the tags: the same bytes give the same tag however they are cut into pieces, any
 * change of one bit, of the length or of the key gives another; the check: right bytes
 * pass, by SHA-256 the first time and by their tag after, and damaged bytes, another
 * chunk's bytes or a wrong name never pass. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "files/seen.h"
#include "lib/err.h"
#include "lib/rng.h"

#define POOL  64 /* names, in NSETS sets */
#define NSETS 5

typedef struct {
	int name[2]; /* indexes into the pool, most lately used first; -1: empty */
	uint8_t tag[2][FILES_TAG];
} mset;

/* the keys a driver would draw at random */
static const uint8_t key1[FILES_SEEN_KEY] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
static const uint8_t key2[FILES_SEEN_KEY] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17};

static void name_of(int i, uint8_t name[FILES_HASH])
{
	/* the set index is the first four bytes, little-endian, modulo FILES_SEEN_SETS */
	memset(name, 0, FILES_HASH);
	uint32_t set = (uint32_t)(i % NSETS) * 977u;
	name[0] = (uint8_t)set;
	name[1] = (uint8_t)(set >> 8);
	name[4] = (uint8_t)(i + 1); /* the rest tells names of one set apart */
	name[31] = (uint8_t)(i * 7);
}

static void model_touch(mset *m, int at)
{
	if (at == 1) { /* to the front */
		int n = m->name[1];
		uint8_t t[FILES_TAG];
		memcpy(t, m->tag[1], FILES_TAG);
		m->name[1] = m->name[0];
		memcpy(m->tag[1], m->tag[0], FILES_TAG);
		m->name[0] = n;
		memcpy(m->tag[0], t, FILES_TAG);
	}
}

static void test_table_against_model(void **state)
{
	(void)state;
	files_seen *s = files_seen_new(key1);
	assert_non_null(s);
	mset model[NSETS];
	for (int i = 0; i < NSETS; i++)
		model[i] = (mset){.name = {-1, -1}};
	rn_rng r;
	rn_rng_seed(&r, 7);
	for (int step = 0; step < 200000; step++) {
		int i = (int)rn_rng_below(&r, POOL);
		mset *m = &model[i % NSETS];
		uint8_t name[FILES_HASH], tag[FILES_TAG], got[FILES_TAG];
		name_of(i, name);
		int at = m->name[0] == i ? 0 : m->name[1] == i ? 1 : -1;
		if (rn_rng_below(&r, 2)) {
			for (int b = 0; b < FILES_TAG; b++)
				tag[b] = (uint8_t)rn_rng_below(&r, 256);
			files_seen_put(s, name, tag);
			if (at < 0) { /* the least used goes */
				m->name[1] = m->name[0];
				memcpy(m->tag[1], m->tag[0], FILES_TAG);
				m->name[0] = i;
			} else
				model_touch(m, at);
			memcpy(m->tag[0], tag, FILES_TAG);
		} else {
			bool known = files_seen_get(s, name, got);
			assert_int_equal(known, at >= 0);
			if (at >= 0) {
				assert_memory_equal(got, m->tag[at], FILES_TAG);
				model_touch(m, at);
			}
		}
	}
	files_seen_free(s);
}

static void fill(rn_rng *r, uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)rn_rng_below(r, 256);
}

static void test_tags(void **state)
{
	(void)state;
	files_seen *s = files_seen_new(key1), *other = files_seen_new(key2);
	assert_non_null(s);
	assert_non_null(other);
	rn_rng r;
	rn_rng_seed(&r, 11);
	size_t n = (1u << 20) + 3;
	uint8_t *b = malloc(n + 1);
	assert_non_null(b);
	fill(&r, b, n);
	uint8_t t0[FILES_TAG], t[FILES_TAG];
	assert_int_equal(files_seen_tag(s, b, n, t0), 0);
	assert_int_equal(files_seen_tag(s, b, n, t), 0);
	assert_memory_equal(t0, t, FILES_TAG);
	for (int k = 0; k < 20; k++) { /* cut into random pieces: the same tag */
		files_tagger *g = files_tagger_begin(s);
		assert_non_null(g);
		for (size_t at = 0; at < n;) {
			size_t p = 1 + rn_rng_below(&r, 200000);
			p = p > n - at ? n - at : p;
			files_tagger_update(g, b + at, p);
			at += p;
		}
		assert_int_equal(files_tagger_end(g, t), 0);
		assert_memory_equal(t0, t, FILES_TAG);
	}
	for (int k = 0; k < 300; k++) { /* one bit anywhere: another tag */
		size_t at = k < 2 ? (k ? n - 1 : 0) : rn_rng_below(&r, n);
		uint8_t bit = (uint8_t)(1u << rn_rng_below(&r, 8));
		b[at] ^= bit;
		assert_int_equal(files_seen_tag(s, b, n, t), 0);
		assert_memory_not_equal(t0, t, FILES_TAG);
		b[at] ^= bit;
	}
	assert_int_equal(files_seen_tag(s, b, n - 1, t), 0); /* one byte shorter */
	assert_memory_not_equal(t0, t, FILES_TAG);
	b[n] = 0; /* one zero byte longer */
	assert_int_equal(files_seen_tag(s, b, n + 1, t), 0);
	assert_memory_not_equal(t0, t, FILES_TAG);
	assert_int_equal(files_seen_tag(other, b, n, t), 0); /* another key */
	assert_memory_not_equal(t0, t, FILES_TAG);
	assert_int_equal(files_tagger_end(NULL, t), RN_ENOMEM);
	free(b);
	files_seen_free(s);
	files_seen_free(other);
}

static void test_check(void **state)
{
	(void)state;
	files_seen *s = files_seen_new(key1);
	assert_non_null(s);
	rn_rng r;
	rn_rng_seed(&r, 13);
	size_t n = 300000;
	uint8_t *a = malloc(n), *c = malloc(n), na[FILES_HASH], nc[FILES_HASH];
	assert_non_null(a);
	assert_non_null(c);
	fill(&r, a, n);
	fill(&r, c, n);
	files_sha256(a, n, na);
	files_sha256(c, n, nc);
	bool by_mac = true;
	uint8_t tag[FILES_TAG];
	assert_false(files_seen_get(s, na, tag));
	assert_true(files_seen_check(s, na, a, n, &by_mac)); /* first: by SHA-256 */
	assert_false(by_mac);
	assert_true(files_seen_get(s, na, tag)); /* ... and now remembered */
	assert_true(files_seen_check(s, na, a, n, &by_mac));
	assert_true(by_mac);
	assert_false(files_seen_check(s, na, c, n, &by_mac));     /* another chunk's bytes */
	assert_false(files_seen_check(s, na, a, n - 1, &by_mac)); /* cut short */
	a[n / 2] ^= 0x10;                                         /* damaged */
	assert_false(files_seen_check(s, na, a, n, &by_mac));
	assert_false(by_mac);
	a[n / 2] ^= 0x10;
	assert_true(files_seen_check(s, na, a, n, &by_mac)); /* the tag was kept */
	assert_true(by_mac);
	c[0] ^= 1; /* never checked, damaged: refused, and not remembered */
	assert_false(files_seen_check(s, nc, c, n, &by_mac));
	assert_false(files_seen_get(s, nc, tag));
	free(a);
	free(c);
	files_seen_free(s);
}

int main(void)
{
	const struct CMUnitTest t[] = {
	    cmocka_unit_test(test_table_against_model),
	    cmocka_unit_test(test_tags),
	    cmocka_unit_test(test_check),
	};
	return cmocka_run_group_tests(t, NULL, NULL);
}
