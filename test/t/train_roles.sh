#!/usr/bin/env bash
# Training runs and other roles (issue 16): the NOTIFY payloads on channel
# tl_train carry only the run id (LISTEN needs no privilege); a failure
# while recording a failed or cancelled run still ends the run with its
# status and both errors (transfer.debug_pause_at's record_failure forces
# it); a dropped role's runs don't break tl_runs, tl_plot or tl_train for
# the other roles, and a new role of the same name doesn't inherit them;
# no role can insert a run row with an id of its choosing; a worker waiting
# for a transaction left open gives up after transfer.train_start_timeout.
# Prints TAP; run by scripts/test.sh with the throwaway cluster's environment
# (PG*, TL_CLUSTER).
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
db=tl_train_roles
. test/t/train_lib.bash

echo "1..20"

# 4 train and 2 val images per class of hymenoptera, tiny network
src=$TL_REPO/build/test-data/train-roles
hymenoptera_subset "$src" 4 2
dropdb --if-exists "$db" >/dev/null 2>&1
for r in alice bob carol; do tl_psql -c "DROP ROLE IF EXISTS $r" >/dev/null 2>&1; done
createdb "$db" && q -c 'CREATE EXTENSION transfer' \
	&& q -c "SELECT count(*) FROM tl_import_folder('tiny', '$src')" >/dev/null \
	&& q -c "CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; CREATE ROLE carol LOGIN;
			 GRANT SELECT ON tl_images TO alice, bob, carol;
			 GRANT SELECT, INSERT ON tl_stored_models, tl_model_tensors TO alice, bob, carol;
			 GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO alice, bob, carol"
ok $? "database with 12 images and roles alice, bob, carol"
ARGS="from_scratch => true, base_width => 8, image_size => 32, batch_size => 4, epochs => 1, seed => 3"

# ---- NOTIFY: only the run id
out=$(psql -X -d "$db" -U alice -c "LISTEN tl_train" \
	-c "SELECT tl_train('finetune', 'tiny', $ARGS, wait => true)" -c "SELECT pg_sleep(0.5)" -c "SELECT 1" 2>&1)
payloads=$(echo "$out" | sed -n 's/^Asynchronous notification "tl_train" with payload "\(.*\)" received.*/\1/p')
is "$(echo "$payloads" | grep -c .)" 2 \
	"a listener got a notification per committed epoch row (the last one with the end of the run)"
is "$(echo "$payloads" | grep -cvE '^\{"run": [0-9]+\}$')" 0 "every payload is just {\"run\": id}: no loss, accuracy, status, model or error"

# ---- a failure while recording a cancelled run
q -c "ALTER DATABASE $db SET transfer.debug_pause_at = 'load,record_failure'" >/dev/null
run=$(psql -X -At -d "$db" -U alice -c "SELECT tl_train('finetune', 'tiny', $ARGS)")
wait_for "SELECT count(*) = 1 FROM pg_stat_activity WHERE query = 'training run: paused at load'" 60
ok $? "the worker of run $run is paused while loading the images"
psql -X -At -d "$db" -U alice -c "SELECT tl_cancel($run)" >/dev/null
is "$(psql -X -At -d "$db" -U alice -c "SELECT tl_wait($run, '1 min')")" cancelled \
	"recording the cancel failed, yet the run ends cancelled (not running, not interrupted)"
is "$(q -c "SELECT error FROM tl_runs WHERE id = $run")" \
	"cancelled by request (and recording it failed: failing at record_failure (transfer.debug_pause_at))" \
	"its error names both the cause and the failure to record it"
q -c "ALTER DATABASE $db RESET transfer.debug_pause_at" >/dev/null

