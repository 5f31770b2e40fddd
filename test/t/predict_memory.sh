#!/usr/bin/env bash
# Backend memory stays flat: one session calls tl_predict (and the other
# prediction functions) over 10,000 rows, and loads/evicts models 60 times
# with transfer.model_cache_size = 1; its RSS, read from /proc, grows by less
# than a stated bound.  A per-call leak of the decoded image, the input
# tensor or the result (>= 3 kB per call with these 32-40 px models) would
# add >= 30 MB over 10,000 calls; a leaked model (>= 0.4 MB) >= 24 MB over 60
# loads.
set -u
. "$(dirname "$0")/../lib/predict_setup.sh"
db=predict_memory
bound_kb=4096		# stated bound: 4 MB of growth per phase

echo "1..6"
predict_setup_db "$db"
q "$db" "INSERT INTO tl_images (dataset, split, label, name, img)
	SELECT 'pmem', 'val', label, name || '#' || g, img
	FROM tl_images, generate_series(1, 400) AS g WHERE dataset = 'psynth'"
rows=$(q "$db" "SELECT count(*) FROM tl_images WHERE dataset = 'pmem'")
is "$rows" 10000 "10,000 image rows"

# One session; \! runs a shell command between statements to read its RSS.
out=$(psql -X -v ON_ERROR_STOP=1 -qAt -d "$db" 2>&1 <<'SQL'
SET max_parallel_workers_per_gather = 0;
-- The high cost of tl_predict gets queries over many rows JIT-compiled, and
-- the first JIT use maps LLVM (~50 MB of shared-library pages): not ours.
SET jit = off;
SELECT pg_backend_pid() AS pid \gset
\setenv BACKEND_PID :pid
-- warm up: model loaded, plans prepared, allocator arenas sized
SELECT count(tl_predict(img, 'predict_a')) FROM tl_images WHERE dataset = 'pmem' AND id % 20 = 0;
SELECT count(tl_predict_proba(img, 'predict_b')) FROM tl_images WHERE dataset = 'pmem' AND id % 20 = 0;
\! echo "rss0 $(awk '/^VmRSS:/ {print $2}' /proc/$BACKEND_PID/status)"
SELECT 'predicted', count(tl_predict(img, 'predict_a')) FROM tl_images WHERE dataset = 'pmem';
\! echo "rss1 $(awk '/^VmRSS:/ {print $2}' /proc/$BACKEND_PID/status)"
SELECT 'others', count(tl_predict_proba(img, 'predict_b')) + count(tl_try_predict(img, 'predict_a'))
	+ sum((SELECT count(*) FROM tl_predict_topk(img, 2, 'predict_b')))
FROM tl_images WHERE dataset = 'pmem' AND id % 2 = 0;
\! echo "rss2 $(awk '/^VmRSS:/ {print $2}' /proc/$BACKEND_PID/status)"
SET transfer.model_cache_size = 1;
SELECT 'reloads', count(tl_predict(img, CASE WHEN i % 2 = 0 THEN 'predict_a' ELSE 'predict_b' END))
FROM (SELECT img FROM tl_images WHERE dataset = 'psynth' LIMIT 1) s, generate_series(1, 60) AS i;
\! echo "rss3 $(awk '/^VmRSS:/ {print $2}' /proc/$BACKEND_PID/status)"
SELECT 'cached', count(*) FROM tl_model_cache();
SQL
)
[ "${TAP_VERBOSE:-}" ] && echo "$out" | sed 's/^/# /'
get() { awk -v k="$1" '$1 == k {print $2}' <<<"$(tr '|' ' ' <<<"$out")"; }
rss0=$(get rss0) rss1=$(get rss1) rss2=$(get rss2) rss3=$(get rss3)
echo "# RSS kB: warm $rss0, after 10,000 tl_predict $rss1, after 15,000 other calls $rss2, after 60 model loads $rss3"
is "$(get predicted)" 10000 "tl_predict answered for all 10,000 rows"
[ -n "$rss1" ] && [ $((rss1 - rss0)) -lt $bound_kb ]
ok $? "RSS after 10,000 tl_predict calls within ${bound_kb} kB of the warm backend ($((rss1 - rss0)) kB)"
[ -n "$rss2" ] && [ $((rss2 - rss1)) -lt $bound_kb ]
ok $? "RSS after 15,000 proba/try/topk calls within ${bound_kb} kB ($((rss2 - rss1)) kB)"
[ -n "$rss3" ] && [ $((rss3 - rss2)) -lt $bound_kb ]
ok $? "RSS after 60 model loads and evictions within ${bound_kb} kB ($((rss3 - rss2)) kB)"
is "$(get cached)" 1 "the cache holds transfer.model_cache_size = 1 model"

dropdb "$db"
tap_exit
