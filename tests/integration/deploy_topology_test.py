#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""deploy/compose.yaml's topology without containers (issue 9 item 5), on
loopback only: the test PostgreSQL (pgutil), three `imgsearch serve` nodes
run with the command and environment compose.yaml gives them (read from the
file; only the catalogue host/port/database, the listen address and port and
the paths are substituted), and Debian's nginx, unprivileged, run with a
config generated from deploy/nginx.conf (its upstream servers and listen
address substituted, temp paths and an access log added). Through nginx:

  - /readyz answers 200 {"status":"ok"};
  - a URL job posted with ?wait=1 completes, its items encoded by more than
    one node (job_items.claimed_by);
  - every search request gets the same answer, whichever node nginx picks;
  - an upload from the web page's origin (Origin + Host as a browser sends
    them) is stored and found;
  - nginx's body size limit is imgsearch's (a Content-Length at the limit
    gets "100 Continue" from both, one byte more 413 from both);
  - kill -9 of a node: nginx routes around it and requests keep succeeding.

    deploy_topology_test.py IMGSEARCH SOURCE_DIR

Waits are bounded (liveness), never asserted as timings.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostile_server import png_bytes  # noqa: E402
from ingest_common import (HostileServer, ServeProcess, check, finish, http_exchange,  # noqa: E402
                           json_or_bytes, multipart, png_folder, stop_all, tiny_model, wait_for)
from pgutil import PgServer, psql  # noqa: E402

UPLOAD_MAX = 50 << 20  # imgsearch's upload_max_bytes default (server_daemon.c)
N_URLS = 48
NGINX = os.environ.get("IMS_NGINX") or shutil.which("nginx") or "/usr/sbin/nginx"


# ---- compose.yaml: the node command and environment ---------------------------------

def compose_node(path):
    """(command list, environment dict, node service names) of compose.yaml's
    x-node anchor. A small reader for this file's shapes, not general YAML:
    `command: [...]` (a JSON-compatible flow list, possibly over several
    lines) and `environment: &node-env` followed by `KEY: value` lines."""
    with open(path) as f:
        lines = f.read().splitlines()
    start = lines.index("x-node: &node")
    end = next(i for i in range(start + 1, len(lines))
               if lines[i] and not lines[i].startswith((" ", "#")))
    block = lines[start + 1:end]
    cmd, env = None, {}
    for i, line in enumerate(block):
        s = line.strip()
        if s.startswith("command:"):
            text = s[len("command:"):].strip()
            j = i
            while not text.rstrip().endswith("]"):
                j += 1
                text += " " + block[j].strip()
            cmd = json.loads(text)
        if s.startswith("environment:"):
            indent = len(line) - len(line.lstrip()) + 2
            for e in block[i + 1:]:
                if len(e) - len(e.lstrip()) != indent or ":" not in e:
                    break
                k, _, v = e.strip().partition(":")
                env[k] = v.strip()
    nodes = []
    for i in range(len(lines) - 1):
        m = re.match(r"^  (\w+):$", lines[i])
        if m and lines[i + 1].strip() == "<<: *node":
            nodes.append(m.group(1))
    return cmd, env, nodes


def substituted(cmd, port, data):
    """compose's command with the listen address on loopback, the port, the
    cache folder and nginx's address (--trusted-proxy) substituted."""
    out = list(cmd)
    for opt, val in (("--host", "127.0.0.1"), ("--port", str(port)), ("--data", data),
                     ("--trusted-proxy", "127.0.0.1/32")):
        if check(opt in out, "compose.yaml's node command has %s" % opt):
            out[out.index(opt) + 1] = val
    return out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# ---- processes ------------------------------------------------------------------------

class Node(ServeProcess):
    """A node started with compose.yaml's arguments (`args`) and environment."""

    def __init__(self, exe, name, args, env, tmp):
        super().__init__([exe] + args, os.path.join(tmp, name + ".log"), name, env=env)


def request(port, method, path, body=None, headers=None, timeout=120):
    """(status, parsed JSON or raw bytes (None when empty), headers) from
    127.0.0.1:port; (-1, the error, None) when the connection fails (nginx
    or a node not up yet)."""
    try:
        st, hd, data = http_exchange(port, method, path, body, headers, timeout)
    except OSError as e:
        return -1, str(e), None
    return st, json_or_bytes(data) if data else None, hd


