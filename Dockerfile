# syntax=docker/dockerfile:1
#
# Container image of the csi-snapshotter sidecar: one statically linked binary
# and the CA bundle in an otherwise empty image (no shell, no libc). See
# docs/image.md.
#
#   docker build -t csi-snapshotter:0.1.0 .                            # runs as root, like upstream
#   docker build -t csi-snapshotter:0.1.0-nonroot --target nonroot .   # runs as 65532:65532
#   docker buildx build --platform linux/amd64,linux/arm64 -t <registry>/csi-snapshotter:0.1.0 --push .
#
# scripts/build-image.sh builds the same final stages from a binary compiled
# on the host (no registry access needed): it passes BINARY=prebuilt and a
# build context that holds only that binary.
#
# The test peers (feature "testing": embedded API server, mock driver, demo)
# are left out with --no-default-features.

# Toolchain of the builder; the crate's rust-version is the minimum.
ARG RUST_VERSION=1.95
# Version printed by --version and logged at startup. Empty: the crate version.
ARG VERSION=""
# Source revision for the image label (scripts/build-image.sh passes the git commit).
ARG REVISION=""
# Stage the binary comes from: "build" compiles it below, "prebuilt" takes
# ./csi-snapshotter and ./ca-certificates.crt from the build context.
ARG BINARY=build

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
# Set by buildx/buildah from --platform; a plain build uses the builder's own
# architecture. The builder runs on the target platform (emulated when it is
# not the host's), so the target's native toolchain is already installed.
ARG TARGETARCH
WORKDIR /src
# Manifests first, so that the dependency download is cached across source edits.
COPY Cargo.toml Cargo.lock ./
RUN cargo fetch --locked
COPY build.rs ./
COPY proto ./proto
COPY src ./src
ARG VERSION
# glibc with crt-static links the whole C runtime into the binary. The
# sidecar resolves no host names in a pod (the in-cluster API address is an
# IP), so glibc's NSS, which a static binary cannot load, is never needed.
RUN set -eu; \
    arch="${TARGETARCH:-$(dpkg --print-architecture)}"; \
    case "${arch}" in \
      amd64) target=x86_64-unknown-linux-gnu ;; \
      arm64) target=aarch64-unknown-linux-gnu ;; \
      *) echo "unsupported architecture: ${arch} (amd64 and arm64 are)" >&2; exit 1 ;; \
    esac; \
    if [ -n "${VERSION}" ]; then export CSI_SNAPSHOTTER_VERSION="${VERSION}"; fi; \
    RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --release --no-default-features --locked --target "${target}"; \
    cp "target/${target}/release/csi-snapshotter" /csi-snapshotter

FROM scratch AS prebuilt
COPY csi-snapshotter /csi-snapshotter
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt

FROM ${BINARY} AS binary

# The default image: runs as root, as the upstream image does, so that it can
# connect to a driver socket created by root with mode 0755 (the usual case).
FROM scratch AS root
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.title="csi-snapshotter" \
      org.opencontainers.image.description="Drop-in replacement for the csi-snapshotter sidecar of kubernetes-csi/external-snapshotter" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binary /csi-snapshotter /csi-snapshotter
# The Kubernetes client's TLS set-up loads the system's CA bundle even when
# the kubeconfig or service account carries the cluster's CA, and fails on an
# empty store; distroless "static" ships the same bundle.
COPY --from=binary /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
USER 0:0
ENTRYPOINT ["/csi-snapshotter"]

# The non-root variant, for drivers that run (and create their socket) as
# 65532 or make it group-writable. Numeric, so that runAsNonRoot can verify
# it without reading /etc/passwd.
FROM root AS nonroot
USER 65532:65532

# The last stage is what a build without --target produces.
FROM root AS default
