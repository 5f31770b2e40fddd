/*
 * train/api.c - tl_train, tl_wait, tl_cancel, tl_resume, tl_run_status: checking
 * a training request, starting its background worker and following it.
 *
 * Launch protocol (docs/training.md has the user's view):
 *
 * - wait => false: the run row is inserted by the calling transaction
 *   (status queued) and the worker is told that transaction's xid.  The
 *   worker first takes the run's advisory lock, then waits for the xid to
 *   end; if the transaction rolled back the row isn't there and the worker
 *   exits quietly, so a rolled-back tl_train leaves neither run nor worker.
 *   tl_train returns only once the worker holds the lock, so a committed
 *   queued or running run without a lock holder is always a dead run.
 *
 * - wait => true: the caller can't commit while it waits, so the worker can't
 *   wait for it.  The caller passes the run's arguments in a DSM segment and
 *   the worker inserts the row itself (in its own transaction, as the same
 *   role).  Such a run is independent of the calling transaction.
 *
 * A run whose status is queued or running but whose lock nobody holds was
 * interrupted (crash, kill, restart): every function here checks the lock
 * first and reads the status afterwards, so a worker that commits its final
 * status and exits in between is never mistaken for a dead one.
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
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "model_store.h"
#include "pg_error.h"
#include "tl_image.h"
#include "train.h"
#include "transfer_pg.h"

PG_FUNCTION_INFO_V1(tl_train);
PG_FUNCTION_INFO_V1(tl_wait);
PG_FUNCTION_INFO_V1(tl_cancel);
PG_FUNCTION_INFO_V1(tl_resume);
PG_FUNCTION_INFO_V1(tl_run_status);

#define POLL_MS 200

void
tl_run_lock_tag(int64 run, uint32 *key1, uint32 *key2)
{
	*key1 = TL_RUN_LOCK_CLASS ^ (uint32) ((uint64) run >> 32);
	*key2 = (uint32) run;
}

int
tl_run_worker_pid(int64 run)
{
	Oid			argtypes[4] = {OIDOID, OIDOID, OIDOID, INT2OID};
	Datum		values[4];
	uint32		k1,
				k2;
	int			pid = 0;

	tl_run_lock_tag(run, &k1, &k2);
	values[0] = ObjectIdGetDatum(MyDatabaseId);
	values[1] = ObjectIdGetDatum((Oid) k1);
	values[2] = ObjectIdGetDatum((Oid) k2);
	values[3] = Int16GetDatum(TL_RUN_LOCK_SUBID);
	if (SPI_execute_with_args("SELECT pid FROM pg_catalog.pg_locks "
							  "WHERE locktype OPERATOR(pg_catalog.=) 'advisory' "
							  "AND database OPERATOR(pg_catalog.=) $1 AND classid OPERATOR(pg_catalog.=) $2 "
							  "AND objid OPERATOR(pg_catalog.=) $3 AND objsubid OPERATOR(pg_catalog.=) $4 "
							  "AND granted LIMIT 1",
							  4, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_locks");
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			pid = DatumGetInt32(d);
	}
	return pid;
}

/* A run's status and whether the current transaction created its row. */
typedef struct run_row
{
	bool		found;
	char		status[16];
	bool		mine;			/* inserted or last updated by this transaction */
	int			pid;
} run_row;

static run_row
read_run(int64 run)
{
	StringInfoData q;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run)};
	run_row		r;

	memset(&r, 0, sizeof(r));
	initStringInfo(&q);
	appendStringInfo(&q, "SELECT status, xmin::text::int8, pid FROM %s WHERE id = $1",
					 tl_qualified("tl_runs"));
	if (SPI_execute_with_args(q.data, 1, argtypes, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read run " INT64_FORMAT, run);
	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		TransactionId xmin;

		r.found = true;
		strlcpy(r.status, SPI_getvalue(tup, desc, 1), sizeof(r.status));
		xmin = (TransactionId) DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		r.mine = TransactionIdIsCurrentTransactionId(xmin);
		r.pid = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		if (isnull)
			r.pid = 0;
	}
	pfree(q.data);
	return r;
}

static run_row
read_run_or_error(int64 run)
{
	run_row		r = read_run(run);

	if (!r.found)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("training run " INT64_FORMAT " does not exist", run),
				 errdetail("Runs of other roles are visible only to members of those roles.")));
	return r;
}

static bool
status_active(const char *status)
{
	return strcmp(status, "queued") == 0 || strcmp(status, "running") == 0;
}

