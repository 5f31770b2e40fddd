/* pg_error.c - map core error codes to SQLSTATEs and raise them. */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include "pg_error.h"

int
tl_pg_sqlstate(tl_code code)
{
	switch (code)
	{
		case TL_OK:
			break;
		case TL_E_NOMEM:
			return ERRCODE_OUT_OF_MEMORY;
		case TL_E_INVALID:
			return ERRCODE_INVALID_PARAMETER_VALUE;
		case TL_E_UNSUPPORTED:
			return ERRCODE_FEATURE_NOT_SUPPORTED;
		case TL_E_CORRUPT:
			return ERRCODE_INVALID_BINARY_REPRESENTATION;
		case TL_E_LIMIT:
			return ERRCODE_PROGRAM_LIMIT_EXCEEDED;
		case TL_E_FORBIDDEN:
			return ERRCODE_INSUFFICIENT_PRIVILEGE;
		case TL_E_MISMATCH:
			return ERRCODE_DATATYPE_MISMATCH;
		case TL_E_IO:
			return ERRCODE_IO_ERROR;
		case TL_E_INTERNAL:
			break;
	}
	return ERRCODE_INTERNAL_ERROR;
}

void
tl_pg_raise(const tl_error *err, const char *context)
{
	if (context)
		ereport(ERROR,
				(errcode(tl_pg_sqlstate(err->code)),
				 errmsg("%s: %s", context, err->message)));
	ereport(ERROR,
			(errcode(tl_pg_sqlstate(err->code)),
			 errmsg("%s", err->message)));
	pg_unreachable();
}

/* ---------- shared user-error reports ---------- */

/* The extension's tl_images, schema-qualified.  Caller is connected to SPI. */
static char *
images_table(void)
{
	if (SPI_execute("SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_extension e "
					"JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace "
					"WHERE e.extname OPERATOR(pg_catalog.=) 'transfer'", true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "schema of extension \"transfer\" not found");
	return psprintf("%s.tl_images", SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
}

/*
 * Up to limit distinct values of column col of the extension's table
 * tl_images (filtered on dataset = filter when filter is not NULL), as
 * "a", "b", ... with "and N more" when there are more.  "" when none.
 * Allocated in the caller's memory context.
 */
static char *
list_values(const char *col, const char *filter, int limit)
{
	StringInfoData out;
	StringInfoData q;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	int64		total;

	initStringInfo(&out);
	if (filter)
		values[0] = CStringGetTextDatum(filter);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	initStringInfo(&q);
	appendStringInfo(&q,
					 "SELECT %s, pg_catalog.count(*) OVER () FROM "
					 "(SELECT DISTINCT %s FROM %s%s) d ORDER BY 1 LIMIT %d",
					 col, col, images_table(),
					 filter ? " WHERE dataset OPERATOR(pg_catalog.=) $1" : "",
					 limit);
	if (SPI_execute_with_args(q.data, filter ? 1 : 0, argtypes, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list %s of tl_images", col);
	total = 0;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		char	   *v = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		total = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
		appendStringInfo(&out, "%s\"%s\"", i ? ", " : "", v ? v : "(null)");
	}
	if (total > (int64) SPI_processed)
		appendStringInfo(&out, " and " INT64_FORMAT " more", total - (int64) SPI_processed);
	SPI_finish();
	return out.data;
}

void
tl_pg_raise_no_dataset(const char *dataset, const char *split)
{
	char	   *splits = split ? list_values("split", dataset, 10) : "";

	if (splits[0] != '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dataset \"%s\" has no images in split \"%s\"", dataset, split),
				 errhint("Dataset \"%s\" has the splits %s (see the view tl_datasets).",
						 dataset, splits)));
	{
		char	   *datasets = list_values("dataset", NULL, 10);

		if (datasets[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("dataset \"%s\" does not exist", dataset),
					 errdetail("No image of tl_images that the current role can read has this dataset name."),
					 errhint("There is no dataset yet: import images with tl_import_folder or scripts/load-folder.sh.")));
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("dataset \"%s\" does not exist", dataset),
				 errdetail("No image of tl_images that the current role can read has this dataset name."),
				 errhint("Existing datasets: %s (see the view tl_datasets). Import images with tl_import_folder.",
						 datasets)));
	}
	pg_unreachable();
}

void
tl_pg_raise_model_exists(const char *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_DUPLICATE_OBJECT),
			 errmsg("model \"%s\" already exists", name),
			 errhint("Choose another name. " TL_HINT_SEE_MODELS)));
}

void
tl_pg_raise_bad_image(int64 id, int sqlstate, const char *message)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(id)};
	char	   *where = NULL;
	MemoryContext outer = CurrentMemoryContext;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(psprintf("SELECT pg_catalog.format('dataset %%L, split %%L, label %%L, name %%L', "
									   "dataset, split, label, name) FROM %s WHERE id OPERATOR(pg_catalog.=) $1",
									   images_table()),
							  1, argtypes, values, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		char	   *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (v)
			where = MemoryContextStrdup(outer, v);
	}
	SPI_finish();
	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg("%s", message),
			 where ? errdetail("Image %lld is the image of %s in tl_images.", (long long) id, where) : 0,
			 errhint("Remove it with DELETE FROM tl_images WHERE id = %lld, then start the run again.",
					 (long long) id)));
	pg_unreachable();
}
