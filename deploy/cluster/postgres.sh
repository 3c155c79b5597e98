#!/bin/bash
# The cluster's PostgreSQL (Debian's 15): makes the data directory on first start (owned by
# `postgres`, superuser password from /secrets/env, password logins from the network only),
# then runs the server in the foreground. `warren db-roles` (the compose file's `migrate`
# service) then makes Warren's database and its writer and reader roles.
set -euo pipefail
bin=/usr/lib/postgresql/15/bin
data=/data/pg
mkdir -p "$data" /run/postgresql
chown postgres:postgres "$data" /run/postgresql
chmod 700 "$data"
if [ ! -s "$data/PG_VERSION" ]; then
    : "${WARREN_DB_SUPERUSER_PASSWORD:?the superuser password (from /secrets/env)}"
    printf '%s\n' "$WARREN_DB_SUPERUSER_PASSWORD" >/run/postgresql/pwfile
    chown postgres /run/postgresql/pwfile
    runuser -u postgres -- "$bin/initdb" -D "$data" -U postgres --pwfile=/run/postgresql/pwfile \
        --auth-local=peer --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f /run/postgresql/pwfile
    cat >>"$data/pg_hba.conf" <<HBA
host all all 0.0.0.0/0 scram-sha-256
host all all ::/0 scram-sha-256
HBA
fi
exec runuser -u postgres -- "$bin/postgres" -D "$data" -c listen_addresses='*' \
    -c unix_socket_directories=/run/postgresql -c max_connections=200
