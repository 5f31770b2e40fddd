/* tl_tensor.c - named tensors and ordered state dicts. */
#include "tl_tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int64_t
tl_shape_numel(int ndim, const int64_t *shape, int64_t limit)
{
	int64_t		n = 1;

	if (ndim < 0 || ndim > TL_MAX_DIMS)
		return -1;
	for (int i = 0; i < ndim; i++)
	{
		if (shape[i] < 0)
			return -1;
		if (shape[i] != 0 && n > limit / shape[i])
			return -1;
		n *= shape[i];
	}
	return n;
}

int64_t
tl_tensor_numel(const tl_tensor *t)
{
	return tl_shape_numel(t->ndim, t->shape, INT64_MAX);
}

tl_state_dict *
tl_sd_new(tl_error *err)
{
	tl_state_dict *sd = calloc(1, sizeof(*sd));

	if (!sd)
		tl_fail(err, TL_E_NOMEM, "out of memory allocating a state dict");
	return sd;
}

void
tl_sd_free(tl_state_dict *sd)
{
	if (!sd)
		return;
	for (int i = 0; i < sd->n; i++)
	{
		free(sd->tensors[i].name);
		free(sd->tensors[i].data);
	}
	free(sd->tensors);
	free(sd);
}

tl_tensor *
tl_sd_find(const tl_state_dict *sd, const char *name)
{
	for (int i = 0; i < sd->n; i++)
		if (strcmp(sd->tensors[i].name, name) == 0)
			return &sd->tensors[i];
	return NULL;
}

int
tl_sd_remove(tl_state_dict *sd, const char *name)
{
	tl_tensor  *t = tl_sd_find(sd, name);
	int			i;

	if (!t)
		return 0;
	i = (int) (t - sd->tensors);
	free(t->name);
	free(t->data);
	memmove(&sd->tensors[i], &sd->tensors[i + 1], (size_t) (sd->n - i - 1) * sizeof(tl_tensor));
	sd->n--;
	return 1;
}

tl_code
tl_sd_add_owned(tl_state_dict *sd, const char *name, int ndim,
				const int64_t *shape, float *data, tl_error *err)
{
	tl_tensor  *t;
	size_t		len = strlen(name);

	if (len == 0 || len >= TL_MAX_KEY_LEN)
	{
		free(data);
		return tl_fail(err, TL_E_INVALID, "tensor name must be 1 to %d bytes long", TL_MAX_KEY_LEN - 1);
	}
	if (ndim < 0 || ndim > TL_MAX_DIMS || tl_shape_numel(ndim, shape, INT64_MAX / 4) < 0)
	{
		free(data);
		return tl_fail(err, TL_E_INVALID, "tensor \"%s\" has an invalid shape", name);
	}
	if (tl_sd_find(sd, name))
	{
		free(data);
		return tl_fail(err, TL_E_CORRUPT, "duplicate tensor \"%s\"", name);
	}
	if (sd->n == sd->cap)
	{
		int			cap = sd->cap ? sd->cap * 2 : 16;
		tl_tensor  *grown = realloc(sd->tensors, (size_t) cap * sizeof(tl_tensor));

		if (!grown)
		{
			free(data);
			return tl_fail(err, TL_E_NOMEM, "out of memory growing a state dict");
		}
		sd->tensors = grown;
		sd->cap = cap;
	}
	t = &sd->tensors[sd->n];
	memset(t, 0, sizeof(*t));
	t->name = strdup(name);
	if (!t->name)
	{
		free(data);
		return tl_fail(err, TL_E_NOMEM, "out of memory");
	}
	t->ndim = ndim;
	for (int i = 0; i < ndim; i++)
		t->shape[i] = shape[i];
	t->data = data;
	sd->n++;
	return TL_OK;
}

tl_code
tl_sd_add(tl_state_dict *sd, const char *name, int ndim,
		  const int64_t *shape, const float *data, tl_error *err)
{
	int64_t		numel = tl_shape_numel(ndim, shape, INT64_MAX / 4);
	float	   *copy;

	if (numel < 0)
		return tl_fail(err, TL_E_INVALID, "tensor \"%s\" has an invalid shape", name);
	copy = malloc((size_t) (numel ? numel : 1) * sizeof(float));
	if (!copy)
		return tl_fail(err, TL_E_NOMEM, "out of memory for tensor \"%s\" (%lld elements)",
					   name, (long long) numel);
	if (data)
		memcpy(copy, data, (size_t) numel * sizeof(float));
	else
		memset(copy, 0, (size_t) numel * sizeof(float));
	return tl_sd_add_owned(sd, name, ndim, shape, copy, err);
}

const char *
tl_shape_str(int ndim, const int64_t *shape, char *buf, size_t buflen)
{
	size_t		off = 0;

	if (buflen == 0)
		return buf;
	off += snprintf(buf + off, buflen - off, "[");
	for (int i = 0; i < ndim && off < buflen; i++)
		off += snprintf(buf + off, buflen - off, i ? ", %lld" : "%lld", (long long) shape[i]);
	if (off < buflen)
		snprintf(buf + off, buflen - off, "]");
	return buf;
}
