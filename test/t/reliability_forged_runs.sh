#!/usr/bin/env bash
# Forged training runs.  The run tables are granted to PUBLIC under row-level
# security (each role writes its own runs, since its worker runs as that
# role), so a role can edit its own run's arguments and resume point, or
# insert an "interrupted" run of its own making, and then call tl_resume.
# Those rows are input like any other.  As a plain LOGIN role:
#   * every argument tl_train refuses (zero or negative sizes, NaN rates, an
#     image_size or base_width out of range, incomplete arguments, a run over
#     transfer.train_memory_limit, more threads than transfer.train_threads)
#     is refused when resumed too, up front or as a failed run, never
#     trained with;
#   * a tampered resume point (truncated or reshaped tensors, a missing
#     tensor, a short generator state, image ids of another dataset or that
#     don't exist, an epoch past the end) fails the run with a message;
#   * no run is left queued or running, and no backend crashed (crash watch).
# Prints TAP.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
. test/t/reliability_lib.bash

db=tl_forged_runs
role=tl_forger
images=${TL_TEST_IMAGES:?TL_TEST_IMAGES names the ingestion test tree}
dropdb --if-exists $db 2>/dev/null
dropuser --if-exists $role 2>/dev/null
f() { tl_psql -At -U $role -d $db "$@"; }

arg_cases=(
	'epochs-0|{"epochs": 0}'
	'epochs-negative|{"epochs": -1}'
	'batch-0|{"batch_size": 0}'
	'step-0|{"step_size": 0}'
	'lr-nan|{"lr": "NaN"}'
	'lr-negative|{"lr": -1}'
	'momentum-negative|{"momentum": -0.5}'
	'gamma-0|{"gamma": 0}'
	'image-tiny|{"image_size": 1}'
	'image-large|{"image_size": 1100}'
	'width-0|{"base_width": 0}'
	'width-huge|{"base_width": 100000}'
	'seed-missing|{"seed": null}'
	'threads-many|{"threads": 8}'
	'conv-algorithm|{"conv_algorithm": "fft"}'
	'memory|{"image_size": 256, "batch_size": 32}'
	'base-model-gone|{"from_scratch": false, "base_model_id": 999999}'
)
ckpt_cases=(
	"tensor-truncated|UPDATE tl_run_checkpoint_tensors SET data = substr(data, 1, 7) WHERE run = RUN AND part = 'model' AND key = 'conv1.weight'"
	"tensor-reshaped|UPDATE tl_run_checkpoint_tensors SET shape = '{1000000,1000000}' WHERE run = RUN AND part = 'model' AND key = 'fc.weight'"
	"tensor-missing|DELETE FROM tl_run_checkpoint_tensors WHERE run = RUN AND part = 'model' AND key = 'bn1.running_var'"
	"tensor-nan|UPDATE tl_run_checkpoint_tensors SET data = decode(repeat('0000c07f', length(data) / 4), 'hex') WHERE run = RUN AND part = 'momentum'"
	"rng-short|UPDATE tl_run_checkpoints SET rng = '\\x00' WHERE run = RUN"
	"ids-foreign|UPDATE tl_run_checkpoints SET train_ids = ARRAY[-1, 999999999] WHERE run = RUN"
	"ids-empty|UPDATE tl_run_checkpoints SET train_ids = '{}', val_ids = '{}' WHERE run = RUN"
	"epoch-past-end|UPDATE tl_run_checkpoints SET epoch = 2147483647 WHERE run = RUN"
	"epoch-negative|UPDATE tl_run_checkpoints SET epoch = -5, best_epoch = -7 WHERE run = RUN"
	"epoch-at-end|UPDATE tl_runs SET args = args || '{\"epochs\": 1}' WHERE id = RUN"
	"classes-one|UPDATE tl_runs SET args = jsonb_set(args, '{classes}', '[\"ants\"]') WHERE id = RUN"
	"classes-null|UPDATE tl_runs SET args = jsonb_set(args, '{classes}', '[null, \"bees\"]') WHERE id = RUN"
	"classes-many|UPDATE tl_runs SET args = jsonb_set(args, '{classes}', (SELECT jsonb_agg(g::text) FROM generate_series(1, 5000) g)) WHERE id = RUN"
	"classes-not-array|UPDATE tl_runs SET args = jsonb_set(args, '{classes}', '{\"a\": 1}') WHERE id = RUN"
)
echo "1..$(( 5 + ${#arg_cases[@]} + ${#ckpt_cases[@]} + 3 ))"

