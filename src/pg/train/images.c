/*
 * train/images.c - the worker's data: the run's classes and its train and
 * val images, read in one snapshot as the calling role.  The run keeps each
 * image's compressed bytes (a JPEG is ~5x smaller than its pixels) and
 * decodes it in each batch that uses it (batch.c); while loading, each image
 * is decoded once on the compute threads to check it, so that a bad image
 * fails the run before its first epoch; that decode also makes a val
 * image's eval crop, kept up to TL_VAL_CROPS_BYTES per run (the eval
 * transform is deterministic: every epoch would make the same bytes).  A new run takes the dataset in
 * ImageFolder order and records its classes in tl_runs.args; a resumed run
 * reloads exactly the images of its checkpoint.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"

#include "train.h"

/* The worker's own check of the memory limit, on what it has read so far. */
static void
check_memory_limit(const tl_run_args *args, const tl_data_size *size, double limit)
{
	double		estimate;

	if (limit <= 0)
		return;
	estimate = tl_train_memory_estimate(args, size);
	if (estimate > limit)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("training run would need about %.0f MB, more than transfer.train_memory_limit (%.0f MB)",
						estimate / (1024.0 * 1024.0), limit / (1024.0 * 1024.0)),
				 errdetail("The worker had read " INT64_FORMAT " images (%.0f bytes compressed, held for the whole run) when its estimate passed the limit: the data grew after tl_train checked it, or the limit was lowered.",
						   size->n, size->bytes),
				 errhint("Train on fewer images, or ask a superuser to raise transfer.train_memory_limit.")));
}

/*
 * Fetch, check and keep images.  by_ids: the given ids in their order
 * (resume); otherwise the dataset's train then val images in ImageFolder
 * order.
 */
void
load_images(const tl_run_args *args, const tl_source *src, run_data *d, bool by_ids)
{
	const char *dataset = args->dataset;
	double		limit = tl_train_memory_limit_bytes(args);
	tl_data_size size = {0, 0, 0};
	StringInfoData q;
	SPIPlanPtr	plan;
	Portal		portal;
	Oid			types[1];
	Datum		values[1];
	MemoryContext tmp = AllocSetContextCreate(CurrentMemoryContext, "tl_train image batch",
											  ALLOCSET_DEFAULT_SIZES);
	int			n_total = by_ids ? d->n_train + d->n_val : 0;
	int			cap = by_ids ? n_total : 256;
	int			n = 0;
	bool	   *seen = NULL;
	double		crop_bytes = 3.0 * args->image_size * args->image_size;
	double		crops_bytes = 0;

	initStringInfo(&q);
	if (by_ids)
	{
		if (src)
			appendStringInfoString(&q, tl_source_rows_sql(src));
		else
			appendStringInfo(&q, "SELECT id, split, label, img FROM %s WHERE id = ANY ($1)",
							 tl_qualified("tl_images"));
		types[0] = INT8ARRAYOID;
		{
			Datum	   *ds = palloc(sizeof(Datum) * Max(n_total, 1));

			for (int i = 0; i < n_total; i++)
				ds[i] = Int64GetDatum(d->ids[i]);
			values[0] = PointerGetDatum(construct_array(ds, n_total, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		}
		seen = palloc0(sizeof(bool) * Max(n_total, 1));
	}
	else
	{
		appendStringInfo(&q,
						 "SELECT id, split, label, img FROM %s WHERE dataset = $1 AND split IN ('train', 'val') "
						 "ORDER BY split COLLATE \"C\", label COLLATE \"C\", name COLLATE \"C\", id",
						 tl_qualified("tl_images"));
		types[0] = TEXTOID;
		values[0] = CStringGetTextDatum(dataset);
		d->ids = MemoryContextAlloc(run_cxt, sizeof(int64) * cap);
		d->labels = MemoryContextAlloc(run_cxt, sizeof(int32) * cap);
		d->n_train = d->n_val = 0;
	}
	W.images_cxt = AllocSetContextCreate(run_cxt, "tl_train images", ALLOCSET_DEFAULT_SIZES);
	W.images = MemoryContextAllocZero(W.images_cxt, sizeof(tl_blob) * Max(cap, 1));
	W.n_images = by_ids ? n_total : 0;

	plan = SPI_prepare(q.data, 1, types);
	if (plan == NULL)
		elog(ERROR, "could not prepare image scan");
	portal = SPI_cursor_open(NULL, plan, values, NULL, true);
	for (;;)
	{
		/* each chunk's images are checked together, on the compute threads */
		tl_blob    *chunk;
		int64	   *chunk_id;
		int			m = 0;

		SPI_cursor_fetch(portal, true, 32);
		if (SPI_processed == 0)
			break;
		chunk = MemoryContextAlloc(tmp, sizeof(tl_blob) * SPI_processed);
		chunk_id = MemoryContextAlloc(tmp, sizeof(int64) * SPI_processed);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			char	   *split = SPI_getvalue(tup, desc, 2);
			char	   *label = SPI_getvalue(tup, desc, 3);
			int			cls = -1;
			int			idx;
			bytea	   *img;
			size_t		len;

			for (int c = 0; c < d->num_classes && label != NULL; c++)
				if (strcmp(d->classes[c], label) == 0)
					cls = c;
			if (cls < 0 && src != NULL)
				continue;		/* a copy of a run's image under another label */
			if (cls < 0)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_EXCEPTION),
						 errmsg("image %lld has label \"%s\", which is not a class of the run", (long long) id,
								label ? label : "(null)")));
			if (by_ids)
			{
				/* position of this id in the run's order */
				idx = -1;
				for (int k = 0; k < n_total; k++)
					if (d->ids[k] == id && !seen[k])
					{
						idx = k;
						break;
					}
				if (idx < 0)
					continue;
				seen[idx] = true;
				d->labels[idx] = cls;
			}
			else
			{
				if (n == cap)
				{
					cap *= 2;
					d->ids = repalloc(d->ids, sizeof(int64) * cap);
					d->labels = repalloc(d->labels, sizeof(int32) * cap);
					W.images = repalloc(W.images, sizeof(tl_blob) * cap);
					memset(&W.images[n], 0, sizeof(tl_blob) * (cap - n));
				}
				idx = n++;
				d->ids[idx] = id;
				d->labels[idx] = cls;
				if (strcmp(split, "train") == 0)
					d->n_train++;
				else
					d->n_val++;
				W.n_images = n;
			}
			/*
			 * A TOASTed value is detoasted straight into the run's memory and
			 * kept; only a value stored inline (it lives in the SPI tuple) is
			 * copied.  Fresh memory costs more than the copy: each byte is
			 * touched once.
			 */
			{
				MemoryContext old = MemoryContextSwitchTo(W.images_cxt);
				Datum		raw = SPI_getbinval(tup, desc, 4, &isnull);

				img = DatumGetByteaPP(raw);
				if ((Pointer) img == DatumGetPointer(raw))
					img = (bytea *) pg_detoast_datum_copy((struct varlena *) img);
				MemoryContextSwitchTo(old);
			}
			len = VARSIZE_ANY_EXHDR(img);
			W.images[idx].data = (uint8 *) VARDATA_ANY(img);
			W.images[idx].len = len;
			/* a val image's eval crop is made while it is checked (batch.c) */
			W.images[idx].crop = NULL;
			if ((by_ids ? idx >= d->n_train : strcmp(split, "val") == 0) && !args->cache_features &&
				crops_bytes + crop_bytes <= TL_VAL_CROPS_BYTES)
			{
				W.images[idx].crop = MemoryContextAlloc(W.images_cxt, (Size) crop_bytes);
				crops_bytes += crop_bytes;
			}
			chunk[m] = W.images[idx];
			chunk_id[m] = id;
			m++;
			size.bytes += len;
			size.n++;
		}
		tl_check_images(chunk, m, chunk_id, args->image_size, &size.max_decoded);
		/* the table may have grown since tl_train checked its estimate */
		check_memory_limit(args, &size, limit);
		tl_debug_pause("load");
		SPI_freetuptable(SPI_tuptable);
		MemoryContextReset(tmp);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
	MemoryContextDelete(tmp);

	if (by_ids)
	{
		int			missing = 0;

		for (int k = 0; k < n_total; k++)
			if (!seen[k])
				missing++;
		if (missing > 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("%d of the %d images of the run are gone or no longer readable", missing, n_total),
					 errdetail("A resumed run trains on exactly the images it started with.")));
	}
}

