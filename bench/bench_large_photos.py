#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench_large_photos: `imgsearch add FOLDER` of large phone photos against a
folder of 224x224 images in the same run (issue 11 item 1).

    cmake --build B --target imgsearch bench_ingest_genjpeg
    python3 bench/bench_large_photos.py --build B [--model DIR] [--images 24]
        [--precision f32,bf16] [--decode bounded,exact] [--sizes 4032x3024,5656x4242]
        [--before EXE]

A size WxHp is a folder of progressive JPEGs (libjpeg's own scan script).
With --before EXE (another imgsearch binary, e.g. built from main) every
measurement is made with both binaries, one right after the other on each
folder, in the same run: "before" and "after" in the JSON, each with its own
224x224 yardstick, and "ratios" first (large folder rate / 224 rate).

For every precision it adds, one after another into fresh data folders, the
224x224 folder (the yardstick: nothing to decode or resample), then each
large folder with each --decode policy, then the 224x224 folder again; the
yardstick rate is the better of the two. Rates are add's own pipeline rate
(its summary line: model load excluded). Peak RSS of each add process is
reported; (peak of a large folder - peak of the 224 folder) / decode threads
is the decode memory per worker.

CPU time too (user + system of each add, os.wait4): an add of a one-image
folder measures the fixed part (model load and prepacking, one encode), and
(CPU of a folder - that) / (images - 1) is the CPU per image of the pipeline;
ratio_cpu_over_224 = CPU per 224x224 image / CPU per large image. With every
core busy that is the wall ratio an idle machine would show, and unlike the
wall ratio it holds when other jobs share the cores (the run's load average
is in the JSON). Prints JSON; nothing here is a test.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_cpu  # noqa: E402
from bench_common import find_exe, prng_model  # noqa: E402


def add(imgsearch, model, folder, data, precision, decode, n):
    cmd = [imgsearch, "add", "--data", data, "--model", model, "--precision", precision,
           "--decode", decode, folder]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read().decode(errors="replace")
    _, status, ru = os.wait4(p.pid, 0)
    m = re.search(r"(\d+) added.*in ([0-9.]+) s", err)
    if os.waitstatus_to_exitcode(status) != 0 or not m or int(m.group(1)) != n:
        sys.exit("bench_large_photos: add failed:\n" + err[-2000:])
    shutil.rmtree(data, ignore_errors=True)
    secs = float(m.group(2))
    return {"images_per_s": round(n / secs, 2), "seconds": secs,
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
            "peak_rss_mb": round(ru.ru_maxrss / 1024.0, 1), "minor_faults": ru.ru_minflt}


def run_precision(exes, model, folders, one, data, prec, args, threads):
    """Every add of one precision, each binary right after the other on the
    same folder, so that both see the same load."""
    rs = {label: {} for label, _ in exes}
    fixed, small = {}, {label: [] for label, _ in exes}

    def both(fn):
        for label, exe in exes:
            fn(label, exe)
    both(lambda label, exe: fixed.__setitem__(label, add(exe, model, one, data, prec, "bounded",
                                                         1)))
    both(lambda label, exe: small[label].append(
        add(exe, model, folders["224x224"]["dir"], data, prec, "bounded", args.images)))
    for size in args.sizes.split(","):
        for dec in args.decode.split(","):
            both(lambda label, exe: rs[label].__setitem__(
                "%s_%s" % (size, dec),
                add(exe, model, folders[size]["dir"], data, prec, dec, args.images)))
    both(lambda label, exe: small[label].append(
        add(exe, model, folders["224x224"]["dir"], data, prec, "bounded", args.images)))
    for label, _ in exes:
        r = rs[label]
        r["one_image_fixed_cpu_s"] = fixed[label]["cpu_s"]
        yard = max(s["images_per_s"] for s in small[label])
        r["yardstick_224x224"] = small[label]
        r["yardstick_images_per_s"] = yard

        def cpu_per_image(v):
            return max(1e-6, (v["cpu_s"] - fixed[label]["cpu_s"]) / (args.images - 1))
        yard_cpu = min(cpu_per_image(s) for s in small[label])
        r["yardstick_224x224_cpu_ms_per_image"] = round(yard_cpu * 1e3, 1)
        for k, v in list(r.items()):
            if not isinstance(v, dict):
                continue
            v["ratio_over_224"] = round(v["images_per_s"] / yard, 3)
            v["cpu_ms_per_image"] = round(cpu_per_image(v) * 1e3, 1)
            v["ratio_cpu_over_224"] = round(yard_cpu / cpu_per_image(v), 3)
            v["decode_mb_per_worker"] = round(
                max(0.0, v["peak_rss_mb"] - min(s["peak_rss_mb"] for s in small[label])) /
                threads, 1)
    return rs

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--model")
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--precision", default="f32,bf16")
    ap.add_argument("--decode", default="bounded,exact")
    ap.add_argument("--sizes", default="4032x3024,5656x4242")
    ap.add_argument("--before", help="another imgsearch binary, measured in the same run")
    args = ap.parse_args()
    imgsearch = find_exe(args.build, "imgsearch")
    genjpeg = find_exe(args.build, "bench_ingest_genjpeg")
    tmp = tempfile.mkdtemp(prefix="ims_bench_large_")
    try:
        model = args.model
        if not model:
            model = prng_model(imgsearch, tmp)
        folders = {}
        for i, size in enumerate(["224x224"] + args.sizes.split(",")):
            d = os.path.join(tmp, "photos_" + size)
            os.makedirs(d)
            subprocess.run([genjpeg, d, str(args.images), str(7 + i), size], check=True)
            mb = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)) / 1e6
            folders[size] = {"dir": d, "jpeg_mb_avg": round(mb / args.images, 2)}
        one = os.path.join(tmp, "one_224")
        os.makedirs(one)
        first = sorted(os.listdir(folders["224x224"]["dir"]))[0]
        shutil.copy(os.path.join(folders["224x224"]["dir"], first), one)
        result = {"images": args.images, "decode_threads": os.cpu_count(),
                  "folders": {k: v["jpeg_mb_avg"] for k, v in folders.items()}}
        data = os.path.join(tmp, "data")
        exes = [("after", imgsearch)]
        if args.before:
            exes.insert(0, ("before", args.before))
        load_start = list(os.getloadavg())
        for label, exe in exes:
            result[label] = {}
        for prec in args.precision.split(","):
            rs = run_precision(exes, model, folders, one, data, prec, args,
                               result["decode_threads"])
            for label, _ in exes:
                result[label][prec] = rs[label]
        ratios = {}
        for label, _ in exes:
            for prec, r in result[label].items():
                for k, v in r.items():
                    if isinstance(v, dict) and "ratio_over_224" in v:
                        ratios["%s %s %s" % (label, prec, k)] = {
                            "wall": v["ratio_over_224"], "cpu": v["ratio_cpu_over_224"]}
        result = {"ratios": ratios, "load_avg_start": load_start, **result}
        result = {"ratios": result.pop("ratios"), "cpu": bench_cpu.cpu_info(), **result}
        print(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
