/*
 * The Winograd F(2x2, 3x3) convolution (tl_winograd.c) against the im2col
 * one (tl_conv.c, itself checked by finite differences in test_layers.c
 * and against PyTorch in test_resnet_parity.c): forward output, input
 * gradient (written and accumulated) and weight gradient, on shapes with odd
 * sizes (partial edge tiles), channel counts that are not multiples of the
 * kernels' 64-channel blocks, batch sizes 1-3, 1 and 2 threads, and a weight
 * gradient long enough to be summed in double chunks.
 *
 * Tolerance: WINO_TOL of the largest reference magnitude.  The two differ
 * only in rounding: Winograd adds and subtracts up to 16 inputs (and 9
 * weights, halved) before multiplying, so its error is a small multiple of
 * float32's 6e-8 relative step times the sums' growth.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "float_util.h"
#include "tap.h"
#include "nn/tl_nn_internal.h"
#include "nn/tl_resnet.h"
#include "tl_rng.h"

#define WINO_TOL 2e-5

static tl_rng rng;

static float *
randu(int64_t n, double scale)
{
	return rand_floats(&rng, n, scale);
}

/* largest |a - b| relative to the largest |b| */
static double
rel_diff(const float *a, const float *b, int64_t n)
{
	double		d = 0,
				m = max_abs(b, n);

	for (int64_t i = 0; i < n; i++)
		if (fabs((double) a[i] - b[i]) > d || isnan(a[i]))
			d = isnan(a[i]) ? INFINITY : fabs((double) a[i] - b[i]);
	return m > 0 ? d / m : d;
}

static void
check_shape(int n, int h, int w, int c, int oc, int threads)
{
	tl_conv_shape s = {n, h, w, c, oc, 3, 1, 1, h, w};
	const int64_t nx = (int64_t) n * h * w * c,
				nw = (int64_t) oc * c * 9,
				ny = (int64_t) n * h * w * oc;
	const int64_t wsz = tl_conv_workspace(&s) > tl_winograd_workspace(&s, true)
		? tl_conv_workspace(&s) : tl_winograd_workspace(&s, true);
	const int64_t wg = tl_conv_wgrad_workspace(&s, threads) > tl_winograd_wgrad_workspace(&s, threads)
		? tl_conv_wgrad_workspace(&s, threads) : tl_winograd_wgrad_workspace(&s, threads);
	float	   *x = randu(nx, 1),
			   *w_t = randu(nw, 0.3),	/* PyTorch layout */
			   *wp = randu(nw, 1),
			   *u = randu(16 * (int64_t) c * oc, 1),
			   *dy = randu(ny, 1),
			   *ws = randu(wsz, 1),
			   *wtmp = randu(wg, 1),
			   *y_ref = randu(ny, 1),
			   *y = randu(ny, 1),
			   *dx_ref = randu(nx, 1),
			   *dx = randu(nx, 1),
			   *dwp = randu(nw, 1),
			   *dw_ref = randu(nw, 1),
			   *dw = randu(nw, 1);
	double	   *wacc = malloc(sizeof(double) * (size_t) (wg + 1));
	double		e;

	tl_set_num_threads(threads);
	ok(tl_winograd_applies(&s), "3x3 s1 p1 %dx%dx%d qualifies", h, w, c);
	tl_conv_pack_weights(wp, w_t, oc, c, 3);
	tl_winograd_weights(u, w_t, oc, c);

	tl_conv_forward(y_ref, x, wp, ws, &s);
	tl_winograd_forward(y, x, u, ws, &s);
	e = rel_diff(y, y_ref, ny);
	ok(e <= WINO_TOL, "forward n%d %dx%d c%d->%d, %d thread(s): matches im2col (%.1e)",
	   n, h, w, c, oc, threads, e);

	tl_conv_backward(dx_ref, dwp, dy, x, wp, ws, wtmp, wacc, threads, &s, false);
	tl_conv_unpack_grad(dw_ref, dwp, oc, c, 3);
	tl_winograd_backward(dx, dw, dy, x, u, ws, wtmp, wacc, threads, &s, false);
	e = rel_diff(dx, dx_ref, nx);
	ok(e <= WINO_TOL, "dx n%d %dx%d c%d->%d: matches im2col (%.1e)", n, h, w, c, oc, e);
	e = rel_diff(dw, dw_ref, nw);
	ok(e <= WINO_TOL, "dw n%d %dx%d c%d->%d (%lld tiles): matches im2col (%.1e)", n, h, w, c, oc,
	   (long long) tl_winograd_tiles(&s), e);

	/* accumulate: dx += ..., the weight gradient skipped */
	for (int64_t i = 0; i < nx; i++)
		dx[i] = 1.0f;
	tl_winograd_backward(dx, NULL, dy, x, u, ws, NULL, NULL, threads, &s, true);
	for (int64_t i = 0; i < nx; i++)
		dx[i] -= 1.0f;
	e = rel_diff(dx, dx_ref, nx);
	ok(e <= WINO_TOL * 4, "dx accumulates onto what is there (%.1e)", e);

	free(x);
	free(w_t);
	free(wp);
	free(u);
	free(dy);
	free(ws);
	free(wtmp);
	free(y_ref);
	free(y);
	free(dx_ref);
	free(dx);
	free(dwp);
	free(dw_ref);
	free(dw);
	free(wacc);
}

