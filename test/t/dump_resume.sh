#!/usr/bin/env bash
# pg_dump keeps an interrupted run's resume point: a run interrupted after
# its first epoch (its worker terminated), dumped with pg_dump -Fc and
# restored into a fresh database, resumes with tl_resume from the epoch
# after its checkpoint, not from epoch 0, and ends exactly like an
# uninterrupted run with the same arguments.
# Prints TAP; run by scripts/test.sh with the throwaway cluster's environment
# (PG*, TL_CLUSTER, TL_TEST_IMAGES).
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
. test/t/tap.bash

src=tl_dump_resume_src
dst=tl_dump_resume_dst
work=$TL_REPO/build/test-data/dump-resume
q() { tl_psql -At -d "$src" "$@"; }
d() { tl_psql -At -d "$dst" "$@"; }

echo "1..11"
rm -rf "$work" && mkdir -p "$work"
dropdb --if-exists $src 2>/dev/null
dropdb --if-exists $dst 2>/dev/null
createdb $src && q -c 'CREATE EXTENSION transfer' &&
	q -c "SELECT count(*) FROM tl_import_folder('resume', '${TL_TEST_IMAGES:?}')" >/dev/null 2>&1
ok $? "source database with the test image subset"

ARGS="from_scratch => true, base_width => 32, image_size => 64, batch_size => 3, epochs => 6, seed => 7"
ref=$(q -c "SELECT tl_train('finetune', 'resume', $ARGS, model_name => 'ref', wait => true)" 2>/dev/null)
is "$(q -c "SELECT status FROM tl_runs WHERE id = ${ref:-0}")" succeeded "an uninterrupted reference run"

# ---- interrupt a run after its first epoch: terminate its worker ----
run=$(q -c "SELECT tl_train('finetune', 'resume', $ARGS, model_name => 'resumed')")
wait_for "SELECT EXISTS (SELECT FROM tl_run_checkpoints WHERE run = $run AND epoch >= 0)" 120
ok $? "run $run finished an epoch and wrote its checkpoint"
q -c "SELECT pg_terminate_backend(pid) FROM tl_runs WHERE id = $run" >/dev/null
wait_for "SELECT tl_run_status($run) = 'interrupted'" 30
ok $? "its worker terminated: the run is interrupted"
last=$(q -c "SELECT epoch FROM tl_run_checkpoints WHERE run = $run")
epochs=$(q -c "SELECT count(*) FROM tl_run_epochs WHERE run = $run AND phase = 'val'")
[ -n "$last" ] && [ "$last" -ge 0 ] && [ "$last" -lt 5 ] && [ "$epochs" = $((last + 1)) ]
ok $? "the checkpoint is of epoch $last, the last finished one, before the end"

# ---- dump, restore into a fresh database ----
pg_dump -Fc -f "$work/db.dump" $src && createdb $dst && pg_restore --exit-on-error -d $dst "$work/db.dump"
ok $? "pg_dump -Fc and pg_restore into a fresh database"
is "$(d -c "SELECT c.epoch || ' ' || (SELECT count(*) FROM tl_run_checkpoint_tensors t WHERE t.run = c.run)
	FROM tl_run_checkpoints c WHERE run = $run")" \
	"$(q -c "SELECT c.epoch || ' ' || (SELECT count(*) FROM tl_run_checkpoint_tensors t WHERE t.run = c.run)
	FROM tl_run_checkpoints c WHERE run = $run")" "the restored database has the run's checkpoint and its tensors"
is "$(d -c "SELECT md5(string_agg(md5(t::text), '' ORDER BY part, key)) FROM tl_run_checkpoint_tensors t WHERE run = $run")" \
	"$(q -c "SELECT md5(string_agg(md5(t::text), '' ORDER BY part, key)) FROM tl_run_checkpoint_tensors t WHERE run = $run")" \
	"bit for bit"

# ---- resume the restored run ----
# The rows of the finished epochs as restored, with the restore's xmin: an
# epoch trained again would write its rows anew (new xmin, new seconds).
finished="SELECT xmin, epoch, phase, loss, acc, seconds FROM tl_run_epochs WHERE run = $run AND epoch <= $last ORDER BY epoch, phase"
before=$(d -c "$finished")
d -c "SELECT tl_resume($run, wait => true)" >/dev/null 2>&1
is "$(d -c "SELECT status || ' ' || resumes || ' ' || epochs_done FROM tl_runs WHERE id = $run")" "succeeded 1 6" \
	"tl_resume in the restored database: the run succeeds with all 6 epochs"
[ "$(echo "$before" | grep -c .)" = $((2 * (last + 1))) ]
is "$?|$(d -c "$finished")" "0|$before" \
	"it resumed after epoch $last: the rows of epochs 0..$last are the restored ones, not trained again"
# Same arguments and seed: the resumed run ends exactly like the reference.
ref_model=$(q -c "SELECT md5(string_agg(data::text, '' ORDER BY key)) FROM tl_model_tensors
	WHERE model_id = (SELECT model_id FROM tl_runs WHERE id = $ref)")
is "$(d -c "SELECT md5(string_agg(data::text, '' ORDER BY key)) FROM tl_model_tensors
	WHERE model_id = (SELECT model_id FROM tl_runs WHERE id = $run)")|$(d -c "SELECT count(*) FROM tl_run_checkpoints")" \
	"$ref_model|0" "its model equals the uninterrupted run's bit for bit, and its checkpoint is gone"

[ -n "${TL_KEEP:-}" ] && tap_exit
dropdb $src && dropdb $dst
rm -rf "$work"
tap_exit
