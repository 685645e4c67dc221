#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The HTTP API end to end: the real `imgsearch serve` on 127.0.0.1 with a
temporary data folder and the tiny CLIP model, checked endpoint by endpoint
against the contract of DESIGN.md / docs/internals/server.md.

    server_e2e.py IMGSEARCH_EXE SOURCE_DIR

Expected scores are computed here from `imgsearch embed` of the same files
and texts (fused as search.h defines: normalise(sum w * normalise(e))), so
the ranking checks do not depend on hard-coded ids or numbers. Images for
URL jobs come from hostile_server.py on 127.0.0.1, whose request log proves
that a refused URL was never fetched. Every child process is bounded and
killed in `finally`; the temporary folder is removed.
"""
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_common import (check, tiny_model, fixture_images,  # noqa: E402
                           HostileServer, http_exchange, kill_quietly, multipart, tmp_main,
                           wait_for)

ROW_KEYS = {"id", "url", "width", "height", "added", "thumb", "format", "taken", "tags"}
JOB_KEYS = {"id", "state", "total", "done", "failed", "errors"}
API_KEY = "e2e-" + uuid.uuid4().hex


# ---- the server under test ------------------------------------------------------

class Serve:
    """`imgsearch serve --port 0` in a child process; the port is read from
    its "serving http://127.0.0.1:PORT/" line on stderr."""

    def __init__(self, exe, data, model, extra=(), env=None, log=None):
        self.log = log
        cmd = [exe, "serve", "--data", data, "--model", model, "--port", "0",
               "--host", "127.0.0.1"] + list(extra)
        e = dict(os.environ)
        e.pop("IMGSEARCH_API_KEY", None)
        e.update(env or {})
        self.errf = open(log, "w+b")
        self.p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.errf, env=e)
        self.port = None

        def ready():
            if self.p.poll() is not None:
                return True
            self.errf.seek(0)
            m = re.search(rb"serving http://127\.0\.0\.1:(\d+)/", self.errf.read())
            if m:
                self.port = int(m.group(1))
            return self.port is not None
        wait_for(ready, 90, 0.05)
        if self.port is None:
            self.kill()
            raise RuntimeError("serve did not start: " + self.stderr())

    def stderr(self):
        self.errf.seek(0)
        return self.errf.read().decode("utf-8", "replace")

    def request(self, method, path, body=None, headers=None, timeout=60):
        """Returns (status, headers dict (lower-case names), body bytes)."""
        return http_exchange(self.port, method, path, body, headers, timeout)

    def json(self, method, path, obj=None, headers=None, raw=None):
        h = dict(headers or {})
        body = raw
        if obj is not None:
            body = json.dumps(obj).encode()
        if body is not None and "Content-Type" not in h:
            h["Content-Type"] = "application/json"
        st, hd, data = self.request(method, path, body, h)
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        return st, hd, parsed

    def term(self, timeout=20):
        """SIGTERM; returns the exit code (None if it did not exit in time)."""
        self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        kill_quietly(self.p)
        if not self.errf.closed:
            err = self.stderr()
            check("runtime error:" not in err and "Sanitizer" not in err,
                  "no sanitizer report from serve: " + err[-600:])
            self.errf.close()


def is_error(body, code=None):
    ok = (isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], dict)
          and set(body["error"]) == {"code", "message"}
          and isinstance(body["error"]["message"], str) and body["error"]["message"] != "")
    return ok and (code is None or body["error"]["code"] == code)


def raw_exchange(port, head, body=b"", timeout=20):
    """Sends raw bytes; returns the status line's code and the response head
    (for refusals sent before the body is read)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
        return (int(m.group(1)) if m else None), data
    finally:
        s.close()


def jpeg_size(data):
    """(width, height) from the SOF marker of a JPEG, or None."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        seg = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                      0xCE, 0xCF):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + seg
    return None


def file_size(path):
    """(width, height) of a PNG (IHDR) or JPEG (SOF) file."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return struct.unpack(">II", data[16:24])
    return jpeg_size(data)


# ---- reference embeddings ----------------------------------------------------------

def embed(exe, model, images=(), texts=()):
    cmd = [exe, "embed", "--model", model]
    for f in images:
        cmd += ["--image", f]
    for t in texts:
        cmd += ["--text", t]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    if p.returncode != 0:
        raise RuntimeError("embed failed: " + p.stderr.decode())
    return [json.loads(line)["embedding"] for line in p.stdout.decode().splitlines() if line]


