/* id.h — 160-bit ring identifiers and their arithmetic.
 *
 * An id is a big-endian 160-bit number. An m-bit ring (1 <= m <= 160) keeps only the top m
 * bits and zeroes the rest, so arithmetic modulo 2^160 on such ids is exactly arithmetic
 * modulo 2^m on their top bits: one representation serves every ring width. */
#ifndef RN_ID_H
#define RN_ID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "bytes.h"

#define RN_ID_BYTES 20
#define RN_ID_BITS  160
#define RN_ID_HEX   41 /* 40 hex digits and the terminator */

typedef struct {
	uint8_t b[RN_ID_BYTES];
} rn_id;

struct rn_rng;

/* Ids are compared and subtracted as three big-endian words (64, 64, 32 bits, one load
 * each: rn_get64, rn_get32 in bytes.h): this is done on every routing step, and byte loops
 * or a call into memcmp were a fifth of the simulator's time. */

/* The top 64 bits of x. */
static inline uint64_t rn_id_top64(const rn_id *x)
{
	return rn_get64(x->b);
}

static inline int rn_id_cmp(const rn_id *a, const rn_id *b)
{
	uint64_t x = rn_get64(a->b), y = rn_get64(b->b);
	if (x != y)
		return x < y ? -1 : 1;
	x = rn_get64(a->b + 8);
	y = rn_get64(b->b + 8);
	if (x != y)
		return x < y ? -1 : 1;
	uint32_t u = rn_get32(a->b + 16), v = rn_get32(b->b + 16);
	return u < v ? -1 : u > v;
}

/* Number of significant bits of a - b (mod 2^160): log2 of the clockwise distance. */
static inline unsigned rn_id_dist_bitlen(const rn_id *a, const rn_id *b)
{
	uint32_t a2 = rn_get32(a->b + 16), b2 = rn_get32(b->b + 16);
	uint64_t a1 = rn_get64(a->b + 8), b1 = rn_get64(b->b + 8);
	uint64_t a0 = rn_get64(a->b), b0 = rn_get64(b->b);
	uint32_t d2 = a2 - b2;
	uint64_t borrow = a2 < b2;
	uint64_t d1 = a1 - b1 - borrow;
	borrow = a1 < b1 || (a1 == b1 && borrow);
	uint64_t d0 = a0 - b0 - borrow;
	if (d0)
		return 160 - (unsigned)__builtin_clzll(d0);
	if (d1)
		return 96 - (unsigned)__builtin_clzll(d1);
	if (d2)
		return 32 - (unsigned)__builtin_clz(d2);
	return 0;
}

static inline bool rn_id_eq(const rn_id *a, const rn_id *b)
{
	return rn_id_cmp(a, b) == 0;
}
bool rn_id_is_zero(const rn_id *a);

/* Keep the top m bits of x. */
void rn_id_truncate(rn_id *x, unsigned m);
/* SHA-1 of data, truncated to an m-bit ring. */
void rn_id_hash(rn_id *out, const void *data, size_t len, unsigned m);
/* A uniformly random id on an m-bit ring. */
void rn_id_random(rn_id *out, struct rn_rng *rng, unsigned m);
/* The id whose ring position (top m bits) is the integer v; v < 2^m (m <= 64 for this helper). */
void rn_id_from_u64(rn_id *out, uint64_t v, unsigned m);
/* The ring position of x on an m-bit ring as an integer (only for m <= 64). */
uint64_t rn_id_to_u64(const rn_id *x, unsigned m);

/* out = a + 2^bit (mod 2^160), bit counted from the least significant end. */
void rn_id_add_pow2(rn_id *out, const rn_id *a, unsigned bit);
/* out = a - b (mod 2^160): the clockwise distance from b to a. */
void rn_id_sub(rn_id *out, const rn_id *a, const rn_id *b);
/* Number of significant bits of x (0 for zero). */
unsigned rn_id_bitlen(const rn_id *x);

/* x in the ring interval (a, b]; (a, a] is the whole ring. Inline: every routing step
 * makes a few of these tests. */
static inline bool rn_id_in_oc(const rn_id *x, const rn_id *a, const rn_id *b)
{
	int ab = rn_id_cmp(a, b);
	if (ab == 0)
		return true;
	int xa = rn_id_cmp(x, a), xb = rn_id_cmp(x, b);
	if (ab < 0)
		return xa > 0 && xb <= 0;
	return xa > 0 || xb <= 0;
}

/* x in the ring interval (a, b); (a, a) is the whole ring but a. */
static inline bool rn_id_in_oo(const rn_id *x, const rn_id *a, const rn_id *b)
{
	int ab = rn_id_cmp(a, b);
	int xa = rn_id_cmp(x, a);
	if (ab == 0)
		return xa != 0;
	int xb = rn_id_cmp(x, b);
	if (ab < 0)
		return xa > 0 && xb < 0;
	return xa > 0 || xb < 0;
}

/* The same tests when the top words (rn_id_top64) of the ids are at hand. Ids whose top
 * words all differ, as nearly all do, are ordered by those words alone, so the rest of
 * each id is read only for near-ties. Routing makes several such tests per hop. */
static inline bool rn_top_distinct(uint64_t xt, uint64_t at, uint64_t bt)
{
	return xt != at && xt != bt && at != bt;
}

/* x in (a, b) by the top words alone; (a, b] is the same set when they are distinct */
static inline bool rn_top_in(uint64_t xt, uint64_t at, uint64_t bt)
{
	return at < bt ? at < xt && xt < bt : at < xt || xt < bt;
}

static inline bool rn_id_in_oo_t(const rn_id *x, uint64_t xt, const rn_id *a, uint64_t at,
                                 const rn_id *b, uint64_t bt)
{
	return rn_top_distinct(xt, at, bt) ? rn_top_in(xt, at, bt) : rn_id_in_oo(x, a, b);
}

static inline bool rn_id_in_oc_t(const rn_id *x, uint64_t xt, const rn_id *a, uint64_t at,
                                 const rn_id *b, uint64_t bt)
{
	return rn_top_distinct(xt, at, bt) ? rn_top_in(xt, at, bt) : rn_id_in_oc(x, a, b);
}

static inline unsigned rn_id_dist_bitlen_t(const rn_id *a, uint64_t at, const rn_id *b, uint64_t bt)
{
	/* a borrow from the lower words takes one off v, which changes its length only when
	 * v is zero or a power of two */
	uint64_t v = at - bt;
	if (v & (v - 1))
		return RN_ID_BITS - (unsigned)__builtin_clzll(v);
	return rn_id_dist_bitlen(a, b);
}

void rn_id_to_hex(const rn_id *x, char out[RN_ID_HEX]);
/* Parses 1..40 hex digits, left-aligned (a short string names the top bits). 0 or -1. */
int rn_id_from_hex(rn_id *out, const char *hex);

#endif
