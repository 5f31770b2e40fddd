#!/usr/bin/env bash
# Training under faults: a training worker killed with kill -9, the server
# restarted with pg_ctl restart -m immediate mid-run, tl_cancel at random
# points, every background worker slot taken.  Each must leave the database
# consistent and no run stuck in running; interrupted runs resume to exactly
# the result of an uninterrupted run (same epochs, same weights).  Also: the
# worker shows in pg_stat_activity and tl_progress while it trains, and
# wait => true streams the tutorial's log lines.
# Prints TAP; run by scripts/test.sh with the throwaway cluster's environment
# (PG*, TL_CLUSTER, TL_TEST_IMAGES).
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
db=tl_train_faults
. test/t/train_lib.bash

echo "1..35"

dropdb --if-exists "$db" >/dev/null 2>&1
createdb "$db" && q -c 'CREATE EXTENSION transfer' \
	&& q -c "SELECT count(*) FROM tl_import_folder('faults', '$TL_TEST_IMAGES')" >/dev/null 2>&1
ok $? "database with the test image subset"

# Long enough to be interrupted (about half a second per epoch, most of it
# the checkpoint), small enough to keep the test short.
ARGS="from_scratch => true, base_width => 32, image_size => 64, batch_size => 3, epochs => 12, seed => 11"
# ---- the reference: uninterrupted, waited for, with the tutorial's log
log=$(q -c "SELECT tl_train('finetune', 'faults', $ARGS, model_name => 'ref', wait => true)" 2>&1)
ref=$(echo "$log" | tail -n 1)
is "$(q -c "SELECT status FROM tl_runs WHERE id = $ref")" "succeeded" "reference run succeeded"
is "$(echo "$log" | grep -cE '^NOTICE:  (train|val) Loss: [0-9]+\.[0-9]{4} Acc: [01]\.[0-9]{4}$')" 24 \
	"wait => true streams one 'train Loss: x Acc: y' NOTICE per epoch phase"
is "$(echo "$log" | grep -c '^NOTICE:  Epoch [0-9]*/11$')" 12 "and an 'Epoch i/11' line per epoch"
total_tensors=$(q -c "SELECT count(*) FROM tl_model_tensors WHERE model_id = (SELECT model_id FROM tl_runs WHERE id = $ref)")

# ---- kill -9 of the worker mid-run
run=$(q -c "SELECT tl_train('finetune', 'faults', $ARGS, model_name => 'killed')")
wait_for "SELECT epochs_done >= 2 FROM tl_runs WHERE id = $run" 60
ok $? "run $run is training"
pid=$(q -c "SELECT pid FROM tl_runs WHERE id = $run")
is "$(q -c "SELECT backend_type || ' / ' || application_name || ' / ' || (query LIKE 'training run $run: epoch %')
			FROM pg_stat_activity WHERE pid = $pid")" \
	"transfer training worker / transfer training worker / true" "the worker is recognisable in pg_stat_activity"
# Polled: elapsed is shown in whole seconds, and on a fast machine two epochs
# can take less than one.
wait_for "SELECT status = 'running' AND epochs = 12 AND epoch BETWEEN 1 AND 11 AND phase IN ('train', 'val')
			AND batches > 0 AND batch BETWEEN 0 AND batches AND elapsed > '0' AND eta IS NOT NULL
			FROM tl_progress WHERE run = $run" 20
ok $? "tl_progress shows epoch, phase, batch of batches, elapsed and ETA"
resets=$(grep -c "all server processes terminated; reinitializing" "$TL_CLUSTER/server.log")
# The run's lock is out of SQL's reach: the same two-int key from SQL is another lock.
is "$(q -c "SELECT pg_try_advisory_lock(1953264754, $run::int4) AND pg_advisory_unlock(1953264754, $run::int4)")" t \
	"pg_advisory_lock with the run's key neither blocks on nor takes the worker's lock"
kill -9 "$pid"
for ((i = 0; i < 300; i++)); do
	[ "$(grep -c "all server processes terminated; reinitializing" "$TL_CLUSTER/server.log")" -gt "$resets" ] && break
	sleep 0.1
done
server_up
ok $? "the postmaster reinitialised after the kill and is back"
is "$(q -c "SELECT status FROM tl_runs WHERE id = $run")" "running" "the killed run's row still says running"
is "$(q -c "SELECT tl_run_status($run)")" "interrupted" "tl_run_status sees no worker and marks it interrupted"
is "$(q -c "SELECT status || ' ' || (error IS NOT NULL) FROM tl_runs WHERE id = $run")" "interrupted true" \
	"the run is interrupted, with a reason"
is "$(q -c "SELECT epoch >= 1 FROM tl_run_checkpoints WHERE run = $run")" t "a checkpoint of a finished epoch exists"
is "$(q -c "SELECT count(*) FROM tl_stored_models WHERE name = 'killed'")" 0 "no model was written"
q -c "SELECT tl_resume($run, wait => true)" >/dev/null 2>&1
is "$(q -c "SELECT status || ' ' || resumes FROM tl_runs WHERE id = $run")" "succeeded 1" "tl_resume finished it"
is "$(same_as_ref "$run")" "24 24 $total_tensors" "resumed run = uninterrupted run: every epoch row and every tensor"
is "$(q -c "SELECT count(*) FROM tl_run_checkpoints WHERE run = $run")" 0 "its checkpoint is gone"

