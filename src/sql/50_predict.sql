-- Prediction: tl_predict and friends, tl_evaluate, deployments, the tl_models view.
-- The C functions only read (cached-plan lookups in the caller's snapshot),
-- so they are PARALLEL SAFE and work on a hot standby.  COST 10000 (25
-- planner units a row, like 25 page reads) tells the planner an inference is
-- expensive, so it chooses parallel plans for queries over large tables,
-- and keeps a query under jit_above_cost up to ~4,000 rows: JIT gains
-- nothing here and loading LLVM costs a session ~60 ms (docs/prediction.md).

-- Deployment history: the newest row says which model tl_predict(img) uses.
CREATE TABLE @extschema@.tl_deployments (
	id bigserial PRIMARY KEY,
	model_id bigint REFERENCES @extschema@.tl_stored_models (id) ON DELETE SET NULL,
	model_name text NOT NULL,
	deployed_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	deployed_by name NOT NULL DEFAULT CURRENT_USER
);
CREATE INDEX ON @extschema@.tl_deployments (model_id);
COMMENT ON TABLE @extschema@.tl_deployments IS
	'Deployment history; the newest row names the model tl_predict(img) uses (model_id is NULL once that model was deleted).';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tl_deployments', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tl_deployments_id_seq', '');

-- Not STRICT: tl_deploy(NULL) is a mistake (it is not "undeploy"), so an error.
CREATE FUNCTION @extschema@.tl_deploy(model text) RETURNS bigint
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
COMMENT ON FUNCTION @extschema@.tl_deploy(text) IS
	'Make model the one tl_predict(img) uses when no model is named; returns the deployment id.';

-- The support function of the per-image prediction functions.  It changes no
-- call; it marks them for the extension's planner hook, which offers a query
-- that predicts over a table's rows a parallel plan even when the table's
-- heap is small (images are TOASTed), and calling it at planning time loads
-- the library that installs the hook (src/pg/parallel_plan.c).
CREATE FUNCTION @extschema@.tl_predict_support(internal) RETURNS internal
AS 'MODULE_PATHNAME', 'tl_predict_support'
LANGUAGE C STRICT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.tl_predict_support(internal) IS
	'Planner support of tl_predict and the other per-image prediction functions (parallel plans for scans of small heaps).';

CREATE FUNCTION @extschema@.tl_predict(img bytea) RETURNS text
AS 'MODULE_PATHNAME', 'tl_predict'
LANGUAGE C STRICT STABLE PARALLEL SAFE COST 10000
SUPPORT @extschema@.tl_predict_support;
COMMENT ON FUNCTION @extschema@.tl_predict(bytea) IS
	'Class predicted for the image by the deployed model (before any deployment: the newest trained model).';

CREATE FUNCTION @extschema@.tl_predict(img bytea, model text) RETURNS text
AS 'MODULE_PATHNAME', 'tl_predict'
LANGUAGE C STRICT STABLE PARALLEL SAFE COST 10000
SUPPORT @extschema@.tl_predict_support;
COMMENT ON FUNCTION @extschema@.tl_predict(bytea, text) IS
	'Class predicted for the image by the named model.';

CREATE FUNCTION @extschema@.tl_try_predict(img bytea) RETURNS text
AS 'MODULE_PATHNAME', 'tl_try_predict'
LANGUAGE C STRICT STABLE PARALLEL SAFE COST 10000
SUPPORT @extschema@.tl_predict_support;
COMMENT ON FUNCTION @extschema@.tl_try_predict(bytea) IS
	'Like tl_predict(img), but NULL for an image that can''t be decoded (other errors still raise).';

CREATE FUNCTION @extschema@.tl_try_predict(img bytea, model text) RETURNS text
AS 'MODULE_PATHNAME', 'tl_try_predict'
LANGUAGE C STRICT STABLE PARALLEL SAFE COST 10000
SUPPORT @extschema@.tl_predict_support;
COMMENT ON FUNCTION @extschema@.tl_try_predict(bytea, text) IS
	'Like tl_predict(img, model), but NULL for an image that can''t be decoded (other errors still raise).';

