/*
 * train.h - declarations shared by the files of src/pg/train/, the training
 * run's lifecycle; private to the folder (no file outside it includes this).
 *
 * In the calling backend: api.c (the SQL functions) -> launch.c (starting
 * and following a worker) -> runs.c (a run's row and lock).  In the worker:
 * worker.c (which takes the run's lock in runs.c) -> images.c, phase.c,
 * finish.c -> progress.c -> worker_state.c.
 * Both use data.c (datasets, run arguments), checkpoint.c (resume points),
 * batch.c (decoding and transforms on the compute threads) and features.c
 * (cache_features); plot.c is tl_plot.  Calls only go that way:
 * scripts/check-layering.sh fails on any circle between files.
 */
#ifndef TL_TRAIN_H
#define TL_TRAIN_H

#include "postgres.h"

#include "access/transam.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "utils/array.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "image/tl_image.h"
#include "nn/tl_resnet.h"

#include "source.h"

/* bgw_type: what pg_stat_activity.backend_type shows for a training worker. */
#define TL_TRAIN_WORKER_TYPE "transfer training worker"
/* NOTIFY channel with one JSON payload per finished epoch phase. */
#define TL_TRAIN_CHANNEL "tl_train"
/* Name of the default pretrained base model (scripts/fetch-pretrained.sh). */
#define TL_DEFAULT_BASE_MODEL "resnet18-imagenet"

/*
 * Advisory lock held (session level) by the worker of a run for its whole
 * life: "the run has a live worker" is "someone holds this lock", which a
 * crash, kill -9 or restart releases.  Key: (TL_RUN_LOCK_CLASS ^ high bits
 * of the run id, low bits) with objsubid TL_RUN_LOCK_SUBID.  SQL's
 * pg_advisory_lock functions only use objsubid 1 (bigint key) and 2 (two
 * int4 keys), so no role can take or hold a run's lock from SQL; it still
 * shows in pg_locks as classid / objid / objsubid 3.
 */
#define TL_RUN_LOCK_CLASS 0x746c7472	/* "tltr" */
#define TL_RUN_LOCK_SUBID 3

/* What the launcher passes in bgw_extra. */
typedef enum tl_launch_kind
{
	TL_LAUNCH_NEW = 0,			/* run row inserted by the launching transaction */
	TL_LAUNCH_NEW_DETACHED,		/* wait => true: the worker inserts the row from DSM */
	TL_LAUNCH_RESUME,			/* row set to queued by the launching transaction */
	TL_LAUNCH_RESUME_DETACHED	/* wait => true resume: worker takes it from interrupted */
} tl_launch_kind;

typedef struct tl_launch_extra
{
	Oid			database;
	Oid			role;
	TransactionId launcher_xid; /* worker waits for it to end (non-detached kinds) */
	int32		kind;			/* tl_launch_kind */
	uint32		dsm_handle;		/* detached new run: its row's values */
} tl_launch_extra;

/* The DSM segment of a detached launch: the row's values for the worker. */
typedef struct tl_detached_run
{
	int64		run;
	int32		mode;
	uint32		dataset_len;
	uint32		args_len;
	char		data[FLEXIBLE_ARRAY_MEMBER];	/* dataset \0 args \0 */
} tl_detached_run;

/* The hyperparameters of a run, as recorded in tl_runs.args. */
typedef struct tl_run_args
{
	tl_train_mode mode;
	char	   *dataset;
	int			epochs;
	int			batch_size;
	double		lr;
	double		momentum;
	int			step_size;
	double		gamma;
	bool		from_scratch;
	char	   *base_model;		/* NULL when from_scratch */
	int64		base_model_id;	/* 0 when from_scratch */
	char	   *model_name;
	int64		seed;
	int			image_size;
	int			base_width;
	int			threads;
	int			num_classes;
	bool		cache_features; /* feature_extractor on cached features (features.c) */
	tl_conv_algorithm conv_algorithm;	/* transfer.conv_algorithm of the caller */
	int			memory_limit;	/* transfer.train_memory_limit (MB) of the caller, -1 unknown */
} tl_run_args;

