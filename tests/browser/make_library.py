#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes the photo library the filter/duplicates browser test adds with
`imgsearch add` (filters_test.mjs): two folders, known formats, sizes,
orientations and EXIF dates, and a set of near-duplicates.

    make_library.py SOURCE_DIR OUT_DIR

OUT_DIR/trip/  large_1600x1200.jpg (jpeg, landscape), lossy.webp,
               exif.png (48x64 portrait once its EXIF orientation 6 is
               applied, taken 2024-05-17 14:30 +02:00), quad_exif.heic (same
               EXIF, through heif-enc), wide_1000x40.png
OUT_DIR/home/  baseline.jpg, odd_crop_225x300.png (portrait),
               tall_40x1000.png (portrait), rgb.png, quad.heic,
               near0..near2.png (one picture, a few pixels changed: near-
               duplicates), gen00..gen07.png (distinct generated pictures)
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib


def png(path, w, h, px, exif=None):
    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = b"".join(b"\0" + b"".join(bytes(px(x, y)) for x in range(w)) for y in range(h))
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    if exif:
        data += chunk(b"eXIf", exif)
    data += chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def main(src, out):
    sys.path.insert(0, os.path.join(src, "tests", "unit", "image"))
    sys.path.insert(0, os.path.join(src, "tests", "integration"))
    import make_heif
    from hostile_server import png_bytes
    fixtures = os.path.join(src, "tests", "golden", "clip", "images")
    trip, home = os.path.join(out, "trip"), os.path.join(out, "home")
    os.makedirs(trip)
    os.makedirs(home)
    for name in ("large_1600x1200.jpg", "lossy.webp", "wide_1000x40.png"):
        shutil.copy(os.path.join(fixtures, name), trip)
    for name in ("baseline.jpg", "odd_crop_225x300.png", "tall_40x1000.png", "rgb.png"):
        shutil.copy(os.path.join(fixtures, name), home)
    png(os.path.join(trip, "exif.png"), 64, 48,
        lambda x, y: (200 if x < 32 else 40, 60 + 3 * y, 150 if y < 24 else 30),
        make_heif.exif_payload())
    with tempfile.TemporaryDirectory() as tmp:
        make_heif.main(shutil.which("heif-enc") or "heif-enc", tmp)
        shutil.copy(os.path.join(tmp, "quad_exif.heic"), trip)
        shutil.copy(os.path.join(tmp, "quad.heic"), home)

    def base(x, y):
        return ((x * 5) % 256, (y * 7 + 40) % 256, ((x ^ y) * 3) % 256)
    for i in range(3):
        png(os.path.join(home, "near%d.png" % i), 96, 72,
            lambda x, y, i=i: tuple(min(255, c + 6 * i) for c in base(x, y))
            if x < 4 and y < 4 else base(x, y))
    for i in range(8):
        with open(os.path.join(home, "gen%02d.png" % i), "wb") as f:
            f.write(png_bytes(48 + 4 * i, 40 + 3 * i, 11 * i + 3))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