# The dataset, a plain role allowed to read it and store models, and a small
# memory limit so an over-the-limit run is cheap to describe.
createdb $db && q -d $db -c 'CREATE EXTENSION transfer' &&
	q -d $db -c "SELECT sum(imported) FROM tl_import_folder('forge', '$images')" >/dev/null 2>&1 &&
	q -d $db -c "CREATE ROLE $role LOGIN;
		GRANT SELECT ON tl_images TO $role;
		GRANT SELECT, INSERT ON tl_stored_models, tl_model_tensors TO $role;
		ALTER DATABASE $db SET transfer.train_memory_limit = '512MB'"
ok $? "a dataset and a plain LOGIN role that may train on it"

train_args="from_scratch => true, image_size => 32, base_width => 4, batch_size => 5, seed => 1"
base=$(f -c "SELECT tl_train('finetune', 'forge', $train_args, epochs => 1, model_name => 'forge-base', wait => true)" 2>/dev/null)
is "$(f -c "SELECT status FROM tl_runs WHERE id = ${base:-0}")" "succeeded" "the role's own run succeeds"

# tl_train itself refuses each forged argument (else the case would prove nothing).
refused=$(for c in "${arg_cases[@]}"; do
	name=${c%%|*} patch=${c#*|}
	case $name in seed-missing|threads-many|conv-algorithm|base-model-gone) continue ;; esac	# not tl_train arguments
	call=$(echo "$patch" | sed 's/[{}"]//g; s/: / => /g; s/NaN/'"'NaN'"'/')
	f -c "SELECT tl_train('finetune', 'forge', from_scratch => true, $call, model_name => 'direct-$name')" >/dev/null 2>&1 &&
		echo "$name"
done)
is "$refused" "" "tl_train refuses each forged argument when given directly"

crash_watch_start

