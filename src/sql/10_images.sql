
-- ---------------------------------------------------------------------------
-- Images: the datasets models are trained and evaluated on (docs/datasets.md).
-- ---------------------------------------------------------------------------

CREATE TABLE @extschema@.tl_images
(
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	dataset		text NOT NULL CONSTRAINT tl_images_dataset_check CHECK (dataset <> ''),
	split		text NOT NULL CONSTRAINT tl_images_split_check CHECK (split IN ('train', 'val', 'test')),
	label		text NOT NULL CONSTRAINT tl_images_label_check CHECK (label <> ''),
	name		text NOT NULL CONSTRAINT tl_images_name_check CHECK (name <> ''),
	img			bytea NOT NULL CONSTRAINT tl_images_img_check CHECK (octet_length(img) > 0),
	added_at	timestamptz NOT NULL DEFAULT now(),
	-- Its index leads with (dataset, split), so it also serves the training
	-- and evaluation scans of one split; a separate index would only cost.
	CONSTRAINT tl_images_key UNIQUE (dataset, split, label, name)
)
-- Rows are small (img is stored out of line) and each costs a network pass
-- to predict, while a parallel scan hands out whole pages: at ~70 rows a
-- page a 150-row split sits on 3 pages and 2 workers plus the leader get
-- very unequal shares.  ~7 rows a page balances them; the heap costs ~1 kB
-- a row, next to images of ~100 kB.
WITH (fillfactor = 10);
COMMENT ON TABLE @extschema@.tl_images IS
	'Images by dataset, split (train, val, test) and class label; name is the source file name.';

-- User data: pg_dump keeps the rows and the identity sequence's position.
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tl_images', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('@extschema@.tl_images', 'id'), '');

-- security_invoker: the caller's privileges and row-level security policies
-- on tl_images apply, so the summary never shows rows the caller can't read.
CREATE VIEW @extschema@.tl_datasets WITH (security_invoker = true) AS
	SELECT dataset, split, label, pg_catalog.count(*) AS images
	FROM @extschema@.tl_images
	GROUP BY dataset, split, label;
COMMENT ON VIEW @extschema@.tl_datasets IS
	'Number of images per dataset, split and class label.';

CREATE FUNCTION @extschema@.tl_image_info(img bytea,
	OUT format text, OUT width integer, OUT height integer)
RETURNS record
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'tl_image_info';
COMMENT ON FUNCTION @extschema@.tl_image_info(bytea) IS
	'Format, width and height from an image''s header; errors for anything but JPEG and PNG.';

-- Not STRICT: a NULL argument is a mistake worth an error, not an empty result.
-- EXECUTE stays public; the function itself requires superuser or
-- pg_read_server_files, like COPY FROM a file.
CREATE FUNCTION @extschema@.tl_import_folder(dataset text, path text,
	OUT split text, OUT label text,
	OUT imported bigint, OUT existing bigint, OUT skipped bigint)
RETURNS SETOF record
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'tl_import_folder';
COMMENT ON FUNCTION @extschema@.tl_import_folder(text, text) IS
	'Import <path>/<split>/<class>/<file> images (server-side files) into tl_images.';
