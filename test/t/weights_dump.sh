#!/usr/bin/env bash
# pg_dump round trip of the model tables: import models, dump the database
# (custom format), restore into a fresh database and check that every model
# row and every tensor is identical, that exports are byte-identical, that
# tensors still cascade with their model, and that the identity sequence
# continues after the restored ids.  Prints TAP.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
. test/t/tap.bash

q() { tl_psql -X -At "$@"; }

echo "1..9"
work=$TL_REPO/build/test-data/weights-dump
rm -rf "$work" && mkdir -p "$work" && cp test/fixtures/checkpoint/tiny*.pth test/fixtures/checkpoint/tiny.safetensors "$work" &&
	chmod -R a+rX "$work"
src=tl_wdump_src dst=tl_wdump_dst
for db in $src $dst; do dropdb --if-exists $db 2>/dev/null; done

createdb $src && q -d $src -c 'CREATE EXTENSION transfer' >/dev/null &&
	q -d $src -c "SELECT tl_import_weights_file('tiny-zip', '$work/tiny.pth', ARRAY['ants', 'bees', 'wasps']),
		tl_import_weights_file('tiny-legacy', '$work/tiny_legacy.pth'),
		tl_import_weights_file('tiny-st', '$work/tiny.safetensors')" >/dev/null &&
	q -d $src -c "DELETE FROM tl_stored_models WHERE name = 'tiny-legacy';
		UPDATE tl_stored_models SET metrics = '{\"val_acc\": 0.5}' WHERE name = 'tiny-st'" >/dev/null
ok $? "source database with models 1 and 3 (2 deleted, so ids have a gap)"

# Everything a model is, as text, in a stable order.
models() {
	q -d "$1" -c "SELECT id, name, arch, base_width, num_classes, classes, image_size, source, created_at, metrics
		FROM tl_stored_models ORDER BY id"
}
tensors() {
	q -d "$1" -c "SELECT model_id, key, position, shape, md5(data) FROM tl_model_tensors ORDER BY model_id, position"
}
exports() {
	q -d "$1" -c "SELECT name, md5(tl_export(name)), md5(tl_export(name, 'pth')) FROM tl_stored_models ORDER BY id"
}

pg_dump -Fc -f "$work/dump" $src
ok $? "pg_dump -Fc"
createdb $dst && pg_restore --exit-on-error -d $dst "$work/dump"
ok $? "pg_restore into a fresh database"

is "$(models $dst)" "$(models $src)" "model rows identical (ids, classes, source, created_at, metrics)"
is "$(tensors $dst | md5sum)" "$(tensors $src | md5sum)" \
	"all $(tensors $src | wc -l) tensor rows identical (key, position, shape, data)"
is "$(exports $dst)" "$(exports $src)" "tl_export gives byte-identical files after the restore"

id=$(q -d $dst -c "SELECT tl_import_weights_file('after-restore', '$work/tiny.pth')")
is "$id" "4" "the identity sequence continues after the restored ids"

q -d $dst -c "DELETE FROM tl_stored_models WHERE name = 'tiny-zip'" >/dev/null
is "$(q -d $dst -c "SELECT count(DISTINCT model_id) || '/' || count(*) FROM tl_model_tensors")" "2/204" \
	"deleting a restored model still deletes its tensors"

dropdb $src && dropdb $dst
ok $? "dropped the databases"
rm -rf "$work"
