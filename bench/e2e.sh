#!/usr/bin/env bash
# bench/e2e.sh - the end-to-end benchmark of issue 8: transfer in PostgreSQL
# against PyTorch on the same machine, both sides in this one invocation, and
# a table of ratios (ours / torch, of times; < 1 means we are faster).
#
#   bench/e2e.sh [--runs N] [--threads T] [--cache-epochs E] [--conv-algorithm A] [--no-torch]
#
#   --runs N          repetitions of every measurement, medians reported (default 3)
#   --threads T       compute threads of each side (default 2)
#   --cache-epochs E  also time a feature_extractor run of E epochs with
#                     cache_features => true (default 25; 0 skips it)
#   --conv-algorithm A  transfer.conv_algorithm of our side: winograd (default) or im2col
#   --no-torch        our side only (no ratios)
#
# Measured, interleaved run by run (ours, then torch):
#   1. one tutorial epoch in finetune mode: SELECT tl_train(..., epochs => 1,
#      wait => true) against bench/torch_tutorial.py train finetune;
#   2. the same in feature_extractor mode;
#   3. SELECT count(tl_predict(img)) over the 153 hymenoptera val images with
#      0 parallel workers (transfer.blas_threads = T) and with 2 parallel
#      workers (1 thread each, plans forced and checked with EXPLAIN ANALYZE),
#      against PyTorch eval at batch 1 incl. JPEG decode and transforms;
#   3b. a user's own table (issue 14): the val images x10 in
#      CREATE TABLE photos AS ... pg_read_binary_file(...), ANALYZEd (TOASTed
#      images, a tiny heap), SELECT count(tl_predict(img, model)) FROM photos
#      with every setting at its default and with
#      max_parallel_workers_per_gather = 0, against PyTorch end to end at
#      batch 1 and batch 32 (bench/torch_predict_user.py); and the first
#      tl_predict of a fresh connection (model load + first image) against
#      the next one, in ms;
#   4. peak RSS (VmHWM) of the training worker while it runs, and of the
#      backend that ran the 0-worker prediction, next to PyTorch's peak RSS
#      for the same job.
# The base model is a seeded random full-size ResNet-18 (speed does not
# depend on the values; no pretrained file is needed), the same file on both
# sides.  The throwaway cluster lives in build/bench-e2e.
#
# The machine may be shared: absolute times move with the load, ratios much
# less, since both sides run in turn in the same invocation.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=3
threads=2
cache_epochs=25
conv_algorithm=winograd
use_torch=1
while [ $# -gt 0 ]; do
	case $1 in
		--runs) runs=$2; shift 2 ;;
		--threads) threads=$2; shift 2 ;;
		--cache-epochs) cache_epochs=$2; shift 2 ;;
		--conv-algorithm) conv_algorithm=$2; shift 2 ;;
		--no-torch) use_torch=0; shift ;;
		*) sed -n '2,30p' "$0" >&2; exit 2 ;;
	esac
done

if [ $use_torch = 1 ] && ! /usr/bin/python3 -c 'import torch, torchvision, PIL' 2>/dev/null; then
	echo "== PyTorch not importable by /usr/bin/python3: installing python3-torch (Debian)" >&2
	sudo=""
	[ "$(id -u)" = 0 ] || sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
		python3-torch python3-torchvision python3-pil python3-numpy >/dev/null
fi

. scripts/pgcluster.sh
[ -d "$TL_HYMENOPTERA/train" ] || { echo "dataset not found: $TL_HYMENOPTERA" >&2; exit 1; }
tl_build_install >/dev/null
dir=$TL_REPO/build/bench-e2e
out=$dir/results.txt
poll_pid=""
cleanup() {
	if [ -n "$poll_pid" ]; then kill "$poll_pid" 2>/dev/null || true; fi
	tl_cluster_stop "$dir" || true
}
trap cleanup EXIT
tl_cluster_start "$dir" "transfer.train_threads = $threads" "transfer.conv_algorithm = $conv_algorithm" 2>/dev/null
weights=$dir/resnet18_random.safetensors
/usr/bin/python3 test/scripts/make_predict_fixtures.py full "$weights"
chmod a+r "$weights"

