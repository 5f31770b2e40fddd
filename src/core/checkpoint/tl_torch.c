/*
 * tl_torch.c - PyTorch checkpoints: the zip format of torch.save
 * since 1.6, the legacy pre-1.6 format, and writing the zip format.
 *
 * Both readers unpickle the state_dict with the restricted unpickler
 * (tl_pickle.c) and then resolve each tensor's storage: a zip entry
 * "<prefix>/data/<key>" or a raw storage record of the legacy file.  Tensor
 * views are materialised with their storage offset and strides after
 * checking that every element they address lies inside the storage.
 */
#include "tl_checkpoint.h"
#include "tl_checkpoint_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PKL_MAX_BYTES	(INT64_C(16) << 20)	/* data.pkl of ResNet-18 is 15 kB */

static int
storage_elem_size(pk_global g)
{
	switch (g)
	{
		case PKG_FLOAT_STORAGE:
			return 4;
		case PKG_HALF_STORAGE:
		case PKG_BFLOAT16_STORAGE:
			return 2;
		case PKG_DOUBLE_STORAGE:
		case PKG_LONG_STORAGE:
			return 8;
		default:
			return 0;
	}
}

static tl_elem_type
storage_elem_type(pk_global g)
{
	switch (g)
	{
		case PKG_HALF_STORAGE:
			return TL_ELEM_F16;
		case PKG_BFLOAT16_STORAGE:
			return TL_ELEM_BF16;
		case PKG_DOUBLE_STORAGE:
			return TL_ELEM_F64;
		default:
			return TL_ELEM_F32;
	}
}

/* One storage's bytes, found once per key. */
typedef struct
{
	const char *key;
	pk_global	type;
	int64_t		numel;
	const uint8_t *bytes;
	uint8_t    *owned;
} storage_ref;

typedef struct
{
	storage_ref *refs;
	int			n;
	int			cap;
} storage_table;

static void
storage_table_free(storage_table *st)
{
	for (int i = 0; i < st->n; i++)
		free(st->refs[i].owned);
	free(st->refs);
}

static storage_ref *
storage_find(storage_table *st, const char *key)
{
	for (int i = 0; i < st->n; i++)
		if (strcmp(st->refs[i].key, key) == 0)
			return &st->refs[i];
	return NULL;
}

static tl_code
storage_add(storage_table *st, const char *key, pk_global type, int64_t numel,
			const uint8_t *bytes, uint8_t *owned, tl_error *err)
{
	if (st->n == st->cap)
	{
		int			cap = st->cap ? st->cap * 2 : 64;
		storage_ref *r = realloc(st->refs, (size_t) cap * sizeof(*r));

		if (!r)
		{
			free(owned);
			return tl_fail(err, TL_E_NOMEM, "out of memory reading a checkpoint");
		}
		st->refs = r;
		st->cap = cap;
	}
	st->refs[st->n].key = key;
	st->refs[st->n].type = type;
	st->refs[st->n].numel = numel;
	st->refs[st->n].bytes = bytes;
	st->refs[st->n].owned = owned;
	st->n++;
	return TL_OK;
}

/* How a reader finds a storage's bytes that storage_table does not hold yet. */
typedef tl_code (*storage_loader) (void *ctx, const pk_obj *storage, int64_t nbytes,
								   const uint8_t **bytes, uint8_t **owned, tl_error *err);

