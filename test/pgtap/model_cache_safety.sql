-- Issue 16, findings 4, 6 and 8: the per-process model cache follows every
-- change to a model's tensors, checks the current user's privileges on every
-- hit (SET ROLE), and no setting lets a decode allocate more than the hard
-- cap, nor a non-superuser lift the image limits.  Two-session checks
-- (snapshots, other sessions' changes) are in test/t/model_store_snapshot.sh.
\getenv fx TL_TEST_FIXTURES
\set QUIET on
SET client_min_messages = warning;

BEGIN;
SELECT plan(18);

SELECT FROM tl_import_weights('mc_a',
	pg_read_binary_file(:'fx' || '/predict/predict_a.safetensors'), ARRAY['ants', 'bees']);
UPDATE tl_stored_models SET image_size = 32 WHERE name = 'mc_a';
CREATE TEMP TABLE mc_img AS
SELECT pg_read_binary_file(:'fx' || '/image/' || f) AS img
FROM pg_ls_dir(:'fx' || '/image') AS f WHERE f ~ '\.(jpg|png)$' ORDER BY f LIMIT 4;
GRANT SELECT ON mc_img TO PUBLIC;

-- fc.bias as float32 little-endian: (+100, -100) makes every image an ant,
-- (-100, +100) every image a bee, whatever the rest of the network says.
CREATE FUNCTION pg_temp.mc_set_bias(b bytea) RETURNS void LANGUAGE sql AS $$
	UPDATE tl_model_tensors SET data = b
	WHERE model_id = (SELECT id FROM tl_stored_models WHERE name = 'mc_a') AND key = 'fc.bias'
$$;
CREATE FUNCTION pg_temp.mc_answers() RETURNS text LANGUAGE sql AS $$
	SELECT string_agg(DISTINCT tl_predict(img, 'mc_a'), ',') FROM mc_img
$$;

-- ---- finding 4: a change to the tensors reaches the cached model ----
SELECT pg_temp.mc_set_bias('\x0000c8420000c8c2');
SELECT is(pg_temp.mc_answers(), 'ants', 'with fc.bias (+100, -100) every image is an ant');
SELECT is((SELECT count(*) FROM tl_model_cache() WHERE model = 'mc_a'), 1::bigint, 'mc_a is cached');
SELECT pg_temp.mc_set_bias('\x0000c8c20000c842');
SELECT is(pg_temp.mc_answers(), 'bees',
	'after an UPDATE of tl_model_tensors the same session predicts with the new weights, not the cached ones');
SELECT pg_temp.mc_set_bias('\x0000c8420000c8c2');
SELECT is(pg_temp.mc_answers(), 'ants', 'and again after the next UPDATE');
DELETE FROM tl_model_tensors
WHERE model_id = (SELECT id FROM tl_stored_models WHERE name = 'mc_a') AND key = 'fc.bias';
SELECT throws_ok($$SELECT pg_temp.mc_answers()$$, NULL, NULL,
	'after a DELETE of one of its tensors the model is reloaded and refused, not served from the cache');
INSERT INTO tl_model_tensors (model_id, key, position, shape, data)
SELECT id, 'fc.bias', 999, ARRAY[2], '\x0000c8c20000c842' FROM tl_stored_models WHERE name = 'mc_a';
SELECT is(pg_temp.mc_answers(), 'bees', 'after an INSERT of the tensor back, the new weights are used');

-- ---- finding 6: a cached model checks privileges after SET ROLE ----
CREATE ROLE mc_dave NOLOGIN;
GRANT SELECT ON tl_stored_models TO mc_dave;
SELECT is(pg_temp.mc_answers(), 'bees', 'the superuser predicts with mc_a (cached)');
SET ROLE mc_dave;
SELECT throws_ok($$SELECT tl_predict(img, 'mc_a') FROM mc_img LIMIT 1$$, '42501',
	'permission denied for table tl_model_tensors',
	'after SET ROLE to a role without SELECT on tl_model_tensors, the cached model is refused (42501) as a fresh load is');
RESET ROLE;
GRANT SELECT ON tl_model_tensors TO mc_dave;
SET ROLE mc_dave;
SELECT is((SELECT tl_predict(img, 'mc_a') FROM mc_img LIMIT 1), 'bees', 'once granted SELECT, the role predicts');
RESET ROLE;

-- Rows after the first of a statement skip the lookup queries (the call's
-- memo, model_cache.h) only for the same user, snapshot and model argument.
REVOKE SELECT ON tl_model_tensors FROM mc_dave;
SELECT throws_ok($$SELECT tl_predict(img, 'mc_a'), set_config('role', 'mc_dave', true) FROM mc_img$$,
	'42501', 'permission denied for table tl_model_tensors',
	'a role switch between two rows of one statement: the second row checks the new role''s privileges (42501)');
RESET ROLE;
SELECT FROM tl_import_weights('mc_b',
	pg_read_binary_file(:'fx' || '/predict/predict_a.safetensors'), ARRAY['ants', 'bees']);
UPDATE tl_stored_models SET image_size = 32 WHERE name = 'mc_b';
UPDATE tl_model_tensors SET data = '\x0000c8420000c8c2'
WHERE model_id = (SELECT id FROM tl_stored_models WHERE name = 'mc_b') AND key = 'fc.bias';
SELECT is((SELECT string_agg(tl_predict(img, CASE WHEN i % 2 = 0 THEN 'mc_a' ELSE 'mc_b' END), ',' ORDER BY i)
		   FROM (SELECT img, row_number() OVER () AS i FROM mc_img) t),
	'ants,bees,ants,bees', 'models alternating row by row in one statement: each row uses its own');
SELECT is((SELECT string_agg(tl_predict(img, m), ',' ORDER BY m)
		   FROM (SELECT img FROM mc_img LIMIT 1) t, (VALUES ('mc_a'), ('mc_a'), ('mc_b'), ('mc_b')) v(m)),
	'bees,bees,ants,ants', 'and in runs of the same model');

-- ---- finding 8: image limits ----
SET ROLE mc_dave;
SELECT throws_ok($$SET transfer.max_image_pixels = 300000000$$, '42501', NULL,
	'a non-superuser cannot raise transfer.max_image_pixels');
SELECT throws_ok($$SET transfer.max_image_pixels = 1000$$, '42501', NULL,
	'nor lower it (PGC_SUSET: only superusers or roles granted SET on it)');
SELECT throws_ok($$SET transfer.max_image_file_size = '1GB'$$, '42501', NULL,
	'a non-superuser cannot raise transfer.max_image_file_size');
RESET ROLE;
SELECT is((SELECT max_val FROM pg_settings WHERE name = 'transfer.max_image_pixels'), '357913941',
	'transfer.max_image_pixels cannot exceed the hard cap (1 GiB of RGB8 = 357913941 pixels)');
SELECT FROM set_config('transfer.max_image_pixels',
	(SELECT max_val FROM pg_settings WHERE name = 'transfer.max_image_pixels'), true);
-- Tiny PNGs whose headers declare 65535x65535 (12 GiB decoded) and
-- 20000x20000 (1.2 GB decoded, under 2^31 pixels).
SELECT throws_ok($$SELECT tl_predict('\x89504e470d0a1a0a0000000d494844520000ffff0000ffff080200000039674e070000000c49444154789c6360a00c000000400001b7347cef0000000049454e44ae426082'::bytea, 'mc_a')$$,
	'54000', NULL, 'a PNG declaring 65535x65535 pixels is refused (54000) with the setting at its maximum');
SELECT throws_ok($$SELECT tl_predict('\x89504e470d0a1a0a0000000d4948445200004e2000004e2008020000006c12d16e0000000c49444154789c6360a00c000000400001b7347cef0000000049454e44ae426082'::bytea, 'mc_a')$$,
	'54000', NULL, 'a PNG declaring 20000x20000 pixels (over 1 GiB decoded) is refused (54000) from its header');
SELECT * FROM finish();
ROLLBACK;
