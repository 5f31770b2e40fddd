/*
 * Unit test: tl_sgemm_nn (the unpacked GEMM of inference's Winograd
 * convolutions) and tl_sgemm (training's packed GEMM, all four
 * transpositions, overwriting and accumulating) against cblas_sgemm on
 * shapes with row, column and k-block tails,
 * and tl_winograd_forward_eval against tl_winograd_forward on the batch-1
 * shapes of ResNet-18's layers and odd ones.
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "nn/tl_nn_internal.h"
#include "nn/tl_resnet.h"

static float
urand(tl_rng *rng)
{
	return (float) (2.0 * tl_rng_uniform(rng) - 1.0);
}

/* max |a - b| / max |b| */
static double
rel_diff(const float *a, const float *b, int64_t n)
{
	double		d = 0,
				m = 0;

	for (int64_t i = 0; i < n; i++)
	{
		if (fabs(a[i] - b[i]) > d)
			d = fabs(a[i] - b[i]);
		if (fabs(b[i]) > m)
			m = fabs(b[i]);
	}
	return m > 0 ? d / m : d;
}

static void
check_gemm(tl_rng *rng, int M, int N, int K)
{
	/* leading dimensions larger than the matrices, as sub-blocks */
	int			lda = K + 3,
				ldb = N + 5,
				ldc = N + 7;
	float	   *a = malloc(sizeof(float) * M * lda);
	float	   *b = malloc(sizeof(float) * K * ldb);
	float	   *c = malloc(sizeof(float) * M * ldc);
	float	   *r = malloc(sizeof(float) * M * ldc);

	for (int i = 0; i < M * lda; i++)
		a[i] = urand(rng);
	for (int i = 0; i < K * ldb; i++)
		b[i] = urand(rng);
	for (int i = 0; i < M * ldc; i++)
		c[i] = r[i] = 42.0f;	/* the padding columns must stay untouched */
	tl_sgemm_nn(M, N, K, a, lda, b, ldb, c, ldc);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a, lda, b, ldb,
				0.0f, r, ldc);
	ok(rel_diff(c, r, (int64_t) M * ldc) < 1e-5, "sgemm %dx%dx%d matches cblas (%.2g)",
	   M, N, K, rel_diff(c, r, (int64_t) M * ldc));
	free(a);
	free(b);
	free(c);
	free(r);
}

static void
check_winograd(tl_rng *rng, int n, int h, int w, int c, int oc)
{
	tl_conv_shape s = {n, h, w, c, oc, 3, 1, 1, h, w};
	int64_t		nx = (int64_t) n * h * w * c,
				ny = (int64_t) n * h * w * oc;
	float	   *x = malloc(sizeof(float) * nx);
	float	   *wt = malloc(sizeof(float) * oc * c * 9);
	float	   *u = malloc(sizeof(float) * 16 * oc * c);
	float	   *ws = malloc(sizeof(float) * tl_winograd_workspace(&s, false));
	float	   *y = malloc(sizeof(float) * ny);
	float	   *ref = malloc(sizeof(float) * ny);
	float	   *y2 = malloc(sizeof(float) * ny);

	for (int64_t i = 0; i < nx; i++)
		x[i] = urand(rng);
	for (int64_t i = 0; i < (int64_t) oc * c * 9; i++)
		wt[i] = urand(rng);
	tl_winograd_weights(u, wt, oc, c);
	tl_set_num_threads(1);
	tl_winograd_forward(ref, x, u, ws, &s);
	tl_winograd_forward_eval(y, x, u, ws, &s);
	ok(rel_diff(y, ref, ny) < 1e-5, "winograd eval forward %dx%dx%dx%d -> %d matches (%.2g)",
	   n, h, w, c, oc, rel_diff(y, ref, ny));
	tl_set_num_threads(2);
	tl_winograd_forward_eval(y2, x, u, ws, &s);
	ok(memcmp(y, y2, sizeof(float) * ny) == 0, "  bitwise the same with 2 threads");
	tl_set_num_threads(1);
	free(x);
	free(wt);
	free(u);
	free(ws);
	free(y);
	free(ref);
	free(y2);
}

/*
 * tl_sgemm(ta, tb) against cblas_sgemm; the same product split into row
 * and column blocks must be bitwise the same (callers split work by thread).
 */
