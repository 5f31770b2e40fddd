/*
 * tl_winograd.c - 3x3 stride-1 pad-1 convolution as Winograd F(2x2, 3x3)
 * (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks"), NHWC.
 *
 * Each 2x2 output tile comes from its 4x4 input patch d:
 *   Y = A^T [ sum_c U[c] (.) V[c] ] A,   V = B^T d B,   U = G g G^T,
 * which is 16 independent GEMMs, one per position xi of the 4x4 transformed
 * tile:  M_xi (T x oc) = V_xi (T x c) * U_xi (c x oc),  T = number of tiles.
 * That is 16 multiplies per 4 outputs where im2col needs 36: 2.25x fewer
 * GEMM FLOPs, and V is 16/4 = 4x the input where im2col's cols are 9x.
 *
 * Backward is the exact transpose of that linear map:
 *   dM = A dY A^T,  dV_xi = dM_xi U_xi^T,  dx = sum over tiles of B dV B^T,
 *   dU_xi = V_xi^T dM_xi,  dg = G^T dU G.
 * Only the rounding differs from im2col (inputs are added and subtracted
 * before they are multiplied); docs/engine.md gives the measured effect.
 *
 * Layouts: U [16][c][oc] (tl_winograd_weights); workspace V and dV [16][T][c],
 * M and dM [16][T][oc], dU [16][c][oc].  Tiles are numbered (n, ty, tx).
 * Threads: the transforms are split over tiles, the GEMMs over the 16
 * positions (each a full-size GEMM on one thread);
 * convs with many tiles run in fused blocks of tiles instead (below).
 * dx is scattered tile row by tile row: rows ty and ty + 2 touch disjoint
 * input rows, so even and odd tile rows are two passes without write races.
 */
#include "tl_nn_internal.h"
#include "tl_resnet.h"

#include <stdint.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#define XI 16					/* positions of a transformed 4x4 tile */
#define CB 64					/* channels per inner block */

static const float zeros[CB];

typedef struct wino_job
{
	const tl_conv_shape *s;
	const float *x;				/* forward input (and wgrad) */
	const float *u;				/* transformed weights */
	const float *dy;
	float	   *y;				/* forward output, or dx */
	float	   *v;				/* V, then dV */
	float	   *m;				/* M or dM */
	float	   *du;
	float	   *dw;
	float	   *wtmp;
	double	   *wacc;
	int64_t		T;				/* tiles; in a fused block, the block's */
	int64_t		t_base;			/* first tile of v and m (fused blocks) */
	int64_t		fuse_rows;		/* tile rows per fused backward block */
	int64_t		fuse_slice;		/* floats of a thread's workspace slice */
	int			th,
				tw;
	int			parity;			/* dx scatter pass */
	bool		want_dw,
				want_dx;
	bool		eval;			/* forward GEMMs by tl_sgemm_nn (forward_gemms_eval) */
} wino_job;

bool
tl_winograd_applies(const tl_conv_shape *s)
{
	return s->k == 3 && s->stride == 1 && s->pad == 1 && s->oh == s->h && s->ow == s->w;
}

int64_t
tl_winograd_tiles(const tl_conv_shape *s)
{
	return (int64_t) s->n * ((s->oh + 1) / 2) * ((s->ow + 1) / 2);
}

int64_t
tl_winograd_workspace(const tl_conv_shape *s, bool backward)
{
	if (!tl_winograd_applies(s))
		return 0;
	return XI * tl_winograd_tiles(s) * (s->c + s->oc) + (backward ? (int64_t) XI * s->c * s->oc : 0);
}

/* a conv whose forward and backward run in fused tile blocks (below) */
#define FUSE_MIN_TILES 512

int64_t
tl_winograd_wgrad_workspace(const tl_conv_shape *s, int parts)
{
	const int64_t T = tl_winograd_tiles(s);

	if (!tl_winograd_applies(s) || T < FUSE_MIN_TILES)
		return 0;
	/* fused backward: 16 dU planes per thread; else chunked sums need one plane per thread */
	return (int64_t) (parts < 1 ? 1 : parts) * s->c * s->oc * (T <= TL_WGRAD_CHUNK ? 16 : 1);
}

/* ---- the 4-point transforms (one axis); the 2-D ones apply them twice ---- */

