/*
 * preview.c - tl_preview(): a JPEG grid of n images of a dataset split as the
 * tutorial's data loader shows them (make_grid + imshow), with their labels
 * in grid order.
 *
 * The train split gets the training transform (RandomResizedCrop(224) +
 * RandomHorizontalFlip), other splits the evaluation transform
 * (Resize(256) + CenterCrop(224)), as in the tutorial's data_transforms.
 * Images are picked at random and the crops drawn from one generator seeded
 * by `seed` (random when NULL), so a seed reproduces a preview.
 *
 * Rows are read through SPI as the calling user: privileges and row-level
 * security on tl_images decide what can be previewed.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "pg_error.h"
#include "image/tl_image.h"
#include "tl_rng.h"
#include "transfer_pg.h"

PG_FUNCTION_INFO_V1(tl_preview);

#define PREVIEW_SIZE 224
#define PREVIEW_MAX_IMAGES 64
#define PREVIEW_NROW 8			/* make_grid's default */
#define PREVIEW_PADDING 2		/* make_grid's default */
#define PREVIEW_QUALITY 90

typedef struct preview_row
{
	int64		id;
	char	   *label;
	char	   *name;
} preview_row;

/* Ids and labels of one split, in id order (allocated in the caller's context). */
static preview_row *
preview_list(const char *nspname, Datum dataset, Datum split, MemoryContext outer, int *nrows)
{
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {dataset, split};
	preview_row *rows;
	int			rc;

	rc = SPI_execute_with_args(psprintf("SELECT id, label, name FROM %s.tl_images "
										"WHERE dataset = $1 AND split = $2 ORDER BY id",
										quote_identifier(nspname)),
							   2, argtypes, values, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "reading tl_images failed: %s", SPI_result_code_string(rc));
	if (SPI_processed > (uint64) INT_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many images to preview from")));
	*nrows = (int) SPI_processed;
	rows = MemoryContextAlloc(outer, sizeof(preview_row) * (*nrows > 0 ? *nrows : 1));
	for (int i = 0; i < *nrows; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;

		rows[i].id = DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
		rows[i].label = MemoryContextStrdup(outer,
											TextDatumGetCString(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull)));
		rows[i].name = MemoryContextStrdup(outer,
										   TextDatumGetCString(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull)));
	}
	SPI_freetuptable(SPI_tuptable);
	return rows;
}

