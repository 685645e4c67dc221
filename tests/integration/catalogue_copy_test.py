#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""catalogue_copy_test.py IMGSEARCH SOURCE_DIR: the catalogue on PostgreSQL.

A data folder gets 200 imported rows and one added image (with a
thumbnail), one row is deleted (a gap in the ids); `catalogue copy` moves
it to a fresh PostgreSQL database and back to a new folder: the JSON
summaries say verified, the checksums of the three catalogues are equal,
and the ids, sources and thumbnails survive. `stats` and `search` work with
--catalogue URL (and IMGSEARCH_CATALOGUE). A non-empty destination is
refused and left as it was; an unreachable server is an error naming
host:port without the password. The server is the CTest fixture's, or one
started here (tests/pg/pg_server.sh).
"""
import json
import os
import random
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_common import check, failures as FAILS, run, tiny_model, write_npy  # noqa: E402
from pgutil import PgServer, psql  # noqa: E402


def main():
    bin_, src = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="ims_it_catalogue_")
    try:
        with PgServer() as pg:
            model = tiny_model(src, os.path.join(tmp, "model"))
            a = os.path.join(tmp, "a")
            rnd = random.Random(3)
            rows = [[rnd.gauss(0, 1) for _ in range(32)] for _ in range(200)]
            npy = os.path.join(tmp, "v.npy")
            write_npy(npy, rows)
            srcs = os.path.join(tmp, "s.txt")
            with open(srcs, "w") as f:
                f.write("".join("https://example.test/%d.jpg\n" % i for i in range(200)))
            rc, _, err = run(bin_, "import", "--data", a, "--model", model, "--vectors", npy,
                             "--sources", srcs)
            check(rc == 0, "import: %s" % err)
            img = os.path.join(tmp, "rgb.png")
            shutil.copy(os.path.join(src, "tests/golden/clip/images/rgb.png"), img)
            rc, _, err = run(bin_, "add", "--data", a, "--model", model, img)
            check(rc == 0, "add: %s" % err)
            rc, _, err = run(bin_, "rm", "--data", a, "7")
            check(rc == 0, "rm: %s" % err)

            url = pg.new_database()
            rc, out, err = run(bin_, "catalogue", "copy", "--from", a, "--to", url,
                               "--chunk", "64")
            check(rc == 0, "copy to PostgreSQL: %s" % err)
            s1 = json.loads(out) if rc == 0 else {}
            check(s1.get("verified") is True, "first copy verified: %s" % out)
            check(s1.get("images") == 200, "200 images copied: %s" % out)
            check(s1.get("thumbnails") == 1, "the added image's thumbnail copied: %s" % out)
            check(s1.get("backend_to") == "postgresql", "destination is PostgreSQL")
            ids = psql(url, "SELECT min(id), max(id), count(*) FROM images").strip()
            check(ids == "1|201|200", "ids kept, gap included: %s" % ids)
            check(psql(url, "SELECT count(*) FROM images WHERE id = 7").strip() == "0",
                  "the deleted id stays absent")

            rc, out, err = run(bin_, "stats", "--catalogue", url, "--data",
                               os.path.join(tmp, "cache1"))
            check(rc == 0 and json.loads(out)["images"] == 200, "stats on PostgreSQL: %s %s"
                  % (out, err))
            env = dict(os.environ, IMGSEARCH_CATALOGUE=url)
            rc, out, err = run(bin_, "search", "--data", os.path.join(tmp, "cache2"),
                               "--model", model, "--json", "-k", "3", "--image", img, env=env)
            check(rc == 0, "search through IMGSEARCH_CATALOGUE: %s" % err)
            check(os.path.realpath(img) in out, "search finds the added image: %s" % out)

            # a non-empty destination is refused and left alone
            rc, _, err = run(bin_, "catalogue", "copy", "--from", a, "--to", url)
            check(rc != 0 and "not empty" in err, "non-empty destination refused: %s" % err)
            check(psql(url, "SELECT count(*) FROM images").strip() == "200",
                  "refused copy changed nothing")

            b = os.path.join(tmp, "b")
            rc, out, err = run(bin_, "catalogue", "copy", "--from", url, "--to", b)
            check(rc == 0, "copy back to a folder: %s" % err)
            s2 = json.loads(out) if rc == 0 else {}
            check(s2.get("verified") is True, "second copy verified")
            check(s1.get("sha256_from") == s2.get("sha256_from") == s2.get("sha256_to"),
                  "round trip: the same checksum in all three catalogues")
            rc, out, _ = run(bin_, "stats", "--data", b)
            check(rc == 0 and json.loads(out)["images"] == 200, "the copy back has 200 rows")

            # a source that does not exist is refused, and not created
            nothing = os.path.join(tmp, "nothing")
            rc, _, err = run(bin_, "catalogue", "copy", "--from", nothing, "--to",
                             os.path.join(tmp, "c"))
            check(rc != 0 and "no catalogue" in err and not os.path.exists(nothing),
                  "missing source refused, not created: %s" % err)
            empty_db = pg.new_database()
            rc, _, err = run(bin_, "catalogue", "copy", "--from", empty_db, "--to",
                             os.path.join(tmp, "c"))
            check(rc != 0 and "no catalogue" in err, "empty database as source refused: %s" % err)
            check(psql(empty_db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
                  .strip() == "0", "nothing created in the empty source database")

            rc, _, err = run(bin_, "stats", "--catalogue",
                             "postgresql://postgres:sekrit@127.0.0.1:1/x")
            check(rc != 0 and "127.0.0.1:1" in err and "sekrit" not in err and "***" in err,
                  "unreachable server: host:port named, password masked: %s" % err)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if FAILS:
        print("%d check(s) failed" % len(FAILS))
        return 1
    print("catalogue copy: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