# A forged copy of the base run, marked interrupted, then resumed.
forge_run() {		# forge_run NAME PATCH: prints the new run's id
	f -c "INSERT INTO tl_runs (dataset, mode, args, status)
		SELECT dataset, mode, args || '$2'::jsonb || jsonb_build_object('model_name', 'forged-$1'), 'interrupted'
		FROM tl_runs WHERE id = $base RETURNING id" 2>/dev/null
}
resume() {			# resume RUN: tl_resume as the role; prints the outcome
	local out
	out=$(f -c "SELECT tl_resume($1, wait => true)" 2>&1 | grep -E '^(ERROR|DETAIL)' | head -n 2 | tr '\n' ' ')
	echo "$(f -c "SELECT tl_run_status($1)")${out:+: $out}"
}
for c in "${arg_cases[@]}"; do
	name=${c%%|*} patch=${c#*|}
	run=$(forge_run "$name" "$patch")
	got=$(resume "${run:-0}")
	# Refused up front (still interrupted, nothing trained) or failed; never succeeded.
	[[ $got == interrupted:\ ERROR* ]] || [[ $got == failed* ]]
	ok $? "forged $name ($patch): refused, not trained with — $(echo "$got" | cut -c 1-150)"
done

# Resume points: a run interrupted after its first epoch (its worker
# terminated), copied per case with the checkpoint tampered with.
long=$(f -c "SELECT tl_train('finetune', 'forge', $train_args, epochs => 1000, model_name => 'forge-long')" 2>/dev/null)
for i in $(seq 100); do
	[ "$(f -c "SELECT count(*) FROM tl_run_checkpoints WHERE run = ${long:-0} AND epoch >= 0")" = 1 ] && break
	sleep 0.2
done
q -d $db -c "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = ${long:-0} AND objsubid = 3" >/dev/null
for i in $(seq 50); do
	[ "$(f -c "SELECT tl_run_status(${long:-0})")" = interrupted ] && break
	sleep 0.2
done
copy_run() {		# copy_run NAME: an interrupted copy of the long run with its checkpoint
	local id
	id=$(f -c "INSERT INTO tl_runs (dataset, mode, args, status, epochs_done)
		SELECT dataset, mode, args || jsonb_build_object('model_name', 'tampered-$1', 'epochs', epochs_done + 1),
			'interrupted', epochs_done FROM tl_runs WHERE id = $long RETURNING id") &&
	f -c "INSERT INTO tl_run_checkpoints (run, epoch, best_acc, best_epoch, rng, train_ids, val_ids)
			SELECT $id, epoch, best_acc, best_epoch, rng, train_ids, val_ids FROM tl_run_checkpoints WHERE run = $long;
		INSERT INTO tl_run_checkpoint_tensors (run, part, key, position, shape, data)
			SELECT $id, part, key, position, shape, data FROM tl_run_checkpoint_tensors WHERE run = $long" >/dev/null &&
	echo "$id"
}
for c in "${ckpt_cases[@]}"; do
	name=${c%%|*} sql=${c#*|}
	run=$(copy_run "$name")
	f -c "${sql//RUN/${run:-0}}" >/dev/null 2>&1
	got=$(resume "${run:-0}")
	[[ $got == interrupted:\ ERROR* ]] || [[ $got == failed* ]] ||
		{ [[ $name =~ ^(tensor-nan|epoch-negative)$ ]] && [[ $got == succeeded* ]]; }
		# NaN momentum is a number to SGD; epoch -1 means "before the first" (a fresh start)
	ok $? "tampered $name: $(echo "$got" | cut -c 1-150)"
done

is "$(f -c "SELECT string_agg(id || ':' || tl_run_status(id), ' ') FROM tl_runs
	WHERE tl_run_status(id) IN ('queued', 'running') AND id <> ${long:-0}")" "" "no forged run is left queued or running"

# The worker connects as the role, so the role's settings apply to it: a
# search_path set for the role that puts trap operators before pg_catalog
# must not redirect the worker's queries.
q -d $db <<'SQL' >/dev/null
CREATE SCHEMA tl_trap;
CREATE FUNCTION tl_trap.trap() RETURNS boolean LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'hijacked'; END$$;
DO $$
DECLARE
	t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['text', 'bigint', 'integer', 'jsonb', 'name', 'double precision', 'bytea'] LOOP
		EXECUTE format('CREATE FUNCTION tl_trap.eq(%1$s, %1$s) RETURNS boolean LANGUAGE sql AS ''SELECT tl_trap.trap()''', t);
		EXECUTE format('CREATE OPERATOR tl_trap.= (LEFTARG = %1$s, RIGHTARG = %1$s, FUNCTION = tl_trap.eq)', t);
	END LOOP;
END $$;
CREATE FUNCTION tl_trap.jcat(jsonb, jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT CASE WHEN tl_trap.trap() THEN $1 END';
CREATE OPERATOR tl_trap.|| (LEFTARG = jsonb, RIGHTARG = jsonb, FUNCTION = tl_trap.jcat);
CREATE FUNCTION tl_trap.now() RETURNS timestamptz LANGUAGE sql AS 'SELECT CASE WHEN tl_trap.trap() THEN pg_catalog.now() END';
GRANT USAGE ON SCHEMA tl_trap TO PUBLIC;
SQL
f -c "ALTER ROLE $role IN DATABASE $db SET search_path = tl_trap, pg_catalog, public" &&
	got=$(f -c "SELECT tl_train('finetune', 'forge', $train_args, epochs => 1, model_name => 'forge-trapped-path', wait => true)" 2>/dev/null)
is "$(f -c "SELECT status FROM tl_runs WHERE id = ${got:-0}" 2>&1)|$(f -c "SELECT 'a'::text = 'a'::text" 2>&1 | head -n 1)" \
	"succeeded|ERROR:  hijacked" "a trap search_path set for the role does not reach the training worker's queries"
q -d $db -c "ALTER ROLE $role IN DATABASE $db RESET search_path" >/dev/null

crash_watch_check "after ${#arg_cases[@]} forged and ${#ckpt_cases[@]} tampered runs"

[ -n "${TL_KEEP:-}" ] && tap_exit
dropdb $db
dropuser $role
tap_exit
