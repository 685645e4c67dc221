#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""index_show_test.py IMGSEARCH SOURCE_DIR: `imgsearch index show` prints the
search knobs in force (issue 11): a stored value as is, else the type's
default marked "(default)" (Graph32 ef_search 128, Graph16 256, FAISS
HNSW32 256, IVF nprobe 1), "-" for a knob the type does not have; never the
stored 0 that means "the default".
"""
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what)
    return cond


def run(bin_, *args):
    p = subprocess.run([bin_] + list(args), capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def write_npy(path, rows):
    n, d = len(rows), len(rows[0])
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (n, d)
    header = header + " " * (64 - (10 + len(header) + 1) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        for r in rows:
            f.write(struct.pack("<%df" % d, *r))


def shown(bin_, data):
    """{knob: its line's value} of `index show`."""
    rc, out, err = run(bin_, "index", "show", "--data", data)
    check(rc == 0, "index show: %s" % err)
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def main():
    bin_, src = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="ims_it_index_show_")
    try:
        model = os.path.join(tmp, "model")
        os.makedirs(model)
        for d, f in (("tests/golden/clip/tiny", "config.json"),
                     ("tests/golden/clip/tiny", "model.safetensors"),
                     ("data/vocab", "vocab.json"), ("data/vocab", "merges.txt")):
            shutil.copy(os.path.join(src, d, f), model)
        img = os.path.join(tmp, "rgb.png")
        shutil.copy(os.path.join(src, "tests/golden/clip/images/rgb.png"), img)
        rc, out, err = run(bin_, "embed", "--model", model, "--image", img)
        check(rc == 0, "embed works: %s" % err)
        d = len(json.loads(out.splitlines()[0])["embedding"])
        rnd = random.Random(5)
        n = 64
        npy = os.path.join(tmp, "v.npy")
        write_npy(npy, [[rnd.gauss(0, 1) for _ in range(d)] for _ in range(n)])
        srcs = os.path.join(tmp, "sources.txt")
        with open(srcs, "w") as f:
            f.write("\n".join("https://example.test/s%d.jpg" % i for i in range(n)) + "\n")
        data = os.path.join(tmp, "data")
        rc, _, err = run(bin_, "import", "--data", data, "--model", model, "--vectors", npy,
                         "--sources", srcs)
        check(rc == 0, "import: %s" % err)

        k = shown(bin_, data)
        check(k.get("type") == "Flat", "imported as Flat: %s" % k)
        check(k.get("ef_search") == "- (not used by Flat)", "Flat has no ef_search: %s" % k)
        check(k.get("nprobe") == "- (not used by Flat)", "Flat has no nprobe: %s" % k)
        check(k.get("rerank", "").startswith("k (default"), "rerank defaults to k: %s" % k)

        cases = (("Graph32", "ef_search", "128"), ("Graph16", "ef_search", "256"),
                 ("HNSW32", "ef_search", "256"), ("IVF4,Flat", "nprobe", "1"))
        for spec, knob, value in cases:
            rc, _, err = run(bin_, "reindex", "--data", data, "--index", spec)
            if not check(rc == 0, "reindex --index %s: %s" % (spec, err)):
                continue
            k = shown(bin_, data)
            check(k.get("type") == spec, "type %s: %s" % (spec, k))
            check(k.get(knob) == value + " (default)", "%s %s: %s" % (spec, knob, k))
            other = "nprobe" if knob == "ef_search" else "ef_search"
            check(k.get(other) == "- (not used by %s)" % spec, "%s %s: %s" % (spec, other, k))

        # a stored value is printed as is, not as the default
        rc, _, err = run(bin_, "reindex", "--data", data, "--index", "Graph32")
        check(rc == 0, "reindex --index Graph32: %s" % err)
        rc, _, err = run(bin_, "index", "set", "--data", data, "--ef-search", "77", "--rerank", "30")
        check(rc == 0, "index set: %s" % err)
        k = shown(bin_, data)
        check(k.get("ef_search") == "77" and k.get("rerank") == "30", "stored values: %s" % k)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if FAILS:
        print("%d failure(s)" % len(FAILS))
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
