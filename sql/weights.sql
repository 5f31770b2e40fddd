-- Models in tables: tl_import_weights, tl_import_weights_file, tl_export.
--
-- TL_TEST_CHECKPOINTS is a copy of test/fixtures/checkpoint that the server
-- can read (scripts/test.sh).  The tiny* files are torchvision's ResNet-18
-- layout with base width 2 and seeded random weights, written by
-- test/scripts/make_checkpoints.py with torch.save and by hand (safetensors).
\getenv ckpt TL_TEST_CHECKPOINTS
\set VERBOSITY terse

-- Model tables: user data kept by pg_dump (identity sequence too).
SELECT c.relname
  FROM pg_extension e
  CROSS JOIN LATERAL unnest(e.extconfig) AS cfg(oid)
  JOIN pg_class c ON c.oid = cfg.oid
 WHERE e.extname = 'transfer'
   AND c.relname IN ('tl_stored_models', 'tl_model_tensors', 'tl_stored_models_id_seq')
 ORDER BY 1;

-- The same weights in the three formats, through both entry points.
SELECT tl_import_weights('tiny-zip', pg_read_binary_file(:'ckpt' || '/tiny.pth'),
                         ARRAY['ants', 'bees', 'wasps']) AS id;
SELECT tl_import_weights_file('tiny-legacy', :'ckpt' || '/tiny_legacy.pth') AS id;
SELECT tl_import_weights('tiny-st', pg_read_binary_file(:'ckpt' || '/tiny.safetensors')) AS id;
SELECT tl_import_weights('tiny-f16', pg_read_binary_file(:'ckpt' || '/tiny_f16.pth')) AS id;

SELECT id, name, arch, base_width, num_classes, classes, image_size,
       source->>'kind' AS kind, source->>'format' AS format,
       source->>'file' LIKE '%/tiny_legacy.pth' AS from_file, metrics
  FROM tl_stored_models ORDER BY id;