tl_psql >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION transfer;
SELECT * FROM tl_import_folder('hymenoptera', '$TL_HYMENOPTERA');
SELECT tl_import_weights('bench-base', pg_read_binary_file('$weights'), ARRAY['ants', 'bees']);
SELECT tl_deploy('bench-base');
-- statistics now, not whenever autovacuum gets to it: the plans depend on them
ANALYZE tl_images;
-- a user's own table: default storage (the images are TOASTed), x10 rows
CREATE TABLE photos AS
	SELECT c.label, f.name, pg_read_binary_file('$TL_HYMENOPTERA/val/' || c.label || '/' || f.name) AS img
	FROM unnest(ARRAY['ants', 'bees']) AS c(label),
		LATERAL pg_ls_dir('$TL_HYMENOPTERA/val/' || c.label) AS f(name),
		generate_series(1, 10) AS g
	WHERE f.name ~* '\.(jpe?g|png)$';
ANALYZE photos;
SQL
n_user=$(psql -X -qAt -c "SELECT count(*) FROM photos")
n_val=$(psql -X -qAt -c "SELECT count(*) FROM tl_images WHERE dataset = 'hymenoptera' AND split = 'val'")
: >"$out"

record() { echo "$1 $2" >>"$out"; }

# Peak VmHWM (kB) of training workers while they run: polled from /proc,
# the last value seen before the process exits is its peak.  The poller must
# not load the cores it measures, so /proc is read with shell builtins only
# (a grep per process per round cost the training worker ~20% of its speed).
# Only workers of this cluster's postmaster count: the machine may run other
# clusters' training workers.
start_rss_poll() {
	local file=$1 postmaster
	: >"$file"
	read -r postmaster <"$dir/data/postmaster.pid"
	(
		while :; do
			for p in /proc/[0-9]*; do
				cmd=""
				# 2>/dev/null first: the process may be gone (and read fails
				# without a NUL, with cmd set)
				IFS= read -r -d '' cmd 2>/dev/null <"$p/cmdline" || true
				[[ $cmd == *"transfer training worker"* ]] || continue
				ppid="" hwm=""
				while read -r key value _; do
					case $key in PPid:) ppid=$value ;; VmHWM:) hwm=$value ;; esac
				done 2>/dev/null <"$p/status" || true
				[ "$ppid" = "$postmaster" ] && [ -n "$hwm" ] && echo "$hwm" >>"$file"
			done
			sleep 0.5
		done
	) &
	poll_pid=$!
}
stop_rss_poll() {
	kill "$poll_pid" 2>/dev/null || true
	wait "$poll_pid" 2>/dev/null || true
	poll_pid=""
	sort -n "$1" | tail -n 1
}

# Seconds of one tl_train call (the whole job: reading and decoding the
# images, the epochs, storing the model), plus its phase times and the
# worker's peak RSS.
ours_train() {
	local mode=$1 r=$2 epochs=${3:-1} extra=${4:-} key=${5:-$1} t rss
	start_rss_poll "$dir/rss.txt"
	t=$(psql -X -qAt -v ON_ERROR_STOP=1 <<SQL | awk '/^Time:/ {print $2 / 1000}' | tail -n 1
SET client_min_messages = warning;
\timing on
SELECT tl_train('$mode', 'hymenoptera', epochs => $epochs, base_model => 'bench-base',
                model_name => 'bench-$key-$r', seed => $r, wait => true$extra);
SQL
)
	rss=$(stop_rss_poll "$dir/rss.txt")
	record "ours_${key}_s" "$t"
	record "ours_${key}_rss_mib" "$(awk -v k="$rss" 'BEGIN {print k / 1024}')"
	psql -X -qAt -F' ' -c "SELECT e.phase, sum(e.seconds) FROM tl_run_epochs e JOIN tl_runs r ON r.id = e.run
		WHERE r.args->>'model_name' = 'bench-$key-$r' GROUP BY e.phase" |
		while read -r phase s; do record "ours_${key}_${phase}_s" "$s"; done
}

