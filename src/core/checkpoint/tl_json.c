/*
 * tl_json.c - a small JSON DOM for checkpoint headers and metadata.
 *
 * Our own and deliberately strict (RFC 8259, no extensions, duplicate keys
 * refused, nesting and size bounded), because every JSON text it reads comes
 * from a file or a table that may be hostile.
 */
#include "tl_checkpoint_internal.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A valid safetensors header nests 3 deep (root, tensor, shape); leave some room. */
#define JSON_MAX_DEPTH		8
/*
 * Bounds on the DOM, so a 100 MB header can't make us allocate gigabytes or
 * spend minutes on the duplicate-key check (quadratic in an object's size).
 * A ResNet-18 header has about 1,000 values and 103 members at its root.
 */
#define JSON_MAX_VALUES		(1 << 18)
#define JSON_MAX_MEMBERS	(1 << 14)

typedef struct
{
	const uint8_t *p;
	const uint8_t *end;
	const uint8_t *start;
	const char *what;		/* names the text in error messages */
	int			values;			/* parsed so far, bounded by JSON_MAX_VALUES */
	tl_error   *err;
} jparser;

void
tl_json_free(jvalue *v)
{
	if (!v)
		return;
	free(v->str);
	for (int i = 0; i < v->n; i++)
	{
		if (v->keys)
			free(v->keys[i]);
		tl_json_free(v->items[i]);
	}
	free(v->keys);
	free(v->items);
	free(v);
}

static tl_code
jerr(jparser *jp, const char *what)
{
	return tl_fail(jp->err, TL_E_CORRUPT, "%s: %s at byte %zu", jp->what,
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
		return tl_fail(jp->err, TL_E_NOMEM, "out of memory parsing %s", jp->what);
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
			size_t		ul = tl_utf8_seq_len(jp->p, jp->end);

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
	/* Only non-negative integers are ever meaningful in a checkpoint header. */
	v->is_int = !neg && !frac && !overflow;
	v->ival = v->is_int ? iv : -1;
	return TL_OK;
}

static tl_code jparse_value(jparser *jp, jvalue **out, int depth);

static tl_code
jpush(jparser *jp, jvalue *v, char *key, jvalue *item)
{
	if (v->type == J_OBJECT && v->n >= JSON_MAX_MEMBERS)
		return tl_fail(jp->err, TL_E_LIMIT, "%s: an object has more than %d members", jp->what,
					   JSON_MAX_MEMBERS);
	if (v->n == v->cap)
	{
		int			cap = v->cap ? v->cap * 2 : 4;
		jvalue	  **items;

		items = realloc(v->items, (size_t) cap * sizeof(*items));
		if (!items)
			return tl_fail(jp->err, TL_E_NOMEM, "out of memory parsing %s", jp->what);
		v->items = items;
		if (v->type == J_OBJECT)
		{
			char	  **keys = realloc(v->keys, (size_t) cap * sizeof(*keys));

			if (!keys)
				return tl_fail(jp->err, TL_E_NOMEM, "out of memory parsing %s", jp->what);
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
					tl_fail(jp->err, TL_E_CORRUPT, "%s: duplicate key \"%.200s\"", jp->what, key);
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
			tl_json_free(item);
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
	if (depth > JSON_MAX_DEPTH)
		return tl_fail(jp->err, TL_E_LIMIT, "%s: nesting deeper than %d", jp->what, JSON_MAX_DEPTH);
	if (++jp->values > JSON_MAX_VALUES)
		return tl_fail(jp->err, TL_E_LIMIT, "%s: more than %d values", jp->what, JSON_MAX_VALUES);
	jskip_ws(jp);
	if (jp->p >= jp->end)
		return jerr(jp, "unexpected end");
	v = calloc(1, sizeof(*v));
	if (!v)
		return tl_fail(jp->err, TL_E_NOMEM, "out of memory parsing %s", jp->what);
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
		tl_json_free(v);
		return rc;
	}
	*out = v;
	return TL_OK;
}

const jvalue *
tl_json_get(const jvalue *obj, const char *key)
{
	/* Callers may hand any value (a tensor entry can be an array); only objects have keys. */
	if (obj->type != J_OBJECT)
		return NULL;
	for (int i = 0; i < obj->n; i++)
		if (strcmp(obj->keys[i], key) == 0)
			return obj->items[i];
	return NULL;
}

tl_code
tl_json_parse(const uint8_t *text, size_t len, const char *what, jvalue **out, tl_error *err)
{
	jparser		jp;
	tl_code		rc;

	*out = NULL;
	jp.start = jp.p = text;
	jp.end = text + len;
	jp.what = what;
	jp.values = 0;
	jp.err = err;
	if ((rc = jparse_value(&jp, out, 0)) != TL_OK)
		return rc;
	jskip_ws(&jp);
	if (jp.p != jp.end)
	{
		rc = jerr(&jp, "trailing bytes after the JSON value");
		tl_json_free(*out);
		*out = NULL;
	}
	return rc;
}

tl_code
tl_json_string_array(const char *json, char ***items, int *n, tl_error *err)
{
	jvalue	   *v = NULL;
	char	  **out = NULL;
	tl_code		rc;

	*items = NULL;
	*n = 0;
	if ((rc = tl_json_parse((const uint8_t *) json, strlen(json), "JSON", &v, err)) != TL_OK)
		return rc;
	if (v->type != J_ARRAY)
	{
		tl_json_free(v);
		return tl_fail(err, TL_E_CORRUPT, "not a JSON array of strings");
	}
	out = calloc((size_t) (v->n ? v->n : 1), sizeof(char *));
	if (!out)
	{
		tl_json_free(v);
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
		tl_json_free(v);
		return rc;
	}
	*items = out;
	*n = v->n;
	tl_json_free(v);
	return TL_OK;
}
