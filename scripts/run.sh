#!/bin/sh
# SPDX-License-Identifier: MIT
# The run command of the README: installs what is missing, builds an optimised
# imgsearch and starts the server with its defaults (127.0.0.1:8080, data and
# model folders as the README describes). Extra arguments go to `serve`.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh build
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DIMS_BUILD_TESTS=OFF \
    -DIMS_BUILD_BENCH=OFF -DIMS_BUILD_FUZZ=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target imgsearch
exec build-release/src/cli/imgsearch serve "$@"
