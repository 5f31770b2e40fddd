/*
 * predict.c - SQL functions that classify images with stored models:
 * tl_predict, tl_try_predict, tl_predict_proba, tl_predict_topk,
 * tl_evaluate and tl_model_cache.
 *
 * Every function is read-only (no xid, no temporary objects), so each runs
 * in parallel workers and on a hot standby.  Models come from the
 * per-process cache (model_cache.c); the per-call work is palloc'd in the
 * executor's per-call memory or freed before returning.
 */
#include "postgres.h"

#include <math.h>

#include "access/parallel.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"

#include "image_datum.h"
#include "model_cache.h"
#include "predict.h"
#include "pg_error.h"
#include "predict_threads.h"
#include "image/tl_image.h"
#include "source.h"
#include "transfer_pg.h"

PG_FUNCTION_INFO_V1(tl_predict);
PG_FUNCTION_INFO_V1(tl_try_predict);
PG_FUNCTION_INFO_V1(tl_predict_proba);
PG_FUNCTION_INFO_V1(tl_predict_topk);
PG_FUNCTION_INFO_V1(tl_evaluate);
PG_FUNCTION_INFO_V1(tl_model_cache);

/*
 * fn_extra of the functions called once per row: the extension's schema
 * (the namespace of the function being called) and the memo of the last
 * model lookup (model_cache.h), which spares the rows after the first of a
 * statement the lookup queries.
 */
typedef struct call_state
{
	Oid			schema;
	tl_model_memo *memo;
} call_state;

static call_state *
get_call_state(FunctionCallInfo fcinfo)
{
	call_state *cs = (call_state *) fcinfo->flinfo->fn_extra;

	if (cs == NULL)
	{
		cs = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, sizeof(call_state));
		cs->schema = get_func_namespace(fcinfo->flinfo->fn_oid);
		cs->memo = tl_model_memo_create(fcinfo->flinfo->fn_mcxt);
		fcinfo->flinfo->fn_extra = cs;
	}
	return cs;
}

static Oid
extension_schema(FunctionCallInfo fcinfo)
{
	return get_call_state(fcinfo)->schema;
}

