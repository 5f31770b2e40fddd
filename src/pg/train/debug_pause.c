/*
 * train/debug_pause.c - transfer.debug_pause_at, a setting for tests only:
 * a training worker whose setting names a stage sleeps there (at most a
 * minute, interruptible), showing "training run: paused at STAGE" in
 * pg_stat_activity, so that a test can kill it at exactly that stage.
 * Superuser only; empty (the default) never pauses.
 *
 * Stages: load (after the first chunk of images is decoded), epoch0_train
 * and epoch0_val (after the first batch of that phase of epoch 0),
 * checkpoint (inside the transaction that saves an epoch's checkpoint,
 * between the model and the momentum tensors) and store_model (inside the
 * transaction that stores the final model, before the run is marked
 * succeeded).
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "utils/guc.h"

#include "train.h"
#include "transfer_pg.h"

static char *tl_guc_debug_pause_at = NULL;

void
tl_debug_pause_define_guc(void)
{
	DefineCustomStringVariable("transfer.debug_pause_at",
							   "For tests only: the stage at which a training worker pauses.",
							   "One of load, epoch0_train, epoch0_val, checkpoint, store_model; "
							   "the worker sleeps there for up to a minute.  Empty: never.",
							   &tl_guc_debug_pause_at,
							   "",
							   PGC_SUSET, 0, NULL, NULL, NULL);
}

void
tl_debug_pause(const char *stage)
{
	if (tl_guc_debug_pause_at == NULL || strcmp(tl_guc_debug_pause_at, stage) != 0)
		return;
	pgstat_report_activity(STATE_RUNNING, psprintf("training run: paused at %s", stage));
	elog(LOG, "training worker paused at %s (transfer.debug_pause_at)", stage);
	for (int i = 0; i < 600; i++)
	{
		CHECK_FOR_INTERRUPTS();
		pg_usleep(100000L);
	}
}