torch_train() {
	local mode=$1 epochs=${2:-1} key=${3:-$1}
	/usr/bin/python3 bench/torch_tutorial.py train "$mode" "$weights" "$TL_HYMENOPTERA" "$threads" "$epochs" |
		while read -r k v; do
			case $k in
				seconds) record "torch_${key}_s" "$v" ;;
				train_seconds) record "torch_${key}_train_s" "$v" ;;
				val_seconds) record "torch_${key}_val_s" "$v" ;;
				peak_rss_mib) record "torch_${key}_rss_mib" "$v" ;;
			esac
		done
}

# Seconds of the prediction query after a warm-up in the same session (the
# leader's model cache loaded; parallel workers load the model in every
# query, which is part of what is measured), and that backend's VmHWM.
predict_query="SELECT count(tl_predict(img)) FROM tl_images WHERE dataset = 'hymenoptera' AND split = 'val'"
ours_predict() {
	local workers=$1 blas=$2 res t rss
	res=$(psql -X -qAt -v ON_ERROR_STOP=1 <<SQL
SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0; SET parallel_leader_participation = on;
SET max_parallel_workers_per_gather = $workers;
SET transfer.blas_threads = $blas;
SELECT 'pid', pg_backend_pid();
EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF) $predict_query;
\timing on
$predict_query;
SQL
)
	if [ "$workers" -gt 0 ] && ! grep -q "Workers Launched: $workers" <<<"$res"; then
		echo "prediction with $workers workers did not get them:" >&2
		echo "$res" >&2
		exit 1
	fi
	t=$(awk '/^Time:/ {print $2 / 1000}' <<<"$res" | tail -n 1)
	record "ours_predict_w${workers}_s" "$t"
	if [ "$workers" -gt 0 ]; then
		# images per process (the leader gets what the workers did not): a
		# parallel scan hands out whole pages, so small tables split unevenly
		record "ours_predict_w${workers}_busiest" "$(awk -v n="$n_val" '
			/Parallel Seq Scan/ {scan = 1; next}
			scan && /Worker [0-9]+: +actual rows=/ {
				r = $0; sub(/.*actual rows=/, "", r); r += 0; done += r; if (r > max) max = r }
			scan && !/Worker|Filter|Output|Rows Removed/ {scan = 0}
			END {if (n - done > max) max = n - done; print max}' <<<"$res")"
	fi
	if [ "$workers" = 0 ]; then
		# the backend reads its own /proc status (superuser: pg_read_file of any path)
		rss=$(psql -X -qAt -v ON_ERROR_STOP=1 <<SQL | tail -n 1
SET transfer.blas_threads = $blas;
$predict_query;
SELECT substring(pg_read_file('/proc/' || pg_backend_pid() || '/status') FROM 'VmHWM:\s*(\d+) kB');
SQL
)
		record "ours_predict_rss_mib" "$(awk -v k="$rss" 'BEGIN {print k / 1024}')"
	fi
}

torch_predict() {
	/usr/bin/python3 bench/torch_tutorial.py eval "$weights" "$TL_HYMENOPTERA" "$threads" |
		while read -r k v; do
			case $k in
				seconds) record "torch_predict_s" "$v" ;;
				peak_rss_mib) record "torch_predict_rss_mib" "$v" ;;
			esac
		done
}

