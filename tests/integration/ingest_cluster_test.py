#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Ingest shared by several `imgsearch serve` nodes on one catalogue (issue 9
item 3), on loopback only:

  1. a job posted to a query-only node (--no-ingest) completes, its items
     encoded by both ingest nodes (the item rows' claimed_by), the same job
     JSON on every node, and `?wait=1` answers when the rows are searchable
     on the node that answers;
  2. kill -9 of a node in the middle of a job: its leases lapse
     (--lease-seconds 2), the other node finishes its items, and the job
     ends with every image stored exactly once and no error;
  3. two nodes adding the same URLs at once store each image once.

    ingest_cluster_test.py IMGSEARCH SOURCE_DIR [sqlite|pg]

sqlite: the nodes share one data folder (its catalogue.db); pg: a
throwaway PostgreSQL database (pgutil), each node with its own --data cache.
Pictures come from hostile_server.py's /files/ with a delay per download,
so jobs last long enough to be shared and interrupted.
"""
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
import http.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_common import (HostileServer, ServeProcess, check, finish, png_folder,  # noqa: E402
                           stop_all, tiny_model, wait_for)

LEASE_S = 2


class Node(ServeProcess):
    """One `imgsearch serve` on a loopback port (0: the kernel picks)."""

    def __init__(self, exe, model, name, catalogue_args, log, extra=()):
        self.log = log
        cmd = [exe, "serve", "--model", model, "--port", "0", "--host", "127.0.0.1",
               "--allow-private-urls", "--node-id", name, "--lease-seconds", str(LEASE_S),
               "--claim-batch", "1", "--ingest-batch", "2"] + catalogue_args + list(extra)
        super().__init__(cmd, log, name, port_re=ServeProcess.SERVING)

    def json(self, method, path, obj=None, timeout=120):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            body = json.dumps(obj).encode() if obj is not None else None
            c.request(method, path, body=body,
                      headers={"Content-Type": "application/json"} if body else {})
            r = c.getresponse()
            data = r.read()
            try:
                return r.status, json.loads(data) if data else None
            except ValueError:
                return r.status, None
        finally:
            c.close()

    def job(self, job_id):
        st, j = self.json("GET", "/api/v1/jobs/" + job_id)
        return j if st == 200 else None

    def n_searchable(self):
        """How many rows this node's index returns for a query asking for all."""
        st, b = self.json("POST", "/api/v1/search", {"text": "a picture", "k": 1000})
        return len(b["results"]) if st == 200 and b else -1



class Catalogue:
    """SQL over the shared catalogue, for what no API shows (claimed_by)."""

    def __init__(self, backend, data, url):
        self.backend, self.data, self.url = backend, data, url

    def rows(self, sql, args=()):
        if self.backend == "sqlite":
            db = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.data, "catalogue.db"),
                                 uri=True, timeout=10)
            try:
                return [tuple(r) for r in db.execute(sql, args).fetchall()]
            finally:
                db.close()
        from pgutil import psql
        for a in args:  # only our own job ids and numbers are ever passed
            sql = sql.replace("?", "'%s'" % str(a).replace("'", "''"), 1)
        out = psql(self.url, sql)
        return [tuple(line.split("|")) for line in out.splitlines() if line]

    def encoders(self, job_id):
        """{node: items done} of a job."""
        return {r[0]: int(r[1]) for r in self.rows(
            "SELECT claimed_by, count(*) FROM job_items WHERE job_id = ? AND state = 2 "
            "GROUP BY claimed_by", (job_id,))}

    def claimed_now(self, job_id, node):
        return int(self.rows("SELECT count(*) FROM job_items WHERE job_id = ? AND state = 1 "
                             "AND claimed_by = ?", (job_id, node))[0][0])

    def sources(self, prefix):
        return [r[0] for r in self.rows("SELECT source FROM images WHERE source LIKE ?",
                                        (prefix + "%",))]


def wait_job(node, job_id, timeout=120):
    end = time.monotonic() + timeout
    j = None
    while time.monotonic() < end:
        j = node.job(job_id)
        if j and j["state"] in ("done", "failed"):
            return j
        time.sleep(0.1)
    return j


