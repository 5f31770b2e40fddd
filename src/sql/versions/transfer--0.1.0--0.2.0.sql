-- transfer 0.1.0 -> 0.2.0.  ALTER EXTENSION transfer UPDATE runs this on a
-- database created with 0.1.0; afterwards its objects must equal what
-- CREATE EXTENSION transfer (src/sql/NN_*.sql) makes, and every image,
-- model, run and deployment must be kept.  One section per change, in the
-- order the changes landed.
\echo Use "ALTER EXTENSION transfer UPDATE TO '0.2.0'" to load this file. \quit

-- ---- version ----
CREATE OR REPLACE FUNCTION @extschema@.tl_version() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT '0.2.0'::text $$;

-- ---- embeddings: tl_embed (issue 15) ----
CREATE FUNCTION @extschema@.tl_embed(img bytea, model text DEFAULT NULL) RETURNS real[]
AS 'MODULE_PATHNAME', 'tl_embed'
LANGUAGE C CALLED ON NULL INPUT STABLE PARALLEL SAFE COST 100000;
COMMENT ON FUNCTION @extschema@.tl_embed(bytea, text) IS
	'Backbone features of the image (eval mode, after global average pooling, before fc: 512 values for a ResNet-18) by the named model, or by the deployed one when model is NULL.';

-- ---- dumps keep the resume points of interrupted runs (issue 15) ----
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tl_run_checkpoints', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tl_run_checkpoint_tensors', '');
