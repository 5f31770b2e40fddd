#!/usr/bin/env bash
# bench/predict.sh - images per second of
#   SELECT count(tl_predict(img)) FROM tl_images WHERE dataset = 'hymenoptera' AND split = 'val'
# with 0, 1 and 2 parallel workers, next to PyTorch eager inference (Pillow
# decode + Resize/CenterCrop/Normalize + forward, batch 1, /usr/bin/python3)
# in the same run, printed as ratios (> 1: SQL is faster).
#
# Weights are seeded random full-size ResNet-18 (speed does not depend on
# their values; no pretrained file is needed).  A throwaway cluster lives in
# build/bench-predict.  Thread counts: SQL uses 1 compute thread per process
# (transfer.blas_threads = 1), so N workers + the leader use min(N + 1, cores)
# cores; each SQL row is compared with PyTorch on that many threads.
#
#   bench/predict.sh [REPEAT]     best of REPEAT runs per configuration (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pgcluster.sh
repeat=${1:-3}
cores=$(nproc)

tl_build_install >/dev/null
dir=$TL_REPO/build/bench-predict
trap 'tl_cluster_stop "$dir"' EXIT
tl_cluster_start "$dir" 2>/dev/null
weights=$dir/resnet18_random.safetensors
/usr/bin/python3 test/scripts/make_predict_fixtures.py full "$weights"
chmod a+r "$weights"

tl_psql -d postgres >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION transfer;
SELECT * FROM tl_import_folder('hymenoptera', '$TL_HYMENOPTERA');
SELECT tl_import_weights('bench_r18', pg_read_binary_file('$weights'), ARRAY['ants', 'bees']);
SELECT tl_deploy('bench_r18');
-- statistics now, not whenever autovacuum gets to it: the plans depend on them
ANALYZE tl_images;
SQL
n=$(psql -X -qAt -c "SELECT count(*) FROM tl_images WHERE dataset = 'hymenoptera' AND split = 'val'")

# Seconds of the query in one session, after a warm-up query in that session
# (the leader's model cache loaded; parallel workers load the model in every
# query, which is part of what is measured).
sql_seconds() {
	local workers=$1 best="" t i
	for i in $(seq 1 "$repeat"); do
		t=$(psql -X -qAt <<SQL | awk '/^Time:/ {print $2 / 1000}' | tail -n 1
SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = $workers;
SELECT count(tl_predict(img)) FROM tl_images WHERE dataset = 'hymenoptera' AND split = 'val' AND id % 50 = 0;
\timing on
SELECT count(tl_predict(img)) FROM tl_images WHERE dataset = 'hymenoptera' AND split = 'val';
SQL
)
		if [ -z "$best" ] || awk -v a="$t" -v b="$best" 'BEGIN {exit !(a < b)}'; then best=$t; fi
	done
	echo "$best"
}

torch_seconds() {
	local threads=$1 best="" t i
	for i in $(seq 1 "$repeat"); do
		t=$(/usr/bin/python3 bench/predict_torch.py "$weights" "$TL_HYMENOPTERA" "$threads" val | awk 'NR == 1 {print $2}')
		if [ -z "$best" ] || awk -v a="$t" -v b="$best" 'BEGIN {exit !(a < b)}'; then best=$t; fi
	done
	echo "$best"
}

# Same predictions on both sides (a check that the two compute the same thing).
agree=$(join <(psql -X -qAt -F' ' -c "SELECT name, (tl_predict(img) = 'bees')::int FROM tl_images
		WHERE dataset = 'hymenoptera' AND split = 'val'" | sort) \
	<(/usr/bin/python3 bench/predict_torch.py "$weights" "$TL_HYMENOPTERA" 1 val | tail -n +2 | sort) \
	| awk '$2 == $3' | wc -l)

declare -A torch_s
for t in $(seq 1 "$cores"); do torch_s[$t]=$(torch_seconds "$t"); done

echo "tl_predict vs PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)') eager, $n hymenoptera val images, batch 1, $cores cores"
echo "predictions equal on $agree of $n images"
printf '%-34s %10s %10s %10s %16s\n' "configuration" "seconds" "images/s" "speedup" "ratio vs torch"
for t in $(seq 1 "$cores"); do
	printf '%-34s %10.2f %10.1f %10.2f\n' "PyTorch eager, $t thread(s)" "${torch_s[$t]}" \
		"$(awk -v n="$n" -v s="${torch_s[$t]}" 'BEGIN {print n / s}')" \
		"$(awk -v a="${torch_s[1]}" -v b="${torch_s[$t]}" 'BEGIN {print a / b}')"
done
serial=""
for w in 0 1 2; do
	s=$(sql_seconds "$w")
	serial=${serial:-$s}
	t=$((w + 1 > cores ? cores : w + 1))
	printf '%-34s %10.2f %10.1f %10.2f %10.2f (vs %d thread(s))\n' "SQL, $w parallel worker(s)" "$s" \
		"$(awk -v n="$n" -v s="$s" 'BEGIN {print n / s}')" \
		"$(awk -v a="$serial" -v b="$s" 'BEGIN {print a / b}')" \
		"$(awk -v a="${torch_s[$t]}" -v b="$s" 'BEGIN {print a / b}')" "$t"
done
echo "speedup: against the same side's 1 thread / 0 workers; ratio > 1: SQL is faster"
