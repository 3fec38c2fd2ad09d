# syntax=docker/dockerfile:1
#
# Container image of the csi-snapshotter sidecar: one statically linked binary
# on distroless "static" (no shell, no libc), running as UID 65532.
#
#   docker build -t csi-snapshotter:0.1.0 --build-arg VERSION=v0.1.0 .
#
# The test peers (feature "testing": embedded API server, mock driver, demo)
# are left out with --no-default-features.
#
# Size: the stripped static release binary is about 15 MB (6 MB gzipped), and
# the base adds about 2 MB, so expect an image of about 17 MB (7 MB compressed).

# Toolchain of the builder; the crate's rust-version is the minimum.
ARG RUST_VERSION=1.95
# Version printed by --version and logged at startup. Empty: the crate version.
ARG VERSION=""

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
# musl gives a fully static binary. musl-tools supplies musl-gcc, the C
# compiler that the ring crate's build script needs for this target (another
# target needs its own C cross compiler in CC_<target>).
ARG TARGET=x86_64-unknown-linux-musl
ENV CC_x86_64_unknown_linux_musl=musl-gcc
RUN rustup target add "${TARGET}" \
    && apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Manifests first, so that the dependency download is cached across source edits.
COPY Cargo.toml Cargo.lock ./
RUN cargo fetch --locked
COPY build.rs ./
COPY proto ./proto
COPY src ./src
ARG VERSION
RUN if [ -n "${VERSION}" ]; then export CSI_SNAPSHOTTER_VERSION="${VERSION}"; fi \
    && cargo build --release --no-default-features --locked --target "${TARGET}" \
    && cp "target/${TARGET}/release/csi-snapshotter" /csi-snapshotter

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION
LABEL org.opencontainers.image.title="csi-snapshotter" \
      org.opencontainers.image.description="Drop-in replacement for the csi-snapshotter sidecar of kubernetes-csi/external-snapshotter" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"
COPY --from=build /csi-snapshotter /csi-snapshotter
# Numeric, so that runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
ENTRYPOINT ["/csi-snapshotter"]