/* fp32 copy of a tensor view, with every addressed element checked to be inside the storage. */
static tl_code
materialise(const char *name, const pk_obj *t, const storage_ref *s, int64_t numel, float **out,
			tl_error *err)
{
	int			esize = storage_elem_size(s->type);
	tl_elem_type et = storage_elem_type(s->type);
	int64_t		last = t->offset;
	bool		contiguous = true;
	int64_t		expect = 1;
	float	   *buf;

	*out = NULL;
	if (numel > 0)
	{
		for (int d = 0; d < t->ndim; d++)
		{
			int64_t		span;

			if (__builtin_mul_overflow(t->size[d] - 1, t->stride[d], &span) ||
				__builtin_add_overflow(last, span, &last))
				return tl_fail(err, TL_E_CORRUPT, "tensor \"%.200s\": strides overflow", name);
		}
		if (last >= s->numel)
			return tl_fail(err, TL_E_CORRUPT,
						   "tensor \"%.200s\": view reaches element %lld of a storage of %lld",
						   name, (long long) last, (long long) s->numel);
	}
	for (int d = t->ndim - 1; d >= 0; d--)
	{
		if (t->size[d] != 1 && t->stride[d] != expect)
			contiguous = false;
		expect *= t->size[d];
	}
	buf = malloc((size_t) (numel ? numel : 1) * sizeof(float));
	if (!buf)
		return tl_fail(err, TL_E_NOMEM, "out of memory for tensor \"%.200s\"", name);
	if (numel == 0)
		;
	else if (contiguous)
		tl_convert_to_f32(et, s->bytes + t->offset * esize, numel, buf);
	else
	{
		int64_t		idx[TL_MAX_DIMS] = {0};

		for (int64_t i = 0; i < numel; i++)
		{
			int64_t		src = t->offset;

			for (int d = 0; d < t->ndim; d++)
				src += idx[d] * t->stride[d];
			tl_convert_to_f32(et, s->bytes + src * esize, 1, &buf[i]);
			for (int d = t->ndim - 1; d >= 0; d--)
			{
				if (++idx[d] < t->size[d])
					break;
				idx[d] = 0;
			}
		}
	}
	*out = buf;
	return TL_OK;
}

/* The unpickled root, a dict of name -> tensor, into a state dict. */
static tl_code
build_state_dict(const pk_obj *root, storage_table *st, storage_loader load, void *ctx,
				 const tl_ckpt_limits *limits, tl_state_dict **out, tl_error *err)
{
	tl_state_dict *sd;
	int64_t		total = 0;
	tl_code		rc;

	*out = NULL;
	if (root->kind != PK_DICT)
		return tl_fail(err, TL_E_UNSUPPORTED,
					   "checkpoint does not hold a state_dict (a dict of tensors) at its top level");
	if (root->n / 2 > limits->max_tensors)
		return tl_fail(err, TL_E_LIMIT, "checkpoint has more than %lld tensors", (long long) limits->max_tensors);
	if (!(sd = tl_sd_new(err)))
		return TL_E_NOMEM;
	for (int i = 0; i < root->n; i += 2)
	{
		const pk_obj *k = root->items[i],
				   *t = root->items[i + 1];
		const pk_obj *s;
		storage_ref *ref;
		int64_t		numel;
		float	   *data;

		if (k->kind != PK_STR || k->len == 0 || strlen(k->str) != k->len)
		{
			rc = tl_fail(err, TL_E_CORRUPT, "state_dict key %d is not a string", i / 2);
			goto fail;
		}
		if (t->kind != PK_TENSOR)
		{
			rc = tl_fail(err, TL_E_UNSUPPORTED, "state_dict entry \"%.200s\" is not a tensor", k->str);
			goto fail;
		}
		s = t->storage;
		if (s->global == PKG_LONG_STORAGE)
		{
			/* BatchNorm's step counter is the only integer tensor of a state_dict; nothing uses it. */
			if (tl_ckpt_is_batch_counter(k->str))
				continue;
			rc = tl_fail(err, TL_E_UNSUPPORTED, "tensor \"%.200s\" is int64; only floating-point tensors are supported",
						 k->str);
			goto fail;
		}
		numel = tl_shape_numel(t->ndim, t->size, limits->max_total_bytes / 4);
		if (numel < 0 || total > limits->max_total_bytes - numel * 4)
		{
			rc = tl_fail(err, TL_E_LIMIT, "tensor \"%.200s\": tensors exceed the %lld byte limit",
						 k->str, (long long) limits->max_total_bytes);
			goto fail;
		}
		total += numel * 4;
		ref = storage_find(st, s->str);
		if (ref && ref->type != s->global)
		{
			rc = tl_fail(err, TL_E_CORRUPT, "storage \"%.64s\" is used with two element types", s->str);
			goto fail;
		}
		if (ref && ref->numel != s->ival)
		{
			rc = tl_fail(err, TL_E_CORRUPT, "storage \"%.64s\" is declared with two sizes", s->str);
			goto fail;
		}
		if (!ref)
		{
			const uint8_t *bytes = NULL;
			uint8_t    *owned = NULL;
			int64_t		nbytes;

			if (!load)
			{
				rc = tl_fail(err, TL_E_CORRUPT, "tensor \"%.200s\": storage \"%.64s\" is missing", k->str, s->str);
				goto fail;
			}
			if (__builtin_mul_overflow(s->ival, (int64_t) storage_elem_size(s->global), &nbytes) ||
				nbytes > limits->max_total_bytes * 2)
			{
				rc = tl_fail(err, TL_E_LIMIT, "storage \"%.64s\" declares %lld elements, over the limit",
							 s->str, (long long) s->ival);
				goto fail;
			}
			if ((rc = load(ctx, s, nbytes, &bytes, &owned, err)) != TL_OK)
				goto fail;
			if ((rc = storage_add(st, s->str, s->global, s->ival, bytes, owned, err)) != TL_OK)
				goto fail;
			ref = &st->refs[st->n - 1];
		}
		if ((rc = materialise(k->str, t, ref, numel, &data, err)) != TL_OK)
			goto fail;
		if ((rc = tl_sd_add_owned(sd, k->str, t->ndim, t->size, data, err)) != TL_OK)
			goto fail;
	}
	*out = sd;
	return TL_OK;

fail:
	tl_sd_free(sd);
	return rc;
}

