#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""`imgsearch model fetch` end to end, on 127.0.0.1 only.

usage: model_fetch_test.py IMGSEARCH HTTP_TEST_SERVE

A fake model folder (small config/vocab/merges and a ~1.2 MB safetensors file
with a valid header) is served by the C loopback test server. Checked:
  - without --allow-private-urls the loopback base URL is refused with a clear
    message, and the server saw zero connections;
  - a download whose connection is cut mid-file (first request of each file)
    still completes in one run by resuming with a Range request, byte-exact;
  - a .part left by an earlier run is continued, not restarted;
  - a second run keeps files already in place;
  - a file that is not safetensors is refused and never lands in place;
  - the default output folder (IMGSEARCH_MODEL's parent, NAME with / as -)
    and IMGSEARCH_HF_BASE_URL.
Every server stops by itself after 60 s even if this script dies.
"""
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time

IMGSEARCH, SERVE = sys.argv[1], sys.argv[2]
NAME = "test/tiny-clip"
FILES = ["config.json", "vocab.json", "merges.txt", "model.safetensors"]


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def safetensors_bytes(n_floats, seed):
    rng = random.Random(seed)
    data = bytes(rng.getrandbits(8) for _ in range(n_floats * 4))
    header = json.dumps({
        "__metadata__": {"format": "pt"},
        "w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, n_floats * 4]},
    }).encode()
    header += b" " * ((8 - len(header) % 8) % 8)
    return struct.pack("<Q", len(header)) + header + data


def make_model(root, name, weights):
    d = os.path.join(root, name, "resolve", "main")
    os.makedirs(d)
    content = {
        "config.json": json.dumps({"projection_dim": 512, "text_config": {}, "vision_config": {}}).encode(),
        "vocab.json": json.dumps({"a": 0, "b": 1, "ab</w>": 2}).encode(),
        "merges.txt": b"#version: 0.2\na b\n",
        "model.safetensors": weights,
    }
    for f, b in content.items():
        with open(os.path.join(d, f), "wb") as fp:
            fp.write(b)
    return content


class Server:
    def __init__(self, tmp, root, close_after=0, close_times=0):
        self.state = os.path.join(tmp, "state-%d" % random.getrandbits(32))
        args = [SERVE, "--dir", root, "--state", self.state, "--max-seconds", "60"]
        if close_after:
            args += ["--close-after", str(close_after), "--close-times", str(close_times)]
        self.proc = subprocess.Popen(args)
        for _ in range(200):
            if os.path.exists(self.state):
                break
            time.sleep(0.02)
        check(os.path.exists(self.state), "test server did not start")
        self.port = self.stats()["port"]

    def stats(self):
        # the server rewrites its state file every 50 ms: let it catch up
        # with what the client just did before reading it
        time.sleep(0.2)
        with open(self.state) as fp:
            return {k: int(v) for k, v in (kv.split("=") for kv in fp.read().split())}

    def base(self):
        return "http://127.0.0.1:%d" % self.port

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        return self.stats()


def run(args, env=None):
    e = dict(os.environ)
    e.pop("http_proxy", None)
    e.pop("HTTP_PROXY", None)
    if env:
        e.update(env)
    p = subprocess.run([IMGSEARCH, "model", "fetch"] + args, capture_output=True, text=True,
                       env=e, timeout=60)
    return p.returncode, p.stdout, p.stderr


def read(path):
    with open(path, "rb") as fp:
        return fp.read()


def main():
    tmp = tempfile.mkdtemp(prefix="ims_it_model_")
    servers = []
    try:
        root = os.path.join(tmp, "srv")
        weights = safetensors_bytes(300000, 7)
        content = make_model(root, NAME, weights)
        env_home = {"IMGSEARCH_MODEL": os.path.join(tmp, "models", "clip-vit-base-patch32"),
                    "IMGSEARCH_HF_BASE_URL": ""}

        # 1. default policy: refused before any connection
        s = Server(tmp, root)
        servers.append(s)
        out1 = os.path.join(tmp, "out1")
        rc, so, se = run([NAME, "--base-url", s.base(), "--out", out1], env_home)
        check(rc == 1, "refusal: exit %d, stderr %r" % (rc, se))
        check("refused: 127.0.0.1 is a loopback address" in se, "refusal message: %r" % se)
        check("--allow-private-urls" in se, "refusal hint: %r" % se)
        check(not os.path.exists(os.path.join(out1, "config.json")), "refusal wrote a file")
        st = s.stop()
        servers.remove(s)
        check(st["connections"] == 0 and st["requests"] == 0, "refusal: server saw %r" % st)

        # 2. cut mid-file on the first request of each file: one run resumes
        s = Server(tmp, root, close_after=400000, close_times=1)
        servers.append(s)
        out2 = os.path.join(tmp, "out2")
        rc, so, se = run([NAME, "--base-url", s.base() + "/", "--out", out2,
                          "--allow-private-urls"], env_home)
        check(rc == 0, "cut+resume: exit %d, stderr %r" % (rc, se))
        check(so.strip() == out2, "cut+resume: stdout %r" % so)
        for f in FILES:
            check(read(os.path.join(out2, f)) == content[f], "cut+resume: %s differs" % f)
            check(not os.path.exists(os.path.join(out2, f + ".part")), "part left: " + f)
        check("resumed at byte 400000" in se, "cut+resume: no resume reported: %r" % se)
        st = s.stats()
        check(st["range_requests"] >= 1 and st["last_range_start"] == 400000,
              "cut+resume: range %r" % st)

        # 3. again: everything kept, nothing downloaded
        before = s.stats()["requests"]
        rc, so, se = run([NAME, "--base-url", s.base(), "--out", out2, "--allow-private-urls"],
                         env_home)
        check(rc == 0 and se.count("already present") == 4, "rerun: %d %r" % (rc, se))
        check(s.stats()["requests"] == before, "rerun made requests")
        s.stop()
        servers.remove(s)

        # 4. a .part from an earlier run, default folder, base URL from the environment
        s = Server(tmp, root)
        servers.append(s)
        out3 = os.path.join(tmp, "models", "test-tiny-clip")
        os.makedirs(out3)
        with open(os.path.join(out3, "model.safetensors.part"), "wb") as fp:
            fp.write(weights[:123456])
        env = dict(env_home, IMGSEARCH_HF_BASE_URL=s.base())
        rc, so, se = run([NAME, "--allow-private-urls"], env)
        check(rc == 0, "part resume: exit %d, stderr %r" % (rc, se))
        check(so.strip() == out3, "default folder: stdout %r" % so)
        check(read(os.path.join(out3, "model.safetensors")) == weights, "part resume: differs")
        check("resumed at byte 123456" in se, "part resume: %r" % se)
        check(s.stats()["last_range_start"] == 123456, "part resume: %r" % s.stats())
        s.stop()
        servers.remove(s)

        # 5. not a safetensors file: refused, nothing in place
        bad_root = os.path.join(tmp, "bad")
        make_model(bad_root, NAME, struct.pack("<Q", 1 << 40) + b"{}" * 100)
        s = Server(tmp, bad_root)
        servers.append(s)
        out4 = os.path.join(tmp, "out4")
        rc, so, se = run([NAME, "--base-url", s.base(), "--out", out4, "--allow-private-urls"],
                         env_home)
        check(rc == 1, "bad weights: exit %d" % rc)
        check("model.safetensors: not a safetensors file" in se, "bad weights: %r" % se)
        check(not os.path.exists(os.path.join(out4, "model.safetensors")), "bad file in place")
        check(not os.path.exists(os.path.join(out4, "model.safetensors.part")), "bad part kept")
        check(os.path.exists(os.path.join(out4, "config.json")), "good files before it missing")

        # 6. a missing model: the 404 is named
        rc, so, se = run(["test/absent", "--base-url", s.base(), "--out", out4 + "x",
                          "--allow-private-urls"], env_home)
        check(rc == 1 and "config.json: HTTP 404" in se, "404: %d %r" % (rc, se))

        # 7. usage errors
        rc, so, se = run(["../etc", "--out", out4], env_home)
        check(rc == 2 and "bad model name" in se, "bad name: %d %r" % (rc, se))
        rc, so, se = run([NAME, "--base-url", "ftp://127.0.0.1/", "--out", out4], env_home)
        check(rc == 2 and "not allowed" in se, "ftp base: %d %r" % (rc, se))
        s.stop()
        servers.remove(s)
        print("ok")
    finally:
        for s in servers:
            s.proc.kill()
            s.proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


main()
