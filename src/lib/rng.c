/* rng.c — see rng.h. */
#include "rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void rn_rng_seed(rn_rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t rn_rng_next(rn_rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

uint64_t rn_rng_limit(uint64_t n)
{
	return UINT64_MAX - UINT64_MAX % n;
}

uint64_t rn_rng_below_lim(rn_rng *r, uint64_t n, uint64_t limit)
{
	/* rejection keeps it unbiased */
	uint64_t v;
	do
		v = rn_rng_next(r);
	while (v >= limit);
	return v % n;
}

uint64_t rn_rng_below(rn_rng *r, uint64_t n)
{
	return rn_rng_below_lim(r, n, rn_rng_limit(n));
}

double rn_rng_unit(rn_rng *r)
{
	return (double)(rn_rng_next(r) >> 11) * 0x1.0p-53;
}

double rn_rng_exp(rn_rng *r, double mean)
{
	return -mean * log(1.0 - rn_rng_unit(r));
}
