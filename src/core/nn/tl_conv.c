/*
 * tl_conv.c - Conv2d (no bias) as im2col + single-threaded GEMM calls
 * (tl_sgemm, tl_gemm.c), spread over the core's own thread pool.  NHWC.
 *
 * The GEMMs put P = n*oh*ow (the large dimension) in M:
 *   forward  y     (P x oc) = cols (P x K) * W^T   (W is oc x K)
 *   dgrad    dcols (P x K)  = dy   (P x oc) * W
 *   wgrad    dW    (oc x K) = dy^T * cols
 * with K = k*k*c ordered (kh, kw, c): a cols row is k*k contiguous copies of
 * input pixels, so im2col and col2im move whole channel vectors.  W is
 * therefore the "packed" layout (oc, kh, kw, c); tl_conv_pack_weights and
 * tl_conv_unpack_grad convert from and to PyTorch's (oc, c, kh, kw).  A 1x1
 * stride-1 unpadded conv needs no cols: x already is the matrix.
 *
 * Threads: each pool thread makes its own single-threaded GEMM calls on its share: rows of P when P is large — and
 * then forward builds and multiplies its cols in blocks small enough to stay
 * in cache while they are packed — or output columns when P is small
 * (layer4, single images), so no thread packs more than its share.  The
 * weight gradient is split by output channel.  col2im is written as a gather
 * over input pixels so threads never write the same element.
 */
#include "tl_nn_internal.h"
#include "tl_resnet.h"

#include <string.h>

/* target bytes of one forward cols block (cache-resident while packed) */
#define BLOCK_BYTES (1 << 20)
/* rows per thread below which GEMMs are split by columns instead of rows */
#define MIN_ROWS_PER_THREAD 256

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


int64_t
tl_conv_wgrad_workspace(const tl_conv_shape *s, int parts)
{
	const int64_t P = (int64_t) s->n * s->oh * s->ow;
	const int64_t ocK = (int64_t) s->oc * s->c * s->k * s->k;

	if (parts < 1)
		parts = 1;
	if (P >= (int64_t) MIN_ROWS_PER_THREAD * parts)
		return parts * ocK;
	if (P > TL_WGRAD_CHUNK)
		return ocK;
	return 0;
}

static inline void
split(int64_t n, int parts, int i, int64_t *b, int64_t *e)
{
	*b = n * i / parts;
	*e = n * (i + 1) / parts;
}

/* ---- weight layouts ---- */

typedef struct pack_job
{
	float	   *dst;
	const float *src;
	int			c,
				kk,
				oc;				/* tl_conv_pack_weights_t only */
} pack_job;

/* (oc, c, kk) -> (oc, kk, c), one output channel per item */
static void
pack_range(void *p, int64_t begin, int64_t end, int chunk)
{
	pack_job   *j = p;
	const int64_t K = (int64_t) j->c * j->kk;

	for (int64_t o = begin; o < end; o++)
		for (int c = 0; c < j->c; c++)
			for (int q = 0; q < j->kk; q++)
				j->dst[o * K + (int64_t) q * j->c + c] = j->src[o * K + (int64_t) c * j->kk + q];
}

/* (oc, kk, c) -> (oc, c, kk) */
static void
unpack_range(void *p, int64_t begin, int64_t end, int chunk)
{
	pack_job   *j = p;
	const int64_t K = (int64_t) j->c * j->kk;

	for (int64_t o = begin; o < end; o++)
		for (int c = 0; c < j->c; c++)
			for (int q = 0; q < j->kk; q++)
				j->dst[o * K + (int64_t) c * j->kk + q] = j->src[o * K + (int64_t) q * j->c + c];
}

void
tl_conv_pack_weights(float *wp, const float *w, int oc, int c, int k)
{
	pack_job	j = {wp, w, c, k * k, oc};

	tl_parallel_for(oc, 4, pack_range, &j);
}

void
tl_conv_unpack_grad(float *dw, const float *dwp, int oc, int c, int k)
{
	pack_job	j = {dw, dwp, c, k * k, oc};

	tl_parallel_for(oc, 4, unpack_range, &j);
}

/* ---- im2col / col2im ---- */

