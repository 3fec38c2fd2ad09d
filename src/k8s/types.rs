//! The snapshot CRD types the sidecar reads and writes, with the exact field
//! names of the upstream CRDs (`snapshot.storage.k8s.io/v1`,
//! `groupsnapshot.storage.k8s.io/v1`).
//!
//! - Spec types carry every field of the CRD spec (there are few) even where
//!   the sidecar only reads some, so a full-object write never drops one.
//! - Status types carry **every** status field of the CRD: status objects are
//!   replaced whole, so a missing field here would erase it on the server.
//! - Every optional field is an `Option` that is left out when `None`, so a
//!   write never sends a `null` that was not meant.
//! - `apiVersion` and `kind` are not stored; they are always written from the
//!   type (see the manual `Serialize` impls) and ignored when read.
//!
//! Decoding is strict per type; for watches use [`Lenient`], which turns an
//! object that does not decode into [`Lenient::Malformed`] instead of failing
//! the whole list or watch stream.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;
use kube::core::ClusterResourceScope;
use serde::de::DeserializeOwned;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::keys;
use super::lean::{self, LeanValue};

/// API group of VolumeSnapshotContent and VolumeSnapshotClass.
pub const SNAPSHOT_GROUP: &str = "snapshot.storage.k8s.io";
/// API group of the group-snapshot kinds.
pub const GROUP_SNAPSHOT_GROUP: &str = "groupsnapshot.storage.k8s.io";
/// The version the sidecar reads and writes for both groups (spec B.5).
pub const VERSION_V1: &str = "v1";

// ---------------------------------------------------------------------------
// VolumeSnapshotContent
// ---------------------------------------------------------------------------

/// A `VolumeSnapshotContent` (cluster-scoped).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContent {
    /// Standard object metadata (decoded without `managedFields`).
    #[serde(default, deserialize_with = "lean::meta")]
    pub metadata: ObjectMeta,
    /// The desired state (required by the CRD).
    #[serde(default)]
    pub spec: VolumeSnapshotContentSpec,
    /// The observed state; `None` means the object has no `status` at all,
    /// which is what tells a first create apart from a retry (spec C.2).
    #[serde(default)]
    pub status: Option<VolumeSnapshotContentStatus>,
}

/// `VolumeSnapshotContent.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentSpec {
    /// `Delete` or `Retain` (see [`keys::DELETION_POLICY_DELETE`]). Kept as a
    /// string so an unexpected value does not make the object undecodable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<String>,
    /// CSI driver name.
    #[serde(default)]
    pub driver: String,
    /// Where the snapshot comes from.
    #[serde(default)]
    pub source: VolumeSnapshotContentSource,
    /// `Filesystem` or `Block`; never read by the sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_volume_mode: Option<String>,
    /// Name of the VolumeSnapshotClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
    /// The bound VolumeSnapshot (name, namespace, uid, …).
    #[serde(default)]
    pub volume_snapshot_ref: ObjectReference,
}

/// `VolumeSnapshotContent.spec.source`: exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentSource {
    /// Pre-provisioned: the existing backend snapshot handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
    /// Dynamic: the CSI handle of the volume to snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_handle: Option<String>,
}

/// `VolumeSnapshotContent.status` with every field of the CRD.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentStatus {
    /// When the snapshot was cut, in Unix **nanoseconds**.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<i64>,
    /// The last error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<VolumeSnapshotError>,
    /// Whether the snapshot can be used to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// Restore size in bytes; never written as 0 (0 means unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<i64>,
    /// The backend snapshot handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
    /// Handle of the group snapshot this snapshot belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_group_snapshot_handle: Option<String>,
}

/// `status.error` of both content kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotError {
    /// Human-readable error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the error happened (RFC 3339, second precision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

// ---------------------------------------------------------------------------
// VolumeGroupSnapshotContent
// ---------------------------------------------------------------------------

/// A `VolumeGroupSnapshotContent` (cluster-scoped).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeGroupSnapshotContent {
    /// Standard object metadata (decoded without `managedFields`).
    #[serde(default, deserialize_with = "lean::meta")]
    pub metadata: ObjectMeta,
    /// The desired state.
    #[serde(default)]
    pub spec: VolumeGroupSnapshotContentSpec,
    /// The observed state; `None` when absent.
    #[serde(default)]
    pub status: Option<VolumeGroupSnapshotContentStatus>,
}

