/* tl_error.c - error values of the core. */
#include "tl_error.h"

#include <stdio.h>
#include <string.h>

tl_code
tl_fail(tl_error *err, tl_code code, const char *fmt,...)
{
	if (err)
	{
		va_list		ap;

		err->code = code;
		va_start(ap, fmt);
		vsnprintf(err->message, sizeof(err->message), fmt, ap);
		va_end(ap);
	}
	return code;
}

tl_code
tl_error_prefix(tl_error *err, const char *fmt,...)
{
	char		prefix[TL_ERROR_MSG_LEN];
	char		old[TL_ERROR_MSG_LEN];
	va_list		ap;

	if (!err)
		return TL_E_INTERNAL;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, err->message, sizeof(old));
	snprintf(err->message, sizeof(err->message), "%s: %s", prefix, old);
	return err->code;
}

void
tl_error_clear(tl_error *err)
{
	if (err)
	{
		err->code = TL_OK;
		err->message[0] = '\0';
	}
}

const char *
tl_code_name(tl_code code)
{
	switch (code)
	{
		case TL_OK:
			return "ok";
		case TL_E_NOMEM:
			return "nomem";
		case TL_E_INVALID:
			return "invalid";
		case TL_E_UNSUPPORTED:
			return "unsupported";
		case TL_E_CORRUPT:
			return "corrupt";
		case TL_E_LIMIT:
			return "limit";
		case TL_E_FORBIDDEN:
			return "forbidden";
		case TL_E_MISMATCH:
			return "mismatch";
		case TL_E_IO:
			return "io";
		case TL_E_INTERNAL:
			return "internal";
	}
	return "unknown";
}
