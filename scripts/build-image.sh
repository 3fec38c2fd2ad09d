#!/usr/bin/env bash
# Builds the csi-snapshotter release image with podman or docker, without any
# registry access: the binary is compiled on this machine (statically linked,
# test peers left out) and placed in the Dockerfile's final stage, which is
# FROM scratch.
#
#   scripts/build-image.sh [--nonroot] [TAG]
#
# TAG defaults to csi-snapshotter:<crate version>, with "-nonroot" appended for
# --nonroot (the variant that runs as 65532:65532; the default runs as root,
# as the upstream image does; see docs/image.md). The tag is printed last, on
# stdout; everything else goes to stderr.
#
# Environment: VERSION (printed by --version; default: the crate version),
# ENGINE (podman or docker; default: whichever is found, podman first),
# CARGO_TARGET_DIR (as for cargo).
set -euo pipefail
cd "$(dirname "$0")/.."

variant=root
if [[ "${1:-}" == "--nonroot" ]]; then
    variant=nonroot
    shift
fi
if [[ $# -gt 1 || "${1:-}" == -* ]]; then
    echo "usage: $0 [--nonroot] [TAG]" >&2
    exit 2
fi

crate_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[[ -n "$crate_version" ]] || { echo "build-image: no version in Cargo.toml" >&2; exit 1; }
version="${VERSION:-$crate_version}"
default_tag="csi-snapshotter:${crate_version}"
[[ "$variant" == nonroot ]] && default_tag="${default_tag}-nonroot"
tag="${1:-$default_tag}"

engine="${ENGINE:-}"
if [[ -z "$engine" ]]; then
    if command -v podman >/dev/null; then
        engine=podman
    elif command -v docker >/dev/null; then
        engine=docker
    else
        echo "build-image: neither podman nor docker is installed" >&2
        exit 1
    fi
fi

case "$(uname -m)" in
    x86_64) target=x86_64-unknown-linux-gnu ;;
    aarch64 | arm64) target=aarch64-unknown-linux-gnu ;;
    *) echo "build-image: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac

# --target keeps RUSTFLAGS away from build scripts and proc macros, which
# must stay dynamically linked host programs.
echo "build-image: cargo build --release --no-default-features --target $target (static)" >&2
CSI_SNAPSHOTTER_VERSION="$version" RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --no-default-features --target "$target" >&2
binary="${CARGO_TARGET_DIR:-target}/${target}/release/csi-snapshotter"

# An empty image has no dynamic loader: the binary must be static (ldd says
# "statically linked" for a static PIE, "not a dynamic executable" otherwise).
linkage=$(ldd "$binary" 2>&1 || true)
if [[ "$linkage" != *"statically linked"* && "$linkage" != *"not a dynamic executable"* ]]; then
    echo "build-image: $binary is dynamically linked:" >&2
    echo "$linkage" >&2
    exit 1
fi
if command -v file >/dev/null; then
    file "$binary" >&2
fi
"$binary" --version >&2

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/csi-snapshotter"
# The CA bundle the image carries, as distroless "static" does (the
# Kubernetes client loads it at startup).
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[[ -s "$ca_bundle" ]] || { echo "build-image: $ca_bundle is missing (install ca-certificates)" >&2; exit 1; }
cp "$ca_bundle" "$context/ca-certificates.crt"
revision=$(git rev-parse HEAD 2>/dev/null || true)

echo "build-image: $engine build --target $variant -t $tag" >&2
"$engine" build \
    --file "$PWD/Dockerfile" \
    --target "$variant" \
    --build-arg BINARY=prebuilt \
    --build-arg VERSION="$version" \
    --build-arg REVISION="$revision" \
    --tag "$tag" \
    "$context" >&2

echo "$tag"
