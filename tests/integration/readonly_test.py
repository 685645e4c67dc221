#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Read-only commands never create a catalogue: `stats` and `search` on a
data folder that does not exist, or exists without a catalogue, fail with a
clear error naming it and leave nothing behind; once `add` has made the
catalogue they work. (`stats --data NONEXISTENT` used to create a catalogue
recorded for model "(any)", dim 1.)

    readonly_test.py IMGSEARCH SOURCE_DIR
"""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_common import Cli, check, finish, tiny_model  # noqa: E402


def refused(cli, what, *args, model=None):
    rc, out, err = cli.run(*args, model=model)
    check(rc != 0, "%s: exits non-zero (rc %d)" % (what, rc))
    check(out == "", "%s: prints nothing on stdout (%r)" % (what, out[:200]))
    check("holds no catalogue" in err and cli.data in err,
          "%s: the error names the folder and says why (%r)" % (what, err.strip()))
    check("imgsearch add" in err, "%s: the error says how to make one (%r)" % (what, err.strip()))


def main():
    exe, src = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="ims_readonly_")
    try:
        model = tiny_model(src, os.path.join(tmp, "model"))
        missing = os.path.join(tmp, "nowhere")
        cli = Cli(exe, model, missing)
        refused(cli, "stats on a missing folder", "stats", model=False)
        refused(cli, "search on a missing folder", "search", "a cat")
        check(not os.path.exists(missing), "the missing folder was not created")

        empty = os.path.join(tmp, "empty")
        os.makedirs(empty)
        cli = Cli(exe, model, empty)
        refused(cli, "stats on a folder without a catalogue", "stats", model=False)
        refused(cli, "search on a folder without a catalogue", "search", "a cat")
        check(os.listdir(empty) == [], "nothing was written into the empty folder (%s)"
              % os.listdir(empty))

        images = os.path.join(src, "tests/golden/clip/images")
        rc, out, err = cli.run("add", images)
        check(rc == 0, "add makes the catalogue (rc %d: %s)" % (rc, err.strip()))
        st = cli.stats()
        check(st.get("images", 0) > 0 and st.get("dim") == 32,
              "stats then reads it: %s" % st)
        rc, out, err = cli.run("search", "--json", "-k", "3", "a cat")
        check(rc == 0 and '"results"' in out, "search then reads it (rc %d: %s)"
              % (rc, err.strip()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finish("readonly_test")


if __name__ == "__main__":
    main()
