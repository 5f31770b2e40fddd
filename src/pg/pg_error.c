/* pg_error.c - map core error codes to SQLSTATEs and raise them. */
#include "postgres.h"

#include "pg_error.h"

int
tl_pg_sqlstate(tl_code code)
{
	switch (code)
	{
		case TL_OK:
			break;
		case TL_E_NOMEM:
			return ERRCODE_OUT_OF_MEMORY;
		case TL_E_INVALID:
			return ERRCODE_INVALID_PARAMETER_VALUE;
		case TL_E_UNSUPPORTED:
			return ERRCODE_FEATURE_NOT_SUPPORTED;
		case TL_E_CORRUPT:
			return ERRCODE_INVALID_BINARY_REPRESENTATION;
		case TL_E_LIMIT:
			return ERRCODE_PROGRAM_LIMIT_EXCEEDED;
		case TL_E_FORBIDDEN:
			return ERRCODE_INSUFFICIENT_PRIVILEGE;
		case TL_E_MISMATCH:
			return ERRCODE_DATATYPE_MISMATCH;
		case TL_E_IO:
			return ERRCODE_IO_ERROR;
		case TL_E_INTERNAL:
			break;
	}
	return ERRCODE_INTERNAL_ERROR;
}

void
tl_pg_raise(const tl_error *err, const char *context)
{
	if (context)
		ereport(ERROR,
				(errcode(tl_pg_sqlstate(err->code)),
				 errmsg("%s: %s", context, err->message)));
	ereport(ERROR,
			(errcode(tl_pg_sqlstate(err->code)),
			 errmsg("%s", err->message)));
	pg_unreachable();
}
