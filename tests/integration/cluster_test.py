#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Several `imgsearch serve` nodes on one catalogue (issue 9), on loopback.

    cluster_test.py EXE SRC sqlite   nodes share one data folder's catalogue.db
    cluster_test.py EXE SRC pg       nodes share a PostgreSQL database that the
                                     test creates (pgutil: the CTest fixture's
                                     server, or one started here); node A keeps
                                     a --data snapshot cache, the others none

Checked, with the tiny model and a few images:
  - nodes start, /readyz turns 200 and "serving" is printed once caught up;
  - every node returns the same top-10 (ids and scores) for the same queries;
  - `imgsearch add` (the CLI) on the catalogue a running cluster serves: every
    node finds the new images without a restart;
  - an upload to node A is searchable on A when its answer returns, and
    reaches every other node;
  - a DELETE on node B is gone from B's results when its answer returns and
    disappears from every node's results;
  - a node started fresh (no snapshot) builds its replica from the catalogue,
    /readyz turns 200, and it answers like the others;
  - SIGTERM stops every node with exit 0.
Waits for propagation are bounded (liveness), never asserted as timings.
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_common import (ServeProcess, check, finish, fixture_images, http_exchange,  # noqa: E402
                           json_or_bytes, multipart, tiny_model, wait_for)

PROPAGATE_S = 20  # generous bound on "eventually" (2 shared cores, sanitizers)


class Node(ServeProcess):
    """One `imgsearch serve --port 0`; the port comes from its "listening on"
    line, readiness from /readyz."""

    def __init__(self, exe, name, model, tmp, data=None, catalogue=None, extra=()):
        cmd = [exe, "serve", "--model", model, "--port", "0", "--host", "127.0.0.1",
               "--allow-private-urls", "--rate", "0"] + list(extra)
        if data:
            cmd += ["--data", data]
        if catalogue:
            cmd += ["--catalogue", catalogue]
        super().__init__(cmd, os.path.join(tmp, "node-%s.log" % name), "node " + name)
        self.name = name

    def request(self, method, path, body=None, headers=None, timeout=60):
        """(status, body parsed as JSON or its bytes)."""
        st, _, data = http_exchange(self.port, method, path, body, headers, timeout)
        return st, json_or_bytes(data)

    def ready(self):
        st, body = self.request("GET", "/readyz")
        if st == 200:
            check(body == {"status": "ok"}, "%s: /readyz 200 body %r" % (self.name, body))
            return True
        check(st == 503 and body == {"status": "starting"},
              "%s: /readyz before ready is 503 starting (%s %r)" % (self.name, st, body))
        return False

    def wait_ready(self):
        ok = wait_for(self.ready, 120, 0.05)
        check(ok, "%s: /readyz turns 200 (log: %s)" % (self.name, self.stderr()[-800:]))
        if ok:
            st, body = self.request("GET", "/healthz")
            check(st == 200 and body == {"status": "ok"}, "%s: /healthz ok once ready" % self.name)
            line = "serving http://127.0.0.1:%d/" % self.port
            check(wait_for(lambda: line in self.stderr(), 30, 0.02),
                  "%s: prints 'serving' once ready" % self.name)
        return ok

    def search(self, query):
        body = json.dumps(dict(query, k=10)).encode()
        st, res = self.request("POST", "/api/v1/search", body,
                               {"Content-Type": "application/json"})
        if not check(st == 200 and isinstance(res, dict),
                     "%s: search %r -> 200 (%s %r)" % (self.name, query, st, res)):
            return []
        return [(r["id"], round(r["score"], 5)) for r in res["results"]]

    def ids(self, query):
        return {i for i, _ in self.search(query)}



QUERIES = [{"text": "a photo"}, {"text": "red"}, {"text": "a dog on the beach"}]


def same_everywhere(nodes, what):
    """Every node's top-10 equals the first node's, for every query."""
    for q in QUERIES:
        first = nodes[0].search(q)
        check(len(first) > 0, "%s: %s finds something for %r" % (what, nodes[0].name, q))
        for n in nodes[1:]:
            got = n.search(q)
            check(got == first, "%s: %s and %s give the same top-10 for %r: %r vs %r"
                  % (what, nodes[0].name, n.name, q, first, got))


