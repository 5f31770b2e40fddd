/*
 * predict.h - helpers of predict.c shared with the other SQL functions that
 * run cached models (embed.c).
 */
#ifndef TL_PREDICT_H
#define TL_PREDICT_H

#include "postgres.h"

#include "fmgr.h"

#include "model_cache.h"

/*
 * The model of a call of a function called once per row (argument argno,
 * absent or NULL for the default model), through the call site's memo of
 * its last lookup; uses fn_extra.
 */
tl_cached_model *tl_predict_call_model(FunctionCallInfo fcinfo, int argno);

/* Decode img and apply m's eval transform into m->input; raises on a bad image. */
void		tl_predict_prepare_input(tl_cached_model *m, const bytea *img);

#endif
