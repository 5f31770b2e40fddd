-- tl_preview: a JPEG grid of n images as the tutorial's transforms show them,
-- with their labels in grid order (docs/images.md).
--
-- TL_TEST_IMAGES is the small hymenoptera tree scripts/test.sh prepares
-- (5 train and 5 val JPEGs, plus entries the import skips).
\getenv images TL_TEST_IMAGES
SET client_min_messages = warning;
SELECT split, sum(imported) AS imported
FROM tl_import_folder('preview', :'images') GROUP BY split ORDER BY split;
RESET client_min_messages;

-- Four training images (the default): make_grid's layout is 4 x (224 + 2) + 2
-- by 224 + 4 pixels; the labels are the images' classes.
SELECT (tl_image_info(jpeg)).*, cardinality(labels) AS n,
	   labels <@ ARRAY['ants', 'bees'] AS known_labels
FROM tl_preview('preview', seed => 1);

-- A seed reproduces a preview; other seeds pick other images and crops.
SELECT a.jpeg = b.jpeg AND a.labels = b.labels AS same_seed_same_preview
FROM tl_preview('preview', seed => 7) a, tl_preview('preview', seed => 7) b;
SELECT count(DISTINCT md5(jpeg)) AS distinct_previews
FROM generate_series(1, 5) s, LATERAL tl_preview('preview', seed => s);

-- Asking for more than the split holds shows each image once (make_grid:
-- up to 8 in a row).
SELECT (tl_image_info(jpeg)).*, array(SELECT unnest(labels) ORDER BY 1) AS labels
FROM tl_preview('preview', 'train', 64, 3);

-- val gets the eval transform (Resize + CenterCrop): with every image shown,
-- the picture only depends on the order, which the seed decides.
SELECT a.jpeg = b.jpeg AS eval_is_deterministic
FROM tl_preview('preview', 'val', 5, 11) a, tl_preview('preview', 'val', 5, 11) b;
SELECT (tl_image_info(jpeg)).* FROM tl_preview('preview', 'val', 1, 5);

-- Without a seed: random, but still a valid preview.
SELECT (tl_image_info(jpeg)).format, cardinality(labels) FROM tl_preview('preview');

-- Errors.
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT * FROM tl_preview('preview', 'train', 0);
SELECT * FROM tl_preview('preview', 'train', 65);
-- terse: the hint lists the database's datasets, which depend on earlier tests
\set VERBOSITY terse
SELECT * FROM tl_preview('nosuch');
\set VERBOSITY default
SELECT * FROM tl_preview('preview', 'test');
SELECT * FROM tl_preview(NULL);
SELECT * FROM tl_preview('preview', NULL);
-- A broken image in the split is named in the error (ids vary: masked).
INSERT INTO tl_images (dataset, split, label, name, img)
VALUES ('preview_broken', 'train', 'ants', 'cut.jpg', '\xffd8ffe000104a464946'::bytea);
DO $$
BEGIN
	PERFORM tl_preview('preview_broken', seed => 1);
EXCEPTION WHEN OTHERS THEN
	RAISE NOTICE '% %', SQLSTATE, regexp_replace(SQLERRM, 'id [0-9]+', 'id N');
END
$$;
\set VERBOSITY terse

-- It reads tl_images as the caller: privileges and row-level security apply.
CREATE ROLE regress_tl_preview;
SET ROLE regress_tl_preview;
SELECT * FROM tl_preview('preview');
RESET ROLE;
GRANT SELECT ON tl_images TO regress_tl_preview;
ALTER TABLE tl_images ENABLE ROW LEVEL SECURITY;
CREATE POLICY regress_only_ants ON tl_images FOR SELECT TO regress_tl_preview
	USING (label = 'ants');
SET ROLE regress_tl_preview;
SELECT labels FROM tl_preview('preview', 'train', 64, 1);
RESET ROLE;
DROP POLICY regress_only_ants ON tl_images;
ALTER TABLE tl_images DISABLE ROW LEVEL SECURITY;
REVOKE ALL ON tl_images FROM regress_tl_preview;
DROP ROLE regress_tl_preview;

DELETE FROM tl_images WHERE dataset IN ('preview', 'preview_broken');
