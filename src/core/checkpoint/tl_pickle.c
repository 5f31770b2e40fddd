/*
 * tl_pickle.c - a restricted unpickler for PyTorch state_dict pickles.
 *
 * This is a security boundary.  Python's pickle can call any importable
 * function; this reader knows a fixed set of opcodes (those protocol 2
 * torch.save output uses for a state_dict) and a fixed set of globals, and
 * refuses anything else by name.  It never calls anything: REDUCE of an
 * allowed global builds a plain description (an ordered dict, a tensor view
 * of a storage) that the checkpoint readers interpret.
 *
 * Resource use is bounded: objects, memo size, MARK depth and the nesting
 * depth of built containers all have limits, and every length read from the
 * stream is checked against the bytes left.  Objects live in one arena freed
 * at once, so reference cycles (possible with SETITEM) do no harm, and
 * nothing here walks the object graph recursively.
 */
#include "tl_checkpoint_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PK_MAX_OBJECTS	(1 << 18)
#define PK_MAX_ITEMS	(1 << 20)	/* container slots in all, so memory stays bounded */
#define PK_MAX_MEMO		(1 << 20)
#define PK_MAX_LINE		256

/* The only globals a plain state_dict needs. */
static const struct
{
	const char *module;
	const char *name;
	pk_global	id;
}			pk_allowed[] = {
	{"collections", "OrderedDict", PKG_ORDERED_DICT},
	{"torch._utils", "_rebuild_tensor_v2", PKG_REBUILD_TENSOR_V2},
	{"torch._utils", "_rebuild_tensor", PKG_REBUILD_TENSOR},
	{"torch._utils", "_rebuild_parameter", PKG_REBUILD_PARAMETER},
	{"torch", "FloatStorage", PKG_FLOAT_STORAGE},
	{"torch", "HalfStorage", PKG_HALF_STORAGE},
	{"torch", "BFloat16Storage", PKG_BFLOAT16_STORAGE},
	{"torch", "DoubleStorage", PKG_DOUBLE_STORAGE},
	{"torch", "LongStorage", PKG_LONG_STORAGE},
};

struct tl_pickle
{
	pk_obj	   *objects;		/* arena: every object, linked through next */
	int			count;
	int			items;			/* elements held by all containers */
};

typedef struct
{
	const uint8_t *p;
	const uint8_t *end;
	const uint8_t *start;
	const tl_ckpt_limits *limits;
	tl_pickle  *arena;
	pk_obj	  **stack;
	int			sp;
	int			stack_cap;
	int		   *marks;			/* stack positions of open MARKs */
	int			nmarks;
	pk_obj	  **memo;
	int			memo_cap;
	tl_error   *err;
} pk_reader;

void
tl_pickle_free(tl_pickle *pk)
{
	pk_obj	   *o,
			   *next;

	if (!pk)
		return;
	for (o = pk->objects; o; o = next)
	{
		next = o->next;
		free(o->str);
		free(o->items);
		free(o);
	}
	free(pk);
}

const char *
tl_pickle_global_name(pk_global id)
{
	for (size_t i = 0; i < sizeof(pk_allowed) / sizeof(pk_allowed[0]); i++)
		if (pk_allowed[i].id == id)
			return pk_allowed[i].name;
	return "?";
}

static tl_code
pk_error(pk_reader *r, tl_code code, const char *what)
{
	return tl_fail(r->err, code, "pickle: %s at byte %zu", what, (size_t) (r->p - r->start));
}

static pk_obj *
pk_new(pk_reader *r, pk_kind kind)
{
	pk_obj	   *o;

	if (r->arena->count >= PK_MAX_OBJECTS)
	{
		tl_fail(r->err, TL_E_LIMIT, "pickle: more than %d objects", PK_MAX_OBJECTS);
		return NULL;
	}
	o = calloc(1, sizeof(*o));
	if (!o)
	{
		tl_fail(r->err, TL_E_NOMEM, "out of memory reading a pickle");
		return NULL;
	}
	o->kind = kind;
	o->next = r->arena->objects;
	r->arena->objects = o;
	r->arena->count++;
	return o;
}