/*
 * What a run's memory estimate needs of its images: their compressed bytes
 * (held for the whole run), the largest decoded image (each compute thread
 * holds one at a time) and their count.
 */
typedef struct tl_data_size
{
	double		bytes;
	double		max_decoded;
	int64		n;
} tl_data_size;

/* Count one image of len compressed bytes and w x h pixels. */
static inline void
tl_data_size_add(tl_data_size *size, size_t len, int w, int h)
{
	size->bytes += len;
	size->max_decoded = Max(size->max_decoded, 3.0 * w * h);
	size->n++;
}

/* data.c: one dataset as a run sees it. */
typedef struct tl_dataset_info
{
	int			num_classes;
	char	  **classes;		/* sorted in code-point order (ImageFolder) */
	int64		n_train;
	int64		n_val;
} tl_dataset_info;

extern const char *tl_train_mode_name(tl_train_mode mode);

/* Schema-qualified name of an extension object, quoted ("transfer.tl_runs"). */
extern const char *tl_qualified(const char *name);

/* Check a dataset as the current role sees it; ereports on every problem. */
extern void tl_dataset_check(const char *dataset, tl_dataset_info *info);
/* Index of a label in info->classes, or -1. */
extern int	tl_dataset_class_index(const tl_dataset_info *info, const char *label);

/*
 * tl_train: false when `dataset` is a tl_images dataset or names no relation
 * (relid from tl_source_resolve_name); else check the relation and read it
 * with tl_train's arguments image_column .. val_fraction.
 */
extern bool tl_source_prepare(FunctionCallInfo fcinfo, const char *dataset, Oid relid, int64 seed,
							  tl_source *src, tl_dataset_info *info, tl_data_size *size);
/* Read the rows once: skip bad ones (NOTICE), split, check classes and parts. */
extern void tl_source_read(tl_source *src, double val_fraction, int64 seed,
						   tl_dataset_info *info, tl_data_size *size);
/* tl_runs.args JSON (from tl_run_args_json) with the source added. */
extern char *tl_source_args_json(const char *json, const tl_source *src);
/* A run's recorded source; false for a tl_images run. */
extern bool tl_source_load(int64 run, tl_source *src);
/* SELECT id, split, label, img of the source's rows whose id = ANY ($1). */
extern char *tl_source_rows_sql(const tl_source *src);

/* Estimated peak memory of a training worker, in bytes (size NULL: no images). */
extern double tl_train_memory_estimate(const tl_run_args *args, const tl_data_size *size);
/* transfer.train_memory_limit in bytes as it applies to a run (0 = none). */
extern double tl_train_memory_limit_bytes(const tl_run_args *args);

/* args as the JSON text stored in tl_runs.args (classes may be NULL). */
extern char *tl_run_args_json(const tl_run_args *args, const tl_dataset_info *classes);
/* Read a run's args back (inside a transaction, SPI connected). */
extern void tl_run_args_load(int64 run, tl_run_args *args);

/* runs.c: the pid holding a run's worker lock, or 0. */
extern int	tl_run_worker_pid(int64 run);
extern void tl_run_lock_tag(int64 run, uint32 *key1, uint32 *key2);

/* checkpoint.c: a run's resume point (inside a transaction, SPI connected). */
typedef struct tl_ckpt
{
	int			epoch;			/* last finished epoch, -1 before the first */
	double		best_acc;
	int			best_epoch;		/* -1: the initial weights are the best so far */
	tl_rng		rng;
	int64	   *train_ids;
	int			n_train;
	int64	   *val_ids;
	int			n_val;
} tl_ckpt;

extern void tl_ckpt_begin(int64 run, const int64 *train_ids, int n_train,
						  const int64 *val_ids, int n_val, const tl_rng *rng);
/* best may be NULL when the best weights did not change since the last save. */
extern void tl_ckpt_save(int64 run, int epoch, double best_acc, int best_epoch, const tl_rng *rng,
						 const tl_state_dict *model, const tl_state_dict *momentum,
						 const tl_state_dict *best);
