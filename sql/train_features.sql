-- tl_train(..., cache_features => true): feature_extractor runs on cached
-- backbone features (src/pg/train/features.c, docs/training.md).
--
-- Tiny runs on the test subset (TL_TEST_IMAGES: 5 train + 5 val images,
-- image_size 32, base_width 8).  No loss value appears in the output; the
-- checks compare runs and models with each other instead.
\getenv images TL_TEST_IMAGES
SELECT last_value AS images_seq, is_called AS images_seq_called
FROM tl_images_id_seq \gset
SELECT last_value AS models_seq, is_called AS models_seq_called
FROM tl_stored_models_id_seq \gset
SET client_min_messages = warning;
SELECT count(*) AS classes FROM tl_import_folder('featset', :'images');
-- A small base model to extract features with.
SELECT tl_train('finetune', 'featset', from_scratch => true, base_width => 8, image_size => 32,
				batch_size => 3, epochs => 1, seed => 3, model_name => 'feat-base', wait => true) AS base_run \gset
RESET client_min_messages;

-- Only the feature extractor has a frozen backbone to cache; NULL is refused.
SELECT tl_train('finetune', 'featset', base_model => 'feat-base', image_size => 32, cache_features => true);
SELECT tl_train('feature_extractor', 'featset', base_model => 'feat-base', image_size => 32, cache_features => NULL);
SELECT count(*) AS runs FROM tl_runs WHERE id <> :base_run;

-- Two runs with the same seed, one with another seed.
SET client_min_messages = warning;
SELECT tl_train('feature_extractor', 'featset', base_model => 'feat-base', image_size => 32, batch_size => 3,
				epochs => 4, step_size => 2, seed => 11, model_name => 'feat-a', cache_features => true,
				wait => true) AS run_a \gset
SELECT tl_train('feature_extractor', 'featset', base_model => 'feat-base', image_size => 32, batch_size => 3,
				epochs => 4, step_size => 2, seed => 11, model_name => 'feat-b', cache_features => true,
				wait => true) AS run_b \gset
SELECT tl_train('feature_extractor', 'featset', base_model => 'feat-base', image_size => 32, batch_size => 3,
				epochs => 4, step_size => 2, seed => 12, model_name => 'feat-c', cache_features => true,
				wait => true) AS run_c \gset
RESET client_min_messages;
SELECT id = :run_a AS a, mode, status, epochs_done, args->>'cache_features' AS cache_features
FROM tl_runs WHERE id IN (:run_a, :run_b) ORDER BY id;
-- The tutorial's log: a row per epoch phase, StepLR applied, accuracies are counts of 5 images.
SELECT epoch, phase, lr, acc * 5 = round(acc * 5) AS acc_counts, loss >= 0 AS loss_ok
FROM tl_run_epochs WHERE run = :run_a ORDER BY epoch, phase;
-- Nothing left behind but the rows.
SELECT count(*) AS checkpoints FROM tl_run_checkpoints WHERE run IN (:run_a, :run_b, :run_c);

-- The stored model's backbone is the base model's, bit for bit (eval-mode
-- BatchNorm: running statistics don't move), and its fc is new.
WITH t AS (
	SELECT m.name, t.key, t.data
	FROM tl_model_tensors t JOIN tl_stored_models m ON m.id = t.model_id
	WHERE m.name IN ('feat-base', 'feat-a'))
SELECT b.key LIKE 'fc.%' AS fc, count(*) AS tensors, count(*) FILTER (WHERE b.data = a.data) AS equal
FROM t b JOIN t a USING (key)
WHERE b.name = 'feat-base' AND a.name = 'feat-a'
GROUP BY 1 ORDER BY 1;
SELECT count(*) AS tensors FROM tl_model_tensors t JOIN tl_stored_models m ON m.id = t.model_id
WHERE m.name = 'feat-a';

-- Deterministic: the same seed gives the same epochs and weights; another
-- seed (another fc initialisation and shuffles) gives another fc.
SELECT count(*) AS epoch_rows,
	   count(*) FILTER (WHERE a.loss = b.loss AND a.acc = b.acc AND a.lr = b.lr) AS equal
FROM tl_run_epochs a JOIN tl_run_epochs b USING (epoch, phase)
WHERE a.run = :run_a AND b.run = :run_b;
WITH t AS (
	SELECT m.name, t.key, t.data
	FROM tl_model_tensors t JOIN tl_stored_models m ON m.id = t.model_id
	WHERE m.name IN ('feat-a', 'feat-b', 'feat-c') AND t.key LIKE 'fc.%')
SELECT a.key, a.data = b.data AS same_seed_equal, a.data = c.data AS other_seed_equal
FROM t a JOIN t b USING (key) JOIN t c USING (key)
WHERE a.name = 'feat-a' AND b.name = 'feat-b' AND c.name = 'feat-c'
ORDER BY a.key;

-- Val metrics are the full network's in eval mode: the run's best val
-- accuracy is what tl_evaluate measures on the stored (best) model.
SELECT (tl_evaluate('feat-a', 'featset', 'val')->>'accuracy')::float8 = r.best_val_acc AS val_acc_matches,
	   abs((tl_evaluate('feat-a', 'featset', 'val')->>'loss')::float8 - e.loss) < 1e-5 AS val_loss_matches
FROM tl_runs r JOIN tl_run_epochs e ON e.run = r.id AND e.epoch = r.best_epoch AND e.phase = 'val'
WHERE r.id = :run_a;

-- The same without cache_features: the val images' eval crops are made once
-- while the worker loads them (src/pg/train/images.c) and every epoch
-- normalises those; its val metrics are still tl_evaluate's, which decodes
-- and transforms each image itself.
SET client_min_messages = warning;
SELECT tl_train('feature_extractor', 'featset', base_model => 'feat-base', image_size => 32, batch_size => 3,
				epochs => 2, seed => 11, model_name => 'feat-u', wait => true) AS run_u \gset
RESET client_min_messages;
SELECT (tl_evaluate('feat-u', 'featset', 'val')->>'accuracy')::float8 = r.best_val_acc AS val_acc_matches,
	   abs((tl_evaluate('feat-u', 'featset', 'val')->>'loss')::float8 - e.loss) < 1e-5 AS val_loss_matches
FROM tl_runs r JOIN tl_run_epochs e ON e.run = r.id AND e.epoch = r.best_epoch AND e.phase = 'val'
WHERE r.id = :run_u;

-- Leave the database as the other tests expect it.
DELETE FROM tl_runs WHERE id IN (:base_run, :run_a, :run_b, :run_c, :run_u);
DELETE FROM tl_stored_models WHERE name LIKE 'feat-%';
DELETE FROM tl_images WHERE dataset = 'featset';
SELECT setval('tl_images_id_seq', :images_seq, :'images_seq_called') IS NOT NULL AS images_seq_restored,
	   setval('tl_stored_models_id_seq', :models_seq, :'models_seq_called') IS NOT NULL AS models_seq_restored;
