-- Security audit of the extension as a whole (docs/reliability.md):
--   * every function is safe against a hostile search_path: SQL and plpgsql
--     functions set search_path = pg_catalog, ..., pg_temp; C functions either
--     set it too or are on the reviewed list below (their SPI queries qualify
--     every name: @extschema@ tables, OPERATOR(pg_catalog.=));
--   * nothing is SECURITY DEFINER (the allow-list is empty; a function added
--     to it needs its reason written in docs/reliability.md);
--   * PUBLIC gets nothing on the extension's relations except where
--     row-level security decides which rows each role sees;
--   * a role with no grants can reach no data and no server file;
--   * a hostile search_path (shadowing operators, functions and tables that
--     trap when used) changes nothing the functions do.
-- The data-path checks (hostile images, checkpoints) live in test/t.
\getenv images TL_TEST_IMAGES
\getenv checkpoints TL_TEST_CHECKPOINTS
\set QUIET on
SET client_min_messages = warning;

BEGIN;
SELECT plan(48);

-- The extension's members, from pg_depend.
CREATE TEMP VIEW ext_functions AS
	SELECT p.oid, p.oid::regprocedure::text AS fn, p.proname::text AS name,
		l.lanname::text AS lang, p.prosecdef, p.proconfig, p.proacl
	FROM pg_proc p
	JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
	JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'transfer'
	JOIN pg_language l ON l.oid = p.prolang;
CREATE TEMP VIEW ext_relations AS
	SELECT c.oid, c.relname::text AS name, c.relkind, c.relrowsecurity, c.relacl, c.reloptions
	FROM pg_class c
	JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
	JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'transfer';

