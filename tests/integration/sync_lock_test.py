#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""One folder sync per catalogue at a time (issue 10 leftover), with the tiny
CLIP model over generated BMP files, on SQLite or PostgreSQL:

- while another holder has the catalogue's sync lock (this script takes it
  as a second process would: flock on DATA/sync.lock, or the PostgreSQL
  session advisory lock through psql), `add --sync` refuses at once with
  exit status 75 and "another sync of this catalogue is running", and the
  catalogue is unchanged; once the lock is free the same command works;
- two `add --sync FOLDER` started together: each either syncs or refuses
  (75), at least one syncs, no file is counted twice (no duplicates, each
  file added exactly once over both runs) and the catalogue holds each
  file once;
- SQLite: `serve --watch` whose sync finds the lock held puts it off
  (imgsearch_watch_deferred_total counts it, nothing is added), then syncs
  once the lock is free; while it watches, a CLI `add --sync` of another
  folder of the same catalogue runs (the lock is held only during a sync).

    sync_lock_test.py IMGSEARCH SOURCE_DIR sqlite|pg
"""
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from ingest_common import check, wait_for  # noqa: E402
from pgutil import psql  # noqa: E402
from server_e2e import Serve  # noqa: E402
from sync_test import Catalogue, backend_main, metric, run, write_bmp  # noqa: E402

DEADLINE = 60
N_FILES = 40
PG_SYNC_LOCK = 0x696d7379  # store_sync_lock.c STORE_PG_SYNC_LOCK
EX_TEMPFAIL = 75


class HeldLock:
    """The catalogue's sync lock, held by this script (another process)."""

    def __init__(self, data, url):
        self.data, self.url, self.f, self.p = data, url, None, None

    def __enter__(self):
        if self.url:
            self.p = subprocess.Popen(["psql", "-X", "-q", "-tA", "-d", self.url],
                                      stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, text=True)
            self.p.stdin.write("SELECT pg_advisory_lock(%d);\n" % PG_SYNC_LOCK)
            self.p.stdin.flush()
            q = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                 " AND objid = %d AND pid <> pg_backend_pid()" % PG_SYNC_LOCK)
            if not wait_for(lambda: psql(self.url, q).strip() == "1", DEADLINE, 0.05):
                raise RuntimeError("psql did not take the advisory lock")
        else:
            self.f = open(os.path.join(self.data, "sync.lock"), "a+")
            fcntl.flock(self.f, fcntl.LOCK_EX)
            self.f.truncate(0)
            self.f.write("%d\n" % os.getpid())
            self.f.flush()
        return self

    def __exit__(self, *exc):
        if self.p:
            self.p.stdin.close()  # psql ends, its session and lock with it
            self.p.wait(timeout=60)
        if self.f:
            self.f.truncate(0)
            self.f.close()


