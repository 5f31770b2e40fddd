/*
 * train/features.c - feature_extractor runs with cache_features => true
 * (docs/training.md, "Cached features").
 *
 * The backbone of a feature extractor is frozen, so each image's 512-d
 * feature vector (the global average pool's output) can be computed once
 * and fc trained on those vectors: a run then costs one forward pass over
 * the data plus a negligible amount of work per epoch.  The vectors come
 * from the eval transform and eval-mode BatchNorm: unlike the tutorial, no
 * augmentation and no running-statistic updates during training, so the
 * backbone stored with the model is exactly the base model's.  Val metrics
 * are those of the full network in eval mode, as in the tutorial.
 *
 * fc's SGD is torch.optim.SGD as tl_sgd computes it (momentum, no dampening
 * or weight decay, which tl_train does not expose), with the momentum
 * buffers kept in the run's tl_sgd between phases so that checkpoints and
 * tl_resume work unchanged.
 */
#include "postgres.h"

#include <math.h>

#include "miscadmin.h"

#include "pg_error.h"
#include "image/tl_image.h"
#include "nn/tl_resnet.h"
#include "train.h"

struct tl_feature_cache
{
	float	   *feats;			/* n x dim: the worker's image order */
	int			n;
	int			dim;
	int			classes;
	/* per-batch scratch and fc's momentum between the sync points */
	float	   *xb;
	float	   *logits;
	float	   *dlogits;
	float	   *dw;
	float	   *db;
	float	   *mom_w;
	float	   *mom_b;
	int32	   *yb;
};

void
tl_features_free(tl_feature_cache *fc)
{
	if (fc == NULL)
		return;
	free(fc->feats);
	free(fc->xb);
	free(fc->logits);
	free(fc->dlogits);
	free(fc->dw);
	free(fc->db);
	free(fc->mom_w);
	free(fc->mom_b);
	free(fc->yb);
	free(fc);
}

