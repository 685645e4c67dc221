# SPDX-License-Identifier: MIT
"""Helpers shared by the CLI, ingest and cluster integration tests (and
bench_ingest_cluster.py): the tiny model folder, running imgsearch with a
bound, `imgsearch serve` processes on loopback, the loopback hostile server,
result checks, .npy vector files for `import`, one HTTP exchange with a
node, and the main and clean-up steps the tests share."""
import http.client
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid

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


def run(bin_, *args, stdin=None, env=None, timeout=300):
    """Runs `bin_ ARGS` (text in and out; `timeout` bounds a hang); returns
    (rc, stdout, stderr)."""
    p = subprocess.run([bin_] + list(args), capture_output=True, text=True, timeout=timeout,
                       input=stdin, env=env)
    return p.returncode, p.stdout, p.stderr


def embed_rgb(bin_, src, tmp, model):
    """The golden rgb.png copied into tmp and embedded by `imgsearch embed`
    (checked to succeed): (its path, its embedding)."""
    img = os.path.join(tmp, "rgb.png")
    shutil.copy(os.path.join(src, "tests/golden/clip/images/rgb.png"), img)
    rc, out, err = run(bin_, "embed", "--model", model, "--image", img)
    check(rc == 0, "embed works: %s" % err)
    return img, json.loads(out.splitlines()[0])["embedding"]


def write_npy(path, rows, dtype="<f4"):
    """Writes `rows` (lists of floats) as a version-1 .npy file of float32
    values; `dtype` is what the header claims (another one makes a hostile
    file)."""
    n, d = len(rows), len(rows[0])
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%d, %d), }" % (dtype, n, d)
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * pad + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        for r in rows:
            f.write(struct.pack("<%df" % d, *r))


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


def tmp_main(name, prefix, body):
    """The main of a test that starts processes: argv's binary and source
    tree, a fresh temporary folder, body(exe, src, tmp, procs) where `procs`
    collects what it starts (each killed afterwards, whatever happened), the
    folder removed, the verdict printed."""
    exe, src = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix=prefix)
    procs = []
    try:
        body(exe, src, tmp, procs)
    finally:
        for p in procs:
            try:
                p.kill()
            except Exception:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
    finish(name)


def png_folder(tmp, n, seed0=0):
    """n small valid PNGs p000.png, p001.png ... (48-52 x 40-46 pixels, seeds
    seed0, seed0 + 1 ...) in tmp/root, for the loopback picture server;
    returns the folder."""
    from hostile_server import png_bytes
    root = os.path.join(tmp, "root")
    os.makedirs(root)
    for i in range(n):
        with open(os.path.join(root, "p%03d.png" % i), "wb") as f:
            f.write(png_bytes(48 + i % 5, 40 + i % 7, seed0 + i))
    return root


def stop_all(nodes=(), pics=None, pg=None, tmp=None):
    """The clean-up of the cluster tests' `finally`: every node killed, the
    picture server and the PostgreSQL server stopped, the nodes' logs printed
    when IMS_IT_VERBOSE=1, the temporary folder removed."""
    for n in nodes:
        n.kill()
    if pics:
        pics.stop()
    if pg:
        pg.__exit__(None, None, None)
    if os.environ.get("IMS_IT_VERBOSE") == "1":
        for n in nodes:
            print("---- %s\n%s" % (n.name, n.stderr()[-3000:]))
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


def http_exchange(port, method, path, body=None, headers=None, timeout=60):
    """One request to 127.0.0.1:port (a dict or list body is sent as JSON):
    (status, headers with lower-case names, body bytes)."""
    h = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def json_or_bytes(data):
    """`data` parsed as JSON, or the bytes themselves when they are not JSON."""
    try:
        return json.loads(data)
    except ValueError:
        return data



def multipart(fields):
    """fields: [(name, filename or None, bytes)] -> (multipart/form-data body,
    its Content-Type); a part with a filename is sent as a file."""
    boundary = "ims" + uuid.uuid4().hex
    out = []
    for name, filename, data in fields:
        disp = 'form-data; name="%s"' % name
        if filename is not None:
            disp += '; filename="%s"' % filename
        out.append(b"--" + boundary.encode() + b"\r\n")
        out.append(("Content-Disposition: %s\r\n" % disp).encode())
        if filename is not None:
            out.append(b"Content-Type: application/octet-stream\r\n")
        out.append(b"\r\n" + data + b"\r\n")
    out.append(b"--" + boundary.encode() + b"--\r\n")
    return b"".join(out), "multipart/form-data; boundary=" + boundary
