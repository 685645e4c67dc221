#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench_ingest_cluster: URL-job ingest throughput with 1 and 2 `serve` nodes
on one catalogue, and the catalogue's share of the time per image.

    python3 bench/bench_ingest_cluster.py --build BUILD_DIR [--images 300]
        [--backend pg|sqlite] [--model DIR] [--claim-batch 16] [--ingest-batch 8]
        [--rounds 2] [--out FILE]

In a mkdtemp folder, removed at the end: writes --images distinct PNGs
(hostile_server.png_bytes, 96..127 px) served by
tests/integration/hostile_server.py on 127.0.0.1; then, for each of
--rounds alternations of "1 node" and "2 nodes", a fresh catalogue (a new
PostgreSQL database from tests/integration/pgutil.py, or a new SQLite
folder shared by the nodes), the nodes started and ready, one job of every
URL posted to the first node, timed from the POST to the job's `done` (read
on the first node every 50 ms). From each node's /metrics after the job:
imgsearch_ingest_catalogue_seconds_total (time inside catalogue calls:
inserts, claims, lease renewals, finishes) and
imgsearch_ingest_encode_seconds_total; from the item rows: which node did
how many items. Prints one JSON object (and writes it to --out):

  images_per_s            per round and setting, and the best of each
  ratio_2_over_1          best 2-node rate / best 1-node rate (this machine has
                          2 cores: the total cannot grow; it must not fall)
  items_per_node          of each 2-node round: the second node takes work
  catalogue_ms_per_image  catalogue seconds (all nodes) / images
  catalogue_share         catalogue seconds / (wall seconds x nodes): the part
                          of the nodes' time spent waiting on the catalogue
  encode_ms_per_image     encoder seconds / images

