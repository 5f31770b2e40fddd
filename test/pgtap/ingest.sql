-- tl_import_folder: messages that name machine-specific paths, path
-- normalisation, and the caller's privileges and row-level security applying
-- to the import and to tl_datasets.  sql/images.sql covers the rest.
\getenv images TL_TEST_IMAGES
\set QUIET on
SET client_min_messages = warning;	-- the import's skip notices are tested in sql/images.sql

BEGIN;
SELECT plan(13);

SELECT throws_ok(
	format('SELECT * FROM tl_import_folder(%L, %L)', 'x', :'images' || '/train'),
	'58P01', format('no split directories in "%s/train"', :'images'),
	'a directory without train/val/test is rejected, naming it');
SELECT throws_ok(
	format('SELECT * FROM tl_import_folder(%L, %L)', 'x', :'images' || '/LICENSE.txt'),
	'42809', format('"%s/LICENSE.txt" is not a directory', :'images'),
	'a file is rejected, naming it');
SELECT throws_ok(
	format('SELECT * FROM tl_import_folder(%L, %L)', 'x', :'images' || '/missing'),
	'58P01', format('directory "%s/missing" does not exist', :'images'),
	'a missing directory is rejected, naming it');

-- Trailing slashes and "." / ".." components name the same tree.
SELECT is(
	(SELECT sum(imported) FROM tl_import_folder('tap_paths', :'images' || '/train/../')),
	10::numeric, 'a non-canonical path imports the tree');
SELECT is(
	(SELECT sum(existing) FROM tl_import_folder('tap_paths', :'images' || '/./')),
	10::numeric, 'and the canonical one finds the same rows');

-- The import runs as the caller: it needs INSERT on tl_images ...
CREATE ROLE tap_tl_reader IN ROLE pg_read_server_files;
GRANT SELECT ON tl_images, tl_datasets TO tap_tl_reader;
SET LOCAL ROLE tap_tl_reader;
SELECT throws_ok(
	format('SELECT * FROM tl_import_folder(%L, %L)', 'x', :'images'),
	'42501', 'permission denied for table tl_images',
	'reading server files is not enough: INSERT on tl_images is needed too');
RESET ROLE;

-- ... and row-level security on tl_images applies to it and to tl_datasets.
GRANT INSERT ON tl_images TO tap_tl_reader;
ALTER TABLE tl_images ENABLE ROW LEVEL SECURITY;
CREATE POLICY tap_own ON tl_images TO tap_tl_reader
	USING (dataset LIKE 'tap_own%') WITH CHECK (dataset LIKE 'tap_own%');
SET LOCAL ROLE tap_tl_reader;
SELECT throws_ok(
	format('SELECT * FROM tl_import_folder(%L, %L)', 'tap_other', :'images'),
	'42501', 'new row violates row-level security policy for table "tl_images"',
	'a policy''s WITH CHECK stops the import');
SELECT is(
	(SELECT sum(imported) FROM tl_import_folder('tap_own', :'images')),
	10::numeric, 'a dataset the policy allows is imported');
SELECT results_eq(
	'SELECT DISTINCT dataset FROM tl_datasets',
	ARRAY['tap_own'],
	'tl_datasets shows only the rows the policy lets the caller see');
SELECT is((SELECT count(*) FROM tl_images), 10::bigint,
	'tl_images likewise');
RESET ROLE;
SELECT results_eq(
	'SELECT dataset FROM tl_datasets GROUP BY dataset ORDER BY dataset',
	ARRAY['tap_own', 'tap_paths'],
	'the table owner sees every dataset');

-- Re-importing under the policy is idempotent too.
SET LOCAL ROLE tap_tl_reader;
SELECT is(
	(SELECT sum(existing) FROM tl_import_folder('tap_own', :'images')),
	10::numeric, 're-import under the policy imports nothing new');
RESET ROLE;
SELECT is(
	(SELECT count(*) FROM tl_images WHERE dataset = 'tap_own'), 10::bigint,
	'no duplicates after the re-import');

SELECT * FROM finish();
ROLLBACK;