# A user's table with default settings (only the serial case sets one), after
# a warm-up in the same session.  The plan's worker count is recorded: with
# TOASTed images the heap is far below min_parallel_table_scan_size, so the
# workers are the extension's planner hook's (src/pg/parallel_plan.c).
user_query="SELECT count(tl_predict(img, 'bench-base')) FROM photos"
ours_user_predict() {
	local key=$1 settings=$2 res
	res=$(psql -X -qAt -v ON_ERROR_STOP=1 <<SQL
$settings
SELECT count(tl_predict(img, 'bench-base')) FROM (SELECT img FROM photos LIMIT 2) s;
EXPLAIN (COSTS OFF) $user_query;
\timing on
$user_query;
SQL
)
	record "ours_user_${key}_s" "$(awk '/^Time:/ {print $2 / 1000}' <<<"$res" | tail -n 1)"
	record "ours_user_${key}_workers" "$(awk '/Workers Planned:/ {print $3; f = 1} END {if (!f) print 0}' <<<"$res")"
}

# First tl_predict of a fresh connection (the library already loaded, so
# this is the model load + the first image) and the next one, in ms.
ours_first_latency() {
	local res
	res=$(psql -X -qAt -v ON_ERROR_STOP=1 <<SQL
SELECT count(*) FROM tl_model_cache();
CREATE TEMP TABLE one AS SELECT img FROM photos LIMIT 1;
\timing on
SELECT tl_predict(img, 'bench-base') FROM one;
SELECT tl_predict(img, 'bench-base') FROM one;
SQL
)
	record ours_first_ms "$(awk '/^Time:/ {print $2}' <<<"$res" | sed -n 1p)"
	record ours_warm_ms "$(awk '/^Time:/ {print $2}' <<<"$res" | sed -n 2p)"
}

torch_user_predict() {
	/usr/bin/python3 bench/torch_predict_user.py "$weights" "$TL_HYMENOPTERA" "$threads" 10 |
		while read -r k v; do
			case $k in
				batch1_seconds) record torch_user_b1_s "$v" ;;
				batch32_seconds) record torch_user_b32_s "$v" ;;
			esac
		done
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq 1 "$runs"); do
	tl_log "run $r of $runs"
	ours_train finetune "$r"
	[ $use_torch = 1 ] && torch_train finetune
	ours_train feature_extractor "$r"
	[ $use_torch = 1 ] && torch_train feature_extractor
	ours_predict 0 "$threads"
	ours_predict 2 1
	[ $use_torch = 1 ] && torch_predict
	ours_user_predict w0 "SET max_parallel_workers_per_gather = 0;"
	ours_user_predict default ""
	[ $use_torch = 1 ] && torch_user_predict
	for i in 1 2 3; do ours_first_latency; done
done
if [ "$cache_epochs" -gt 0 ]; then
	# once: a many-epoch run is long on the torch side (it is not cached there)
	tl_log "feature_extractor, $cache_epochs epochs, cache_features => true"
	ours_train feature_extractor 1 "$cache_epochs" ", cache_features => true" fe_cached
	ours_train feature_extractor 1 1 ", cache_features => true" fe_cached1
fi

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
machine="$(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
torch_version=$( [ $use_torch = 1 ] && /usr/bin/python3 -c 'import torch; print(torch.__version__)' || echo none)
/usr/bin/python3 - "$out" "$runs" "$threads" "$n_val" "$machine" "$torch_version" "$cache_epochs" "$load_before" "$load_after" "$conv_algorithm" "$n_user" <<'PY'
import statistics, sys, time
path, runs, threads, n_val, machine, torch_version, cache_epochs, load_before, load_after, conv_algorithm, n_user = sys.argv[1:]
n_user = int(n_user)
n_val = int(n_val)
vals = {}
for line in open(path):
    k, v = line.split()
    vals.setdefault(k, []).append(float(v))
med = {k: statistics.median(v) for k, v in vals.items()}
print(f"transfer vs PyTorch {torch_version}: {time.strftime('%Y-%m-%d', time.gmtime())}, {machine}")
print(f"{threads} threads per side, medians of {runs} runs, transfer.conv_algorithm = {conv_algorithm}; "
      f"ratio = ours / torch (time or memory: < 1 is better)")
