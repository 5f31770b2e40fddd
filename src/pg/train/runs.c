/*
 * train/runs.c - the state of a run: its tl_runs row as the calling backend
 * sees it (status, and whether the current transaction wrote it) and its
 * advisory lock, the mark of a live worker (train.h, TL_RUN_LOCK_CLASS): who
 * holds it (tl_run_worker_pid) and the worker taking it (take_run_lock).
 *
 * A run whose status is queued or running but whose lock nobody holds was
 * interrupted (crash, kill, restart): current_run (like tl_cancel) checks
 * the lock first and reads the status afterwards, so a worker that commits
 * its final status and exits in between is never mistaken for a dead one.
 *
 * Used by the SQL functions (api.c), by following a run (launch.c) and by
 * the worker (worker.c); the row functions run inside a transaction with
 * SPI connected.
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lock.h"

#include "train.h"

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

bool
take_run_lock(int64 run)
{
	LOCKTAG		tag;
	uint32		k1,
				k2;

	tl_run_lock_tag(run, &k1, &k2);
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, k1, k2, TL_RUN_LOCK_SUBID);
	return LockAcquire(&tag, ExclusiveLock, true, true) != LOCKACQUIRE_NOT_AVAIL;
}

run_row
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

run_row
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

bool
status_active(const char *status)
{
	return strcmp(status, "queued") == 0 || strcmp(status, "running") == 0;
}

void
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
					 "error = CASE WHEN status = 'queued' THEN 'the training worker stopped before the run started "
					 "(server restart, crash or termination, or the transaction that called tl_train stayed open "
					 "longer than transfer.train_start_timeout)' "
					 "ELSE 'the training worker stopped without finishing (server restart, crash or termination)' END "
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
run_row
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
void
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