def normalise(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def fuse(weighted):
    dim = len(weighted[0][1])
    acc = [0.0] * dim
    for w, e in weighted:
        e = normalise(e)
        for i in range(dim):
            acc[i] += w * e[i]
    return normalise(acc)


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def check_ranking(results, expected_scores, what, tol=2e-3):
    """results (API) against {id: expected score} of every stored image."""
    ranked = sorted(expected_scores.items(), key=lambda kv: -kv[1])
    check(len(results) > 0, what + ": some results")
    for r in results:
        exp = expected_scores.get(r["id"])
        if not check(exp is not None, "%s: result id %s is a stored image" % (what, r["id"])):
            continue
        check(abs(r["score"] - exp) < tol, "%s: id %d score %.5f, expected %.5f"
              % (what, r["id"], r["score"], exp))
    if results:
        check(abs(results[0]["score"] - ranked[0][1]) < tol,
              "%s: the best result scores like the best stored image (%.5f vs %.5f)"
              % (what, results[0]["score"], ranked[0][1]))
    scores = [r["score"] for r in results]
    check(scores == sorted(scores, reverse=True), what + ": scores non-increasing")


def wait_job(srv, job_id, timeout=120):
    seen = set()
    end = time.monotonic() + timeout
    job = None
    while time.monotonic() < end:
        st, _, job = srv.json("GET", "/api/v1/jobs/" + job_id)
        if st != 200:
            return st, job, seen
        seen.add(job["state"])
        if job["state"] in ("done", "failed"):
            return st, job, seen
        time.sleep(0.1)
    return None, job, seen


# ---- the checks -------------------------------------------------------------------------

def main():
    tmp_main("server_e2e", "ims-e2e-", run)


def run(exe, src, tmp, procs):
    model = tiny_model(src, os.path.join(tmp, "model"))
    images = {os.path.basename(f): f for f in fixture_images(src)}
    files_dir = os.path.join(tmp, "files")
    os.makedirs(files_dir)
    for name, path in images.items():
        shutil.copy(path, files_dir)
    with open(os.path.join(files_dir, "corrupt.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not really a JPEG" * 4)
    sizes = {n: file_size(images[n]) for n in images if n.endswith((".png", ".jpg"))}
    check(sizes["large_1600x1200.jpg"] == (1600, 1200), "the size reader works (%r)"
          % (sizes["large_1600x1200.jpg"],))
    uploads = ["large_1600x1200.jpg", "wide_1000x40.png", "tall_40x1000.png", "exact_224.png",
               "odd_crop_225x300.png", "rgb.png", "baseline.jpg", "progressive.jpg"]
    by_url = ["lossy.webp", "plain.bmp", "palette.png", "grey.jpg"]
    waited = ["rgba.png", "subsampling444.jpg"]
    texts = ["a red bicycle by the sea", "people", "a grey cat", "a mountain lake"]
    emb_list = embed(exe, model, [images[n] for n in uploads + by_url + waited] +
                     [images["small_upscale.jpg"]], texts)
    emb = dict(zip(uploads + by_url + waited + ["small_upscale.jpg"], emb_list))
    temb = dict(zip(texts, emb_list[-len(texts):]))
    dim = len(emb_list[0])

    pics = HostileServer(files_dir, log=os.path.join(tmp, "pics.log"), max_life=600)
    procs.append(pics.p)
    data = os.path.join(tmp, "data")
    srv = Serve(exe, data, model, ["--allow-private-urls"], env={"IMGSEARCH_API_KEY": API_KEY},
                log=os.path.join(tmp, "serve1.log"))
    procs.append(srv.p)
    auth = {"Authorization": "Bearer " + API_KEY}

    # -- health, stats, page, openapi ------------------------------------------------
    st, _, body = srv.json("GET", "/healthz")
    check(st == 200 and body == {"status": "ok"}, "/healthz -> 200 {status: ok} (%s %r)" % (st, body))
    st, _, stats = srv.json("GET", "/api/v1/stats")
    check(st == 200 and isinstance(stats, dict), "stats -> 200 (%s)" % st)
    stats = stats or {}
    check({"images", "dim", "model", "index"} <= set(stats), "stats members: %r" % stats)
    check(stats.get("images") == 0 and stats.get("dim") == dim,
          "empty stats: 0 images of dim %d (%r)" % (dim, stats))
    check(isinstance(stats.get("model"), str) and isinstance(stats.get("index"), str)
          and stats.get("index") != "", "stats model/index are strings (%r)" % stats)
    st, hd, page = srv.request("GET", "/")
    check(st == 200 and hd.get("content-type", "").startswith("text/html")
          and b"imgsearch" in page, "GET / serves the page (%s)" % st)
    check("default-src 'none'" in hd.get("content-security-policy", ""), "page has a strict CSP")
    st, _, oa = srv.json("GET", "/api/v1/openapi.json")
    paths = (oa or {}).get("paths", {})
    want = {"/healthz": ["get"], "/api/v1/stats": ["get"], "/api/v1/images": ["post"],
            "/api/v1/images/{id}": ["get", "delete"], "/api/v1/images/{id}/thumb": ["get"],
            "/api/v1/jobs/{id}": ["get"], "/api/v1/search": ["get", "post"],
            "/metrics": ["get"]}
    for p, methods in want.items():
        for m in methods:
            check(m in paths.get(p, {}), "openapi.json lists %s %s" % (m.upper(), p))

    # -- API key: reads open, writes need it ---------------------------------------------
    body, ctype = multipart([("file", "rgb.png", open(images["rgb.png"], "rb").read())])
    st, hd, b = srv.json("POST", "/api/v1/images", raw=body, headers={"Content-Type": ctype})
    check(st == 401 and is_error(b, "unauthorized") and "bearer" in hd.get("www-authenticate", "").lower(),
          "upload without the key -> 401 unauthorized + WWW-Authenticate (%s %r)" % (st, b))
    st, _, b = srv.json("POST", "/api/v1/images", {"urls": [pics.url("/files/rgb.png")]},
                        headers={"Authorization": "Bearer wrong"})
    check(st == 401 and is_error(b, "unauthorized"), "URLs with a wrong key -> 401 (%s)" % st)
    check(srv.stderr().count(API_KEY) == 0, "the API key is never logged")

    # -- multipart upload: several files, one corrupt ------------------------------------------
    fields = [("file", n, open(images[n], "rb").read()) for n in uploads]
    fields.insert(2, ("file", "corrupt.jpg", open(os.path.join(files_dir, "corrupt.jpg"), "rb").read()))
    body, ctype = multipart(fields)
    st, _, up = srv.json("POST", "/api/v1/images", raw=body, headers=dict(auth, **{"Content-Type": ctype}))
    check(st == 200 and set(up or {}) == {"images", "errors"}, "upload -> 200 {images, errors} (%s %r)" % (st, up))
    up = up or {"images": [], "errors": []}
    check(len(up["images"]) == len(uploads), "every good file added (%d)" % len(up["images"]))
    check(len(up["errors"]) == 1 and up["errors"][0].get("file") == "corrupt.jpg"
          and set(up["errors"][0]) == {"file", "code", "message"}
          and up["errors"][0]["code"] == "corrupt",
          "the corrupt file is a per-file error (%r)" % up["errors"])
    ids = {}
    for name, row in zip(uploads, up["images"]):
        check(set(row) == ROW_KEYS, "upload row members %r" % sorted(row))
        ids[name] = row.get("id")
        check(row.get("thumb") == "/api/v1/images/%s/thumb" % row.get("id"), "row thumb link")
        check(isinstance(row.get("url"), str) and name in row["url"], "row url names the file (%r)" % row.get("url"))
        if check(name in sizes, "size of %s known" % name):
            check((row["width"], row["height"]) == sizes[name],
                  "%s is %dx%d (got %sx%s)" % (name, sizes[name][0], sizes[name][1], row["width"], row["height"]))
        check(abs(row.get("added", 0) - time.time()) < 600, "added is now-ish unix seconds")
    check(len(set(ids.values())) == len(uploads), "distinct ids for distinct files")
    # the same bytes again: the same row
    body, ctype = multipart([("file", "again.png", open(images["rgb.png"], "rb").read())])
    st, _, again = srv.json("POST", "/api/v1/images", raw=body, headers=dict(auth, **{"Content-Type": ctype}))
    check(st == 200 and again and again["images"] and again["images"][0]["id"] == ids["rgb.png"],
          "re-uploading the same bytes gives the same id (%s %r)" % (st, again))
    # only a corrupt file: that file's status
    body, ctype = multipart([("file", "corrupt.jpg", b"not an image at all")])
    st, _, b = srv.json("POST", "/api/v1/images", raw=body, headers=dict(auth, **{"Content-Type": ctype}))
    check(st == 415 and is_error(b, "unsupported"), "only a file that is no image -> 415 unsupported (%s %r)" % (st, b))
    body, ctype = multipart([("photo", "x.png", b"abc")])
    st, _, b = srv.json("POST", "/api/v1/images", raw=body, headers=dict(auth, **{"Content-Type": ctype}))
    check(st == 400 and is_error(b, "invalid_argument"), "unknown form field -> 400 (%s)" % st)

    # -- URL jobs ------------------------------------------------------------------------------------
    missing = pics.url("/404")
    st, _, b = srv.json("POST", "/api/v1/images",
                        {"urls": [pics.url("/files/" + n) for n in by_url] + [missing]}, headers=auth)
    check(st == 202 and isinstance(b, dict) and set(b) == {"job"} and isinstance(b["job"], str),
          "URLs -> 202 {job} (%s %r)" % (st, b))
    job_id = (b or {}).get("job", "none")
    st, job, seen = wait_job(srv, job_id)
    check(st == 200 and job and set(job) == JOB_KEYS, "job object members (%s %r)" % (st, job))
    job = job or {}
    check(seen <= {"queued", "running", "done"}, "job states seen: %r" % seen)
    check(job.get("id") == job_id and job.get("state") == "done" and job.get("total") == len(by_url) + 1
          and job.get("done") == len(by_url) and job.get("failed") == 1,
          "job finished: %d done, 1 failed (%r)" % (len(by_url), job))
    errs = job.get("errors") or []
    check(len(errs) == 1 and errs[0].get("url") == missing and set(errs[0]) == {"url", "code", "error"}
          and errs[0].get("code") == "not_found" and "404" in errs[0].get("error", ""),
          "the 404 URL is the job's error, code not_found (%r)" % errs)
    st, _, b = srv.json("POST", "/api/v1/images?wait=1",
                        {"urls": [pics.url("/files/" + n) for n in waited]}, headers=auth)
    check(st == 200 and b and set(b) == JOB_KEYS and b["state"] == "done" and b["done"] == len(waited),
          "?wait=1 -> 200 with the finished job (%s %r)" % (st, b))
    st, _, b = srv.json("GET", "/api/v1/jobs/no-such-job")
    check(st == 404 and is_error(b, "not_found"), "unknown job -> 404 (%s %r)" % (st, b))
    st, _, b = srv.json("POST", "/api/v1/images", {"urls": "http://x/"}, headers=auth)
    check(st == 400 and is_error(b, "invalid_argument"), "urls not a list -> 400 (%s)" % st)

    # every stored image's id, via search by its own vector
    n_images = len(uploads) + len(by_url) + len(waited)
    st, _, stats = srv.json("GET", "/api/v1/stats")
    check(stats and stats["images"] == n_images, "stats counts %d images (%r)" % (n_images, stats))
    for name in by_url + waited:
        st, _, b = srv.json("POST", "/api/v1/search", {"vector": emb[name], "k": 1})
        if check(st == 200 and b and b["results"], "vector search for %s (%s)" % (name, st)):
            r = b["results"][0]
            check(r["score"] > 0.999 and name in (r["url"] or ""),
                  "a stored image's own embedding finds it first (%s: %r)" % (name, r))
            ids[name] = r["id"]
    id2name = {v: k for k, v in ids.items()}

    # -- rows and thumbnails -----------------------------------------------------------------------
    i_large = ids["large_1600x1200.jpg"]
    st, _, row = srv.json("GET", "/api/v1/images/%d" % i_large)
    check(st == 200 and row and set(row) == ROW_KEYS and row["id"] == i_large
          and (row["width"], row["height"]) == (1600, 1200), "image row (%s %r)" % (st, row))
    for bad, code, name in (("999999", 404, "not_found"), ("abc", 400, "invalid_argument"),
                            ("-1", 400, "invalid_argument")):
        st, _, b = srv.json("GET", "/api/v1/images/" + bad)
        check(st == code and is_error(b, name), "GET image %s -> %s %s (%s %r)" % (bad, code, name, st, b))
    for name in ("large_1600x1200.jpg", "wide_1000x40.png", "tall_40x1000.png"):
        st, hd, jpg = srv.request("GET", "/api/v1/images/%d/thumb" % ids[name])
        check(st == 200 and hd.get("content-type") == "image/jpeg", "thumb %s is image/jpeg" % name)
        check(jpg[:2] == b"\xff\xd8" and jpg[-2:] == b"\xff\xd9", "thumb %s has SOI and EOI" % name)
        wh = jpeg_size(jpg)
        w0, h0 = sizes[name]
        check(wh is not None and 0 < wh[0] <= 256 and 0 < wh[1] <= 256
              and max(wh) == min(256, max(w0, h0)),
              "thumb %s fits 256 px on its long side (%r)" % (name, wh))
        if wh and min(wh) > 1:
            check(abs(wh[0] / wh[1] - w0 / h0) / (w0 / h0) < 0.35, "thumb %s keeps the aspect ratio" % name)
        etag = hd.get("etag")
        if check(etag is not None, "thumb has an ETag"):
            st, _, b = srv.request("GET", "/api/v1/images/%d/thumb" % ids[name], headers={"If-None-Match": etag})
            check(st == 304 and b == b"", "If-None-Match -> 304 (%s)" % st)
    st, _, b = srv.json("GET", "/api/v1/images/999999/thumb")
    check(st == 404 and is_error(b, "not_found"), "thumb of an unknown id -> 404 (%s)" % st)

    # -- search: text, paging --------------------------------------------------------------------------
    def expected(q):
        return {ids[n]: dot(q, normalise(emb[n])) for n in ids}

    t = texts[0]
    st, _, b = srv.json("GET", "/api/v1/search?q=%s&k=5&offset=0" % t.replace(" ", "+"))
    check(st == 200 and b and set(b) == {"results", "took_ms"} and isinstance(b["took_ms"], (int, float)),
          "GET search shape (%s %r)" % (st, b and sorted(b)))
    page1 = (b or {}).get("results", [])
    check(len(page1) == 5, "k=5 gives 5 results (%d)" % len(page1))
    for r in page1:
        check(set(r) == ROW_KEYS | {"score"}, "result members %r" % sorted(r))
    check_ranking(page1, expected(normalise(temb[t])), "text search")
    st, _, b = srv.json("GET", "/api/v1/search?q=%s&k=5&offset=5" % t.replace(" ", "%20"))
    page2 = (b or {}).get("results", [])
    st, _, b = srv.json("GET", "/api/v1/search?q=%s&k=10" % t.replace(" ", "+"))
    both = (b or {}).get("results", [])
    check(len(page2) == 5 and not ({r["id"] for r in page1} & {r["id"] for r in page2}),
          "page 2 has no id of page 1")
    check([r["id"] for r in page1 + page2] == [r["id"] for r in both],
          "page 1 + page 2 == the first 10 results")
    st, _, b = srv.json("GET", "/api/v1/search?q=x&k=5&offset=%d" % n_images)
    check(st == 200 and b and b["results"] == [], "offset past the end -> no results")

    # -- search: term algebra --------------------------------------------------------------------
    i_img = ids["baseline.jpg"]
    terms = [{"text": texts[2], "weight": 1}, {"image_id": i_img, "weight": 0.5},
             {"text": texts[1], "weight": -0.5}]
    st, _, b = srv.json("POST", "/api/v1/search", {"terms": terms, "k": n_images})
    check(st == 200, "terms search -> 200 (%s %r)" % (st, b))
    q = fuse([(1, temb[texts[2]]), (0.5, emb["baseline.jpg"]), (-0.5, temb[texts[1]])])
    check_ranking((b or {}).get("results", []), expected(q), "text + image_id - text")
    check(len((b or {}).get("results", [])) == n_images, "k = all gives every image")
    # shorthand forms
    st, _, b = srv.json("POST", "/api/v1/search", {"image_id": i_img, "k": 3})
    check(st == 200 and b["results"][0]["id"] == i_img and b["results"][0]["score"] > 0.999,
          "image_id shorthand finds the image first (%s)" % st)
    st, _, b = srv.json("POST", "/api/v1/search", {"text": texts[3], "k": 4})
    check_ranking((b or {}).get("results", []), expected(normalise(temb[texts[3]])), "text shorthand")
    st, _, b = srv.json("GET", "/api/v1/search?image_id=%d&k=2" % ids["plain.bmp"])
    check(st == 200 and b["results"][0]["id"] == ids["plain.bmp"], "GET ?image_id= finds it first")
    # vector terms
    st, _, b = srv.json("POST", "/api/v1/search", {"terms": [{"vector": emb["tall_40x1000.png"], "weight": 1}], "k": 3})
    check(st == 200 and b["results"][0]["id"] == ids["tall_40x1000.png"], "vector term -> its image first")
    st, _, b = srv.json("POST", "/api/v1/search", {"terms": [{"vector": [0.1] * (dim + 1), "weight": 1}]})
    check(st == 400 and is_error(b, "invalid_argument"), "vector of the wrong dim -> 400 (%s %r)" % (st, b))
    # image search by upload
    body, ctype = multipart([("file", "q.png", open(images["odd_crop_225x300.png"], "rb").read()), ("k", None, b"3")])
    st, _, b = srv.json("POST", "/api/v1/search", raw=body, headers={"Content-Type": ctype})
    check(st == 200 and b and len(b["results"]) == 3 and b["results"][0]["id"] == ids["odd_crop_225x300.png"]
          and abs(b["results"][0]["score"] - 1) < 1e-3, "search by upload: the same image first, score ~1 (%s %r)"
          % (st, b and b["results"][:1]))
    # upload + text + negative with weights (the page's form)
    body, ctype = multipart([("file", "q.jpg", open(images["small_upscale.jpg"], "rb").read()),
                             ("text", None, texts[3].encode()), ("negative", None, texts[1].encode()),
                             ("text_weight", None, b"0.3"), ("file_weight", None, b"0.7"),
                             ("k", None, str(n_images).encode())])
    st, _, b = srv.json("POST", "/api/v1/search", raw=body, headers={"Content-Type": ctype})
    q = fuse([(0.7, emb["small_upscale.jpg"]), (0.3, temb[texts[3]]), (-0.5, temb[texts[1]])])
    check(st == 200, "multipart file + text + negative -> 200 (%s %r)" % (st, b))
    check_ranking((b or {}).get("results", []), expected(q), "file*0.7 + text*0.3 - negative*0.5")
    # image_url term (allowed: --allow-private-urls)
    st, _, b = srv.json("POST", "/api/v1/search", {"image_url": pics.url("/files/exact_224.png"), "k": 2})
    check(st == 200 and b["results"][0]["id"] == ids["exact_224.png"] and b["results"][0]["score"] > 0.999,
          "image_url term fetches and finds the image (%s %r)" % (st, b))
    st, _, b = srv.json("POST", "/api/v1/search", {"image_url": missing})
    check(st == 400 and is_error(b, "invalid_argument"), "image_url that 404s -> 400 (%s %r)" % (st, b))
    # min_score and order
    st, _, b = srv.json("POST", "/api/v1/search", {"text": texts[0], "k": n_images})
    full = (b or {}).get("results", [])
    if check(len(full) == n_images, "k = all (%d)" % len(full)):
        cut = (full[3]["score"] + full[4]["score"]) / 2
        st, _, b = srv.json("POST", "/api/v1/search", {"text": texts[0], "k": n_images, "min_score": cut})
        check(st == 200 and [r["id"] for r in b["results"]] == [r["id"] for r in full[:4]],
              "min_score keeps exactly the results above it (%s)" % st)
        st, _, b = srv.json("POST", "/api/v1/search", {"text": texts[0], "k": 6, "order": "date"})
        dres = (b or {}).get("results", [])
        check(st == 200 and {r["id"] for r in dres} == {r["id"] for r in full[:6]},
              "order=date re-sorts the same top 6")
        added = [(r["added"], r["id"]) for r in dres]
        check([a for a, _ in added] == sorted([a for a, _ in added], reverse=True),
              "order=date: newest first (%r)" % added)
    # bad search requests
    for what, raw, ctype2, code in (
            ("malformed JSON", b'{"text": "a",\n "k": }', "application/json", 400),
            ("unknown member", b'{"text": "a", "bogus": 1}', "application/json", 400),
            ("two kinds in a term", b'{"terms": [{"text": "a", "image_id": 1, "weight": 1}]}', "application/json", 400),
            ("k = 0", b'{"text": "a", "k": 0}', "application/json", 400),
            ("plain text body", b"text=a", "text/plain", 415)):
        st, _, b = srv.json("POST", "/api/v1/search", raw=raw, headers={"Content-Type": ctype2})
        check(st == code and is_error(b), "%s -> %d (%s %r)" % (what, code, st, b))
        if what == "malformed JSON" and b:
            check(re.search(r"line 2\b.*column \d+", b["error"]["message"]) is not None,
                  "the JSON error names line and column (%r)" % b["error"]["message"])
    st, _, b = srv.json("GET", "/api/v1/search?k=3")
    check(st == 400 and is_error(b), "GET search without q -> 400 (%s)" % st)
    st, _, b = srv.json("GET", "/api/v1/nowhere")
    check(st == 404 and is_error(b, "not_found"), "unknown route -> 404 (%s)" % st)
    st, hd, b = srv.json("PUT", "/api/v1/search", raw=b"{}")
    check(st == 405 and is_error(b) and "POST" in hd.get("allow", ""), "PUT search -> 405 + Allow (%s %r)" % (st, hd.get("allow")))
    st, hd, b = srv.json("DELETE", "/api/v1/stats")
    check(st == 405 and "GET" in hd.get("allow", ""), "DELETE stats -> 405 (%s)" % st)
    # 413: a JSON body over 1 MiB, announced; refused before the body is read
    big = b'{"text": "' + b"a" * (2 << 20) + b'"}'
    code, head = raw_exchange(srv.port, b"POST /api/v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                              b"Connection: close\r\n\r\n" % len(big))
    check(code == 413, "announced 2 MiB JSON -> 413 before the body (%s)" % code)
    # ... and the same sent chunked (no length announced): 413 after reading past the cap
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 65536]), big[i:i + 65536])
                       for i in range(0, len(big), 65536)) + b"0\r\n\r\n"
    code, _ = raw_exchange(srv.port, b"POST /api/v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                           b"Connection: close\r\n\r\n", chunked)
    check(code == 413, "chunked 2 MiB JSON -> 413 (%s)" % code)
    st, _, b = srv.json("GET", "/healthz")
    check(st == 200, "still healthy after the refusals")

    # -- metrics ---------------------------------------------------------------------------------
    st, hd, met = srv.request("GET", "/metrics")
    met = met.decode("utf-8", "replace")
    check(st == 200 and hd.get("content-type", "").startswith("text/plain"), "/metrics -> 200 text/plain")
    for name in ("imgsearch_http_requests_total", "imgsearch_http_request_duration_seconds_bucket",
                 "imgsearch_http_inflight", "imgsearch_http_queue_waiting", "imgsearch_images",
                 "imgsearch_index_vectors", "imgsearch_search_queries_total",
                 "imgsearch_ingest_jobs_total", "imgsearch_ingest_items_total"):
        check(re.search(r"^%s[{ ]" % name, met, re.M) is not None, "/metrics has %s" % name)
    m = re.search(r"^imgsearch_images (\d+)$", met, re.M)
    check(m and int(m.group(1)) == n_images, "imgsearch_images == %d" % n_images)
    m = re.search(r'^imgsearch_ingest_items_total\{outcome="failed"\} (\d+)$', met, re.M)
    check(m and int(m.group(1)) >= 1, "the failed URL is counted")

    # -- delete ------------------------------------------------------------------------------------
    victim = ids["wide_1000x40.png"]
    st, _, b = srv.json("DELETE", "/api/v1/images/%d" % victim)
    check(st == 401, "DELETE without the key -> 401 (%s)" % st)
    st, _, b = srv.json("DELETE", "/api/v1/images/%d" % victim, headers=auth)
    check(st == 200 and b == {"deleted": victim}, "DELETE -> 200 {deleted: id} (%s %r)" % (st, b))
    st, _, b = srv.json("GET", "/api/v1/images/%d" % victim)
    check(st == 404 and is_error(b, "not_found"), "deleted row -> 404 (%s)" % st)
    st, _, b = srv.request("GET", "/api/v1/images/%d/thumb" % victim)
    check(st == 404, "deleted thumb -> 404 (%s)" % st)
    st, _, b = srv.json("DELETE", "/api/v1/images/%d" % victim, headers=auth)
    check(st == 404, "second DELETE -> 404 (%s)" % st)
    st, _, b = srv.json("POST", "/api/v1/search", {"vector": emb["wide_1000x40.png"], "k": n_images})
    check(st == 200 and victim not in [r["id"] for r in b["results"]]
          and len(b["results"]) == n_images - 1, "the deleted id is in no search result")
    del ids["wide_1000x40.png"]
    n_images -= 1

    # -- shutdown and restart ------------------------------------------------------------------------
    queries = [{"text": texts[0], "k": n_images}, {"image_id": ids["rgb.png"], "k": 5},
               {"terms": [{"text": texts[2], "weight": 1}, {"text": texts[1], "weight": -0.5}], "k": 7}]

    def answers(s):
        out = []
        for qq in queries:
            st2, _, bb = s.json("POST", "/api/v1/search", qq)
            out.append([(r["id"], round(r["score"], 4)) for r in (bb or {}).get("results", [])] if st2 == 200 else st2)
        return out

    before = answers(srv)
    st, _, stats_before = srv.json("GET", "/api/v1/stats")
    snap = os.path.join(data, "index.snap")
    if os.path.exists(snap):
        os.unlink(snap)  # so that the check below sees the one written at exit
    rc = srv.term()
    check(rc == 0, "SIGTERM -> exit code 0 (%r); stderr: %s" % (rc, srv.stderr()[-400:]))
    check(os.path.exists(snap) and os.path.getsize(snap) > 0, "index.snap written at shutdown")
    srv.kill()
    srv = Serve(exe, data, model, log=os.path.join(tmp, "serve2.log"))
    procs.append(srv.p)
    st, _, stats2 = srv.json("GET", "/api/v1/stats")
    check(stats2 and stats_before and stats2["images"] == stats_before["images"] == n_images
          and stats2.get("index_vectors", n_images) == n_images,
          "restart: same stats (%r vs %r)" % (stats_before, stats2))
    check(answers(srv) == before, "restart: same search results")
    # without --allow-private-urls: loopback URLs refused, never requested
    with open(os.path.join(tmp, "pics.log")) as f:
        n_before = len(f.read().splitlines())
    secret = "/files/grey.png?never=" + uuid.uuid4().hex
    st, _, b = srv.json("POST", "/api/v1/images?wait=1", {"urls": [pics.base + secret]})
    check(st == 200 and b and b["state"] == "done" and b["failed"] == 1 and b["done"] == 0
          and "refused" in b["errors"][0]["error"], "loopback URL refused without the flag (%s %r)" % (st, b))
    st, _, b = srv.json("POST", "/api/v1/search", {"image_url": pics.base + secret})
    check(st == 403 and is_error(b, "refused"), "image_url on loopback -> 403 refused (%s %r)" % (st, b))
    with open(os.path.join(tmp, "pics.log")) as f:
        later = f.read().splitlines()[n_before:]
    check(later == [], "the loopback server saw no request (%r)" % later)
    st, _, b = srv.json("POST", "/api/v1/images", {"urls": [pics.url("/files/grey.png")]})
    check(st == 202, "no key configured now: writes open (%s)" % st)
    if st == 202:
        wait_job(srv, b["job"])

    # kill -9 right after an acknowledged upload, then restart: nothing lost
    body, ctype = multipart([("file", "kill.png", open(images["grey_alpha.png"], "rb").read())])
    st, _, b = srv.json("POST", "/api/v1/images", raw=body, headers={"Content-Type": ctype})
    check(st == 200 and b and len(b["images"]) == 1, "upload before kill -9 (%s)" % st)
    new_id = b["images"][0]["id"] if b and b.get("images") else None
    st, _, st_killed = srv.json("GET", "/api/v1/stats")
    srv.p.kill()
    srv.p.wait(10)
    srv.kill()
    srv = Serve(exe, data, model, log=os.path.join(tmp, "serve3.log"))
    procs.append(srv.p)
    st, _, stats3 = srv.json("GET", "/api/v1/stats")
    check(stats3 and st_killed and stats3["images"] == st_killed["images"]
          and stats3.get("index_vectors", stats3["images"]) == stats3["images"],
          "kill -9 + restart: same stats, index caught up (%r vs %r)" % (st_killed, stats3))
    st, _, b = srv.json("POST", "/api/v1/search", {"image_id": new_id or 0, "k": 1})
    check(st == 200 and b and b["results"] and b["results"][0]["id"] == new_id,
          "the upload acknowledged before kill -9 is findable (%s %r)" % (st, b))
    for name, i in ids.items():
        st, _, _ = srv.json("GET", "/api/v1/images/%d" % i)
        check(st == 200, "after kill -9: %s (id %d) still there (%s)" % (name, i, st))
    rc = srv.term()
    check(rc == 0, "second SIGTERM -> 0 (%r)" % rc)
    srv.kill()

    # -- rate limit (needs `serve --rate N`) -----------------------------------------------------------
    help_text = subprocess.run([exe, "serve", "--help"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30).stdout.decode()
    if not check("--rate" in help_text, "serve --help documents --rate"):
        return
    srv = Serve(exe, data, model, ["--rate", "1"], log=os.path.join(tmp, "serve4.log"))
    procs.append(srv.p)
    codes, retry = [], None
    for _ in range(12):
        st, hd, b = srv.json("GET", "/api/v1/stats")
        codes.append(st)
        if st == 429:
            retry = hd.get("retry-after")
            check(is_error(b, "rate_limited"), "429 body (%r)" % b)
    check(429 in codes and codes[0] == 200, "12 quick requests at --rate 1 meet 429 (%r)" % codes)
    check(retry is not None and retry.isdigit() and int(retry) >= 1, "429 has Retry-After (%r)" % retry)
    st, _, _ = srv.json("GET", "/healthz")
    check(st == 200, "/healthz is never rate limited (%s)" % st)
    check(srv.term() == 0, "SIGTERM -> 0")
    srv.kill()

    # -- IPv6 loopback --------------------------------------------------------------------------
    if socket.has_ipv6:
        try:
            probe = socket.socket(socket.AF_INET6)
            probe.bind(("::1", 0))
            probe.close()
        except OSError:
            print("note: no ::1 on this machine, IPv6 not checked", flush=True)
            return
        log = os.path.join(tmp, "serve6.log")
        e = dict(os.environ)
        e.pop("IMGSEARCH_API_KEY", None)
        with open(log, "w+b") as errf:
            p = subprocess.Popen([exe, "serve", "--data", data, "--model", model, "--host", "::1",
                                  "--port", "0"], stdout=subprocess.DEVNULL, stderr=errf, env=e)
            procs.append(p)
            port = []

            def ready6():
                errf.seek(0)
                m = re.search(rb"serving http://\[::1\]:(\d+)/", errf.read())
                if m:
                    port.append(int(m.group(1)))
                return bool(port) or p.poll() is not None
            wait_for(ready6, 90)
            if check(bool(port), "serve --host ::1 prints http://[::1]:PORT/"):
                c = http.client.HTTPConnection("::1", port[0], timeout=30)
                c.request("GET", "/healthz")
                r = c.getresponse()
                check(r.status == 200 and json.loads(r.read()) == {"status": "ok"}, "/healthz over ::1")
                c.close()
            p.send_signal(signal.SIGTERM)
            try:
                check(p.wait(20) == 0, "::1 server: SIGTERM -> 0")
            except subprocess.TimeoutExpired:
                check(False, "::1 server exits on SIGTERM")
            kill_quietly(p)


if __name__ == "__main__":
    main()
