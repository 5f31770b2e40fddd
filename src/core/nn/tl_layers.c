/*
 * tl_layers.c - ReLU backward, MaxPool2d, global average pool, Linear and
 * softmax cross-entropy, NHWC.
 */
#include "tl_nn_internal.h"

#include <float.h>
#include <math.h>
#include <string.h>

typedef struct relu_job
{
	float	   *dx;
	const float *dy;
	const float *out;
} relu_job;

static void
relu_backward_range(void *p, int64_t begin, int64_t end, int chunk)
{
	relu_job   *j = p;

	for (int64_t i = begin; i < end; i++)
		j->dx[i] = j->out[i] > 0.0f ? j->dy[i] : 0.0f;
}

void
tl_relu_backward(float *dx, const float *dy, const float *out, int64_t count)
{
	relu_job	j = {dx, dy, out};

	tl_parallel_for(count, 4096, relu_backward_range, &j);
}

typedef struct pool_job
{
	float	   *y;
	int32_t    *argmax;
	const float *x;
	const int32_t *cargmax;
	int			n,
				h,
				w,
				c,
				k,
				stride,
				pad,
				oh,
				ow;
} pool_job;

/*
 * Rows are (n, oh).  PyTorch scans the window in (kh, kw) order and keeps the
 * first maximum (a NaN wins); padding never wins.
 */
static void
maxpool_rows(void *p, int64_t begin, int64_t end, int chunk)
{
	pool_job   *j = p;
	const int	C = j->c;

	for (int64_t r = begin; r < end; r++)
	{
		int			n = (int) (r / j->oh),
					oh = (int) (r % j->oh);

		for (int ow = 0; ow < j->ow; ow++)
		{
			float	   *y = j->y + (r * j->ow + ow) * C;
			int32_t    *am = j->argmax + (r * j->ow + ow) * C;
			bool		first = true;

			for (int kh = 0; kh < j->k; kh++)
			{
				int			ih = oh * j->stride - j->pad + kh;

				if (ih < 0 || ih >= j->h)
					continue;
				for (int kw = 0; kw < j->k; kw++)
				{
					int			iw = ow * j->stride - j->pad + kw;
					const float *x;
					int32_t		off;

					if (iw < 0 || iw >= j->w)
						continue;
					off = ih * j->w + iw;
					x = j->x + (((int64_t) n * j->h) * j->w + off) * C;
					if (first)
					{
						memcpy(y, x, (size_t) C * sizeof(float));
						for (int c = 0; c < C; c++)
							am[c] = off;
						first = false;
						continue;
					}
					for (int c = 0; c < C; c++)
					{
						if (x[c] > y[c] || isnan(x[c]))
						{
							y[c] = x[c];
							am[c] = off;
						}
					}
				}
			}
		}
	}
}

void
tl_maxpool_forward(float *y, int32_t *argmax, const float *x, int n, int h, int w,
				   int c, int k, int stride, int pad, int oh, int ow)
{
	pool_job	j = {y, argmax, x, NULL, n, h, w, c, k, stride, pad, oh, ow};

	tl_parallel_for((int64_t) n * oh, 1, maxpool_rows, &j);
}

/* Gather over input rows (n, ih): sum dy of the windows whose argmax is this pixel. */
static void
maxpool_backward_rows(void *p, int64_t begin, int64_t end, int chunk)
{
	pool_job   *j = p;
	const int	C = j->c;

	for (int64_t r = begin; r < end; r++)
	{
		int			n = (int) (r / j->h),
					ih = (int) (r % j->h);

		for (int iw = 0; iw < j->w; iw++)
		{
			float	   *dx = j->y + (r * j->w + iw) * C;
			int32_t		off = ih * j->w + iw;

			memset(dx, 0, (size_t) C * sizeof(float));
			for (int kh = 0; kh < j->k; kh++)
			{
				int			th = ih + j->pad - kh,
							oh;

				if (th < 0 || th % j->stride)
					continue;
				oh = th / j->stride;
				if (oh >= j->oh)
					continue;
				for (int kw = 0; kw < j->k; kw++)
				{
					int			tw = iw + j->pad - kw,
								ow;
					int64_t		o;

					if (tw < 0 || tw % j->stride)
						continue;
					ow = tw / j->stride;
					if (ow >= j->ow)
						continue;
					o = (((int64_t) n * j->oh + oh) * j->ow + ow) * C;
					/* a select, not a branch, through restrict locals: vectorised */
					{
						const int32_t *restrict am = j->cargmax + o;
						const float *restrict g = j->x + o;
						float	   *restrict d = dx;

						for (int c = 0; c < C; c++)
							d[c] = am[c] == off ? d[c] + g[c] : d[c];
					}
				}
			}
		}
	}
}