static tl_code
pk_push(pk_reader *r, pk_obj *o)
{
	if (!o)
		return r->err ? r->err->code : TL_E_NOMEM;
	if (r->sp == r->stack_cap)
	{
		int			cap = r->stack_cap ? r->stack_cap * 2 : 64;
		pk_obj	  **s = realloc(r->stack, (size_t) cap * sizeof(*s));

		if (!s)
			return tl_fail(r->err, TL_E_NOMEM, "out of memory reading a pickle");
		r->stack = s;
		r->stack_cap = cap;
	}
	r->stack[r->sp++] = o;
	return TL_OK;
}

/* Top of stack, above the innermost mark. */
static pk_obj *
pk_pop(pk_reader *r)
{
	int			floor = r->nmarks ? r->marks[r->nmarks - 1] : 0;

	if (r->sp <= floor)
	{
		pk_error(r, TL_E_CORRUPT, "stack underflow");
		return NULL;
	}
	return r->stack[--r->sp];
}

static tl_code
pk_pop_mark(pk_reader *r, int *from)
{
	if (r->nmarks == 0)
		return pk_error(r, TL_E_CORRUPT, "no MARK to pop to");
	*from = r->marks[--r->nmarks];
	return TL_OK;
}

/* Record that container c now holds child: enforce the nesting limit. */
static tl_code
pk_nest(pk_reader *r, pk_obj *c, const pk_obj *child)
{
	if (child->depth + 1 > c->depth)
		c->depth = child->depth + 1;
	if (c->depth > r->limits->max_pickle_depth)
		return tl_fail(r->err, TL_E_LIMIT, "pickle: objects nest deeper than %d", r->limits->max_pickle_depth);
	return TL_OK;
}

static tl_code
pk_append(pk_reader *r, pk_obj *c, pk_obj *item)
{
	tl_code		rc;

	if (++r->arena->items > PK_MAX_ITEMS)
		return tl_fail(r->err, TL_E_LIMIT, "pickle: containers hold more than %d items", PK_MAX_ITEMS);
	if (c->n == c->cap)
	{
		int			cap = c->cap ? c->cap * 2 : 4;
		pk_obj	  **items;

		items = realloc(c->items, (size_t) cap * sizeof(*items));
		if (!items)
			return tl_fail(r->err, TL_E_NOMEM, "out of memory reading a pickle");
		c->items = items;
		c->cap = cap;
	}
	c->items[c->n++] = item;
	if ((rc = pk_nest(r, c, item)) != TL_OK)
		return rc;
	return TL_OK;
}

/* A tuple of the stack items from position from to the top, which are removed. */
static tl_code
pk_make_tuple(pk_reader *r, int from)
{
	pk_obj	   *t = pk_new(r, PK_TUPLE);
	tl_code		rc;

	if (!t)
		return r->err->code;
	for (int i = from; i < r->sp; i++)
		if ((rc = pk_append(r, t, r->stack[i])) != TL_OK)
			return rc;
	r->sp = from;
	return pk_push(r, t);
}

/*
 * Pairs are appended without looking for an equal key (that search would be
 * quadratic in hostile input); a state_dict with a repeated key is refused
 * when the tensors are collected, which torch.save never produces.
 */
static tl_code
pk_dict_set(pk_reader *r, pk_obj *d, pk_obj *k, pk_obj *v)
{
	tl_code		rc;

	if (d->kind != PK_DICT)
		return pk_error(r, TL_E_CORRUPT, "SETITEM on something that is not a dict");
	if ((rc = pk_append(r, d, k)) != TL_OK)
		return rc;
	return pk_append(r, d, v);
}

static bool
pk_need(pk_reader *r, size_t n)
{
	return (size_t) (r->end - r->p) >= n;
}

static uint32_t
le32(const uint8_t *p)
{
	return (uint32_t) p[0] | ((uint32_t) p[1] << 8) | ((uint32_t) p[2] << 16) | ((uint32_t) p[3] << 24);
}

static tl_code
pk_read_line(pk_reader *r, char *buf, size_t bufsize)
{
	const uint8_t *nl;
	size_t		n;

	nl = memchr(r->p, '\n', (size_t) (r->end - r->p) < bufsize ? (size_t) (r->end - r->p) : bufsize);
	if (!nl)
		return pk_error(r, TL_E_CORRUPT, "GLOBAL name missing or too long");
	n = (size_t) (nl - r->p);
	memcpy(buf, r->p, n);
	buf[n] = '\0';
	for (size_t i = 0; i < n; i++)
		if ((unsigned char) buf[i] < 0x20 || (unsigned char) buf[i] >= 0x7f)
			return pk_error(r, TL_E_CORRUPT, "GLOBAL name has invalid characters");
	r->p = nl + 1;
	return TL_OK;
}

