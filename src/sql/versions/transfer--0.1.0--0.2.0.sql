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

-- ---- error model: tl_deploy(NULL) is an error ----
CREATE OR REPLACE FUNCTION @extschema@.tl_deploy(model text) RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m_id bigint;
	dep_id bigint;
BEGIN
	IF model IS NULL THEN
		RAISE EXCEPTION 'model must not be null'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Name the model to deploy; the view tl_models lists the models you can deploy.';
	END IF;
	SELECT m.id INTO m_id FROM @extschema@.tl_stored_models m WHERE m.name = model;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'model "%" does not exist', model
			USING ERRCODE = 'undefined_object',
				  HINT = 'The view tl_models lists the models you can deploy.';
	END IF;
	INSERT INTO @extschema@.tl_deployments (model_id, model_name)
		VALUES (m_id, model) RETURNING id INTO dep_id;
	RETURN dep_id;
END
$$;