print(f"load average (1/5/15 min) before: {load_before}, after: {load_after}")
rows = [
    ("finetune epoch, whole job (s)", "finetune_s"),
    ("  train phase (s)", "finetune_train_s"),
    ("  val phase (s)", "finetune_val_s"),
    ("feature_extractor epoch, whole job (s)", "feature_extractor_s"),
    ("  train phase (s)", "feature_extractor_train_s"),
    ("  val phase (s)", "feature_extractor_val_s"),
    (f"predict {n_val} val images, 0 workers (s)", "predict_w0_s", "predict_s"),
    (f"predict {n_val} val images, 2 workers (s)", "predict_w2_s", "predict_s"),
    ("peak RSS, finetune training (MiB)", "finetune_rss_mib"),
    ("peak RSS, feature_extractor training (MiB)", "feature_extractor_rss_mib"),
    ("peak RSS, backend after prediction (MiB)", "predict_rss_mib"),
]
print(f"| {'metric':44s} | {'ours':>9s} | {'torch':>9s} | {'ratio':>6s} |")
print(f"|{'-' * 46}|{'-' * 11}|{'-' * 11}|{'-' * 8}|")
for row in rows:
    label, ok = row[0], "ours_" + row[1]
    tk = "torch_" + (row[2] if len(row) > 2 else row[1])
    o, t = med.get(ok), med.get(tk)
    os_ = f"{o:9.2f}" if o is not None else f"{'-':>9s}"
    ts = f"{t:9.2f}" if t is not None else f"{'-':>9s}"
    rs = f"{o / t:6.2f}" if o is not None and t else f"{'-':>6s}"
    print(f"| {label:44s} | {os_} | {ts} | {rs} |")
if "torch_predict_s" in med:
    print(f"throughput, images/s: torch {n_val / med['torch_predict_s']:.1f}, "
          f"ours 0 workers {n_val / med['ours_predict_w0_s']:.1f}, "
          f"2 workers {n_val / med['ours_predict_w2_s']:.1f}")
if "ours_predict_w2_busiest" in med:
    print(f"2 workers: the busiest of the 3 processes predicted {med['ours_predict_w2_busiest']:.0f} "
          f"of {n_val} images (an even split is {-(-n_val // 3)})")
if "ours_user_default_s" in med:
    # issue 14: a user's own table, every setting at its default
    line = (f"user table ({n_user} rows, CREATE TABLE AS), images/s: ours defaults "
            f"{n_user / med['ours_user_default_s']:.1f} ({med['ours_user_default_workers']:.0f} workers planned), "
            f"ours max_parallel_workers_per_gather = 0 {n_user / med['ours_user_w0_s']:.1f}")
    if "torch_user_b1_s" in med:
        b1 = n_user / med["torch_user_b1_s"]
        line += (f"; torch batch 1 {b1:.1f}, batch 32 {n_user / med['torch_user_b32_s']:.1f}; "
                 f"ours / torch batch 1: defaults {n_user / med['ours_user_default_s'] / b1:.2f}x, "
                 f"0 workers {n_user / med['ours_user_w0_s'] / b1:.2f}x")
    print(line)
if "ours_first_ms" in med:
    print(f"first tl_predict of a connection {med['ours_first_ms']:.0f} ms, the next {med['ours_warm_ms']:.0f} ms "
          f"(+{med['ours_first_ms'] - med['ours_warm_ms']:.0f} ms; medians of {len(vals['ours_first_ms'])} connections)")
if "ours_fe_cached_s" in med:
    print(f"feature_extractor with cache_features => true: {cache_epochs} epochs "
          f"{med['ours_fe_cached_s']:.2f} s, 1 epoch {med['ours_fe_cached1_s']:.2f} s "
          f"(peak RSS {med['ours_fe_cached_rss_mib']:.0f} MiB)")
PY
