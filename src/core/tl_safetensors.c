/*
 * tl_safetensors.c - the safetensors format: an 8-byte little-endian header
 * length, a JSON header, then one byte buffer that the header's
 * data_offsets index.
 *
 * The JSON parser here is our own and deliberately strict (RFC 8259, no
 * extensions, duplicate keys refused, nesting bounded), because the header is
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
/* A valid header nests 3 deep (root, tensor, shape); leave some room. */
#define ST_MAX_DEPTH		8
/*
 * Bounds on the DOM, so a 100 MB header can't make us allocate gigabytes or
 * spend minutes on the duplicate-key check (quadratic in an object's size).
 * A ResNet-18 header has about 1,000 values and 103 members at its root.
 */
#define ST_MAX_VALUES		(1 << 18)
#define ST_MAX_MEMBERS		(1 << 14)

/* ---------- a small strict JSON DOM ---------- */

typedef enum
{
	J_NULL, J_BOOL, J_NUMBER, J_STRING, J_ARRAY, J_OBJECT
} jtype;

typedef struct jvalue jvalue;

struct jvalue
{
	jtype		type;
	bool		is_int;			/* J_NUMBER: a non-negative integer that fits int64 */
	int64_t		ival;
	char	   *str;			/* J_STRING: NUL-terminated UTF-8, owned */
	size_t		slen;			/* J_STRING: length (may contain no NUL: refused) */
	int			n;				/* J_ARRAY/J_OBJECT: element count */
	int			cap;
	char	  **keys;			/* J_OBJECT: member names, owned */
	jvalue	  **items;			/* members / elements, owned */
};

typedef struct
{
	const uint8_t *p;
	const uint8_t *end;
	const uint8_t *start;
	int			values;			/* parsed so far, bounded by ST_MAX_VALUES */
	tl_error   *err;
} jparser;

static void
jfree(jvalue *v)
{
	if (!v)
		return;
	free(v->str);
	for (int i = 0; i < v->n; i++)
	{
		if (v->keys)
			free(v->keys[i]);
		jfree(v->items[i]);
	}
	free(v->keys);
	free(v->items);
	free(v);
}

static tl_code
jerr(jparser *jp, const char *what)
{
	return tl_fail(jp->err, TL_E_CORRUPT, "safetensors header: %s at byte %zu",
				   what, (size_t) (jp->p - jp->start));
}

static void
jskip_ws(jparser *jp)
{
	while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\t' || *jp->p == '\n' || *jp->p == '\r'))
		jp->p++;
}

static int
hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool
read_hex4(jparser *jp, uint32_t *out)
{
	uint32_t	v = 0;

	if (jp->end - jp->p < 4)
		return false;
	for (int i = 0; i < 4; i++)
	{
		int			h = hexval(jp->p[i]);

		if (h < 0)
			return false;
		v = (v << 4) | (uint32_t) h;
	}
	jp->p += 4;
	*out = v;
	return true;
}

