/*
 * train/worker.c - the training background worker: the tutorial's
 * train_model loop for one run (docs/training.md).
 *
 * The worker connects as the role that called tl_train, takes the run's
 * advisory lock (its "alive" mark, see api.c), waits for the launching
 * transaction, then:
 *   - reads the dataset's train and val images in one snapshot, as that role,
 *     and decodes each once for the whole run;
 *   - builds the network (base model or torchvision init, new fc);
 *   - per epoch: shuffled train phase with train transforms and an SGD step
 *     per batch, then the val phase in eval mode; each phase's loss and
 *     accuracy committed (and NOTIFYed) as it ends, a checkpoint with the val
 *     row; the best val accuracy's weights kept (strictly greater, like the
 *     tutorial);
 *   - stores the best weights as a new model in the same transaction that
 *     marks the run succeeded.
 * Errors mark the run failed, a cancel (SIGINT from tl_cancel) cancelled;
 * either way nothing of a model is written.  All computation happens outside
 * transactions; every table write is a short transaction of its own.
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "model_store.h"
#include "pg_error.h"
#include "tl_image.h"
#include "train.h"
#include "transfer_pg.h"

/* Seconds between progress-row updates. */
#define PROGRESS_INTERVAL_US (2 * USECS_PER_SEC)

/* Everything the core allocated for the run, freed on any exit path. */
typedef struct worker_state
{
	tl_resnet  *net;
	tl_sgd	   *opt;
	tl_state_dict *best;
	tl_image   *images;			/* train images first, then val ("train" < "val") */
	int			n_images;
	float	   *x;
	int32	   *y;
	tl_feature_cache *features; /* cache_features => true (features.c) */
} worker_state;

static worker_state W;
static MemoryContext run_cxt;

static void
free_state(void)
{
	if (W.images)
		for (int i = 0; i < W.n_images; i++)
			tl_image_free(&W.images[i]);
	tl_sgd_free(W.opt);
	tl_resnet_free(W.net);
	tl_sd_free(W.best);
	free(W.x);
	free(W.y);
	tl_features_free(W.features);
	memset(&W, 0, sizeof(W));
}

/* ---------- transactions ---------- */

static void
begin_tx(bool repeatable_read)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (repeatable_read)
		XactIsoLevel = XACT_REPEATABLE_READ;	/* before the first snapshot */
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
end_tx(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(run_cxt);
}

static void
exec_sql(const char *sql, int nargs, Oid *types, Datum *values, int expect)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0);

	if (rc != expect)
		elog(ERROR, "query failed (%s): %s", SPI_result_code_string(rc), sql);
}

static void
notify(const char *payload)
{
	Async_Notify(TL_TRAIN_CHANNEL, payload);
}

/* ---------- claiming the run ---------- */

static bool
take_run_lock(int64 run)
{
	LOCKTAG		tag;
	uint32		k1,
				k2;

	tl_run_lock_tag(run, &k1, &k2);
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, k1, k2, TL_RUN_LOCK_SUBID);
	return LockAcquire(&tag, ExclusiveLock, true, true) != LOCKACQUIRE_NOT_AVAIL;
}