void
tl_maxpool_backward(float *dx, const float *dy, const int32_t *argmax, int n, int h,
					int w, int c, int k, int stride, int pad, int oh, int ow)
{
	pool_job	j = {dx, NULL, dy, argmax, n, h, w, c, k, stride, pad, oh, ow};

	tl_parallel_for((int64_t) n * h, 1, maxpool_backward_rows, &j);
}

void
tl_avgpool_forward(float *y, const float *x, int n, int hw, int c)
{
	for (int i = 0; i < n; i++)
	{
		double		acc[TL_NN_MAX_CHANNELS];

		memset(acc, 0, (size_t) c * sizeof(double));
		for (int p = 0; p < hw; p++)
		{
			const float *row = x + ((int64_t) i * hw + p) * c;

			for (int ch = 0; ch < c; ch++)
				acc[ch] += row[ch];
		}
		for (int ch = 0; ch < c; ch++)
			y[(int64_t) i * c + ch] = (float) (acc[ch] / hw);
	}
}

void
tl_avgpool_backward(float *dx, const float *dy, int n, int hw, int c)
{
	for (int i = 0; i < n; i++)
	{
		float		g[TL_NN_MAX_CHANNELS];

		for (int ch = 0; ch < c; ch++)
			g[ch] = dy[(int64_t) i * c + ch] / (float) hw;
		for (int p = 0; p < hw; p++)
			memcpy(dx + ((int64_t) i * hw + p) * c, g, (size_t) c * sizeof(float));
	}
}

void
tl_linear_forward(float *y, const float *x, const float *w, const float *b,
				  int n, int in, int out)
{
	for (int i = 0; i < n; i++)
		memcpy(y + (int64_t) i * out, b, (size_t) out * sizeof(float));
	tl_sgemm(false, true, n, out, in, x, in, w, in, true, y, out);
}

void
tl_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
				   const float *w, int n, int in, int out)
{
	if (dw)
		tl_sgemm(true, false, out, in, n, dy, out, x, in, false, dw, in);
	if (db)
		for (int o = 0; o < out; o++)
		{
			double		s = 0;

			for (int i = 0; i < n; i++)
				s += dy[(int64_t) i * out + o];
			db[o] = (float) s;
		}
	if (dx)
		tl_sgemm(false, false, n, in, out, dy, out, w, in, false, dx, in);
}

/* log-sum-exp of a row, max-shifted, in double */
static double
row_logsumexp(const float *z, int classes, double *max_out)
{
	double		m = -INFINITY,
				s = 0;

	for (int k = 0; k < classes; k++)
		if (z[k] > m)
			m = z[k];
	for (int k = 0; k < classes; k++)
		s += exp((double) z[k] - m);
	*max_out = m;
	return m + log(s);
}

double
tl_softmax_xent(const float *logits, const int32_t *labels, int n, int classes,
				float *dlogits)
{
	double		loss = 0;

	for (int i = 0; i < n; i++)
	{
		const float *z = logits + (int64_t) i * classes;
		double		m,
					lse = row_logsumexp(z, classes, &m);

		loss += lse - z[labels[i]];
		if (dlogits)
		{
			float	   *d = dlogits + (int64_t) i * classes;

			for (int k = 0; k < classes; k++)
				d[k] = (float) ((exp((double) z[k] - lse) - (k == labels[i] ? 1.0 : 0.0)) / n);
		}
	}
	return loss / n;
}

void
tl_softmax(float *probs, const float *logits, int n, int classes)
{
	for (int i = 0; i < n; i++)
	{
		const float *z = logits + (int64_t) i * classes;
		double		m,
					lse = row_logsumexp(z, classes, &m);

		for (int k = 0; k < classes; k++)
			probs[(int64_t) i * classes + k] = (float) exp((double) z[k] - lse);
	}
}
