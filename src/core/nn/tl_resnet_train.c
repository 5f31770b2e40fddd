/*
 * tl_resnet_train.c - planning, forward, loss, backward and the step entry
 * points of ResNet-18.
 *
 * Forward (NHWC):
 *   conv1 -> bn1+relu -> maxpool -> 8 BasicBlocks -> avgpool -> fc
 * where a block is
 *   out = relu(bn2(conv2(relu(bn1(conv1(x))))) + identity)
 *   identity = x, or ds_bn(ds_conv(x)) for the first block of layers 2-4.
 * BN+ReLU and BN+add+ReLU are one pass each.  Train mode keeps each conv's
 * output (BN's input) and each ReLU's output (its mask) for backward.
 */
#include "tl_resnet_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TL_MAX_INPUT_SIDE 8192
#define TL_MAX_BATCH 4096
#define TL_MAX_PLAN_BYTES ((int64_t) 64 << 30)
/* slot k of the feature extractor's shared region (NULL while measuring) */
#define SHARED_AT(base, off) ((float *) ((base) ? (base) + (off) : NULL))

/* ---- planning ---- */

typedef struct arena_cursor
{
	char	   *base;			/* NULL while measuring */
	int64_t		used;
	int64_t		largest;		/* bytes of the largest single buffer */
} arena_cursor;

static void *
take(arena_cursor *a, int64_t bytes)
{
	void	   *p = a->base ? a->base + a->used : NULL;

	if (bytes > a->largest)
		a->largest = bytes;
	a->used += (bytes + 63) & ~(int64_t) 63;
	return p;
}

static inline int64_t
act(int n, int h, int w, int c)
{
	return (int64_t) n * h * w * c;
}

static tl_conv_shape
conv_shape(const tl_conv_layer *conv, int n, int h, int w)
{
	tl_conv_shape s;

	s.n = n;
	s.h = h;
	s.w = w;
	s.c = conv->cin;
	s.oc = conv->cout;
	s.k = conv->k;
	s.stride = conv->stride;
	s.pad = conv->pad;
	s.oh = tl_conv_out_size(h, conv->k, conv->stride, conv->pad);
	s.ow = tl_conv_out_size(w, conv->k, conv->stride, conv->pad);
	return s;
}

/*
 * Raise the workspace maxima for one conv: the larger of the im2col and the
 * Winograd needs, so the algorithm can change without a new plan.
 */
static void
need_workspace(const tl_resnet *net, const tl_conv_shape *s, int64_t *ws, int64_t *wg)
{
	const bool	backward = net->mode == TL_MODE_FINETUNE;
	int64_t		a = tl_conv_workspace(s),
				b = tl_winograd_workspace(s, backward);

	if (a > *ws)
		*ws = a;
	if (b > *ws)
		*ws = b;
	a = tl_conv_wgrad_workspace(s, net->wparts);
	b = backward ? tl_winograd_wgrad_workspace(s, net->wparts) : 0;
	if (a > *wg)
		*wg = a;
	if (b > *wg)
		*wg = b;
}

