#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""End-to-end test of folders kept in sync (issue 10 item 6) with the tiny
CLIP model over generated BMP files, on SQLite or PostgreSQL:

- `add --sync --json FOLDER`: the first sync adds every image; an unchanged
  folder is synced without reading one file (files_read 0); between syncs
  the folder gets a new file, a tagged file rewritten with the same size and
  a new mtime (re-embedded into the same row: id and tags kept, found by a
  search with its new content), a file only touched (hashed, row kept), a
  file renamed into another subfolder (row kept, source updated), a deleted
  file and a removed subfolder (rows removed); a sibling folder whose name
  extends FOLDER's (photos2 next to photos) keeps its rows; a missing FOLDER
  fails and removes nothing; bad option combinations are refused;
- `serve --watch FOLDER` (SQLite run): the initial sync, then files created,
  rewritten, renamed and deleted, and the folder moved away and recreated,
  each seen through the HTTP search API (polled with a deadline), with the
  imgsearch_watch_* series in /metrics.

    sync_test.py IMGSEARCH SOURCE_DIR sqlite|pg
"""
import hashlib
import json
import os
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from ingest_common import check, finish, tiny_model, wait_for  # noqa: E402
from pgutil import PgServer, psql  # noqa: E402
from server_e2e import Serve  # noqa: E402

DEADLINE = 30


def write_bmp(path, seed, mtime=None):
    """A 16x16 24-bit BMP whose pixels depend on seed (always 822 bytes)."""
    px = bytes(((i * (seed * 7 + 3) + seed * 31) & 255) for i in range(16 * 16 * 3))
    hdr = b"BM" + struct.pack("<IHHI", 54 + len(px), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, 16, 16, 1, 24, 0, len(px), 0, 0, 0, 0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(hdr + info + px)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


class Catalogue:
    """The rows' sources and ids, read straight from the catalogue."""

    def __init__(self, data, url):
        self.data, self.url = data, url

    def rows(self):
        if self.url:
            out = psql(self.url, "SELECT source, id FROM images")
            return {ln.rsplit("|", 1)[0]: int(ln.rsplit("|", 1)[1])
                    for ln in out.splitlines() if ln.strip()}
        db = sqlite3.connect(os.path.join(self.data, "catalogue.db"))
        try:
            return dict(db.execute("SELECT source, id FROM images").fetchall())
        finally:
            db.close()