Datum
tl_preview(PG_FUNCTION_ARGS)
{
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext image_cxt;
	TupleDesc	tupdesc;
	char	   *nspname;
	char	   *dataset;
	char	   *split;
	bool		train;
	int			n,
				nrows;
	uint64		seed;
	tl_rng		rng;
	preview_row *rows;
	int32	   *order;
	uint8_t   **tiles;
	Datum	   *label_datums;
	SPIPlanPtr	fetch_plan;
	Oid			fetch_types[1] = {INT8OID};
	uint8_t		pad_rgb[3];
	tl_image	grid;
	uint8_t    *jpeg;
	size_t		jpeg_len;
	bytea	   *result;
	tl_error	err;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null",
						PG_ARGISNULL(0) ? "dataset" : PG_ARGISNULL(1) ? "split" : "n")));
	dataset = text_to_cstring(PG_GETARG_TEXT_PP(0));
	split = text_to_cstring(PG_GETARG_TEXT_PP(1));
	n = PG_GETARG_INT32(2);
	if (n < 1 || n > PREVIEW_MAX_IMAGES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("n must be between 1 and %d, not %d", PREVIEW_MAX_IMAGES, n)));
	if (PG_ARGISNULL(3))
	{
		if (!pg_strong_random(&seed, sizeof(seed)))
			seed = (uint64) GetCurrentTimestamp() ^ ((uint64) MyProcPid << 32);
	}
	else
		seed = (uint64) PG_GETARG_INT64(3);
	tl_rng_seed(&rng, seed);
	train = strcmp(split, "train") == 0;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "tl_preview must return a composite type");
	tupdesc = BlessTupleDesc(tupdesc);
	nspname = get_namespace_name(get_func_namespace(fcinfo->flinfo->fn_oid));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rows = preview_list(nspname, PG_GETARG_DATUM(0), PG_GETARG_DATUM(1), outer, &nrows);
	if (nrows == 0)
		tl_pg_raise_no_dataset(dataset, split);
	if (n > nrows)
		n = nrows;

	/* A random sample of n rows: the first n of a seeded shuffle. */
	order = MemoryContextAlloc(outer, sizeof(int32) * nrows);
	for (int i = 0; i < nrows; i++)
		order[i] = i;
	tl_rng_shuffle(&rng, order, nrows);

	fetch_plan = SPI_prepare(psprintf("SELECT img FROM %s.tl_images WHERE id = $1",
									  quote_identifier(nspname)), 1, fetch_types);
	if (fetch_plan == NULL)
		elog(ERROR, "preparing the image fetch failed: %s", SPI_result_code_string(SPI_result));

	tiles = MemoryContextAlloc(outer, sizeof(uint8_t *) * n);
	label_datums = MemoryContextAlloc(outer, sizeof(Datum) * n);
	image_cxt = AllocSetContextCreate(CurrentMemoryContext, "tl_preview image",
									  ALLOCSET_DEFAULT_SIZES);
	for (int k = 0; k < n; k++)
	{
		preview_row *row = &rows[order[k]];
		Datum		id = Int64GetDatum(row->id);
		MemoryContext old;
		bytea	   *img_bytes;
		bool		isnull;
		tl_image	img;
		tl_code		rc;
		int			spi_rc;

		CHECK_FOR_INTERRUPTS();
		spi_rc = SPI_execute_plan(fetch_plan, &id, NULL, true, 1);
		if (spi_rc != SPI_OK_SELECT)
			elog(ERROR, "reading an image failed: %s", SPI_result_code_string(spi_rc));
		if (SPI_processed != 1)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("image %lld of dataset \"%s\" disappeared while making the preview",
							(long long) row->id, dataset)));
		old = MemoryContextSwitchTo(image_cxt);
		img_bytes = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		MemoryContextSwitchTo(old);

		/* Core calls malloc; nothing may ereport while img is held. */
		rc = tl_image_decode((const uint8_t *) VARDATA_ANY(img_bytes), VARSIZE_ANY_EXHDR(img_bytes),
							 tl_guc_max_image_pixels, &img, &err);
		if (rc == TL_OK)
		{
			tiles[k] = MemoryContextAllocExtended(outer, PREVIEW_SIZE * PREVIEW_SIZE * 3, MCXT_ALLOC_NO_OOM);
			if (tiles[k] == NULL)
				rc = tl_fail(&err, TL_E_NOMEM, "out of memory");
			else if (train)
				rc = tl_transform_train_rgb8(&img, PREVIEW_SIZE, &rng, tiles[k], &err);
			else
				rc = tl_transform_eval_rgb8(&img, tl_eval_resize_for(PREVIEW_SIZE), PREVIEW_SIZE,
											tiles[k], &err);
			tl_image_free(&img);
		}
		if (rc != TL_OK)
		{
			tl_error_prefix(&err, "image \"%s\" (id %lld, label \"%s\") of dataset \"%s\"",
							row->name, (long long) row->id, row->label, dataset);
			tl_pg_raise(&err, NULL);
		}
		old = MemoryContextSwitchTo(outer);
		label_datums[k] = PointerGetDatum(cstring_to_text(row->label));
		MemoryContextSwitchTo(old);
		SPI_freetuptable(SPI_tuptable);
		MemoryContextReset(image_cxt);
	}
	SPI_finish();

	/* imshow de-normalises make_grid's zero padding to the mean colour. */
	for (int c = 0; c < 3; c++)
		pad_rgb[c] = (uint8_t) lrintf(tl_imagenet_mean[c] * 255.0f);
	if (tl_image_grid((const uint8_t *const *) tiles, n, PREVIEW_SIZE, PREVIEW_NROW,
					  PREVIEW_PADDING, pad_rgb, &grid, &err) != TL_OK)
		tl_pg_raise(&err, "making the preview grid");
	if (tl_image_encode_jpeg(&grid, PREVIEW_QUALITY, &jpeg, &jpeg_len, &err) != TL_OK)
	{
		tl_image_free(&grid);
		tl_pg_raise(&err, "encoding the preview");
	}
	tl_image_free(&grid);
	result = palloc_extended(jpeg_len + VARHDRSZ, MCXT_ALLOC_NO_OOM);
	if (result == NULL)
	{
		free(jpeg);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory returning a preview of %zu bytes", jpeg_len)));
	}
	SET_VARSIZE(result, jpeg_len + VARHDRSZ);
	memcpy(VARDATA(result), jpeg, jpeg_len);
	free(jpeg);

	values[0] = PointerGetDatum(result);
	values[1] = PointerGetDatum(construct_array(label_datums, n, TEXTOID, -1, false, TYPALIGN_INT));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
