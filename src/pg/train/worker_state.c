/*
 * train/worker_state.c - what every file of the training worker shares: the
 * run's core objects (W; worker.c frees them on every exit path), the memory
 * context that outlives the run's transactions (run_cxt), the short
 * transaction each table write runs in, and raising a core error.
 *
 * It calls none of the other worker files, so all of them can use it
 * without a circle.
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "utils/snapmgr.h"

#include "pg_error.h"
#include "train.h"

worker_state W;
MemoryContext run_cxt;

void
begin_tx(bool repeatable_read)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (repeatable_read)
		XactIsoLevel = XACT_REPEATABLE_READ;	/* before the first snapshot */
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
}

void
end_tx(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(run_cxt);
}

void
exec_sql(const char *sql, int nargs, Oid *types, Datum *values, int expect)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0);

	if (rc != expect)
		elog(ERROR, "query failed (%s): %s", SPI_result_code_string(rc), sql);
}

void
check(tl_code rc, const tl_error *err, const char *what)
{
	if (rc != TL_OK)
		tl_pg_raise(err, what);
}