def expect_answer(port, content_length, ctype):
    """Sends only the headers of a POST /api/v1/images with Expect:
    100-continue; returns the status line's code the server answers with
    (100: it would read the body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s.sendall(("POST /api/v1/images HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                   "Content-Type: %s\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n"
                   % (port, ctype, content_length)).encode())
        buf = b""
        while b"\r\n" not in buf:
            got = s.recv(4096)
            if not got:
                break
            buf += got
        m = re.match(rb"HTTP/1\.[01] (\d{3})", buf)
        return int(m.group(1)) if m else -1
    finally:
        s.close()


class Nginx:
    """deploy/nginx.conf with its upstream servers and listen address
    substituted, run unprivileged in the foreground with everything under a
    temporary prefix."""

    def __init__(self, src_conf, upstreams, prefix):
        with open(src_conf) as f:
            conf = f.read()
        up_server = r"^(\s*server\s+)([\w.-]+:\d+)(\s)"
        servers = re.findall(up_server, conf, re.M)
        check(len(servers) == len(upstreams), "nginx.conf has %d upstream servers (%d nodes)"
              % (len(servers), len(upstreams)))
        it = iter(upstreams)
        conf = re.sub(up_server,
                      lambda m: m.group(1) + "127.0.0.1:%d" % next(it) + m.group(3), conf,
                      flags=re.M)
        self.port = free_port()
        conf, n = re.subn(r"^(\s*listen\s+)\S+;", r"\g<1>127.0.0.1:%d;" % self.port, conf,
                          flags=re.M)
        check(n == 1, "nginx.conf has one listen directive")
        # this test's additions: an unprivileged process keeps its temp
        # files and logs under its prefix; the access log names the node
        local = ("\n    client_body_temp_path %s/body;\n    proxy_temp_path %s/proxy;\n"
                 "    fastcgi_temp_path %s/fastcgi;\n    uwsgi_temp_path %s/uwsgi;\n"
                 "    scgi_temp_path %s/scgi;\n"
                 "    log_format ims '$request_method $uri $status $upstream_addr';\n"
                 "    access_log %s/access.log ims;\n") % ((prefix,) * 6)
        conf, n = re.subn(r"^http\s*\{", "http {" + local, conf, count=1, flags=re.M)
        check(n == 1, "nginx.conf has an http block")
        self.conf = os.path.join(prefix, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.prefix = prefix
        self.access = os.path.join(prefix, "access.log")
        self.cmd = [NGINX, "-p", prefix, "-c", self.conf, "-e", os.path.join(prefix, "error.log"),
                    "-g", "daemon off; pid %s/nginx.pid;" % prefix]
        kw = {}
        if os.geteuid() == 0:  # never as root: nginx's workers would change user
            kw = {"user": "nobody", "group": "nogroup"}
            for root, dirs, files in os.walk(prefix):
                for x in dirs + files:
                    os.chown(os.path.join(root, x), 65534, 65534)
            os.chown(prefix, 65534, 65534)
        # stdout: /dev/null, which an unprivileged nginx may open as
        # /dev/stdout (nginx.conf's access_log), unlike a pipe made by root
        t = subprocess.run(self.cmd + ["-t"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, **kw)
        check(t.returncode == 0, "nginx -t accepts the generated config: %s" % t.stderr)
        self.errf = open(os.path.join(prefix, "stderr"), "wb")
        self.p = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=self.errf, **kw)
        up = wait_for(lambda: self.p.poll() is not None
                      or request(self.port, "GET", "/readyz", timeout=5)[0] > 0, 30, 0.05)
        if not up or self.p.poll() is not None:
            msg = self.error_log()
            self.stop()
            shutil.rmtree(prefix, ignore_errors=True)
            raise RuntimeError("nginx did not start: %s" % msg)

    def error_log(self):
        try:
            with open(os.path.join(self.prefix, "error.log")) as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def upstreams_since(self, mark):
        """The upstream addresses of the access log's lines after byte `mark`."""
        with open(self.access, "rb") as f:
            f.seek(mark)
            return [line.split()[-1].decode() for line in f.read().splitlines() if line]

    def log_size(self):
        return os.path.getsize(self.access) if os.path.exists(self.access) else 0

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGQUIT)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def n_searchable(port):
    st, b, _ = request(port, "POST", "/api/v1/search", {"text": "a picture", "k": 1000})
    return len(b["results"]) if st == 200 and isinstance(b, dict) else -1


