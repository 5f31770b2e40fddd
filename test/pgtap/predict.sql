-- Prediction: function properties, parity of the whole path with PyTorch
-- (test/fixtures/predict/refs.txt), consistency between tl_predict,
-- tl_predict_proba, tl_predict_topk, tl_try_predict and tl_evaluate, errors
-- with their SQLSTATEs, deployment and the default model, invalidation of a
-- replaced model within a session, and the cache bound.  Other sessions,
-- parallel workers, memory and the standby are in test/t/predict_*.sh.
\getenv fx TL_TEST_FIXTURES
\set QUIET on
SET client_min_messages = warning;

BEGIN;
SELECT plan(51);

-- Fixtures: two tiny models (test/scripts/make_predict_fixtures.py) and the
-- image module's committed images as dataset ptap.
SELECT FROM tl_import_weights('predict_a',
	pg_read_binary_file(:'fx' || '/predict/predict_a.safetensors'), ARRAY['ants', 'bees']);
SELECT FROM tl_import_weights('predict_b',
	pg_read_binary_file(:'fx' || '/predict/predict_b.safetensors'), ARRAY['ants', 'bees', 'wasps']);
UPDATE tl_stored_models SET image_size = 32 WHERE name = 'predict_a';
UPDATE tl_stored_models SET image_size = 40 WHERE name = 'predict_b';
INSERT INTO tl_images (dataset, split, label, name, img)
SELECT 'ptap', 'val', CASE WHEN f < 'synth_l' THEN 'ants' ELSE 'bees' END, f,
	pg_read_binary_file(:'fx' || '/image/' || f)
FROM pg_ls_dir(:'fx' || '/image') AS f
WHERE f ~ '\.(jpg|png)$';
CREATE TEMP TABLE refs AS
SELECT split_part(line, ' ', 1) AS model, split_part(line, ' ', 2) AS image,
	(string_to_array(line, ' '))[3:]::float8[] AS probs
FROM regexp_split_to_table(pg_read_file(:'fx' || '/predict/refs.txt'), '\n') AS line
WHERE line !~ '^#' AND line <> '';

-- ---- declarations ----
SELECT is_empty($$
	SELECT p.oid::regprocedure::text FROM pg_proc p
	WHERE p.pronamespace = (SELECT extnamespace FROM pg_extension WHERE extname = 'transfer')
	  AND p.proname IN ('tl_predict', 'tl_try_predict', 'tl_predict_proba', 'tl_predict_topk', 'tl_evaluate')
	  AND NOT (p.provolatile = 's' AND p.proparallel = 's' AND (p.proisstrict OR p.proname = 'tl_evaluate'))
$$, 'every prediction function is STABLE, PARALLEL SAFE and STRICT (tl_evaluate returns NULL for NULL arguments itself)');
SELECT is((SELECT count(*)::int FROM pg_proc WHERE proname IN ('tl_predict', 'tl_try_predict', 'tl_predict_proba', 'tl_predict_topk')),
	8, 'each has a default-model and a named-model overload');
SELECT is((SELECT provolatile::text || proparallel::text FROM pg_proc WHERE proname = 'tl_deploy'), 'vu',
	'tl_deploy is VOLATILE and PARALLEL UNSAFE');

-- ---- parity with PyTorch ----
SELECT is((SELECT count(*)::int FROM refs r JOIN tl_images i ON i.dataset = 'ptap' AND i.name = r.image),
	50, '25 images x 2 models have PyTorch references');
SELECT cmp_ok((
	SELECT max(abs(p.value::float8 - r.probs[array_position(m.classes, p.key)]))
	FROM refs r
	JOIN tl_images i ON i.dataset = 'ptap' AND i.name = r.image
	JOIN tl_stored_models m ON m.name = r.model,
	LATERAL jsonb_each_text(tl_predict_proba(i.img, r.model)) AS p), '<=', 1e-5::float8,
	'tl_predict_proba equals PyTorch (decode, eval transform, eval-mode forward, softmax) within 1e-5');
SELECT is((
	SELECT count(*)::int FROM refs r
	JOIN tl_images i ON i.dataset = 'ptap' AND i.name = r.image
	JOIN tl_stored_models m ON m.name = r.model
	WHERE tl_predict(i.img, r.model) IS DISTINCT FROM
		m.classes[array_position(r.probs, (SELECT max(v) FROM unnest(r.probs) v))]
	  -- only where PyTorch's top two are clearly apart
	  AND (SELECT max(v) FROM unnest(r.probs) v) - (SELECT v FROM unnest(r.probs) v ORDER BY v DESC OFFSET 1 LIMIT 1) > 1e-3),
	0, 'tl_predict is PyTorch''s argmax class');
