#!/usr/bin/env bash
# Load: four sessions run tl_predict(img) over a val set in a loop while a
# training run is in progress (when tl_train exists) and another session
# keeps deploying a different model.  No errors; every prediction equals what
# the model deployed at that moment (read in the same statement, so in the
# same snapshot) predicts alone; each predicting backend's RSS stays flat.
# Bounded: a fixed number of queries per session (two of them with
# transfer.model_cache_size = 1, so every deployment change reloads).
set -u
. "$(dirname "$0")/../lib/predict_setup.sh"
db=predict_load
work=$TL_REPO/build/predict-load
iterations=${TL_LOAD_ITERATIONS:-400}
# Stated bound: 8 MB per backend.  Alternating model loads leave 1-3 MB of
# allocator slack once; a per-query leak of the 25 decoded images (>= 75 kB
# per query, 400 queries) would be >= 30 MB.
bound_kb=8192

echo "1..8"
rm -rf "$work" && mkdir -p "$work"
predict_setup_db "$db"
q "$db" "SELECT tl_deploy('predict_a')" >/dev/null
# What each model predicts alone, per image.
q "$db" "CREATE TABLE load_ref AS SELECT m AS model, id, tl_predict(img, m) AS class
	FROM tl_images, unnest(ARRAY['predict_a', 'predict_b']) AS m WHERE dataset = 'psynth'"

# A training run in progress meanwhile, if training exists on this build.
run=""
if [ "$(q "$db" "SELECT count(*) FROM pg_proc WHERE proname = 'tl_train'")" != 0 ]; then
	q "$db" "INSERT INTO tl_images (dataset, split, label, name, img)
		SELECT 'pload', s, label, name, img FROM tl_images, unnest(ARRAY['train', 'val']) AS s
		WHERE dataset = 'psynth'"
	run=$(q "$db" "SELECT tl_train('finetune', 'pload', epochs => 200, batch_size => 5, base_model => 'predict_a',
		image_size => 32, model_name => 'load_trained', seed => 1)" 2>"$work/train.err")
fi

session() {			# session N CACHE_SIZE: one backend, $iterations queries
	local n=$1 cache=$2 i
	{
		echo "SET transfer.model_cache_size = $cache;"
		echo "SET max_parallel_workers_per_gather = 0;"
		echo 'SELECT pg_backend_pid() AS pid \gset'
		echo '\setenv BACKEND_PID :pid'
		for i in $(seq 1 "$iterations"); do
			echo "SELECT d.model_name, i.id, tl_predict(i.img) FROM tl_images i,
				(SELECT model_name FROM tl_deployments ORDER BY id DESC LIMIT 1) d
				WHERE i.dataset = 'psynth';"
			[ "$i" = 3 ] && echo '\! echo "rss_warm $(awk '"'"'/^VmRSS:/ {print $2}'"'"' /proc/$BACKEND_PID/status)"'
		done
		echo '\! echo "rss_end $(awk '"'"'/^VmRSS:/ {print $2}'"'"' /proc/$BACKEND_PID/status)"'
	} | psql -X -v ON_ERROR_STOP=1 -qAt -d "$db" >"$work/session$n.out" 2>"$work/session$n.err"
	echo $? >"$work/session$n.rc"
}

for n in 1 2 3 4; do
	session "$n" $((n <= 2 ? 2 : 1)) &
done
deploys=0
while [ "$(ls "$work"/session*.rc 2>/dev/null | wc -l)" -lt 4 ]; do
	m=$([ $((deploys % 2)) = 0 ] && echo predict_b || echo predict_a)
	q "$db" "SELECT tl_deploy('$m')" >/dev/null 2>>"$work/deploy.err" || break
	deploys=$((deploys + 1))
	sleep 0.1
done
wait
echo "# $deploys deployments during the run; training run: ${run:-none}"

is "$(cat "$work"/session*.rc | sort -u)" 0 "all four sessions finished without an error"
! [ -s "$work/session1.err" ] && ! [ -s "$work/session2.err" ] && ! [ -s "$work/session3.err" ] &&
	! [ -s "$work/session4.err" ] && ! [ -s "$work/deploy.err" ]
ok $? "no error or warning output"
cat "$work"/session*.out | grep -v '^rss_' | tr '|' '\t' >"$work/predictions.tsv"
psql -X -q -d "$db" -c "CREATE TABLE load_seen (model text, id bigint, class text)" \
	-c "\\copy load_seen FROM '$work/predictions.tsv'"
rows=$(q "$db" "SELECT count(*) FROM load_seen")
is "$rows" $((4 * iterations * 25)) "every query returned every image ($rows predictions)"
wrong=$(q "$db" "SELECT count(*) FROM load_seen s JOIN load_ref r USING (model, id) WHERE r.class <> s.class")
matched=$(q "$db" "SELECT count(*) FROM load_seen s JOIN load_ref r USING (model, id)")
[ "$matched" = "$rows" ] && [ "$wrong" = 0 ]
ok $? "every prediction equals the deployed model's own ($wrong differ)"
[ "$(q "$db" "SELECT count(DISTINCT model) FROM load_seen")" = 2 ] && [ "$deploys" -ge 4 ]
ok $? "queries saw both deployed models ($deploys deployments)"
growth=0
for n in 1 2 3 4; do
	w=$(awk '$1 == "rss_warm" {print $2}' "$work/session$n.out")
	e=$(awk '$1 == "rss_end" {print $2}' "$work/session$n.out")
	echo "# session $n RSS kB: after 3 queries $w, at the end $e"
	[ -n "$w" ] && [ -n "$e" ] || growth=999999
	[ -n "$w" ] && [ -n "$e" ] && [ $((e - w)) -gt "$growth" ] && growth=$((e - w))
done
[ "$growth" -lt $bound_kb ]
ok $? "each backend's RSS grew by less than ${bound_kb} kB (at most $growth kB)"

if [ -n "$run" ]; then
	status=$(q "$db" "SELECT tl_run_status($run)")
	echo "# training run $run was $status at the end of the load"
	q "$db" "SELECT tl_cancel($run)" >/dev/null
	[ "$status" != failed ]
	ok $? "the training run went on alongside ($status)"
	final=$(q "$db" "SELECT tl_wait($run, '60 seconds')")
	[ "$final" = cancelled ] || [ "$final" = succeeded ]
	ok $? "and ended cleanly ($final)"
else
	echo "ok 7 # SKIP tl_train is not in this build"
	echo "ok 8 # SKIP tl_train is not in this build"
fi

dropdb "$db"
tap_exit
