/*
 * train/launch.c - starting a run's background worker and following the run
 * from the calling backend: tl_train and tl_resume start workers here, and
 * tl_wait and wait => true follow runs here (api.c has the SQL functions,
 * runs.c a run's row and lock).
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
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/latch.h"
#include "utils/timestamp.h"

#include "train.h"

#define POLL_MS 200

/* ---------- starting a worker ---------- */

BackgroundWorkerHandle *
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
void
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

void
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

void
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
char *
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
waiting_context(void *arg)
{
	int64		run = *(int64 *) arg;

	errcontext("waiting for training run " INT64_FORMAT " (cancelling the wait, e.g. by statement_timeout, "
			   "cancels the run; SELECT * FROM tl_runs WHERE id = " INT64_FORMAT " shows it. To follow a run "
			   "without a statement waiting, start it with wait => false and watch tl_progress or call tl_wait(run))",
			   run, run);
}

void
follow_detached(int64 run, BackgroundWorkerHandle *handle)
{
	char	   *status = NULL;

	PG_TRY();
	{
		ErrorContextCallback waiting;

		waiting.callback = waiting_context;
		waiting.arg = &run;
		waiting.previous = error_context_stack;
		error_context_stack = &waiting;
		status = follow_run(run, handle, 0, true);
		error_context_stack = waiting.previous;
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
