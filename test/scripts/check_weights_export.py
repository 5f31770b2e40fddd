#!/usr/bin/python3
"""PyTorch's side of test/t/weights_torch.sh.

  check_weights_export.py compare ORIGINAL EXPORTED NUM_CLASSES
      EXPORTED (a .pth from tl_export(..., 'pth') or a .safetensors) holds
      exactly ORIGINAL's tensors, bit for bit, in torchvision's key order;
      a .pth loads with torch.load(weights_only=True) and into
      torchvision's resnet18(num_classes=...) with strict=True.
      Exit status 0 when all holds; what differs goes to stderr.
  check_weights_export.py batch ORIGINAL NUM_CLASSES DIR
      DIR/batch.f32 (int32 n, h, w + NHWC floats) and DIR/logits.f32: torch's
      eval-mode logits of ORIGINAL on a seeded batch.
"""
import os
import struct
import sys

import torch
import torchvision

from safetensors_io import read_f32


def compare(original, exported, num_classes):
    orig = torch.load(original, map_location="cpu")
    if exported.endswith(".safetensors"):
        got = read_f32(exported)
        expected_keys = [k for k in orig if not k.endswith("num_batches_tracked")]
    else:
        got = torch.load(exported, map_location="cpu", weights_only=True)
        expected_keys = list(orig)
        model = torchvision.models.resnet18(num_classes=num_classes)
        model.load_state_dict(got, strict=True)
    bad = 0
    if list(got) != expected_keys:
        print("keys differ: %s" % sorted(set(got) ^ set(expected_keys)), file=sys.stderr)
        bad += 1
    for key in expected_keys:
        a, b = orig[key], got.get(key)
        if b is None:
            continue
        if key.endswith("num_batches_tracked"):
            # the tables keep no step counters: exported as int64 zero
            if b.dtype != torch.int64 or b.item() != 0:
                print("%s: %r" % (key, b), file=sys.stderr)
                bad += 1
            continue
        if b.dtype != torch.float32 or a.shape != b.shape or \
                not torch.equal(a.float().contiguous().view(torch.int32), b.contiguous().view(torch.int32)):
            print("%s differs" % key, file=sys.stderr)
            bad += 1
    return bad == 0


def batch(original, num_classes, out):
    model = torchvision.models.resnet18(num_classes=num_classes)
    model.load_state_dict(torch.load(original, map_location="cpu"), strict=True)
    model.eval()
    g = torch.Generator().manual_seed(42)
    x = torch.randn(3, 3, 224, 224, generator=g)
    with torch.no_grad():
        logits = model(x)
    n, _, h, w = x.shape
    with open(os.path.join(out, "batch.f32"), "wb") as f:
        f.write(struct.pack("<3i", n, h, w))
        f.write(x.permute(0, 2, 3, 1).contiguous().numpy().tobytes())
    with open(os.path.join(out, "logits.f32"), "wb") as f:
        f.write(logits.contiguous().numpy().tobytes())


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "compare":
        sys.exit(0 if compare(sys.argv[2], sys.argv[3], int(sys.argv[4])) else 1)
    if len(sys.argv) == 5 and sys.argv[1] == "batch":
        batch(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    sys.exit(__doc__)


if __name__ == "__main__":
    main()