/// `VolumeGroupSnapshotContent.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeGroupSnapshotContentSpec {
    /// `Delete` or `Retain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<String>,
    /// CSI driver name.
    #[serde(default)]
    pub driver: String,
    /// Where the group snapshot comes from.
    #[serde(default)]
    pub source: VolumeGroupSnapshotContentSource,
    /// Name of the VolumeGroupSnapshotClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_group_snapshot_class_name: Option<String>,
    /// The bound VolumeGroupSnapshot.
    #[serde(default)]
    pub volume_group_snapshot_ref: ObjectReference,
}

/// `VolumeGroupSnapshotContent.spec.source`: exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeGroupSnapshotContentSource {
    /// Pre-provisioned: existing group and member handles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_snapshot_handles: Option<GroupSnapshotHandles>,
    /// Dynamic: the CSI handles of the volumes to snapshot, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_handles: Option<Vec<String>>,
}

/// `spec.source.groupSnapshotHandles` (both fields required by the CRD).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupSnapshotHandles {
    /// The backend group snapshot handle.
    #[serde(default)]
    pub volume_group_snapshot_handle: String,
    /// The backend handles of the member snapshots.
    #[serde(default)]
    pub volume_snapshot_handles: Vec<String>,
}

/// `VolumeGroupSnapshotContent.status` with every field of the CRD.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeGroupSnapshotContentStatus {
    /// When the group snapshot was cut: an RFC 3339 date-time (unlike VSC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<Time>,
    /// The last error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<VolumeSnapshotError>,
    /// Whether every member is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// The backend group snapshot handle (immutable once set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_group_snapshot_handle: Option<String>,
    /// One entry per member snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_info_list: Option<Vec<VolumeSnapshotInfo>>,
}

/// One entry of `status.volumeSnapshotInfoList`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotInfo {
    /// Unix **nanoseconds** (int64), unlike the group's own creationTime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<i64>,
    /// Member readiness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// Restore size in bytes; left out when 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<i64>,
    /// Backend snapshot handle of the member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
    /// CSI handle of the source volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_handle: Option<String>,
}

// ---------------------------------------------------------------------------
// The classes
// ---------------------------------------------------------------------------

/// A class (cluster-scoped; fields at the top level, the same for both
/// kinds) and its `Serialize`: `apiVersion`, `kind`, then its fields.
macro_rules! snapshot_class {
    ($($(#[$doc:meta])* $ty:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $ty {
            /// Standard object metadata (decoded without `managedFields`).
            #[serde(default, deserialize_with = "lean::meta")]
            pub metadata: ObjectMeta,
            /// CSI driver name.
            #[serde(default)]
            pub driver: String,
            /// `Delete` or `Retain`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub deletion_policy: Option<String>,
            /// Opaque parameters (reserved `csi.storage.k8s.io/` keys included).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub parameters: Option<BTreeMap<String, String>>,
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = begin_object::<S, Self>(serializer, &self.metadata)?;
                map.serialize_entry("driver", &self.driver)?;
                if let Some(p) = &self.deletion_policy {
                    map.serialize_entry("deletionPolicy", p)?;
                }
                if let Some(p) = &self.parameters {
                    map.serialize_entry("parameters", p)?;
                }
                map.end()
            }
        }
    )*};
}

snapshot_class! {
    /// A `VolumeSnapshotClass`.
    VolumeSnapshotClass;
    /// A `VolumeGroupSnapshotClass`.
    VolumeGroupSnapshotClass;
}

// ---------------------------------------------------------------------------
// kube::Resource and Serialize
// ---------------------------------------------------------------------------

