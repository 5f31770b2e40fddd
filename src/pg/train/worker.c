/*
 * train/worker.c - the training background worker: the tutorial's
 * train_model loop for one run (docs/training.md).
 *
 * The worker connects as the role that called tl_train, takes the run's
 * advisory lock (its "alive" mark, see runs.c), waits for the launching
 * transaction, then:
 *   - reads the dataset's train and val images in one snapshot, as that role,
 *     and keeps their compressed bytes (each batch decodes its images);
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
 *
 * This file has the entry point, claiming the run and the loop over epochs;
 * the images are images.c's, a phase phase.c's, progress progress.c's and
 * the end of a run finish.c's.
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
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "model_store.h"
#include "pg_error.h"
#include "train.h"

static void
free_state(void)
{
	if (W.images_cxt)
		MemoryContextDelete(W.images_cxt);
	tl_sgd_free(W.opt);
	tl_resnet_free(W.net);
	tl_sd_free(W.best);
	free(W.x);
	free(W.y);
	tl_features_free(W.features);
	memset(&W, 0, sizeof(W));
}

/* ---------- claiming the run ---------- */

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

/* ---------- the run ---------- */

/* The run itself, from claimed to succeeded.  Errors propagate. */
static void
train_run(int64 run, const tl_launch_extra *extra)
{
	tl_run_args args;
	run_data	d;
	tl_ckpt		ck;
	bool		have_ck = false;
	tl_source	src;
	bool		have_src;
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
	{
		/* a run on the caller's own relation (source.c) */
		MemoryContext old = MemoryContextSwitchTo(run_cxt);

		have_src = tl_source_load(run, &src);
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
		load_images(&args, have_src ? &src : NULL, &d, true);
	}
	else if (have_src)
	{
		/* exactly the rows tl_train recorded, with the classes it recorded */
		load_classes(run, &d);
		d.n_train = src.n_train;
		d.n_val = src.n_val;
		d.ids = src.ids;
		d.labels = MemoryContextAlloc(run_cxt, sizeof(int32) * (src.n_train + src.n_val));
		load_images(&args, &src, &d, true);
		record_classes(run, &d);
	}
	else
	{
		tl_dataset_info info;

		tl_dataset_check(args.dataset, &info);
		d.num_classes = info.num_classes;
		d.classes = MemoryContextAlloc(run_cxt, sizeof(char *) * info.num_classes);
		for (int i = 0; i < info.num_classes; i++)
			d.classes[i] = MemoryContextStrdup(run_cxt, info.classes[i]);
		load_images(&args, NULL, &d, false);
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
		best_set(args.mode, tl_ckpt_load_part(run, "best"));
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
			begin_tx(false);
			tl_store_load_into(args.base_model_id, W.net, TL_LOAD_SKIP_FC, NULL);
			end_tx();
		}
		tl_resnet_init_fc(W.net, &rng);
		/* the tutorial starts with best_model_wts = the initial weights, best_acc = 0 */
		best_init(args.mode);

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
			best_update();
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
			/* the weights are saved from views, without copies (best.c) */
			tl_state_dict *mom = tl_sgd_state_dict(W.opt, &err);

			if (mom == NULL)
				tl_pg_raise(&err, "checkpointing");
			PG_TRY();
			{
				tl_ckpt_save(run, epoch, best_acc, best_epoch, &rng, best_view(false), mom,
							 best_saved != best_epoch ? best_view(true) : NULL);
			}
			PG_FINALLY();
			{
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

/*
 * Record a failed or cancelled run.  If that fails too, record at least the
 * status and both errors, so the run never stays running with its cause
 * only in the server log.
 */
static void
record_unsuccessful(int64 run, const char *status, const char *message)
{
	PG_TRY();
	{
		finish_unsuccessful(run, status, message);
	}
	PG_CATCH();
	{
		ErrorData  *e;

		MemoryContextSwitchTo(run_cxt);
		e = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		MemoryContextSwitchTo(run_cxt);
		ereport(LOG,
				(errmsg("could not record the end of training run " INT64_FORMAT ": %s", run, e->message)));
		PG_TRY();
		{
			finish_unsuccessful_minimal(run, status,
										psprintf("%s (and recording it failed: %s)", message, e->message));
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(run_cxt);
			e = CopyErrorData();
			FlushErrorState();
			AbortOutOfAnyTransaction();
			ereport(LOG,
					(errmsg("could not record the status of training run " INT64_FORMAT ": %s", run, e->message)));
		}
		PG_END_TRY();
	}
	PG_END_TRY();
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
			if (!tl_wait_for_launcher(extra.launcher_xid))
			{
				CommitTransactionCommand();
				elog(LOG, "training run " INT64_FORMAT ": gave up waiting for the transaction that started it "
					 "(transfer.train_start_timeout)", run);
				proc_exit(0);
			}
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
		/* keep the error's detail and hint: tl_runs.error is all the user sees */
		record_unsuccessful(run, cancelled ? "cancelled" : "failed",
							cancelled ? "cancelled by request" :
							psprintf("%s%s%s%s%s", e->message,
									 e->detail ? "\nDETAIL: " : "", e->detail ? e->detail : "",
									 e->hint ? "\nHINT: " : "", e->hint ? e->hint : ""));
		RESUME_CANCEL_INTERRUPTS();
		proc_exit(0);
	}
	PG_END_TRY();

	free_state();
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
}