/* The optional model argument at position argno, NULL if absent. */
static char *
model_arg(FunctionCallInfo fcinfo, int argno)
{
	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return NULL;
	return text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

/* The model of this row's call: argument argno, absent or NULL for the default. */
static tl_cached_model *
call_model(FunctionCallInfo fcinfo, int argno)
{
	call_state *cs = get_call_state(fcinfo);

	return tl_model_cache_get_memo(model_arg(fcinfo, argno), cs->schema, cs->memo);
}

/* Errors that mean "this image can't be used", as opposed to our own failures. */
static bool
is_image_error(tl_code code)
{
	return code == TL_E_CORRUPT || code == TL_E_UNSUPPORTED ||
		code == TL_E_LIMIT || code == TL_E_INVALID;
}

#define PREDICT_HINT "Use tl_try_predict to skip images that can't be decoded (it returns NULL for them)."

/*
 * The eval transform of one image with its rows split over the compute
 * threads (the decode before it is serial): any split gives the same floats
 * (tl_transform_eval_rows).  Each part's result goes to its own slot, since
 * the pool's threads must not raise errors.
 */
typedef struct transform_job
{
	const tl_image *img;
	int			resize;
	int			crop;
	float	   *out;
	tl_code    *rc;				/* per part */
	tl_error   *err;			/* per part */
} transform_job;

static void
transform_part(void *arg, int64_t begin, int64_t end, int part)
{
	transform_job *j = arg;

	j->rc[part] = tl_transform_eval_rows(j->img, j->resize, j->crop, (int) begin, (int) end,
										 j->out, &j->err[part]);
}

static tl_code
transform_parallel(const tl_image *img, int resize, int crop, float *out, tl_error *err)
{
	int			threads = tl_get_num_threads();
	transform_job j = {img, resize, crop, out};
	int			parts;
	tl_code		rc;

	if (threads <= 1 || crop < 32)
		return tl_transform_eval(img, resize, crop, out, err);
	j.rc = palloc(sizeof(tl_code) * threads);
	j.err = palloc(sizeof(tl_error) * threads);
	parts = tl_parallel_for(crop, 16, transform_part, &j);
	rc = TL_OK;
	for (int i = 0; i < parts && rc == TL_OK; i++)
		if ((rc = j.rc[i]) != TL_OK)
			*err = j.err[i];
	pfree(j.rc);
	pfree(j.err);
	return rc;
}

/*
 * Decode img and apply the model's eval transform into m->input.  Returns
 * false (after a DEBUG1 message) for an unusable image when skip_bad_image,
 * otherwise raises the image core's error with bad_image_hint.
 */
static bool
prepare_input(tl_cached_model *m, const bytea *img, bool skip_bad_image,
			  const char *bad_image_hint)
{
	tl_image	image = {0};
	tl_error	err;
	tl_code		rc;

	tl_error_clear(&err);
	rc = tl_image_decode((const uint8_t *) VARDATA_ANY(img), VARSIZE_ANY_EXHDR(img),
						 (int64_t) tl_guc_max_image_pixels, &image, &err);
	if (rc == TL_OK)
	{
		rc = transform_parallel(&image, m->resize, m->image_size, m->input, &err);
		tl_image_free(&image);
	}
	if (rc == TL_OK)
		return true;
	if (skip_bad_image && is_image_error(rc))
	{
		ereport(DEBUG1,
				(errmsg_internal("tl_try_predict: skipped an image: %s", err.message)));
		return false;
	}
	if (is_image_error(rc))
		ereport(ERROR,
				(errcode(tl_pg_sqlstate(err.code)),
				 errmsg("could not decode image: %s", err.message),
				 errhint("%s", bad_image_hint)));
	tl_pg_raise(&err, "could not decode image");
}

/*
 * Forward pass + softmax into m->probs.  Callers set transfer.predict_threads
 * threads (tl_predict_use_threads) before prepare_input, whose transform
 * runs on them too.
 */
static void
run_model(tl_cached_model *m)
{
	tl_error	err;

	tl_error_clear(&err);
	if (tl_resnet_predict(m->net, m->input, 1, m->probs, &err) != TL_OK)
		tl_pg_raise(&err, psprintf("predicting with model \"%s\"", m->name));
	/* NaN or infinite weights give NaN scores: say so rather than pick a class */
	for (int i = 0; i < m->num_classes; i++)
		if (!isfinite(m->probs[i]))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("model \"%s\" produced a non-finite score for class \"%s\"",
							m->name, m->classes[i]),
					 errhint("Its weights contain NaN or infinite values, or values large enough to overflow; import or train it again.")));
}

/* torch.argmax: the first index of the largest value. */
static int
argmax(const float *v, int n)
{
	int			best = 0;

	for (int i = 1; i < n; i++)
		if (v[i] > v[best])
			best = i;
	return best;
}

/*
 * A probability as float8: the decimal number float4's shortest exact output
 * shows (0.43492225, not 0.4349222481250763), so tl_predict_topk and
 * tl_predict_proba print and compare as the same values.
 */
static double
prob_value(float p)
{
	char	   *s = DatumGetCString(DirectFunctionCall1(float4out, Float4GetDatum(p)));
	double		v = strtod(s, NULL);

	pfree(s);
	return v;
}

static void
append_prob(StringInfo buf, float p)
{
	char	   *s = DatumGetCString(DirectFunctionCall1(float4out, Float4GetDatum(p)));

	appendStringInfoString(buf, s);
	pfree(s);
}

static text *
predict_common(FunctionCallInfo fcinfo, bool skip_bad_image)
{
	bytea	   *img = PG_GETARG_BYTEA_PP(0);
	tl_cached_model *m;
	text	   *result;

	m = call_model(fcinfo, 1);
	tl_predict_use_threads();
	if (prepare_input(m, img, skip_bad_image, PREDICT_HINT))
	{
		run_model(m);
		result = cstring_to_text(m->classes[argmax(m->probs, m->num_classes)]);
	}
	else
		result = NULL;
	PG_FREE_IF_COPY(img, 0);
	return result;
}