def checks(exe, model, data, url, tmp):
    base = ["--data", data, "--model", model] + (["--catalogue", url] if url else [])
    cat = Catalogue(data, url)
    photos = os.path.join(tmp, "photos")
    empty = os.path.join(tmp, "empty")
    os.makedirs(empty)
    for i in range(N_FILES):
        write_bmp(os.path.join(photos, "sub%d" % (i % 3), "p%02d.bmp" % i), i + 1)
    rc, _, err = run(exe, "add", "--sync", *(base + [empty]))  # makes the catalogue
    check(rc == 0, "sync of an empty folder (rc %d: %s)" % (rc, err[-300:]))

    # ---- the lock held elsewhere: refused at once, nothing changed
    with HeldLock(data, url):
        rc, out, err = run(exe, "add", "--sync", "--json", *(base + [photos]))
        check(rc == EX_TEMPFAIL, "add --sync while the lock is held exits 75 (rc %d: %s)"
              % (rc, err[-300:]))
        check("another sync of this catalogue is running" in err and
              "try again when it has finished" in err, "the refusal says why: %r" % err[-300:])
        if not url:
            check("(process %d)" % os.getpid() in err, "and names the holder: %r" % err[-300:])
        check(cat.rows() == {}, "nothing added while refused")
        try:
            check(json.loads(out) == {"syncs": []}, "--json: no sync ran: %r" % out)
        except ValueError:
            check(False, "--json output is JSON when refused: %r" % out)
    rc, out, err = run(exe, "add", "--sync", "--json", *(base + [photos]))
    check(rc == 0, "the same sync once the lock is free (rc %d: %s)" % (rc, err[-300:]))
    check(len(cat.rows()) == N_FILES, "every file added: %d" % len(cat.rows()))

    # ---- two at once, over new content (the catalogue emptied first)
    shutil.rmtree(photos)
    os.makedirs(photos)
    rc, _, err = run(exe, "add", "--sync", *(base + [photos]))
    check(rc == 0 and cat.rows() == {}, "the rows of the emptied folder are gone (%s)" % err)
    for i in range(N_FILES):
        write_bmp(os.path.join(photos, "sub%d" % (i % 3), "q%02d.bmp" % i), 100 + i)
    cmd = [exe, "add", "--sync", "--json"] + base + [photos]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    res = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    rcs = [r[2] for r in res]
    print("two syncs at once: exit statuses %r" % rcs, flush=True)
    check(all(rc in (0, EX_TEMPFAIL) for rc in rcs) and 0 in rcs,
          "two syncs at once: each syncs or refuses, one syncs: %r %r" % (rcs, [r[1][-300:]
                                                                               for r in res]))
    added = dups = failed = 0
    for out, err, rc in res:
        if rc == EX_TEMPFAIL:
            check("another sync of this catalogue is running" in err, "refusal: %r" % err)
            continue
        try:
            s = json.loads(out)["syncs"][0]
        except (ValueError, KeyError, IndexError):
            check(False, "summary JSON: %r" % out)
            continue
        added += s.get("added", 0)
        dups += s.get("duplicates", 0)
        failed += s.get("failed", 0)
        check(s.get("added") == N_FILES or s.get("unchanged") == N_FILES,
              "a run either added everything or found everything in place: %r" % s)
    check(added == N_FILES and dups == 0 and failed == 0,
          "no file handled twice: added %d, duplicates %d, failed %d" % (added, dups, failed))
    rows = cat.rows()
    check(len(rows) == N_FILES and
          all(s.startswith(os.path.realpath(photos) + "/") for s in rows),
          "each file once in the catalogue: %d rows" % len(rows))


def watch_checks(exe, model, tmp):
    data = os.path.join(tmp, "wdata")
    watched = os.path.join(tmp, "watched")
    other = os.path.join(tmp, "other")
    write_bmp(os.path.join(watched, "w1.bmp"), 201)
    write_bmp(os.path.join(other, "o1.bmp"), 202)
    base = ["--data", data, "--model", model]
    rc, _, err = run(exe, "add", "--sync", *(base + [other]))
    check(rc == 0, "catalogue made (rc %d: %s)" % (rc, err[-300:]))
    cat = Catalogue(data, None)
    real = os.path.realpath(watched)
    lock = HeldLock(data, None).__enter__()
    srv = Serve(exe, data, model, extra=["--watch", watched], log=os.path.join(tmp, "serve.log"))
    try:
        def metrics():
            st, _, body = srv.request("GET", "/metrics")
            return body.decode() if st == 200 else ""

        check(wait_for(lambda: (metric(metrics(), "imgsearch_watch_deferred_total", real)
                                or 0) >= 1, DEADLINE, 0.05),
              "watch: the sync is put off while another holds the lock")
        check(os.path.join(real, "w1.bmp") not in cat.rows(), "watch: nothing added meanwhile")
        check(metric(metrics(), "imgsearch_watch_syncs_total", real) == 0, "watch: no sync yet")
        lock.__exit__(None, None, None)
        lock = None

        def searchable():
            st, _, doc = srv.json("GET", "/api/v1/search?" +
                                  urllib.parse.urlencode({"q": "photo", "k": 100}))
            return st == 200 and os.path.join(real, "w1.bmp") in [r["url"] for r in
                                                                 doc.get("results", [])]
        check(wait_for(searchable, DEADLINE, 0.1), "watch: synced once the lock is free")
        write_bmp(os.path.join(other, "o2.bmp"), 203)
        # the watcher holds the lock only while it syncs: a CLI sync of another
        # folder of the catalogue runs (waiting out a sync the watcher may run)
        rc = EX_TEMPFAIL
        end = time.monotonic() + DEADLINE
        while rc == EX_TEMPFAIL and time.monotonic() < end:
            rc, _, err = run(exe, "add", "--sync", *(base + [other]))
        check(rc == 0, "a CLI sync while serve --watch runs (rc %d: %s)" % (rc, err[-300:]))
        check(os.path.join(os.path.realpath(other), "o2.bmp") in cat.rows(), "CLI sync added")
    finally:
        if lock:
            lock.__exit__(None, None, None)
        rc = srv.term()
        check(rc == 0, "serve --watch exits 0 on SIGTERM (rc %r)" % rc)
        srv.kill()


def main():
    backend_main("sync_lock_test", checks, watch_checks)


if __name__ == "__main__":
    main()