/* Lay out the arena (or measure it when a->base is NULL). */
static void
layout(tl_resnet *net, arena_cursor *a)
{
	const int	N = net->max_batch;
	const bool	finetune = net->mode == TL_MODE_FINETUNE;
	const int	bw = net->cfg.base_width;
	const int	F = 8 * bw;
	const int	K = net->cfg.num_classes;
	int64_t		ws = 0,
				wg = 0,
				gmax = 0;
	int			h,
				w;
	tl_conv_shape s;
	char	   *shared = NULL;	/* feature extractor: see below */
	int64_t		slot = 0;

	/* weight-gradient partials for the thread count at plan time */
	net->wparts = tl_get_num_threads();
	net->x_in = take(a, act(N, net->height, net->width, 3) * 4);
	s = conv_shape(&net->conv1, N, net->height, net->width);
	net->h1 = s.oh;
	net->w1 = s.ow;
	need_workspace(net, &s, &ws, &wg);
	net->hp = tl_conv_out_size(net->h1, 3, 2, 1);
	net->wp = tl_conv_out_size(net->w1, 3, 2, 1);
	if (!finetune)
	{
		/*
		 * A frozen backbone's backward never reads its activations, so each
		 * is dead once the next layer has read it: the stem's two buffers
		 * and the blocks' seven slots (z1, a1, z2, zd, dn and out, which
		 * alternates between two slots so that a block never overwrites its
		 * input) share one region.  About half the arena at 224x224.
		 */
		int64_t		stem = (act(N, net->h1, net->w1, bw) * 4 + 63) & ~(int64_t) 63;
		int			bh = net->hp,
					bwid = net->wp;

		for (int i = 0; i < TL_RESNET_BLOCKS; i++)
		{
			tl_block   *blk = &net->blocks[i];
			tl_conv_shape bs = conv_shape(&blk->conv1, N, bh, bwid);

			int64_t		need = (act(N, bs.oh, bs.ow, blk->cout) * 4 + 63) & ~(int64_t) 63;

			if (need > slot)
				slot = need;
			bh = bs.oh;
			bwid = bs.ow;
		}
		shared = take(a, 2 * stem > 7 * slot ? 2 * stem : 7 * slot);
		net->z0 = SHARED_AT(shared, 0);
		net->a0 = SHARED_AT(shared, stem);
	}
	else
	{
		net->z0 = take(a, act(N, s.oh, s.ow, bw) * 4);
		net->a0 = take(a, act(N, s.oh, s.ow, bw) * 4);
	}
	net->m0 = take(a, act(N, net->hp, net->wp, bw) * 4);
	net->argmax0 = take(a, act(N, net->hp, net->wp, bw) * 4);
	net->bn1.save_mean = take(a, bw * 8);
	net->bn1.save_invstd = take(a, bw * 8);
	gmax = act(N, net->hp, net->wp, bw);

	h = net->hp;
	w = net->wp;
	for (int i = 0; i < TL_RESNET_BLOCKS; i++)
	{
		tl_block   *blk = &net->blocks[i];
		int64_t		sz;

		blk->h_in = h;
		blk->w_in = w;
		s = conv_shape(&blk->conv1, N, h, w);
		need_workspace(net, &s, &ws, &wg);
		blk->h = s.oh;
		blk->w = s.ow;
		sz = act(N, s.oh, s.ow, blk->cout);
		if (sz > gmax)
			gmax = sz;
		s = conv_shape(&blk->conv2, N, blk->h, blk->w);
		need_workspace(net, &s, &ws, &wg);
		if (!finetune)
		{
			blk->z1 = SHARED_AT(shared, 0);
			blk->a1 = SHARED_AT(shared, slot);
			blk->z2 = SHARED_AT(shared, 2 * slot);
			blk->out = SHARED_AT(shared, (5 + i % 2) * slot);
		}
		else
		{
			blk->z1 = take(a, sz * 4);
			blk->a1 = take(a, sz * 4);
			blk->z2 = take(a, sz * 4);
			blk->out = take(a, sz * 4);
		}
		blk->bn1.save_mean = take(a, blk->cout * 8);
		blk->bn1.save_invstd = take(a, blk->cout * 8);
		blk->bn2.save_mean = take(a, blk->cout * 8);
		blk->bn2.save_invstd = take(a, blk->cout * 8);
		if (blk->has_downsample)
		{
			s = conv_shape(&blk->ds_conv, N, h, w);
			need_workspace(net, &s, &ws, &wg);
			if (!finetune)
			{
				blk->zd = SHARED_AT(shared, 3 * slot);
				blk->dn = SHARED_AT(shared, 4 * slot);
			}
			else
			{
				blk->zd = take(a, sz * 4);
				blk->dn = take(a, sz * 4);
			}
			blk->ds_bn.save_mean = take(a, blk->cout * 8);
			blk->ds_bn.save_invstd = take(a, blk->cout * 8);
		}
		h = blk->h;
		w = blk->w;
	}
	net->feats = take(a, (int64_t) N * F * 4);
	net->logits = take(a, (int64_t) N * K * 4);
	net->dlogits = take(a, (int64_t) N * K * 4);
	net->dfeats = take(a, (int64_t) N * F * 4);
	net->ws = take(a, ws * 4);
	net->partials = take(a, TL_BN_PARTIALS(F) * 8);
	if (finetune)
	{
		int64_t		maxw = 0;

		for (int i = 0; i < TL_RESNET_BLOCKS; i++)
		{
			const tl_block *blk = &net->blocks[i];
			int64_t		n2 = (int64_t) blk->cout * blk->cout * 9,
						n1 = (int64_t) blk->cout * blk->cin * 9;

			if (n2 > maxw)
				maxw = n2;
			if (n1 > maxw)
				maxw = n1;
		}
		if ((int64_t) bw * 3 * 49 > maxw)
			maxw = (int64_t) bw * 3 * 49;
		net->dwp = take(a, maxw * 4);
		net->wtmp = take(a, wg * 4);
		net->wacc = take(a, wg * 8);
		for (int i = 0; i < 4; i++)
			net->g[i] = take(a, gmax * 4);
		net->g0 = take(a, act(N, net->h1, net->w1, bw) * 4);
	}
	else
	{
		net->dwp = NULL;
		net->wtmp = NULL;
		net->wacc = NULL;
		for (int i = 0; i < 4; i++)
			net->g[i] = NULL;
		net->g0 = NULL;
	}
}

