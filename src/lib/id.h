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

#define RN_ID_BYTES 20
#define RN_ID_BITS 160
#define RN_ID_HEX 41 /* 40 hex digits and the terminator */

typedef struct {
	uint8_t b[RN_ID_BYTES];
} rn_id;

struct rn_rng;

/* Compared as big-endian words: ids are compared on every routing step, and a call
 * into libc's memcmp was a fifth of the simulator's time. */
static inline uint64_t rn_id_word_(const uint8_t *p, int bytes)
{
	uint64_t v = 0;
	for (int i = 0; i < bytes; i++)
		v = v << 8 | p[i];
	return v;
}

static inline int rn_id_cmp(const rn_id *a, const rn_id *b)
{
	uint64_t x = rn_id_word_(a->b, 8), y = rn_id_word_(b->b, 8);
	if (x != y)
		return x < y ? -1 : 1;
	x = rn_id_word_(a->b + 8, 8);
	y = rn_id_word_(b->b + 8, 8);
	if (x != y)
		return x < y ? -1 : 1;
	x = rn_id_word_(a->b + 16, 4);
	y = rn_id_word_(b->b + 16, 4);
	return x < y ? -1 : x > y;
}

static inline bool rn_id_eq(const rn_id *a, const rn_id *b) { return rn_id_cmp(a, b) == 0; }
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

/* x in the ring interval (a, b]; (a, a] is the whole ring. */
bool rn_id_in_oc(const rn_id *x, const rn_id *a, const rn_id *b);
/* x in the ring interval (a, b); (a, a) is the whole ring but a. */
bool rn_id_in_oo(const rn_id *x, const rn_id *a, const rn_id *b);

void rn_id_to_hex(const rn_id *x, char out[RN_ID_HEX]);
/* Parses 1..40 hex digits, left-aligned (a short string names the top bits). 0 or -1. */
int rn_id_from_hex(rn_id *out, const char *hex);

#endif