/* ---------- zip format ---------- */

typedef struct
{
	const tl_zip *zip;
	char		prefix[256];
} zip_ctx;

static tl_code
zip_load_storage(void *vctx, const pk_obj *storage, int64_t nbytes,
				 const uint8_t **bytes, uint8_t **owned, tl_error *err)
{
	zip_ctx    *ctx = vctx;
	char		name[512];
	const tl_zip_entry *e;
	tl_code		rc;

	snprintf(name, sizeof name, "%s/data/%s", ctx->prefix, storage->str);
	if (!(e = tl_zip_find(ctx->zip, name)))
		return tl_fail(err, TL_E_CORRUPT, "storage \"%.64s\" is missing from the archive", storage->str);
	if (e->size != (uint64_t) nbytes)
		return tl_fail(err, TL_E_CORRUPT, "storage \"%.64s\" holds %llu bytes, the pickle declares %lld",
					   storage->str, (unsigned long long) e->size, (long long) nbytes);
	if ((rc = tl_zip_read(ctx->zip, e, (uint64_t) nbytes, bytes, owned, err)) != TL_OK)
		return rc;
	return TL_OK;
}

tl_code
tl_torch_zip_read(const uint8_t *data, size_t len, const tl_ckpt_limits *limits,
				  tl_state_dict **out, tl_error *err)
{
	tl_zip	   *zip = NULL;
	zip_ctx		ctx;
	const tl_zip_entry *pkl = NULL;
	const uint8_t *pkl_bytes;
	uint8_t    *pkl_owned = NULL;
	tl_pickle  *arena = NULL;
	pk_obj	   *root;
	size_t		used;
	storage_table st = {0};
	tl_code		rc;

	*out = NULL;
	if (!limits)
		limits = &tl_ckpt_default_limits;
	if ((rc = tl_zip_open(data, len, (int) (limits->max_tensors + 16), &zip, err)) != TL_OK)
		return rc;
	/* The pickle is "<prefix>/data.pkl"; torch names the prefix after the file. */
	for (int i = 0; i < tl_zip_count(zip); i++)
	{
		const tl_zip_entry *e = tl_zip_entry_at(zip, i);
		const char *slash = strchr(e->name, '/');

		if (slash && slash != e->name && strcmp(slash, "/data.pkl") == 0)
		{
			if (pkl)
			{
				rc = tl_fail(err, TL_E_CORRUPT, "zip: more than one data.pkl");
				goto done;
			}
			pkl = e;
		}
	}
	if (!pkl)
	{
		rc = tl_fail(err, TL_E_UNSUPPORTED, "zip is not a PyTorch checkpoint (no <name>/data.pkl entry)");
		goto done;
	}
	ctx.zip = zip;
	snprintf(ctx.prefix, sizeof ctx.prefix, "%.*s", (int) (strchr(pkl->name, '/') - pkl->name), pkl->name);
	{
		char		bo_name[300];
		const tl_zip_entry *bo;

		snprintf(bo_name, sizeof bo_name, "%s/byteorder", ctx.prefix);
		if ((bo = tl_zip_find(zip, bo_name)) != NULL)
		{
			const uint8_t *b;
			uint8_t    *owned;

			if ((rc = tl_zip_read(zip, bo, 16, &b, &owned, err)) != TL_OK)
				goto done;
			if (!(bo->size == 6 && memcmp(b, "little", 6) == 0))
			{
				free(owned);
				rc = tl_fail(err, TL_E_UNSUPPORTED, "checkpoint was written big-endian");
				goto done;
			}
			free(owned);
		}
	}
	if ((rc = tl_zip_read(zip, pkl, PKL_MAX_BYTES, &pkl_bytes, &pkl_owned, err)) != TL_OK)
		goto done;
	if ((rc = tl_pickle_load(pkl_bytes, (size_t) pkl->size, limits, &arena, &root, &used, err)) != TL_OK)
	{
		tl_error_prefix(err, "data.pkl");
		goto done;
	}
	if (used != pkl->size)
	{
		rc = tl_fail(err, TL_E_CORRUPT, "data.pkl: bytes after the pickle's STOP");
		goto done;
	}
	rc = build_state_dict(root, &st, zip_load_storage, &ctx, limits, out, err);

done:
	storage_table_free(&st);
	tl_pickle_free(arena);
	free(pkl_owned);
	tl_zip_close(zip);
	return rc;
}