/* B^T d */
#define IN_FWD(d0, d1, d2, d3, r0, r1, r2, r3) \
	do { r0 = (d0) - (d2); r1 = (d1) + (d2); r2 = (d2) - (d1); r3 = (d1) - (d3); } while (0)
/* B g: the transpose of IN_FWD */
#define IN_BWD(g0, g1, g2, g3, r0, r1, r2, r3) \
	do { r0 = (g0); r1 = (g1) - (g2) + (g3); r2 = (g1) + (g2) - (g0); r3 = -(g3); } while (0)
/* A^T m (4 -> 2) */
#define OUT_FWD(m0, m1, m2, m3, r0, r1) \
	do { r0 = (m0) + (m1) + (m2); r1 = (m1) - (m2) - (m3); } while (0)
/* A g (2 -> 4): the transpose of OUT_FWD */
#define OUT_BWD(g0, g1, r0, r1, r2, r3) \
	do { r0 = (g0); r1 = (g0) + (g1); r2 = (g0) - (g1); r3 = -(g1); } while (0)

static inline void
tile_of(const wino_job *j, int64_t t, int *n, int *ty, int *tx)
{
	int64_t		per = (int64_t) j->th * j->tw;

	*n = (int) (t / per);
	*ty = (int) (t % per / j->tw);
	*tx = (int) (t % j->tw);
}

/* Offsets of the 16 input pixels of tile t's 4x4 patch (NHWC input), -1 in the padding. */
static inline void
patch_pixels(const wino_job *j, int64_t t, int64_t *px)
{
	const tl_conv_shape *s = j->s;
	int			n,
				ty,
				tx;

	tile_of(j, t, &n, &ty, &tx);
	for (int a = 0; a < 4; a++)
		for (int b = 0; b < 4; b++)
		{
			int			ih = 2 * ty - 1 + a,
						iw = 2 * tx - 1 + b;

			px[a * 4 + b] = (ih < 0 || ih >= s->h || iw < 0 || iw >= s->w) ? -1
				: (((int64_t) n * s->h + ih) * s->w + iw) * s->c;
		}
}

/* Offsets of the 4 output pixels of tile t (NHWC output), -1 past the edge. */
static inline void
tile_pixels(const wino_job *j, int64_t t, int64_t *px)
{
	const tl_conv_shape *s = j->s;
	int			n,
				ty,
				tx;

	tile_of(j, t, &n, &ty, &tx);
	for (int a = 0; a < 2; a++)
		for (int b = 0; b < 2; b++)
		{
			int			oh = 2 * ty + a,
						ow = 2 * tx + b;

			px[a * 2 + b] = (oh >= s->oh || ow >= s->ow) ? -1
				: (((int64_t) n * s->oh + oh) * s->ow + ow) * s->oc;
		}
}

/* ---- weights ---- */

typedef struct weight_job
{
	float	   *u;
	float	   *dw;
	const float *w;
	const float *du;
	int			c,
				oc;
} weight_job;

/*
 * The weight transforms run over blocks of OB output channels for one input
 * channel at a time, the block in vector lanes: U's rows [xi][c][o0..o0+OB)
 * are whole cache lines, and each channel's 3x3 weights (o, c, 0..8) are read
 * as a contiguous stream along c.  A fine-tuning step transforms every conv's
 * weights again, so this runs at memory speed.
 */
#define OB 16

/*
 * U[xi][c][oc] = G g G^T for input channels [c0, c1).  Input channels outer:
 * each writes 16 contiguous rows U[xi][c][0..oc), and the 36-byte reads of
 * the next c fall in the lines this one just read.
 */
