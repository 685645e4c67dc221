#!/bin/sh
# SPDX-License-Identifier: MIT
# tokenize_cli.sh IMGSEARCH SOURCE_DIR: checks `imgsearch tokenize` output
# against tests/golden/clip/tokenizer/cases.jsonl (clip.tokenize ids).
#  1. TEXT arguments, vocabulary from the bundled copy (the model folder
#     has none): a sample of the cases, one JSON line each, in order;
#  2. stdin JSON lines: all 1230 cases;
#  3. --model DIR with vocab.json + merges.txt;
#  4. errors: bad JSON on stdin, invalid UTF-8, unknown option, a model
#     folder with half a vocabulary -> non-zero exit and a message on stderr.
set -eu
bin=$1
src=$2
tmp=$(mktemp -d /tmp/ims-it-tok-XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM
mkdir "$tmp/no-model" "$tmp/half-model"
: > "$tmp/half-model/vocab.json"
IMGSEARCH_SHARE="$src/data" IMGSEARCH_MODEL="$tmp/no-model" \
python3 - "$bin" "$src" "$tmp" <<'PY'
import json, subprocess, sys

bin_, src, tmp = sys.argv[1:4]
cases = [json.loads(l) for l in open(src + "/tests/golden/clip/tokenizer/cases.jsonl", encoding="utf-8")]
assert len(cases) == 1230, len(cases)
failures = 0

def check(label, out, expect):
    global failures
    lines = out.decode("utf-8").splitlines()
    if len(lines) != len(expect):
        print(f"{label}: {len(lines)} output lines for {len(expect)} texts", file=sys.stderr)
        failures += 1
        return
    for line, c in zip(lines, expect):
        got = json.loads(line)
        if got != {"text": c["text"], "ids": c["ids"]}:
            print(f"{label}: mismatch for {c['text']!r}:\n  got  {line}\n  want {c['ids']}", file=sys.stderr)
            failures += 1
            return

def run(args, stdin=b""):
    return subprocess.run([bin_, "tokenize"] + args, input=stdin, capture_output=True, timeout=60)

# 1. arguments, bundled vocabulary; "--" so that texts may start with dashes
sample = cases[:40] + cases[40::29]
r = run(["--"] + [c["text"] for c in sample])
assert r.returncode == 0, r.stderr
check("argv", r.stdout, sample)

# 2. stdin, every case
body = "".join(json.dumps({"text": c["text"]}) + "\n" for c in cases).encode()
r = run([], body)
assert r.returncode == 0, r.stderr
check("stdin", r.stdout, cases)

# 3. explicit model folder holding vocab.json + merges.txt
r = run(["--model", src + "/data/vocab", "--"] + [c["text"] for c in cases[:10]])
assert r.returncode == 0, r.stderr
check("--model", r.stdout, cases[:10])

# 4. errors
def expect_fail(label, r, code, needle):
    global failures
    err = r.stderr.decode("utf-8", "replace")
    if r.returncode != code or needle not in err:
        print(f"{label}: exit {r.returncode}, stderr {err!r} (wanted {code}, {needle!r})", file=sys.stderr)
        failures += 1

expect_fail("bad json", run([], b'{"text": "ok"}\n{"text": \n'), 1, "stdin line 2")
expect_fail("not a string", run([], b'{"text": 5}\n'), 1, "stdin line 1")
expect_fail("lone surrogate", run([], b'{"text": "\\udc80"}\n'), 1, "stdin line 1")
r = subprocess.run([bin_.encode(), b"tokenize", b"ok", b"bad\xff"], capture_output=True, timeout=60)
expect_fail("argv utf-8", r, 1, "invalid UTF-8")
expect_fail("option", run(["--bogus"]), 2, "unknown option")
expect_fail("half model", run(["--model", tmp + "/half-model", "x"]), 1, "merges.txt is missing")
sys.exit(1 if failures else 0)
PY
