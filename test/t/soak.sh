#!/usr/bin/env bash
# Soak (issue 16): under load, at the same time, two training runs back to
# back (wait => false), eight client sessions predicting with the deployed
# model (tl_predict, tl_predict_proba) and evaluating it (tl_evaluate) in a
# loop, a tl_deploy every few seconds alternating between two fixture models
# that predict differently, and one pg_ctl restart -m immediate in the middle
# (once the first run has finished some epochs, so that it is interrupted).
# Clients and deployer reconnect and go on after the restart; losing the
# connection during the restart is expected, any other error is a failure.
# Afterwards: no run queued or running, the interrupted run resumed to
# succeeded (or failed with a reason), every answer equals what the model
# read in the same statement (same snapshot) gives alone, every evaluation
# equals that model's reference, no crash in the server log, and the whole
# test took less than 300 s.  Bounded: the load stops once the second run has
# ended and the clients have worked for a while after the restart.
# Prints TAP; run by scripts/test.sh with the throwaway cluster's environment
# (PG*, TL_CLUSTER, TL_TEST_FIXTURES).
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
. test/lib/predict_setup.sh	# predict_setup_db
. test/t/reliability_lib.bash	# crash_log_lines
db=tl_soak
. test/t/train_lib.bash		# q (against $db), server_up, wait_for
work=$TL_REPO/build/soak
clients=8
deploy_every=${TL_SOAK_DEPLOY_EVERY:-2}
# Long enough for the restart to land mid-run and for the load to overlap
# the second run, short enough to stay far below the 300 s bound.
ARGS="batch_size => 5, base_model => 'predict_a', image_size => 32"
epochs=${TL_SOAK_EPOCHS:-90}

echo "1..19"
log=$TL_CLUSTER/server.log
log_start=$(stat -c %s "$log" 2>/dev/null || echo 0)
rm -rf "$work" && mkdir -p "$work"
now() { date +%s.%N; }