/* tl_predict(img bytea[, model text]) returns text */
Datum
tl_predict(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(predict_common(fcinfo, false));
}

/* tl_try_predict(img bytea[, model text]) returns text: NULL for an unusable image */
Datum
tl_try_predict(PG_FUNCTION_ARGS)
{
	text	   *result = predict_common(fcinfo, true);

	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(result);
}

/* tl_predict_proba(img bytea[, model text]) returns jsonb {class: probability} */
Datum
tl_predict_proba(PG_FUNCTION_ARGS)
{
	bytea	   *img = PG_GETARG_BYTEA_PP(0);
	tl_cached_model *m;
	StringInfoData buf;
	Datum		result;

	m = call_model(fcinfo, 1);
	tl_predict_use_threads();
	prepare_input(m, img, false, PREDICT_HINT);
	run_model(m);

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (int i = 0; i < m->num_classes; i++)
	{
		if (i > 0)
			appendStringInfoString(&buf, ", ");
		escape_json(&buf, m->classes[i]);
		appendStringInfoString(&buf, ": ");
		append_prob(&buf, m->probs[i]);
	}
	appendStringInfoChar(&buf, '}');
	result = DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
	pfree(buf.data);
	PG_FREE_IF_COPY(img, 0);
	PG_RETURN_DATUM(result);
}

/*
 * tl_predict_topk(img bytea, k int[, model text])
 *   returns table(rank int, class text, probability float8)
 *
 * Value-per-call: the first call computes the k rows into the SRF's
 * multi-call context, which the executor deletes when the set is done, so
 * per-query memory stays flat over any number of input rows.
 * (InitMaterializedSRF looked the result type up in per-query memory on
 * every call: about 500 bytes per input row, freed only at query end.)
 */
typedef struct topk_result
{
	int			n;
	Datum	   *classes;		/* text */
	double	   *probs;
} topk_result;

static topk_result *
topk_compute(FunctionCallInfo fcinfo)
{
	bytea	   *img = PG_GETARG_BYTEA_PP(0);
	int32		k = PG_GETARG_INT32(1);
	tl_cached_model *m;
	topk_result *res;
	int		   *order;

	if (k < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("k must be at least 1, not %d", k)));
	/* not extension_schema(): fn_extra holds the SRF's FuncCallContext */
	m = tl_model_cache_get(model_arg(fcinfo, 2), get_func_namespace(fcinfo->flinfo->fn_oid));
	tl_predict_use_threads();
	prepare_input(m, img, false, PREDICT_HINT);
	run_model(m);

	/* Partial selection sort: k is small; ties keep the lower class index. */
	res = palloc(sizeof(topk_result));
	res->n = Min(k, m->num_classes);
	order = palloc(sizeof(int) * m->num_classes);
	for (int i = 0; i < m->num_classes; i++)
		order[i] = i;
	for (int r = 0; r < res->n; r++)
	{
		int			best = r;

		for (int j = r + 1; j < m->num_classes; j++)
			if (m->probs[order[j]] > m->probs[order[best]] ||
				(m->probs[order[j]] == m->probs[order[best]] && order[j] < order[best]))
				best = j;
		if (best != r)
		{
			int			t = order[r];

			order[r] = order[best];
			order[best] = t;
		}
	}
	res->classes = palloc(sizeof(Datum) * res->n);
	res->probs = palloc(sizeof(double) * res->n);
	for (int r = 0; r < res->n; r++)
	{
		res->classes[r] = CStringGetTextDatum(m->classes[order[r]]);
		res->probs[r] = prob_value(m->probs[order[r]]);
	}
	pfree(order);
	return res;
}

