/* tl_rng.c - xoshiro256** seeded through splitmix64. */
#include "tl_rng.h"

static uint64_t
splitmix64(uint64_t *x)
{
	uint64_t	z = (*x += UINT64_C(0x9E3779B97F4A7C15));

	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

static inline uint64_t
rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

void
tl_rng_seed(tl_rng *rng, uint64_t seed)
{
	uint64_t	x = seed;

	for (int i = 0; i < 4; i++)
		rng->s[i] = splitmix64(&x);
}

uint64_t
tl_rng_next(tl_rng *rng)
{
	uint64_t   *s = rng->s;
	uint64_t	result = rotl(s[1] * 5, 7) * 9;
	uint64_t	t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

double
tl_rng_uniform(tl_rng *rng)
{
	return (double) (tl_rng_next(rng) >> 11) * 0x1.0p-53;
}

uint64_t
tl_rng_below(tl_rng *rng, uint64_t n)
{
	/* Rejection sampling keeps the result unbiased. */
	uint64_t	limit = UINT64_MAX - UINT64_MAX % n;
	uint64_t	x;

	do
		x = tl_rng_next(rng);
	while (x >= limit);
	return x % n;
}

void
tl_rng_shuffle(tl_rng *rng, int32_t *idx, int n)
{
	for (int i = n - 1; i > 0; i--)
	{
		int			j = (int) tl_rng_below(rng, (uint64_t) i + 1);
		int32_t		tmp = idx[i];

		idx[i] = idx[j];
		idx[j] = tmp;
	}
}
