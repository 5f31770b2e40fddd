/*
 * tl_nn_conv.c - Conv2d (no bias) as im2col + OpenBLAS sgemm over NHWC.
 *
 * The GEMMs put n*oh*ow (the large dimension) in M:
 *   forward  y     (P x oc) = cols (P x K) * W^T   (W is oc x K)
 *   dgrad    dcols (P x K)  = dy   (P x oc) * W
 *   wgrad    dW    (oc x K) = dy^T * cols
 * with K = c*k*k ordered (c, kh, kw), PyTorch's weight layout.  A 1x1
 * stride-1 unpadded conv needs no cols at all: x already is the matrix.
 * im2col is parallel over output rows; col2im is written as a gather over
 * input pixels so the threads never write the same element.
 */
#include "tl_nn.h"

#include <cblas.h>
#include <string.h>

int
tl_conv_out_size(int in, int k, int stride, int pad)
{
	return (in + 2 * pad - k) / stride + 1;
}

static inline bool
conv_is_pointwise(const tl_conv_shape *s)
{
	return s->k == 1 && s->stride == 1 && s->pad == 0;
}

int64_t
tl_conv_workspace(const tl_conv_shape *s)
{
	if (conv_is_pointwise(s))
		return 0;
	return (int64_t) s->n * s->oh * s->ow * s->c * s->k * s->k;
}

typedef struct conv_job
{
	const tl_conv_shape *s;
	const float *src;
	float	   *dst;
	bool		accumulate;
} conv_job;

static void
im2col_rows(void *p, int64_t begin, int64_t end, int chunk)
{
	conv_job   *j = p;
	const tl_conv_shape *s = j->s;
	const int	k = s->k,
				kk = k * k,
				C = s->c;
	const int64_t K = (int64_t) C * kk;

	/* rows are (n, oh) pairs; each covers ow output pixels */
	for (int64_t r = begin; r < end; r++)
	{
		int			n = (int) (r / s->oh),
					oh = (int) (r % s->oh);

		for (int ow = 0; ow < s->ow; ow++)
		{
			float	   *row = j->dst + (r * s->ow + ow) * K;

			for (int kh = 0; kh < k; kh++)
			{
				int			ih = oh * s->stride - s->pad + kh;

				for (int kw = 0; kw < k; kw++)
				{
					int			iw = ow * s->stride - s->pad + kw;
					float	   *d = row + kh * k + kw;

					if (ih < 0 || ih >= s->h || iw < 0 || iw >= s->w)
					{
						for (int c = 0; c < C; c++)
							d[(int64_t) c * kk] = 0.0f;
					}
					else
					{
						const float *src = j->src + (((int64_t) n * s->h + ih) * s->w + iw) * C;

						if (kk == 1)
							memcpy(d, src, (size_t) C * sizeof(float));
						else
							for (int c = 0; c < C; c++)
								d[(int64_t) c * kk] = src[c];
					}
				}
			}
		}
	}
}

void
tl_im2col(const float *x, float *cols, const tl_conv_shape *s)
{
	conv_job	j = {s, x, cols, false};

	tl_parallel_for((int64_t) s->n * s->oh, 1, im2col_rows, &j);
}

/* Gather: input pixel (n, ih, iw) sums the cols entries that read it. */
static void
col2im_rows(void *p, int64_t begin, int64_t end, int chunk)
{
	conv_job   *j = p;
	const tl_conv_shape *s = j->s;
	const int	k = s->k,
				kk = k * k,
				C = s->c,
				st = s->stride;
	const int64_t K = (int64_t) C * kk;

	for (int64_t r = begin; r < end; r++)
	{
		int			n = (int) (r / s->h),
					ih = (int) (r % s->h);

		for (int iw = 0; iw < s->w; iw++)
		{
			float	   *d = j->dst + (((int64_t) n * s->h + ih) * s->w + iw) * C;

			if (!j->accumulate)
				memset(d, 0, (size_t) C * sizeof(float));
			for (int kh = 0; kh < k; kh++)
			{
				int			th = ih + s->pad - kh;
				int			oh;

				if (th < 0 || th % st)
					continue;
				oh = th / st;
				if (oh >= s->oh)
					continue;
				for (int kw = 0; kw < k; kw++)
				{
					int			tw = iw + s->pad - kw;
					int			ow;
					const float *src;

					if (tw < 0 || tw % st)
						continue;
					ow = tw / st;
					if (ow >= s->ow)
						continue;
					src = j->src + (((int64_t) n * s->oh + oh) * s->ow + ow) * K + kh * k + kw;
					if (kk == 1)
						for (int c = 0; c < C; c++)
							d[c] += src[c];
					else
						for (int c = 0; c < C; c++)
							d[c] += src[(int64_t) c * kk];
				}
			}
		}
	}
}

