/*
 * train/progress.c - what a running worker reports: the pg_stat_activity
 * line and the tl_run_progress row with its ETA (per batch, the row at most
 * every PROGRESS_INTERVAL_US), each finished phase's tl_run_epochs row and
 * NOTIFY on TL_TRAIN_CHANNEL, and the run's summary in tl_runs per epoch.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "train.h"

/* Seconds between progress-row updates. */
#define PROGRESS_INTERVAL_US (2 * USECS_PER_SEC)

/*
 * The run's id only: LISTEN needs no privilege, so a payload must say nothing
 * that row-level security on tl_runs hides.  Listeners read the run's rows.
 */
void
notify(int64 run)
{
	Async_Notify(TL_TRAIN_CHANNEL, psprintf("{\"run\": " INT64_FORMAT "}", run));
}

static double
eta_seconds(const progress *p)
{
	double		tt = p->train_batch_s,
				tv = p->val_batch_s > 0 ? p->val_batch_s : tt / 3;
	int			rest_epochs = p->epochs - p->epoch - 1;
	double		compute = p->train_batches * tt + p->val_batches * tv;
	double		epoch_s = p->epoch_s > 0 ? p->epoch_s : compute;
	double		eta;

	if (tt <= 0)
		return -1;
	if (strcmp(p->phase, "train") == 0)
		eta = (p->batches - p->batch) * tt + p->val_batches * tv;
	else
		eta = (p->batches - p->batch) * tv;
	/* what an epoch spends beyond its batches: epoch rows and the checkpoint */
	eta += Max(epoch_s - compute, 0);
	return eta + rest_epochs * epoch_s;
}

void
report_progress(progress *p, bool force)
{
	TimestampTz now = GetCurrentTimestamp();
	char		activity[128];

	snprintf(activity, sizeof(activity), "training run " INT64_FORMAT ": epoch %d/%d %s batch %d/%d",
			 p->run, p->epoch, p->epochs - 1, p->phase, p->batch, p->batches);
	pgstat_report_activity(STATE_RUNNING, activity);

	if (!force && now - p->last_write < PROGRESS_INTERVAL_US)
		return;
	p->last_write = now;
	{
		StringInfoData q;
		Oid			types[6] = {INT8OID, INT4OID, TEXTOID, INT4OID, INT4OID, FLOAT8OID};
		Datum		values[6];
		char		nulls[6] = "      ";
		double		eta = eta_seconds(p);

		begin_tx(false);
		initStringInfo(&q);
		appendStringInfo(&q,
						 "INSERT INTO %s AS p (run, epoch, phase, batch, batches, eta_seconds, updated) "
						 "VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp()) ON CONFLICT (run) DO UPDATE SET "
						 "epoch = $2, phase = $3, batch = $4, batches = $5, eta_seconds = $6, "
						 "updated = clock_timestamp()",
						 tl_qualified("tl_run_progress"));
		values[0] = Int64GetDatum(p->run);
		values[1] = Int32GetDatum(p->epoch);
		values[2] = CStringGetTextDatum(p->phase);
		values[3] = Int32GetDatum(p->batch);
		values[4] = Int32GetDatum(p->batches);
		values[5] = Float8GetDatum(eta);
		if (eta < 0)
			nulls[5] = 'n';
		if (SPI_execute_with_args(q.data, 6, types, values, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not write progress of run " INT64_FORMAT, p->run);
		end_tx();
	}
}

void
insert_epoch_row(int64 run, int epoch, const char *phase, double loss, double acc, double lr,
				 double seconds)
{
	StringInfoData q;
	Oid			types[7] = {INT8OID, INT4OID, TEXTOID, FLOAT8OID, FLOAT8OID, FLOAT8OID, FLOAT8OID};
	Datum		values[7];

	initStringInfo(&q);
	appendStringInfo(&q,
					 "INSERT INTO %s (run, epoch, phase, loss, acc, lr, seconds) "
					 "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (run, epoch, phase) DO UPDATE SET "
					 "loss = $4, acc = $5, lr = $6, seconds = $7",
					 tl_qualified("tl_run_epochs"));
	values[0] = Int64GetDatum(run);
	values[1] = Int32GetDatum(epoch);
	values[2] = CStringGetTextDatum(phase);
	values[3] = Float8GetDatum(loss);
	values[4] = Float8GetDatum(acc);
	values[5] = Float8GetDatum(lr);
	values[6] = Float8GetDatum(seconds);
	exec_sql(q.data, 7, types, values, SPI_OK_INSERT);
	notify(run);
}

void
update_run_epoch(int64 run, int epochs_done, double best_acc, int best_epoch)
{
	StringInfoData q;
	Oid			types[4] = {INT8OID, INT4OID, FLOAT8OID, INT4OID};
	Datum		values[4];

	initStringInfo(&q);
	appendStringInfo(&q,
					 "UPDATE %s SET epochs_done = $2, best_val_acc = $3, best_epoch = $4 WHERE id = $1",
					 tl_qualified("tl_runs"));
	values[0] = Int64GetDatum(run);
	values[1] = Int32GetDatum(epochs_done);
	values[2] = Float8GetDatum(best_acc);
	values[3] = Int32GetDatum(best_epoch);
	exec_sql(q.data, 4, types, values, SPI_OK_UPDATE);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("run " INT64_FORMAT " was deleted while it was training", run)));
}
