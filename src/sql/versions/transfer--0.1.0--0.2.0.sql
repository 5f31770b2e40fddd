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
-- ---- training from a table or view (issue 15 part 1) ----
-- tl_train gains image_column, label_column, split_column and val_fraction,
-- and loses SET search_path (the caller's path names the table; the C code
-- sets pg_catalog, pg_temp itself).  A new signature: drop the old one.
DROP FUNCTION @extschema@.tl_train(text, text, integer, integer, float8, float8, integer, float8, text, boolean, text, bigint, integer, boolean, integer, boolean);
CREATE FUNCTION @extschema@.tl_train(
	mode text,
	dataset text,
	epochs integer DEFAULT 25,
	batch_size integer DEFAULT 4,
	lr float8 DEFAULT 0.001,
	momentum float8 DEFAULT 0.9,
	step_size integer DEFAULT 7,
	gamma float8 DEFAULT 0.1,
	base_model text DEFAULT NULL,
	from_scratch boolean DEFAULT false,
	model_name text DEFAULT NULL,
	seed bigint DEFAULT NULL,
	image_size integer DEFAULT 224,
	wait boolean DEFAULT false,
	base_width integer DEFAULT NULL,
	cache_features boolean DEFAULT false,
	image_column text DEFAULT NULL,
	label_column text DEFAULT NULL,
	split_column text DEFAULT NULL,
	val_fraction float8 DEFAULT 0.2)
RETURNS bigint
LANGUAGE C VOLATILE
-- No SET search_path: dataset may name a table or view of the caller, found
-- with the caller's search_path; the C code then sets pg_catalog, pg_temp
-- itself for everything else it does (train/api.c).
AS 'MODULE_PATHNAME', 'tl_train';
COMMENT ON FUNCTION @extschema@.tl_train(text, text, integer, integer, float8, float8, integer, float8, text, boolean, text, bigint, integer, boolean, integer, boolean, text, text, text, float8)
	IS 'Start a training run in a background worker on a tl_images dataset or a table or view of the caller; returns the run id.';

