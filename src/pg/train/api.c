/*
 * train/api.c - the SQL functions of training: tl_train, tl_wait, tl_cancel,
 * tl_resume and tl_run_status.  Here are their argument checks and
 * tl_train's checks of a request (role, dataset, base model, memory) before
 * any worker starts; starting and following workers is launch.c's, a run's
 * row and lock are runs.c's.
 */
#include "postgres.h"

#include <math.h>
#include <signal.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "image_datum.h"
#include "model_store.h"
#include "pg_error.h"
#include "image/tl_image.h"
#include "train.h"
#include "transfer_pg.h"

PG_FUNCTION_INFO_V1(tl_train);

PG_FUNCTION_INFO_V1(tl_wait);

PG_FUNCTION_INFO_V1(tl_cancel);

PG_FUNCTION_INFO_V1(tl_resume);

PG_FUNCTION_INFO_V1(tl_run_status);

/* ---------- tl_train ---------- */

#define ARG_NOT_NULL(n, name) \
	do { if (PG_ARGISNULL(n)) \
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), \
						errmsg("argument \"%s\" of tl_train must not be null", (name)))); } while (0)

static void
check_positive_int(int v, const char *name)
{
	if (v <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be positive, not %d", name, v)));
}

static void
check_role_can_login(void)
{
	HeapTuple	tup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(GetUserId()));
	bool		canlogin;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for role %u", GetUserId());
	canlogin = ((Form_pg_authid) GETSTRUCT(tup))->rolcanlogin;
	ReleaseSysCache(tup);
	if (!canlogin)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" cannot log in, so no training worker can run as it",
						GetUserNameFromId(GetUserId(), false)),
				 errhint("Call tl_train as a role with LOGIN.")));
}

/*
 * Compressed size of every train and val image and the largest decoded
 * size (header probe), checking that their headers decode.
 */
static void
dataset_image_bytes(const char *dataset, tl_data_size *size)
{
	StringInfoData q;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	SPIPlanPtr	plan;
	Portal		portal;

	initStringInfo(&q);
	appendStringInfo(&q, "SELECT id, img FROM %s WHERE dataset = $1 AND split IN ('train', 'val')",
					 tl_qualified("tl_images"));
	plan = SPI_prepare(q.data, 1, argtypes);
	if (plan == NULL)
		elog(ERROR, "could not prepare image scan");
	values[0] = CStringGetTextDatum(dataset);
	portal = SPI_cursor_open(NULL, plan, values, NULL, true);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 64);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			Datum		img = SPI_getbinval(tup, desc, 2, &isnull);
			size_t		len;
			tl_error	err;
			tl_image_format fmt;
			int			w,
						h;

			if (tl_probe_image_datum(img, &len, &fmt, &w, &h, &err) != TL_OK)
				tl_pg_raise_bad_image(id, tl_pg_sqlstate(err.code),
									  psprintf("image %lld of dataset \"%s\" cannot be used for training: %s",
											   (long long) id, dataset, err.message));
			if ((int64) w * h > tl_guc_max_image_pixels)
				tl_pg_raise_bad_image(id, ERRCODE_PROGRAM_LIMIT_EXCEEDED,
									  psprintf("image %lld of dataset \"%s\" has %d x %d pixels, more than transfer.max_image_pixels",
											   (long long) id, dataset, w, h));
			tl_data_size_add(size, len, w, h);
		}
		SPI_freetuptable(SPI_tuptable);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
}

/* Side of layer4's output for a square input (conv1, maxpool, three stride-2 stages). */
static int
layer4_side(int s)
{
	s = (s + 2 * 3 - 7) / 2 + 1;
	for (int i = 0; i < 4; i++)
		s = (s + 2 - 3) / 2 + 1;
	return s;
}

