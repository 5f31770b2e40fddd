/*
 * predict.h - helpers of predict.c shared with the other SQL functions that
 * run cached models (embed.c).
 */
#ifndef TL_PREDICT_H
#define TL_PREDICT_H

#include "postgres.h"

#include "fmgr.h"

#include "model_cache.h"

/* The extension's schema: the namespace of the function being called. */
Oid			tl_predict_extension_schema(FunctionCallInfo fcinfo);

/* The optional model argument at position argno, NULL if absent or NULL. */
char	   *tl_predict_model_arg(FunctionCallInfo fcinfo, int argno);

/* Decode img and apply m's eval transform into m->input; raises on a bad image. */
void		tl_predict_prepare_input(tl_cached_model *m, const bytea *img);

#endif
