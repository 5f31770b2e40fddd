#!/usr/bin/python3
"""Checkpoints for the weights tests, written with PyTorch (the oracle).

  make_checkpoints.py fixtures DIR   small committed files (test/fixtures/checkpoint):
                                     torch-written files with their expected fp32
                                     tensors, and DIR/bad/CODE-what.EXT, hostile or
                                     damaged files that must be refused with tl_code CODE
  make_checkpoints.py full DIR       full ResNet-18 checkpoints (~45 MB each, into build/)

safetensors files are written by hand (safetensors_io.py) because the
safetensors package is not in Debian.
"""
import collections
import io
import json
import os
import struct
import sys
import zipfile

import torch

from safetensors_io import write as write_safetensors

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


def views_state_dict():
    """Tensors that exercise storage sharing, offsets, strides and dtypes."""
    g = torch.Generator().manual_seed(7)
    base = torch.randn(10, generator=g)
    square = torch.randn(4, 3, generator=g)
    sd = collections.OrderedDict()
    sd["conv.weight"] = torch.randn(2, 3, 3, 3, generator=g)
    sd["base"] = base
    sd["slice"] = base[2:5]                    # storage offset 2, shares base's storage
    sd["transposed"] = square.t()              # strides (1, 3)
    sd["every_other"] = torch.randn(12, generator=g)[::2]   # stride 2
    sd["half"] = torch.randn(3, 5, generator=g).half()
    sd["bfloat"] = torch.randn(7, generator=g).bfloat16()
    sd["double"] = torch.randn(2, 2, generator=g).double()
    sd["scalar"] = torch.tensor(3.5)
    sd["empty"] = torch.zeros(0, 3)
    sd["bn.num_batches_tracked"] = torch.tensor(12, dtype=torch.long)
    return sd


def expected_of(sd):
    return [(k, v.float().contiguous()) for k, v in sd.items() if not k.endswith("num_batches_tracked")]


class Py2OrderedDict:
    """Pickles as Python 2 did: OrderedDict([[key, value], ...])."""

    def __init__(self, items):
        self.items = items

    def __reduce__(self):
        return (collections.OrderedDict, ([[k, v] for k, v in self.items],))


def zip_bytes(entries, compression=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in entries:
            # a fixed date keeps regenerated fixtures byte-identical
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, compression)
    return buf.getvalue()


def to_zip64(data):
    """The same zip with every central directory size and offset moved into
    zip64 extra fields and zip64 end records, as writers do past 4 GB."""
    eocd = data.rindex(b"PK\x05\x06")
    count, _, cd_off = struct.unpack("<HII", data[eocd + 10:eocd + 20])
    cd, p = b"", cd_off
    for _ in range(count):
        hdr = bytearray(data[p:p + 46])
        csize, size = struct.unpack("<II", hdr[20:28])
        nlen, xlen, clen = struct.unpack("<HHH", hdr[28:34])
        (off,) = struct.unpack("<I", hdr[42:46])
        rest = data[p + 46:p + 46 + nlen + xlen]
        comment = data[p + 46 + nlen + xlen:p + 46 + nlen + xlen + clen]
        z64 = struct.pack("<HHQQQ", 1, 24, size, csize, off)
        hdr[20:28] = struct.pack("<II", 0xFFFFFFFF, 0xFFFFFFFF)
        hdr[30:32] = struct.pack("<H", xlen + len(z64))
        hdr[42:46] = struct.pack("<I", 0xFFFFFFFF)
        cd += bytes(hdr) + rest + z64 + comment
        p += 46 + nlen + xlen + clen
    body = data[:cd_off]
    eocd64 = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, len(cd), len(body))
    locator = struct.pack("<IIQI", 0x07064B50, 0, len(body) + len(cd), 1)
    classic = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return body + cd + eocd64 + locator + classic


def torch_zip_with_pickle(pkl, storages=()):
    return zip_bytes([("archive/data.pkl", pkl)] +
                     [("archive/data/%s" % k, v) for k, v in storages] +
                     [("archive/version", b"3\n")])


# Hand-written protocol 2 pickle fragments.
def p_str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def p_int(v):
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if -2**31 <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    return b"\x8a\x08" + struct.pack("<q", v)


def p_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def p_tuple(*items):
    return b"(" + b"".join(items) + b"t"


