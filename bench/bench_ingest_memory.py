#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench_ingest_memory: memory of `imgsearch add` on big jobs.

    python3 bench/bench_ingest_memory.py --build BUILD_DIR urls [--urls 1000000] [--every 1000]
    python3 bench/bench_ingest_memory.py --build BUILD_DIR images [--images 10000] [--files 300]

BUILD_DIR must hold imgsearch and bench_ingest_genjpeg. Everything runs in a
mkdtemp folder, removed at the end, against a loopback server (a child
process of this script: a minimal asyncio HTTP/1.1 server with keep-alive,
on 127.0.0.1, port chosen by the kernel). The model is the tiny CLIP of
tests/golden/clip/tiny + data/vocab (32-d embeddings), so the encoder stays
out of the picture; add runs with --allow-private-urls --retries 0.

urls:   a --from list of --urls lines http://127.0.0.1:P/u/<i>; the server
        answers 404 at once, except every --every-th URL (0: none) which gets
        a 1-2 MP JPEG made distinct per URL (a COM segment holding i). The
        add process's VmRSS is sampled from /proc/PID/status every 0.5 s
        together with how many items it has reported on stdout (one line per
        item); printed: RSS (and its anonymous / file-backed parts) at
        10/50/100% of the items and the least-squares slope of RSS (and of
        RssAnon) over items between 10% and 100% (bytes per URL).
images: --images distinct URLs http://127.0.0.1:P/p/<i>.jpg over --files
        generated JPEGs (1-2 MP, bench_ingest_genjpeg), each response made
        distinct by a COM segment holding i (so no content-hash duplicate
        skips the encoder); printed: peak RSS (VmHWM) of add beside the
        model's own footprint (VmHWM of `imgsearch search` on an empty data
        folder with the same model), the index size (images x dim x 4) and
        the RSS curve.
