#!/usr/bin/env bash
# Fuzz the image decoder and transforms with libFuzzer (ASan + UBSan) for a
# bounded time (TL_FUZZ_SECONDS, default 60) from the committed seed corpus.
# Prints TAP; a crash, leak or sanitizer report fails the test and leaves the
# input in build/fuzz/.
set -uo pipefail
cd "$(dirname "$0")/../.."

secs=${TL_FUZZ_SECONDS:-60}
out=build/fuzz
mkdir -p "$out/corpus-image"
CC=${FUZZ_CC:-clang}
if ! command -v "$CC" >/dev/null 2>&1; then
	echo "1..0 # SKIP $CC not installed (scripts/install-deps.sh installs clang)"; exit 0
fi
echo "1..2"
if "$CC" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-std=gnu11 -Isrc/core test/fuzz/fuzz_image.c src/core/image/*.c src/core/tl_error.c \
	src/core/tl_rng.c -ljpeg -lpng -lm -o "$out/fuzz_image" 2>"$out/fuzz_image.build.log"; then
	echo "ok 1 - fuzz_image builds"
else
	echo "not ok 1 - fuzz_image builds"; sed 's/^/# /' "$out/fuzz_image.build.log" | tail -20
	echo "not ok 2 - fuzzing (not built)"; exit 1
fi
if "$out/fuzz_image" -max_total_time="$secs" -timeout=20 -rss_limit_mb=3072 -max_len=65536 \
	-artifact_prefix="$out/" -print_final_stats=1 "$out/corpus-image" test/fuzz/corpus/image \
	>"$out/fuzz_image.log" 2>&1; then
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/fuzz_image.log")
	echo "ok 2 - ${secs}s of fuzzing, ${runs:-?} inputs, no crash"
else
	echo "not ok 2 - fuzzing found a failure (artifacts in $out/)"
	grep -E "ERROR|SUMMARY|runtime error|Test unit written" "$out/fuzz_image.log" | head -20 | sed 's/^/# /'
	exit 1
fi
