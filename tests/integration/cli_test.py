#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""End-to-end test of the CLI on a data folder, with the tiny CLIP model:
add (folder, bad files, duplicates by source and by content), stats, search
(text and image, the JSON of DESIGN.md), rm, a data folder opened with
another model, and a damaged / missing index snapshot.

    cli_test.py IMGSEARCH SOURCE_DIR
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_common import (Cli, check, finish, fixture_images, parse_add_output,  # noqa: E402
                           tiny_model)

RESULT_FIELDS = {"id", "url", "score", "width", "height", "thumb", "format", "taken", "tags"}


def check_results_json(doc, k, known, sizes, what):
    """The search JSON: {"results": [...], "took_ms": x}, at most k results
    with exactly the DESIGN.md fields, known ids/urls, sorted by score."""
    check(set(doc) == {"results", "took_ms"}, "%s: top-level keys %s" % (what, sorted(doc)))
    check(isinstance(doc.get("took_ms"), (int, float)) and doc["took_ms"] >= 0,
          "%s: took_ms is a number" % what)
    res = doc.get("results", [])
    check(len(res) == k, "%s: %d results, expected %d" % (what, len(res), k))
    prev = None
    for r in res:
        check(set(r) == RESULT_FIELDS, "%s: result fields %s" % (what, sorted(r)))
        url = r.get("url")
        check(known.get(url) == r.get("id"), "%s: id %s / url %s are a stored pair" %
              (what, r.get("id"), url))
        check(r.get("thumb") == "/api/v1/images/%s/thumb" % r.get("id"),
              "%s: thumb %s" % (what, r.get("thumb")))
        name = os.path.basename(url or "")
        if name in sizes:
            check([r.get("width"), r.get("height")] == sizes[name],
                  "%s: %s size %sx%s, expected %s" % (what, name, r.get("width"),
                                                    r.get("height"), sizes[name]))
        s = r.get("score")
        check(isinstance(s, float) and -1.0001 <= s <= 1.0001, "%s: score %r" % (what, s))
        if prev is not None:
            check(s <= prev + 1e-6, "%s: scores not in decreasing order" % what)
        prev = s
    return res


