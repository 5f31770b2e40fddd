#!/usr/bin/env bash
# tl_embed with PyTorch as the oracle, and ImageNet class names end to end:
# a full-size ResNet-18 with seeded random weights (1000 classes, written by
# torch: test/scripts/embed_torch.py) imported without class names;
# tl_embed on hymenoptera photos and committed fixtures equals torchvision's
# backbone (fc = Identity, eval mode, Resize(256), CenterCrop(224),
# Normalize) within the tolerance below; tl_predict answers torchvision's
# ImageNet category names.  Also: tl_embed's declaration, the deployed-model
# default, NULL input, errors, nearest-neighbour search in SQL.
# Skips when torch is not installed.  Prints TAP.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
. test/t/tap.bash

tap_require_torch

# Largest |tl_embed - torch| relative to the largest |torch| value of the
# image (measured: 4e-7).  The whole predict path is within 1e-5 of torch
# (test/pgtap/predict.sql).
TOL=1e-5

db=tl_embed_torch
q() { tl_psql -X -At -d $db "$@"; }

echo "1..15"
work=$TL_REPO/build/test-data/embed-torch
rm -rf "$work" && mkdir -p "$work/img"
src=$TL_HYMENOPTERA/val
for f in $(ls "$src/bees" | LC_ALL=C sort | head -n 3); do cp "$src/bees/$f" "$work/img/bees_$f"; done
for f in $(ls "$src/ants" | LC_ALL=C sort | head -n 2); do cp "$src/ants/$f" "$work/img/ants_$f"; done
cp test/fixtures/image/synth_rgb.png test/fixtures/image/synth_rgb420.jpg "$work/img/"
$PY test/scripts/embed_torch.py "$work" "$work"/img/* && chmod -R a+rX "$work"
ok $? "torch wrote a 1000-class ResNet-18 and its backbone features of 7 images"

dropdb --if-exists $db 2>/dev/null
createdb $db && q -c 'CREATE EXTENSION transfer' >/dev/null &&
	q -v w="$work" >/dev/null <<'SQL'
SELECT tl_import_weights_file('r18', :'w' || '/resnet18.pth');
CREATE TABLE photos (name text PRIMARY KEY, img bytea NOT NULL);
INSERT INTO photos SELECT f, pg_read_binary_file(:'w' || '/img/' || f) FROM pg_ls_dir(:'w' || '/img') f;
CREATE TABLE ref (name text PRIMARY KEY, feats real[] NOT NULL);
INSERT INTO ref SELECT split_part(line, ' ', 1), (string_to_array(line, ' '))[2:]::real[]
FROM regexp_split_to_table(pg_read_file(:'w' || '/embeddings.txt'), '\n') line WHERE line <> '';
CREATE TABLE pred (name text PRIMARY KEY, idx int, category text);
INSERT INTO pred SELECT split_part(line, E'\t', 1), split_part(line, E'\t', 2)::int, split_part(line, E'\t', 3)
FROM regexp_split_to_table(pg_read_file(:'w' || '/predictions.txt'), '\n') line WHERE line <> '';
SQL
ok $? "created $db, imported the checkpoint without class names and the images"

# ---- declaration ----
is "$(q -c "SELECT p.oid::regprocedure::text || ' ' || provolatile::text || proparallel::text || ' ' || proisstrict::text || ' ' || pronargdefaults || ' ' || prorettype::regtype
	FROM pg_proc p WHERE proname = 'tl_embed'")" "tl_embed(bytea,text) ss false 1 real[]" \
	"tl_embed(img, model DEFAULT NULL) is STABLE PARALLEL SAFE and returns real[]"

# ---- ImageNet class names ----
is "$(q -c "SELECT num_classes || ':' || classes[1] || ':' || classes[310] || ':' || classes[1000] || ':' || (SELECT count(DISTINCT c) FROM unnest(classes) c)
	FROM tl_stored_models WHERE name = 'r18'")" "1000:tench:bee:toilet tissue:1000" \
	"a 1000-class checkpoint imported without classes gets torchvision's ImageNet names (index 309 is 'bee')"
is "$(q -c "SELECT count(*) FROM photos p JOIN pred r USING (name) WHERE tl_predict(p.img, 'r18') = r.category")" 7 \
	"tl_predict answers torch's argmax as its torchvision category name on all 7 images"

# ---- parity with torch ----
is "$(q -c "SELECT count(*) FILTER (WHERE array_length(tl_embed(img, 'r18'), 1) = 512) FROM photos")" 7 \
	"tl_embed returns 512 values per image"
worst=$(q -c "SELECT max(d) FROM (
	SELECT (SELECT max(abs(a - b)) FROM unnest(tl_embed(p.img, 'r18'), ref.feats) AS u(a, b))
	       / (SELECT max(abs(x)) FROM unnest(ref.feats) x) AS d
	FROM photos p JOIN ref USING (name)) s")
echo "# worst relative difference to torch: $worst (tolerance $TOL)"
q -c "SELECT $worst::float8 <= $TOL AND (SELECT count(*) FROM photos p JOIN ref USING (name)) = 7" | grep -qx t
ok $? "tl_embed equals torchvision's resnet18 backbone (fc = Identity) within $TOL on 7 images (JPEG and PNG)"
is "$(q -c "SELECT count(*) FROM ref WHERE (SELECT max(x) FROM unnest(feats) x) > 0.01")" 7 \
	"torch's features are not trivially zero (the comparison is not vacuous)"

# ---- the default model, NULL, errors ----
q -c "SELECT tl_deploy('r18')" >/dev/null
is "$(q -c "SELECT count(*) FROM photos WHERE tl_embed(img) = tl_embed(img, 'r18') AND tl_embed(img, NULL) = tl_embed(img, 'r18')")" 7 \
	"tl_embed(img) and tl_embed(img, NULL) use the deployed model"
is "$(q -c "SELECT tl_embed(NULL) IS NULL AND tl_embed(NULL, 'r18') IS NULL")" t "tl_embed(NULL) is NULL"
is "$(q -c "SELECT tl_embed(img, 'nope') FROM photos LIMIT 1" 2>&1 | grep -o 'model "nope" does not exist' | head -n 1)" \
	'model "nope" does not exist' "an unknown model raises an error naming it"
is "$(q -v VERBOSITY=verbose -c "SELECT tl_embed('\\x00010203'::bytea, 'r18')" 2>&1 | grep -c '^ERROR:  22P03\|^ERROR:  XX001\|^ERROR:  22023\|^ERROR:  0A000')" 1 \
	"bytes that are not an image raise an error with a data SQLSTATE (no crash)"

# ---- nearest neighbours in plain SQL (docs/prediction.md) ----
q >/dev/null <<'SQL'
CREATE TABLE photo_embeddings AS SELECT name, tl_embed(img) AS v FROM photos;
CREATE FUNCTION cosine(a real[], b real[]) RETURNS float8 LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
	SELECT sum(x * y) / (sqrt(sum(x * x)) * sqrt(sum(y * y))) FROM unnest(a, b) AS t(x, y) $$;
SQL
is "$(q -c "SELECT e.name FROM photo_embeddings e, photos p WHERE p.name LIKE 'bees_%' ORDER BY p.name, cosine(e.v, tl_embed(p.img)) DESC LIMIT 1")" \
	"$(cd "$work/img" && ls bees_* | LC_ALL=C sort | head -n 1)" "an image's nearest neighbour by cosine similarity is itself"
is "$(q -c "SELECT round(cosine(v, v)::numeric, 6) FROM photo_embeddings LIMIT 1")" 1.000000 "cosine similarity of an embedding with itself is 1"

dropdb $db
ok $? "dropped $db"
rm -rf "$work"
tap_exit