extern bool tl_ckpt_load_meta(int64 run, tl_ckpt *c);
/* A malloc'd state dict (caller frees with tl_sd_free). */
extern tl_state_dict *tl_ckpt_load_part(int64 run, const char *part);

/*
 * A run's image as stored: its compressed bytes, decoded when a batch uses
 * it.  A val image may also have its eval transform's pixels (crop: size^2
 * RGB bytes, before normalisation), made once while loading, so that no
 * epoch decodes it again; at most TL_VAL_CROPS_BYTES of them per run.
 */
typedef struct tl_blob
{
	const uint8 *data;
	size_t		len;
	uint8	   *crop;			/* NULL: decoded each time */
} tl_blob;

#define TL_VAL_CROPS_BYTES ((double) 128 * 1024 * 1024)

/*
 * batch.c: per-image work on the compute threads.  tl_check_images decodes
 * images[0..n) (ids[i]), fills the crop of those that have one (eval
 * transform at size) and drops the pixels: a bad image fails the run while
 * loading, and *max_decoded is raised to the largest decoded size.
 * tl_transform_batch transforms images[idx[i]] into x + i * size^2 * 3:
 * decoded, with the train transform drawing from rngs[i], or with the eval
 * transform when rngs is NULL (from its crop if it has one).  Both ereport
 * the first failure.
 */
extern void tl_check_images(const tl_blob *images, int n, const int64 *ids, int size,
							double *max_decoded);
extern void tl_transform_batch(const tl_blob *images, const int64 *ids, const int *idx, int n,
							   tl_rng *rngs, int size, float *x);

/* features.c: feature_extractor runs with cache_features => true */
typedef struct tl_feature_cache tl_feature_cache;
typedef void (*tl_features_progress_fn) (void *arg, int done, int total);

/*
 * Backbone features of images[0..n) (eval transform at image_size, eval-mode
 * forward in batches of `batch` through x, a batch * image_size^2 * 3 input
 * buffer).  ereports on errors; the result is freed with tl_features_free.
 */
extern tl_feature_cache *tl_features_compute(tl_resnet *net, const tl_blob *images,
											 const int64 *ids, int n,
											 int image_size, int batch, float *x,
											 tl_features_progress_fn progress, void *progress_arg);
/*
 * One phase over cached images [first, first + n): train shuffles with rng
 * into order (n entries) and takes an SGD step on fc per batch; val only
 * evaluates.  Loss and accuracy as run_phase computes them.
 */
extern void tl_features_phase(tl_feature_cache *fc, tl_resnet *net, tl_sgd *opt, bool train,
							  int first, int n, const int32 *labels, int batch, double lr,
							  double momentum, tl_rng *rng, int32 *order, int epoch,
							  double *loss_out, double *acc_out);
extern void tl_features_free(tl_feature_cache *fc);

/*
 * Shared by the files of train/ only (static before train.c and
 * train_worker.c were split by concern).  Hidden, so that their short names
 * never leave transfer.so: PostgreSQL loads libraries with RTLD_GLOBAL,
 * where a global "check" or "notify" could bind to another library's symbol
 * or another library's calls to ours.
 */
#pragma GCC visibility push(hidden)

/* checkpoint.c: a bigint[] of a run's image ids (no NULL) as a palloc'd array. */
extern int64 *array_int64(ArrayType *a, int *n);

/* runs.c: a run's row (inside a transaction, SPI connected) and its lock. */

/* A run's status and whether the current transaction created its row. */
typedef struct run_row
{
	bool		found;
	char		status[16];
	bool		mine;			/* inserted or last updated by this transaction */
	int			pid;
} run_row;

extern run_row read_run(int64 run);
extern run_row read_run_or_error(int64 run);
extern bool status_active(const char *status);
extern void mark_interrupted(int64 run);
extern run_row current_run(int64 run);
extern void reap_dead_runs(void);
extern bool take_run_lock(int64 run);

