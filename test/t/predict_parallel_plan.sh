#!/usr/bin/env bash
# The planner hook (src/pg/parallel_plan.c): with every setting at its
# default, a query that predicts over a table whose heap is too small for
# PostgreSQL's own parallel scan gets one, with one process per CPU (the
# leader's included, at most max_parallel_workers_per_gather workers), from
# the first query of a session on; predictions equal the serial plan's; and
# nothing changes where it should not: queries without a prediction,
# max_parallel_workers_per_gather = 0, a table's parallel_workers setting,
# heaps of too few pages, joins.
set -u
. "$(dirname "$0")/../lib/predict_setup.sh"
db=predict_parallel_plan

echo "1..12"
predict_setup_db "$db"
# A user's table made with CREATE TABLE AS: 100 heap pages at fillfactor 10,
# far below min_parallel_table_scan_size (1024 pages).  Its twin has 2 pages.
q "$db" "CREATE TABLE photos WITH (fillfactor = 10) AS
		SELECT row_number() OVER () AS id, label, img
		FROM tl_images, generate_series(1, 8) AS g WHERE dataset = 'psynth';
	CREATE TABLE few AS SELECT * FROM photos LIMIT 60;
	ANALYZE photos; ANALYZE few" >/dev/null
pages=$(q "$db" "SELECT relpages FROM pg_class WHERE relname = 'photos'")

cpus=$(nproc)
want=$(( cpus - 1 < 2 ? cpus - 1 : 2 ))	# leader + workers = CPUs, at most the default 2 workers
explain() {			# explain [SETTINGS] SQL: the plan, in a new session
	if [ $# -gt 1 ]; then
		psql -X -qAt -d "$db" -c "$1" -c "EXPLAIN (COSTS OFF, VERBOSE) $2"
	else
		psql -X -qAt -d "$db" -c "EXPLAIN (COSTS OFF, VERBOSE) $1"
	fi
}
gathers() {			# gathers PLAN: "none" or the workers planned
	grep -o "Workers Planned: [0-9]*" <<<"$1" | grep -o "[0-9]*$" || echo none
}

plan=$(explain "SELECT id, tl_predict(img, 'predict_a') FROM photos")
[ "${TAP_VERBOSE:-}" ] && echo "$plan" | sed 's/^/# /'
if [ "$want" -ge 1 ]; then
	is "$(gathers "$plan")" "$want" \
		"defaults, a $pages-page heap: the first query of a session is parallel, $want worker(s) beside the leader on $cpus CPUs"
	grep -A2 "Parallel Seq Scan" <<<"$plan" | grep -q "Output: .*tl_predict(img, 'predict_a'::text)"
	ok $? "the prediction is computed in the parallel scan, as written"
else
	is "$(gathers "$plan")" "none" "one CPU: no parallel plan"
	ok 0 "# SKIP one CPU"
fi
plan=$(explain "SELECT id FROM photos WHERE tl_try_predict(img) = 'ants'")
is "$(gathers "$plan")" "$( [ "$want" -ge 1 ] && echo "$want" || echo none)" \
	"a prediction in the WHERE clause counts too"
is "$(gathers "$(explain "SELECT count(*), max(length(img)) FROM photos")")" "none" \
	"a query without a prediction keeps PostgreSQL's plan"
is "$(gathers "$(explain "SET max_parallel_workers_per_gather = 0" \
	"SELECT tl_predict(img, 'predict_a') FROM photos")")" "none" \
	"max_parallel_workers_per_gather = 0: no parallel plan"
q "$db" "ALTER TABLE photos SET (parallel_workers = 0)"
is "$(gathers "$(explain "SELECT tl_predict(img, 'predict_a') FROM photos")")" "none" \
	"a table's parallel_workers storage parameter decides"
q "$db" "ALTER TABLE photos RESET (parallel_workers)"
is "$(gathers "$(explain "SELECT tl_predict(img, 'predict_a') FROM few")")" "none" \
	"a heap of $(q "$db" "SELECT relpages FROM pg_class WHERE relname = 'few'") pages (under 4 per process): no parallel plan"
is "$(gathers "$(explain "SELECT tl_predict(p.img, 'predict_a') FROM photos p JOIN few f USING (id)")")" "none" \
	"a join is left to PostgreSQL"
is "$(gathers "$(explain "SET max_parallel_workers_per_gather = 1" \
	"SELECT tl_predict_proba(img, 'predict_b') FROM photos")")" "$( [ "$want" -ge 1 ] && echo 1 || echo none)" \
	"max_parallel_workers_per_gather caps the workers"

digest="SELECT md5(string_agg(id || ':' || p, ',' ORDER BY id))
	FROM (SELECT id, tl_predict_proba(img, 'predict_b')::text AS p FROM photos) s"
serial=$(psql -X -qAt -d "$db" -c "SET max_parallel_workers_per_gather = 0" -c "$digest" | tail -n 1)
parallel=$(q "$db" "$digest")
[ ${#serial} = 32 ]
ok $? "the serial plan predicts every row"
is "$parallel" "$serial" "the default (parallel) plan gives exactly the serial probabilities"
analyze=$(psql -X -qAt -d "$db" -c "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF)
	SELECT count(tl_predict(img, 'predict_a')) FROM photos")
[ "${TAP_VERBOSE:-}" ] && echo "$analyze" | sed 's/^/# /'
[ "$want" -lt 1 ] || [[ $analyze == *"Workers Launched: $want"* ]]
ok $? "and its workers run"

dropdb "$db"
tap_exit
