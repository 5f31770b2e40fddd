/*
 * train/batch.c - the training worker's per-image work spread over the
 * compute threads (transfer.train_threads): decoding the images of a fetched
 * chunk and transforming the images of a batch.
 *
 * Between GEMMs the engine's pool is idle, so this work would otherwise run
 * on one core while the others wait.  Results do not depend on the thread
 * count: every image is written to its own slot, train transforms draw from
 * their own generator (seeded by the caller from the run's generator, one
 * draw per image in batch order), and errors are reported for the first
 * failing image in order, as a serial loop would.
 *
 * The callbacks run on pool threads and call only the core: no palloc, no
 * ereport, no PostgreSQL state.
 */
#include "postgres.h"

#include "pg_error.h"
#include "nn/tl_resnet.h"
#include "train.h"
#include "transfer_pg.h"

typedef struct decode_job
{
	tl_image   *images;
	const int  *idx;
	const uint8 *const *data;
	const size_t *len;
	int64		max_pixels;
	tl_code    *rc;
	tl_error   *err;
} decode_job;

static void
decode_range(void *arg, int64_t begin, int64_t end, int chunk)
{
	decode_job *j = arg;

	for (int64_t i = begin; i < end; i++)
		j->rc[i] = tl_image_decode(j->data[i], j->len[i], j->max_pixels,
								   &j->images[j->idx[i]], &j->err[i]);
}

void
tl_decode_images(tl_image *images, int n, const int *idx, const int64 *ids,
				 const uint8 *const *data, const size_t *len)
{
	decode_job	j;

	if (n <= 0)
		return;
	j.images = images;
	j.idx = idx;
	j.data = data;
	j.len = len;
	j.max_pixels = tl_guc_max_image_pixels;
	j.rc = palloc(sizeof(tl_code) * n);
	j.err = palloc(sizeof(tl_error) * n);
	tl_parallel_for(n, 1, decode_range, &j);
	for (int i = 0; i < n; i++)
		if (j.rc[i] != TL_OK)
			tl_pg_raise_bad_image(ids[i], tl_pg_sqlstate(j.err[i].code),
								  psprintf("could not decode image %lld: %s", (long long) ids[i], j.err[i].message));
	pfree(j.rc);
	pfree(j.err);
}

typedef struct transform_job
{
	const tl_image *images;
	const int  *idx;
	tl_rng	   *rngs;
	int			size;
	int			resize;
	float	   *x;
	tl_code    *rc;
	tl_error   *err;
} transform_job;

static void
transform_range(void *arg, int64_t begin, int64_t end, int chunk)
{
	transform_job *j = arg;
	size_t		per = (size_t) j->size * j->size * 3;

	for (int64_t i = begin; i < end; i++)
	{
		const tl_image *img = &j->images[j->idx[i]];

		if (j->rngs)
			j->rc[i] = tl_transform_train(img, j->size, &j->rngs[i], j->x + i * per, &j->err[i]);
		else
			j->rc[i] = tl_transform_eval(img, j->resize, j->size, j->x + i * per, &j->err[i]);
	}
}

void
tl_transform_batch(const tl_image *images, const int *idx, int n, tl_rng *rngs, int size,
				   float *x)
{
	transform_job *j;

	if (n <= 0)
		return;
	j = palloc(sizeof(*j));
	j->rc = palloc(sizeof(tl_code) * n);
	j->err = palloc(sizeof(tl_error) * n);
	j->images = images;
	j->idx = idx;
	j->rngs = rngs;
	j->size = size;
	j->resize = tl_eval_resize_for(size);
	j->x = x;
	tl_parallel_for(n, 1, transform_range, j);
	for (int i = 0; i < n; i++)
		if (j->rc[i] != TL_OK)
			tl_pg_raise(&j->err[i], rngs ? "train transform" : "eval transform");
	pfree(j->rc);
	pfree(j->err);
	pfree(j);
}
