#!/usr/bin/env bash
# Bounded libFuzzer run of the checkpoint readers (test/fuzz/fuzz_checkpoint.c)
# under ASan + UBSan, starting from the committed seeds in
# test/fuzz/seeds/checkpoint.  TL_FUZZ_SECONDS (default 60) bounds the run.
# A crash, leak, sanitizer report or failed round trip fails the test and
# leaves the input in build/fuzz/.  Skips without clang's libFuzzer runtime.
# Prints TAP.
set -uo pipefail
cd "$(dirname "$0")/../.."

seconds=${TL_FUZZ_SECONDS:-60}
out=build/fuzz
bin=$out/fuzz_checkpoint
mkdir -p "$out/corpus-checkpoint"

srcs="$(echo src/core/checkpoint/*.c) src/core/tl_tensor.c src/core/tl_error.c"
if ! command -v clang >/dev/null ||
	! clang -g -O1 -std=gnu11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		-Isrc/core test/fuzz/fuzz_checkpoint.c $srcs -lz -o "$bin" 2>"$out/build.log"; then
	echo "1..0 # SKIP clang with libFuzzer (libclang-rt-14-dev) not available"
	exit 0
fi

echo "1..2"
# Every seed on its own first: a regression check that needs no time budget.
"$bin" -runs=0 test/fuzz/seeds/checkpoint >"$out/seeds.log" 2>&1
status=$?
[ $status = 0 ] || tail -n 30 "$out/seeds.log" | sed 's/^/# /'
[ $status = 0 ] && echo "ok 1 - every seed runs clean" || echo "not ok 1 - every seed runs clean"

"$bin" -max_total_time="$seconds" -max_len=16384 -rss_limit_mb=2048 -timeout=10 \
	-artifact_prefix="$out/" -print_final_stats=1 \
	"$out/corpus-checkpoint" test/fuzz/seeds/checkpoint >"$out/fuzz.log" 2>&1
status=$?
grep -E '^stat::number_of_executed_units|^Done' "$out/fuzz.log" | sed 's/^/# /'
[ $status = 0 ] || tail -n 40 "$out/fuzz.log" | sed 's/^/# /'
[ $status = 0 ] && echo "ok 2 - ${seconds}s of fuzzing found no crash, leak or sanitizer report" ||
	echo "not ok 2 - ${seconds}s of fuzzing found no crash, leak or sanitizer report"
