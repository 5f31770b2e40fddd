/*
 * model_store.c - models in tables (see model_store.h).
 *
 * All access goes through SPI with the caller's privileges.  Queries name
 * the extension's schema and pg_catalog's operators explicitly, so a hostile
 * search_path can't redirect them whichever SQL function calls in here.
 */
#include "postgres.h"

#include "access/detoast.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "model_store.h"
#include "pg_error.h"
#include "checkpoint/tl_checkpoint.h"
#include "nn/tl_resnet.h"

/* The extension's schema, quoted, allocated in the current context. */
static char *
store_schema(void)
{
	int			rc;
	char	   *nsp;

	rc = SPI_execute("SELECT n.nspname FROM pg_catalog.pg_extension e "
					 "JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace "
					 "WHERE e.extname OPERATOR(pg_catalog.=) 'transfer'", true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension \"transfer\" is not installed in this database")));
	nsp = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	return pstrdup(quote_identifier(nsp));
}

static void
store_connect(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

static void
free_sd_callback(void *arg)
{
	tl_sd_free((tl_state_dict *) arg);
}

void
tl_store_attach_sd(MemoryContext cxt, tl_state_dict *sd)
{
	MemoryContextCallback *cb;

	PG_TRY();
	{
		cb = MemoryContextAlloc(cxt, sizeof(*cb));
	}
	PG_CATCH();
	{
		tl_sd_free(sd);
		PG_RE_THROW();
	}
	PG_END_TRY();
	cb->func = free_sd_callback;
	cb->arg = sd;
	MemoryContextRegisterResetCallback(cxt, cb);
}

int64
tl_store_lookup(const char *name, bool missing_ok)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	int64		id = 0;
	bool		isnull;
	int			rc;

	store_connect();
	args[0] = CStringGetTextDatum(name);
	rc = SPI_execute_with_args(psprintf("SELECT id FROM %s.tl_stored_models WHERE name OPERATOR(pg_catalog.=) $1",
										store_schema()),
							   1, argtypes, args, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "looking up model \"%s\" failed: %s", name, SPI_result_code_string(rc));
	if (SPI_processed == 1)
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	if (id == 0 && !missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" does not exist", name),
				 errhint(TL_HINT_SEE_MODELS " Import one with tl_import_weights.")));
	return id;
}

/* Fill info from the model row; strings go to cxt.  Caller is connected to SPI. */
static void
read_info(int64 model_id, const char *schema, TlModelInfo *info, MemoryContext cxt)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(model_id)};
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	ArrayType  *classes;
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	int			rc;

	rc = SPI_execute_with_args(psprintf("SELECT name, arch, base_width, num_classes, classes, image_size "
										"FROM %s.tl_stored_models WHERE id OPERATOR(pg_catalog.=) $1",
										schema),
							   1, argtypes, args, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "reading model %lld failed: %s", (long long) model_id, SPI_result_code_string(rc));
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model with id %lld does not exist", (long long) model_id)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	info->id = model_id;
	info->name = MemoryContextStrdup(cxt, SPI_getvalue(tup, desc, 1));
	info->arch = MemoryContextStrdup(cxt, SPI_getvalue(tup, desc, 2));
	info->base_width = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
	info->num_classes = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
	classes = DatumGetArrayTypeP(SPI_getbinval(tup, desc, 5, &isnull));
	info->image_size = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
	deconstruct_array(classes, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &nelems);
	if (nelems != info->num_classes)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("model \"%s\" has %d class names for %d classes", info->name, nelems, info->num_classes)));
	info->classes = MemoryContextAlloc(cxt, sizeof(char *) * nelems);
	for (int i = 0; i < nelems; i++)
		info->classes[i] = MemoryContextStrdup(cxt, TextDatumGetCString(elems[i]));
}

void
tl_store_info(int64 model_id, TlModelInfo *info)
{
	MemoryContext caller = CurrentMemoryContext;

	store_connect();
	read_info(model_id, store_schema(), info, caller);
	SPI_finish();
}

/*
 * Run the query for a model's tensors in state_dict order (the caller is
 * connected to SPI); SPI_tuptable holds key, shape, data.  Prepared without
 * CURSOR_OPT_PARALLEL_OK: a parallel plan (which SPI_execute_with_args
 * allows, e.g. in a session that makes parallel plans cheap) would start
 * workers, tens of milliseconds, to read about a hundred rows.
 */
