#!/usr/bin/env bash
# Container smoke test of the release image, with no registry and no cluster:
# the embedded API server and the mock CSI driver run on this machine, the
# image runs under podman with host networking, a read-only root filesystem
# and every capability dropped. Three runs:
#
#   1. the default image (root) against a driver socket owned by root with
#      mode 0755, as most drivers create it: one dynamic snapshot becomes
#      ready and is deleted, and neither the object nor the backend snapshot
#      is left;
#   2. the non-root image (65532:65532) against a socket its supplementary
#      group may write (what fsGroup gives on an emptyDir): the same cycle;
#   3. the non-root image against the root-owned 0755 socket: the permission
#      error must be logged.
#
# Needs root, podman with runc, curl and jq (.ci/run installs them). Every
# failure stops the script with a message and the logs of what was running.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "smoke-image: FAILED: $*" >&2
    exit 1
}
step() { echo "smoke-image: $*" >&2; }

[[ $(id -u) -eq 0 ]] || fail "must run as root (rootful podman; the driver socket is owned by root)"
for tool in podman runc curl jq cargo; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done

# Deadlines, generous for a loaded 2-core machine.
READY_TIMEOUT=90
LOG_TIMEOUT=60
# The issue's size budget for the uncompressed image.
MAX_IMAGE_BYTES=$((20 * 1000 * 1000))
DRIVER=smoke.csi.example.com
NONROOT_UID=65532
# The group a pod's fsGroup would add; any ID other than the user's own.
SOCKET_GROUP=65533

work=$(mktemp -d)
chmod 0755 "$work"
# podman settings for these machines: runc (crun fails in cgroup hybrid
# mode), cgroupfs, no default ulimits, file-based events (no journald).
export CONTAINERS_CONF="$work/containers.conf"
cat >"$CONTAINERS_CONF" <<CONF
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF

pids=()
containers=()
cleanup() {
    local status=$?
    if [[ $status -ne 0 ]]; then
        for c in "${containers[@]}"; do
            echo "----- logs of container $c" >&2
            podman logs "$c" >&2 2>&1 || true
        done
        for log in "$work"/*.log; do
            [[ -e "$log" ]] || continue
            echo "----- $log" >&2
            tail -n 50 "$log" >&2 || true
        done
    fi
    for c in "${containers[@]}"; do podman rm -f "$c" >/dev/null 2>&1 || true; done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
    exit $status
}
trap cleanup EXIT

# The host-side test peers, as `cargo test` builds them (with the
# dev-dependencies' features, so after `cargo test` this builds nothing).
step "building the host-side test peers"
cargo test --locked --no-run >&2
bin_dir="${CARGO_TARGET_DIR:-target}/debug"

step "building the images"
image=$(scripts/build-image.sh "localhost/csi-snapshotter:smoke")
image_nonroot=$(scripts/build-image.sh --nonroot "localhost/csi-snapshotter:smoke-nonroot")

for img in "$image" "$image_nonroot"; do
    size=$(podman image inspect --format '{{.Size}}' "$img")
    step "image $img: $size bytes uncompressed ($((size / 1024)) KiB)"
    [[ $size -le $MAX_IMAGE_BYTES ]] || fail "$img is $size bytes, more than $MAX_IMAGE_BYTES"
done
[[ $(podman image inspect --format '{{.Config.User}}' "$image") == "0:0" ]] || fail "$image does not run as root"
[[ $(podman image inspect --format '{{.Config.User}}' "$image_nonroot") == "$NONROOT_UID:$NONROOT_UID" ]] ||
    fail "$image_nonroot does not run as $NONROOT_UID:$NONROOT_UID"
crate_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
version_out=$(podman run --rm --read-only --cap-drop=ALL --network=none "$image" --version 2>&1)
step "--version in the container: $version_out"
[[ "$version_out" == *"${VERSION:-$crate_version}"* ]] || fail "--version printed '$version_out'"

step "starting the embedded API server"
# Plain HTTP: this test is about the image, its user and the driver socket;
# the sidecar's HTTPS client is covered by cargo test.
"$bin_dir/csi-snapshotter" embedded-apiserver --plain-http \
    --kubeconfig-out "$work/kubeconfig" \
    --restricted-rbac deploy/kubernetes/rbac.yaml \
    >"$work/apiserver.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    [[ -s "$work/kubeconfig.restricted" ]] && break
    sleep 0.2
done
[[ -s "$work/kubeconfig.restricted" ]] || fail "the embedded API server wrote no kubeconfig"
# The sidecar in the container uses the restricted user, held to the rules of
# deploy/kubernetes/rbac.yaml; the script itself uses the full user.
chmod 0644 "$work/kubeconfig.restricted"
server=$(sed -n 's/^ *server: *//p' "$work/kubeconfig" | head -n 1)
token=$(sed -n 's/^ *token: *//p' "$work/kubeconfig" | head -n 1)
[[ -n "$server" && -n "$token" ]] || fail "no server or token in $work/kubeconfig"

api() {
    local method=$1 path=$2
    shift 2
    curl --silent --show-error --fail-with-body -X "$method" \
        -H "Authorization: Bearer $token" -H "Accept: application/json" "$@" "$server$path"
}
CONTENTS=/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents

api POST /apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses -H "Content-Type: application/json" \
    -d "{\"apiVersion\":\"snapshot.storage.k8s.io/v1\",\"kind\":\"VolumeSnapshotClass\",\"metadata\":{\"name\":\"smoke\"},\"driver\":\"$DRIVER\",\"deletionPolicy\":\"Delete\"}" \
    >/dev/null

# Starts the mock driver on $work/<name>/csi.sock, owned by root with mode 0755.
start_driver() {
    local name=$1
    mkdir -m 0755 "$work/$name"
    "$bin_dir/csi-mock-driver" --endpoint "unix://$work/$name/csi.sock" --name "$DRIVER" \
        --state-file "$work/$name/state.json" >"$work/$name-driver.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        [[ -S "$work/$name/csi.sock" ]] && break
        sleep 0.1
    done
    [[ -S "$work/$name/csi.sock" ]] || fail "the mock driver made no socket in $work/$name"
    chown 0:0 "$work/$name/csi.sock"
    chmod 0755 "$work/$name/csi.sock"
}

# Runs the sidecar image against $work/<name>; extra podman flags follow.
start_sidecar() {
    local name=$1 img=$2
    shift 2
    local container="csi-snapshotter-smoke-$name-$$"
    podman run --detach --name "$container" \
        --network=host --read-only --cap-drop=ALL --security-opt=no-new-privileges \
        --volume "$work/$name:/csi" \
        --volume "$work/kubeconfig.restricted:/etc/csi-snapshotter/kubeconfig:ro" \
        "$@" "$img" \
        --csi-address=/csi/csi.sock \
        --kubeconfig=/etc/csi-snapshotter/kubeconfig \
        --v=2 >/dev/null
    echo "$container"
}

backend_snapshots() {
    jq '.snapshots | length' "$work/$1/state.json"
}

# One dynamic snapshot through the sidecar in container $2, driver $1:
# created, ready, deleted, and nothing left.
snapshot_cycle() {
    local name=$1 container=$2
    local uid
    uid=$(cat /proc/sys/kernel/random/uuid)
    local content="snapcontent-$uid"
    api POST "$CONTENTS" -H "Content-Type: application/json" -d "{
        \"apiVersion\": \"snapshot.storage.k8s.io/v1\", \"kind\": \"VolumeSnapshotContent\",
        \"metadata\": {\"name\": \"$content\",
            \"finalizers\": [\"snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection\"]},
        \"spec\": {\"deletionPolicy\": \"Delete\", \"driver\": \"$DRIVER\",
            \"source\": {\"volumeHandle\": \"smoke-volume-$name\"},
            \"volumeSnapshotClassName\": \"smoke\",
            \"volumeSnapshotRef\": {\"apiVersion\": \"snapshot.storage.k8s.io/v1\", \"kind\": \"VolumeSnapshot\",
                \"namespace\": \"default\", \"name\": \"smoke-$name\", \"uid\": \"$uid\"}}}" >/dev/null

    local ready="" handle=""
    for _ in $(seq $((READY_TIMEOUT * 2))); do
        local obj
        obj=$(api GET "$CONTENTS/$content")
        ready=$(jq -r '.status.readyToUse // false' <<<"$obj")
        handle=$(jq -r '.status.snapshotHandle // ""' <<<"$obj")
        [[ "$ready" == true && -n "$handle" ]] && break
        [[ $(podman inspect --format '{{.State.Running}}' "$container") == true ]] ||
            fail "container $container exited"
        sleep 0.5
    done
    [[ "$ready" == true && -n "$handle" ]] || fail "$content not ready within ${READY_TIMEOUT}s"
    [[ $(backend_snapshots "$name") -eq 1 ]] || fail "the backend does not hold exactly one snapshot"
    step "[$name] $content ready, snapshotHandle $handle"

    # As the snapshot-controller deletes a content with policy Delete.
    api PATCH "$CONTENTS/$content" -H "Content-Type: application/merge-patch+json" \
        -d '{"metadata":{"annotations":{"snapshot.storage.kubernetes.io/volumesnapshot-being-deleted":"yes"}}}' >/dev/null
    api DELETE "$CONTENTS/$content" >/dev/null
    local gone=""
    for _ in $(seq $((READY_TIMEOUT * 2))); do
        local code
        code=$(curl --silent --output /dev/null --write-out '%{http_code}' \
            -H "Authorization: Bearer $token" "$server$CONTENTS/$content")
        if [[ "$code" == 404 ]]; then
            gone=yes
            break
        fi
        sleep 0.5
    done
    [[ -n "$gone" ]] || fail "$content still exists ${READY_TIMEOUT}s after its deletion"
    [[ $(backend_snapshots "$name") -eq 0 ]] || fail "the backend snapshot $handle was left behind"
    [[ $(api GET "$CONTENTS" | jq '.items | length') -eq 0 ]] || fail "contents left in the API server"
    step "[$name] $content deleted; no object and no backend snapshot left"
}

step "run 1: default image (root) against a root-owned 0755 socket"
start_driver root
c=$(start_sidecar root "$image")
containers+=("$c")
snapshot_cycle root "$c"
# One sidecar at a time: each watches every content of the driver name.
podman rm -f "$c" >/dev/null

step "run 2: non-root image against a socket its supplementary group may write (as with fsGroup)"
start_driver nonroot
chgrp "$SOCKET_GROUP" "$work/nonroot/csi.sock"
chmod 0775 "$work/nonroot/csi.sock"
c=$(start_sidecar nonroot "$image_nonroot" --group-add "$SOCKET_GROUP")
containers+=("$c")
snapshot_cycle nonroot "$c"
podman rm -f "$c" >/dev/null

step "run 3: non-root image against a root-owned 0755 socket"
start_driver denied
c=$(start_sidecar denied "$image_nonroot")
containers+=("$c")
line=""
for _ in $(seq $((LOG_TIMEOUT * 2))); do
    line=$(podman logs "$c" 2>&1 | grep -m 1 'permission denied on the CSI driver socket' || true)
    [[ -n "$line" ]] && break
    sleep 0.5
done
[[ -n "$line" ]] || fail "no permission error logged within ${LOG_TIMEOUT}s"
for field in 'socket_owner="0"' 'socket_group="0"' 'socket_mode="0755"' \
    "sidecar_uid=\"$NONROOT_UID\"" "sidecar_gid=\"$NONROOT_UID\"" 'runAsUser: 0' 'fsGroup'; do
    [[ "$line" == *"$field"* ]] || fail "the permission error lacks $field: $line"
done
[[ "$line" == E* ]] || fail "the permission error is not logged as an error: $line"
step "[denied] the container logged:"
podman logs "$c" 2>&1 | head -n 6 >&2

step "PASSED"
