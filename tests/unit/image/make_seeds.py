#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Writes the small PNG/BMP files of tests/fuzz/corpus/image/ that exercise
# rarer decoder paths (16-bit grey -> mode I, 16-bit grey+alpha -> RGBA,
# 16-bit RGB, 1-bit grey -> mode "1", 4-bit palette with tRNS, 8-bit BMP,
# 5-6-5 BMP). Pure standard library (struct + zlib), no imaging library:
# test_image.c recomputes the same pixel functions and checks the decoders.
# The GIF and WebP seeds were written with giflib (EGif*, an interlaced
# 12x9 frame at (1, 1) on a 14x11 screen, transparent index 2,
# pixel = (x + y) & 3) and libwebp (WebPEncodeRGB q80 and
# WebPEncodeLosslessRGBA of a 12x9 gradient).
import os
import struct
import sys
import zlib

W, H = 7, 5


def v16(x, y):
    return (x * 9173 + y * 20011) & 0xFFFF


def chunk(kind, data):
    c = struct.pack(">I", len(data)) + kind + data
    return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(path, depth, ctype, rows, extra=b""):
    ihdr = struct.pack(">IIBBBBB", W, H, depth, ctype, 0, 0, 0)
    raw = b"".join(b"\0" + r for r in rows)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra
    data += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def pack_bits(vals, bits):
    out, acc, n = bytearray(), 0, 0
    for v in vals:
        acc = (acc << bits) | v
        n += bits
        if n == 8:
            out.append(acc)
            acc, n = 0, 0
    if n:
        out.append(acc << (8 - n))
    return bytes(out)


def tiff(path, endian, spp, bps, photometric, extra=None, orientation=None):
    """An uncompressed one-strip TIFF of W x H, sample = v16(x, y + 7 * c)
    (its high byte for 8 bits), with optional ExtraSamples and Orientation."""
    e = "<" if endian == "II" else ">"
    data = bytearray()
    for y in range(H):
        for x in range(W):
            for c in range(spp):
                v = v16(x, y + 7 * c)
                data += struct.pack(e + "H", v) if bps == 16 else bytes([v >> 8])
    tags = [(256, 3, W), (257, 3, H), (258, 3, bps), (259, 3, 1), (262, 3, photometric),
            (273, 4, 0), (277, 3, spp), (278, 3, H), (279, 4, len(data))]
    if orientation:
        tags.append((274, 3, orientation))
    if extra is not None:
        tags.append((338, 3, extra))
    tags.sort()
    ifd_at = 8
    data_at = ifd_at + 2 + 12 * len(tags) + 4
    out = bytearray(endian.encode() + struct.pack(e + "HI", 42, ifd_at))
    out += struct.pack(e + "H", len(tags))
    for tag, typ, val in tags:
        if tag == 273:
            val = data_at
        if typ == 3:
            out += struct.pack(e + "HHIHH", tag, typ, 1, val, 0)
        else:
            out += struct.pack(e + "HHII", tag, typ, 1, val)
    out += struct.pack(e + "I", 0) + data
    with open(path, "wb") as f:
        f.write(out)


def main(d):
    tiff(os.path.join(d, "seed_rgb8.tif"), "II", 3, 8, 2, orientation=6)
    tiff(os.path.join(d, "seed_rgba16_be.tif"), "MM", 4, 16, 2, extra=2)
    tiff(os.path.join(d, "seed_grey16.tif"), "II", 1, 16, 1)
    png(os.path.join(d, "seed_grey16.png"), 16, 0,
        [b"".join(struct.pack(">H", v16(x, y)) for x in range(W)) for y in range(H)])
    png(os.path.join(d, "seed_ga16.png"), 16, 4,
        [b"".join(struct.pack(">HH", v16(x, y), v16(y, x)) for x in range(W)) for y in range(H)])
    png(os.path.join(d, "seed_rgb16.png"), 16, 2,
        [b"".join(struct.pack(">HHH", v16(x, y), v16(y, x), v16(x, x))
                  for x in range(W)) for y in range(H)])
    png(os.path.join(d, "seed_grey1.png"), 1, 0,
        [pack_bits([(x + y) & 1 for x in range(W)], 1) for y in range(H)])
    pal = b"".join(bytes((i * 16, 255 - i * 16, i)) for i in range(16))
    png(os.path.join(d, "seed_pal4_trns.png"), 4, 3,
        [pack_bits([(x * 3 + y) & 15 for x in range(W)], 4) for y in range(H)],
        chunk(b"PLTE", pal) + chunk(b"tRNS", bytes([255, 255, 0, 128])))
    # 8-bit palette BMP, bottom-up, 40-byte header; pixel index (x * 3 + y) & 15
    row = (W + 3) & ~3
    pal = b"".join(bytes((i, 255 - i * 16, i * 16, 0)) for i in range(16))
    pix = b"".join(bytes(((x * 3 + y) & 15) for x in range(W)) + b"\0" * (row - W)
                   for y in reversed(range(H)))
    off = 14 + 40 + len(pal)
    hdr = b"BM" + struct.pack("<IHHI", off + len(pix), 0, 0, off)
    info = struct.pack("<IiiHHIIiiII", 40, W, H, 1, 8, 0, len(pix), 2835, 2835, 16, 0)
    with open(os.path.join(d, "seed_pal8.bmp"), "wb") as f:
        f.write(hdr + info + pal + pix)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