/* launch.c: starting a run's worker and following the run. */
extern BackgroundWorkerHandle *register_worker(int64 run, tl_launch_kind kind, TransactionId xid,
											   dsm_handle seg, pid_t *pid);
extern void wait_for_lock(int64 run, BackgroundWorkerHandle *handle);
extern void set_run_pid(int64 run, int pid);
extern void check_wait_allowed(void);
extern char *follow_run(int64 run, BackgroundWorkerHandle *handle, TimestampTz deadline,
						bool notices);
extern void follow_detached(int64 run, BackgroundWorkerHandle *handle);

/* worker_state.c: what the worker's files share. */

/* Everything the core allocated for the run, freed on any exit path. */
typedef struct worker_state
{
	tl_resnet  *net;
	tl_sgd	   *opt;
	tl_state_dict *best;
	tl_blob    *images;			/* train images first, then val ("train" < "val") */
	int			n_images;
	MemoryContext images_cxt;	/* the compressed bytes (images.c) */
	float	   *x;
	int32	   *y;
	tl_feature_cache *features; /* cache_features => true (features.c) */
} worker_state;

extern worker_state W;
extern MemoryContext run_cxt;
extern void begin_tx(bool repeatable_read);
extern void end_tx(void);
extern void exec_sql(const char *sql, int nargs, Oid *types, Datum *values, int expect);
extern void check(tl_code rc, const tl_error *err, const char *what);

/* progress.c: what a running worker reports. */
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

extern void notify(int64 run);
extern void report_progress(progress *p, bool force);
extern void insert_epoch_row(int64 run, int epoch, const char *phase, double loss, double acc,
							 double lr, double seconds);
extern void update_run_epoch(int64 run, int epochs_done, double best_acc, int best_epoch);

/* images.c: the run's classes and images (compressed). */
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
 * src: a relation source (by_ids only), or NULL for tl_images.  Fails with
 * 54000 as soon as the images read so far put the run's estimate over
 * tl_train_memory_limit_bytes(args).
 */
extern void load_images(const tl_run_args *args, const tl_source *src, run_data *d, bool by_ids);

/*
 * best.c: the best weights.  best_set makes sd (the network's state dict,
 * checked against W.net) W.best, without the tensors a run of this mode
 * never changes; best_update copies W.net's values into it; best_view is a
 * palloc'd state dict for storing or checkpointing (never tl_sd_free it),
 * the best weights (best) or the network's current ones, its data
 * W.best's or W.net's own.
 */
extern void best_set(tl_train_mode mode, tl_state_dict *sd);
/* best_set of the network's current weights (a new run's starting point) */
extern void best_init(tl_train_mode mode);
extern void best_update(void);
extern tl_state_dict *best_view(bool best);

/* debug_pause.c: transfer.debug_pause_at, for tests only */
extern void tl_debug_pause(const char *stage);
extern void tl_debug_fail(const char *stage);

/* start_wait.c: false when the launching transaction outlived transfer.train_start_timeout */
extern bool tl_wait_for_launcher(TransactionId xid);
extern void load_classes(int64 run, run_data *d);
extern void record_classes(int64 run, const run_data *d);

/* phase.c: one pass over the images. */
typedef struct phase_result
{
	double		loss;
	double		acc;
} phase_result;

extern phase_result run_phase(progress *p, const tl_run_args *args, const run_data *d, bool train,
							  tl_rng *rng, int32 *order);
extern void compute_features(const tl_run_args *args, const run_data *d, int64 run);

/* finish.c: the end of a run. */
extern void finish_success(int64 run, const tl_run_args *args, const run_data *d, double best_acc,
						   int best_epoch);
extern void finish_unsuccessful(int64 run, const char *status, const char *message);
extern void finish_unsuccessful_minimal(int64 run, const char *status, const char *message);

#pragma GCC visibility pop

/* worker.c */
extern PGDLLEXPORT void tl_train_worker_main(Datum main_arg);

#endif