static void
weights_range(void *p, int64_t c0, int64_t c1, int chunk)
{
	weight_job *j = p;
	const int64_t plane = (int64_t) j->c * j->oc;

	for (int c = (int) c0; c < c1; c++)
	{
		for (int64_t ob = 0; ob < (j->oc + OB - 1) / OB; ob++)
		{
			const int	o0 = (int) ob * OB,
						no = j->oc - o0 < OB ? j->oc - o0 : OB;

			float		g[9][OB],
						t[4][3][OB],
						r[XI][OB];

			memset(g, 0, sizeof(g));
			for (int o = 0; o < no; o++)
				for (int k = 0; k < 9; k++)
					g[k][o] = j->w[((int64_t) (o0 + o) * j->c + c) * 9 + k];
			/* G g: columns */
			for (int b = 0; b < 3; b++)
				for (int o = 0; o < OB; o++)
				{
					t[0][b][o] = g[b][o];
					t[1][b][o] = 0.5f * (g[b][o] + g[3 + b][o] + g[6 + b][o]);
					t[2][b][o] = 0.5f * (g[b][o] - g[3 + b][o] + g[6 + b][o]);
					t[3][b][o] = g[6 + b][o];
				}
			/* (G g) G^T: rows */
			for (int a = 0; a < 4; a++)
				for (int o = 0; o < OB; o++)
				{
					r[a * 4 + 0][o] = t[a][0][o];
					r[a * 4 + 1][o] = 0.5f * (t[a][0][o] + t[a][1][o] + t[a][2][o]);
					r[a * 4 + 2][o] = 0.5f * (t[a][0][o] - t[a][1][o] + t[a][2][o]);
					r[a * 4 + 3][o] = t[a][2][o];
				}
			/*
			 * 64-byte rows.  Aligned full rows are streamed: U (67 MB for
			 * ResNet-18) is not read again before the next layers evict it,
			 * so a normal store would first read every line for nothing.
			 * Otherwise a loop (GCC turns a variable-length one into a
			 * memcpy call).
			 */
			for (int xi = 0; xi < XI; xi++)
			{
				float	   *dst = j->u + xi * plane + (int64_t) c * j->oc + o0;

#ifdef __AVX512F__
				if (no == OB && ((uintptr_t) dst & 63) == 0)
				{
					_mm512_stream_ps(dst, _mm512_loadu_ps(r[xi]));
					continue;
				}
#endif
				for (int o = 0; o < no; o++)
					dst[o] = r[xi][o];
			}
		}
	}
}

static void
weights_range_fenced(void *p, int64_t b0, int64_t b1, int chunk)
{
	weights_range(p, b0, b1, chunk);
#ifdef __AVX512F__
	/* streaming stores are weakly ordered: complete them before the barrier */
	_mm_sfence();
#endif
}

void
tl_winograd_weights(float *u, const float *w, int oc, int c)
{
	weight_job	j = {.u = u, .w = w, .c = c, .oc = oc};

	tl_parallel_for(c, 4, weights_range_fenced, &j);
}

/*
 * dw (oc, c, 3, 3) = G^T dU G for input channels [c0, c1), outer as in
 * weights_range: dU is read in contiguous rows, and dw's 36-byte pieces of
 * one c share cache lines with the next c's.
 */
static void
weight_grad_range(void *p, int64_t c0, int64_t c1, int chunk)
{
	weight_job *j = p;
	const int64_t plane = (int64_t) j->c * j->oc;

	for (int c = (int) c0; c < c1; c++)
	{
		for (int64_t ob = 0; ob < (j->oc + OB - 1) / OB; ob++)
		{
			const int	o0 = (int) ob * OB,
						no = j->oc - o0 < OB ? j->oc - o0 : OB;

			float		d[XI][OB],
						t[3][4][OB],
						g[9][OB];

			if (no < OB)
				memset(d, 0, sizeof(d));
			for (int xi = 0; xi < XI; xi++)
			{
				const float *src = j->du + xi * plane + (int64_t) c * j->oc + o0;

				/* constant length when full: inlined, as in weights_range */
				if (no == OB)
					for (int o = 0; o < OB; o++)
						d[xi][o] = src[o];
				else
					for (int o = 0; o < no; o++)
						d[xi][o] = src[o];
			}
			/* G^T dU: columns */
			for (int b = 0; b < 4; b++)
				for (int o = 0; o < OB; o++)
				{
					t[0][b][o] = d[b][o] + 0.5f * (d[4 + b][o] + d[8 + b][o]);
					t[1][b][o] = 0.5f * (d[4 + b][o] - d[8 + b][o]);
					t[2][b][o] = 0.5f * (d[4 + b][o] + d[8 + b][o]) + d[12 + b][o];
				}
			/* (G^T dU) G: rows */
			for (int a = 0; a < 3; a++)
				for (int o = 0; o < OB; o++)
				{
					g[a * 3 + 0][o] = t[a][0][o] + 0.5f * (t[a][1][o] + t[a][2][o]);
					g[a * 3 + 1][o] = 0.5f * (t[a][1][o] - t[a][2][o]);
					g[a * 3 + 2][o] = 0.5f * (t[a][1][o] + t[a][2][o]) + t[a][3][o];
				}
			for (int o = 0; o < no; o++)
				for (int k = 0; k < 9; k++)
					j->dw[((int64_t) (o0 + o) * j->c + c) * 9 + k] = g[k][o];
		}
	}
}

