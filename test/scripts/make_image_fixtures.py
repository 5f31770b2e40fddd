#!/usr/bin/python3
"""Make the image pipeline's parity fixtures with Pillow 9.4 + torchvision 0.14.

Writes into test/fixtures/image/:
  synth_*.{jpg,png,gif,webp,bmp}  small synthetic inputs (made here)
  <name>.decoded.rgb              Image.open(...).convert('RGB') bytes (HWC uint8)
  <name>.eval<S>.rgb              Resize(resize_for(S)) + CenterCrop(S) as uint8,
                                  i.e. the eval tensor before ToTensor/Normalize
  <name>.rrc<S>.rgb               resized_crop(box) + flip as uint8 for one box
  refs.txt                        one line per reference (see the C test)
  rrc_boxes.txt                   RandomResizedCrop.get_params draws and boxes

Real hymenoptera images are only read (never copied): for them refs.txt holds
FNV-1a hashes of the decoded pixels and the 224 eval crop plus a few samples.

Usage: /usr/bin/python3 test/scripts/make_image_fixtures.py [DATA_DIR]
       /usr/bin/python3 test/scripts/make_image_fixtures.py --dataset-refs OUT DATA_DIR
The second form writes references for every file of the dataset (used by
test/t/image_parity.sh, not committed): per image (path, a tab, then fields) the weighted hashes
(whash) of the decoded pixels, of the fp32 eval tensor (HWC) and of an fp32
train tensor for a recorded RandomResizedCrop box and flip.
"""
import io
import math
import os
import struct
import sys
import zlib

import numpy as np
import torch
from PIL import Image
import torchvision.transforms as T
import torchvision.transforms.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "image")
DATA = sys.argv[1] if len(sys.argv) == 2 else "/work/shared/data/hymenoptera_data"
SMALL = 32  # output size of the small eval/train references

REAL = [
    "train/ants/0013035.jpg",
    "train/bees/1092977343_cb42b38d62.jpg",
    "val/ants/10308379_1b6c72e180.jpg",
    "val/bees/1032546534_06907fe3b3.jpg",
]


def resize_for(size):
    """Eval resize for an output size: 256 for 224, the same ratio otherwise (rounded)."""
    return (size * 256 + 112) // 224