def main():
    exe, src = sys.argv[1], sys.argv[2]
    backend = sys.argv[3] if len(sys.argv) > 3 else "sqlite"
    tmp = tempfile.mkdtemp(prefix="ims_cluster_")
    nodes, pics, pg = [], None, None
    try:
        root = png_folder(tmp, 80)
        pics = HostileServer(root, delay_ms=150, max_life=600)
        model = tiny_model(src, os.path.join(tmp, "model"))
        if backend == "pg":
            from pgutil import PgServer
            pg = PgServer().__enter__()
            url = pg.new_database()
            cat = Catalogue("pg", None, url)

            def args(name):
                cache = os.path.join(tmp, "cache-" + name)
                os.makedirs(cache, exist_ok=True)
                return ["--catalogue", url, "--data", cache]
        else:
            data = os.path.join(tmp, "data")
            cat = Catalogue("sqlite", data, None)

            def args(name):
                return ["--data", data]

        def start(name, extra=()):
            n = Node(exe, model, name, args(name), os.path.join(tmp, name + ".log"), extra)
            nodes.append(n)
            return n

        q = start("node-q", ["--no-ingest"])
        a = start("node-a")
        b = start("node-b")
        run(q, a, b, start, pics, cat)
    finally:
        stop_all(nodes, pics, pg, tmp)
    finish("ingest_cluster_test")


def urls_of(pics, lo, hi):
    return [pics.url("/files/p%03d.png" % i) for i in range(lo, hi)]


def run(q, a, b, start, pics, cat):
    # -- 1. posted to the query-only node, encoded by both ingest nodes ----------------
    urls = urls_of(pics, 0, 16)
    st, job = q.json("POST", "/api/v1/images?wait=1", {"urls": urls})
    check(st == 200 and job and job["state"] == "done" and job["done"] == 16
          and job["failed"] == 0, "job on the query node -> done 16 (%s %r)" % (st, job))
    jid = (job or {}).get("id", "none")
    enc = cat.encoders(jid)
    check(sum(enc.values()) == 16 and set(enc) == {"node-a", "node-b"},
          "items encoded by both ingest nodes, none by the query node: %r" % enc)
    check(q.n_searchable() == 16, "?wait=1 answered with the rows searchable on the "
          "answering node (%d)" % q.n_searchable())
    views = [n.job(jid) for n in (q, a, b)]
    check(views[0] == views[1] == views[2], "the same job on every node: %r" % views)

    # -- 2. kill -9 of a node in the middle of a job -------------------------------------
    urls = urls_of(pics, 16, 48)
    st, body = a.json("POST", "/api/v1/images", {"urls": urls})
    jid = (body or {}).get("job", "none")
    check(st == 202, "second job accepted (%s %r)" % (st, body))
    held = wait_for(lambda: (a.job(jid) or {}).get("done", 0) >= 4
                    and cat.claimed_now(jid, "node-b") > 0, 60, 0.02)
    check(held, "node-b holds items of the running job")
    b.kill()
    check((a.job(jid) or {}).get("state") == "running", "the job was still running at the kill")
    job = wait_job(q, jid, 120)
    check(job and job["state"] == "done" and job["done"] == 32 and job["failed"] == 0
          and job["errors"] == [], "the job ends done 32 without errors after the kill (%r)" % job)
    stored = cat.sources(pics.url("/files/"))
    want = set(urls_of(pics, 0, 48))
    check(len(stored) == len(set(stored)) == 48 and set(stored) == want,
          "every image of both jobs stored exactly once (%d rows, %d distinct)"
          % (len(stored), len(set(stored))))
    enc = cat.encoders(jid)
    check(enc.get("node-a", 0) > 0, "node-a finished items of the job: %r" % enc)
    check(q.json("POST", "/api/v1/images?wait=1", {"urls": urls[:1]})[0] == 200
          and q.n_searchable() == 48, "the query node searches all 48 (%d)" % q.n_searchable())

    # -- 3. two nodes adding the same URLs at once ------------------------------------------
    b2 = start("node-b")  # restarted under the same name
    urls = urls_of(pics, 48, 64)
    res = {}

    def post(node):
        res[node.name] = node.json("POST", "/api/v1/images?wait=1", {"urls": urls})

    ts = [threading.Thread(target=post, args=(n,)) for n in (a, b2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(180)
    for name, (st, job) in res.items():
        check(st == 200 and job and job["state"] == "done" and job["done"] == 16
              and job["failed"] == 0, "%s: the same URLs -> done 16 (%s %r)" % (name, st, job))
    stored = cat.sources(pics.url("/files/"))
    check(len(stored) == len(set(stored)) == 64,
          "the same URLs posted twice at once: each stored once (%d rows, %d distinct)"
          % (len(stored), len(set(stored))))
    for n in (q, a, b2):
        n.json("POST", "/api/v1/images?wait=1", {"urls": urls[:1]})
        check(n.n_searchable() == 64, "%s searches 64 rows, no duplicate (%d)"
              % (n.name, n.n_searchable()))
    for n in (q, a, b2):
        n.stop()
        check(n.p.returncode == 0, "%s stops cleanly (rc %s: %s)"
              % (n.name, n.p.returncode, n.stderr().strip()[-1500:]))


if __name__ == "__main__":
    main()
