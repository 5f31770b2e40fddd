#!/usr/bin/env bash
# tl_predict in parallel workers: the plan runs it below Gather, results equal
# the serial run, and a model replaced or deployed by another session is used
# by the next query of a session that has the old one cached, in its parallel
# workers as well as in the leader.
set -u
. "$(dirname "$0")/../lib/predict_setup.sh"
db=predict_parallel

echo "1..11"
predict_setup_db "$db"
# 2,000 rows of small images: enough pages for a parallel scan.
q "$db" "INSERT INTO tl_images (dataset, split, label, name, img)
	SELECT 'ppar', 'val', label, name || '#' || g, img
	FROM tl_images, generate_series(1, 80) AS g WHERE dataset = 'psynth'; ANALYZE tl_images"

PARALLEL="SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
	SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2;"
SERIAL="SET max_parallel_workers_per_gather = 0;"
digest() {			# digest MODEL-ARGUMENT-SQL: md5 of every (id, prediction) of ppar
	echo "SELECT md5(string_agg(id || ':' || p, ',' ORDER BY id))
		FROM (SELECT id, tl_predict(img$1) AS p FROM tl_images WHERE dataset = 'ppar') s"
}
run() {				# run SETTINGS SQL: the last line of output
	psql -X -v ON_ERROR_STOP=1 -qAt -d "$db" -c "$1" -c "$2" | tail -n 1
}

explain=$(psql -X -qAt -d "$db" -c "$PARALLEL" -c "EXPLAIN (COSTS OFF, VERBOSE)
	SELECT id, tl_predict(img, 'predict_a') FROM tl_images WHERE dataset = 'ppar'")
[[ $explain == *"Gather"*"Workers Planned: 2"* ]]
ok $? "the forced-parallel plan has a Gather with 2 workers"
grep -A2 "Parallel Seq Scan" <<<"$explain" | grep -q "Output: .*tl_predict"
ok $? "tl_predict is computed by the parallel scan, i.e. in the workers"
analyze=$(psql -X -qAt -d "$db" -c "$PARALLEL" -c "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF)
	SELECT count(tl_predict(img, 'predict_a')) FROM tl_images WHERE dataset = 'ppar'")
[[ $analyze == *"Workers Launched: 2"* ]]
ok $? "two workers ran it"
[ "${TAP_VERBOSE:-}" ] && echo "$explain" | sed 's/^/# /'

serial_a=$(run "$SERIAL" "$(digest ", 'predict_a'")")
serial_b=$(run "$SERIAL" "$(digest ", 'predict_b'")")
parallel_a=$(run "$PARALLEL" "$(digest ", 'predict_a'")")
one_worker_a=$(run "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
	SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 1;" "$(digest ", 'predict_a'")")
[ -n "$serial_a" ] && [ "$serial_a" = "$parallel_a" ]
ok $? "2 workers predict exactly what the serial run predicts"
is "$one_worker_a" "$serial_a" "so does 1 worker"
[ "$serial_a" != "$serial_b" ]
ok $? "the two fixture models predict differently (so the checks below can fail)"

proba_serial=$(run "$SERIAL" "SELECT md5(string_agg(tl_predict_proba(img, 'predict_b')::text, ',' ORDER BY id)) FROM tl_images WHERE dataset = 'ppar'")
proba_parallel=$(run "$PARALLEL" "SELECT md5(string_agg(tl_predict_proba(img, 'predict_b')::text, ',' ORDER BY id)) FROM tl_images WHERE dataset = 'ppar'")
[ -n "$proba_serial" ] && [ "$proba_serial" = "$proba_parallel" ]
ok $? "tl_predict_proba in workers equals the serial probabilities"

# One long session with the old model cached (leader and workers); another
# session (psql's \!) replaces the model, then deploys another; the first
# session's next queries must use the new state.
fx=$PREDICT_FIXTURES/predict
out=$(psql -X -v ON_ERROR_STOP=1 -qAt -d "$db" <<SQL 2>&1
$PARALLEL
SELECT tl_import_weights('pm', pg_read_binary_file('$fx/predict_a.safetensors'), ARRAY['ants', 'bees']) \gset
UPDATE tl_stored_models SET image_size = 32 WHERE name = 'pm';
SELECT 'pm_before', ($(digest ", 'pm'")) AS d;
\! psql -X -q -d $db -c "DELETE FROM tl_stored_models WHERE name = 'pm'" -c "SELECT FROM tl_import_weights('pm', pg_read_binary_file('$fx/predict_b.safetensors'), ARRAY['ants', 'bees', 'wasps'])" -c "UPDATE tl_stored_models SET image_size = 40 WHERE name = 'pm'"
SELECT 'pm_after', ($(digest ", 'pm'")) AS d;
\! psql -X -q -d $db -c "SELECT FROM tl_deploy('predict_a')"
SELECT 'deployed_a', ($(digest "")) AS d;
\! psql -X -q -d $db -c "SELECT FROM tl_deploy('predict_b')"
SELECT 'deployed_b', ($(digest "")) AS d;
$SERIAL
SELECT 'deployed_b_serial', ($(digest "")) AS d;
\! psql -X -q -d $db -c "SELECT FROM tl_deploy('predict_a')"
SELECT 'deployed_a_serial', ($(digest "")) AS d;
SQL
)
val() { awk -F'|' -v k="$1" '$1 == k {print $2}' <<<"$out"; }
[ "${TAP_VERBOSE:-}" ] && echo "$out" | sed 's/^/# /'
is "$(val pm_before)" "$serial_a" "a session predicts with model pm (predict_a's weights), in parallel"
is "$(val pm_after)" "$serial_b" "after another session replaced pm, its next parallel query uses the new weights"
[ "$(val deployed_a)" = "$serial_a" ] && [ "$(val deployed_b)" = "$serial_b" ]
ok $? "tl_predict(img) follows deployments made by another session, in parallel queries"
[ "$(val deployed_b_serial)" = "$serial_b" ] && [ "$(val deployed_a_serial)" = "$serial_a" ]
ok $? "and in serial queries of the same backend"

dropdb "$db"
tap_exit
