#!/usr/bin/env bash
# The hostile image corpus (test/scripts/make_bad_images.py, >= 40 truncated,
# bit-flipped, oversized, odd and foreign inputs) through tl_image_decode and
# both transforms, built with ASan + UBSan: each input must give a clear
# error or Pillow's pixels.  Prints TAP.
set -uo pipefail
cd "$(dirname "$0")/../.."

if ! /usr/bin/python3 -c 'import PIL, numpy, torchvision' 2>/dev/null; then
	echo "1..0 # SKIP /usr/bin/python3 lacks PIL/numpy/torchvision to make the corpus"; exit 0
fi
dir=build/bad_images
rm -rf "$dir"
if ! /usr/bin/python3 test/scripts/make_bad_images.py "$dir" 2>/dev/null; then
	echo "1..1"; echo "not ok 1 - make the hostile image corpus"; exit 1
fi
if ! make -s build/unit-asan/image/test_image_hostile SANITIZE=1 >&2; then
	echo "1..1"; echo "not ok 1 - build test_image_hostile with sanitizers"; exit 1
fi
TL_BAD_IMAGES=$dir exec build/unit-asan/image/test_image_hostile