tl_code
tl_resnet_plan(tl_resnet *net, int max_batch, int height, int width,
			   tl_train_mode mode, tl_error *err)
{
	arena_cursor a = {NULL, 0, 0};

	if (max_batch < 1 || max_batch > TL_MAX_BATCH)
		return tl_fail(err, TL_E_INVALID, "batch size must be between 1 and %d, got %d",
					   TL_MAX_BATCH, max_batch);
	if (height < 32 || width < 32 || height > TL_MAX_INPUT_SIDE || width > TL_MAX_INPUT_SIDE)
		return tl_fail(err, TL_E_INVALID, "input size must be between 32 and %d pixels per side, got %dx%d",
					   TL_MAX_INPUT_SIDE, height, width);
	if (mode != TL_MODE_FINETUNE && mode != TL_MODE_FEATURE_EXTRACTOR)
		return tl_fail(err, TL_E_INVALID, "unknown training mode %d", (int) mode);
	free(net->arena);
	net->arena = NULL;
	free(net->grads);
	net->grads = NULL;
	net->grads_total = 0;
	net->planned = false;
	net->max_batch = max_batch;
	net->height = height;
	net->width = width;
	net->mode = mode;
	layout(net, &a);
	/* BLAS takes int dimensions: every buffer must stay below 2^31 floats */
	if (a.largest / 4 > INT32_MAX)
		return tl_fail(err, TL_E_LIMIT, "batch %d at %dx%d is too large to plan", max_batch,
					   height, width);
	if (a.used > TL_MAX_PLAN_BYTES)
		return tl_fail(err, TL_E_LIMIT, "the plan needs %lld bytes, more than the limit of %lld",
					   (long long) a.used, (long long) TL_MAX_PLAN_BYTES);
	net->arena = tl_alloc_large((size_t) a.used);
	if (!net->arena)
		return tl_fail(err, TL_E_NOMEM, "out of memory planning %lld bytes of activations",
					   (long long) a.used);
	net->arena_bytes = (size_t) a.used;
	/* gradients: every parameter's when fine-tuning, else fc's only */
	if (mode == TL_MODE_FINETUNE)
		net->grads_total = net->nparams_total;
	else
		net->grads_total = net->nparams_total - net->entries[net->fc_weight].offset;
	net->grads = tl_alloc_large((size_t) ((net->grads_total + 15) & ~(int64_t) 15) * sizeof(float));
	if (!net->grads)
	{
		free(net->arena);
		net->arena = NULL;
		return tl_fail(err, TL_E_NOMEM, "out of memory for %lld gradients",
					   (long long) net->grads_total);
	}
	tl_zero_parallel(net->grads, (size_t) net->grads_total * sizeof(float));
	a.base = net->arena;
	a.used = 0;
	layout(net, &a);
	net->planned = true;
	net->loss_valid = false;
	net->grads_valid = false;
	return TL_OK;
}

/*
 * Floats of conv weights the kernels use under the current algorithm: the
 * Winograd-transformed ones, or the im2col-packed ones.  Both buffers are
 * reserved, but only these pages are ever touched.
 */