SELECT ok((SELECT count(DISTINCT tl_predict(img, 'predict_a')) FROM tl_images WHERE dataset = 'ptap') = 2,
	'predict_a predicts both classes on these images (the checks are not vacuous)');

-- ---- the functions agree with each other ----
SELECT is((
	SELECT count(*)::int FROM tl_images i, LATERAL (SELECT key FROM jsonb_each(tl_predict_proba(i.img, 'predict_b'))
		ORDER BY value::float8 DESC LIMIT 1) AS top
	WHERE i.dataset = 'ptap' AND top.key <> tl_predict(i.img, 'predict_b')),
	0, 'tl_predict is the most probable class of tl_predict_proba');
SELECT is((
	SELECT count(*)::int FROM tl_images i, tl_predict_topk(i.img, 1, 'predict_b') t
	WHERE i.dataset = 'ptap' AND t.class = tl_predict(i.img, 'predict_b') AND t.rank = 1),
	25, 'tl_predict_topk(img, 1) is one row: rank 1, the predicted class');
SELECT is_empty($$
	SELECT i.id FROM tl_images i, LATERAL (
		SELECT array_agg(t.rank ORDER BY t.rank) AS ranks,
			   array_agg(t.probability ORDER BY t.rank) AS probs,
			   sum(t.probability) AS total,
			   bool_and(t.probability = (tl_predict_proba(i.img, 'predict_b') ->> t.class)::float8) AS same
		FROM tl_predict_topk(i.img, 10, 'predict_b') t) AS k
	WHERE i.dataset = 'ptap'
	  AND NOT (k.ranks = ARRAY[1, 2, 3] AND k.probs[1] >= k.probs[2] AND k.probs[2] >= k.probs[3]
			   AND abs(k.total - 1) < 1e-5 AND k.same)
$$, 'tl_predict_topk with k > classes: every class once, ranks 1..3, probabilities descending, summing to 1, equal to tl_predict_proba');
SELECT is((SELECT count(*)::int FROM tl_predict_topk((SELECT img FROM tl_images WHERE dataset = 'ptap' LIMIT 1), 2, 'predict_b')),
	2, 'tl_predict_topk(img, 2) returns two rows');
SELECT is((SELECT count(*)::int FROM tl_images WHERE dataset = 'ptap'
			AND tl_try_predict(img, 'predict_a') IS NOT DISTINCT FROM tl_predict(img, 'predict_a')),
	25, 'tl_try_predict equals tl_predict on good images');
SELECT is((SELECT sum(value::float8) FROM tl_images, jsonb_each_text(tl_predict_proba(img, 'predict_a'))
	WHERE name = 'synth_rgb.png')::numeric(10, 5), 1.00000, 'probabilities sum to 1');

-- ---- errors ----
SELECT throws_ok($$SELECT tl_predict(img, 'nope') FROM tl_images WHERE dataset = 'ptap'$$,
	'42704', 'model "nope" does not exist', 'unknown model: undefined_object');
SELECT throws_ok($$SELECT tl_predict(pg_read_binary_file('$$ || :'fx' || $$/image/synth.gif'), 'predict_a')$$,
	'0A000', NULL, 'a GIF: feature_not_supported, from the image decoder');
SELECT throws_ok($$SELECT tl_predict(substring(img FROM 1 FOR 100), 'predict_a') FROM tl_images WHERE name = 'synth_rgb.png'$$,
	'22P03', NULL, 'a truncated PNG: invalid_binary_representation');
SELECT throws_like($$SELECT tl_predict('\x0001020304'::bytea, 'predict_a')$$,
	'could not decode image: %', 'random bytes: the decoder''s message, prefixed');
SELECT throws_ok($$SELECT tl_predict(''::bytea, 'predict_a')$$,
	NULL, NULL, 'an empty value raises');
SELECT ok(tl_predict(NULL::bytea, 'predict_a') IS NULL AND tl_predict(NULL::bytea) IS NULL
		  AND tl_predict_proba(NULL::bytea) IS NULL AND tl_try_predict(NULL::bytea) IS NULL,
	'a NULL image gives NULL (STRICT)');
SELECT is((SELECT count(*)::int FROM (VALUES (pg_read_binary_file(:'fx' || '/image/synth.gif')),
			('\x0001020304'::bytea), (''::bytea),
			((SELECT substring(img FROM 1 FOR 100) FROM tl_images WHERE name = 'synth_rgb.png'))) AS bad(img)
		WHERE tl_try_predict(img, 'predict_a') IS NULL),
	4, 'tl_try_predict gives NULL for each undecodable image');
