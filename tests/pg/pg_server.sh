#!/bin/sh
# SPDX-License-Identifier: MIT
# pg_server.sh: a throwaway PostgreSQL server for the tests.
#
#   pg_server.sh start STATE_DIR   initdb + pg_ctl start; prints the URL
#   pg_server.sh stop STATE_DIR    stops it and removes its files
#   pg_server.sh url STATE_DIR     prints the URL of a running one
#
# The cluster lives in a fresh folder under $TMPDIR (/tmp), listening on a
# Unix socket in that folder and on 127.0.0.1 at a free port, with trust
# authentication for the `postgres` role (loopback only: nothing else can
# reach it) and fsync off (test data). PostgreSQL refuses to run as root, so
# as root the cluster folder belongs to the `postgres` user and every server
# command runs through `runuser -u postgres`. STATE_DIR (any folder, e.g. in
# the build tree) gets:
#   url         postgresql://postgres@127.0.0.1:PORT/postgres
#   socket_url  the same over the Unix socket
#   cluster     the cluster folder
# Tests create their own database each (CREATE DATABASE), so they can run in
# parallel on one server.
set -eu

cmd=${1:-}
state=${2:-}
if [ -z "$cmd" ] || [ -z "$state" ]; then
    echo "usage: $0 start|stop|url STATE_DIR" >&2
    exit 2
fi

bindir=""
if command -v pg_config >/dev/null 2>&1; then
    bindir=$(pg_config --bindir)
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && bindir=$d
    done
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "$0: PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql" >&2
    exit 1
fi

as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

running() {
    [ -f "$state/cluster" ] || return 1
    c=$(cat "$state/cluster")
    [ -d "$c/data" ] && as_pg "$bindir/pg_ctl" -D "$c/data" status >/dev/null 2>&1
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case "$cmd" in
start)
    mkdir -p "$state"
    if running; then
        cat "$state/url"
        exit 0
    fi
    cluster=$(mktemp -d "${TMPDIR:-/tmp}/ims-pg-XXXXXX")
    chmod 700 "$cluster"
    if [ "$(id -u)" = 0 ]; then
        chown postgres:postgres "$cluster"
    fi
    if ! as_pg "$bindir/initdb" -D "$cluster/data" -U postgres --auth=trust --no-sync \
        -E UTF8 --locale=C >"$state/initdb.log" 2>&1; then
        cat "$state/initdb.log" >&2
        rm -rf "$cluster"
        exit 1
    fi
    tries=0
    while :; do
        port=$(free_port)
        if as_pg "$bindir/pg_ctl" -D "$cluster/data" -l "$cluster/server.log" -w -t 60 \
            -o "-k $cluster -p $port -h 127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c shared_buffers=32MB" \
            start >/dev/null 2>&1; then
            break
        fi
        tries=$((tries + 1))
        if [ $tries -ge 5 ]; then
            echo "$0: the server did not start:" >&2
            cat "$cluster/server.log" >&2 || true
            rm -rf "$cluster"
            exit 1
        fi
    done
    echo "$cluster" >"$state/cluster"
    echo "postgresql://postgres@127.0.0.1:$port/postgres" >"$state/url"
    echo "postgresql://postgres@/postgres?host=$cluster&port=$port" >"$state/socket_url"
    cat "$state/url"
    ;;
stop)
    if [ -f "$state/cluster" ]; then
        c=$(cat "$state/cluster")
        if [ -d "$c/data" ]; then
            as_pg "$bindir/pg_ctl" -D "$c/data" -m immediate -w stop >/dev/null 2>&1 || true
        fi
        case "$c" in
        */ims-pg-*) rm -rf "$c" ;;
        esac
        rm -f "$state/cluster" "$state/url" "$state/socket_url"
    fi
    ;;
url)
    running || { echo "$0: no server running for $state" >&2; exit 1; }
    cat "$state/url"
    ;;
*)
    echo "usage: $0 start|stop|url STATE_DIR" >&2
    exit 2
    ;;
esac