/* cols rows [p0, p1) (output pixels in n, oh, ow order) from x */
static void
im2col_range(const float *x, float *cols, const tl_conv_shape *s, int64_t p0, int64_t p1)
{
	const int	k = s->k,
				kk = k * k,
				C = s->c;
	const int64_t K = (int64_t) C * kk;
	const int64_t ohw = (int64_t) s->oh * s->ow;

	for (int64_t p = p0; p < p1; p++)
	{
		int			n = (int) (p / ohw),
					oh = (int) (p % ohw / s->ow),
					ow = (int) (p % s->ow);
		float	   *row = cols + p * K;

		const int	iw0 = ow * s->stride - s->pad;
		/* kernel columns [kw0, kw1) fall inside the image: one contiguous run */
		const int	kw0 = iw0 < 0 ? -iw0 : 0;
		const int	kw1 = s->w - iw0 < k ? s->w - iw0 : k;

		for (int kh = 0; kh < k; kh++)
		{
			int			ih = oh * s->stride - s->pad + kh;
			float	   *d = row + (int64_t) kh * k * C;

			if (ih < 0 || ih >= s->h || kw1 <= kw0)
			{
				memset(d, 0, (size_t) k * C * sizeof(float));
				continue;
			}
			if (kw0 > 0)
				memset(d, 0, (size_t) kw0 * C * sizeof(float));
			memcpy(d + (int64_t) kw0 * C, x + (((int64_t) n * s->h + ih) * s->w + iw0 + kw0) * C,
				   (size_t) (kw1 - kw0) * C * sizeof(float));
			if (kw1 < k)
				memset(d + (int64_t) kw1 * C, 0, (size_t) (k - kw1) * C * sizeof(float));
		}
	}
}

typedef struct conv_job
{
	const tl_conv_shape *s;
	const float *x;				/* conv input */
	const float *w;
	const float *dy;
	float	   *y;				/* output / dx */
	float	   *ws;
	float	   *dw;
	float	   *wtmp;
	double	   *wacc;
	bool		accumulate;
	int			parts;
	int64_t		block;			/* tl_conv_forward_eval: rows per item */
} conv_job;

static void
im2col_job(void *p, int64_t begin, int64_t end, int chunk)
{
	conv_job   *j = p;

	im2col_range(j->x, j->ws, j->s, begin, end);
}

void
tl_im2col(const float *x, float *cols, const tl_conv_shape *s)
{
	conv_job	j = {.s = s, .x = x, .ws = cols};

	tl_parallel_for((int64_t) s->n * s->oh * s->ow, 16, im2col_job, &j);
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
			float	   *d = j->y + (((int64_t) n * s->h + ih) * s->w + iw) * C;

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
					src = j->ws + (((int64_t) n * s->oh + oh) * s->ow + ow) * K
						+ (int64_t) (kh * k + kw) * C;
					for (int c = 0; c < C; c++)
						d[c] += src[c];
				}
			}
		}
	}
}

void
tl_col2im(const float *cols, float *dx, const tl_conv_shape *s, bool accumulate)
{
	conv_job	j = {.s = s, .ws = (float *) cols, .y = dx, .accumulate = accumulate};

	tl_parallel_for((int64_t) s->n * s->h, 1, col2im_rows, &j);
}

/* ---- forward ---- */

static bool
split_rows(int64_t P, int parts)
{
	return P >= (int64_t) MIN_ROWS_PER_THREAD * parts;
}

/* Thread `chunk` of `parts`: its rows, im2col + GEMM block by block. */
static void
forward_rows(void *p, int64_t begin, int64_t end, int chunk)
{
	conv_job   *j = p;
	const tl_conv_shape *s = j->s;
	const int64_t P = (int64_t) s->n * s->oh * s->ow;
	const int	K = s->c * s->k * s->k;
	int64_t		r0,
				r1,
				block = BLOCK_BYTES / ((int64_t) K * 4);

	/* blocks of at least 4*oc rows keep re-packing W below a quarter of the work */
	if (block < 4 * s->oc)
		block = 4 * s->oc;
	for (int64_t t = begin; t < end; t++)
	{
		split(P, j->parts, (int) t, &r0, &r1);
		for (int64_t b = r0; b < r1; b += block)
		{
			int64_t		rows = r1 - b < block ? r1 - b : block;
			const float *a;

			if (conv_is_pointwise(s))
				a = j->x + b * K;
			else
			{
				im2col_range(j->x, j->ws, s, b, b + rows);
				a = j->ws + b * K;
			}
			tl_sgemm(false, true, (int) rows, s->oc, K,
					 a, K, j->w, K,
					 false, j->y + b * s->oc, s->oc);
		}
	}
}

