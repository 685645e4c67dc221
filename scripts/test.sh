#!/bin/sh
# SPDX-License-Identifier: MIT
# The test command of the README (and of .ci/run): installs what is missing,
# builds with -Werror and runs every test; then builds again with clang under
# AddressSanitizer + UndefinedBehaviorSanitizer (with the libFuzzer harnesses)
# and runs the tests again, except those labelled `slow` (the full-size model
# goldens, whose sanitizer run would take most of the time budget and whose
# code paths the tiny model already covers) and the browser test (it drives
# the page; the server under it is exercised under the sanitizers by
# it_server_e2e).
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh test
jobs=${IMS_JOBS:-$(nproc)}

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIMS_WERROR=ON >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j"$jobs" ${IMS_CTEST_ARGS:-})

if [ "${IMS_SKIP_SANITIZERS:-0}" != 1 ]; then
    CC=clang CXX=clang++ cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DIMS_WERROR=ON \
        -DIMS_SANITIZE_ADDRESS=ON -DIMS_SANITIZE_UNDEFINED=ON -DIMS_BUILD_BENCH=OFF >/dev/null
    cmake --build build-asan -j"$jobs"
    (cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
        ctest --output-on-failure -j"$jobs" -LE slow -E '^it_browser$' ${IMS_CTEST_ARGS:-})
fi
echo "all tests passed"
