#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench_vector_http: exact search end to end through HTTP against FAISS.

    python3 bench/bench_vector_http.py --build BUILD_DIR [--n 200000] [--queries 200]
                                       [--rounds 2] [--model DIR] [--seed 7]

BUILD_DIR must hold imgsearch and bench_vector_http (cmake --build BUILD_DIR
--target imgsearch bench_vector_http). In a mkdtemp folder, removed at the end:
  1. `bench_vector_http gen`: --n vectors of the easy set of shared
     bench/VECTORS.md (d = 512) as v.npy, sources s.txt
     ("https://bench.test/<i>.jpg"), --queries queries drawn the same way;
  2. the PRNG ViT-B/32 model (imgsearch make-model, seed 1) unless --model;
  3. `imgsearch import --vectors v.npy --sources s.txt` into an empty data
     folder (timed: wall seconds of the process);
  4. `imgsearch serve --port 0 --rate 0` on 127.0.0.1;
  5. --rounds times, each with its own --queries fresh queries (the server
     caches the top-k of recent queries: a repeated query is a cache hit),
     alternating: `bench_vector_http scan` (FAISS IndexFlatIP,
     1 thread, one query at a time, then our in-process "Flat" scan, same
     queries, with 1 thread and with --scan-threads), then every query as POST /api/v1/search {"vector": [...],
     "k": 10} on one keep-alive connection (latency = request written to
     response body read, client JSON encoding done beforehand);
  6. prints one JSON object: medians over rounds of each side's p50, the
     ratio FAISS p50 / HTTP p50 (target >= 4), the HTTP overhead over the
     in-process scan, and how many top-10 lists (mapped back to rows through
     the result URLs) equal FAISS's.
