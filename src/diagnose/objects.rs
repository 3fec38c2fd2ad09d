//! The namespaced snapshot kinds, read only by `diagnose` (the sidecar never
//! reads them), with just the fields a verdict needs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::NamespaceResourceScope;
use serde::Deserialize;

use crate::k8s::types::{
    GROUP_SNAPSHOT_GROUP, SNAPSHOT_GROUP, VolumeSnapshotError, snapshot_resource,
};

/// A `VolumeSnapshot` (namespaced).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshot {
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The request.
    #[serde(default)]
    pub spec: VolumeSnapshotSpec,
    /// What the snapshot-controller reported.
    #[serde(default)]
    pub status: Option<SnapshotStatus>,
}

/// `VolumeSnapshot.spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSpec {
    /// Where the snapshot comes from.
    #[serde(default)]
    pub source: VolumeSnapshotSource,
    /// The class named by the user, if any.
    #[serde(default)]
    pub volume_snapshot_class_name: Option<String>,
}

/// `VolumeSnapshot.spec.source`: one of the two is set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSource {
    /// Dynamic: the claim to snapshot.
    #[serde(default)]
    pub persistent_volume_claim_name: Option<String>,
    /// Pre-provisioned: the content to bind.
    #[serde(default)]
    pub volume_snapshot_content_name: Option<String>,
}

/// The status fields both namespaced kinds share.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    /// `boundVolumeSnapshotContentName` (VolumeSnapshot).
    #[serde(default)]
    pub bound_volume_snapshot_content_name: Option<String>,
    /// `boundVolumeGroupSnapshotContentName` (VolumeGroupSnapshot).
    #[serde(default)]
    pub bound_volume_group_snapshot_content_name: Option<String>,
    /// Whether it can be restored from.
    #[serde(default)]
    pub ready_to_use: Option<bool>,
    /// The last error the snapshot-controller copied here.
    #[serde(default)]
    pub error: Option<VolumeSnapshotError>,
}

/// A `VolumeGroupSnapshot` (namespaced).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeGroupSnapshot {
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The request.
    #[serde(default)]
    pub spec: VolumeGroupSnapshotSpec,
    /// What the snapshot-controller reported.
    #[serde(default)]
    pub status: Option<SnapshotStatus>,
}

/// `VolumeGroupSnapshot.spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeGroupSnapshotSpec {
    /// Where the group comes from.
    #[serde(default)]
    pub source: VolumeGroupSnapshotSource,
    /// The class named by the user, if any.
    #[serde(default)]
    pub volume_group_snapshot_class_name: Option<String>,
}

/// `VolumeGroupSnapshot.spec.source`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeGroupSnapshotSource {
    /// Pre-provisioned: the group content to bind.
    #[serde(default)]
    pub volume_group_snapshot_content_name: Option<String>,
}

impl SnapshotStatus {
    /// The bound content name of either kind, when set and non-empty.
    pub fn bound_content(&self) -> Option<&str> {
        self.bound_volume_snapshot_content_name
            .as_deref()
            .or(self.bound_volume_group_snapshot_content_name.as_deref())
            .filter(|s| !s.is_empty())
    }
}

snapshot_resource!(
    VolumeSnapshot,
    NamespaceResourceScope,
    SNAPSHOT_GROUP,
    "VolumeSnapshot",
    "volumesnapshots"
);
snapshot_resource!(
    VolumeGroupSnapshot,
    NamespaceResourceScope,
    GROUP_SNAPSHOT_GROUP,
    "VolumeGroupSnapshot",
    "volumegroupsnapshots"
);
