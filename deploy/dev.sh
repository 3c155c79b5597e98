#!/usr/bin/env bash
# Starts the whole Warren platform on this machine: installs what is missing (nats-server,
# PostgreSQL), builds the `warren` binary and the agent runtime `warren-agent` beside it (the
# deployer starts one per agent), and runs `warren dev`, which starts a local nats-server
# (store in ./.warren/nats) and a local PostgreSQL cluster (./.warren/pg) unless WARREN_NATS_URL /
# WARREN_DATABASE_URL point elsewhere. Extra arguments go to `warren dev`. Ctrl-C stops everything.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCRIPT=dev.sh
# shellcheck source=deploy/install.sh
source deploy/install.sh

ensure_nats
ensure_postgres_binaries
export WARREN_PG_BIN_DIR=${WARREN_PG_BIN_DIR:-$PG_BIN}
say "building warren and warren-agent"
cargo build --release --locked --bin warren --bin warren-agent
say "starting warren dev (http://${WARREN_HTTP_ADDR:-127.0.0.1:8080}/api/v1/health)"
exec cargo run --release --locked --bin warren -- dev "$@"