Nothing here is a test; the figures depend on the machine and its load.
"""
import argparse
import array
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import Serve, find_exe, print_result, prng_model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
DIM = 512
URL_RE = re.compile(r"^https://bench\.test/(\d+)\.jpg$")


def pct(v, p):
    s = sorted(v)
    i = max(0, min(len(s) - 1, int(-(-p * len(s) // 1)) - 1))
    return s[i]


def http_round(port, bodies):
    """Sends every body on one keep-alive connection; returns (ms list, top-10 rows,
    the server's took_ms list)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    times, tops, took = [], [], []
    for body in bodies:
        t0 = time.perf_counter()
        conn.request("POST", "/api/v1/search", body=body,
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        times.append((time.perf_counter() - t0) * 1e3)
        if r.status != 200 or r.getheader("Connection", "").lower() == "close":
            sys.exit("bench_vector_http: HTTP %d (%s): %s" %
                     (r.status, r.getheader("Connection"), data[:300]))
        doc = json.loads(data)
        res = doc.get("results")
        if not isinstance(res, list) or len(res) != 10 or "took_ms" not in doc:
            sys.exit("bench_vector_http: unexpected JSON: %s" % data[:300])
        took.append(float(doc["took_ms"]))
        rows = []
        for hit in res:
            for key in ("id", "url", "score", "width", "height", "thumb"):
                if key not in hit:
                    sys.exit("bench_vector_http: result without %r: %s" % (key, hit))
            m = URL_RE.match(hit["url"])
            if not m:
                sys.exit("bench_vector_http: unexpected url %r" % hit["url"])
            rows.append(int(m.group(1)))
        tops.append(rows)
    conn.close()
    return times, tops, took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--n", type=int, default=200000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--model")
    ap.add_argument("--scan-threads", type=int, default=min(os.cpu_count() or 1, 4),
                    help="threads of the second in-process scan (default: the server's "
                         "default, min(CPUs, 4))")
    args = ap.parse_args()
    scan_threads = args.scan_threads
    imgsearch = find_exe(args.build, "imgsearch")
    driver = find_exe(args.build, "bench_vector_http")

    tmp = tempfile.mkdtemp(prefix="ims_bench_vhttp_")
    serve = None
    try:
        t0 = time.monotonic()
        # fresh queries for every round (the server caches the top-k of recent
        # queries) plus 5 for the warm-up
        n_q = args.queries * args.rounds + 5
        subprocess.run([driver, "gen", tmp, str(args.n), str(n_q), str(args.seed)],
                       check=True, timeout=900)
        gen_s = time.monotonic() - t0
        model = args.model
        if not model:
            model = prng_model(imgsearch, tmp)
        data = os.path.join(tmp, "data")
        t0 = time.monotonic()
        p = subprocess.Popen([imgsearch, "import", "--data", data, "--model", model,
                              "--vectors", os.path.join(tmp, "v.npy"),
                              "--sources", os.path.join(tmp, "s.txt")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = p.communicate(timeout=1800)
        import_s = time.monotonic() - t0
        if p.returncode != 0:
            sys.exit("bench_vector_http: import failed:\n" + err.decode()[-2000:])
        sys.stderr.write("bench_vector_http: imported %d vectors in %.1f s\n" % (args.n, import_s))

        q = array.array("f")
        with open(os.path.join(tmp, "q.f32"), "rb") as f:
            q.frombytes(f.read())
        if sys.byteorder != "little":
            q.byteswap()
        # repr of a float32 widened to double round-trips exactly through the
        # server's strtod + (float) cast
        bodies = [json.dumps({"vector": list(q[i * DIM:(i + 1) * DIM]), "k": 10}).encode()
                  for i in range(n_q)]

        t0 = time.monotonic()
        serve = Serve(imgsearch, data, model, os.path.join(tmp, "serve.log"), timeout=600)
        serve_start_s = time.monotonic() - t0
        # warm up: index pages, first-request paths
        http_round(serve.port, bodies[-5:])

        rounds = []
        for r in range(args.rounds):
            first = r * args.queries
            sc = json.loads(subprocess.run([driver, "scan", tmp, str(scan_threads), str(first),
                                            str(args.queries)], check=True, timeout=1800,
                                           stdout=subprocess.PIPE).stdout)
            times, tops, took = http_round(serve.port, bodies[first:first + args.queries])
            faiss_top, scan_top = sc["faiss_top10"], sc["scan_top10"]
            rd = {
                "faiss_flat_ip_p50_ms": sc["faiss_flat_ip"]["p50_ms"],
                "faiss_flat_ip_p99_ms": sc["faiss_flat_ip"]["p99_ms"],
                "scan_flat_p50_ms": sc["scan_flat"]["p50_ms"],
                "scan_flat_p99_ms": sc["scan_flat"]["p99_ms"],
                "scan_flat_mt_p50_ms": sc["scan_flat_mt"]["p50_ms"],
                "http_p50_ms": round(pct(times, 0.5), 3),
                "http_p99_ms": round(pct(times, 0.99), 3),
                "server_took_p50_ms": round(pct(took, 0.5), 3),
                "http_top10_equal_faiss": sum(a == b for a, b in zip(tops, faiss_top)),
                "http_top10_set_equal_faiss": sum(set(a) == set(b)
                                                  for a, b in zip(tops, faiss_top)),
                "scan_top10_equal_faiss": sum(a == b for a, b in zip(scan_top, faiss_top)),
                "isa": sc["isa"],
            }
            rd["ratio_faiss_over_http_p50"] = round(rd["faiss_flat_ip_p50_ms"] /
                                                    rd["http_p50_ms"], 2)
            sys.stderr.write("bench_vector_http: round %d: %s\n" % (r + 1, json.dumps(rd)))
            rounds.append(rd)

        def med(key):
            return round(statistics.median(x[key] for x in rounds), 3)

        result = {
            "bench": "vector_http",
            "set": "easy",
            "n": args.n,
            "d": DIM,
            "queries": args.queries,
            "rounds": args.rounds,
            "cpus": os.cpu_count(),
            "gen_s": round(gen_s, 1),
            "import_s": round(import_s, 1),
            "import_vectors_per_s": round(args.n / import_s),
            "serve_start_s": round(serve_start_s, 1),
            "faiss_flat_ip_p50_ms": med("faiss_flat_ip_p50_ms"),
            "scan_flat_p50_ms": med("scan_flat_p50_ms"),
            "scan_threads": scan_threads,
            "scan_flat_mt_p50_ms": med("scan_flat_mt_p50_ms"),
            "http_p50_ms": med("http_p50_ms"),
            "http_p99_ms": med("http_p99_ms"),
            "server_took_p50_ms": med("server_took_p50_ms"),
            "ratio_faiss_over_http_p50": med("ratio_faiss_over_http_p50"),
            "http_overhead_p50_ms_vs_1_thread": round(med("http_p50_ms") -
                                                      med("scan_flat_p50_ms"), 3),
            "http_overhead_p50_ms_vs_scan_threads": round(med("http_p50_ms") -
                                                          med("scan_flat_mt_p50_ms"), 3),
            "http_top10_equal_faiss": "%d/%d" % (min(x["http_top10_equal_faiss"]
                                                     for x in rounds), args.queries),
            "per_round": rounds,
        }
        print_result(result)
    finally:
        if serve:
            serve.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
