#!/usr/bin/env bash
# Engine benchmark: builds bench/engine_bench (-O3 -march=native, like the
# extension), runs it and, when torch is importable, bench/torch_engine.py on
# the same thread count, RUNS times each (interleaved), and prints medians
# and ours/torch ratios.  Other processes on the machine add noise: compare
# medians over several runs.
#
#   bench/engine.sh [threads=2] [repetitions=10] [runs=3]
#   TL_CONV_ALGORITHM=im2col bench/engine.sh ...   our side without Winograd
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
reps=${2:-10}
runs=${3:-3}
mkdir -p build/bench
gcc -O3 -march=native -std=gnu11 -Isrc/core -o build/bench/engine_bench \
	bench/engine_bench.c $(find src/core -name "*.c")  -lopenblas -ljpeg -lpng -lz -lm -lpthread

have_torch=0
/usr/bin/python3 -c 'import torch, torchvision' 2>/dev/null && have_torch=1
: >build/bench/ours.txt
: >build/bench/torch.txt
for r in $(seq "$runs"); do
	OPENBLAS_NUM_THREADS=$threads build/bench/engine_bench "$threads" "$reps" >>build/bench/ours.txt
	[ $have_torch = 1 ] && /usr/bin/python3 bench/torch_engine.py "$threads" "$reps" >>build/bench/torch.txt
done
/usr/bin/python3 - "$have_torch" <<'PY' 2>/dev/null || python3 - "$have_torch" <<'PY'
import statistics, sys
def load(p):
    d = {}
    for line in open(p):
        k, v = line.split()
        d.setdefault(k, []).append(float(v))
    return {k: statistics.median(v) for k, v in d.items()}
ours = load("build/bench/ours.txt")
torch = load("build/bench/torch.txt") if sys.argv[1] == "1" else {}
print(f"threads {int(ours['threads'])}, medians of {len(open('build/bench/ours.txt').read().split('threads')) - 1} runs x {int(ours['repetitions'])} repetitions")
print(f"planned memory, batch-4 224x224 training: {ours['planned_bytes_train_b4_224'] / 2**20:.0f} MiB")
print(f"{'':34s} {'ours':>10s} {'torch':>10s} {'ours/torch':>10s}")
rows = [("train_step_finetune", "training step, batch 4, finetune (s)"),
        ("train_step_feature_extractor", "training step, batch 4, feature ext. (s)"),
        ("forward_b4", "eval forward, batch 4 (s)"),
        ("forward_gflops", "eval forward GFLOP/s"),
        ("predict_1", "inference, 1 image (s)")]
if int(ours["threads"]) == 1:
    rows += [("cpu_" + k, "CPU s: " + l.split(" (")[0]) for k, l in rows if k != "forward_gflops"]
for k, label in rows:
    o = ours[k]
    t = torch.get(k)
    ts = f"{t:10.4f}" if t is not None else f"{'-':>10s}"
    rs = f"{o / t:10.2f}" if t else f"{'-':>10s}"
    print(f"{label:34s} {o:10.4f} {ts} {rs}")
PY
PY