/* ---- input transform: V = B^T d B per tile ---- */

static void
input_range(void *p, int64_t t0, int64_t t1, int chunk)
{
	wino_job   *j = p;
	const tl_conv_shape *s = j->s;
	const int	C = s->c;
	const int64_t stride = j->T * C;	/* between positions xi */

	for (int64_t t = t0; t < t1; t++)
	{
		int64_t		px[XI];

		patch_pixels(j, t, px);
		for (int c0 = 0; c0 < C; c0 += CB)
		{
			const int	len = C - c0 < CB ? C - c0 : CB;
			const float *q[XI];
			float	   *dst = j->v + (t - j->t_base) * C + c0;

			for (int i = 0; i < XI; i++)
				q[i] = px[i] < 0 ? zeros : j->x + px[i] + c0;
#pragma GCC ivdep
			for (int c = 0; c < len; c++)
			{
				float		t0_[4],
							t1_[4],
							t2_[4],
							t3_[4];

				/* columns: B^T d */
				for (int b = 0; b < 4; b++)
					IN_FWD(q[b][c], q[4 + b][c], q[8 + b][c], q[12 + b][c],
						   t0_[b], t1_[b], t2_[b], t3_[b]);
				/* rows: (B^T d) B */
				IN_FWD(t0_[0], t0_[1], t0_[2], t0_[3],
					   dst[0 * stride + c], dst[1 * stride + c], dst[2 * stride + c], dst[3 * stride + c]);
				IN_FWD(t1_[0], t1_[1], t1_[2], t1_[3],
					   dst[4 * stride + c], dst[5 * stride + c], dst[6 * stride + c], dst[7 * stride + c]);
				IN_FWD(t2_[0], t2_[1], t2_[2], t2_[3],
					   dst[8 * stride + c], dst[9 * stride + c], dst[10 * stride + c], dst[11 * stride + c]);
				IN_FWD(t3_[0], t3_[1], t3_[2], t3_[3],
					   dst[12 * stride + c], dst[13 * stride + c], dst[14 * stride + c], dst[15 * stride + c]);
			}
		}
	}
}

/* ---- output transform: y = A^T M A per tile ---- */

static void
output_range(void *p, int64_t t0, int64_t t1, int chunk)
{
	wino_job   *j = p;
	const tl_conv_shape *s = j->s;
	const int	OC = s->oc;
	const int64_t stride = j->T * OC;
	float		sink[4][CB];	/* outputs past the edge (odd sizes) */

	for (int64_t t = t0; t < t1; t++)
	{
		int64_t		px[4];

		tile_pixels(j, t, px);
		for (int c0 = 0; c0 < OC; c0 += CB)
		{
			const int	len = OC - c0 < CB ? OC - c0 : CB;
			const float *m = j->m + (t - j->t_base) * OC + c0;
			float	   *d[4];

			for (int i = 0; i < 4; i++)
				d[i] = px[i] < 0 ? sink[i] : j->y + px[i] + c0;
#pragma GCC ivdep
			for (int c = 0; c < len; c++)
			{
				float		r0[4],
							r1[4];

				/* columns: A^T M */
				for (int b = 0; b < 4; b++)
					OUT_FWD(m[b * stride + c], m[(4 + b) * stride + c],
							m[(8 + b) * stride + c], m[(12 + b) * stride + c], r0[b], r1[b]);
				/* rows: (A^T M) A */
				OUT_FWD(r0[0], r0[1], r0[2], r0[3], d[0][c], d[1][c]);
				OUT_FWD(r1[0], r1[1], r1[2], r1[3], d[2][c], d[3][c]);
			}
		}
	}
}

/* ---- dM = A dY A^T per tile (outputs beyond the edge have no gradient) ---- */