CREATE FUNCTION @extschema@.tl_predict_proba(img bytea) RETURNS jsonb
AS 'MODULE_PATHNAME', 'tl_predict_proba'
LANGUAGE C STRICT STABLE PARALLEL SAFE COST 10000
SUPPORT @extschema@.tl_predict_support;
COMMENT ON FUNCTION @extschema@.tl_predict_proba(bytea) IS
	'Probability of every class (softmax of the logits) as {"class": probability}, by the default model.';

CREATE FUNCTION @extschema@.tl_predict_proba(img bytea, model text) RETURNS jsonb
AS 'MODULE_PATHNAME', 'tl_predict_proba'
LANGUAGE C STRICT STABLE PARALLEL SAFE COST 10000
SUPPORT @extschema@.tl_predict_support;
COMMENT ON FUNCTION @extschema@.tl_predict_proba(bytea, text) IS
	'Probability of every class (softmax of the logits) as {"class": probability}, by the named model.';

CREATE FUNCTION @extschema@.tl_predict_topk(img bytea, k integer,
	OUT rank integer, OUT class text, OUT probability double precision)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'tl_predict_topk'
LANGUAGE C STRICT STABLE PARALLEL SAFE COST 10000
SUPPORT @extschema@.tl_predict_support ROWS 5;
COMMENT ON FUNCTION @extschema@.tl_predict_topk(bytea, integer) IS
	'The k most probable classes by the default model, rank 1 first.';

CREATE FUNCTION @extschema@.tl_predict_topk(img bytea, k integer, model text,
	OUT rank integer, OUT class text, OUT probability double precision)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'tl_predict_topk'
LANGUAGE C STRICT STABLE PARALLEL SAFE COST 10000
SUPPORT @extschema@.tl_predict_support ROWS 5;
COMMENT ON FUNCTION @extschema@.tl_predict_topk(bytea, integer, text) IS
	'The k most probable classes by the named model, rank 1 first.';

-- Not STRICT: image_column and label_column default to NULL (the C code
-- returns NULL when model, dataset or split is NULL, as 0.1.0's STRICT did).
CREATE FUNCTION @extschema@.tl_evaluate(model text, dataset text, split text DEFAULT 'val',
	image_column text DEFAULT NULL, label_column text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'tl_evaluate'
LANGUAGE C STABLE PARALLEL SAFE COST 10000000;
COMMENT ON FUNCTION @extschema@.tl_evaluate(text, text, text, text, text) IS
	'Accuracy, mean cross-entropy loss, confusion matrix and per-class precision/recall of a model on a dataset split or a table or view of the caller.';

-- Process-local state: restricted to the leader, so it shows the caller's cache.
CREATE FUNCTION @extschema@.tl_model_cache(OUT model text, OUT model_id bigint,
	OUT image_size integer, OUT bytes bigint, OUT calls bigint, OUT loaded_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'tl_model_cache'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED ROWS 2;
COMMENT ON FUNCTION @extschema@.tl_model_cache() IS
	'Models this session keeps loaded for prediction, most recently used first.';

-- security_invoker: callers see only the models their privileges allow.
CREATE VIEW @extschema@.tl_models WITH (security_invoker = true) AS
WITH deployed AS (
	SELECT d.model_id, d.deployed_at
	FROM @extschema@.tl_deployments d
	ORDER BY d.id DESC
	LIMIT 1
), newest_trained AS (
	SELECT m.id
	FROM @extschema@.tl_stored_models m
	WHERE m.source ->> 'kind' = 'trained'
	ORDER BY m.created_at DESC, m.id DESC
	LIMIT 1
)
SELECT m.id, m.name, m.arch, m.num_classes, m.classes, m.image_size,
	m.source, m.metrics, m.created_at,
	(m.id = dep.model_id) IS TRUE AS deployed,
	dep.deployed_at,
	CASE WHEN EXISTS (SELECT 1 FROM deployed)
		THEN (m.id = dep.model_id) IS TRUE
		ELSE m.id = (SELECT id FROM newest_trained) IS TRUE
	END AS default_model
FROM @extschema@.tl_stored_models m
LEFT JOIN deployed dep ON dep.model_id = m.id
ORDER BY m.id;
COMMENT ON VIEW @extschema@.tl_models IS
	'Stored models with their metrics; deployed marks the current deployment, default_model the model tl_predict(img) uses.';
