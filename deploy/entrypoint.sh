#!/bin/sh
# The gateway container's entrypoint: secrets come in as files (compose secrets, mounted
# under /run/secrets), never baked into the image or written in compose.yaml.
#   FEDGATE_DB_PASSWORD_FILE  -> PGPASSWORD, which libpq (psycopg) reads, so the --db URL
#                                carries no password;
#   FEDGATE_ADMIN_TOKEN_FILE  -> `fedgate serve --admin-token`, the operator token that
#                                Prometheus also scrapes /metrics with.
set -eu

if [ -n "${FEDGATE_DB_PASSWORD_FILE:-}" ]; then
    PGPASSWORD="$(cat "$FEDGATE_DB_PASSWORD_FILE")"
    export PGPASSWORD
fi

if [ -n "${FEDGATE_ADMIN_TOKEN_FILE:-}" ] && [ "${1:-}" = "fedgate" ] && [ "${2:-}" = "serve" ]; then
    token="$(cat "$FEDGATE_ADMIN_TOKEN_FILE")"
    exec "$@" --admin-token "$token"
fi
exec "$@"
