#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""End-to-end test of `imgsearch reembed` (issue 10 item 7):

- a catalogue made with the tiny model (dim 32) from local BMP files and a
  loopback URL; then one file is deleted and the URL's file removed from
  the HTTP server's folder;
- `reembed --model B --to NEW` with a second model made by make-model (dim
  16): every row whose source is still there is re-embedded into NEW (rows
  of dim 16, the new model recorded), the two gone ones are reported
  ("gone SOURCE: ...") and the run goes on (exit 0);
- the old catalogue is untouched: same rows, same embeddings bytes, same model;
- running it again fetches nothing again (all "present": resumable);
- searching NEW with model B finds the images; --to the same folder, a
  missing --to or --model, and a missing old catalogue are refused;
- each new row keeps its old row's tags, caption and added time (read
  from both catalogues), also when a resumed run finds the row present
  with them lost (as after a run stopped between the insert and that
  step); a file that now holds another row's content counts "present", not
  failed; the old catalogue is read --page-rows 2 at a time (keyset pages
  over ids with a gap) and every row is visited.

With "pg" as third argument, the same re-embed also goes --to a
PostgreSQL database (rows, their dim and the recorded model checked with
psql), twice (the second run finds every source present).

    reembed_test.py IMGSEARCH SOURCE_DIR [pg]