static int64_t
conv_kernel_floats(const tl_conv_layer *conv, bool winograd)
{
	if (winograd && conv->wino >= 0)
		return (int64_t) 16 * conv->cin * conv->cout;
	if (conv->packed >= 0)
		return (int64_t) conv->k * conv->k * conv->cin * conv->cout;
	return 0;
}

static int64_t
kernel_weight_floats(const tl_resnet *net)
{
	const bool	wino = tl_get_conv_algorithm() == TL_CONV_WINOGRAD;
	int64_t		total = conv_kernel_floats(&net->conv1, wino);

	for (int i = 0; i < TL_RESNET_BLOCKS; i++)
	{
		total += conv_kernel_floats(&net->blocks[i].conv1, wino);
		total += conv_kernel_floats(&net->blocks[i].conv2, wino);
		if (net->blocks[i].has_downsample)
			total += conv_kernel_floats(&net->blocks[i].ds_conv, wino);
	}
	return total;
}

size_t
tl_resnet_planned_bytes(const tl_resnet *net)
{
	if (!net->planned)
		return 0;
	/* arena + parameters + gradients + the conv weights in the kernels' layouts */
	return net->arena_bytes + (size_t) (net->nparams_total + net->grads_total + kernel_weight_floats(net))
		* sizeof(float);
}


/*
 * -DTL_STEP_PROFILE (bench/step_profile.sh): process CPU seconds per layer and
 * phase, printed by tl_step_profile_print.  Not built into the extension.
 */
#ifdef TL_STEP_PROFILE
#include <stdio.h>
#include <time.h>
#define PROF_MAX 96
static const char *prof_name[PROF_MAX];
static int	prof_blk[PROF_MAX];
static double prof_sec[PROF_MAX];
static int	prof_n;
static double prof_t0;

static double
prof_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void
prof_mark(int blk, const char *name)
{
	double		t = prof_now();
	int			i;

	for (i = 0; i < prof_n && (prof_name[i] != name || prof_blk[i] != blk); i++)
		;
	if (i == prof_n && prof_n < PROF_MAX)
	{
		prof_name[prof_n] = name;
		prof_blk[prof_n++] = blk;
	}
	if (i < PROF_MAX)
		prof_sec[i] += t - prof_t0;
	prof_t0 = prof_now();
}

void		tl_step_profile_reset(void);
void
tl_step_profile_reset(void)
{
	prof_n = 0;
	memset(prof_sec, 0, sizeof(prof_sec));
}

void		tl_step_profile_print(int steps);
void
tl_step_profile_print(int steps)
{
	double		total = 0;

	for (int i = 0; i < prof_n; i++)
		total += prof_sec[i];
	for (int i = 0; i < prof_n; i++)
		printf("layer%d.%d %-22s %8.2f ms %5.1f%%\n", prof_blk[i] < 0 ? 0 : prof_blk[i] / 2 + 1,
			   prof_blk[i] < 0 ? 0 : prof_blk[i] % 2, prof_name[i], 1e3 * prof_sec[i] / steps,
			   100 * prof_sec[i] / total);
	printf("%-28s %8.2f ms\n", "total", 1e3 * total / steps);
}
#define PROF_START() (prof_t0 = prof_now())
#define PROF(blk, name) prof_mark(blk, name)
#else
#define PROF_START() ((void) 0)
#define PROF(blk, name) ((void) 0)
#endif

/* ---- forward ---- */

static inline float *
param_of(tl_resnet *net, int e)
{
	return net->params + net->entries[e].offset;
}

static inline float *
grad_of(tl_resnet *net, int e)
{
	return tl_resnet_grad_of(net, e);
}

/* Does this conv run as Winograd F(2x2, 3x3) (with the weights built for it)? */
static inline bool
conv_is_winograd(const tl_resnet *net, const tl_conv_layer *conv)
{
	return conv->wino >= 0 && net->packed_algo == TL_CONV_WINOGRAD;
}

/* The conv weights as the im2col kernels take them (tl_nn_internal.h: packed layout). */
static inline const float *
conv_weight(tl_resnet *net, const tl_conv_layer *conv)
{
	return conv->packed >= 0 ? net->wpack + conv->packed : param_of(net, conv->weight);
}

