/*
 * Finite-difference checks of every layer's backward (tl_nn_internal.h), and the
 * fused paths against their unfused equivalents.
 *
 * For a layer y = f(x; w), the scalar L = sum(y * r) with a fixed random r
 * has dL/dx = backward(dy = r).  Central differences in float with step H
 * are compared per coordinate on a sample of coordinates; the tolerance is
 * FD_TOL relative to the largest analytic gradient (float32 rounding of L
 * divided by 2H dominates the difference).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "float_util.h"
#include "tap.h"
#include "nn/tl_nn_internal.h"
#include "nn/tl_resnet.h"
#include "tl_rng.h"

#define H 1e-2
#define FD_TOL 2e-3
#define SAMPLES 40

static tl_rng rng;

static float *
randn(int64_t n, double scale)
{
	return rand_floats(&rng, n, scale);
}

static double
dot(const float *a, const float *b, int64_t n)
{
	double		s = 0;

	for (int64_t i = 0; i < n; i++)
		s += (double) a[i] * b[i];
	return s;
}


/* Generic checker: loss() evaluates L for the current contents of var. */
typedef double (*loss_fn) (void *ctx);

/* kink: if not NULL, |distance to a ReLU kink| per element; closer than 2H is not sampled */
static double
fd_check_kinks(float *var, int64_t n, const float *analytic, loss_fn loss, void *ctx,
			   const float *kink)
{
	double		worst = 0,
				scale = max_abs(analytic, n);

	for (int s = 0; s < SAMPLES; s++)
	{
		int64_t		i = (int64_t) tl_rng_below(&rng, (uint64_t) n);
		float		saved = var[i];

		if (kink && fabs(kink[i]) < 2 * H)
			continue;
		double		lp,
					lm,
					fd;

		var[i] = saved + (float) H;
		lp = loss(ctx);
		var[i] = saved - (float) H;
		lm = loss(ctx);
		var[i] = saved;
		fd = (lp - lm) / (2 * H);
		if (fabs(fd - analytic[i]) / (scale > 0 ? scale : 1) > worst)
			worst = fabs(fd - analytic[i]) / (scale > 0 ? scale : 1);
	}
	return worst;
}

static double
fd_check(float *var, int64_t n, const float *analytic, loss_fn loss, void *ctx)
{
	return fd_check_kinks(var, n, analytic, loss, ctx, NULL);
}

/* ---- conv ---- */

typedef struct conv_ctx
{
	tl_conv_shape s;
	float	   *x,
			   *w,
			   *y,
			   *r,
			   *ws;
} conv_ctx;

static double
conv_loss(void *p)
{
	conv_ctx   *c = p;

	tl_conv_forward(c->y, c->x, c->w, c->ws, &c->s);
	return dot(c->y, c->r, (int64_t) c->s.n * c->s.oh * c->s.ow * c->s.oc);
}