static void
query_tensors(int64 model_id, const char *schema, const TlModelInfo *info)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(model_id)};
	SPIPlanPtr	plan;
	int			rc;

	plan = SPI_prepare(psprintf("SELECT key, shape, data FROM %s.tl_model_tensors "
								"WHERE model_id OPERATOR(pg_catalog.=) $1 ORDER BY position",
								schema),
					   1, argtypes);
	if (plan == NULL)
		elog(ERROR, "preparing the tensor query failed: %s", SPI_result_code_string(SPI_result));
	rc = SPI_execute_plan(plan, args, NULL, true, 0);
	SPI_freeplan(plan);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "reading the tensors of model \"%s\" failed: %s", info->name, SPI_result_code_string(rc));
}

/*
 * Row r of query_tensors: its key (palloc'd), shape and element count, with
 * the data's length checked against the shape before anything is detoasted.
 * Returns the data Datum, possibly still toasted.
 */
static Datum
tensor_row(uint64 r, const TlModelInfo *info, char **key, int *ndim, int64_t *shape, int64 *numel)
{
	HeapTuple	tup = SPI_tuptable->vals[r];
	TupleDesc	desc = SPI_tuptable->tupdesc;
	bool		isnull;
	ArrayType  *shape_arr;
	Datum		data;
	Datum	   *dims;
	bool	   *dnulls;
	int64		nbytes;

	*key = SPI_getvalue(tup, desc, 1);
	shape_arr = DatumGetArrayTypeP(SPI_getbinval(tup, desc, 2, &isnull));
	data = SPI_getbinval(tup, desc, 3, &isnull);
	deconstruct_array(shape_arr, INT4OID, 4, true, TYPALIGN_INT, &dims, &dnulls, ndim);
	if (*ndim > TL_MAX_DIMS)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("tensor \"%s\" of model \"%s\" has %d dimensions", *key, info->name, *ndim)));
	for (int d = 0; d < *ndim; d++)
		shape[d] = dnulls[d] ? -1 : DatumGetInt32(dims[d]);
	*numel = tl_shape_numel(*ndim, shape, (int64) (MaxAllocHugeSize / sizeof(float)));
	nbytes = (int64) toast_raw_datum_size(data) - VARHDRSZ;
	if (*numel < 0 || nbytes != *numel * (int64) sizeof(float))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("tensor \"%s\" of model \"%s\" has %lld bytes of data for its shape",
						*key, info->name, (long long) nbytes)));
	return data;
}

/* Stored fp32 little-endian bytes to native floats. */
static void
copy_floats(float *dst, const char *src, int64 numel)
{
#ifdef WORDS_BIGENDIAN
	for (int64 i = 0; i < numel; i++)
	{
		const uint8 *p = (const uint8 *) src + 4 * i;
		uint32		b = p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32) p[3] << 24);

		memcpy(&dst[i], &b, 4);
	}
#else
	memcpy(dst, src, (size_t) numel * sizeof(float));
#endif
}

/*
 * Read a model's row into info (strings in info_cxt) and its tensors into a
 * state dict tied to sd_cxt, checking each tensor's byte count against its
 * shape but not the dict against the network.
 */
static tl_state_dict *
read_state_dict(int64 model_id, TlModelInfo *info, MemoryContext info_cxt, MemoryContext sd_cxt)
{
	char	   *schema;
	tl_state_dict *sd;
	tl_error	err;

	/* Owned by sd_cxt from the start, so every error path frees it. */
	sd = tl_sd_new(&err);
	if (!sd)
		tl_pg_raise(&err, NULL);
	tl_store_attach_sd(sd_cxt, sd);

	store_connect();
	schema = store_schema();
	read_info(model_id, schema, info, info_cxt);
	query_tensors(model_id, schema, info);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		char	   *key;
		int			ndim;
		int64_t		shape[TL_MAX_DIMS];
		int64		numel;
		Datum		raw = tensor_row(r, info, &key, &ndim, shape, &numel);
		bytea	   *data = DatumGetByteaPP(raw);
		float	   *buf;

		buf = malloc((size_t) (numel ? numel : 1) * sizeof(float));
		if (!buf)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory loading model \"%s\"", info->name)));
		copy_floats(buf, VARDATA_ANY(data), numel);
		if (tl_sd_add_owned(sd, key, ndim, shape, buf, &err) != TL_OK)
			tl_pg_raise(&err, psprintf("model \"%s\"", info->name));
		if ((Pointer) data != DatumGetPointer(raw))
			pfree(data);		/* the detoasted copy: weights can be megabytes each */
	}
	SPI_finish();
	return sd;
}

/*
 * Read a model's row into info (strings in info_cxt) and its tensors' keys
 * and shapes into *view (palloc'd in cxt; every data pointer NULL), with
 * each tensor's byte count checked against its shape but nothing
 * detoasted.  Returns connected to SPI, SPI_tuptable holding the tensor
 * rows in view's order: the caller copies their data (copy_tensor_into),
 * then calls SPI_finish.  (model_id, key) is the table's primary key, so
 * keys are unique.
 */
