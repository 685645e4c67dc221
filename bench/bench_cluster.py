#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench_cluster: a node on PostgreSQL against the same node on SQLite, and
how fast a commit on node A becomes searchable on node B (issue 9).

    python3 bench/bench_cluster.py --build BUILD_DIR [--rows 20000]
        [--queries 400] [--probes 60] [--out result.json]

Everything runs on 127.0.0.1 in a mkdtemp folder, removed at the end, with
the tiny test model (tests/golden/clip/tiny, 32-d embeddings) so that the
encoder costs little and the figures are about the catalogue and the index:
  1. one catalogue of --rows random unit vectors (imgsearch import) in a data
     folder (SQLite) and in a fresh PostgreSQL database (the tests' throwaway
     server: tests/pg/pg_server.sh, or IMS_TEST_PG_URL);
  2. one node on each; --queries searches by vector (POST /api/v1/search
     {"vector": [...], "k": 10}, keep-alive, one client), alternating between
     the nodes query by query so both see the same machine load; p50/p99 per
     backend and the ratio PG/SQLite (target <= 1.2: the replica answers, the
     catalogue only joins the 10 rows), and the same with text queries (a new
     text each time, so the tiny text encoder runs);
  3. change propagation, per backend: node A and node B on one catalogue; a
     client thread keeps uploading images to A (the ingest load); --probes
     times, a unique image is uploaded to A and B is polled (search by its
     image_id, every 2 ms) until it answers it first. Delay from A's answer
     (A's own index already shows it, so the commit is before) to B's first
     hit; p50/p99 (target p99 < 1 s). Also from the upload's start.
  4. prints one JSON object (CPU model, core count, every figure).
Small tiny-model dimensions make the index scan cheap, which is the worst
case for the PG/SQLite ratio (the join is a larger share of each query).
Nothing here is a test: figures depend on the machine and its load.
"""
import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
from pgutil import PgServer  # noqa: E402
sys.path.insert(0, HERE)
import bench_cpu  # noqa: E402

DIM = 32


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * (len(xs) - 1)))))
    return xs[k]


def png(seed, size=32):
    """A distinct small RGB PNG (noise from seed)."""
    rnd = random.Random(seed)
    raw = b"".join(b"\x00" + bytes(rnd.getrandbits(8) for _ in range(size * 3))
                   for _ in range(size))

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))


def multipart(files):
    boundary = "bench%x" % random.getrandbits(64)
    out = []
    for name, data in files:
        out.append(b"--" + boundary.encode() + b"\r\nContent-Disposition: form-data; "
                   b'name="file"; filename="' + name.encode() + b'"\r\n'
                   b"Content-Type: image/png\r\n\r\n" + data + b"\r\n")
    out.append(b"--" + boundary.encode() + b"--\r\n")
    return b"".join(out), "multipart/form-data; boundary=" + boundary


class Node:
    extra = []

    def __init__(self, exe, model, log, data=None, catalogue=None):
        cmd = [exe, "serve", "--model", model, "--port", "0", "--host", "127.0.0.1",
               "--rate", "0", "--max-inflight", "64"] + Node.extra
        if data:
            cmd += ["--data", data]
        if catalogue:
            cmd += ["--catalogue", catalogue]
        self.errf = open(log, "w+b")
        env = dict(os.environ)
        env.pop("IMGSEARCH_CATALOGUE", None)
        self.p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.errf, env=env)
        self.port = None
        end = time.time() + 300
        while time.time() < end and self.p.poll() is None:
            self.errf.seek(0)
            m = re.search(rb"serving http://127\.0\.0\.1:(\d+)/", self.errf.read())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.05)
        if not self.port:
            self.errf.seek(0)
            raise RuntimeError("node did not start: " + self.errf.read().decode()[-2000:])
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        self.lock = threading.Lock()

    def post(self, path, body, ctype="application/json", conn=None):
        c = conn or self.conn
        c.request("POST", path, body=body, headers={"Content-Type": ctype})
        r = c.getresponse()
        data = r.read()
        return r.status, json.loads(data)

    def stop(self):
        self.conn.close()
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def write_npy(path, rows, dim, rnd):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, dim)
    header += " " * (((len(header) + 11 + 63) // 64) * 64 - len(header) - 11) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        for _ in range(rows):
            v = [rnd.gauss(0, 1) for _ in range(dim)]
            f.write(struct.pack("<%df" % dim, *v))


def latency(a, b, queries, rnd, text=False, pool=None):
    out = {"sqlite": [], "postgresql": []}
    for i in range(queries):
        if pool:  # popular queries: a few result sets asked again and again
            q = rnd.choice(pool)
        elif text:  # a new text each time: the encoder runs (cache miss)
            q = {"text": "photo %d of %s" % (i, rnd.choice(["a cat", "the sea", "red cars"])),
                 "k": 10}
        else:
            q = {"vector": [rnd.gauss(0, 1) for _ in range(DIM)], "k": 10}
        body = json.dumps(q).encode()
        for name, node in (("sqlite", a), ("postgresql", b)) if i % 2 == 0 else \
                (("postgresql", b), ("sqlite", a)):
            t = time.perf_counter()
            st, res = node.post("/api/v1/search", body)
            dt = time.perf_counter() - t
            if st != 200 or len(res["results"]) != 10:
                raise RuntimeError("search failed: %s %r" % (st, res))
            if i >= 20:  # warm-up
                out[name].append(dt * 1000)
    return out


def propagation(a, b, probes, seed0):
    stop = threading.Event()
    loaded = [0]

    def load():
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
        s = seed0 + 10_000_000
        while not stop.is_set():
            files = [("load%d.png" % (s + j), png(s + j)) for j in range(4)]
            s += 4
            body, ctype = multipart(files)
            st, _ = a.post("/api/v1/images", body, ctype, conn)
            if st == 200:
                loaded[0] += 4
        conn.close()

    t = threading.Thread(target=load)
    t.start()
    conn_a = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
    conn_b = http.client.HTTPConnection("127.0.0.1", b.port, timeout=60)
    from_answer, from_send = [], []
    t_start = time.time()
    try:
        for i in range(probes):
            body, ctype = multipart([("probe%d.png" % i, png(seed0 + i))])
            t0 = time.perf_counter()
            st, res = a.post("/api/v1/images", body, ctype, conn_a)
            t1 = time.perf_counter()
            if st != 200 or not res.get("images"):
                raise RuntimeError("probe upload failed: %s %r" % (st, res))
            pid = res["images"][0]["id"]
            q = json.dumps({"image_id": pid, "k": 1}).encode()
            deadline = t1 + 30
            while True:
                st, r = b.post("/api/v1/search", q, conn=conn_b)
                if st == 200 and r["results"] and r["results"][0]["id"] == pid:
                    t2 = time.perf_counter()
                    break
                if time.perf_counter() > deadline:
                    raise RuntimeError("probe %d never reached B" % pid)
                time.sleep(0.002)
            from_answer.append((t2 - t1) * 1000)
            from_send.append((t2 - t0) * 1000)
            time.sleep(0.05)
    finally:
        stop.set()
        t.join()
        conn_a.close()
        conn_b.close()
    secs = time.time() - t_start
    return {"probes": len(from_answer),
            "from_answer_ms": {"p50": round(pct(from_answer, 50), 1),
                               "p99": round(pct(from_answer, 99), 1),
                               "max": round(max(from_answer), 1)},
            "from_send_ms": {"p50": round(pct(from_send, 50), 1),
                             "p99": round(pct(from_send, 99), 1)},
            "load_images_per_s": round(loaded[0] / secs, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--probes", type=int, default=60)
    ap.add_argument("--out")
    ap.add_argument("--row-cache-mb", type=int, default=None,
                    help="passed to both nodes' serve (default: serve's own)")
    args = ap.parse_args()
    exe = os.path.join(args.build, "src", "cli", "imgsearch")
    if args.row_cache_mb is not None:
        Node.extra = ["--row-cache-mb", str(args.row_cache_mb)]
    tmp = tempfile.mkdtemp(prefix="ims_bench_cluster_")
    nodes = []
    rnd = random.Random(1)
    try:
        model = os.path.join(tmp, "model")
        os.makedirs(model)
        for f in ("config.json", "model.safetensors"):
            shutil.copy(os.path.join(SRC, "tests/golden/clip/tiny", f), model)
        for f in ("vocab.json", "merges.txt"):
            shutil.copy(os.path.join(SRC, "data/vocab", f), model)
        npy, srcs = os.path.join(tmp, "v.npy"), os.path.join(tmp, "sources.txt")
        write_npy(npy, args.rows, DIM, rnd)
        with open(srcs, "w") as f:
            for i in range(args.rows):
                f.write("https://example.org/bench/%d.jpg\n" % i)
        with PgServer() as pg:
            url = pg.new_database()
            data = os.path.join(tmp, "sqlite")
            for cat in (["--data", data], ["--catalogue", url]):
                subprocess.run([exe, "import"] + cat + ["--model", model, "--vectors", npy,
                                                        "--sources", srcs],
                               check=True, capture_output=True)
            s = Node(exe, model, os.path.join(tmp, "s.log"), data=data)
            nodes.append(s)
            p = Node(exe, model, os.path.join(tmp, "p.log"), catalogue=url)
            nodes.append(p)
            lat = latency(s, p, args.queries, rnd)
            res = {"cpu": bench_cpu.cpu_info()["model_name"], "cpus": os.cpu_count(), "rows": args.rows, "dim": DIM,
                   "row_cache_mb": args.row_cache_mb if args.row_cache_mb is not None else
                   "default", "search_ms": {}}
            for name, xs in lat.items():
                res["search_ms"][name] = {"p50": round(pct(xs, 50), 3),
                                          "p99": round(pct(xs, 99), 3),
                                          "mean": round(statistics.mean(xs), 3)}
            res["search_ratio_pg_sqlite_p50"] = round(
                res["search_ms"]["postgresql"]["p50"] / res["search_ms"]["sqlite"]["p50"], 3)
            res["search_ratio_pg_sqlite_mean"] = round(
                res["search_ms"]["postgresql"]["mean"] / res["search_ms"]["sqlite"]["mean"], 3)
            res["search_pg_extra_ms_p50"] = round(
                res["search_ms"]["postgresql"]["p50"] - res["search_ms"]["sqlite"]["p50"], 3)
            # popular result sets: 20 query vectors asked over and over (the
            # row cache serves their rows; the index's result cache their hits)
            pool = [{"vector": [rnd.gauss(0, 1) for _ in range(DIM)], "k": 10}
                    for _ in range(20)]
            lat = latency(s, p, args.queries, rnd, pool=pool)
            res["popular_search_ms"] = {}
            for name, xs in lat.items():
                res["popular_search_ms"][name] = {"p50": round(pct(xs, 50), 3),
                                                  "p99": round(pct(xs, 99), 3),
                                                  "mean": round(statistics.mean(xs), 3)}
            res["popular_search_ratio_pg_sqlite_p50"] = round(
                res["popular_search_ms"]["postgresql"]["p50"] /
                res["popular_search_ms"]["sqlite"]["p50"], 3)
            lat = latency(s, p, args.queries, rnd, text=True)
            res["text_search_ms"] = {}
            for name, xs in lat.items():
                res["text_search_ms"][name] = {"p50": round(pct(xs, 50), 3),
                                               "p99": round(pct(xs, 99), 3)}
            res["text_search_ratio_pg_sqlite_p50"] = round(
                res["text_search_ms"]["postgresql"]["p50"] / res["text_search_ms"]["sqlite"]["p50"],
                3)
            # propagation: A = the PG node above, B = a second PG node (no --data)
            b = Node(exe, model, os.path.join(tmp, "b.log"), catalogue=url)
            nodes.append(b)
            res["propagation_postgresql"] = propagation(p, b, args.probes, 1000)
            # the same on SQLite: two nodes on one data folder
            b2 = Node(exe, model, os.path.join(tmp, "b2.log"), data=data)
            nodes.append(b2)
            res["propagation_sqlite"] = propagation(s, b2, args.probes, 5000)
            for n in nodes:
                n.stop()
            nodes = []
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
