/*
 * tl_sgd.c - torch.optim.SGD (single-tensor path) and StepLR.
 *
 * For each parameter that has a gradient in the network's planned mode:
 *   g = grad + weight_decay * p
 *   buf = g (first step) | momentum * buf + (1 - dampening) * g
 *   g = nesterov ? g + momentum * buf : buf
 *   p = p - lr * g
 * Parameters without a gradient (frozen layers of the feature extractor) are
 * skipped and their momentum buffers stay unset, as in PyTorch where only
 * fc's parameters are given to the optimiser.
 */
#include "tl_resnet_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct tl_sgd
{
	tl_resnet  *net;
	tl_sgd_config cfg;
	float	   *buf;			/* momentum buffers, same offsets as params */
	bool	   *has_buf;		/* per parameter entry */
};

tl_sgd *
tl_sgd_new(tl_resnet *net, const tl_sgd_config *cfg, tl_error *err)
{
	tl_sgd	   *opt;

	if (!(cfg->lr >= 0) || !(cfg->momentum >= 0) || !(cfg->weight_decay >= 0) ||
		!isfinite(cfg->lr) || !isfinite(cfg->momentum) || !isfinite(cfg->dampening) ||
		!isfinite(cfg->weight_decay))
	{
		tl_fail(err, TL_E_INVALID, "SGD needs finite lr, momentum and weight decay >= 0");
		return NULL;
	}
	if (cfg->nesterov && (cfg->momentum <= 0 || cfg->dampening != 0))
	{
		tl_fail(err, TL_E_INVALID, "nesterov momentum requires a momentum and zero dampening");
		return NULL;
	}
	opt = calloc(1, sizeof(*opt));
	if (!opt)
	{
		tl_fail(err, TL_E_NOMEM, "out of memory for the optimizer");
		return NULL;
	}
	opt->net = net;
	opt->cfg = *cfg;
	opt->buf = calloc((size_t) net->nparams_total, sizeof(float));
	opt->has_buf = calloc((size_t) net->nentries, sizeof(bool));
	if (!opt->buf || !opt->has_buf)
	{
		tl_sgd_free(opt);
		tl_fail(err, TL_E_NOMEM, "out of memory for momentum buffers");
		return NULL;
	}
	return opt;
}

void
tl_sgd_free(tl_sgd *opt)
{
	if (!opt)
		return;
	free(opt->buf);
	free(opt->has_buf);
	free(opt);
}

void
tl_sgd_set_lr(tl_sgd *opt, double lr)
{
	opt->cfg.lr = lr;
}

typedef struct sgd_job
{
	float	   *p;
	const float *g;
	float	   *b;
	float		lr,
				mom,
				damp1,
				wd;
	bool		nesterov;
	bool		first;			/* no momentum buffer yet */
} sgd_job;

/*
 * The options are copied to locals and tested once per range: read through
 * j inside the loop, every float store might alias them, so GCC reloaded
 * them per element and did not vectorise (the step was memory-bound at
 * half speed).  Per element the operations are unchanged.
 */
static void
sgd_range(void *arg, int64_t begin, int64_t end, int chunk)
{
	const sgd_job *j = arg;
	float	   *restrict p = j->p;
	const float *restrict g = j->g;
	float	   *restrict b = j->b;
	const float lr = j->lr,
				mom = j->mom,
				damp1 = j->damp1,
				wd = j->wd;

	if (mom == 0.0f)
	{
		for (int64_t i = begin; i < end; i++)
		{
			float		d = wd != 0.0f ? g[i] + wd * p[i] : g[i];

			p[i] = p[i] - lr * d;
		}
	}
	else if (j->first)
	{
		for (int64_t i = begin; i < end; i++)
		{
			float		d = wd != 0.0f ? g[i] + wd * p[i] : g[i];

			b[i] = d;
			d = j->nesterov ? d + mom * d : d;
			p[i] = p[i] - lr * d;
		}
	}
	else if (wd == 0.0f && !j->nesterov)
	{
		/* the default (the tutorial's SGD): a pure streaming loop */
		for (int64_t i = begin; i < end; i++)
		{
			float		nb = b[i] * mom + damp1 * g[i];

			b[i] = nb;
			p[i] = p[i] - lr * nb;
		}
	}
	else
	{
		const bool	nesterov = j->nesterov;

		for (int64_t i = begin; i < end; i++)
		{
			float		d = wd != 0.0f ? g[i] + wd * p[i] : g[i];
			float		nb = b[i] * mom + damp1 * d;

			b[i] = nb;
			d = nesterov ? d + mom * nb : nb;
			p[i] = p[i] - lr * d;
		}
	}
}

