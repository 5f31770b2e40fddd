-- The error model (issue 17): the same user mistake gets the same SQLSTATE
-- and a hint that says what to do, in every function that can raise it.
-- Checks the SQLSTATE and the presence (and gist) of the hint; the messages
-- themselves are in expected/*.out.  Starts no worker: every call below fails
-- before one would start, and the transaction is rolled back.
\getenv fx TL_TEST_FIXTURES
\set QUIET on
SET client_min_messages = warning;

BEGIN;
SELECT plan(59);

-- caught(q): the SQLSTATE, hint and detail of the error q raises (NULLs
-- when none).  err(q): 'SQLSTATE hint' or 'SQLSTATE no hint', or 'no error';
-- hint(q), detail(q): the text ('' when none).
CREATE FUNCTION pg_temp.caught(q text, OUT state text, OUT hint text, OUT detail text)
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, hint = PG_EXCEPTION_HINT, detail = PG_EXCEPTION_DETAIL;
END $$;
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE sql AS $$
	SELECT CASE WHEN c.state IS NULL THEN 'no error'
		ELSE c.state || CASE WHEN coalesce(c.hint, '') <> '' THEN ' hint' ELSE ' no hint' END END
	FROM pg_temp.caught(q) c $$;
CREATE FUNCTION pg_temp.hint(q text) RETURNS text LANGUAGE sql AS $$
	SELECT coalesce(hint, '') FROM pg_temp.caught(q) $$;
CREATE FUNCTION pg_temp.detail(q text) RETURNS text LANGUAGE sql AS $$
	SELECT coalesce(detail, '') FROM pg_temp.caught(q) $$;

-- ---- fixtures: a model (ants, bees) and datasets with one defect each
SELECT FROM tl_import_weights('e_model',
	pg_read_binary_file(:'fx' || '/predict/predict_a.safetensors'), ARRAY['ants', 'bees']);
UPDATE tl_stored_models SET image_size = 32 WHERE name = 'e_model';
CREATE TEMP TABLE e_img AS
SELECT f AS name, pg_read_binary_file(:'fx' || '/image/' || f) AS img
FROM pg_ls_dir(:'fx' || '/image') AS f WHERE f ~ '^synth_(gray|rgb)\.(jpg|png)$';
SELECT ok((SELECT count(*) FROM e_img) >= 2, 'fixture images are there');
-- e_good: train and val with ants and bees
INSERT INTO tl_images (dataset, split, label, name, img)
SELECT 'e_good', s, l, l || '_' || name, img
FROM e_img, (VALUES ('train'), ('val')) AS s(s), (VALUES ('ants'), ('bees')) AS l(l);
-- e_notrain: only val
INSERT INTO tl_images (dataset, split, label, name, img)
SELECT 'e_notrain', split, label, name, img FROM tl_images WHERE dataset = 'e_good' AND split = 'val';
-- e_noval: only train
INSERT INTO tl_images (dataset, split, label, name, img)
SELECT 'e_noval', split, label, name, img FROM tl_images WHERE dataset = 'e_good' AND split = 'train';
-- e_extraval: val has a class train lacks
INSERT INTO tl_images (dataset, split, label, name, img)
SELECT 'e_extraval', split, CASE WHEN split = 'val' AND label = 'bees' THEN 'wasps' ELSE label END, name, img
FROM tl_images WHERE dataset = 'e_good';
-- e_oneclass: one class
INSERT INTO tl_images (dataset, split, label, name, img)
SELECT 'e_oneclass', split, 'ants', label || name, img FROM tl_images WHERE dataset = 'e_good';
-- e_bad: e_good plus an image with a broken header
INSERT INTO tl_images (dataset, split, label, name, img)
SELECT 'e_bad', split, label, name, img FROM tl_images WHERE dataset = 'e_good';
INSERT INTO tl_images (dataset, split, label, name, img)
VALUES ('e_bad', 'train', 'ants', 'broken.jpg', '\xffd8ff00deadbeef'::bytea);

-- ---- unknown dataset: 42704 everywhere, the hint lists tl_datasets
SELECT is(pg_temp.err($$SELECT tl_train('finetune', 'e_nosuch', from_scratch => true)$$),
	'42704 hint', 'tl_train: unknown dataset is 42704 with a hint');
SELECT is(pg_temp.err($$SELECT tl_evaluate('e_model', 'e_nosuch')$$),
	'42704 hint', 'tl_evaluate: unknown dataset is 42704 with a hint');
SELECT is(pg_temp.err($$SELECT * FROM tl_preview('e_nosuch')$$),
	'42704 hint', 'tl_preview: unknown dataset is 42704 with a hint');
SELECT matches(pg_temp.hint($$SELECT tl_train('finetune', 'e_nosuch', from_scratch => true)$$),
	'Existing datasets: "[^"]+".*tl_datasets', 'tl_train: the hint lists existing datasets');
SELECT matches(pg_temp.hint($$SELECT tl_evaluate('e_model', 'e_nosuch')$$),
	'Existing datasets: "[^"]+".*tl_datasets', 'tl_evaluate: the hint lists existing datasets');
SELECT matches(pg_temp.hint($$SELECT * FROM tl_preview('e_nosuch')$$),
	'Existing datasets: "[^"]+".*tl_datasets', 'tl_preview: the hint lists existing datasets');
-- the list is bounded
INSERT INTO tl_images (dataset, split, label, name, img)
SELECT 'e_many_' || i, 'val', 'ants', 'a.jpg', '\xffd8'::bytea FROM generate_series(1, 20) AS i;
SELECT matches(pg_temp.hint($$SELECT * FROM tl_preview('e_nosuch')$$),
	'and [0-9]+ more', 'the list of datasets in the hint is bounded');
DELETE FROM tl_images WHERE dataset LIKE 'e\_many\_%';

-- ---- a known dataset without that split: 22023, the hint lists its splits
SELECT is(pg_temp.err($$SELECT tl_evaluate('e_model', 'e_good', 'test')$$),
	'22023 hint', 'tl_evaluate: empty split is 22023 with a hint');
SELECT is(pg_temp.err($$SELECT * FROM tl_preview('e_good', 'test')$$),
	'22023 hint', 'tl_preview: empty split is 22023 with a hint');
SELECT matches(pg_temp.hint($$SELECT * FROM tl_preview('e_good', 'test')$$),
	'"train", "val"', 'the hint lists the dataset''s splits');

-- ---- duplicate model name: 42710 in tl_train and tl_import_weights
SELECT is(pg_temp.err($$SELECT tl_train('finetune', 'e_good', from_scratch => true, model_name => 'e_model')$$),
	'42710 hint', 'tl_train: duplicate model name is 42710 with a hint');
SELECT is(pg_temp.err(format($$SELECT tl_import_weights('e_model', pg_read_binary_file(%L))$$,
	:'fx' || '/predict/predict_a.safetensors')),
	'42710 hint', 'tl_import_weights: duplicate model name is 42710 with a hint');
SELECT matches(pg_temp.hint($$SELECT tl_train('finetune', 'e_good', from_scratch => true, model_name => 'e_model')$$),
	'tl_models', 'the duplicate-name hint points to tl_models');

-- ---- training's checks before a worker starts
SELECT is(pg_temp.err($$SELECT tl_train('finetune', 'e_notrain', from_scratch => true)$$),
	'22023 hint', 'no train split: 22023 with a hint');
SELECT is(pg_temp.err($$SELECT tl_train('finetune', 'e_noval', from_scratch => true)$$),
	'22023 hint', 'no val split: 22023 with a hint');
SELECT is(pg_temp.err($$SELECT tl_train('finetune', 'e_oneclass', from_scratch => true)$$),
	'22023 hint', 'one class: 22023 with a hint');
SELECT is(pg_temp.err($$SELECT tl_train('finetune', 'e_extraval', from_scratch => true)$$),
	'22023 hint', 'a val class missing from train: 22023 with a hint');
SELECT is(pg_temp.err($$SELECT tl_train('finetune', 'e_good', base_model => 'e_nosuch')$$),
	'42704 hint', 'unknown base_model: 42704 with a hint');
SELECT matches(pg_temp.hint($$SELECT tl_train('finetune', 'e_good', base_model => 'e_nosuch')$$),
	'tl_models', 'the unknown base_model hint points to tl_models');
SELECT is(pg_temp.err($$SELECT tl_train('finetune', 'e_good')$$),
	'42704 hint', 'missing pretrained base model: 42704 with a hint');
SELECT matches(pg_temp.hint($$SELECT tl_train('finetune', 'e_good')$$),
	'from_scratch => true', 'the missing pretrained model hint mentions from_scratch => true');
SELECT is(pg_temp.err($$SELECT tl_train('finetune', 'e_bad', from_scratch => true)$$),
	'22P03 hint', 'a bad image: 22P03 with a hint');
SELECT matches(pg_temp.detail($$SELECT tl_train('finetune', 'e_bad', from_scratch => true)$$),
	'dataset ''e_bad'', split ''train'', label ''ants'', name ''broken.jpg''',
	'the bad image''s detail names its dataset, split, label and name');
SELECT matches(pg_temp.hint($$SELECT tl_train('finetune', 'e_bad', from_scratch => true)$$),
	'DELETE FROM tl_images WHERE id = [0-9]+', 'the bad image''s hint says how to remove it');

-- ---- unknown model: 42704 and one hint, "see tl_models"
SELECT is(pg_temp.err($$SELECT tl_evaluate('e_nosuch', 'e_good')$$), '42704 hint', 'tl_evaluate: unknown model');
SELECT is(pg_temp.err($$SELECT tl_predict('\xffd8'::bytea, 'e_nosuch')$$), '42704 hint', 'tl_predict: unknown model');
SELECT is(pg_temp.err($$SELECT tl_export('e_nosuch')$$), '42704 hint', 'tl_export: unknown model');
SELECT is(pg_temp.err($$SELECT tl_deploy('e_nosuch')$$), '42704 hint', 'tl_deploy: unknown model');
SELECT matches(pg_temp.hint($$SELECT tl_export('e_nosuch')$$), 'tl_models', 'tl_export''s hint points to tl_models');
SELECT matches(pg_temp.hint($$SELECT tl_predict('\xffd8'::bytea, 'e_nosuch')$$), 'tl_models', 'tl_predict''s hint points to tl_models');
SELECT matches(pg_temp.hint($$SELECT tl_evaluate('e_nosuch', 'e_good')$$), 'tl_models', 'tl_evaluate''s hint points to tl_models');
SELECT matches(pg_temp.hint($$SELECT tl_deploy('e_nosuch')$$), 'tl_models', 'tl_deploy''s hint points to tl_models');
SELECT is(
	(SELECT count(*)::int FROM (VALUES
		(pg_temp.hint($$SELECT tl_export('e_nosuch')$$)),
		(pg_temp.hint($$SELECT tl_predict('\xffd8'::bytea, 'e_nosuch')$$)),
		(pg_temp.hint($$SELECT tl_evaluate('e_nosuch', 'e_good')$$))) AS h(h)
	 WHERE h LIKE '%tl_stored_models%'),
	0, 'no unknown-model hint points to tl_stored_models');

-- ---- decode errors in prediction: the hint names tl_try_predict
SELECT is(pg_temp.err(format($$SELECT tl_predict(pg_read_binary_file(%L), 'e_model')$$, :'fx' || '/image/synth.gif')),
	'0A000 hint', 'tl_predict: unsupported format with a hint');
SELECT is(pg_temp.err($$SELECT tl_predict('\xffd8ff00'::bytea, 'e_model')$$),
	'22P03 hint', 'tl_predict: corrupt image with a hint');
SELECT is(pg_temp.err($$SELECT tl_predict_proba('\xffd8ff00'::bytea, 'e_model')$$),
	'22P03 hint', 'tl_predict_proba: corrupt image with a hint');
SELECT is(pg_temp.err($$SELECT * FROM tl_predict_topk('\xffd8ff00'::bytea, 1, 'e_model')$$),
	'22P03 hint', 'tl_predict_topk: corrupt image with a hint');
SELECT matches(pg_temp.hint($$SELECT tl_predict('\xffd8ff00'::bytea, 'e_model')$$),
	'tl_try_predict', 'the decode hint names tl_try_predict');
SELECT matches(pg_temp.hint($$SELECT name, tl_predict(img, 'e_model') FROM tl_images WHERE dataset = 'e_bad'$$),
	'tl_try_predict', 'the hint also comes over a table scan');
SELECT is((SELECT count(*)::int FROM tl_images WHERE dataset = 'e_bad' AND tl_try_predict(img, 'e_model') IS NULL),
	1, 'tl_try_predict skips the image tl_predict fails on');
-- tl_evaluate can't skip an image, so its hint must not send users to tl_try_predict
SELECT is(pg_temp.err($$SELECT tl_evaluate('e_model', 'e_bad', 'train')$$),
	'22P03 hint', 'tl_evaluate: corrupt image with a hint');
SELECT doesnt_match(pg_temp.hint($$SELECT tl_evaluate('e_model', 'e_bad', 'train')$$),
	'tl_try_predict', 'tl_evaluate''s decode hint does not name tl_try_predict');

-- ---- a stored base model that is not a ResNet-18 (tampered tensors) is refused
-- before a worker starts; tl_train checks keys, shapes and byte counts without
-- reading the weights
SELECT FROM tl_import_weights('e_base_bad',
	pg_read_binary_file(:'fx' || '/predict/predict_a.safetensors'), ARRAY['ants', 'bees']);
DELETE FROM tl_model_tensors
WHERE model_id = (SELECT id FROM tl_stored_models WHERE name = 'e_base_bad') AND key = 'bn1.running_var';
SELECT is(pg_temp.err($$SELECT tl_train('finetune', 'e_good', base_model => 'e_base_bad')$$),
	'42809 hint', 'tl_train: a base model with a missing tensor is not a ResNet-18 (42809, hint)');
SELECT matches((SELECT detail FROM pg_temp.caught($$SELECT tl_train('finetune', 'e_good', base_model => 'e_base_bad')$$)),
	'bn1.running_var', 'the detail names the missing key');
INSERT INTO tl_model_tensors (model_id, key, position, shape, data)
SELECT model_id, 'bn1.running_var', 999, shape, substr(data, 1, 5)
FROM tl_model_tensors WHERE model_id = (SELECT id FROM tl_stored_models WHERE name = 'e_base_bad') AND key = 'bn1.running_mean';
SELECT is(left(pg_temp.err($$SELECT tl_train('finetune', 'e_good', base_model => 'e_base_bad')$$), 2),
	'XX', 'tl_train: a base model whose tensor bytes do not match its shape is refused (data corrupted)');
SELECT is((SELECT count(*)::int FROM tl_runs WHERE args->>'base_model' = 'e_base_bad'), 0, 'no run was recorded for either');

-- ---- tl_deploy(NULL) is an error, not a silent "undeploy"
SELECT is(pg_temp.err($$SELECT tl_deploy(NULL)$$), '22004 hint', 'tl_deploy(NULL): 22004 with a hint');
SELECT isnt_strict('tl_deploy', ARRAY['text'], 'tl_deploy is not STRICT');
SELECT is((SELECT count(*)::int FROM tl_deployments), 0, 'tl_deploy(NULL) deployed nothing');

-- ---- NULL arguments of tl_train: 22004 too
SELECT is(left(pg_temp.err($$SELECT tl_train('finetune', NULL)$$), 5), '22004', 'tl_train(NULL dataset): 22004');
SELECT is(left(pg_temp.err($$SELECT tl_train(NULL, 'e_good')$$), 5), '22004', 'tl_train(NULL mode): 22004');

-- ---- runs: resume of a run that is not interrupted
INSERT INTO tl_runs (id, dataset, mode, args, status) VALUES (-17, 'e_good', 'finetune', '{"epochs": 1}', 'cancelled');
SELECT throws_ok($$SELECT tl_resume(-17)$$, '55000', 'training run -17 cannot be resumed: its status is cancelled',
	'tl_resume of a cancelled run: 55000, plain wording');
SELECT is(pg_temp.err($$SELECT tl_resume(-17)$$), '55000 hint', 'tl_resume of a cancelled run has a hint');
SELECT matches(pg_temp.hint($$SELECT tl_resume(-17)$$), 'tl_train', 'the hint says to start a new run');
SELECT is(pg_temp.err($$SELECT tl_resume(-1717)$$), '42704 no hint', 'tl_resume of an unknown run: 42704');

-- ---- tl_progress: an unknown ETA is NULL, not 00:00:00
INSERT INTO tl_runs (id, dataset, mode, args, status, started) VALUES (-18, 'e_good', 'finetune', '{"epochs": 2}', 'running', now());
INSERT INTO tl_run_progress (run, epoch, phase, batch, batches, eta_seconds, updated)
	VALUES (-18, 0, 'features', 3, 10, NULL, now());
SELECT is((SELECT eta FROM tl_progress WHERE run = -18), NULL, 'unknown ETA is NULL');
UPDATE tl_run_progress SET eta_seconds = 100 WHERE run = -18;
SELECT ok((SELECT eta FROM tl_progress WHERE run = -18) > '00:01:00'::interval, 'a known ETA is shown');
UPDATE tl_run_progress SET eta_seconds = 5, updated = now() - interval '1 minute' WHERE run = -18;
SELECT is((SELECT eta FROM tl_progress WHERE run = -18), '00:00:00'::interval, 'an overdue ETA is 0, not negative');

SELECT * FROM finish();
ROLLBACK;