static void
pack_conv(tl_resnet *net, const tl_conv_layer *conv)
{
	if (conv_is_winograd(net, conv))
		tl_winograd_weights(net->wino + conv->wino, param_of(net, conv->weight),
							conv->cout, conv->cin);
	else if (conv->packed >= 0 && net->packed_eval)
		tl_conv_pack_weights_t(net->wpack + conv->packed, param_of(net, conv->weight),
							   conv->cout, conv->cin, conv->k);
	else if (conv->packed >= 0)
		tl_conv_pack_weights(net->wpack + conv->packed, param_of(net, conv->weight),
							 conv->cout, conv->cin, conv->k);
}

/*
 * Eval forwards split each im2col GEMM into this many slices whatever the
 * thread count, so a prediction is bitwise the same with any number of
 * threads (a serial query uses several, each process of a parallel query
 * one).  2 is the split 2 threads have always used: the parity-tested one.
 * (tl_sgemm's AVX-512 kernel gives the same bits for any split; the fixed
 * split matters in builds where it calls OpenBLAS.)
 * Train forwards keep splitting by the thread count (a run is reproducible
 * for its recorded thread count).
 */
#define TL_EVAL_CONV_PARTS 2

static void
conv_forward(tl_resnet *net, const tl_conv_layer *conv, float *y, const float *x,
			 const tl_conv_shape *s, bool train)
{
	if (conv_is_winograd(net, conv) && !train)
		tl_winograd_forward_eval(y, x, net->wino + conv->wino, net->ws, s);
	else if (conv_is_winograd(net, conv))
		tl_winograd_forward(y, x, net->wino + conv->wino, net->ws, s);
	else if (!train && conv->packed >= 0)
		tl_conv_forward_eval(y, x, net->wpack + conv->packed, net->ws, s);
	else if (!train)
		tl_conv_forward_parts(y, x, conv_weight(net, conv), net->ws, s, TL_EVAL_CONV_PARTS);
	else
		tl_conv_forward(y, x, conv_weight(net, conv), net->ws, s);
}

/*
 * Rebuild the kernels' weights if the parameters or the algorithm changed
 * since; an eval forward after a train one (or the reverse) only re-lays out
 * the im2col-packed weights (a few MB), not the Winograd ones.
 */
int
tl_resnet_convs(const tl_resnet *net, const tl_conv_layer **convs)
{
	int			n = 0;

	convs[n++] = &net->conv1;
	for (int i = 0; i < TL_RESNET_BLOCKS; i++)
	{
		convs[n++] = &net->blocks[i].conv1;
		convs[n++] = &net->blocks[i].conv2;
		if (net->blocks[i].has_downsample)
			convs[n++] = &net->blocks[i].ds_conv;
	}
	return n;
}

static void
ensure_packed(tl_resnet *net, bool train)
{
	tl_conv_algorithm algo = tl_get_conv_algorithm();
	bool		current = net->packed_version == net->params_version && net->packed_algo == algo;
	const tl_conv_layer *convs[1 + 3 * TL_RESNET_BLOCKS];
	int			n;

	if (current && net->packed_eval == !train)
		return;
	net->packed_algo = algo;
	net->packed_eval = !train;
	n = tl_resnet_convs(net, convs);
	for (int i = 0; i < n; i++)
		if (!current || !conv_is_winograd(net, convs[i]))
			pack_conv(net, convs[i]);
	net->packed_version = net->params_version;
}

void
tl_resnet_pack_eval(tl_resnet *net)
{
	ensure_packed(net, false);
}

static void
bn_forward(tl_resnet *net, tl_bn_layer *bn, float *y, const float *x, const float *residual,
		   bool relu, int64_t rows, bool train)
{
	if (train)
		tl_bn_forward_train(y, x, param_of(net, bn->weight), param_of(net, bn->bias),
							param_of(net, bn->running_mean), param_of(net, bn->running_var),
							bn->save_mean, bn->save_invstd, residual, relu,
							rows, bn->c, TL_BN_MOMENTUM, TL_BN_EPS, net->partials);
	else
		tl_bn_forward_eval(y, x, param_of(net, bn->weight), param_of(net, bn->bias),
						   param_of(net, bn->running_mean), param_of(net, bn->running_var),
						   residual, relu, rows, bn->c, TL_BN_EPS);
}

