/*
 * model_store.h - models in tables: the C API that import, training and
 * prediction use to look up, load and save models.
 *
 * Models live in @extschema@.tl_stored_models (one row per model) and
 * @extschema@.tl_model_tensors (one row per state_dict tensor, fp32
 * little-endian bytea).  Every function here runs inside the caller's
 * transaction through SPI, with the caller's privileges, and reports errors
 * with ereport(ERROR).  Functions connect to SPI themselves (nesting is fine
 * when the caller is already connected).  The reads (lookup, info, load) run
 * read-only in the caller's active snapshot, as STABLE callers (tl_export,
 * tl_evaluate, prediction) must: a change committed while the statement runs
 * is not seen.  A caller that wrote rows earlier in the same call would not
 * see them either; none does.
 *
 * OWNER: weights (issue 5).
 */
#ifndef TL_MODEL_STORE_H
#define TL_MODEL_STORE_H

#include "postgres.h"

#include "utils/jsonb.h"

#include "nn/tl_resnet.h"
#include "tl_tensor.h"

/* What a model row says about its network and classes (palloc'd in the caller's context). */
typedef struct TlModelInfo
{
	int64		id;
	char	   *name;
	char	   *arch;			/* "resnet18" */
	int			num_classes;	/* fc outputs */
	int			base_width;		/* 64 for torchvision's ResNet-18 */
	int			image_size;		/* input side the model was trained for (224) */
	char	  **classes;		/* num_classes names in index order */
} TlModelInfo;

/*
 * Model id by name.  Unknown name: ERROR (undefined_object, 42704), or 0 when
 * missing_ok.
 */
int64		tl_store_lookup(const char *name, bool missing_ok);

/* Fill info for a model id (ERROR if there is no such model). */
void		tl_store_info(int64 model_id, TlModelInfo *info);

/*
 * Load a model's tensors as a state dict and check it with
 * tl_resnet_check_state_dict (so it fits tl_resnet_load_state_dict).  info
 * (may be NULL) is filled as by tl_store_info.
 *
 * Ownership: the dict is malloc'd by the core but tied to the
 * CurrentMemoryContext at the time of the call by a reset callback, so it is
 * freed when that context is reset or deleted, including on error.  Never
 * tl_sd_free() it.  To release it early, load it in a child context and
 * delete that context.
 */
tl_state_dict *tl_store_load(int64 model_id, TlModelInfo *info);

/*
 * The checks of tl_store_load (every key and shape against a ResNet-18, the
 * row's width and classes, each tensor's byte count) without reading the
 * weights: what tl_train needs to accept a base model before its worker
 * loads it.  info (may be NULL) is filled as by tl_store_info.
 */
void		tl_store_check(int64 model_id, TlModelInfo *info);

/*
 * A new network with a model's weights loaded, for prediction: the same
 * checks as tl_store_load, without a state dict left over.  The network is
 * malloc'd and the caller's to tl_resnet_free (also when a later step
 * raises).  info (may be NULL) is filled as by tl_store_info.
 */
tl_resnet  *tl_store_load_network(int64 model_id, TlModelInfo *info);

/*
 * Copy a stored model's weights into an existing network, as
 * tl_resnet_load_state_dict(net, flags) would from tl_store_load's dict,
 * with the same checks, but without the dict: each tensor goes from the
 * table straight into net (the base model of a training run).  Keys the
 * network has no tensor for (num_batches_tracked) are skipped; with
 * TL_LOAD_SKIP_FC so is fc.*, which may then differ in shape.  info (may be
 * NULL) is filled as by tl_store_info.
 */
void		tl_store_load_into(int64 model_id, tl_resnet *net, unsigned flags, TlModelInfo *info);

/*
 * Save a state dict as a new model and return its id.  The dict is checked
 * with tl_resnet_check_state_dict; num_batches_tracked entries are not
 * stored.  classes: n_classes names in index order, which must equal fc's
 * outputs, or NULL for generated names "class_0" .. "class_<n-1>".
 * source and metrics may be NULL (stored as '{}' and NULL).  A duplicate name
 * is ERROR unique_violation (23505).  The dict stays the caller's.
 */
int64		tl_store_save(const char *name, const tl_state_dict *sd,
						  const char *const *classes, int n_classes, int image_size,
						  Jsonb *source, Jsonb *metrics);

/* Replace a model's metrics (ERROR if there is no such model). */
void		tl_store_set_metrics(int64 model_id, Jsonb *metrics);

/* Tie a malloc'd state dict to a memory context: freed when it is reset or deleted. */
void		tl_store_attach_sd(MemoryContext cxt, tl_state_dict *sd);

#endif
