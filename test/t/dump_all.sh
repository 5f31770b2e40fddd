#!/usr/bin/env bash
# pg_dump of a database using every part of the extension, restored into a
# fresh cluster (globals from pg_dumpall, then pg_restore), with a generic
# check over the catalog rather than per table:
#   * every extension table that holds data is marked for pg_dump
#     (pg_extension_config_dump), and so is every sequence feeding one, so a
#     table added without the mark fails here;
#   * every marked table round-trips: same row count, same content hash;
#   * every marked sequence keeps its position; grants on every extension
#     relation survive;
#   * afterwards importing images and weights and training work with fresh
#     ids (no duplicate keys), and restored models export byte-identical files.
# Prints TAP; run by scripts/test.sh with the throwaway cluster's environment.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
. test/t/reliability_lib.bash

echo "1..18"

# Extension tables that are deliberately left out of dumps, with the reason.
not_user_data=(
	tl_run_progress				# where an active run is, rewritten every 2 s by its worker
)
# Marked tables that are empty here: only an interrupted run has a resume
# point (test/t/dump_resume.sh dumps one and resumes it after the restore).
may_be_empty=(
	tl_run_checkpoints
	tl_run_checkpoint_tensors
)

work=$TL_REPO/build/test-data/dump-all
dst_cluster=$work/cluster
rm -rf "$work" && mkdir -p "$work" && cp test/fixtures/checkpoint/tiny.pth test/fixtures/checkpoint/tiny.safetensors "$work"/ &&
	chmod -R a+rX "$work"
images=${TL_TEST_IMAGES:?TL_TEST_IMAGES names the ingestion test tree}
src=tl_dumpall_src
dropdb --if-exists $src 2>/dev/null
dropuser --if-exists tl_dumpall_reader 2>/dev/null

# The source: images (with a deleted row, so ids have a gap), models (one
# deleted), a role with grants.
createdb $src && q -d $src -c 'CREATE EXTENSION transfer' &&
	n_images=$(q -d $src -c "SELECT sum(imported) FROM tl_import_folder('dumpall', '$images')" 2>/dev/null) &&
	q -d $src -c "DELETE FROM tl_images WHERE id = (SELECT min(id) FROM tl_images);
		SELECT tl_import_weights('dumpall-a', pg_read_binary_file('$work/tiny.pth'), ARRAY['ants', 'bees', 'wasps']);
		SELECT tl_import_weights('dumpall-gone', pg_read_binary_file('$work/tiny.safetensors'));
		SELECT tl_import_weights('dumpall-b', pg_read_binary_file('$work/tiny.safetensors'));
		DELETE FROM tl_stored_models WHERE name = 'dumpall-gone';
		SELECT tl_deploy('dumpall-b'); SELECT tl_deploy('dumpall-a');
		UPDATE tl_stored_models SET metrics = '{\"best_val_acc\": 0.75}' WHERE name = 'dumpall-b';
		CREATE ROLE tl_dumpall_reader;
		GRANT SELECT ON tl_images, tl_datasets, tl_stored_models, tl_model_tensors TO tl_dumpall_reader" >/dev/null &&
	q -d $src -c "SELECT tl_train('finetune', 'dumpall', from_scratch => true, base_width => 8, image_size => 64,
		epochs => 1, seed => 1, model_name => 'dumpall-trained', wait => true)" >/dev/null 2>&1
ok $? "source database: images and models imported, some deleted, deployments, grants given, a training run"

# --- every table with data is marked -----------------------------------------
ext_tables="SELECT c.oid::regclass::text FROM pg_class c
	JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
	JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'transfer'"
