-- Embeddings: tl_embed returns an image's backbone features, for similarity
-- search in plain SQL (or with pgvector: the array casts to vector).
CREATE FUNCTION @extschema@.tl_embed(img bytea, model text DEFAULT NULL) RETURNS real[]
AS 'MODULE_PATHNAME', 'tl_embed'
LANGUAGE C CALLED ON NULL INPUT STABLE PARALLEL SAFE COST 10000
SUPPORT @extschema@.tl_predict_support;
COMMENT ON FUNCTION @extschema@.tl_embed(bytea, text) IS
	'Backbone features of the image (eval mode, after global average pooling, before fc: 512 values for a ResNet-18) by the named model, or by the deployed one when model is NULL.';
