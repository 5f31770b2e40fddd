-- transfer: ResNet-18 transfer learning on images stored in PostgreSQL.
-- This install script is assembled from src/sql/NN_*.sql (see Makefile).
\echo Use "CREATE EXTENSION transfer" to load this file. \quit

-- Every object is created in the extension's schema and referenced through
-- @extschema@, so no function depends on the caller's search_path.

CREATE FUNCTION @extschema@.tl_version() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT '0.2.0'::text $$;
COMMENT ON FUNCTION @extschema@.tl_version() IS 'Version of the transfer extension''s SQL objects.';
