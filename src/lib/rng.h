/* rng.h — the seeded pseudo-random generator a driver owns and hands to cores.
 * xoshiro256** seeded through splitmix64: fast, and the same seed gives the same stream
 * on every machine, which the simulator's byte-for-byte reproducibility rests on. */
#ifndef RN_RNG_H
#define RN_RNG_H

#include <stdint.h>

typedef struct rn_rng {
	uint64_t s[4];
} rn_rng;

void rn_rng_seed(rn_rng *r, uint64_t seed);
uint64_t rn_rng_next(rn_rng *r);
/* Uniform in [0, n); n > 0. */
uint64_t rn_rng_below(rn_rng *r, uint64_t n);
/* The same, for many draws below one n: limit = rn_rng_limit(n), computed once, saves a
 * division per draw. */
uint64_t rn_rng_limit(uint64_t n);
uint64_t rn_rng_below_lim(rn_rng *r, uint64_t n, uint64_t limit);
/* Uniform in [0, 1). */
double rn_rng_unit(rn_rng *r);
/* Exponentially distributed with the given mean (for Poisson processes). */
double rn_rng_exp(rn_rng *r, double mean);

#endif
