/*
 * tl_resnet.c - ResNet-18's parameters: keys and shapes in torchvision's
 * order, state dict checking/loading/saving and initialisation.
 */
#include "tl_resnet_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TL_MAX_CLASSES (1 << 20)
/* 8 * base width channels must fit TL_NN_MAX_CHANNELS */
#define TL_MAX_BASE_WIDTH (TL_NN_MAX_CHANNELS / 8)

/* ---- building the parameter table ---- */

typedef struct builder
{
	tl_resnet  *net;
	bool		overflow;
} builder;

static int
add_entry(builder *b, const char *key, int ndim, int64_t d0, int64_t d1, int64_t d2,
		  int64_t d3, bool trainable)
{
	tl_resnet  *net = b->net;
	tl_param_entry *pe;
	int64_t		dims[4] = {d0, d1, d2, d3};

	if (net->nentries >= TL_RESNET_MAX_ENTRIES || strlen(key) >= sizeof(pe->key))
	{
		b->overflow = true;
		return 0;
	}
	pe = &net->entries[net->nentries];
	snprintf(pe->key, sizeof(pe->key), "%s", key);
	pe->ndim = ndim;
	pe->numel = 1;
	for (int i = 0; i < ndim; i++)
	{
		pe->shape[i] = dims[i];
		pe->numel *= dims[i];
	}
	pe->offset = net->nparams_total;
	pe->trainable = trainable;
	pe->is_fc = strncmp(key, "fc.", 3) == 0;
	/* keep every tensor 64-byte aligned for the vector kernels */
	net->nparams_total += (pe->numel + 15) & ~(int64_t) 15;
	return net->nentries++;
}

static void
add_conv(builder *b, tl_conv_layer *conv, const char *key, int cin, int cout, int k,
		 int stride, int pad)
{
	char		name[64];

	snprintf(name, sizeof name, "%s.weight", key);
	conv->weight = add_entry(b, name, 4, cout, cin, k, k, true);
	conv->packed = -1;
	conv->wino = -1;
	if (k > 1)
	{
		conv->packed = b->net->wpack_total;
		b->net->wpack_total += (int64_t) cout * cin * k * k;
	}
	if (k == 3 && stride == 1 && pad == 1)
	{
		conv->wino = b->net->wino_total;
		b->net->wino_total += (int64_t) 16 * cout * cin;
	}
	conv->cin = cin;
	conv->cout = cout;
	conv->k = k;
	conv->stride = stride;
	conv->pad = pad;
}

static void
add_bn(builder *b, tl_bn_layer *bn, const char *key, int c)
{
	char		name[64];

	snprintf(name, sizeof name, "%s.weight", key);
	bn->weight = add_entry(b, name, 1, c, 0, 0, 0, true);
	snprintf(name, sizeof name, "%s.bias", key);
	bn->bias = add_entry(b, name, 1, c, 0, 0, 0, true);
	snprintf(name, sizeof name, "%s.running_mean", key);
	bn->running_mean = add_entry(b, name, 1, c, 0, 0, 0, false);
	snprintf(name, sizeof name, "%s.running_var", key);
	bn->running_var = add_entry(b, name, 1, c, 0, 0, 0, false);
	bn->c = c;
}

