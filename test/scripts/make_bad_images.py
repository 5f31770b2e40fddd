#!/usr/bin/python3
"""Make a corpus of hostile and unusual images for the image decoder.

Usage: /usr/bin/python3 test/scripts/make_bad_images.py OUT_DIR

Writes OUT_DIR/NNN_<name> files and OUT_DIR/manifest.txt, one line per file:
    file <TAB> expect <TAB> pillow
expect is what the C decoder must do:
    ok     decode (a valid image), with pixels equal to Pillow's
    limit  fail with TL_E_LIMIT (declared size over the 89478485-pixel default)
    error  fail with a clear error (TL_E_UNSUPPORTED or TL_E_CORRUPT)
    any    either a clear error or, if Pillow decodes it too, Pillow's pixels
pillow is "ok W H WHASH EVALHASH" when Pillow decodes it (convert('RGB');
EVALHASH: Resize(37) + CenterCrop(32) uint8), else "error <reason>".
Inputs are built from small synthetic images; nothing from the dataset.
"""
import io
import os
import random
import struct
import sys
import zlib

import numpy as np
from PIL import Image
import torchvision.transforms as T

MAX_PIXELS = 89478485
Image.MAX_IMAGE_PIXELS = None  # we decide limits ourselves; Pillow only gives reference pixels


def whash(a):
    v = np.ascontiguousarray(a).reshape(-1)
    idx = np.arange(v.size, dtype=np.uint64)
    w = (idx * np.uint64(2654435761) + np.uint64(1)) & np.uint64(0xFFFFFFFF)
    with np.errstate(over="ignore"):
        return int((v.astype(np.uint64) * w).sum(dtype=np.uint64))