static tl_code
pk_global_op(pk_reader *r)
{
	char		module[PK_MAX_LINE + 1],
				name[PK_MAX_LINE + 1];
	tl_code		rc;
	pk_obj	   *o;

	if ((rc = pk_read_line(r, module, sizeof(module))) != TL_OK ||
		(rc = pk_read_line(r, name, sizeof(name))) != TL_OK)
		return rc;
	for (size_t i = 0; i < sizeof(pk_allowed) / sizeof(pk_allowed[0]); i++)
		if (strcmp(module, pk_allowed[i].module) == 0 && strcmp(name, pk_allowed[i].name) == 0)
		{
			if (!(o = pk_new(r, PK_GLOBAL)))
				return r->err->code;
			o->global = pk_allowed[i].id;
			return pk_push(r, o);
		}
	if (strncmp(module, "torch", 5) == 0)
		return tl_fail(r->err, TL_E_FORBIDDEN,
					   "pickle global \"%s.%s\" is not allowed (only plain state_dicts of tensors can be read: "
					   "save model.state_dict(), not the model)", module, name);
	return tl_fail(r->err, TL_E_FORBIDDEN, "pickle global \"%s.%s\" is not allowed", module, name);
}

static tl_code
pk_string(pk_reader *r, uint64_t n)
{
	pk_obj	   *o;

	if (!pk_need(r, n))
		return pk_error(r, TL_E_CORRUPT, "string runs past the end");
	/* Python decodes these as UTF-8 and so must we: names end up as SQL text. */
	if (!tl_utf8_valid(r->p, (size_t) n))
		return pk_error(r, TL_E_CORRUPT, "string is not valid UTF-8");
	if (!(o = pk_new(r, PK_STR)))
		return r->err->code;
	o->str = malloc((size_t) n + 1);
	if (!o->str)
		return tl_fail(r->err, TL_E_NOMEM, "out of memory reading a pickle");
	memcpy(o->str, r->p, (size_t) n);
	o->str[n] = '\0';
	o->len = (size_t) n;
	r->p += n;
	return pk_push(r, o);
}

static tl_code
pk_int(pk_reader *r, int64_t v)
{
	pk_obj	   *o = pk_new(r, PK_INT);

	if (!o)
		return r->err->code;
	o->ival = v;
	return pk_push(r, o);
}

static tl_code
pk_memo_put(pk_reader *r, uint32_t idx)
{
	int			floor = r->nmarks ? r->marks[r->nmarks - 1] : 0;

	if (r->sp <= floor)
		return pk_error(r, TL_E_CORRUPT, "PUT with an empty stack");
	if (idx >= PK_MAX_MEMO)
		return tl_fail(r->err, TL_E_LIMIT, "pickle: memo index %u exceeds the limit of %d", idx, PK_MAX_MEMO);
	if ((int) idx >= r->memo_cap)
	{
		int			cap = r->memo_cap ? r->memo_cap : 64;
		pk_obj	  **m;

		while (cap <= (int) idx)
			cap *= 2;
		m = realloc(r->memo, (size_t) cap * sizeof(*m));
		if (!m)
			return tl_fail(r->err, TL_E_NOMEM, "out of memory reading a pickle");
		memset(m + r->memo_cap, 0, (size_t) (cap - r->memo_cap) * sizeof(*m));
		r->memo = m;
		r->memo_cap = cap;
	}
	r->memo[idx] = r->stack[r->sp - 1];
	return TL_OK;
}

static tl_code
pk_memo_get(pk_reader *r, uint32_t idx)
{
	if ((int) idx >= r->memo_cap || idx >= PK_MAX_MEMO || !r->memo[idx])
		return pk_error(r, TL_E_CORRUPT, "GET of an unset memo entry");
	return pk_push(r, r->memo[idx]);
}