static void
mark_interrupted(int64 run)
{
	StringInfoData q;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run)};

	/* A read-only transaction (or a standby) still reports it, just can't record it. */
	if (XactReadOnly || RecoveryInProgress())
		return;
	initStringInfo(&q);
	appendStringInfo(&q,
					 "UPDATE %s SET status = 'interrupted', finished = now(), "
					 "error = 'the training worker stopped without finishing (server restart, crash or termination)' "
					 "WHERE id = $1 AND status IN ('queued', 'running')",
					 tl_qualified("tl_runs"));
	if (SPI_execute_with_args(q.data, 1, argtypes, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update run " INT64_FORMAT, run);
	pfree(q.data);
}

/*
 * The status of a run as it really is: lock first, then the row (see the
 * header comment), marking a dead active run interrupted.
 */
static run_row
current_run(int64 run)
{
	int			pid;
	run_row		r;

	/* a standby has none of the primary's locks: report what the row says */
	if (RecoveryInProgress())
		return read_run_or_error(run);
	pid = tl_run_worker_pid(run);
	r = read_run_or_error(run);

	if (status_active(r.status) && pid == 0 && !r.mine)
	{
		mark_interrupted(run);
		strlcpy(r.status, "interrupted", sizeof(r.status));
	}
	return r;
}

/* Mark every visible dead active run interrupted. */
static void
reap_dead_runs(void)
{
	StringInfoData q;
	int64	   *ids;
	uint64		n;

	initStringInfo(&q);
	appendStringInfo(&q, "SELECT id FROM %s WHERE status IN ('queued', 'running')",
					 tl_qualified("tl_runs"));
	if (SPI_execute(q.data, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read runs");
	n = SPI_processed;
	ids = palloc(sizeof(int64) * (n + 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	}
	for (uint64 i = 0; i < n; i++)
		(void) current_run(ids[i]);
	pfree(ids);
	pfree(q.data);
}

/* ---------- starting a worker ---------- */

static BackgroundWorkerHandle *
register_worker(int64 run, tl_launch_kind kind, TransactionId xid, dsm_handle seg, pid_t *pid)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	tl_launch_extra extra;
	BgwHandleStatus status;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "transfer", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "tl_train_worker_main", BGW_MAXLEN);
	snprintf(worker.bgw_name, BGW_MAXLEN, "transfer training worker for run " INT64_FORMAT, run);
	strlcpy(worker.bgw_type, TL_TRAIN_WORKER_TYPE, BGW_MAXLEN);
	worker.bgw_main_arg = Int64GetDatum(run);
	worker.bgw_notify_pid = MyProcPid;

	memset(&extra, 0, sizeof(extra));
	extra.database = MyDatabaseId;
	extra.role = GetUserId();
	extra.launcher_xid = xid;
	extra.kind = kind;
	extra.dsm_handle = seg;
	StaticAssertStmt(sizeof(extra) <= BGW_EXTRALEN, "launch data must fit bgw_extra");
	memcpy(worker.bgw_extra, &extra, sizeof(extra));

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not start training worker"),
				 errdetail("Every background worker slot is in use."),
				 errhint("You may need to increase max_worker_processes.")));

	status = WaitForBackgroundWorkerStartup(handle, pid);
	if (status == BGWH_STOPPED)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not start training worker"),
				 errhint("More details may be available in the server log.")));
	if (status == BGWH_POSTMASTER_DIED)
		ereport(ERROR,
				(errcode(ERRCODE_ADMIN_SHUTDOWN),
				 errmsg("cannot start training worker without postmaster")));
	return handle;
}

static bool
worker_stopped(BackgroundWorkerHandle *handle)
{
	pid_t		pid;

	return GetBackgroundWorkerPid(handle, &pid) != BGWH_STARTED;
}

static void
wait_tick(void)
{
	int			rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							   POLL_MS, PG_WAIT_EXTENSION);

	if (rc & WL_LATCH_SET)
		ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/* Wait until the worker holds the run's lock (it does that before anything else). */
static void
wait_for_lock(int64 run, BackgroundWorkerHandle *handle)
{
	for (;;)
	{
		if (tl_run_worker_pid(run) != 0)
			return;
		if (worker_stopped(handle))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					 errmsg("training worker for run " INT64_FORMAT " exited during startup", run),
					 errhint("More details may be available in the server log.")));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