# ---- a dropped role
bob_trains() {	# status of a new run of bob's, waited for
	local run
	run=$(psql -X -At -d "$db" -U bob -c "SELECT tl_train('finetune', 'tiny', $ARGS, wait => true)" 2>/dev/null)
	psql -X -At -d "$db" -U bob -c "SELECT status FROM tl_runs WHERE id = '${run:-0}'" 2>&1
}
q -c "SET ROLE carol; SELECT tl_train('finetune', 'tiny', $ARGS, model_name => 'c', wait => true)" >/dev/null 2>&1
is "$(q -c "SELECT count(*) FROM tl_runs WHERE role = 'carol' AND status = 'succeeded'")" 1 "carol trained a run"
q -c "DROP OWNED BY carol; DROP ROLE carol"
ok $? "DROP OWNED BY carol; DROP ROLE carol"
is "$(psql -X -At -d "$db" -U alice -c "SELECT count(*) FROM tl_runs" 2>&1)" 2 \
	"alice still counts tl_runs (her own 2 runs; carol's is nobody's)"
is "$(psql -X -At -d "$db" -U bob -c "SELECT count(*) FROM tl_runs" 2>&1)" 0 "so does bob (none)"
ok "$(psql -X -At -d "$db" -U alice -c "SELECT count(*) FROM tl_plot(1)" >/dev/null 2>&1; echo $?)" "alice can still call tl_plot"
is "$(bob_trains)" succeeded \
	"bob can still train"
q -c "CREATE ROLE carol LOGIN"
is "$(psql -X -At -d "$db" -U carol -c "SELECT count(*) FROM tl_runs" 2>&1)" 0 \
	"a new role named carol does not inherit the dropped carol's run"

# ---- no explicit ids, no id or owner changes
next=$(q -c "SELECT last_value + 1 FROM tl_runs_id_seq")
err=$(psql -X -At -d "$db" -U alice -c "INSERT INTO tl_runs (id, dataset, mode, args) VALUES ($next, 'tiny', 'finetune', '{}')" 2>&1)
is "$(echo "$err" | head -n 1)" 'ERROR:  new row violates row-level security policy for table "tl_runs"' \
	"alice can't insert a run with the id of the next run"
is "$(psql -X -At -d "$db" -U alice -c "UPDATE tl_runs SET id = id + 1000" 2>&1)" \
	"ERROR:  permission denied for table tl_runs" "nor move her run to another id"
is "$(bob_trains)" succeeded \
	"bob's next run trains"


# ---- wait => false from a transaction left open: the worker gives up
q -c "ALTER DATABASE $db SET transfer.train_start_timeout = '1s'" >/dev/null
psql -X -At -d "$db" -U alice -c "BEGIN" -c "SELECT tl_train('finetune', 'tiny', $ARGS)" \
	-c "SELECT pg_sleep(4)" -c "COMMIT" >"$TL_REPO/build/train-roles-open.out" 2>&1 &
holder=$!
sleep 1
wait_for "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'transfer training worker'" 10
ok $? "the worker waiting for an open transaction exits after transfer.train_start_timeout"
wait "$holder"
run=$(grep -m1 -E "^[0-9]+$" "$TL_REPO/build/train-roles-open.out")
q -c "ALTER DATABASE $db RESET transfer.train_start_timeout" >/dev/null
is "$(psql -X -At -d "$db" -U alice -c "SELECT tl_run_status('$run')" -c "SELECT ': ' || error FROM tl_runs WHERE id = '$run'" 2>&1 | paste -sd '')" \
	"interrupted: the training worker stopped before the run started (server restart, crash or termination, or the transaction that called tl_train stayed open longer than transfer.train_start_timeout)" \
	"once committed, the run is interrupted and says why"
psql -X -At -d "$db" -U alice -c "SELECT tl_resume('$run', wait => true)" >/dev/null 2>&1
is "$(q -c "SELECT status FROM tl_runs WHERE id = '$run'")" succeeded "tl_resume trains it"

dropdb "$db" >/dev/null 2>&1
ok $? "dropped the test database"
for r in alice bob carol; do tl_psql -c "DROP ROLE IF EXISTS $r" >/dev/null 2>&1; done
tap_exit
