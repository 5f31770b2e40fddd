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
