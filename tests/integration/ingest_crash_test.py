#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""kill -9 during `imgsearch add`: nothing acknowledged is lost, the data
folder stays consistent, and running the same add again completes the rest
without storing anything twice.

    ingest_crash_test.py IMGSEARCH SOURCE_DIR

~300 distinct small PNGs are served from a loopback server with a delay per
request. `add --from urls.txt` runs with stdout to a file and is killed
(SIGKILL) once some "added" lines appeared, in two rounds at two different
moments; after each kill every reported id must be stored under its source
and findable by its own picture. A last run completes the job; then the
catalogue holds exactly one row per distinct image. A killed run may have
committed its last group without printing it: a later run reports those rows
as duplicates of ids that were in the catalogue after the kill. The job runs
with 4 downloads in flight and the server waits 40 ms per request, so that it
cannot finish before the kill.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_common import (Cli, HostileServer, check, finish, kill_quietly,  # noqa: E402
                           parse_add_output, tiny_model, wait_for)
from hostile_server import png_bytes  # noqa: E402

N_IMAGES = 300


def count_added(path):
    try:
        with open(path) as f:
            return sum(1 for line in f if line.startswith("added "))
    except OSError:
        return 0


def main():
    exe, src = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="ims_ingest_crash_")
    server = None
    procs = []
    try:
        root = os.path.join(tmp, "root")
        os.makedirs(root)
        for i in range(N_IMAGES):
            with open(os.path.join(root, "g%03d.png" % i), "wb") as f:
                f.write(png_bytes(48 + i % 17, 40 + i % 13, i))
        server = HostileServer(root, delay_ms=40, max_life=280)
        run(exe, src, tmp, root, server, procs)
    finally:
        for p in procs:
            kill_quietly(p)
        if server:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    finish("ingest_crash_test")


def run(exe, src, tmp, root, server, procs):
    cli = Cli(exe, tiny_model(src, os.path.join(tmp, "model")), os.path.join(tmp, "data"))
    names = sorted(os.listdir(root))
    url_of = {n: server.url("/files/" + n) for n in names}
    name_of = {u: n for n, u in url_of.items()}
    urls = os.path.join(tmp, "urls.txt")
    with open(urls, "w") as f:
        f.write("\n".join(url_of[n] for n in names) + "\n")

    acknowledged = {}  # url -> id, every "added" line of every killed run
    known_ids = set()  # ids found in the catalogue after a kill
    rng = random.Random(7)
    # kill after the first few rows, then later in the second run
    for rnd, (min_lines, extra_s) in enumerate(((5, 0.0), (60, 0.3))):
        out_path = os.path.join(tmp, "add%d.out" % rnd)
        with open(out_path, "w") as out:
            p = subprocess.Popen([exe, "add", "--data", cli.data, "--model", cli.model,
                                  "--allow-private-urls", "--batch", "8", "--in-flight", "4",
                                  "--from", urls],
                                 stdout=out, stderr=subprocess.DEVNULL)
            procs.append(p)
            target = len(acknowledged) + min_lines
            seen = wait_for(lambda: count_added(out_path) >= min_lines or p.poll() is not None,
                            60)
            if extra_s:
                wait_for(lambda: p.poll() is not None, extra_s)
            finished = p.poll() is not None
            p.send_signal(signal.SIGKILL)
            p.wait()
        check(seen and not finished, "round %d: killed while adding (finished early: %s)" %
              (rnd, finished))
        with open(out_path) as f:
            r = parse_add_output(f.read())
        check(not r["failed"], "round %d: no failures: %s" % (rnd, list(r["failed"].items())[:3]))
        for u, i in r["duplicate"].items():
            # committed by an earlier run just before its kill, maybe unreported
            check(acknowledged.get(u, i) == i and i in known_ids,
                  "round %d: duplicate %s keeps its id %d (was %s)" %
                  (rnd, u, i, acknowledged.get(u)))
        for u, i in r["added"].items():
            check(u not in acknowledged, "round %d: %s added twice" % (rnd, u))
            acknowledged[u] = i
        check(len(acknowledged) >= target,
              "round %d: %d rows acknowledged" % (rnd, len(acknowledged)))
        st = cli.stats()
        print("round %d: killed with %d rows acknowledged, %s in the catalogue" %
              (rnd, len(acknowledged), st.get("images")), flush=True)
        check(st.get("images", -1) >= len(acknowledged),
              "round %d: stats images %s >= %d acknowledged" % (rnd, st.get("images"),
                                                               len(acknowledged)))
        # every acknowledged row is there, under its source, found by its picture
        rc, out, err = cli.run("search", "--json", "-k", "1000", "a picture")
        if check(rc == 0, "round %d: search after kill (%s)" % (rnd, err.strip())):
            stored = {x["url"]: x["id"] for x in json.loads(out)["results"]}
            known_ids.update(stored.values())
            missing = [u for u, i in acknowledged.items() if stored.get(u) != i]
            check(not missing, "round %d: acknowledged rows missing: %s" % (rnd, missing[:5]))
            check(len(stored) == st.get("images"),
                  "round %d: the index holds the %s catalogue rows (%d)" %
                  (rnd, st.get("images"), len(stored)))
            check(all(u in name_of for u in stored), "round %d: only known sources stored" % rnd)
        for u in rng.sample(sorted(acknowledged), min(4, len(acknowledged))):
            res = cli.search_image(os.path.join(root, name_of[u]), k=1)
            check(res and res[0]["id"] == acknowledged[u] and abs(res[0]["score"] - 1) < 1e-3,
                  "round %d: %s finds itself (id %d): %s" % (rnd, name_of[u], acknowledged[u],
                                                            res))

    # complete the job
    rc, out, err = cli.run("add", "--allow-private-urls", "--batch", "8", "--from", urls,
                           timeout=200)
    check(rc == 0, "final add exits 0 (rc %d: %s)" % (rc, err.strip()[-300:]))
    r = parse_add_output(out)
    check(not r["failed"] and not r["other"], "final add: no failures: %s %s" %
          (list(r["failed"].items())[:3], r["other"][:3]))
    for u, i in acknowledged.items():
        check(r["duplicate"].get(u) == i, "final add: %s is a duplicate of %d (got %s)" %
              (u, i, r["duplicate"].get(u)))
    check(set(r["added"]) | set(r["duplicate"]) == set(url_of.values()),
          "final add: every URL reported once (%d added + %d duplicates)" %
          (len(r["added"]), len(r["duplicate"])))
    check(not set(r["added"]) & set(acknowledged), "final add: nothing acknowledged re-added")
    st = cli.stats()
    check(st.get("images") == N_IMAGES, "final stats images %s == %d distinct images" %
          (st.get("images"), N_IMAGES))
    rc, out, err = cli.run("search", "--json", "-k", "1000", "a picture")
    if check(rc == 0, "final search (%s)" % err.strip()):
        res = json.loads(out)["results"]
        check(len(res) == N_IMAGES and len({x["url"] for x in res}) == N_IMAGES,
              "final search: %d rows, one per image" % len(res))


if __name__ == "__main__":
    main()
