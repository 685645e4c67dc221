#!/bin/sh
# SPDX-License-Identifier: MIT
# bench_catalogue.sh BUILD_DIR [bench_catalogue options]: starts a throwaway
# PostgreSQL (tests/pg/pg_server.sh), makes an empty database, runs
# BUILD_DIR/bench/bench_catalogue on it and on a SQLite folder, prints its
# JSON, stops the server.
set -eu
build=${1:?usage: bench_catalogue.sh BUILD_DIR [options]}
shift
here=$(cd "$(dirname "$0")" && pwd)
state=$(mktemp -d "${TMPDIR:-/tmp}/ims-bench-pg-XXXXXX")
trap '"$here/../tests/pg/pg_server.sh" stop "$state"; rm -rf "$state"' EXIT
url=$("$here/../tests/pg/pg_server.sh" start "$state")
psql -X -q -d "$url" -c "CREATE DATABASE ims_bench" >/dev/null
"$build/bench/bench_catalogue" --pg "${url%/postgres}/ims_bench" "$@"