# ---- pg_ctl restart -m immediate mid-run
run=$(q -c "SELECT tl_train('finetune', 'faults', $ARGS, model_name => 'restarted')")
wait_for "SELECT epochs_done >= 3 FROM tl_runs WHERE id = $run" 60
ok $? "run $run is training"
tl_as_server pg_ctl -D "$TL_CLUSTER/data" -l "$TL_CLUSTER/server.log" -m immediate -w -t 60 restart >/dev/null 2>&1
server_up
ok $? "server restarted with -m immediate"
is "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'transfer training worker'")" 0 \
	"no worker came back by itself (BGW_NEVER_RESTART)"
is "$(q -c "SELECT tl_run_status($run)")" "interrupted" "the run is interrupted"
# The sequence resumes past the values it had logged ahead (docs/training.md):
# the next id may jump, but is larger than every run's and unused.
next=$(q -c "SELECT nextval('tl_runs_id_seq')")
is "$(q -c "SELECT $next > max(id) AND $next > $run FROM tl_runs")" t "the next run id after the restart ($next) is larger than every run's"
q -c "SELECT tl_resume($run)" >/dev/null
ok $? "tl_resume starts it again in the background"
is "$(q -c "SELECT tl_wait($run, '5 min')")" "succeeded" "and it succeeds"
is "$(same_as_ref "$run")" "24 24 $total_tensors" "restarted run = uninterrupted run"

# ---- tl_cancel at random points
bad=0
for i in 1 2 3 4 5; do
	run=$(q -c "SELECT tl_train('finetune', 'faults', $ARGS, model_name => 'cancel-$i')")
	sleep "$(awk -v r=$RANDOM -v i=$i 'BEGIN { printf "%.2f", (r / 32768.0) * i * 0.8 }')"
	q -c "SELECT tl_cancel($run)" >/dev/null
	status=$(q -c "SELECT tl_wait($run, '2 min')")
	models=$(q -c "SELECT count(*) FROM tl_stored_models WHERE name = 'cancel-$i'")
	ckpt=$(q -c "SELECT count(*) FROM tl_run_checkpoints WHERE run = $run")
	case "$status/$models/$ckpt" in
	cancelled/0/0 | succeeded/1/0) ;;
	*) echo "# cancel $i: status $status, models $models, checkpoints $ckpt"; bad=$((bad + 1)) ;;
	esac
done
is "$bad" 0 "five cancels at random points: each run ends cancelled without a model (or had already succeeded)"
is "$(q -c "SELECT count(*) FROM tl_runs WHERE status IN ('queued', 'running')")" 0 "no run is left queued or running"
is "$(q -c "SELECT count(*) FROM tl_run_progress")" 0 "no progress row is left behind"

# ---- the server survived all of it
! grep -E "terminated by signal (6|11)|was terminated by exception" "$TL_CLUSTER/server.log" >/dev/null
ok $? "the server log shows no crash other than the kill -9"

# ---- every background worker slot taken, in a cluster of its own: the
# logical replication launcher takes one of the two slots, an open
# transaction's run the other.
(
	slots=$TL_REPO/build/test-cluster-slots
	tl_cluster_start "$slots" "max_worker_processes = 2" "max_parallel_workers = 0" >/dev/null 2>&1 || exit 1
	trap 'tl_cluster_stop "$slots"' EXIT
	tl_psql -c 'CREATE EXTENSION transfer' \
		&& tl_psql -c "SELECT count(*) FROM tl_import_folder('faults', '$TL_TEST_IMAGES')" >/dev/null 2>&1
	echo "setup $?"
	# session 1 holds the last slot: its worker waits for the open transaction
	psql -X -q -c "BEGIN; SELECT tl_train('finetune', 'faults', $ARGS); SELECT pg_sleep(4); ROLLBACK;" >/dev/null 2>&1 &
	holder=$!
	for ((i = 0; i < 50; i++)); do
		[ "$(psql -X -At -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'transfer training worker'")" = 1 ] && break
		sleep 0.1
	done
	err=$(psql -X -At -c "SELECT tl_train('finetune', 'faults', $ARGS)" 2>&1)
	echo "error $(echo "$err" | head -n 1)"
	echo "hint $(echo "$err" | grep HINT)"
	echo "runs $(psql -X -At -c "SELECT count(*) FROM tl_runs")"
	wait "$holder"
	for ((i = 0; i < 50; i++)); do
		[ "$(psql -X -At -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'transfer training worker'")" = 0 ] && break
		sleep 0.1
	done
	echo "after $(psql -X -At -c "SELECT count(*) FROM tl_runs") $(psql -X -At -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'transfer training worker'")"
) >"$TL_REPO/build/slots.out" 2>&1
slots_out=$(cat "$TL_REPO/build/slots.out")
is "$(echo "$slots_out" | sed -n 's/^setup //p')" 0 "a cluster with max_worker_processes = 2"
is "$(echo "$slots_out" | sed -n 's/^error //p')" "ERROR:  could not start training worker" "no free slot: could not start training worker"
is "$(echo "$slots_out" | sed -n 's/^hint //p')" "HINT:  You may need to increase max_worker_processes." "the hint names the setting"
is "$(echo "$slots_out" | sed -n 's/^runs //p')" 0 "no run row is left behind"
is "$(echo "$slots_out" | sed -n 's/^after //p')" "0 0" "the rolled-back holder left no run and no worker"

dropdb "$db" >/dev/null 2>&1
ok $? "dropped the test database"
tap_exit
