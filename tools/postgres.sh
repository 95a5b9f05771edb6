#!/usr/bin/env bash
# A local PostgreSQL for the store's tests (`make postgres`; `.ci/run` needs it, `make test`
# tries it and lets those tests skip without it).
#
# Installs Debian's postgresql package when it is missing and we are root with apt, starts
# the cluster, and makes sure the role the tests connect as exists:
#   postgresql+psycopg://fedgate:fedgate@127.0.0.1:5432/postgres  (FEDGATE_TEST_POSTGRES_URL)
# with CREATEDB, since every test makes a database of its own. Idempotent: run it at will.
set -euo pipefail

ROLE=fedgate
PASSWORD=fedgate  # a throwaway test role on loopback, not a secret

say() { echo "postgres.sh: $*" >&2; }

if [ -n "${FEDGATE_TEST_POSTGRES_URL:-}" ]; then
    say "the tests use the server FEDGATE_TEST_POSTGRES_URL names; nothing to start here"
    exit 0
fi

as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -n -u postgres "$@"; fi
}

installed() { command -v pg_lsclusters >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; }

if ! installed; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing PostgreSQL from the distribution's packages"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
    else
        say "PostgreSQL is not installed and this is not root with apt-get: install it" \
            "(e.g. apt-get install postgresql) or point FEDGATE_TEST_POSTGRES_URL at a server"
        exit 1
    fi
fi

# The newest installed version, and its cluster (created if the package did not make one).
VERSION=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$VERSION main"; then
    say "creating cluster $VERSION main"
    pg_createcluster "$VERSION" main
fi
PORT=$(pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $3}')
if ! pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $4}' | grep -q online; then
    say "starting cluster $VERSION main on port $PORT"
    pg_ctlcluster "$VERSION" main start
fi
for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p "$PORT" && break
    sleep 0.5
done
pg_isready -h 127.0.0.1 -p "$PORT" >/dev/null || { say "the server does not answer on port $PORT"; exit 1; }

# The tests' role: created once, its password and CREATEDB (re)set every time.
EXISTS=$(as_postgres psql -p "$PORT" -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")
if [ "$EXISTS" != 1 ]; then
    as_postgres psql -p "$PORT" -q -c "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD'"
else
    as_postgres psql -p "$PORT" -q -c "ALTER ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD'"
fi
say "PostgreSQL $VERSION ready: postgresql+psycopg://$ROLE:$PASSWORD@127.0.0.1:$PORT/postgres"
