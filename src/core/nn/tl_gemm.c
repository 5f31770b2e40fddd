/*
 * tl_gemm.c - C = A * B (row-major, beta 0) without packing, for the
 * inference Winograd GEMMs.
 *
 * A batch-1 forward's Winograd GEMMs are small in M (49 tiles in layer3,
 * 16 in layer4) and OpenBLAS packs the whole B (the transformed weights) on
 * every call: perf over a backend predicting showed 13% of all CPU in
 * sgemm_itcopy.  This kernel reads B in place, a 32-column panel at a time
 * (K x 128 bytes, cache-resident while up to 8 rows of A stream past it),
 * with AVX-512 where the build has it; elsewhere it calls cblas_sgemm.
 *
 * Each element of C is one sum over k in increasing order, whoever computes
 * it: results do not depend on how callers split the work.
 */
#include "tl_nn_internal.h"

#include <cblas.h>

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

#else							/* no AVX-512 in this build */

void
tl_sgemm_nn(int M, int N, int K, const float *A, int64_t lda, const float *B, int64_t ldb,
			float *C, int64_t ldc)
{
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, (int) lda,
				B, (int) ldb, 0.0f, C, (int) ldc);
}
#endif