static void
test_conv(int n, int h, int w, int c, int oc, int k, int stride, int pad)
{
	conv_ctx	cc;
	tl_conv_shape *s = &cc.s;
	int64_t		nx,
				nw,
				ny;
	float	   *dx,
			   *dw,
			   *dx2,
			   *wtmp;
	double	   *wacc;
	double		ex,
				ew,
				acc_diff = 0;

	s->n = n;
	s->h = h;
	s->w = w;
	s->c = c;
	s->oc = oc;
	s->k = k;
	s->stride = stride;
	s->pad = pad;
	s->oh = tl_conv_out_size(h, k, stride, pad);
	s->ow = tl_conv_out_size(w, k, stride, pad);
	nx = (int64_t) n * h * w * c;
	nw = (int64_t) oc * c * k * k;
	ny = (int64_t) n * s->oh * s->ow * oc;
	cc.x = randn(nx, 1);
	cc.w = randn(nw, 0.3);
	cc.y = randn(ny, 1);
	cc.r = randn(ny, 1);
	cc.ws = randn(tl_conv_workspace(s), 1);
	dx = randn(nx, 1);
	dx2 = randn(nx, 1);
	dw = randn(nw, 1);
	wtmp = randn(tl_conv_wgrad_workspace(s, 2), 1);
	wacc = malloc(sizeof(double) * (size_t) (tl_conv_wgrad_workspace(s, 2) + 1));
	tl_conv_backward(dx, dw, cc.r, cc.x, cc.w, cc.ws, wtmp, wacc, 2, s, false);
	ex = fd_check(cc.x, nx, dx, conv_loss, &cc);
	ew = fd_check(cc.w, nw, dw, conv_loss, &cc);
	ok(ex <= FD_TOL, "conv %dx%d s%d p%d (%dx%dx%d -> %d): dx matches finite differences (%.1e)",
	   k, k, stride, pad, h, w, c, oc, ex);
	ok(ew <= FD_TOL, "conv %dx%d s%d p%d: dw matches finite differences (%.1e)", k, k, stride, pad, ew);
	/* accumulate mode adds to what is there */
	for (int64_t i = 0; i < nx; i++)
		dx2[i] = 1.0f;
	tl_conv_backward(dx2, NULL, cc.r, cc.x, cc.w, cc.ws, NULL, NULL, 0, s, true);
	for (int64_t i = 0; i < nx; i++)
		if (fabs(dx2[i] - 1.0f - dx[i]) > acc_diff)
			acc_diff = fabs(dx2[i] - 1.0f - dx[i]);
	ok(acc_diff < 1e-5, "conv %dx%d s%d: accumulating dx adds (%.1e)", k, k, stride, acc_diff);
	free(cc.x);
	free(cc.w);
	free(cc.y);
	free(cc.r);
	free(cc.ws);
	free(dx);
	free(dx2);
	free(dw);
	free(wtmp);
	free(wacc);
}

/* Packing is a permutation: (oc, c, kh, kw) -> (oc, kh, kw, c) and back. */
static void
test_pack(void)
{
	const int	oc = 3,
				c = 5,
				k = 3;
	float	   *w = randn(oc * c * k * k, 1),
			   *wp = randn(oc * c * k * k, 1),
			   *back = randn(oc * c * k * k, 1);

	tl_conv_pack_weights(wp, w, oc, c, k);
	ok(wp[((2 * 3 + 1) * 3 + 2) * 5 + 4] == w[((2 * 5 + 4) * 3 + 1) * 3 + 2],
	   "packed (o, kh, kw, c) holds torch's (o, c, kh, kw)");
	tl_conv_unpack_grad(back, wp, oc, c, k);
	ok(memcmp(back, w, sizeof(float) * oc * c * k * k) == 0, "unpack inverts pack");
	free(w);
	free(wp);
	free(back);
}

/* Weight gradient summed in double chunks equals the one-GEMM result. */
static void
test_conv_wgrad_chunks(void)
{
	tl_conv_shape s = {2, 48, 48, 3, 4, 3, 1, 1, 48, 48};	/* P = 4608 > chunk */
	int64_t		nx = 2 * 48 * 48 * 3,
				nw = 4 * 3 * 9,
				ny = 2 * 48 * 48 * 4;
	float	   *x = randn(nx, 1),
			   *w = randn(nw, 1),
			   *dy = randn(ny, 1),
			   *ws = randn(tl_conv_workspace(&s), 1),
			   *dw1 = randn(nw, 1),
			   *dw2 = randn(nw, 1),
			   *wtmp = randn(2 * nw, 1);
	double	   *wacc = malloc(sizeof(double) * 2 * nw);
	double		d = 0;

	ok(tl_conv_wgrad_workspace(&s, 1) == nw, "row-split wgrad needs oc*K of workspace on 1 thread");
	ok(tl_conv_wgrad_workspace(&s, 2) == 2 * nw, "and oc*K per thread on 2");
	tl_conv_backward(NULL, dw1, dy, x, w, ws, NULL, NULL, 0, &s, false);
	tl_conv_backward(NULL, dw2, dy, x, w, ws, wtmp, wacc, 2, &s, false);
	for (int64_t i = 0; i < nw; i++)
		if (fabs(dw1[i] - dw2[i]) > d)
			d = fabs(dw1[i] - dw2[i]);
	ok(d < 1e-3 * max_abs(dw1, nw), "row-split chunked wgrad equals the single GEMM (%.1e)", d);
	free(x);
	free(w);
	free(dy);
	free(ws);
	free(dw1);
	free(dw2);
	free(wtmp);
	free(wacc);
}