/* A tuple of ints (a tensor's size or stride) into out. */
static tl_code
pk_int_tuple(pk_reader *r, const pk_obj *t, int64_t *out, int *n, const char *what)
{
	if (t->kind != PK_TUPLE)
		return tl_fail(r->err, TL_E_CORRUPT, "pickle: tensor %s is not a tuple", what);
	if (t->n > TL_MAX_DIMS)
		return tl_fail(r->err, TL_E_UNSUPPORTED, "pickle: tensor with %d dimensions (at most %d)", t->n, TL_MAX_DIMS);
	for (int i = 0; i < t->n; i++)
	{
		if (t->items[i]->kind != PK_INT)
			return tl_fail(r->err, TL_E_CORRUPT, "pickle: tensor %s holds a non-integer", what);
		if (t->items[i]->ival < 0)
			return tl_fail(r->err, TL_E_CORRUPT, "pickle: tensor %s holds a negative value", what);
		out[i] = t->items[i]->ival;
	}
	*n = t->n;
	return TL_OK;
}

static tl_code
pk_reduce(pk_reader *r)
{
	pk_obj	   *args = pk_pop(r),
			   *fn = pk_pop(r),
			   *o;
	tl_code		rc;

	if (!args || !fn)
		return r->err->code;
	if (fn->kind != PK_GLOBAL)
		return pk_error(r, TL_E_CORRUPT, "REDUCE of something that is not a global");
	if (args->kind != PK_TUPLE)
		return pk_error(r, TL_E_CORRUPT, "REDUCE arguments are not a tuple");
	switch (fn->global)
	{
		case PKG_ORDERED_DICT:
			if (!(o = pk_new(r, PK_DICT)))
				return r->err->code;
			o->ordered = true;
			if (args->n == 1 && args->items[0]->kind == PK_LIST)
			{
				/* Python 2 pickles an OrderedDict as OrderedDict([[key, value], ...]) */
				const pk_obj *pairs = args->items[0];

				for (int i = 0; i < pairs->n; i++)
				{
					const pk_obj *kv = pairs->items[i];

					if ((kv->kind != PK_LIST && kv->kind != PK_TUPLE) || kv->n != 2)
						return tl_fail(r->err, TL_E_CORRUPT, "pickle: OrderedDict item is not a pair");
					if ((rc = pk_dict_set(r, o, kv->items[0], kv->items[1])) != TL_OK)
						return rc;
				}
			}
			else if (args->n != 0)
				return tl_fail(r->err, TL_E_UNSUPPORTED, "pickle: OrderedDict with unexpected constructor arguments");
			return pk_push(r, o);

		case PKG_REBUILD_TENSOR:
		case PKG_REBUILD_TENSOR_V2:
			{
				/* (storage, storage_offset, size, stride[, requires_grad, backward_hooks[, metadata]]) */
				int			nsize,
							nstride;

				if (fn->global == PKG_REBUILD_TENSOR ? args->n != 4 : (args->n != 6 && args->n != 7))
					return tl_fail(r->err, TL_E_CORRUPT, "pickle: %s called with %d arguments",
								   tl_pickle_global_name(fn->global), args->n);
				if (args->items[0]->kind != PK_STORAGE)
					return tl_fail(r->err, TL_E_CORRUPT, "pickle: tensor without a storage");
				if (args->items[1]->kind != PK_INT || args->items[1]->ival < 0)
					return tl_fail(r->err, TL_E_CORRUPT, "pickle: tensor storage offset is not a non-negative integer");
				if (!(o = pk_new(r, PK_TENSOR)))
					return r->err->code;
				o->storage = args->items[0];
				o->offset = args->items[1]->ival;
				if ((rc = pk_int_tuple(r, args->items[2], o->size, &nsize, "size")) != TL_OK ||
					(rc = pk_int_tuple(r, args->items[3], o->stride, &nstride, "stride")) != TL_OK)
					return rc;
				if (nsize != nstride)
					return tl_fail(r->err, TL_E_CORRUPT, "pickle: tensor size and stride differ in length");
				o->ndim = nsize;
				if (args->n >= 6 && args->items[5]->kind == PK_DICT && args->items[5]->n != 0)
					return tl_fail(r->err, TL_E_UNSUPPORTED, "pickle: tensor with backward hooks");
				return pk_push(r, o);
			}

		case PKG_REBUILD_PARAMETER:
			/* (data, requires_grad, backward_hooks): the parameter is its data */
			if (args->n != 3 || args->items[0]->kind != PK_TENSOR)
				return tl_fail(r->err, TL_E_CORRUPT, "pickle: _rebuild_parameter with bad arguments");
			return pk_push(r, args->items[0]);

		default:
			return tl_fail(r->err, TL_E_FORBIDDEN, "pickle global \"torch.%s\" can't be called",
						   tl_pickle_global_name(fn->global));
	}
}

