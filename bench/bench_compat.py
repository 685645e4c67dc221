#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench_compat: what the immich compatibility layer costs, over HTTP on
127.0.0.1.

    python3 bench/bench_compat.py --build BUILD_DIR [--model DIR] [--cache DIR]
        [--seconds 3] [--repeat 3] [--cases text,image] [--out FILE.json]

In a mkdtemp folder (removed at the end; --cache keeps the model there):
  1. the PRNG ViT-B/32 model (imgsearch make-model, seed 1, 600 MB) unless
     --model names a model folder, and a catalogue of the 20-odd fixture
     images (so that a search has rows to join but costs next to nothing
     beside the encoder);
  2. `imgsearch serve --port 0 --rate 0 --immich-ml --immich-model bench`;
  3. for a text and for an image, at concurrency 1 and 8, --repeat rounds
     of --seconds each, alternating in every round:
       compat  POST /predict (immich's multipart: entries + text, or
               entries + the image as a Blob), as immich's server sends it;
       own     imgsearch's own API doing the same encode: GET
               /api/v1/search?q=TEXT&k=1 for the text, POST /api/v1/search
               multipart with the file and k=1 for the image;
     every text is new (no cache hits on either side: the encoder runs each
     time), the image is a 1600x1200 JPEG decoded each time;
  4. prints (and writes to --out) one JSON object: CPU model, the build,
     per case p50 / p90 / mean latency and requests/s
     and the compat/own ratios (target: compat costs < 5% more); latencies
     are pooled over the rounds, requests/s is all requests over all time.
Clients are Python threads with one keep-alive connection each; both sides
use the same client code, so its overhead cancels in the ratios. Nothing
here is a test: the figures depend on the machine and its load, which is
why both sides are measured in the same run, alternated.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import bench_cpu  # noqa: E402
from bench_common import Serve, find_exe  # noqa: E402
BOUNDARY = "----formdata-undici-052107913416"
SYLLABLES = ["ka", "lo", "mi", "ran", "te", "su", "vor", "pel", "qui", "dan", "bri", "zo",
             "mar", "tel", "nu", "gos", "fen", "wi", "dra", "ost"]


