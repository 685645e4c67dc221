#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs the Debian 12 packages imgsearch needs, only those missing.
# usage: scripts/deps.sh [build|test|run]   (test adds the test-only tools;
#        run: only what the built binary needs, as deploy/Dockerfile's
#        run-time stage installs it)
#        scripts/deps.sh --list [build|test|run]   prints the list, installs nothing
set -eu
list=0
if [ "${1:-}" = --list ]; then
    list=1
    shift
fi
mode=${1:-build}
want="build-essential cmake pkg-config git ca-certificates
libjpeg62-turbo-dev libpng-dev libwebp-dev libgif-dev zlib1g-dev
libopenblas-dev libfaiss-dev libdnnl-dev libutf8proc-dev
libsqlite3-dev libcurl4-openssl-dev libmicrohttpd-dev libjansson-dev
libpq-dev libheif-dev libtiff-dev"
if [ "$mode" = run ]; then
    # the shared libraries `imgsearch` links (FAISS is linked statically);
    # libc6, libgcc-s1 and libstdc++6 come with every Debian 12 image
    want="ca-certificates libjpeg62-turbo libpng16-16 libwebp7 libwebpdemux2 libgif7 zlib1g
libopenblas0-pthread libgomp1 libdnnl2 libutf8proc2
libsqlite3-0 libcurl4 libmicrohttpd12 libjansson4
libpq5 libheif1 libtiff6"
fi
if [ "$mode" = test ]; then
    want="$want libcmocka-dev clang libclang-rt-14-dev curl python3 chromium"
    # a real PostgreSQL server for the catalogue tests (started by the tests
    # themselves in a temporary folder), and libheif's encoders to make HEIC
    # and AVIF test images
    want="$want postgresql-15 postgresql-client-15 libheif-examples"
    # Debian's nginx in front of three nodes: deploy/compose.yaml's topology
    # run without containers (it_deploy_topology)
    want="$want nginx"
    # browser tests need node + npm: Debian's packages unless a node is
    # already installed some other way (e.g. NodeSource, which conflicts)
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        want="$want nodejs npm"
    fi
fi
if [ $list = 1 ]; then
    # shellcheck disable=SC2086
    printf '%s\n' $want
    exit 0
fi
missing=""
for p in $want; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing Debian packages:$missing" >&2
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