/* The row of a detached launch, from the caller's DSM segment. */
static bool
insert_detached_run(int64 run, dsm_handle h)
{
	dsm_segment *seg = dsm_attach(h);
	char	   *dataset;
	char	   *args;
	int32		mode;
	StringInfoData q;
	Oid			types[4] = {INT8OID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[4];

	if (seg == NULL)
		return false;			/* the caller gave up before we started */
	{
		const tl_detached_run *d = dsm_segment_address(seg);

		if (d->run != run)
			elog(ERROR, "launch data is for run " INT64_FORMAT ", not " INT64_FORMAT, d->run, run);
		mode = d->mode;
		dataset = pnstrdup(d->data, d->dataset_len);
		args = pnstrdup(d->data + d->dataset_len + 1, d->args_len);
	}
	dsm_detach(seg);

	initStringInfo(&q);
	appendStringInfo(&q,
					 "INSERT INTO %s (id, dataset, mode, args, status, pid, started) "
					 "VALUES ($1, $2, $3, $4::jsonb, 'running', pg_backend_pid(), now())",
					 tl_qualified("tl_runs"));
	values[0] = Int64GetDatum(run);
	values[1] = CStringGetTextDatum(dataset);
	values[2] = CStringGetTextDatum(tl_train_mode_name((tl_train_mode) mode));
	values[3] = CStringGetTextDatum(args);
	exec_sql(q.data, 4, types, values, SPI_OK_INSERT);
	return true;
}

/*
 * Move the run to running.  false: there is nothing for this worker to do
 * (the launching transaction rolled back, or the run is no longer waiting).
 */
static bool
claim_run(int64 run, const tl_launch_extra *extra)
{
	StringInfoData q;
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run)};
	const char *expect;
	char	   *status;

	if (extra->kind == TL_LAUNCH_NEW_DETACHED)
		return insert_detached_run(run, extra->dsm_handle);

	initStringInfo(&q);
	appendStringInfo(&q, "SELECT status FROM %s WHERE id = $1 FOR UPDATE", tl_qualified("tl_runs"));
	exec_sql(q.data, 1, types, values, SPI_OK_SELECT);
	if (SPI_processed != 1)
		return false;
	status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	expect = extra->kind == TL_LAUNCH_RESUME_DETACHED ? "interrupted" : "queued";
	if (strcmp(status, expect) != 0)
		return false;

	resetStringInfo(&q);
	appendStringInfo(&q,
					 "UPDATE %s SET status = 'running', pid = pg_backend_pid(), "
					 "started = coalesce(started, now()), finished = NULL, error = NULL%s "
					 "WHERE id = $1",
					 tl_qualified("tl_runs"),
					 extra->kind == TL_LAUNCH_RESUME_DETACHED ? ", resumes = resumes + 1" : "");
	exec_sql(q.data, 1, types, values, SPI_OK_UPDATE);
	return true;
}

/* ---------- the data ---------- */

typedef struct run_data
{
	int			num_classes;
	char	  **classes;
	int64	   *ids;			/* n_train + n_val, train first */
	int32	   *labels;
	int			n_train;
	int			n_val;
} run_data;

/*
 * Fetch and decode images.  by_ids: the given ids in their order (resume);
 * otherwise the dataset's train then val images in ImageFolder order.
 */
