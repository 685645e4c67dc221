#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""library_test.py IMGSEARCH SOURCE_DIR: issue 10's tags, near-duplicate
folding and library-wide duplicates end to end with the tiny model.

Rows come from `imgsearch import` of known vectors: random ones and groups
of near-duplicates (a base vector and copies perturbed by small noise).

- CLI: `tag ID... --add/--remove` (case kept, compared case-insensitively,
  bad tags and unknown ids refused), `search --tag` (every tag) and
  `--dedup`, `dups [--threshold] [--json]` finding the planted groups;
- HTTP (serve on 127.0.0.1, port 0, with an API key): POST
  /api/v1/images/ID/tags with its exact status codes (200, 400 naming the
  tag or member, 401 without the key, 403 cross-site, 404, 405, 415), tag
  filters in GET (repeatable tag=) and POST ("filter": {"tags"}), dedup=T
  in GET and "dedup" in JSON with "duplicates" on kept rows,
  GET /api/v1/duplicates?threshold=&limit= and its refusals.
"""
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
from urllib.parse import urlencode

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from ingest_common import check, finish, tiny_model  # noqa: E402
from import_test import write_npy  # noqa: E402
from server_e2e import Serve  # noqa: E402

DIM = 32
N_GROUPS, GROUP, N_RANDOM = 4, 3, 40
KEY = "library-test-key"


def unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def run(exe, *args, stdin=None):
    p = subprocess.run([exe] + list(args), capture_output=True, text=True, timeout=120,
                       input=stdin)
    return p.returncode, p.stdout, p.stderr


def make_rows():
    rnd = random.Random(10)
    rows, groups = [], []
    for g in range(N_GROUPS):
        base = unit([rnd.gauss(0, 1) for _ in range(DIM)])
        members = []
        for c in range(GROUP):
            v = base if c == 0 else unit([x + rnd.gauss(0, 0.1 / math.sqrt(DIM)) for x in base])
            members.append(len(rows))
            rows.append(v)
        groups.append(members)
    for _ in range(N_RANDOM):
        rows.append(unit([rnd.gauss(0, 1) for _ in range(DIM)]))
    return rows, groups


def main():
    exe, src = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="ims_library_")
    try:
        body(exe, src, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finish("library_test")


def body(exe, src, tmp):
    model = tiny_model(src, os.path.join(tmp, "model"))
    data = os.path.join(tmp, "data")
    rows, groups = make_rows()
    npy = os.path.join(tmp, "v.npy")
    write_npy(npy, rows)
    srcs = os.path.join(tmp, "sources.txt")
    with open(srcs, "w") as f:
        for i in range(len(rows)):
            f.write("/lib/%s/%d.jpg\n" % ("a" if i % 2 else "b", i))
    rc, out, err = run(exe, "import", "--data", data, "--model", model, "--vectors", npy,
                       "--sources", srcs)
    check(rc == 0, "import: %s" % err)
    # ids follow the file's order
    ids = list(range(1, len(rows) + 1))
    vec = {ids[i]: rows[i] for i in range(len(rows))}
    planted = sorted(sorted(ids[m] for m in g) for g in groups)
    common = ["--data", data, "--model", model]

    # ---- CLI: tag
    rc, out, err = run(exe, "tag", *common, "1", "2", "--add", "Trip", "--add", "beach")
    check(rc == 0 and out.splitlines() == ["1\tbeach, Trip", "2\tbeach, Trip"],
          "tag --add: %r %r" % (out, err))
    rc, out, err = run(exe, "tag", *common, "2", "--remove", "TRIP", "--add", "BEACH")
    check(rc == 0 and out.strip() == "2\tBEACH", "tag --remove (case-insensitive): %r" % out)
    rc, out, err = run(exe, "tag", *common, "3", "--add", "bad\ttag")
    check(rc != 0 and "control character" in err, "a bad tag is refused: %r" % err)
    rc, out, err = run(exe, "tag", *common, "99999", "--add", "x")
    check(rc == 1 and "no image with id 99999" in err, "tag of an unknown id: %r" % err)
    rc, out, err = run(exe, "tag", *common, "3")
    check(rc == 0 and out.strip() == "3", "tag without changes shows the tags: %r" % out)

    # ---- CLI: search --tag, --dedup
    rc, out, err = run(exe, "search", *common, "--json", "-k", "10", "--tag", "beach", "photo")
    res = json.loads(out)["results"] if rc == 0 else []
    check(sorted(r["id"] for r in res) == [1, 2], "search --tag beach: %s %s" % (out, err))
    check(all(r["tags"] for r in res), "rows carry their tags: %s" % res)
    rc, out, err = run(exe, "search", *common, "--json", "-k", "10", "--tag", "beach",
                       "--tag", "trip", "photo")
    res = json.loads(out)["results"] if rc == 0 else []
    check([r["id"] for r in res] == [1], "search --tag beach --tag trip: every tag: %s" % out)
    rc, out, err = run(exe, "search", *common, "--json", "-k", "12", "--dedup", "0.95", "photo")
    res = json.loads(out)["results"] if rc == 0 else []
    check(len(res) == 12, "search --dedup still gives k rows: %d %s" % (len(res), err))
    kept = [r["id"] for r in res]
    check(all(dot(vec[a], vec[b]) < 0.95 for i, a in enumerate(kept) for b in kept[i + 1:]),
          "no two kept rows are within the threshold")
    for r in res:
        for d in r["duplicates"]:
            check(dot(vec[d], vec[r["id"]]) >= 0.95, "duplicate %d of %d is near it" % (d, r["id"]))
    rc, out, err = run(exe, "search", *common, "--dedup", "1.5", "photo")
    check(rc == 2, "search --dedup 1.5 refused: %d %s" % (rc, err))

    # ---- CLI: dups
    rc, out, err = run(exe, "dups", *common, "--json", "--threshold", "0.95")
    doc = json.loads(out) if rc == 0 else {}
    got = sorted(g["ids"] for g in doc.get("groups", []))
    check(got == planted, "dups finds the planted groups: %s vs %s (%s)" % (got, planted, err))
    check(all(0.95 <= g["min_score"] <= 1.0 for g in doc.get("groups", [])), "min_score range")
    rc, out, err = run(exe, "dups", *common, "--limit", "1")
    check(rc == 0 and len(out.splitlines()) == 1 and len(out.split()) == 1 + GROUP,
          "dups text, one group: %r" % out)
    rc, out, err = run(exe, "dups", *common, "--threshold", "0")
    check(rc == 2, "dups --threshold 0 refused")

    # ---- HTTP
    srv = Serve(exe, data, model, env={"IMGSEARCH_API_KEY": KEY},
                log=os.path.join(tmp, "serve.log"))
    try:
        http(srv, vec, planted)
    finally:
        srv.term()


def http(srv, vec, planted):
    auth = {"Authorization": "Bearer " + KEY}

    def tags(id_, obj, headers=auth, raw=None):
        return srv.json("POST", "/api/v1/images/%s/tags" % id_, obj, headers=headers, raw=raw)

    # the same tag search before and after a tag change: no stale answer
    st, _, doc = srv.json("GET", "/api/v1/search?" + urlencode({"q": "photo", "k": 20,
                                                                 "tag": "trip"}))
    check(st == 200 and [r["id"] for r in doc["results"]] == [1], "before: %s" % doc)
    st, _, doc = tags(5, {"add": ["Sunset", "trip"]})
    check(st == 200 and doc["id"] == 5 and doc["tags"] == ["Sunset", "trip"],
          "POST tags: %s %s" % (st, doc))
    st, _, doc = tags(5, {"remove": ["sunset"], "add": []})
    check(st == 200 and doc["tags"] == ["trip"], "POST tags remove: %s %s" % (st, doc))
    st, _, doc = srv.json("GET", "/api/v1/images/5")
    check(st == 200 and doc["tags"] == ["trip"], "GET row shows tags: %s" % doc)
    st, _, doc = tags(5, {"add": ["ok", "x" * 65]})
    check(st == 400 and "longer than 64" in json.dumps(doc), "400 long tag: %s %s" % (st, doc))
    st, _, doc = tags(5, {"add": ["a\u0001b"]})
    check(st == 400 and "control character" in json.dumps(doc), "400 control: %s %s" % (st, doc))
    st, _, doc = tags(5, {"add": "trip"})
    check(st == 400 and "add" in json.dumps(doc), "400 not a list: %s %s" % (st, doc))
    st, _, doc = tags(5, {"colour": ["x"]})
    check(st == 400 and "colour" in json.dumps(doc), "400 unknown member: %s %s" % (st, doc))
    st, _, doc = tags(5, None, raw=b"{not json")
    check(st == 400, "400 bad JSON: %s" % st)
    st, _, doc = tags(99999, {"add": ["x"]})
    check(st == 404, "404 unknown id: %s %s" % (st, doc))
    st, _, doc = tags("abc", {"add": ["x"]})
    check(st == 400, "400 bad id: %s %s" % (st, doc))
    st, _, doc = tags(5, {"add": ["x"]}, headers={})
    check(st == 401, "401 without the key: %s %s" % (st, doc))
    st, _, doc = tags(5, {"add": ["x"]}, headers={"Authorization": "Bearer nope"})
    check(st == 401, "401 wrong key: %s" % st)
    st, _, doc = tags(5, {"add": ["x"]}, headers=dict(auth, Origin="http://evil.example"))
    check(st == 403, "403 cross-site: %s %s" % (st, doc))
    st, _, doc = srv.json("GET", "/api/v1/images/5/tags")
    check(st == 405, "405 GET on tags: %s" % st)
    st, _, _ = srv.json("POST", "/api/v1/images/5/tags", headers=dict(auth, **{
        "Content-Type": "text/plain"}), raw=b'{"add": ["x"]}')
    check(st == 415, "415 text/plain: %s" % st)
    st, _, doc = srv.json("GET", "/api/v1/images/5")
    check(doc["tags"] == ["trip"], "refusals changed nothing: %s" % doc)

    def get(**params):
        q = urlencode(params, doseq=True)
        return srv.json("GET", "/api/v1/search?" + q)

    st, _, doc = get(q="photo", k=20, tag=["trip"])
    got = sorted(r["id"] for r in doc.get("results", []))
    check(st == 200 and got == [1, 5], "GET tag=trip: %s %s" % (st, doc))
    st, _, doc = get(q="photo", k=20, tag=["TRIP", "beach"])
    got = sorted(r["id"] for r in doc.get("results", []))
    check(st == 200 and got == [1], "GET tag repeated (every tag): %s" % got)
    st, _, doc = srv.json("POST", "/api/v1/search", {"text": "photo", "k": 20,
                                                     "filter": {"tags": ["Beach"]}})
    got = sorted(r["id"] for r in doc.get("results", []))
    check(st == 200 and got == [1, 2], "POST filter.tags: %s %s" % (st, doc))
    st, _, doc = srv.json("POST", "/api/v1/search", {"text": "photo", "filter": {"tags": [""]}})
    check(st == 400 and "tag" in json.dumps(doc), "POST empty tag: %s %s" % (st, doc))
    st, _, doc = srv.json("POST", "/api/v1/search", {"text": "photo", "filter": {"tags": "x"}})
    check(st == 400, "POST tags not a list: %s" % st)

    # dedup: the group of image 1 folds into its best member
    group1 = next(g for g in planted if 1 in g)
    st, _, doc = get(image_id=1, k=5, dedup="0.95")
    res = doc.get("results", [])
    check(st == 200 and len(res) == 5, "GET dedup gives k rows: %s %s" % (st, doc))
    if res:
        check(res[0]["id"] == 1 and sorted(res[0]["duplicates"] + [1]) == group1,
              "GET dedup folds the group: %s" % res[0])
        check(all(r["id"] not in group1 for r in res[1:]), "the group appears once")
        check(all("duplicates" in r for r in res), "every row has duplicates with dedup")
    st, _, doc = get(image_id=1, k=5)
    res = doc.get("results", [])
    check(st == 200 and sorted(r["id"] for r in res[:3]) == group1 and
          "duplicates" not in res[0], "without dedup the group leads: %s" % res)
    st, _, doc = srv.json("POST", "/api/v1/search", {"vector": vec[1], "k": 4, "dedup": 0.95,
                                                     "filter": {"source_prefix": "/lib/"}})
    res = doc.get("results", [])
    check(st == 200 and len(res) == 4 and res[0]["id"] == 1 and
          sorted(res[0]["duplicates"] + [1]) == group1, "POST dedup + filter: %s %s" % (st, doc))
    for bad in ("0", "1.5", "x", "-0.5"):
        st, _, doc = get(q="photo", dedup=bad)
        check(st == 400 and "dedup" in json.dumps(doc), "GET dedup=%s refused: %s" % (bad, st))
    st, _, doc = srv.json("POST", "/api/v1/search", {"text": "photo", "dedup": 2})
    check(st == 400 and "dedup" in json.dumps(doc), "POST dedup 2 refused: %s" % st)

    # library-wide duplicates
    st, _, doc = srv.json("GET", "/api/v1/duplicates?threshold=0.95")
    got = sorted(g["ids"] for g in doc.get("groups", []))
    check(st == 200 and got == planted, "GET duplicates: %s %s" % (st, doc))
    check(doc.get("threshold") == 0.95, "threshold echoed: %s" % doc.get("threshold"))
    st, _, doc = srv.json("GET", "/api/v1/duplicates?threshold=0.95&limit=2")
    check(st == 200 and len(doc["groups"]) == 2, "limit=2: %s" % doc)
    st, _, doc = srv.json("GET", "/api/v1/duplicates")
    check(st == 200 and sorted(g["ids"] for g in doc["groups"]) == planted, "default threshold")
    st, _, doc = srv.json("GET", "/api/v1/duplicates?threshold=0.99999")
    check(st == 200 and doc["groups"] == [], "a high threshold finds nothing: %s" % doc)
    for bad in ("threshold=0", "threshold=1.5", "threshold=abc", "limit=0", "colour=red",
                "threshold=0.9&threshold=0.8"):
        st, _, doc = srv.json("GET", "/api/v1/duplicates?" + bad)
        check(st == 400, "GET duplicates?%s refused: %s %s" % (bad, st, doc))
    st, _, doc = srv.json("POST", "/api/v1/duplicates", {})
    check(st == 405, "POST duplicates: 405 (%s)" % st)


if __name__ == "__main__":
    main()
