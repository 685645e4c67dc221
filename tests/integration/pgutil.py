# SPDX-License-Identifier: MIT
"""pgutil: PostgreSQL for integration tests.

    from pgutil import PgServer
    with PgServer() as pg:           # reuses the CTest fixture's server if any
        url = pg.new_database()      # postgresql://postgres@127.0.0.1:PORT/ims_it_...
        ... run imgsearch --catalogue url ...

The server comes from IMS_TEST_PG_URL, else the fixture's IMS_TEST_PG_DIR
(file `url`), else one is started here with tests/pg/pg_server.sh and
stopped on exit. Every database made by new_database() is dropped on exit.
Uses psql (postgresql-client) so no Python driver is needed.
"""
import os
import re
import subprocess
import tempfile
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
PG_SERVER_SH = os.path.join(HERE, "..", "pg", "pg_server.sh")


def _with_db(url, db):
    m = re.match(r"^(postgres(?:ql)?://[^/?]*)(/[^?]*)?(\?.*)?$", url)
    if not m:
        raise ValueError("not a PostgreSQL URL")
    return m.group(1) + "/" + db + (m.group(3) or "")


def psql(url, sql):
    """Runs SQL, returns stdout (tuples only, unaligned)."""
    out = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-tA", "-d", url, "-c", sql],
                         check=True, capture_output=True, text=True)
    return out.stdout


class PgServer:
    def __init__(self):
        self.admin_url = None
        self._state = None
        self._dbs = []

    def __enter__(self):
        url = os.environ.get("IMS_TEST_PG_URL")
        d = os.environ.get("IMS_TEST_PG_DIR")
        if not url and d and os.path.exists(os.path.join(d, "url")):
            with open(os.path.join(d, "url")) as f:
                url = f.read().strip()
        if not url:
            self._state = tempfile.mkdtemp(prefix="ims-pgstate-")
            url = subprocess.run([PG_SERVER_SH, "start", self._state], check=True,
                                 capture_output=True, text=True).stdout.strip()
        self.admin_url = url
        return self

    def new_database(self):
        db = "ims_it_%d_%s" % (os.getpid(), uuid.uuid4().hex[:8])
        psql(self.admin_url, "CREATE DATABASE %s" % db)
        self._dbs.append(db)
        return _with_db(self.admin_url, db)

    def __exit__(self, *exc):
        for db in self._dbs:
            try:
                psql(self.admin_url, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % db)
            except subprocess.CalledProcessError:
                pass
        if self._state:
            subprocess.run([PG_SERVER_SH, "stop", self._state], check=False)
            subprocess.run(["rm", "-rf", self._state], check=False)
        return False