"""
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from ingest_common import HostileServer, check, finish, tiny_model  # noqa: E402
from pgutil import PgServer, psql  # noqa: E402


def write_bmp(path, seed):
    px = bytes(((i * (seed * 7 + 3) + seed * 31) & 255) for i in range(16 * 16 * 3))
    hdr = b"BM" + struct.pack("<IHHI", 54 + len(px), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, 16, 16, 1, 24, 0, len(px), 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(hdr + info + px)


def run(exe, *args):
    p = subprocess.run([exe] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=300)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def snapshot(data):
    db = sqlite3.connect(os.path.join(data, "catalogue.db"))
    try:
        rows = db.execute("SELECT i.id, i.source, i.model, e.vec FROM images i JOIN embeddings e"
                          " ON e.image_id = i.id ORDER BY i.id").fetchall()
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        return rows, meta.get("model_name"), meta.get("embedding_dim")
    finally:
        db.close()


def details(data=None, url=None):
    """source -> (caption, added, sorted tags) of every row."""
    q_rows = "SELECT source, caption, added FROM images"
    q_tags = ("SELECT i.source, g.tag FROM image_tags g JOIN images i ON i.id = g.image_id")
    if url:
        rows = [ln.split("|") for ln in psql(url, q_rows).splitlines() if ln.strip()]
        rows = [(r[0], r[1] or None, int(r[2])) for r in rows]
        tags = [ln.split("|") for ln in psql(url, q_tags).splitlines() if ln.strip()]
    else:
        db = sqlite3.connect(os.path.join(data, "catalogue.db"))
        try:
            rows = db.execute(q_rows).fetchall()
            tags = db.execute(q_tags).fetchall()
        finally:
            db.close()
    out = {r[0]: (r[1], r[2], []) for r in rows}
    for src, tag in tags:
        out[src][2].append(tag)
    return {k: (c, a, sorted(t)) for k, (c, a, t) in out.items()}


def main():
    exe, src = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="ims-reembed-")
    srv = None
    try:
        model_a = tiny_model(src, os.path.join(tmp, "model-a"))
        with open(os.path.join(model_a, "config.json")) as f:
            cfg = json.load(f)
        cfg["projection_dim"] = cfg["text_config"]["projection_dim"] = \
            cfg["vision_config"]["projection_dim"] = 16
        cfg_b = os.path.join(tmp, "config-b.json")
        with open(cfg_b, "w") as f:
            json.dump(cfg, f)
        model_b = os.path.join(tmp, "model-b")
        rc, _, err = run(exe, "make-model", "--config", cfg_b, "--prng-seed", "7", "--out",
                         model_b, "--vocab", os.path.join(src, "data/vocab"))
        check(rc == 0, "make-model for the second model (rc %d: %s)" % (rc, err))

        photos = os.path.join(tmp, "photos")
        web = os.path.join(tmp, "web")
        os.makedirs(photos)
        os.makedirs(web)
        for i in range(5):
            write_bmp(os.path.join(photos, "p%d.bmp" % i), i + 1)
        write_bmp(os.path.join(web, "w.bmp"), 40)
        write_bmp(os.path.join(web, "w2.bmp"), 41)
        log = os.path.join(tmp, "http.log")
        srv = HostileServer(web, log=log)
        old = os.path.join(tmp, "old")
        rc, out, err = run(exe, "add", "--data", old, "--model", model_a, "--allow-private-urls",
                           photos, srv.url("/files/w.bmp"), srv.url("/files/w2.bmp"))
        check(rc == 0 and out.count("added ") == 7, "old catalogue built (rc %d: %s %s)"
              % (rc, out, err))
        # tags (CLI), captions and added times (written straight into the
        # catalogue: no command sets them) for the new catalogue to keep
        rc, out, err = run(exe, "tag", "--data", old, "1", "2", "--add", "Trip")
        check(rc == 0, "old rows tagged (rc %d: %s)" % (rc, err))
        rc, out, err = run(exe, "tag", "--data", old, "1", "--add", "beach")
        db = sqlite3.connect(os.path.join(old, "catalogue.db"))
        db.execute("UPDATE images SET added = 1000000 + id, caption = 'caption ' || id"
                   " WHERE id % 2 = 1")
        db.execute("UPDATE images SET added = 2000000 + id WHERE id % 2 = 0")
        db.commit()
        db.close()
        old_details = details(old)
        check(sum(v[0] is not None for v in old_details.values()) == 4, "old captions set")
        before = snapshot(old)
        check(before[1] and before[2] == "32", "old catalogue records the dim-32 model: %r"
              % (before[1:],))
        os.unlink(os.path.join(photos, "p3.bmp"))
        os.unlink(os.path.join(web, "w2.bmp"))

        new = os.path.join(tmp, "new")
        common = ["--data", old, "--allow-private-urls"]
        rc, out, err = run(exe, "reembed", *common, "--model", model_b, "--to", new,
                           "--page-rows", "2")
        check(rc == 0, "reembed exits 0 with gone rows (rc %d: %s)" % (rc, err[-500:]))
        kept = {k: v for k, v in old_details.items() if "p3.bmp" not in k and "w2.bmp" not in k}
        check(details(new) == kept, "new rows keep tags, captions and added times: %r vs %r"
              % (details(new), kept))
        check(any(v[2] == sorted(["beach", "Trip"]) for v in kept.values()), "a row with two tags")
        lines = out.splitlines()
        gone = [ln for ln in lines if ln.startswith("gone ")]
        check(len(gone) == 2 and any("p3.bmp" in g for g in gone) and
              any("w2.bmp" in g for g in gone), "the two gone sources are reported: %r" % gone)
        check(sum(ln.startswith("reembedded ") for ln in lines) == 5,
              "5 rows re-embedded: %r" % lines)
        check("5 re-embedded, 0 already there, 2 gone, 0 failed" in err, "summary: %s" % err)
        after = snapshot(new)
        check(len(after[0]) == 5 and after[2] == "16" and
              all(len(r[3]) == 16 * 4 for r in after[0]),
              "the new catalogue holds 5 rows of dim 16: %r" % (after[1:],))
        check(after[1] != before[1] or after[2] != before[2], "a new model is recorded")
        check(snapshot(old) == before, "the old catalogue is untouched")

        # resumable: a second run fetches nothing again, and completes a row
        # found present without its details
        db = sqlite3.connect(os.path.join(new, "catalogue.db"))
        db.execute("DELETE FROM image_tags")
        db.execute("UPDATE images SET caption = NULL, added = 5")
        db.commit()
        db.close()
        with open(log) as f:
            n_requests = len(f.read().splitlines())
        rc, out, err = run(exe, "reembed", *common, "--model", model_b, "--to", new, "--json")
        check(rc == 0, "second reembed exits 0 (rc %d: %s)" % (rc, err))
        try:
            doc = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            doc = {}
        check(doc.get("present") == 5 and doc.get("reembedded") == 0 and doc.get("gone") == 2 and
              doc.get("rows") == 7, "second run: all present, nothing re-embedded: %r" % doc)
        check(len(snapshot(new)[0]) == 5 and snapshot(old) == before, "nothing changed")
        check(details(new) == kept, "a resumed run gives present rows their details again")
        with open(log) as f:
            again = f.read().splitlines()[n_requests:]
        check(not any("/files/w.bmp" in ln for ln in again),
              "the second run did not fetch the present URL again: %r" % again)

        rc, out, err = run(exe, "search", "--data", new, "--model", model_b, "--json", "-k", "3",
                           "--image", os.path.join(photos, "p0.bmp"))
        try:
            res = json.loads(out)["results"]
        except (ValueError, KeyError):
            res = []
        check(rc == 0 and res and res[0]["url"].endswith("p0.bmp"),
              "the new catalogue answers searches with the new model: %r" % out[:300])

        if len(sys.argv) > 3 and sys.argv[3] == "pg":
            with PgServer() as pg:
                url = pg.new_database()
                for attempt in (1, 2):
                    rc, out, err = run(exe, "reembed", *common, "--model", model_b, "--to", url,
                                       "--json")
                    doc = json.loads(out.strip().splitlines()[-1]) if rc == 0 else {}
                    want = (5, 0) if attempt == 1 else (0, 5)
                    check(rc == 0 and (doc.get("reembedded"), doc.get("present")) == want and
                          doc.get("gone") == 2,
                          "reembed --to postgresql run %d: rc %d %r %s" % (attempt, rc, doc, err))
                check(details(url=url) == kept, "PostgreSQL target keeps tags, captions, added:"
                      " %r" % details(url=url))
                got = psql(url, "SELECT count(*), min(length(e.vec)), max(length(e.vec))"
                                " FROM images i JOIN embeddings e ON e.image_id = i.id").strip()
                check(got == "5|64|64", "PostgreSQL target holds 5 rows of dim 16: %r" % got)
                dim = psql(url, "SELECT dim FROM model").strip()
                check(dim == "16", "PostgreSQL target records the new model: %r" % dim)
            check(snapshot(old) == before, "the old catalogue is still untouched")

        # a file now holding another row's content: that row is "present"
        # (a duplicate by content), not a failure, and no details move
        shutil.copy(os.path.join(photos, "p0.bmp"), os.path.join(photos, "p1.bmp"))
        new3 = os.path.join(tmp, "new3")
        rc, out, err = run(exe, "reembed", *common, "--model", model_b, "--to", new3, "--json")
        try:
            doc = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            doc = {}
        check(rc == 0 and (doc.get("reembedded"), doc.get("present"), doc.get("gone"),
                           doc.get("failed")) == (4, 1, 2, 0),
              "a file with another row's content counts present, not failed: %r %s"
              % (doc, err[-300:]))
        got = details(new3)
        check(len(got) == 4 and all(got[k] == kept[k] for k in got),
              "the other rows keep their details: %r" % got)

        rc, _, err = run(exe, "reembed", "--data", old, "--model", model_b, "--to", old)
        check(rc == 1 and "catalogue being read" in err, "--to the same folder refused: %s" % err)
        rc, _, err = run(exe, "reembed", "--data", old, "--model", model_b)
        check(rc == 2 and "--to" in err, "--to required: %s" % err)
        rc, _, err = run(exe, "reembed", "--data", old, "--to", new)
        check(rc == 2 and "--model" in err, "--model required: %s" % err)
        rc, _, err = run(exe, "reembed", "--data", os.path.join(tmp, "none"), "--model", model_b,
                         "--to", os.path.join(tmp, "x"))
        check(rc == 1 and "no catalogue" in err, "a missing old catalogue: %s" % err)
        check(not os.path.exists(os.path.join(tmp, "none")), "nothing created for it")
    finally:
        if srv:
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    finish("reembed_test")


if __name__ == "__main__":
    main()