static void
read_tensor_shapes(int64 model_id, TlModelInfo *info, MemoryContext info_cxt,
				   MemoryContext cxt, tl_state_dict *view)
{
	char	   *schema;

	store_connect();
	schema = store_schema();
	read_info(model_id, schema, info, info_cxt);
	query_tensors(model_id, schema, info);
	if (SPI_processed > (uint64) (MaxAllocSize / sizeof(tl_tensor)))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("model \"%s\" has too many tensors", info->name)));
	view->n = 0;
	view->cap = (int) SPI_processed;
	view->tensors = MemoryContextAllocZero(cxt, sizeof(tl_tensor) * Max(view->cap, 1));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		tl_tensor  *t = &view->tensors[view->n];
		char	   *key;
		int64		numel;

		(void) tensor_row(r, info, &key, &t->ndim, t->shape, &numel);
		t->name = MemoryContextStrdup(cxt, key);
		t->data = NULL;
		view->n++;
	}
}

/*
 * Copy row r's tensor (checked: key and shape match net) into net's
 * parameter of that key, detoasting it into a temporary copy freed right
 * away, so the next tensor's copy reuses the same memory.  Keys net has no
 * parameter for (num_batches_tracked) are skipped.
 */
static void
copy_tensor_into(tl_resnet *net, uint64 r, const char *key, bool skip_fc)
{
	bool		isnull;
	Datum		raw = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 3, &isnull);
	int64_t		numel;
	float	   *dst;
	bytea	   *data;

	if (skip_fc && strncmp(key, "fc.", 3) == 0)
		return;
	dst = tl_resnet_param(net, key, &numel);
	if (dst == NULL || isnull)
		return;
	data = DatumGetByteaPP(raw);
	copy_floats(dst, VARDATA_ANY(data), numel);
	if ((Pointer) data != DatumGetPointer(raw))
		pfree(data);
}

/*
 * Raise the error that tl_resnet_check_state_dict or the row's network
 * description gives for sd, if any; *cfg gets the network the tensors make.
 */
static void
check_state_dict(const tl_state_dict *sd, const TlModelInfo *info, tl_resnet_config *cfg)
{
	tl_error	err;

	if (tl_resnet_check_state_dict(sd, cfg, &err) != TL_OK)
		tl_pg_raise(&err, psprintf("stored model \"%s\"", info->name));
	if (cfg->num_classes != info->num_classes || cfg->base_width != info->base_width)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("stored model \"%s\" says %d classes and base width %d, its tensors have %d and %d",
						info->name, info->num_classes, info->base_width, cfg->num_classes, cfg->base_width)));
}

tl_state_dict *
tl_store_load(int64 model_id, TlModelInfo *info)
{
	MemoryContext caller = CurrentMemoryContext;
	TlModelInfo local;
	tl_state_dict *sd;
	tl_resnet_config cfg;

	if (!info)
		info = &local;
	sd = read_state_dict(model_id, info, caller, caller);
	check_state_dict(sd, info, &cfg);
	return sd;
}

/*
 * tl_store_load's checks without reading the weights; then, if net is given,
 * each tensor copied into it as tl_resnet_load_state_dict(net, flags) would.
 */
static void
check_and_copy(int64 model_id, TlModelInfo *info, tl_resnet *net, unsigned flags)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext view_cxt;
	TlModelInfo local;
	tl_state_dict view;
	tl_resnet_config cfg;
	tl_error	err;

	if (!info)
		info = &local;
	view_cxt = AllocSetContextCreate(caller, "transfer model load", ALLOCSET_DEFAULT_SIZES);
	read_tensor_shapes(model_id, info, caller, view_cxt, &view);
	check_state_dict(&view, info, &cfg);
	if (net != NULL)
	{
		if (tl_resnet_validate_state_dict(net, &view, flags, &err) != TL_OK)
			tl_pg_raise(&err, psprintf("stored model \"%s\"", info->name));
		for (int r = 0; r < view.n; r++)
			copy_tensor_into(net, (uint64) r, view.tensors[r].name, (flags & TL_LOAD_SKIP_FC) != 0);
	}
	SPI_finish();
	MemoryContextDelete(view_cxt);
}

void
tl_store_check(int64 model_id, TlModelInfo *info)
{
	check_and_copy(model_id, info, NULL, 0);
}

void
tl_store_load_into(int64 model_id, tl_resnet *net, unsigned flags, TlModelInfo *info)
{
	check_and_copy(model_id, info, net, flags);
}