/// `kube::Resource` for a snapshot kind of `snapshot.storage.k8s.io` or
/// `groupsnapshot.storage.k8s.io`, always at [`VERSION_V1`]; `$scope` is
/// cluster or namespace scope.
macro_rules! snapshot_resource {
    ($ty:ty, $scope:ty, $group:expr, $kind:literal, $plural:literal) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed($kind)
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed($group)
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed($crate::k8s::types::VERSION_V1)
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed($plural)
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(
                &mut self,
            ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
pub(crate) use snapshot_resource;

snapshot_resource!(
    VolumeSnapshotContent,
    ClusterResourceScope,
    SNAPSHOT_GROUP,
    "VolumeSnapshotContent",
    "volumesnapshotcontents"
);
snapshot_resource!(
    VolumeSnapshotClass,
    ClusterResourceScope,
    SNAPSHOT_GROUP,
    "VolumeSnapshotClass",
    "volumesnapshotclasses"
);
snapshot_resource!(
    VolumeGroupSnapshotContent,
    ClusterResourceScope,
    GROUP_SNAPSHOT_GROUP,
    "VolumeGroupSnapshotContent",
    "volumegroupsnapshotcontents"
);
snapshot_resource!(
    VolumeGroupSnapshotClass,
    ClusterResourceScope,
    GROUP_SNAPSHOT_GROUP,
    "VolumeGroupSnapshotClass",
    "volumegroupsnapshotclasses"
);

/// Starts a serialized object with `apiVersion`, `kind` and `metadata`.
fn begin_object<S: Serializer, K: Resource<DynamicType = ()>>(
    serializer: S,
    meta: &ObjectMeta,
) -> Result<S::SerializeMap, S::Error> {
    let mut map = serializer.serialize_map(None)?;
    map.serialize_entry("apiVersion", &K::api_version(&()))?;
    map.serialize_entry("kind", &K::kind(&()))?;
    map.serialize_entry("metadata", meta)?;
    Ok(map)
}

// ---------------------------------------------------------------------------
// Accessors used by the decision layer
// ---------------------------------------------------------------------------

/// Looks up an annotation in object metadata.
pub fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Whether a finalizer is present in object metadata.
pub fn has_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

/// What the code that serves both content kinds reads of either.
pub trait ContentObject: Resource {
    /// The class kind the spec names.
    type Class: Resource<DynamicType = (), Scope = ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static;
    /// The status type.
    type Status: Serialize + Send + Sync;
    /// The being-created annotation of the kind.
    const BEING_CREATED: &'static str;
    /// How error texts name that annotation.
    const BEING_CREATED_NAME: &'static str;
    /// The being-deleted annotation of the kind.
    const BEING_DELETED: &'static str;

    /// `status.readyToUse == true`.
    fn is_ready(&self) -> bool;
    /// `spec.driver`.
    fn driver(&self) -> &str;
    /// The class the spec names.
    fn class_name(&self) -> Option<&str>;
    /// The reference to the bound snapshot or group snapshot.
    fn bound_ref(&self) -> &ObjectReference;
    /// Whether the object has a `status` at all.
    fn has_status(&self) -> bool;
    /// The driver's handle recorded in status, if set and non-empty.
    fn recorded_handle(&self) -> Option<&str>;
    /// `status.error`.
    fn error(&self) -> Option<&VolumeSnapshotError>;
}

/// What both content kinds share: the accessors of the decision layer,
/// [`ContentObject`] and `Serialize` (`apiVersion`, `kind`, `metadata`,
/// `spec`, `status`).
macro_rules! content_common {
    ($($ty:ty: $class_ty:ty, $status:ty, $bound:ident, $class:ident,
        $being_created:expr, $being_created_name:literal, $being_deleted:expr);*) => {$(
        impl $ty {
            /// The object name (empty when missing, which the API never sends).
            pub fn name(&self) -> &str {
                self.metadata.name.as_deref().unwrap_or("")
            }
            /// Looks up an annotation.
            pub fn annotation(&self, key: &str) -> Option<&str> {
                annotation(&self.metadata, key)
            }
            /// Whether `spec.deletionPolicy` is `Delete`.
            pub fn is_delete_policy(&self) -> bool {
                self.spec.deletion_policy.as_deref() == Some(keys::DELETION_POLICY_DELETE)
            }
            /// `status.readyToUse == true`.
            pub fn is_ready(&self) -> bool {
                self.status
                    .as_ref()
                    .and_then(|s| s.ready_to_use)
                    .unwrap_or(false)
            }
        }

        impl ContentObject for $ty {
            type Class = $class_ty;
            type Status = $status;
            const BEING_CREATED: &'static str = $being_created;
            const BEING_CREATED_NAME: &'static str = $being_created_name;
            const BEING_DELETED: &'static str = $being_deleted;

            fn is_ready(&self) -> bool {
                <$ty>::is_ready(self)
            }
            fn driver(&self) -> &str {
                &self.spec.driver
            }
            fn class_name(&self) -> Option<&str> {
                self.spec.$class.as_deref()
            }
            fn bound_ref(&self) -> &ObjectReference {
                &self.spec.$bound
            }
            fn has_status(&self) -> bool {
                self.status.is_some()
            }
            fn recorded_handle(&self) -> Option<&str> {
                self.status_handle()
            }
            fn error(&self) -> Option<&VolumeSnapshotError> {
                self.status.as_ref().and_then(|s| s.error.as_ref())
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = begin_object::<S, Self>(serializer, &self.metadata)?;
                map.serialize_entry("spec", &self.spec)?;
                if let Some(status) = &self.status {
                    map.serialize_entry("status", status)?;
                }
                map.end()
            }
        }
    )*};
}

content_common!(
    VolumeSnapshotContent: VolumeSnapshotClass, VolumeSnapshotContentStatus,
        volume_snapshot_ref, volume_snapshot_class_name,
        keys::ANN_VS_BEING_CREATED, "VolumeSnapshotBeingCreated",
        keys::ANN_VS_BEING_DELETED;
    VolumeGroupSnapshotContent: VolumeGroupSnapshotClass, VolumeGroupSnapshotContentStatus,
        volume_group_snapshot_ref, volume_group_snapshot_class_name,
        keys::ANN_VGS_BEING_CREATED, "VolumeGroupSnapshotBeingCreated",
        keys::ANN_VGS_BEING_DELETED
);

impl VolumeSnapshotContent {
    /// `spec.volumeSnapshotRef.uid`, treating an empty string as absent.
    pub fn snapshot_uid(&self) -> Option<&str> {
        non_empty(self.spec.volume_snapshot_ref.uid.as_deref())
    }
    /// `status.snapshotHandle`, if set and non-empty.
    pub fn status_handle(&self) -> Option<&str> {
        non_empty(
            self.status
                .as_ref()
                .and_then(|s| s.snapshot_handle.as_deref()),
        )
    }
    /// `status.volumeGroupSnapshotHandle`, if set and non-empty.
    pub fn status_group_handle(&self) -> Option<&str> {
        non_empty(
            self.status
                .as_ref()
                .and_then(|s| s.volume_group_snapshot_handle.as_deref()),
        )
    }
}

impl VolumeGroupSnapshotContent {
    /// `spec.volumeGroupSnapshotRef.uid`, treating an empty string as absent.
    pub fn group_snapshot_uid(&self) -> Option<&str> {
        non_empty(self.spec.volume_group_snapshot_ref.uid.as_deref())
    }
    /// `status.volumeGroupSnapshotHandle`, if set and non-empty.
    pub fn status_handle(&self) -> Option<&str> {
        non_empty(
            self.status
                .as_ref()
                .and_then(|s| s.volume_group_snapshot_handle.as_deref()),
        )
    }
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

// ---------------------------------------------------------------------------
// Lenient decoding
// ---------------------------------------------------------------------------

/// An object as a watch delivers it: either decoded, or kept as metadata plus
/// the decode error. Watching `Api<Lenient<T>>` means one malformed object
/// cannot break the list/watch for every object: the controller sees the
/// `Malformed` entry by name, logs the error and leaves it alone (no CSI call,
/// no write) until a fixed version arrives.
#[derive(Debug, Clone, PartialEq)]
pub enum Lenient<T> {
    /// The object decoded into `T`.
    Ok(T),
    /// The object did not decode; `metadata` is as much as could be read.
    Malformed {
        /// Metadata (at least the name when the API sent one).
        metadata: Box<ObjectMeta>,
        /// The decode error text.
        error: String,
    },
}

impl<T> Lenient<T> {
    /// The decoded object, if it decoded.
    pub fn as_ok(&self) -> Option<&T> {
        match self {
            Lenient::Ok(t) => Some(t),
            Lenient::Malformed { .. } => None,
        }
    }
    /// Converts into the decoded object or the decode error text.
    pub fn into_result(self) -> Result<T, String> {
        match self {
            Lenient::Ok(t) => Ok(t),
            Lenient::Malformed { error, .. } => Err(error),
        }
    }
}

impl<T: DeserializeOwned> Lenient<T> {
    /// Decodes one object from JSON without ever failing.
    pub fn from_value(value: serde_json::Value) -> Self {
        match T::deserialize(&value) {
            Ok(t) => Lenient::Ok(t),
            Err(e) => Lenient::Malformed {
                metadata: Box::new(lenient_metadata(&value)),
                error: e.to_string(),
            },
        }
    }
}

/// Reads metadata as well as possible: the whole block if it decodes, else
/// only the identifying strings.
fn lenient_metadata(value: &serde_json::Value) -> ObjectMeta {
    let raw = value.get("metadata").cloned().unwrap_or_default();
    if let Ok(meta) = lean::meta_from_value(&raw) {
        return meta;
    }
    let s = |k: &str| raw.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    ObjectMeta {
        name: s("name"),
        uid: s("uid"),
        resource_version: s("resourceVersion"),
        ..ObjectMeta::default()
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Built without `metadata.managedFields`, which is never read.
        let LeanValue(value) = LeanValue::deserialize(deserializer)?;
        Ok(Lenient::from_value(value))
    }
}

impl<T: Serialize> Serialize for Lenient<T> {
    /// Only a decoded object can be written back; a malformed one is refused
    /// so it can never overwrite the server's copy with partial data.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Lenient::Ok(t) => t.serialize(serializer),
            Lenient::Malformed { error, .. } => Err(serde::ser::Error::custom(format!(
                "refusing to serialize a malformed object: {error}"
            ))),
        }
    }
}

impl<T> Resource for Lenient<T>
where
    T: Resource<DynamicType = (), Scope = ClusterResourceScope>,
{
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        T::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        T::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        T::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        T::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        match self {
            Lenient::Ok(t) => t.meta(),
            Lenient::Malformed { metadata, .. } => metadata,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Lenient::Ok(t) => t.meta_mut(),
            Lenient::Malformed { metadata, .. } => metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full_vsc_json() -> serde_json::Value {
        json!({
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": "snapcontent-1", "resourceVersion": "7",
                         "annotations": {keys::ANN_VS_BEING_DELETED: "yes"}},
            "spec": {
                "deletionPolicy": "Delete",
                "driver": "hostpath.csi.k8s.io",
                "source": {"volumeHandle": "vol-1"},
                "sourceVolumeMode": "Filesystem",
                "volumeSnapshotClassName": "cls",
                "volumeSnapshotRef": {"name": "vs", "namespace": "ns", "uid": "u-1",
                                      "kind": "VolumeSnapshot", "apiVersion": "snapshot.storage.k8s.io/v1"}
            },
            "status": {
                "creationTime": 1_700_000_000_123_456_789i64,
                "error": {"message": "boom", "time": "2026-01-02T03:04:05Z"},
                "readyToUse": false,
                "restoreSize": 1024,
                "snapshotHandle": "snap-1",
                "volumeGroupSnapshotHandle": "group-1"
            }
        })
    }

    #[test]
    fn vsc_round_trips_every_field() {
        let v = full_vsc_json();
        let vsc: VolumeSnapshotContent = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(vsc.name(), "snapcontent-1");
        assert_eq!(vsc.snapshot_uid(), Some("u-1"));
        assert!(vsc.is_delete_policy());
        assert_eq!(vsc.status_group_handle(), Some("group-1"));
        assert_eq!(serde_json::to_value(&vsc).unwrap(), v);
    }

    #[test]
    fn absent_optionals_are_not_serialized_as_null() {
        let status = VolumeSnapshotContentStatus {
            ready_to_use: Some(true),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            json!({"readyToUse": true})
        );
    }

    #[test]
    fn vgsc_round_trips_every_field() {
        let v = json!({
            "apiVersion": "groupsnapshot.storage.k8s.io/v1",
            "kind": "VolumeGroupSnapshotContent",
            "metadata": {"name": "groupsnapcontent-1"},
            "spec": {
                "deletionPolicy": "Retain",
                "driver": "d",
                "source": {"groupSnapshotHandles": {"volumeGroupSnapshotHandle": "g",
                                                    "volumeSnapshotHandles": ["a", "b"]}},
                "volumeGroupSnapshotClassName": "gc",
                "volumeGroupSnapshotRef": {"name": "vgs", "namespace": "ns", "uid": "gu"}
            },
            "status": {
                "creationTime": "2026-01-02T03:04:05Z",
                "error": {"message": "m"},
                "readyToUse": true,
                "volumeGroupSnapshotHandle": "g",
                "volumeSnapshotInfoList": [{"creationTime": 5, "readyToUse": true,
                    "restoreSize": 9, "snapshotHandle": "a", "volumeHandle": "va"}]
            }
        });
        let vgsc: VolumeGroupSnapshotContent = serde_json::from_value(v.clone()).unwrap();
        assert!(!vgsc.is_delete_policy());
        assert_eq!(vgsc.status_handle(), Some("g"));
        assert_eq!(serde_json::to_value(&vgsc).unwrap(), v);
    }

    #[test]
    fn classes_round_trip() {
        let v = json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
            "metadata": {"name": "c"}, "driver": "d", "deletionPolicy": "Delete",
            "parameters": {"a": "b"}
        });
        let c: VolumeSnapshotClass = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&c).unwrap(), v);
        let mut g = v.clone();
        g["apiVersion"] = json!("groupsnapshot.storage.k8s.io/v1");
        g["kind"] = json!("VolumeGroupSnapshotClass");
        let c: VolumeGroupSnapshotClass = serde_json::from_value(g.clone()).unwrap();
        assert_eq!(serde_json::to_value(&c).unwrap(), g);
    }

    #[test]
    fn resource_urls_are_cluster_scoped_v1() {
        assert_eq!(
            VolumeSnapshotContent::url_path(&(), None),
            "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents"
        );
        assert_eq!(
            Lenient::<VolumeGroupSnapshotContent>::url_path(&(), None),
            "/apis/groupsnapshot.storage.k8s.io/v1/volumegroupsnapshotcontents"
        );
        assert_eq!(
            VolumeGroupSnapshotClass::api_version(&()),
            "groupsnapshot.storage.k8s.io/v1"
        );
    }

    #[test]
    fn lenient_keeps_name_of_malformed_object() {
        let mut v = full_vsc_json();
        v["status"]["readyToUse"] = json!("yes please");
        let l: Lenient<VolumeSnapshotContent> = serde_json::from_value(v).unwrap();
        match &l {
            Lenient::Malformed { metadata, error } => {
                assert_eq!(metadata.name.as_deref(), Some("snapcontent-1"));
                assert!(error.contains("invalid type"), "{error}");
            }
            Lenient::Ok(_) => panic!("decoded a malformed object"),
        }
        assert_eq!(l.meta().name.as_deref(), Some("snapcontent-1"));
        assert!(serde_json::to_value(&l).is_err());
    }

    #[test]
    fn lenient_list_decodes_around_a_bad_item() {
        let mut bad = full_vsc_json();
        bad["metadata"]["name"] = json!("bad");
        bad["spec"]["source"] = json!(["not", "an", "object"]);
        let items: Vec<Lenient<VolumeSnapshotContent>> =
            serde_json::from_value(json!([full_vsc_json(), bad])).unwrap();
        assert!(items[0].as_ok().is_some());
        assert!(items[1].as_ok().is_none());
        assert_eq!(items[1].meta().name.as_deref(), Some("bad"));
    }

    /// The upstream CRDs, when the shared directory is next to the checkout
    /// (and CI's switch that hides it is off).
    fn crd_dir() -> Option<std::path::PathBuf> {
        if std::env::var_os("SNAPSHOTTER_TESTS_IGNORE_SHARED").is_some() {
            return None;
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        root.ancestors()
            .map(|p| p.join("shared/crds"))
            .find(|p| p.is_dir())
    }

    /// Property names of `status` (v1) in a CRD file.
    fn crd_status_props(file: &str) -> Option<Vec<String>> {
        let Some(dir) = crd_dir() else {
            eprintln!("skipping: shared/crds not found next to the checkout");
            return None;
        };
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let crd: serde_json::Value = serde_norway::from_str(&text).unwrap();
        let version = crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "v1")
            .unwrap();
        let props = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
            .as_object()
            .unwrap();
        Some(props.keys().cloned().collect())
    }

    #[test]
    fn vsc_status_carries_every_crd_status_field() {
        let Some(props) = crd_status_props("snapshot.storage.k8s.io_volumesnapshotcontents.yaml")
        else {
            return;
        };
        let vsc: VolumeSnapshotContent = serde_json::from_value(full_vsc_json()).unwrap();
        let ours = serde_json::to_value(vsc.status.unwrap()).unwrap();
        for p in props {
            assert!(ours.get(&p).is_some(), "status field {p} not carried");
        }
    }

    #[test]
    fn vgsc_status_carries_every_crd_status_field() {
        let Some(props) =
            crd_status_props("groupsnapshot.storage.k8s.io_volumegroupsnapshotcontents.yaml")
        else {
            return;
        };
        let status = VolumeGroupSnapshotContentStatus {
            creation_time: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            error: Some(VolumeSnapshotError::default()),
            ready_to_use: Some(true),
            volume_group_snapshot_handle: Some("g".into()),
            volume_snapshot_info_list: Some(vec![]),
        };
        let ours = serde_json::to_value(status).unwrap();
        for p in props {
            assert!(ours.get(&p).is_some(), "status field {p} not carried");
        }
    }
}
