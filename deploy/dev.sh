#!/usr/bin/env bash
# Starts the whole Warren platform on this machine: installs what is missing (nats-server,
# PostgreSQL, and for the local model cmake, g++, libclang-dev and the model file), builds the `warren` binary and the agent runtime `warren-agent` beside it (the
# deployer starts one per agent), and runs `warren dev`, which starts a local nats-server
# (store in ./.warren/nats) and a local PostgreSQL cluster (./.warren/pg) unless WARREN_NATS_URL /
# WARREN_DATABASE_URL point elsewhere. When a Docker engine answers (and WARREN_SANDBOX is not
# `process`), it also builds the agent sandbox image (`warren image build`: debootstrap, about 40 s
# the first time, nothing when it is up to date), so agents run in locked-down containers.
# Extra arguments go to `warren dev`. Ctrl-C stops everything.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCRIPT=dev.sh
# shellcheck source=deploy/install.sh
source deploy/install.sh

ensure_nats
ensure_postgres_binaries
export WARREN_PG_BIN_DIR=${WARREN_PG_BIN_DIR:-$PG_BIN}
# The local model answers a first chat when no provider is configured (WARREN_LOCAL_MODEL).
features=()
if [ "${WARREN_LOCAL_MODEL:-auto}" = off ]; then
    :
elif ensure_local_model_build_tools; then
    [ "${WARREN_LOCAL_MODEL:-auto}" != auto ] || ensure_local_model
else
    say "warning: cmake, g++ or libclang missing (apt-get install -y cmake g++ libclang-dev as root): building without the local model"
    features=(--no-default-features)
fi
say "building warren and warren-agent"
cargo build --release --locked "${features[@]}" --bin warren --bin warren-agent
if [ "${WARREN_SANDBOX:-auto}" != process ]; then
    if docker_answers && is_root; then
        ensure_debootstrap
        ensure_iptables
        say "building the agent sandbox image (warren image build)"
        if ! cargo run --release --locked "${features[@]}" --bin warren -- image build; then
            [ "${WARREN_SANDBOX:-auto}" = docker ] && die "warren image build failed"
            say "warning: no sandbox image: agents will run as unconfined processes"
        fi
    elif [ "${WARREN_SANDBOX:-auto}" = docker ]; then
        die "WARREN_SANDBOX=docker needs a Docker engine that answers and root to build the agent image"
    else
        say "warning: no Docker engine (or not root): agents will run as unconfined processes (development only)"
    fi
fi
say "starting warren dev (http://${WARREN_HTTP_ADDR:-127.0.0.1:8080}/api/v1/health)"
exec cargo run --release --locked "${features[@]}" --bin warren -- dev "$@"
