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

/* The one hint that points to the list of models. */
#define TL_HINT_SEE_MODELS "The view tl_models lists the models you can use."

/*
 * A dataset (split NULL) or a dataset's split has no images: 42704 with a
 * hint listing the first datasets of tl_datasets when the dataset has no
 * image at all, else 22023 with a hint listing the dataset's splits.
 * Connects to SPI itself (nesting is fine).  Never returns.
 */
void		tl_pg_raise_no_dataset(const char *dataset, const char *split) pg_attribute_noreturn();

/* A model of this name exists already: 42710 with a hint.  Never returns. */
void		tl_pg_raise_model_exists(const char *name) pg_attribute_noreturn();

/*
 * Image id of tl_images can't be used (message says why): the detail names
 * its dataset, split, label and name, the hint how to delete it.  Connects to
 * SPI itself.  Never returns.
 */
void		tl_pg_raise_bad_image(int64 id, int sqlstate, const char *message) pg_attribute_noreturn();

#endif
