#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""it_embed: `imgsearch embed` on the tiny golden model.

Builds a complete model folder in a temp dir (tests/golden/clip/tiny plus the
bundled vocabulary from data/vocab), runs the binary once for two golden texts
and two golden images, and compares each JSON line with the goldens
(L2-normalised: cosine >= 0.99999 and max abs diff < 1e-4; --raw: the raw
projection itself). Also checks input order, the JSON escaping of inputs,
bf16 within cosine 0.999, and that bad inputs give a precise error and a
non-zero exit status.

usage: embed_check.py IMGSEARCH SOURCE_DIR
"""
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def read_f32(path, rows, cols):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) != rows * cols * 4:
        fail("%s: %d bytes, want %d" % (path, len(data), rows * cols * 4))
    flat = struct.unpack("<%df" % (rows * cols), data)
    return [list(flat[r * cols:(r + 1) * cols]) for r in range(rows)]


def normalized(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def compare(name, got, want, min_cos, max_abs):
    if len(got) != len(want):
        fail("%s: %d values, want %d" % (name, len(got), len(want)))
    cos = sum(a * b for a, b in zip(normalized(got), normalized(want)))
    worst = max(abs(a - b) for a, b in zip(normalized(got), normalized(want)))
    if cos < min_cos or worst >= max_abs:
        fail("%s: cosine %.8f (min %g), max abs diff %g (max %g)" % (name, cos, min_cos, worst, max_abs))


def run(cmd, expect_ok=True):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    if expect_ok and p.returncode != 0:
        fail("%s exited %d: %s" % (" ".join(cmd), p.returncode, p.stderr))
    return p


def main():
    exe, src = sys.argv[1], sys.argv[2]
    gold = os.path.join(src, "tests", "golden", "clip")
    texts = json.load(open(os.path.join(gold, "texts.json")))
    manifest = json.load(open(os.path.join(gold, "images", "manifest.json")))
    img_gold = read_f32(os.path.join(gold, "tiny", "image_embeds.f32"), len(manifest), 32)
    txt_gold = read_f32(os.path.join(gold, "tiny", "text_embeds.f32"), len(texts), 32)

    tmp = tempfile.mkdtemp(prefix="ims-it-embed-", dir="/tmp")
    try:
        model = os.path.join(tmp, "model")
        os.mkdir(model)
        for f in ("config.json", "model.safetensors"):
            shutil.copy(os.path.join(gold, "tiny", f), model)
        for f in ("vocab.json", "merges.txt"):
            shutil.copy(os.path.join(src, "data", "vocab", f), model)

        # Texts and images interleaved, so the output order is checked too.
        t_idx = [0, 11]
        i_idx = [0, 7]
        args = [exe, "embed", "--model", model,
                "--text", texts[t_idx[0]],
                "--image", os.path.join(gold, "images", manifest[i_idx[0]]["file"]),
                "--text", texts[t_idx[1]],
                "--image", os.path.join(gold, "images", manifest[i_idx[1]]["file"])]
        expect = [("text", t_idx[0]), ("image", i_idx[0]), ("text", t_idx[1]), ("image", i_idx[1])]
        for raw in (False, True):
            p = run(args + (["--raw"] if raw else []))
            lines = p.stdout.splitlines()
            if len(lines) != len(expect):
                fail("%d lines, want %d: %r" % (len(lines), len(expect), p.stdout[:500]))
            for line, (kind, k) in zip(lines, expect):
                obj = json.loads(line)
                want_input = texts[k] if kind == "text" else os.path.join(gold, "images", manifest[k]["file"])
                if obj.get("input") != want_input:
                    fail("input %r, want %r" % (obj.get("input"), want_input))
                emb = obj["embedding"]
                want = txt_gold[k] if kind == "text" else img_gold[k]
                compare("%s %d raw=%s" % (kind, k, raw), emb, want, 0.99999, 1e-4)
                norm = math.sqrt(sum(x * x for x in emb))
                if not raw and abs(norm - 1.0) > 1e-5:
                    fail("%s %d: norm %g, want 1" % (kind, k, norm))
                if raw:  # the raw projection itself, not just its direction
                    wn = math.sqrt(sum(x * x for x in want))
                    if abs(norm - wn) > 1e-4 * wn:
                        fail("%s %d raw: norm %g, golden %g" % (kind, k, norm, wn))

        # bf16 (or its fallback) stays close to the f32 goldens.
        p = run([exe, "embed", "--model", model, "--precision", "bf16", "--text", texts[0]])
        compare("bf16 text 0", json.loads(p.stdout)["embedding"], txt_gold[0], 0.999, 5e-2)

        # JSON escaping of the input echo.
        tricky = 'say "hi"\\ now\ttab'
        p = run([exe, "embed", "--model", model, "--text", tricky])
        if json.loads(p.stdout)["input"] != tricky:
            fail("escaped input did not round-trip: %r" % p.stdout[:200])

        # Errors: precise message, non-zero status, nothing half-printed.
        bad = os.path.join(tmp, "not-an-image.jpg")
        with open(bad, "wb") as f:
            f.write(b"<html>nope</html>")
        cases = [
            ([exe, "embed", "--model", model, "--image", bad], 1, "not-an-image.jpg"),
            ([exe, "embed", "--model", model, "--image", os.path.join(tmp, "missing.png")], 1, "missing.png"),
            ([exe, "embed", "--model", os.path.join(tmp, "nomodel"), "--text", "x"], 1, "nomodel"),
            ([exe, "embed", "--model", model], 2, "--image or --text"),
            ([exe, "embed", "--model", model, "--precision", "f64", "--text", "x"], 2, "f64"),
            ([exe, "embed", "--model", model, "--text"], 2, "--text"),
        ]
        for cmd, status, needle in cases:
            p = run(cmd, expect_ok=False)
            if p.returncode != status:
                fail("%s: exit %d, want %d (stderr %r)" % (cmd[2:], p.returncode, status, p.stderr))
            if needle not in p.stderr:
                fail("%s: stderr %r lacks %r" % (cmd[2:], p.stderr, needle))
            if status == 1 and p.stdout.strip():
                fail("%s: printed %r on failure" % (cmd[2:], p.stdout[:200]))
        print("ok")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
