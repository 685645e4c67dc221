#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""deploy/Dockerfile read against the build, without a container engine
(issue 9 item 5; none runs here):

  - the build stage installs scripts/deps.sh's build list (git aside: the
    image builds from a copied tree, not a checkout), the run-time stage
    `deps.sh --list run` plus curl (its HEALTHCHECK probe);
  - every shared library the built `imgsearch` needs (ELF NEEDED) comes
    from a package of that run-time list, or from one every Debian 12 image
    has (libc6, libgcc-s1, libstdc++6) -- asked of dpkg on this machine;
  - the binary is where the image looks for it: the cmake line's
    CMAKE_INSTALL_PREFIX/bin (src/cli installs imgsearch to bin) is on the
    image's PATH and copied from the build stage, ENTRYPOINT is imgsearch,
    CMD is serve on the EXPOSEd port, and the HEALTHCHECK probes that port.

    dockerfile_check.py IMGSEARCH SOURCE_DIR [C_COMPILER_ID]

(a binary built by another compiler than the image's gcc: its OpenMP
runtime is not checked, nor a sanitizer build's runtime)

That the packages exist in Debian 12 and that the image builds and runs
need apt's archive and an engine: not checked here.
"""
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_common import check, finish  # noqa: E402

BASE = {"libc6", "libgcc-s1", "libstdc++6"}


def stages(path):
    """[(FROM line, [instructions, continuation lines joined])]."""
    out = []
    cur = None
    with open(path) as f:
        text = re.sub(r"\\\n", " ", f.read())
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.upper().startswith("FROM "):
            cur = (s, [])
            out.append(cur)
        elif cur:
            cur[1].append(s)
    return out


def apt_packages(instrs):
    pk = []
    for s in instrs:
        for m in re.finditer(r"apt-get install ((?:-\S+\s+)*)([^&|;]+)", s):
            pk += [w for w in m.group(2).split() if not w.startswith("-")]
    return pk


def deps_list(src, mode):
    out = subprocess.run(["sh", os.path.join(src, "scripts/deps.sh"), "--list", mode],
                         check=True, capture_output=True, text=True).stdout
    return set(out.split())


def needed_packages(exe):
    """{library: package} of the binary's NEEDED entries."""
    dyn = subprocess.run(["readelf", "-d", exe], check=True, capture_output=True,
                         text=True).stdout
    libs = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
    out = {lib: set() for lib in libs}
    # one dpkg call: it reads its database once
    r = subprocess.run(["dpkg", "-S"] + ["*/" + lib for lib in libs], capture_output=True,
                       text=True)
    for line in r.stdout.splitlines():
        names, _, path = line.partition(": ")
        lib = os.path.basename(path)
        if lib in out and "-linux-gnu" in path:
            out[lib] |= {n.split(":")[0] for n in names.split(", ")}
    return out


def main():
    exe, src = sys.argv[1], sys.argv[2]
    compiler = sys.argv[3] if len(sys.argv) > 3 else "GNU"
    st = stages(os.path.join(src, "deploy/Dockerfile"))
    check(len(st) == 2, "the Dockerfile has a build and a run-time stage: %r" % [s[0] for s in st])
    build, run = st[0][1], st[-1][1]
    check(st[0][0].startswith("FROM debian:12") and st[-1][0].startswith("FROM debian:12"),
          "both stages are Debian 12: %r" % [s[0] for s in st])

    want_build = deps_list(src, "build") - {"git"}
    got_build = set(apt_packages(build))
    check(got_build == want_build, "build stage = deps.sh build list (git aside): missing %r, "
          "extra %r" % (sorted(want_build - got_build), sorted(got_build - want_build)))
    want_run = deps_list(src, "run") | {"curl"}
    got_run = set(apt_packages(run))
    check(got_run == want_run, "run-time stage = deps.sh --list run + curl: missing %r, "
          "extra %r" % (sorted(want_run - got_run), sorted(got_run - want_run)))

    for lib, pkgs in sorted(needed_packages(exe).items()):
        if re.match(r"^lib[atlu]san\.so", lib):
            continue  # a sanitizer build's runtime: never in an image
        if compiler != "GNU" and re.match(r"^lib(i?omp)\.so", lib):
            continue  # clang's OpenMP runtime; the image builds with gcc (libgomp1)
        check(pkgs and pkgs & (got_run | BASE),
              "%s (from %r) is installed by the run-time stage" % (lib, sorted(pkgs)))

    joined = "\n".join(build)
    m = re.search(r"-DCMAKE_INSTALL_PREFIX=(\S+)", joined)
    prefix = m.group(1) if m else None
    check(prefix and "--target imgsearch" in joined and "cmake --install" in joined,
          "the build stage builds and installs imgsearch under a prefix")
    with open(os.path.join(src, "src/cli/CMakeLists.txt")) as f:
        check(re.search(r"install\(TARGETS imgsearch RUNTIME DESTINATION bin\)", f.read()),
              "src/cli installs imgsearch to <prefix>/bin")
    if "--target imgsearch" in joined:
        check("-DIMS_BUILD_LIBRARY=OFF" in joined, "only imgsearch is built, so the library's "
              "install rules are off (cmake --install would miss libimgsearch)")
    rjoined = "\n".join(run)
    check(prefix and re.search(r"^COPY --from=build %s %s$" % (re.escape(prefix), re.escape(prefix)),
                               rjoined, re.M), "the run-time stage copies %s" % prefix)
    envpath = re.search(r"PATH=(\S+)", rjoined)
    check(envpath and prefix and (prefix + "/bin") in envpath.group(1).split(":"),
          "%s/bin is on the image's PATH" % prefix)
    check(re.search(r'^ENTRYPOINT \["imgsearch"\]$', rjoined, re.M), "ENTRYPOINT is imgsearch")
    cmd = re.search(r"^CMD (\[.*\])$", rjoined, re.M)
    cmd = json.loads(cmd.group(1)) if cmd else []
    port = cmd[cmd.index("--port") + 1] if "--port" in cmd else None
    check(cmd[:1] == ["serve"] and port, "CMD is serve with a --port: %r" % cmd)
    check(re.search(r"^EXPOSE %s$" % port, rjoined, re.M), "EXPOSE %s" % port)
    check(re.search(r"HEALTHCHECK .*curl .*http://127\.0\.0\.1:%s/readyz" % port, rjoined),
          "HEALTHCHECK probes /readyz on port %s" % port)
    finish("dockerfile_check")


if __name__ == "__main__":
    main()
