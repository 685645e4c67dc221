#!/bin/sh
# SPDX-License-Identifier: MIT
# bench_catalogue.sh BUILD_DIR [bench_catalogue options]: starts a throwaway
# PostgreSQL (tests/pg/pg_server.sh), makes an empty database, runs
# BUILD_DIR/bench/bench_catalogue on it and on a SQLite folder, prints its
# JSON, stops the server. The server keeps PostgreSQL's durable defaults.
set -eu
build=${1:?usage: bench_catalogue.sh BUILD_DIR [options]}
shift
here=$(cd "$(dirname "$0")" && pwd)
state=$(mktemp -d "${TMPDIR:-/tmp}/ims-bench-pg-XXXXXX")
trap '"$here/../tests/pg/pg_server.sh" stop "$state"; rm -rf "$state"' EXIT
# durable commits (fsync on), as SQLite's synchronous=FULL
url=$(IMS_PG_DURABLE=1 "$here/../tests/pg/pg_server.sh" start "$state")
psql -X -q -d "$url" -c "CREATE DATABASE ims_bench" >/dev/null
"$build/bench/bench_catalogue" --pg "${url%/postgres}/ims_bench" "$@"