/* ---------- legacy format ---------- */

static int64_t
rd_i64(const uint8_t *p)
{
	uint64_t	v = 0;

	for (int i = 0; i < 8; i++)
		v |= (uint64_t) p[i] << (8 * i);
	return (int64_t) v;
}

/* The storage object (from the state_dict pickle) with this key, or NULL. */
static const pk_obj *
find_storage_obj(const pk_obj *root, const char *key)
{
	for (int i = 1; i < root->n; i += 2)
	{
		const pk_obj *t = root->items[i];

		if (t->kind == PK_TENSOR && strcmp(t->storage->str, key) == 0)
			return t->storage;
	}
	return NULL;
}

static bool
dict_get_bool(const pk_obj *d, const char *key, bool *val)
{
	for (int i = 0; i < d->n; i += 2)
		if (d->items[i]->kind == PK_STR && strcmp(d->items[i]->str, key) == 0 &&
			(d->items[i + 1]->kind == PK_BOOL || d->items[i + 1]->kind == PK_INT))
		{
			*val = d->items[i + 1]->ival != 0;
			return true;
		}
	return false;
}

tl_code
tl_torch_legacy_read(const uint8_t *data, size_t len, const tl_ckpt_limits *limits,
					 tl_state_dict **out, tl_error *err)
{
	tl_pickle  *arenas[5] = {0};
	pk_obj	   *objs[5];
	size_t		pos = 0;
	storage_table st = {0};
	tl_code		rc = TL_OK;
	static const char *const what[5] = {"magic number", "protocol version", "system info",
	"state_dict", "storage keys"};

	*out = NULL;
	if (!limits)
		limits = &tl_ckpt_default_limits;
	/* Five pickles in a row, then the raw storages. */
	for (int i = 0; i < 5; i++)
	{
		size_t		used;

		if ((rc = tl_pickle_load(data + pos, len - pos, limits, &arenas[i], &objs[i], &used, err)) != TL_OK)
		{
			tl_error_prefix(err, "legacy checkpoint %s", what[i]);
			goto done;
		}
		pos += used;
		if (i == 0 && !(objs[0]->kind == PK_INT && objs[0]->is_torch_magic))
		{
			rc = tl_fail(err, TL_E_UNSUPPORTED, "not a PyTorch checkpoint (wrong magic number)");
			goto done;
		}
		if (i == 1 && !(objs[1]->kind == PK_INT && objs[1]->ival == 1001))
		{
			rc = tl_fail(err, TL_E_UNSUPPORTED, "legacy checkpoint: unsupported protocol version");
			goto done;
		}
		if (i == 2)
		{
			bool		little = false;

			if (objs[2]->kind != PK_DICT || !dict_get_bool(objs[2], "little_endian", &little))
			{
				rc = tl_fail(err, TL_E_CORRUPT, "legacy checkpoint: system info is not a dict with little_endian");
				goto done;
			}
			if (!little)
			{
				rc = tl_fail(err, TL_E_UNSUPPORTED, "checkpoint was written big-endian");
				goto done;
			}
		}
	}
	if (objs[4]->kind != PK_LIST)
	{
		rc = tl_fail(err, TL_E_CORRUPT, "legacy checkpoint: storage keys are not a list");
		goto done;
	}
	if (objs[3]->kind != PK_DICT)
	{
		rc = tl_fail(err, TL_E_UNSUPPORTED,
					 "checkpoint does not hold a state_dict (a dict of tensors) at its top level");
		goto done;
	}
	/* Every listed storage belongs to a tensor: this also bounds the key search below. */
	if (objs[3]->n / 2 > limits->max_tensors)
	{
		rc = tl_fail(err, TL_E_LIMIT, "checkpoint has more than %lld tensors", (long long) limits->max_tensors);
		goto done;
	}
	if (objs[4]->n > objs[3]->n / 2)
	{
		rc = tl_fail(err, TL_E_CORRUPT, "legacy checkpoint: more storages than tensors");
		goto done;
	}
	/* Raw storages in key-list order: int64 element count, then the elements. */
	for (int i = 0; i < objs[4]->n; i++)
	{
		const pk_obj *key = objs[4]->items[i];
		const pk_obj *s;
		int64_t		numel,
					nbytes;

		if (key->kind != PK_STR)
		{
			rc = tl_fail(err, TL_E_CORRUPT, "legacy checkpoint: storage key %d is not a string", i);
			goto done;
		}
		if (!(s = find_storage_obj(objs[3], key->str)))
		{
			rc = tl_fail(err, TL_E_CORRUPT, "legacy checkpoint: storage \"%.64s\" is not used by any tensor",
						 key->str);
			goto done;
		}
		if (storage_find(&st, key->str))
		{
			rc = tl_fail(err, TL_E_CORRUPT, "legacy checkpoint: storage \"%.64s\" is listed twice", key->str);
			goto done;
		}
		if (len - pos < 8)
		{
			rc = tl_fail(err, TL_E_CORRUPT, "legacy checkpoint: truncated before storage \"%.64s\"", key->str);
			goto done;
		}
		numel = rd_i64(data + pos);
		pos += 8;
		if (numel != s->ival)
		{
			rc = tl_fail(err, TL_E_CORRUPT, "legacy checkpoint: storage \"%.64s\" has %lld elements, the pickle declares %lld",
						 key->str, (long long) numel, (long long) s->ival);
			goto done;
		}
		if (__builtin_mul_overflow(numel, (int64_t) storage_elem_size(s->global), &nbytes) ||
			(uint64_t) nbytes > len - pos)
		{
			rc = tl_fail(err, TL_E_CORRUPT, "legacy checkpoint: storage \"%.64s\" runs past the end of the file",
						 key->str);
			goto done;
		}
		if ((rc = storage_add(&st, key->str, s->global, numel, data + pos, NULL, err)) != TL_OK)
			goto done;
		pos += (size_t) nbytes;
	}
	if (pos != len)
	{
		rc = tl_fail(err, TL_E_CORRUPT, "legacy checkpoint: %zu unexpected bytes at the end", len - pos);
		goto done;
	}
	rc = build_state_dict(objs[3], &st, NULL, NULL, limits, out, err);

done:
	storage_table_free(&st);
	for (int i = 0; i < 5; i++)
		tl_pickle_free(arenas[i]);
	return rc;
}

