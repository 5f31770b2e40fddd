/*
 * tl_gemm.c - the engine's own single-precision GEMMs (row-major, alpha 1).
 *
 * tl_sgemm_nn: C = A * B without packing, for the inference Winograd GEMMs.
 * A batch-1 forward's Winograd GEMMs are small in M (49 tiles in layer3,
 * 16 in layer4) and OpenBLAS packs the whole B (the transformed weights) on
 * every call: perf over a backend predicting showed 13% of all CPU in
 * sgemm_itcopy.  This kernel reads B in place, a 32-column panel at a time
 * (K x 128 bytes, cache-resident while up to 8 rows of A stream past it).
 *
 * tl_sgemm: C (+)= op(A) * op(B), packed, for training's GEMMs (forward,
 * input and weight gradients).  OpenBLAS picks its kernels at run time, and
 * an installation may pin them to an older core (OPENBLAS_CORETYPE=Haswell:
 * 256-bit FMAs on a CPU with 512-bit ones); measured on a 2-core AMD EPYC
 * with AVX-512, a finetune step took 0.14 s with those kernels and 0.095 s
 * with OpenBLAS's AVX-512 ones.  This one is the classic blocked GEMM: a
 * KC x NC block of op(B) packed into 32-column panels (L2), 8-row panels of
 * op(A) packed one at a time (L1), an 8 x 32 register tile.
 *
 * Both are AVX-512 where the build has it; elsewhere they call cblas_sgemm.
 * Each element of C is summed over k in increasing order, in blocks of KC
 * added to C one after the other, whoever computes it: results do not depend
 * on how callers split rows or columns.
 */
#include "tl_nn_internal.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#ifdef __AVX512F__
#include <immintrin.h>

#define MR 8					/* rows of A per block */
#define PF_ROWS 16				/* prefetch distance in rows of B */

/* rows [0, R) x the 32 (masked: m0, m1) columns of C at c */
static inline __attribute__((always_inline)) void
block(const int R, int K, const float *a, int64_t lda, const float *b, int64_t ldb,
	  float *c, int64_t ldc, __mmask16 m0, __mmask16 m1)
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

		for (int r = 0; r < R; r++)
		{
			__m512		av = _mm512_set1_ps(a[r * lda + k]);

			acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
			acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
		}
	}
	for (int r = 0; r < R; r++)
	{
		_mm512_mask_storeu_ps(c + r * ldc, m0, acc0[r]);
		_mm512_mask_storeu_ps(c + r * ldc + 16, m1, acc1[r]);
	}
}

#define BLOCK_CASE(R) \
	case R: block(R, K, a, lda, b, ldb, c, ldc, m0, m1); break

void
tl_sgemm_nn(int M, int N, int K, const float *A, int64_t lda, const float *B, int64_t ldb,
			float *C, int64_t ldc)
{
	for (int n0 = 0; n0 < N; n0 += 32)
	{
		int			w = N - n0 < 32 ? N - n0 : 32;
		__mmask16	m0 = (__mmask16) (w >= 16 ? 0xffff : (1u << w) - 1);
		__mmask16	m1 = (__mmask16) (w >= 32 ? 0xffff : w > 16 ? (1u << (w - 16)) - 1 : 0);
		const float *b = B + n0;

		for (int i0 = 0; i0 < M; i0 += MR)
		{
			const float *a = A + (int64_t) i0 * lda;
			float	   *c = C + (int64_t) i0 * ldc + n0;

			switch (M - i0 < MR ? M - i0 : MR)
			{
					BLOCK_CASE(1);
					BLOCK_CASE(2);
					BLOCK_CASE(3);
					BLOCK_CASE(4);
					BLOCK_CASE(5);
					BLOCK_CASE(6);
					BLOCK_CASE(7);
					BLOCK_CASE(8);
			}
		}
	}
}


/* ---- tl_sgemm: packed, for training ---- */

#define PR 8					/* rows of a packed A panel = register tile rows */
#define PC 32					/* columns of a packed B panel = register tile columns */
#define KC 256					/* k per block: an A panel is 8 kB, a B panel 32 kB */
#define NC 512					/* columns of op(B) per packed block: 512 kB, in L2 */

/* Per-thread packing buffers, allocated on first use and freed at thread exit. */
typedef struct pack_buffers
{
	float	   *a;				/* PR x KC */
	float	   *b;				/* KC x NC */
} pack_buffers;

static pthread_key_t pack_key;
static pthread_once_t pack_once = PTHREAD_ONCE_INIT;
static bool pack_key_ok;

static void
pack_free(void *p)
{
	pack_buffers *pb = p;

	free(pb->a);
	free(pb->b);
	free(pb);
}

static void
pack_key_init(void)
{
	pack_key_ok = pthread_key_create(&pack_key, pack_free) == 0;
}

/* This thread's buffers, or NULL when they can't be allocated. */
static pack_buffers *
pack_buffers_get(void)
{
	pack_buffers *pb;

	pthread_once(&pack_once, pack_key_init);
	if (!pack_key_ok)
		return NULL;
	pb = pthread_getspecific(pack_key);
	if (pb)
		return pb;
	pb = calloc(1, sizeof(*pb));
	if (!pb)
		return NULL;
	pb->a = aligned_alloc(64, sizeof(float) * PR * KC);
	pb->b = aligned_alloc(64, sizeof(float) * KC * NC);
	if (!pb->a || !pb->b || pthread_setspecific(pack_key, pb) != 0)
	{
		pack_free(pb);
		return NULL;
	}
	return pb;
}

/*
 * op(B)[k0 .. k0+kb) x [n0 .. n0+nb) into panels of PC columns, each kb x PC,
 * zero beyond nb.
 */