/* The forward is computed in fixed tile blocks when tiles are many: bitwise the same at any thread count. */
static void
check_threads_bitwise(int n, int h, int w, int c, int oc)
{
	tl_conv_shape s = {n, h, w, c, oc, 3, 1, 1, h, w};
	const int64_t nx = (int64_t) n * h * w * c,
				ny = (int64_t) n * h * w * oc;
	float	   *x = randu(nx, 1),
			   *u = randu(16 * (int64_t) c * oc, 1),
			   *ws = randu(tl_winograd_workspace(&s, true), 1),
			   *y1 = randu(ny, 1),
			   *y = randu(ny, 1),
			   *dy = randu(ny, 1),
			   *dx1 = randu(nx, 1),
			   *dx = randu(nx, 1);
	bool		same = true,
				same_dx = true;

	tl_set_num_threads(1);
	tl_winograd_forward(y1, x, u, ws, &s);
	tl_winograd_backward(dx1, NULL, dy, x, u, ws, NULL, NULL, 1, &s, false);
	for (int t = 2; t <= 3; t++)
	{
		tl_set_num_threads(t);
		tl_winograd_forward(y, x, u, ws, &s);
		same = same && memcmp(y, y1, (size_t) ny * sizeof(float)) == 0;
		tl_winograd_backward(dx, NULL, dy, x, u, ws, NULL, NULL, t, &s, false);
		same_dx = same_dx && memcmp(dx, dx1, (size_t) nx * sizeof(float)) == 0;
	}
	ok(same, "forward n%d %dx%d c%d->%d (%lld tiles): bitwise the same at 1, 2 and 3 threads",
	   n, h, w, c, oc, (long long) tl_winograd_tiles(&s));
	ok(same_dx, "dx n%d %dx%d c%d->%d: bitwise the same at 1, 2 and 3 threads", n, h, w, c, oc);
	free(x);
	free(u);
	free(ws);
	free(y1);
	free(y);
	free(dy);
	free(dx1);
	free(dx);
}

/*
 * Eval forwards of many tiles run in fused blocks too; tl_sgemm_nn sums each
 * output over k in one order whatever the block, so a batch computed fused
 * is bitwise its images computed one by one, unfused (under 512 tiles each).
 */
static void
check_eval_fused_bitwise(int n, int h, int w, int c, int oc)
{
	tl_conv_shape s = {n, h, w, c, oc, 3, 1, 1, h, w};
	tl_conv_shape one = {1, h, w, c, oc, 3, 1, 1, h, w};
	const int64_t nx1 = (int64_t) h * w * c,
				ny1 = (int64_t) h * w * oc;
	float	   *x = randu(n * nx1, 1),
			   *u = randu(16 * (int64_t) c * oc, 1),
			   *ws = randu(tl_winograd_workspace(&s, false), 1),
			   *y = randu(n * ny1, 1),
			   *y1 = randu(ny1, 1);
	bool		same = true;

	tl_set_num_threads(2);
	tl_winograd_forward_eval(y, x, u, ws, &s);
	for (int i = 0; i < n; i++)
	{
		tl_winograd_forward_eval(y1, x + i * nx1, u, ws, &one);
		same = same && memcmp(y + i * ny1, y1, (size_t) ny1 * sizeof(float)) == 0;
	}
	ok(tl_winograd_tiles(&one) < 512 && tl_winograd_tiles(&s) >= 512,
	   "eval: %lld tiles per image (unfused), %lld in the batch (fused)",
	   (long long) tl_winograd_tiles(&one), (long long) tl_winograd_tiles(&s));
	ok(same, "eval forward n%d %dx%d c%d->%d: the fused batch is bitwise its images one by one",
	   n, h, w, c, oc);
	free(x);
	free(u);
	free(ws);
	free(y);
	free(y1);
}

int
main(void)
{
	tl_conv_shape strided = {1, 8, 8, 4, 4, 3, 2, 1, 4, 4};
	tl_conv_shape k1 = {1, 8, 8, 4, 4, 1, 1, 0, 8, 8};

	tl_rng_seed(&rng, 20261128);
	ok(!tl_winograd_applies(&strided), "a stride-2 conv does not qualify");
	ok(!tl_winograd_applies(&k1), "a 1x1 conv does not qualify");
	ok(tl_winograd_workspace(&strided, true) == 0, "and needs no workspace");

	check_shape(1, 7, 7, 5, 3, 1);		/* odd: partial tiles on both edges */
	check_shape(2, 8, 8, 64, 70, 2);	/* oc past one 64-channel block */
	check_shape(1, 5, 3, 3, 2, 2);
	check_shape(3, 14, 14, 130, 16, 2); /* c past two blocks */
	check_shape(1, 1, 1, 2, 2, 1);		/* one pixel: all but the centre is padding */
	check_shape(2, 2, 9, 6, 5, 2);
	check_shape(1, 7, 7, 512, 512, 2);	/* layer4 at batch 1 */
	/* 2 * 65 * 65 = 8450 tiles > TL_WGRAD_CHUNK: dU summed in double chunks */
	check_shape(2, 130, 130, 3, 4, 2);
	check_shape(2, 130, 130, 3, 4, 1);
	/* many tiles (the fused forward), odd edges, channels past one block */
	check_shape(1, 45, 47, 70, 66, 2);
	check_shape(1, 45, 47, 70, 66, 3);
	check_threads_bitwise(1, 45, 47, 70, 66);
	check_threads_bitwise(4, 56, 56, 64, 64);	/* layer1 at batch 4 */
	check_shape(4, 56, 56, 64, 64, 2);
	check_shape(4, 28, 28, 128, 128, 3);	/* layer2 at batch 4, 3 threads */
	check_eval_fused_bitwise(2, 39, 40, 70, 66);	/* odd edges, channels past one block */
	check_eval_fused_bitwise(4, 28, 28, 64, 64);	/* layer1 of a 112x112 input at batch 4 */
	tl_set_num_threads(1);
	return tap_done();
}
