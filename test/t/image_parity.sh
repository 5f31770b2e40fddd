#!/usr/bin/env bash
# Every image of the hymenoptera dataset through the C image pipeline against
# Pillow + torchvision (decoded pixels, eval tensor, train tensor for a given
# crop box), when Debian's python3-torch is importable and the dataset exists.
# Prints TAP (run by prove from scripts/test.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."

data=${TL_HYMENOPTERA:-}
for d in "$data" ../shared/data/hymenoptera_data ../../shared/data/hymenoptera_data /work/shared/data/hymenoptera_data; do
	if [ -n "$d" ] && [ -f "$d/train/ants/0013035.jpg" ]; then data=$d; break; fi
done
if [ ! -f "$data/train/ants/0013035.jpg" ]; then
	echo "1..0 # SKIP hymenoptera dataset not found"; exit 0
fi
if ! /usr/bin/python3 -c 'import torch, torchvision, PIL' 2>/dev/null; then
	echo "1..0 # SKIP torch/torchvision/PIL not importable by /usr/bin/python3"; exit 0
fi

mkdir -p build
refs=build/image_dataset_refs.txt
if ! /usr/bin/python3 test/scripts/make_image_fixtures.py --dataset-refs "$refs" "$data" 2>/dev/null; then
	echo "1..1"; echo "not ok 1 - torchvision references for the dataset"; exit 1
fi
if ! make -s build/unit/image/test_image_dataset >&2; then
	echo "1..1"; echo "not ok 1 - build test_image_dataset"; exit 1
fi
TL_IMAGE_DATASET_REFS=$refs TL_HYMENOPTERA=$data exec build/unit/image/test_image_dataset
