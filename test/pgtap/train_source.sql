-- Training and evaluating on a table or view of the caller (issue 15,
-- docs/training.md "Training from your own table"): the declarations and
-- every bad input tl_train and tl_evaluate refuse, with its SQLSTATE, and
-- that no run was started.  Real trainings are in test/t/train_source.sh.
-- One transaction, rolled back; no worker starts.
\getenv images TL_TEST_IMAGES
\set QUIET on
SET client_min_messages = warning;

BEGIN;
SELECT plan(27);

SELECT has_function('tl_train', ARRAY['text', 'text', 'integer', 'integer', 'double precision',
	'double precision', 'integer', 'double precision', 'text', 'boolean', 'text', 'bigint', 'integer',
	'boolean', 'integer', 'boolean', 'text', 'text', 'text', 'double precision'],
	'tl_train takes image_column, label_column, split_column and val_fraction');
SELECT has_function('tl_evaluate', ARRAY['text', 'text', 'text', 'text', 'text'],
	'tl_evaluate takes image_column and label_column');

SELECT ok(count(*) > 0, 'the test images are imported') FROM tl_import_folder('tap_src', :'images');

-- photos: 3 classes, no split column, label in "category"; plus bad rows
CREATE TABLE tap_photos (id serial PRIMARY KEY, photo bytea, category text, note text);
INSERT INTO tap_photos (photo, category) SELECT img, label FROM tl_images WHERE dataset = 'tap_src';
INSERT INTO tap_photos (photo, category) SELECT img, 'wasps' FROM tl_images WHERE dataset = 'tap_src' AND label = 'bees';
INSERT INTO tap_photos (photo, category) VALUES (NULL, 'ants'), ('\x00010203', 'bees');
CREATE TABLE tap_oneclass (img bytea, label text);
INSERT INTO tap_oneclass SELECT img, 'ants' FROM tl_images WHERE dataset = 'tap_src';
CREATE TABLE tap_split (img bytea, class integer, split text, kind integer, two bytea);
INSERT INTO tap_split SELECT img, length(label), 'val', 1, img FROM tl_images WHERE dataset = 'tap_src';
CREATE TABLE tap_tiny (img bytea, label text);
INSERT INTO tap_tiny SELECT img, label FROM tl_images WHERE dataset = 'tap_src' AND split = 'train' LIMIT 2;
CREATE TABLE tap_nothing (img text, label text);

CREATE TEMP TABLE runs_before AS SELECT count(*) AS n FROM tl_runs;

-- ---- missing columns: 42703
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_photos', from_scratch => true)$$, '42703',
	'relation public.tap_photos has no column "label" or "class"',
	'no label column and no "label" or "class": 42703');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_photos', label_column => 'nope', from_scratch => true)$$,
	'42703', NULL, 'a label_column that does not exist: 42703');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_photos', label_column => 'category', image_column => 'nope', from_scratch => true)$$,
	'42703', NULL, 'an image_column that does not exist: 42703');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_photos', label_column => 'category', split_column => 'nope', from_scratch => true)$$,
	'42703', NULL, 'a split_column that does not exist: 42703');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_nothing', from_scratch => true)$$, '42703',
	'relation public.tap_nothing has no bytea column', 'no bytea column: 42703');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_split', from_scratch => true)$$, '42702',
	NULL, 'two bytea columns and no image_column: 42702');

-- ---- wrong types: 42804
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_photos', label_column => 'photo', from_scratch => true)$$,
	'42804', NULL, 'a bytea label column: 42804');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_photos', label_column => 'category', image_column => 'note', from_scratch => true)$$,
	'42804', NULL, 'a text image column: 42804');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_split', image_column => 'img', split_column => 'kind', from_scratch => true)$$,
	'42804', NULL, 'an integer split column: 42804');

-- ---- classes and parts: 22023
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_oneclass', from_scratch => true)$$, '22023',
	'relation public.tap_oneclass has only 1 class in its train part', 'fewer than 2 classes: 22023');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_split', image_column => 'img', from_scratch => true)$$, '22023',
	'relation public.tap_split has no usable rows in the train part', 'a split column without train rows: 22023');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_tiny', from_scratch => true, val_fraction => 0.1)$$, '22023',
	'relation public.tap_tiny has no usable rows in the val part', 'a val_fraction that leaves no val row: 22023');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_tiny', from_scratch => true, val_fraction => 1)$$, '22023',
	NULL, 'val_fraction 1: 22023');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_tiny', from_scratch => true, val_fraction => NULL)$$, '22004',
	NULL, 'val_fraction NULL: 22004');

-- ---- names
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_src', label_column => 'label', from_scratch => true)$$, '22023',
	'image_column, label_column and split_column apply only to a table or view',
	'a tl_images dataset takes precedence; column arguments are refused');
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_no_such_table', label_column => 'x', from_scratch => true)$$, '42P01',
	NULL, 'column arguments with no such relation: 42P01');
SELECT throws_ok($$SELECT tl_train('finetune', 'tl_images_pkey', from_scratch => true)$$, '42809',
	NULL, 'an index is not a table or view: 42809');

-- ---- privileges: 42501 for a role that can't SELECT the table
CREATE ROLE tap_src_nopriv LOGIN;
GRANT USAGE ON SCHEMA public TO tap_src_nopriv;
SET ROLE tap_src_nopriv;
SELECT throws_ok($$SELECT tl_train('finetune', 'public.tap_photos', label_column => 'category', from_scratch => true)$$,
	'42501', 'permission denied for relation public.tap_photos', 'no SELECT privilege: 42501');
SELECT throws_ok($$SELECT tl_evaluate('any', 'public.tap_photos', label_column => 'category')$$,
	'42501', NULL, 'tl_evaluate without SELECT privilege: 42501');
RESET ROLE;
GRANT SELECT (category) ON tap_photos TO tap_src_nopriv;
SET ROLE tap_src_nopriv;
SELECT throws_ok($$SELECT tl_train('finetune', 'tap_photos', label_column => 'category', from_scratch => true)$$,
	'42501', NULL, 'SELECT on the label column only is not enough: 42501');
RESET ROLE;

-- ---- tl_evaluate's own checks
SELECT throws_ok($$SELECT tl_evaluate('any', 'tap_photos', label_column => 'nope')$$, '42703', NULL,
	'tl_evaluate: a label_column that does not exist: 42703');
SELECT throws_ok($$SELECT tl_evaluate('any', 'tap_photos', image_column => 'note', label_column => 'category')$$,
	'42804', NULL, 'tl_evaluate: a text image column: 42804');
SELECT is(tl_evaluate('any', 'tap_photos', NULL), NULL, 'tl_evaluate with a NULL split is NULL (as when STRICT)');

SELECT is((SELECT count(*) FROM tl_runs), (SELECT n FROM runs_before), 'no refused call started a run');

SELECT * FROM finish();
ROLLBACK;
