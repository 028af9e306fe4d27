#!/usr/bin/env bash
# PostgreSQL for the crystal database tests: Debian's server, a throwaway cluster under /tmp,
# listening on 127.0.0.1:55432 only. Sourced by .ci/run (as root, under set -euo pipefail);
# idempotent: a running cluster is reused. Exports LAMKIT_TEST_PG_URL.
# Everything runs in a subshell so that a failure here cannot abort the caller's shell; the
# caller's tests then fail loudly (CI=true) because LAMKIT_TEST_PG_URL stays unset.
_lamkit_pg_setup() (
    set -eu
    port=${LAMKIT_PG_PORT:-55432}
    data=${LAMKIT_PG_DATA:-/tmp/lamkit-pg/data}
    pgbin=""
    find_bin() {
        for d in /usr/lib/postgresql/*/bin; do
            if [ -x "$d/initdb" ]; then pgbin=$d; fi
        done
    }
    find_bin
    if [ -z "$pgbin" ]; then
        echo "postgres.sh: installing Debian's postgresql" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq postgresql >/dev/null
        find_bin
    fi
    if [ -z "$pgbin" ]; then
        echo "postgres.sh: no initdb under /usr/lib/postgresql/*/bin after install" >&2
        return 1
    fi
    as_pg() { runuser -u postgres -- "$@"; }
    if ! as_pg "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
        mkdir -p "$(dirname "$data")"
        chown postgres:postgres "$(dirname "$data")"
        if [ ! -f "$data/PG_VERSION" ]; then
            as_pg "$pgbin/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C >/dev/null
        fi
        # a stale pid file from a killed server blocks the start
        if [ -f "$data/postmaster.pid" ] && ! as_pg "$pgbin/pg_ctl" -D "$data" status >/dev/null; then
            rm -f "$data/postmaster.pid"
        fi
        as_pg "$pgbin/pg_ctl" -D "$data" -l "$data/../server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k /tmp" start >/dev/null
    fi
    psql_pg() { as_pg "$pgbin/psql" -h 127.0.0.1 -p "$port" -U postgres -qtA "$@"; }
    if [ "$(psql_pg -c "SELECT 1 FROM pg_roles WHERE rolname='lamkit'")" != "1" ]; then
        psql_pg -c "CREATE ROLE lamkit LOGIN PASSWORD 'lamkit'"
    fi
    if [ "$(psql_pg -c "SELECT 1 FROM pg_database WHERE datname='lamkit_test'")" != "1" ]; then
        psql_pg -c "CREATE DATABASE lamkit_test OWNER lamkit"
    fi
)

if _lamkit_pg_setup; then
    export LAMKIT_TEST_PG_URL="postgresql+psycopg://lamkit:lamkit@127.0.0.1:${LAMKIT_PG_PORT:-55432}/lamkit_test"
    echo "postgres.sh: LAMKIT_TEST_PG_URL=$LAMKIT_TEST_PG_URL" >&2
else
    echo "postgres.sh: PostgreSQL setup failed; the database tests will report it" >&2
fi
unset -f _lamkit_pg_setup
