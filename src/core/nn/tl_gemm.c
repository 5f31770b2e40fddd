/*
 * tl_gemm.c - the engine's single-precision GEMM (row-major, alpha 1):
 * C = op(A) * op(B), or C += op(A) * op(B).
 *
 * Every convolution and linear layer multiplies through here.  OpenBLAS
 * picks its kernels at run time, and an installation may pin them to an
 * older core (this machine's environment sets OPENBLAS_CORETYPE=Haswell:
 * 256-bit FMAs on an EPYC with 512-bit ones); and for the engine's shapes
 * its packing is overhead: a batch-1 forward's Winograd GEMMs have 16-49
 * rows, and OpenBLAS re-packed the whole weight matrix on every call (13% of
 * a predicting backend's CPU in sgemm_itcopy).
 *
 * The kernel computes an 8 x 32 tile of C in 16 AVX-512 registers: for each
 * k, two vectors of op(B)'s row k times 8 broadcast elements of op(A).
 * op(B) is read in place, a 32-column panel at a time (K x 128 bytes, held
 * in L1/L2 while all rows of op(A) stream past it), with software prefetch
 * because its rows are ldb apart.  op(A) is read in place too: element
 * (r, k) at a[r * lda + k], or at a[k * lda + r] when transposed, where the
 * 8 elements of a k are contiguous.  Only a transposed B is packed, one
 * K x 32 panel at a time, into a per-thread buffer.  Measured on one core of
 * this machine's EPYC, the GEMM shapes of a batch-4 training step ran at
 * 170-270 GFLOP/s against OpenBLAS's 107-132 with its Haswell kernels.
 *
 * Each element of C is one sum over k in increasing order (then added to C
 * when accumulating), whoever computes it: results do not depend on how
 * callers split rows or columns.  Builds without AVX-512 call cblas_sgemm.
 */
#include "tl_nn_internal.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#ifdef __AVX512F__
#include <immintrin.h>

#define MR 8					/* rows of op(A) per tile */
#define NR 32					/* columns of op(B) per tile (two vectors) */
#define PF_ROWS 16				/* prefetch distance into L1, in rows of B */
#define PF_FAR_ROWS 96			/* ... and into L2, on a panel's first pass */

/*
 * Rows [0, R) x the NR (masked: m0, m1) columns of C at c.  at: op(A) is
 * transposed (A stored K x M).  R and at are constants after inlining.
 */
static inline __attribute__((always_inline)) void
tile(const int R, const bool at, int K, const float *a, int64_t lda, const float *b,
	 int64_t ldb, float *c, int64_t ldc, __mmask16 m0, __mmask16 m1, bool add, bool far)
{
	__m512		acc0[MR],
				acc1[MR];

	for (int r = 0; r < R; r++)
	{
		acc0[r] = _mm512_setzero_ps();
		acc1[r] = _mm512_setzero_ps();
	}
	for (int k = 0; k < K; k++)
	{
		const float *bk = b + (int64_t) k * ldb;
		__m512		b0 = _mm512_maskz_loadu_ps(m0, bk);
		__m512		b1 = _mm512_maskz_loadu_ps(m1, bk + 16);

		/* rows of B are ldb apart: the hardware prefetcher misses them */
		_mm_prefetch((const char *) (bk + PF_ROWS * ldb), _MM_HINT_T0);
		_mm_prefetch((const char *) (bk + PF_ROWS * ldb + 16), _MM_HINT_T0);
		if (far)
		{
			/* past the panel's last row: the next panel's first rows */
			const float *f = k + PF_FAR_ROWS < K ? bk + PF_FAR_ROWS * ldb :
				b + (int64_t) (k + PF_FAR_ROWS - K) * ldb + NR;

			_mm_prefetch((const char *) f, _MM_HINT_T1);
			_mm_prefetch((const char *) (f + 16), _MM_HINT_T1);
		}

		for (int r = 0; r < R; r++)
		{
			__m512		av = _mm512_set1_ps(at ? a[(int64_t) k * lda + r] : a[r * lda + k]);

			acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
			acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
		}
	}
	for (int r = 0; r < R; r++)
	{
		float	   *cr = c + r * ldc;

		if (add)
		{
			acc0[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), acc0[r]);
			acc1[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr + 16), acc1[r]);
		}
		_mm512_mask_storeu_ps(cr, m0, acc0[r]);
		_mm512_mask_storeu_ps(cr + 16, m1, acc1[r]);
	}
}

#define TILE_CASE(R) \
	case R: \
		if (at) \
			tile(R, true, K, a, lda, b, ldb, c, ldc, m0, m1, add, i0 == 0); \
		else \
			tile(R, false, K, a, lda, b, ldb, c, ldc, m0, m1, add, i0 == 0); \
		break

/* Columns [0, w) of C against the panel b (row k at b + k * ldb), all rows. */
static void
panel(bool at, int M, int K, const float *A, int64_t lda, const float *b, int64_t ldb,
	  float *C, int64_t ldc, int w, bool add)
{
	__mmask16	m0 = (__mmask16) (w >= 16 ? 0xffff : (1u << w) - 1);
	__mmask16	m1 = (__mmask16) (w >= 32 ? 0xffff : w > 16 ? (1u << (w - 16)) - 1 : 0);

	for (int i0 = 0; i0 < M; i0 += MR)
	{
		const float *a = at ? A + i0 : A + (int64_t) i0 * lda;
		float	   *c = C + (int64_t) i0 * ldc;

		switch (M - i0 < MR ? M - i0 : MR)
		{
				TILE_CASE(1);
				TILE_CASE(2);
				TILE_CASE(3);
				TILE_CASE(4);
				TILE_CASE(5);
				TILE_CASE(6);
				TILE_CASE(7);
				TILE_CASE(8);
		}
	}
}