/* torchvision's resnet18 in state_dict order. */
static bool
build_layout(tl_resnet *net)
{
	builder		b = {net, false};
	int			bw = net->cfg.base_width;
	int			cin = bw;

	add_conv(&b, &net->conv1, "conv1", 3, bw, 7, 2, 3);
	add_bn(&b, &net->bn1, "bn1", bw);
	for (int layer = 0; layer < 4; layer++)
	{
		int			cout = bw << layer;

		for (int i = 0; i < 2; i++)
		{
			tl_block   *blk = &net->blocks[layer * 2 + i];
			int			stride = (layer > 0 && i == 0) ? 2 : 1;
			char		prefix[48],
						key[64];

			snprintf(prefix, sizeof prefix, "layer%d.%d", layer + 1, i);
			blk->cin = cin;
			blk->cout = cout;
			blk->stride = stride;
			snprintf(key, sizeof key, "%s.conv1", prefix);
			add_conv(&b, &blk->conv1, key, cin, cout, 3, stride, 1);
			snprintf(key, sizeof key, "%s.bn1", prefix);
			add_bn(&b, &blk->bn1, key, cout);
			snprintf(key, sizeof key, "%s.conv2", prefix);
			add_conv(&b, &blk->conv2, key, cout, cout, 3, 1, 1);
			snprintf(key, sizeof key, "%s.bn2", prefix);
			add_bn(&b, &blk->bn2, key, cout);
			blk->has_downsample = stride != 1 || cin != cout;
			if (blk->has_downsample)
			{
				snprintf(key, sizeof key, "%s.downsample.0", prefix);
				add_conv(&b, &blk->ds_conv, key, cin, cout, 1, stride, 0);
				snprintf(key, sizeof key, "%s.downsample.1", prefix);
				add_bn(&b, &blk->ds_bn, key, cout);
			}
			cin = cout;
		}
	}
	net->fc_weight = add_entry(&b, "fc.weight", 2, net->cfg.num_classes, 8 * bw, 0, 0, true);
	net->fc_bias = add_entry(&b, "fc.bias", 1, net->cfg.num_classes, 0, 0, 0, true);
	return !b.overflow;
}

static void
reset_bn_buffers(tl_resnet *net)
{
	for (int e = 0; e < net->nentries; e++)
	{
		const tl_param_entry *pe = &net->entries[e];
		size_t		len = strlen(pe->key);
		float		v;

		if (len > 13 && strcmp(pe->key + len - 13, ".running_mean") == 0)
			v = 0.0f;
		else if (len > 12 && strcmp(pe->key + len - 12, ".running_var") == 0)
			v = 1.0f;
		else
			continue;
		for (int64_t i = 0; i < pe->numel; i++)
			net->params[pe->offset + i] = v;
	}
}

tl_resnet *
tl_resnet_alloc(const tl_resnet_config *cfg, tl_error *err)
{
	tl_resnet  *net;

	if (cfg->num_classes < 1 || cfg->num_classes > TL_MAX_CLASSES)
	{
		tl_fail(err, TL_E_INVALID, "number of classes must be between 1 and %d, got %d",
				TL_MAX_CLASSES, cfg->num_classes);
		return NULL;
	}
	if (cfg->base_width < 1 || cfg->base_width > TL_MAX_BASE_WIDTH)
	{
		tl_fail(err, TL_E_INVALID, "base width must be between 1 and %d, got %d",
				TL_MAX_BASE_WIDTH, cfg->base_width);
		return NULL;
	}
	net = calloc(1, sizeof(*net));
	if (!net)
	{
		tl_fail(err, TL_E_NOMEM, "out of memory for the network");
		return NULL;
	}
	net->cfg = *cfg;
	if (!build_layout(net))
	{
		free(net);
		tl_fail(err, TL_E_INTERNAL, "network layout exceeds its table");
		return NULL;
	}
	return net;
}

tl_resnet *
tl_resnet_new(const tl_resnet_config *cfg, tl_error *err)
{
	tl_resnet  *net = tl_resnet_alloc(cfg, err);

	if (!net)
		return NULL;
	net->params = tl_alloc_large((size_t) net->nparams_total * sizeof(float));
	/*
	 * Both weight layouts are reserved, but only the pages of the algorithm in
	 * use are ever touched (and so resident).
	 */
	net->wpack = tl_alloc_large((size_t) tl_resnet_region_floats(net->wpack_total) * sizeof(float));
	net->wino = tl_alloc_large((size_t) tl_resnet_region_floats(net->wino_total) * sizeof(float));
	if (!net->params || !net->wpack || !net->wino)
	{
		tl_fail(err, TL_E_NOMEM, "out of memory for %lld parameters",
				(long long) net->nparams_total);
		tl_resnet_free(net);
		return NULL;
	}
	tl_zero_parallel(net->params, (size_t) net->nparams_total * sizeof(float));
	reset_bn_buffers(net);
	net->params_version = 1;
	return net;
}