-- A search_path setting that can't be hijacked: pg_catalog first, pg_temp
-- named explicitly and last (an unnamed pg_temp is searched first).
CREATE FUNCTION pg_temp.safe_search_path(config text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
	SELECT EXISTS (SELECT FROM unnest(config) c
		WHERE c ~ '^search_path=pg_catalog(, *[^,]+)*, *pg_temp$')
$$;

SELECT cmp_ok((SELECT count(*) FROM ext_functions), '>=', 5::bigint,
	'the audit sees the extension''s functions');

SELECT is_empty(
	$$SELECT fn FROM ext_functions WHERE lang NOT IN ('c', 'internal')
		AND NOT pg_temp.safe_search_path(proconfig)$$,
	'every SQL and plpgsql function sets search_path = pg_catalog, ..., pg_temp');

SELECT is_empty(
	$$SELECT fn FROM ext_functions
		WHERE EXISTS (SELECT FROM unnest(proconfig) c WHERE c LIKE 'search_path=%')
		AND NOT pg_temp.safe_search_path(proconfig)$$,
	'every search_path a function sets starts with pg_catalog and ends with pg_temp');

-- C functions without their own search_path were reviewed: every SPI query
-- names @extschema@ tables and pg_catalog operators explicitly.  A new one
-- fails here until its queries are reviewed and it is added to this list.
SELECT is_empty(
	$$SELECT fn FROM ext_functions WHERE lang = 'c' AND proconfig IS NULL
		AND name <> ALL (ARRAY[
			'tl_image_info',			-- no queries
			'tl_import_folder',			-- INSERT INTO <extschema>.tl_images
			'tl_import_weights',		-- model_store.c: qualified tables, OPERATOR(pg_catalog.=)
			'tl_import_weights_file',	-- same
			'tl_export',				-- same
			'tl_predict',				-- model_cache.c: qualified tables and operators, plans made
			'tl_try_predict',			--   under search_path = pg_catalog, pg_temp
			'tl_predict_proba',			-- same
			'tl_predict_topk',			-- same
			'tl_embed',					-- same (model_cache.c only)
			'tl_model_cache',			-- no queries
			'tl_predict_support',		-- no queries (planner support: answers nothing)
			'tl_train',					-- train/api.c: resolves dataset with the caller's path,
										--   then sets pg_catalog, pg_temp itself
			'tl_evaluate'				-- predict.c: qualified table, OPERATOR(pg_catalog.=)
		])$$,
	'every C function without its own search_path is on the reviewed list');

SELECT is_empty(
	$$SELECT fn FROM ext_functions WHERE prosecdef
		AND name <> ALL (ARRAY[]::text[])	-- allow-list: reasons in docs/reliability.md
	$$,
	'no function is SECURITY DEFINER');

-- Grants.  Functions keep PostgreSQL's default EXECUTE for PUBLIC: they run
-- as the caller, so the caller's table privileges and row-level security
-- decide what they can read or write, and the server-file functions check
-- pg_read_server_files themselves (below).
SELECT is_empty(
	$$SELECT fn FROM ext_functions WHERE proacl IS NOT NULL$$,
	'functions keep the default privileges (EXECUTE for PUBLIC)');

-- Relations: nothing for PUBLIC unless row-level security filters the rows
-- per role (a table with RLS enabled, a sequence owned by one, or a
-- security_invoker view).
SELECT is_empty(
	$$SELECT r.name, a.privilege_type FROM ext_relations r, aclexplode(r.relacl) a
		WHERE a.grantee = 0
		AND NOT (r.relkind IN ('r', 'p') AND r.relrowsecurity)
		AND NOT (r.relkind = 'v' AND 'security_invoker=true' = ANY (r.reloptions))
		AND NOT (r.relkind = 'S' AND EXISTS (
			SELECT FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid
			WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid
			AND d.deptype IN ('a', 'i') AND t.relrowsecurity))$$,
	'PUBLIC is granted nothing on a relation that row-level security does not filter');

SELECT is_empty(
	$$SELECT name FROM ext_relations WHERE relkind = 'v'
		AND NOT coalesce('security_invoker=true' = ANY (reloptions), false)$$,
	'every view runs with the caller''s privileges (security_invoker)');

-- A role with nothing granted.
CREATE ROLE tap_sec_plain;
CREATE ROLE tap_sec_files IN ROLE pg_read_server_files;

SELECT is_empty(
	$$SELECT name FROM ext_relations r WHERE relkind IN ('r', 'p', 'v', 'm')
		AND has_table_privilege('tap_sec_plain', r.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')
		AND NOT (relkind IN ('r', 'p') AND relrowsecurity)
		AND NOT (relkind = 'v' AND 'security_invoker=true' = ANY (reloptions))$$,
	'a role with no grants can''t read or change any extension table');

-- Every function that takes a server path refuses a caller without
-- pg_read_server_files with 42501, whatever its other arguments.  The call
-- passes '/' as the path, so a missing check would show as another error.
CREATE FUNCTION pg_temp.call_with_path(fn oid, path text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	p pg_proc;
	args text[] := '{}';
	j integer := 0;
BEGIN
	SELECT * INTO p FROM pg_proc WHERE oid = fn;
	FOR k IN 1 .. coalesce(array_length(p.proargnames, 1), 0) LOOP
		CONTINUE WHEN p.proargmodes IS NOT NULL AND p.proargmodes[k] NOT IN ('i', 'b', 'v');
		args := args || CASE
			WHEN p.proargnames[k] = 'path' THEN quote_literal(path)
			WHEN p.proargtypes[j] = 'text'::regtype THEN quote_literal('tap_sec')
			ELSE format('NULL::%s', p.proargtypes[j]::regtype) END;
		j := j + 1;
	END LOOP;
	EXECUTE format('SELECT * FROM %s(%s)', fn::regproc, array_to_string(args, ', '));
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ' ' || SQLERRM;
END $$;
CREATE TEMP VIEW path_functions AS
	SELECT oid, fn FROM ext_functions WHERE 'path' = ANY (
		SELECT proargnames[k] FROM pg_proc, generate_subscripts(proargnames, 1) k WHERE pg_proc.oid = ext_functions.oid);
GRANT SELECT ON path_functions, ext_functions TO tap_sec_plain, tap_sec_files;
CREATE TEMP TABLE tap_checkpoint AS SELECT pg_read_binary_file(:'checkpoints' || '/tiny.pth') AS data;
GRANT SELECT ON tap_checkpoint TO tap_sec_plain;
CREATE TEMP TABLE tap_image AS SELECT pg_read_binary_file(:'images' || '/val/bees/red-5x3.png') AS data;
GRANT SELECT ON tap_image TO tap_sec_plain;

SELECT set_eq('SELECT fn FROM path_functions WHERE fn ~ ''^tl_import_(folder|weights_file)\(''',
	ARRAY['tl_import_folder(text,text)', 'tl_import_weights_file(text,text,text[])'],
	'the server-file functions are found by their path argument');

SET LOCAL ROLE tap_sec_plain;
SELECT is_empty(
	$$SELECT fn, r FROM path_functions, pg_temp.call_with_path(oid, '/') r WHERE r NOT LIKE '42501 %'$$,
	'every function taking a server path refuses a role without pg_read_server_files (42501)');
SELECT throws_ok('SELECT * FROM tl_images', '42501', NULL, 'tl_images is not readable by default');
SELECT throws_ok('SELECT * FROM tl_datasets', '42501', NULL, 'nor tl_datasets');
SELECT throws_ok($$SELECT tl_export('anything')$$, '42501', NULL, 'nor any model through tl_export');
SELECT throws_ok($$SELECT tl_predict((SELECT data FROM tap_image), 'anything')$$, '42501', NULL,
	'nor predict with any model');
SELECT throws_ok($$SELECT tl_import_weights('x', (SELECT data FROM tap_checkpoint))$$,
	'42501', 'permission denied for table tl_stored_models',
	'nor may it store a model (tl_import_weights needs INSERT on the model tables)');
SELECT is(tl_version(), '0.2.0', 'functions that read no table work for anyone');
RESET ROLE;

SET LOCAL ROLE tap_sec_files;
SELECT is_empty(
	$$SELECT fn, r FROM path_functions, pg_temp.call_with_path(oid, '/') r WHERE r LIKE '42501 %'
		AND r NOT LIKE '42501 permission denied for table %'$$,
	'pg_read_server_files passes the file check (then table privileges apply)');
RESET ROLE;

-- Reading a model follows the caller's privileges and row-level security on
-- tl_stored_models, like any query.
SELECT lives_ok(format($$SELECT tl_import_weights('tap_sec_hidden', pg_read_binary_file(%L)),
	tl_import_weights('tap_sec_shown', pg_read_binary_file(%L))$$,
	:'checkpoints' || '/tiny.pth', :'checkpoints' || '/tiny.safetensors'), 'two models imported');
GRANT SELECT ON tl_stored_models, tl_model_tensors TO tap_sec_plain;
ALTER TABLE tl_stored_models ENABLE ROW LEVEL SECURITY;
CREATE POLICY tap_sec_shown ON tl_stored_models TO tap_sec_plain USING (name LIKE 'tap_sec_shown%');
SET LOCAL ROLE tap_sec_plain;
SELECT ok(length(tl_export('tap_sec_shown')) > 0, 'a model the policy shows can be exported');
SELECT throws_ok($$SELECT tl_export('tap_sec_hidden')$$, '42704', 'model "tap_sec_hidden" does not exist',
	'a model the policy hides does not exist for the caller');
SELECT ok(tl_predict((SELECT data FROM tap_image), 'tap_sec_shown') IS NOT NULL,
	'a model the policy shows predicts');
SELECT throws_ok($$SELECT tl_predict((SELECT data FROM tap_image), 'tap_sec_hidden')$$, '42704', NULL,
	'a model the policy hides can''t be used to predict');
SELECT throws_ok($$SELECT tl_evaluate('tap_sec_shown', 'tap_sec', 'val')$$, '42501', NULL,
	'nor can the caller evaluate on images it can''t read');
SELECT throws_ok($$SELECT tl_deploy('tap_sec_shown')$$, '42501', NULL,
	'nor deploy without privileges on tl_deployments');
RESET ROLE;

-- A hostile search_path: a schema first on the path whose operators,
-- functions and tables shadow what the extension uses, each raising
-- "hijacked" when used.  The calls run through pg_temp.hostile(), which sets
-- the path only around the statement (pgTAP itself would trip the traps).
CREATE SCHEMA tap_evil;
CREATE FUNCTION tap_evil.trap() RETURNS boolean LANGUAGE plpgsql AS
	$$BEGIN RAISE EXCEPTION 'hijacked'; END$$;
DO $$
DECLARE
	t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['text', 'bigint', 'integer', 'bytea', 'name', 'oid', 'jsonb', 'text[]'] LOOP
		EXECUTE format('CREATE FUNCTION tap_evil.eq(%1$s, %1$s) RETURNS boolean LANGUAGE sql AS ''SELECT tap_evil.trap()''', t);
		EXECUTE format('CREATE OPERATOR tap_evil.= (LEFTARG = %1$s, RIGHTARG = %1$s, FUNCTION = tap_evil.eq)', t);
		EXECUTE format('CREATE OPERATOR tap_evil.<> (LEFTARG = %1$s, RIGHTARG = %1$s, FUNCTION = tap_evil.eq)', t);
	END LOOP;
	FOREACH t IN ARRAY ARRAY['lower(text)', 'upper(text)', 'length(text)', 'octet_length(bytea)',
			'length(bytea)', 'md5(bytea)', 'cardinality(anyarray)', 'array_ndims(anyarray)',
			'array_position(anyarray, anyelement)', 'array_length(anyarray, integer)',
			'quote_ident(text)', 'pg_has_role(name, text)', 'to_jsonb(anyelement)'] LOOP
		EXECUTE format('CREATE FUNCTION tap_evil.%s RETURNS boolean LANGUAGE sql AS ''SELECT tap_evil.trap()''', t);
	END LOOP;
	EXECUTE 'CREATE FUNCTION tap_evil.now() RETURNS timestamptz LANGUAGE sql AS ''SELECT CASE WHEN tap_evil.trap() THEN now() END''';
	FOREACH t IN ARRAY ARRAY['tl_images', 'tl_stored_models', 'tl_model_tensors', 'tl_datasets',
			'tl_runs', 'tl_run_epochs', 'tl_deployments', 'tl_models', 'pg_extension', 'pg_namespace'] LOOP
		EXECUTE format('CREATE VIEW tap_evil.%I AS SELECT tap_evil.trap() AS hijacked', t);
	END LOOP;
END $$;
CREATE FUNCTION pg_temp.hostile(query text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	result text;
BEGIN
	BEGIN
		PERFORM pg_catalog.set_config('search_path', 'tap_evil, pg_catalog, public', true);
		EXECUTE query INTO result;
		PERFORM pg_catalog.set_config('search_path', 'public', true);
	EXCEPTION WHEN OTHERS THEN		-- the subtransaction's abort restores search_path
		result := 'error ' || SQLSTATE || ' ' || SQLERRM;
	END;
	RETURN result;
END $$;

SELECT is(pg_temp.hostile($$SELECT ('a'::text = 'b'::text)::text$$), 'error P0001 hijacked',
	'the traps work: under the hostile path, text = text raises');
CREATE FUNCTION public.tap_naive_count() RETURNS bigint LANGUAGE sql
	AS 'SELECT count(*) FROM tl_stored_models';
SELECT is(pg_temp.hostile('SELECT tap_naive_count()'), 'error P0001 hijacked',
	'and so do the tables: a function without its own search_path is caught');

-- Each call under the hostile path gives what it gives under a normal one
-- (expected NULL: what the same query gives afterwards under a normal path).
CREATE FUNCTION pg_temp.normal(query text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	result text;
BEGIN
	EXECUTE query INTO result;
	RETURN result;
EXCEPTION WHEN OTHERS THEN
	RETURN 'error ' || SQLSTATE || ' ' || SQLERRM;
END $$;
CREATE TEMP TABLE hostile_calls (ord serial, what text, query text, expected text, got text);
INSERT INTO hostile_calls (what, query, expected) VALUES
	('tl_version', 'SELECT tl_version()', NULL),
	('tl_image_info', 'SELECT tl_image_info((SELECT data FROM tap_image))::text', '(PNG,5,3)'),
	('tl_import_folder', format('SELECT sum(imported)::text FROM tl_import_folder(''tap_evil_ds'', %L)',
		:'images'), '10'),
	('tl_import_weights', format($$SELECT (tl_import_weights('tap_evil_model', pg_read_binary_file(%L),
		'{ants,bees,wasps}') > 0)::text$$, :'checkpoints' || '/tiny.pth'), 'true'),
	('tl_import_weights_file', format('SELECT (tl_import_weights_file(''tap_evil_file'', %L) > 0)::text',
		:'checkpoints' || '/tiny.safetensors'), 'true'),
	('tl_export', $$SELECT pg_catalog.md5(tl_export('tap_evil_model', 'pth'))
		OPERATOR(pg_catalog.||) pg_catalog.md5(tl_export('tap_evil_file'))$$, NULL),
	('tl_deploy', $$SELECT (tl_deploy('tap_evil_model') > 0)::text$$, 'true'),
	('tl_predict', $$SELECT tl_predict((SELECT data FROM tap_image))
		OPERATOR(pg_catalog.||) tl_predict((SELECT data FROM tap_image), 'tap_evil_file')$$, NULL),
	('tl_try_predict', $$SELECT coalesce(tl_try_predict('\x00'), 'NULL')
		OPERATOR(pg_catalog.||) tl_try_predict((SELECT data FROM tap_image), 'tap_evil_model')$$, NULL),
	('tl_predict_proba', $$SELECT tl_predict_proba((SELECT data FROM tap_image))::text$$, NULL),
	('tl_predict_topk', $$SELECT pg_catalog.array_agg(t.class ORDER BY t.rank)::text
		FROM tl_predict_topk((SELECT data FROM tap_image), 2, 'tap_evil_model') t$$, NULL),
	('tl_evaluate', $$SELECT tl_evaluate('tap_evil_model', 'tap_evil_ds')::text$$, NULL),
	('tl_models', $$SELECT pg_catalog.string_agg(name OPERATOR(pg_catalog.||) deployed::text, ',' ORDER BY id)
		FROM public.tl_models$$, NULL),	-- (tap_evil shadows the unqualified name)
	('tl_datasets', $$SELECT pg_catalog.sum(images)::text FROM public.tl_datasets$$, NULL),
	('tl_train', $$SELECT (tl_train('finetune', 'tap_evil_ds', from_scratch => true, image_size => 32,
		base_width => 4, batch_size => 5, model_name => 'tap_evil_trained') > 0)::text$$, 'true'),
	('tl_run_status', $$SELECT tl_run_status((SELECT pg_catalog.max(id) FROM public.tl_runs))$$, NULL),
	('tl_plot', $$SELECT pg_catalog.md5(tl_plot((SELECT pg_catalog.max(id) FROM public.tl_runs)))$$, NULL),
	('tl_progress', $$SELECT pg_catalog.count(*)::text FROM public.tl_progress$$, NULL),
	('tl_wait', $$SELECT tl_wait(-1, '1 second')$$, NULL),
	('tl_preview', $$SELECT pg_catalog.md5(p.jpeg) FROM tl_preview('tap_evil_ds', 'train', 3, 7) p$$, NULL);
DO $$
DECLARE
	c record;
BEGIN
	FOR c IN SELECT ord, query FROM hostile_calls ORDER BY ord LOOP
		UPDATE hostile_calls SET got = pg_temp.hostile(c.query) WHERE ord = c.ord;
	END LOOP;
END $$;
SELECT is(got, coalesce(expected, pg_temp.normal(query)), what || ' under a hostile search_path')
	FROM hostile_calls ORDER BY ord;
SELECT is(
	(SELECT count(*) FROM tl_images WHERE dataset = 'tap_evil_ds')
		+ (SELECT count(*) FROM tl_stored_models WHERE name IN ('tap_evil_model', 'tap_evil_file'))
		+ (SELECT count(*) FROM tl_deployments WHERE model_name = 'tap_evil_model'),
	13::bigint, 'the rows went into the extension''s tables');

SELECT * FROM finish();
ROLLBACK;