def main():
    exe, src = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="ims_cli_")
    try:
        run(exe, src, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finish("cli_test")


def run(exe, src, tmp):
    model = tiny_model(src, os.path.join(tmp, "m1", "model"))
    data = os.path.join(tmp, "data")
    cli = Cli(exe, model, data)
    with open(os.path.join(src, "tests/golden/clip/images/manifest.json")) as f:
        sizes = {e["file"]: list(e["size"]) for e in json.load(f)}

    # a folder of fixtures plus two bad files
    photos = os.path.join(tmp, "photos")
    os.makedirs(photos)
    good = []
    for path in fixture_images(src):
        dest = os.path.join(photos, os.path.basename(path))
        shutil.copy(path, dest)
        good.append(os.path.realpath(dest))
    corrupt = os.path.realpath(os.path.join(photos, "corrupt.jpg"))
    with open(corrupt, "wb") as f:  # a JPEG start, then garbage
        f.write(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01" + bytes(range(256)) * 8)
    text = os.path.realpath(os.path.join(photos, "notes.jpg"))
    with open(text, "w") as f:
        f.write("these are my holiday notes, not a picture\n" * 20)
    check(len(good) >= 15, "found %d fixture images" % len(good))

    # 1. add the folder
    rc, out, err = cli.run("add", photos)
    check(rc == 0, "add folder exits 0 (rc %d, stderr %s)" % (rc, err.strip()))
    r = parse_add_output(out)
    check(set(r["added"]) == set(good), "one 'added' line per good image: missing %s, extra %s" %
          (sorted(set(good) - set(r["added"])), sorted(set(r["added"]) - set(good))))
    check(len(set(r["added"].values())) == len(r["added"]), "added ids are distinct")
    check(set(r["failed"]) == {corrupt, text}, "failed lines for the two bad files: %s" %
          r["failed"])
    check(not r["duplicate"] and not r["other"], "no other lines: %s %s" %
          (r["duplicate"], r["other"]))
    check(r["code"].get(corrupt) == "corrupt" and r["code"].get(text) == "unsupported",
          "exact codes of the two bad files: %s" % r["code"])
    for bad in (corrupt, text):
        reason = r["failed"].get(bad, "")
        check(len(reason) > 8 and "unknown" not in reason.lower(),
              "precise reason for %s: %r" % (os.path.basename(bad), reason))
    check(any(w in r["failed"].get(text, "").lower()
              for w in ("not an image", "unsupported", "unknown format", "format", "recogn")),
          "the text file's reason names the format problem: %r" % r["failed"].get(text))
    check(any(w in r["failed"].get(corrupt, "").lower()
              for w in ("corrupt", "jpeg", "truncat", "decode", "invalid")),
          "the corrupt JPEG's reason names the decoding problem: %r" % r["failed"].get(corrupt))
    ids = dict(r["added"])  # source -> id
    n = len(ids)

    # 2. stats
    st = cli.stats()
    check(st.get("images") == n, "stats images %s == %d" % (st.get("images"), n))
    check(st.get("dim") == 32, "stats dim %s == 32" % st.get("dim"))
    check(st.get("index") == "Flat", "stats index %s == Flat" % st.get("index"))
    check(isinstance(st.get("model"), str) and st["model"], "stats model is a name")
    check(set(st) == {"images", "dim", "model", "index", "feed"}, "stats keys %s" % sorted(st))
    feed = st.get("feed") or {}
    check(isinstance(feed.get("seq"), int) and feed["seq"] >= n and feed.get("floor") == 0,
          "stats feed: seq counts the changes so far, nothing trimmed (%r)" % feed)

    # 3. text search, JSON as in DESIGN.md
    rc, out, err = cli.run("search", "--json", "-k", "7", "a photo of a cat")
    check(rc == 0, "text search exits 0 (%s)" % err.strip())
    if rc == 0:
        check_results_json(json.loads(out), 7, ids, sizes, "text search")
    rc, out, err = cli.run("search", "--json", "-k", "100", "a photo of a cat")
    if check(rc == 0, "text search -k 100 exits 0 (%s)" % err.strip()):
        res = check_results_json(json.loads(out), n, ids, sizes, "text search k>n")
        check({x["id"] for x in res} == set(ids.values()), "k > n returns every image once")

    # 4. image search: the image itself first, score ~1
    probes = [p for p in good if os.path.basename(p) in
              ("baseline.jpg", "rgb.png", "lossy.webp", "plain.bmp", "animated.gif")] or good[:3]
    for p in probes:
        res = cli.search_image(p, k=3)
        check(res and res[0]["id"] == ids[p] and res[0]["url"] == p,
              "search --image %s finds itself first: %s" % (os.path.basename(p), res[:1]))
        check(res and abs(res[0]["score"] - 1.0) < 1e-3,
              "self-similarity of %s is ~1: %s" % (os.path.basename(p),
                                                   res[0]["score"] if res else None))

    # 5. the same files again: duplicates, nothing stored
    rc, out, err = cli.run("add", photos)
    check(rc == 0, "re-add exits 0 (%s)" % err.strip())
    r2 = parse_add_output(out)
    check(r2["duplicate"] == ids, "re-add reports every image as a duplicate of its id")
    check(not r2["added"], "re-add adds nothing: %s" % r2["added"])
    check(cli.stats().get("images") == n, "count unchanged after re-add")

    # 6. a byte-identical copy under another name and folder: duplicate by content
    other = os.path.join(tmp, "other")
    os.makedirs(other)
    copy = os.path.realpath(os.path.join(other, "renamed_copy.png"))
    orig = next(p for p in good if p.endswith(".png"))
    shutil.copy(orig, copy)
    rc, out, err = cli.run("add", copy)
    r3 = parse_add_output(out)
    check(rc == 0 and r3["duplicate"] == {copy: ids[orig]},
          "renamed copy is a duplicate of id %d: %s %s" % (ids[orig], out.strip(), err.strip()))
    check(cli.stats().get("images") == n, "count unchanged after the renamed copy")

    # 7. rm: count - 1, the id never comes back
    victim = probes[0]
    vid = ids[victim]
    rc, out, err = cli.run("rm", str(vid), model=False)
    check(rc == 0, "rm %d exits 0 (%s)" % (vid, err.strip()))
    check(cli.stats().get("images") == n - 1, "count - 1 after rm")
    res = cli.search_image(victim, k=n)
    check(vid not in [x["id"] for x in res], "removed id %d absent from image search" % vid)
    check(len(res) == n - 1, "image search over everything gives n-1 = %d, got %d" %
          (n - 1, len(res)))
    rc, out, err = cli.run("search", "--json", "-k", str(n), "a photo of a cat")
    if check(rc == 0, "text search after rm (%s)" % err.strip()):
        check(vid not in [x["id"] for x in json.loads(out)["results"]],
              "removed id absent from text search")
    del ids[victim]
    rc, out, err = cli.run("rm", str(vid), model=False)
    check(cli.stats().get("images") == n - 1, "removing it again changes nothing")
    # rm by source then re-add: a new id, never the old one
    rc, out, err = cli.run("add", victim)
    r4 = parse_add_output(out)
    check(rc == 0 and victim in r4["added"] and r4["added"][victim] != vid,
          "re-adding a removed image gives a new id: %s" % out.strip())
    if victim in r4["added"]:
        ids[victim] = r4["added"][victim]
    res = cli.search_image(victim, k=n)
    check(res and res[0]["id"] == ids.get(victim) and vid not in [x["id"] for x in res],
          "search finds the new id, not the removed one")

    # 8. the same data folder with a genuinely different model (projection 16)
    with open(os.path.join(model, "config.json")) as f:
        cfg = json.load(f)
    cfg["projection_dim"] = 16
    cfg["text_config"]["projection_dim"] = 16
    cfg["vision_config"]["projection_dim"] = 16
    cfg_path = os.path.join(tmp, "other_config.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    model2 = os.path.join(tmp, "m2", "model")  # the same folder name as the first
    p = subprocess.run([exe, "make-model", "--config", cfg_path, "--prng-seed", "2", "--out",
                        model2, "--vocab", os.path.join(src, "data/vocab")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    rc, err = p.returncode, p.stderr.decode("utf-8", "replace")
    if check(rc == 0, "make-model of a 16-d model (%s)" % err.strip()):
        for cmd in (("search", "a cat"), ("add", probes[1])):
            rc, out, err = cli.run(*cmd, model=model2)
            check(rc != 0, "%s with another model exits non-zero (rc %d)" % (cmd[0], rc))
            check("model" in err.lower() and not out.strip(),
                  "%s with another model says 'model': %r" % (cmd[0], err.strip()))
        check(cli.stats().get("images") == len(ids), "the wrong model changed nothing")

    # 9. a damaged snapshot: rebuilt, with a warning; results still right
    snap = os.path.join(data, "index.snap")
    if check(os.path.isfile(snap), "add wrote index.snap"):
        size = os.path.getsize(snap)
        with open(snap, "r+b") as f:
            for off in (size // 3, size // 2, size - 8):
                f.seek(off)
                f.write(b"\xa5\x5a\xde\xad\xbe\xef\x00\x7f")
        probe = probes[1]
        rc, out, err = cli.run("search", "--json", "-k", str(len(ids)), "--image", probe)
        check(rc == 0, "search with a damaged snapshot exits 0 (%s)" % err.strip())
        check("snapshot" in err.lower() or "rebuild" in err.lower(),
              "a warning about the damaged snapshot: %r" % err.strip())
        if rc == 0:
            res = json.loads(out)["results"]
            check(len(res) == len(ids) and res[0]["id"] == ids[probe] and
                  abs(res[0]["score"] - 1) < 1e-3,
                  "damaged snapshot: all %d rows, the probe first" % len(ids))
            check({x["id"] for x in res} == set(ids.values()),
                  "damaged snapshot: exactly the stored ids")
        # the header (magic, version, dim, count) damaged too
        with open(snap, "r+b") as f:
            f.write(b"\x00" * 64)
        rc, out, err = cli.run("search", "--json", "-k", "3", "--image", probe)
        check(rc == 0 and json.loads(out)["results"][0]["id"] == ids[probe],
              "damaged snapshot header: rebuilt, probe first (%s)" % err.strip())
        # 10. no snapshot at all: rebuilt silently
        os.unlink(snap)
        rc, out, err = cli.run("search", "--json", "-k", str(len(ids)), "--image", probe)
        if check(rc == 0, "search without a snapshot exits 0 (%s)" % err.strip()):
            res = json.loads(out)["results"]
            check({x["id"] for x in res} == set(ids.values()) and res[0]["id"] == ids[probe],
                  "missing snapshot: rebuilt with every row")
        # a later add writes a good snapshot again
        rc, out, err = cli.run("add", probes[2])
        check(rc == 0 and os.path.isfile(snap), "add writes the snapshot again")
        rc, out, err = cli.run("search", "--json", "-k", "3", "--image", probe)
        check(rc == 0 and "snapshot" not in err.lower(),
              "no warning once the snapshot is good again: %r" % err.strip())


if __name__ == "__main__":
    main()