Datum
tl_predict_topk(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	topk_result *res;

	if (SRF_IS_FIRSTCALL())
	{
		MemoryContext oldcxt;
		TupleDesc	tupdesc;

		funcctx = SRF_FIRSTCALL_INIT();
		oldcxt = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		funcctx->tuple_desc = BlessTupleDesc(tupdesc);
		funcctx->user_fctx = topk_compute(fcinfo);
		MemoryContextSwitchTo(oldcxt);
	}
	funcctx = SRF_PERCALL_SETUP();
	res = (topk_result *) funcctx->user_fctx;
	if (funcctx->call_cntr < (uint64) res->n)
	{
		int			r = (int) funcctx->call_cntr;
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = Int32GetDatum(r + 1);
		values[1] = res->classes[r];
		values[2] = Float8GetDatum(res->probs[r]);
		SRF_RETURN_NEXT(funcctx,
						HeapTupleGetDatum(heap_form_tuple(funcctx->tuple_desc, values, nulls)));
	}
	SRF_RETURN_DONE(funcctx);
}

static void
append_double_or_null(StringInfo buf, double v, bool isnull)
{
	if (isnull || isnan(v) || isinf(v))
		appendStringInfoString(buf, "null");
	else
		appendStringInfoString(buf, float8out_internal(v));
}

/*
 * tl_evaluate(model text, dataset text, split text) returns jsonb:
 * accuracy, mean cross-entropy loss (as nn.CrossEntropyLoss), the confusion
 * matrix (rows: true class, columns: predicted, in the model's class order)
 * and per-class precision, recall and support.
 */