static void
load_images(const char *dataset, run_data *d, bool by_ids)
{
	StringInfoData q;
	SPIPlanPtr	plan;
	Portal		portal;
	Oid			types[1];
	Datum		values[1];
	MemoryContext tmp = AllocSetContextCreate(CurrentMemoryContext, "tl_train image batch",
											  ALLOCSET_DEFAULT_SIZES);
	int			n_total = by_ids ? d->n_train + d->n_val : 0;
	int			cap = by_ids ? n_total : 256;
	int			n = 0;
	bool	   *seen = NULL;

	initStringInfo(&q);
	if (by_ids)
	{
		appendStringInfo(&q, "SELECT id, split, label, img FROM %s WHERE id = ANY ($1)",
						 tl_qualified("tl_images"));
		types[0] = INT8ARRAYOID;
		{
			Datum	   *ds = palloc(sizeof(Datum) * Max(n_total, 1));

			for (int i = 0; i < n_total; i++)
				ds[i] = Int64GetDatum(d->ids[i]);
			values[0] = PointerGetDatum(construct_array(ds, n_total, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		}
		seen = palloc0(sizeof(bool) * Max(n_total, 1));
	}
	else
	{
		appendStringInfo(&q,
						 "SELECT id, split, label, img FROM %s WHERE dataset = $1 AND split IN ('train', 'val') "
						 "ORDER BY split COLLATE \"C\", label COLLATE \"C\", name COLLATE \"C\", id",
						 tl_qualified("tl_images"));
		types[0] = TEXTOID;
		values[0] = CStringGetTextDatum(dataset);
		d->ids = MemoryContextAlloc(run_cxt, sizeof(int64) * cap);
		d->labels = MemoryContextAlloc(run_cxt, sizeof(int32) * cap);
		d->n_train = d->n_val = 0;
	}
	W.images = MemoryContextAllocZero(run_cxt, sizeof(tl_image) * Max(cap, 1));
	W.n_images = by_ids ? n_total : 0;

	plan = SPI_prepare(q.data, 1, types);
	if (plan == NULL)
		elog(ERROR, "could not prepare image scan");
	portal = SPI_cursor_open(NULL, plan, values, NULL, true);
	for (;;)
	{
		/* each chunk's images are decoded together, on the compute threads */
		int		   *chunk_idx;
		int64	   *chunk_id;
		const uint8 **chunk_data;
		size_t	   *chunk_len;
		int			m = 0;

		SPI_cursor_fetch(portal, true, 32);
		if (SPI_processed == 0)
			break;
		chunk_idx = MemoryContextAlloc(tmp, sizeof(int) * SPI_processed);
		chunk_id = MemoryContextAlloc(tmp, sizeof(int64) * SPI_processed);
		chunk_data = MemoryContextAlloc(tmp, sizeof(uint8 *) * SPI_processed);
		chunk_len = MemoryContextAlloc(tmp, sizeof(size_t) * SPI_processed);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			char	   *split = SPI_getvalue(tup, desc, 2);
			char	   *label = SPI_getvalue(tup, desc, 3);
			int			cls = -1;
			int			idx;
			MemoryContext old;

			for (int c = 0; c < d->num_classes; c++)
				if (strcmp(d->classes[c], label) == 0)
					cls = c;
			if (cls < 0)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_EXCEPTION),
						 errmsg("image %lld has label \"%s\", which is not a class of the run", (long long) id, label)));
			if (by_ids)
			{
				/* position of this id in the run's order */
				idx = -1;
				for (int k = 0; k < n_total; k++)
					if (d->ids[k] == id && !seen[k])
					{
						idx = k;
						break;
					}
				if (idx < 0)
					continue;
				seen[idx] = true;
				d->labels[idx] = cls;
			}
			else
			{
				if (n == cap)
				{
					cap *= 2;
					d->ids = repalloc(d->ids, sizeof(int64) * cap);
					d->labels = repalloc(d->labels, sizeof(int32) * cap);
					W.images = repalloc(W.images, sizeof(tl_image) * cap);
					memset(&W.images[n], 0, sizeof(tl_image) * (cap - n));
				}
				idx = n++;
				d->ids[idx] = id;
				d->labels[idx] = cls;
				if (strcmp(split, "train") == 0)
					d->n_train++;
				else
					d->n_val++;
				W.n_images = n;
			}
			old = MemoryContextSwitchTo(tmp);
			{
				bytea	   *img = DatumGetByteaPP(SPI_getbinval(tup, desc, 4, &isnull));

				chunk_idx[m] = idx;
				chunk_id[m] = id;
				chunk_data[m] = (const uint8 *) VARDATA_ANY(img);
				chunk_len[m] = VARSIZE_ANY_EXHDR(img);
				m++;
			}
			MemoryContextSwitchTo(old);
		}
		tl_decode_images(W.images, m, chunk_idx, chunk_id, chunk_data, chunk_len);
		SPI_freetuptable(SPI_tuptable);
		MemoryContextReset(tmp);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
	MemoryContextDelete(tmp);

	if (by_ids)
	{
		int			missing = 0;

		for (int k = 0; k < n_total; k++)
			if (!seen[k])
				missing++;
		if (missing > 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("%d of the %d images of the run are gone or no longer readable", missing, n_total),
					 errdetail("A resumed run trains on exactly the images it started with.")));
	}
}

static void
load_classes(int64 run, run_data *d)
{
	StringInfoData q;
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run)};

	initStringInfo(&q);
	appendStringInfo(&q,
					 "SELECT c FROM %s, jsonb_array_elements_text(args->'classes') WITH ORDINALITY AS a(c, i) "
					 "WHERE id = $1 ORDER BY i", tl_qualified("tl_runs"));
	exec_sql(q.data, 1, types, values, SPI_OK_SELECT);
	if (SPI_processed < 2)
		elog(ERROR, "run " INT64_FORMAT " has no classes recorded", run);
	d->num_classes = (int) SPI_processed;
	d->classes = MemoryContextAlloc(run_cxt, sizeof(char *) * d->num_classes);
	for (int i = 0; i < d->num_classes; i++)
	{
		/* the row is the run role's to edit: a class may be null or repeated */
		char	   *c = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		if (c == NULL || c[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("run " INT64_FORMAT " has a null or empty class name recorded", run)));
		for (int j = 0; j < i; j++)
			if (strcmp(d->classes[j], c) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("run " INT64_FORMAT " has class \"%s\" recorded twice", run, c)));
		d->classes[i] = MemoryContextStrdup(run_cxt, c);
	}
}

