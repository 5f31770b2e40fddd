-- The compute threads of a prediction call (transfer.predict_threads).

CREATE FUNCTION @extschema@.tl_predict_threads() RETURNS integer
AS 'MODULE_PATHNAME', 'tl_predict_threads'
LANGUAGE C VOLATILE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.tl_predict_threads() IS
	'Compute threads a prediction in this process would use now: transfer.predict_threads, or its automatic choice (1 inside a parallel query).';
