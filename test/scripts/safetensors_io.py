"""safetensors files for the test and bench scripts, by hand: the safetensors
package is not in Debian, and the format is small (8-byte little-endian
header length, a JSON header padded with spaces to a multiple of 8, the raw
little-endian tensor bytes in header order).

  write(path, tensors, metadata=None)   tensors: (name, value) pairs or a
                                        mapping, in file order; a value is a
                                        torch tensor (F32, F16, BF16, F64,
                                        I64) or a numpy array (F32, F64, I64)
  read_f32(path)                        {name: float32 torch tensor}; exits
                                        naming the tensor if one is not F32

Scripts outside test/scripts import it after
sys.path.insert(0, <checkout>/test/scripts).
"""
import json
import struct

import numpy as np

NUMPY_DTYPES = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64", np.dtype("<i8"): "I64"}


def _raw(value):
    """(dtype, shape, bytes) of a torch tensor or numpy array."""
    if hasattr(value, "detach"):
        import torch
        torch_dtypes = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                        torch.float64: "F64", torch.int64: "I64"}
        t = value.detach().contiguous()
        dtype = torch_dtypes[t.dtype]
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)    # numpy has no bfloat16: the same bits as int16
        return dtype, list(t.shape), t.numpy().tobytes()
    a = np.ascontiguousarray(value)
    return NUMPY_DTYPES[a.dtype], list(a.shape), a.tobytes()


def write(path, tensors, metadata=None):
    if hasattr(tensors, "items"):
        tensors = tensors.items()
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    blobs, off = [], 0
    for name, value in tensors:
        dtype, shape, b = _raw(value)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_f32(path):
    import torch
    with open(path, "rb") as f:
        data = f.read()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    header.pop("__metadata__", None)
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if info["dtype"] != "F32":
            raise SystemExit("%s: tensor %s is %s, expected F32" % (path, name, info["dtype"]))
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[base + a:base + b], dtype=np.float32).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out
