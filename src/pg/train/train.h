/*
 * train.h - declarations shared by the training files of the PostgreSQL
 * layer: the launcher (api.c), the background worker (worker.c),
 * dataset checks (data.c) and checkpoints (checkpoint.c).
 */
#ifndef TL_TRAIN_H
#define TL_TRAIN_H

#include "postgres.h"

#include "access/transam.h"
#include "lib/stringinfo.h"
#include "utils/jsonb.h"

#include "tl_image.h"
#include "tl_resnet.h"

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
} tl_run_args;

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

/* Estimated peak memory of a training worker, in bytes. */
extern double tl_train_memory_estimate(const tl_run_args *args, double image_bytes);

/* args as the JSON text stored in tl_runs.args (classes may be NULL). */
extern char *tl_run_args_json(const tl_run_args *args, const tl_dataset_info *classes);
/* Read a run's args back (inside a transaction, SPI connected). */
extern void tl_run_args_load(int64 run, tl_run_args *args);

/* api.c: the pid holding a run's worker lock, or 0. */
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
 * batch.c: per-image work on the compute threads.  Decode data[i]
 * (len[i] bytes, image ids[i]) into images[idx[i]]; transform images[idx[i]]
 * into x + i * size^2 * 3, with the train transform drawing from rngs[i], or
 * the eval transform when rngs is NULL.  Both ereport the first failure.
 */
extern void tl_decode_images(tl_image *images, int n, const int *idx, const int64 *ids,
							 const uint8 *const *data, const size_t *len);
extern void tl_transform_batch(const tl_image *images, const int *idx, int n, tl_rng *rngs,
							   int size, float *x);

/* features.c: feature_extractor runs with cache_features => true */
typedef struct tl_feature_cache tl_feature_cache;
typedef void (*tl_features_progress_fn) (void *arg, int done, int total);

/*
 * Backbone features of images[0..n) (eval transform at image_size, eval-mode
 * forward in batches of `batch` through x, a batch * image_size^2 * 3 input
 * buffer).  ereports on errors; the result is freed with tl_features_free.
 */
extern tl_feature_cache *tl_features_compute(tl_resnet *net, const tl_image *images, int n,
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

/* worker.c */
extern PGDLLEXPORT void tl_train_worker_main(Datum main_arg);

#endif
