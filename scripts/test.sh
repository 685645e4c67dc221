#!/bin/sh
# SPDX-License-Identifier: MIT
# The test command of the README (and of .ci/run): installs what is missing,
# builds with -Werror and runs every test; then builds again with clang under
# AddressSanitizer + UndefinedBehaviorSanitizer (with the libFuzzer harnesses)
# and runs the tests again, except those labelled `slow` (the full-size model
# goldens, whose sanitizer run would take most of the time budget and whose
# code paths the tiny model already covers) and the browser tests (they drive
# the page; the server under them is exercised under the sanitizers by
# it_server_e2e and the filter/tag tests). Last, a ThreadSanitizer build runs the unit tests of the
# threaded modules.
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
        ctest --output-on-failure -j"$jobs" -LE slow -E '^it_browser' ${IMS_CTEST_ARGS:-})
fi
if [ "${IMS_SKIP_SANITIZERS:-0}" != 1 ]; then
    # ThreadSanitizer over the unit tests of the modules that own threads or
    # locks (queues, the engine worker, index rwlock and search batches, store reader pool,
    # caches, fetcher, ingest pipeline and service, server): the tests labelled `tsan`
    # where they are declared (ims_add_unit_test ... TSAN). libFuzzer's coverage counters would race, so
    # no fuzz build; OpenBLAS runs single-threaded because its own threads
    # are not instrumented (their hand-off inside sgemm reads as races).
    CC=clang CXX=clang++ cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DIMS_WERROR=ON \
        -DIMS_SANITIZE_THREAD=ON -DIMS_BUILD_FUZZ=OFF -DIMS_BUILD_BENCH=OFF >/dev/null
    # only the executables of the `tsan` tests (the binary, fuzzers and
    # benches are built and run by the passes above)
    cmake --build build-tsan -j"$jobs" --target tsan_tests
    (cd build-tsan && OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS=halt_on_error=1 \
        ctest --output-on-failure -j"$jobs" \
        -L tsan \
        ${IMS_CTEST_ARGS:-})
fi
echo "all tests passed"
