#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""interrupt_test.py IMGSEARCH SOURCE_DIR: `imgsearch add` on ^C and SIGTERM.

A loopback HTTP server (in this process, 127.0.0.1 only) answers one URL
with headers and a few bytes, then stalls. While `imgsearch add` is waiting
for that download, the test sends SIGINT (then, on a fresh data folder,
SIGTERM). The download ends at --fetch-timeout; add must then exit 130,
say in its summary that it was interrupted, and leave a catalogue that
`imgsearch stats` opens.
"""
import http.server
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from ingest_common import check, finish, serve_env, tiny_model, wait_for, kill_quietly  # noqa: E402


class Stall(http.server.BaseHTTPRequestHandler):
    hit = threading.Event()
    release = threading.Event()

    def do_GET(self):
        Stall.hit.set()
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"\x89PNG\r\n\x1a\n")
        self.wfile.flush()
        Stall.release.wait(60)  # the client gives up first (--fetch-timeout)

    def log_message(self, fmt, *args):
        pass


def one(exe, model, tmp, port, sig):
    name = signal.Signals(sig).name
    data = os.path.join(tmp, "data-" + name)
    Stall.hit.clear()
    url = "http://127.0.0.1:%d/stall.png" % port
    p = subprocess.Popen([exe, "add", "--data", data, "--model", model, "--allow-private-urls",
                          "--fetch-timeout", "3", "--retries", "0", url],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=serve_env())
    try:
        if not check(wait_for(Stall.hit.is_set, 60), "%s: add asked for the stalling URL" % name):
            return
        p.send_signal(sig)
        out, err = p.communicate(timeout=60)
    finally:
        kill_quietly(p)
    err = err.decode("utf-8", "replace")
    check(p.returncode == 130, "%s: add exits 130 (rc %s: %s)" % (name, p.returncode, err.strip()))
    check("interrupted: run it again" in err, "%s: the summary says interrupted: %r" % (name, err))
    s = subprocess.run([exe, "stats", "--data", data], capture_output=True, text=True,
                       timeout=60, env=serve_env())
    check(s.returncode == 0, "%s: the catalogue opens after the interruption (rc %d: %s)"
          % (name, s.returncode, s.stderr.strip()))


def main():
    exe, src = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="ims_interrupt_")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stall)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        model = tiny_model(src, os.path.join(tmp, "model"))
        for sig in (signal.SIGINT, signal.SIGTERM):
            one(exe, model, tmp, srv.server_address[1], sig)
    finally:
        Stall.release.set()
        srv.shutdown()
        srv.server_close()
        shutil.rmtree(tmp, ignore_errors=True)
    finish("interrupt_test")


if __name__ == "__main__":
    main()
