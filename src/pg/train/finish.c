/*
 * train/finish.c - the end of a run.  Success stores the best weights as a
 * new model in the transaction that marks the run succeeded; failure or a
 * cancel records the status and error and stores nothing.  Either way the
 * run's checkpoint and progress rows are deleted and a NOTIFY with the
 * run's id says that it ended.
 */
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "model_store.h"
#include "train.h"

static Jsonb *
model_source(int64 run)
{
	StringInfoData q;
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run)};
	bool		isnull;

	initStringInfo(&q);
	appendStringInfo(&q,
					 "SELECT jsonb_build_object('kind', 'trained', 'run_id', id, 'mode', mode, "
					 "'dataset', dataset) || (args - 'classes' - 'model_name' - 'num_classes') "
					 "FROM %s WHERE id = $1", tl_qualified("tl_runs"));
	exec_sql(q.data, 1, types, values, SPI_OK_SELECT);
	if (SPI_processed != 1)
		elog(ERROR, "run " INT64_FORMAT " disappeared", run);
	return DatumGetJsonbP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

static Jsonb *
model_metrics(double best_acc, int best_epoch)
{
	char	   *s = psprintf("{\"best_val_acc\": %.17g, \"best_epoch\": %d}", best_acc, best_epoch);

	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(s)));
}

void
finish_success(int64 run, const tl_run_args *args, const run_data *d, double best_acc, int best_epoch)
{
	StringInfoData q;
	Oid			types[4] = {INT8OID, INT8OID, FLOAT8OID, INT4OID};
	Datum		values[4];
	int64		model_id;

	model_id = tl_store_save(args->model_name, best_view(true), (const char *const *) d->classes,
							 d->num_classes, args->image_size, model_source(run),
							 model_metrics(best_acc, best_epoch));
	tl_debug_pause("store_model");
	initStringInfo(&q);
	appendStringInfo(&q,
					 "UPDATE %s SET status = 'succeeded', finished = now(), model_id = $2, "
					 "best_val_acc = $3, best_epoch = $4, epochs_done = (args->>'epochs')::int4, error = NULL "
					 "WHERE id = $1 AND status = 'running'",
					 tl_qualified("tl_runs"));
	values[0] = Int64GetDatum(run);
	values[1] = Int64GetDatum(model_id);
	values[2] = Float8GetDatum(best_acc);
	values[3] = Int32GetDatum(best_epoch);
	exec_sql(q.data, 4, types, values, SPI_OK_UPDATE);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("run " INT64_FORMAT " is no longer running", run)));
	resetStringInfo(&q);
	appendStringInfo(&q, "DELETE FROM %s WHERE run = $1", tl_qualified("tl_run_checkpoints"));
	exec_sql(q.data, 1, types, values, SPI_OK_DELETE);
	resetStringInfo(&q);
	appendStringInfo(&q, "DELETE FROM %s WHERE run = $1", tl_qualified("tl_run_progress"));
	exec_sql(q.data, 1, types, values, SPI_OK_DELETE);
	notify(run);
}

/*
 * Set a queued or running run's final status and error (queued too: a
 * cancel can arrive before the run was claimed).  false: not this worker's
 * run (any more), left as it is.
 */
static bool
set_final_status(int64 run, const char *status, const char *message)
{
	StringInfoData q;
	Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		values[3];

	initStringInfo(&q);
	appendStringInfo(&q,
					 "UPDATE %s SET status = $2, error = $3, finished = now() "
					 "WHERE id = $1 AND status IN ('queued', 'running')", tl_qualified("tl_runs"));
	values[0] = Int64GetDatum(run);
	values[1] = CStringGetTextDatum(status);
	values[2] = CStringGetTextDatum(message);
	exec_sql(q.data, 3, types, values, SPI_OK_UPDATE);
	return SPI_processed > 0;
}

/* Final bookkeeping of a failed or cancelled run. */
void
finish_unsuccessful(int64 run, const char *status, const char *message)
{
	StringInfoData q;
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run)};

	begin_tx(false);
	tl_debug_fail("record_failure");
	if (!set_final_status(run, status, message))
	{
		end_tx();
		return;
	}
	initStringInfo(&q);
	appendStringInfo(&q, "DELETE FROM %s WHERE run = $1", tl_qualified("tl_run_checkpoints"));
	exec_sql(q.data, 1, types, values, SPI_OK_DELETE);
	resetStringInfo(&q);
	appendStringInfo(&q, "DELETE FROM %s WHERE run = $1", tl_qualified("tl_run_progress"));
	exec_sql(q.data, 1, types, values, SPI_OK_DELETE);
	notify(run);
	end_tx();
}

/*
 * The last resort when finish_unsuccessful itself failed (a policy or a
 * table is broken, the role lost its privileges, out of memory): only the
 * run's status and error, as the bootstrap superuser so that row-level
 * security and the role's privileges can't stop it; its checkpoint and
 * progress rows stay (they go with the run).  Without it the run would
 * stay running and read as interrupted, its real cause only in the server
 * log.
 */
void
finish_unsuccessful_minimal(int64 run, const char *status, const char *message)
{
	Oid			save_userid;
	int			save_sec;

	GetUserIdAndSecContext(&save_userid, &save_sec);
	begin_tx(false);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	if (set_final_status(run, status, message))
		notify(run);
	SetUserIdAndSecContext(save_userid, save_sec);
	end_tx();
}
