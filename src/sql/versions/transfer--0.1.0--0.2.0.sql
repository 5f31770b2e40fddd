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

-- ---- predict threads (issue 14) ----
CREATE FUNCTION @extschema@.tl_predict_threads() RETURNS integer
AS 'MODULE_PATHNAME', 'tl_predict_threads'
LANGUAGE C VOLATILE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.tl_predict_threads() IS
	'Compute threads a prediction in this process would use now: transfer.predict_threads, or its automatic choice (1 inside a parallel query).';