/* BINPERSID: ('storage', storage_type, key, location, numel[, view_metadata]) */
static tl_code
pk_persid(pk_reader *r)
{
	pk_obj	   *pid = pk_pop(r),
			   *o;

	if (!pid)
		return r->err->code;
	if (pid->kind != PK_TUPLE || (pid->n != 5 && pid->n != 6) ||
		pid->items[0]->kind != PK_STR || strcmp(pid->items[0]->str, "storage") != 0)
		return tl_fail(r->err, TL_E_CORRUPT, "pickle: persistent id is not a storage reference");
	if (pid->items[1]->kind != PK_GLOBAL || pid->items[1]->global < PKG_FLOAT_STORAGE)
		return tl_fail(r->err, TL_E_CORRUPT, "pickle: storage reference without a storage type");
	if (pid->items[2]->kind != PK_STR || pid->items[2]->len == 0 || pid->items[2]->len > 64 ||
		strlen(pid->items[2]->str) != pid->items[2]->len || strchr(pid->items[2]->str, '/') ||
		strstr(pid->items[2]->str, ".."))
		return tl_fail(r->err, TL_E_CORRUPT, "pickle: storage key is not a short plain string");
	if (pid->items[3]->kind != PK_STR)
		return tl_fail(r->err, TL_E_CORRUPT, "pickle: storage location is not a string");
	if (pid->items[4]->kind != PK_INT || pid->items[4]->ival < 0)
		return tl_fail(r->err, TL_E_CORRUPT, "pickle: storage size is not a non-negative integer");
	if (pid->n == 6 && pid->items[5]->kind != PK_NONE)
		return tl_fail(r->err, TL_E_UNSUPPORTED, "pickle: storage views (pre-0.4 PyTorch) are not supported");
	if (!(o = pk_new(r, PK_STORAGE)))
		return r->err->code;
	o->global = pid->items[1]->global;
	o->str = strdup(pid->items[2]->str);
	if (!o->str)
		return tl_fail(r->err, TL_E_NOMEM, "out of memory reading a pickle");
	o->len = pid->items[2]->len;
	o->ival = pid->items[4]->ival;
	return pk_push(r, o);
}

