#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A node killed in the middle of a job and restarted under the same
--node-id takes its claims back at once (issue 9), on loopback only.

    ingest_restart_test.py IMGSEARCH SOURCE_DIR sqlite|pg

Leases are 600 s, so nothing but the restart's release can make the job
end within the test's bounds. Checked: at the kill the node holds claims;
restarted, it logs how many of its earlier run's items it released, the
job ends done with every image stored once, and every item is recorded as
"added" (outcome 0: each image was new -- an item whose row the killed run
had committed without recording the item finds that row, its own, and is
not a duplicate of itself). Waits are bounded, never asserted as timings.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_cluster_test import Catalogue, Node, urls_of, wait_job  # noqa: E402
from ingest_common import (HostileServer, check, finish, png_folder, stop_all,  # noqa: E402
                           tiny_model, wait_for)

N = 12
LONG = ["--lease-seconds", "600", "--claim-batch", "4"]


def main():
    exe, src, backend = sys.argv[1], sys.argv[2], sys.argv[3]
    tmp = tempfile.mkdtemp(prefix="ims_restart_")
    nodes, pics, pg = [], None, None
    try:
        root = png_folder(tmp, N, 1000)
        pics = HostileServer(root, delay_ms=1000, max_life=600)
        model = tiny_model(src, os.path.join(tmp, "model"))
        if backend == "pg":
            from pgutil import PgServer
            pg = PgServer().__enter__()
            url = pg.new_database()
            cat = Catalogue("pg", None, url)
            args = ["--catalogue", url]
        else:
            data = os.path.join(tmp, "data")
            cat = Catalogue("sqlite", data, None)
            args = ["--data", data]

        def start(log):
            n = Node(exe, model, "node-r", args, os.path.join(tmp, log), LONG)
            nodes.append(n)
            return n

        a = start("first.log")
        urls = urls_of(pics, 0, N)
        st, body = a.json("POST", "/api/v1/images", {"urls": urls})
        jid = (body or {}).get("job", "none")
        check(st == 202, "job accepted (%s %r)" % (st, body))
        # progress and claims read in ONE query (one snapshot): two reads
        # straddled the last commit under load (done from before it, claims
        # from after it) and missed the window; each download takes 1 s, so
        # the node holds the last batch's claims for at least that long
        def progress_and_claims():
            r = cat.rows("SELECT (SELECT done FROM jobs WHERE id = ?), (SELECT count(*) FROM "
                         "job_items WHERE job_id = ? AND state = 1 AND claimed_by = ?)",
                         (jid, jid, "node-r"))[0]
            return int(r[0] or 0), int(r[1] or 0)
        held = wait_for(lambda: (lambda d, c: d >= 2 and c > 0)(*progress_and_claims()),
                        60, 0.02)
        check(held, "the node holds claims of the running job")
        a.kill()
        left = cat.claimed_now(jid, "node-r")
        check(left > 0, "claims of the killed run remain (%d)" % left)
        b = start("second.log")
        job = wait_job(b, jid, 120)
        check(job and job["state"] == "done" and job["done"] == N and job["failed"] == 0,
              "the job ends done %d after the restart, long before a lease could lapse (%r)"
              % (N, job))
        check(wait_for(lambda: "earlier run of node node-r: released" in b.stderr(), 10, 0.05),
              "the restarted node logs the claims it took back (%s)" % b.stderr()[-600:])
        stored = cat.sources(pics.url("/files/"))
        check(len(stored) == len(set(stored)) == N,
              "every image stored once (%d rows, %d distinct)" % (len(stored), len(set(stored))))
        outcomes = [int(r[0]) for r in cat.rows(
            "SELECT outcome FROM job_items WHERE job_id = ? ORDER BY idx", (jid,))]
        check(outcomes == [0] * N, "every item recorded as added, none as a duplicate of "
              "itself: %r" % outcomes)
        b.stop()
        check(b.p.returncode == 0, "stops cleanly (rc %s)" % b.p.returncode)
    finally:
        stop_all(nodes, pics, pg, tmp)
    finish("ingest_restart_test " + backend)


if __name__ == "__main__":
    main()