Nothing here is a test; the figures depend on the machine and its load.
"""
import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import find_exe, print_result, with_comment  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)


# ---- the loopback server (child process) ------------------------------------------

def serve_main(photos, every, max_life):
    files = [open(os.path.join(photos, n), "rb").read() for n in sorted(os.listdir(photos))]
    not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"

    def answer(path):
        m = re.match(r"^/(u|p)/(\d+)(?:\.jpg)?$", path)
        if not m:
            return not_found
        i = int(m.group(2))
        if m.group(1) == "u" and (every == 0 or i % every != 0):
            return not_found
        body = with_comment(files[i % len(files)], "bench %d" % i)
        return (b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                % len(body)) + body

    class Conn(asyncio.Protocol):
        def connection_made(self, transport):
            self.t, self.buf = transport, b""

        def data_received(self, data):
            self.buf += data
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > 65536:
                        self.t.close()
                    return
                head, self.buf = self.buf[:end], self.buf[end + 4:]
                parts = head.split(b"\r\n", 1)[0].split(b" ")
                path = parts[1].decode("latin-1") if len(parts) >= 2 else ""
                self.t.write(answer(path))

    async def run():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(Conn, "127.0.0.1", 0, backlog=1024)
        print(srv.sockets[0].getsockname()[1], flush=True)
        await asyncio.sleep(max_life)  # stops by itself even if the parent died

    asyncio.run(run())


# ---- measuring ------------------------------------------------------------------------

def proc_status(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:")):
                    out[line.split(":")[0]] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def run_sampled(cmd, total, interval=0.5):
    """Runs cmd, counting its stdout lines and sampling VmRSS/VmHWM.
    Returns (samples [(t, done, rss, hwm)], rc, ru_maxrss bytes, wall s, stderr tail, kinds)."""
    err_f = tempfile.TemporaryFile()
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err_f, bufsize=1 << 16)
    state = {"done": 0}
    kinds = {}

    def reader():
        for line in p.stdout:
            state["done"] += 1
            k = line.split(b" ", 1)[0].decode("ascii", "replace")
            kinds[k] = kinds.get(k, 0) + 1

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    samples = []
    ru = None
    status = None
    while True:
        pid_done, st, r = os.wait4(p.pid, os.WNOHANG)
        if pid_done:
            status, ru = st, r
            break
        s = proc_status(p.pid)
        if "VmRSS" in s:
            samples.append((round(time.monotonic() - t0, 2), state["done"], s["VmRSS"],
                            s["VmHWM"], s.get("RssAnon", 0), s.get("RssFile", 0)))
        time.sleep(interval)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    th.join(60)
    err_f.seek(0)
    tail = err_f.read()[-3000:].decode("utf-8", "replace")
    err_f.close()
    return samples, p.returncode, ru.ru_maxrss * 1024, wall, tail, kinds


def at_fraction(samples, total, frac):
    """The first sample at or past frac of the items (the last one for 1.0)."""
    if frac >= 1.0:
        done_all = [s for s in samples if s[1] >= total]
        s = done_all[0] if done_all else samples[-1]
    else:
        s = next((s for s in samples if s[1] >= frac * total), samples[-1])
    return {"items": s[1], "t_s": s[0], "rss_mb": round(s[2] / 2**20, 1),
            "anon_mb": round(s[4] / 2**20, 1), "file_mb": round(s[5] / 2**20, 1)}


def slope(samples, lo, hi):
    pts = [(s[1], s[2]) for s in samples if lo <= s[1] <= hi]
    if len(pts) < 3:
        return None
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def tiny_model(dest):
    os.makedirs(dest)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(SRC, "tests/golden/clip/tiny", f), dest)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(SRC, "data/vocab", f), dest)
    return dest


def model_footprint(imgsearch, model, tmp):
    """Peak RSS of a bare `imgsearch search` on an empty data folder."""
    cmd = [imgsearch, "search", "--data", os.path.join(tmp, "empty"), "--model", model, "x"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, st, ru = os.wait4(p.pid, 0)
    return ru.ru_maxrss * 1024


def curve(samples, n=12):
    step = max(1, len(samples) // n)
    pick = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    return [[s[0], s[1], round(s[2] / 2**20, 1), round(s[4] / 2**20, 1), round(s[5] / 2**20, 1)]
            for s in pick]


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--serve":
        serve_main(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("mode", choices=("urls", "images"))
    ap.add_argument("--urls", type=int, default=1000000)
    ap.add_argument("--every", type=int, default=1000)
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--model", help="model folder (default: the tiny test model)")
    args = ap.parse_args()
    imgsearch = find_exe(args.build, "imgsearch")
    genjpeg = find_exe(args.build, "bench_ingest_genjpeg")

    tmp = tempfile.mkdtemp(prefix="ims_bench_ingmem_")
    server = None
    try:
        photos = os.path.join(tmp, "photos")
        os.makedirs(photos)
        n_files = args.files if args.mode == "images" else 1
        subprocess.run([genjpeg, photos, str(n_files), "3"], check=True, timeout=1800)
        model = args.model or tiny_model(os.path.join(tmp, "model"))
        server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", photos,
                                   str(args.every), "14400"], stdout=subprocess.PIPE)
        port = int(server.stdout.readline())
        total = args.urls if args.mode == "urls" else args.images
        urls = os.path.join(tmp, "urls.txt")
        with open(urls, "w") as f:
            if args.mode == "urls":
                for i in range(total):
                    f.write("http://127.0.0.1:%d/u/%d\n" % (port, i))
            else:
                for i in range(total):
                    f.write("http://127.0.0.1:%d/p/%d.jpg\n" % (port, i))
        footprint = model_footprint(imgsearch, model, tmp)
        cmd = [imgsearch, "add", "--data", os.path.join(tmp, "data"), "--model", model,
               "--allow-private-urls", "--retries", "0", "--from", urls]
        samples, rc, maxrss, wall, err_tail, kinds = run_sampled(cmd, total)
        if rc != 0 or not samples:
            sys.exit("bench_ingest_memory: add exited %d:\n%s" % (rc, err_tail))
        hwm = max(s[3] for s in samples)
        result = {
            "bench": "ingest_memory",
            "mode": args.mode,
            "items": total,
            "model": "tiny (tests/golden/clip/tiny)" if not args.model else args.model,
            "cpus": os.cpu_count(),
            "add_wall_s": round(wall, 1),
            "items_per_s": round(total / wall),
            "reported": kinds,
            "add_peak_rss_mb": round(max(hwm, maxrss) / 2**20, 1),
            "model_footprint_peak_rss_mb": round(footprint / 2**20, 1),
            "rss_curve_fields": ["t_s", "items", "rss_mb", "anon_mb", "file_mb"],
            "rss_curve": curve(samples),
        }
        if args.mode == "urls":
            result["images_every"] = args.every
            result["rss_at"] = {"10%": at_fraction(samples, total, 0.1),
                                "50%": at_fraction(samples, total, 0.5),
                                "100%": at_fraction(samples, total, 1.0)}
            s = slope(samples, 0.1 * total, total)
            result["rss_slope_bytes_per_url_10_to_100"] = round(s, 2) if s is not None else None
            s = slope([(x[0], x[1], x[4]) for x in samples], 0.1 * total, total)
            result["anon_slope_bytes_per_url_10_to_100"] = round(s, 2) if s is not None else None
            result["rss_growth_10_to_100_mb"] = round(
                result["rss_at"]["100%"]["rss_mb"] - result["rss_at"]["10%"]["rss_mb"], 1)
        else:
            m = re.search(r'"dim"\s*:\s*(\d+)', subprocess.run(
                [imgsearch, "stats", "--data", os.path.join(tmp, "data")],
                stdout=subprocess.PIPE, text=True).stdout)
            dim = int(m.group(1)) if m else None
            result["files"] = n_files
            result["dim"] = dim
            result["index_mb"] = round(total * dim * 4 / 2**20, 2) if dim else None
            result["index_mb_if_vitb32"] = round(total * 512 * 4 / 2**20, 2)
            result["peak_over_model_mb"] = round(
                (max(hwm, maxrss) - footprint) / 2**20, 1)
            result["rss_at"] = {"10%": at_fraction(samples, total, 0.1),
                                "50%": at_fraction(samples, total, 0.5),
                                "100%": at_fraction(samples, total, 1.0)}
        print_result(result)
    finally:
        if server:
            server.kill()
            server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