tl_resnet *
tl_store_load_network(int64 model_id, TlModelInfo *info)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext view_cxt;
	TlModelInfo local;
	tl_state_dict view;
	const tl_tensor *conv1;
	const tl_tensor *fc;
	tl_resnet_config cfg;
	tl_resnet  *net;
	tl_error	err;

	if (!info)
		info = &local;
	/* The keys and shapes live only until the network is loaded; info's strings are the caller's. */
	view_cxt = AllocSetContextCreate(caller, "transfer model load", ALLOCSET_DEFAULT_SIZES);
	read_tensor_shapes(model_id, info, caller, view_cxt, &view);

	/*
	 * The network the row describes, built once: the keys and shapes are
	 * checked against it as strictly as tl_resnet_check_state_dict would,
	 * which would build (and zero) a second, throwaway network of the same
	 * size.  The size comes from the row: conv1 and fc must agree with it
	 * first, as the full check would require; if they don't, the full check
	 * names the problem.  Then each tensor is detoasted and copied straight
	 * into the network, one at a time: the weights are copied once on their
	 * way from the table, and the temporary copies reuse the same memory
	 * (fresh memory is most of a first call's time).
	 */
	conv1 = tl_sd_find(&view, "conv1.weight");
	fc = tl_sd_find(&view, "fc.weight");
	if (conv1 == NULL || conv1->ndim != 4 || conv1->shape[0] != info->base_width ||
		fc == NULL || fc->ndim != 2 || fc->shape[0] != info->num_classes)
	{
		check_state_dict(&view, info, &cfg);
		ereport(ERROR,			/* not reached: the check raises */
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("stored model \"%s\" does not match its tensors", info->name)));
	}
	cfg.num_classes = info->num_classes;
	cfg.base_width = info->base_width;
	tl_error_clear(&err);
	net = tl_resnet_new(&cfg, &err);
	if (net == NULL)
		tl_pg_raise(&err, psprintf("stored model \"%s\"", info->name));
	if (tl_resnet_validate_state_dict(net, &view, 0, &err) != TL_OK)
	{
		tl_resnet_free(net);
		tl_pg_raise(&err, psprintf("stored model \"%s\"", info->name));
	}
	PG_TRY();
	{
		for (int r = 0; r < view.n; r++)
			copy_tensor_into(net, (uint64) r, view.tensors[r].name, false);
	}
	PG_CATCH();
	{
		tl_resnet_free(net);
		PG_RE_THROW();
	}
	PG_END_TRY();
	SPI_finish();
	MemoryContextDelete(view_cxt);
	return net;
}

static Datum
int4_array(const int64_t *vals, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * (n ? n : 1));

	for (int i = 0; i < n; i++)
		elems[i] = Int32GetDatum((int32) vals[i]);
	return PointerGetDatum(construct_array(elems, n, INT4OID, 4, true, TYPALIGN_INT));
}