/* ---- batchnorm ---- */

typedef struct bn_ctx
{
	int64_t		P;
	int			C;
	float	   *x,
			   *y,
			   *r,
			   *gamma,
			   *beta,
			   *rm,
			   *rv,
			   *res;
	double	   *mean,
			   *invstd,
			   *partials;
	bool		relu;
} bn_ctx;

static double
bn_loss(void *p)
{
	bn_ctx	   *b = p;

	tl_bn_forward_train(b->y, b->x, b->gamma, b->beta, b->rm, b->rv, b->mean, b->invstd, b->res,
						b->relu, b->P, b->C, 0.1f, 1e-5f, b->partials);
	return dot(b->y, b->r, b->P * b->C);
}

static void
test_batchnorm(void)
{
	bn_ctx		b;
	int64_t		n;
	float	   *dx,
			   *dg,
			   *db,
			   *masked,
			   *dx_fused,
			   *dx_ref;
	double		e1,
				e2,
				e3,
				fused = 0;

	b.P = 37;
	b.C = 5;
	n = b.P * b.C;
	b.x = randn(n, 2);
	for (int64_t i = 0; i < n; i++)
		b.x[i] += 1.5f;			/* non-zero mean */
	b.y = randn(n, 1);
	b.r = randn(n, 1);
	b.gamma = randn(b.C, 1);
	b.beta = randn(b.C, 1);
	b.rm = randn(b.C, 1);
	b.rv = randn(b.C, 1);
	b.res = NULL;
	b.relu = false;
	b.mean = malloc(sizeof(double) * b.C);
	b.invstd = malloc(sizeof(double) * b.C);
	b.partials = malloc(sizeof(double) * TL_BN_PARTIALS(b.C));
	dx = randn(n, 1);
	dg = randn(b.C, 1);
	db = randn(b.C, 1);
	bn_loss(&b);
	tl_bn_backward(dx, dg, db, NULL, b.r, NULL, b.x, b.gamma, b.mean, b.invstd, b.P, b.C, b.partials);
	e1 = fd_check(b.x, n, dx, bn_loss, &b);
	e2 = fd_check(b.gamma, b.C, dg, bn_loss, &b);
	e3 = fd_check(b.beta, b.C, db, bn_loss, &b);
	ok(e1 <= FD_TOL, "batchnorm (train): dx matches finite differences (%.1e)", e1);
	ok(e2 <= FD_TOL, "batchnorm: dgamma matches finite differences (%.1e)", e2);
	ok(e3 <= FD_TOL, "batchnorm: dbeta matches finite differences (%.1e)", e3);

	/* fused relu mask == relu backward then plain BN backward */
	b.relu = true;
	b.res = randn(n, 0.5);
	bn_loss(&b);
	masked = randn(n, 1);
	dx_fused = randn(n, 1);
	dx_ref = randn(n, 1);
	tl_bn_backward(dx_fused, dg, db, masked, b.r, b.y, b.x, b.gamma, b.mean, b.invstd, b.P, b.C, b.partials);
	tl_relu_backward(dx_ref, b.r, b.y, n);
	for (int64_t i = 0; i < n; i++)
		if (masked[i] != dx_ref[i])
			fused = INFINITY;
	tl_bn_backward(dx_ref, NULL, NULL, NULL, dx_ref, NULL, b.x, b.gamma, b.mean, b.invstd, b.P, b.C, b.partials);
	for (int64_t i = 0; i < n; i++)
		if (fabs(dx_ref[i] - dx_fused[i]) > fused)
			fused = fabs(dx_ref[i] - dx_fused[i]);
	ok(fused < 1e-6, "fused relu mask + BN backward equals the unfused pair (%.1e)", fused);
	{
		/*
		 * the residual input's gradient is the masked gradient: FD through
		 * the residual, away from the ReLU's kink (pre-activation near 0)
		 */
		float	   *pre = randn(n, 1);
		double		e4;

		b.relu = false;
		bn_loss(&b);
		memcpy(pre, b.y, sizeof(float) * n);
		b.relu = true;
		e4 = fd_check_kinks(b.res, n, masked, bn_loss, &b, pre);
		free(pre);

		ok(e4 <= FD_TOL, "batchnorm + residual + relu: d(residual) matches finite differences (%.1e)", e4);
	}
	{
		/* running statistics: momentum 0.1 with the unbiased variance */
		float		rm0 = 0.5f,
					rv0 = 2.0f;
		double		s = 0,
					ss = 0;

		for (int64_t p = 0; p < b.P; p++)
		{
			s += b.x[p * b.C];
			ss += (double) b.x[p * b.C] * b.x[p * b.C];
		}
		b.rm[0] = rm0;
		b.rv[0] = rv0;
		bn_loss(&b);
		close_to(b.rm[0], 0.9 * rm0 + 0.1 * s / b.P, 1e-6, "running mean update");
		close_to(b.rv[0], 0.9 * rv0 + 0.1 * (ss - s * s / b.P) / (b.P - 1), 1e-5, "running var update (unbiased)");
	}
	{
		/* eval mode uses running statistics */
		float		y1[5],
					g1 = 2.0f,
					b1 = 0.5f,
					m1 = 1.0f,
					v1 = 4.0f,
					x1[1] = {3.0f};

		tl_bn_forward_eval(y1, x1, &g1, &b1, &m1, &v1, NULL, false, 1, 1, 1e-5f);
		close_to(y1[0], (3.0 - 1.0) / sqrt(4.0 + 1e-5) * 2.0 + 0.5, 1e-6, "eval-mode BN uses running stats");
	}
	free(b.x);
	free(b.y);
	free(b.r);
	free(b.gamma);
	free(b.beta);
	free(b.rm);
	free(b.rv);
	free(b.res);
	free(b.mean);
	free(b.invstd);
	free(b.partials);
	free(dx);
	free(dg);
	free(db);
	free(masked);
	free(dx_fused);
	free(dx_ref);
}