/* Thread `chunk`: output channels [o0, o1) for all rows (cols built before). */
static void
forward_cols(void *p, int64_t begin, int64_t end, int chunk)
{
	conv_job   *j = p;
	const tl_conv_shape *s = j->s;
	const int	P = s->n * s->oh * s->ow;
	const int	K = s->c * s->k * s->k;
	const float *a = conv_is_pointwise(s) ? j->x : j->ws;

	for (int64_t t = begin; t < end; t++)
	{
		int64_t		o0,
					o1;

		split(s->oc, j->parts, (int) t, &o0, &o1);
		if (o1 > o0)
			tl_sgemm(false, true, P, (int) (o1 - o0), K,
					 a, K, j->w + o0 * K, K,
					 false, j->y + o0, s->oc);
	}
}

void
tl_conv_forward_parts(float *y, const float *x, const float *w, float *ws, const tl_conv_shape *s,
					  int parts)
{
	const int64_t P = (int64_t) s->n * s->oh * s->ow;
	conv_job	j = {.s = s, .x = x, .w = w, .y = y, .ws = ws};

	tl_blas_single_threaded();
	j.parts = parts < 1 ? 1 : parts;
	if (split_rows(P, j.parts))
		tl_parallel_for(j.parts, 1, forward_rows, &j);
	else
	{
		if (!conv_is_pointwise(s))
			tl_im2col(x, ws, s);
		tl_parallel_for(j.parts, 1, forward_cols, &j);
	}
}

/* (oc, c, kk) -> (kk, c, oc): the transposed packed layout, one (kh, kw) per item */
static void
pack_t_range(void *p, int64_t begin, int64_t end, int chunk)
{
	pack_job   *j = p;
	const int64_t K = (int64_t) j->c * j->kk;

	for (int64_t q = begin; q < end; q++)
		for (int c = 0; c < j->c; c++)
			for (int o = 0; o < j->oc; o++)
				j->dst[(q * j->c + c) * j->oc + o] = j->src[o * K + (int64_t) c * j->kk + q];
}

void
tl_conv_pack_weights_t(float *wt, const float *w, int oc, int c, int k)
{
	pack_job	j = {wt, w, c, k * k, oc};

	tl_parallel_for(k * k, 1, pack_t_range, &j);
}

/* eval forward: rows of y per item when P is large (cols block ~256 kB) */
#define EVAL_BLOCK_BYTES (256 << 10)
/* output columns per item when P is small */
#define EVAL_COLS 64

static void
forward_eval_rows(void *p, int64_t begin, int64_t end, int chunk)
{
	conv_job   *j = p;
	const tl_conv_shape *s = j->s;
	const int64_t P = (int64_t) s->n * s->oh * s->ow;
	const int	K = s->c * s->k * s->k;

	for (int64_t t = begin; t < end; t++)
	{
		int64_t		b = t * j->block,
					rows = P - b < j->block ? P - b : j->block;

		im2col_range(j->x, j->ws, s, b, b + rows);
		tl_sgemm_nn((int) rows, s->oc, K, j->ws + b * K, K, j->w, s->oc, j->y + b * s->oc, s->oc);
	}
}

static void
forward_eval_cols(void *p, int64_t begin, int64_t end, int chunk)
{
	conv_job   *j = p;
	const tl_conv_shape *s = j->s;
	const int	P = s->n * s->oh * s->ow;
	const int	K = s->c * s->k * s->k;

	for (int64_t t = begin; t < end; t++)
	{
		int			o0 = (int) t * EVAL_COLS,
					w = s->oc - o0 < EVAL_COLS ? s->oc - o0 : EVAL_COLS;

		tl_sgemm_nn(P, w, K, j->ws, K, j->w + o0, s->oc, j->y + o0, s->oc);
	}
}

