#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The compatibility modes end to end: the real `imgsearch serve --immich-ml
--clip-back` on 127.0.0.1 with the tiny model, replaying the recorded
requests of immich's server and of clip-front (tests/integration/compat/).

    compat_e2e.py IMGSEARCH_EXE SOURCE_DIR

Expected values are computed independently: embeddings with `imgsearch
embed`, rankings with the server's own /api/v1/search, clip-back's
near-duplicate rule re-implemented here over those embeddings. A second
server checks --immich-ml-port (a listener serving only immich's routes).
Every child is bounded and killed in `finally`; the temporary folder is
removed.
"""
import base64
import json
import os
import shutil
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_common import check, tiny_model, fixture_images, tmp_main, Cli  # noqa: E402
from server_e2e import Serve, embed  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def load(name):
    with open(os.path.join(HERE, "compat", name), encoding="utf-8") as f:
        return json.load(f)


def raw_request(port, method, path, headers, body, timeout=60):
    """Sends exactly these bytes; returns (status, headers (lower-case), body)."""
    head = "%s %s HTTP/1.1\r\n" % (method, path)
    for k, v in headers:
        head += "%s: %s\r\n" % (k, v)
    head += "Content-Length: %d\r\n\r\n" % len(body)
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(head.encode() + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        hdr, _, rest = data.partition(b"\r\n\r\n")
        lines = hdr.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hd = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hd[k.strip().lower()] = v.strip()
        n = int(hd.get("content-length", "0"))
        while len(rest) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, hd, rest[:n]
    finally:
        s.close()


def undici_body(boundary, parts, image_bytes):
    out = []
    for name, filename, value in parts:
        out.append(("--%s\r\nContent-Disposition: form-data; name=\"%s\"" % (boundary, name))
                   .encode())
        if filename is not None:
            out.append(("; filename=\"%s\"\r\nContent-Type: application/octet-stream"
                        % filename).encode())
        out.append(b"\r\n\r\n")
        out.append(image_bytes if value == "{IMAGE}" else value.encode())
        out.append(b"\r\n")
    out.append(("--%s--\r\n" % boundary).encode())
    return b"".join(out)


def close(a, b, tol=2e-6):
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def dedup(ids, vec, threshold=0.94):
    """clip_back.py's rule: link results whose inner product is >= threshold;
    of each connected group keep the best-ranked one."""
    keep, groups = [], {}
    parent = list(range(len(ids)))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            if dot(vec[ids[i]], vec[ids[j]]) >= threshold:
                ri, rj = root(i), root(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    for i in range(len(ids)):
        if root(i) == i:
            keep.append(ids[i])
        groups.setdefault(root(i), []).append(ids[i])
    return keep, sum(1 for g in groups.values() if len(g) > 1)


def main():
    tmp_main("compat_e2e", "ims-compat-", run)


def run(exe, src, tmp, servers):
    model = tiny_model(src, os.path.join(tmp, "model"))
    model2 = tiny_model(src, os.path.join(tmp, "model2"))  # loaded a second time
    images = {os.path.basename(f): f for f in fixture_images(src)}
    files = os.path.join(tmp, "files")
    os.makedirs(files)
    for p in images.values():
        shutil.copy(p, files)
    # a near-copy, so that deduplication has something to do
    shutil.copy(images["progressive.jpg"], os.path.join(files, "progressive_copy.jpg"))
    with open(os.path.join(files, "progressive_copy.jpg"), "ab") as f:
        f.write(b"\0")  # other bytes (not a content duplicate), same pixels
    data = os.path.join(tmp, "data")
    rc, out, err = Cli(exe, model, data).run("add", files)
    check(rc == 0, "add exits 0: " + err)

    srv = Serve(exe, data, model, ["--immich-ml", "--clip-back", "--rate", "0",
                                   "--cors-origin", "https://rom1504.github.io",
                                   "--immich-model", "ViT-B-32__openai",
                                   "--immich-model", "other=" + model2],
                log=os.path.join(tmp, "serve.log"))
    servers.append(srv)

    # reference embeddings and the catalogue's rows
    st, _, rows = srv.json("POST", "/api/v1/search", {"text": "x", "k": 1000})
    check(st == 200, "own search answers")
    by_id = {r["id"]: r for r in rows["results"]}
    path_of = {i: r["url"] for i, r in by_id.items()}
    ids_sorted = sorted(path_of)
    vecs = embed(exe, model, images=[path_of[i] for i in ids_sorted])
    vec = dict(zip(ids_sorted, vecs))

    # ---- immich ------------------------------------------------------------------
    im = load("immich_requests.json")
    headers = [(k, v.replace("{PORT}", str(srv.port))) for k, v in im["headers"]]
    for rq in im["requests"]:
        what = rq["what"]
        img = b""
        if "image_file" in rq:
            with open(images[rq["image_file"]], "rb") as f:
                img = f.read()
        body = undici_body(im["boundary"], rq["parts"], img)
        st, hd, resp = raw_request(srv.port, "POST", "/predict", headers, body)
        check(st == rq["status"], "%s: status %d (want %d): %s" % (what, st, rq["status"],
                                                                    resp[:300]))
        try:
            j = json.loads(resp)
        except ValueError:
            check(False, "%s: the answer is JSON" % what)
            continue
        if "detail" in rq:
            check(isinstance(j, dict) and rq["detail"] in j.get("detail", ""),
                  "%s: detail names the problem: %r" % (what, j))
            continue
        check(sorted(j) == sorted(rq["keys"]), "%s: members %r" % (what, sorted(j)))
        check(isinstance(j.get("clip"), str), "%s: the embedding is a JSON string" % what)
        got = json.loads(j["clip"])
        if "image_file" in rq:
            want = embed(exe, model, images=[images[rq["image_file"]]])[0]
            check(j.get("imageWidth") == rq["imageWidth"] and
                  j.get("imageHeight") == rq["imageHeight"], "%s: image size" % what)
        else:
            want = embed(exe, model, texts=[rq["text"]])[0]
        check(close(got, want), "%s: the embedding is imgsearch embed's" % what)
        check(hd.get("x-imgsearch-ignored", "") == rq.get("ignored", ""),
              "%s: ignored header %r" % (what, hd.get("x-imgsearch-ignored")))

    # a second model name on its own folder answers with its own model
    entries = '{"clip":{"textual":{"modelName":"other","options":{}}}}'
    body = undici_body(im["boundary"], [["entries", None, entries], ["text", None, "a cat"]], b"")
    st, hd, resp = raw_request(srv.port, "POST", "/predict", headers, body)
    check(st == 200 and close(json.loads(json.loads(resp)["clip"]),
                              embed(exe, model2, texts=["a cat"])[0]),
          "--immich-model NAME=DIR answers with that folder's model (%d)" % st)
    st, hd, resp = srv.request("GET", "/ping")
    check(st == 200 and resp == b"pong", "GET /ping answers pong")

    # ---- clip-front ------------------------------------------------------------------
    # clip-front runs on another origin: only an origin allowed with
    # --cors-origin may query (the catalogue is not readable by any page)
    st, hd, resp = srv.request("POST", "/knn-service", b'{"text": "a dog", "num_images": 2}',
                               {"Origin": "https://evil.example", "Content-Type": "text/plain"})
    check(st == 403 and "access-control-allow-origin" not in hd,
          "another origin's /knn-service is refused without CORS (%d)" % st)
    cf = load("clip_front_requests.json")
    last_ids = []
    for rq in cf["requests"]:
        what = rq["what"]
        body = rq.get("body")
        img_b64 = ""
        if "image_file" in rq:
            with open(images[rq["image_file"]], "rb") as f:
                img_b64 = base64.b64encode(f.read()).decode()
        if body is not None:
            body = body.replace("{IMAGE_BASE64}", img_b64)
            body = body.replace("{IDS}", ",".join(str(i) for i in last_ids[:3] + [999999]))
        hdrs = {"Origin": "https://rom1504.github.io"}
        if body is not None:
            hdrs["Content-Type"] = cf["content_type"]
        st, hd, resp = srv.request(rq["method"], rq["path"],
                                   body.encode() if body is not None else None, hdrs)
        check(st == rq["status"], "%s: status %d: %s" % (what, st, resp[:300]))
        check(hd.get("access-control-allow-origin") == "https://rom1504.github.io",
              "%s: CORS for clip-front's allowed origin" % what)
        j = json.loads(resp)
        if "json" in rq:
            check(j == rq["json"], "%s: %r" % (what, j))
            continue
        if rq["path"] == "/metadata":
            check([e["id"] for e in j] == last_ids[:3] + [999999], "%s: ids in order" % what)
            check(j[-1]["metadata"] == {}, "%s: a missing id has empty metadata" % what)
            for e in j[:3]:
                m = e["metadata"]
                check(m.get("image_path") == path_of[e["id"]] and
                      m.get("caption") == os.path.basename(path_of[e["id"]]) and
                      base64.b64decode(m.get("image", ""))[:2] == b"\xff\xd8",
                      "%s: metadata of %d: %r" % (what, e["id"], sorted(m)))
            continue
        # the ranking the own API gives for the same query
        q = rq["query"]
        if "text" in q:
            own = {"text": q["text"], "k": 1000}
        else:
            own = {"vector": embed(exe, model, images=[images[q["image_file"]]])[0], "k": 1000}
        st2, _, ref = srv.json("POST", "/api/v1/search", own)
        want_ids = [r["id"] for r in ref["results"]]
        n_groups = 0
        if rq["dedup"]:
            want_ids, n_groups = dedup(want_ids, vec)
            check(n_groups >= 1, "%s: the catalogue has near-duplicates to hide" % what)
        got_ids = [e["id"] for e in j]
        check(got_ids == want_ids, "%s: ids %r, want %r" % (what, got_ids, want_ids))
        scores = {r["id"]: r["score"] for r in ref["results"]}
        check(all(abs(e["similarity"] - scores[e["id"]]) < 1e-5 for e in j),
              "%s: similarities are the own API's scores" % what)
        check(hd.get("x-imgsearch-ignored", "") == rq["ignored"],
              "%s: ignored %r" % (what, hd.get("x-imgsearch-ignored")))
        check(hd.get("x-imgsearch-capped", "") == rq["capped"],
              "%s: capped %r" % (what, hd.get("x-imgsearch-capped")))
        for e in j:
            p = path_of[e["id"]]
            check(e.get("caption") == os.path.basename(p) and e.get("image_path") == p and
                  "url" not in e, "%s: metadata of %d" % (what, e["id"]))
        last_ids = got_ids

    # past num_images, results carry id and similarity only
    st, _, j = srv.json("POST", "/knn-service", {"text": "a dog", "num_images": 2,
                                                 "num_result_ids": 6})
    check(st == 200 and len(j) == 6 and all(set(e) == {"id", "similarity"} for e in j[2:]) and
          all("caption" in e for e in j[:2]), "num_images bounds the metadata")
    st, _, j = srv.json("POST", "/knn-service", {"embedding_input": vec[ids_sorted[0]],
                                                 "num_images": 1})
    check(st == 200 and j[0]["id"] == ids_sorted[0] and abs(j[0]["similarity"] - 1) < 1e-4,
          "embedding_input finds its own image first")
    st, _, j = srv.json("POST", "/knn-service", {"embedding_input": [0.1, 0.2], "num_images": 1})
    check(st == 400 and "values" in json.dumps(j), "a vector of the wrong size is refused: %r"
          % (j,))
    check(srv.term() == 0, "SIGTERM stops the server with status 0")

    # ---- a listener of its own for immich --------------------------------------------
    srv2 = Serve(exe, data, model, ["--immich-ml", "--immich-ml-port", "0"],
                 log=os.path.join(tmp, "serve2.log"))
    servers.append(srv2)
    import re
    m = re.search(r"immich machine-learning API on port (\d+)", srv2.stderr())
    check(m is not None, "the immich listener's port is printed")
    if m:
        port = int(m.group(1))
        body = undici_body(im["boundary"], im["requests"][1]["parts"], b"")
        hdrs = [(k, v.replace("{PORT}", str(port))) for k, v in im["headers"]]
        st, _, resp = raw_request(port, "POST", "/predict", hdrs, body)
        check(st == 200 and "clip" in json.loads(resp), "/predict on the immich port")
        st, _, _ = raw_request(port, "GET", "/api/v1/stats", hdrs[:1], b"")
        check(st == 404, "the immich port serves immich's routes only (%d)" % st)
        st, _, _ = raw_request(port, "GET", "/healthz", hdrs[:1], b"")
        check(st == 200, "the immich port has /healthz")
    st, _, _ = srv2.request("POST", "/predict", b"x", {"Content-Type": "text/plain"})
    check(st == 404, "the main port leaves /predict to the immich port (%d)" % st)
    st, _, _ = srv2.request("GET", "/api/v1/stats")
    check(st == 200, "the main port serves the API")
    check(srv2.term() == 0, "SIGTERM stops both listeners with status 0")

    # ---- option errors ---------------------------------------------------------------
    import subprocess
    for args, what in ((["--immich-model", "x"], "--immich-model without --immich-ml"),
                       (["--immich-ml-port", "0"], "--immich-ml-port without --immich-ml"),
                       (["--immich-ml", "--immich-model", "a", "--immich-model", "a=" + model2],
                        "a name mapped twice"),
                       (["--immich-ml", "--immich-model", "=x"], "an empty name")):
        p = subprocess.run([exe, "serve", "--data", data, "--model", model, "--port", "0"] + args,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        check(p.returncode == 2, "%s is a usage error (rc %d: %s)" % (what, p.returncode,
                                                                     p.stderr[-200:]))
    p = subprocess.run([exe, "serve", "--data", data, "--model", model, "--port", "0",
                        "--immich-ml", "--immich-model", "x=" + os.path.join(tmp, "nowhere")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    check(p.returncode == 1 and b"nowhere" in p.stderr,
          "a model folder that does not load is a clear error (rc %d: %s)"
          % (p.returncode, p.stderr[-300:]))


if __name__ == "__main__":
    main()