static void
pack_b(float *bp, bool tb, const float *B, int64_t ldb, int k0, int kb, int n0, int nb)
{
	for (int j = 0; j < nb; j += PC)
	{
		int			w = nb - j < PC ? nb - j : PC;
		float	   *p = bp + (int64_t) j * kb;

		if (!tb)
		{
			__mmask16	m0 = (__mmask16) (w >= 16 ? 0xffff : (1u << w) - 1);
			__mmask16	m1 = (__mmask16) (w >= 32 ? 0xffff : w > 16 ? (1u << (w - 16)) - 1 : 0);

			for (int k = 0; k < kb; k++)
			{
				const float *src = B + (int64_t) (k0 + k) * ldb + n0 + j;

				_mm512_store_ps(p + k * PC, _mm512_maskz_loadu_ps(m0, src));
				_mm512_store_ps(p + k * PC + 16, _mm512_maskz_loadu_ps(m1, src + 16));
			}
		}
		else
		{
			/* B is N x K: column n of the panel is row n0 + j + n of B */
			if (w < PC)
				memset(p, 0, sizeof(float) * kb * PC);
			for (int n = 0; n < w; n++)
			{
				const float *src = B + (int64_t) (n0 + j + n) * ldb + k0;

				for (int k = 0; k < kb; k++)
					p[k * PC + n] = src[k];
			}
		}
	}
}

/* op(A)[m0 .. m0+mr) x [k0 .. k0+kb) as kb x PR (k-major), zero beyond mr */
static void
pack_a(float *ap, bool ta, const float *A, int64_t lda, int m0, int mr, int k0, int kb)
{
	if (ta)
	{
		/* A is K x M: each k gives PR contiguous floats */
		__mmask16	m = (__mmask16) ((1u << mr) - 1);

		for (int k = 0; k < kb; k++)
			_mm256_store_ps(ap + k * PR,
							_mm512_castps512_ps256(_mm512_maskz_loadu_ps(m, A + (int64_t) (k0 + k) * lda + m0)));
	}
	else
	{
		if (mr < PR)
			memset(ap, 0, sizeof(float) * kb * PR);
		for (int r = 0; r < mr; r++)
		{
			const float *src = A + (int64_t) (m0 + r) * lda + k0;

			for (int k = 0; k < kb; k++)
				ap[k * PR + r] = src[k];
		}
	}
}

/*
 * The register tile: t = ap (kb x PR)^T * bp (kb x PC), then C = t
 * (overwrite) or C += t, for rows [0, mr) and the columns of masks m0, m1.
 */
static inline __attribute__((always_inline)) void
tile(int kb, const float *ap, const float *bp, float *c, int64_t ldc, int mr,
	 __mmask16 m0, __mmask16 m1, bool add)
{
	__m512		acc0[PR],
				acc1[PR];

	for (int r = 0; r < PR; r++)
	{
		acc0[r] = _mm512_setzero_ps();
		acc1[r] = _mm512_setzero_ps();
	}
	for (int k = 0; k < kb; k++)
	{
		__m512		b0 = _mm512_load_ps(bp + k * PC);
		__m512		b1 = _mm512_load_ps(bp + k * PC + 16);

		for (int r = 0; r < PR; r++)
		{
			__m512		av = _mm512_set1_ps(ap[k * PR + r]);

			acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
			acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
		}
	}
	for (int r = 0; r < mr; r++)
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

void
tl_sgemm(bool trans_a, bool trans_b, int M, int N, int K, const float *A, int64_t lda,
		 const float *B, int64_t ldb, bool accumulate, float *C, int64_t ldc)
{
	pack_buffers *pb;

	if (M <= 0 || N <= 0)
		return;
	if (K <= 0)
	{
		if (!accumulate)
			for (int i = 0; i < M; i++)
				memset(C + (int64_t) i * ldc, 0, sizeof(float) * N);
		return;
	}
	pb = pack_buffers_get();
	if (!pb)
	{
		/* no memory for the buffers: the same product, OpenBLAS's rounding */
		cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
					trans_b ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A, (int) lda,
					B, (int) ldb, accumulate ? 1.0f : 0.0f, C, (int) ldc);
		return;
	}
	for (int n0 = 0; n0 < N; n0 += NC)
	{
		int			nb = N - n0 < NC ? N - n0 : NC;

		for (int k0 = 0; k0 < K; k0 += KC)
		{
			int			kb = K - k0 < KC ? K - k0 : KC;
			bool		add = accumulate || k0 > 0;

			pack_b(pb->b, trans_b, B, ldb, k0, kb, n0, nb);
			for (int m0 = 0; m0 < M; m0 += PR)
			{
				int			mr = M - m0 < PR ? M - m0 : PR;

				pack_a(pb->a, trans_a, A, lda, m0, mr, k0, kb);
				for (int j = 0; j < nb; j += PC)
				{
					int			w = nb - j < PC ? nb - j : PC;
					__mmask16	m0m = (__mmask16) (w >= 16 ? 0xffff : (1u << w) - 1);
					__mmask16	m1m = (__mmask16) (w >= 32 ? 0xffff : w > 16 ? (1u << (w - 16)) - 1 : 0);
					float	   *c = C + (int64_t) m0 * ldc + n0 + j;

					tile(kb, pb->a, pb->b + (int64_t) j * kb, c, ldc, mr, m0m, m1m, add);
				}
			}
		}
	}
}

#else							/* no AVX-512 in this build */

void
tl_sgemm_nn(int M, int N, int K, const float *A, int64_t lda, const float *B, int64_t ldb,
			float *C, int64_t ldc)
{
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, (int) lda,
				B, (int) ldb, 0.0f, C, (int) ldc);
}

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