static tl_code
check_batch(tl_resnet *net, int n, tl_error *err)
{
	if (!net->planned)
		return tl_fail(err, TL_E_INVALID, "the network has no plan: call tl_resnet_plan first");
	if (n < 1 || n > net->max_batch)
		return tl_fail(err, TL_E_INVALID, "batch of %d does not fit the plan (1 to %d)",
					   n, net->max_batch);
	return TL_OK;
}

/* Forward up to the pooled features (n x 8*base_width in net->feats). */
static tl_code
forward_features(tl_resnet *net, const float *x, int n, bool train, tl_error *err)
{
	tl_conv_shape s;
	const float *cur;
	tl_code		rc = check_batch(net, n, err);

	if (rc != TL_OK)
		return rc;
	/* a BN in train mode needs more than one value per channel, as in PyTorch */
	if (train)
	{
		const tl_block *last = &net->blocks[TL_RESNET_BLOCKS - 1];

		if ((int64_t) n * last->h * last->w < 2)
			return tl_fail(err, TL_E_INVALID,
						   "training needs more than one value per channel in every BatchNorm: batch %d at %dx%d leaves one",
						   n, net->height, net->width);
	}
	net->loss_valid = false;
	net->grads_valid = false;
	PROF_START();
	ensure_packed(net, train);
	PROF(-1, "weight transform/pack");
	memcpy(net->x_in, x, (size_t) act(n, net->height, net->width, 3) * sizeof(float));

	s = conv_shape(&net->conv1, n, net->height, net->width);
	conv_forward(net, &net->conv1, net->z0, net->x_in, &s, train);
	PROF(-1, "conv1 fwd");
	bn_forward(net, &net->bn1, net->a0, net->z0, NULL, true, act(n, s.oh, s.ow, 1), train);
	PROF(-1, "bn fwd");
	tl_maxpool_forward(net->m0, net->argmax0, net->a0, n, net->h1, net->w1,
					   net->cfg.base_width, 3, 2, 1, net->hp, net->wp);
	PROF(-1, "maxpool fwd");
	cur = net->m0;
	for (int i = 0; i < TL_RESNET_BLOCKS; i++)
	{
		tl_block   *blk = &net->blocks[i];
		int64_t		rows = act(n, blk->h, blk->w, 1);
		const float *identity = cur;

		s = conv_shape(&blk->conv1, n, blk->h_in, blk->w_in);
		conv_forward(net, &blk->conv1, blk->z1, cur, &s, train);
		PROF(i, "conv1 fwd");
		bn_forward(net, &blk->bn1, blk->a1, blk->z1, NULL, true, rows, train);
		PROF(i, "bn fwd");
		s = conv_shape(&blk->conv2, n, blk->h, blk->w);
		conv_forward(net, &blk->conv2, blk->z2, blk->a1, &s, train);
		PROF(i, "conv2 fwd");
		if (blk->has_downsample)
		{
			s = conv_shape(&blk->ds_conv, n, blk->h_in, blk->w_in);
			conv_forward(net, &blk->ds_conv, blk->zd, cur, &s, train);
			PROF(i, "ds fwd");
			bn_forward(net, &blk->ds_bn, blk->dn, blk->zd, NULL, false, rows, train);
			identity = blk->dn;
		}
		bn_forward(net, &blk->bn2, blk->out, blk->z2, identity, true, rows, train);
		PROF(i, "bn fwd");
		cur = blk->out;
	}
	{
		const tl_block *last = &net->blocks[TL_RESNET_BLOCKS - 1];

		tl_avgpool_forward(net->feats, cur, n, last->h * last->w, last->cout);
	}
	if (train)
		net->num_batches_tracked++;
	net->last_n = n;
	net->last_train = train;
	return TL_OK;
}

tl_code
tl_resnet_forward(tl_resnet *net, const float *x, int n, bool train, tl_error *err)
{
	tl_code		rc = forward_features(net, x, n, train, err);

	if (rc != TL_OK)
		return rc;
	tl_linear_forward(net->logits, net->feats, param_of(net, net->fc_weight), param_of(net, net->fc_bias),
					  n, 8 * net->cfg.base_width, net->cfg.num_classes);
	return TL_OK;
}

