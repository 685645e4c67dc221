# SPDX-License-Identifier: MIT
"""bench_common: what the Python benchmark drivers share, kept in one place:
finding a built program under --build, `imgsearch serve` on an ephemeral
loopback port (waiting for its "serving" line, stopped with SIGTERM), the
PRNG ViT-B/32 model when no --model is given, a JPEG copy with other bytes,
and printing a result together with the machine it ran on (bench_cpu).
Benches import this and bench_cpu only from bench/, and the test helpers
of tests/integration where they drive the same loopback servers."""
import json
import os
import re
import signal
import subprocess
import struct
import sys
import time

import bench_cpu

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
SERVING_RE = re.compile(r"serving http://127\.0\.0\.1:(\d+)/")


def _who():
    return os.path.splitext(os.path.basename(sys.argv[0]))[0]


def find_exe(build, name):
    """The executable `name` under the build tree; exits saying so if absent."""
    for root, _, files in os.walk(build):
        if name in files and os.access(os.path.join(root, name), os.X_OK):
            return os.path.join(root, name)
    sys.exit("%s: %s not found under %s (build it first)" % (_who(), name, build))


def wait_serving(log_path, proc, timeout, step=0.05):
    """The port of the `serving http://127.0.0.1:PORT/` line `proc` writes to
    the file at log_path; None if it exits or `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with open(log_path, errors="replace") as f:
            m = SERVING_RE.search(f.read())
        if m:
            return int(m.group(1))
        time.sleep(step)
    return None


def stop_process(p, timeout=120):
    """SIGTERM (as a service manager stops it), SIGKILL after `timeout` s."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Serve:
    """`imgsearch serve --data D --model M` on an ephemeral loopback port
    (output into `log`), `extra` arguments after the common ones; exits the
    bench with the log's tail if it is not serving within `timeout` seconds
    (building a 100k Flat/IVF index from scratch takes minutes)."""

    def __init__(self, exe, data, model, log, extra=(), timeout=900):
        cmd = [exe, "serve", "--data", data, "--model", model, "--host", "127.0.0.1",
               "--port", "0", "--rate", "0", "--allow-private-urls"] + list(extra)
        env = dict(os.environ)
        env.pop("IMGSEARCH_API_KEY", None)
        self.log_path = log
        self.log = open(log, "w+")
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.port = wait_serving(log, self.p, timeout, 0.2)
        if not self.port:
            self.stop()
            with open(log, errors="replace") as f:
                sys.exit("%s: serve did not start:\n%s" % (_who(), f.read()[-2000:]))
        self.base = "http://127.0.0.1:%d" % self.port

    def stop(self):
        stop_process(self.p)
        self.log.close()


def prng_model(exe, tmp):
    """The full-size PRNG ViT-B/32 model (tests/golden/clip/prng-vitb32)
    made in tmp/model: the compute of the real model, without its weights."""
    model = os.path.join(tmp, "model")
    subprocess.run([exe, "make-model", "--config",
                    os.path.join(SRC, "tests/golden/clip/prng-vitb32/config.json"),
                    "--prng-seed", "1", "--out", model], check=True, stdout=subprocess.DEVNULL,
                   timeout=1800)
    return model


def with_comment(jpeg, text):
    """The JPEG with a COM segment right after SOI: same pixels, other bytes
    (so the catalogue does not take copies for duplicates)."""
    c = text.encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(c) + 2) + c + jpeg[2:]


def print_result(result, **first):
    """Prints the result as indented JSON: `first` keys, then the CPU it ran
    on (bench_cpu.cpu_info), then the result's own keys."""
    print(json.dumps({**first, "cpu": bench_cpu.cpu_info(), **result}, indent=1))