SELECT throws_ok($$SELECT tl_try_predict('\x00'::bytea, 'nope')$$, '42704', NULL,
	'tl_try_predict still raises for an unknown model');
SELECT throws_ok($$SELECT * FROM tl_predict_topk((SELECT img FROM tl_images LIMIT 1), 0, 'predict_a')$$,
	'22023', 'k must be at least 1, not 0', 'topk with k < 1: invalid_parameter_value');
SELECT FROM tl_import_weights('predict_c',
	pg_read_binary_file(:'fx' || '/predict/predict_a.safetensors'), ARRAY['ants', 'bees']);
UPDATE tl_stored_models SET image_size = 32, classes = ARRAY['x', 'y', 'z'], num_classes = 3
WHERE name = 'predict_c';
SELECT throws_like($$SELECT tl_predict(img, 'predict_c') FROM tl_images WHERE dataset = 'ptap'$$,
	'%"predict_c"%3 classes%', 'a model whose classes don''t fit its fc layer is refused, naming it');

-- ---- the default model and deployment ----
SELECT throws_ok($$SELECT tl_predict(img) FROM tl_images WHERE dataset = 'ptap'$$,
	'42704', 'no model is deployed and no trained model exists', 'no default model yet');
UPDATE tl_stored_models SET source = '{"kind": "trained"}' WHERE name = 'predict_b';
SELECT is((SELECT count(*)::int FROM tl_images WHERE dataset = 'ptap' AND tl_predict(img) = tl_predict(img, 'predict_b')),
	25, 'before any deployment tl_predict(img) uses the newest trained model');
SELECT is((SELECT array_agg(name) FROM tl_models WHERE default_model), ARRAY['predict_b'],
	'tl_models marks it as the default model');
SELECT throws_ok($$SELECT tl_deploy('nope')$$, '42704', 'model "nope" does not exist', 'deploying an unknown model');
SELECT ok(tl_deploy('predict_a') > 0, 'tl_deploy returns the deployment id');
SELECT is((SELECT count(*)::int FROM tl_images WHERE dataset = 'ptap' AND tl_predict(img) = tl_predict(img, 'predict_a')),
	25, 'tl_predict(img) uses the deployed model');
SELECT is((SELECT count(*)::int FROM tl_images WHERE dataset = 'ptap'
			AND tl_predict_proba(img) = tl_predict_proba(img, 'predict_a')
			AND tl_try_predict(img) = tl_predict(img, 'predict_a')),
	25, 'so do tl_predict_proba(img) and tl_try_predict(img)');
SELECT results_eq($$SELECT name, deployed, default_model FROM tl_models WHERE name LIKE 'predict_%' ORDER BY name$$,
	$$VALUES ('predict_a', true, true), ('predict_b', false, false), ('predict_c', false, false)$$,
	'tl_models shows the deployment');
SELECT FROM tl_deploy('predict_b');
SELECT is((SELECT count(*)::int FROM tl_images WHERE dataset = 'ptap' AND tl_predict(img) = tl_predict(img, 'predict_b')),
	25, 'a new deployment is used by the next call in the same session');
SELECT is((SELECT array_agg(model_name ORDER BY id) FROM tl_deployments), ARRAY['predict_a', 'predict_b'],
	'tl_deployments keeps the history');

-- ---- a replaced model is reloaded (same transaction: same xmin, new row) ----
SELECT FROM tl_import_weights('pm', pg_read_binary_file(:'fx' || '/predict/predict_a.safetensors'), ARRAY['ants', 'bees']);
UPDATE tl_stored_models SET image_size = 32 WHERE name = 'pm';
SELECT is((SELECT count(*)::int FROM tl_images WHERE dataset = 'ptap' AND tl_predict_proba(img, 'pm') = tl_predict_proba(img, 'predict_a')),
	25, 'model pm predicts as predict_a');
DELETE FROM tl_stored_models WHERE name = 'pm';
SELECT FROM tl_import_weights('pm', pg_read_binary_file(:'fx' || '/predict/predict_b.safetensors'), ARRAY['ants', 'bees', 'wasps']);
UPDATE tl_stored_models SET image_size = 40 WHERE name = 'pm';
SELECT is((SELECT count(*)::int FROM tl_images WHERE dataset = 'ptap' AND tl_predict_proba(img, 'pm') = tl_predict_proba(img, 'predict_b')),
	25, 'after pm is replaced, it predicts as the new weights');