/* Resolve the base model: its id and width, checking it is a ResNet-18. */
static void
resolve_base_model(tl_run_args *args)
{
	TlModelInfo info;
	MemoryContext cxt,
				old;

	args->base_model_id = tl_store_lookup(args->base_model, true);
	if (args->base_model_id == 0)
	{
		if (strcmp(args->base_model, TL_DEFAULT_BASE_MODEL) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("base model \"%s\" does not exist", args->base_model),
					 errdetail("tl_train starts from the pretrained ImageNet ResNet-18 unless from_scratch => true."),
					 errhint("Import it with scripts/fetch-pretrained.sh (or tl_import_weights('%s', ...)), "
							 "or pass from_scratch => true to train from random initialisation.",
							 TL_DEFAULT_BASE_MODEL)));
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("base model \"%s\" does not exist", args->base_model),
				 errhint(TL_HINT_SEE_MODELS)));
	}

	/* Every key and shape against ResNet-18; the worker reads the weights. */
	cxt = AllocSetContextCreate(CurrentMemoryContext, "tl_train base model check", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		tl_store_check(args->base_model_id, &info);
	}
	PG_CATCH();
	{
		ErrorData  *e;

		MemoryContextSwitchTo(old);
		e = CopyErrorData();
		if (e->sqlerrcode != ERRCODE_DATATYPE_MISMATCH)
			PG_RE_THROW();
		FlushErrorState();
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("base model \"%s\" is not a ResNet-18", args->base_model),
				 errdetail("%s", e->message),
				 errhint("Base models must have torchvision's resnet18 state_dict keys and shapes.")));
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	if (info.arch == NULL || strcmp(info.arch, "resnet18") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("base model \"%s\" is not a ResNet-18", args->base_model)));
	args->base_width = info.base_width;
	MemoryContextDelete(cxt);
}

