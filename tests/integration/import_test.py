#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""import_test.py IMGSEARCH SOURCE_DIR: `imgsearch import` end to end.

With the tiny model: vectors from a .npy (+ sources file) and from a FAISS
IndexFlatIP / IndexIDMap file (+ the prototype's JSON metadata list) become
rows that search finds; a row whose vector is a real image's embedding is
found by searching that image; mismatched counts, dimensions and non-finite
values import nothing; re-importing reports duplicates; `add` of an
imported source completes the row (same id) instead of duplicating it.
The .npy and FAISS files are written here byte by byte from their formats
(NumPy's format spec; FAISS's index_write: header fields, then the codes).
"""
import json
import os
import random
import shutil
import struct
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_common import (check, embed_rgb, failures as FAILS, run, tiny_model,  # noqa: E402
                           write_npy)


def faiss_flat_ip(rows):
    n, d = len(rows), len(rows[0])
    out = b"IxFI" + struct.pack("<iqqqBi", d, n, 1 << 20, 1 << 20, 1, 0)
    out += struct.pack("<Q", n * d)  # codes size in units of 4 bytes
    for r in rows:
        out += struct.pack("<%df" % d, *r)
    return out


def faiss_idmap(rows, ids):
    n, d = len(rows), len(rows[0])
    out = b"IxMp" + struct.pack("<iqqqBi", d, n, 1 << 20, 1 << 20, 1, 0)
    out += faiss_flat_ip(rows)
    out += struct.pack("<Q", n) + struct.pack("<%dq" % n, *ids)
    return out


def stats_images(bin_, data):
    rc, out, _ = run(bin_, "stats", "--data", data)
    return json.loads(out)["images"] if rc == 0 else None


def snap_faiss_payload(path):
    """(header, ids/vectors, FAISS payload) of an index.snap (index_snapshot.c's table)."""
    b = open(path, "rb").read()
    d, = struct.unpack_from("<I", b, 12)
    count, fbytes = struct.unpack_from("<QQ", b, 24)
    slen, = struct.unpack_from("<I", b, 40)
    start = 48 + slen + count * (8 + 4 * d)
    return b, start, fbytes


def hnsw_tables(buf, at):
    """Offsets of an IndexHNSWFlat's fields (FAISS index_write: the "IHNf"
    header, then assign_probas, cum_nneighbor_per_level, levels, offsets,
    neighbors as (u64 count, items)); `at` is where "IHNf" starts."""
    assert buf[at:at + 4] == b"IHNf", buf[at:at + 4]
    t = {"ntotal": at + 8}
    p = at + 4 + 4 + 8 + 8 + 8 + 1 + 4
    for name, size in (("probas", 8), ("cum", 4), ("levels", 4), ("offsets", 8),
                       ("neighbors", 4)):
        cnt, = struct.unpack_from("<Q", buf, p)
        t[name] = (p + 8, cnt)
        p += 8 + cnt * size
    t["entry"] = p
    return t


def fix_crc(b):
    b = bytearray(b)
    struct.pack_into("<I", b, len(b) - 4, zlib.crc32(bytes(b[:-4])) & 0xffffffff)
    return bytes(b)


def hostile_files(bin_, tmp, model, rows, sources, img, d):
    """Issue 8 items 6 and 7: damaged and hostile inputs import nothing and
    crash nothing; imgsearch's own IVF (custom ids) and HNSW payloads import."""
    n = len(rows)
    # item 7: a late row of denormals (its float norm underflows) or of huge
    # values (overflows) refuses the whole file: nothing committed
    big_n = 5000
    rnd = random.Random(11)
    big = [[rnd.gauss(0, 1) for _ in range(d)] for _ in range(big_n)]
    bsrc = os.path.join(tmp, "big.txt")
    with open(bsrc, "w") as f:
        f.write("".join("https://example.test/big%d.jpg\n" % i for i in range(big_n)))
    for what, row in (("denormal", [1e-45] * d), ("huge", [3e38] * d)):
        rows2 = list(big)
        rows2[4500] = row
        p = os.path.join(tmp, what + ".npy")
        write_npy(p, rows2)
        data = os.path.join(tmp, "d_" + what)
        rc, _, err = run(bin_, "import", "--data", data, "--model", model, "--vectors", p,
                         "--sources", bsrc)
        check(rc != 0 and "vector 4500" in err and "nothing imported" in err,
              "%s row 4500 refuses the import: %s" % (what, err))
        check(stats_images(bin_, data) in (0, None), "%s: no row committed" % what)
    # a good 5000-row file: one transaction, every row
    p = os.path.join(tmp, "big.npy")
    write_npy(p, big)
    data = os.path.join(tmp, "d_big")
    rc, _, err = run(bin_, "import", "--data", data, "--model", model, "--vectors", p,
                     "--sources", bsrc)
    check(rc == 0 and "5000 added" in err, "5000-row import: %s" % err)

    # imgsearch's own index files as FAISS input: IVF (custom ids = catalogue
    # ids) and HNSW (IndexIDMap over IndexHNSWFlat)
    srcs = os.path.join(tmp, "sources.txt")
    npy = os.path.join(tmp, "v.npy")
    for spec in ("IVF2,Flat", "IVF2,PQ4x4", "HNSW8"):
        data = os.path.join(tmp, "own_" + spec.replace(",", "_"))
        rc, _, err = run(bin_, "import", "--data", data, "--model", model, "--vectors", npy,
                         "--sources", srcs)
        rc2, _, err2 = run(bin_, "reindex", "--data", data, "--index", spec)
        check(rc == 0 and rc2 == 0, "%s folder made: %s %s" % (spec, err, err2))
        b, start, fbytes = snap_faiss_payload(os.path.join(data, "index.snap"))
        payload = b[start:start + fbytes]
        fx = os.path.join(tmp, "own.faiss")
        with open(fx, "wb") as f:
            f.write(payload)
        # catalogue ids are 1..n: entry 0 has no vector
        meta = ["unused"] + ["copy:" + s for s in sources]
        mj = os.path.join(tmp, "own_meta.json")
        with open(mj, "w") as f:
            json.dump(meta, f)
        data2 = data + "_copy"
        c2 = ["--data", data2, "--model", model]
        rc, _, err = run(bin_, "import", *c2, "--faiss", fx, "--meta", mj)
        check(rc == 0 and "%d added" % n in err and "1 metadata entries have no vector" in err,
              "%s: imgsearch's own FAISS payload imports (ids pair): %s" % (spec, err))
        rc, out, err = run(bin_, "search", *c2, "--image", img, "--json", "-k", "1")
        res = json.loads(out)["results"] if rc == 0 else []
        if "PQ" not in spec:  # PQ codes are lossy: only the count is exact
            check(res and res[0]["url"] == "copy:" + sources[17],
                  "%s: paired by id: %s %s" % (spec, res, err))
        if spec != "HNSW8":
            continue
        # the HNSW payload, damaged: ntotal beyond the stored vectors, a
        # neighbour past the vectors, an entry point past them
        at = payload.index(b"IHNf")
        t = hnsw_tables(payload, at)
        nb_at, nb_cnt = t["neighbors"]
        damages = []
        for bad_total in (5000, n + 1, n + 140):
            x = bytearray(payload)
            struct.pack_into("<q", x, t["ntotal"], bad_total)
            damages.append(("ntotal %d" % bad_total, x))
        x = bytearray(payload)
        struct.pack_into("<i", x, nb_at, 100000)
        damages.append(("neighbour past the vectors", x))
        x = bytearray(payload)
        struct.pack_into("<i", x, t["entry"], n + 7)
        damages.append(("entry point past the vectors", x))
        for what, x in damages:
            with open(fx, "wb") as f:
                f.write(bytes(x))
            data3 = os.path.join(tmp, "d_bad_hnsw")
            rc, _, err = run(bin_, "import", "--data", data3, "--model", model, "--faiss", fx,
                             "--meta", mj)
            check(rc == 1 and "nothing imported" in err,
                  "HNSW file with %s: a clear error (rc %d): %s" % (what, rc, err))
            check(stats_images(bin_, data3) in (0, None), "HNSW %s: nothing imported" % what)
        # the same damage inside index.snap with the CRC recomputed: the
        # snapshot is rebuilt (a warning), searches answer
        bad = bytearray(b)
        struct.pack_into("<i", bad, start + nb_at, 100000)
        with open(os.path.join(data, "index.snap"), "wb") as f:
            f.write(fix_crc(bad))
        rc, out, err = run(bin_, "search", "--data", data, "--model", model, "--image", img,
                           "--json", "-k", "3")
        res = json.loads(out)["results"] if rc == 0 else []
        check(rc == 0 and "rebuilding" in err and res and res[0]["url"] == sources[17],
              "damaged HNSW graph in index.snap: rebuilt, search answers (rc %d): %s" % (rc, err))


def lost_catalogue(bin_, tmp, model, sources, img):
    """Issue 8 item 5: a 0-byte catalogue.db next to a 60-vector index.snap
    is an error naming the file and `imgsearch repair`; the snapshot is not
    touched; repair rebuilds 60 rows under their ids from it."""
    n = len(sources)
    data = os.path.join(tmp, "d_lost")
    common = ["--data", data, "--model", model]
    rc, _, err = run(bin_, "import", *common, "--vectors", os.path.join(tmp, "v.npy"),
                     "--sources", os.path.join(tmp, "sources.txt"))
    rc2, out, _ = run(bin_, "search", *common, "--image", img, "--json", "-k", "1")
    before = json.loads(out)["results"][0] if rc2 == 0 else {}
    snap = os.path.join(data, "index.snap")
    cat = os.path.join(data, "catalogue.db")
    snap_bytes = open(snap, "rb").read()
    for f in os.listdir(data):
        if f.startswith("catalogue.db"):
            os.remove(os.path.join(data, f))
    open(cat, "wb").close()
    for argv in (["stats", "--data", data], ["search", *common, "cat"],
                 ["add", *common, img]):
        rc, _, err = run(bin_, *argv)
        check(rc != 0 and cat in err and "imgsearch repair" in err,
              "%s on a 0-byte catalogue: a clear error: %s" % (argv[0], err))
        check(open(snap, "rb").read() == snap_bytes and os.path.getsize(cat) == 0,
              "%s left index.snap and catalogue.db untouched" % argv[0])
    rc, out, err = run(bin_, "repair", *common)
    check(rc == 0 and ("repaired %d rows" % n) in out and "lost" in err,
          "repair rebuilds the rows: %r %r" % (out, err))
    check(open(snap, "rb").read() == snap_bytes, "repair did not modify index.snap")
    check(any(f.startswith("catalogue.db.damaged-") for f in os.listdir(data)),
          "the damaged catalogue is kept aside")
    check(stats_images(bin_, data) == n, "stats counts the repaired rows")
    rc, out, err = run(bin_, "search", *common, "--image", img, "--json", "-k", "1")
    res = json.loads(out)["results"] if rc == 0 else []
    check(res and before and res[0]["id"] == before["id"] and
          res[0]["url"] == "repair:%d" % before["id"] and "rebuilding" not in err,
          "same id found after repair, marked repair:ID, snapshot reused: %s %s" % (res, err))
    rc, out, err = run(bin_, "repair", *common)
    check(rc == 0 and "nothing to repair" in err, "repair of a sound folder does nothing: %s" % err)


def main():
    bin_, src = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="ims_it_import_")
    try:
        model = tiny_model(src, os.path.join(tmp, "model"))
        img, emb = embed_rgb(bin_, src, tmp, model)
        d = len(emb)
        check(d == 32, "tiny model embeds in 32 dimensions")

        rnd = random.Random(7)
        n = 60
        rows = [[rnd.gauss(0, 1) for _ in range(d)] for _ in range(n)]
        rows[17] = [x * 3.0 for x in emb]  # not normalised: import must normalise
        sources = ["https://example.test/img%d.jpg" % i for i in range(n)]
        sources[17] = os.path.realpath(img)
        npy = os.path.join(tmp, "v.npy")
        write_npy(npy, rows)
        srcs = os.path.join(tmp, "sources.txt")
        with open(srcs, "w") as f:
            f.write("\n".join(sources) + "\n")

        data = os.path.join(tmp, "data")
        common = ["--data", data, "--model", model]

        # bad inputs first: nothing may be imported by any of them
        bad_src = os.path.join(tmp, "short.txt")
        with open(bad_src, "w") as f:
            f.write("\n".join(sources[:-1]) + "\n")
        rc, _, err = run(bin_, "import", *common, "--vectors", npy, "--sources", bad_src)
        check(rc != 0 and "60 vectors but 59 sources" in err, "count mismatch refused: %s" % err)
        npy16 = os.path.join(tmp, "v16.npy")
        write_npy(npy16, [r[:16] for r in rows])
        rc, _, err = run(bin_, "import", *common, "--vectors", npy16, "--sources", srcs)
        check(rc != 0 and "16 dimensions" in err, "dimension mismatch refused: %s" % err)
        nanrows = [list(r) for r in rows]
        nanrows[5][3] = float("nan")
        npynan = os.path.join(tmp, "nan.npy")
        write_npy(npynan, nanrows)
        rc, _, err = run(bin_, "import", *common, "--vectors", npynan, "--sources", srcs)
        check(rc != 0 and "vector 5" in err and "non-finite" in err, "NaN refused: %s" % err)
        npy64 = os.path.join(tmp, "f8.npy")
        write_npy(npy64, [r[: d // 2] for r in rows], dtype="<f8")
        rc, _, err = run(bin_, "import", *common, "--vectors", npy64, "--sources", srcs)
        check(rc != 0 and "float32" in err, "float64 array refused: %s" % err)
        with open(os.path.join(tmp, "trunc.npy"), "wb") as f:
            f.write(open(npy, "rb").read()[:500])
        rc, _, err = run(bin_, "import", *common, "--vectors", os.path.join(tmp, "trunc.npy"),
                         "--sources", srcs)
        check(rc != 0 and "file size" in err, "truncated .npy refused: %s" % err)
        rc, out, _ = run(bin_, "stats", "--data", data)
        check(rc != 0 or json.loads(out)["images"] == 0, "nothing imported by the bad runs")

        # the good import
        rc, _, err = run(bin_, "import", *common, "--vectors", npy, "--sources", srcs)
        check(rc == 0 and "60 added" in err, "import of 60 vectors: %s" % err)
        rc, out, _ = run(bin_, "stats", "--data", data)
        check(json.loads(out)["images"] == n, "stats counts 60 rows: %s" % out)
        rc, out, err = run(bin_, "search", *common, "--image", img, "--json", "-k", "3")
        res = json.loads(out)["results"] if rc == 0 else []
        check(res and res[0]["url"] == sources[17] and abs(res[0]["score"] - 1) < 1e-3,
              "the imported embedding of rgb.png is found by searching rgb.png: %s" % res[:1])
        # importing again: all duplicates, nothing added
        rc, _, err = run(bin_, "import", *common, "--vectors", npy, "--sources", srcs)
        check(rc == 0 and "0 added, 60 duplicates" in err, "re-import is all duplicates: %s" % err)
        # adding the real file completes the imported row: same id, a thumbnail now
        rc, out, err = run(bin_, "add", *common, img)
        check(rc == 0 and out.startswith("completed %d " % res[0]["id"]) if res else False,
              "add of an imported source completes it: %r %r" % (out, err))
        rc, out, _ = run(bin_, "stats", "--data", data)
        check(json.loads(out)["images"] == n, "still 60 rows after completing: %s" % out)

        # the prototype's state: FAISS file + JSON metadata list
        perm = list(range(n))
        random.Random(3).shuffle(perm)
        for kind in ("flat", "idmap"):
            data2 = os.path.join(tmp, "data_" + kind)
            fx = os.path.join(tmp, kind + ".faiss")
            with open(fx, "wb") as f:
                f.write(faiss_flat_ip(rows) if kind == "flat"
                        else faiss_idmap(rows, perm))
            # metadata pairs with vectors by id: entry perm[i] describes vector i
            ordered = list(sources)
            if kind == "idmap":
                for i in range(n):
                    ordered[perm[i]] = sources[i]
            meta = []
            for i, s in enumerate(ordered):
                if i % 3 == 0:
                    meta.append(s)
                elif i % 3 == 1:
                    meta.append({"url": s, "caption": "picture %d" % i})
                else:
                    meta.append({"path": s, "width": i})
            mj = os.path.join(tmp, "meta.json")
            with open(mj, "w") as f:
                json.dump(meta, f)
            c2 = ["--data", data2, "--model", model]
            rc, _, err = run(bin_, "import", *c2, "--faiss", fx, "--meta", mj)
            check(rc == 0 and "60 added" in err, "%s FAISS import: %s" % (kind, err))
            rc, out, err = run(bin_, "search", *c2, "--image", img, "--json", "-k", "1")
            res2 = json.loads(out)["results"] if rc == 0 else []
            check(res2 and res2[0]["url"] == sources[17] and abs(res2[0]["score"] - 1) < 1e-3,
                  "%s: rgb.png's vector found after FAISS import: %s" % (kind, res2))
        with open(mj, "w") as f:
            json.dump(meta[:10], f)
        rc, _, err = run(bin_, "import", "--data", os.path.join(tmp, "d3"), "--model", model,
                         "--faiss", os.path.join(tmp, "flat.faiss"), "--meta", mj)
        check(rc != 0 and "60 vectors but 10 sources" in err, "FAISS count mismatch: %s" % err)
        with open(os.path.join(tmp, "junk.faiss"), "wb") as f:
            f.write(b"IxFI" + b"\x00" * 40)
        rc, _, err = run(bin_, "import", "--data", os.path.join(tmp, "d3"), "--model", model,
                         "--faiss", os.path.join(tmp, "junk.faiss"), "--meta", mj)
        check(rc != 0 and "nothing imported" in err, "a damaged FAISS file is an error: %s" % err)
        hostile_files(bin_, tmp, model, rows, sources, img, d)
        lost_catalogue(bin_, tmp, model, sources, img)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if FAILS:
        print("%d check(s) failed" % len(FAILS))
        return 1
    print("import: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
