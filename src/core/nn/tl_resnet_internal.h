/*
 * tl_resnet_internal.h - the network's layout, shared by tl_resnet*.c and
 * tl_sgd.c (internal).
 *
 * All parameters and BN buffers live in one flat buffer in torchvision's
 * state_dict order; gradients use the same offsets in a second buffer.
 * Activations, gradients of activations and workspaces come from one arena
 * laid out by tl_resnet_plan().
 *
 * OWNER: engine (issue 3).
 */
#ifndef TL_RESNET_INTERNAL_H
#define TL_RESNET_INTERNAL_H

#include "tl_nn_internal.h"
#include "tl_resnet.h"

#define TL_RESNET_MAX_ENTRIES 128
#define TL_RESNET_BLOCKS 8
#define TL_BN_MOMENTUM 0.1f
#define TL_BN_EPS 1e-5f

typedef struct tl_param_entry
{
	char		key[64];
	int			ndim;
	int64_t		shape[4];
	int64_t		offset;			/* into params (and, finetune, grads) */
	int64_t		numel;
	bool		trainable;		/* weight or bias (not a running statistic) */
	bool		is_fc;
} tl_param_entry;

typedef struct tl_conv_layer
{
	int			weight;			/* entry index */
	int64_t		packed;			/* offset in wpack, or -1 (1x1: same layout) */
	int64_t		wino;			/* offset in wino (3x3 stride 1), or -1 */
	int			cin,
				cout,
				k,
				stride,
				pad;
} tl_conv_layer;

typedef struct tl_bn_layer
{
	int			weight,
				bias,
				running_mean,
				running_var;	/* entry indexes */
	int			c;
	double	   *save_mean;		/* planned, c doubles each: batch statistics for backward */
	double	   *save_invstd;
} tl_bn_layer;

typedef struct tl_block
{
	int			cin,
				cout,
				stride;
	bool		has_downsample;
	tl_conv_layer conv1,
				conv2,
				ds_conv;
	tl_bn_layer bn1,
				bn2,
				ds_bn;
	/* planned shapes and activations (train: kept for backward) */
	int			h_in,
				w_in,
				h,
				w;
	float	   *z1,				/* conv1 output */
			   *a1,				/* relu(bn1(z1)) */
			   *z2,				/* conv2 output */
			   *zd,				/* downsample conv output */
			   *dn,				/* downsample bn output */
			   *out;			/* relu(bn2(z2) + identity) */
} tl_block;

struct tl_resnet
{
	tl_resnet_config cfg;
	tl_param_entry entries[TL_RESNET_MAX_ENTRIES];
	int			nentries;
	int64_t		nparams_total;	/* floats in params */
	float	   *params;
	float	   *grads;			/* planned: params' layout (finetune) or fc only */
	int64_t		grads_total;
	float	   *wpack;			/* conv weights in the kernels' (oc, kh, kw, c) layout */
	int64_t		wpack_total;
	float	   *wino;			/* 3x3 stride-1 conv weights, Winograd-transformed */
	int64_t		wino_total;
	uint64_t	params_version; /* bumped whenever conv weights may have changed */
	uint64_t	packed_version; /* params_version wpack/wino were built from */
	tl_conv_algorithm packed_algo;	/* the algorithm they were built for */
	bool		packed_eval;	/* wpack is transposed, (kh, kw, c, oc), for eval forwards */
	/* params, wpack and wino inside a mapped file (tl_resnet_mapfile.c), else NULL */
	void	   *map_base;
	size_t		map_bytes;
	void		(*map_release) (void *base, size_t bytes);

	tl_conv_layer conv1;
	tl_bn_layer bn1;
	tl_block	blocks[TL_RESNET_BLOCKS];
	int			fc_weight,
				fc_bias;
	int64_t		num_batches_tracked;

	/* plan */
	bool		planned;
	int			max_batch,
				height,
				width;
	tl_train_mode mode;
	int			h1,
				w1,				/* conv1 output */
				hp,
				wp;				/* max-pool output */
	void	   *arena;
	size_t		arena_bytes;
	float	   *x_in,
			   *z0,
			   *a0,
			   *m0;
	int32_t    *argmax0;
	float	   *feats,
			   *logits,
			   *dlogits,
			   *dfeats;
	float	   *ws;				/* im2col / col2im workspace */
	float	   *wtmp;			/* weight-gradient partials (tl_nn_internal.h) */
	double	   *wacc;
	int			wparts;			/* threads they are sized for */
	double	   *partials;		/* BN per-thread sums */
	float	   *g[4];			/* activation gradients, largest block size */
	float	   *g0;				/* gradient at conv1's output */
	float	   *dwp;			/* a conv weight gradient in packed layout */

	/* state of the last forward/loss */
	int			last_n;
	bool		last_train;
	bool		loss_valid;
	bool		grads_valid;
};

int			tl_resnet_find_entry(const tl_resnet *net, const char *key);
/* Floats allocated for a kernel-weight buffer (wpack, wino) of total floats: padded. */
static inline int64_t
tl_resnet_region_floats(int64_t total)
{
	return (total + 16) & ~(int64_t) 15;
}

/* A network's layout for cfg, with no buffers (tl_resnet_new allocates them). */
tl_resnet  *tl_resnet_alloc(const tl_resnet_config *cfg, tl_error *err);
/* Build the kernels' weights for eval forwards under the current algorithm, if stale. */
void		tl_resnet_pack_eval(tl_resnet *net);
/* The convs in layout order; returns how many (at most 1 + 3 * TL_RESNET_BLOCKS). */
int			tl_resnet_convs(const tl_resnet *net, const tl_conv_layer **convs);
bool		tl_resnet_shape_equal(const tl_param_entry *pe, int ndim, const int64_t *shape);
bool		tl_resnet_entry_has_grad(const tl_resnet *net, int e);

/* Gradient of entry e in the planned mode, or NULL if it has none. */
static inline float *
tl_resnet_grad_of(const tl_resnet *net, int e)
{
	const tl_param_entry *pe = &net->entries[e];

	if (!net->planned || !net->grads || !pe->trainable)
		return NULL;
	if (net->mode == TL_MODE_FINETUNE)
		return net->grads + pe->offset;
	/* feature extractor: fc.weight and fc.bias, contiguous at the end */
	if (!pe->is_fc)
		return NULL;
	return net->grads + (pe->offset - net->entries[net->fc_weight].offset);
}

/* Conv weights may have changed: their kernel layouts must be rebuilt before use. */
static inline void
tl_resnet_params_changed(tl_resnet *net)
{
	net->params_version++;
}

#endif