void
tl_conv_forward_eval(float *y, const float *x, const float *wt, float *ws, const tl_conv_shape *s)
{
	const int64_t P = (int64_t) s->n * s->oh * s->ow;
	const int64_t K = (int64_t) s->c * s->k * s->k;
	int64_t		block = EVAL_BLOCK_BYTES / (K * 4);
	conv_job	j = {.s = s, .x = x, .w = wt, .y = y, .ws = ws};

	if (block < 8)
		block = 8;
	block &= ~(int64_t) 7;		/* whole 8-row blocks of tl_sgemm_nn */
	if (P >= 4 * block)
	{
		j.block = block;
		tl_parallel_for((P + block - 1) / block, 1, forward_eval_rows, &j);
	}
	else
	{
		tl_im2col(x, ws, s);
		tl_parallel_for((s->oc + EVAL_COLS - 1) / EVAL_COLS, 1, forward_eval_cols, &j);
	}
}

void
tl_conv_forward(float *y, const float *x, const float *w, float *ws, const tl_conv_shape *s)
{
	tl_conv_forward_parts(y, x, w, ws, s, tl_get_num_threads());
}

/* ---- backward ---- */

/*
 * dW rows [o0, o1) = dy[:, o0:o1]^T * a.  Past TL_WGRAD_CHUNK rows of P the
 * sum runs in chunks whose float results are added in double.
 */
static void
wgrad_part(void *p, int64_t begin, int64_t end, int chunk)
{
	conv_job   *j = p;
	const tl_conv_shape *s = j->s;
	const int	P = s->n * s->oh * s->ow;
	const int	K = s->c * s->k * s->k;
	const float *a = conv_is_pointwise(s) ? j->x : j->ws;

	for (int64_t t = begin; t < end; t++)
	{
		int64_t		o0,
					o1,
					n;
		int			m;

		split(s->oc, j->parts, (int) t, &o0, &o1);
		m = (int) (o1 - o0);
		n = (int64_t) m * K;
		if (m == 0)
			continue;
		if (P <= TL_WGRAD_CHUNK || !j->wtmp || !j->wacc)
		{
			tl_sgemm(true, false, m, K, P, j->dy + o0, s->oc, a, K, false, j->dw + o0 * K, K);
			continue;
		}
		{
			float	   *tmp = j->wtmp + o0 * K;
			double	   *acc = j->wacc + o0 * K;

			memset(acc, 0, (size_t) n * sizeof(double));
			for (int r = 0; r < P; r += TL_WGRAD_CHUNK)
			{
				int			rows = P - r < TL_WGRAD_CHUNK ? P - r : TL_WGRAD_CHUNK;

				tl_sgemm(true, false, m, K, rows,
						 j->dy + (int64_t) r * s->oc + o0, s->oc, a + (int64_t) r * K, K,
						 false, tmp, K);
				for (int64_t i = 0; i < n; i++)
					acc[i] += tmp[i];
			}
			for (int64_t i = 0; i < n; i++)
				j->dw[o0 * K + i] = (float) acc[i];
		}
	}
}

/*
 * Thread t: rows [r0, r1) in cache-sized blocks: im2col the block, dW partial
 * += dy_blk^T * cols_blk in float, flushed into the thread's double
 * accumulator every TL_WGRAD_CHUNK rows.
 */