const float *
tl_resnet_logits(const tl_resnet *net)
{
	return net->planned ? net->logits : NULL;
}

tl_code
tl_resnet_loss(tl_resnet *net, const int32_t *labels, int n, tl_batch_result *res,
			   tl_error *err)
{
	const int	K = net->cfg.num_classes;

	if (!net->planned || n != net->last_n)
		return tl_fail(err, TL_E_INVALID, "loss of %d rows does not follow a forward of that batch", n);
	for (int i = 0; i < n; i++)
		if (labels[i] < 0 || labels[i] >= K)
			return tl_fail(err, TL_E_INVALID, "label %d of row %d is outside 0..%d",
						   (int) labels[i], i, K - 1);
	res->loss = tl_softmax_xent(net->logits, labels, n, K, net->dlogits);
	res->correct = 0;
	for (int i = 0; i < n; i++)
	{
		const float *z = net->logits + (int64_t) i * K;
		int			best = 0;

		/* first maximum, as torch.max returns on the CPU */
		for (int k = 1; k < K; k++)
			if (z[k] > z[best])
				best = k;
		if (res->preds)
			res->preds[i] = best;
		if (best == labels[i])
			res->correct++;
	}
	net->loss_valid = true;
	return TL_OK;
}

/* ---- backward ---- */

/* Conv backward with the forward's weights; the weight gradient lands in torch layout. */
static void
conv_backward(tl_resnet *net, const tl_conv_layer *conv, float *dx, const float *dy,
			  const float *x, const tl_conv_shape *s, bool accumulate)
{
	float	   *dw = grad_of(net, conv->weight);

	if (conv_is_winograd(net, conv))
	{
		tl_winograd_backward(dx, dw, dy, x, net->wino + conv->wino, net->ws, net->wtmp, net->wacc,
							 net->wparts, s, accumulate);
		return;
	}

	tl_conv_backward(dx, conv->packed >= 0 ? net->dwp : dw, dy, x, conv_weight(net, conv),
					 net->ws, net->wtmp, net->wacc, net->wparts, s, accumulate);
	if (conv->packed >= 0)
		tl_conv_unpack_grad(dw, net->dwp, conv->cout, conv->cin, conv->k);
}

static void
bn_backward(tl_resnet *net, tl_bn_layer *bn, float *dx, float *dy_masked, const float *dy,
			const float *relu_out, const float *x, int64_t rows)
{
	tl_bn_backward(dx, grad_of(net, bn->weight), grad_of(net, bn->bias), dy_masked, dy, relu_out, x,
				   param_of(net, bn->weight), bn->save_mean, bn->save_invstd, rows, bn->c,
				   net->partials);
}