def run(exe, *args):
    p = subprocess.run([exe] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=300)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def add_sync_checks(exe, model, data, url, tmp):
    photos = os.path.join(tmp, "photos")
    sibling = os.path.join(tmp, "photos2")
    base = ["--data", data, "--model", model] + (["--catalogue", url] if url else [])
    cat = Catalogue(data, url)

    def sync(*folders):
        rc, out, err = run(exe, "add", "--sync", "--json", *(base + list(folders)))
        check(rc == 0, "add --sync exits 0 (rc %d: %s)" % (rc, err.strip()[-400:]))
        try:
            return json.loads(out)["syncs"]
        except (ValueError, KeyError):
            check(False, "add --sync --json prints JSON: %r" % out[:300])
            return [{}]

    for i, rel in enumerate(["a.bmp", "b.bmp", "c.bmp", "sub/d.bmp", "sub/e.bmp", "old/f.bmp"]):
        write_bmp(os.path.join(photos, rel), i + 1, mtime=1_000_000 + i)
    write_bmp(os.path.join(sibling, "s.bmp"), 50)
    with open(os.path.join(photos, "notes.txt"), "w") as f:
        f.write("not an image\n")
    s = sync(sibling)[0]
    check(s.get("added") == 1, "sibling folder synced: %r" % s)

    s = sync(photos)[0]
    check(s.get("folder") == os.path.realpath(photos), "summary names the folder: %r" % s)
    check(s.get("files") == 6 and s.get("added") == 6 and s.get("failed") == 0,
          "first sync adds the 6 images: %r" % s)
    rows = cat.rows()
    check(len(rows) == 7, "7 rows after the first syncs: %r" % rows)
    s = sync(photos)[0]
    check(s.get("unchanged") == 6 and s.get("files_read") == 0 and s.get("bytes_read") == 0 and
          s.get("added") == 0 and s.get("removed") == 0,
          "an unchanged folder is synced without reading a file: %r" % s)

    before = cat.rows()
    P = lambda rel: os.path.join(os.path.realpath(photos), rel)  # noqa: E731
    id_a = before.get(P("a.bmp"))
    rc, out, err = run(exe, "tag", *(base + [str(id_a), "--add", "Trip"]))
    check(rc == 0 and "Trip" in out, "a.bmp tagged (rc %d: %s %s)" % (rc, out, err))
    write_bmp(os.path.join(photos, "new.bmp"), 20)                      # new
    write_bmp(os.path.join(photos, "a.bmp"), 21, mtime=2_000_000)       # same size, new content
    os.utime(os.path.join(photos, "b.bmp"), (2_000_001, 2_000_001))    # touched only
    os.makedirs(os.path.join(photos, "moved"))
    os.rename(os.path.join(photos, "c.bmp"), os.path.join(photos, "moved", "c2.bmp"))  # renamed
    os.unlink(os.path.join(photos, "sub", "d.bmp"))                     # deleted
    shutil.rmtree(os.path.join(photos, "old"))                          # subfolder removed
    s = sync(photos)[0]
    want = {"files": 5, "added": 1, "changed": 1, "renamed": 1, "removed": 2, "unchanged": 2,
            "failed": 0}
    check(all(s.get(k) == v for k, v in want.items()), "changes between syncs: %r" % s)
    rows = cat.rows()
    check(P("moved/c2.bmp") in rows and rows[P("moved/c2.bmp")] == before.get(P("c.bmp")),
          "the renamed file keeps its row")
    check(P("c.bmp") not in rows and P("sub/d.bmp") not in rows and P("old/f.bmp") not in rows,
          "rows of gone files are removed")
    check(rows.get(P("b.bmp")) == before.get(P("b.bmp")), "the touched file keeps its row")
    check(rows.get(P("a.bmp")) == id_a, "the rewritten file keeps its row id")
    rc, out, err = run(exe, "tag", *(base + [str(id_a)]))
    check(rc == 0 and "Trip" in out, "the rewritten file keeps its tags: %r %s" % (out, err))
    rc, out, err = run(exe, "search", "--json", "-k", "1", "--image", P("a.bmp"), *base)
    try:
        top = json.loads(out)["results"][0]
    except (ValueError, KeyError, IndexError):
        top = {}
    check(rc == 0 and top.get("id") == id_a and top.get("score", 0) > 0.999,
          "a search with the new content finds the kept row first: %r %s" % (top, err[-300:]))
    check(P("new.bmp") in rows, "the new file is added")
    sib = os.path.join(os.path.realpath(sibling), "s.bmp")
    check(rows.get(sib) == before.get(sib), "the sibling photos2 keeps its row")
    check(len(rows) == 6, "6 rows in the end: %r" % sorted(rows))
    s = sync(photos)[0]
    check(s.get("unchanged") == 5 and s.get("files_read") == 0,
          "unchanged again, nothing read: %r" % s)

    rc, out, err = run(exe, "add", "--sync", *(base + [os.path.join(tmp, "missing")]))
    check(rc == 1 and "nothing removed" in err, "a missing folder fails (rc %d: %s)" % (rc, err))
    check(len(cat.rows()) == 6, "a missing folder removes nothing")
    rc, _, err = run(exe, "add", "--json", *(base + [photos]))
    check(rc == 2 and "--json goes with --sync" in err, "--json without --sync refused: %s" % err)
    rc, _, err = run(exe, "add", "--sync", "--from", "-", *base)
    check(rc == 2, "--sync with --from refused: %s" % err)


def metric(text, name, folder):
    m = re.search(r'^%s\{folder="%s"\} (\d+)$' % (re.escape(name), re.escape(folder)), text,
                  re.M)
    return int(m.group(1)) if m else None


