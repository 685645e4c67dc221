#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench_sync: `imgsearch add --sync` of an unchanged folder (issue 10,
performance): N small generated images (16x16 BMPs in 100 subfolders) are
synced once with the tiny model (the populating sync, timed too), then the
unchanged folder is synced R times. The unchanged syncs must not read any
file's content: their --json summary's files_read and bytes_read are
reported (and must be 0), next to two yardsticks measured in the same run:
stat() of every file, and reading every file whole (Python, warm cache).

    bench_sync.py IMGSEARCH SOURCE_DIR [--files N] [--runs R] [--out FILE]

Prints one JSON document (and writes it to --out). See bench/README.md.
"""
import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from bench_cpu import cpu_info  # noqa: E402
from ingest_common import tiny_model  # noqa: E402


def bmp(seed):
    px = bytes(((i * (seed % 251 + 3) + seed * 31 + (seed >> 8)) & 255)
               for i in range(16 * 16 * 3))
    hdr = b"BM" + struct.pack("<IHHI", 54 + len(px), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, 16, 16, 1, 24, 0, len(px), 0, 0, 0, 0)
    return hdr + info + px


def sync(exe, data, model, folder):
    t = time.monotonic()
    p = subprocess.run([exe, "add", "--sync", "--json", "--data", data, "--model", model,
                        "--batch", "64", folder], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, check=True)
    wall = time.monotonic() - t
    return wall, json.loads(p.stdout)["syncs"][0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("exe")
    ap.add_argument("src")
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ims-bench-sync-")
    try:
        model = tiny_model(a.src, os.path.join(tmp, "model"))
        folder = os.path.join(tmp, "photos")
        paths = []
        for i in range(a.files):
            d = os.path.join(folder, "d%02d" % (i % 100))
            os.makedirs(d, exist_ok=True)
            p = os.path.join(d, "img%05d.bmp" % i)
            with open(p, "wb") as f:
                f.write(bmp(i))
            paths.append(p)
        data = os.path.join(tmp, "data")
        first_wall, first = sync(a.exe, data, model, folder)
        runs = []
        for _ in range(a.runs):
            wall, s = sync(a.exe, data, model, folder)
            runs.append({"wall_s": round(wall, 4), "sync_s": round(s["elapsed_s"], 4),
                         "files": s["files"], "unchanged": s["unchanged"],
                         "files_read": s["files_read"], "bytes_read": s["bytes_read"],
                         "added": s["added"], "removed": s["removed"]})
        t = time.monotonic()
        for p in paths:
            os.stat(p)
        stat_s = time.monotonic() - t
        t = time.monotonic()
        for p in paths:
            with open(p, "rb") as f:
                f.read()
        read_s = time.monotonic() - t
        med_wall = statistics.median(r["wall_s"] for r in runs)
        med_sync = statistics.median(r["sync_s"] for r in runs)
        doc = {
            "bench": "add_sync_unchanged",
            "cpu": cpu_info(),
            "files": a.files,
            "file_bytes": len(bmp(0)),
            "populating_sync": {"wall_s": round(first_wall, 3), "added": first["added"],
                                "failed": first["failed"]},
            "unchanged_runs": runs,
            "unchanged_wall_s_median": round(med_wall, 4),
            "unchanged_sync_s_median": round(med_sync, 4),
            "files_read_max": max(r["files_read"] for r in runs),
            "bytes_read_max": max(r["bytes_read"] for r in runs),
            "yardsticks": {"python_stat_all_s": round(stat_s, 4),
                           "python_read_all_s": round(read_s, 4)},
            "ratio_sync_to_stat_all": round(med_sync / stat_s, 2) if stat_s > 0 else None,
            "ratio_sync_to_read_all": round(med_sync / read_s, 2) if read_s > 0 else None,
        }
        text = json.dumps(doc, indent=1)
        print(text)
        if a.out:
            with open(a.out, "w") as f:
                f.write(text + "\n")
        ok = (doc["files_read_max"] == 0 and doc["bytes_read_max"] == 0 and
              all(r["unchanged"] == a.files for r in runs))
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