# ---- the test --------------------------------------------------------------------------

def main():
    exe, src = os.path.abspath(sys.argv[1]), sys.argv[2]
    deploy = os.path.join(src, "deploy")
    tmp = tempfile.mkdtemp(prefix="ims_deploy_")
    nodes, pics, pg, ngx = [], None, None, None
    try:
        cmd, env_c, names = compose_node(os.path.join(deploy, "compose.yaml"))
        check(cmd is not None and cmd[0] == "serve", "compose.yaml's node command is serve: %r"
              % cmd)
        check(names == ["node1", "node2", "node3"], "compose.yaml has three nodes: %r" % names)
        check(set(env_c) >= {"IMGSEARCH_CATALOGUE", "PGPASSWORD", "IMGSEARCH_MODEL"},
              "compose.yaml gives the nodes catalogue, password and model: %r" % env_c)

        pg = PgServer().__enter__()
        admin = pg.new_database()
        db = admin.rsplit("/", 1)[1]
        m = re.match(r"^postgresql://127\.0\.0\.1:(\d+)/|^postgres(?:ql)?://[^@]*@127\.0\.0\.1:(\d+)/",
                     admin)
        pgport = m.group(1) or m.group(2)
        # compose's catalogue URL, user kept: the role exists here as there
        cat_url = re.sub(r"@[^/]+/[^?]*", "@127.0.0.1:%s/%s" % (pgport, db),
                         env_c["IMGSEARCH_CATALOGUE"], count=1)
        user = re.match(r"^postgres(?:ql)?://([^@:/]+)", cat_url).group(1)
        psql(admin, "DO $$BEGIN CREATE ROLE %s LOGIN; EXCEPTION WHEN duplicate_object "
                    "THEN NULL; END$$" % user)
        psql(admin, "ALTER DATABASE %s OWNER TO %s" % (db, user))

        model = tiny_model(src, os.path.join(tmp, "model"))
        env = dict(os.environ)
        for k in ("IMGSEARCH_API_KEY", "IMGSEARCH_DATA", "PGPASSFILE", "PGUSER"):
            env.pop(k, None)
        env.update(env_c)
        env["IMGSEARCH_CATALOGUE"] = cat_url
        env["IMGSEARCH_MODEL"] = model

        for name in names:
            cache = os.path.join(tmp, "cache-" + name)
            os.makedirs(cache)
            # --allow-private-urls: this test's pictures come from loopback
            args = substituted(cmd, 0, cache) + ["--allow-private-urls"]
            nodes.append(Node(exe, name, args, env, tmp))
        for n in nodes:
            check(wait_for(lambda: request(n.port, "GET", "/readyz", timeout=5)[0] == 200, 90),
                  "%s becomes ready" % n.name)

        for attempt in range(3):  # its port was free a moment ago: may be taken since
            try:
                ngx = Nginx(os.path.join(deploy, "nginx.conf"), [n.port for n in nodes],
                            tempfile.mkdtemp(prefix="ims_nginx_"))
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        root = png_folder(tmp, N_URLS + 1)
        pics = HostileServer(root, delay_ms=100, max_life=600)
        run(nodes, ngx, pics, cat_url, root)
    finally:
        if ngx:
            ngx.stop()
            if os.environ.get("IMS_IT_VERBOSE") == "1":
                print("---- nginx\n" + ngx.error_log())
            shutil.rmtree(ngx.prefix, ignore_errors=True)
        stop_all(nodes, pics, pg, tmp)
    finish("deploy_topology_test")


