/*
 * tl_error.h - error reporting for the core (no PostgreSQL headers here).
 *
 * Every core function that can fail returns a tl_code and fills a caller
 * provided tl_error.  The PostgreSQL layer turns these into ereport() with
 * the SQLSTATE of tl_pg_raise() (src/pg/pg_error.c).  The core never exits,
 * aborts or longjmps out of a caller's frame.
 */
#ifndef TL_ERROR_H
#define TL_ERROR_H

#include <stdarg.h>

typedef enum tl_code
{
	TL_OK = 0,
	TL_E_NOMEM,			/* allocation failed */
	TL_E_INVALID,		/* bad argument from the caller (sizes, names, options) */
	TL_E_UNSUPPORTED,	/* recognised but unsupported: GIF image, pickle protocol, dtype */
	TL_E_CORRUPT,		/* malformed, truncated or inconsistent input bytes */
	TL_E_LIMIT,			/* input exceeds a configured limit (pixels, tensor size, nesting) */
	TL_E_FORBIDDEN,		/* input asks for something never allowed (pickle global) */
	TL_E_MISMATCH,		/* state_dict keys or shapes do not fit the network */
	TL_E_IO,			/* reading or writing a file failed */
	TL_E_INTERNAL		/* a bug: an invariant of the core does not hold */
} tl_code;

#define TL_ERROR_MSG_LEN 512

typedef struct tl_error
{
	tl_code		code;
	char		message[TL_ERROR_MSG_LEN];
} tl_error;

/* Set err (if not NULL) and return code, so callers can write `return tl_fail(...)`. */
tl_code		tl_fail(tl_error *err, tl_code code, const char *fmt,...)
			__attribute__((format(printf, 3, 4)));

/* Prefix an existing message with context: "reading data.pkl: <old message>". */
tl_code		tl_error_prefix(tl_error *err, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));

void		tl_error_clear(tl_error *err);

/* A stable, lowercase name for a code ("corrupt", "limit", ...), for tests and logs. */
const char *tl_code_name(tl_code code);

#endif