static void
record_classes(int64 run, const run_data *d)
{
	StringInfoData q;
	StringInfoData js;
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		values[2];

	initStringInfo(&js);
	appendStringInfo(&js, "{\"train_images\": %d, \"val_images\": %d, \"num_classes\": %d, \"classes\": [",
					 d->n_train, d->n_val, d->num_classes);
	for (int i = 0; i < d->num_classes; i++)
	{
		if (i)
			appendStringInfoString(&js, ", ");
		escape_json(&js, d->classes[i]);
	}
	appendStringInfoString(&js, "]}");
	initStringInfo(&q);
	appendStringInfo(&q, "UPDATE %s SET args = args || $2::jsonb WHERE id = $1", tl_qualified("tl_runs"));
	values[0] = Int64GetDatum(run);
	values[1] = CStringGetTextDatum(js.data);
	exec_sql(q.data, 2, types, values, SPI_OK_UPDATE);
}

/* ---------- progress ---------- */

typedef struct progress
{
	int64		run;
	int			epochs;
	int			epoch;
	const char *phase;
	int			batch;
	int			batches;
	int			train_batches;	/* per epoch */
	int			val_batches;
	double		train_batch_s;	/* measured seconds per batch, 0 = unknown */
	double		val_batch_s;
	double		epoch_s;		/* mean wall time of a whole epoch (with writes), 0 = unknown */
	TimestampTz last_write;
} progress;

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

static void
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

/* ---------- epochs ---------- */

static void
insert_epoch_row(int64 run, int epoch, const char *phase, double loss, double acc, double lr,
				 double seconds)
{
	StringInfoData q;
	StringInfoData js;
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

	initStringInfo(&js);
	appendStringInfo(&js,
					 "{\"run\": " INT64_FORMAT ", \"epoch\": %d, \"phase\": \"%s\", \"loss\": %.17g, "
					 "\"acc\": %.17g, \"lr\": %.17g, \"seconds\": %.3f}",
					 run, epoch, phase, loss, acc, lr, seconds);
	notify(js.data);
}

static void
check(tl_code rc, const tl_error *err, const char *what)
{
	if (rc != TL_OK)
		tl_pg_raise(err, what);
}

typedef struct phase_result
{
	double		loss;
	double		acc;
} phase_result;

static phase_result
run_phase(progress *p, const tl_run_args *args, const run_data *d, bool train, tl_rng *rng,
		  int32 *order)
{
	int			n = train ? d->n_train : d->n_val;
	int			first = train ? 0 : d->n_train;
	int			bs = args->batch_size;
	int			S = args->image_size;
	double		running_loss = 0;
	int64		corrects = 0;
	TimestampTz start = GetCurrentTimestamp();
	phase_result r;
	int		   *batch_idx = palloc(sizeof(int) * bs);
	tl_rng	   *batch_rng = palloc(sizeof(tl_rng) * bs);

	p->phase = train ? "train" : "val";
	p->batches = (n + bs - 1) / bs;
	p->batch = 0;
	report_progress(p, true);

	if (train)
	{
		/* a fresh permutation each epoch, like RandomSampler */
		for (int i = 0; i < n; i++)
			order[i] = i;
		tl_rng_shuffle(rng, order, n);
	}

	for (int b = 0; b < p->batches; b++)
	{
		int			k = Min(bs, n - b * bs);
		tl_error	err;
		tl_batch_result res;

		CHECK_FOR_INTERRUPTS();
		for (int j = 0; j < k; j++)
		{
			batch_idx[j] = first + (train ? order[b * bs + j] : b * bs + j);
			/* one draw per image seeds its own stream: thread-count independent */
			if (train)
				tl_rng_seed(&batch_rng[j], tl_rng_next(rng));
			W.y[j] = d->labels[batch_idx[j]];
		}
		tl_transform_batch(W.images, batch_idx, k, train ? batch_rng : NULL, S, W.x);
		memset(&res, 0, sizeof(res));
		if (train)
			check(tl_resnet_train_step(W.net, W.opt, W.x, W.y, k, &res, &err), &err, "train step");
		else
			check(tl_resnet_eval_step(W.net, W.x, W.y, k, &res, &err), &err, "eval step");
		if (!isfinite(res.loss))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("training diverged: the loss of epoch %d batch %d is not finite", p->epoch, b),
					 errhint("Use a smaller lr.")));
		running_loss += res.loss * k;
		corrects += res.correct;

		p->batch = b + 1;
		{
			double		per_batch = (double) (GetCurrentTimestamp() - start) / USECS_PER_SEC / p->batch;

			if (train)
				p->train_batch_s = per_batch;
			else
				p->val_batch_s = per_batch;
		}
		report_progress(p, false);
	}
	r.loss = running_loss / n;
	r.acc = (double) corrects / n;
	pfree(batch_idx);
	pfree(batch_rng);
	return r;
}