static size_t
utf8_put(uint32_t cp, char *o)
{
	if (cp < 0x80)
	{
		o[0] = (char) cp;
		return 1;
	}
	if (cp < 0x800)
	{
		o[0] = (char) (0xC0 | (cp >> 6));
		o[1] = (char) (0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000)
	{
		o[0] = (char) (0xE0 | (cp >> 12));
		o[1] = (char) (0x80 | ((cp >> 6) & 0x3F));
		o[2] = (char) (0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (char) (0xF0 | (cp >> 18));
	o[1] = (char) (0x80 | ((cp >> 12) & 0x3F));
	o[2] = (char) (0x80 | ((cp >> 6) & 0x3F));
	o[3] = (char) (0x80 | (cp & 0x3F));
	return 4;
}

/* Length of a valid UTF-8 sequence at p (0 if invalid: overlong, surrogate, > U+10FFFF). */
static size_t
utf8_valid_len(const uint8_t *p, const uint8_t *end)
{
	uint8_t		c = p[0];
	size_t		n;
	uint32_t	cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		n = 2, cp = c & 0x1F;
	else if (c >= 0xE0 && c <= 0xEF)
		n = 3, cp = c & 0x0F;
	else if (c >= 0xF0 && c <= 0xF4)
		n = 4, cp = c & 0x07;
	else
		return 0;
	if ((size_t) (end - p) < n)
		return 0;
	for (size_t i = 1; i < n; i++)
	{
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3F);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
		(cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n;
}

static tl_code
jparse_string(jparser *jp, char **out, size_t *outlen)
{
	const uint8_t *q;
	char	   *buf;
	size_t		n = 0;

	/* caller checked the opening quote */
	jp->p++;
	/* Decoded text is never longer than the source, so size by the source span. */
	q = jp->p;
	while (q < jp->end && *q != '"')
		q += (*q == '\\' && jp->end - q > 1) ? 2 : 1;
	if (q >= jp->end)
		return jerr(jp, "unterminated string");
	buf = malloc((size_t) (q - jp->p) + 1);
	if (!buf)
		return tl_fail(jp->err, TL_E_NOMEM, "out of memory parsing safetensors header");
	while (*jp->p != '"')
	{
		uint8_t		c = *jp->p;

		if (c < 0x20)
		{
			free(buf);
			return jerr(jp, "control character in string");
		}
		if (c == '\\')
		{
			uint32_t	cp;

			jp->p++;
			switch (*jp->p)
			{
				case '"':
				case '\\':
				case '/':
					buf[n++] = (char) *jp->p++;
					continue;
				case 'b':
					buf[n++] = '\b', jp->p++;
					continue;
				case 'f':
					buf[n++] = '\f', jp->p++;
					continue;
				case 'n':
					buf[n++] = '\n', jp->p++;
					continue;
				case 'r':
					buf[n++] = '\r', jp->p++;
					continue;
				case 't':
					buf[n++] = '\t', jp->p++;
					continue;
				case 'u':
					jp->p++;
					if (!read_hex4(jp, &cp))
					{
						free(buf);
						return jerr(jp, "bad \\u escape");
					}
					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						uint32_t	lo;

						if (jp->end - jp->p < 2 || jp->p[0] != '\\' || jp->p[1] != 'u')
						{
							free(buf);
							return jerr(jp, "unpaired surrogate");
						}
						jp->p += 2;
						if (!read_hex4(jp, &lo) || lo < 0xDC00 || lo > 0xDFFF)
						{
							free(buf);
							return jerr(jp, "unpaired surrogate");
						}
						cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					}
					else if (cp >= 0xDC00 && cp <= 0xDFFF)
					{
						free(buf);
						return jerr(jp, "unpaired surrogate");
					}
					if (cp == 0)
					{
						free(buf);
						return jerr(jp, "NUL character in string");
					}
					/* \uXXXX is 6 source bytes, its UTF-8 at most 3 (4 for a 12-byte pair) */
					n += utf8_put(cp, buf + n);
					continue;
				default:
					free(buf);
					return jerr(jp, "bad escape");
			}
		}
		else
		{
			size_t		ul = utf8_valid_len(jp->p, jp->end);

			if (ul == 0)
			{
				free(buf);
				return jerr(jp, "invalid UTF-8");
			}
			memcpy(buf + n, jp->p, ul);
			n += ul;
			jp->p += ul;
		}
	}
	jp->p++;					/* closing quote */
	buf[n] = '\0';
	*out = buf;
	*outlen = n;
	return TL_OK;
}

static tl_code
jparse_number(jparser *jp, jvalue *v)
{
	bool		neg = false,
				frac = false,
				overflow = false;
	int64_t		iv = 0;

	if (*jp->p == '-')
		neg = true, jp->p++;
	if (jp->p >= jp->end || !(*jp->p >= '0' && *jp->p <= '9'))
		return jerr(jp, "bad number");
	if (*jp->p == '0' && jp->p + 1 < jp->end && jp->p[1] >= '0' && jp->p[1] <= '9')
		return jerr(jp, "number with a leading zero");
	while (jp->p < jp->end && *jp->p >= '0' && *jp->p <= '9')
	{
		int			d = *jp->p++ - '0';

		if (iv > (INT64_MAX - d) / 10)
			overflow = true;
		else
			iv = iv * 10 + d;
	}
	if (jp->p < jp->end && *jp->p == '.')
	{
		frac = true;
		jp->p++;
		if (jp->p >= jp->end || !(*jp->p >= '0' && *jp->p <= '9'))
			return jerr(jp, "bad number");
		while (jp->p < jp->end && *jp->p >= '0' && *jp->p <= '9')
			jp->p++;
	}
	if (jp->p < jp->end && (*jp->p == 'e' || *jp->p == 'E'))
	{
		frac = true;
		jp->p++;
		if (jp->p < jp->end && (*jp->p == '+' || *jp->p == '-'))
			jp->p++;
		if (jp->p >= jp->end || !(*jp->p >= '0' && *jp->p <= '9'))
			return jerr(jp, "bad number");
		while (jp->p < jp->end && *jp->p >= '0' && *jp->p <= '9')
			jp->p++;
	}
	v->type = J_NUMBER;
	/* Only non-negative integers are ever meaningful in a safetensors header. */
	v->is_int = !neg && !frac && !overflow;
	v->ival = v->is_int ? iv : -1;
	return TL_OK;
}

static tl_code jparse_value(jparser *jp, jvalue **out, int depth);

static tl_code
jpush(jparser *jp, jvalue *v, char *key, jvalue *item)
{
	if (v->type == J_OBJECT && v->n >= ST_MAX_MEMBERS)
		return tl_fail(jp->err, TL_E_LIMIT, "safetensors header: an object has more than %d members",
					   ST_MAX_MEMBERS);
	if (v->n == v->cap)
	{
		int			cap = v->cap ? v->cap * 2 : 4;
		jvalue	  **items;

		items = realloc(v->items, (size_t) cap * sizeof(*items));
		if (!items)
			return tl_fail(jp->err, TL_E_NOMEM, "out of memory parsing safetensors header");
		v->items = items;
		if (v->type == J_OBJECT)
		{
			char	  **keys = realloc(v->keys, (size_t) cap * sizeof(*keys));

			if (!keys)
				return tl_fail(jp->err, TL_E_NOMEM, "out of memory parsing safetensors header");
			v->keys = keys;
		}
		v->cap = cap;
	}
	if (v->type == J_OBJECT)
		v->keys[v->n] = key;
	v->items[v->n++] = item;
	return TL_OK;
}

static tl_code
jparse_container(jparser *jp, jvalue *v, int depth)
{
	bool		obj = (*jp->p == '{');
	uint8_t		close = obj ? '}' : ']';

	v->type = obj ? J_OBJECT : J_ARRAY;
	jp->p++;
	jskip_ws(jp);
	if (jp->p < jp->end && *jp->p == close)
	{
		jp->p++;
		return TL_OK;
	}
	for (;;)
	{
		char	   *key = NULL;
		jvalue	   *item = NULL;
		tl_code		rc;

		jskip_ws(jp);
		if (obj)
		{
			size_t		klen;

			if (jp->p >= jp->end || *jp->p != '"')
				return jerr(jp, "expected a member name");
			if ((rc = jparse_string(jp, &key, &klen)) != TL_OK)
				return rc;
			for (int i = 0; i < v->n; i++)
				if (strcmp(v->keys[i], key) == 0)
				{
					tl_fail(jp->err, TL_E_CORRUPT, "safetensors header: duplicate key \"%.200s\"", key);
					free(key);
					return TL_E_CORRUPT;
				}
			jskip_ws(jp);
			if (jp->p >= jp->end || *jp->p != ':')
			{
				free(key);
				return jerr(jp, "expected ':'");
			}
			jp->p++;
		}
		if ((rc = jparse_value(jp, &item, depth + 1)) != TL_OK)
		{
			free(key);
			return rc;
		}
		if ((rc = jpush(jp, v, key, item)) != TL_OK)
		{
			free(key);
			jfree(item);
			return rc;
		}
		jskip_ws(jp);
		if (jp->p < jp->end && *jp->p == ',')
		{
			jp->p++;
			continue;
		}
		if (jp->p < jp->end && *jp->p == close)
		{
			jp->p++;
			return TL_OK;
		}
		return jerr(jp, obj ? "expected ',' or '}'" : "expected ',' or ']'");
	}
}

static bool
jliteral(jparser *jp, const char *lit)
{
	size_t		n = strlen(lit);

	if ((size_t) (jp->end - jp->p) < n || memcmp(jp->p, lit, n) != 0)
		return false;
	jp->p += n;
	return true;
}

static tl_code
jparse_value(jparser *jp, jvalue **out, int depth)
{
	jvalue	   *v;
	tl_code		rc;

	*out = NULL;
	if (depth > ST_MAX_DEPTH)
		return tl_fail(jp->err, TL_E_LIMIT, "safetensors header: nesting deeper than %d", ST_MAX_DEPTH);
	if (++jp->values > ST_MAX_VALUES)
		return tl_fail(jp->err, TL_E_LIMIT, "safetensors header: more than %d values", ST_MAX_VALUES);
	jskip_ws(jp);
	if (jp->p >= jp->end)
		return jerr(jp, "unexpected end");
	v = calloc(1, sizeof(*v));
	if (!v)
		return tl_fail(jp->err, TL_E_NOMEM, "out of memory parsing safetensors header");
	switch (*jp->p)
	{
		case '{':
		case '[':
			rc = jparse_container(jp, v, depth);
			break;
		case '"':
			v->type = J_STRING;
			rc = jparse_string(jp, &v->str, &v->slen);
			break;
		case 't':
		case 'f':
			v->type = J_BOOL;
			rc = (jliteral(jp, "true") || jliteral(jp, "false")) ? TL_OK : jerr(jp, "bad literal");
			break;
		case 'n':
			v->type = J_NULL;
			rc = jliteral(jp, "null") ? TL_OK : jerr(jp, "bad literal");
			break;
		default:
			rc = jparse_number(jp, v);
			break;
	}
	if (rc != TL_OK)
	{
		jfree(v);
		return rc;
	}
	*out = v;
	return TL_OK;
}

static const jvalue *
jget(const jvalue *obj, const char *key)
{
	/* Callers may hand any value (a tensor entry can be an array); only objects have keys. */
	if (obj->type != J_OBJECT)
		return NULL;
	for (int i = 0; i < obj->n; i++)
		if (strcmp(obj->keys[i], key) == 0)
			return obj->items[i];
	return NULL;
}

/* ---------- dtype conversion ---------- */

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

static uint32_t
rd_u32(const uint8_t *p)
{
	return (uint32_t) p[0] | ((uint32_t) p[1] << 8) | ((uint32_t) p[2] << 16) | ((uint32_t) p[3] << 24);
}

static uint64_t
rd_u64(const uint8_t *p)
{
	return (uint64_t) rd_u32(p) | ((uint64_t) rd_u32(p + 4) << 32);
}

static float
bits_to_float(uint32_t b)
{
	float		f;

	memcpy(&f, &b, 4);
	return f;
}

/* IEEE half to single, exact (subnormals, infinities and NaN included). */
float
tl_half_to_float(uint16_t h)
{
	uint32_t	sign = (uint32_t) (h & 0x8000) << 16;
	uint32_t	exp = (h >> 10) & 0x1F;
	uint32_t	man = h & 0x3FF;

	if (exp == 0x1F)
	{
		/* NaNs come out quiet, as torch (and the F16C instruction) convert them */
		return bits_to_float(sign | 0x7F800000 | (man ? 0x400000 : 0) | (man << 13));
	}
	if (exp == 0)
	{
		/* zero or subnormal: value is man * 2^-24, exactly representable */
		float		f = (float) man * (1.0f / 16777216.0f);

		return sign ? -f : f;
	}
	return bits_to_float(sign | ((exp + 112) << 23) | (man << 13));
}

void
tl_convert_to_f32(tl_elem_type type, const uint8_t *src, int64_t numel, float *dst)
{
	switch (type)
	{
		case TL_ELEM_F32:
			for (int64_t i = 0; i < numel; i++)
				dst[i] = bits_to_float(rd_u32(src + 4 * i));
			break;
		case TL_ELEM_F16:
			for (int64_t i = 0; i < numel; i++)
				dst[i] = tl_half_to_float((uint16_t) (src[2 * i] | (src[2 * i + 1] << 8)));
			break;
		case TL_ELEM_BF16:
			for (int64_t i = 0; i < numel; i++)
				dst[i] = bits_to_float((uint32_t) (src[2 * i] | (src[2 * i + 1] << 8)) << 16);
			break;
		case TL_ELEM_F64:
			for (int64_t i = 0; i < numel; i++)
			{
				uint64_t	b = rd_u64(src + 8 * i);
				double		d;

				memcpy(&d, &b, 8);
				dst[i] = (float) d;
			}
			break;
	}
}

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
	const jvalue *dt = jget(v, "dtype"),
			   *shape = jget(v, "shape"),
			   *offs = jget(v, "data_offsets");
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
	jparser		jp;
	tl_code		rc;

	*root = NULL;
	if (len < 8)
		return tl_fail(err, TL_E_CORRUPT, "safetensors: file of %zu bytes is too short", len);
	hlen = rd_u64(data);
	if (hlen > ST_MAX_HEADER_LEN)
		return tl_fail(err, TL_E_LIMIT, "safetensors: header length %llu exceeds the %u byte limit",
					   (unsigned long long) hlen, ST_MAX_HEADER_LEN);
	if (hlen < 2 || hlen > len - 8)
		return tl_fail(err, TL_E_CORRUPT,
					   "safetensors: header length %llu does not fit a file of %zu bytes",
					   (unsigned long long) hlen, len);
	if (data[8] != '{')
		return tl_fail(err, TL_E_CORRUPT, "safetensors: header does not start with '{'");

	jp.start = data + 8;
	jp.p = jp.start;
	jp.end = jp.start + hlen;
	jp.values = 0;
	jp.err = err;
	if ((rc = jparse_value(&jp, root, 0)) != TL_OK)
		return rc;
	jskip_ws(&jp);
	if (jp.p != jp.end)
		rc = jerr(&jp, "trailing bytes after the header object");
	else if ((*root)->type != J_OBJECT)
		rc = tl_fail(err, TL_E_CORRUPT, "safetensors: header is not an object");
	if (rc != TL_OK)
	{
		jfree(*root);
		*root = NULL;
		return rc;
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
	meta = jget(root, "__metadata__");
	if (meta && meta->type == J_OBJECT && (v = jget(meta, key)) != NULL && v->type == J_STRING)
	{
		*value = strdup(v->str);
		if (!*value)
			rc = tl_fail(err, TL_E_NOMEM, "out of memory reading safetensors metadata");
	}
	jfree(root);
	return rc;
}

tl_code
tl_json_string_array(const char *json, char ***items, int *n, tl_error *err)
{
	jparser		jp;
	jvalue	   *v = NULL;
	char	  **out = NULL;
	tl_code		rc;

	*items = NULL;
	*n = 0;
	jp.start = jp.p = (const uint8_t *) json;
	jp.end = jp.start + strlen(json);
	jp.values = 0;
	jp.err = err;
	if ((rc = jparse_value(&jp, &v, 0)) != TL_OK)
		return rc;
	jskip_ws(&jp);
	if (jp.p != jp.end || v->type != J_ARRAY)
	{
		jfree(v);
		return tl_fail(err, TL_E_CORRUPT, "not a JSON array of strings");
	}
	out = calloc((size_t) (v->n ? v->n : 1), sizeof(char *));
	if (!out)
	{
		jfree(v);
		return tl_fail(err, TL_E_NOMEM, "out of memory");
	}
	for (int i = 0; i < v->n; i++)
	{
		if (v->items[i]->type != J_STRING)
		{
			rc = tl_fail(err, TL_E_CORRUPT, "not a JSON array of strings");
			break;
		}
		/* Take the decoded string over from the DOM. */
		out[i] = v->items[i]->str;
		v->items[i]->str = NULL;
	}
	if (rc != TL_OK)
	{
		for (int i = 0; i < v->n; i++)
			free(out[i]);
		free(out);
		jfree(v);
		return rc;
	}
	*items = out;
	*n = v->n;
	jfree(v);
	return TL_OK;
}

tl_code
tl_safetensors_read(const uint8_t *data, size_t len, const tl_ckpt_limits *limits,
					tl_state_dict **out, tl_error *err)
{
	size_t		hlen;
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
	jfree(root);
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

bool
tl_utf8_valid(const uint8_t *p, size_t len)
{
	const uint8_t *end = p + len;

	while (p < end)
	{
		size_t		n = utf8_valid_len(p, end);

		if (n == 0)
			return false;
		p += n;
	}
	return true;
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
