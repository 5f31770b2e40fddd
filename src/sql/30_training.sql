-- Training runs: tl_train and the run lifecycle (docs/training.md).
--
-- A run is one row of tl_runs, trained by a dynamic background worker that
-- connects as the role that called tl_train.  Bookkeeping rows are written by
-- that worker with the caller's rights, so every table here is granted to
-- PUBLIC and guarded by row-level security: a role sees (and can cancel)
-- the runs of the roles whose privileges it has, pg_has_role(role_oid, 'USAGE').

CREATE TABLE @extschema@.tl_runs (
	id				bigserial PRIMARY KEY,
	role			name NOT NULL DEFAULT current_user,
	dataset			text NOT NULL,
	mode			text NOT NULL CHECK (mode IN ('finetune', 'feature_extractor')),
	args			jsonb NOT NULL,
	status			text NOT NULL DEFAULT 'queued'
					CHECK (status IN ('queued', 'running', 'succeeded', 'failed',
									  'cancelled', 'interrupted')),
	pid				integer,
	created			timestamptz NOT NULL DEFAULT now(),
	started			timestamptz,
	finished		timestamptz,
	epochs_done		integer NOT NULL DEFAULT 0,
	best_val_acc	float8,
	best_epoch		integer,
	model_id		bigint,
	error			text,
	resumes			integer NOT NULL DEFAULT 0,
	-- the role by OID: a dropped role's runs become nobody's, and a later
	-- role of the same name does not inherit them (role is for display)
	role_oid		oid DEFAULT pg_catalog.to_regrole(pg_catalog.quote_ident(current_user))::oid
);
COMMENT ON TABLE @extschema@.tl_runs IS 'Training runs started by tl_train, one row per run.';
CREATE INDEX tl_runs_active ON @extschema@.tl_runs (id) WHERE status IN ('queued', 'running');

-- One row per finished epoch phase, committed as the phase ends.
CREATE TABLE @extschema@.tl_run_epochs (
	run				bigint NOT NULL REFERENCES @extschema@.tl_runs (id) ON DELETE CASCADE,
	epoch			integer NOT NULL CHECK (epoch >= 0),
	phase			text NOT NULL CHECK (phase IN ('train', 'val')),
	loss			float8 NOT NULL,
	acc				float8 NOT NULL,
	lr				float8 NOT NULL,
	seconds			float8 NOT NULL,
	PRIMARY KEY (run, epoch, phase)
);
COMMENT ON TABLE @extschema@.tl_run_epochs IS 'Loss and accuracy of each epoch phase of each run (the tutorial''s log).';

-- Where an active run is: rewritten by its worker every few seconds.
CREATE TABLE @extschema@.tl_run_progress (
	run				bigint PRIMARY KEY REFERENCES @extschema@.tl_runs (id) ON DELETE CASCADE,
	epoch			integer NOT NULL,
	phase			text NOT NULL,
	batch			integer NOT NULL,
	batches			integer NOT NULL,
	eta_seconds		float8,
	updated			timestamptz NOT NULL DEFAULT now()
);

-- The resume point of a run: written with the val row of each epoch, in the
-- same transaction, so it always matches the last finished epoch.
CREATE TABLE @extschema@.tl_run_checkpoints (
	run				bigint PRIMARY KEY REFERENCES @extschema@.tl_runs (id) ON DELETE CASCADE,
	epoch			integer NOT NULL,		-- last finished epoch, -1 before the first
	best_acc		float8 NOT NULL,
	best_epoch		integer NOT NULL,
	rng				bytea NOT NULL,			-- generator state after that epoch
	train_ids		bigint[] NOT NULL,		-- the images of the run, in its order
	val_ids			bigint[] NOT NULL,
	saved			timestamptz NOT NULL DEFAULT now()
);

-- Checkpoint tensors: the current weights and buffers ('model'), the best
-- epoch's weights ('best') and SGD momentum buffers ('momentum').
CREATE TABLE @extschema@.tl_run_checkpoint_tensors (
	run				bigint NOT NULL REFERENCES @extschema@.tl_run_checkpoints (run) ON DELETE CASCADE,
	part			text NOT NULL CHECK (part IN ('model', 'best', 'momentum')),
	key				text NOT NULL,
	position		integer NOT NULL,		-- order in the state dict
	shape			bigint[] NOT NULL,
	data			bytea NOT NULL,			-- little-endian float32, C order
	PRIMARY KEY (run, part, key)
);
ALTER TABLE @extschema@.tl_run_checkpoint_tensors ALTER COLUMN data SET STORAGE EXTERNAL;

SELECT pg_catalog.pg_extension_config_dump('@extschema@.tl_runs', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tl_runs_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tl_run_epochs', '');
-- The resume points are dumped too, so a restored interrupted run resumes
-- from its last finished epoch (finished runs leave none behind).
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tl_run_checkpoints', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tl_run_checkpoint_tensors', '');
-- Not dumped: tl_run_progress (transient, rewritten by a running worker).