/* cache_features => true: every image's features once, then the images are freed. */
static void
features_progress(void *arg, int done, int total)
{
	progress   *p = arg;

	p->batch = done;
	p->batches = total;
	report_progress(p, false);
}

static void
compute_features(const tl_run_args *args, const run_data *d, int64 run)
{
	progress	p;

	memset(&p, 0, sizeof(p));
	p.run = run;
	p.epochs = args->epochs;
	p.phase = "features";
	report_progress(&p, true);
	W.features = tl_features_compute(W.net, W.images, d->n_train + d->n_val, args->image_size,
									 args->batch_size, W.x, features_progress, &p);
	for (int i = 0; i < W.n_images; i++)
		tl_image_free(&W.images[i]);
	W.n_images = 0;
}

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

static void
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

static void
finish_success(int64 run, const tl_run_args *args, const run_data *d, double best_acc, int best_epoch)
{
	StringInfoData q;
	Oid			types[4] = {INT8OID, INT8OID, FLOAT8OID, INT4OID};
	Datum		values[4];
	int64		model_id;

	model_id = tl_store_save(args->model_name, W.best, (const char *const *) d->classes,
							 d->num_classes, args->image_size, model_source(run),
							 model_metrics(best_acc, best_epoch));
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
	notify(psprintf("{\"run\": " INT64_FORMAT ", \"status\": \"succeeded\", \"model_id\": " INT64_FORMAT
					", \"best_val_acc\": %.17g}", run, model_id, best_acc));
}

/* Final bookkeeping of a failed or cancelled run. */
static void
finish_unsuccessful(int64 run, const char *status, const char *message)
{
	StringInfoData q;
	StringInfoData js;
	Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		values[3];

	begin_tx(false);
	initStringInfo(&q);
	/* queued too: a cancel can arrive before the run was claimed */
	appendStringInfo(&q,
					 "UPDATE %s SET status = $2, error = $3, finished = now() "
					 "WHERE id = $1 AND status IN ('queued', 'running')", tl_qualified("tl_runs"));
	values[0] = Int64GetDatum(run);
	values[1] = CStringGetTextDatum(status);
	values[2] = CStringGetTextDatum(message);
	exec_sql(q.data, 3, types, values, SPI_OK_UPDATE);
	if (SPI_processed == 0)
	{
		/* not this worker's run (any more): leave it as it is */
		end_tx();
		return;
	}
	resetStringInfo(&q);
	appendStringInfo(&q, "DELETE FROM %s WHERE run = $1", tl_qualified("tl_run_checkpoints"));
	exec_sql(q.data, 1, types, values, SPI_OK_DELETE);
	resetStringInfo(&q);
	appendStringInfo(&q, "DELETE FROM %s WHERE run = $1", tl_qualified("tl_run_progress"));
	exec_sql(q.data, 1, types, values, SPI_OK_DELETE);
	initStringInfo(&js);
	appendStringInfo(&js, "{\"run\": " INT64_FORMAT ", \"status\": ", run);
	escape_json(&js, status);
	appendStringInfoString(&js, ", \"error\": ");
	/* NOTIFY payloads must stay under 8000 bytes */
	escape_json(&js, strlen(message) > 1000 ? psprintf("%.1000s...", message) : message);
	appendStringInfoChar(&js, '}');
	notify(js.data);
	end_tx();
}

