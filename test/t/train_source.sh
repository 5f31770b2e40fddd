#!/usr/bin/env bash
# Training and evaluating on the user's own tables (issue 15, docs/training.md
# "Training from your own table"): a 3-class table without a split column,
# a view with one, the drawn split reproducible for a seed, bad rows skipped
# and counted, row-level security applied to the caller, and a role without
# SELECT refused.  Tiny networks (base_width 4, image_size 64, one epoch).
# Prints TAP; run by scripts/test.sh with the throwaway cluster's environment.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
. test/t/tap.bash

echo "1..22"

db=tl_train_source
q() { tl_psql -At -d $db "$@"; }
small="from_scratch => true, base_width => 4, image_size => 64, epochs => 1, wait => true"

dropdb --if-exists $db 2>/dev/null
dropuser --if-exists tl_src_nopriv 2>/dev/null
dropuser --if-exists tl_src_rls 2>/dev/null
createdb $db && q -c 'CREATE EXTENSION transfer' &&
	q -c "SELECT count(*) FROM tl_import_folder('src', '$TL_TEST_IMAGES')" >/dev/null 2>&1 &&
	q <<'EOF'
-- 3 classes, no split column, labels in "category"; "wasps" are copies of
-- the bees; three bad rows (NULL image, NULL label, not an image)
CREATE TABLE photos (id serial PRIMARY KEY, photo bytea, category text);
INSERT INTO photos (photo, category) SELECT img, label FROM tl_images WHERE dataset = 'src' ORDER BY id;
INSERT INTO photos (photo, category) SELECT img, 'wasps' FROM tl_images WHERE dataset = 'src' AND label = 'bees' ORDER BY id;
INSERT INTO photos (photo, category) VALUES (NULL, 'ants'), ('\x00010203', 'bees');
INSERT INTO photos (photo, category) SELECT img, NULL FROM tl_images WHERE dataset = 'src' LIMIT 1;
-- a view with its own split and integer labels
CREATE VIEW photos_v AS
	SELECT photo AS picture, CASE category WHEN 'ants' THEN 10 ELSE 2 END AS class,
		   CASE WHEN id % 3 = 0 THEN 'val' ELSE 'train' END AS split
	FROM photos WHERE category <> 'wasps';
EOF
ok $? "created the database, imported images and made a 3-class table and a view"
good=$(q -c "SELECT count(*) FROM photos WHERE photo IS NOT NULL AND category IS NOT NULL AND octet_length(photo) > 4")

# ---- a 3-class table without a split column
out=$(q -c "SELECT tl_train('finetune', 'photos', label_column => 'category', seed => 7, model_name => 'photos-a', $small)" 2>&1)
run_a=$(echo "$out" | tail -n 1)
is "$(q -c "SELECT status FROM tl_runs WHERE id = '$run_a'")" "succeeded" "a run on a 3-class table without a split column succeeds"
echo "$out" | grep -q "NOTICE:  skipped 3 rows of public.photos"
ok $? "the bad rows are reported with a NOTICE"
is "$(q -c "SELECT args->'classes', args->'num_classes', args->'source'->'skipped' FROM tl_runs WHERE id = '$run_a'")" \
	'["ants", "bees", "wasps"]|3|3' "three classes in sorted order, three rows skipped and counted in the run"
is "$(q -c "SELECT jsonb_array_length(args->'source'->'train_ids') + jsonb_array_length(args->'source'->'val_ids'),
				   jsonb_array_length(args->'source'->'val_ids'), args->>'train_images', args->>'val_images'
			FROM tl_runs WHERE id = '$run_a'")" \
	"$good|$(( (good * 2 + 5) / 10 ))|$(( good - (good * 2 + 5) / 10 ))|$(( (good * 2 + 5) / 10 ))" \
	"every good row is in the run, val_fraction 0.2 of them in val"
is "$(q -c "SELECT args->'source'->>'relation', args->'source'->>'image_column', args->'source'->>'split_column' IS NULL
			FROM tl_runs WHERE id = '$run_a'")" "photos|photo|t" "the source is recorded with the run"
is "$(q -c "SELECT e->>'images', jsonb_array_length(e->'confusion') FROM (SELECT tl_evaluate('photos-a', 'photos', label_column => 'category') e) x" 2>/dev/null)" \
	"$good|3" "tl_evaluate on the table: every good row, a 3x3 confusion matrix"
# transfer.max_image_file_size (kB) just under the largest image: tl_evaluate skips it, as tl_train would
limit_kb=$(q -c "SELECT max(octet_length(photo)) / 1024 FROM photos WHERE category IS NOT NULL AND octet_length(photo) > 4")
fit=$(q -c "SELECT count(*) FROM photos WHERE photo IS NOT NULL AND category IS NOT NULL AND octet_length(photo) > 4 AND octet_length(photo) <= $limit_kb * 1024")
is "$(q -c "SET transfer.max_image_file_size = $limit_kb" -c "SELECT e->>'images' FROM (SELECT tl_evaluate('photos-a', 'photos', label_column => 'category') e) x" 2>/dev/null)" \
	"$fit" "tl_evaluate on the table skips images over transfer.max_image_file_size ($fit of $good fit)"

# ---- the drawn split is reproducible for a seed
run_b=$(q -c "SELECT tl_train('finetune', 'photos', label_column => 'category', seed => 7, $small)" 2>/dev/null | tail -n 1)
is "$(q -c "SELECT a.args->'source'->'val_ids' = b.args->'source'->'val_ids' AND a.args->'source'->'train_ids' = b.args->'source'->'train_ids'
			FROM tl_runs a, tl_runs b WHERE a.id = '$run_a' AND b.id = '$run_b'")" "t" "the same seed draws the same split"
