#!/usr/bin/env bash
# Builds the images Warren's cluster file (deploy/compose.yaml) runs, locally, with no registry:
#
#   warren:<version> (and warren:latest)  the `warren` and `warren-agent` binaries (release,
#       without the local model), nats-server, PostgreSQL 15 and nginx on a Debian root made by
#       `debootstrap --variant=minbase` (kept in $WARREN_IMAGE_CACHE_DIR, default
#       ./.warren/images: about a minute the first time), with this directory's scripts;
#   warren-agent:<version>  the agent sandbox image the deployer starts (`warren image build`).
#
# Needs root, a Docker engine and a Debian mirror (WARREN_IMAGE_MIRROR); installs debootstrap
# when it is missing. Idempotent: an image whose content did not change is not built again.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SCRIPT=cluster/build.sh
# shellcheck source=deploy/install.sh
source deploy/install.sh

is_root || die "run as root: debootstrap and docker import need it"
docker_answers || die "no Docker engine answers"
ensure_debootstrap
ensure_nats

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
tag="warren:${version}"
cache="${WARREN_IMAGE_CACHE_DIR:-$PWD/.warren/images}"
mirror="${WARREN_IMAGE_MIRROR:-http://deb.debian.org/debian}"
packages="bash,coreutils,ca-certificates,postgresql-15,nginx-light,procps,iproute2,iptables"
suite=bookworm
recipe_id=$(printf '1\n%s\n%s\n' "$suite" "$packages" | sha256sum | cut -c1-16)
root="$cache/platform-rootfs-$recipe_id"

say "building warren and warren-agent (release, without the local model)"
cargo build --release --locked --no-default-features --bin warren --bin warren-agent
target=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)

if [ ! -f "$root/complete" ]; then
    say "making the Debian root with debootstrap ($packages)"
    rm -rf "$root/root.partial"
    mkdir -p "$root"
    debootstrap --variant=minbase --include="$packages" "$suite" "$root/root.partial" "$mirror" >"$root/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $root/debootstrap.log"
    for trimmed in var/cache/apt var/lib/apt/lists usr/share/doc usr/share/man usr/share/locale usr/share/info; do
        rm -rf "${root:?}/root.partial/$trimmed" && mkdir -p "$root/root.partial/$trimmed"
    done
    # The Debian package made a cluster of its own; the image makes its own at first start.
    rm -rf "$root/root.partial/var/lib/postgresql/15/main" "$root/root.partial/etc/postgresql/15/main"
    rm -rf "$root/root" && mv "$root/root.partial" "$root/root"
    touch "$root/complete"
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/usr/local/bin" "$stage/etc/warren/nats" "$stage/data"
install -m 0755 "$target/release/warren" "$target/release/warren-agent" "$stage/usr/local/bin/"
install -m 0755 "$(find_nats)" "$stage/usr/local/bin/nats-server"
install -m 0755 deploy/cluster/entrypoint.sh "$stage/usr/local/bin/warren-entrypoint"
install -m 0755 deploy/cluster/init.sh "$stage/usr/local/bin/warren-init"
install -m 0755 deploy/cluster/postgres.sh "$stage/usr/local/bin/warren-postgres"
install -m 0644 deploy/cluster/nginx.conf "$stage/etc/warren/nginx.conf"
install -m 0644 deploy/nats/cluster/*.conf "$stage/etc/warren/nats/"

content=$( (cd "$stage" && find . -type f -print0 | sort -z | xargs -0 sha256sum; echo "$recipe_id") | sha256sum | cut -c1-32)
if [ "$(docker image inspect -f '{{ index .Config.Labels "org.warren.content" }}' "$tag" 2>/dev/null || true)" = "$content" ]; then
    say "$tag is up to date"
else
    say "importing $tag"
    # One layer: the Debian root with Warren's files over it (one tree: an image's tar may not
    # name a path twice, and both trees hold ./, ./usr, …).
    image_root=$(mktemp -d)
    trap 'rm -rf "$stage" "$image_root"' EXIT
    cp -a "$root/root/." "$image_root/"
    cp -a "$stage/." "$image_root/"
    tar -c -C "$image_root" . | docker import \
        --change "LABEL org.warren.content=$content" \
        --change 'ENTRYPOINT ["/usr/local/bin/warren-entrypoint"]' \
        --change 'CMD ["warren", "--help"]' \
        --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'WORKDIR /data' \
        - "$tag" >/dev/null
fi
docker tag "$tag" warren:latest

say "building the agent sandbox image"
WARREN_AGENT_BIN="$target/release/warren-agent" "$target/release/warren" image build
say "done: $tag and the agent image; start the cluster with: docker-compose -f deploy/compose.yaml up -d"