static void
dy_range(void *p, int64_t t0, int64_t t1, int chunk)
{
	wino_job   *j = p;
	const tl_conv_shape *s = j->s;
	const int	OC = s->oc;
	const int64_t stride = j->T * OC;

	for (int64_t t = t0; t < t1; t++)
	{
		int64_t		px[4];

		tile_pixels(j, t, px);
		for (int c0 = 0; c0 < OC; c0 += CB)
		{
			const int	len = OC - c0 < CB ? OC - c0 : CB;
			const float *g[4];
			float	   *dst = j->m + (t - j->t_base) * OC + c0;

			for (int i = 0; i < 4; i++)
				g[i] = px[i] < 0 ? zeros : j->dy + px[i] + c0;
#pragma GCC ivdep
			for (int c = 0; c < len; c++)
			{
				float		r[4][2];

				/* columns: A g (2 -> 4), then rows */
				for (int b = 0; b < 2; b++)
					OUT_BWD(g[b][c], g[2 + b][c], r[0][b], r[1][b], r[2][b], r[3][b]);
				for (int a = 0; a < 4; a++)
					OUT_BWD(r[a][0], r[a][1],
							dst[(a * 4 + 0) * stride + c], dst[(a * 4 + 1) * stride + c],
							dst[(a * 4 + 2) * stride + c], dst[(a * 4 + 3) * stride + c]);
			}
		}
	}
}

/* ---- dx += B dV B^T per tile, tile rows of one parity ---- */

/* dx += B dV B^T for the tiles of tile row ty of image n; sink takes the padding's */
static inline void
scatter_row(const wino_job *j, int n, int ty, float (*sink)[CB])
{
	const tl_conv_shape *s = j->s;
	const int	C = s->c;
	const int64_t stride = j->T * C;

	{
		for (int tx = 0; tx < j->tw; tx++)
		{
			int64_t		t = ((int64_t) n * j->th + ty) * j->tw + tx;
			int64_t		px[XI];

			patch_pixels(j, t, px);
			for (int c0 = 0; c0 < C; c0 += CB)
			{
				const int	len = C - c0 < CB ? C - c0 : CB;
				const float *v = j->v + (t - j->t_base) * C + c0;
				float	   *d[XI];

				for (int i = 0; i < XI; i++)
					d[i] = px[i] < 0 ? sink[i] : j->y + px[i] + c0;
#pragma GCC ivdep
				for (int c = 0; c < len; c++)
				{
					float		e[4][4],
								f[4][4];

					/* columns: B dV, then rows: (B dV) B^T */
					for (int b = 0; b < 4; b++)
						IN_BWD(v[b * stride + c], v[(4 + b) * stride + c],
							   v[(8 + b) * stride + c], v[(12 + b) * stride + c],
							   e[0][b], e[1][b], e[2][b], e[3][b]);
					for (int a = 0; a < 4; a++)
						IN_BWD(e[a][0], e[a][1], e[a][2], e[a][3], f[a][0], f[a][1], f[a][2], f[a][3]);
					for (int i = 0; i < XI; i++)
						d[i][c] += f[i / 4][i % 4];
				}
			}
		}
	}
}

static void
dx_range(void *p, int64_t r0, int64_t r1, int chunk)
{
	wino_job   *j = p;
	const int	rows = (j->th - j->parity + 1) / 2;	/* tile rows of this parity */
	float		sink[XI][CB];	/* patch pixels in the padding */

	memset(sink, 0, sizeof(sink));
	for (int64_t r = r0; r < r1; r++)
		scatter_row(j, (int) (r / rows), j->parity + 2 * (int) (r % rows), sink);
}

/* ---- the GEMMs, split over positions ---- */

/* Eval forwards: tl_sgemm_nn reads u in place (inference's u never changes). */
static void
forward_gemms_eval(void *p, int64_t x0, int64_t x1, int chunk)
{
	wino_job   *j = p;
	const tl_conv_shape *s = j->s;

	for (int64_t xi = x0; xi < x1; xi++)
		tl_sgemm_nn((int) j->T, s->oc, s->c, j->v + xi * j->T * s->c, s->c,
					j->u + xi * s->c * s->oc, s->oc, j->m + xi * j->T * s->oc, s->oc);
}

static void
forward_gemms(void *p, int64_t x0, int64_t x1, int chunk)
{
	wino_job   *j = p;
	const tl_conv_shape *s = j->s;

	for (int64_t xi = x0; xi < x1; xi++)
		tl_sgemm(false, false, (int) j->T, s->oc, s->c,
				 j->v + xi * j->T * s->c, s->c, j->u + xi * s->c * s->oc, s->oc,
				 false, j->m + xi * j->T * s->oc, s->oc);
}

