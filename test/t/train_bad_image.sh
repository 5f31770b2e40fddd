#!/usr/bin/env bash
# An image that passes tl_train's header check but fails to decode in the
# worker (a JPEG cut short) fails the run with an error that names the
# image's dataset, split, label and name and says how to delete it, as the
# pre-start check does (issue 17; test/pgtap/errors.sql has that one).
# Prints TAP; run by scripts/test.sh with the cluster's environment.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
. test/t/tap.bash

db=tl_train_bad_image
q() { tl_psql -At -d "$db" "$@"; }

echo "1..4"
dropdb --if-exists "$db" >/dev/null 2>&1
createdb "$db" && q -c 'CREATE EXTENSION transfer' \
	&& q -c "SELECT count(*) FROM tl_import_folder('badimg', '$TL_TEST_IMAGES')" >/dev/null 2>&1 \
	&& q -c "INSERT INTO tl_images (dataset, split, label, name, img)
		SELECT 'badimg', 'train', 'ants', 'cut.jpg', substring(img FROM 1 FOR octet_length(img) / 3)
		FROM tl_images WHERE dataset = 'badimg' AND split = 'train' AND name LIKE '%.jpg' ORDER BY id LIMIT 1"
ok $? "database with the test image subset and a JPEG cut to a third"

out=$(psql -X -d "$db" -c "SELECT tl_train('finetune', 'badimg', from_scratch => true, base_width => 16,
	image_size => 64, batch_size => 3, epochs => 1, wait => true)" 2>&1)
echo "$out" | sed 's/^/# /'
echo "$out" | grep -q '^ERROR:  training run [0-9]* failed'
ok $? "the run fails"
echo "$out" | grep -q "dataset 'badimg', split 'train', label 'ants', name 'cut.jpg'"
ok $? "the error names the image's dataset, split, label and name"
id=$(q -c "SELECT id FROM tl_images WHERE name = 'cut.jpg'")
echo "$out" | grep -q "DELETE FROM tl_images WHERE id = $id"
ok $? "and says how to delete it"

dropdb "$db"
tap_exit
