#!/usr/bin/env bash
# transfer.predict_threads: the default (0, automatic) gives a prediction
# outside a parallel query the usable CPUs (at most 4) and every process of a
# parallel query one thread; explicit values win; and the predictions are the
# same whatever the thread count (every kernel splits its work without
# changing any sum's order), with or without the pool's spin-wait
# (transfer.thread_spin_us).
set -u
. "$(dirname "$0")/../lib/predict_setup.sh"
db=predict_threads

echo "1..12"
predict_setup_db "$db"
# Larger inputs than the fixtures' own 32/40 px, so every layer has enough
# work to be split between threads.
q "$db" "UPDATE tl_stored_models SET image_size = 96 WHERE name = 'predict_b'" >/dev/null
q "$db" "INSERT INTO tl_images (dataset, split, label, name, img)
	SELECT 'pthr', 'val', label, name || '#' || g, img
	FROM tl_images, generate_series(1, 80) AS g WHERE dataset = 'psynth'; ANALYZE tl_images" >/dev/null

cpus=$(nproc)
auto=$(( cpus < 4 ? cpus : 4 ))
is "$(psql -X -qAt -d "$db" -c "SELECT tl_predict_threads()" -c "SHOW transfer.predict_threads" | tail -n 1)" "0" "transfer.predict_threads defaults to 0 (automatic)"
is "$(q "$db" "SELECT tl_predict_threads()")" "$auto" "automatic outside a parallel query: the usable CPUs, at most 4 ($auto here)"
is "$(psql -X -qAt -d "$db" -c "SET transfer.predict_threads = 3" -c "SELECT tl_predict_threads()")" "3" \
	"an explicit transfer.predict_threads is used as is"
is "$(psql -X -qAt -d "$db" -c "SET transfer.blas_threads = 2" -c "SELECT tl_predict_threads()")" "2" \
	"transfer.blas_threads above 1 still sets the threads when predict_threads is automatic"

PARALLEL="SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
	SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2;"
# tl_predict in the same rows keeps the leader from scanning them all alone.
pq="SELECT min(t) || '-' || max(t) || '-' || count(p)
	FROM (SELECT tl_predict_threads() AS t, tl_predict(img, 'predict_b') AS p
	      FROM tl_images WHERE dataset = 'pthr') s"
analyze=$(psql -X -qAt -d "$db" -c "$PARALLEL" -c "EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF) $pq")
[[ $analyze == *"Workers Launched: "[12]* ]] &&
	grep -A12 "Parallel Seq Scan" <<<"$analyze" | grep -Eq "Worker [0-9]+: +actual rows=[1-9]"
ok $? "the parallel plan runs the rows in the workers too"
[ "${TAP_VERBOSE:-}" ] && echo "$analyze" | sed 's/^/# /'
n=$(q "$db" "SELECT count(*) FROM tl_images WHERE dataset = 'pthr'")
is "$(psql -X -qAt -d "$db" -c "$PARALLEL" -c "$pq")" "1-1-$n" \
	"automatic inside a parallel query: 1 thread in every worker and in the leader"

digest() {			# digest THREADS [SPIN_US]: md5 of every probability of model predict_b
	psql -X -v ON_ERROR_STOP=1 -qAt -d "$db" -c "SET transfer.predict_threads = $1" \
		-c "SET transfer.thread_spin_us = ${2:-100}" -c "
		SELECT md5(string_agg(tl_predict_proba(img, 'predict_b')::text, ',' ORDER BY id))
		FROM tl_images WHERE dataset = 'psynth'" | tail -n 1
}
d1=$(digest 1)
d2=$(digest 2)
d3=$(digest 3)
[ -n "$d1" ] && [ ${#d1} = 32 ]
ok $? "1 thread predicts (digest $d1)"
is "$d2" "$d1" "2 threads give exactly the probabilities of 1 thread"
is "$d3" "$d1" "so do 3 threads"
is "$(digest 2 0)" "$d1" "and 2 threads that sleep between loops instead of spinning (thread_spin_us = 0)"
# (a C function first: the setting exists once the library is loaded)
is "$(psql -X -qAt -d "$db" -c "SELECT tl_predict_threads()" -c "SHOW transfer.thread_spin_us" | tail -n 1)" "100" \
	"transfer.thread_spin_us defaults to 100 (microseconds)"
out=$(psql -X -qAt -d "$db" -c "SELECT tl_predict_threads()" -c "SET transfer.thread_spin_us = -1" 2>&1)
[[ $out == *"-1 is outside the valid range"* ]]
ok $? "a negative transfer.thread_spin_us is rejected"
tap_exit