static tl_code
pk_run(pk_reader *r, pk_obj **result)
{
	tl_code		rc = TL_OK;
	int			from = 0;
	pk_obj	   *a,
			   *b,
			   *c;

	if (!pk_need(r, 2) || r->p[0] != 0x80)
		return pk_error(r, TL_E_UNSUPPORTED, "not a protocol 2 pickle");
	if (r->p[1] != 2)
		return tl_fail(r->err, TL_E_UNSUPPORTED, "pickle: protocol %d is not supported (torch.save writes 2)", r->p[1]);
	r->p += 2;

	for (;;)
	{
		uint8_t		op;

		if (!pk_need(r, 1))
			return pk_error(r, TL_E_CORRUPT, "pickle ends without STOP");
		op = *r->p++;
		switch (op)
		{
			case '.':			/* STOP */
				if (r->nmarks != 0 || r->sp != 1)
					return pk_error(r, TL_E_CORRUPT, "STOP with a malformed stack");
				*result = r->stack[0];
				return TL_OK;
			case '(':			/* MARK */
				if (r->nmarks >= r->limits->max_pickle_depth)
					return tl_fail(r->err, TL_E_LIMIT, "pickle: MARKs nest deeper than %d",
								   r->limits->max_pickle_depth);
				if (!r->marks)
				{
					r->marks = malloc((size_t) r->limits->max_pickle_depth * sizeof(int));
					if (!r->marks)
						return tl_fail(r->err, TL_E_NOMEM, "out of memory reading a pickle");
				}
				r->marks[r->nmarks++] = r->sp;
				break;
			case 'c':			/* GLOBAL */
				rc = pk_global_op(r);
				break;
			case 'q':			/* BINPUT */
				if (!pk_need(r, 1))
					return pk_error(r, TL_E_CORRUPT, "truncated BINPUT");
				rc = pk_memo_put(r, *r->p++);
				break;
			case 'r':			/* LONG_BINPUT */
				if (!pk_need(r, 4))
					return pk_error(r, TL_E_CORRUPT, "truncated LONG_BINPUT");
				rc = pk_memo_put(r, le32(r->p));
				r->p += 4;
				break;
			case 'h':			/* BINGET */
				if (!pk_need(r, 1))
					return pk_error(r, TL_E_CORRUPT, "truncated BINGET");
				rc = pk_memo_get(r, *r->p++);
				break;
			case 'j':			/* LONG_BINGET */
				if (!pk_need(r, 4))
					return pk_error(r, TL_E_CORRUPT, "truncated LONG_BINGET");
				rc = pk_memo_get(r, le32(r->p));
				r->p += 4;
				break;
			case 'N':			/* NONE */
				rc = pk_push(r, pk_new(r, PK_NONE));
				break;
			case 0x88:			/* NEWTRUE */
			case 0x89:			/* NEWFALSE */
				if ((a = pk_new(r, PK_BOOL)))
					a->ival = (op == 0x88);
				rc = pk_push(r, a);
				break;
			case 'K':			/* BININT1 */
				if (!pk_need(r, 1))
					return pk_error(r, TL_E_CORRUPT, "truncated BININT1");
				rc = pk_int(r, *r->p++);
				break;
			case 'M':			/* BININT2 */
				if (!pk_need(r, 2))
					return pk_error(r, TL_E_CORRUPT, "truncated BININT2");
				rc = pk_int(r, r->p[0] | (r->p[1] << 8));
				r->p += 2;
				break;
			case 'J':			/* BININT: signed 32-bit */
				if (!pk_need(r, 4))
					return pk_error(r, TL_E_CORRUPT, "truncated BININT");
				rc = pk_int(r, (int32_t) le32(r->p));
				r->p += 4;
				break;
			case 0x8a:			/* LONG1: n-byte little-endian two's complement */
				{
					uint8_t		n;
					uint64_t	v = 0;

					if (!pk_need(r, 1))
						return pk_error(r, TL_E_CORRUPT, "truncated LONG1");
					n = *r->p++;
					if (!pk_need(r, n))
						return pk_error(r, TL_E_CORRUPT, "truncated LONG1");
					if (n > 8)
					{
						/* Only the legacy format's magic number is this long: keep it as a marker. */
						if (n == 10 && memcmp(r->p, "\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10) == 0)
						{
							r->p += n;
							if ((a = pk_new(r, PK_INT)))
								a->is_torch_magic = true;
							rc = pk_push(r, a);
							break;
						}
						return pk_error(r, TL_E_UNSUPPORTED, "integer wider than 64 bits");
					}
					for (int i = 0; i < n; i++)
						v |= (uint64_t) r->p[i] << (8 * i);
					if (n > 0 && n < 8 && (r->p[n - 1] & 0x80))
						v |= ~UINT64_C(0) << (8 * n);	/* sign-extend */
					r->p += n;
					rc = pk_int(r, (int64_t) v);
					break;
				}
			case 'X':			/* BINUNICODE */
			case 'T':			/* BINSTRING (Python 2 str, in old legacy files) */
				if (!pk_need(r, 4))
					return pk_error(r, TL_E_CORRUPT, "truncated string length");
				{
					uint32_t	n = le32(r->p);

					r->p += 4;
					if (op == 'T' && (int32_t) n < 0)
						return pk_error(r, TL_E_CORRUPT, "negative string length");
					rc = pk_string(r, n);
				}
				break;
			case 'U':			/* SHORT_BINSTRING */
				if (!pk_need(r, 1))
					return pk_error(r, TL_E_CORRUPT, "truncated string length");
				{
					uint8_t		n = *r->p++;

					rc = pk_string(r, n);
				}
				break;
			case ')':			/* EMPTY_TUPLE */
				rc = pk_push(r, pk_new(r, PK_TUPLE));
				break;
			case 't':			/* TUPLE */
				if ((rc = pk_pop_mark(r, &from)) == TL_OK)
					rc = pk_make_tuple(r, from);
				break;
			case 0x85:			/* TUPLE1 */
			case 0x86:			/* TUPLE2 */
			case 0x87:			/* TUPLE3 */
				{
					int			n = op - 0x84;
					int			floor = r->nmarks ? r->marks[r->nmarks - 1] : 0;

					if (r->sp - floor < n)
						return pk_error(r, TL_E_CORRUPT, "stack underflow");
					rc = pk_make_tuple(r, r->sp - n);
					break;
				}
			case ']':			/* EMPTY_LIST */
				rc = pk_push(r, pk_new(r, PK_LIST));
				break;
			case '}':			/* EMPTY_DICT */
				rc = pk_push(r, pk_new(r, PK_DICT));
				break;
			case 'a':			/* APPEND */
				if (!(a = pk_pop(r)) || !(b = pk_pop(r)))
					return r->err->code;
				if (b->kind != PK_LIST)
					return pk_error(r, TL_E_CORRUPT, "APPEND to something that is not a list");
				if ((rc = pk_append(r, b, a)) == TL_OK)
					rc = pk_push(r, b);
				break;
			case 'e':			/* APPENDS */
				if ((rc = pk_pop_mark(r, &from)) != TL_OK)
					return rc;
				if (from == 0 || (r->nmarks && from <= r->marks[r->nmarks - 1]) ||
					r->stack[from - 1]->kind != PK_LIST)
					return pk_error(r, TL_E_CORRUPT, "APPENDS to something that is not a list");
				b = r->stack[from - 1];
				for (int i = from; i < r->sp && rc == TL_OK; i++)
					rc = pk_append(r, b, r->stack[i]);
				r->sp = from;
				break;
			case 's':			/* SETITEM */
				if (!(a = pk_pop(r)) || !(b = pk_pop(r)) || !(c = pk_pop(r)))
					return r->err->code;
				if ((rc = pk_dict_set(r, c, b, a)) == TL_OK)
					rc = pk_push(r, c);
				break;
			case 'u':			/* SETITEMS */
				if ((rc = pk_pop_mark(r, &from)) != TL_OK)
					return rc;
				if (from == 0 || (r->nmarks && from <= r->marks[r->nmarks - 1]) ||
					(r->sp - from) % 2 != 0)
					return pk_error(r, TL_E_CORRUPT, "malformed SETITEMS");
				c = r->stack[from - 1];
				for (int i = from; i < r->sp && rc == TL_OK; i += 2)
					rc = pk_dict_set(r, c, r->stack[i], r->stack[i + 1]);
				r->sp = from;
				break;
			case 'R':			/* REDUCE */
				rc = pk_reduce(r);
				break;
			case 'Q':			/* BINPERSID */
				rc = pk_persid(r);
				break;
			case 'b':			/* BUILD: only an OrderedDict's attributes (torch's _metadata), which are dropped */
				if (!(a = pk_pop(r)) || !(b = pk_pop(r)))
					return r->err->code;
				if (b->kind != PK_DICT || !b->ordered || a->kind != PK_DICT)
					return pk_error(r, TL_E_UNSUPPORTED, "BUILD of something other than an OrderedDict");
				rc = pk_push(r, b);
				break;
			default:
				{
					char		what[64];

					snprintf(what, sizeof what, "opcode 0x%02x is not supported", op);
					return pk_error(r, TL_E_UNSUPPORTED, what);
				}
		}
		if (rc != TL_OK)
			return rc;
	}
}

tl_code
tl_pickle_load(const uint8_t *data, size_t len, const tl_ckpt_limits *limits,
			   tl_pickle **arena, pk_obj **root, size_t *consumed, tl_error *err)
{
	pk_reader	r;
	tl_error	local_err;
	tl_code		rc;

	if (!err)
		err = &local_err;
	*arena = NULL;
	*root = NULL;
	if (!limits)
		limits = &tl_ckpt_default_limits;
	memset(&r, 0, sizeof(r));
	r.start = r.p = data;
	r.end = data + len;
	r.limits = limits;
	r.err = err;
	r.arena = calloc(1, sizeof(*r.arena));
	if (!r.arena)
		return tl_fail(err, TL_E_NOMEM, "out of memory reading a pickle");
	rc = pk_run(&r, root);
	free(r.stack);
	free(r.marks);
	free(r.memo);
	if (rc != TL_OK)
	{
		tl_pickle_free(r.arena);
		*root = NULL;
		return rc;
	}
	if (consumed)
		*consumed = (size_t) (r.p - data);
	*arena = r.arena;
	return TL_OK;
}