tl_code
tl_resnet_backward(tl_resnet *net, tl_error *err)
{
	const int	n = net->last_n;
	const int	F = 8 * net->cfg.base_width;
	const int	K = net->cfg.num_classes;
	float	   *gout,
			   *gin,
			   *gmid,
			   *gtmp;
	tl_conv_shape s;

	if (!net->planned || !net->last_train || !net->loss_valid)
		return tl_fail(err, TL_E_INVALID, "backward needs a forward in train mode followed by a loss");

	PROF_START();
	if (net->mode == TL_MODE_FEATURE_EXTRACTOR)
	{
		/* frozen backbone: only fc's gradient, no work below it */
		tl_linear_backward(NULL, grad_of(net, net->fc_weight), grad_of(net, net->fc_bias), net->dlogits,
						   net->feats, param_of(net, net->fc_weight), n, F, K);
		net->grads_valid = true;
		return TL_OK;
	}

	tl_linear_backward(net->dfeats, grad_of(net, net->fc_weight), grad_of(net, net->fc_bias), net->dlogits,
					   net->feats, param_of(net, net->fc_weight), n, F, K);
	gout = net->g[0];
	gin = net->g[1];
	gmid = net->g[2];
	gtmp = net->g[3];
	{
		const tl_block *last = &net->blocks[TL_RESNET_BLOCKS - 1];

		tl_avgpool_backward(gout, net->dfeats, n, last->h * last->w, last->cout);
	}
	for (int i = TL_RESNET_BLOCKS - 1; i >= 0; i--)
	{
		tl_block   *blk = &net->blocks[i];
		int64_t		rows = act(n, blk->h, blk->w, 1);
		const float *in = i > 0 ? net->blocks[i - 1].out : net->m0;
		float	   *swap;

		/*
		 * gout holds d(out).  The block's ReLU mask is applied inside bn2's
		 * backward, which also stores the masked gradient (the identity
		 * branch's gradient) in gtmp.
		 */
		bn_backward(net, &blk->bn2, gmid, gtmp, gout, blk->out, blk->z2, rows);
		PROF(i, "bn bwd");
		/* identity branch first: it initialises gin */
		if (blk->has_downsample)
		{
			bn_backward(net, &blk->ds_bn, gtmp, NULL, gtmp, NULL, blk->zd, rows);
			PROF(i, "bn bwd");
			s = conv_shape(&blk->ds_conv, n, blk->h_in, blk->w_in);
			conv_backward(net, &blk->ds_conv, gin, gtmp, in, &s, false);
			PROF(i, "ds bwd");
		}
		else
		{
			swap = gin;
			gin = gtmp;
			gtmp = swap;
		}
		/* conv2: d(a1) into gout (free now) */
		s = conv_shape(&blk->conv2, n, blk->h, blk->w);
		conv_backward(net, &blk->conv2, gout, gmid, blk->a1, &s, false);
		PROF(i, "conv2 bwd");
		/* relu + bn1 in place */
		bn_backward(net, &blk->bn1, gout, NULL, gout, blk->a1, blk->z1, rows);
		PROF(i, "bn bwd");
		s = conv_shape(&blk->conv1, n, blk->h_in, blk->w_in);
		conv_backward(net, &blk->conv1, gin, gout, in, &s, true);
		PROF(i, "conv1 bwd");
		/* gin is d(block input) = d(previous block's out) */
		swap = gout;
		gout = gin;
		gin = swap;
	}
	tl_maxpool_backward(net->g0, gout, net->argmax0, n, net->h1, net->w1, net->cfg.base_width,
						3, 2, 1, net->hp, net->wp);
	PROF(-1, "maxpool bwd");
	bn_backward(net, &net->bn1, net->g0, NULL, net->g0, net->a0, net->z0, act(n, net->h1, net->w1, 1));
	PROF(-1, "bn bwd");
	/* conv1: the input needs no gradient */
	s = conv_shape(&net->conv1, n, net->height, net->width);
	conv_backward(net, &net->conv1, NULL, net->g0, net->x_in, &s, false);
	PROF(-1, "conv1 bwd");
	net->grads_valid = true;
	return TL_OK;
}

/* ---- steps ---- */

tl_code
tl_resnet_train_step(tl_resnet *net, tl_sgd *opt, const float *x, const int32_t *labels,
					 int n, tl_batch_result *res, tl_error *err)
{
	tl_code		rc;

	if ((rc = tl_resnet_forward(net, x, n, true, err)) != TL_OK ||
		(rc = tl_resnet_loss(net, labels, n, res, err)) != TL_OK ||
		(rc = tl_resnet_backward(net, err)) != TL_OK)
		return rc;
	PROF_START();
	rc = tl_sgd_step(opt, err);
	PROF(-1, "sgd");
	return rc;
}

tl_code
tl_resnet_eval_step(tl_resnet *net, const float *x, const int32_t *labels, int n,
					tl_batch_result *res, tl_error *err)
{
	tl_code		rc = tl_resnet_forward(net, x, n, false, err);

	if (rc != TL_OK)
		return rc;
	return tl_resnet_loss(net, labels, n, res, err);
}

tl_code
tl_resnet_predict(tl_resnet *net, const float *x, int n, float *probs, tl_error *err)
{
	tl_code		rc = tl_resnet_forward(net, x, n, false, err);

	if (rc != TL_OK)
		return rc;
	tl_softmax(probs, net->logits, n, net->cfg.num_classes);
	return TL_OK;
}

tl_code
tl_resnet_features(tl_resnet *net, const float *x, int n, float *feats, tl_error *err)
{
	tl_code		rc = forward_features(net, x, n, false, err);

	if (rc != TL_OK)
		return rc;
	memcpy(feats, net->feats, (size_t) n * 8 * net->cfg.base_width * sizeof(float));
	return TL_OK;
}
