#!/bin/sh
# SPDX-License-Identifier: MIT
# `imgsearch preprocess`: output files against the CLIP goldens, and errors.
# usage: preprocess_check.sh IMGSEARCH SOURCE_DIR
set -eu
bin=$1
gold=$2/tests/golden/clip/images
tmp=$(mktemp -d /tmp/ims-it-preprocess.XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM

fail() { echo "FAIL: $*" >&2; exit 1; }

# 1. --rgb is the golden byte for byte, for one file per format and mode
for f in baseline.jpg grey.jpg rgba.png palette.png grey_alpha.png lossy.webp animated.gif \
         plain.bmp tall_40x1000.png; do
    "$bin" preprocess "$gold/$f" --rgb "$tmp/$f.rgb" >"$tmp/out.json" || fail "$f: exit $?"
    cmp "$tmp/$f.rgb" "$gold/$f.rgb.u8" || fail "$f: --rgb differs from the golden"
    grep -q '"width": ' "$tmp/out.json" || fail "$f: no JSON line on stdout"
done

# 2. --pixels: 3x224x224 float32 CHW little-endian, equal to (b/255 - mean)/std
"$bin" preprocess "$gold/rgb.png" --pixels "$tmp/px.f32" --rgb "$tmp/px.rgb" >/dev/null
[ "$(wc -c <"$tmp/px.f32")" -eq $((3 * 224 * 224 * 4)) ] || fail "--pixels has the wrong size"
od -An -v -tu1 -w1 "$gold/rgb.png.rgb.u8" >"$tmp/bytes.txt"
od -An -v -tf4 -w4 --endian=little "$tmp/px.f32" >"$tmp/floats.txt"
awk 'BEGIN { m[0] = 0.48145466; m[1] = 0.4578275; m[2] = 0.40821073;
             s[0] = 0.26862954; s[1] = 0.26130258; s[2] = 0.27577711; plane = 224 * 224 }
     NR == FNR { b[NR - 1] = $1; next }
     { i = FNR - 1; c = int(i / plane); p = i % plane;
       want = (b[3 * p + c] / 255 - m[c]) / s[c]; d = $1 - want; if (d < 0) d = -d;
       if (d > 1e-5) { printf "value %d: %s, want %f\n", i, $1, want; bad++ } n++ }
     END { if (bad || n != 3 * plane) { print "bad values:", bad + 0, "count:", n; exit 1 } }' \
    "$tmp/bytes.txt" "$tmp/floats.txt" || fail "--pixels values"

# 3. --size
"$bin" preprocess "$gold/baseline.jpg" --size 336 --rgb "$tmp/336.rgb" >/dev/null
[ "$(wc -c <"$tmp/336.rgb")" -eq $((336 * 336 * 3)) ] || fail "--size 336 output size"

# 4. errors: non-zero exit and a precise message
head -c 3000 "$gold/baseline.jpg" >"$tmp/cut.jpg"
if "$bin" preprocess "$tmp/cut.jpg" --rgb "$tmp/x" 2>"$tmp/err.txt" >/dev/null; then
    fail "truncated JPEG accepted"
fi
grep -q "truncated JPEG" "$tmp/err.txt" || fail "truncated JPEG message: $(cat "$tmp/err.txt")"
[ ! -e "$tmp/x" ] || fail "an output file was written for a failed input"
printf '<!DOCTYPE html><html><body>404</body></html>\n' >"$tmp/page.jpg"
if "$bin" preprocess "$tmp/page.jpg" 2>"$tmp/err.txt" >/dev/null; then
    fail "HTML accepted"
fi
grep -q "HTML document" "$tmp/err.txt" || fail "HTML message: $(cat "$tmp/err.txt")"
if "$bin" preprocess "$tmp/does-not-exist.png" 2>/dev/null >/dev/null; then
    fail "missing file accepted"
fi
set +e
"$bin" preprocess 2>/dev/null >/dev/null
rc=$?
set -e
[ "$rc" -eq 2 ] || fail "usage error exit status $rc"
echo "preprocess: all checks passed"
