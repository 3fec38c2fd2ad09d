//! The `v1` schemas of the six snapshot kinds, field by field, with the
//! validation rules the snapshot API declares for them.

use serde_json::Value;

use super::shape::{
    Shape, boolean, date_time, int64, kind_root, list, object, one_of, string, string_map,
};

/// What happens to the backend snapshot when its claim goes away.
fn deletion_policy() -> Value {
    one_of(&["Delete", "Retain"])
}

/// `status.error` of every snapshot kind.
fn snapshot_error() -> Value {
    object(&[("message", string()), ("time", date_time())])
}

/// An `ObjectReference` to the bound claim object, replaced as a whole.
fn object_reference() -> Value {
    object(&[
        ("apiVersion", string()),
        ("fieldPath", string()),
        ("kind", string()),
        ("name", string()),
        ("namespace", string()),
        ("resourceVersion", string()),
        ("uid", string()),
    ])
    .atomic_map()
}

/// A reference that names both the object and its namespace (`namespace`
/// is a CEL keyword, hence the escaped spelling).
fn bound_reference(message: &str) -> Value {
    object_reference().rule("has(self.name) && has(self.__namespace__)", message)
}

/// A resource quantity (`1Gi`, `500M`, `1e9`) as a string.
fn quantity() -> Value {
    string()
        .with(
            "pattern",
            Value::from(
                r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
            ),
        )
        .with("x-kubernetes-int-or-string", Value::Bool(true))
}

/// A class name that may be left out but not set empty.
fn class_name(field: &str) -> Value {
    string().rule(
        "size(self) > 0",
        &format!("{field} must not be the empty string when set"),
    )
}

/// `VolumeSnapshotClass` (cluster scoped, no spec).
pub(super) fn volume_snapshot_class() -> Value {
    kind_root(&[
        ("deletionPolicy", deletion_policy()),
        ("driver", string()),
        ("parameters", string_map()),
    ])
    .required(&["deletionPolicy", "driver"])
}

/// `VolumeSnapshot` (namespaced).
pub(super) fn volume_snapshot() -> Value {
    let source = object(&[
        (
            "persistentVolumeClaimName",
            string().immutable("persistentVolumeClaimName is immutable"),
        ),
        (
            "volumeSnapshotContentName",
            string().immutable("volumeSnapshotContentName is immutable"),
        ),
    ])
    .kept_once_set("persistentVolumeClaimName")
    .kept_once_set("volumeSnapshotContentName")
    .exactly_one("volumeSnapshotContentName", "persistentVolumeClaimName");
    let spec = object(&[
        ("source", source),
        (
            "volumeSnapshotClassName",
            class_name("volumeSnapshotClassName"),
        ),
    ])
    .required(&["source"]);
    let status = object(&[
        ("boundVolumeSnapshotContentName", string()),
        ("creationTime", date_time()),
        ("error", snapshot_error()),
        ("readyToUse", boolean()),
        ("restoreSize", quantity()),
        ("volumeGroupSnapshotName", string()),
    ]);
    kind_root(&[("spec", spec), ("status", status)]).required(&["spec"])
}

/// `VolumeSnapshotContent` (cluster scoped).
pub(super) fn volume_snapshot_content() -> Value {
    let source = object(&[
        (
            "snapshotHandle",
            string().immutable("snapshotHandle is immutable"),
        ),
        (
            "volumeHandle",
            string().immutable("volumeHandle is immutable"),
        ),
    ])
    .kept_once_set("volumeHandle")
    .kept_once_set("snapshotHandle")
    .exactly_one("volumeHandle", "snapshotHandle");
    let spec = object(&[
        ("deletionPolicy", deletion_policy()),
        ("driver", string()),
        ("source", source),
        (
            "sourceVolumeMode",
            string().immutable("sourceVolumeMode is immutable"),
        ),
        ("volumeSnapshotClassName", string()),
        (
            "volumeSnapshotRef",
            bound_reference(
                "both spec.volumeSnapshotRef.name and spec.volumeSnapshotRef.namespace must be set",
            ),
        ),
    ])
    .required(&["deletionPolicy", "driver", "source", "volumeSnapshotRef"])
    .kept_once_set("sourceVolumeMode");
    let status = object(&[
        ("creationTime", int64()),
        ("error", snapshot_error()),
        ("readyToUse", boolean()),
        ("restoreSize", int64().with("minimum", Value::from(0))),
        ("snapshotHandle", string()),
        ("volumeGroupSnapshotHandle", string()),
    ]);
    kind_root(&[("spec", spec), ("status", status)]).required(&["spec"])
}