is "$(q -c "SELECT (SELECT loss FROM tl_run_epochs WHERE run = '$run_a' AND phase = 'val') = (SELECT loss FROM tl_run_epochs WHERE run = '$run_b' AND phase = 'val')")" \
	"t" "and the same seed trains to the same val loss"
run_c=$(q -c "SELECT tl_train('finetune', 'photos', label_column => 'category', seed => 8, epochs => 1, from_scratch => true, base_width => 4, image_size => 64, wait => true)" 2>/dev/null | tail -n 1)
is "$(q -c "SELECT a.args->'source'->'val_ids' <> c.args->'source'->'val_ids' FROM tl_runs a, tl_runs c WHERE a.id = '$run_a' AND c.id = '$run_c'")" \
	"t" "another seed draws another split"

# ---- a view with a split column and integer labels
run_v=$(q -c "SELECT tl_train('finetune', 'photos_v', seed => 1, $small)" 2>/dev/null | tail -n 1)
is "$(q -c "SELECT status, args->'classes', args->'source'->>'split_column', args->'source'->>'label_column' FROM tl_runs WHERE id = '$run_v'")" \
	'succeeded|["10", "2"]|split|class' "a run on a view with a split column and integer labels (sorted as strings)"
is "$(q -c "SELECT jsonb_array_length(args->'source'->'val_ids') = (SELECT count(*) FROM photos_v WHERE split = 'val' AND picture IS NOT NULL AND octet_length(picture) > 4)
			FROM tl_runs WHERE id = '$run_v'")" "t" "the view's split column decides the val rows"

# ---- an interrupted run resumes on the same rows, to the uninterrupted result
long="from_scratch => true, base_width => 16, image_size => 64, batch_size => 3, epochs => 8, seed => 5"
ref=$(q -c "SELECT tl_train('finetune', 'photos', label_column => 'category', $long, wait => true)" 2>/dev/null | tail -n 1)
run=$(q -c "SELECT tl_train('finetune', 'photos', label_column => 'category', $long)" 2>/dev/null)
for ((i = 0; i < 600; i++)); do
	[ "$(q -c "SELECT epochs_done >= 2 FROM tl_runs WHERE id = '$run'")" = t ] && break
	sleep 0.1
done
q -c "SELECT pg_terminate_backend(pid) FROM tl_runs WHERE id = '$run'" >/dev/null
for ((i = 0; i < 100; i++)); do
	[ "$(q -c "SELECT tl_run_status('$run')")" = interrupted ] && break
	sleep 0.1
done
is "$(q -c "SELECT tl_run_status('$run')")" "interrupted" "a run on the table is interrupted mid-way"
# rows added meanwhile are not the run's
q -c "INSERT INTO photos (photo, category) SELECT photo, 'moths' FROM photos WHERE category = 'ants'"
q -c "SELECT tl_resume('$run', wait => true)" >/dev/null 2>&1
is "$(q -c "SELECT status, resumes, args->'classes' FROM tl_runs WHERE id = '$run'")" 'succeeded|1|["ants", "bees", "wasps"]' \
	"tl_resume finishes it with the classes it started with"
is "$(q -c "SELECT count(*) FILTER (WHERE a.loss = b.loss AND a.acc = b.acc)
			FROM tl_run_epochs a JOIN tl_run_epochs b USING (epoch, phase) WHERE a.run = '$ref' AND b.run = '$run'")" \
	"16" "resumed run = uninterrupted run, epoch by epoch"
q -c "DELETE FROM photos WHERE category = 'moths'"
is "$(q -c "SELECT count(*) FROM tl_runs WHERE id IN ('$ref', '$run') AND status = 'succeeded'")" "2" "both runs succeeded"

# ---- a role without SELECT is refused, and no run is started
createuser tl_src_nopriv && q -c "GRANT USAGE ON SCHEMA public TO tl_src_nopriv"
ok $? "created a role without SELECT on photos"
before=$(q -c "SELECT count(*) FROM tl_runs")
out=$(psql -X -At -d $db -U tl_src_nopriv -v VERBOSITY=verbose -c "SELECT tl_train('finetune', 'photos', label_column => 'category', $small)" 2>&1)
echo "$out" | grep -q "ERROR:  42501: permission denied for relation public.photos"
ok $? "tl_train on a table the role can't SELECT fails with 42501"
is "$(q -c "SELECT count(*) FROM tl_runs")" "$before" "and starts no run"

# ---- row-level security applies: the worker reads as the calling role
createuser tl_src_rls && q <<'EOF'
GRANT USAGE ON SCHEMA public TO tl_src_rls;
GRANT SELECT ON photos TO tl_src_rls;
GRANT SELECT, INSERT ON tl_stored_models, tl_model_tensors TO tl_src_rls;	-- to store its model
ALTER TABLE photos ENABLE ROW LEVEL SECURITY;
CREATE POLICY no_wasps ON photos FOR SELECT TO tl_src_rls USING (category IS DISTINCT FROM 'wasps');
EOF
run_r=$(psql -X -At -d $db -U tl_src_rls -c "SELECT tl_train('finetune', 'photos', label_column => 'category', seed => 7, $small)" 2>/dev/null | tail -n 1)
is "$(q -c "SELECT status, args->'classes' FROM tl_runs WHERE id = '$run_r'")" 'succeeded|["ants", "bees"]' \
	"with row-level security the caller's run sees only its rows"
is "$(q -c "SELECT count(*) FROM tl_runs WHERE status <> 'succeeded'")" "0" "no run failed"

dropdb $db && dropuser tl_src_nopriv && dropuser tl_src_rls
tap_exit
