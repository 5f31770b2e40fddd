/*
 * weights.c - SQL functions that move model weights in and out of tables:
 * tl_import_weights (bytea), tl_import_weights_file (server file) and
 * tl_export.  Parsing is the core's (tl_checkpoint.h); storage is
 * model_store.c's.
 */
#include "postgres.h"

#include <sys/stat.h>

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "imagenet_classes.h"
#include "model_store.h"
#include "pg_error.h"
#include "checkpoint/tl_checkpoint.h"

PG_FUNCTION_INFO_V1(tl_import_weights);
PG_FUNCTION_INFO_V1(tl_import_weights_file);
PG_FUNCTION_INFO_V1(tl_export);

/* The class names argument: a one-dimensional text[] without NULLs, or NULL for generated names. */
static const char *const *
classes_arg(FunctionCallInfo fcinfo, int argno, int *n)
{
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	char	  **out;

	*n = 0;
	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return NULL;
	arr = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("classes must be a one-dimensional array")));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &nelems);
	out = palloc(sizeof(char *) * (nelems ? nelems : 1));
	for (int i = 0; i < nelems; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("class name %d is null", i + 1)));
		out[i] = TextDatumGetCString(elems[i]);
	}
	*n = nelems;
	return (const char *const *) out;
}

static Jsonb *
import_source(tl_ckpt_format fmt, size_t nbytes, const char *file)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"kind\": \"imported\", \"format\": ");
	escape_json(&buf, tl_ckpt_format_name(fmt));
	appendStringInfo(&buf, ", \"bytes\": %zu", nbytes);
	if (file)
	{
		appendStringInfoString(&buf, ", \"file\": ");
		escape_json(&buf, file);
	}
	appendStringInfoChar(&buf, '}');
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/*
 * Class names that tl_export wrote into a safetensors file's metadata, when
 * they fit fc; otherwise NULL (generated names), with a NOTICE if they were
 * there but unusable.
 */
static const char *const *
classes_from_metadata(const uint8 *data, size_t len, const tl_state_dict *sd, int *n)
{
	char	   *json = NULL;
	char	  **names = NULL;
	int			count = 0;
	const tl_tensor *fc = tl_sd_find(sd, "fc.weight");
	char	  **result = NULL;
	tl_error	err;

	*n = 0;
	if (tl_safetensors_metadata(data, len, "transfer.classes", &json, &err) != TL_OK || json == NULL)
		return NULL;
	if (tl_json_string_array(json, &names, &count, &err) != TL_OK)
		count = -1;
	/* The core's strings are malloc'd: free them whatever ereport does. */
	PG_TRY();
	{
		if (count < 0)
			ereport(NOTICE,
					(errmsg("ignoring the class names in the file's metadata: %s", err.message)));
		else if (!fc || fc->ndim != 2 || count != fc->shape[0])
			ereport(NOTICE,
					(errmsg("ignoring the %d class names in the file's metadata: fc has %lld outputs",
							count, fc && fc->ndim == 2 ? (long long) fc->shape[0] : 0LL)));
		else
		{
			result = palloc(sizeof(char *) * count);
			for (int i = 0; i < count; i++)
				result[i] = pstrdup(names[i]);
			*n = count;
		}
	}
	PG_FINALLY();
	{
		for (int i = 0; i < count; i++)
			free(names[i]);
		free(names);
		free(json);
	}
	PG_END_TRY();
	return (const char *const *) result;
}

/*
 * torchvision's ImageNet category names for a checkpoint whose fc has 1000
 * outputs (torchvision's ImageNet models, imported without class names);
 * NULL otherwise (tl_store_save then names the classes class_0, ...).
 */
static const char *const *
imagenet_classes_for(const tl_state_dict *sd, int *n)
{
	tl_tensor  *fc = tl_sd_find(sd, "fc.weight");

	if (fc == NULL || fc->ndim != 2 || fc->shape[0] != TL_IMAGENET_NUM_CLASSES)
		return NULL;
	*n = TL_IMAGENET_NUM_CLASSES;
	return tl_imagenet_classes;
}

/* Parse a checkpoint, validate it and store it as a new model. */
static int64
import_bytes(const char *name, const uint8 *data, size_t len, const char *const *classes,
			 int n_classes, const char *file)
{
	tl_state_dict *sd = NULL;
	tl_ckpt_format fmt;
	tl_error	err;

	if (tl_checkpoint_read(data, len, NULL, &sd, &fmt, &err) != TL_OK)
	{
		if (fmt == TL_CKPT_UNKNOWN)
			tl_pg_raise(&err, "could not read weights");
		tl_pg_raise(&err, psprintf("could not read %s checkpoint", tl_ckpt_format_name(fmt)));
	}
	tl_store_attach_sd(CurrentMemoryContext, sd);
	if (classes == NULL && fmt == TL_CKPT_SAFETENSORS)
		classes = classes_from_metadata(data, len, sd, &n_classes);
	if (classes == NULL)
		classes = imagenet_classes_for(sd, &n_classes);
	return tl_store_save(name, sd, classes, n_classes, 224, import_source(fmt, len, file), NULL);
}

