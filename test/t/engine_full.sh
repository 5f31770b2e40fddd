#!/usr/bin/env bash
# Full-size PyTorch parity of the engine: torchvision's resnet18 (base width
# 64) at 224x224, batch 4, 2 classes, in both training modes (3 SGD steps),
# plus a 1000-class forward.  The references are computed now by
# test/scripts/make_engine_fixtures.py (too large to commit) and checked by
# the same C program as the committed small cases; tolerances are stated in
# test/unit/nn/test_resnet_parity.c.  Skipped (TAP) when torch is not importable.
set -uo pipefail
cd "$(dirname "$0")/../.."

PY=/usr/bin/python3
if ! "$PY" -c 'import torch, torchvision' 2>/dev/null; then
	echo "1..0 # SKIP torch/torchvision not importable by $PY"
	exit 0
fi
out=build/engine_full
mkdir -p "$out"
# The references depend only on the scripts (seeded): regenerate when they change.
stamp=$(cat test/scripts/make_engine_fixtures.py test/scripts/safetensors_io.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$out/stamp" 2>/dev/null)" != "$stamp" ] || [ ! -f "$out/full_forward1000.safetensors" ]; then
	rm -f "$out/stamp"
	if ! "$PY" test/scripts/make_engine_fixtures.py full "$out" >"$out/generate.log" 2>&1; then
		echo "1..1"
		echo "not ok 1 - generate full-size references"
		sed 's/^/# /' "$out/generate.log"
		exit 1
	fi
	echo "$stamp" >"$out/stamp"
fi
if ! make -s build/unit/nn/test_resnet_parity >"$out/build.log" 2>&1; then
	echo "1..1"
	echo "not ok 1 - build the parity test"
	sed 's/^/# /' "$out/build.log"
	exit 1
fi
exec build/unit/nn/test_resnet_parity "$out"/full_feature.safetensors \
	"$out"/full_finetune.safetensors "$out"/full_forward1000.safetensors