/* ---------- writing the zip format ---------- */

typedef struct
{
	uint8_t    *buf;
	size_t		len;
	size_t		cap;
	bool		failed;
} bytebuf;

static void
bb_put(bytebuf *b, const void *p, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n > b->cap)
	{
		size_t		cap = b->cap ? b->cap : 4096;
		uint8_t    *g;

		while (cap < b->len + n)
			cap *= 2;
		if (!(g = realloc(b->buf, cap)))
		{
			b->failed = true;
			return;
		}
		b->buf = g;
		b->cap = cap;
	}
	memcpy(b->buf + b->len, p, n);
	b->len += n;
}

static void
bb_op(bytebuf *b, uint8_t op)
{
	bb_put(b, &op, 1);
}

static void
pk_w_str(bytebuf *b, const char *s)
{
	uint32_t	n = (uint32_t) strlen(s);
	uint8_t		h[5] = {'X', (uint8_t) n, (uint8_t) (n >> 8), (uint8_t) (n >> 16), (uint8_t) (n >> 24)};

	bb_put(b, h, 5);
	bb_put(b, s, n);
}

static void
pk_w_int(bytebuf *b, int64_t v)
{
	if (v >= 0 && v < 256)
	{
		uint8_t		h[2] = {'K', (uint8_t) v};

		bb_put(b, h, 2);
	}
	else if (v >= INT32_MIN && v <= INT32_MAX)
	{
		uint32_t	u = (uint32_t) v;
		uint8_t		h[5] = {'J', (uint8_t) u, (uint8_t) (u >> 8), (uint8_t) (u >> 16), (uint8_t) (u >> 24)};

		bb_put(b, h, 5);
	}
	else
	{
		uint8_t		h[10] = {0x8a, 8};

		for (int i = 0; i < 8; i++)
			h[2 + i] = (uint8_t) ((uint64_t) v >> (8 * i));
		bb_put(b, h, 10);
	}
}