void
tl_col2im(const float *cols, float *dx, const tl_conv_shape *s, bool accumulate)
{
	conv_job	j = {s, cols, dx, accumulate};

	tl_parallel_for((int64_t) s->n * s->h, 1, col2im_rows, &j);
}

void
tl_conv_forward(float *y, const float *x, const float *w, float *ws, const tl_conv_shape *s)
{
	const int	P = s->n * s->oh * s->ow;
	const int	K = s->c * s->k * s->k;
	const float *a = x;

	if (!conv_is_pointwise(s))
	{
		tl_im2col(x, ws, s);
		a = ws;
	}
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, P, s->oc, K,
				1.0f, a, K, w, K, 0.0f, y, s->oc);
}

int64_t
tl_conv_wgrad_workspace(const tl_conv_shape *s)
{
	if ((int64_t) s->n * s->oh * s->ow <= TL_WGRAD_CHUNK)
		return 0;
	return (int64_t) s->oc * s->c * s->k * s->k;
}

/* dw = dy^T * a over P rows, in chunks summed in double when P is large. */
static void
conv_wgrad(float *dw, const float *dy, const float *a, int P, int oc, int K,
		   float *wtmp, double *wacc)
{
	const int64_t n = (int64_t) oc * K;

	if (P <= TL_WGRAD_CHUNK || !wtmp || !wacc)
	{
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, oc, K, P,
					1.0f, dy, oc, a, K, 0.0f, dw, K);
		return;
	}
	memset(wacc, 0, (size_t) n * sizeof(double));
	for (int r = 0; r < P; r += TL_WGRAD_CHUNK)
	{
		int			rows = P - r < TL_WGRAD_CHUNK ? P - r : TL_WGRAD_CHUNK;

		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, oc, K, rows,
					1.0f, dy + (int64_t) r * oc, oc, a + (int64_t) r * K, K, 0.0f, wtmp, K);
		for (int64_t i = 0; i < n; i++)
			wacc[i] += wtmp[i];
	}
	for (int64_t i = 0; i < n; i++)
		dw[i] = (float) wacc[i];
}

void
tl_conv_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
				 float *ws, float *wtmp, double *wacc, const tl_conv_shape *s, bool accumulate)
{
	const int	P = s->n * s->oh * s->ow;
	const int	K = s->c * s->k * s->k;
	const bool	pointwise = conv_is_pointwise(s);

	if (dw)
	{
		const float *a = x;

		if (!pointwise)
		{
			tl_im2col(x, ws, s);
			a = ws;
		}
		conv_wgrad(dw, dy, a, P, s->oc, K, wtmp, wacc);
	}
	if (dx)
	{
		if (pointwise)
		{
			if (accumulate)
			{
				/* dx += dy * W without a temporary: beta = 1 */
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, P, K, s->oc,
							1.0f, dy, s->oc, w, K, 1.0f, dx, K);
			}
			else
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, P, K, s->oc,
							1.0f, dy, s->oc, w, K, 0.0f, dx, K);
			return;
		}
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, P, K, s->oc,
					1.0f, dy, s->oc, w, K, 0.0f, ws, K);
		tl_col2im(ws, dx, s, accumulate);
	}
}