Datum
tl_evaluate(PG_FUNCTION_ARGS)
{
	char	   *model;
	char	   *dataset;
	char	   *split;
	Oid			schema;
	tl_source	src;
	bool		from_relation = false;
	bool		split_all = false;
	int64		skipped = 0;
	tl_cached_model *m;
	int			nc;
	int64	   *confusion;
	int64		images = 0,
				correct = 0;
	double		loss_sum = 0;
	MemoryContext callcxt = CurrentMemoryContext;
	SPIPlanPtr	plan;
	Portal		portal;
	StringInfoData sql;
	StringInfoData out;
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		args[2];
	Datum		result;

	/* 0.1.0's declaration is STRICT with three arguments; keep its NULL result */
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_NULL();
	model = text_to_cstring(PG_GETARG_TEXT_PP(0));
	dataset = text_to_cstring(PG_GETARG_TEXT_PP(1));
	split = text_to_cstring(PG_GETARG_TEXT_PP(2));
	schema = extension_schema(fcinfo);

	/*
	 * A table or view of the caller (train/source.c), when no tl_images
	 * dataset the caller can read has that name: image_column and
	 * label_column (defaults as tl_train's), rows of `split` when it has a
	 * split column, else all rows.
	 */
	{
		const char *image_column = PG_NARGS() > 3 && !PG_ARGISNULL(3) ? text_to_cstring(PG_GETARG_TEXT_PP(3)) : NULL;
		const char *label_column = PG_NARGS() > 4 && !PG_ARGISNULL(4) ? text_to_cstring(PG_GETARG_TEXT_PP(4)) : NULL;
		Oid			relid = tl_source_resolve_name(dataset);
		Oid			images = get_relname_relid("tl_images", schema);
		bool		in_images = false;

		if (OidIsValid(images) && pg_class_aclcheck(images, GetUserId(), ACL_SELECT) == ACLCHECK_OK)
		{
			Oid			t[1] = {TEXTOID};
			Datum		v[1] = {CStringGetTextDatum(dataset)};

			if (SPI_connect() != SPI_OK_CONNECT)
				elog(ERROR, "SPI_connect failed");
			initStringInfo(&sql);
			appendStringInfo(&sql, "SELECT 1 FROM %s.tl_images WHERE dataset OPERATOR(pg_catalog.=) $1 LIMIT 1",
							 quote_identifier(get_namespace_name(schema)));
			if (SPI_execute_with_args(sql.data, 1, t, v, NULL, true, 1) != SPI_OK_SELECT)
				elog(ERROR, "could not read tl_images");
			in_images = SPI_processed > 0;
			SPI_finish();
		}
		if (!in_images && OidIsValid(relid))
		{
			tl_source_columns(relid, image_column, label_column, NULL, &src);
			from_relation = true;
			split_all = src.split_column == NULL;
		}
		else if (image_column || label_column)
			ereport(ERROR,
					(errcode(in_images ? ERRCODE_INVALID_PARAMETER_VALUE : ERRCODE_UNDEFINED_TABLE),
					 in_images ? errmsg("image_column and label_column apply only to a table or view")
					 : errmsg("relation \"%s\" does not exist", dataset),
					 in_images ? errdetail("\"%s\" names a dataset of tl_images, which takes precedence.", dataset) : 0));
	}

	m = tl_model_cache_get(model, schema);
	tl_model_cache_pin(m);		/* the image query could call tl_predict itself */
	nc = m->num_classes;
	confusion = palloc0(sizeof(int64) * nc * nc);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	initStringInfo(&sql);
	if (from_relation)
	{
		char	   *img = pstrdup(quote_identifier(src.image_column));

		appendStringInfo(&sql, "SELECT %s, (%s)::pg_catalog.text, %s FROM %s WHERE $1 IS NOT NULL",
						 tl_source_id_expr(img), quote_identifier(src.label_column), img, src.qualified);
		if (!split_all)
			appendStringInfo(&sql, " AND (%s)::pg_catalog.text OPERATOR(pg_catalog.=) $2",
							 quote_identifier(src.split_column));
		else
			appendStringInfoString(&sql, " AND $2 IS NOT NULL");
	}
	else
		appendStringInfo(&sql,
					 "SELECT i.id, i.label, i.img FROM %s.tl_images i "
					 "WHERE i.dataset OPERATOR(pg_catalog.=) $1 AND i.split OPERATOR(pg_catalog.=) $2 "
					 "ORDER BY i.id",
					 quote_identifier(get_namespace_name(schema)));
	plan = SPI_prepare(sql.data, 2, argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	args[0] = CStringGetTextDatum(dataset);
	args[1] = CStringGetTextDatum(split);
	portal = SPI_cursor_open(NULL, plan, args, NULL, true);

	for (;;)
	{
		SPI_cursor_fetch(portal, true, 16);
		if (SPI_processed == 0)
			break;
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			int64		image_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			char	   *label = SPI_getvalue(tup, desc, 2);
			Datum		imgd = SPI_getbinval(tup, desc, 3, &isnull);
			bytea	   *img;
			int32_t		label_index = -1;
			int32_t		pred;
			tl_batch_result res = {0};
			tl_error	err;

			CHECK_FOR_INTERRUPTS();
			if (from_relation)
			{
				/* tl_train's rules (train/source.c): such rows are skipped */
				size_t		len;
				int			w,
							h;

				if (isnull || label == NULL || label[0] == '\0' ||
					tl_image_datum_usability(imgd, &len, &w, &h) != TL_IMAGE_USABLE)
				{
					skipped++;
					continue;
				}
			}
			for (int c = 0; c < nc && label && label_index < 0; c++)
				if (strcmp(m->classes[c], label) == 0)
					label_index = c;
			if (label_index < 0)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_EXCEPTION),
						 errmsg("image %lld of dataset \"%s\" has label \"%s\", which is not a class of model \"%s\"",
								(long long) image_id, dataset, label ? label : "(null)", m->name)));
			if (isnull)
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("image %lld of dataset \"%s\" has no image data",
								(long long) image_id, dataset)));
			img = DatumGetByteaPP(imgd);
			PG_TRY();
			{
				prepare_input(m, img, false,
							  "Delete the image or correct its bytes: tl_evaluate counts every image of the split.");
			}
			PG_CATCH();
			{
				errcontext("evaluating image %lld of dataset \"%s\"", (long long) image_id, dataset);
				PG_RE_THROW();
			}
			PG_END_TRY();
			if ((Pointer) img != DatumGetPointer(imgd))
				pfree(img);

			tl_predict_use_threads();
			res.preds = &pred;
			tl_error_clear(&err);
			if (tl_resnet_eval_step(m->net, m->input, &label_index, 1, &res, &err) != TL_OK)
				tl_pg_raise(&err, psprintf("evaluating model \"%s\"", m->name));
			images++;
			correct += res.correct;
			loss_sum += res.loss;
			if (pred >= 0 && pred < nc)
				confusion[label_index * nc + pred]++;
			pfree(label);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
	SPI_finish();
	tl_model_cache_unpin(m);

	if (skipped > 0)
		ereport(NOTICE,
				(errmsg("skipped " INT64_FORMAT " rows of %s without an image or label, or whose image is not a usable JPEG or PNG",
						skipped, src.qualified),
				 errdetail("As tl_train does: images over transfer.max_image_file_size or transfer.max_image_pixels count as unusable.")));
	if (images == 0)
		tl_pg_raise_no_dataset(dataset, split);

	MemoryContextSwitchTo(callcxt);
	initStringInfo(&out);
	appendStringInfoString(&out, "{\"model\": ");
	escape_json(&out, m->name);
	appendStringInfoString(&out, ", \"dataset\": ");
	escape_json(&out, dataset);
	appendStringInfoString(&out, ", \"split\": ");
	escape_json(&out, split);
	appendStringInfo(&out, ", \"images\": " INT64_FORMAT ", \"correct\": " INT64_FORMAT,
					 images, correct);
	appendStringInfoString(&out, ", \"accuracy\": ");
	append_double_or_null(&out, (double) correct / images, false);
	appendStringInfoString(&out, ", \"loss\": ");
	append_double_or_null(&out, loss_sum / images, false);
	appendStringInfoString(&out, ", \"classes\": [");
	for (int c = 0; c < nc; c++)
	{
		if (c > 0)
			appendStringInfoString(&out, ", ");
		escape_json(&out, m->classes[c]);
	}
	appendStringInfoString(&out, "], \"confusion\": [");
	for (int t = 0; t < nc; t++)
	{
		appendStringInfoString(&out, t > 0 ? ", [" : "[");
		for (int p = 0; p < nc; p++)
			appendStringInfo(&out, p > 0 ? ", " INT64_FORMAT : INT64_FORMAT,
							 confusion[t * nc + p]);
		appendStringInfoChar(&out, ']');
	}
	appendStringInfoString(&out, "], \"per_class\": {");
	for (int c = 0; c < nc; c++)
	{
		int64		tp = confusion[c * nc + c];
		int64		predicted = 0,
					support = 0;

		for (int o = 0; o < nc; o++)
		{
			predicted += confusion[o * nc + c];
			support += confusion[c * nc + o];
		}
		if (c > 0)
			appendStringInfoString(&out, ", ");
		escape_json(&out, m->classes[c]);
		appendStringInfoString(&out, ": {\"precision\": ");
		append_double_or_null(&out, predicted ? (double) tp / predicted : 0, predicted == 0);
		appendStringInfoString(&out, ", \"recall\": ");
		append_double_or_null(&out, support ? (double) tp / support : 0, support == 0);
		appendStringInfo(&out, ", \"support\": " INT64_FORMAT "}", support);
	}
	appendStringInfoString(&out, "}}");

	result = DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data));
	PG_RETURN_DATUM(result);
}

/*
 * tl_model_cache() returns table(model text, model_id bigint, image_size int,
 *   bytes bigint, calls bigint, loaded_at timestamptz): this process's cache.
 */
Datum
tl_model_cache(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	tl_cached_model *entries[64];
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	n = tl_model_cache_entries(entries, lengthof(entries));
	for (int i = 0; i < n; i++)
	{
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};

		values[0] = CStringGetTextDatum(entries[i]->name);
		values[1] = Int64GetDatum(entries[i]->id);
		values[2] = Int32GetDatum(entries[i]->image_size);
		values[3] = Int64GetDatum((int64) entries[i]->bytes);
		values[4] = Int64GetDatum(entries[i]->hits);
		values[5] = TimestampTzGetDatum(entries[i]->loaded_at);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * For the other SQL functions that run cached models (embed.c): the
 * helpers above under names of their own.
 */
tl_cached_model *
tl_predict_call_model(FunctionCallInfo fcinfo, int argno)
{
	return call_model(fcinfo, argno);
}

void
tl_predict_prepare_input(tl_cached_model *m, const bytea *img)
{
	prepare_input(m, img, false, PREDICT_HINT);
}