/* ---- pooling, linear, loss ---- */

typedef struct pool_ctx
{
	int			n,
				h,
				w,
				c,
				oh,
				ow;
	float	   *x,
			   *y,
			   *r;
	int32_t    *am;
} pool_ctx;

static double
maxpool_loss(void *p)
{
	pool_ctx   *c = p;

	tl_maxpool_forward(c->y, c->am, c->x, c->n, c->h, c->w, c->c, 3, 2, 1, c->oh, c->ow);
	return dot(c->y, c->r, (int64_t) c->n * c->oh * c->ow * c->c);
}

static double
avgpool_loss(void *p)
{
	pool_ctx   *c = p;

	tl_avgpool_forward(c->y, c->x, c->n, c->h * c->w, c->c);
	return dot(c->y, c->r, (int64_t) c->n * c->c);
}

static void
test_pools(void)
{
	pool_ctx	c = {.n = 2, .h = 9, .w = 8, .c = 3};
	int64_t		nx = 2 * 9 * 8 * 3;
	float	   *dx = randn(nx, 1);
	double		e;

	c.oh = tl_conv_out_size(9, 3, 2, 1);
	c.ow = tl_conv_out_size(8, 3, 2, 1);
	/* distinct values spaced well beyond H so no finite step changes an argmax */
	c.x = randn(nx, 1);
	for (int64_t i = 0; i < nx; i++)
		c.x[i] = (float) ((i * 7919) % nx) * 0.05f;
	c.y = randn((int64_t) 2 * c.oh * c.ow * 3, 1);
	c.r = randn((int64_t) 2 * c.oh * c.ow * 3, 1);
	c.am = malloc(sizeof(int32_t) * 2 * c.oh * c.ow * 3);
	maxpool_loss(&c);
	tl_maxpool_backward(dx, c.r, c.am, 2, 9, 8, 3, 3, 2, 1, c.oh, c.ow);
	e = fd_check(c.x, nx, dx, maxpool_loss, &c);
	ok(e <= FD_TOL, "maxpool 3x3 s2 p1: dx matches finite differences (%.1e)", e);
	{
		/* ties: PyTorch keeps the first maximum in window order */
		float		x4[4] = {1, 1, 1, 1},
					y1;
		int32_t		a1;

		tl_maxpool_forward(&y1, &a1, x4, 1, 2, 2, 1, 3, 2, 1, 1, 1);
		ok(a1 == 0 && y1 == 1, "maxpool tie picks the first element");
	}
	free(c.y);
	free(c.r);
	c.y = randn(2 * 3, 1);
	c.r = randn(2 * 3, 1);
	for (int64_t i = 0; i < nx; i++)
		c.x[i] = (float) (2.0 * tl_rng_uniform(&rng) - 1.0);
	avgpool_loss(&c);
	tl_avgpool_backward(dx, c.r, 2, 9 * 8, 3);
	e = fd_check(c.x, nx, dx, avgpool_loss, &c);
	ok(e <= FD_TOL, "global avgpool: dx matches finite differences (%.1e)", e);
	free(c.x);
	free(c.y);
	free(c.r);
	free(c.am);
	free(dx);
}

