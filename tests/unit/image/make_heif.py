#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Test set-up for test_image_formats: writes PNGs of a known pattern (pure
# standard library) and encodes them with libheif's heif-enc into HEIC (x265)
# and AVIF (aom), the way a phone's files are made. The pattern is a 64x48
# picture of four flat quadrants (colours QUAD below, top-left, top-right,
# bottom-left, bottom-right), so that a lossy codec keeps the quadrant
# centres close to the known colours and a rotation or mirror is obvious.
# The "_alpha" variant has alpha 255 on the left half and 96 on the right.
# Usage: make_heif.py HEIF_ENC OUT_DIR
import os
import struct
import subprocess
import sys
import zlib

W, H = 64, 48
QUAD = [(220, 30, 30), (30, 200, 40), (30, 40, 210), (230, 220, 40)]


def chunk(kind, data):
    c = struct.pack(">I", len(data)) + kind + data
    return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(path, alpha):
    rows = []
    for y in range(H):
        r = bytearray(b"\0")
        for x in range(W):
            q = (2 if y >= H // 2 else 0) + (1 if x >= W // 2 else 0)
            r += bytes(QUAD[q])
            if alpha:
                r.append(255 if x < W // 2 else 96)
        rows.append(bytes(r))
    ihdr = struct.pack(">IIBBBBB", W, H, 8, 6 if alpha else 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    data += chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def main(enc, d):
    os.makedirs(d, exist_ok=True)
    png(os.path.join(d, "quad.png"), False)
    png(os.path.join(d, "quad_alpha.png"), True)
    jobs = [
        (["-q", "90"], "quad.png", "quad.heic"),
        (["-A", "-q", "90"], "quad.png", "quad.avif"),
        (["-q", "90"], "quad_alpha.png", "quad_alpha.heic"),
        (["-A", "-q", "90"], "quad_alpha.png", "quad_alpha.avif"),
    ]
    for opts, src, dst in jobs:
        subprocess.run([enc] + opts + ["-o", os.path.join(d, dst), os.path.join(d, src)],
                       check=True, stdout=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