-- Row-level security: the calling role's own runs, or those of roles whose
-- privileges it has.  Superusers and the extension owner bypass it.  A run
-- belongs to the role with its role_oid and its name: a dropped role's runs
-- match no role (pg_has_role is false for an OID that no longer exists), a
-- new role reusing the name has another OID, and runs restored into another
-- cluster, where the OID names another role or none, are nobody's until
-- role_oid is set again (docs/training.md).  Rows are inserted only by
-- tl_train and tl_resume, with an id the sequence has already handed out,
-- so no role can take the id of another role's next run.
ALTER TABLE @extschema@.tl_runs ENABLE ROW LEVEL SECURITY;
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

ALTER TABLE @extschema@.tl_run_epochs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tl_run_epochs_own ON @extschema@.tl_run_epochs
	USING (EXISTS (SELECT 1 FROM @extschema@.tl_runs r WHERE r.id = run))
	WITH CHECK (EXISTS (SELECT 1 FROM @extschema@.tl_runs r WHERE r.id = run));
ALTER TABLE @extschema@.tl_run_progress ENABLE ROW LEVEL SECURITY;
CREATE POLICY tl_run_progress_own ON @extschema@.tl_run_progress
	USING (EXISTS (SELECT 1 FROM @extschema@.tl_runs r WHERE r.id = run))
	WITH CHECK (EXISTS (SELECT 1 FROM @extschema@.tl_runs r WHERE r.id = run));
ALTER TABLE @extschema@.tl_run_checkpoints ENABLE ROW LEVEL SECURITY;
CREATE POLICY tl_run_checkpoints_own ON @extschema@.tl_run_checkpoints
	USING (EXISTS (SELECT 1 FROM @extschema@.tl_runs r WHERE r.id = run))
	WITH CHECK (EXISTS (SELECT 1 FROM @extschema@.tl_runs r WHERE r.id = run));
ALTER TABLE @extschema@.tl_run_checkpoint_tensors ENABLE ROW LEVEL SECURITY;
CREATE POLICY tl_run_checkpoint_tensors_own ON @extschema@.tl_run_checkpoint_tensors
	USING (EXISTS (SELECT 1 FROM @extschema@.tl_runs r WHERE r.id = run))
	WITH CHECK (EXISTS (SELECT 1 FROM @extschema@.tl_runs r WHERE r.id = run));

GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.tl_runs, @extschema@.tl_run_epochs,
	@extschema@.tl_run_progress, @extschema@.tl_run_checkpoints,
	@extschema@.tl_run_checkpoint_tensors TO PUBLIC;
GRANT USAGE, SELECT ON SEQUENCE @extschema@.tl_runs_id_seq TO PUBLIC;
-- a run's id and owner never change
REVOKE UPDATE ON @extschema@.tl_runs FROM PUBLIC;
GRANT UPDATE (dataset, mode, args, status, pid, created, started, finished, epochs_done,
			  best_val_acc, best_epoch, model_id, error, resumes) ON @extschema@.tl_runs TO PUBLIC;

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

CREATE FUNCTION @extschema@.tl_wait(run bigint, timeout interval DEFAULT NULL)
RETURNS text
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'tl_wait';
COMMENT ON FUNCTION @extschema@.tl_wait(bigint, interval)
	IS 'Wait until a run has ended (or the timeout passed); returns its status.';

CREATE FUNCTION @extschema@.tl_cancel(run bigint)
RETURNS boolean
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'tl_cancel';
COMMENT ON FUNCTION @extschema@.tl_cancel(bigint)
	IS 'Cancel an active or interrupted run; true if there was something to cancel.';

CREATE FUNCTION @extschema@.tl_resume(run bigint, wait boolean DEFAULT false)
RETURNS bigint
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'tl_resume';
COMMENT ON FUNCTION @extschema@.tl_resume(bigint, boolean)
	IS 'Continue an interrupted run from its last finished epoch.';

CREATE FUNCTION @extschema@.tl_run_status(run bigint)
RETURNS text
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'tl_run_status';
COMMENT ON FUNCTION @extschema@.tl_run_status(bigint)
	IS 'Status of a run, marking it interrupted if its worker is gone.';

CREATE FUNCTION @extschema@.tl_plot(run bigint)
RETURNS text
LANGUAGE C STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'tl_plot';
COMMENT ON FUNCTION @extschema@.tl_plot(bigint)
	IS 'SVG chart of train and val loss and accuracy per epoch of a run.';

-- security_invoker: the view reads tl_runs with the reader's rights, so its
-- row-level security applies (a view normally runs as its owner).
CREATE VIEW @extschema@.tl_progress
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
COMMENT ON VIEW @extschema@.tl_progress IS 'Active training runs: epoch, phase, batch i of n, elapsed time and estimated time left.';
GRANT SELECT ON @extschema@.tl_progress TO PUBLIC;