int64
tl_store_save(const char *name, const tl_state_dict *sd,
			  const char *const *classes, int n_classes, int image_size,
			  Jsonb *source, Jsonb *metrics)
{
	tl_resnet_config cfg;
	tl_error	err;
	char	   *schema;
	Datum	   *class_datums;
	Oid			model_types[7] = {TEXTOID, INT4OID, INT4OID, TEXTARRAYOID, INT4OID, JSONBOID, JSONBOID};
	Datum		model_args[7];
	char		model_nulls[7] = "       ";
	Oid			tensor_types[5] = {INT8OID, TEXTOID, INT4OID, INT4ARRAYOID, BYTEAOID};
	SPIPlanPtr	plan;
	int64		id;
	int			position = 0;
	bool		isnull;
	int			rc;

	if (name == NULL || name[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model name must not be empty")));
	if (image_size <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("image size must be positive")));
	if (tl_resnet_check_state_dict(sd, &cfg, &err) != TL_OK)
		tl_pg_raise(&err, "weights do not fit torchvision's resnet18");
	if (classes && n_classes != cfg.num_classes)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%d class names given for a model with %d outputs", n_classes, cfg.num_classes),
				 errdetail("fc.weight has shape [%d, %d].", cfg.num_classes, 8 * cfg.base_width)));
	class_datums = palloc(sizeof(Datum) * cfg.num_classes);
	for (int i = 0; i < cfg.num_classes; i++)
	{
		if (classes && (classes[i] == NULL || classes[i][0] == '\0'))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("class name %d is null or empty", i + 1)));
		if (classes)
			pg_verifymbstr(classes[i], strlen(classes[i]), false);
		class_datums[i] = CStringGetTextDatum(classes ? classes[i] : psprintf("class_%d", i));
	}

	store_connect();
	schema = store_schema();

	/* A friendlier error than the unique index's; the index still decides under concurrency. */
	{
		Oid			t[1] = {TEXTOID};
		Datum		a[1] = {CStringGetTextDatum(name)};

		rc = SPI_execute_with_args(psprintf("SELECT 1 FROM %s.tl_stored_models WHERE name OPERATOR(pg_catalog.=) $1",
											schema), 1, t, a, NULL, false, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "looking up model \"%s\" failed: %s", name, SPI_result_code_string(rc));
		if (SPI_processed > 0)
			tl_pg_raise_model_exists(name);
	}

	model_args[0] = CStringGetTextDatum(name);
	model_args[1] = Int32GetDatum(cfg.base_width);
	model_args[2] = Int32GetDatum(cfg.num_classes);
	model_args[3] = PointerGetDatum(construct_array(class_datums, cfg.num_classes, TEXTOID, -1, false, TYPALIGN_INT));
	model_args[4] = Int32GetDatum(image_size);
	model_args[5] = source ? JsonbPGetDatum(source) : DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
	model_args[6] = metrics ? JsonbPGetDatum(metrics) : (Datum) 0;
	if (!metrics)
		model_nulls[6] = 'n';
	rc = SPI_execute_with_args(psprintf("INSERT INTO %s.tl_stored_models "
										"(name, base_width, num_classes, classes, image_size, source, metrics) "
										"VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id", schema),
							   7, model_types, model_args, model_nulls, false, 1);
	if (rc != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "inserting model \"%s\" failed: %s", name, SPI_result_code_string(rc));
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	plan = SPI_prepare(psprintf("INSERT INTO %s.tl_model_tensors (model_id, key, position, shape, data) "
								"VALUES ($1, $2, $3, $4, $5)", schema), 5, tensor_types);
	if (!plan)
		elog(ERROR, "preparing the tensor insert failed: %s", SPI_result_code_string(SPI_result));
	for (int i = 0; i < sd->n; i++)
	{
		const tl_tensor *t = &sd->tensors[i];
		int64		nbytes = tl_tensor_numel(t) * (int64) sizeof(float);
		bytea	   *data;
		Datum		targs[5];

		/* The core keeps no BatchNorm step counters; exporters write zeros. */
		if (tl_ckpt_is_batch_counter(t->name))
			continue;
		/* Keys come from files: they must be valid text in this database's encoding. */
		pg_verifymbstr(t->name, strlen(t->name), false);
		if (nbytes > (int64) (MaxAllocSize - VARHDRSZ))
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("tensor \"%s\" is too large to store", t->name)));
		data = palloc(VARHDRSZ + nbytes);
		SET_VARSIZE(data, VARHDRSZ + nbytes);
#ifdef WORDS_BIGENDIAN
		for (int64 j = 0; j < nbytes / 4; j++)
		{
			uint32		b;
			uint8	   *p = (uint8 *) VARDATA(data) + 4 * j;

			memcpy(&b, &t->data[j], 4);
			p[0] = b, p[1] = b >> 8, p[2] = b >> 16, p[3] = b >> 24;
		}
#else
		memcpy(VARDATA(data), t->data, nbytes);
#endif
		targs[0] = Int64GetDatum(id);
		targs[1] = CStringGetTextDatum(t->name);
		targs[2] = Int32GetDatum(position++);
		targs[3] = int4_array(t->shape, t->ndim);
		targs[4] = PointerGetDatum(data);
		rc = SPI_execute_plan(plan, targs, NULL, false, 0);
		if (rc != SPI_OK_INSERT)
			elog(ERROR, "inserting tensor \"%s\" failed: %s", t->name, SPI_result_code_string(rc));
		pfree(data);
	}
	SPI_finish();
	return id;
}

void
tl_store_set_metrics(int64 model_id, Jsonb *metrics)
{
	Oid			types[2] = {INT8OID, JSONBOID};
	Datum		args[2] = {Int64GetDatum(model_id), metrics ? JsonbPGetDatum(metrics) : (Datum) 0};
	char		nulls[2] = {' ', metrics ? ' ' : 'n'};
	int			rc;

	store_connect();
	rc = SPI_execute_with_args(psprintf("UPDATE %s.tl_stored_models SET metrics = $2 "
										"WHERE id OPERATOR(pg_catalog.=) $1", store_schema()),
							   2, types, args, nulls, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "updating the metrics of model %lld failed: %s", (long long) model_id,
			 SPI_result_code_string(rc));
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model with id %lld does not exist", (long long) model_id)));
	SPI_finish();
}
