#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench_ingest: `imgsearch add` end to end against the pure image encoder.

    python3 bench/bench_ingest.py --build BUILD_DIR [--images 200] [--batch 16]
                                  [--precision f32|bf16] [--model DIR] [--in-flight N]

BUILD_DIR must hold imgsearch, bench_ingest_genjpeg and bench_ingest_encode
(cmake --build BUILD_DIR --target imgsearch bench_ingest_genjpeg
bench_ingest_encode). In a mkdtemp folder, removed at the end:
  1. generates --images photo-like JPEGs of 1-2 megapixels;
  2. writes the PRNG ViT-B/32 model (imgsearch make-model, seed 1, 600 MB)
     unless --model is given;
  3. serves the JPEGs from tests/integration/hostile_server.py on 127.0.0.1;
  4. measures the pure encoder (bench_ingest_encode, same model, precision
     and batch size, as many images), then runs
     `imgsearch add --allow-private-urls --from urls.txt` into an empty data
     folder, then the encoder again (the better encoder figure is kept: the
     machine is shared, the slower one usually lost a core to someone else);
  5. prints one JSON object: images/s end to end (process start to exit,
     model load included) and of the pipeline alone (add's own summary),
     encoder images/s, their ratio, peak RSS of the add process (ru_maxrss
     from wait4 on that process), its CPU seconds, and the input sizes.
Nothing here is a test; the figures depend on the machine and its load.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
from ingest_common import HostileServer  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import find_exe, print_result, prng_model  # noqa: E402


def encoder_rate(exe, model, batch, images, precision):
    out = subprocess.run([exe, model, "--batch", str(batch), "--images", str(images),
                          "--precision", precision], check=True, stdout=subprocess.PIPE,
                         timeout=1800).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--precision", default="f32", choices=("f32", "bf16"))
    ap.add_argument("--in-flight", type=int, default=0)
    ap.add_argument("--model")
    args = ap.parse_args()
    imgsearch = find_exe(args.build, "imgsearch")
    genjpeg = find_exe(args.build, "bench_ingest_genjpeg")
    encode = find_exe(args.build, "bench_ingest_encode")

    tmp = tempfile.mkdtemp(prefix="ims_bench_ingest_")
    server = None
    try:
        photos = os.path.join(tmp, "photos")
        os.makedirs(photos)
        subprocess.run([genjpeg, photos, str(args.images), "1"], check=True, timeout=600)
        names = sorted(os.listdir(photos))
        total_bytes = sum(os.path.getsize(os.path.join(photos, n)) for n in names)
        model = args.model
        if not model:
            model = prng_model(imgsearch, tmp)
        server = HostileServer(photos, max_life=3600)
        urls = os.path.join(tmp, "urls.txt")
        with open(urls, "w") as f:
            f.write("\n".join(server.url("/files/" + n) for n in names) + "\n")

        enc1 = encoder_rate(encode, model, args.batch, args.images, args.precision)

        cmd = [imgsearch, "add", "--data", os.path.join(tmp, "data"), "--model", model,
               "--precision", args.precision, "--batch", str(args.batch),
               "--allow-private-urls", "--from", urls]
        if args.in_flight:
            cmd[2:2] = ["--in-flight", str(args.in_flight)]
        out_path, err_path = os.path.join(tmp, "add.out"), os.path.join(tmp, "add.err")
        with open(out_path, "w") as out, open(err_path, "w") as err:
            t0 = time.monotonic()
            p = subprocess.Popen(cmd, stdout=out, stderr=err)
            _, status, ru = os.wait4(p.pid, 0)
            wall = time.monotonic() - t0
            p.returncode = os.waitstatus_to_exitcode(status)
        with open(out_path) as f:
            added = sum(1 for line in f if line.startswith("added "))
        with open(err_path) as f:
            err_text = f.read()
        if p.returncode != 0 or added != args.images:
            sys.exit("bench_ingest: add exited %d with %d/%d added:\n%s" %
                     (p.returncode, added, args.images, err_text[-2000:]))
        m = re.search(r"in ([0-9.]+) s \(([0-9.]+) images/s\)", err_text)
        pipeline_s = float(m.group(1)) if m else None

        enc2 = encoder_rate(encode, model, args.batch, args.images, args.precision)
        enc = max(enc1["images_per_s"], enc2["images_per_s"])
        pipe_rate = args.images / pipeline_s if pipeline_s else None
        result = {
            "images": args.images,
            "megapixels_avg": None,
            "jpeg_bytes_avg": round(total_bytes / len(names)),
            "batch": args.batch,
            "precision": args.precision,
            "cpus": os.cpu_count(),
            "add_wall_s": round(wall, 2),
            "add_images_per_s_end_to_end": round(args.images / wall, 2),
            "add_pipeline_s": pipeline_s,
            "add_images_per_s_pipeline": round(pipe_rate, 2) if pipe_rate else None,
            "add_cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
            "add_peak_rss_mb": round(ru.ru_maxrss / 1024.0, 1),  # ru_maxrss: kB on Linux
            "encoder_images_per_s": [enc1["images_per_s"], enc2["images_per_s"]],
            "ratio_pipeline_over_encoder": round(pipe_rate / enc, 3) if pipe_rate else None,
            "ratio_end_to_end_over_encoder": round(args.images / wall / enc, 3),
            "model": enc1.get("model"),
        }
        sizes = {0: 1280 * 960, 1: 1600 * 1067, 2: 1200 * 1200, 3: 1920 * 1080,
                 4: 1024 * 1024, 5: 960 * 1280, 6: 1067 * 1600}
        result["megapixels_avg"] = round(sum(sizes[i % 7] for i in range(args.images)) /
                                         args.images / 1e6, 2)
        print_result(result)
    finally:
        if server:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
