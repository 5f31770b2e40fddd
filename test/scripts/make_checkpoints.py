#!/usr/bin/python3
"""Checkpoints for the weights tests, written with PyTorch (the oracle).

  make_checkpoints.py fixtures DIR   small committed files (test/fixtures/checkpoint)
  make_checkpoints.py full DIR       full ResNet-18 checkpoints (~45 MB each, into build/)

safetensors files are written by hand here (the format is a length, a JSON
header and raw bytes) because the safetensors package is not in Debian.
"""
import json
import os
import struct
import sys

import torch

ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.float64: "F64", torch.int64: "I64"}


def tensor_bytes(t):
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        # numpy has no bfloat16: reinterpret the bits as int16
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, tensor) in file order."""
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    blobs, off = [], 0
    for name, t in tensors:
        b = tensor_bytes(t)
        header[name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def dtype_fixture(path):
    g = torch.Generator().manual_seed(5)
    # every half bit pattern, including subnormals, infinities and NaNs
    f16 = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.float16)
    bf16 = torch.randint(-32768, 32768, (2048,), generator=g, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    f64 = torch.cat([torch.randn(1024, generator=g, dtype=torch.float64) * 10.0 ** torch.randint(-45, 45, (1024,), generator=g),
                     torch.tensor([0.0, -0.0, 1e300, -1e300, 1e-320, float("inf"), float("nan")], dtype=torch.float64)])
    tensors = []
    for name, t in (("x.f16", f16), ("x.bf16", bf16), ("x.f64", f64)):
        tensors.append((name, t))
        tensors.append((name + ".expected", t.float()))
    write_safetensors(path, tensors, {"source": "make_checkpoints.py"})


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("fixtures", "full"):
        sys.exit(__doc__)
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    if sys.argv[1] == "fixtures":
        dtype_fixture(os.path.join(out, "dtypes.safetensors"))


if __name__ == "__main__":
    main()