tl_feature_cache *
tl_features_compute(tl_resnet *net, const tl_blob *images, const int64 *ids, int n,
					int image_size, int batch, float *x, tl_features_progress_fn progress,
					void *progress_arg)
{
	const tl_resnet_config *cfg = tl_resnet_get_config(net);
	tl_feature_cache *fc = calloc(1, sizeof(*fc));
	tl_error	err;
	int		   *idx = palloc(sizeof(int) * batch);

	if (fc == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	fc->n = n;
	fc->dim = 8 * cfg->base_width;
	fc->classes = cfg->num_classes;
	fc->feats = malloc(sizeof(float) * (size_t) Max(n, 1) * fc->dim);
	fc->xb = malloc(sizeof(float) * (size_t) batch * fc->dim);
	fc->logits = malloc(sizeof(float) * (size_t) batch * fc->classes);
	fc->dlogits = malloc(sizeof(float) * (size_t) batch * fc->classes);
	fc->dw = malloc(sizeof(float) * (size_t) fc->classes * fc->dim);
	fc->db = malloc(sizeof(float) * (size_t) fc->classes);
	fc->mom_w = malloc(sizeof(float) * (size_t) fc->classes * fc->dim);
	fc->mom_b = malloc(sizeof(float) * (size_t) fc->classes);
	fc->yb = malloc(sizeof(int32) * (size_t) batch);
	if (!fc->feats || !fc->xb || !fc->logits || !fc->dlogits || !fc->dw || !fc->db ||
		!fc->mom_w || !fc->mom_b || !fc->yb)
	{
		tl_features_free(fc);
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	}

	PG_TRY();
	{
		for (int b = 0; b < n; b += batch)
		{
			int			k = Min(batch, n - b);

			CHECK_FOR_INTERRUPTS();
			for (int j = 0; j < k; j++)
				idx[j] = b + j;
			tl_transform_batch(images, ids, idx, k, NULL, image_size, x);
			if (tl_resnet_features(net, x, k, fc->feats + (size_t) b * fc->dim, &err) != TL_OK)
				tl_pg_raise(&err, "computing features");
			if (progress)
				progress(progress_arg, b + k, n);
		}
	}
	PG_CATCH();
	{
		tl_features_free(fc);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return fc;
}

/* fc's momentum buffers from the run's optimiser; false when it has none yet. */
static bool
momentum_from(tl_feature_cache *fc, tl_sgd *opt)
{
	tl_error	err;
	tl_state_dict *sd = tl_sgd_state_dict(opt, &err);
	const tl_tensor *w,
			   *b;
	bool		found;

	if (sd == NULL)
		tl_pg_raise(&err, "reading momentum buffers");
	w = tl_sd_find(sd, "fc.weight");
	b = tl_sd_find(sd, "fc.bias");
	found = w != NULL && b != NULL;
	if (found)
	{
		memcpy(fc->mom_w, w->data, sizeof(float) * (size_t) fc->classes * fc->dim);
		memcpy(fc->mom_b, b->data, sizeof(float) * (size_t) fc->classes);
	}
	tl_sd_free(sd);
	return found;
}

static void
momentum_to(tl_feature_cache *fc, tl_sgd *opt)
{
	tl_error	err;
	tl_state_dict *sd = tl_sd_new(&err);
	int64		wshape[2] = {fc->classes, fc->dim};
	int64		bshape[1] = {fc->classes};
	tl_code		rc;

	if (sd == NULL)
		tl_pg_raise(&err, "saving momentum buffers");
	rc = tl_sd_add(sd, "fc.weight", 2, wshape, fc->mom_w, &err);
	if (rc == TL_OK)
		rc = tl_sd_add(sd, "fc.bias", 1, bshape, fc->mom_b, &err);
	if (rc == TL_OK)
		rc = tl_sgd_load_state_dict(opt, sd, &err);
	tl_sd_free(sd);
	if (rc != TL_OK)
		tl_pg_raise(&err, "saving momentum buffers");
}

/* tl_sgd's update (sgd_range) with weight_decay 0 and dampening 0. */
static void
sgd_update(float *p, const float *g, float *buf, int64 n, float lr, float mom, bool first)
{
	for (int64 i = 0; i < n; i++)
	{
		float		d = g[i];

		if (mom != 0.0f)
		{
			buf[i] = first ? d : buf[i] * mom + 1.0f * d;
			d = buf[i];
		}
		p[i] = p[i] - lr * d;
	}
}

void
tl_features_phase(tl_feature_cache *fc, tl_resnet *net, tl_sgd *opt, bool train,
				  int first, int n, const int32 *labels, int batch, double lr,
				  double momentum, tl_rng *rng, int32 *order, int epoch,
				  double *loss_out, double *acc_out)
{
	float	   *w = tl_resnet_param(net, "fc.weight", NULL);
	float	   *bias = tl_resnet_param(net, "fc.bias", NULL);
	int			C = fc->classes;
	int			D = fc->dim;
	bool		have_mom = false;
	double		running_loss = 0;
	int64		corrects = 0;

	if (w == NULL || bias == NULL)
		elog(ERROR, "network has no fc layer");
	if (first < 0 || n < 1 || first + n > fc->n)
		elog(ERROR, "feature cache holds %d images, not %d from %d", fc->n, n, first);
	if (train)
	{
		/* a fresh permutation each epoch, like RandomSampler (and run_phase) */
		for (int i = 0; i < n; i++)
			order[i] = i;
		tl_rng_shuffle(rng, order, n);
		have_mom = momentum_from(fc, opt);
	}

	for (int b = 0; b < n; b += batch)
	{
		int			k = Min(batch, n - b);
		double		loss;

		CHECK_FOR_INTERRUPTS();
		for (int j = 0; j < k; j++)
		{
			int			idx = first + (train ? order[b + j] : b + j);

			memcpy(fc->xb + (size_t) j * D, fc->feats + (size_t) idx * D, sizeof(float) * D);
			fc->yb[j] = labels[idx];
		}
		tl_linear_forward(fc->logits, fc->xb, w, bias, k, D, C);
		loss = tl_softmax_xent(fc->logits, fc->yb, k, C, train ? fc->dlogits : NULL);
		if (!isfinite(loss))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("training diverged: the loss of epoch %d batch %d is not finite",
							epoch, b / batch),
					 errhint("Use a smaller lr.")));
		for (int j = 0; j < k; j++)
		{
			const float *z = fc->logits + (size_t) j * C;
			int			best = 0;

			/* first maximum, as torch.max and the engine */
			for (int c = 1; c < C; c++)
				if (z[c] > z[best])
					best = c;
			corrects += best == fc->yb[j];
		}
		running_loss += loss * k;
		if (train)
		{
			tl_linear_backward(NULL, fc->dw, fc->db, fc->dlogits, fc->xb, w, k, D, C);
			sgd_update(w, fc->dw, fc->mom_w, (int64) C * D, (float) lr, (float) momentum, !have_mom);
			sgd_update(bias, fc->db, fc->mom_b, C, (float) lr, (float) momentum, !have_mom);
			if (momentum != 0)
				have_mom = true;
		}
	}
	if (train && have_mom)
		momentum_to(fc, opt);
	*loss_out = running_loss / n;
	*acc_out = (double) corrects / n;
}