def pattern(w, h, seed):
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 5 % 256], -1)
    img = img.astype(np.int32) + rs.randint(-30, 30, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def encode(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_raw(w, h, depth, ctype, raw, extra=b"", interlace=0):
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def jpeg_sof_offset(data):
    """Offset of the SOFn marker segment."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        m = data[i + 1]
        seglen = struct.unpack(">H", data[i + 2:i + 4])[0]
        if m in (0xC0, 0xC1, 0xC2):
            return i
        i += 2 + seglen
    return None


def jpeg_sos_end(data):
    """Offset just after the first SOS header (start of entropy data)."""
    i = 2
    while i + 4 <= len(data):
        m = data[i + 1]
        seglen = struct.unpack(">H", data[i + 2:i + 4])[0]
        if m == 0xDA:
            return i + 2 + seglen
        i += 2 + seglen
    return len(data) // 2


def set_jpeg_dims(data, w, h):
    o = jpeg_sof_offset(data)
    b = bytearray(data)
    b[o + 5:o + 7] = struct.pack(">H", h)
    b[o + 7:o + 9] = struct.pack(">H", w)
    return bytes(b)


def set_png_dims(data, w, h, fix_crc=True):
    b = bytearray(data)
    b[16:24] = struct.pack(">II", w, h)
    if fix_crc:
        b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])) & 0xFFFFFFFF)
    return bytes(b)


def flip_bit(data, offset, bit):
    b = bytearray(data)
    b[offset] ^= 1 << bit
    return bytes(b)


def corpus():
    """(name, bytes, expect) for every case."""
    rng = random.Random(1234)
    base = pattern(48, 32, 1)
    jpg = encode(base, "JPEG", quality=90)
    prog = encode(base, "JPEG", quality=90, progressive=True)
    png = encode(base, "PNG")
    cases = []

    # valid but unusual
    cases.append(("valid_1x1.jpg", encode(pattern(1, 1, 2), "JPEG"), "ok"))
    cases.append(("valid_1x1.png", encode(pattern(1, 1, 3), "PNG"), "ok"))
    cases.append(("valid_1x10000.jpg", encode(pattern(1, 10000, 4), "JPEG"), "ok"))
    cases.append(("valid_10000x1.jpg", encode(pattern(10000, 1, 5), "JPEG"), "ok"))
    cases.append(("valid_1x10000.png", encode(pattern(1, 10000, 6), "PNG"), "ok"))
    cases.append(("valid_10000x1.png", encode(pattern(10000, 1, 7), "PNG"), "ok"))
    cases.append(("valid_progressive.jpg", prog, "ok"))
    cases.append(("valid_cmyk.jpg", encode(base.convert("CMYK"), "JPEG"), "ok"))
    cases.append(("valid_cmyk_progressive.jpg", encode(base.convert("CMYK"), "JPEG", progressive=True), "ok"))
    cases.append(("valid_gray.jpg", encode(base.convert("L"), "JPEG"), "ok"))
    arr16 = (np.asarray(base).astype(np.uint16) * 257).astype(">u2")
    cases.append(("valid_rgb16.png", png_raw(48, 32, 16, 2, b"".join(b"\0" + arr16[y].tobytes() for y in range(32))), "ok"))
    g16 = (np.arange(48 * 32).reshape(32, 48) * 37 % 65536).astype(">u2")
    cases.append(("valid_gray16.png", png_raw(48, 32, 16, 0, b"".join(b"\0" + g16[y].tobytes() for y in range(32))), "ok"))
    # Adam7: pass rows, filter 0 (an all-one-colour image keeps the writer simple)
    inter = b""
    for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]:
        xs = list(range(x0, 20, dx))
        for y in range(y0, 13, dy):
            if xs:
                inter += b"\0" + b"".join(bytes([(x * 12) % 256, (y * 19) % 256, 77]) for x in xs)
    cases.append(("valid_interlaced.png", png_raw(20, 13, 8, 2, inter, interlace=1), "ok"))
    cases.append(("valid_rgba.png", encode(base.convert("RGBA"), "PNG"), "ok"))
    cases.append(("valid_palette.png", encode(base.convert("P"), "PNG"), "ok"))

    # truncations
    for frac in (0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.98):
        n = max(3, int(len(jpg) * frac))
        cases.append((f"trunc_jpeg_{n}.jpg", jpg[:n], "error"))
    cases.append(("trunc_jpeg_no_eoi.jpg", jpg[:-2], "any"))
    for frac in (0.1, 0.4, 0.6, 0.8, 0.95):
        n = int(len(prog) * frac)
        cases.append((f"trunc_progressive_{n}.jpg", prog[:n], "error"))
    for n in (8, 12, 20, 30, 33, 40, 60, len(png) // 2, len(png) - 20, len(png) - 12):
        # Pillow tolerates a missing IDAT CRC / IEND once the pixels are in
        cases.append((f"trunc_png_{n}.png", png[:n], "error" if n < len(png) // 2 + 1 else "any"))

    # bit flips in headers and entropy data
    sof = jpeg_sof_offset(jpg)
    for off in (3, 4, 5, 6, 20, 30, sof + 1, sof + 4, sof + 9, sof + 10, sof + 12):
        cases.append((f"flip_jpeg_header_{off}.jpg", flip_bit(jpg, off, rng.randrange(8)), "any"))
    start = jpeg_sos_end(jpg)
    for k in range(8):
        off = rng.randrange(start, len(jpg) - 2)
        cases.append((f"flip_jpeg_data_{off}.jpg", flip_bit(jpg, off, rng.randrange(8)), "any"))
    pstart = jpeg_sos_end(prog)
    for k in range(4):
        off = rng.randrange(pstart, len(prog) - 2)
        cases.append((f"flip_progressive_data_{off}.jpg", flip_bit(prog, off, rng.randrange(8)), "any"))
    for off in (9, 13, 17, 21, 24, 25, 26, 28, 30):
        cases.append((f"flip_png_header_{off}.png", flip_bit(png, off, rng.randrange(8)), "any"))
    for k in range(6):
        off = rng.randrange(45, len(png) - 16)
        cases.append((f"flip_png_data_{off}.png", flip_bit(png, off, rng.randrange(8)), "any"))

    # declared dimensions
    cases.append(("dims_jpeg_0x32.jpg", set_jpeg_dims(jpg, 0, 32), "error"))
    cases.append(("dims_jpeg_48x0.jpg", set_jpeg_dims(jpg, 48, 0), "error"))
    cases.append(("dims_jpeg_65535x65535.jpg", set_jpeg_dims(jpg, 65535, 65535), "limit"))
    cases.append(("dims_jpeg_65500x1400.jpg", set_jpeg_dims(jpg, 65500, 1400), "limit"))
    # libjpeg and Pillow both fill missing entropy data before the EOI marker with gray
    cases.append(("dims_jpeg_3000x3000_short.jpg", set_jpeg_dims(jpg, 3000, 3000), "any"))
    cases.append(("dims_png_0x0.png", set_png_dims(png, 0, 0), "error"))
    cases.append(("dims_png_65535x65535.png", set_png_dims(png, 65535, 65535), "limit"))
    cases.append(("dims_png_2147483647x1.png", set_png_dims(png, 0x7FFFFFFF, 1), "limit"))
    cases.append(("dims_png_4294967295x1.png", set_png_dims(png, 0xFFFFFFFF, 1), "error"))
    cases.append(("dims_png_10000x8948.png", set_png_dims(png, 10000, 8948), "limit"))
    # A real 10000x9000 PNG bomb: 90 M pixels compress to ~90 KB of zlib
    row = b"\0" + b"\0" * 10000
    cases.append(("bomb_png_10000x9000.png", png_raw(10000, 9000, 8, 0, row * 9000), "limit"))
    cases.append(("dims_png_48x33_short_data.png", set_png_dims(png, 48, 33), "any"))

    # wrong magic, other formats, random bytes, empty
    cases.append(("magic_png_broken.png", b"\x88" + png[1:], "error"))
    cases.append(("magic_jpeg_broken.jpg", b"\xff\xd8\x00" + jpg[3:], "error"))
    cases.append(("magic_jpeg_only.jpg", b"\xff\xd8\xff", "error"))
    cases.append(("magic_png_only.png", png[:8], "error"))
    cases.append(("other.gif", encode(base, "GIF"), "error"))
    cases.append(("other.bmp", encode(base, "BMP"), "error"))
    cases.append(("other.webp", encode(base, "WEBP"), "error"))
    cases.append(("other.tif", encode(base, "TIFF"), "error"))
    for k, n in enumerate((1, 7, 100, 5000)):
        cases.append((f"random_{n}.bin", bytes(rng.randrange(256) for _ in range(n)), "error"))
    cases.append(("empty.bin", b"", "error"))
    cases.append(("png_huge_chunk.png", png[:33] + struct.pack(">I", 0x7FFFFFF0) + b"IDAT" + png[41:], "any"))
    cases.append(("png_no_plte.png", png_raw(4, 4, 8, 3, b"\0\0\0\0\0" * 4), "any"))
    cases.append(("jpeg_bad_marker_len.jpg", jpg[:4] + b"\xff\xff" + jpg[6:], "any"))
    cases.append(("jpeg_two_components.jpg", jpeg_two_components(jpg), "any"))
    return cases


def jpeg_two_components(jpg):
    """A SOF claiming 2 components (the rest of the file no longer matches)."""
    o = jpeg_sof_offset(jpg)
    b = bytearray(jpg)
    b[o + 9] = 2
    return bytes(b)


def pillow_verdict(data):
    try:
        im = Image.open(io.BytesIO(data))
        fmt = im.format
        im = im.convert("RGB")
    except Exception as e:  # noqa: BLE001 - any failure is a refusal
        return "error " + type(e).__name__
    if fmt not in ("JPEG", "PNG"):
        return "error format-" + str(fmt)
    if im.width * im.height > MAX_PIXELS:
        return "error over-limit"
    ev = np.asarray(T.CenterCrop(32)(T.Resize(37)(im)))
    return f"ok {im.width} {im.height} {whash(np.asarray(im)):016x} {whash(ev):016x}"


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    lines = []
    for k, (name, data, expect) in enumerate(corpus()):
        fn = f"{k:03d}_{name}"
        with open(os.path.join(out, fn), "wb") as f:
            f.write(data)
        # over-limit inputs are refused whatever Pillow would do (and decoding them is slow)
        verdict = "error not-decoded" if expect == "limit" else pillow_verdict(data)
        lines.append(f"{fn}\t{expect}\t{verdict}")
    with open(os.path.join(out, "manifest.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{len(lines)} images in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