/* The run itself, from claimed to succeeded.  Errors propagate. */
static void
train_run(int64 run, const tl_launch_extra *extra)
{
	tl_run_args args;
	run_data	d;
	tl_ckpt		ck;
	bool		have_ck = false;
	tl_rng		rng;
	tl_error	err;
	int			start_epoch = 0;
	double		best_acc = 0;
	int			best_epoch = -1;
	int			best_saved = -2;	/* best_epoch whose weights the checkpoint holds */
	progress	p;
	int32	   *order;
	tl_resnet_config cfg;
	int			epochs_timed = 0;

	memset(&d, 0, sizeof(d));

	/* arguments and resume point */
	begin_tx(false);
	tl_run_args_load(run, &args);
	args.dataset = MemoryContextStrdup(run_cxt, args.dataset);
	args.model_name = MemoryContextStrdup(run_cxt, args.model_name);
	if (args.base_model)
		args.base_model = MemoryContextStrdup(run_cxt, args.base_model);
	if (extra->kind == TL_LAUNCH_RESUME || extra->kind == TL_LAUNCH_RESUME_DETACHED)
	{
		MemoryContext old = MemoryContextSwitchTo(run_cxt);

		have_ck = tl_ckpt_load_meta(run, &ck);
		MemoryContextSwitchTo(old);
	}
	end_tx();

	tl_set_num_threads(args.threads);
	tl_set_conv_algorithm(args.conv_algorithm);

	/* the data, in one snapshot, as the calling role */
	begin_tx(true);
	if (have_ck)
	{
		load_classes(run, &d);
		if (ck.n_train == 0 || ck.n_val == 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("the resume point of run " INT64_FORMAT " lists no %s images",
							run, ck.n_train == 0 ? "train" : "val")));
		d.n_train = ck.n_train;
		d.n_val = ck.n_val;
		d.ids = MemoryContextAlloc(run_cxt, sizeof(int64) * Max(ck.n_train + ck.n_val, 1));
		d.labels = MemoryContextAlloc(run_cxt, sizeof(int32) * Max(ck.n_train + ck.n_val, 1));
		memcpy(d.ids, ck.train_ids, sizeof(int64) * ck.n_train);
		memcpy(d.ids + ck.n_train, ck.val_ids, sizeof(int64) * ck.n_val);
		load_images(args.dataset, &d, true);
	}
	else
	{
		tl_dataset_info info;

		tl_dataset_check(args.dataset, &info);
		d.num_classes = info.num_classes;
		d.classes = MemoryContextAlloc(run_cxt, sizeof(char *) * info.num_classes);
		for (int i = 0; i < info.num_classes; i++)
			d.classes[i] = MemoryContextStrdup(run_cxt, info.classes[i]);
		load_images(args.dataset, &d, false);
		record_classes(run, &d);
	}
	end_tx();

	/* the network */
	cfg.num_classes = d.num_classes;
	cfg.base_width = args.base_width;
	W.net = tl_resnet_new(&cfg, &err);
	if (W.net == NULL)
		tl_pg_raise(&err, "creating the network");

	if (have_ck && ck.epoch >= 0)
	{
		tl_state_dict *sd;

		begin_tx(false);
		sd = tl_ckpt_load_part(run, "model");
		if (tl_resnet_load_state_dict(W.net, sd, 0, &err) != TL_OK)
		{
			tl_sd_free(sd);
			tl_pg_raise(&err, "loading the checkpoint");
		}
		tl_sd_free(sd);
		W.best = tl_ckpt_load_part(run, "best");
		end_tx();
		rng = ck.rng;
		start_epoch = ck.epoch + 1;
		best_acc = ck.best_acc;
		best_epoch = ck.best_epoch;
		best_saved = ck.best_epoch;
	}
	else
	{
		tl_rng_seed(&rng, (uint64) args.seed);
		if (args.from_scratch)
			tl_resnet_init_random(W.net, &rng);
		else
		{
			tl_state_dict *sd;

			begin_tx(false);
			sd = tl_store_load(args.base_model_id, NULL);
			check(tl_resnet_load_state_dict(W.net, sd, TL_LOAD_SKIP_FC, &err), &err,
				  "loading the base model");
			end_tx();
		}
		tl_resnet_init_fc(W.net, &rng);
		/* the tutorial starts with best_model_wts = the initial weights, best_acc = 0 */
		W.best = tl_resnet_state_dict(W.net, &err);
		if (W.best == NULL)
			tl_pg_raise(&err, "copying the initial weights");

		begin_tx(false);
		tl_ckpt_begin(run, d.ids, d.n_train, d.ids + d.n_train, d.n_val, &rng);
		end_tx();
	}

	check(tl_resnet_plan(W.net, args.batch_size, args.image_size, args.image_size, args.mode, &err),
		  &err, "planning the network");
	{
		tl_sgd_config sc;

		memset(&sc, 0, sizeof(sc));
		sc.lr = args.lr;
		sc.momentum = args.momentum;
		W.opt = tl_sgd_new(W.net, &sc, &err);
		if (W.opt == NULL)
			tl_pg_raise(&err, "creating the optimizer");
	}
	if (have_ck && ck.epoch >= 0)
	{
		tl_state_dict *mom;

		begin_tx(false);
		mom = tl_ckpt_load_part(run, "momentum");
		end_tx();
		if (tl_sgd_load_state_dict(W.opt, mom, &err) != TL_OK)
		{
			tl_sd_free(mom);
			tl_pg_raise(&err, "loading the checkpoint's momentum buffers");
		}
		tl_sd_free(mom);
	}

	W.x = malloc(sizeof(float) * (size_t) args.batch_size * args.image_size * args.image_size * 3);
	W.y = malloc(sizeof(int32) * args.batch_size);
	if (W.x == NULL || W.y == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	order = MemoryContextAlloc(run_cxt, sizeof(int32) * Max(d.n_train, 1));
	if (args.cache_features)
		compute_features(&args, &d, run);

	memset(&p, 0, sizeof(p));
	p.run = run;
	p.epochs = args.epochs;
	p.train_batches = (d.n_train + args.batch_size - 1) / args.batch_size;
	p.val_batches = (d.n_val + args.batch_size - 1) / args.batch_size;

	/* the resume point is the run role's to edit: it may lie past the end */
	if (start_epoch >= args.epochs)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the resume point of run " INT64_FORMAT " (epoch %d) is past its last epoch (%d)",
						run, start_epoch - 1, args.epochs - 1)));
	for (int epoch = start_epoch; epoch < args.epochs; epoch++)
	{
		double		lr = tl_steplr_lr(args.lr, args.gamma, args.step_size, epoch);
		phase_result tr,
					va;
		TimestampTz t0,
					epoch_start;
		bool		last = epoch == args.epochs - 1;

		p.epoch = epoch;
		tl_sgd_set_lr(W.opt, lr);

		t0 = epoch_start = GetCurrentTimestamp();
		if (W.features)
			tl_features_phase(W.features, W.net, W.opt, true, 0, d.n_train, d.labels,
							  args.batch_size, lr, args.momentum, &rng, order, epoch,
							  &tr.loss, &tr.acc);
		else
			tr = run_phase(&p, &args, &d, true, &rng, order);
		begin_tx(false);
		insert_epoch_row(run, epoch, "train", tr.loss, tr.acc, lr,
						 (double) (GetCurrentTimestamp() - t0) / USECS_PER_SEC);
		end_tx();

		t0 = GetCurrentTimestamp();
		if (W.features)
			tl_features_phase(W.features, W.net, W.opt, false, d.n_train, d.n_val, d.labels,
							  args.batch_size, lr, args.momentum, &rng, order, epoch,
							  &va.loss, &va.acc);
		else
			va = run_phase(&p, &args, &d, false, &rng, order);
		if (va.acc > best_acc)
		{
			tl_state_dict *sd = tl_resnet_state_dict(W.net, &err);

			if (sd == NULL)
				tl_pg_raise(&err, "copying the best weights");
			tl_sd_free(W.best);
			W.best = sd;
			best_acc = va.acc;
			best_epoch = epoch;
		}

		/* the val row, the run's summary and the resume point (or the model) commit together */
		begin_tx(false);
		insert_epoch_row(run, epoch, "val", va.loss, va.acc, lr,
						 (double) (GetCurrentTimestamp() - t0) / USECS_PER_SEC);
		update_run_epoch(run, epoch + 1, best_acc, best_epoch);
		if (last)
			finish_success(run, &args, &d, best_acc, best_epoch);
		else
		{
			tl_state_dict *model = tl_resnet_state_dict(W.net, &err);
			tl_state_dict *mom;

			if (model == NULL)
				tl_pg_raise(&err, "checkpointing");
			mom = tl_sgd_state_dict(W.opt, &err);
			if (mom == NULL)
			{
				tl_sd_free(model);
				tl_pg_raise(&err, "checkpointing");
			}
			PG_TRY();
			{
				tl_ckpt_save(run, epoch, best_acc, best_epoch, &rng, model, mom,
							 best_saved != best_epoch ? W.best : NULL);
			}
			PG_FINALLY();
			{
				tl_sd_free(model);
				tl_sd_free(mom);
			}
			PG_END_TRY();
		}
		end_tx();
		best_saved = best_epoch;
		epochs_timed++;
		p.epoch_s += ((double) (GetCurrentTimestamp() - epoch_start) / USECS_PER_SEC - p.epoch_s) / epochs_timed;
	}
}