static void
insert_run(int64 run, const tl_run_args *args, const char *json)
{
	StringInfoData q;
	Oid			argtypes[4] = {INT8OID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[4];

	values[0] = Int64GetDatum(run);
	values[1] = CStringGetTextDatum(args->dataset);
	values[2] = CStringGetTextDatum(tl_train_mode_name(args->mode));
	values[3] = CStringGetTextDatum(json);
	initStringInfo(&q);
	appendStringInfo(&q, "INSERT INTO %s (id, dataset, mode, args) VALUES ($1, $2, $3, $4::jsonb)",
					 tl_qualified("tl_runs"));
	if (SPI_execute_with_args(q.data, 4, argtypes, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert run");
}

Datum
tl_train(PG_FUNCTION_ARGS)
{
	tl_run_args args;
	tl_dataset_info info;
	char	   *mode;
	bool		wait;
	int64		run;
	double		estimate;
	char	   *json;
	Oid			relid;
	int			guc_level;
	tl_source	src;
	bool		from_relation;
	tl_data_size size = {0, 0, 0};

	ARG_NOT_NULL(0, "mode");
	ARG_NOT_NULL(1, "dataset");
	ARG_NOT_NULL(2, "epochs");
	ARG_NOT_NULL(3, "batch_size");
	ARG_NOT_NULL(4, "lr");
	ARG_NOT_NULL(5, "momentum");
	ARG_NOT_NULL(6, "step_size");
	ARG_NOT_NULL(7, "gamma");
	ARG_NOT_NULL(9, "from_scratch");
	ARG_NOT_NULL(12, "image_size");
	ARG_NOT_NULL(13, "wait");

	memset(&args, 0, sizeof(args));
	mode = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (strcmp(mode, "finetune") == 0)
		args.mode = TL_MODE_FINETUNE;
	else if (strcmp(mode, "feature_extractor") == 0)
		args.mode = TL_MODE_FEATURE_EXTRACTOR;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown training mode \"%s\"", mode),
				 errhint("The modes are \"finetune\" and \"feature_extractor\".")));
	args.dataset = text_to_cstring(PG_GETARG_TEXT_PP(1));

	/*
	 * A table or view of the caller (source.c) is named with the caller's
	 * search_path; everything after runs under pg_catalog, pg_temp, as if
	 * the function had that setting (0.1.0's declaration has it).
	 */
	relid = tl_source_resolve_name(args.dataset);
	guc_level = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	args.epochs = PG_GETARG_INT32(2);
	args.batch_size = PG_GETARG_INT32(3);
	args.lr = PG_GETARG_FLOAT8(4);
	args.momentum = PG_GETARG_FLOAT8(5);
	args.step_size = PG_GETARG_INT32(6);
	args.gamma = PG_GETARG_FLOAT8(7);
	args.base_model = PG_ARGISNULL(8) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(8));
	args.from_scratch = PG_GETARG_BOOL(9);
	args.model_name = PG_ARGISNULL(10) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(10));
	args.image_size = PG_GETARG_INT32(12);
	wait = PG_GETARG_BOOL(13);
	args.threads = tl_guc_train_threads;
	args.conv_algorithm = (tl_conv_algorithm) tl_guc_conv_algorithm;
	args.memory_limit = tl_guc_train_memory_limit;
	/* cache_features (features.c) */
	ARG_NOT_NULL(15, "cache_features");
	args.cache_features = PG_GETARG_BOOL(15);
	if (args.cache_features && args.mode != TL_MODE_FEATURE_EXTRACTOR)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cache_features => true needs mode \"feature_extractor\""),
				 errhint("Only a frozen backbone's features can be computed once for the whole run.")));

	check_positive_int(args.epochs, "epochs");
	check_positive_int(args.batch_size, "batch_size");
	check_positive_int(args.step_size, "step_size");
	if (!(args.lr > 0) || isinf(args.lr))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lr must be a positive number, not %g", args.lr)));
	if (!(args.momentum >= 0) || isinf(args.momentum))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("momentum must be a non-negative number, not %g", args.momentum)));
	if (!(args.gamma > 0) || isinf(args.gamma))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("gamma must be a positive number, not %g", args.gamma)));
	if (args.image_size < 32 || args.image_size > 1024)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("image_size must be between 32 and 1024, not %d", args.image_size)));
	if (args.model_name != NULL && args.model_name[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model_name must not be empty")));
	if (args.from_scratch)
	{
		if (args.base_model != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("base_model and from_scratch => true cannot be combined"),
					 errhint("from_scratch trains from random initialisation, without a base model.")));
		args.base_width = PG_ARGISNULL(14) ? 64 : PG_GETARG_INT32(14);
		if (args.base_width < 1 || args.base_width > 256)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("base_width must be between 1 and 256, not %d", args.base_width)));
	}
	else
	{
		if (!PG_ARGISNULL(14))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("base_width can only be given with from_scratch => true"),
					 errhint("A base model's width is that of its weights.")));
		if (args.base_model == NULL)
			args.base_model = pstrdup(TL_DEFAULT_BASE_MODEL);
	}
	if (PG_ARGISNULL(11))
	{
		uint64		s;

		if (!pg_strong_random(&s, sizeof(s)))
			ereport(ERROR, (errmsg("could not generate a random seed")));
		args.seed = (int64) (s >> 1);
	}
	else
		args.seed = PG_GETARG_INT64(11);

	if (wait)
		check_wait_allowed();
	check_role_can_login();

	SPI_connect();
	reap_dead_runs();
	from_relation = tl_source_prepare(fcinfo, args.dataset, relid, args.seed, &src, &info,
									  &size);
	if (!from_relation)
		tl_dataset_check(args.dataset, &info);
	args.num_classes = info.num_classes;
	if (!args.from_scratch)
		resolve_base_model(&args);
	if (args.model_name != NULL && tl_store_lookup(args.model_name, true) != 0)
		tl_pg_raise_model_exists(args.model_name);

	/*
	 * BatchNorm in train mode needs more than one value per channel: a last
	 * train batch of one image fails where layer4's output is 1x1 (PyTorch
	 * raises the same error).  Say so now rather than after an epoch.
	 */
	if (info.n_train % args.batch_size == 1 && layer4_side(args.image_size) == 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the last train batch would hold a single image, which BatchNorm cannot train on at image_size %d",
						args.image_size),
				 errdetail("The train split has " INT64_FORMAT " images and batch_size is %d.",
						   info.n_train, args.batch_size),
				 errhint("Choose a batch_size that does not leave one image over, or an image_size of at least 64.")));

	if (!from_relation)
		dataset_image_bytes(args.dataset, &size);
	estimate = tl_train_memory_estimate(&args, &size);
	if (tl_guc_train_memory_limit > 0 &&
		estimate > (double) tl_guc_train_memory_limit * 1024.0 * 1024.0)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("training run would need about %.0f MB, more than transfer.train_memory_limit (%d MB)",
						estimate / (1024.0 * 1024.0), tl_guc_train_memory_limit),
				 errdetail("The run holds its " INT64_FORMAT " images compressed (%.0f bytes) for the whole run and decodes them per batch; activations grow with batch_size and image_size squared.",
						   size.n, size.bytes),
				 errhint("Use a smaller batch_size or image_size, or ask a superuser to raise transfer.train_memory_limit.")));

	{
		StringInfoData q;

		initStringInfo(&q);
		appendStringInfo(&q, "SELECT nextval(%s)", quote_literal_cstr(tl_qualified("tl_runs_id_seq")));
		if (SPI_execute(q.data, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not allocate a run id");
		run = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
										  &(bool) {false}));
	}
	if (args.model_name == NULL)
		args.model_name = psprintf("%s_%s_run" INT64_FORMAT, args.dataset,
								   tl_train_mode_name(args.mode), run);
	json = tl_run_args_json(&args, &info);
	if (from_relation)
		json = tl_source_args_json(json, &src);

	if (!wait)
	{
		BackgroundWorkerHandle *handle;
		pid_t		pid;

		insert_run(run, &args, json);
		handle = register_worker(run, TL_LAUNCH_NEW, GetTopTransactionId(), DSM_HANDLE_INVALID, &pid);
		wait_for_lock(run, handle);
		set_run_pid(run, pid);
		SPI_finish();
		AtEOXact_GUC(true, guc_level);
		PG_RETURN_INT64(run);
	}
	else
	{
		size_t		dlen = strlen(args.dataset),
					alen = strlen(json);
		dsm_segment *seg = dsm_create(offsetof(tl_detached_run, data) + dlen + alen + 2, 0);
		tl_detached_run *d = dsm_segment_address(seg);
		BackgroundWorkerHandle *handle;
		pid_t		pid;

		d->run = run;
		d->mode = args.mode;
		d->dataset_len = dlen;
		d->args_len = alen;
		memcpy(d->data, args.dataset, dlen + 1);
		memcpy(d->data + dlen + 1, json, alen + 1);
		SPI_finish();

		handle = register_worker(run, TL_LAUNCH_NEW_DETACHED, InvalidTransactionId,
								 dsm_segment_handle(seg), &pid);
		follow_detached(run, handle);
		dsm_detach(seg);
		AtEOXact_GUC(true, guc_level);
		PG_RETURN_INT64(run);
	}
}