Default model: the tiny test model (tests/golden/clip/tiny), so that the
catalogue's part is visible; --model DIR for a real one. Nothing here is a
test; the figures depend on the machine and its load.
"""
import argparse
import http.client
import json
import os
import platform
import re
import shutil
import sqlite3
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
from hostile_server import png_bytes  # noqa: E402
from ingest_common import HostileServer, ServeProcess, tiny_model, wait_for  # noqa: E402


class Node(ServeProcess):
    def __init__(self, exe, model, name, cat_args, log, opts):
        cmd = [exe, "serve", "--model", model, "--port", "0", "--host", "127.0.0.1",
               "--allow-private-urls", "--node-id", name, "--rate", "0",
               "--claim-batch", str(opts.claim_batch), "--ingest-batch",
               str(opts.ingest_batch)] + cat_args
        super().__init__(cmd, log, name, port_re=ServeProcess.SERVING, timeout=300)
        # ready for queries (a replica that is still catching up answers 503)
        wait_for(lambda: self.get("/readyz")[0] == 200 or self.get("/healthz")[0] == 200, 300)

    def get(self, path, method="GET", body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            h = {"Content-Type": "application/json"} if body is not None else {}
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def metric(self, name):
        st, body = self.get("/metrics")
        m = re.search(r"^%s (\S+)$" % re.escape(name), body.decode(), re.M)
        return float(m.group(1)) if st == 200 and m else 0.0

    def stop(self):
        super().stop()
        self.errf.close()


def items_per_node(backend, data, url, job_id):
    sql = ("SELECT claimed_by, count(*) FROM job_items WHERE job_id = '%s' AND state = 2 "
           "GROUP BY claimed_by" % job_id)
    if backend == "sqlite":
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(data, "catalogue.db"), uri=True)
        try:
            return {r[0]: r[1] for r in db.execute(sql)}
        finally:
            db.close()
    from pgutil import psql
    out = psql(url, sql)
    return {a: int(b) for a, b in (line.split("|") for line in out.splitlines() if line)}


def one_round(args, exe, model, tmp, pics, n_nodes, rnd, pg):
    tag = "r%d-n%d" % (rnd, n_nodes)
    url = data = None
    if args.backend == "pg":
        url = pg.new_database()
    else:
        data = os.path.join(tmp, "data-" + tag)
    nodes = []
    try:
        for i in range(n_nodes):
            name = "node-%d" % (i + 1)
            if url:
                cache = os.path.join(tmp, "cache-%s-%s" % (tag, name))
                os.makedirs(cache)
                cat = ["--catalogue", url, "--data", cache]
            else:
                cat = ["--data", data]
            nodes.append(Node(exe, model, name, cat, os.path.join(tmp, "%s-%s.log" % (tag, name)),
                              args))
        urls = [pics.url("/files/p%05d.png" % i) for i in range(args.images)]
        t0 = time.monotonic()
        st, body = nodes[0].get("/api/v1/images", "POST", json.dumps({"urls": urls}).encode())
        if st != 202:
            raise RuntimeError("POST job: %s %r" % (st, body[:200]))
        job_id = json.loads(body)["job"]
        job = None
        while True:
            st, body = nodes[0].get("/api/v1/jobs/" + job_id)
            job = json.loads(body)
            if job["state"] in ("done", "failed"):
                break
            time.sleep(0.05)
        wall = time.monotonic() - t0
        if job["done"] != args.images:
            raise RuntimeError("job ended %r" % {k: job[k] for k in ("state", "done", "failed")})
        cat_s = sum(n.metric("imgsearch_ingest_catalogue_seconds_total") for n in nodes)
        enc_s = sum(n.metric("imgsearch_ingest_encode_seconds_total") for n in nodes)
        per_node = items_per_node(args.backend, data, url, job_id)
        return {"nodes": n_nodes, "round": rnd, "seconds": round(wall, 3),
                "images_per_s": round(args.images / wall, 2),
                "items_per_node": per_node,
                "catalogue_ms_per_image": round(1000 * cat_s / args.images, 3),
                "catalogue_share": round(cat_s / (wall * n_nodes), 4),
                "encode_ms_per_image": round(1000 * enc_s / args.images, 3)}
    finally:
        for n in nodes:
            n.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--backend", choices=("pg", "sqlite"), default="pg")
    ap.add_argument("--model")
    ap.add_argument("--claim-batch", type=int, default=16)
    ap.add_argument("--ingest-batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    exe = os.path.join(args.build, "src", "cli", "imgsearch")
    tmp = tempfile.mkdtemp(prefix="ims_bench_cluster_")
    pics = pg = None
    try:
        root = os.path.join(tmp, "root")
        os.makedirs(root)
        for i in range(args.images):
            with open(os.path.join(root, "p%05d.png" % i), "wb") as f:
                f.write(png_bytes(96 + i % 32, 96 + (i * 7) % 32, i))
        pics = HostileServer(root, max_life=3600)
        model = args.model or tiny_model(SRC, os.path.join(tmp, "model"))
        if args.backend == "pg":
            from pgutil import PgServer
            pg = PgServer().__enter__()
        rounds = []
        for rnd in range(args.rounds):
            for n in (1, 2):
                r = one_round(args, exe, model, tmp, pics, n, rnd, pg)
                print(json.dumps(r), file=sys.stderr, flush=True)
                rounds.append(r)
        best = {n: max(r["images_per_s"] for r in rounds if r["nodes"] == n) for n in (1, 2)}
        cpu = ""
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                           "")
        except OSError:
            pass
        out = {"bench": "ingest_cluster", "backend": args.backend, "images": args.images,
               "model": "tiny (tests/golden/clip/tiny)" if not args.model else args.model,
               "claim_batch": args.claim_batch, "ingest_batch": args.ingest_batch,
               "cpus": os.cpu_count(), "cpu": cpu, "load_avg": os.getloadavg(),
               "machine": platform.machine(), "rounds": rounds,
               "best_images_per_s": {"1": best[1], "2": best[2]},
               "ratio_2_over_1": round(best[2] / best[1], 3)}
        text = json.dumps(out, indent=1)
        print(text)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text + "\n")
    finally:
        if pics:
            pics.stop()
        if pg:
            pg.__exit__(None, None, None)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
