/*
 * train/phase.c - one pass over a run's images: run_phase is the tutorial's
 * inner loop (batches of transformed images through a train or eval step,
 * the phase's loss and accuracy), compute_features the single pass of a
 * cache_features run (features.c) after which the images are freed.
 * Each batch decodes its images (batch.c): the run holds only their
 * compressed bytes.
 */
#include "postgres.h"

#include <math.h>

#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "train.h"

phase_result
run_phase(progress *p, const tl_run_args *args, const run_data *d, bool train, tl_rng *rng,
		  int32 *order)
{
	int			n = train ? d->n_train : d->n_val;
	int			first = train ? 0 : d->n_train;
	int			bs = args->batch_size;
	int			S = args->image_size;
	double		running_loss = 0;
	int64		corrects = 0;
	TimestampTz start = GetCurrentTimestamp();
	phase_result r;
	int		   *batch_idx = palloc(sizeof(int) * bs);
	tl_rng	   *batch_rng = palloc(sizeof(tl_rng) * bs);

	p->phase = train ? "train" : "val";
	p->batches = (n + bs - 1) / bs;
	p->batch = 0;
	report_progress(p, true);

	if (train)
	{
		/* a fresh permutation each epoch, like RandomSampler */
		for (int i = 0; i < n; i++)
			order[i] = i;
		tl_rng_shuffle(rng, order, n);
	}

	for (int b = 0; b < p->batches; b++)
	{
		int			k = Min(bs, n - b * bs);
		tl_error	err;
		tl_batch_result res;

		CHECK_FOR_INTERRUPTS();
		for (int j = 0; j < k; j++)
		{
			batch_idx[j] = first + (train ? order[b * bs + j] : b * bs + j);
			/* one draw per image seeds its own stream: thread-count independent */
			if (train)
				tl_rng_seed(&batch_rng[j], tl_rng_next(rng));
			W.y[j] = d->labels[batch_idx[j]];
		}
		tl_transform_batch(W.images, d->ids, batch_idx, k, train ? batch_rng : NULL, S, W.x);
		memset(&res, 0, sizeof(res));
		if (train)
			check(tl_resnet_train_step(W.net, W.opt, W.x, W.y, k, &res, &err), &err, "train step");
		else
			check(tl_resnet_eval_step(W.net, W.x, W.y, k, &res, &err), &err, "eval step");
		if (!isfinite(res.loss))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("training diverged: the loss of epoch %d batch %d is not finite", p->epoch, b),
					 errhint("Use a smaller lr.")));
		running_loss += res.loss * k;
		corrects += res.correct;

		p->batch = b + 1;
		{
			double		per_batch = (double) (GetCurrentTimestamp() - start) / USECS_PER_SEC / p->batch;

			if (train)
				p->train_batch_s = per_batch;
			else
				p->val_batch_s = per_batch;
		}
		report_progress(p, false);
		if (b == 0 && p->epoch == 0)
			tl_debug_pause(train ? "epoch0_train" : "epoch0_val");
	}
	r.loss = running_loss / n;
	r.acc = (double) corrects / n;
	pfree(batch_idx);
	pfree(batch_rng);
	return r;
}

/* cache_features => true: every image's features once, then the images are freed. */
static void
features_progress(void *arg, int done, int total)
{
	progress   *p = arg;

	p->batch = done;
	p->batches = total;
	report_progress(p, false);
}

void
compute_features(const tl_run_args *args, const run_data *d, int64 run)
{
	progress	p;

	memset(&p, 0, sizeof(p));
	p.run = run;
	p.epochs = args->epochs;
	p.phase = "features";
	report_progress(&p, true);
	W.features = tl_features_compute(W.net, W.images, d->ids, d->n_train + d->n_val,
									 args->image_size, args->batch_size, W.x, features_progress, &p);
	MemoryContextDelete(W.images_cxt);
	W.images_cxt = NULL;
	W.images = NULL;
	W.n_images = 0;
}
