/*
 * tl_tensor.h - named fp32 tensors and state dicts.
 *
 * A tl_state_dict is the core's exchange format between checkpoint readers
 * and writers, the network and the tables: an ordered list of tensors keyed
 * by torchvision's state_dict names ("conv1.weight", "bn1.running_mean",
 * "layer2.0.downsample.1.weight", "fc.bias", ...).  Data is fp32, C order,
 * owned by the dict.
 */
#ifndef TL_TENSOR_H
#define TL_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "tl_error.h"

#define TL_MAX_DIMS 8
#define TL_MAX_KEY_LEN 256

typedef struct tl_tensor
{
	char	   *name;			/* state_dict key, owned */
	int			ndim;			/* 0 (scalar) .. TL_MAX_DIMS */
	int64_t		shape[TL_MAX_DIMS];
	float	   *data;			/* numel floats, owned */
} tl_tensor;

typedef struct tl_state_dict
{
	int			n;
	int			cap;
	tl_tensor  *tensors;
} tl_state_dict;

/* Number of elements for a shape; -1 if negative dims or overflow past limit. */
int64_t		tl_shape_numel(int ndim, const int64_t *shape, int64_t limit);
int64_t		tl_tensor_numel(const tl_tensor *t);

tl_state_dict *tl_sd_new(tl_error *err);
void		tl_sd_free(tl_state_dict *sd);

/*
 * Append a tensor.  If data is NULL the tensor is zero-filled; otherwise the
 * numel floats are copied.  Fails on a duplicate or over-long key.
 */
tl_code		tl_sd_add(tl_state_dict *sd, const char *name, int ndim,
					  const int64_t *shape, const float *data, tl_error *err);

/* Append a tensor taking ownership of a malloc'ed data buffer (freed on failure too). */
tl_code		tl_sd_add_owned(tl_state_dict *sd, const char *name, int ndim,
							const int64_t *shape, float *data, tl_error *err);

tl_tensor  *tl_sd_find(const tl_state_dict *sd, const char *name);

/* Remove a tensor by name; returns 1 if it was there. */
int			tl_sd_remove(tl_state_dict *sd, const char *name);

/* "[512, 256, 3, 3]" into buf, for error messages. */
const char *tl_shape_str(int ndim, const int64_t *shape, char *buf, size_t buflen);

#endif