/// `VolumeGroupSnapshotClass` (cluster scoped, no spec; nothing changes
/// once set).
pub(super) fn volume_group_snapshot_class() -> Value {
    kind_root(&[
        (
            "deletionPolicy",
            deletion_policy().immutable("deletionPolicy is immutable once set"),
        ),
        ("driver", string().immutable("driver is immutable once set")),
        (
            "parameters",
            string_map().immutable("parameters are immutable once set"),
        ),
    ])
    .required(&["deletionPolicy", "driver"])
}

/// `VolumeGroupSnapshot` (namespaced).
pub(super) fn volume_group_snapshot() -> Value {
    let requirement = object(&[
        ("key", string()),
        ("operator", string()),
        ("values", list(string()).atomic_list()),
    ])
    .required(&["key", "operator"]);
    let selector = object(&[
        ("matchExpressions", list(requirement).atomic_list()),
        ("matchLabels", string_map()),
    ])
    .atomic_map()
    .immutable("selector is immutable");
    let source = object(&[
        ("selector", selector),
        (
            "volumeGroupSnapshotContentName",
            string().immutable("volumeGroupSnapshotContentName is immutable"),
        ),
    ])
    .kept_once_set("selector")
    .kept_once_set("volumeGroupSnapshotContentName")
    .exactly_one("selector", "volumeGroupSnapshotContentName");
    let spec = object(&[
        ("source", source),
        (
            "volumeGroupSnapshotClassName",
            class_name("volumeGroupSnapshotClassName"),
        ),
    ])
    .required(&["source"]);
    let status = object(&[
        (
            "boundVolumeGroupSnapshotContentName",
            string().immutable("boundVolumeGroupSnapshotContentName is immutable once set"),
        ),
        ("creationTime", date_time()),
        ("error", snapshot_error()),
        ("readyToUse", boolean()),
    ]);
    kind_root(&[("spec", spec), ("status", status)]).required(&["spec"])
}

/// `VolumeGroupSnapshotContent` (cluster scoped).
pub(super) fn volume_group_snapshot_content() -> Value {
    let handles = object(&[
        ("volumeGroupSnapshotHandle", string()),
        ("volumeSnapshotHandles", list(string())),
    ])
    .required(&["volumeGroupSnapshotHandle", "volumeSnapshotHandles"])
    .immutable("groupSnapshotHandles is immutable");
    let source = object(&[
        ("groupSnapshotHandles", handles),
        (
            "volumeHandles",
            list(string()).immutable("volumeHandles is immutable"),
        ),
    ])
    .kept_once_set("volumeHandles")
    .kept_once_set("groupSnapshotHandles")
    .exactly_one("volumeHandles", "groupSnapshotHandles");
    let reference = bound_reference(
        "both volumeGroupSnapshotRef.name and volumeGroupSnapshotRef.namespace must be set",
    )
    .rule(
        "self.name == oldSelf.name && self.__namespace__ == oldSelf.__namespace__",
        "volumeGroupSnapshotRef.name and volumeGroupSnapshotRef.namespace are immutable",
    )
    .rule(
        "!has(oldSelf.uid) || (has(self.uid) && self.uid == oldSelf.uid)",
        "volumeGroupSnapshotRef.uid is immutable once set",
    );
    let spec = object(&[
        ("deletionPolicy", deletion_policy()),
        ("driver", string().immutable("driver is immutable once set")),
        ("source", source),
        (
            "volumeGroupSnapshotClassName",
            string().immutable("volumeGroupSnapshotClassName is immutable once set"),
        ),
        ("volumeGroupSnapshotRef", reference),
    ])
    .required(&[
        "deletionPolicy",
        "driver",
        "source",
        "volumeGroupSnapshotRef",
    ]);
    let snapshot_info = object(&[
        ("creationTime", int64()),
        ("readyToUse", boolean()),
        ("restoreSize", int64()),
        ("snapshotHandle", string()),
        ("volumeHandle", string()),
    ]);
    let status = object(&[
        ("creationTime", date_time()),
        ("error", snapshot_error()),
        ("readyToUse", boolean()),
        (
            "volumeGroupSnapshotHandle",
            string().immutable("volumeGroupSnapshotHandle is immutable once set"),
        ),
        ("volumeSnapshotInfoList", list(snapshot_info)),
    ]);
    kind_root(&[("spec", spec), ("status", status)]).required(&["spec"])
}
