/* float_util.h - random float tensors and magnitudes in the unit tests. */
#ifndef TL_TEST_FLOAT_UTIL_H
#define TL_TEST_FLOAT_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "tl_rng.h"

/* n floats uniform in [-scale, scale), malloc'ed (at least one element). */
static inline float *
rand_floats(tl_rng *rng, int64_t n, double scale)
{
	float	   *v = malloc(sizeof(float) * (size_t) (n ? n : 1));

	for (int64_t i = 0; i < n; i++)
		v[i] = (float) ((2.0 * tl_rng_uniform(rng) - 1.0) * scale);
	return v;
}

static inline double
max_abs(const float *v, int64_t n)
{
	double		m = 0;

	for (int64_t i = 0; i < n; i++)
		if (fabs(v[i]) > m)
			m = fabs(v[i]);
	return m;
}

#endif