typedef struct lin_ctx
{
	int			n,
				in,
				out;
	float	   *x,
			   *w,
			   *b,
			   *y,
			   *r;
	int32_t    *labels;
} lin_ctx;

static double
linear_loss(void *p)
{
	lin_ctx    *c = p;

	tl_linear_forward(c->y, c->x, c->w, c->b, c->n, c->in, c->out);
	return dot(c->y, c->r, (int64_t) c->n * c->out);
}

static double
xent_loss(void *p)
{
	lin_ctx    *c = p;

	return tl_softmax_xent(c->y, c->labels, c->n, c->out, NULL);
}

static void
test_linear_loss(void)
{
	lin_ctx		c = {.n = 3, .in = 7, .out = 4};
	float	   *dx = randn(21, 1),
			   *dw = randn(28, 1),
			   *db = randn(4, 1),
			   *dl = randn(12, 1),
			   probs[12];
	int32_t		labels[3] = {0, 3, 1};
	double		e;

	c.x = randn(21, 1);
	c.w = randn(28, 1);
	c.b = randn(4, 1);
	c.y = randn(12, 1);
	c.r = randn(12, 1);
	c.labels = labels;
	linear_loss(&c);
	tl_linear_backward(dx, dw, db, c.r, c.x, c.w, 3, 7, 4);
	e = fd_check(c.x, 21, dx, linear_loss, &c);
	ok(e <= FD_TOL, "linear: dx matches finite differences (%.1e)", e);
	e = fd_check(c.w, 28, dw, linear_loss, &c);
	ok(e <= FD_TOL, "linear: dw matches finite differences (%.1e)", e);
	e = fd_check(c.b, 4, db, linear_loss, &c);
	ok(e <= FD_TOL, "linear: db matches finite differences (%.1e)", e);

	tl_softmax_xent(c.y, labels, 3, 4, dl);
	e = fd_check(c.y, 12, dl, xent_loss, &c);
	ok(e <= FD_TOL, "softmax cross-entropy: dlogits matches finite differences (%.1e)", e);
	{
		float		z[2] = {0.0f, 0.0f};
		int32_t		l0 = 1;

		close_to(tl_softmax_xent(z, &l0, 1, 2, NULL), log(2.0), 1e-12, "xent of equal logits is log 2");
		z[0] = 1000.0f;
		ok(isfinite(tl_softmax_xent(z, &l0, 1, 2, NULL)), "xent is stable for large logits");
	}
	tl_softmax(probs, c.y, 3, 4);
	close_to(probs[4] + probs[5] + probs[6] + probs[7], 1.0, 1e-6, "softmax rows sum to 1");
	free(c.x);
	free(c.w);
	free(c.b);
	free(c.y);
	free(c.r);
	free(dx);
	free(dw);
	free(db);
	free(dl);
}