def run(exe, src, backend, tmp, catalogue):
    model = tiny_model(src, os.path.join(tmp, "model"))
    images = fixture_images(src)
    check(len(images) >= 10, "enough fixture images (%d)" % len(images))
    shared = os.path.join(tmp, "shared")  # sqlite: the catalogue's folder
    cat_args = ["--catalogue", catalogue] if catalogue else ["--data", shared]

    def cli(*args):
        cmd = [exe, args[0]] + cat_args + ["--model", model] + list(args[1:])
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def node_args(name, cache=True):
        if catalogue:
            data = os.path.join(tmp, "cache-" + name) if cache else None
            return dict(data=data, catalogue=catalogue)
        return dict(data=shared)

    rc, out, err = cli("add", *images[:5])
    check(rc == 0, "CLI add of 5 images (rc %d: %s)" % (rc, err.strip()))

    # -- two nodes, then a third --------------------------------------------------
    a = Node(exe, "A", model, tmp, **node_args("A"))
    b = Node(exe, "B", model, tmp, **node_args("B", cache=False))
    nodes = [a, b]
    try:
        for n in nodes:
            n.wait_ready()
        same_everywhere(nodes, "2 nodes")
        probe = {"text": "a photo"}
        before = a.ids(probe)
        check(len(before) == 5, "2 nodes: all 5 rows found (%r)" % before)

        # the CLI adds to the catalogue the running nodes serve
        rc, out, err = cli("add", *images[5:8])
        check(rc == 0, "CLI add while nodes run (rc %d: %s)" % (rc, err.strip()))
        added = {int(line.split()[1]) for line in out.splitlines() if line.startswith("added ")}
        check(len(added) == 3, "CLI add reports 3 new ids (%r)" % out)
        for n in nodes:
            check(wait_for(lambda n=n: added <= n.ids(probe), PROPAGATE_S, 0.05),
                  "%s sees the CLI's 3 new images without a restart" % n.name)

        # an upload to A: searchable on A when the answer returns, then on B
        with open(images[8], "rb") as f:
            body, ctype = multipart([("file", os.path.basename(images[8]), f.read())])
        st, res = a.request("POST", "/api/v1/images", body, {"Content-Type": ctype})
        up = None
        if check(st == 200 and res.get("images"), "upload to A -> 200 (%s %r)" % (st, res)):
            up = res["images"][0]["id"]
            check(up in a.ids(probe), "A finds its upload at once")
            check(wait_for(lambda: up in b.ids(probe), PROPAGATE_S, 0.05),
                  "B finds A's upload")

        # a third node, started fresh (no snapshot anywhere for it)
        c = Node(exe, "C", model, tmp, **node_args("C", cache=False))
        nodes.append(c)
        c.wait_ready()
        same_everywhere(nodes, "3 nodes")

        # a delete on B: gone from B at once, then from every node
        victim = sorted(added)[0]
        st, res = b.request("DELETE", "/api/v1/images/%d" % victim)
        check(st == 200 and res == {"deleted": victim}, "DELETE on B (%s %r)" % (st, res))
        check(victim not in b.ids(probe), "B drops the deleted image at once")
        for n in nodes:
            check(wait_for(lambda n=n: victim not in n.ids(probe), PROPAGATE_S, 0.05),
                  "%s drops the image deleted on B" % n.name)
        for n in nodes:
            st, res = n.request("GET", "/api/v1/images/%d" % victim)
            check(st == 404, "%s: the deleted row is 404 (%s)" % (n.name, st))
        same_everywhere(nodes, "after the delete")
        st, metrics = a.request("GET", "/metrics")
        text = metrics.decode() if isinstance(metrics, bytes) else str(metrics)
        check("imgsearch_replica_ready 1" in text and "imgsearch_replica_seq" in text,
              "A's /metrics has the replica gauges")
    finally:
        for n in nodes:
            rc = n.stop()
            check(rc == 0, "%s exits 0 on SIGTERM (rc %s: %s)" % (n.name, rc, n.stderr()[-600:]))

    # the snapshot cache of A (sqlite: the shared folder) is usable next time
    snap_dir = os.path.join(tmp, "cache-A") if catalogue else shared
    check(os.path.isfile(os.path.join(snap_dir, "index.snap")) and
          os.path.isfile(os.path.join(snap_dir, "index.seq")),
          "a node with --data leaves index.snap + index.seq")
    rc, out, err = cli("stats")
    if check(rc == 0, "stats (rc %d: %s)" % (rc, err.strip())):
        check(json.loads(out)["images"] == 8, "8 rows remain: %s" % out.strip())


def main():
    exe, src, backend = sys.argv[1], sys.argv[2], sys.argv[3]
    with tempfile.TemporaryDirectory(prefix="ims_cluster_") as tmp:
        if backend == "pg":
            from pgutil import PgServer
            with PgServer() as pg:
                run(exe, src, backend, tmp, pg.new_database())
        else:
            run(exe, src, backend, tmp, None)
    finish("cluster_test " + backend)


if __name__ == "__main__":
    main()
