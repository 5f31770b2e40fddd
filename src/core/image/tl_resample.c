/*
 * tl_resample.c - Pillow 9.4's Image.resize(BILINEAR) on RGB8, to the
 * byte.
 *
 * Pillow resamples separably (horizontal pass into a uint8 image, then
 * vertical pass), widens the triangle filter by the scale when shrinking
 * (antialiasing), normalises each output's weights in double and then turns
 * them into fixed point with 22 fraction bits (PRECISION_BITS = 32 - 8 - 2),
 * accumulating from 1 << 21 and taking >> 22 clipped to 0..255.  Everything
 * below follows libImaging/Resample.c step by step, including the float box
 * and the (int)(x + 0.5) bound rounding, so outputs are equal, not close.
 *
 * Only a window of the output is computed (the centre crop of Resize +
 * CenterCrop); every output pixel of Pillow depends only on its own weights,
 * so a window equals the same pixels of the full resize.
 */
#include "tl_image_internal.h"

/*
 * Pillow is built without FMA contraction; a fused multiply-add in the weight
 * computation (center = in0 + (xx + 0.5) * scale) could move a weight by one
 * unit of the 22-bit fixed point and a pixel by one level.
 */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)

typedef struct tl_coeffs
{
	int			ksize;			/* taps per output (room for the widest) */
	int		   *bounds;			/* per output: first input index, tap count */
	int32_t    *k;				/* per output: ksize fixed-point weights */
} tl_coeffs;

static double
bilinear_filter(double x)
{
	if (x < 0.0)
		x = -x;
	if (x < 1.0)
		return 1.0 - x;
	return 0.0;
}

static void
coeffs_free(tl_coeffs *c)
{
	free(c->bounds);
	free(c->k);
	c->bounds = NULL;
	c->k = NULL;
}

/*
 * Pillow's precompute_coeffs + normalize_coeffs_8bpc for the outputs
 * [first, first + count) of an in_size -> out_size resize of [in0, in1).
 */
static tl_code
coeffs_make(int in_size, float in0, float in1, int out_size, int first, int count,
			tl_coeffs *c, tl_error *err)
{
	double		scale,
				filterscale,
				support;
	double	   *w;

	c->bounds = NULL;
	c->k = NULL;
	filterscale = scale = (double) (in1 - in0) / out_size;
	if (filterscale < 1.0)
		filterscale = 1.0;
	support = 1.0 * filterscale;
	if (ceil(support) > (INT_MAX / 2 - 1) / 8)
		return tl_fail(err, TL_E_LIMIT, "resize from %d to %d pixels is too large", in_size, out_size);
	c->ksize = (int) ceil(support) * 2 + 1;
	if ((size_t) count > SIZE_MAX / sizeof(int32_t) / (size_t) c->ksize)
		return tl_fail(err, TL_E_LIMIT, "resize from %d to %d pixels is too large", in_size, out_size);
	c->bounds = malloc(sizeof(int) * 2 * (size_t) (count > 0 ? count : 1));
	c->k = malloc(sizeof(int32_t) * (size_t) c->ksize * (size_t) (count > 0 ? count : 1));
	w = malloc(sizeof(double) * (size_t) c->ksize);
	if (c->bounds == NULL || c->k == NULL || w == NULL)
	{
		free(w);
		coeffs_free(c);
		return tl_fail(err, TL_E_NOMEM, "out of memory resizing an image");
	}
	for (int i = 0; i < count; i++)
	{
		int			xx = first + i;
		double		center = in0 + (xx + 0.5) * scale;
		double		ww = 0.0;
		double		ss = 1.0 / filterscale;
		int			xmin = (int) (center - support + 0.5);
		int			xmax = (int) (center + support + 0.5);
		int32_t    *k = c->k + (size_t) i * c->ksize;
		int			x;

		if (xmin < 0)
			xmin = 0;
		if (xmax > in_size)
			xmax = in_size;
		xmax -= xmin;
		if (xmax > c->ksize)		/* cannot happen; keeps reads in bounds */
			xmax = c->ksize;
		for (x = 0; x < xmax; x++)
		{
			double		v = bilinear_filter((x + xmin - center + 0.5) * ss);

			w[x] = v;
			ww += v;
		}
		for (x = 0; x < xmax; x++)
		{
			double		v = ww != 0.0 ? w[x] / ww : w[x];

			k[x] = v < 0 ? (int32_t) (-0.5 + v * (1 << PRECISION_BITS))
				: (int32_t) (0.5 + v * (1 << PRECISION_BITS));
		}
		for (; x < c->ksize; x++)
			k[x] = 0;
		c->bounds[2 * i] = xmin;
		c->bounds[2 * i + 1] = xmax < 0 ? 0 : xmax;
	}
	free(w);
	return TL_OK;
}

static inline uint8_t
clip8(int32_t v)
{
	v >>= PRECISION_BITS;
	return (uint8_t) (v < 0 ? 0 : v > 255 ? 255 : v);
}