static char *
name_arg(FunctionCallInfo fcinfo)
{
	char	   *name;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("model name must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (name[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model name must not be empty")));
	return name;
}

/* tl_import_weights(name text, data bytea, classes text[] DEFAULT NULL) RETURNS bigint */
Datum
tl_import_weights(PG_FUNCTION_ARGS)
{
	char	   *name = name_arg(fcinfo);
	bytea	   *data;
	const char *const *classes;
	int			n_classes;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("weights must not be null")));
	data = PG_GETARG_BYTEA_PP(1);
	classes = classes_arg(fcinfo, 2, &n_classes);
	PG_RETURN_INT64(import_bytes(name, (const uint8 *) VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data),
								 classes, n_classes, NULL));
}

/* tl_import_weights_file(name text, path text, classes text[] DEFAULT NULL) RETURNS bigint */
Datum
tl_import_weights_file(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *path;
	const char *const *classes;
	int			n_classes;
	FILE	   *fp;
	struct stat st;
	uint8	   *buf;
	int64		id;

	/* Like COPY FROM a file: the server's files are not every role's to read. */
	if (!has_privs_of_role(GetUserId(), ROLE_PG_READ_SERVER_FILES))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to import weights from a server file"),
				 errdetail("Only roles with privileges of the \"pg_read_server_files\" role may read files on the server."),
				 errhint("Send the file's contents from the client with tl_import_weights(name, data).")));
	name = name_arg(fcinfo);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("path must not be null")));
	path = text_to_cstring(PG_GETARG_TEXT_PP(1));
	classes = classes_arg(fcinfo, 2, &n_classes);

	fp = AllocateFile(path, PG_BINARY_R);
	if (!fp)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\" for reading: %m", path)));
	if (fstat(fileno(fp), &st) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not stat file \"%s\": %m", path)));
	if (!S_ISREG(st.st_mode))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a regular file", path)));
	/* Twice the tensor limit leaves room for f64 files and container overhead. */
	if ((int64) st.st_size > 2 * tl_ckpt_default_limits.max_total_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("file \"%s\" is too large (%lld bytes)", path, (long long) st.st_size)));
	buf = palloc_extended(st.st_size > 0 ? (Size) st.st_size : 1, MCXT_ALLOC_HUGE);
	if (st.st_size > 0 && fread(buf, 1, (size_t) st.st_size, fp) != (size_t) st.st_size)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read file \"%s\": %m", path)));
	FreeFile(fp);

	id = import_bytes(name, buf, (size_t) st.st_size, classes, n_classes, path);
	pfree(buf);
	PG_RETURN_INT64(id);
}

/* tl_export(model text, format text DEFAULT 'safetensors') RETURNS bytea */
Datum
tl_export(PG_FUNCTION_ARGS)
{
	char	   *model = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *format = text_to_cstring(PG_GETARG_TEXT_PP(1));
	TlModelInfo info;
	tl_state_dict *sd;
	uint8_t    *file = NULL;
	size_t		len = 0;
	tl_error	err;
	tl_code		rc;
	bytea	   *result;

	if (strcmp(format, "safetensors") != 0 && strcmp(format, "pth") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown weights format \"%s\"", format),
				 errhint("Use 'safetensors' or 'pth' (a PyTorch zip checkpoint).")));
	sd = tl_store_load(tl_store_lookup(model, false), &info);

	if (strcmp(format, "pth") == 0)
		rc = tl_torch_zip_write(sd, &file, &len, &err);
	else
	{
		/* Class names travel with the weights as JSON in the metadata. */
		StringInfoData classes;
		const char *keys[3] = {"format", "transfer.model", "transfer.classes"};
		const char *values[3];

		initStringInfo(&classes);
		appendStringInfoChar(&classes, '[');
		for (int i = 0; i < info.num_classes; i++)
		{
			if (i)
				appendStringInfoString(&classes, ", ");
			escape_json(&classes, info.classes[i]);
		}
		appendStringInfoChar(&classes, ']');
		values[0] = "pt";
		values[1] = info.name;
		values[2] = classes.data;
		rc = tl_safetensors_write(sd, keys, values, 3, &file, &len, &err);
	}
	if (rc != TL_OK)
		tl_pg_raise(&err, psprintf("could not export model \"%s\"", model));
	if (len > MaxAllocSize - VARHDRSZ)
	{
		free(file);
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("exported model \"%s\" would exceed the 1 GB limit of bytea", model)));
	}
	result = palloc_extended(VARHDRSZ + len, MCXT_ALLOC_NO_OOM);
	if (!result)
	{
		free(file);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory exporting model \"%s\"", model)));
	}
	SET_VARSIZE(result, VARHDRSZ + len);
	memcpy(VARDATA(result), file, len);
	free(file);
	PG_RETURN_BYTEA_P(result);
}