static void
pk_w_global(bytebuf *b, const char *module, const char *name)
{
	bb_op(b, 'c');
	bb_put(b, module, strlen(module));
	bb_op(b, '\n');
	bb_put(b, name, strlen(name));
	bb_op(b, '\n');
}

/* key: _rebuild_tensor_v2(persistent storage, 0, size, contiguous stride, False, OrderedDict()) */
static void
pk_w_tensor(bytebuf *b, const char *key, const char *storage_class, const char *storage_key,
			int ndim, const int64_t *shape, int64_t numel)
{
	int64_t		stride = 1;
	int64_t		strides[TL_MAX_DIMS];

	for (int d = ndim - 1; d >= 0; d--)
	{
		strides[d] = stride;
		stride *= shape[d];
	}
	pk_w_str(b, key);
	pk_w_global(b, "torch._utils", "_rebuild_tensor_v2");
	bb_op(b, '(');
	bb_op(b, '(');
	pk_w_str(b, "storage");
	pk_w_global(b, "torch", storage_class);
	pk_w_str(b, storage_key);
	pk_w_str(b, "cpu");
	pk_w_int(b, numel);
	bb_op(b, 't');
	bb_op(b, 'Q');
	pk_w_int(b, 0);
	bb_op(b, '(');
	for (int d = 0; d < ndim; d++)
		pk_w_int(b, shape[d]);
	bb_op(b, 't');
	bb_op(b, '(');
	for (int d = 0; d < ndim; d++)
		pk_w_int(b, strides[d]);
	bb_op(b, 't');
	bb_op(b, 0x89);				/* requires_grad = False */
	pk_w_global(b, "collections", "OrderedDict");
	bb_op(b, ')');
	bb_op(b, 'R');
	bb_op(b, 't');
	bb_op(b, 'R');
}

/* "bn1.running_var" -> "bn1." when a BatchNorm has no num_batches_tracked in sd. */
static bool
needs_batch_counter(const tl_state_dict *sd, const char *key, char *counter, size_t counter_len)
{
	static const char suffix[] = "running_var";
	size_t		n = strlen(key),
				s = sizeof(suffix) - 1;

	if (n < s || strcmp(key + n - s, suffix) != 0 || (n > s && key[n - s - 1] != '.'))
		return false;
	if (n - s + strlen("num_batches_tracked") + 1 > counter_len)
		return false;
	memcpy(counter, key, n - s);
	strcpy(counter + n - s, "num_batches_tracked");
	return tl_sd_find(sd, counter) == NULL;
}