tl_code
tl_resample_bilinear(const uint8_t *src, int src_w, int src_h, size_t src_stride,
					 int out_w, int out_h, int win_x, int win_y, int win_w, int win_h,
					 uint8_t *dst, size_t dst_stride, tl_error *err)
{
	const float box[4] = {0.0f, 0.0f, (float) src_w, (float) src_h};
	int			need_h,
				need_v;
	tl_coeffs	ch = {0},
				cv = {0};
	uint8_t    *tmp = NULL;
	int32_t    *acc = NULL;
	const uint8_t *vsrc;
	size_t		vstride;
	int			row0 = 0;
	tl_code		rc;

	if (src_w <= 0 || src_h <= 0 || out_w <= 0 || out_h <= 0 || win_w <= 0 || win_h <= 0 ||
		win_x < 0 || win_y < 0 || win_x > out_w - win_w || win_y > out_h - win_h)
		return tl_fail(err, TL_E_INVALID, "invalid resize window");

	need_h = out_w != src_w || box[0] != 0.0f || box[2] != (float) out_w;
	need_v = out_h != src_h || box[1] != 0.0f || box[3] != (float) out_h;

	if (!need_h && !need_v)
	{
		for (int y = 0; y < win_h; y++)
			memcpy(dst + (size_t) y * dst_stride,
				   src + (size_t) (win_y + y) * src_stride + (size_t) win_x * 3, (size_t) win_w * 3);
		return TL_OK;
	}

	if (need_v)
	{
		rc = coeffs_make(src_h, box[1], box[3], out_h, win_y, win_h, &cv, err);
		if (rc != TL_OK)
			return rc;
	}

	if (need_h)
	{
		int			rows_first,
					rows_end;

		rc = coeffs_make(src_w, box[0], box[2], out_w, win_x, win_w, &ch, err);
		if (rc != TL_OK)
			goto done;
		/* Source rows the vertical pass will read (or the window's rows). */
		if (need_v)
		{
			rows_first = cv.bounds[0];
			rows_end = cv.bounds[0] + cv.bounds[1];
			for (int i = 1; i < win_h; i++)
			{
				if (cv.bounds[2 * i] < rows_first)
					rows_first = cv.bounds[2 * i];
				if (cv.bounds[2 * i] + cv.bounds[2 * i + 1] > rows_end)
					rows_end = cv.bounds[2 * i] + cv.bounds[2 * i + 1];
			}
		}
		else
		{
			rows_first = win_y;
			rows_end = win_y + win_h;
		}
		if (rows_end <= rows_first)
			rows_end = rows_first + 1;
		tmp = malloc((size_t) (rows_end - rows_first) * win_w * 3);
		if (tmp == NULL)
		{
			rc = tl_fail(err, TL_E_NOMEM, "out of memory resizing an image");
			goto done;
		}
		for (int y = rows_first; y < rows_end; y++)
		{
			const uint8_t *in = src + (size_t) y * src_stride;
			uint8_t    *out = need_v ? tmp + (size_t) (y - rows_first) * win_w * 3
				: dst + (size_t) (y - rows_first) * dst_stride;

			for (int x = 0; x < win_w; x++)
			{
				const int32_t *k = ch.k + (size_t) x * ch.ksize;
				const uint8_t *p = in + (size_t) ch.bounds[2 * x] * 3;
				int			n = ch.bounds[2 * x + 1];
				int32_t		s0 = 1 << (PRECISION_BITS - 1),
							s1 = s0,
							s2 = s0;

				for (int t = 0; t < n; t++)
				{
					s0 += p[3 * t] * k[t];
					s1 += p[3 * t + 1] * k[t];
					s2 += p[3 * t + 2] * k[t];
				}
				out[3 * x] = clip8(s0);
				out[3 * x + 1] = clip8(s1);
				out[3 * x + 2] = clip8(s2);
			}
		}
		if (!need_v)
		{
			rc = TL_OK;
			goto done;
		}
		vsrc = tmp;
		vstride = (size_t) win_w * 3;
		row0 = rows_first;
	}
	else
	{
		/* No horizontal pass: the vertical pass reads the window's columns of the source. */
		vsrc = src + (size_t) win_x * 3;
		vstride = src_stride;
		row0 = 0;
	}

	/* Vertical pass, row by row with a wide accumulator (integer sums: order-free). */
	acc = malloc(sizeof(int32_t) * (size_t) win_w * 3);
	if (acc == NULL)
	{
		rc = tl_fail(err, TL_E_NOMEM, "out of memory resizing an image");
		goto done;
	}
	for (int y = 0; y < win_h; y++)
	{
		const int32_t *k = cv.k + (size_t) y * cv.ksize;
		int			ymin = cv.bounds[2 * y] - row0;
		int			n = cv.bounds[2 * y + 1];
		uint8_t    *out = dst + (size_t) y * dst_stride;
		int			m = win_w * 3;

		for (int i = 0; i < m; i++)
			acc[i] = 1 << (PRECISION_BITS - 1);
		for (int t = 0; t < n; t++)
		{
			const uint8_t *in = vsrc + (size_t) (ymin + t) * vstride;
			int32_t		kt = k[t];

			for (int i = 0; i < m; i++)
				acc[i] += in[i] * kt;
		}
		for (int i = 0; i < m; i++)
			out[i] = clip8(acc[i]);
	}
	rc = TL_OK;

done:
	coeffs_free(&ch);
	coeffs_free(&cv);
	free(tmp);
	free(acc);
	return rc;
}
