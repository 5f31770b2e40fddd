#!/usr/bin/env bash
# Issue 16, findings 4, 5 and 7 and the cache's memory bound, with two
# sessions where the order of events matters:
#   * tl_export (STABLE) started before another session's change to the
#     model's tensors committed returns the old bytes: model_store reads in
#     the statement's snapshot, not a fresh one per query;
#   * a session with a model cached sees another session's UPDATE of the
#     model's tensors on its next query, in the leader and in parallel
#     workers alike (one query never mixes two versions of a model);
#   * tl_predict_topk keeps the query's memory (ExecutorState) flat over the
#     rows of a query, as a LATERAL function scan and in the target list;
#   * a backend that predicts with 20 models in turn keeps at most
#     transfer.model_cache_size of them and its RSS stays flat.
set -u
. "$(dirname "$0")/../lib/predict_setup.sh"
db=model_cache_sessions

echo "1..11"
predict_setup_db "$db"
q "$db" "INSERT INTO tl_images (dataset, split, label, name, img)
	SELECT 'many', 'val', label, name || '#' || g, img
	FROM tl_images, generate_series(1, 80) AS g WHERE dataset = 'psynth'; ANALYZE tl_images"
# fc.bias of predict_a (2 classes) as float32 LE: every image an ant or a bee.
ANTS='\x0000c8420000c8c2'
BEES='\x0000c8c20000c842'
set_bias() {
	q "$db" "UPDATE tl_model_tensors SET data = '$1' WHERE key = 'fc.bias'
		AND model_id = (SELECT id FROM tl_stored_models WHERE name = 'predict_a')" >/dev/null
}

# ---- finding 5: tl_export reads in the statement's snapshot ----
set_bias "$ANTS"
old=$(q "$db" "SELECT md5(tl_export('predict_a'))")
# The statement's snapshot is taken before pg_sleep; the UPDATE commits
# during the sleep, before tl_export runs.
psql -X -qAt -d "$db" -c "SELECT md5(tl_export('predict_a')) FROM (SELECT pg_sleep(3) OFFSET 0) s" \
	>"${TMPDIR:-/tmp}/mcs_export.$$" 2>&1 &
pid=$!
sleep 1
set_bias "$BEES"
wait $pid
during=$(cat "${TMPDIR:-/tmp}/mcs_export.$$"); rm -f "${TMPDIR:-/tmp}/mcs_export.$$"
new=$(q "$db" "SELECT md5(tl_export('predict_a'))")
[ "$old" != "$new" ]
ok $? "the UPDATE of fc.bias changes tl_export's bytes"
is "$during" "$old" "tl_export started before the UPDATE committed returns the old bytes (the statement's snapshot)"

# ---- finding 4: another session's tensor change reaches a cached model ----
PARALLEL="SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
	SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2;"
set_bias "$ANTS"
out=$(psql -X -v ON_ERROR_STOP=1 -qAt -d "$db" 2>&1 <<SQL
$PARALLEL
SET parallel_leader_participation = on;
SELECT 'before', string_agg(DISTINCT p, ',') FROM (SELECT tl_predict(img, 'predict_a') AS p FROM tl_images WHERE dataset = 'psynth') s;
\! psql -X -qAt -d $db -c "UPDATE tl_model_tensors SET data = '$BEES' WHERE key = 'fc.bias' AND model_id = (SELECT id FROM tl_stored_models WHERE name = 'predict_a')" >/dev/null
SELECT 'serial', string_agg(DISTINCT p, ',') FROM (SELECT tl_predict(img, 'predict_a') AS p FROM tl_images WHERE dataset = 'psynth') s;
SQL
)
# A fresh session caches the ants model in the leader; after the UPDATE,
# its parallel workers load the new one: the leader must not keep the old.
set_bias "$ANTS"
out+=$'\n'$(psql -X -v ON_ERROR_STOP=1 -qAt -d "$db" 2>&1 <<SQL
$PARALLEL
SET parallel_leader_participation = on;
SELECT 'pbefore', string_agg(DISTINCT p, ',') FROM (SELECT tl_predict(img, 'predict_a') AS p FROM tl_images WHERE dataset = 'psynth') s;
\! psql -X -qAt -d $db -c "UPDATE tl_model_tensors SET data = '$BEES' WHERE key = 'fc.bias' AND model_id = (SELECT id FROM tl_stored_models WHERE name = 'predict_a')" >/dev/null
SELECT 'parallel', string_agg(DISTINCT p, ','), count(*) FROM (SELECT tl_predict(img, 'predict_a') AS p FROM tl_images WHERE dataset = 'many') s;
SQL
)
[ "${TAP_VERBOSE:-}" ] && echo "$out" | sed 's/^/# /'
get() { awk -F'|' -v k="$1" '$1 == k {print $2}' <<<"$out"; }
is "$(get before)" "ants" "with fc.bias (+100, -100) the session predicts ants (predict_a now cached)"
is "$(get serial)" "bees" "after another session's UPDATE of the tensors, the session's next query predicts with the new weights"
is "$(get pbefore)" "ants" "a new session caches the ants model"
is "$(get parallel)" "bees" "after another session's UPDATE, a parallel query's leader and workers all use the new weights (no mix)"

