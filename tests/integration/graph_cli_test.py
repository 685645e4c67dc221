#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""graph_cli_test.py IMGSEARCH SOURCE_DIR: our own graph index from the CLI
(issue 11 items 1-3), with the tiny model and imported vectors.

- `reindex --index Graph16` builds the graph; the snapshot carries it
  (payload "IMSGRPH1") and search finds a row by its own image;
- `reindex --ef-search N` (same type) and `index set` store search defaults
  without rebuilding (snapshot bytes unchanged), `index show` reports them;
- `search --ef/--nprobe/--rerank` are bounded (out of range: usage error);
- a removed row is never returned; `reindex --rebuild` drops it from the
  graph (fewer nodes in the snapshot's graph).
"""
import json
import os
import random
import shutil
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_common import (check, embed_rgb, failures as FAILS, run, tiny_model,  # noqa: E402
                           write_npy)


def graph_nodes(snap):
    """(graph nodes, deleted) from index.snap's graph payload (index_graph.c)."""
    b = open(snap, "rb").read()
    d, = struct.unpack_from("<I", b, 12)
    count, fbytes = struct.unpack_from("<QQ", b, 24)
    slen, = struct.unpack_from("<I", b, 40)
    start = 48 + slen + count * (8 + 4 * d)
    if b[start:start + 8] != b"IMSGRPH1":
        return None, None
    n, = struct.unpack_from("<Q", b, start + 24)
    deleted = sum(b[start + 48 + n:start + 48 + 2 * n])
    return n, deleted


def main():
    bin_, src = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="ims_it_graph_")
    try:
        model = tiny_model(src, os.path.join(tmp, "model"))
        img, emb = embed_rgb(bin_, src, tmp, model)
        d = len(emb)
        rnd = random.Random(11)
        n = 300
        rows = [[rnd.gauss(0, 1) for _ in range(d)] for _ in range(n)]
        rows[123] = list(emb)
        sources = ["https://example.test/g%d.jpg" % i for i in range(n)]
        sources[123] = os.path.realpath(img)
        npy = os.path.join(tmp, "v.npy")
        write_npy(npy, rows)
        srcs = os.path.join(tmp, "sources.txt")
        with open(srcs, "w") as f:
            f.write("\n".join(sources) + "\n")
        data = os.path.join(tmp, "data")
        common = ["--data", data, "--model", model]
        rc, _, err = run(bin_, "import", *common, "--vectors", npy, "--sources", srcs)
        check(rc == 0, "import: %s" % err)

        rc, _, err = run(bin_, "reindex", "--data", data, "--index", "Graph16")
        check(rc == 0, "reindex --index Graph16: %s" % err)
        snap = os.path.join(data, "index.snap")
        nodes, deleted = graph_nodes(snap)
        check(nodes == n and deleted == 0, "the snapshot holds the graph: %s %s" % (nodes, deleted))

        rc, out, err = run(bin_, "search", *common, "--image", img, "-k", "3", "--json")
        check(rc == 0, "search: %s" % err)
        hits = json.loads(out)["results"] if rc == 0 else []
        check(hits and hits[0]["url"] == sources[123], "the image finds its own row: %s" % out[:200])
        img_id = hits[0]["id"] if hits else None

        # search-time knobs: stored without a rebuild
        before = open(snap, "rb").read()
        rc, _, err = run(bin_, "reindex", "--data", data, "--ef-search", "77")
        check(rc == 0 and "without a rebuild" in err, "reindex --ef-search only: %s" % err)
        check(open(snap, "rb").read() == before, "the snapshot is untouched")
        rc, out, err = run(bin_, "index", "show", "--data", data)
        check(rc == 0 and "type Graph16" in out and "ef_search 77" in out, "index show: %s" % out)
        rc, _, err = run(bin_, "index", "set", "--data", data, "--ef-search", "120", "--rerank", "20")
        check(rc == 0, "index set: %s" % err)
        rc, out, _ = run(bin_, "index", "show", "--data", data)
        check("ef_search 120" in out and "rerank 20" in out, "index set stored: %s" % out)
        check(open(snap, "rb").read() == before, "still untouched")
        rc, _, _ = run(bin_, "index", "set", "--data", data, "--ef-search", "4097")
        check(rc == 2, "index set out of bounds refused")

        rc, out, err = run(bin_, "search", *common, "--image", img, "-k", "3", "--ef", "300",
                           "--rerank", "50", "--json")
        check(rc == 0 and json.loads(out)["results"][0]["url"] == sources[123],
              "search --ef: %s" % err)
        for opt, val in (("--ef", "4097"), ("--ef", "0"), ("--nprobe", "65537"),
                         ("--rerank", "100001")):
            rc, _, err = run(bin_, "search", *common, "--image", img, opt, val)
            check(rc == 2, "search %s %s refused: %s" % (opt, val, err))

        # deletes: never returned; reindex --rebuild compacts them away
        if img_id is not None:
            rc, _, err = run(bin_, "rm", "--data", data, str(img_id))
            check(rc == 0, "rm: %s" % err)
            rc, out, err = run(bin_, "search", *common, "--image", img, "-k", "5", "--json")
            check(rc == 0 and all(h["id"] != img_id for h in json.loads(out)["results"]),
                  "a removed row is not returned: %s" % out[:200])
            rc, _, err = run(bin_, "reindex", "--data", data, "--rebuild")
            check(rc == 0, "reindex --rebuild: %s" % err)
            nodes, deleted = graph_nodes(snap)
            check(nodes == n - 1 and deleted == 0, "rebuilt without it: %s %s" % (nodes, deleted))
            rc, out, _ = run(bin_, "index", "show", "--data", data)
            check("ef_search 120" in out, "the rebuild keeps the defaults: %s" % out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if FAILS:
        print("%d failure(s)" % len(FAILS))
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
