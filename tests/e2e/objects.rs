//! The objects the suite creates, as JSON. They are built here, apart from
//! the code that sends them, so that an offline test can check them against
//! the CRD schemas and the typed Kubernetes objects.

use serde_json::{Map, Value, json};

/// Size of every claim and pre-created volume. Drivers such as hostpath do
/// not allocate filesystem volumes up front, so this costs nothing.
pub const VOLUME_SIZE: &str = "1Gi";

/// Label on every namespace the suite creates (value `csi-snapshotter-e2e`).
pub const E2E_NAMESPACE_LABEL: &str = "app.kubernetes.io/part-of";

pub fn namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {E2E_NAMESPACE_LABEL: "csi-snapshotter-e2e"}},
    })
}

pub fn snapshot_class(
    name: &str,
    driver: &str,
    deletion_policy: &str,
    params: &[(&str, &str)],
) -> Value {
    let parameters: Map<String, Value> = params
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotClass",
        "metadata": {"name": name},
        "driver": driver,
        "deletionPolicy": deletion_policy,
        "parameters": parameters,
    })
}

pub fn snapshot_of_claim(name: &str, class: &str, claim: &str) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": name},
        "spec": {"volumeSnapshotClassName": class, "source": {"persistentVolumeClaimName": claim}},
    })
}

pub fn snapshot_of_content(name: &str, content: &str) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": name},
        "spec": {"source": {"volumeSnapshotContentName": content}},
    })
}

/// The snapshot-controller's finalizer on contents (spec 0.1).
pub const CONTENT_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";

/// A pre-provisioned content for `handle`, meant for the VolumeSnapshot
/// `snapshot` in `namespace` (which need not exist).
///
/// It carries the controller's finalizer from the start. The controller adds
/// it soon after creation anyway, but a content deleted before that would be
/// removed at once, without the sidecar ever deciding about its snapshot.
pub fn pre_provisioned_content(
    name: &str,
    driver: &str,
    handle: &str,
    deletion_policy: &str,
    snapshot: &str,
    namespace: &str,
) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": name, "finalizers": [CONTENT_FINALIZER]},
        "spec": {
            "deletionPolicy": deletion_policy,
            "driver": driver,
            "source": {"snapshotHandle": handle},
            "volumeSnapshotRef": {"name": snapshot, "namespace": namespace},
        },
    })
}

/// A claim provisioned by `storage_class`, or else bound to the
/// pre-created `volume`.
pub fn claim(name: &str, storage_class: Option<&str>, volume: Option<&str>) -> Value {
    let mut spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": VOLUME_SIZE}},
        "storageClassName": storage_class.unwrap_or(""),
    });
    if let Some(volume) = volume {
        spec["volumeName"] = Value::from(volume);
    }
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": spec})
}

/// A CSI volume of `driver`, reserved for `namespace/claim`.
pub fn static_volume(
    name: &str,
    driver: &str,
    handle: &str,
    namespace: &str,
    claim: &str,
) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": VOLUME_SIZE},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": namespace, "name": claim},
            "csi": {"driver": driver, "volumeHandle": handle},
        },
    })
}