def p_tensor(key, storage_key, numel, size, stride, offset=0, storage="FloatStorage", persid=None):
    if persid is None:
        persid = p_tuple(p_str("storage"), p_global("torch", storage), p_str(storage_key),
                         p_str("cpu"), p_int(numel))
    return (p_str(key) + p_global("torch._utils", "_rebuild_tensor_v2") +
            p_tuple(persid + b"Q", p_int(offset), p_tuple(*map(p_int, size)),
                    p_tuple(*map(p_int, stride)), b"\x89",
                    p_global("collections", "OrderedDict") + b")R") + b"R")


def p_state_dict(*tensors):
    return b"\x80\x02" + p_global("collections", "OrderedDict") + b")R(" + b"".join(tensors) + b"u."


def bad_files(out):
    """Hostile and damaged files: out/CODE-what.EXT must be refused with tl_code CODE."""
    os.makedirs(out, exist_ok=True)
    f4 = struct.pack("<4f", 1, 2, 3, 4)
    good_pkl = p_state_dict(p_tensor("w", "0", 4, (2, 2), (2, 1)))
    files = {}

    def call(module, name, arg):
        return b"\x80\x02" + p_global(module, name) + p_str(arg) + b"\x85R."

    files["forbidden-os-system.pth"] = torch_zip_with_pickle(call("os", "system", "echo pwned"))
    files["forbidden-posix-system.pth"] = torch_zip_with_pickle(call("posix", "system", "echo pwned"))
    files["forbidden-builtins-eval.pth"] = torch_zip_with_pickle(call("builtins", "eval", "print(1)"))
    files["forbidden-subprocess.pth"] = torch_zip_with_pickle(
        b"\x80\x02" + p_global("subprocess", "check_output") + p_tuple(p_str("id")) + b"\x85R.")
    # the global is refused even when it is never called
    files["forbidden-uncalled-global.pth"] = torch_zip_with_pickle(
        p_state_dict(p_str("x") + p_global("os", "system")))
    files["forbidden-whole-model.pth"] = torch_zip_with_pickle(
        b"\x80\x02" + p_global("torchvision.models.resnet", "ResNet") + b")\x81.")
    files["forbidden-storage-called.pth"] = torch_zip_with_pickle(
        b"\x80\x02" + p_global("torch", "FloatStorage") + b")R.")
    # legacy layout around a hostile state_dict pickle
    legacy_head = (b"\x80\x02\x8a\x0a" + bytes.fromhex("6cfc9c46f9206aa85019") + b"." +
                   b"\x80\x02M\xe9\x03." +
                   b"\x80\x02}(" + p_str("little_endian") + b"\x88u.")
    files["forbidden-legacy-os-system.pth"] = legacy_head + call("os", "system", "echo pwned")

    files["limit-deep-marks.pth"] = torch_zip_with_pickle(b"\x80\x02" + b"(" * 2000 + b"N" + b"t" * 2000 + b".")
    files["limit-deep-tuples.pth"] = torch_zip_with_pickle(b"\x80\x02)" + b"\x85" * 2000 + b".")
    files["limit-deep-lists.pth"] = torch_zip_with_pickle(
        b"\x80\x02" + b"]" * 2000 + b"a" * 1999 + b".")
    files["limit-huge-tensor.pth"] = torch_zip_with_pickle(
        p_state_dict(p_tensor("w", "0", 4, (1 << 31, 1 << 31), (1 << 31, 1))), [("0", f4)])
    files["limit-huge-storage.pth"] = torch_zip_with_pickle(
        p_state_dict(p_tensor("w", "0", 1 << 60, (2, 2), (2, 1))), [("0", f4)])
    files["limit-memo-index.pth"] = torch_zip_with_pickle(b"\x80\x02Nr\xff\xff\xff\x7f.")

    files["corrupt-negative-size.pth"] = torch_zip_with_pickle(
        p_state_dict(p_tensor("w", "0", 4, (-2, -2), (2, 1))), [("0", f4)])
    files["corrupt-negative-offset.pth"] = torch_zip_with_pickle(
        p_state_dict(p_tensor("w", "0", 4, (2, 2), (2, 1), offset=-1)), [("0", f4)])
    files["corrupt-view-past-storage.pth"] = torch_zip_with_pickle(
        p_state_dict(p_tensor("w", "0", 4, (2, 2), (2, 1), offset=1)), [("0", f4)])
    files["corrupt-storage-size-mismatch.pth"] = torch_zip_with_pickle(
        p_state_dict(p_tensor("w", "0", 1000, (2, 2), (2, 1))), [("0", f4)])
    files["corrupt-persid-not-tuple.pth"] = torch_zip_with_pickle(
        p_state_dict(p_tensor("w", "0", 4, (2, 2), (2, 1), persid=p_str("0"))), [("0", f4)])
    files["corrupt-persid-path.pth"] = torch_zip_with_pickle(
        p_state_dict(p_tensor("w", "../../etc/passwd", 4, (2, 2), (2, 1))), [("0", f4)])
    files["corrupt-persid-type.pth"] = torch_zip_with_pickle(
        p_state_dict(p_tensor("w", "0", 4, (2, 2), (2, 1), persid=p_tuple(
            p_str("storage"), p_global("collections", "OrderedDict"), p_str("0"), p_str("cpu"), p_int(4)))),
        [("0", f4)])
    files["corrupt-missing-storage.pth"] = torch_zip_with_pickle(good_pkl)
    files["corrupt-key-not-utf8.pth"] = torch_zip_with_pickle(
        p_state_dict(p_tensor("w", "0", 4, (2, 2), (2, 1)).replace(p_str("w"), b"X\x02\x00\x00\x00\xff\xfe", 1)),
        [("0", f4)])
    files["corrupt-stack-underflow.pth"] = torch_zip_with_pickle(b"\x80\x02t.")
    files["corrupt-no-stop.pth"] = torch_zip_with_pickle(good_pkl[:-1])
    files["corrupt-memo-unset.pth"] = torch_zip_with_pickle(b"\x80\x02h\x07.")

    good = torch_zip_with_pickle(good_pkl, [("0", f4)])
    files["corrupt-truncated-half.pth"] = good[: len(good) // 2]
    files["corrupt-truncated-tail.pth"] = good[:-7]
    bad_crc = bytearray(good)
    bad_crc[good.index(f4)] ^= 0x01
    files["corrupt-bad-crc.pth"] = bytes(bad_crc)
    # central directory says 20 bytes instead of 16 for the storage
    wrong_size = bytearray(good)
    cd = good.index(b"PK\x01\x02" , good.index(b"archive/data/0") + 10)
    while not good[cd + 46: cd + 46 + 14] == b"archive/data/0":
        cd = good.index(b"PK\x01\x02", cd + 4)
    wrong_size[cd + 20: cd + 28] = struct.pack("<II", 20, 20)
    files["corrupt-wrong-sizes.pth"] = bytes(wrong_size)

    legacy = io.BytesIO()
    torch.save(collections.OrderedDict(w=torch.arange(4.0)), legacy, _use_new_zipfile_serialization=False)
    files["corrupt-legacy-truncated.pth"] = legacy.getvalue()[:-9]
    files["corrupt-legacy-trailing.pth"] = legacy.getvalue() + b"\0" * 3

    def st(header, data=b""):
        h = json.dumps(header).encode()
        return struct.pack("<Q", len(h)) + h + data

    t = {"dtype": "F32", "shape": [2]}
    files["corrupt-st-overlap.safetensors"] = st({"a": dict(t, data_offsets=[0, 8]), "b": dict(t, data_offsets=[4, 12])},
                                                 bytes(12))
    files["corrupt-st-out-of-range.safetensors"] = st({"a": dict(t, data_offsets=[8, 16])}, bytes(8))
    files["corrupt-st-header-past-end.safetensors"] = struct.pack("<Q", 1 << 20) + b'{"a":1}'
    files["limit-st-giant-header.safetensors"] = struct.pack("<Q", (1 << 63) - 1) + b'{"a":1}'
    deep = b'{"__metadata__":{"x":' + b"[" * 1000 + b"]" * 1000 + b"}}"
    files["limit-st-deep-nesting.safetensors"] = struct.pack("<Q", len(deep)) + deep
    files["unsupported-protocol4.pth"] = torch_zip_with_pickle(b"\x80\x04N.")
    files["unsupported-random.bin"] = bytes((i * 7919 + 13) % 251 for i in range(512))
    files["unsupported-empty.bin"] = b""
    for name, data in files.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


def resnet18_state_dict(num_classes, base_width=64, seed=0):
    """torchvision's resnet18 state_dict (keys, order, shapes) with channel widths
    scaled to base_width, seeded random weights and BatchNorm statistics away
    from (0, 1); num_batches_tracked as torch keeps it (int64)."""
    import torchvision
    g = torch.Generator().manual_seed(seed)
    ref = torchvision.models.resnet18(num_classes=num_classes).state_dict()
    sd = collections.OrderedDict()
    for key, t in ref.items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(seed + 100, dtype=torch.long)
            continue
        shape = [d * base_width // 64 if d in (64, 128, 256, 512) and not (key.startswith("fc") and i == 0)
                 else d for i, d in enumerate(t.shape)]
        if key.endswith("running_var"):
            v = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("running_mean") or key.endswith("bias"):
            v = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:
            v = 0.75 + 0.5 * torch.rand(shape, generator=g)
        else:
            fan_in = 1
            for d in shape[1:]:
                fan_in *= d
            v = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        sd[key] = v
    return sd


def write_model_files(out, stem, sd):
    """stem.pth (zip), stem_legacy.pth and stem.safetensors of one state_dict."""
    torch.save(sd, os.path.join(out, stem + ".pth"))
    torch.save(sd, os.path.join(out, stem + "_legacy.pth"), _use_new_zipfile_serialization=False)
    write_safetensors(os.path.join(out, stem + ".safetensors"),
                      [(k, v) for k, v in sd.items() if not k.endswith("num_batches_tracked")],
                      {"format": "pt"})


def tiny_models(out):
    """ResNet-18 layout with base width 2 (47 kB): the SQL tests' models."""
    sd = resnet18_state_dict(3, base_width=2, seed=3)
    write_model_files(out, "tiny", sd)
    # f16 copy: imports convert it to fp32
    half = collections.OrderedDict((k, v.half() if v.is_floating_point() else v) for k, v in sd.items())
    torch.save(half, os.path.join(out, "tiny_f16.pth"))
    # validation failures, each named after what is wrong
    missing = collections.OrderedDict((k, v) for k, v in sd.items() if k != "layer2.1.bn2.running_mean")
    torch.save(missing, os.path.join(out, "tiny_missing_key.pth"))
    extra = collections.OrderedDict(sd)
    extra["layer5.0.conv1.weight"] = torch.zeros(1)
    torch.save(extra, os.path.join(out, "tiny_unexpected_key.pth"))
    wrong = collections.OrderedDict(sd)
    wrong["layer3.0.conv2.weight"] = torch.zeros(8, 8, 1, 3)
    torch.save(wrong, os.path.join(out, "tiny_wrong_shape.pth"))


def small_fixtures(out):
    tiny_models(out)
    dtype_fixture(os.path.join(out, "dtypes.safetensors"))
    sd = views_state_dict()
    # each torch-written file goes with NAME.expected.safetensors: torch's fp32 values
    torch.save(sd, os.path.join(out, "views.pth"))
    torch.save(sd, os.path.join(out, "views_legacy.pth"), _use_new_zipfile_serialization=False)
    write_safetensors(os.path.join(out, "views.expected.safetensors"), expected_of(sd))
    for name in ("views_legacy", "views_deflate"):
        write_safetensors(os.path.join(out, name + ".expected.safetensors"), expected_of(sd))
    # the same archive re-zipped with deflate, as another zip tool might,
    # and stored with zip64 directory fields
    with zipfile.ZipFile(os.path.join(out, "views.pth")) as z:
        entries = [(i.filename, z.read(i)) for i in z.infolist()]
    with open(os.path.join(out, "views_deflate.pth"), "wb") as f:
        f.write(zip_bytes(entries, zipfile.ZIP_DEFLATED))
    zip64 = to_zip64(zip_bytes(entries))
    with zipfile.ZipFile(io.BytesIO(zip64)) as z:    # Python's reader agrees
        assert [(i.filename, z.read(i)) for i in z.infolist()] == entries
    with open(os.path.join(out, "views_zip64.pth"), "wb") as f:
        f.write(zip64)
    write_safetensors(os.path.join(out, "views_zip64.expected.safetensors"), expected_of(sd))
    # Python 2 style OrderedDict and nn.Parameter values, in the legacy format
    g = torch.Generator().manual_seed(11)
    items = [("fc.weight", torch.nn.Parameter(torch.randn(3, 4, generator=g))), ("fc.bias", torch.randn(3, generator=g))]
    torch.save(Py2OrderedDict(items), os.path.join(out, "py2_legacy.pth"), _use_new_zipfile_serialization=False)
    write_safetensors(os.path.join(out, "py2_legacy.expected.safetensors"),
                      [(k, v.detach().float()) for k, v in items])
    bad_files(os.path.join(out, "bad"))


def full_models(out):
    """Full ResNet-18 checkpoints: 1000 classes (the ImageNet layout) and 2."""
    write_model_files(out, "resnet18", resnet18_state_dict(1000, seed=1))
    write_model_files(out, "resnet18_2cls", resnet18_state_dict(2, seed=2))


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("fixtures", "full"):
        sys.exit(__doc__)
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    if sys.argv[1] == "fixtures":
        small_fixtures(out)
    else:
        full_models(out)


if __name__ == "__main__":
    main()
