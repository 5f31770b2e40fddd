/*
 * tl_safetensors.c - the safetensors format: an 8-byte little-endian header
 * length, a JSON header, then one byte buffer that the header's
 * data_offsets index.
 *
 * The header is parsed by the strict JSON DOM of tl_json.c, because it is
 * attacker-controlled.  Every tensor's offsets are checked against its dtype
 * and shape, and together they must tile the byte buffer exactly: no gaps, no
 * overlaps, nothing outside it.
 */
#include "tl_checkpoint.h"
#include "tl_checkpoint_internal.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The reference implementation refuses headers over 100 MB; so do we. */
#define ST_MAX_HEADER_LEN	(100u * 1024 * 1024)

/* ---------- dtypes ---------- */

typedef enum
{
	ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64
} st_dtype;

static const struct
{
	const char *name;
	st_dtype	dtype;
	int			size;
}			st_dtypes[] = {
	{"F32", ST_F32, 4}, {"F16", ST_F16, 2}, {"BF16", ST_BF16, 2}, {"F64", ST_F64, 8}, {"I64", ST_I64, 8},
};

/* ---------- reader ---------- */

typedef struct
{
	const char *name;
	st_dtype	dtype;
	int			esize;
	int			ndim;
	int64_t		shape[TL_MAX_DIMS];
	int64_t		begin;
	int64_t		end;
} st_entry;

static int
cmp_entry(const void *a, const void *b)
{
	const st_entry *x = *(const st_entry *const *) a;
	const st_entry *y = *(const st_entry *const *) b;

	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return 0;
}

static tl_code
parse_entry(const char *name, const jvalue *v, st_entry *e, tl_error *err)
{
	const jvalue *dt = tl_json_get(v, "dtype"),
			   *shape = tl_json_get(v, "shape"),
			   *offs = tl_json_get(v, "data_offsets");
	bool		known = false;

	if (v->type != J_OBJECT)
		return tl_fail(err, TL_E_CORRUPT, "safetensors tensor \"%.200s\": entry is not an object", name);
	if (!dt || dt->type != J_STRING || !shape || shape->type != J_ARRAY ||
		!offs || offs->type != J_ARRAY)
		return tl_fail(err, TL_E_CORRUPT,
					   "safetensors tensor \"%.200s\": needs string \"dtype\", array \"shape\" and array \"data_offsets\"",
					   name);
	if (v->n != 3)
		return tl_fail(err, TL_E_CORRUPT, "safetensors tensor \"%.200s\": unexpected member", name);
	e->name = name;
	for (size_t i = 0; i < sizeof(st_dtypes) / sizeof(st_dtypes[0]); i++)
		if (strcmp(dt->str, st_dtypes[i].name) == 0)
		{
			e->dtype = st_dtypes[i].dtype;
			e->esize = st_dtypes[i].size;
			known = true;
		}
	if (!known)
		return tl_fail(err, TL_E_UNSUPPORTED,
					   "safetensors tensor \"%.200s\": dtype \"%.20s\" is not supported (F32, F16, BF16, F64 are)",
					   name, dt->str);
	if (shape->n > TL_MAX_DIMS)
		return tl_fail(err, TL_E_UNSUPPORTED, "safetensors tensor \"%.200s\": more than %d dimensions",
					   name, TL_MAX_DIMS);
	e->ndim = shape->n;
	for (int i = 0; i < shape->n; i++)
	{
		if (shape->items[i]->type != J_NUMBER || !shape->items[i]->is_int)
			return tl_fail(err, TL_E_CORRUPT,
						   "safetensors tensor \"%.200s\": shape must hold non-negative integers", name);
		e->shape[i] = shape->items[i]->ival;
	}
	if (offs->n != 2 || offs->items[0]->type != J_NUMBER || !offs->items[0]->is_int ||
		offs->items[1]->type != J_NUMBER || !offs->items[1]->is_int)
		return tl_fail(err, TL_E_CORRUPT,
					   "safetensors tensor \"%.200s\": data_offsets must be two non-negative integers", name);
	e->begin = offs->items[0]->ival;
	e->end = offs->items[1]->ival;
	return TL_OK;
}