void
tl_train_worker_main(Datum main_arg)
{
	int64		run = DatumGetInt64(main_arg);
	tl_launch_extra extra;
	volatile bool claimed = false;

	memcpy(&extra, MyBgworkerEntry->bgw_extra, sizeof(extra));

	/* SIGTERM: die at the next CHECK_FOR_INTERRUPTS, never inside BLAS or malloc */
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(extra.database, extra.role, 0);

	/*
	 * The role's and database's settings apply to this connection, search_path
	 * included; the worker's queries name tables by schema but not every
	 * operator, so run under the path tl_train itself runs under.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_OVERRIDE);
	pgstat_report_appname(TL_TRAIN_WORKER_TYPE);
	run_cxt = AllocSetContextCreate(TopMemoryContext, "tl_train run", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(run_cxt);

	/* the run's lock first: from here on the run counts as alive */
	StartTransactionCommand();
	if (!take_run_lock(run))
	{
		CommitTransactionCommand();
		elog(LOG, "training run " INT64_FORMAT " already has a worker", run);
		proc_exit(0);
	}
	CommitTransactionCommand();
	MemoryContextSwitchTo(run_cxt);

	PG_TRY();
	{
		if (extra.kind == TL_LAUNCH_NEW || extra.kind == TL_LAUNCH_RESUME)
		{
			/* its row becomes visible (or never exists) when that transaction ends */
			pgstat_report_activity(STATE_RUNNING, "waiting for the transaction that started the run");
			StartTransactionCommand();
			XactLockTableWait(extra.launcher_xid, NULL, NULL, XLTW_None);
			CommitTransactionCommand();
			MemoryContextSwitchTo(run_cxt);
		}
		begin_tx(false);
		claimed = claim_run(run, &extra);
		end_tx();
		if (claimed)
		{
			pgstat_report_activity(STATE_RUNNING, psprintf("training run " INT64_FORMAT, run));
			train_run(run, &extra);
		}
	}
	PG_CATCH();
	{
		ErrorData  *e;
		bool		cancelled;

		HOLD_CANCEL_INTERRUPTS();
		MemoryContextSwitchTo(run_cxt);
		e = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		MemoryContextSwitchTo(run_cxt);
		free_state();
		cancelled = e->sqlerrcode == ERRCODE_QUERY_CANCELED;
		if (!cancelled)
			ereport(LOG,
					(errmsg("training run " INT64_FORMAT " failed%s: %s", run,
							claimed ? "" : " before it started", e->message)));
		finish_unsuccessful(run, cancelled ? "cancelled" : "failed",
							cancelled ? "cancelled by request" : e->message);
		RESUME_CANCEL_INTERRUPTS();
		proc_exit(0);
	}
	PG_END_TRY();

	free_state();
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
}
