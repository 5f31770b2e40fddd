-- Images: tl_images, tl_datasets, tl_image_info and tl_import_folder.
--
-- TL_TEST_IMAGES names the tree scripts/test.sh builds (tl_image_subset in
-- scripts/pgcluster.sh): 9 hymenoptera JPEGs, the dataset's GIF, a PNG, and
-- entries that must be skipped.  It comes from the environment so that no
-- machine's path appears in this output.
\getenv images TL_TEST_IMAGES

-- The first import: the GIF, the fake .jpg and the nested directory are
-- skipped with a NOTICE naming them; hidden files are ignored silently.
SELECT * FROM tl_import_folder('mini', :'images');

SELECT * FROM tl_datasets ORDER BY dataset, split, label;

-- Ids follow the sorted walk: train before val, classes and files in byte order.
SELECT id, split, label, name FROM tl_images ORDER BY id;

-- Every stored image is byte-identical to its file.
SELECT count(*) AS images,
	   count(*) FILTER (WHERE md5(img) = md5(pg_read_binary_file(
			:'images' || '/' || split || '/' || label || '/' || name))) AS identical
FROM tl_images;

-- Header facts agree with Pillow (Image.open(f).size) for each file.
SELECT name, (tl_image_info(img)).* FROM tl_images ORDER BY id;

-- Running it again imports nothing new and keeps the rows (and ids) as they were.
SELECT * FROM tl_import_folder('mini', :'images');
SELECT count(*), min(id), max(id) FROM tl_images;

-- The same tree under another dataset name is a separate dataset.
SELECT split, label, imported FROM tl_import_folder('mini2', :'images') WHERE split = 'val';
SELECT dataset, sum(images) FROM tl_datasets GROUP BY dataset ORDER BY dataset;
DELETE FROM tl_images WHERE dataset = 'mini2';

-- tl_image_info rejects anything but a JPEG or PNG header, with a SQLSTATE.
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT tl_image_info('\x474946383961010001000000'::bytea);
SELECT tl_image_info(NULL) IS NULL AS strict;
\set VERBOSITY sqlstate
SELECT tl_image_info('\x474946383961010001000000'::bytea);
SELECT tl_image_info(convert_to('hello', 'UTF8'));
SELECT tl_image_info(''::bytea);
-- a JPEG cut off inside its header
SELECT tl_image_info('\xffd8ffe000104a464946'::bytea);
\set VERBOSITY default

-- The table keeps itself sane.
\set VERBOSITY terse
INSERT INTO tl_images (dataset, split, label, name, img) VALUES ('d', 'dev', 'a', 'x.jpg', '\x01');
INSERT INTO tl_images (dataset, split, label, name, img) VALUES ('', 'train', 'a', 'x.jpg', '\x01');
INSERT INTO tl_images (dataset, split, label, name, img) VALUES ('d', 'train', '', 'x.jpg', '\x01');
INSERT INTO tl_images (dataset, split, label, name, img) VALUES ('d', 'train', 'a', '', '\x01');
INSERT INTO tl_images (dataset, split, label, name, img) VALUES ('d', 'train', 'a', 'x.jpg', '');
INSERT INTO tl_images (dataset, split, label, name, img)
	SELECT dataset, split, label, name, img FROM tl_images WHERE id = 1;
INSERT INTO tl_images (id, dataset, split, label, name, img) VALUES (1000, 'd', 'train', 'a', 'x.jpg', '\x01');
\set VERBOSITY default

-- Bad arguments and paths.  Paths that differ between machines are only
-- checked by SQLSTATE here (their messages are checked in test/pgtap/ingest.sql).
SELECT * FROM tl_import_folder('', :'images');
SELECT * FROM tl_import_folder(NULL, :'images');
SELECT * FROM tl_import_folder('mini', NULL);
SELECT * FROM tl_import_folder('mini', 'relative/images');
SELECT * FROM tl_import_folder('mini', '/nonexistent/transfer-images');
SELECT * FROM tl_import_folder('mini', '/dev/null');
\set VERBOSITY sqlstate
-- a directory without split directories (its entries are reported as ignored)
SET client_min_messages = warning;
SELECT * FROM tl_import_folder('mini', :'images' || '/train');
RESET client_min_messages;
-- a file
SELECT * FROM tl_import_folder('mini', :'images' || '/LICENSE.txt');
\set VERBOSITY default

-- Files larger than transfer.max_image_file_size are skipped with a warning.
SET transfer.max_image_file_size = '100kB';
SELECT * FROM tl_import_folder('small', :'images');
RESET transfer.max_image_file_size;
SELECT count(*) AS images, max(octet_length(img)) <= 100 * 1024 AS all_small
FROM tl_images WHERE dataset = 'small';
DELETE FROM tl_images WHERE dataset = 'small';

-- Only superusers and members of pg_read_server_files may read server files.
CREATE ROLE regress_tl_plain;
CREATE ROLE regress_tl_reader IN ROLE pg_read_server_files;
GRANT SELECT, INSERT ON tl_images TO regress_tl_plain, regress_tl_reader;
GRANT SELECT ON tl_datasets TO regress_tl_plain, regress_tl_reader;
SET ROLE regress_tl_plain;
SELECT * FROM tl_import_folder('by_plain', :'images');
-- even a bad path gives the permission error first, revealing nothing
SELECT * FROM tl_import_folder('by_plain', '/nonexistent');
RESET ROLE;
SET ROLE regress_tl_reader;
SELECT split, label, imported, existing, skipped
FROM tl_import_folder('by_reader', :'images') WHERE split = 'train';
-- tl_datasets runs with the caller's privileges
SELECT dataset, sum(images) FROM tl_datasets GROUP BY dataset ORDER BY dataset;
RESET ROLE;
REVOKE SELECT ON tl_images FROM regress_tl_plain;
SET ROLE regress_tl_plain;
SELECT * FROM tl_datasets;
RESET ROLE;

DELETE FROM tl_images WHERE dataset = 'by_reader';
REVOKE ALL ON tl_images, tl_datasets FROM regress_tl_plain, regress_tl_reader;
DROP ROLE regress_tl_plain;
DROP ROLE regress_tl_reader;