def watch_checks(exe, model, tmp):
    data = os.path.join(tmp, "wdata")
    photos = os.path.join(tmp, "watched")
    write_bmp(os.path.join(photos, "one.bmp"), 1)
    srv = Serve(exe, data, model, extra=["--watch", photos], log=os.path.join(tmp, "serve.log"))
    real = os.path.realpath(photos)
    try:
        def sources():
            st, _, doc = srv.json("GET", "/api/v1/search?" +
                                  urllib.parse.urlencode({"q": "photo", "k": 100}))
            if st != 200 or not doc:
                return {}
            return {r["url"]: r["id"] for r in doc.get("results", [])}

        def seen(rel, present=True):
            return wait_for(lambda: (os.path.join(real, rel) in sources()) == present,
                            DEADLINE, 0.1)

        check(seen("one.bmp"), "watch: the initial sync is searchable")
        write_bmp(os.path.join(photos, "two.bmp"), 2)
        write_bmp(os.path.join(photos, "deep", "three.bmp"), 3)
        check(seen("two.bmp") and seen("deep/three.bmp"), "watch: created files are searchable")
        old = sources().get(os.path.join(real, "two.bmp"))
        write_bmp(os.path.join(photos, "two.bmp"), 22)
        two = os.path.join(photos, "two.bmp")
        with open(two, "rb") as f:
            new_sha = hashlib.sha256(f.read()).digest()

        def row_of_two():
            db = sqlite3.connect(os.path.join(data, "catalogue.db"))
            try:
                return db.execute("SELECT id, sha256 FROM images WHERE source = ?",
                                  (os.path.join(real, "two.bmp"),)).fetchone()
            finally:
                db.close()
        check(wait_for(lambda: row_of_two() == (old, new_sha), DEADLINE, 0.1),
              "watch: a rewritten file gets its new content in the same row (%r, id %r)"
              % (row_of_two(), old))
        check(sources().get(os.path.join(real, "two.bmp")) == old,
              "watch: the rewritten file is searchable under its id")
        def id_of(rel):
            """The row id of rel from a search that answered (a busy server's
            non-200 answer reads as no rows: asked again until the deadline)."""
            got = {}
            wait_for(lambda: got.update(sources()) or os.path.join(real, rel) in got,
                     DEADLINE, 0.1)
            return got.get(os.path.join(real, rel))
        one = id_of("one.bmp")
        os.rename(os.path.join(photos, "one.bmp"), os.path.join(photos, "uno.bmp"))
        uno = id_of("uno.bmp") if seen("uno.bmp") else None
        check(one is not None and uno == one,
              "watch: a renamed file keeps its id (one.bmp %r, uno.bmp %r)" % (one, uno))
        os.unlink(os.path.join(photos, "deep", "three.bmp"))
        check(seen("deep/three.bmp", False), "watch: a deleted file leaves the results")

        def metrics():
            st, _, body = srv.request("GET", "/metrics")
            return body.decode() if st == 200 else ""
        os.rename(photos, photos + ".away")
        check(wait_for(lambda: metric(metrics(), "imgsearch_watch_armed", real) == 0,
                       DEADLINE, 0.1), "watch: a moved folder is disarmed")
        check(os.path.join(real, "uno.bmp") in sources(), "watch: rows kept while it is away")
        write_bmp(os.path.join(photos, "back.bmp"), 5)
        check(seen("back.bmp"), "watch: a recreated folder is re-armed and synced")
        check(seen("uno.bmp", False), "watch: rows of files not in the new folder go")
        write_bmp(os.path.join(photos, "again.bmp"), 6)
        check(seen("again.bmp"), "watch: the recreated folder is watched")
        m = metrics()
        check("imgsearch_watch_folders 1" in m, "metrics: watched folders")
        check(metric(m, "imgsearch_watch_armed", real) == 1, "metrics: armed again")
        check((metric(m, "imgsearch_watch_rearms_total", real) or 0) >= 1, "metrics: re-arms")
        check((metric(m, "imgsearch_watch_syncs_total", real) or 0) >= 5, "metrics: syncs")
        check((metric(m, "imgsearch_watch_last_sync_seconds", real) or 0) > 0,
              "metrics: last sync time")
        check((metric(m, "imgsearch_watch_events_total", real) or 0) > 0, "metrics: events")
    finally:
        rc = srv.term()
        check(rc == 0, "serve --watch exits 0 on SIGTERM (rc %r)" % rc)
        srv.kill()
    bad = subprocess.run([exe, "serve", "--data", data, "--model", model, "--port", "0",
                          "--watch", os.path.join(tmp, "nope")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=120)
    check(bad.returncode == 1 and b"is not a folder" in bad.stderr,
          "serve --watch of a missing folder fails: %r" % bad.stderr[-300:])


def backend_main(name, checks, sqlite_checks):
    """The main of the sync tests (argv: the binary, the source tree, "sqlite"
    or "pg"): a temporary folder with the tiny model, then checks(exe, model,
    data, url, tmp) on that backend (url None: SQLite in data; else a fresh
    database of a throwaway PostgreSQL server), and on SQLite also
    sqlite_checks(exe, model, tmp); the folder is removed in any case."""
    exe, src, backend = sys.argv[1], sys.argv[2], sys.argv[3]
    tmp = tempfile.mkdtemp(prefix="ims-%s-" % name.replace("_", ""))
    try:
        model = tiny_model(src, os.path.join(tmp, "model"))
        data = os.path.join(tmp, "data")
        if backend == "pg":
            with PgServer() as pg:
                checks(exe, model, data, pg.new_database(), tmp)
        else:
            checks(exe, model, data, None, tmp)
            sqlite_checks(exe, model, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finish(name + " " + backend)


def main():
    backend_main("sync_test", add_sync_checks, watch_checks)


if __name__ == "__main__":
    main()
