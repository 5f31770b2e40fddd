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
 * succeeded).  A further stage, record_failure, is not a pause: recording a
 * failed or cancelled run raises an error, to test the fallback of
 * worker.c.  The setting may list several stages, separated by commas.
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
							   "Comma-separated: load, epoch0_train, epoch0_val, checkpoint, store_model "
							   "(the worker sleeps there for up to a minute), record_failure (recording "
							   "a failed run raises an error).  Empty: never.",
							   &tl_guc_debug_pause_at,
							   "",
							   PGC_SUSET, 0, NULL, NULL, NULL);
}

/* Is STAGE one of the comma-separated names of the setting? */
static bool
stage_set(const char *stage)
{
	const char *s = tl_guc_debug_pause_at;
	size_t		len = strlen(stage);

	while (s != NULL && *s != '\0')
	{
		const char *end = strchr(s, ',');
		size_t		n = end ? (size_t) (end - s) : strlen(s);

		if (n == len && strncmp(s, stage, len) == 0)
			return true;
		s = end ? end + 1 : NULL;
	}
	return false;
}

void
tl_debug_fail(const char *stage)
{
	if (stage_set(stage))
		elog(ERROR, "failing at %s (transfer.debug_pause_at)", stage);
}

void
tl_debug_pause(const char *stage)
{
	if (!stage_set(stage))
		return;
	pgstat_report_activity(STATE_RUNNING, psprintf("training run: paused at %s", stage));
	elog(LOG, "training worker paused at %s (transfer.debug_pause_at)", stage);
	for (int i = 0; i < 600; i++)
	{
		CHECK_FOR_INTERRUPTS();
		pg_usleep(100000L);
	}
}
