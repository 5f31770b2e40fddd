/*
 * tl_checkpoint.h - reading and writing model weight files.
 *
 * Readers accept PyTorch zip checkpoints (torch.save since 1.6), the legacy
 * pre-1.6 torch.save format, and safetensors.  Pickles are read by a
 * restricted unpickler that knows only what a plain state_dict needs and
 * refuses any other global by name (TL_E_FORBIDDEN); it never executes code.
 * Every size and offset in the file is checked before use.
 *
 * OWNER: weights (issue 5).  Contract for the PostgreSQL layer and tests.
 */
#ifndef TL_CHECKPOINT_H
#define TL_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tl_error.h"
#include "tl_tensor.h"

typedef enum tl_ckpt_format
{
	TL_CKPT_UNKNOWN = 0,
	TL_CKPT_TORCH_ZIP,
	TL_CKPT_TORCH_LEGACY,
	TL_CKPT_SAFETENSORS
} tl_ckpt_format;

const char *tl_ckpt_format_name(tl_ckpt_format fmt);
tl_ckpt_format tl_ckpt_sniff(const uint8_t *data, size_t len);

typedef struct tl_ckpt_limits
{
	int64_t		max_total_bytes;	/* sum of tensor bytes */
	int64_t		max_tensors;
	int			max_pickle_depth;
} tl_ckpt_limits;

extern const tl_ckpt_limits tl_ckpt_default_limits;

/*
 * Read any supported format into a new state dict (fp32; f16/bf16/f64
 * converted; BatchNorm's int64 num_batches_tracked dropped).  limits may be
 * NULL for the defaults.  fmt (may be NULL) gets the detected format even on
 * failure.  On failure *out is NULL.
 */
tl_code		tl_checkpoint_read(const uint8_t *data, size_t len, const tl_ckpt_limits *limits,
							   tl_state_dict **out, tl_ckpt_format *fmt, tl_error *err);

/* The format readers tl_checkpoint_read dispatches to, callable directly. */
tl_code		tl_safetensors_read(const uint8_t *data, size_t len, const tl_ckpt_limits *limits,
								tl_state_dict **out, tl_error *err);
tl_code		tl_torch_zip_read(const uint8_t *data, size_t len, const tl_ckpt_limits *limits,
							  tl_state_dict **out, tl_error *err);
tl_code		tl_torch_legacy_read(const uint8_t *data, size_t len, const tl_ckpt_limits *limits,
								 tl_state_dict **out, tl_error *err);

/*
 * The string value of a safetensors "__metadata__" key (malloc'd; NULL when
 * absent or not a string), after the same header checks as the reader.
 */
tl_code		tl_safetensors_metadata(const uint8_t *data, size_t len, const char *key,
									char **value, tl_error *err);
/* A JSON array of strings (strictly parsed) into n malloc'd strings in a malloc'd array. */
tl_code		tl_json_string_array(const char *json, char ***items, int *n, tl_error *err);

/*
 * BatchNorm's int64 step counter ("bn1.num_batches_tracked"): readers drop
 * it, the tables don't store it, and the .pth writer adds zeros for it.
 */
bool		tl_ckpt_is_batch_counter(const char *key);

/* safetensors with optional string metadata (keys/values arrays of n_meta). */
tl_code		tl_safetensors_write(const tl_state_dict *sd, const char *const *meta_keys,
								 const char *const *meta_values, int n_meta,
								 uint8_t **out, size_t *len, tl_error *err);
/* A zip checkpoint that torch.load(weights_only=True) reads. */
tl_code		tl_torch_zip_write(const tl_state_dict *sd, uint8_t **out, size_t *len,
							   tl_error *err);

#endif
