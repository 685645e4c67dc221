#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""End-to-end test of issue 10's formats and EXIF with the tiny CLIP model:

- a PNG with an EXIF orientation of 6 (rotate 90 clockwise to show) embeds
  like the same picture stored upright, and like the stored pixels with
  --exif-orientation ignore (embed CLI);
- `add` of that PNG, a HEIC and an AVIF (made by heif-enc from the same
  pattern) and a TIFF stores the upright size (48x64 for the rotated PNG),
  the format words, an upright thumbnail (its JPEG header's size), and the
  EXIF date (unix seconds, offset applied), make and model in the row's
  metadata; GPS only with --keep-gps;
- `search` with filters (--format, --orientation, --taken-from/--taken-to,
  --source-prefix, --min-width) returns the top k among the matching
  images only, with "format" and "taken" in the JSON; bad filter values are
  refused;
- the HTTP API (serve on 127.0.0.1, port 0): GET /api/v1/search with
  format, orientation, taken_from/taken_to, source_prefix, min_width; POST
  with a "filter" object; rows carry "format" and "taken"; bad filters are
  400 with a message naming the member.

    photo_test.py IMGSEARCH SOURCE_DIR
"""
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "unit", "image"))
from ingest_common import Cli, check, finish, tiny_model  # noqa: E402
import make_heif  # noqa: E402

TAKEN = 1715949000  # 2024-05-17 14:30:00 +02:00


def pattern_rows(w, h, px):
    return [b"\0" + b"".join(bytes(px(x, y)) for x in range(w)) for y in range(h)]


def write_png(path, w, h, px, exif=None):
    ch = make_heif.chunk
    data = b"\x89PNG\r\n\x1a\n" + ch(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    if exif:
        data += ch(b"eXIf", exif)
    data += ch(b"IDAT", zlib.compress(b"".join(pattern_rows(w, h, px)), 9))
    data += ch(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def stored(x, y):
    """The stored 64x48 picture: a gradient with a bright corner block."""
    if x < 16 and y < 12:
        return (250, 250, 250)
    return ((x * 4) & 255, (y * 5) & 255, 90)


def jpeg_size(blob):
    at = 2
    while at + 9 < len(blob):
        if blob[at] != 0xFF:
            return None
        m = blob[at + 1]
        ln = struct.unpack(">H", blob[at + 2:at + 4])[0]
        if m in (0xC0, 0xC1, 0xC2):
            h, w = struct.unpack(">HH", blob[at + 5:at + 9])
            return w, h
        at += 2 + ln
    return None


def embed(exe, model, path, *extra):
    p = subprocess.run([exe, "embed", "--model", model, "--image", path] + list(extra),
                       capture_output=True, text=True, timeout=120)
    check(p.returncode == 0, "embed %s: %s" % (path, p.stderr))
    return json.loads(p.stdout)["embedding"]


def close(a, b):
    return max(abs(x - y) for x, y in zip(a, b)) < 1e-5


def main():
    exe, src = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="ims_photo_")
    try:
        run(exe, src, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finish("photo_test")


def run(exe, src, tmp):
    model = tiny_model(src, os.path.join(tmp, "model"))
    imgs = os.path.join(tmp, "imgs")
    os.makedirs(imgs)
    exif = make_heif.exif_payload()  # orientation 6, TestCam / Phone 1, GPS
    rotated = os.path.join(imgs, "rotated.png")
    write_png(rotated, 64, 48, stored, exif)
    plain = os.path.join(tmp, "plain.png")       # same pixels, no EXIF
    write_png(plain, 64, 48, stored)
    upright = os.path.join(tmp, "upright.png")   # what orientation 6 shows: 48x64
    write_png(upright, 48, 64, lambda x, y: stored(y, 48 - 1 - x))

    e_rot = embed(exe, model, rotated)
    e_rot_ignore = embed(exe, model, rotated, "--exif-orientation", "ignore")
    e_plain = embed(exe, model, plain)
    e_up = embed(exe, model, upright)
    check(close(e_rot, e_up), "orientation 6 embeds like the upright picture")
    check(close(e_rot_ignore, e_plain), "--exif-orientation ignore embeds the stored pixels")
    check(not close(e_rot, e_plain), "the rotation changes the embedding")
    p = subprocess.run([exe, "embed", "--model", model, "--image", rotated,
                        "--exif-orientation", "sideways"], capture_output=True, text=True)
    check(p.returncode != 0 and "exif-orientation" in p.stderr, "bad --exif-orientation refused")

    make_heif.main(shutil.which("heif-enc") or "heif-enc", os.path.join(tmp, "heif"))
    for name in ("quad.heic", "quad.avif", "quad_exif.heic"):
        shutil.copy(os.path.join(tmp, "heif", name), imgs)
    # a TIFF: 8-bit RGB, one strip, little endian (make_seeds.py's writer)
    import make_seeds
    make_seeds.tiff(os.path.join(imgs, "scan.tif"), "II", 3, 8, 2)

    for keep_gps in (False, True):
        data = os.path.join(tmp, "data_gps" if keep_gps else "data")
        cli = Cli(exe, model, data)
        args = ["add", imgs] + (["--keep-gps"] if keep_gps else [])
        rc, out, err = cli.run(*args)
        check(rc == 0, "add: rc %d %s" % (rc, err))
        check(out.count("added") == 5, "5 images added: %s %s" % (out, err))
        db = sqlite3.connect(os.path.join(data, "catalogue.db"))
        rows = {os.path.basename(s): (f, w, h, m, i) for s, f, w, h, m, i in db.execute(
            "SELECT source, format, width, height, metadata, id FROM images")}
        check(rows["rotated.png"][:3] == ("png", 48, 64), "upright size %s" % (rows["rotated.png"],))
        check(rows["quad.heic"][:3] == ("heic", 64, 48), "heic row %s" % (rows["quad.heic"],))
        check(rows["quad.avif"][:3] == ("avif", 64, 48), "avif row %s" % (rows["quad.avif"],))
        check(rows["scan.tif"][:3] == ("tiff", 7, 5), "tiff row %s" % (rows["scan.tif"],))
        for name in ("rotated.png", "quad_exif.heic"):
            meta = json.loads(rows[name][3] or "null")
            check(meta and meta.get("taken") == TAKEN, "%s taken: %s" % (name, meta))
            ex = (meta or {}).get("exif", {})
            check(ex.get("make") == "TestCam" and ex.get("model") == "Phone 1",
                  "%s make/model: %s" % (name, meta))
            check(("gps" in ex) == keep_gps, "%s gps stored only with --keep-gps: %s" %
                  (name, meta))
            if keep_gps:
                check(abs(ex["gps"][0] - 48.8583333) < 1e-5 and abs(ex["gps"][1] - 2.2944444) < 1e-5,
                      "gps value %s" % ex["gps"])
        check(rows["quad.heic"][3] is None, "no EXIF, no metadata")
        thumb = db.execute("SELECT jpeg FROM thumbnails WHERE image_id = ?",
                           (rows["rotated.png"][4],)).fetchone()
        check(thumb is not None and jpeg_size(thumb[0]) == (48, 64),
              "upright thumbnail: %s" % (jpeg_size(thumb[0]) if thumb else None,))
        db.close()
        if not keep_gps:
            search_filters(cli, imgs, rows)
            api_filters(exe, data, model, imgs, tmp)


def search_filters(cli, imgs, rows):
    def names(*flags):
        rc, out, err = cli.run("search", "photo", "-k", "10", "--json", *flags)
        check(rc == 0, "search %s: %s" % (flags, err))
        res = json.loads(out)["results"]
        for r in res:
            check("format" in r and "taken" in r, "format/taken in %s" % r)
        return {os.path.basename(r["url"]): r for r in res}
    check(len(names()) == 5, "unfiltered: every image")
    got = names("--format", "heic")
    check(set(got) == {"quad.heic", "quad_exif.heic"}, "--format heic: %s" % sorted(got))
    check(got["quad_exif.heic"]["taken"] == TAKEN and got["quad.heic"]["taken"] is None,
          "taken in rows: %s" % got)
    check(got["quad.heic"]["format"] == "heic", "format word")
    got = names("--format", "avif,TIF")
    check(set(got) == {"quad.avif", "scan.tif"}, "--format avif,tif: %s" % sorted(got))
    got = names("--orientation", "portrait")
    check(set(got) == {"rotated.png"}, "--orientation portrait: %s" % sorted(got))
    got = names("--taken-from", "2024-05-17", "--taken-to", "2024-05-17")
    check(set(got) == {"rotated.png", "quad_exif.heic"}, "taken that day: %s" % sorted(got))
    got = names("--taken-to", "2024-05-16")
    check(set(got) == set(), "taken before: %s" % sorted(got))
    got = names("--source-prefix", os.path.join(imgs, "quad"))
    check(set(got) == {"quad.heic", "quad.avif", "quad_exif.heic"}, "prefix: %s" % sorted(got))
    got = names("--min-width", "60", "--orientation", "landscape")
    check(set(got) == {"quad.heic", "quad.avif", "quad_exif.heic"}, "min width: %s" % sorted(got))
    got = names("--format", "gif")
    check(got == {}, "no gif: %s" % got)
    for bad in (["--format", "svg"], ["--orientation", "sideways"], ["--taken-from", "May"]):
        rc, out, err = cli.run("search", "photo", *bad)
        check(rc != 0 and bad[0] in err + out or "svg" in err, "refused %s: %s" % (bad, err))




def api_filters(exe, data, model, imgs, tmp):
    from server_e2e import Serve
    from urllib.parse import urlencode
    srv = Serve(exe, data, model, log=os.path.join(tmp, "serve.log"))
    try:
        def get(**params):
            st, _, doc = srv.json("GET", "/api/v1/search?" + urlencode(dict(q="photo", k=10, **params)))
            check(st == 200, "GET %s: %s %s" % (params, st, doc))
            return {os.path.basename(r["url"]): r for r in doc["results"]}

        def post(flt):
            st, _, doc = srv.json("POST", "/api/v1/search", {"text": "photo", "k": 10, "filter": flt})
            return st, doc
        check(len(get()) == 5, "unfiltered API search")
        got = get(format="heic")
        check(set(got) == {"quad.heic", "quad_exif.heic"}, "GET format: %s" % sorted(got))
        check(got["quad_exif.heic"]["taken"] == TAKEN and got["quad_exif.heic"]["format"] == "heic",
              "row fields %s" % got["quad_exif.heic"])
        got = get(orientation="portrait")
        check(set(got) == {"rotated.png"}, "GET orientation: %s" % sorted(got))
        got = get(taken_from="2024-05-17", taken_to=str(TAKEN))
        check(set(got) == {"rotated.png", "quad_exif.heic"}, "GET taken: %s" % sorted(got))
        got = get(source_prefix=os.path.join(imgs, "quad"), format="avif,tiff")
        check(set(got) == {"quad.avif"}, "GET prefix+format: %s" % sorted(got))
        st, doc = post({"format": ["tiff", "png"], "min_width": 7})
        names = {os.path.basename(r["url"]) for r in (doc or {}).get("results", [])}
        check(st == 200 and names == {"scan.tif", "rotated.png"}, "POST filter: %s %s" % (st, names))
        st, doc = post({"taken": {"from": "2024-05-17T12:00:00Z", "to": None}, "orientation": "landscape"})
        names = {os.path.basename(r["url"]) for r in (doc or {}).get("results", [])}
        check(st == 200 and names == {"quad_exif.heic"}, "POST taken+orientation: %s %s" % (st, names))
        for bad, word in (({"format": ["svg"]}, "svg"), ({"orientation": "up"}, "orientation"),
                          ({"taken": {"since": 1}}, "since"), ({"colour": 1}, "colour"),
                          ({"min_width": -1}, "min_width")):
            st, doc = post(bad)
            check(st == 400 and word in json.dumps(doc), "POST %s refused: %s %s" % (bad, st, doc))
        st, _, doc = srv.json("GET", "/api/v1/search?q=photo&taken_from=yesterday")
        check(st == 400 and "taken_from" in json.dumps(doc), "GET bad time: %s %s" % (st, doc))
    finally:
        srv.term()


if __name__ == "__main__":
    main()
