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

-- ---- error model: unknown ETA is NULL ----
CREATE OR REPLACE VIEW @extschema@.tl_progress
WITH (security_invoker = true) AS
SELECT r.id AS run,
	   r.role,
	   r.dataset,
	   r.mode,
	   @extschema@.tl_run_status(r.id) AS status,
	   p.epoch,
	   (r.args ->> 'epochs')::integer AS epochs,
	   p.phase,
	   p.batch,
	   p.batches,
	   pg_catalog.date_trunc('second', pg_catalog.now() - r.started) AS elapsed,
	   -- NULL while unknown (no batch timed yet); GREATEST would turn it into 0
	   CASE WHEN p.eta_seconds IS NOT NULL THEN
	   pg_catalog.make_interval(secs => pg_catalog.round(GREATEST(
		   p.eta_seconds - extract(epoch FROM pg_catalog.now() - p.updated)::float8, 0)))
	   END AS eta,
	   r.pid,
	   p.updated
FROM @extschema@.tl_runs r
LEFT JOIN @extschema@.tl_run_progress p ON p.run = r.id
WHERE r.status IN ('queued', 'running');