static void
check_sgemm(tl_rng *rng, bool ta, bool tb, bool accumulate, int M, int N, int K)
{
	int			lda = (ta ? M : K) + 3,
				ldb = (tb ? K : N) + 5,
				ldc = N + 7;
	int64_t		na = (int64_t) (ta ? K : M) * lda,
				nb = (int64_t) (tb ? N : K) * ldb,
				nc = (int64_t) M * ldc;
	float	   *a = malloc(sizeof(float) * na);
	float	   *b = malloc(sizeof(float) * nb);
	float	   *c = malloc(sizeof(float) * nc);
	float	   *r = malloc(sizeof(float) * nc);
	float	   *c2 = malloc(sizeof(float) * nc);
	int			mh = M / 2,
				nh = N / 2;

	for (int64_t i = 0; i < na; i++)
		a[i] = urand(rng);
	for (int64_t i = 0; i < nb; i++)
		b[i] = urand(rng);
	for (int64_t i = 0; i < nc; i++)
		c[i] = r[i] = c2[i] = accumulate ? urand(rng) : 42.0f;
	/* padding columns of C keep their values: 42 unless accumulating */
	for (int i = 0; i < M; i++)
		for (int j = N; j < ldc; j++)
			c[i * ldc + j] = r[i * ldc + j] = c2[i * ldc + j] = 42.0f;
	tl_sgemm(ta, tb, M, N, K, a, lda, b, ldb, accumulate, c, ldc);
	cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
				M, N, K, 1.0f, a, lda, b, ldb, accumulate ? 1.0f : 0.0f, r, ldc);
	ok(rel_diff(c, r, nc) < 2e-5, "sgemm %c%c%s %dx%dx%d matches cblas (%.2g)",
	   ta ? 't' : 'n', tb ? 't' : 'n', accumulate ? " +=" : "", M, N, K, rel_diff(c, r, nc));

	/* four quadrants: rows [0, mh) and [mh, M), columns [0, nh) and [nh, N) */
	for (int q = 0; q < 4; q++)
	{
		int			r0 = q & 1 ? mh : 0,
					r1 = q & 1 ? M : mh,
					k0 = q & 2 ? nh : 0,
					k1 = q & 2 ? N : nh;
		const float *aq = ta ? a + r0 : a + (int64_t) r0 * lda;
		const float *bq = tb ? b + (int64_t) k0 * ldb : b + k0;

		tl_sgemm(ta, tb, r1 - r0, k1 - k0, K, aq, lda, bq, ldb, accumulate,
				 c2 + (int64_t) r0 * ldc + k0, ldc);
	}
	ok(memcmp(c, c2, sizeof(float) * nc) == 0, "  bitwise the same split in quadrants");
	free(a);
	free(b);
	free(c);
	free(r);
	free(c2);
}

/* tl_conv_forward_eval (transposed packed weights) against tl_conv_forward */
static void
check_conv_eval(tl_rng *rng, int n, int h, int w, int c, int oc, int k, int stride, int pad)
{
	tl_conv_shape s = {n, h, w, c, oc, k, stride, pad,
		tl_conv_out_size(h, k, stride, pad), tl_conv_out_size(w, k, stride, pad)};
	int64_t		nx = (int64_t) n * h * w * c,
				ny = (int64_t) n * s.oh * s.ow * oc,
				nw = (int64_t) oc * c * k * k;
	float	   *x = malloc(sizeof(float) * nx);
	float	   *wt = malloc(sizeof(float) * nw);
	float	   *wp = malloc(sizeof(float) * nw);
	float	   *wpt = malloc(sizeof(float) * nw);
	float	   *ws = malloc(sizeof(float) * (tl_conv_workspace(&s) + 1));
	float	   *y = malloc(sizeof(float) * ny);
	float	   *ref = malloc(sizeof(float) * ny);
	float	   *y2 = malloc(sizeof(float) * ny);

	for (int64_t i = 0; i < nx; i++)
		x[i] = urand(rng);
	for (int64_t i = 0; i < nw; i++)
		wt[i] = urand(rng);
	tl_set_num_threads(1);
	tl_conv_pack_weights(wp, wt, oc, c, k);
	tl_conv_pack_weights_t(wpt, wt, oc, c, k);
	tl_conv_forward(ref, x, wp, ws, &s);
	tl_conv_forward_eval(y, x, wpt, ws, &s);
	ok(rel_diff(y, ref, ny) < 1e-5, "conv eval forward %dx%dx%dx%d -> %d, k%d s%d matches (%.2g)",
	   n, h, w, c, oc, k, stride, rel_diff(y, ref, ny));
	tl_set_num_threads(3);
	tl_conv_forward_eval(y2, x, wpt, ws, &s);
	ok(memcmp(y, y2, sizeof(float) * ny) == 0, "  bitwise the same with 3 threads");
	tl_set_num_threads(1);
	free(x);
	free(wt);
	free(wp);
	free(wpt);
	free(ws);
	free(y);
	free(ref);
	free(y2);
}

int
main(void)
{
	tl_rng		rng;
	static const int shapes[][3] = {
		{1, 1, 1}, {7, 5, 3}, {8, 16, 64}, {9, 17, 33}, {16, 512, 512}, {49, 256, 256},
		{13, 48, 100}, {3, 33, 7}, {784, 64, 64}, {17, 31, 1},
	};

	tl_rng_seed(&rng, 21);
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
		check_gemm(&rng, shapes[i][0], shapes[i][1], shapes[i][2]);
	{
		/* M, N, K: tails of the 8-row tile, the 32-column tile and the
		 * 16 x 16 transposes of a packed B^T panel */
		static const int sg[][3] = {
			{1, 1, 1}, {7, 5, 3}, {8, 32, 256}, {9, 33, 257}, {64, 512, 512},
			{13, 600, 100}, {100, 70, 600}, {3, 17, 1}, {16, 64, 0},
		};

		for (size_t i = 0; i < sizeof sg / sizeof sg[0]; i++)
			for (int t = 0; t < 8; t++)
				check_sgemm(&rng, t & 1, t & 2, t & 4, sg[i][0], sg[i][1], sg[i][2]);
	}
	check_winograd(&rng, 1, 56, 56, 64, 64);
	check_winograd(&rng, 1, 7, 7, 512, 512);
	check_winograd(&rng, 2, 9, 11, 5, 3);
	check_winograd(&rng, 1, 14, 14, 256, 40);
	check_conv_eval(&rng, 1, 224, 224, 3, 64, 7, 2, 3);	/* conv1: split by rows */
	check_conv_eval(&rng, 1, 14, 14, 256, 512, 3, 2, 1);	/* layer4.0.conv1: by columns */
	check_conv_eval(&rng, 1, 28, 28, 128, 256, 3, 2, 1);
	check_conv_eval(&rng, 2, 13, 9, 5, 70, 3, 1, 1);
	check_conv_eval(&rng, 1, 40, 33, 3, 4, 7, 2, 3);
	return tap_done();
}
