#!/usr/bin/env bash
# A feature_extractor run keeps as its best weights only fc and the BatchNorm
# running statistics, and lends the frozen backbone from the network when it
# checkpoints or stores them (src/pg/train/best.c).  Killed with -9 after a
# few epochs and resumed, it must end exactly as an uninterrupted run: the
# same epoch rows and the same stored tensors, the frozen ones included.
# Prints TAP; run by scripts/test.sh with the throwaway cluster's environment.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
db=tl_resume_feature
. test/t/train_lib.bash
resets() { grep -c "all server processes terminated; reinitializing" "$TL_CLUSTER/server.log"; }

echo "1..7"
src=$TL_REPO/build/test-data/resume-feature
hymenoptera_subset "$src" 20 15
dropdb --if-exists "$db" >/dev/null 2>&1
createdb "$db" && q -c 'CREATE EXTENSION transfer' \
	&& q -c "SELECT count(*) FROM tl_import_folder('fe', '$src')" >/dev/null \
	&& q -c "SELECT tl_train('finetune', 'fe', from_scratch => true, base_width => 8, image_size => 64,
			batch_size => 8, epochs => 1, seed => 2, model_name => 'fe-base', wait => true)" >/dev/null 2>&1
ok $? "database with 70 images and a base model"

ARGS="base_model => 'fe-base', image_size => 64, batch_size => 8, epochs => 10, seed => 9"
ref=$(q -c "SELECT tl_train('feature_extractor', 'fe', $ARGS, model_name => 'ref', wait => true)" 2>/dev/null | tail -n 1)
is "$(q -c "SELECT status FROM tl_runs WHERE id = '$ref'")" succeeded "the uninterrupted reference run succeeded"
tensors=$(q -c "SELECT count(*) FROM tl_model_tensors WHERE model_id = (SELECT model_id FROM tl_runs WHERE id = $ref)")
is "$(q -c "SELECT count(*) FILTER (WHERE a.data = b.data) || ' ' || count(*)
			FROM tl_model_tensors a JOIN tl_model_tensors b USING (key)
			WHERE a.model_id = (SELECT model_id FROM tl_runs WHERE id = $ref)
			  AND b.model_id = (SELECT id FROM tl_stored_models WHERE name = 'fe-base')
			  AND key NOT LIKE 'fc.%' AND key NOT LIKE '%running%'")" \
	"$(q -c "SELECT count(*) || ' ' || count(*) FROM tl_model_tensors
			WHERE model_id = (SELECT model_id FROM tl_runs WHERE id = $ref)
			  AND key NOT LIKE 'fc.%' AND key NOT LIKE '%running%'")" \
	"the stored model's frozen tensors are the base model's"

run=$(q -c "SELECT tl_train('feature_extractor', 'fe', $ARGS, model_name => 'killed')")
wait_for "SELECT epochs_done >= 2 FROM tl_runs WHERE id = $run" 120
pid=$(q -c "SELECT pid FROM tl_runs WHERE id = $run")
before=$(resets)
kill -9 "$pid"
for ((i = 0; i < 300; i++)); do
	[ "$(resets)" -gt "$before" ] && break
	sleep 0.1
done
server_up
is "$(q -c "SELECT tl_run_status($run)")" interrupted "killed with -9 after epoch 2, the run is interrupted"
is "$(q -c "SELECT epoch >= 1 FROM tl_run_checkpoints WHERE run = $run")" t "its checkpoint is of a finished epoch"
q -c "SELECT tl_resume($run, wait => true)" >/dev/null 2>&1
is "$(q -c "SELECT status || ' ' || coalesce(error, '') FROM tl_runs WHERE id = $run")" "succeeded " "tl_resume finished it"
is "$(same_as_ref "$run")" "20 20 $tensors" "same epoch rows and every tensor as the uninterrupted run"

dropdb "$db" >/dev/null 2>&1
tap_exit
