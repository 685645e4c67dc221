#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Test set-up for test_image_formats: writes PNGs of a known pattern (pure
# standard library) and encodes them with libheif's heif-enc into HEIC (x265)
# and AVIF (aom), the way a phone's files are made. The pattern is a 64x48
# picture of four flat quadrants (colours QUAD below, top-left, top-right,
# bottom-left, bottom-right), so that a lossy codec keeps the quadrant
# centres close to the known colours and a rotation or mirror is obvious.
# The "_alpha" variant has alpha 255 on the left half and 96 on the right;
# "quad_exif" carries an eXIf chunk that heif-enc copies into the HEIC's Exif
# item (EXIF_FIELDS below, orientation 6, GPS 48 51' 30" N, 2 17' 40" E).
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


EXIF_FIELDS = {"make": "TestCam", "model": "Phone 1", "dto": "2024:05:17 14:30:00",
               "offset": "+02:00"}


def exif_payload():
    """Little-endian TIFF-structured EXIF: IFD0 (Make, Model, Orientation,
    Exif IFD, GPS IFD), Exif IFD (DateTimeOriginal, OffsetTimeOriginal), GPS IFD."""
    f = EXIF_FIELDS
    make, model = f["make"].encode() + b"\0", f["model"].encode() + b"\0"
    dto, off = f["dto"].encode() + b"\0", f["offset"].encode() + b"\0"
    ifd0_at, exif_at = 8, 8 + 2 + 5 * 12 + 4
    gps_at = exif_at + 2 + 2 * 12 + 4
    data_at = gps_at + 2 + 4 * 12 + 4
    blobs = [make, model, dto, off, struct.pack("<6I", 48, 1, 51, 1, 30, 1),
             struct.pack("<6I", 2, 1, 17, 1, 40, 1)]
    where, at = [], data_at
    for b in blobs:
        where.append(at)
        at += len(b)

    def ent(tag, typ, count, val, inline=False):
        if inline and typ == 3:
            return struct.pack("<HHIHH", tag, typ, count, val, 0)
        if inline and typ == 2:
            return struct.pack("<HHI", tag, typ, count) + val.ljust(4, b"\0")
        return struct.pack("<HHII", tag, typ, count, val)

    out = b"II*\0" + struct.pack("<I", ifd0_at)
    out += struct.pack("<H", 5) + ent(0x010F, 2, len(make), where[0]) + \
        ent(0x0110, 2, len(model), where[1]) + ent(0x0112, 3, 1, 6, True) + \
        ent(0x8769, 4, 1, exif_at) + ent(0x8825, 4, 1, gps_at) + struct.pack("<I", 0)
    out += struct.pack("<H", 2) + ent(0x9003, 2, len(dto), where[2]) + \
        ent(0x9011, 2, len(off), where[3]) + struct.pack("<I", 0)
    out += struct.pack("<H", 4) + ent(1, 2, 2, b"N\0", True) + ent(2, 5, 3, where[4]) + \
        ent(3, 2, 2, b"E\0", True) + ent(4, 5, 3, where[5]) + struct.pack("<I", 0)
    return out + b"".join(blobs)


def png(path, alpha, exif=False):
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
    if exif:
        data += chunk(b"eXIf", exif_payload())
    data += chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def main(enc, d):
    os.makedirs(d, exist_ok=True)
    png(os.path.join(d, "quad.png"), False)
    png(os.path.join(d, "quad_alpha.png"), True)
    png(os.path.join(d, "quad_exif.png"), False, exif=True)
    jobs = [
        (["-q", "90"], "quad.png", "quad.heic"),
        (["-A", "-q", "90"], "quad.png", "quad.avif"),
        (["-q", "90"], "quad_alpha.png", "quad_alpha.heic"),
        (["-A", "-q", "90"], "quad_alpha.png", "quad_alpha.avif"),
        (["-q", "90"], "quad_exif.png", "quad_exif.heic"),
    ]
    for opts, src, dst in jobs:
        subprocess.run([enc] + opts + ["-o", os.path.join(d, dst), os.path.join(d, src)],
                       check=True, stdout=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