/* Check the length prefix and parse the JSON header into *root (an object). */
static tl_code
parse_header(const uint8_t *data, size_t len, jvalue **root, size_t *hlen_out, tl_error *err)
{
	uint64_t	hlen;
	tl_code		rc;

	*root = NULL;
	if (len < 8)
		return tl_fail(err, TL_E_CORRUPT, "safetensors: file of %zu bytes is too short", len);
	hlen = tl_get_u64le(data);
	if (hlen > ST_MAX_HEADER_LEN)
		return tl_fail(err, TL_E_LIMIT, "safetensors: header length %llu exceeds the %u byte limit",
					   (unsigned long long) hlen, ST_MAX_HEADER_LEN);
	if (hlen < 2 || hlen > len - 8)
		return tl_fail(err, TL_E_CORRUPT,
					   "safetensors: header length %llu does not fit a file of %zu bytes",
					   (unsigned long long) hlen, len);
	if (data[8] != '{')
		return tl_fail(err, TL_E_CORRUPT, "safetensors: header does not start with '{'");

	if ((rc = tl_json_parse(data + 8, (size_t) hlen, "safetensors header", root, err)) != TL_OK)
		return rc;
	if ((*root)->type != J_OBJECT)
	{
		tl_json_free(*root);
		*root = NULL;
		return tl_fail(err, TL_E_CORRUPT, "safetensors: header is not an object");
	}
	*hlen_out = (size_t) hlen;
	return TL_OK;
}

tl_code
tl_safetensors_metadata(const uint8_t *data, size_t len, const char *key, char **value, tl_error *err)
{
	jvalue	   *root;
	const jvalue *meta,
			   *v;
	size_t		hlen;
	tl_code		rc;

	*value = NULL;
	if ((rc = parse_header(data, len, &root, &hlen, err)) != TL_OK)
		return rc;
	meta = tl_json_get(root, "__metadata__");
	if (meta && meta->type == J_OBJECT && (v = tl_json_get(meta, key)) != NULL && v->type == J_STRING)
	{
		*value = strdup(v->str);
		if (!*value)
			rc = tl_fail(err, TL_E_NOMEM, "out of memory reading safetensors metadata");
	}
	tl_json_free(root);
	return rc;
}


