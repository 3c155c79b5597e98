#!/bin/bash
# The warren image's entrypoint: loads the cluster's generated settings (warren-init writes
# /secrets/env: the encryption key, the JWT secret, the database passwords), then runs the
# command. Variables set on the container win over the file.
set -euo pipefail
if [ -r /secrets/env ]; then
    while IFS='=' read -r name value; do
        case $name in '' | '#'*) continue ;; esac
        [ -n "${!name:-}" ] || export "$name=$value"
    done </secrets/env
fi
# The roles live in the host's network (the compose file): they reach the database on
# its published address instead.
if [ -n "${WARREN_CLUSTER_DB_ADDR:-}" ]; then
    for name in WARREN_DATABASE_URL WARREN_DATABASE_READER_URL WARREN_DATABASE_SUPERUSER_URL; do
        [ -z "${!name:-}" ] || export "$name=${!name/@db:5432\//@$WARREN_CLUSTER_DB_ADDR/}"
    done
fi
# Roles find their NATS key by role name in the generated credentials.
if [ -d /secrets/nats/credentials ] && [ -z "${WARREN_NATS_CREDENTIALS_DIR:-}" ]; then
    export WARREN_NATS_CREDENTIALS_DIR=/secrets/nats/credentials
fi
# The compose file passes every optional setting through (`${VAR:-}`): an empty one means unset.
for name in $(compgen -e); do
    case $name in WARREN_* | OTEL_*) [ -n "${!name}" ] || unset "$name" ;; esac
done
exec "$@"
