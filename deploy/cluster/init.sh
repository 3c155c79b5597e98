#!/bin/bash
# One-shot set-up of a cluster's secrets volume (/secrets), run by the compose file's `init`
# service before anything else; idempotent, nothing is regenerated once it exists:
#   /secrets/env          WARREN_ENCRYPTION_KEY, WARREN_JWT_SECRET and the database URLs
#                         (passwords generated here);
#   /secrets/nats/        the NATS cluster's configs, its auth.conf and cluster-auth.conf, and
#                         each role's key in credentials/<role>.nk (`warren nats-auth`).
set -euo pipefail
umask 077
mkdir -p /secrets/nats
random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
if [ ! -s /secrets/env ]; then
    writer=$(random_hex 16)
    reader=$(random_hex 16)
    superuser=$(random_hex 16)
    db_host=${WARREN_CLUSTER_DB_HOST:-db}
    cat >/secrets/env.partial <<ENV
WARREN_ENCRYPTION_KEY=$(random_hex 32)
WARREN_JWT_SECRET=$(random_hex 32)
WARREN_DB_SUPERUSER_PASSWORD=$superuser
WARREN_DATABASE_SUPERUSER_URL=postgres://postgres:$superuser@$db_host:5432/postgres
WARREN_DATABASE_URL=postgres://warren_writer:$writer@$db_host:5432/warren
WARREN_DATABASE_READER_URL=postgres://warren_reader:$reader@$db_host:5432/warren
ENV
    mv /secrets/env.partial /secrets/env
fi
cp /etc/warren/nats/*.conf /secrets/nats/
warren nats-auth /secrets/nats --routes "${WARREN_CLUSTER_NATS_ROUTES:-nats-1,nats-2,nats-3}"
# Every service reads this volume as root inside its container; nothing else mounts it.
echo "init: secrets ready in /secrets"
