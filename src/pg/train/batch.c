/*
 * train/batch.c - the training worker's per-image work spread over the
 * compute threads (transfer.train_threads): checking that the images of a
 * fetched chunk decode (keeping a val image's eval crop when asked), and
 * decoding and transforming the images of a batch (the run holds only
 * their compressed bytes, and the crops).
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
	const tl_blob *images;
	int64		max_pixels;
	int			size;			/* crop size of the eval transform */
	int			resize;
	double	   *decoded;		/* bytes of each decoded image */
	tl_code    *rc;
	tl_error   *err;
	bool	   *decode_failed;
} decode_job;

static void
check_range(void *arg, int64_t begin, int64_t end, int chunk)
{
	decode_job *j = arg;

	for (int64_t i = begin; i < end; i++)
	{
		tl_image	img;

		memset(&img, 0, sizeof(img));
		/* pixels only for a crop; otherwise the decode's verdict without them */
		if (j->images[i].crop != NULL)
			j->rc[i] = tl_image_decode(j->images[i].data, j->images[i].len, j->max_pixels,
									   &img, &j->err[i]);
		else
			j->rc[i] = tl_image_check(j->images[i].data, j->images[i].len, j->max_pixels,
									  &img.width, &img.height, &j->err[i]);
		j->decode_failed[i] = j->rc[i] != TL_OK;
		j->decoded[i] = j->rc[i] == TL_OK ? 3.0 * img.width * img.height : 0;
		/* the same bytes the eval transform gives each epoch (tl_normalize_rgb8 follows) */
		if (j->rc[i] == TL_OK && j->images[i].crop != NULL)
			j->rc[i] = tl_transform_eval_rgb8(&img, j->resize, j->size, j->images[i].crop, &j->err[i]);
		tl_image_free(&img);
	}
}

void
tl_check_images(const tl_blob *images, int n, const int64 *ids, int size, double *max_decoded)
{
	decode_job	j;

	if (n <= 0)
		return;
	j.images = images;
	j.max_pixels = tl_guc_max_image_pixels;
	j.size = size;
	j.resize = tl_eval_resize_for(size);
	j.decoded = palloc(sizeof(double) * n);
	j.rc = palloc(sizeof(tl_code) * n);
	j.err = palloc(sizeof(tl_error) * n);
	j.decode_failed = palloc(sizeof(bool) * n);
	tl_parallel_for(n, 1, check_range, &j);
	for (int i = 0; i < n; i++)
	{
		if (j.rc[i] != TL_OK && j.decode_failed[i])
			tl_pg_raise_bad_image(ids[i], tl_pg_sqlstate(j.err[i].code),
								  psprintf("could not decode image %lld: %s", (long long) ids[i], j.err[i].message));
		if (j.rc[i] != TL_OK)
			tl_pg_raise(&j.err[i], "eval transform");
		*max_decoded = Max(*max_decoded, j.decoded[i]);
	}
	pfree(j.decoded);
	pfree(j.rc);
	pfree(j.err);
	pfree(j.decode_failed);
}

typedef struct transform_job
{
	const tl_blob *images;
	const int  *idx;
	tl_rng	   *rngs;
	int			size;
	int			resize;
	int64		max_pixels;
	float	   *x;
	tl_code    *rc;
	tl_error   *err;
	bool	   *decode_failed;
} transform_job;

/*
 * Decode, transform, free: a thread holds one decoded image at a time.  The
 * decode is deterministic, so the result is the same as transforming an
 * image decoded once for the whole run.
 */
static void
transform_range(void *arg, int64_t begin, int64_t end, int chunk)
{
	transform_job *j = arg;
	size_t		per = (size_t) j->size * j->size * 3;

	for (int64_t i = begin; i < end; i++)
	{
		const tl_blob *b = &j->images[j->idx[i]];
		tl_image	img;

		if (j->rngs == NULL && b->crop != NULL)
		{
			/* a val image's crop, kept since loading (check_range) */
			tl_normalize_rgb8(b->crop, (size_t) j->size * j->size, j->x + i * per);
			j->rc[i] = TL_OK;
			j->decode_failed[i] = false;
			continue;
		}
		memset(&img, 0, sizeof(img));
		j->rc[i] = tl_image_decode(b->data, b->len, j->max_pixels, &img, &j->err[i]);
		j->decode_failed[i] = j->rc[i] != TL_OK;
		if (j->rc[i] != TL_OK)
		{
			tl_image_free(&img);
			continue;
		}
		if (j->rngs)
			j->rc[i] = tl_transform_train(&img, j->size, &j->rngs[i], j->x + i * per, &j->err[i]);
		else
			j->rc[i] = tl_transform_eval(&img, j->resize, j->size, j->x + i * per, &j->err[i]);
		tl_image_free(&img);
	}
}

void
tl_transform_batch(const tl_blob *images, const int64 *ids, const int *idx, int n,
				   tl_rng *rngs, int size, float *x)
{
	transform_job *j;

	if (n <= 0)
		return;
	j = palloc(sizeof(*j));
	j->rc = palloc(sizeof(tl_code) * n);
	j->err = palloc(sizeof(tl_error) * n);
	j->decode_failed = palloc(sizeof(bool) * n);
	j->images = images;
	j->idx = idx;
	j->rngs = rngs;
	j->size = size;
	j->resize = tl_eval_resize_for(size);
	j->max_pixels = tl_guc_max_image_pixels;
	j->x = x;
	tl_parallel_for(n, 1, transform_range, j);
	for (int i = 0; i < n; i++)
	{
		/* load_images decoded every image once: only memory can fail here */
		if (j->rc[i] != TL_OK && j->decode_failed[i])
			ereport(ERROR,
					(errcode(tl_pg_sqlstate(j->err[i].code)),
					 errmsg("could not decode image %lld: %s", (long long) ids[idx[i]],
							j->err[i].message)));
		if (j->rc[i] != TL_OK)
			tl_pg_raise(&j->err[i], rngs ? "train transform" : "eval transform");
	}
	pfree(j->rc);
	pfree(j->err);
	pfree(j->decode_failed);
	pfree(j);
}
