#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Hostile HTTP clients against the real `imgsearch serve` (issue 8), on
127.0.0.1 with the tiny model and a temporary data folder:

  - 40 POST /api/v1/images?wait=1 on jobs stalled by hostile_server.py
    hold no admission slot: searches, stats and job reads answer 200; one
    more waiter is 503; clients that hang up stop waiting;
  - Host not naming the server -> 421; cross-site writes -> 403; the web
    page's own origin works;
  - the body memory budget -> 503 + Retry-After while bodies are held;
  - a head that never completes is cut at --header-timeout; a client
    address past --max-conns-per-client is refused at accept;
  - strict ids, repeated parameters, NUL in form values, 65 files.

    hostile_http_test.py IMGSEARCH_EXE SOURCE_DIR

Deadlines are set to a second or two so the test takes seconds. Every child
process is bounded and killed in `finally`; the temporary folder is removed.
"""
import json
import os
import re
import shutil
import socket
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_common import (check, finish, tiny_model, fixture_images,  # noqa: E402
                           HostileServer, multipart, wait_for)
from server_e2e import Serve  # noqa: E402

WAITERS = 40


def raw(port, data=b"", src="127.0.0.1", timeout=20):
    s = socket.socket()
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    s.settimeout(timeout)
    if data:
        s.sendall(data)
    return s


def closed_by_server(s):
    try:
        return s.recv(4096) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def metric(srv, series):
    st, _, body = srv.request("GET", "/metrics")
    m = re.search(rb"^" + re.escape(series.encode()) + rb" (\d+)$", body, re.M)
    return int(m.group(1)) if m else -1


def main():
    exe, src = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="ims-hostile-http-")
    srv = pics = None
    socks = []
    try:
        model = tiny_model(src, os.path.join(tmp, "model"))
        files_dir = os.path.join(tmp, "files")
        os.makedirs(files_dir)
        img = fixture_images(src)[0]
        shutil.copy(img, files_dir)
        pics = HostileServer(files_dir, max_life=300, extra=("--stall-s", "60"))
        srv = Serve(exe, os.path.join(tmp, "data"), model,
                    extra=["--allow-private-urls", "--stall-seconds", "5",
                           "--fetch-timeout", "30", "--retries", "0",
                           "--max-waiters", str(WAITERS), "--max-conns-per-client", "60",
                           "--header-timeout", "1", "--body-memory", "1",
                           "--public-host", "photos.example.org", "--rate", "0"],
                    log=os.path.join(tmp, "serve.log"))
        port = srv.port

        # ---- item 1: waiters outside the gate ----------------------------------
        body = json.dumps({"urls": [pics.url("/stall")]}).encode()
        req = (b"POST /api/v1/images?wait=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
               + body)
        for _ in range(WAITERS):
            socks.append(raw(port, req))
        check(wait_for(lambda: metric(srv, "imgsearch_http_job_waiters") == WAITERS, 30),
              "%d waiters counted" % WAITERS)
        # (a waiter is counted from before its job is queued; once all are
        # queued, none holds a slot)
        check(wait_for(lambda: metric(srv, "imgsearch_http_inflight") == 0, 20),
              "waiters hold no admission slot (%d)" % metric(srv, "imgsearch_http_inflight"))
        ok = 0
        for i in range(40):
            st, _, _ = srv.request("GET", "/api/v1/search?q=cat&k=3")
            ok += st == 200
        check(ok == 40, "40 searches answered 200 while %d wait (%d)" % (WAITERS, ok))
        st, _, _ = srv.request("GET", "/api/v1/stats")
        check(st == 200, "stats answers while waiters wait")
        st, _, js = srv.json("POST", "/api/v1/images", {"urls": [pics.url("/stall")]})
        check(st == 202, "a job without wait is queued (202)")
        if st == 202:
            st, _, _ = srv.request("GET", "/api/v1/jobs/" + js["job"])
            check(st == 200, "job read answers while waiters wait")
        st, hd, js = srv.json("POST", "/api/v1/images?wait=1", {"urls": [pics.url("/stall")]})
        check(st == 503 and "wait" in json.dumps(js), "one waiter too many: 503 (%d)" % st)
        check(metric(srv, 'imgsearch_http_refused_total{reason="waiters"}') == 1,
              "waiter refusal counted")
        for s in socks:
            s.close()
        socks = []
        check(wait_for(lambda: metric(srv, "imgsearch_http_job_waiters") == 0, 10),
              "waiters whose clients hung up stop waiting")
        # (jobs run one after another and each stalls --stall-seconds: a few
        # waiters may have had their answer before the hang-up)
        abandoned = metric(srv, "imgsearch_http_wait_abandoned_total")
        check(WAITERS - 3 <= abandoned <= WAITERS, "abandoned waits counted (%d)" % abandoned)

        # ---- item 2: Host and Origin ----------------------------------------------
        for host, want in (("evil.example", 421), ("evil.example:%d" % port, 421),
                           ("localhost:%d" % port, 200), ("[::1]:%d" % port, 200),
                           ("photos.example.org", 200)):
            st, _, _ = srv.request("GET", "/api/v1/stats", headers={"Host": host})
            check(st == want, "Host %s -> %d (got %d)" % (host, want, st))
        st, _, _ = srv.request("DELETE", "/api/v1/images/1",
                               headers={"Origin": "http://evil.example"})
        check(st == 403, "cross-site DELETE refused (%d)" % st)
        st, _, _ = srv.json("POST", "/api/v1/images", {"urls": [pics.url("/stall")]},
                            headers={"Origin": "null"})
        check(st == 403, "POST from an opaque origin refused (%d)" % st)
        st, _, page = srv.request("GET", "/")
        check(st == 200 and b"<html" in page.lower(), "web page served")
        st, _, _ = srv.json("POST", "/api/v1/search", {"text": "cat"},
                            headers={"Origin": "http://127.0.0.1:%d" % port,
                                     "Sec-Fetch-Site": "same-origin"})
        check(st == 200, "the page's own origin may POST (%d)" % st)

        # ---- item 3: body memory budget (1 MiB) -------------------------------------
        holder = raw(port, b"POST /api/v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Content-Type: application/json\r\nContent-Length: 900000\r\n\r\n"
                           + b" " * 800000)
        socks.append(holder)
        check(wait_for(lambda: metric(srv, "imgsearch_http_body_bytes") == 800000, 10),
              "held body bytes counted")
        mp, ct = multipart([("text", None, b"cat"), ("file", "a.png", b"\x89PNG" + b"0" * 300000)])
        st, hd, _ = srv.request("POST", "/api/v1/search", mp, {"Content-Type": ct})
        check(st == 503 and hd.get("retry-after") == "1",
              "a body beyond the budget: 503 + Retry-After (%d)" % st)
        holder.close()
        socks = []
        check(wait_for(lambda: metric(srv, "imgsearch_http_body_bytes") == 0, 10),
              "budget released when the client leaves")

        # ---- item 4: slowloris ---------------------------------------------------------
        slow = raw(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")
        check(closed_by_server(slow), "a head that never completes is cut")
        slow.close()
        check(metric(srv, 'imgsearch_http_refused_total{reason="header_timeout"}') >= 1,
              "header timeout counted")
        held = [raw(port, b"GET / HTTP/1.1\r\n", src="127.0.0.3") for _ in range(60)]
        over = raw(port, src="127.0.0.3")
        check(closed_by_server(over), "connection past the per-client cap refused")
        over.close()
        other = raw(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", src="127.0.0.2")
        check(other.recv(12) == b"HTTP/1.1 200", "another client is served meanwhile")
        other.close()
        for s in held:
            s.close()

        # ---- item 8: documented limits ---------------------------------------------------
        for bad in ("+1", "01", "%201"):
            st, _, js = srv.json("GET", "/api/v1/images/" + bad)
            check(st == 400, "image id %s -> 400 (%d)" % (bad, st))
        st, _, js = srv.json("GET", "/api/v1/search?q=a&k=2&k=3")
        check(st == 400 and "'k'" in js["error"]["message"], "repeated k -> 400 naming it")
        mp, ct = multipart([("text", None, b"cat"), ("k", None, b"5\0junk")])
        st, _, js = srv.json("POST", "/api/v1/search", raw=mp, headers={"Content-Type": ct})
        check(st == 400 and '"k"' in js["error"]["message"], "NUL in a form value -> 400")
        # (small parts: the 1 MiB body budget of this server must not be what refuses)
        mp, ct = multipart([("file", "f%d.jpg" % i, b"\xff\xd8\xff" + b"0" * 100)
                            for i in range(65)])
        st, _, js = srv.json("POST", "/api/v1/images", raw=mp, headers={"Content-Type": ct})
        check(st == 413 and "64" in js["error"]["message"], "65 files -> 413 (%d)" % st)
        st, _, js = srv.json("GET", "/api/v1/stats")
        check(js["images"] == 0, "nothing of the refused upload was stored")

        code = srv.term()
        check(code == 0, "serve exits 0 on SIGTERM (%r)" % code)
    finally:
        for s in socks:
            s.close()
        if srv:
            srv.kill()
        if pics:
            pics.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    finish("hostile_http_test")


if __name__ == "__main__":
    main()
