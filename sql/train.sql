-- Training runs: tl_train's checks, the run lifecycle (wait, rollback,
-- cancel), what a run stores, privileges and determinism.
--
-- Runs are tiny so the test stays fast: the 5 train + 5 val images of the
-- test subset (TL_TEST_IMAGES, built by scripts/test.sh), image_size 32,
-- from_scratch models of base_width 8.  No loss value appears in this output
-- (they are the engine's numbers); the checks compare runs with each other
-- and with their own invariants instead.
\getenv images TL_TEST_IMAGES
-- The other tests of this database expect the id sequences as they left
-- them: note them here, restore them at the end.
SELECT last_value AS images_seq, is_called AS images_seq_called
FROM tl_images_id_seq \gset
SELECT last_value AS models_seq, is_called AS models_seq_called
FROM tl_stored_models_id_seq \gset
SET client_min_messages = warning;
SELECT count(*) AS classes FROM tl_import_folder('trainset', :'images');
RESET client_min_messages;
SELECT split, label, count(*) FROM tl_images WHERE dataset = 'trainset' GROUP BY 1, 2 ORDER BY 1, 2;

-- Broken variants of it for the checks.
INSERT INTO tl_images (dataset, split, label, name, img)
	SELECT 'oneclass', split, 'ants', label || '-' || name, img FROM tl_images WHERE dataset = 'trainset';
INSERT INTO tl_images (dataset, split, label, name, img)
	SELECT 'noval', split, label, name, img FROM tl_images WHERE dataset = 'trainset' AND split = 'train';
INSERT INTO tl_images (dataset, split, label, name, img)
	SELECT 'notrain', split, label, name, img FROM tl_images WHERE dataset = 'trainset' AND split = 'val';
INSERT INTO tl_images (dataset, split, label, name, img)
	SELECT 'extraval', split, CASE WHEN split = 'val' AND label = 'bees' THEN 'wasps' ELSE label END, name, img
	FROM tl_images WHERE dataset = 'trainset';

-- ---------------------------------------------------------------- checks
-- Every bad request fails before a worker starts, with its own message.
SELECT tl_train('transfer', 'trainset');
SELECT tl_train(NULL, 'trainset');
-- terse: the hint lists the database's datasets, which depend on earlier tests
\set VERBOSITY terse
SELECT tl_train('finetune', 'no such set', from_scratch => true);
\set VERBOSITY default
SELECT tl_train('finetune', 'oneclass', from_scratch => true);
SELECT tl_train('finetune', 'noval', from_scratch => true);
SELECT tl_train('finetune', 'notrain', from_scratch => true);
SELECT tl_train('finetune', 'extraval', from_scratch => true);
SELECT tl_train('finetune', 'trainset', from_scratch => true, epochs => 0);
SELECT tl_train('finetune', 'trainset', from_scratch => true, batch_size => -1);
SELECT tl_train('finetune', 'trainset', from_scratch => true, lr => 0);
SELECT tl_train('finetune', 'trainset', from_scratch => true, lr => 'NaN');
SELECT tl_train('finetune', 'trainset', from_scratch => true, momentum => -0.5);
SELECT tl_train('finetune', 'trainset', from_scratch => true, step_size => 0);
SELECT tl_train('finetune', 'trainset', from_scratch => true, gamma => 0);
SELECT tl_train('finetune', 'trainset', from_scratch => true, image_size => 16);
SELECT tl_train('finetune', 'trainset', from_scratch => true, model_name => '');
SELECT tl_train('finetune', 'trainset', from_scratch => true, base_width => 0);
-- No pretrained model imported: the hint says how to get one.
SELECT tl_train('finetune', 'trainset');
SELECT tl_train('finetune', 'trainset', base_model => 'no such model');
SELECT tl_train('finetune', 'trainset', base_model => 'x', from_scratch => true);
SELECT tl_train('finetune', 'trainset', base_width => 8);
-- 5 train images in batches of 4 leave one image, which BatchNorm can't train on at 32 px.
SELECT tl_train('finetune', 'trainset', from_scratch => true, image_size => 32, batch_size => 4);
-- The memory estimate is checked against transfer.train_memory_limit.
SET transfer.train_memory_limit = '16MB';
SELECT tl_train('finetune', 'trainset', from_scratch => true, image_size => 512);
RESET transfer.train_memory_limit;
-- Waiting needs a snapshot per poll.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT tl_train('finetune', 'trainset', from_scratch => true, image_size => 32, batch_size => 3, wait => true);
ROLLBACK;
-- Nothing was started by any of that.
SELECT count(*) AS runs FROM tl_runs;

-- ---------------------------------------------------------------- a run
-- A from-scratch run, waited for (its NOTICEs carry the engine's numbers).
SET client_min_messages = warning;
SELECT tl_train('finetune', 'trainset', from_scratch => true, base_width => 8, image_size => 32,
				batch_size => 3, epochs => 2, seed => 42, model_name => 'train-base', wait => true) AS base_run \gset
RESET client_min_messages;
SELECT role = current_user AS own, dataset, mode, status, epochs_done, error IS NULL AS no_error,
	   started <= finished AS timed, best_epoch BETWEEN -1 AND 1 AS best_epoch_ok,
	   args->>'from_scratch' AS from_scratch, args->>'seed' AS seed, args->'classes' AS classes,
	   args->>'train_images' AS train_images, args->>'val_images' AS val_images
FROM tl_runs WHERE id = :base_run;
-- One row per epoch phase; accuracy is a fraction of the 5 images.
SELECT epoch, phase, lr, acc * 5 = round(acc * 5) AS acc_counts, loss >= 0 AS loss_ok, seconds >= 0 AS seconds_ok
FROM tl_run_epochs WHERE run = :base_run ORDER BY epoch, phase;
-- The model holds the best epoch's weights and says where it came from.
SELECT m.name, m.num_classes, m.classes, m.image_size, m.base_width,
	   m.source->>'kind' AS kind, (m.source->>'run_id')::bigint = :base_run AS run_recorded,
	   m.source->>'mode' AS mode, m.source->>'from_scratch' AS from_scratch,
	   (m.metrics->>'best_val_acc')::float8 = r.best_val_acc AS metric_recorded
FROM tl_stored_models m JOIN tl_runs r ON r.model_id = m.id WHERE r.id = :base_run;
-- Nothing of the run is left behind but its rows.
SELECT (SELECT count(*) FROM tl_run_checkpoints WHERE run = :base_run) AS checkpoints,
	   (SELECT count(*) FROM tl_run_progress WHERE run = :base_run) AS progress,
	   (SELECT count(*) FROM tl_progress) AS active;
-- A base model that isn't a ResNet-18: a copy of that one without conv1.weight.
WITH m AS (
	INSERT INTO tl_stored_models (name, base_width, num_classes, classes)
	SELECT 'train-broken', base_width, num_classes, classes FROM tl_stored_models WHERE name = 'train-base'
	RETURNING id)
INSERT INTO tl_model_tensors (model_id, key, position, shape, data)
SELECT m.id, t.key, t.position, t.shape, t.data
FROM m, tl_model_tensors t JOIN tl_stored_models b ON b.id = t.model_id
WHERE b.name = 'train-base' AND t.key <> 'conv1.weight';
\set VERBOSITY terse
SELECT tl_train('finetune', 'trainset', base_model => 'train-broken', image_size => 32, batch_size => 3);
\set VERBOSITY default
DELETE FROM tl_stored_models WHERE name = 'train-broken';
-- The same model name again is refused up front.
SELECT tl_train('finetune', 'trainset', from_scratch => true, image_size => 32, batch_size => 3,
				model_name => 'train-base');

-- ---------------------------------------------------------------- modes
-- Starting from that model, in the background, then waiting.  StepLR with
-- step_size 1 and gamma 0.5 halves the lr every epoch.
SELECT tl_train('finetune', 'trainset', base_model => 'train-base', image_size => 32, batch_size => 3,
				epochs => 3, step_size => 1, gamma => 0.5, seed => 1, model_name => 'train-ft') AS ft_run \gset
SELECT tl_train('feature_extractor', 'trainset', base_model => 'train-base', image_size => 32,
				batch_size => 3, epochs => 2, seed => 1, model_name => 'train-fe') AS fe_run \gset
SELECT tl_wait(:ft_run) AS finetune, tl_wait(:fe_run, '5 min') AS feature_extractor;
SELECT run = :ft_run AS finetune, epoch, phase, lr FROM tl_run_epochs
WHERE run IN (:ft_run, :fe_run) ORDER BY run, epoch, phase;
SELECT args->>'base_model' AS base_model, (args->>'base_model_id')::bigint IS NOT NULL AS base_id,
	   args->>'from_scratch' AS from_scratch
FROM tl_runs WHERE id IN (:ft_run, :fe_run) ORDER BY id;
-- Fine-tuning changes the backbone; the feature extractor trains only fc
-- (BatchNorm running statistics still move, as in the tutorial).
WITH t AS (
	SELECT m.name, t.key, md5(t.data) AS h
	FROM tl_model_tensors t JOIN tl_stored_models m ON m.id = t.model_id
	WHERE m.name IN ('train-base', 'train-ft', 'train-fe')
	  AND t.key IN ('conv1.weight', 'layer4.1.conv2.weight', 'fc.weight', 'bn1.running_mean'))
SELECT b.key,
	   b.h <> ft.h AS finetune_changed,
	   b.h <> fe.h AS feature_extractor_changed
FROM t b JOIN t ft USING (key) JOIN t fe USING (key)
WHERE b.name = 'train-base' AND ft.name = 'train-ft' AND fe.name = 'train-fe'
ORDER BY b.key;

-- ---------------------------------------------------------------- determinism
-- Same seed, data and thread count: the same epochs and the same weights.
SET client_min_messages = warning;
SELECT tl_train('finetune', 'trainset', base_model => 'train-base', image_size => 32, batch_size => 3,
				epochs => 3, step_size => 1, gamma => 0.5, seed => 1, model_name => 'train-ft-again',
				wait => true) AS again_run \gset
SELECT count(*) AS phases,
	   count(*) FILTER (WHERE a.loss = b.loss AND a.acc = b.acc AND a.lr = b.lr) AS identical
FROM tl_run_epochs a JOIN tl_run_epochs b USING (epoch, phase)
WHERE a.run = :ft_run AND b.run = :again_run;
SELECT count(*) AS tensors, count(*) FILTER (WHERE a.data = b.data) AS identical
FROM tl_model_tensors a
JOIN tl_model_tensors b USING (key)
WHERE a.model_id = (SELECT model_id FROM tl_runs WHERE id = :ft_run)
  AND b.model_id = (SELECT model_id FROM tl_runs WHERE id = :again_run);
-- Another seed: another run.
SELECT tl_train('finetune', 'trainset', base_model => 'train-base', image_size => 32, batch_size => 3,
				epochs => 3, step_size => 1, gamma => 0.5, seed => 2, model_name => 'train-ft-seed2',
				wait => true) AS seed2_run \gset
RESET client_min_messages;
SELECT count(*) FILTER (WHERE a.loss = b.loss) < count(*) AS differs
FROM tl_run_epochs a JOIN tl_run_epochs b USING (epoch, phase)
WHERE a.run = :ft_run AND b.run = :seed2_run;

-- ---------------------------------------------------------------- rollback
-- A rolled-back tl_train leaves no run and no worker.
BEGIN;
SELECT tl_train('finetune', 'trainset', from_scratch => true, base_width => 8, image_size => 32,
				batch_size => 3, epochs => 2) AS rb_run \gset
SELECT status FROM tl_runs WHERE id = :rb_run;
-- Its worker can't start before the transaction ends, so waiting here is refused.
SELECT tl_wait(:rb_run);
ROLLBACK;
DO $$
BEGIN
	FOR i IN 1..100 LOOP
		EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'transfer training worker');
		PERFORM pg_sleep(0.1);
	END LOOP;
END $$;
SELECT (SELECT count(*) FROM tl_runs WHERE id = :rb_run) AS runs,
	   (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'transfer training worker') AS workers;

-- ---------------------------------------------------------------- cancel
-- A long run, cancelled: it stops, says so, and writes no model.
SELECT tl_train('finetune', 'trainset', from_scratch => true, base_width => 8, image_size => 32,
				batch_size => 3, epochs => 10000, model_name => 'train-cancelled') AS cancel_run \gset
SELECT tl_cancel(:cancel_run) AS signalled;
SELECT tl_wait(:cancel_run, '1 min') AS status;
SELECT status, error, model_id IS NULL AS no_model, finished IS NOT NULL AS finished,
	   (SELECT count(*) FROM tl_stored_models WHERE name = 'train-cancelled') AS models,
	   (SELECT count(*) FROM tl_run_checkpoints WHERE run = :cancel_run) AS checkpoints
FROM tl_runs WHERE id = :cancel_run;
-- Ended runs: nothing to cancel, nothing to resume.
SELECT tl_cancel(:cancel_run) AS signalled;
SELECT tl_resume(:base_run);
SELECT tl_cancel(-1);
SELECT tl_wait(-1);
SELECT tl_run_status(:base_run);

-- ---------------------------------------------------------------- conv_algorithm
-- The caller's transfer.conv_algorithm is recorded in the run (only im2col,
-- the non-default, is written) and its worker computes with it: runs are
-- deterministic, so the same seeded run under each algorithm differs only
-- where float32 rounding differs (which this tiny, badly conditioned network
-- amplifies; test_winograd and test_resnet_parity hold both algorithms to
-- PyTorch's results).
SET client_min_messages = warning;
SELECT tl_train('finetune', 'trainset', from_scratch => true, base_width => 8, image_size => 32,
				batch_size => 3, epochs => 2, seed => 11, model_name => 'train-winograd', wait => true) AS wino_run \gset
SET transfer.conv_algorithm = im2col;
SELECT tl_train('finetune', 'trainset', from_scratch => true, base_width => 8, image_size => 32,
				batch_size => 3, epochs => 2, seed => 11, model_name => 'train-im2col', wait => true) AS im2col_run \gset
SELECT tl_train('finetune', 'trainset', from_scratch => true, base_width => 8, image_size => 32,
				batch_size => 3, epochs => 2, seed => 11, model_name => 'train-im2col-again', wait => true) AS again_run \gset
RESET transfer.conv_algorithm;
RESET client_min_messages;
SELECT args->>'model_name' AS model_name, args->>'conv_algorithm' AS conv_algorithm, status
FROM tl_runs WHERE id IN (:wino_run, :im2col_run, :again_run) ORDER BY id;
SELECT bool_and(i.loss = a.loss) AS im2col_repeats, bool_or(w.loss <> i.loss) AS winograd_differs
FROM tl_run_epochs w JOIN tl_run_epochs i USING (epoch, phase) JOIN tl_run_epochs a USING (epoch, phase)
WHERE w.run = :wino_run AND i.run = :im2col_run AND a.run = :again_run;
SET transfer.conv_algorithm = fft;

-- ---------------------------------------------------------------- tl_plot
SELECT left(svg, 4) AS head, xml_is_well_formed_document(svg) AS well_formed,
	   (length(svg) - length(replace(svg, '<polyline', ''))) / length('<polyline') AS lines,
	   svg LIKE '%>loss<%' AND svg LIKE '%>accuracy<%' AND svg LIKE '%>train<%' AND svg LIKE '%>val<%' AS labelled
FROM (SELECT tl_plot(:ft_run) AS svg) s;
SELECT tl_plot(:cancel_run) LIKE '%<svg%' AS plots_partial_runs;
-- Epoch rows are user data (a role may edit its own): a forged last epoch
-- still gives at most 11 ticks per axis, not one per epoch.
INSERT INTO tl_run_epochs (run, epoch, phase, loss, acc, lr, seconds)
VALUES (:cancel_run, 2147483647, 'train', 1, 0.5, 0.001, 1);
SELECT xml_is_well_formed_document(svg) AS well_formed, length(svg) < 20000 AS small
FROM (SELECT tl_plot(:cancel_run) AS svg) s;
DELETE FROM tl_run_epochs WHERE run = :cancel_run AND epoch = 2147483647;

-- ---------------------------------------------------------------- privileges
-- A role trains as itself: it sees only its runs (or those of roles it has
-- the privileges of), and its worker reads only the images it may read.
CREATE ROLE train_alice LOGIN;
CREATE ROLE train_bob LOGIN;
CREATE ROLE train_nologin NOLOGIN;
GRANT SELECT ON tl_images TO train_alice, train_nologin;
GRANT SELECT, INSERT ON tl_stored_models, tl_model_tensors TO train_alice;
-- Row-level security hides one train image of 'trainset' from train_alice.
CREATE TABLE train_hidden AS
	SELECT id FROM tl_images WHERE dataset = 'trainset' AND split = 'train' AND label = 'ants'
	ORDER BY name LIMIT 1;
GRANT SELECT ON train_hidden TO train_alice;
ALTER TABLE tl_images ENABLE ROW LEVEL SECURITY;
CREATE POLICY train_alice_sees ON tl_images FOR SELECT TO train_alice
	USING (id NOT IN (SELECT id FROM train_hidden));
SET ROLE train_alice;
SELECT count(*) AS visible_runs FROM tl_runs;
SELECT tl_cancel(:base_run);
SELECT tl_plot(:base_run);
SET client_min_messages = warning;
SELECT tl_train('finetune', 'trainset', from_scratch => true, base_width => 8, image_size => 32,
				batch_size => 2, epochs => 1, seed => 3, model_name => 'train-alice', wait => true) AS alice_run \gset
RESET client_min_messages;
SELECT role, status, args->>'train_images' AS train_images, args->>'val_images' AS val_images
FROM tl_runs;
RESET ROLE;
SELECT role = current_user AS superuser, args->>'train_images' AS train_images
FROM tl_runs WHERE id IN (:base_run, :alice_run) ORDER BY id;
SET ROLE train_bob;
SELECT count(*) AS visible_runs FROM tl_runs;
RESET ROLE;
GRANT train_alice TO train_bob;
SET ROLE train_bob;
SELECT role FROM tl_runs;
RESET ROLE;
-- A role that can't log in can't have a worker.
SET ROLE train_nologin;
SELECT tl_train('finetune', 'trainset', from_scratch => true, image_size => 32, batch_size => 3);
RESET ROLE;
DROP POLICY train_alice_sees ON tl_images;
ALTER TABLE tl_images DISABLE ROW LEVEL SECURITY;
DROP TABLE train_hidden;

-- ---------------------------------------------------------------- summary
SELECT status, count(*) FROM tl_runs GROUP BY status ORDER BY status;
REVOKE ALL ON tl_images FROM train_alice, train_nologin;
REVOKE ALL ON tl_stored_models, tl_model_tensors FROM train_alice;
DROP ROLE train_alice, train_bob, train_nologin;
-- Leave the database as the other tests expect it.
DELETE FROM tl_runs;
DELETE FROM tl_stored_models WHERE name LIKE 'train-%';
DELETE FROM tl_images WHERE dataset IN ('trainset', 'oneclass', 'noval', 'notrain', 'extraval');
SELECT setval('tl_images_id_seq', :images_seq, :'images_seq_called') IS NOT NULL AS images_seq_restored,
	   setval('tl_stored_models_id_seq', :models_seq, :'models_seq_called') IS NOT NULL AS models_seq_restored;