tl_code
tl_sgd_step(tl_sgd *opt, tl_error *err)
{
	tl_resnet  *net = opt->net;
	sgd_job		j;
	bool		convs_changed = false;

	j.lr = (float) opt->cfg.lr;
	j.mom = (float) opt->cfg.momentum;
	j.damp1 = (float) (1.0 - opt->cfg.dampening);
	j.wd = (float) opt->cfg.weight_decay;
	j.nesterov = opt->cfg.nesterov;
	if (!net->grads_valid)
		return tl_fail(err, TL_E_INVALID, "SGD step without gradients: run backward first");
	for (int e = 0; e < net->nentries; e++)
	{
		const tl_param_entry *pe = &net->entries[e];

		if (!tl_resnet_entry_has_grad(net, e))
			continue;
		j.p = net->params + pe->offset;
		j.g = tl_resnet_grad_of(net, e);
		j.b = opt->buf + pe->offset;
		j.first = !opt->has_buf[e];
		tl_parallel_for(pe->numel, 32768, sgd_range, &j);
		if (j.mom != 0.0f)
			opt->has_buf[e] = true;
		if (pe->ndim == 4)
			convs_changed = true;
	}
	/* a feature extractor's steps leave the convs, and so their kernel layouts, alone */
	if (convs_changed)
		tl_resnet_params_changed(net);
	return TL_OK;
}

tl_state_dict *
tl_sgd_state_dict(const tl_sgd *opt, tl_error *err)
{
	const tl_resnet *net = opt->net;
	tl_state_dict *sd = tl_sd_new(err);

	if (!sd)
		return NULL;
	for (int e = 0; e < net->nentries; e++)
	{
		const tl_param_entry *pe = &net->entries[e];

		if (!opt->has_buf[e])
			continue;
		if (tl_sd_add(sd, pe->key, pe->ndim, pe->shape, opt->buf + pe->offset, err) != TL_OK)
		{
			tl_sd_free(sd);
			return NULL;
		}
	}
	return sd;
}

tl_code
tl_sgd_load_state_dict(tl_sgd *opt, const tl_state_dict *sd, tl_error *err)
{
	const tl_resnet *net = opt->net;

	/* validate everything before changing anything */
	for (int i = 0; i < sd->n; i++)
	{
		const tl_tensor *t = &sd->tensors[i];
		int			e = tl_resnet_find_entry(net, t->name);
		char		a[96],
					b[96];

		if (e < 0 || !net->entries[e].trainable)
			return tl_fail(err, TL_E_MISMATCH, "unexpected momentum buffer \"%s\"", t->name);
		if (!tl_resnet_shape_equal(&net->entries[e], t->ndim, t->shape))
			return tl_fail(err, TL_E_MISMATCH, "size mismatch for momentum buffer \"%s\": expected %s, got %s",
						   t->name,
						   tl_shape_str(net->entries[e].ndim, net->entries[e].shape, a, sizeof a),
						   tl_shape_str(t->ndim, t->shape, b, sizeof b));
	}
	memset(opt->has_buf, 0, (size_t) net->nentries * sizeof(bool));
	for (int i = 0; i < sd->n; i++)
	{
		const tl_tensor *t = &sd->tensors[i];
		int			e = tl_resnet_find_entry(net, t->name);

		memcpy(opt->buf + net->entries[e].offset, t->data,
			   (size_t) net->entries[e].numel * sizeof(float));
		opt->has_buf[e] = true;
	}
	return TL_OK;
}

double
tl_steplr_lr(double base_lr, double gamma, int step_size, int epoch)
{
	double		lr = base_lr;
	int			decays;

	if (step_size < 1 || epoch < 0)
		return base_lr;
	decays = epoch / step_size;
	/* repeated products, as StepLR.step() computes it; pow past that (no long loops) */
	for (int k = 0; k < decays && k < 4096; k++)
		lr *= gamma;
	if (decays > 4096)
		lr *= pow(gamma, (double) (decays - 4096));
	return lr;
}