/*
 * The per-thread buffer for one transposed-B panel (K x NR floats), grown
 * on demand and freed when the thread exits.
 */
typedef struct panel_buffer
{
	float	   *p;
	int64_t		floats;
} panel_buffer;

static pthread_key_t panel_key;
static pthread_once_t panel_once = PTHREAD_ONCE_INIT;
static bool panel_key_ok;

static void
panel_buffer_free(void *arg)
{
	panel_buffer *pb = arg;

	free(pb->p);
	free(pb);
}

static void
panel_key_init(void)
{
	panel_key_ok = pthread_key_create(&panel_key, panel_buffer_free) == 0;
}

/* This thread's buffer of at least `floats`, or NULL without memory. */
static float *
panel_buffer_get(int64_t floats)
{
	panel_buffer *pb;

	pthread_once(&panel_once, panel_key_init);
	if (!panel_key_ok)
		return NULL;
	pb = pthread_getspecific(panel_key);
	if (pb == NULL)
	{
		if ((pb = calloc(1, sizeof(*pb))) == NULL)
			return NULL;
		if (pthread_setspecific(panel_key, pb) != 0)
		{
			free(pb);
			return NULL;
		}
	}
	if (pb->floats < floats)
	{
		float	   *p = aligned_alloc(64, (size_t) floats * sizeof(float));

		if (p == NULL)
			return NULL;
		free(pb->p);
		pb->p = p;
		pb->floats = floats;
	}
	return pb->p;
}

/* dst rows 0..15 (ldd apart) = the columns of the 16 x 16 block at src (lds apart) */
static inline void
transpose16(const float *src, int64_t lds, float *dst, int64_t ldd)
{
	__m512		r[16],
				t[16];

	for (int i = 0; i < 16; i++)
		r[i] = _mm512_loadu_ps(src + i * lds);
	/* interleave pairs of rows, then pairs of pairs, then 128-bit lanes twice */
	for (int i = 0; i < 16; i += 2)
	{
		t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
		t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
	}
	for (int i = 0; i < 16; i += 4)
	{
		r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
		r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xee);
		r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
		r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xee);
	}
	for (int h = 0; h < 16; h += 8)
		for (int i = 0; i < 4; i++)
		{
			t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
			t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xdd);
		}
	for (int i = 0; i < 8; i++)
	{
		_mm512_storeu_ps(dst + i * ldd, _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88));
		_mm512_storeu_ps(dst + (i + 8) * ldd, _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd));
	}
}

/* Columns [n0, n0 + w) of op(B) = B^T (B stored N x K) as K x NR, zero beyond w. */
static void
pack_bt(float *p, const float *B, int64_t ldb, int K, int n0, int w)
{
	int			n16 = w & ~15,
				k16 = K & ~15;

	/* whole 16 x 16 blocks in registers, the edges one element at a time */
	for (int n = 0; n < n16; n += 16)
		for (int k = 0; k < k16; k += 16)
			transpose16(B + (int64_t) (n0 + n) * ldb + k, ldb, p + (int64_t) k * NR + n, NR);
	for (int n = 0; n < NR; n++)
	{
		const float *src = B + (int64_t) (n0 + n) * ldb;

		for (int k = n < n16 ? k16 : 0; k < K; k++)
			p[(int64_t) k * NR + n] = n < w ? src[k] : 0.0f;
	}
}

void
tl_sgemm(bool trans_a, bool trans_b, int M, int N, int K, const float *A, int64_t lda,
		 const float *B, int64_t ldb, bool accumulate, float *C, int64_t ldc)
{
	float	   *bt = NULL;

	if (M <= 0 || N <= 0)
		return;
	if (trans_b && (bt = panel_buffer_get((int64_t) K * NR)) == NULL)
	{
		/* no memory for the panel: the same product, OpenBLAS's rounding */
		cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, CblasTrans, M, N, K,
					1.0f, A, (int) lda, B, (int) ldb, accumulate ? 1.0f : 0.0f, C, (int) ldc);
		return;
	}
	for (int n0 = 0; n0 < N; n0 += NR)
	{
		int			w = N - n0 < NR ? N - n0 : NR;

		if (trans_b)
		{
			pack_bt(bt, B, ldb, K, n0, w);
			panel(trans_a, M, K, A, lda, bt, NR, C + n0, ldc, w, accumulate);
		}
		else
			panel(trans_a, M, K, A, lda, B + n0, ldb, C + n0, ldc, w, accumulate);
	}
}

#else							/* no AVX-512 in this build */

void
tl_sgemm(bool trans_a, bool trans_b, int M, int N, int K, const float *A, int64_t lda,
		 const float *B, int64_t ldb, bool accumulate, float *C, int64_t ldc)
{
	if (M <= 0 || N <= 0)
		return;
	cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
				trans_b ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A, (int) lda,
				B, (int) ldb, accumulate ? 1.0f : 0.0f, C, (int) ldc);
}
#endif

void
tl_sgemm_nn(int M, int N, int K, const float *A, int64_t lda, const float *B, int64_t ldb,
			float *C, int64_t ldc)
{
	tl_sgemm(false, false, M, N, K, A, lda, B, ldb, false, C, ldc);
}
