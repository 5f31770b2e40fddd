#!/usr/bin/env bash
# transfer.train_memory_limit (issues 14 and 16): tl_train's estimate counts
# the images' compressed bytes (the worker decodes each batch's images), and
# the worker itself stops with a clear error when the data it reads turns out
# larger than the limit (here: the dataset grew in the launching transaction,
# after tl_train checked it), instead of growing until the OOM killer ends it.
# Prints TAP; run by scripts/test.sh with the throwaway cluster's environment.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
db=tl_train_memory_limit
. test/t/train_lib.bash

echo "1..7"
dropdb --if-exists "$db" >/dev/null 2>&1
createdb "$db" && q -c 'CREATE EXTENSION transfer' \
	&& q -c "SELECT count(*) FROM tl_import_folder('mem', '$TL_TEST_IMAGES')" >/dev/null 2>&1
ok $? "database with the test image subset"

ARGS="from_scratch => true, base_width => 16, image_size => 64, batch_size => 3, epochs => 1, seed => 3"

# ---- the up-front check: its estimate and what it says it counts
out=$(q -c "SET transfer.train_memory_limit = 1" -c "SELECT tl_train('finetune', 'mem', $ARGS)" 2>&1)
echo "$out" | sed 's/^/# /'
need=$(echo "$out" | sed -n 's/.*would need about \([0-9]*\) MB, more than transfer.train_memory_limit (1 MB).*/\1/p')
[ -n "$need" ]
ok $? "tl_train refuses a run over the limit up front (estimate: ${need:-?} MB)"
bytes=$(q -c "SELECT sum(octet_length(img)) FROM tl_images WHERE dataset = 'mem' AND split IN ('train', 'val')")
echo "$out" | grep -q "holds its [0-9]* images compressed ($bytes bytes) for the whole run and decodes them per batch"
ok $? "the estimate counts the compressed bytes ($bytes), not the decoded pixels"

# ---- the worker's check: the dataset grows after tl_train checked it
limit=$((need + 1))
run=$(q -c "SET transfer.train_memory_limit = $limit" -c "BEGIN" \
	-c "SELECT tl_train('finetune', 'mem', $ARGS)" \
	-c "INSERT INTO tl_images (dataset, split, label, name, img)
		SELECT dataset, split, label, g || '-' || name, img
		FROM tl_images, generate_series(1, 40) AS g
		WHERE dataset = 'mem' AND split IN ('train', 'val')" \
	-c "COMMIT" 2>&1 | sed -n '1p')
echo "# run: $run"
[[ $run =~ ^[0-9]+$ ]] || run=0
wait_for "SELECT status IN ('failed', 'succeeded', 'cancelled') FROM tl_runs WHERE id = $run" 120
is "$(q -c "SELECT status FROM tl_runs WHERE id = $run")" "failed" \
	"the worker fails the run when the data it reads exceeds the limit"
err=$(q -c "SELECT error FROM tl_runs WHERE id = $run")
echo "$err" | sed 's/^/# /'
echo "$err" | grep -qE "^training run would need about [0-9]+ MB, more than transfer.train_memory_limit \($limit MB\)"
ok $? "its error names the limit and the estimate"
echo "$err" | grep -qE "^DETAIL: The worker had read [0-9]+ images \([0-9]+ bytes compressed, held for the whole run\)" \
	&& echo "$err" | grep -q "^HINT: .*raise transfer.train_memory_limit"
ok $? "with the bytes read so far and a hint"
is "$(q -c "SELECT count(*) FROM tl_run_epochs WHERE run = $run")" "0" \
	"it stopped while loading, before any epoch"

dropdb "$db"
tap_exit
