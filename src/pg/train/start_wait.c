/*
 * train/start_wait.c - a new run's worker waits for the transaction that
 * called tl_train (wait => false) to end, since the run's row becomes
 * visible, or never exists, only then.  The wait is bounded by
 * transfer.train_start_timeout: a caller left idle in its transaction would
 * otherwise hold a background-worker slot for as long as it likes.  A worker
 * that gives up exits without touching the run; if the transaction commits
 * later, the run reads as interrupted (runs.c says why) and tl_resume
 * starts it.
 */
#include "postgres.h"

#include <limits.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/procarray.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "train.h"
#include "transfer_pg.h"

static int	tl_guc_train_start_timeout = 600;

void
tl_start_wait_define_guc(void)
{
	DefineCustomIntVariable("transfer.train_start_timeout",
							"How long a new run's worker waits for the transaction that called tl_train.",
							"A worker that gives up exits; once that transaction commits, the run "
							"is interrupted and tl_resume starts it.",
							&tl_guc_train_start_timeout,
							600, 1, INT_MAX / 1000,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
}

bool
tl_wait_for_launcher(TransactionId xid)
{
	TimestampTz start = GetCurrentTimestamp();

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (!TransactionIdIsInProgress(xid))
			return true;
		if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(), tl_guc_train_start_timeout * 1000))
			return false;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 100L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