/*
 * dU_xi = V_xi^T dM_xi, then (V no longer needed) dV_xi = dM_xi U_xi^T into
 * V's place.  dU sums over T tiles: past TL_WGRAD_CHUNK it is summed chunk by
 * chunk in double (tl_nn_internal.h), like the im2col weight gradient.
 */
static void
backward_gemms(void *p, int64_t x0, int64_t x1, int chunk)
{
	wino_job   *j = p;
	const tl_conv_shape *s = j->s;
	const int	C = s->c,
				OC = s->oc;
	const int64_t plane = (int64_t) C * OC;

	for (int64_t xi = x0; xi < x1; xi++)
	{
		float	   *v = j->v + xi * j->T * C;
		const float *dm = j->m + xi * j->T * OC;
		float	   *du = j->du + xi * plane;

		if (j->want_dw && (j->T <= TL_WGRAD_CHUNK || !j->wtmp))
			tl_sgemm(true, false, C, OC, (int) j->T, v, C, dm, OC, false, du, OC);
		else if (j->want_dw)
		{
			float	   *tmp = j->wtmp + chunk * plane;
			double	   *acc = j->wacc + chunk * plane;

			memset(acc, 0, (size_t) plane * sizeof(double));
			for (int64_t r = 0; r < j->T; r += TL_WGRAD_CHUNK)
			{
				int			rows = (int) (j->T - r < TL_WGRAD_CHUNK ? j->T - r : TL_WGRAD_CHUNK);

				tl_sgemm(true, false, C, OC, rows,
						 v + r * C, C, dm + r * OC, OC,
						 false, tmp, OC);
				for (int64_t i = 0; i < plane; i++)
					acc[i] += tmp[i];
			}
			for (int64_t i = 0; i < plane; i++)
				du[i] = (float) acc[i];
		}
		if (j->want_dx)
			tl_sgemm(false, true, (int) j->T, C, OC,
					 dm, OC, j->u + xi * plane, OC,
					 false, v, C);
	}
}

static void
zero_rows(void *p, int64_t r0, int64_t r1, int chunk)
{
	wino_job   *j = p;
	const int64_t row = (int64_t) j->s->w * j->s->c;

	memset(j->y + r0 * row, 0, (size_t) ((r1 - r0) * row) * sizeof(float));
}

static void
init_job(wino_job *j, const tl_conv_shape *s, float *ws)
{
	memset(j, 0, sizeof(*j));
	j->s = s;
	j->th = (s->oh + 1) / 2;
	j->tw = (s->ow + 1) / 2;
	j->T = tl_winograd_tiles(s);
	j->v = ws;
	j->m = ws + XI * j->T * s->c;
	j->du = j->m + XI * j->T * s->oc;
}

/* grain of the tile loops: enough work per slice to amortise the handoff */
#define TILE_GRAIN 8

/*
 * Fused forward for convs with many tiles: each thread takes blocks of
 * FUSE_TILES tiles and runs input transform, the 16 GEMMs and the output
 * transform on one block in its own slice of the workspace, so V and M stay
 * in the core's cache instead of streaming 16 x T x (c + oc) floats through
 * memory (12.8 MB for layer1 at batch 4).  The GEMMs' K (c) is unchanged, so
 * every output is computed exactly as in the unfused path.
 */
#define FUSE_TILES 64

static void
fused_forward_range(void *p, int64_t b0, int64_t b1, int chunk)
{
	const wino_job *j = p;
	const tl_conv_shape *s = j->s;
	wino_job	lj = *j;

	lj.v = j->v + (int64_t) chunk * XI * FUSE_TILES * (s->c + s->oc);
	lj.m = lj.v + (int64_t) XI * FUSE_TILES * s->c;
	for (int64_t b = b0; b < b1; b++)
	{
		const int64_t t0 = b * FUSE_TILES,
					t1 = t0 + FUSE_TILES < j->T ? t0 + FUSE_TILES : j->T;

		lj.t_base = t0;
		lj.T = t1 - t0;
		input_range(&lj, t0, t1, chunk);
		if (j->eval)
			forward_gemms_eval(&lj, 0, XI, chunk);
		else
			forward_gemms(&lj, 0, XI, chunk);
		output_range(&lj, t0, t1, chunk);
	}
}