tl_code
tl_safetensors_read(const uint8_t *data, size_t len, const tl_ckpt_limits *limits,
					tl_state_dict **out, tl_error *err)
{
	size_t		hlen = 0;
	jvalue	   *root = NULL;
	st_entry   *entries = NULL;
	st_entry  **order = NULL;
	int			n = 0;
	int64_t		total = 0;
	size_t		data_len;
	const uint8_t *base;
	tl_state_dict *sd = NULL;
	tl_code		rc;

	*out = NULL;
	if (!limits)
		limits = &tl_ckpt_default_limits;
	if ((rc = parse_header(data, len, &root, &hlen, err)) != TL_OK)
		return rc;
	base = data + 8 + hlen;
	data_len = len - 8 - hlen;

	entries = calloc((size_t) (root->n ? root->n : 1), sizeof(*entries));
	order = calloc((size_t) (root->n ? root->n : 1), sizeof(*order));
	if (!entries || !order)
	{
		rc = tl_fail(err, TL_E_NOMEM, "out of memory reading safetensors");
		goto done;
	}
	for (int i = 0; i < root->n; i++)
	{
		const char *key = root->keys[i];
		const jvalue *v = root->items[i];
		st_entry   *e;
		int64_t		numel;

		if (strcmp(key, "__metadata__") == 0)
		{
			/* Free-form string to string map; checked but not kept. */
			if (v->type != J_OBJECT)
			{
				rc = tl_fail(err, TL_E_CORRUPT, "safetensors: __metadata__ is not an object");
				goto done;
			}
			for (int j = 0; j < v->n; j++)
				if (v->items[j]->type != J_STRING)
				{
					rc = tl_fail(err, TL_E_CORRUPT, "safetensors: __metadata__ value \"%.200s\" is not a string",
								 v->keys[j]);
					goto done;
				}
			continue;
		}
		if (n >= limits->max_tensors)
		{
			rc = tl_fail(err, TL_E_LIMIT, "safetensors: more than %lld tensors",
						 (long long) limits->max_tensors);
			goto done;
		}
		e = &entries[n];
		if ((rc = parse_entry(key, v, e, err)) != TL_OK)
			goto done;
		numel = tl_shape_numel(e->ndim, e->shape, limits->max_total_bytes / 4);
		if (numel < 0 || total > limits->max_total_bytes - numel * 4)
		{
			rc = tl_fail(err, TL_E_LIMIT, "safetensors tensor \"%.200s\": tensors exceed the %lld byte limit",
						 key, (long long) limits->max_total_bytes);
			goto done;
		}
		total += numel * 4;
		if (e->begin > e->end || (uint64_t) e->end > data_len)
		{
			rc = tl_fail(err, TL_E_CORRUPT,
						 "safetensors tensor \"%.200s\": data_offsets [%lld, %lld] are outside the %zu byte buffer",
						 key, (long long) e->begin, (long long) e->end, data_len);
			goto done;
		}
		if (e->end - e->begin != numel * e->esize)
		{
			rc = tl_fail(err, TL_E_CORRUPT,
						 "safetensors tensor \"%.200s\": data_offsets span %lld bytes but shape and dtype need %lld",
						 key, (long long) (e->end - e->begin), (long long) (numel * e->esize));
			goto done;
		}
		order[n] = e;
		n++;
	}

	/* The tensors must tile the buffer: sorted by offset, each starts where the last ended. */
	qsort(order, (size_t) n, sizeof(*order), cmp_entry);
	{
		int64_t		pos = 0;

		for (int i = 0; i < n; i++)
		{
			if (order[i]->begin != pos)
			{
				rc = tl_fail(err, TL_E_CORRUPT,
							 "safetensors tensor \"%.200s\": data at offset %lld %s the previous tensor's end %lld",
							 order[i]->name, (long long) order[i]->begin,
							 order[i]->begin < pos ? "overlaps" : "leaves a gap after", (long long) pos);
				goto done;
			}
			pos = order[i]->end;
		}
		if ((uint64_t) pos != data_len)
		{
			rc = tl_fail(err, TL_E_CORRUPT,
						 "safetensors: tensors cover %lld bytes of a %zu byte buffer", (long long) pos, data_len);
			goto done;
		}
	}

	if (!(sd = tl_sd_new(err)))
	{
		rc = TL_E_NOMEM;
		goto done;
	}
	for (int i = 0; i < n; i++)
	{
		st_entry   *e = &entries[i];
		int64_t		numel = (e->end - e->begin) / e->esize;
		float	   *buf;

		if (e->dtype == ST_I64)
		{
			/* Only BatchNorm's step counter is integer in a state_dict; it carries no weights. */
			if (tl_ckpt_is_batch_counter(e->name))
				continue;
			rc = tl_fail(err, TL_E_UNSUPPORTED,
						 "safetensors tensor \"%.200s\": dtype \"I64\" is not supported (F32, F16, BF16, F64 are)",
						 e->name);
			goto done;
		}
		buf = malloc((size_t) (numel ? numel : 1) * sizeof(float));
		if (!buf)
		{
			rc = tl_fail(err, TL_E_NOMEM, "out of memory for tensor \"%.200s\"", e->name);
			goto done;
		}
		tl_convert_to_f32(e->dtype == ST_F32 ? TL_ELEM_F32 : e->dtype == ST_F16 ? TL_ELEM_F16 :
						  e->dtype == ST_BF16 ? TL_ELEM_BF16 : TL_ELEM_F64,
						  base + e->begin, numel, buf);
		if ((rc = tl_sd_add_owned(sd, e->name, e->ndim, e->shape, buf, err)) != TL_OK)
			goto done;
	}
	*out = sd;
	sd = NULL;
	rc = TL_OK;

done:
	tl_sd_free(sd);
	free(order);
	free(entries);
	tl_json_free(root);
	return rc;
}

/* ---------- writer ---------- */

typedef struct
{
	char	   *buf;
	size_t		len;
	size_t		cap;
	bool		failed;
} strbuf;

static void
sb_putn(strbuf *sb, const char *s, size_t n)
{
	if (sb->failed)
		return;
	if (sb->len + n + 1 > sb->cap)
	{
		size_t		cap = sb->cap ? sb->cap : 256;
		char	   *grown;

		while (cap < sb->len + n + 1)
			cap *= 2;
		grown = realloc(sb->buf, cap);
		if (!grown)
		{
			sb->failed = true;
			return;
		}
		sb->buf = grown;
		sb->cap = cap;
	}
	memcpy(sb->buf + sb->len, s, n);
	sb->len += n;
	sb->buf[sb->len] = '\0';
}