static void
wgrad_rows(void *p, int64_t begin, int64_t end, int chunk)
{
	conv_job   *j = p;
	const tl_conv_shape *s = j->s;
	const int64_t P = (int64_t) s->n * s->oh * s->ow;
	const int	K = s->c * s->k * s->k;
	const int64_t n = (int64_t) s->oc * K;
	int64_t		block = BLOCK_BYTES / ((int64_t) K * 4);

	if (block < 4 * s->oc)
		block = 4 * s->oc;
	if (block > TL_WGRAD_CHUNK)
		block = TL_WGRAD_CHUNK;
	for (int64_t t = begin; t < end; t++)
	{
		float	   *tmp = j->wtmp + t * n;
		double	   *acc = j->wacc + t * n;
		int64_t		r0,
					r1,
					pending = 0;

		split(P, j->parts, (int) t, &r0, &r1);
		memset(acc, 0, (size_t) n * sizeof(double));
		for (int64_t b = r0; b < r1; b += block)
		{
			int64_t		rows = r1 - b < block ? r1 - b : block;
			const float *a;

			if (conv_is_pointwise(s))
				a = j->x + b * K;
			else
			{
				im2col_range(j->x, j->ws, s, b, b + rows);
				a = j->ws + b * K;
			}
			tl_sgemm(true, false, s->oc, K, (int) rows,
					 j->dy + b * s->oc, s->oc, a, K,
					 pending > 0, tmp, K);
			pending += rows;
			if (pending + block > TL_WGRAD_CHUNK || b + rows >= r1)
			{
				for (int64_t i = 0; i < n; i++)
					acc[i] += tmp[i];
				pending = 0;
			}
		}
	}
}

/* dw = sum of the threads' double accumulators, over a slice of elements */
static void
wgrad_reduce(void *p, int64_t begin, int64_t end, int chunk)
{
	conv_job   *j = p;
	const tl_conv_shape *s = j->s;
	const int64_t n = (int64_t) s->oc * s->c * s->k * s->k;

	for (int64_t i = begin; i < end; i++)
	{
		double		v = 0;

		for (int t = 0; t < j->parts; t++)
			v += j->wacc[t * n + i];
		j->dw[i] = (float) v;
	}
}

/* dcols (or dx for pointwise) = dy * W: rows of P, or columns of K when P is small */
static void
dgrad_part(void *p, int64_t begin, int64_t end, int chunk)
{
	conv_job   *j = p;
	const tl_conv_shape *s = j->s;
	const int64_t P = (int64_t) s->n * s->oh * s->ow;
	const int	K = s->c * s->k * s->k;
	const bool	pointwise = conv_is_pointwise(s);
	float	   *out = pointwise ? j->y : j->ws;
	const float beta = pointwise && j->accumulate ? 1.0f : 0.0f;

	for (int64_t t = begin; t < end; t++)
	{
		int64_t		b,
					e;

		if (split_rows(P, j->parts))
		{
			split(P, j->parts, (int) t, &b, &e);
			if (e > b)
				tl_sgemm(false, false, (int) (e - b), K, s->oc,
						 j->dy + b * s->oc, s->oc, j->w, K,
						 beta != 0.0f, out + b * K, K);
		}
		else
		{
			split(K, j->parts, (int) t, &b, &e);
			if (e > b)
				tl_sgemm(false, false, (int) P, (int) (e - b), s->oc,
						 j->dy, s->oc, j->w + b, K,
						 beta != 0.0f, out + b, K);
		}
	}
}

void
tl_conv_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
				 float *ws, float *wtmp, double *wacc, int parts, const tl_conv_shape *s,
				 bool accumulate)
{
	conv_job	j = {.s = s, .x = x, .w = w, .dy = dy, .y = dx, .ws = ws, .dw = dw,
	.wtmp = wtmp, .wacc = wacc, .accumulate = accumulate};

	tl_blas_single_threaded();
	if (dw)
	{
		const int64_t P = (int64_t) s->n * s->oh * s->ow;

		j.parts = tl_get_num_threads() < parts ? tl_get_num_threads() : parts;
		if (wtmp && wacc && P >= (int64_t) MIN_ROWS_PER_THREAD * j.parts)
		{
			tl_parallel_for(j.parts, 1, wgrad_rows, &j);
			tl_parallel_for((int64_t) s->oc * s->c * s->k * s->k, 4096, wgrad_reduce, &j);
		}
		else
		{
			j.parts = tl_get_num_threads();
			if (!conv_is_pointwise(s))
				tl_im2col(x, ws, s);
			tl_parallel_for(j.parts, 1, wgrad_part, &j);
		}
	}
	if (dx)
	{
		j.parts = tl_get_num_threads();
		tl_parallel_for(j.parts, 1, dgrad_part, &j);
		if (!conv_is_pointwise(s))
			tl_col2im(ws, dx, s, accumulate);
	}
}