void
load_classes(int64 run, run_data *d)
{
	StringInfoData q;
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run)};

	initStringInfo(&q);
	appendStringInfo(&q,
					 "SELECT c FROM %s, jsonb_array_elements_text(args->'classes') WITH ORDINALITY AS a(c, i) "
					 "WHERE id = $1 ORDER BY i", tl_qualified("tl_runs"));
	exec_sql(q.data, 1, types, values, SPI_OK_SELECT);
	if (SPI_processed < 2)
		elog(ERROR, "run " INT64_FORMAT " has no classes recorded", run);
	d->num_classes = (int) SPI_processed;
	d->classes = MemoryContextAlloc(run_cxt, sizeof(char *) * d->num_classes);
	for (int i = 0; i < d->num_classes; i++)
	{
		/* the row is the run role's to edit: a class may be null or repeated */
		char	   *c = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		if (c == NULL || c[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("run " INT64_FORMAT " has a null or empty class name recorded", run)));
		for (int j = 0; j < i; j++)
			if (strcmp(d->classes[j], c) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("run " INT64_FORMAT " has class \"%s\" recorded twice", run, c)));
		d->classes[i] = MemoryContextStrdup(run_cxt, c);
	}
}

void
record_classes(int64 run, const run_data *d)
{
	StringInfoData q;
	StringInfoData js;
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		values[2];

	initStringInfo(&js);
	appendStringInfo(&js, "{\"train_images\": %d, \"val_images\": %d, \"num_classes\": %d, \"classes\": [",
					 d->n_train, d->n_val, d->num_classes);
	for (int i = 0; i < d->num_classes; i++)
	{
		if (i)
			appendStringInfoString(&js, ", ");
		escape_json(&js, d->classes[i]);
	}
	appendStringInfoString(&js, "]}");
	initStringInfo(&q);
	appendStringInfo(&q, "UPDATE %s SET args = args || $2::jsonb WHERE id = $1", tl_qualified("tl_runs"));
	values[0] = Int64GetDatum(run);
	values[1] = CStringGetTextDatum(js.data);
	exec_sql(q.data, 2, types, values, SPI_OK_UPDATE);
}
