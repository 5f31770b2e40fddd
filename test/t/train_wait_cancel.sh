#!/usr/bin/env bash
# A wait => true run cancelled by statement_timeout names itself (issue 17):
# the 57014 error's CONTEXT says "waiting for training run N", that run N is
# the one tl_runs has, it ends cancelled, and the context says how to find it
# and how to follow a run without a waiting statement.  tl_resume of it says
# plainly that a cancelled run can't be resumed.  Prints TAP; run by
# scripts/test.sh with the cluster's environment (PG*, TL_TEST_IMAGES).
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
. test/t/tap.bash

db=tl_train_wait_cancel
q() { tl_psql -At -d "$db" "$@"; }

echo "1..7"
dropdb --if-exists "$db" >/dev/null 2>&1
createdb "$db" && q -c 'CREATE EXTENSION transfer' \
	&& q -c "SELECT count(*) FROM tl_import_folder('waitcancel', '$TL_TEST_IMAGES')" >/dev/null 2>&1
ok $? "database with the test image subset"

# Many epochs: the run is still going when the timeout fires.
out=$(psql -X -d "$db" 2>&1 <<'EOF'
\set VERBOSITY verbose
SET client_min_messages = warning;
SET statement_timeout = '3s';
SELECT tl_train('finetune', 'waitcancel', from_scratch => true, base_width => 16, image_size => 64,
				batch_size => 3, epochs => 500, wait => true);
EOF
)
echo "$out" | sed 's/^/# /'
echo "$out" | grep -q '^ERROR:  57014'
ok $? "statement_timeout cancels the waiting tl_train (57014)"
run=$(echo "$out" | sed -n 's/.*waiting for training run \([0-9]*\).*/\1/p' | head -n 1)
[ -n "$run" ]
ok $? "the error's context names the run (run ${run:-?})"
is "$(q -c "SELECT string_agg(id::text, ',') FROM tl_runs")" "${run:-none}" "it is the run tl_runs has"
echo "$out" | grep -q "SELECT \* FROM tl_runs WHERE id = $run" && echo "$out" | grep -q 'wait => false' &&
	echo "$out" | grep -q 'tl_wait(run)'
ok $? "the context says how to find the run and how to follow one without waiting"
is "$(q -c "SELECT tl_wait($run, '60 s')")" cancelled "the run ends cancelled"
msg=$(q -c "SELECT tl_resume($run)" 2>&1)
echo "$msg" | grep -q "training run $run cannot be resumed: its status is cancelled"
ok $? "tl_resume of it: \"cannot be resumed: its status is cancelled\""

dropdb "$db"
tap_exit
