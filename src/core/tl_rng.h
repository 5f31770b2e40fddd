/*
 * tl_rng.h - a small seedable generator (xoshiro256**, seeded by splitmix64).
 *
 * All randomness of a training run (shuffling, crops, flips, fc init) comes
 * from generators of this type, drawn on one thread, so a run is reproducible
 * from its seed whatever the thread count.  The state is plain data so it can
 * be checkpointed.
 */
#ifndef TL_RNG_H
#define TL_RNG_H

#include <stdint.h>

typedef struct tl_rng
{
	uint64_t	s[4];
} tl_rng;

void		tl_rng_seed(tl_rng *rng, uint64_t seed);
uint64_t	tl_rng_next(tl_rng *rng);
/* Uniform double in [0, 1) with 53 random bits. */
double		tl_rng_uniform(tl_rng *rng);
/* Uniform integer in [0, n), unbiased; n > 0. */
uint64_t	tl_rng_below(tl_rng *rng, uint64_t n);
/* Fisher-Yates shuffle of an index array. */
void		tl_rng_shuffle(tl_rng *rng, int32_t *idx, int n);

#endif