-- 102 tensors each (torchvision's 122 keys less 20 num_batches_tracked),
-- in torchvision's order, fp32: 4 bytes per element.
SELECT m.name, count(*) AS tensors,
       bool_and(octet_length(t.data) = 4 * (SELECT coalesce(product, 1) FROM
           (SELECT exp(sum(ln(d)))::bigint AS product FROM unnest(t.shape) d) p)) AS sizes_match,
       count(*) FILTER (WHERE t.key LIKE '%num_batches_tracked') AS counters
  FROM tl_stored_models m JOIN tl_model_tensors t ON t.model_id = m.id
 GROUP BY m.id, m.name ORDER BY m.id;
SELECT key, shape FROM tl_model_tensors
 WHERE model_id = 1 AND position IN (0, 1, 5, 100, 101) ORDER BY position;

-- The three formats hold bit-identical tensors; the f16 copy differs (rounded).
SELECT b.name, count(*) AS tensors,
       count(*) FILTER (WHERE ta.data = tb.data AND ta.shape = tb.shape AND ta.position = tb.position) AS identical
  FROM tl_model_tensors ta
  JOIN tl_stored_models b ON b.name <> 'tiny-zip'
  JOIN tl_model_tensors tb ON tb.model_id = b.id AND tb.key = ta.key
 WHERE ta.model_id = (SELECT id FROM tl_stored_models WHERE name = 'tiny-zip')
 GROUP BY b.id, b.name ORDER BY b.id;

-- Export and import again: both formats give back the same bits.
SELECT tl_import_weights('tiny-rt-pth', tl_export('tiny-zip', 'pth')) AS id;
SELECT tl_import_weights('tiny-rt-st', tl_export('tiny-zip')) AS id;
SELECT b.name, count(*) FILTER (WHERE ta.data = tb.data AND ta.shape = tb.shape) AS identical
  FROM tl_model_tensors ta
  JOIN tl_stored_models b ON b.name LIKE 'tiny-rt-%'
  JOIN tl_model_tensors tb ON tb.model_id = b.id AND tb.key = ta.key
 WHERE ta.model_id = (SELECT id FROM tl_stored_models WHERE name = 'tiny-zip')
 GROUP BY b.id, b.name ORDER BY b.id;
-- The safetensors export carries the class names in its metadata, and an
-- import without classes takes them from there; .pth has no place for them.
SELECT name, classes FROM tl_stored_models WHERE name LIKE 'tiny-rt-%' ORDER BY id;
SELECT tl_import_weights('tiny-rt-st2', tl_export('tiny-zip'), ARRAY['x', 'y', 'z']) > 0 AS imported;
SELECT classes FROM tl_stored_models WHERE name = 'tiny-rt-st2';
DELETE FROM tl_stored_models WHERE name = 'tiny-rt-st2';
SELECT strpos(convert_from(substr(f, 9, 200), 'UTF8'),
              '{"__metadata__":{"format":"pt","transfer.model":"tiny-zip","transfer.classes":"[\"ants\", \"bees\", \"wasps\"]"}') = 1 AS metadata
  FROM tl_export('tiny-zip') f;
-- A .pth export starts as a zip and names its pickle as torch does.
SELECT substr(f, 1, 4) = '\x504b0304'::bytea AS zip,
       position('archive/data.pkl'::bytea IN f) > 0 AS has_pickle
  FROM tl_export('tiny-zip', 'pth') f;

-- Deleting a model deletes its tensors.
DELETE FROM tl_stored_models WHERE name = 'tiny-rt-st';
SELECT count(*) FROM tl_model_tensors WHERE model_id NOT IN (SELECT id FROM tl_stored_models);

-- Argument errors, with their SQLSTATEs (the fixture directory shows as <ckpt>).
CREATE FUNCTION pg_temp.try(stmt text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE stmt;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ' ' || replace(SQLERRM, current_setting('tl.ckpt'), '<ckpt>');
END $$;
SELECT set_config('tl.ckpt', :'ckpt', false) IS NOT NULL AS set;
SELECT stmt, pg_temp.try(replace(stmt, '<ckpt>', :'ckpt')) AS result FROM (VALUES
	($$SELECT tl_import_weights('tiny-zip', pg_read_binary_file('<ckpt>/tiny.pth'))$$),
	($$SELECT tl_import_weights('', pg_read_binary_file('<ckpt>/tiny.pth'))$$),
	($$SELECT tl_import_weights(NULL, pg_read_binary_file('<ckpt>/tiny.pth'))$$),
	($$SELECT tl_import_weights('x', NULL)$$),
	($$SELECT tl_import_weights('x', pg_read_binary_file('<ckpt>/tiny.pth'), ARRAY['a', 'b'])$$),
	($$SELECT tl_import_weights('x', pg_read_binary_file('<ckpt>/tiny.pth'), ARRAY['a', NULL, 'c'])$$),
	($$SELECT tl_import_weights('x', pg_read_binary_file('<ckpt>/tiny.pth'), ARRAY['a', '', 'c'])$$),
	($$SELECT tl_import_weights('x', pg_read_binary_file('<ckpt>/tiny.pth'), ARRAY[['a', 'b', 'c']])$$),
	($$SELECT tl_import_weights_file('x', '<ckpt>/no-such-file.pth')$$),
	($$SELECT tl_import_weights_file('x', '<ckpt>')$$),
	($$SELECT tl_export('no-such-model')$$),
	($$SELECT tl_export('tiny-zip', 'onnx')$$)
) AS t(stmt);

-- Weights that are not torchvision's resnet18: the error names the first bad key.
\set VERBOSITY default
SELECT tl_import_weights('x', pg_read_binary_file(:'ckpt' || '/tiny_missing_key.pth'));
SELECT tl_import_weights('x', pg_read_binary_file(:'ckpt' || '/tiny_unexpected_key.pth'));
SELECT tl_import_weights('x', pg_read_binary_file(:'ckpt' || '/tiny_wrong_shape.pth'));
SELECT tl_import_weights('x', pg_read_binary_file(:'ckpt' || '/views.pth'));
\set VERBOSITY terse

-- Hostile and damaged files (test/fixtures/checkpoint/bad, each named after
-- the core error it must give): every one is refused with a clear message
-- and a SQLSTATE, and nothing is stored.
CREATE FUNCTION pg_temp.try_import(path text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM tl_import_weights('bad', pg_read_binary_file(path));
	RETURN 'imported';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ' ' || SQLERRM;
END $$;
SELECT f AS file, pg_temp.try_import(:'ckpt' || '/bad/' || f) AS result
  FROM pg_ls_dir(:'ckpt' || '/bad') AS f ORDER BY f COLLATE "C";
SELECT count(*) AS models FROM tl_stored_models;

-- Server files: only superusers and members of pg_read_server_files.
CREATE ROLE tl_weights_user;
CREATE ROLE tl_weights_reader IN ROLE pg_read_server_files;
SET ROLE tl_weights_user;
SELECT tl_import_weights_file('x', :'ckpt' || '/tiny.pth');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET ROLE tl_weights_reader;
-- passes the file check, then needs privileges on the tables like any insert
SELECT tl_import_weights_file('x', :'ckpt' || '/tiny.pth');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
GRANT SELECT, INSERT ON tl_stored_models, tl_model_tensors TO tl_weights_reader;
SET ROLE tl_weights_reader;
SELECT tl_import_weights_file('by-reader', :'ckpt' || '/tiny.pth') > 0 AS imported;
RESET ROLE;
REVOKE ALL ON tl_stored_models, tl_model_tensors FROM tl_weights_reader;
-- reading a model needs SELECT on the tables
SET ROLE tl_weights_user;
SELECT length(tl_export('tiny-zip')) > 0;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE tl_weights_user;
DROP ROLE tl_weights_reader;

-- A hostile search_path does not redirect the functions' queries: with this
-- text = text, a lookup by name would find any model.
CREATE SCHEMA evil;
CREATE FUNCTION evil.texteq_always(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.texteq_always);
SET search_path = evil, public, pg_catalog;
SELECT 'a'::text = 'b'::text AS hostile_equals;
SELECT strpos(convert_from(substr(tl_export('tiny-st'), 9, 100), 'UTF8'), '"transfer.model":"tiny-st"') > 0
       AS exported_the_right_model;
SELECT tl_import_weights('tiny-new', pg_read_binary_file(:'ckpt' || '/tiny.pth')) > 0 AS imported;
RESET search_path;
DROP SCHEMA evil CASCADE;