def fnv1a64(b):
    h = 0xCBF29CE484222325
    for x in b:
        h ^= x
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def fnv1a64_np(a):
    # vectorised enough for ~200 KB buffers
    h = 0xCBF29CE484222325
    for x in a.tobytes():
        h = ((h ^ x) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def whash(a):
    """Position-weighted sum mod 2**64 of uint8 or uint32 values (vectorised; the C test matches it)."""
    v = np.ascontiguousarray(a).reshape(-1)
    if v.dtype == np.float32:
        v = v.view(np.uint32)
    idx = np.arange(v.size, dtype=np.uint64)
    w = (idx * np.uint64(2654435761) + np.uint64(1)) & np.uint64(0xFFFFFFFF)
    with np.errstate(over="ignore"):
        return int((v.astype(np.uint64) * w).sum(dtype=np.uint64))


NORMALIZE = None


def to_hwc_tensor(img):
    global NORMALIZE
    if NORMALIZE is None:
        NORMALIZE = T.Compose([T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    return NORMALIZE(img).permute(1, 2, 0).contiguous().numpy()


def dataset_refs(out_path, data_dir):
    """References for every file under data_dir (train and val)."""
    eval_t = T.Compose([T.Resize(256), T.CenterCrop(224)])
    lines = []
    for root, _, files in sorted(os.walk(data_dir)):
        for fn in sorted(files):
            path = os.path.join(root, fn)
            rel = os.path.relpath(path, data_dir)
            try:
                img = Image.open(path)
                fmt = img.format
                img = img.convert("RGB")
            except Exception as e:  # noqa: BLE001 - any Pillow failure counts as not decodable
                lines.append(f"{rel}\terror {type(e).__name__}")
                continue
            if fmt not in ("JPEG", "PNG"):
                lines.append(f"{rel}\tunsupported {fmt}")
                continue
            ev = to_hwc_tensor(eval_t(img))
            _, (i, j, h, w) = record_rrc(img.width, img.height, len(rel))
            flip = len(rel) % 2
            crop = F.resized_crop(img, i, j, h, w, [224, 224], T.InterpolationMode.BILINEAR)
            if flip:
                crop = F.hflip(crop)
            tr = to_hwc_tensor(crop)
            lines.append(f"{rel}\tok {img.width} {img.height} {whash(np.asarray(img)):016x} {whash(ev):016x} "
                         f"{i} {j} {h} {w} {flip} {whash(tr):016x}")
    with open(out_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return len(lines)


def pattern(w, h, seed):
    """Smooth gradients plus noise: exercises the resampling filter."""
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 // max(w - 1, 1))
    g = (y * 255 // max(h - 1, 1))
    b = ((x + y) * 7) % 256
    img = np.stack([r, g, b], -1).astype(np.int32) + rs.randint(-40, 40, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def write_png(path, rows_fn, w, h, depth, ctype, interlace=False, plte=None):
    """A minimal PNG writer for what Pillow cannot write (16-bit RGB, Adam7, 2/4-bit gray).
    rows_fn(xs, y) -> bytes of one scanline for the pixel columns xs of row y."""
    raw = b""
    if interlace:
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    else:
        passes = [(0, 0, 1, 1)]
    for x0, y0, dx, dy in passes:
        xs = list(range(x0, w, dx))
        if not xs:
            continue
        for y in range(y0, h, dy):
            raw += b"\0" + rows_fn(xs, y)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 1 if interlace else 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    if plte is not None:
        data += png_chunk(b"PLTE", plte)
    data += png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def pack_bits(vals, depth):
    out, acc, n = bytearray(), 0, 0
    for v in vals:
        acc = (acc << depth) | v
        n += depth
        if n == 8:
            out.append(acc)
            acc, n = 0, 0
    if n:
        out.append(acc << (8 - n))
    return bytes(out)


def make_synthetic():
    """Write the synthetic inputs; return their names."""
    names = []

    def save(img, name, **kw):
        img.save(os.path.join(OUT, name), **kw)
        names.append(name)

    rgb = Image.fromarray(pattern(40, 30, 1))
    save(rgb, "synth_rgb420.jpg", quality=90)
    save(rgb, "synth_rgb444.jpg", quality=95, subsampling=0)
    save(rgb, "synth_progressive.jpg", quality=85, progressive=True)
    save(Image.fromarray(pattern(37, 23, 2)), "synth_odd422.jpg", quality=80, subsampling=1)
    save(rgb.convert("L"), "synth_gray.jpg", quality=90)
    save(rgb.convert("CMYK"), "synth_cmyk.jpg", quality=90)
    save(Image.fromarray(pattern(1, 1, 3)), "synth_1x1.jpg")
    save(Image.fromarray(pattern(300, 4, 4)), "synth_wide.jpg", quality=90)
    save(Image.fromarray(pattern(5, 260, 5)), "synth_tall.png")
    save(rgb, "synth_rgb.png")
    save(rgb.convert("P", palette=Image.ADAPTIVE, colors=64), "synth_palette.png")
    pal = rgb.convert("P", palette=Image.ADAPTIVE, colors=16)
    save(pal, "synth_palette_trns.png", transparency=3)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(pattern(40, 30, 6)[..., 0]))
    save(rgba, "synth_rgba.png")
    save(rgb.convert("LA"), "synth_la.png")
    save(rgb.convert("L"), "synth_gray.png")
    save(rgb.convert("1"), "synth_gray1.png")
    save(Image.fromarray(pattern(1, 1, 7)), "synth_1x1.png")
    # 16-bit grayscale: Pillow opens it as mode I and clips to 0..255 in convert('RGB').
    g16 = (np.arange(30 * 40).reshape(30, 40) * 17 % 700).astype(np.uint16)
    save(Image.fromarray(g16), "synth_gray16.png")

    p16 = pattern(40, 30, 8).astype(np.uint16) * 257 + np.random.RandomState(9).randint(0, 256, (30, 40, 3)).astype(np.uint16)
    write_png(os.path.join(OUT, "synth_rgb16.png"),
              lambda xs, y: b"".join(struct.pack(">HHH", *p16[y, x]) for x in xs), 40, 30, 16, 2)
    names.append("synth_rgb16.png")
    a16 = np.concatenate([p16, p16[..., :1]], -1)
    write_png(os.path.join(OUT, "synth_rgba16.png"),
              lambda xs, y: b"".join(struct.pack(">HHHH", *a16[y, x]) for x in xs), 40, 30, 16, 6)
    names.append("synth_rgba16.png")
    p8 = pattern(41, 29, 10)
    write_png(os.path.join(OUT, "synth_interlaced.png"),
              lambda xs, y: b"".join(bytes(p8[y, x]) for x in xs), 41, 29, 8, 2, interlace=True)
    names.append("synth_interlaced.png")
    write_png(os.path.join(OUT, "synth_interlaced16.png"),
              lambda xs, y: b"".join(struct.pack(">HHH", *p16[y, x]) for x in xs), 40, 30, 16, 2, interlace=True)
    names.append("synth_interlaced16.png")
    g4 = pattern(33, 9, 11)[..., 0] >> 4
    write_png(os.path.join(OUT, "synth_gray4.png"), lambda xs, y: pack_bits([g4[y, x] for x in xs], 4), 33, 9, 4, 0)
    names.append("synth_gray4.png")
    g2 = pattern(35, 7, 12)[..., 0] >> 6
    write_png(os.path.join(OUT, "synth_gray2_interlaced.png"),
              lambda xs, y: pack_bits([g2[y, x] for x in xs], 2), 35, 7, 2, 0, interlace=True)
    names.append("synth_gray2_interlaced.png")
    idx = pattern(20, 12, 13)[..., 0] >> 6
    write_png(os.path.join(OUT, "synth_palette2.png"), lambda xs, y: pack_bits([idx[y, x] for x in xs], 2),
              20, 12, 2, 3, plte=bytes([10, 20, 30, 200, 100, 50, 0, 255, 0, 255, 255, 255]))
    names.append("synth_palette2.png")

    # Recognised but unsupported formats (decoding must name them).
    small = Image.fromarray(pattern(8, 8, 14))
    for name, fmt in [("synth.gif", "GIF"), ("synth.bmp", "BMP"), ("synth.webp", "WEBP"), ("synth.tif", "TIFF")]:
        small.save(os.path.join(OUT, name), fmt)
    return names


def eval_u8(img, size):
    """Resize + CenterCrop exactly as the tutorial's eval transform (before ToTensor)."""
    t = T.Compose([T.Resize(resize_for(size)), T.CenterCrop(size)])
    return np.asarray(t(img))


def record_rrc(width, height, seed, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)):
    """torchvision 0.14 RandomResizedCrop.get_params, recording each try's draws."""
    torch.manual_seed(seed)
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    tries = []
    for _ in range(10):
        target = torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        tries.append((target, aspect))
        w = int(round(math.sqrt(area * target * aspect)))
        h = int(round(math.sqrt(area * target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,)).item()
            j = torch.randint(0, width - w + 1, size=(1,)).item()
            box = (i, j, h, w)
            break
    else:
        in_ratio = float(width) / float(height)
        if in_ratio < min(ratio):
            w = width
            h = int(round(w / min(ratio)))
        elif in_ratio > max(ratio):
            h = height
            w = int(round(h * max(ratio)))
        else:
            w, h = width, height
        box = ((height - h) // 2, (width - w) // 2, h, w)
    # The recording must agree with torchvision itself.
    torch.manual_seed(seed)
    img = Image.new("RGB", (width, height))
    assert tuple(T.RandomResizedCrop.get_params(img, list(scale), list(ratio))) == box, (width, height, seed)
    return tries, box


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    names = make_synthetic()
    refs = []
    for name in names:
        img = Image.open(os.path.join(OUT, name)).convert("RGB")
        base = name.replace(".", "_")
        dec = np.asarray(img)
        open(os.path.join(OUT, base + ".decoded.rgb"), "wb").write(dec.tobytes())
        refs.append(f"decode {name} {img.width} {img.height} {base}.decoded.rgb")
        ev = eval_u8(img, SMALL)
        open(os.path.join(OUT, f"{base}.eval{SMALL}.rgb"), "wb").write(ev.tobytes())
        refs.append(f"eval {name} {SMALL} {resize_for(SMALL)} {base}.eval{SMALL}.rgb")
        # A train crop for a recorded box, flipped on odd-named files, at the small size.
        tries, (i, j, h, w) = record_rrc(img.width, img.height, len(name))
        flip = len(name) % 2
        crop = F.resized_crop(img, i, j, h, w, [SMALL, SMALL], T.InterpolationMode.BILINEAR)
        if flip:
            crop = F.hflip(crop)
        open(os.path.join(OUT, f"{base}.rrc{SMALL}.rgb"), "wb").write(np.asarray(crop).tobytes())
        refs.append(f"crop {name} {SMALL} {i} {j} {h} {w} {flip} {base}.rrc{SMALL}.rgb")

    # Real photos: hashes and samples only.
    rs = np.random.RandomState(0)
    for rel in REAL:
        path = os.path.join(DATA, rel)
        img = Image.open(path).convert("RGB")
        dec = np.asarray(img)
        ev = eval_u8(img, 224)
        samples = []
        for _ in range(6):
            y, x, c = rs.randint(224), rs.randint(224), rs.randint(3)
            samples.append(f"{y}:{x}:{c}:{ev[y, x, c]}")
        refs.append(f"real {rel} {img.width} {img.height} {fnv1a64_np(dec):016x} {fnv1a64_np(ev):016x} "
                    + " ".join(samples))
        tries, (i, j, h, w) = record_rrc(img.width, img.height, 7)
        crop = np.asarray(F.resized_crop(img, i, j, h, w, [224, 224], T.InterpolationMode.BILINEAR))
        refs.append(f"realcrop {rel} 224 {i} {j} {h} {w} {fnv1a64_np(crop):016x}")

    with open(os.path.join(OUT, "refs.txt"), "w") as f:
        f.write("# made by test/scripts/make_image_fixtures.py with Pillow %s, torchvision %s\n"
                % (Image.__version__, __import__("torchvision").__version__))
        f.write("\n".join(refs) + "\n")

    # ToTensor + Normalize of every byte value, as [value][channel] fp32.
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    t = T.Compose([T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])(Image.fromarray(ramp))
    open(os.path.join(OUT, "normalize.f32"), "wb").write(t[:, 0, :].T.contiguous().numpy().astype("<f4").tobytes())

    # RandomResizedCrop boxes for many sizes and seeds, including fallback cases.
    lines = []
    sizes = [(500, 375), (375, 500), (224, 224), (1, 1), (10000, 1), (1, 10000), (300, 4), (5, 260),
             (2, 3), (640, 427), (100, 40), (40, 100), (7, 5)]
    for (w, h) in sizes:
        for seed in range(25):
            tries, (i, j, bh, bw) = record_rrc(w, h, seed)
            flat = " ".join(f"{a!r} {r!r}" for a, r in tries)
            lines.append(f"{w} {h} {len(tries)} {flat} {i} {j} {bh} {bw}")
    with open(os.path.join(OUT, "rrc_boxes.txt"), "w") as f:
        f.write("# width height ntries (area_frac aspect)*ntries top left height width\n")
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--dataset-refs":
        n = dataset_refs(sys.argv[2], sys.argv[3])
        print(f"{n} dataset references written to {sys.argv[2]}", file=sys.stderr)
    else:
        main()
