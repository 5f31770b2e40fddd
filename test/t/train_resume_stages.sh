#!/usr/bin/env bash
# Resume after a kill -9 of the training worker at each stage of a run:
# while it loads the images, in epoch 0's train phase, in epoch 0's val
# phase, while it saves the epoch checkpoint and while it stores the final
# model.  transfer.debug_pause_at (a superuser setting for tests) makes the
# worker wait at the stage, where it is killed; the postmaster
# crash-restarts, the run is interrupted, and tl_resume must finish it with
# the same epochs table and weights as an uninterrupted run with the same
# seed (same thread count: bitwise).  A killed resume point at epoch -1 (the
# run's initial checkpoint) used to fail with "N of the M images of the run
# are gone": the checkpoint's image ids were read into memory freed at the
# end of the transaction.  The dataset has more images than one fetch (32)
# so that the reload by ids is exercised over several chunks.
# Prints TAP; run by scripts/test.sh with the throwaway cluster's environment
# (PG*, TL_CLUSTER).
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
db=tl_resume_stages
. test/t/train_lib.bash
resets() { grep -c "all server processes terminated; reinitializing" "$TL_CLUSTER/server.log"; }

stages="load epoch0_train epoch0_val checkpoint store_model"
echo "1..$((3 + 6 * 5))"

# 40 train and 30 val images of hymenoptera (two classes), tiny network
src=$TL_REPO/build/test-data/resume-stages
hymenoptera_subset "$src" 20 15
dropdb --if-exists "$db" >/dev/null 2>&1
createdb "$db" && q -c 'CREATE EXTENSION transfer' \
	&& q -c "SELECT count(*) FROM tl_import_folder('stages', '$src')" >/dev/null
ok $? "database with 70 images"

ARGS="from_scratch => true, base_width => 8, image_size => 32, batch_size => 8, epochs => 2, seed => 5"
ref=$(q -c "SELECT tl_train('finetune', 'stages', $ARGS, model_name => 'ref', wait => true)" 2>/dev/null | tail -n 1)
is "$(q -c "SELECT status FROM tl_runs WHERE id = '$ref'")" succeeded "the uninterrupted reference run succeeded"
tensors=$(q -c "SELECT count(*) FROM tl_model_tensors WHERE model_id = (SELECT model_id FROM tl_runs WHERE id = $ref)")

for stage in $stages; do
	q -c "ALTER DATABASE $db SET transfer.debug_pause_at = '$stage'" >/dev/null
	run=$(q -c "SELECT tl_train('finetune', 'stages', $ARGS, model_name => 'killed-$stage')")
	wait_for "SELECT count(*) = 1 FROM pg_stat_activity
			  WHERE backend_type = 'transfer training worker' AND query = 'training run: paused at $stage'" 120
	ok $? "$stage: the worker of run $run is paused at the stage"
	pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'transfer training worker'")
	before=$(resets)
	q -c "ALTER DATABASE $db RESET transfer.debug_pause_at" >/dev/null
	kill -9 "$pid"
	for ((i = 0; i < 300; i++)); do
		[ "$(resets)" -gt "$before" ] && break
		sleep 0.1
	done
	server_up
	ok $? "$stage: killed with -9, the server reinitialised and is back"
	is "$(q -c "SELECT tl_run_status($run)")" interrupted "$stage: the run is interrupted"
	is "$(q -c "SELECT count(*) FROM tl_stored_models WHERE name = 'killed-$stage'")" 0 "$stage: no model was stored"
	q -c "SELECT tl_resume($run, wait => true)" >/dev/null 2>&1
	is "$(q -c "SELECT status || ' ' || coalesce(error, '') FROM tl_runs WHERE id = $run")" "succeeded " \
		"$stage: tl_resume finished it"
	is "$(same_as_ref "$run")" "4 4 $tensors" "$stage: same epochs table and weights as the uninterrupted run"
done

dropdb "$db" >/dev/null 2>&1
ok $? "dropped the test database"
tap_exit
