/*
 * model_cache.h - per-backend cache of models ready for prediction.
 *
 * Each backend (and each parallel worker) keeps up to
 * transfer.model_cache_size models loaded: the network with its weights and
 * batch-1 buffers planned for the model's image size.  Every lookup (for a
 * function called per row, the statement's first; see the memo below) asks
 * the tables, in the caller's snapshot, which row version of the model is
 * current (id, xmin, ctid) and which row versions its tensors are (a hash of
 * their xmin and ctid); a cached entry is used only if it was built from
 * exactly those versions.  Reading tl_model_tensors on every lookup also
 * checks the current user's privileges on each hit, as a fresh load would
 * (42501), so SET ROLE cannot reuse a model another role loaded.  So a
 * replaced, deleted or newly deployed model is seen by the next statement in
 * every process, on a hot standby too, and the check is one cached-plan
 * index lookup, far cheaper than an inference.
 *
 * Entries are malloc'd core objects, freed on eviction (least recently used
 * first) or when a newer version of the same model is loaded.  A network's
 * weights may be a private mapping of another process's model file
 * (model_file.c), unmapped when the entry is freed.
 */
#ifndef TL_MODEL_CACHE_H
#define TL_MODEL_CACHE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/itemptr.h"

#include "nn/tl_resnet.h"

typedef struct tl_cached_model
{
	/* The row version of tl_stored_models the entry was built from. */
	int64		id;
	TransactionId xmin;
	ItemPointerData ctid;
	int64		tensors_version;	/* hash of its tensors' row versions */

	char	   *name;			/* malloc'd */
	int			num_classes;
	char	  **classes;		/* num_classes malloc'd names */
	int			image_size;		/* CenterCrop size */
	int			resize;			/* Resize of the shorter side: tl_eval_resize_for() */

	tl_resnet  *net;			/* planned for batch 1 at image_size */
	float	   *input;			/* image_size^2 * 3, HWC */
	float	   *probs;			/* num_classes */
	size_t		bytes;			/* weights + planned buffers + the above */

	uint64		last_used;		/* LRU clock */
	int64		hits;			/* calls served since loaded */
	TimestampTz loaded_at;
	int			pins;			/* > 0 while a caller holds it across SPI calls */
} tl_cached_model;

/*
 * The model named `model` (NULL: the deployed model, or before any deployment
 * the newest trained one), loaded if needed.  Raises 42704 if there is no
 * such model.  schema is the extension's schema (the calling function's
 * namespace).  The entry stays valid until the next model_cache call;
 * callers that run queries while using it pin it.
 */
tl_cached_model *tl_model_cache_get(const char *model, Oid schema);

/*
 * A call site's memo of its last lookup, for functions called once per row:
 * tl_model_cache_get_memo skips the lookup queries when the statement, the
 * snapshot (every field visibility depends on), the current user and the
 * model argument are those of the memo's lookup, and the entry is still
 * cached.  The queries'
 * answers can't differ then; privileges are checked once per statement, as
 * the executor checks a query's tables when it starts.  Allocated in cxt
 * (the function's fn_mcxt), which owns it.
 */
typedef struct tl_model_memo tl_model_memo;

tl_model_memo *tl_model_memo_create(MemoryContext cxt);
tl_cached_model *tl_model_cache_get_memo(const char *model, Oid schema, tl_model_memo *memo);

/* Keep an entry from eviction until unpinned or the transaction ends. */
void		tl_model_cache_pin(tl_cached_model *m);
void		tl_model_cache_unpin(tl_cached_model *m);

/* For the tl_model_cache() view: the entries, most recently used first. */
int			tl_model_cache_entries(tl_cached_model **out, int max);

/* Evict unpinned entries, least recently used first, until at most keep remain. */
void		tl_model_cache_trim(int keep);

#endif
