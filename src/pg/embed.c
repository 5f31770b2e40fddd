/*
 * embed.c - tl_embed(img bytea, model text DEFAULT NULL) returns real[]:
 * the backbone features of an image (eval mode, after the global average
 * pool, before fc), 8 * base_width values (512 for a ResNet-18).
 *
 * Like tl_predict it only reads: the model comes from the per-process cache
 * (model_cache.c), so it runs in parallel workers and on a hot standby.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"

#include "model_cache.h"
#include "pg_error.h"
#include "predict.h"
#include "transfer_pg.h"

PG_FUNCTION_INFO_V1(tl_embed);

Datum
tl_embed(PG_FUNCTION_ARGS)
{
	bytea	   *img;
	tl_cached_model *m;
	int			dim;
	float	   *feats;
	Datum	   *elems;
	tl_error	err;
	ArrayType  *result;

	/* Declared CALLED ON NULL INPUT for the model argument's NULL default. */
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	img = PG_GETARG_BYTEA_PP(0);

	m = tl_predict_call_model(fcinfo, 1);
	dim = 8 * tl_resnet_get_config(m->net)->base_width;
	tl_predict_prepare_input(m, img);

	if (tl_get_num_threads() != tl_guc_blas_threads)
		tl_set_num_threads(tl_guc_blas_threads);
	feats = palloc(sizeof(float) * dim);
	tl_error_clear(&err);
	if (tl_resnet_features(m->net, m->input, 1, feats, &err) != TL_OK)
		tl_pg_raise(&err, psprintf("computing the embedding with model \"%s\"", m->name));

	elems = palloc(sizeof(Datum) * dim);
	for (int i = 0; i < dim; i++)
	{
		if (!isfinite(feats[i]))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("model \"%s\" produced a non-finite embedding value", m->name),
					 errhint("Its weights contain NaN or infinite values, or values large enough to overflow; import or train it again.")));
		elems[i] = Float4GetDatum(feats[i]);
	}
	result = construct_array(elems, dim, FLOAT4OID, sizeof(float4), true, TYPALIGN_INT);
	pfree(elems);
	pfree(feats);
	PG_FREE_IF_COPY(img, 0);
	PG_RETURN_ARRAYTYPE_P(result);
}