void
tl_resnet_free(tl_resnet *net)
{
	if (!net)
		return;
	if (net->map_release)
		net->map_release(net->map_base, net->map_bytes);
	else
	{
		free(net->params);
		free(net->wpack);
		free(net->wino);
	}
	free(net->grads);
	free(net->arena);
	free(net);
}

const tl_resnet_config *
tl_resnet_get_config(const tl_resnet *net)
{
	return &net->cfg;
}

int
tl_resnet_find_entry(const tl_resnet *net, const char *key)
{
	for (int e = 0; e < net->nentries; e++)
		if (strcmp(net->entries[e].key, key) == 0)
			return e;
	return -1;
}

bool
tl_resnet_shape_equal(const tl_param_entry *pe, int ndim, const int64_t *shape)
{
	if (ndim != pe->ndim)
		return false;
	for (int i = 0; i < ndim; i++)
		if (shape[i] != pe->shape[i])
			return false;
	return true;
}

bool
tl_resnet_entry_has_grad(const tl_resnet *net, int e)
{
	const tl_param_entry *pe = &net->entries[e];

	if (!net->planned || !pe->trainable)
		return false;
	return net->mode == TL_MODE_FINETUNE || pe->is_fc;
}

float *
tl_resnet_param(tl_resnet *net, const char *key, int64_t *numel)
{
	int			e = tl_resnet_find_entry(net, key);

	if (e < 0)
		return NULL;
	if (numel)
		*numel = net->entries[e].numel;
	/* the caller may write through the view */
	tl_resnet_params_changed(net);
	return net->params + net->entries[e].offset;
}

const float *
tl_resnet_grad(const tl_resnet *net, const char *key, int64_t *numel)
{
	int			e = tl_resnet_find_entry(net, key);

	if (e < 0 || !tl_resnet_entry_has_grad(net, e) || !net->grads_valid)
		return NULL;
	if (numel)
		*numel = net->entries[e].numel;
	return tl_resnet_grad_of(net, e);
}

/* ---- state dicts ---- */