-- tl_evaluate gains image_column and label_column (a table or view of the
-- caller as the data) and is no longer STRICT.
DROP FUNCTION @extschema@.tl_evaluate(text, text, text);
-- Not STRICT: image_column and label_column default to NULL (the C code
-- returns NULL when model, dataset or split is NULL, as 0.1.0's STRICT did).
CREATE FUNCTION @extschema@.tl_evaluate(model text, dataset text, split text DEFAULT 'val',
	image_column text DEFAULT NULL, label_column text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'tl_evaluate'
LANGUAGE C STABLE PARALLEL SAFE COST 10000000;
COMMENT ON FUNCTION @extschema@.tl_evaluate(text, text, text, text, text) IS
	'Accuracy, mean cross-entropy loss, confusion matrix and per-class precision/recall of a model on a dataset split or a table or view of the caller.';
-- ---- embeddings: tl_embed (issue 15) ----
CREATE FUNCTION @extschema@.tl_embed(img bytea, model text DEFAULT NULL) RETURNS real[]
AS 'MODULE_PATHNAME', 'tl_embed'
LANGUAGE C CALLED ON NULL INPUT STABLE PARALLEL SAFE COST 10000;
COMMENT ON FUNCTION @extschema@.tl_embed(bytea, text) IS
	'Backbone features of the image (eval mode, after global average pooling, before fc: 512 values for a ResNet-18) by the named model, or by the deployed one when model is NULL.';

-- ---- dumps keep the resume points of interrupted runs (issue 15) ----
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tl_run_checkpoints', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tl_run_checkpoint_tensors', '');
-- ---- training runs and roles (issue 16) ----
-- tl_runs.role_oid: policies match a run's role by OID and name, so a
-- dropped role breaks nothing and a new role of the same name inherits
-- nothing; runs are inserted only with ids the sequence handed out; a
-- run's id and owner can't be updated.  Runs of roles already dropped keep
-- role_oid null and belong to nobody.
ALTER TABLE @extschema@.tl_runs
	ADD COLUMN role_oid oid DEFAULT pg_catalog.to_regrole(pg_catalog.quote_ident(current_user))::oid;
UPDATE @extschema@.tl_runs r SET role_oid = o.oid FROM pg_catalog.pg_roles o WHERE o.rolname = r.role;
DROP POLICY tl_runs_read ON @extschema@.tl_runs;
DROP POLICY tl_runs_insert ON @extschema@.tl_runs;
DROP POLICY tl_runs_update ON @extschema@.tl_runs;
DROP POLICY tl_runs_delete ON @extschema@.tl_runs;
CREATE POLICY tl_runs_read ON @extschema@.tl_runs FOR SELECT
	USING (pg_catalog.pg_has_role(role_oid, 'USAGE')
		   AND role = (SELECT o.rolname FROM pg_catalog.pg_roles o WHERE o.oid = role_oid));
CREATE POLICY tl_runs_insert ON @extschema@.tl_runs FOR INSERT
	WITH CHECK (role = current_user
				AND role_oid = (SELECT o.oid FROM pg_catalog.pg_roles o WHERE o.rolname = current_user)
				AND id <= (SELECT s.last_value FROM @extschema@.tl_runs_id_seq s));
CREATE POLICY tl_runs_update ON @extschema@.tl_runs FOR UPDATE
	USING (pg_catalog.pg_has_role(role_oid, 'USAGE')
		   AND role = (SELECT o.rolname FROM pg_catalog.pg_roles o WHERE o.oid = role_oid))
	WITH CHECK (pg_catalog.pg_has_role(role_oid, 'USAGE')
				AND role = (SELECT o.rolname FROM pg_catalog.pg_roles o WHERE o.oid = role_oid));
CREATE POLICY tl_runs_delete ON @extschema@.tl_runs FOR DELETE
	USING (pg_catalog.pg_has_role(role_oid, 'USAGE')
		   AND role = (SELECT o.rolname FROM pg_catalog.pg_roles o WHERE o.oid = role_oid));
REVOKE UPDATE ON @extschema@.tl_runs FROM PUBLIC;
GRANT UPDATE (dataset, mode, args, status, pid, created, started, finished, epochs_done,
			  best_val_acc, best_epoch, model_id, error, resumes) ON @extschema@.tl_runs TO PUBLIC;
-- ---- predict threads (issue 14) ----
CREATE FUNCTION @extschema@.tl_predict_threads() RETURNS integer
AS 'MODULE_PATHNAME', 'tl_predict_threads'
LANGUAGE C VOLATILE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.tl_predict_threads() IS
	'Compute threads a prediction in this process would use now: transfer.predict_threads, or its automatic choice (1 inside a parallel query).';
-- ---- prediction cost below JIT's threshold for typical queries (issue 14) ----
ALTER FUNCTION @extschema@.tl_predict(bytea) COST 10000;
ALTER FUNCTION @extschema@.tl_predict(bytea, text) COST 10000;
ALTER FUNCTION @extschema@.tl_try_predict(bytea) COST 10000;
ALTER FUNCTION @extschema@.tl_try_predict(bytea, text) COST 10000;
ALTER FUNCTION @extschema@.tl_predict_proba(bytea) COST 10000;
ALTER FUNCTION @extschema@.tl_predict_proba(bytea, text) COST 10000;
ALTER FUNCTION @extschema@.tl_predict_topk(bytea, integer) COST 10000;
ALTER FUNCTION @extschema@.tl_predict_topk(bytea, integer, text) COST 10000;

-- ---- parallel plans for predictions over small heaps (issue 14) ----
CREATE FUNCTION @extschema@.tl_predict_support(internal) RETURNS internal
AS 'MODULE_PATHNAME', 'tl_predict_support'
LANGUAGE C STRICT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.tl_predict_support(internal) IS
	'Planner support of tl_predict and the other per-image prediction functions (parallel plans for scans of small heaps).';
ALTER FUNCTION @extschema@.tl_predict(bytea) SUPPORT @extschema@.tl_predict_support;
ALTER FUNCTION @extschema@.tl_predict(bytea, text) SUPPORT @extschema@.tl_predict_support;
ALTER FUNCTION @extschema@.tl_try_predict(bytea) SUPPORT @extschema@.tl_predict_support;
ALTER FUNCTION @extschema@.tl_try_predict(bytea, text) SUPPORT @extschema@.tl_predict_support;
ALTER FUNCTION @extschema@.tl_predict_proba(bytea) SUPPORT @extschema@.tl_predict_support;
ALTER FUNCTION @extschema@.tl_predict_proba(bytea, text) SUPPORT @extschema@.tl_predict_support;
ALTER FUNCTION @extschema@.tl_predict_topk(bytea, integer) SUPPORT @extschema@.tl_predict_support;
ALTER FUNCTION @extschema@.tl_predict_topk(bytea, integer, text) SUPPORT @extschema@.tl_predict_support;
ALTER FUNCTION @extschema@.tl_embed(bytea, text) SUPPORT @extschema@.tl_predict_support;
