#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench_query_ingest: text queries through `imgsearch serve` while the same
server ingests large photos (issue 11 item 4).

    cmake --build B --target imgsearch bench_ingest_genjpeg
    python3 bench/bench_query_ingest.py --build B [--model DIR] [--images 200]
        [--distinct 20] [--size 4032x3024] [--precision bf16] [--queries 200]
        [--out FILE.json]

In a mkdtemp folder (removed at the end):
  1. --distinct photo-like JPEGs of --size (bench_ingest_genjpeg), each copied
     until there are --images files, every copy made distinct by a JPEG COM
     segment (same pixels and decode work, other bytes: no content-hash
     duplicate skips the encoder);
  2. the PRNG ViT-B/32 model (make-model, seed 1) unless --model;
  3. `imgsearch serve --rate 0 --allow-private-urls` on 127.0.0.1 (port 0)
     and tests/integration/hostile_server.py serving the JPEGs on 127.0.0.1;
  4. phase "idle": --queries text searches one after another (one keep-alive
     client, GET /api/v1/search?q=...&k=10, every text new so the text cache
     never answers), latencies in ms;
  5. phase "ingest": POST /api/v1/images with the --images URLs, then the same
     client queries without pause until the job is done; the job's rate is
     reported beside the latencies;
  6. one JSON object: p50/p90/p99/max per phase, their ratios, the ingest rate.
Nothing here is a test: the figures depend on the machine and its load.
"""
import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
from ingest_common import HostileServer  # noqa: E402
sys.path.insert(0, HERE)
import bench_cpu  # noqa: E402
from bench_common import Serve, find_exe, prng_model, with_comment  # noqa: E402

WORDS = ["red", "small", "dog", "beach", "city", "night", "old", "car", "tree", "snow",
         "river", "bird", "green", "house", "mountain", "cat", "bridge", "flower", "boat", "sky"]


def pct(v, q):
    s = sorted(v)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def summary(lat):
    return {"n": len(lat), "p50_ms": round(pct(lat, 0.5), 2), "p90_ms": round(pct(lat, 0.9), 2),
            "p99_ms": round(pct(lat, 0.99), 2), "max_ms": round(max(lat), 2),
            "mean_ms": round(statistics.mean(lat), 2)}


class Client:
    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.i = 0

    def request(self, method, path, body=None, headers=None):
        self.conn.request(method, path, body=body, headers=headers or {})
        r = self.conn.getresponse()
        data = r.read()
        return r.status, data

    def query(self):
        self.i += 1
        w = [WORDS[(self.i * k + k) % len(WORDS)] for k in (1, 3, 7)]
        q = "a photo of a %s %s %s number %d" % (w[0], w[1], w[2], self.i)
        t = time.monotonic()
        st, data = self.request("GET", "/api/v1/search?k=10&q=" + urllib.parse.quote(q))
        ms = (time.monotonic() - t) * 1e3
        if st != 200:
            sys.exit("bench_query_ingest: search answered %d: %s" % (st, data[:300]))
        return ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--model")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--distinct", type=int, default=20)
    ap.add_argument("--size", default="4032x3024")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--out")
    a = ap.parse_args()
    exe = find_exe(a.build, "imgsearch")
    genjpeg = find_exe(a.build, "bench_ingest_genjpeg")
    tmp = tempfile.mkdtemp(prefix="ims_bench_qi_")
    srv = pics = None
    try:
        model = a.model
        if not model:
            model = prng_model(exe, tmp)
        gen = os.path.join(tmp, "gen")
        root = os.path.join(tmp, "root")
        os.makedirs(gen)
        os.makedirs(root)
        subprocess.run([genjpeg, gen, str(a.distinct), "5", a.size], check=True,
                       stdout=subprocess.DEVNULL)
        srcs = sorted(os.listdir(gen))
        total_bytes = 0
        for i in range(a.images):
            with open(os.path.join(gen, srcs[i % len(srcs)]), "rb") as f:
                b = with_comment(f.read(), "copy %d" % i)
            total_bytes += len(b)
            with open(os.path.join(root, "p%04d.jpg" % i), "wb") as f:
                f.write(b)
        shutil.rmtree(gen)
        pics = HostileServer(root, max_life=3600)
        data = os.path.join(tmp, "data")
        srv = Serve(exe, data, model, os.path.join(tmp, "serve.log"),
                    ["--precision", a.precision], timeout=120)
        c = Client(srv.port)
        for _ in range(5):  # warm-up: kernels, first connection
            c.query()
        load0 = os.getloadavg()
        idle = [c.query() for _ in range(a.queries)]
        urls = [pics.url("/files/p%04d.jpg" % i) for i in range(a.images)]
        t0 = time.monotonic()
        st, body = c.request("POST", "/api/v1/images", json.dumps({"urls": urls}),
                             {"Content-Type": "application/json"})
        if st not in (200, 202):
            sys.exit("bench_query_ingest: POST /api/v1/images answered %d: %s" % (st, body[:300]))
        job = json.loads(body)["job"]
        busy, state, last_poll, j = [], "queued", 0.0, {}
        while state not in ("done", "failed"):
            busy.append(c.query())
            if time.monotonic() - last_poll > 0.25:
                last_poll = time.monotonic()
                _, jb = c.request("GET", "/api/v1/jobs/" + job)
                j = json.loads(jb)
                state = j.get("state", "?")
        job_s = time.monotonic() - t0
        if j.get("failed"):
            sys.exit("bench_query_ingest: %s images failed: %s" % (j.get("failed"),
                                                                  json.dumps(j.get("errors"))[:600]))
        load1 = os.getloadavg()
        after = [c.query() for _ in range(min(50, a.queries))]
        res = {
            "cpu": bench_cpu.cpu_info(),
            "bench": "query_ingest", "precision": a.precision, "images": a.images,
            "distinct_images": a.distinct, "size": a.size,
            "jpeg_mb_avg": round(total_bytes / a.images / 1e6, 2),
            "load_avg_start": [round(x, 2) for x in load0],
            "load_avg_end": [round(x, 2) for x in load1],
            "ratios": {},
            "queries_idle": summary(idle),
            "queries_during_ingest": summary(busy),
            "queries_after_ingest": summary(after),
            "ingest": {"state": state, "done": j.get("done"), "failed": j.get("failed"),
                       "seconds": round(job_s, 2),
                       "images_per_s": round(a.images / job_s, 2)},
        }
        for k in ("p50_ms", "p99_ms"):
            res["ratios"]["during_over_idle_" + k[:3]] = round(
                res["queries_during_ingest"][k] / res["queries_idle"][k], 2)
        out = json.dumps(res, indent=1)
        print(out)
        if a.out:
            with open(a.out, "w") as f:
                f.write(out + "\n")
    finally:
        if srv:
            srv.stop()
        if pics:
            pics.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