static bool
ends_with(const char *s, const char *suffix)
{
	size_t		a = strlen(s),
				b = strlen(suffix);

	return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* "X.num_batches_tracked" where X.running_mean is one of net's keys */
static bool
is_batches_tracked_of(const tl_resnet *net, const tl_tensor *t)
{
	char		key[TL_MAX_KEY_LEN + 16];
	size_t		len = strlen(t->name);
	const size_t suffix = strlen(".num_batches_tracked");

	if (!ends_with(t->name, ".num_batches_tracked") || len - suffix + 14 >= sizeof key)
		return false;
	if (tl_shape_numel(t->ndim, t->shape, 2) != 1)
		return false;
	memcpy(key, t->name, len - suffix);
	strcpy(key + len - suffix, ".running_mean");
	return tl_resnet_find_entry(net, key) >= 0;
}

/*
 * Strict validation of sd against net's layout; with skip_fc, fc.* keys are
 * neither required nor checked.
 */
static tl_code
validate_against(const tl_resnet *net, const tl_state_dict *sd, bool skip_fc, tl_error *err)
{
	char		a[96],
				b[96];

	for (int e = 0; e < net->nentries; e++)
	{
		const tl_param_entry *pe = &net->entries[e];
		const tl_tensor *t;

		if (skip_fc && pe->is_fc)
			continue;
		t = tl_sd_find(sd, pe->key);
		if (!t)
			return tl_fail(err, TL_E_MISMATCH, "missing key \"%s\" in state dict", pe->key);
		if (!tl_resnet_shape_equal(pe, t->ndim, t->shape))
			return tl_fail(err, TL_E_MISMATCH, "size mismatch for \"%s\": expected %s, got %s",
						   pe->key, tl_shape_str(pe->ndim, pe->shape, a, sizeof a),
						   tl_shape_str(t->ndim, t->shape, b, sizeof b));
	}
	for (int i = 0; i < sd->n; i++)
	{
		const tl_tensor *t = &sd->tensors[i];

		if (skip_fc && strncmp(t->name, "fc.", 3) == 0)
			continue;
		if (tl_resnet_find_entry(net, t->name) >= 0 || is_batches_tracked_of(net, t))
			continue;
		return tl_fail(err, TL_E_MISMATCH, "unexpected key \"%s\" in state dict", t->name);
	}
	return TL_OK;
}

tl_code
tl_resnet_check_state_dict(const tl_state_dict *sd, tl_resnet_config *cfg, tl_error *err)
{
	const tl_tensor *conv1 = tl_sd_find(sd, "conv1.weight");
	const tl_tensor *fc = tl_sd_find(sd, "fc.weight");
	tl_resnet_config c;
	tl_resnet  *net;
	tl_code		rc;
	char		buf[96];

	if (!conv1)
		return tl_fail(err, TL_E_MISMATCH, "missing key \"conv1.weight\" in state dict");
	if (conv1->ndim != 4 || conv1->shape[1] != 3 || conv1->shape[2] != 7 || conv1->shape[3] != 7 ||
		conv1->shape[0] < 1 || conv1->shape[0] > TL_MAX_BASE_WIDTH)
		return tl_fail(err, TL_E_MISMATCH,
					   "size mismatch for \"conv1.weight\": expected [W, 3, 7, 7] with 1 <= W <= %d, got %s",
					   TL_MAX_BASE_WIDTH, tl_shape_str(conv1->ndim, conv1->shape, buf, sizeof buf));
	if (!fc)
		return tl_fail(err, TL_E_MISMATCH, "missing key \"fc.weight\" in state dict");
	if (fc->ndim != 2 || fc->shape[0] < 1 || fc->shape[0] > TL_MAX_CLASSES)
		return tl_fail(err, TL_E_MISMATCH,
					   "size mismatch for \"fc.weight\": expected [classes, %lld] with 1 <= classes <= %d, got %s",
					   (long long) (8 * conv1->shape[0]), TL_MAX_CLASSES,
					   tl_shape_str(fc->ndim, fc->shape, buf, sizeof buf));
	c.base_width = (int) conv1->shape[0];
	c.num_classes = (int) fc->shape[0];
	/* the layout is all the check needs: no weights (45 MB at width 64) */
	net = tl_resnet_alloc(&c, err);
	if (!net)
		return err ? err->code : TL_E_NOMEM;
	rc = validate_against(net, sd, false, err);
	tl_resnet_free(net);
	if (rc == TL_OK && cfg)
		*cfg = c;
	return rc;
}

tl_code
tl_resnet_validate_state_dict(const tl_resnet *net, const tl_state_dict *sd, unsigned flags,
							  tl_error *err)
{
	return validate_against(net, sd, (flags & TL_LOAD_SKIP_FC) != 0, err);
}

tl_code
tl_resnet_load_state_dict(tl_resnet *net, const tl_state_dict *sd, unsigned flags, tl_error *err)
{
	bool		skip_fc = (flags & TL_LOAD_SKIP_FC) != 0;
	tl_code		rc = validate_against(net, sd, skip_fc, err);

	if (rc != TL_OK)
		return rc;
	for (int e = 0; e < net->nentries; e++)
	{
		const tl_param_entry *pe = &net->entries[e];

		if (skip_fc && pe->is_fc)
			continue;
		memcpy(net->params + pe->offset, tl_sd_find(sd, pe->key)->data,
			   (size_t) pe->numel * sizeof(float));
	}
	tl_resnet_params_changed(net);
	net->grads_valid = false;
	return TL_OK;
}

tl_state_dict *
tl_resnet_state_dict(const tl_resnet *net, tl_error *err)
{
	return tl_resnet_state_dict_some(net, NULL, err);
}

tl_state_dict *
tl_resnet_state_dict_some(const tl_resnet *net, bool (*copy) (const char *key), tl_error *err)
{
	tl_state_dict *sd = tl_sd_new(err);

	if (!sd)
		return NULL;
	for (int e = 0; e < net->nentries; e++)
	{
		const tl_param_entry *pe = &net->entries[e];
		tl_code		rc;

		if (copy == NULL || copy(pe->key))
			rc = tl_sd_add(sd, pe->key, pe->ndim, pe->shape, net->params + pe->offset, err);
		else
			rc = tl_sd_add_owned(sd, pe->key, pe->ndim, pe->shape, NULL, err);
		if (rc != TL_OK)
		{
			tl_sd_free(sd);
			return NULL;
		}
	}
	return sd;
}

/* ---- initialisation ---- */

static double
normal01(tl_rng *rng)
{
	/* Box-Muller; 1 - u keeps the log argument in (0, 1] */
	double		u = 1.0 - tl_rng_uniform(rng),
				v = tl_rng_uniform(rng);

	return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

static void
init_conv(tl_resnet *net, const tl_conv_layer *conv, tl_rng *rng)
{
	const tl_param_entry *pe = &net->entries[conv->weight];
	/* kaiming_normal_(mode="fan_out", nonlinearity="relu") */
	double		std = sqrt(2.0 / ((double) conv->cout * conv->k * conv->k));

	for (int64_t i = 0; i < pe->numel; i++)
		net->params[pe->offset + i] = (float) (std * normal01(rng));
}

static void
init_bn(tl_resnet *net, const tl_bn_layer *bn)
{
	for (int c = 0; c < bn->c; c++)
	{
		net->params[net->entries[bn->weight].offset + c] = 1.0f;
		net->params[net->entries[bn->bias].offset + c] = 0.0f;
		net->params[net->entries[bn->running_mean].offset + c] = 0.0f;
		net->params[net->entries[bn->running_var].offset + c] = 1.0f;
	}
}

void
tl_resnet_init_random(tl_resnet *net, tl_rng *rng)
{
	init_conv(net, &net->conv1, rng);
	init_bn(net, &net->bn1);
	for (int i = 0; i < TL_RESNET_BLOCKS; i++)
	{
		tl_block   *blk = &net->blocks[i];

		init_conv(net, &blk->conv1, rng);
		init_bn(net, &blk->bn1);
		init_conv(net, &blk->conv2, rng);
		init_bn(net, &blk->bn2);
		if (blk->has_downsample)
		{
			init_conv(net, &blk->ds_conv, rng);
			init_bn(net, &blk->ds_bn);
		}
	}
	tl_resnet_init_fc(net, rng);
	net->num_batches_tracked = 0;
	tl_resnet_params_changed(net);
	net->grads_valid = false;
}

void
tl_resnet_init_fc(tl_resnet *net, tl_rng *rng)
{
	const tl_param_entry *w = &net->entries[net->fc_weight];
	const tl_param_entry *b = &net->entries[net->fc_bias];
	double		bound = 1.0 / sqrt((double) w->shape[1]);

	for (int64_t i = 0; i < w->numel; i++)
		net->params[w->offset + i] = (float) ((2.0 * tl_rng_uniform(rng) - 1.0) * bound);
	for (int64_t i = 0; i < b->numel; i++)
		net->params[b->offset + i] = (float) ((2.0 * tl_rng_uniform(rng) - 1.0) * bound);
	tl_resnet_params_changed(net);
	net->grads_valid = false;
}

/* ---- the 3x3 convolution algorithm (tl_resnet.h) ---- */

static tl_conv_algorithm tl_conv_algo = TL_CONV_WINOGRAD;

void
tl_set_conv_algorithm(tl_conv_algorithm algo)
{
	tl_conv_algo = algo == TL_CONV_IM2COL ? TL_CONV_IM2COL : TL_CONV_WINOGRAD;
}

tl_conv_algorithm
tl_get_conv_algorithm(void)
{
	return tl_conv_algo;
}