static void
forward(float *y, const float *x, const float *u, float *ws, const tl_conv_shape *s, bool eval)
{
	wino_job	j;

	init_job(&j, s, ws);
	j.x = x;
	j.u = u;
	j.y = y;
	j.eval = eval;
	if (j.T >= FUSE_MIN_TILES)
	{
		const int64_t blocks = (j.T + FUSE_TILES - 1) / FUSE_TILES,
					slices = j.T / FUSE_TILES;	/* thread slices the workspace holds */

		/* the choice and the blocks do not depend on the thread count: nor do the results */
		tl_parallel_for(blocks, tl_grain_for_slices(blocks, slices), fused_forward_range, &j);
		return;
	}
	tl_parallel_for(j.T, TILE_GRAIN, input_range, &j);
	tl_parallel_for(XI, 1, eval ? forward_gemms_eval : forward_gemms, &j);
	tl_parallel_for(j.T, TILE_GRAIN, output_range, &j);
}

void
tl_winograd_forward(float *y, const float *x, const float *u, float *ws, const tl_conv_shape *s)
{
	forward(y, x, u, ws, s, false);
}

/*
 * Fused backward, for the same convs as the fused forward when their
 * weight gradient needs no double chunks (T <= TL_WGRAD_CHUNK): blocks of
 * whole tile rows (about FUSE_TILES tiles), each through input and dY
 * transforms, dU partial += V^T dM (per thread, in wtmp), dV = dM U^T and
 * the dx scatter, in the thread's cache-sized workspace slice.  Adjacent
 * blocks' patches overlap, so even blocks run first, then odd ones.  dx is
 * summed in the same order at any thread count; dU's partial sums depend on
 * the thread count, as the im2col weight gradient's do.
 */
static bool
fuse_backward(const wino_job *j, int parts)
{
	return j->T >= FUSE_MIN_TILES && j->T <= TL_WGRAD_CHUNK && parts >= 1;
}

static void
fused_backward_range(void *p, int64_t b0, int64_t b1, int chunk)
{
	const wino_job *j = p;
	const tl_conv_shape *s = j->s;
	const int	C = s->c,
				OC = s->oc;
	const int64_t plane = (int64_t) C * OC;
	const int64_t rows = (int64_t) s->n * j->th;
	const int64_t R = j->fuse_rows;
	wino_job	lj = *j;
	float	   *du = j->want_dw ? j->wtmp + (int64_t) chunk * XI * plane : NULL;
	float		sink[XI][CB];

	memset(sink, 0, sizeof(sink));

	lj.v = j->v + (int64_t) chunk * j->fuse_slice;
	lj.m = lj.v + XI * R * j->tw * C;
	for (int64_t k = b0; k < b1; k++)
	{
		const int64_t b = 2 * k + j->parity,
					g0 = b * R,
					g1 = g0 + R < rows ? g0 + R : rows;
		const int64_t t0 = g0 * j->tw,
					t1 = g1 * j->tw;

		lj.t_base = t0;
		lj.T = t1 - t0;
		if (j->want_dw)
			input_range(&lj, t0, t1, chunk);
		dy_range(&lj, t0, t1, chunk);
		for (int xi = 0; xi < XI; xi++)
		{
			float	   *v = lj.v + xi * lj.T * C;
			const float *dm = lj.m + xi * lj.T * OC;

			if (j->want_dw)
				tl_sgemm(true, false, C, OC, (int) lj.T,
						 v, C, dm, OC,
						 true, du + xi * plane, OC);
			if (j->want_dx)
				tl_sgemm(false, true, (int) lj.T, C, OC,
						 dm, OC, j->u + xi * plane, OC,
						 false, v, C);
		}
		if (j->want_dx)
			for (int64_t g = g0; g < g1; g++)
				scatter_row(&lj, (int) (g / j->th), (int) (g % j->th), sink);
	}
}

typedef struct sum_job
{
	float	   *dst;
	const float *src;
	int64_t		n;				/* floats per partial */
	int			parts;
} sum_job;

