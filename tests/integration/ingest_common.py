# SPDX-License-Identifier: MIT
"""Helpers shared by the CLI, ingest and cluster integration tests (and
bench_ingest_cluster.py): the tiny model folder, running imgsearch with a
bound, `imgsearch serve` processes on loopback, the loopback hostile server,
result checks."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")

failures = []


def check(cond, what):
    """Records a failed assertion (the test goes on, to report them all)."""
    if not cond:
        failures.append(what)
        print("FAIL: " + what, flush=True)
    return cond


def finish(name):
    if failures:
        print("%s: %d check(s) failed" % (name, len(failures)), flush=True)
        sys.exit(1)
    print("%s: all checks passed" % name, flush=True)


def tiny_model(src, dest):
    """Copies the tiny CLIP model (tests/golden/clip/tiny + the bundled
    vocabulary) into `dest`; returns it."""
    os.makedirs(dest)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(src, "tests/golden/clip/tiny", f), dest)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(src, "data/vocab", f), dest)
    return dest


def fixture_images(src):
    d = os.path.join(src, "tests/golden/clip/images")
    return sorted(os.path.join(d, f) for f in os.listdir(d)
                  if f.lower().endswith(IMAGE_EXTS))


class Cli:
    def __init__(self, exe, model, data):
        self.exe, self.model, self.data = exe, model, data

    def run(self, *args, model=None, timeout=120, stdin=None):
        """Runs `imgsearch ARGS --data D --model M`; returns (rc, out, err)."""
        cmd = [self.exe, args[0], "--data", self.data]
        if model is not False:
            cmd += ["--model", model or self.model]
        cmd += list(args[1:])
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout, input=stdin)
        return p.returncode, p.stdout.decode("utf-8", "replace"), \
            p.stderr.decode("utf-8", "replace")

    def stats(self):
        rc, out, err = self.run("stats", model=False)
        if not check(rc == 0, "stats exits 0 (rc %d: %s)" % (rc, err.strip())):
            return {}
        return json.loads(out)

    def search_image(self, path, k=5):
        rc, out, err = self.run("search", "--json", "-k", str(k), "--image", path)
        if not check(rc == 0, "search --image %s exits 0 (rc %d: %s)" % (path, rc, err.strip())):
            return []
        return json.loads(out)["results"]


def parse_add_output(out):
    """The per-item lines of `imgsearch add` (stdout not a terminal):
    {"added": {source: id}, "duplicate": {source: id}, "failed": {source: reason},
     "code": {source: status name of a failure}, "other": [lines]}. A failed
    line is "failed SOURCE: REASON (CODE)"."""
    r = {"added": {}, "duplicate": {}, "failed": {}, "completed": {}, "code": {}, "other": []}
    for line in out.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("added", "duplicate", "completed"):
            ident, _, source = rest.partition(" ")
            if ident.isdigit() and source:
                if source in r[word]:
                    r["other"].append("repeated: " + line)
                r[word][source] = int(ident)
                continue
        elif word == "failed":
            source, sep, reason = rest.partition(": ")
            m = re.match(r"^(.*) \(([a-z_]+)\)$", reason)
            if sep and m:
                r["failed"][source] = m.group(1)
                r["code"][source] = m.group(2)
                continue
        if line.strip():
            r["other"].append(line)
    return r


class HostileServer:
    """hostile_server.py in a child process, bounded in life."""

    def __init__(self, root, log=None, delay_ms=0, max_life=300, extra=()):
        cmd = [sys.executable, os.path.join(HERE, "hostile_server.py"), "--root", root,
               "--delay-ms", str(delay_ms), "--max-life", str(max_life)] + list(extra)
        if log:
            cmd += ["--log", log]
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.p.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError("hostile_server did not start: %r" % line)
        self.port = int(line.split()[1])
        self.base = "http://127.0.0.1:%d" % self.port

    def url(self, path):
        return self.base + path

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def kill_quietly(p):
    if p and p.poll() is None:
        p.kill()
        p.wait()


def wait_for(pred, timeout, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def serve_env(base=None):
    """The environment of a test node: `base` (default: ours) without the
    API key and catalogue variables a developer's shell may carry."""
    env = dict(os.environ if base is None else base)
    env.pop("IMGSEARCH_API_KEY", None)
    env.pop("IMGSEARCH_CATALOGUE", None)
    return env


class ServeProcess:
    """One `imgsearch serve --port 0` on 127.0.0.1, its stderr in `log`. The
    port comes from the first line matching `port_re`: LISTENING as soon as
    the socket is bound, SERVING once the node's index is ready."""
    LISTENING = rb"listening on http://127\.0\.0\.1:(\d+)/"
    SERVING = rb"serving http://127\.0\.0\.1:(\d+)/"

    def __init__(self, cmd, log, name, env=None, port_re=LISTENING, timeout=90):
        self.name = name
        self.errf = open(log, "w+b")
        self.p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.errf,
                                  env=serve_env() if env is None else env)
        self.port = None

        def started():
            if self.p.poll() is not None:
                return True
            self.errf.seek(0)
            m = re.search(port_re, self.errf.read())
            if m:
                self.port = int(m.group(1))
            return self.port is not None
        wait_for(started, timeout, 0.02)
        if self.port is None:
            self.kill()
            raise RuntimeError("%s did not start: %s" % (name, self.stderr()))

    def stderr(self):
        self.errf.seek(0)
        return self.errf.read().decode("utf-8", "replace")

    def kill(self):
        kill_quietly(self.p)

    def stop(self, timeout=60):
        """SIGTERM, as a service manager stops it (SIGKILL after `timeout`
        seconds); the exit code."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.p.returncode
