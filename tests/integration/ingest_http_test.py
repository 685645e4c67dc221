#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""`imgsearch add --from urls.txt` against a hostile loopback server: good
images, 404, 500-then-200, too large (announced and streamed), HTML served
as image/jpeg, truncated JPEG, redirects (good, loop, to file://), a
connection cut mid-body; each URL's line and reason are checked. Then,
without --allow-private-urls, loopback URLs are refused and the server
records no request for them.

    ingest_http_test.py IMGSEARCH SOURCE_DIR

The stall case (a body that stops flowing) runs with a 2 s low-speed window
and one retry (`add --stall-seconds 2 --retries 1`), so it costs about 5 s.
"""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_common import (Cli, HostileServer, check, finish, parse_add_output,  # noqa: E402
                           tiny_model)

BIG = 22 * 1024 * 1024  # above the default 20 MB body limit


def main():
    exe, src = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="ims_ingest_http_")
    server = None
    try:
        root = os.path.join(tmp, "root")
        os.makedirs(root)
        for f in ("baseline.jpg", "rgb.png", "subsampling444.jpg", "rgba.png", "progressive.jpg",
                  "grey.jpg", "palette.png", "lossy.webp"):
            shutil.copy(os.path.join(src, "tests/golden/clip/images", f), root)
        log = os.path.join(tmp, "requests.log")
        server = HostileServer(root, log=log, max_life=240,
                               extra=["--big-bytes", str(BIG), "--stall-s", "60"])
        run(exe, src, tmp, root, server, log)
    finally:
        if server:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    finish("ingest_http_test")


def requests_for(log, path):
    with open(log) as f:
        return sum(1 for line in f if line.rstrip("\n") == path)


def run(exe, src, tmp, root, server, log):
    cli = Cli(exe, tiny_model(src, os.path.join(tmp, "model")), os.path.join(tmp, "data"))
    u = server.url
    # url -> ("added" | "duplicate" | "failed", words the reason must contain,
    #         the exact code of a failure: the status name the API shows)
    expect = {
        u("/files/rgb.png"): ("added", None, None),
        u("/flaky/subsampling444.jpg"): ("added", None, None),
        u("/redirect/rgba.png"): ("added", None, None),
        u("/404"): ("failed", ["404"], "not_found"),
        u("/big"): ("failed", ["too large"], "too_large"),
        u("/big-announced"): ("failed", ["too large"], "too_large"),
        u("/html.jpg"): ("failed", ["not a supported image"], "unsupported"),
        u("/truncated/progressive.jpg"): ("failed", ["truncated"], "corrupt"),
        u("/loop/0"): ("failed", ["redirect"], "network"),
        u("/to-file"): ("failed", ["file://", "refused"], "refused"),
        u("/cut/grey.jpg"): ("failed", ["closed"], "network"),
        "ftp://127.0.0.1/x.jpg": ("failed", ["scheme"], "unsupported"),
    }
    expect[u("/stall")] = ("failed", ["stalled"], "timeout")
    # the same bytes under two URLs in one job (they are in flight together):
    # one is added, the other is its duplicate, whichever finishes first
    twins = [u("/files/baseline.jpg"), u("/files/baseline.jpg?copy=1")]
    urls = os.path.join(tmp, "urls.txt")
    with open(urls, "w") as f:
        f.write("# a comment, then the URLs\n\n")
        f.write("\n".join(twins + list(expect)) + "\n")

    rc, out, err = cli.run("add", "--allow-private-urls", "--stall-seconds", "2",
                           "--retries", "1", "--from", urls, timeout=90)
    check(rc == 0, "add exits 0 with failed items (rc %d: %s)" % (rc, err.strip()))
    if os.environ.get("IMS_IT_VERBOSE") == "1":
        print(out, err)
    r = parse_add_output(out)
    check(not r["other"], "only per-item lines: %s" % r["other"])
    for url, (outcome, words, code) in expect.items():
        got = [k for k in ("added", "duplicate", "failed") if url in r[k]]
        if not check(got == [outcome], "%s: %s, expected %s" % (url, got, outcome)):
            continue
        if words:
            reason = r["failed"][url]
            check(all(w.lower() in reason.lower() for w in words),
                  "%s: reason %r contains %s" % (url, reason, words))
        if code:
            check(r["code"].get(url) == code,
                  "%s: code %r, expected %r" % (url, r["code"].get(url), code))
    tw = [(k, r[k].get(t)) for t in twins for k in ("added", "duplicate") if t in r[k]]
    check(len(tw) == 2 and {k for k, _ in tw} == {"added", "duplicate"} and tw[0][1] == tw[1][1],
          "same bytes under two URLs: one added, one duplicate of its id: %s" % tw)
    n_added = 1 + sum(1 for v in expect.values() if v[0] == "added")
    check(cli.stats().get("images") == n_added, "stats counts the %d added images" % n_added)
    # what was stored is the right picture under the right source
    for name, url in (("rgb.png", u("/files/rgb.png")), ("rgba.png", u("/redirect/rgba.png")),
                      ("subsampling444.jpg", u("/flaky/subsampling444.jpg"))):
        res = cli.search_image(os.path.join(root, name), k=1)
        check(res and res[0]["url"] == url and abs(res[0]["score"] - 1) < 1e-3,
              "search --image %s finds %s: %s" % (name, url, res))
    check(requests_for(log, "/flaky/subsampling444.jpg") == 2,
          "the 500 was retried once: %d requests" % requests_for(log, "/flaky/subsampling444.jpg"))
    check(requests_for(log, "/404") == 1, "a 404 is not retried")
    check(requests_for(log, "/loop/6") <= 1 and requests_for(log, "/loop/7") == 0,
          "the redirect loop stops after at most 5 hops")

    # without --allow-private-urls: refused before any connection
    fresh = ["/files/palette.png", "/redirect/lossy.webp"]
    refused = [u(p) for p in fresh] + [
        "http://localhost:%d/files/palette.png" % server.port,
        "http://[::ffff:127.0.0.1]:%d/files/palette.png" % server.port,
        "http://2130706433:%d/files/palette.png" % server.port,  # 127.0.0.1 as one number
    ]
    rc, out, err = cli.run("add", *refused, timeout=60)
    check(rc == 0, "add without --allow-private-urls runs (rc %d: %s)" % (rc, err.strip()))
    r = parse_add_output(out)
    for url in refused:
        reason = r["failed"].get(url)
        check(reason is not None and "refused" in reason.lower() and r["code"].get(url) == "refused",
              "%s refused without --allow-private-urls: %r (%r)" % (url, reason, r["code"].get(url)))
    check(not r["added"] and not r["duplicate"], "nothing stored from loopback")
    for p in fresh:
        check(requests_for(log, p) == 0, "the server saw no request for %s" % p)
    check(cli.stats().get("images") == n_added, "count unchanged after the refusals")


if __name__ == "__main__":
    main()