def run(nodes, ngx, pics, cat_url, root):
    port = ngx.port
    browser = {"Origin": "http://127.0.0.1:%d" % port}

    # -- /readyz through nginx -------------------------------------------------------
    for _ in range(6):
        st, b, _ = request(port, "GET", "/readyz")
        check(st == 200 and b == {"status": "ok"}, "GET /readyz via nginx -> 200 ok (%s %r)"
              % (st, b))

    # -- a job posted through nginx, encoded by several nodes ----------------------------
    urls = [pics.url("/files/p%03d.png" % i) for i in range(N_URLS)]
    st, job, _ = request(port, "POST", "/api/v1/images?wait=1", {"urls": urls}, browser)
    check(st == 200 and isinstance(job, dict) and job.get("state") == "done"
          and job.get("done") == N_URLS and job.get("failed") == 0,
          "job via nginx -> done %d (%s %r)" % (N_URLS, st, job))
    jid = job.get("id", "none") if isinstance(job, dict) else "none"
    enc = [r.split("|") for r in psql(cat_url, "SELECT claimed_by, count(*) FROM job_items "
                                      "WHERE job_id = '%s' AND state = 2 GROUP BY claimed_by"
                                      % jid.replace("'", "")).splitlines() if r]
    check(len(enc) >= 2 and sum(int(c) for _, c in enc) == N_URLS,
          "the job's items were encoded by more than one node: %r" % enc)

    # -- the same search answer for every request --------------------------------------
    for n in nodes:
        check(wait_for(lambda: n_searchable(n.port) == N_URLS, 30),
              "%s searches the job's %d images" % (n.name, N_URLS))
    mark = ngx.log_size()
    answers = []
    for _ in range(12):
        st, b, _ = request(port, "POST", "/api/v1/search", {"text": "a red picture", "k": 10})
        answers.append([(r["id"], r["score"]) for r in b["results"]]
                       if st == 200 and isinstance(b, dict) else (st, b))
    check(len(answers[0]) == 10 and all(a == answers[0] for a in answers),
          "12 searches via nginx give one answer: %r" % answers)
    ups = ngx.upstreams_since(mark)
    check(len(set(ups)) >= 2, "the searches were answered by several nodes: %r" % ups)

    # -- an upload from the page's origin --------------------------------------------
    with open(os.path.join(root, "p%03d.png" % N_URLS), "rb") as f:
        body, ctype = multipart([("file", "upload.png", f.read())])
    st, res, _ = request(port, "POST", "/api/v1/images", body,
                         dict(browser, **{"Content-Type": ctype}))
    check(st == 200 and isinstance(res, dict) and res.get("images"),
          "upload via nginx with the page's Origin -> 200 (%s %r)" % (st, res))
    for n in nodes:
        check(wait_for(lambda: n_searchable(n.port) == N_URLS + 1, 30),
              "%s searches the upload too" % n.name)

    # -- the body size limit: nginx's is imgsearch's ---------------------------------
    ctype = "multipart/form-data; boundary=x"
    for name, p in (("nginx", port), ("node", nodes[0].port)):
        at, over = expect_answer(p, UPLOAD_MAX, ctype), expect_answer(p, UPLOAD_MAX + 1, ctype)
        check(at == 100, "%s: a body of exactly %d bytes may be sent (%d)"
              % (name, UPLOAD_MAX, at))
        check(over == 413, "%s: one byte more -> 413 (%d)" % (name, over))

    # -- kill -9 of a node: nginx routes around it -----------------------------------
    dead = nodes[1]
    dead.kill()
    mark = ngx.log_size()
    oks = 0
    for i in range(15):
        st, b, _ = request(port, "POST", "/api/v1/search", {"text": "a red picture", "k": 10})
        oks += st == 200 and [(r["id"], r["score"]) for r in b["results"]] == answers[0]
        st, b, _ = request(port, "GET", "/readyz")
        oks += st == 200
    check(oks == 30, "after kill -9 of %s every request via nginx succeeds (%d/30)"
          % (dead.name, oks))
    body, ctype = multipart([("file", "again.png", png_bytes(61, 47, 4242))])
    st, res, _ = request(port, "POST", "/api/v1/images", body,
                         dict(browser, **{"Content-Type": ctype}))
    check(st == 200 and isinstance(res, dict) and res.get("images"),
          "an upload via nginx after the kill -> 200 (%s %r)" % (st, res))
    ups = [u for u in ngx.upstreams_since(mark)]
    alive = {"127.0.0.1:%d" % n.port for n in nodes if n is not dead}
    served = {u.split(",")[-1].strip() for u in ups}
    check(served and served <= alive and len(served) == 2,
          "after the kill the survivors answered everything: %r" % ups)
    for n in nodes:
        if n is not dead:
            rc = n.stop()
            check(rc == 0, "%s stops on SIGTERM with exit 0 (rc %s: %s)"
                  % (n.name, rc, n.stderr().strip()[-1500:]))


if __name__ == "__main__":
    main()
