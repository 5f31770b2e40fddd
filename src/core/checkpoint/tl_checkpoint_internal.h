/*
 * tl_checkpoint_internal.h - pieces shared inside the checkpoint folder.
 * Not part of the contract: nothing outside this folder includes it (but its
 * unit tests).
 *
 * Calls point one way: tl_checkpoint.c (sniff, dispatch) calls the formats,
 * tl_safetensors.c and tl_torch.c; tl_torch.c calls the containers,
 * tl_pickle.c and tl_zip.c; tl_safetensors.c calls tl_json.c; and all of
 * them call tl_ckpt_common.c, which calls nothing here.
 */
#ifndef TL_CHECKPOINT_INTERNAL_H
#define TL_CHECKPOINT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tl_checkpoint.h"

/* ---- shared basics (tl_ckpt_common.c) ---- */

static inline uint32_t
tl_get_u32le(const uint8_t *p)
{
	return (uint32_t) p[0] | ((uint32_t) p[1] << 8) | ((uint32_t) p[2] << 16) | ((uint32_t) p[3] << 24);
}

static inline uint64_t
tl_get_u64le(const uint8_t *p)
{
	return (uint64_t) tl_get_u32le(p) | ((uint64_t) tl_get_u32le(p + 4) << 32);
}

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

/* Well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
bool		tl_utf8_valid(const uint8_t *p, size_t len);
/* Length of the well-formed UTF-8 sequence at p (before end), or 0. */
size_t		tl_utf8_seq_len(const uint8_t *p, const uint8_t *end);

/* numel floats as little-endian bytes. */
void		tl_put_f32le(uint8_t *dst, const float *src, int64_t numel);

/* ---- strict JSON DOM (tl_json.c) ---- */

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

/*
 * Parse one JSON value filling all of text[0, len) (whitespace around it
 * allowed).  `what` names the text in error messages ("safetensors header").
 */
tl_code		tl_json_parse(const uint8_t *text, size_t len, const char *what, jvalue **out,
						  tl_error *err);
void		tl_json_free(jvalue *v);
/* An object's member, or NULL (also for a value that is not an object). */
const jvalue *tl_json_get(const jvalue *obj, const char *key);

/* ---- zip container (tl_zip.c) ---- */

typedef struct tl_zip_entry
{
	char	   *name;
	uint16_t	method;			/* 0 stored, 8 deflate */
	uint32_t	crc;
	uint64_t	size;			/* uncompressed */
	uint64_t	comp_size;
	uint64_t	local_offset;
	uint64_t	data_offset;	/* start of the entry's bytes in the file */
} tl_zip_entry;

typedef struct tl_zip tl_zip;

/* Parse and check the central directory of a zip held in memory (data must outlive z). */
tl_code		tl_zip_open(const uint8_t *data, size_t len, int max_entries, tl_zip **out, tl_error *err);
void		tl_zip_close(tl_zip *z);
int			tl_zip_count(const tl_zip *z);
const tl_zip_entry *tl_zip_entry_at(const tl_zip *z, int i);
const tl_zip_entry *tl_zip_find(const tl_zip *z, const char *name);

/*
 * An entry's bytes, CRC-checked.  Stored entries point into the zip's buffer
 * (*owned = NULL); inflated ones are malloc'd and returned in *owned too,
 * for the caller to free.
 */
tl_code		tl_zip_read(const tl_zip *z, const tl_zip_entry *e, uint64_t max_size,
						const uint8_t **bytes, uint8_t **owned, tl_error *err);

typedef struct tl_zip_out_entry
{
	const char *name;
	const uint8_t *data;
	size_t		len;
} tl_zip_out_entry;

/* A zip of stored entries with 64-byte aligned data; *out is malloc'd. */
tl_code		tl_zip_write(const tl_zip_out_entry *entries, int n, uint8_t **out, size_t *out_len,
						 tl_error *err);

uint32_t	tl_crc32(const uint8_t *data, size_t len);

/* ---- restricted unpickler (tl_pickle.c) ---- */

typedef enum pk_kind
{
	PK_NONE, PK_BOOL, PK_INT, PK_STR, PK_TUPLE, PK_LIST, PK_DICT,
	PK_GLOBAL,					/* an allowed global (pk_global) */
	PK_STORAGE,					/* a persistent storage reference */
	PK_TENSOR					/* a _rebuild_tensor(_v2) result: a view of a storage */
} pk_kind;

typedef enum pk_global
{
	PKG_ORDERED_DICT,
	PKG_REBUILD_TENSOR_V2,
	PKG_REBUILD_TENSOR,
	PKG_REBUILD_PARAMETER,
	/* storage types: keep these last, in this order */
	PKG_FLOAT_STORAGE,
	PKG_HALF_STORAGE,
	PKG_BFLOAT16_STORAGE,
	PKG_DOUBLE_STORAGE,
	PKG_LONG_STORAGE
} pk_global;

typedef struct pk_obj pk_obj;

struct pk_obj
{
	pk_kind		kind;
	int			depth;			/* nesting depth of containers below this one */
	int64_t		ival;			/* INT, BOOL; STORAGE: element count */
	bool		is_torch_magic;	/* INT: the legacy format's 10-byte magic number */
	char	   *str;			/* STR (len bytes + NUL); STORAGE: key */
	size_t		len;
	int			n;				/* TUPLE/LIST: items; DICT: 2 * pairs (key, value, ...) */
	int			cap;
	pk_obj	  **items;
	bool		ordered;		/* DICT: an OrderedDict */
	pk_global	global;			/* GLOBAL; STORAGE: its storage type */
	pk_obj	   *storage;		/* TENSOR */
	int64_t		offset;			/* TENSOR: storage offset, in elements */
	int			ndim;
	int64_t		size[TL_MAX_DIMS];
	int64_t		stride[TL_MAX_DIMS];
	pk_obj	   *next;			/* arena list */
};

typedef struct tl_pickle tl_pickle;

/*
 * Unpickle one pickle from data (which may continue after STOP: *consumed,
 * if not NULL, gets the bytes used).  Objects belong to *arena; free it with
 * tl_pickle_free.  Unknown opcodes are TL_E_UNSUPPORTED; globals outside the
 * allow list are TL_E_FORBIDDEN with the global's name in the message.
 */
tl_code		tl_pickle_load(const uint8_t *data, size_t len, const tl_ckpt_limits *limits,
						   tl_pickle **arena, pk_obj **root, size_t *consumed, tl_error *err);
void		tl_pickle_free(tl_pickle *arena);
const char *tl_pickle_global_name(pk_global id);

#endif