# stop_load: ask the load to stop, give it 30 s, then end what is left
# (status 1 if anything had to be ended)
bg_pids=()
stop_load() {
	local p i left=0
	touch "$work/stop"
	for p in "${bg_pids[@]}"; do
		for ((i = 0; i < 300; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$p" 2>/dev/null || continue
		left=1
		pkill -P "$p" 2>/dev/null
		kill "$p" 2>/dev/null
	done
	wait 2>/dev/null
	bg_pids=()
	return $left
}
trap stop_load EXIT

# ---- setup: the two fixture models, their answers alone, a training set
predict_setup_db "$db"
q -c "SELECT tl_deploy('predict_a')" >/dev/null &&
q -c "CREATE TABLE soak_ref AS SELECT m AS model, id, tl_predict(img, m) AS class, tl_predict_proba(img, m) AS proba
	FROM tl_images, unnest(ARRAY['predict_a', 'predict_b']) AS m WHERE dataset = 'psynth'" &&
q -c "CREATE TABLE soak_ref_eval AS SELECT m AS model, tl_evaluate(m, 'psynth') AS eval
	FROM unnest(ARRAY['predict_a', 'predict_b']) AS m" &&
q -c "INSERT INTO tl_images (dataset, split, label, name, img)
	SELECT 'soak', s, label, name, img FROM tl_images, unnest(ARRAY['train', 'val']) AS s
	WHERE dataset = 'psynth'"
ok $? "setup: two deployable models, their reference answers, a training set"
differ=$(q -c "SELECT count(*) FROM soak_ref a JOIN soak_ref b USING (id)
	WHERE a.model = 'predict_a' AND b.model = 'predict_b' AND a.class <> b.class")
[ "$differ" -gt 0 ]
ok $? "the two models predict differently ($differ of 25 images)"

# ---- the load
# client N: one session at a time, each statement preceded by a check of the
# stop file (psql reads the next lines only when it gets to them, so a full
# pipe of queued statements does not delay the stop).  Every fourth statement
# evaluates, the others predict; every row carries its statement, the
# deployed model read in the same statement and the postmaster's start time
# (before or after the restart).  Half the clients allow parallel plans, half cache one model.
client() {
	local n=$1 s=0 start rc
	while [ ! -e "$work/stop" ]; do
		s=$((s + 1))
		start=$(now)
		{
			echo "SET transfer.model_cache_size = $((n % 2 + 1));"
			[ "$n" -gt 4 ] && echo "SET max_parallel_workers_per_gather = 0;"
			i=0
			while :; do
				i=$((i + 1))
				echo "\\set stop \`test -e '$work/stop' && echo true || echo false\`"
				echo '\if :stop'
				echo '\q'
				echo '\endif'
				if [ $((i % 4)) = 0 ]; then
					echo "SELECT 'E', $n, '$s.$i', d.model_name, pg_postmaster_start_time(), tl_evaluate(d.model_name, 'psynth')
						FROM (SELECT model_name FROM tl_deployments ORDER BY id DESC LIMIT 1) d;"
				else
					echo "SELECT 'P', $n, '$s.$i', d.model_name, pg_postmaster_start_time(), i.id, tl_predict(i.img),
							tl_predict_proba(i.img)
						FROM tl_images i, (SELECT model_name FROM tl_deployments ORDER BY id DESC LIMIT 1) d
						WHERE i.dataset = 'psynth';"
				fi
			done 2>/dev/null
		} | psql -X -v ON_ERROR_STOP=1 -qAt -d "$db" >>"$work/client$n.out" 2>"$work/client$n.$s.err"
		rc=${PIPESTATUS[1]}
		echo "client$n.$s $start $(now) $rc" >>"$work/sessions"
		[ "$rc" = 0 ] || sleep 0.2	# the server is down: retry shortly
	done
}

# deployer: a tl_deploy every few seconds, predict_b and predict_a in turn
deployer() {
	local k=0 m start rc
	while [ ! -e "$work/stop" ]; do
		k=$((k + 1))
		m=$([ $((k % 2)) = 1 ] && echo predict_b || echo predict_a)
		start=$(now)
		psql -X -v ON_ERROR_STOP=1 -qAt -d "$db" -c "SELECT tl_deploy('$m')" >/dev/null 2>"$work/deploy.$k.err"
		rc=$?
		echo "deploy.$k $start $(now) $rc" >>"$work/sessions"
		sleep "$deploy_every"
	done
}

# trainer: run 1, and when it has ended (succeeded, or interrupted by the
# restart), run 2; the ids go to $work/runs
trainer() {
	local r run status start rc k=0
	for r in 1 2; do
		run=
		while [ -z "$run" ] && [ ! -e "$work/stop" ]; do
			k=$((k + 1))
			start=$(now)
			run=$(psql -X -v ON_ERROR_STOP=1 -qAt -d "$db" -c "SELECT tl_train('finetune', 'soak', $ARGS,
				epochs => $epochs, model_name => 'soak_run$r', seed => $r)" 2>"$work/train.$k.err")
			rc=$?
			echo "train.$k $start $(now) $rc" >>"$work/sessions"
			[ -n "$run" ] || sleep 0.2
		done
		[ -n "$run" ] || return
		echo "$run" >>"$work/runs"
		status=running
		while [ "$status" = running ] || [ "$status" = queued ] || [ -z "$status" ]; do
			[ -e "$work/stop" ] && return
			sleep 0.2
			status=$(psql -X -qAt -d "$db" -c "SELECT tl_run_status($run)" 2>/dev/null)
		done
		echo "$run $status" >>"$work/trainer.log"
	done
}

# the clients and the deployer first; training once every client has answered
t0=$SECONDS
for n in $(seq 1 $clients); do
	client "$n" & bg_pids+=($!)
done
deployer & bg_pids+=($!)
for ((i = 0; i < 600; i++)); do
	[ "$(cat "$work"/client*.out 2>/dev/null | cut -d'|' -f2 | sort -u | wc -l)" = $clients ] && break
	sleep 0.1
done
trainer & bg_pids+=($!)

# the restart in the middle: once run 1 has finished two epochs and either
# 15 s of load have passed or a third of its epochs are done, so that it is
# interrupted mid-run however fast this machine trains.  Polled inside one
# statement (each loop step sees a new snapshot): a new connection per poll
# can take seconds under this load, long enough for the run to finish.
for ((i = 0; i < 600; i++)); do [ -s "$work/runs" ] && break; sleep 0.1; done
run1=$(head -n 1 "$work/runs" 2>/dev/null)
before=$(q -c "DO \$\$ DECLARE t0 timestamptz := clock_timestamp() - interval '$((SECONDS - t0)) s'; BEGIN
	WHILE clock_timestamp() < t0 + interval '90 s' AND NOT EXISTS (SELECT FROM tl_runs WHERE id = ${run1:-0}
		AND (status NOT IN ('queued', 'running') OR (epochs_done >= 2
			 AND (clock_timestamp() >= t0 + interval '15 s' OR epochs_done >= $epochs / 3)))) LOOP
		PERFORM pg_sleep(0.05);
	END LOOP;
END \$\$" -c "SELECT status || ' with ' || epochs_done || ' of $epochs epochs done' FROM tl_runs WHERE id = ${run1:-0}")
restart_begin=$(now)
load_before=$((SECONDS - t0))
tl_as_server pg_ctl -D "$TL_CLUSTER/data" -l "$log" -m immediate -w -t 60 restart >"$work/restart.out" 2>&1
server_up || { echo "Bail out! the server did not come back after the restart"; exit 1; }
restart_end=$(now)
echo "# restart after $load_before s of load, run $run1 was $before; took $(awk "BEGIN { printf \"%.1f\", $restart_end - $restart_begin }") s"
ok 0 "pg_ctl restart -m immediate in the middle of the load; the server is back"

t_restart=$SECONDS

# go on until run 2 has ended, 20 s have passed since the restart and every
# client has worked after it
wait_for "SELECT count(*) = 2 AND bool_and(status NOT IN ('queued', 'running')) FROM tl_runs" 150
ok $? "both runs ended while the load went on (run 2 back to back with run 1)"
q -c "SELECT pg_postmaster_start_time()" >"$work/new_start"
for ((i = 0; i < 300; i++)); do
	after=$(grep -lF "$(cat "$work/new_start")" "$work"/client*.out 2>/dev/null | wc -l)
	[ "$after" = $clients ] && [ $((SECONDS - t_restart)) -ge 20 ] && break
	sleep 0.1
done
stop_load
ok $? "clients, deployer and trainer stopped when asked"
echo "# load ran $((SECONDS - t0)) s: $(grep -c '^deploy' "$work/sessions") deployments, $(grep -c '^client' "$work/sessions") client sessions"

# ---- runs: resume what the restart interrupted
interrupted=0
bad_runs=""
for run in $(q -c "SELECT id FROM tl_runs ORDER BY id"); do
	status=$(q -c "SELECT tl_run_status($run)")
	if [ "$status" = interrupted ]; then
		interrupted=$((interrupted + 1))
		q -c "SELECT tl_resume($run, wait => true)" >/dev/null 2>&1
		final=$(q -c "SELECT status || '|' || coalesce(error, '') FROM tl_runs WHERE id = $run")
		echo "# run $run: interrupted, after tl_resume: $final"
		case $final in
		"succeeded|") ;;
		failed\|?*) ;;
		*) bad_runs="$bad_runs $run:$final" ;;
		esac
	else
		echo "# run $run: $status, $(q -c "SELECT epochs_done || ' epochs in ' || round(extract(epoch FROM finished - started)) || ' s' FROM tl_runs WHERE id = $run")"
		[ "$status" = succeeded ] || bad_runs="$bad_runs $run:$status"
	fi
done
is "$(q -c "SELECT count(*) FROM tl_runs WHERE status IN ('queued', 'running')")" 0 "no run is left queued or running"
[ "$interrupted" -ge 1 ]
ok $? "the restart interrupted a run ($interrupted)"
is "$bad_runs" "" "the interrupted run ended succeeded after tl_resume (or failed with a reason), the other succeeded"

# ---- clients: errors
# A session ended with an error is expected only if it overlapped the
# restart, psql stopped on an error (exit status 2: connection lost while
# idle or connecting, 3: while a statement ran) and every line it printed is
# about the lost or refused connection.
conn_lost='^(psql: error: )?(connection to server .*failed: .*|WARNING:  terminating connection due to immediate shutdown command|FATAL:  the database system is (shutting down|starting up|not yet accepting connections|in recovery mode)|server closed the connection unexpectedly|	This probably means the server terminated abnormally|	before or while processing the request\.|connection to server was lost|no connection to the server|could not (send|receive) data (to|from) server: .*|	Is the server running locally and accepting connections on that socket\?|DETAIL:  Consistent recovery state has not been yet reached\.)$'
expected=0
unexpected=0
: >"$work/unexpected"
while read -r name start end rc; do
	err=$work/$name.err
	[ "$rc" = 0 ] && ! [ -s "$err" ] && continue
	if { [ "$rc" = 2 ] || [ "$rc" = 3 ]; } && awk "BEGIN { exit !($start < $restart_end && $end > $restart_begin) }" &&
		! grep -Evq "$conn_lost" "$err"; then
		expected=$((expected + 1))
	else
		unexpected=$((unexpected + 1))
		{ echo "$name (exit $rc):"; head -n 5 "$err"; } >>"$work/unexpected"
	fi
done <"$work/sessions"
echo "# $expected sessions lost their connection at the restart"
is "$unexpected" 0 "no client, deploy or training call had an error other than the connection loss at the restart"
[ "$unexpected" = 0 ] || head -n 30 "$work/unexpected" | sed 's/^/#   /'

# ---- clients: answers
grep -h '^P|' "$work"/client*.out | cut -d'|' -f2- | tr '|' '\t' >"$work/predictions.tsv"
grep -h '^E|' "$work"/client*.out | cut -d'|' -f2- | tr '|' '\t' >"$work/evaluations.tsv"
psql -X -q -d "$db" -v ON_ERROR_STOP=1 \
	-c "CREATE TABLE soak_seen (client int, stmt text, model text, postmaster timestamptz, id bigint, class text, proba jsonb)" \
	-c "CREATE TABLE soak_seen_eval (client int, stmt text, model text, postmaster timestamptz, eval jsonb)" \
	-c "\\copy soak_seen FROM '$work/predictions.tsv'" \
	-c "\\copy soak_seen_eval FROM '$work/evaluations.tsv'" &&
	[ -s "$work/predictions.tsv" ] && [ -s "$work/evaluations.tsv" ]
ok $? "the clients' answers load ($(wc -l <"$work/predictions.tsv") predictions, $(wc -l <"$work/evaluations.tsv") evaluations)"
is "$(q -c "SELECT count(DISTINCT client) FILTER (WHERE postmaster < '$(cat "$work/new_start")')
		|| ' ' || count(DISTINCT client) FILTER (WHERE postmaster = '$(cat "$work/new_start")')
		|| ' ' || count(DISTINCT model) FROM soak_seen")" "$clients $clients 2" \
	"every client predicted before and after the restart, and saw both models deployed"
is "$(q -c "SELECT count(*) FROM (SELECT FROM soak_seen GROUP BY client, stmt HAVING count(*) <> 25) c")" 0 \
	"every prediction statement returned all 25 images"
is "$(q -c "SELECT count(*) FROM soak_seen s WHERE NOT EXISTS
		(SELECT FROM soak_ref r WHERE r.id = s.id AND r.class = s.class AND r.proba = s.proba)")" 0 \
	"every prediction and probability equals what one of the two models gives alone"
is "$(q -c "SELECT count(*) FROM soak_seen s LEFT JOIN soak_ref r USING (model, id)
		WHERE r.class IS DISTINCT FROM s.class OR r.proba IS DISTINCT FROM s.proba")" 0 \
	"and what the model deployed in the statement's snapshot gives alone"
is "$(q -c "SELECT count(*) FROM soak_seen_eval s LEFT JOIN soak_ref_eval r USING (model)
		WHERE r.eval IS DISTINCT FROM s.eval")" 0 \
	"every tl_evaluate equals the reference evaluation of the model it evaluated"
echo "# evaluations per model: $(q -c "SELECT string_agg(model || ' ' || n, ', ') FROM
	(SELECT model, count(*) n FROM soak_seen_eval GROUP BY model ORDER BY model) c")"

# ---- the server
# -m immediate logs "received immediate shutdown request" and, starting
# again, "automatic recovery in progress", but no crash report; a crash
# would log the latter a second time.  SIGKILL to "recalcitrant children"
# would mean a process ignored the shutdown's SIGQUIT for 5 s.
crashes=$(crash_log_lines "$log" "$log_start"; tail -c +$((log_start + 1)) "$log" | grep -F recalcitrant)
is "$crashes" "" "the server log since the test's start has no crash report"
is "$(tail -c +$((log_start + 1)) "$log" | grep -cE 'received immediate shutdown request|automatic recovery in progress')" 2 \
	"and one shutdown and one recovery: the restart's"
dropdb "$db"
ok $? "dropped the test database"
elapsed=$SECONDS
[ "$elapsed" -lt 300 ]
ok $? "the test took less than 300 s ($elapsed s)"
tap_exit