/* ---------- tl_wait, tl_cancel, tl_resume, tl_run_status ---------- */

Datum
tl_wait(PG_FUNCTION_ARGS)
{
	int64		run;
	TimestampTz deadline = 0;
	run_row		r;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"run\" of tl_wait must not be null")));
	run = PG_GETARG_INT64(0);
	check_wait_allowed();
	if (!PG_ARGISNULL(1))
	{
		Interval   *timeout = PG_GETARG_INTERVAL_P(1);

		deadline = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
														   TimestampTzGetDatum(GetCurrentTimestamp()),
														   PointerGetDatum(timeout)));
	}

	SPI_connect();
	r = read_run_or_error(run);
	if (r.mine && status_active(r.status))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("training run " INT64_FORMAT " was started in the current transaction", run),
				 errdetail("Its worker starts only once that transaction commits."),
				 errhint("Commit first, or call tl_train with wait => true.")));
	SPI_finish();

	PG_RETURN_TEXT_P(cstring_to_text(follow_run(run, NULL, deadline, false)));
}

static void
delete_checkpoint(int64 run)
{
	StringInfoData q;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run)};

	initStringInfo(&q);
	appendStringInfo(&q, "DELETE FROM %s WHERE run = $1", tl_qualified("tl_run_checkpoints"));
	if (SPI_execute_with_args(q.data, 1, argtypes, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete checkpoint of run " INT64_FORMAT, run);
}

Datum
tl_cancel(PG_FUNCTION_ARGS)
{
	int64		run = PG_GETARG_INT64(0);
	int			pid;
	run_row		r;
	bool		result = false;

	SPI_connect();
	pid = tl_run_worker_pid(run);
	r = read_run_or_error(run);
	if (r.mine && status_active(r.status))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("training run " INT64_FORMAT " was started in the current transaction", run),
				 errhint("Roll back the transaction instead.")));
	if (status_active(r.status) && pid != 0)
	{
		/*
		 * The lock holder is this run's worker: SIGINT is a query cancel, which
		 * its batch loop notices within a step; it then records "cancelled".
		 */
		if (kill(pid, SIGINT) != 0)
			ereport(WARNING,
					(errmsg("could not signal training worker %d: %m", pid)));
		else
			result = true;
	}
	else
	{
		if (status_active(r.status))
			mark_interrupted(run);
		r = read_run_or_error(run);
		if (strcmp(r.status, "interrupted") == 0)
		{
			StringInfoData q;
			Oid			argtypes[1] = {INT8OID};
			Datum		values[1] = {Int64GetDatum(run)};

			initStringInfo(&q);
			appendStringInfo(&q,
							 "UPDATE %s SET status = 'cancelled', finished = now(), "
							 "error = 'cancelled by tl_cancel after it was interrupted' "
							 "WHERE id = $1 AND status = 'interrupted'",
							 tl_qualified("tl_runs"));
			if (SPI_execute_with_args(q.data, 1, argtypes, values, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not update run " INT64_FORMAT, run);
			delete_checkpoint(run);
			result = true;
		}
	}
	SPI_finish();
	PG_RETURN_BOOL(result);
}

Datum
tl_resume(PG_FUNCTION_ARGS)
{
	int64		run = PG_GETARG_INT64(0);
	bool		wait = PG_GETARG_BOOL(1);
	run_row		r;
	BackgroundWorkerHandle *handle;
	pid_t		pid;

	if (wait)
		check_wait_allowed();
	check_role_can_login();
	SPI_connect();
	r = current_run(run);
	if (strcmp(r.status, "interrupted") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("training run " INT64_FORMAT " cannot be resumed: its status is %s", run, r.status),
				 errhint("Only interrupted runs can be resumed; start a new run with tl_train.")));
	if (r.mine)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("training run " INT64_FORMAT " was marked interrupted in the current transaction", run),
				 errhint("Commit first, then resume it.")));

	if (!wait)
	{
		StringInfoData q;
		Oid			argtypes[1] = {INT8OID};
		Datum		values[1] = {Int64GetDatum(run)};

		initStringInfo(&q);
		appendStringInfo(&q,
						 "UPDATE %s SET status = 'queued', error = NULL, finished = NULL, "
						 "resumes = resumes + 1 WHERE id = $1 AND status = 'interrupted'",
						 tl_qualified("tl_runs"));
		if (SPI_execute_with_args(q.data, 1, argtypes, values, NULL, false, 0) != SPI_OK_UPDATE ||
			SPI_processed != 1)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("training run " INT64_FORMAT " changed while it was being resumed", run)));
		handle = register_worker(run, TL_LAUNCH_RESUME, GetTopTransactionId(), DSM_HANDLE_INVALID, &pid);
		wait_for_lock(run, handle);
		set_run_pid(run, pid);
		SPI_finish();
		PG_RETURN_INT64(run);
	}
	SPI_finish();
	handle = register_worker(run, TL_LAUNCH_RESUME_DETACHED, InvalidTransactionId, DSM_HANDLE_INVALID, &pid);
	follow_detached(run, handle);
	PG_RETURN_INT64(run);
}

Datum
tl_run_status(PG_FUNCTION_ARGS)
{
	int64		run = PG_GETARG_INT64(0);
	run_row		r;
	text	   *result;

	SPI_connect();
	r = current_run(run);
	SPI_finish();
	result = cstring_to_text(r.status);
	PG_RETURN_TEXT_P(result);
}
