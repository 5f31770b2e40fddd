/*
 * train/best.c - the best epoch's weights (W.best) without a second copy of
 * what never changes.
 *
 * A feature_extractor run trains only fc; of the backbone only BatchNorm's
 * running statistics move (train-mode forwards, as in the tutorial), every
 * other weight and bias stays the base model's.  So W.best keeps the data
 * of fc and the running statistics (~60 KB) and none for the frozen
 * tensors, whose values are the network's own: best_view lends them from
 * W.net when the best weights are stored or checkpointed.  A finetune run
 * keeps all of them.  Either way W.best keeps every key in the network's
 * order, so what is stored is what a full copy would store.
 *
 * A new best is copied into W.best in place: no allocation and no second
 * 45 MB buffer while the old one is freed.
 */
#include "postgres.h"

#include "pg_error.h"
#include "train.h"

/* Unchanged by a feature_extractor run: every weight and bias outside fc. */
static bool
frozen(const char *key)
{
	size_t		n = strlen(key);

	if (strncmp(key, "fc.", 3) == 0)
		return false;
	return (n > 7 && strcmp(key + n - 7, ".weight") == 0) ||
		(n > 5 && strcmp(key + n - 5, ".bias") == 0);
}

static float *
net_param(const tl_tensor *t)
{
	int64_t		numel = 0;
	float	   *p = tl_resnet_param(W.net, t->name, &numel);

	/* best_set checked every key and shape */
	if (p == NULL || numel != tl_tensor_numel(t))
		elog(ERROR, "best weights: tensor \"%s\" does not match the network", t->name);
	return p;
}

void
best_set(tl_train_mode mode, tl_state_dict *sd)
{
	tl_error	err;

	tl_sd_free(W.best);
	W.best = sd;
	/* a checkpoint's "best" is the run role's to edit: hold it to the network */
	if (tl_resnet_validate_state_dict(W.net, sd, 0, &err) != TL_OK)
		tl_pg_raise(&err, "loading the best weights");
	for (int i = sd->n - 1; i >= 0; i--)
	{
		int64_t		numel;

		/* keys the network has no tensor for (num_batches_tracked) */
		if (tl_resnet_param(W.net, sd->tensors[i].name, &numel) == NULL)
			tl_sd_remove(sd, sd->tensors[i].name);
	}
	if (mode != TL_MODE_FEATURE_EXTRACTOR)
		return;
	for (int i = 0; i < sd->n; i++)
	{
		tl_tensor  *t = &sd->tensors[i];

		if (frozen(t->name))
		{
			free(t->data);
			t->data = NULL;
		}
	}
}

static bool
trainable(const char *key)
{
	return !frozen(key);
}

void
best_init(tl_train_mode mode)
{
	tl_error	err;
	tl_state_dict *sd;

	/* no copy of what best_set would drop right away */
	sd = tl_resnet_state_dict_some(W.net, mode == TL_MODE_FEATURE_EXTRACTOR ? trainable : NULL, &err);
	if (sd == NULL)
		tl_pg_raise(&err, "copying the initial weights");
	best_set(mode, sd);
}

void
best_update(void)
{
	for (int i = 0; i < W.best->n; i++)
	{
		tl_tensor  *t = &W.best->tensors[i];

		if (t->data)
			memcpy(t->data, net_param(t), sizeof(float) * tl_tensor_numel(t));
	}
}

tl_state_dict *
best_view(bool best)
{
	tl_state_dict *v = palloc(sizeof(tl_state_dict));

	v->n = v->cap = W.best->n;
	v->tensors = palloc(sizeof(tl_tensor) * Max(W.best->n, 1));
	for (int i = 0; i < W.best->n; i++)
	{
		v->tensors[i] = W.best->tensors[i];
		if (!best || v->tensors[i].data == NULL)
			v->tensors[i].data = net_param(&v->tensors[i]);
	}
	return v;
}
