#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A running node left below the trimmed change feed rebuilds live (issue 9).

    cluster_trim_test.py EXE SRC sqlite|pg

Node A trims the feed to its newest change every second (--feed-keep 1
--feed-trim-seconds 1); node B never trims. B is frozen (SIGSTOP) while an
image is deleted and three are added through A and A trims past them; then
B is resumed. Checked: A counts its trims in /metrics; B notices it is
below the floor, rebuilds while it keeps answering, and afterwards
(imgsearch_replica_rebuilds_total up, imgsearch_replica_behind_floor 0)
returns the same top-10 as A and as a node started fresh, no longer finds
the deleted image and 404s it (its row cache held it before), and finds the
new ones. Loopback only; waits are bounded, never asserted as timings.
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_test import PROPAGATE_S, Node, same_everywhere  # noqa: E402
from ingest_common import check, finish, fixture_images, tiny_model, wait_for  # noqa: E402


def metric(node, name):
    st, body = node.request("GET", "/metrics")
    text = body.decode() if isinstance(body, bytes) else str(body)
    m = re.search(r"^%s (\d+)" % re.escape(name), text, re.M)
    return int(m.group(1)) if st == 200 and m else -1


def run(exe, src, tmp, catalogue):
    model = tiny_model(src, os.path.join(tmp, "model"))
    images = fixture_images(src)
    check(len(images) >= 8, "enough fixture images (%d)" % len(images))
    shared = os.path.join(tmp, "shared")
    cat_args = ["--catalogue", catalogue] if catalogue else ["--data", shared]

    def cli(*args):
        cmd = [exe, args[0]] + cat_args + ["--model", model] + list(args[1:])
        env = dict(os.environ)
        env.pop("IMGSEARCH_CATALOGUE", None)
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300,
                           env=env)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    where = dict(catalogue=catalogue) if catalogue else dict(data=shared)
    rc, out, err = cli("add", *images[:5])
    check(rc == 0, "CLI add of 5 images (rc %d: %s)" % (rc, err.strip()))
    a = Node(exe, "A", model, tmp, extra=["--feed-keep", "1", "--feed-trim-seconds", "1"],
             **where)
    b = Node(exe, "B", model, tmp, extra=["--feed-keep", "0"], **where)
    nodes = [a, b]
    frozen = False
    try:
        for n in nodes:
            n.wait_ready()
        probe = {"text": "a photo"}
        before = b.ids(probe)
        check(len(before) == 5, "B finds the 5 rows (%r)" % before)
        victim = sorted(before)[0]
        st, _ = b.request("GET", "/api/v1/images/%d" % victim)
        check(st == 200, "B serves the row it will miss the delete of (%s)" % st)
        rebuilds0 = metric(b, "imgsearch_replica_rebuilds_total")
        check(rebuilds0 >= 0, "B's /metrics counts rebuilds (%d)" % rebuilds0)

        b_seq = metric(b, "imgsearch_replica_seq")
        b.p.send_signal(signal.SIGSTOP)
        frozen = True
        st, res = a.request("DELETE", "/api/v1/images/%d" % victim)
        check(st == 200 and res == {"deleted": victim}, "DELETE on A (%s %r)" % (st, res))
        rc, out, err = cli("add", *images[5:8])
        check(rc == 0, "CLI add while B is frozen (rc %d: %s)" % (rc, err.strip()))
        added = {int(line.split()[1]) for line in out.splitlines() if line.startswith("added ")}
        check(len(added) == 3, "3 new ids (%r)" % out)
        # a trim may run between any two of these steps: wait for the floor
        # itself to pass what B covers, not for the trim counter to move
        def floor():
            rc, out, _ = cli("stats")
            return json.loads(out)["feed"]["floor"] if rc == 0 else -1
        check(wait_for(lambda: floor() > b_seq, PROPAGATE_S, 0.2),
              "A trims the feed past the changes B missed (floor %d, B at %d)" % (floor(), b_seq))
        check(metric(a, "imgsearch_replica_feed_trims_total") > 0, "A counts its trims")
        b.p.send_signal(signal.SIGCONT)
        frozen = False

        def rebuilt():
            return (metric(b, "imgsearch_replica_rebuilds_total") > rebuilds0 and
                    metric(b, "imgsearch_replica_behind_floor") == 0)
        check(wait_for(rebuilt, PROPAGATE_S, 0.05),
              "B rebuilds live and its behind-floor gauge drops (log: %s)" % b.stderr()[-800:])
        check("rebuilt from the catalogue while serving" in b.stderr(),
              "B logs the live rebuild")
        check(victim not in b.ids(probe), "B no longer finds the image deleted on A")
        st, _ = b.request("GET", "/api/v1/images/%d" % victim)
        check(st == 404, "B 404s the deleted row (its cache held it) (%s)" % st)
        check(added <= b.ids(probe), "B finds the 3 images added while it was frozen")
        c = Node(exe, "C", model, tmp, extra=["--feed-keep", "0"], **where)
        nodes.append(c)
        c.wait_ready()
        same_everywhere(nodes, "after the live rebuild")
        # B follows the feed again
        rc, out, err = cli("add", images[8] if len(images) > 8 else images[0])
        check(rc == 0, "CLI add after the rebuild (rc %d: %s)" % (rc, err.strip()))
        same_after = wait_for(lambda: b.ids(probe) == a.ids(probe), PROPAGATE_S, 0.05)
        check(same_after, "B follows the feed again after the rebuild")
    finally:
        if frozen:
            b.p.send_signal(signal.SIGCONT)
        for n in nodes:
            rc = n.stop()
            check(rc == 0, "%s exits 0 on SIGTERM (rc %s: %s)" % (n.name, rc, n.stderr()[-600:]))


def main():
    exe, src, backend = sys.argv[1], sys.argv[2], sys.argv[3]
    with tempfile.TemporaryDirectory(prefix="ims_cluster_trim_") as tmp:
        if backend == "pg":
            from pgutil import PgServer
            with PgServer() as pg:
                run(exe, src, tmp, pg.new_database())
        else:
            run(exe, src, tmp, None)
    finish("cluster_trim_test " + backend)


if __name__ == "__main__":
    main()
