-- Prediction with stored models: the examples of docs/prediction.md.
--
-- Two tiny ResNet-18 fixtures (test/scripts/make_predict_fixtures.py) and
-- the image module's committed images.  TL_TEST_FIXTURES comes from the
-- environment (scripts/test.sh) so no machine's path appears in this output.
-- Probabilities are rounded to 3 decimals; test/pgtap/predict.sql compares
-- them with PyTorch's at 1e-5.
\getenv fx TL_TEST_FIXTURES
SET client_min_messages = warning;
-- Later tests in this database expect the identity sequences as they are now.
SELECT pg_get_serial_sequence('tl_stored_models', 'id') AS models_seq,
	pg_get_serial_sequence('tl_images', 'id') AS images_seq \gset
SELECT last_value AS models_last, is_called AS models_called FROM :models_seq \gset
SELECT last_value AS images_last, is_called AS images_called FROM :images_seq \gset
SELECT tl_import_weights('predict_a',
	pg_read_binary_file(:'fx' || '/predict/predict_a.safetensors'), ARRAY['ants', 'bees']) > 0 AS imported;
SELECT tl_import_weights('predict_b',
	pg_read_binary_file(:'fx' || '/predict/predict_b.safetensors'), ARRAY['ants', 'bees', 'wasps']) > 0 AS imported;
-- Small models: their image size is theirs (Resize 37, CenterCrop 32 for a).
UPDATE tl_stored_models SET image_size = 32 WHERE name = 'predict_a';
UPDATE tl_stored_models SET image_size = 40 WHERE name = 'predict_b';
INSERT INTO tl_images (dataset, split, label, name, img)
SELECT 'pregress', 'val', CASE WHEN f < 'synth_l' THEN 'ants' ELSE 'bees' END, f,
	pg_read_binary_file(:'fx' || '/image/' || f)
FROM pg_ls_dir(:'fx' || '/image') AS f
WHERE f IN ('synth_gray4.png', 'synth_1x1.png', 'synth_1x1.jpg', 'synth_palette2.png', 'synth_rgb.png');

-- The class a named model predicts.
SELECT name, tl_predict(img, 'predict_a') AS predicted
FROM tl_images WHERE dataset = 'pregress' ORDER BY name;

-- Every class's probability, as jsonb.
SELECT name, key AS class, round(value::numeric, 3) AS probability
FROM tl_images, jsonb_each_text(tl_predict_proba(img, 'predict_b'))
WHERE dataset = 'pregress' AND name = 'synth_rgb.png'
ORDER BY key;

-- The k most probable classes, one row each.
SELECT t.rank, t.class, round(t.probability::numeric, 3) AS probability
FROM tl_images i, tl_predict_topk(i.img, 2, 'predict_b') t
WHERE i.dataset = 'pregress' AND i.name = 'synth_rgb.png';

-- Evaluation on a dataset split (default 'val').
SELECT e -> 'images' AS images, e -> 'correct' AS correct, e -> 'accuracy' AS accuracy,
	round((e ->> 'loss')::numeric, 3) AS loss, e -> 'classes' AS classes, e -> 'confusion' AS confusion,
	e -> 'per_class' -> 'ants' AS ants
FROM tl_evaluate('predict_a', 'pregress') AS e;

-- Errors.  Their SQLSTATE is echoed after each.
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT tl_predict(img, 'no_such_model') FROM tl_images WHERE dataset = 'pregress';
\echo :LAST_ERROR_SQLSTATE
SELECT tl_predict(pg_read_binary_file(:'fx' || '/image/synth.gif'), 'predict_a');
\echo :LAST_ERROR_SQLSTATE
SELECT tl_predict(substring(img FROM 1 FOR 100), 'predict_a') FROM tl_images WHERE name = 'synth_rgb.png' AND dataset = 'pregress';
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tl_predict_topk('\x00'::bytea, 0, 'predict_a');
\echo :LAST_ERROR_SQLSTATE
SELECT tl_evaluate('predict_a', 'pregress', 'test');
\echo :LAST_ERROR_SQLSTATE
-- A NULL image is NULL (the functions are STRICT).
SELECT tl_predict(NULL, 'predict_a') IS NULL AS is_null;

-- Skipping bad rows in a large query: tl_try_predict is NULL for an image
-- that can't be decoded.
SELECT name, tl_try_predict(img, 'predict_a') AS predicted
FROM (SELECT name, img FROM tl_images WHERE dataset = 'pregress'
	  UNION ALL SELECT 'broken.gif', pg_read_binary_file(:'fx' || '/image/synth.gif')
	  UNION ALL SELECT 'empty', ''::bytea) AS rows
ORDER BY name;

-- The default model: none before a deployment or a trained model exists.
SELECT tl_predict(img) FROM tl_images WHERE dataset = 'pregress';
\echo :LAST_ERROR_SQLSTATE
SELECT tl_deploy('predict_b') > 0 AS deployed;
SELECT name, tl_predict(img) AS predicted FROM tl_images WHERE dataset = 'pregress' ORDER BY name;
SELECT name, num_classes, image_size, deployed, default_model
FROM tl_models WHERE name LIKE 'predict\_%' ORDER BY name;
SELECT tl_deploy('no_such_model');
\echo :LAST_ERROR_SQLSTATE
-- The session's cache: models loaded for prediction, most recently used first.
SELECT model, image_size, calls > 0 AS used FROM tl_model_cache();

-- Clean up for the tests that follow.
DELETE FROM tl_deployments;
DELETE FROM tl_stored_models WHERE name IN ('predict_a', 'predict_b');
DELETE FROM tl_images WHERE dataset = 'pregress';
SELECT setval(:'models_seq', :models_last, :'models_called') > 0 AS reset,
	setval(:'images_seq', :images_last, :'images_called') > 0 AS reset;