UPDATE tl_stored_models SET image_size = 64 WHERE name = 'pm';
SELECT FROM tl_predict((SELECT img FROM tl_images WHERE dataset = 'ptap' LIMIT 1), 'pm');
SELECT is((SELECT image_size FROM tl_model_cache() WHERE model = 'pm'), 64,
	'an updated model row (image size) is reloaded');

-- ---- the cache bound ----
SET transfer.model_cache_size = 1;
SELECT FROM tl_images WHERE dataset = 'ptap' AND tl_predict(img, 'predict_a') IS NOT NULL AND tl_predict(img, 'pm') IS NOT NULL;
SELECT results_eq('SELECT model FROM tl_model_cache()', $$VALUES ('pm')$$,
	'with transfer.model_cache_size = 1 the session keeps only the last model');
SET transfer.model_cache_size = 2;
SELECT FROM tl_images WHERE dataset = 'ptap' AND tl_predict(img, 'predict_a') IS NOT NULL;
SELECT results_eq('SELECT model FROM tl_model_cache()', $$VALUES ('predict_a'), ('pm')$$,
	'with 2 it keeps two, most recently used first');
SELECT ok((SELECT bool_and(bytes > 0 AND calls > 0) FROM tl_model_cache()), 'entries report their size and calls');

DELETE FROM tl_stored_models WHERE name = 'predict_b';
SELECT throws_ok($$SELECT tl_predict(img) FROM tl_images WHERE dataset = 'ptap'$$,
	'42704', 'deployed model "predict_b" does not exist any more', 'a deleted deployed model: undefined_object');
SELECT is((SELECT model_id FROM tl_deployments ORDER BY id DESC LIMIT 1), NULL,
	'its deployment row stays, without the model');

-- ---- tl_evaluate ----
CREATE TEMP TABLE ev AS SELECT tl_evaluate('predict_a', 'ptap') AS e;
CREATE TEMP TABLE per_image AS
SELECT label, tl_predict(img, 'predict_a') AS pred,
	-ln((tl_predict_proba(img, 'predict_a') ->> label)::float8) AS loss
FROM tl_images WHERE dataset = 'ptap';
SELECT is((SELECT (e ->> 'images')::int FROM ev), 25, 'tl_evaluate counts the split''s images (default split val)');
SELECT is((SELECT (e ->> 'correct')::int FROM ev), (SELECT count(*)::int FROM per_image WHERE pred = label),
	'correct = images where tl_predict equals the label');
SELECT is((SELECT (e ->> 'accuracy')::float8 FROM ev), (SELECT avg((pred = label)::int)::float8 FROM per_image),
	'accuracy = correct / images');
SELECT cmp_ok((SELECT abs((e ->> 'loss')::float8 - (SELECT avg(loss) FROM per_image)) FROM ev), '<', 1e-5::float8,
	'loss = mean cross-entropy (-ln p(label)) within 1e-5');
SELECT is((SELECT e -> 'confusion' FROM ev),
	(SELECT jsonb_agg(row ORDER BY t) FROM (
		SELECT t, jsonb_agg((SELECT count(*) FROM per_image WHERE label = t AND pred = p) ORDER BY p) AS row
		FROM unnest(ARRAY['ants', 'bees']) t, unnest(ARRAY['ants', 'bees']) p GROUP BY t) c),
	'confusion matrix: rows true class, columns predicted class');
SELECT is((SELECT (e -> 'per_class' -> 'bees' ->> 'recall')::float8 FROM ev),
	(SELECT avg((pred = 'bees')::int)::float8 FROM per_image WHERE label = 'bees'), 'per-class recall');
SELECT is((SELECT (e -> 'per_class' -> 'bees' ->> 'precision')::float8 FROM ev),
	(SELECT avg((label = 'bees')::int)::float8 FROM per_image WHERE pred = 'bees'), 'per-class precision');
SELECT throws_ok($$SELECT tl_evaluate('predict_a', 'ptap', 'train')$$, '22023',
	'dataset "ptap" has no images in split "train"', 'an empty split');
SELECT throws_ok($$SELECT tl_evaluate('nope', 'ptap')$$, '42704', NULL, 'an unknown model');
UPDATE tl_images SET label = 'wasps' WHERE dataset = 'ptap' AND name = 'synth_rgb.png';
SELECT throws_like($$SELECT tl_evaluate('predict_a', 'ptap')$$,
	'%has label "wasps", which is not a class of model "predict_a"', 'a label the model doesn''t know');

SELECT * FROM finish();
ROLLBACK;
