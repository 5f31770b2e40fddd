/*
 * tl_checkpoint_internal.h - pieces shared by the checkpoint readers and
 * writers (tl_safetensors.c, tl_zip.c, tl_pickle.c, tl_checkpoint.c).
 * Not part of the contract: nothing outside those files includes it.
 */
#ifndef TL_CHECKPOINT_INTERNAL_H
#define TL_CHECKPOINT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tl_checkpoint.h"

typedef enum tl_elem_type
{
	TL_ELEM_F32,
	TL_ELEM_F16,
	TL_ELEM_BF16,
	TL_ELEM_F64
} tl_elem_type;

/* Little-endian src of numel elements to fp32 (dst must hold numel floats). */
void		tl_convert_to_f32(tl_elem_type type, const uint8_t *src, int64_t numel, float *dst);
float		tl_half_to_float(uint16_t h);

/* numel floats as little-endian bytes. */
void		tl_put_f32le(uint8_t *dst, const float *src, int64_t numel);

/* BatchNorm's int64 step counter ("...num_batches_tracked"), which loaders drop. */
bool		tl_ckpt_is_batch_counter(const char *key);

#endif