static void
set_run_pid(int64 run, int pid)
{
	StringInfoData q;
	Oid			argtypes[2] = {INT8OID, INT4OID};
	Datum		values[2] = {Int64GetDatum(run), Int32GetDatum(pid)};

	initStringInfo(&q);
	appendStringInfo(&q, "UPDATE %s SET pid = $2 WHERE id = $1", tl_qualified("tl_runs"));
	if (SPI_execute_with_args(q.data, 2, argtypes, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update run " INT64_FORMAT, run);
}

/* ---------- following a run ---------- */

static void
check_wait_allowed(void)
{
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("cannot wait for a training run in a repeatable read or serializable transaction"),
				 errdetail("The transaction's snapshot would never show the run's progress."),
				 errhint("Use read committed isolation.")));
}

/* NOTICE every epoch phase after (*epoch, *phase), the tutorial's log lines. */
static void
stream_epochs(int64 run, int *last_epoch, int *last_phase, int epochs)
{
	StringInfoData q;
	Oid			argtypes[2] = {INT8OID, INT4OID};
	Datum		values[2] = {Int64GetDatum(run), Int32GetDatum(*last_epoch)};

	initStringInfo(&q);
	appendStringInfo(&q,
					 "SELECT epoch, phase, loss, acc FROM %s WHERE run = $1 AND epoch >= $2 "
					 "ORDER BY epoch, phase = 'val'", tl_qualified("tl_run_epochs"));
	if (SPI_execute_with_args(q.data, 2, argtypes, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read epochs of run " INT64_FORMAT, run);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int			epoch = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		char	   *phase = SPI_getvalue(tup, desc, 2);
		int			ph = strcmp(phase, "val") == 0 ? 1 : 0;
		double		loss = DatumGetFloat8(SPI_getbinval(tup, desc, 3, &isnull));
		double		acc = DatumGetFloat8(SPI_getbinval(tup, desc, 4, &isnull));

		if (epoch < *last_epoch || (epoch == *last_epoch && ph <= *last_phase))
			continue;
		if (ph == 0)
			ereport(NOTICE, (errmsg("Epoch %d/%d", epoch, epochs - 1)));
		ereport(NOTICE, (errmsg("%s Loss: %.4f Acc: %.4f", phase, loss, acc)));
		*last_epoch = epoch;
		*last_phase = ph;
	}
	pfree(q.data);
}

/*
 * Follow a run until it ends.  handle: the worker of a detached launch (the
 * row appears only once it has inserted it), else NULL.  Returns the final
 * status, or the current one when the deadline passes.
 */
static char *
follow_run(int64 run, BackgroundWorkerHandle *handle, TimestampTz deadline, bool notices)
{
	int			last_epoch = 0,
				last_phase = -1;
	int			epochs = 0;
	MemoryContext outer = CurrentMemoryContext;
	char	   *result;
	bool		started = (handle == NULL);

	for (;;)
	{
		run_row		r;

		SPI_connect();
		if (!started)
		{
			/*
			 * Detached launch: wait until the worker has made the run active
			 * (inserted it, or taken it from interrupted), or has exited.
			 */
			bool		stopped = worker_stopped(handle);

			r = read_run(run);
			if (r.found && status_active(r.status))
				started = true;
			else if (stopped)
			{
				if (!r.found)
					ereport(ERROR,
							(errcode(ERRCODE_INTERNAL_ERROR),
							 errmsg("training worker for run " INT64_FORMAT " exited before it started the run", run),
							 errhint("More details may be available in the server log.")));
				started = true;
			}
			else
			{
				SPI_finish();
				wait_tick();
				continue;
			}
		}
		r = current_run(run);

		if (notices)
		{
			if (epochs == 0)
			{
				tl_run_args args;

				tl_run_args_load(run, &args);
				epochs = args.epochs;
			}
			stream_epochs(run, &last_epoch, &last_phase, epochs);
		}
		if (!status_active(r.status) || (deadline != 0 && GetCurrentTimestamp() >= deadline))
		{
			result = MemoryContextStrdup(outer, r.status);
			SPI_finish();
			return result;
		}
		SPI_finish();
		wait_tick();
	}
}

/* After a wait => true run: its outcome as the result or an error. */
static void
report_outcome(int64 run, const char *status)
{
	char	   *error = NULL;
	double		best = -1;

	if (strcmp(status, "succeeded") == 0)
	{
		StringInfoData q;
		Oid			argtypes[1] = {INT8OID};
		Datum		values[1] = {Int64GetDatum(run)};

		SPI_connect();
		initStringInfo(&q);
		appendStringInfo(&q, "SELECT best_val_acc FROM %s WHERE id = $1", tl_qualified("tl_runs"));
		if (SPI_execute_with_args(q.data, 1, argtypes, values, NULL, false, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				best = DatumGetFloat8(d);
		}
		SPI_finish();
		if (best >= 0)
			ereport(NOTICE, (errmsg("Best val Acc: %f", best)));
		return;
	}

	SPI_connect();
	{
		StringInfoData q;
		Oid			argtypes[1] = {INT8OID};
		Datum		values[1] = {Int64GetDatum(run)};

		initStringInfo(&q);
		appendStringInfo(&q, "SELECT error FROM %s WHERE id = $1", tl_qualified("tl_runs"));
		if (SPI_execute_with_args(q.data, 1, argtypes, values, NULL, false, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			char	   *e = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

			if (e)
				error = pstrdup(e);
		}
	}
	SPI_finish();
	ereport(ERROR,
			(errcode(strcmp(status, "cancelled") == 0 ? ERRCODE_QUERY_CANCELED : ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
			 errmsg("training run " INT64_FORMAT " %s", run, status),
			 error ? errdetail("%s", error) : 0));
}

/*
 * Wait for a detached worker; if the caller is cancelled meanwhile, the run
 * is cancelled too (the user pressed ^C on a blocking tl_train).
 */
static void
follow_detached(int64 run, BackgroundWorkerHandle *handle)
{
	char	   *status = NULL;

	PG_TRY();
	{
		status = follow_run(run, handle, 0, true);
	}
	PG_CATCH();
	{
		pid_t		pid;

		if (GetBackgroundWorkerPid(handle, &pid) == BGWH_STARTED)
			kill(pid, SIGINT);
		PG_RE_THROW();
	}
	PG_END_TRY();
	report_outcome(run, status);
}

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

/* Decoded size of every train and val image (header probe), checking they decode. */
static double
dataset_decoded_bytes(const char *dataset)
{
	StringInfoData q;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	SPIPlanPtr	plan;
	Portal		portal;
	double		total = 0;

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
			bytea	   *img = DatumGetByteaPP(SPI_getbinval(tup, desc, 2, &isnull));
			tl_error	err;
			tl_image_format fmt;
			int			w,
						h;

			if (tl_image_probe((const uint8_t *) VARDATA_ANY(img), VARSIZE_ANY_EXHDR(img),
							   &fmt, &w, &h, &err) != TL_OK)
				ereport(ERROR,
						(errcode(tl_pg_sqlstate(err.code)),
						 errmsg("image %lld of dataset \"%s\" cannot be used for training: %s",
								(long long) id, dataset, err.message)));
			if ((int64) w * h > tl_guc_max_image_pixels)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("image %lld of dataset \"%s\" has %d x %d pixels, more than transfer.max_image_pixels",
								(long long) id, dataset, w, h)));
			total += 3.0 * w * h;
		}
		SPI_freetuptable(SPI_tuptable);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
	return total;
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
				 errmsg("base model \"%s\" does not exist", args->base_model)));
	}

	/* Loading checks every key and shape against ResNet-18; free it right after. */
	cxt = AllocSetContextCreate(CurrentMemoryContext, "tl_train base model check", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		(void) tl_store_load(args->base_model_id, &info);
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
	tl_dataset_check(args.dataset, &info);
	args.num_classes = info.num_classes;
	if (!args.from_scratch)
		resolve_base_model(&args);
	if (args.model_name != NULL && tl_store_lookup(args.model_name, true) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("model \"%s\" already exists", args.model_name)));

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

	estimate = tl_train_memory_estimate(&args, dataset_decoded_bytes(args.dataset));
	if (tl_guc_train_memory_limit > 0 &&
		estimate > (double) tl_guc_train_memory_limit * 1024.0 * 1024.0)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("training run would need about %.0f MB, more than transfer.train_memory_limit (%d MB)",
						estimate / (1024.0 * 1024.0), tl_guc_train_memory_limit),
				 errdetail("Decoded images stay in memory for the whole run; activations grow with batch_size and image_size squared."),
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
		args.model_name = psprintf("%s-%s-run" INT64_FORMAT, args.dataset,
								   tl_train_mode_name(args.mode), run);
	json = tl_run_args_json(&args, &info);

	if (!wait)
	{
		BackgroundWorkerHandle *handle;
		pid_t		pid;

		insert_run(run, &args, json);
		handle = register_worker(run, TL_LAUNCH_NEW, GetTopTransactionId(), DSM_HANDLE_INVALID, &pid);
		wait_for_lock(run, handle);
		set_run_pid(run, pid);
		SPI_finish();
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
				 errmsg("training run " INT64_FORMAT " is %s, not interrupted", run, r.status),
				 errhint("Only interrupted runs can be resumed.")));
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