static void
sb_puts(strbuf *sb, const char *s)
{
	sb_putn(sb, s, strlen(s));
}

/* A JSON string literal; control characters are escaped, other bytes pass through. */
static void
sb_json_string(strbuf *sb, const char *s)
{
	sb_puts(sb, "\"");
	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;
		char		esc[8];

		if (c == '"' || c == '\\')
		{
			esc[0] = '\\', esc[1] = (char) c;
			sb_putn(sb, esc, 2);
		}
		else if (c < 0x20)
		{
			snprintf(esc, sizeof esc, "\\u%04x", c);
			sb_puts(sb, esc);
		}
		else
			sb_putn(sb, (const char *) &c, 1);
	}
	sb_puts(sb, "\"");
}


static bool
valid_utf8(const char *s)
{
	return tl_utf8_valid((const uint8_t *) s, strlen(s));
}

tl_code
tl_safetensors_write(const tl_state_dict *sd, const char *const *meta_keys,
					 const char *const *meta_values, int n_meta,
					 uint8_t **out, size_t *len, tl_error *err)
{
	strbuf		hdr = {0};
	int64_t		off = 0;
	size_t		hlen,
				total;
	uint8_t    *file;
	char		num[64];

	*out = NULL;
	*len = 0;
	sb_puts(&hdr, "{");
	if (n_meta > 0)
	{
		sb_puts(&hdr, "\"__metadata__\":{");
		for (int i = 0; i < n_meta; i++)
		{
			if (!meta_keys[i] || !meta_values[i] || !valid_utf8(meta_keys[i]) || !valid_utf8(meta_values[i]))
			{
				free(hdr.buf);
				return tl_fail(err, TL_E_INVALID, "safetensors metadata must be valid UTF-8 strings");
			}
			if (i)
				sb_puts(&hdr, ",");
			sb_json_string(&hdr, meta_keys[i]);
			sb_puts(&hdr, ":");
			sb_json_string(&hdr, meta_values[i]);
		}
		sb_puts(&hdr, "}");
	}
	for (int i = 0; i < sd->n; i++)
	{
		const tl_tensor *t = &sd->tensors[i];
		int64_t		nbytes = tl_tensor_numel(t) * 4;

		if (!valid_utf8(t->name) || strcmp(t->name, "__metadata__") == 0)
		{
			free(hdr.buf);
			return tl_fail(err, TL_E_INVALID, "tensor name \"%.200s\" can't be stored in safetensors", t->name);
		}
		if (i || n_meta > 0)
			sb_puts(&hdr, ",");
		sb_json_string(&hdr, t->name);
		sb_puts(&hdr, ":{\"dtype\":\"F32\",\"shape\":[");
		for (int d = 0; d < t->ndim; d++)
		{
			snprintf(num, sizeof num, d ? ",%lld" : "%lld", (long long) t->shape[d]);
			sb_puts(&hdr, num);
		}
		snprintf(num, sizeof num, "],\"data_offsets\":[%lld,%lld]}", (long long) off, (long long) (off + nbytes));
		sb_puts(&hdr, num);
		off += nbytes;
	}
	sb_puts(&hdr, "}");
	/* Pad with spaces so the byte buffer starts 8-byte aligned, as the reference writer does. */
	while (!hdr.failed && hdr.len % 8 != 0)
		sb_puts(&hdr, " ");
	if (hdr.failed)
	{
		free(hdr.buf);
		return tl_fail(err, TL_E_NOMEM, "out of memory writing safetensors header");
	}
	hlen = hdr.len;
	total = 8 + hlen + (size_t) off;
	file = malloc(total);
	if (!file)
	{
		free(hdr.buf);
		return tl_fail(err, TL_E_NOMEM, "out of memory writing safetensors (%zu bytes)", total);
	}
	for (int i = 0; i < 8; i++)
		file[i] = (uint8_t) ((uint64_t) hlen >> (8 * i));
	memcpy(file + 8, hdr.buf, hlen);
	free(hdr.buf);
	{
		uint8_t    *p = file + 8 + hlen;

		for (int i = 0; i < sd->n; i++)
		{
			const tl_tensor *t = &sd->tensors[i];
			int64_t		numel = tl_tensor_numel(t);

			tl_put_f32le(p, t->data, numel);
			p += numel * 4;
		}
	}
	*out = file;
	*len = total;
	return TL_OK;
}