marked="SELECT unnest(extconfig)::regclass::text FROM pg_extension WHERE extname = 'transfer'"
unmarked=$(q -d $src -c "$ext_tables WHERE c.relkind IN ('r', 'p')
	EXCEPT $marked ORDER BY 1" | grep -vxF -f <(printf '%s\n' "${not_user_data[@]}" '') )
is "$unmarked" "" "every extension table is marked with pg_extension_config_dump (or listed as not user data, with a reason)"
unmarked=$(q -d $src -c "SELECT s.oid::regclass::text FROM pg_class s
	JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.deptype IN ('a', 'i')
	WHERE s.relkind = 'S' AND d.refobjid IN (SELECT unnest(extconfig) FROM pg_extension WHERE extname = 'transfer')
	EXCEPT $marked ORDER BY 1")
is "$unmarked" "" "every sequence owned by a marked table is marked too (else restored ids collide)"
tables=$(q -d $src -c "SELECT c.oid::regclass::text FROM pg_class c
	WHERE c.oid IN (SELECT unnest(extconfig) FROM pg_extension WHERE extname = 'transfer') AND c.relkind IN ('r', 'p') ORDER BY 1")
sequences=$(q -d $src -c "SELECT c.oid::regclass::text FROM pg_class c
	WHERE c.oid IN (SELECT unnest(extconfig) FROM pg_extension WHERE extname = 'transfer') AND c.relkind = 'S' ORDER BY 1")
[ "$(echo "$tables" | grep -c .)" -ge 3 ] && [ "$(echo "$sequences" | grep -c .)" -ge 2 ]
ok $? "found the marked tables ($(echo $tables)) and sequences ($(echo $sequences))"

# Everything that must survive, as lines of text: per marked table its row
# count and a hash over the rows' text, per marked sequence its position,
# per extension relation its grants.
state() {			# state PSQL-CONNECTION-ARGS...
	local t s
	for t in $tables; do
		echo "$t $(q "$@" -c "SELECT count(*) || ' ' || coalesce(md5(string_agg(h, '' ORDER BY h)), '-')
			FROM (SELECT md5(x::text) AS h FROM $t x) rows")"
	done
	for s in $sequences; do
		echo "$s $(q "$@" -c "SELECT last_value || ' ' || is_called FROM $s")"
	done
	q "$@" -c "$ext_tables ORDER BY 1" | while read -r t; do
		echo "$t acl $(q "$@" -c "SELECT relacl FROM pg_class WHERE oid = '$t'::regclass")"
	done
}
src_state=$(state -d $src)
is "$(echo "$src_state" | grep ' 0 -$' | grep -vE "^($(IFS='|'; echo "${may_be_empty[*]}")) ")" "" \
	"every marked table has rows in the source (so the round trip checks something)"

pg_dumpall --globals-only -f "$work/globals.sql" && pg_dump -Fc -f "$work/db.dump" $src
ok $? "pg_dumpall --globals-only and pg_dump -Fc"

# --- a fresh cluster ----------------------------------------------------------
src_env=("$PGHOST" "$PGPORT")
trap 'tl_cluster_stop "$dst_cluster"' EXIT
tl_cluster_start "$dst_cluster" >/dev/null 2>&1
ok $? "a fresh cluster started"
dst_host=$PGHOST dst_port=$PGPORT
export PGHOST=${src_env[0]} PGPORT=${src_env[1]}
d() { q -h "$dst_host" -p "$dst_port" "$@"; }

# The globals file also creates the superuser, which exists: that one error is expected.
psql -X -q -h "$dst_host" -p "$dst_port" -f "$work/globals.sql" >/dev/null 2>"$work/globals.err"
is "$(grep -c ERROR "$work/globals.err")" "1" "roles restored (the only error: the bootstrap superuser exists)"
createdb -h "$dst_host" -p "$dst_port" $src &&
	pg_restore --exit-on-error -h "$dst_host" -p "$dst_port" -d $src "$work/db.dump"
ok $? "pg_restore into the fresh cluster"

dst_state=$(state -h "$dst_host" -p "$dst_port" -d $src)
is "$dst_state" "$src_state" "every marked table, sequence position and grant is identical after the restore"

exports() { "$@" -c "SELECT name, md5(tl_export(name)), md5(tl_export(name, 'pth')) FROM tl_stored_models ORDER BY id"; }
is "$(exports d -d $src)" "$(exports q -d $src)" "restored models export byte-identical files"
predictions() {
	"$@" -c "SELECT id, tl_predict(img), tl_predict_proba(img, 'dumpall-b') FROM tl_images ORDER BY id"
	"$@" -c "SELECT tl_evaluate('dumpall-a', 'dumpall')"
}
got=$(predictions d -d $src 2>&1)
# tl_predict(img) uses the newest deployment, dumpall-a, whose classes are named.
[ "$(echo "$got" | grep -cE '^[0-9]+\|(ants|bees|wasps)\|')" = "$(q -d $src -c 'SELECT count(*) FROM tl_images')" ]
is "$?|$got" "0|$(predictions q -d $src 2>&1)" "the deployed model predicts and evaluates after the restore as before"

# --- and the restored database keeps working ----------------------------------
got=$(d -d $src -c "SELECT sum(imported) FROM tl_import_folder('dumpall-after', '$images')" 2>/dev/null)
is "$got" "$n_images" "tl_import_folder after the restore imports a new dataset"
is "$(d -d $src -c "SELECT min(id) > (SELECT max(id) FROM tl_images WHERE dataset = 'dumpall') FROM tl_images WHERE dataset = 'dumpall-after'" 2>&1)" \
	"t" "and its images get ids after the restored ones"
got=$(d -d $src -c "SELECT tl_import_weights('dumpall-after', pg_read_binary_file('$work/tiny.pth'))" 2>&1)
is "$got" "$(( $(q -d $src -c 'SELECT max(id) FROM tl_stored_models') + 1 ))" "tl_import_weights after the restore gets the next model id"
got=$(d -d $src -c "SELECT tl_train('finetune', 'dumpall', from_scratch => true, base_width => 8, image_size => 64,
	epochs => 1, seed => 1, model_name => 'dumpall-trained-after', wait => true)" 2>/dev/null)
is "$got" "$(( $(q -d $src -c 'SELECT max(id) FROM tl_runs') + 1 ))" "tl_train after the restore runs and gets the next run id"
is "$(d -d $src -c "SELECT tl_run_status($got)")" "succeeded" "and it succeeds"
is "$(d -d $src -c "SELECT has_table_privilege('tl_dumpall_reader', 'tl_model_tensors', 'SELECT')")" "t" \
	"the restored role has its grants"

[ -n "${TL_KEEP:-}" ] && tap_exit
tl_cluster_stop "$dst_cluster"
trap - EXIT
dropdb $src
dropuser tl_dumpall_reader
rm -rf "$work"
tap_exit
