#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""tag_edges_test.py IMGSEARCH SOURCE_DIR: issue 10 leftovers around tags,
with the tiny model over imported vectors.

- `imgsearch tag ID... --add T`: an image that fails (an unknown id, one
  that would hold more than 64 tags) is reported on stderr and the other
  ids are still done; exit status 1 when any failed, 0 when none did; a bad
  tag is refused (exit 2) before any image changes;
- GET /api/v1/search with `tag=` holding a NUL (%00) or a control
  character (C0, DEL, C1 as UTF-8) is a 400 whose message names the tag's
  position, the character and its byte; good tags still filter.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from ingest_common import check, finish, tiny_model  # noqa: E402
from import_test import write_npy  # noqa: E402
from server_e2e import Serve  # noqa: E402

DIM = 32
N = 8


def run(exe, *args):
    p = subprocess.run([exe] + list(args), capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def tags_of(exe, common, id_):
    rc, out, _ = run(exe, "tag", *common, str(id_))
    if rc != 0 or "\t" not in out:
        return None
    t = out.rstrip("\n").split("\t", 1)[1]
    return t.split(", ") if t else []


def main():
    exe, src = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="ims_tag_edges_")
    try:
        body(exe, src, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finish("tag_edges_test")


def body(exe, src, tmp):
    model = tiny_model(src, os.path.join(tmp, "model"))
    data = os.path.join(tmp, "data")
    rnd = random.Random(11)
    npy = os.path.join(tmp, "v.npy")
    write_npy(npy, [[rnd.gauss(0, 1) for _ in range(DIM)] for _ in range(N)])
    srcs = os.path.join(tmp, "sources.txt")
    with open(srcs, "w") as f:
        for i in range(N):
            f.write("/lib/%d.jpg\n" % i)
    rc, _, err = run(exe, "import", "--data", data, "--model", model, "--vectors", npy,
                     "--sources", srcs)
    check(rc == 0, "import: %s" % err)
    common = ["--data", data, "--model", model]

    # an unknown id in the middle: the ids after it are still tagged
    rc, out, err = run(exe, "tag", *common, "1", "99999", "2", "--add", "trip")
    check(rc == 1, "exit 1 when an id failed: %d" % rc)
    check("no image with id 99999" in err, "the failure is reported: %r" % err)
    check(out.splitlines() == ["1\ttrip", "2\ttrip"], "the other ids are done: %r" % out)

    # image 3 full (64 tags): it fails, 4 after it is still tagged
    full = ["t%02d" % i for i in range(64)]
    args = []
    for t in full:
        args += ["--add", t]
    rc, out, err = run(exe, "tag", *common, "3", *args)
    check(rc == 0 and tags_of(exe, common, 3) == full, "image 3 holds 64 tags: %s" % err)
    rc, out, err = run(exe, "tag", *common, "3", "4", "5", "--add", "extra")
    check(rc == 1, "exit 1 when image 3 cannot take a 65th tag: %d %r" % (rc, err))
    check("image 3" in err and "at most 64" in err, "image 3's failure is reported: %r" % err)
    check(out.splitlines() == ["4\textra", "5\textra"], "4 and 5 are still tagged: %r" % out)
    check(tags_of(exe, common, 3) == full, "image 3 unchanged")

    # a bad tag: refused before any image changes
    rc, out, err = run(exe, "tag", *common, "6", "7", "--add", "ok", "--add", "bad\ttag")
    check(rc == 2 and "control character" in err and out == "",
          "a bad tag is refused first: %d %r %r" % (rc, out, err[:200]))
    check(tags_of(exe, common, 6) == [] and tags_of(exe, common, 7) == [],
          "nothing changed for 6 and 7")
    rc, out, err = run(exe, "tag", *common, "6", "--remove", "x" * 65)
    check(rc == 2 and "longer than 64" in err, "a bad --remove is refused: %r" % err[:200])
    rc, out, err = run(exe, "tag", *common, "6", "7", "--add", "fine")
    check(rc == 0 and out.splitlines() == ["6\tfine", "7\tfine"], "no failure: exit 0 (%r)" % out)

    srv = Serve(exe, data, model, log=os.path.join(tmp, "serve.log"))
    try:
        http(srv)
    finally:
        srv.term()


def http(srv):
    def get(query):
        return srv.json("GET", "/api/v1/search?q=photo&k=20&" + query)

    st, _, doc = get("tag=trip")
    check(st == 200 and sorted(r["id"] for r in doc["results"]) == [1, 2],
          "tag=trip filters: %s %s" % (st, doc))
    cases = [
        ("tag=a%00b", "tag 1: NUL byte (%00) at byte 1"),
        ("tag=trip&tag=%00", "tag 2: NUL byte (%00) at byte 0"),
        ("tag=trip%00", "tag 1: NUL byte (%00) at byte 4"),
        ("tag=a%01b", "tag 1: control character U+0001 at byte 1"),
        ("tag=trip&tag=x%1F", "tag 2: control character U+001F at byte 1"),
        ("tag=ab%7F", "tag 1: control character U+007F at byte 2"),
        ("tag=a%C2%85", "tag 1: control character U+0085 at byte 1"),
        ("tag=%0Atrip", "tag 1: control character U+000A at byte 0"),
    ]
    for q, msg in cases:
        st, _, doc = get(q)
        text = json.dumps(doc)
        check(st == 400 and doc.get("error", {}).get("code") == "invalid_argument" and
              msg in doc.get("error", {}).get("message", ""),
              "GET %s: 400 %r (got %s %s)" % (q, msg, st, text[:300]))
    # not control characters: U+00A0 (C2 A0) and plain UTF-8 pass through
    st, _, doc = get("tag=caf%C3%A9&tag=a%C2%A0b")
    check(st == 200 and doc["results"] == [], "UTF-8 tags are accepted: %s %s" % (st, doc))
    st, _, doc = get("tag=TRIP")
    check(st == 200 and sorted(r["id"] for r in doc["results"]) == [1, 2],
          "the server still answers after the refusals: %s" % st)


if __name__ == "__main__":
    main()