# ---- finding 7: tl_predict_topk's per-query memory is flat ----
# ExecutorState of the query itself, read by an InitPlan evaluated after the
# CTE has run every tl_predict_topk call.
topk_mem() {		# topk_mem QUERY MOD: "rows bytes"; QUERY counts rows, MOD replaces %MOD%
	q "$db" "SET max_parallel_workers_per_gather = 0; SET jit = off;
		WITH a AS MATERIALIZED (${1//%MOD%/$2})
		SELECT a.n || ' ' || (SELECT sum(total_bytes) FROM pg_backend_memory_contexts
			WHERE name = 'ExecutorState') FROM a" | tail -n 1
}
LATERAL_Q="SELECT count(*) AS n FROM tl_images i, LATERAL tl_predict_topk(i.img, 2, 'predict_b') t
	WHERE i.dataset = 'many' AND i.id % %MOD% = 0"
TLIST_Q="SELECT count(*) AS n FROM (SELECT tl_predict_topk(i.img, 2, 'predict_b')
	FROM tl_images i WHERE i.dataset = 'many' AND i.id % %MOD% = 0) s"
read -r n1 m1 <<<"$(topk_mem "$LATERAL_Q" 100)"
read -r n2 m2 <<<"$(topk_mem "$LATERAL_Q" 1)"
echo "# LATERAL: $n1 rows: ExecutorState $m1 bytes; $n2 rows: $m2 bytes"
[ "${n2:-0}" -ge 2000 ] && [ $((m2 - m1)) -lt 65536 ]
ok $? "LATERAL tl_predict_topk over $n2 rows: ExecutorState grows by less than 64 kB ($((m2 - m1)) bytes)"
read -r n1 m1 <<<"$(topk_mem "$TLIST_Q" 100)"
read -r n2 m2 <<<"$(topk_mem "$TLIST_Q" 1)"
echo "# target list: $n1 rows: ExecutorState $m1 bytes; $n2 rows: $m2 bytes"
[ "${n2:-0}" -ge 2000 ] && [ $((m2 - m1)) -lt 65536 ]
ok $? "tl_predict_topk in the target list over $n2 rows: ExecutorState grows by less than 64 kB ($((m2 - m1)) bytes)"

# ---- memory bound: 20 models in turn ----
q "$db" "INSERT INTO tl_stored_models (name, base_width, num_classes, classes, image_size, source)
	SELECT 'copy_' || g, base_width, num_classes, classes, image_size, source
	FROM tl_stored_models, generate_series(1, 20) AS g WHERE name = 'predict_a';
	INSERT INTO tl_model_tensors (model_id, key, position, shape, data)
	SELECT c.id, t.key, t.position, t.shape, t.data
	FROM tl_model_tensors t JOIN tl_stored_models m ON m.id = t.model_id AND m.name = 'predict_a'
	CROSS JOIN tl_stored_models c WHERE c.name LIKE 'copy\_%'" >/dev/null
out=$(psql -X -v ON_ERROR_STOP=1 -qAt -d "$db" 2>&1 <<'SQL'
SET max_parallel_workers_per_gather = 0;
SET jit = off;
SET transfer.model_cache_size = 2;
SELECT pg_backend_pid() AS pid \gset
\setenv BACKEND_PID :pid
-- warm up: one round over the 20 models
SELECT count(tl_predict(s.img, 'copy_' || g)) FROM (SELECT img FROM tl_images WHERE dataset = 'psynth' LIMIT 1) s, generate_series(1, 20) AS g;
SELECT 'max0', max(n) FROM (SELECT count(*) AS n FROM tl_model_cache()) c;
\! echo "rss0 $(awk '/^VmRSS:/ {print $2}' /proc/$BACKEND_PID/status)"
SELECT 'loads', count(tl_predict(s.img, 'copy_' || (1 + g % 20))) FROM (SELECT img FROM tl_images WHERE dataset = 'psynth' LIMIT 1) s, generate_series(1, 100) AS g;
\! echo "rss1 $(awk '/^VmRSS:/ {print $2}' /proc/$BACKEND_PID/status)"
SELECT 'cached', count(*) FROM tl_model_cache();
SQL
)
[ "${TAP_VERBOSE:-}" ] && echo "$out" | sed 's/^/# /'
get2() { awk -v k="$1" '$1 == k {print $2}' <<<"$(tr '|' ' ' <<<"$out")"; }
rss0=$(get2 rss0) rss1=$(get2 rss1)
is "$(get2 loads)" 100 "100 predictions cycling through 20 models, each a cache miss"
is "$(get2 cached)" 2 "the cache holds transfer.model_cache_size = 2 models, not 20"
[ -n "$rss1" ] && [ -n "$rss0" ] && [ $((rss1 - rss0)) -lt 4096 ]
ok $? "RSS after 100 loads of 20 different models within 4 MB of the warm backend ($((rss1 - ${rss0:-0})) kB)"

dropdb "$db"
tap_exit
