-- Training: the SQL objects' declarations (volatility, strictness,
-- search_path, no SECURITY DEFINER, row-level security, pg_dump marks) and
-- the SQLSTATE of every check tl_train, tl_wait, tl_cancel and tl_resume make
-- before a worker starts.  sql/train.sql runs real trainings; this file
-- starts no worker (it runs in one transaction that is rolled back).
\getenv images TL_TEST_IMAGES
\set QUIET on
SET client_min_messages = warning;

BEGIN;
SELECT plan(43);

-- ---- objects
SELECT has_table('tl_runs');
SELECT has_table('tl_run_epochs');
SELECT has_table('tl_run_progress');
SELECT has_table('tl_run_checkpoints');
SELECT has_table('tl_run_checkpoint_tensors');
SELECT has_view('tl_progress');
SELECT has_function('tl_train', ARRAY['text', 'text', 'integer', 'integer', 'double precision',
	'double precision', 'integer', 'double precision', 'text', 'boolean', 'text', 'bigint', 'integer',
	'boolean', 'integer', 'boolean', 'text', 'text', 'text', 'double precision']);
SELECT function_returns('tl_train', 'bigint');
SELECT function_returns('tl_wait', ARRAY['bigint', 'interval'], 'text');
SELECT function_returns('tl_cancel', ARRAY['bigint'], 'boolean');
SELECT function_returns('tl_resume', ARRAY['bigint', 'boolean'], 'bigint');
SELECT function_returns('tl_plot', ARRAY['bigint'], 'text');
SELECT volatility_is('tl_train', 'volatile');
SELECT volatility_is('tl_wait', ARRAY['bigint', 'interval'], 'volatile');
SELECT volatility_is('tl_plot', ARRAY['bigint'], 'stable');
SELECT is_strict('tl_cancel', ARRAY['bigint']);
SELECT isnt_strict('tl_train');

SELECT is(
	(SELECT array_agg(p.proname ORDER BY p.proname) FROM pg_proc p
	 WHERE p.proname IN ('tl_wait', 'tl_cancel', 'tl_resume', 'tl_run_status', 'tl_plot')
	   AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)),
	NULL, 'every training function but tl_train sets search_path = pg_catalog, pg_temp (tl_train sets it in C)');
SELECT is(
	(SELECT count(*)::int FROM pg_proc p
	 WHERE p.proname IN ('tl_train', 'tl_wait', 'tl_cancel', 'tl_resume', 'tl_run_status', 'tl_plot')
	   AND (p.prosecdef OR p.proparallel <> 'u')),
	0, 'none is SECURITY DEFINER or marked parallel safe');
SELECT is(
	(SELECT array_agg(c.relname::text ORDER BY c.relname) FROM pg_class c
	 WHERE c.relname IN ('tl_runs', 'tl_run_epochs', 'tl_run_progress', 'tl_run_checkpoints',
						 'tl_run_checkpoint_tensors') AND c.relrowsecurity),
	ARRAY['tl_run_checkpoint_tensors', 'tl_run_checkpoints', 'tl_run_epochs', 'tl_run_progress', 'tl_runs'],
	'row-level security is enabled on every run table');
SELECT ok(
	(SELECT 'security_invoker=true' = ANY (c.reloptions) FROM pg_class c WHERE c.relname = 'tl_progress'),
	'tl_progress reads with the reader''s rights (security_invoker)');
SELECT is(
	(SELECT array_agg(c.relname::text ORDER BY c.relname)
	 FROM pg_extension e, unnest(e.extconfig) AS x(oid) JOIN pg_class c ON c.oid = x.oid
	 WHERE e.extname = 'transfer' AND c.relname LIKE 'tl_run%'),
	ARRAY['tl_run_checkpoint_tensors', 'tl_run_checkpoints', 'tl_run_epochs', 'tl_runs', 'tl_runs_id_seq'],
	'runs, epochs, the run id sequence and the resume checkpoints are kept by pg_dump');