/* The pool splits work into disjoint slices covering the range. */
static int	hits[1000];

static void
mark(void *ctx, int64_t b, int64_t e, int chunk)
{
	for (int64_t i = b; i < e; i++)
		hits[i]++;
}

static void
test_parallel(void)
{
	int			good = 1;

	tl_set_num_threads(2);
	is_int(tl_parallel_for(1000, 1, mark, NULL), 2, "two slices on two threads");
	is_int(tl_parallel_for(10, 100, mark, NULL), 1, "small ranges stay on the caller");
	for (int i = 0; i < 1000; i++)
		if (hits[i] != (i < 10 ? 2 : 1))
			good = 0;
	ok(good, "every index visited once per call");

	/* a caller with per-slice buffers: as many slices as allowed, never more */
	for (int64_t n = 1; n <= 40; n++)
		for (int64_t max = 1; max <= 4; max++)
		{
			int			used = tl_parallel_for(n, tl_grain_for_slices(n, max), mark, NULL);
			int			want = n >= 2 && max >= 2 ? 2 : 1;

			if (used != want)
			{
				diag("n %lld, at most %lld slices: %d used, %d wanted",
					 (long long) n, (long long) max, used, want);
				good = 0;
			}
		}
	ok(good, "tl_grain_for_slices: 7 blocks in at most 2 slices run on both threads");

	/*
	 * Fork safety: a child of a process whose pool exists (a PostgreSQL
	 * backend forked from a postmaster that trained) builds its own pool.
	 */
	{
		pid_t		pid;
		int			status = -1;

		fflush(stdout);
		pid = fork();
		if (pid == 0)
		{
			int			n;

			alarm(20);			/* a hang fails the test instead of blocking it */
			memset(hits, 0, sizeof(hits));
			n = tl_parallel_for(1000, 1, mark, NULL);
			for (int i = 0; i < 1000; i++)
				if (hits[i] != 1)
					_exit(2);
			_exit(n == 2 ? 0 : 3);
		}
		if (pid > 0)
			waitpid(pid, &status, 0);
		ok(pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
		   "a forked child runs parallel work on a pool of its own (status %d)", status);
	}
	tl_set_num_threads(1);
}

int
main(void)
{
	tl_rng_seed(&rng, 2024);
	test_conv(2, 7, 6, 3, 4, 3, 1, 1);
	test_conv(2, 9, 8, 3, 5, 3, 2, 1);
	test_conv(1, 11, 10, 3, 2, 7, 2, 3);
	test_conv(2, 7, 7, 4, 6, 1, 2, 0);
	test_conv(2, 5, 5, 4, 3, 1, 1, 0);
	/* two threads: GEMMs split by output columns (small P) and by rows (P >= 512) */
	tl_set_num_threads(2);
	test_conv(2, 7, 6, 3, 4, 3, 1, 1);
	test_conv(2, 18, 17, 3, 5, 3, 1, 1);
	test_conv(2, 18, 16, 4, 3, 1, 1, 0);
	test_conv_wgrad_chunks();
	tl_set_num_threads(1);
	test_pack();
	test_batchnorm();
	test_pools();
	test_linear_loss();
	test_parallel();
	return tap_done();
}