class Texts:
    """Every call a text never seen before (~8 tokens)."""

    def __init__(self, tag):
        self.n, self.tag, self.mu = 0, tag, threading.Lock()

    def next(self):
        with self.mu:
            self.n += 1
            n = self.n
        w = "".join(SYLLABLES[(n // (20 ** i)) % 20] for i in range(3))
        return "a photo of %s %s number %d" % (self.tag, w, n)


def form(parts):
    out = []
    for name, filename, value in parts:
        out.append(('--%s\r\nContent-Disposition: form-data; name="%s"' % (BOUNDARY, name))
                   .encode())
        if filename:
            out.append(('; filename="%s"\r\nContent-Type: application/octet-stream'
                        % filename).encode())
        out.append(b"\r\n\r\n" + (value if isinstance(value, bytes) else value.encode())
                   + b"\r\n")
    out.append(("--%s--\r\n" % BOUNDARY).encode())
    return b"".join(out)


def make_request(case, side, texts, image):
    """-> (method, path, body, headers) for one request."""
    ctype = {"Content-Type": "multipart/form-data; boundary=" + BOUNDARY}
    if case == "text" and side == "compat":
        entries = '{"clip":{"textual":{"modelName":"bench","options":{}}}}'
        return "POST", "/predict", form([("entries", None, entries),
                                         ("text", None, texts.next())]), ctype
    if case == "text":
        return "GET", "/api/v1/search?k=1&q=" + urllib.parse.quote(texts.next()), None, {}
    if side == "compat":
        entries = '{"clip":{"visual":{"modelName":"bench"}}}'
        return "POST", "/predict", form([("entries", None, entries),
                                         ("image", "blob", image)]), ctype
    return "POST", "/api/v1/search", form([("file", "query.jpg", image), ("k", None, "1")]), ctype


def run_load(port, case, side, conc, seconds, texts, image):
    lat, errors = [], []
    mu = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine = []
        while time.perf_counter() < deadline:
            method, path, body, hdrs = make_request(case, side, texts, image)
            t0 = time.perf_counter()
            c.request(method, path, body=body, headers=hdrs)
            r = c.getresponse()
            data = r.read()
            dt = time.perf_counter() - t0
            if r.status != 200:
                with mu:
                    errors.append("%d %s" % (r.status, data[:200]))
                continue
            mine.append(dt)
        c.close()
        with mu:
            lat.extend(mine)
    t0 = time.perf_counter()
    th = [threading.Thread(target=client) for _ in range(conc)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        sys.exit("bench_compat: %s %s: %d errors, first: %s" % (case, side, len(errors),
                                                               errors[0]))
    return lat, wall


def summary(lat, wall):
    lat = sorted(lat)
    return {"requests": len(lat), "p50_ms": round(1e3 * lat[len(lat) // 2], 3),
            "p90_ms": round(1e3 * lat[int(len(lat) * 0.9)], 3),
            "mean_ms": round(1e3 * statistics.fmean(lat), 3),
            "requests_per_s": round(len(lat) / wall, 3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--model")
    ap.add_argument("--cache")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out")
    ap.add_argument("--cases", default="text,image", help="text,image or one of them")
    a = ap.parse_args()
    exe = find_exe(a.build, "imgsearch")
    tmp = tempfile.mkdtemp(prefix="ims-bench-compat-")
    srv = None
    load_start = open("/proc/loadavg").read().split()[:3]
    build_type = "unknown"
    try:
        with open(os.path.join(a.build, "CMakeCache.txt")) as f:
            m = re.search(r"^CMAKE_BUILD_TYPE:\w+=(.*)$", f.read(), re.M)
            build_type = m.group(1) if m else build_type
    except OSError:
        pass
    try:
        model = a.model
        if not model:
            model = os.path.join(a.cache or tmp, "prng-vitb32")
            if not os.path.exists(os.path.join(model, "model.safetensors")):
                subprocess.run([exe, "make-model", "--config",
                                os.path.join(SRC, "tests/golden/clip/prng-vitb32/config.json"),
                                "--prng-seed", "1", "--out", model], check=True)
        data = os.path.join(tmp, "data")
        imgs = os.path.join(SRC, "tests/golden/clip/images")
        subprocess.run([exe, "add", "--data", data, "--model", model, imgs], check=True,
                       stdout=subprocess.DEVNULL)
        with open(os.path.join(imgs, "large_1600x1200.jpg"), "rb") as f:
            image = f.read()
        srv = Serve(exe, data, model, os.path.join(tmp, "serve.log"),
                    ["--immich-ml", "--immich-model", "bench"], timeout=60)
        port = srv.port
        texts = {"compat": Texts("compat"), "own": Texts("own")}
        # warm-up: both paths once (kernels, first connections)
        for side in ("compat", "own"):
            for case in ("text", "image"):
                run_load(port, case, side, 1, 0.3, texts[side], image)
        results = {}
        for case in a.cases.split(","):
            for conc in (1, 8):
                lat = {"compat": [], "own": []}
                wall = {"compat": 0.0, "own": 0.0}
                for r in range(a.repeat):
                    order = ("compat", "own") if r % 2 == 0 else ("own", "compat")
                    for side in order:
                        l, w = run_load(port, case, side, conc, a.seconds, texts[side], image)
                        lat[side] += l
                        wall[side] += w
                entry = {side: summary(lat[side], wall[side]) for side in ("compat", "own")}
                entry["p50_ratio"] = round(entry["compat"]["p50_ms"] / entry["own"]["p50_ms"], 4)
                entry["throughput_ratio"] = round(entry["compat"]["requests_per_s"] /
                                                  entry["own"]["requests_per_s"], 4)
                results["%s_c%d" % (case, conc)] = entry
                print("%s c=%d: compat p50 %.2f ms %.1f/s, own p50 %.2f ms %.1f/s" % (
                    case, conc, entry["compat"]["p50_ms"], entry["compat"]["requests_per_s"],
                    entry["own"]["p50_ms"], entry["own"]["requests_per_s"]), file=sys.stderr)
        out = {
            "bench": "compat",
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cpu": bench_cpu.cpu_info()["model_name"],
            "cpus": os.cpu_count(),
            "build": build_type,
            "loadavg_start_end": None,
            "model": "PRNG ViT-B/32 (seed 1)" if not a.model else os.path.basename(a.model),
            "seconds_per_round": a.seconds,
            "rounds": a.repeat,
            "target": "compat costs < 5% (p50_ratio <= 1.05, throughput_ratio >= 0.95)",
            "results": results,
        }
        out["loadavg_start_end"] = [load_start, open("/proc/loadavg").read().split()[:3]]
        text = json.dumps(out, indent=1)
        print(text)
        if a.out:
            with open(a.out, "w") as f:
                f.write(text + "\n")
    finally:
        if srv:
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
