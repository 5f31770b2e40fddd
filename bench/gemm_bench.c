/*
 * gemm_bench - the engine's GEMM (tl_sgemm) against OpenBLAS's cblas_sgemm
 * on one thread, for the GEMM shapes of a batch-4 224x224 ResNet-18
 * training step.  Prints GFLOP/s of the best of many calls (operands in
 * cache), per shape.  Not a test.
 *
 *   gcc -O3 -march=native -std=gnu11 -Isrc/core -o build/bench/gemm_bench \
 *       bench/gemm_bench.c src/core/nn/tl_gemm.c -lopenblas -lpthread
 *   OPENBLAS_NUM_THREADS=1 build/bench/gemm_bench
 *
 * OpenBLAS's numbers depend on the kernels it picks at run time
 * (OPENBLAS_CORETYPE).
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "nn/tl_nn_internal.h"

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void
run(const char *name, bool ta, bool tb, int M, int N, int K, int reps)
{
	size_t		na = (size_t) M * K,
				nb = (size_t) K * N,
				nc = (size_t) M * N;
	/* 64-byte aligned, as the engine's buffers are */
	float	   *a = aligned_alloc(64, sizeof(float) * (na + 16));
	float	   *b = aligned_alloc(64, sizeof(float) * (nb + 16));
	float	   *c = aligned_alloc(64, sizeof(float) * (nc + 16));
	int			lda = ta ? M : K,
				ldb = tb ? K : N;
	double		ours = 1e9,
				blas = 1e9;

	for (size_t i = 0; i < na; i++)
		a[i] = 1e-3f * (float) (i % 97);
	for (size_t i = 0; i < nb; i++)
		b[i] = 1e-3f * (float) (i % 89);
	/* each side's calls in a row: the other's buffers would evict its panels */
	for (int r = 0; r < reps; r++)
	{
		double		t0 = now(),
					t;

		tl_sgemm(ta, tb, M, N, K, a, lda, b, ldb, false, c, N);
		if ((t = now() - t0) < ours)
			ours = t;
	}
	for (int r = 0; r < reps; r++)
	{
		double		t0 = now(),
					t;

		cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
					M, N, K, 1.0f, a, lda, b, ldb, 0.0f, c, N);
		if ((t = now() - t0) < blas)
			blas = t;
	}
	printf("%-38s %c%c %5d x %4d x %4d   ours %4.0f GFLOP/s   OpenBLAS %4.0f\n", name,
		   ta ? 't' : 'n', tb ? 't' : 'n', M, N, K,
		   2.0 * M * N * K / ours * 1e-9, 2.0 * M * N * K / blas * 1e-9);
	free(a);
	free(b);
	free(c);
}

int
main(void)
{
	/* M x N x K; Winograd GEMMs have 16 of each per conv */
	run("layer1 Winograd forward, a block", false, false, 64, 64, 64, 200);
	run("layer2 Winograd forward", false, false, 784, 128, 128, 50);
	run("layer3 Winograd forward", false, false, 196, 256, 256, 50);
	run("layer4 Winograd forward", false, false, 64, 512, 512, 50);
	run("layer1 Winograd dx, a block", false, true, 64, 64, 64, 200);
	run("layer3 Winograd dx", false, true, 196, 256, 256, 50);
	run("layer4 Winograd dx", false, true, 64, 512, 512, 50);
	run("layer1 Winograd weight gradient", true, false, 64, 64, 3136, 50);
	run("layer3 Winograd weight gradient", true, false, 256, 256, 196, 50);
	run("layer4 Winograd weight gradient", true, false, 512, 512, 64, 50);
	run("conv1 forward, a block of rows", false, true, 1024, 64, 147, 50);
	run("layer4 stride-2 conv forward", false, true, 196, 512, 2304, 20);
	run("layer4 stride-2 conv weight gradient", true, false, 512, 2304, 196, 20);
	run("layer4 stride-2 conv input gradient", false, false, 196, 2304, 512, 20);
	return 0;
}