SELECT is(
	(SELECT count(*)::int FROM pg_policies WHERE tablename = 'tl_runs'),
	4, 'tl_runs has its read, insert, update and delete policies');

-- ---- checks before a worker starts
SELECT ok(count(*) > 0, 'the test images are imported') FROM tl_import_folder('tap_train', :'images');
INSERT INTO tl_images (dataset, split, label, name, img)
	SELECT 'tap_oneclass', split, 'ants', label || name, img FROM tl_images WHERE dataset = 'tap_train';
INSERT INTO tl_images (dataset, split, label, name, img)
	SELECT 'tap_noval', split, label, name, img FROM tl_images WHERE dataset = 'tap_train' AND split = 'train';
INSERT INTO tl_images (dataset, split, label, name, img)
	SELECT 'tap_extraval', split, CASE WHEN split = 'val' THEN 'wasps' ELSE label END, name, img
	FROM tl_images WHERE dataset = 'tap_train';

SELECT throws_ok($$SELECT tl_train('finetuning', 'tap_train')$$, '22023',
	'unknown training mode "finetuning"', 'unknown mode: 22023');
SELECT throws_ok($$SELECT tl_train('finetune', NULL)$$, '22004', NULL, 'null dataset: 22004');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_none', from_scratch => true)$$, '42704',
	'dataset "tap_none" does not exist', 'unknown dataset: 42704');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_oneclass', from_scratch => true)$$, '22023', NULL,
	'one class: 22023');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_noval', from_scratch => true)$$, '22023',
	'dataset "tap_noval" has no images in split "val"', 'no val split: 22023');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_extraval', from_scratch => true)$$, '22023', NULL,
	'val classes missing from train: 22023');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_train', from_scratch => true, epochs => -3)$$, '22023',
	'epochs must be positive, not -3', 'non-positive epochs: 22023');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_train', from_scratch => true, batch_size => 0)$$, '22023',
	'batch_size must be positive, not 0', 'non-positive batch size: 22023');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_train', from_scratch => true, lr => -1)$$, '22023',
	'lr must be a positive number, not -1', 'non-positive lr: 22023');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_train')$$, '42704',
	'base model "resnet18-imagenet" does not exist', 'no pretrained base model: 42704');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_train', from_scratch => true, image_size => 32)$$, '22023',
	NULL, 'a last train batch of one image at 32 px: 22023');
SET LOCAL transfer.train_memory_limit = '8MB';
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_train', from_scratch => true, batch_size => 3)$$, '54000',
	NULL, 'over transfer.train_memory_limit: 54000');
RESET transfer.train_memory_limit;
SELECT throws_ok($$SELECT tl_wait(-7)$$, '42704', 'training run -7 does not exist', 'unknown run: 42704');
SELECT throws_ok($$SELECT tl_cancel(-7)$$, '42704', NULL, 'cancel of an unknown run: 42704');
SELECT throws_ok($$SELECT tl_resume(-7)$$, '42704', NULL, 'resume of an unknown run: 42704');
SELECT throws_ok($$SELECT tl_plot(-7)$$, '42704', NULL, 'plot of an unknown run: 42704');

-- A run row of this transaction (no worker is started for it here).
INSERT INTO tl_runs (id, dataset, mode, args, status) VALUES (-1, 'tap_train', 'finetune', '{"epochs": 1}', 'succeeded');
SELECT throws_ok($$SELECT tl_resume(-1)$$, '55000', 'training run -1 cannot be resumed: its status is succeeded',
	'only interrupted runs resume: 55000');
SELECT is(tl_cancel(-1), false, 'an ended run has nothing to cancel');

CREATE ROLE tap_train_nologin NOLOGIN;
GRANT SELECT ON tl_images TO tap_train_nologin;
SET LOCAL ROLE tap_train_nologin;
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_train', from_scratch => true, batch_size => 3)$$, '42501',
	NULL, 'a role without LOGIN can''t have a worker: 42501');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