/* dst = the partials summed in order, over a slice of elements */
static void
sum_partials(void *p, int64_t i0, int64_t i1, int chunk)
{
	sum_job    *j = p;

	for (int64_t i = i0; i < i1; i++)
	{
		float		v = j->src[i];

		for (int t = 1; t < j->parts; t++)
			v += j->src[t * j->n + i];
		j->dst[i] = v;
	}
}

static void
zero_floats(void *p, int64_t i0, int64_t i1, int chunk)
{
	memset((float *) p + i0, 0, (size_t) (i1 - i0) * sizeof(float));
}

static void
fused_backward(wino_job *j, float *dx, float *dw, int parts, bool accumulate)
{
	const tl_conv_shape *s = j->s;
	const int64_t rows = (int64_t) s->n * j->th;
	const int64_t plane = (int64_t) s->c * s->oc;
	int64_t		blocks,
				fit;

	j->fuse_rows = FUSE_TILES / j->tw > 1 ? FUSE_TILES / j->tw : 1;
	j->fuse_slice = XI * j->fuse_rows * j->tw * (s->c + s->oc);
	blocks = (rows + j->fuse_rows - 1) / j->fuse_rows;
	fit = XI * j->T * (s->c + s->oc) / j->fuse_slice;	/* slices the workspace holds */
	if (fit > parts)
		fit = parts;			/* and wtmp: one dU partial per slice */
	if (dw)
		tl_parallel_for(parts * XI * plane, 4096, zero_floats, j->wtmp);
	if (dx)
	{
		j->y = dx;
		if (!accumulate)
			tl_parallel_for((int64_t) s->n * s->h, 4, zero_rows, j);
	}
	/* even blocks, then odd ones: blocks of one parity have disjoint patches */
	for (j->parity = 0; j->parity < 2; j->parity++)
	{
		const int64_t nb = (blocks - j->parity + 1) / 2;

		if (nb > 0)
			tl_parallel_for(nb, tl_grain_for_slices(nb, fit), fused_backward_range, j);
	}
	if (dw)
	{
		sum_job		sj = {.dst = j->du, .src = j->wtmp, .n = XI * plane, .parts = parts};
		weight_job	wj = {.dw = dw, .du = j->du, .c = s->c, .oc = s->oc};

		tl_parallel_for(XI * plane, 4096, sum_partials, &sj);
		tl_parallel_for(s->c, 4, weight_grad_range, &wj);
	}
}

/*
 * Eval forwards fuse the same convs in the same blocks; tl_sgemm_nn sums
 * each output over k in order whatever the block, so fused or not the
 * results are the same bits.
 */
void
tl_winograd_forward_eval(float *y, const float *x, const float *u, float *ws,
						 const tl_conv_shape *s)
{
	forward(y, x, u, ws, s, true);
}

void
tl_winograd_backward(float *dx, float *dw, const float *dy, const float *x, const float *u,
					 float *ws, float *wtmp, double *wacc, int parts, const tl_conv_shape *s,
					 bool accumulate)
{
	wino_job	j;

	if (!dx && !dw)
		return;
	init_job(&j, s, ws);
	j.x = x;
	j.u = u;
	j.dy = dy;
	j.wtmp = wtmp;
	j.wacc = wacc;
	j.want_dw = dw != NULL;
	j.want_dx = dx != NULL;
	if (parts < 1)
		parts = 1;
	if (fuse_backward(&j, parts) && (wtmp || !dw))
	{
		fused_backward(&j, dx, dw, parts, accumulate);
		return;
	}
	if (j.want_dw)
		tl_parallel_for(j.T, TILE_GRAIN, input_range, &j);
	tl_parallel_for(j.T, TILE_GRAIN, dy_range, &j);
	/* at most `parts` slices: each needs its own wtmp/wacc when chunking */
	tl_parallel_for(XI, tl_grain_for_slices(XI, parts), backward_gemms, &j);
	if (dw)
	{
		weight_job	wj = {.dw = dw, .du = j.du, .c = s->c, .oc = s->oc};

		tl_parallel_for(s->c, 4, weight_grad_range, &wj);
	}
	if (dx)
	{
		j.y = dx;
		if (!accumulate)
			tl_parallel_for((int64_t) s->n * s->h, 4, zero_rows, &j);
		for (j.parity = 0; j.parity < 2 && j.parity < j.th; j.parity++)
			tl_parallel_for((int64_t) s->n * ((j.th - j.parity + 1) / 2), 1, dx_range, &j);
	}
}
