/* pg_error.h - raising core errors as PostgreSQL errors. */
#ifndef TL_PG_ERROR_H
#define TL_PG_ERROR_H

#include "tl_error.h"

/* SQLSTATE for a core error code. */
int			tl_pg_sqlstate(tl_code code);

/*
 * ereport(ERROR) with the core error's message and SQLSTATE; context (may be
 * NULL) goes into errcontext-like prefix "context: message".  Never returns.
 */
void		tl_pg_raise(const tl_error *err, const char *context) pg_attribute_noreturn();

#endif