tl_code
tl_torch_zip_write(const tl_state_dict *sd, uint8_t **out, size_t *len, tl_error *err)
{
	static const uint8_t zero64[8] = {0};
	bytebuf		pkl = {0};
	tl_zip_out_entry *entries = NULL;
	char	  **names = NULL;
	uint8_t   **owned = NULL;
	int			n = 0,
				max_entries = 2 * sd->n + 3;
	char		skey[32];
	tl_code		rc;

	*out = NULL;
	*len = 0;
	entries = calloc((size_t) max_entries, sizeof(*entries));
	names = calloc((size_t) max_entries, sizeof(*names));
	owned = calloc((size_t) max_entries, sizeof(*owned));
	if (!entries || !names || !owned)
	{
		rc = tl_fail(err, TL_E_NOMEM, "out of memory writing a checkpoint");
		goto done;
	}
	n = 1;						/* entries[0] is data.pkl, filled last */

	bb_op(&pkl, 0x80);
	bb_op(&pkl, 2);
	pk_w_global(&pkl, "collections", "OrderedDict");
	bb_op(&pkl, ')');
	bb_op(&pkl, 'R');
	bb_op(&pkl, '(');
	for (int i = 0; i < sd->n; i++)
	{
		const tl_tensor *t = &sd->tensors[i];
		int64_t		numel = tl_tensor_numel(t);
		char		counter[TL_MAX_KEY_LEN + 32];
		size_t		nbytes = (size_t) numel * 4;

		snprintf(skey, sizeof skey, "%d", n - 1);
		pk_w_tensor(&pkl, t->name, "FloatStorage", skey, t->ndim, t->shape, numel);
		if (!(names[n] = malloc(strlen("archive/data/") + strlen(skey) + 1)))
		{
			rc = tl_fail(err, TL_E_NOMEM, "out of memory writing a checkpoint");
			goto done;
		}
		sprintf(names[n], "archive/data/%s", skey);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
		entries[n].data = (const uint8_t *) t->data;
#else
		if (!(owned[n] = malloc(nbytes ? nbytes : 1)))
		{
			rc = tl_fail(err, TL_E_NOMEM, "out of memory writing a checkpoint");
			goto done;
		}
		tl_put_f32le(owned[n], t->data, numel);
		entries[n].data = owned[n];
#endif
		entries[n].name = names[n];
		entries[n].len = nbytes;
		n++;

		/*
		 * torchvision's BatchNorm has an int64 num_batches_tracked buffer that
		 * load_state_dict(strict=True) expects; the core does not keep it, so
		 * write zero after running_var, where torchvision has it.
		 */
		if (needs_batch_counter(sd, t->name, counter, sizeof counter))
		{
			snprintf(skey, sizeof skey, "%d", n - 1);
			pk_w_tensor(&pkl, counter, "LongStorage", skey, 0, NULL, 1);
			if (!(names[n] = malloc(strlen("archive/data/") + strlen(skey) + 1)))
			{
				rc = tl_fail(err, TL_E_NOMEM, "out of memory writing a checkpoint");
				goto done;
			}
			sprintf(names[n], "archive/data/%s", skey);
			entries[n].name = names[n];
			entries[n].data = zero64;
			entries[n].len = 8;
			n++;
		}
	}
	bb_op(&pkl, 'u');
	bb_op(&pkl, '.');
	if (pkl.failed)
	{
		rc = tl_fail(err, TL_E_NOMEM, "out of memory writing a checkpoint");
		goto done;
	}
	entries[0].name = "archive/data.pkl";
	entries[0].data = pkl.buf;
	entries[0].len = pkl.len;
	entries[n].name = "archive/byteorder";
	entries[n].data = (const uint8_t *) "little";
	entries[n].len = 6;
	n++;
	entries[n].name = "archive/version";
	entries[n].data = (const uint8_t *) "3\n";
	entries[n].len = 2;
	n++;
	rc = tl_zip_write(entries, n, out, len, err);

done:
	for (int i = 0; i < max_entries && names && owned; i++)
	{
		free(names[i]);
		free(owned[i]);
	}
	free(names);
	free(owned);
	free(entries);
	free(pkl.buf);
	return rc;
}
