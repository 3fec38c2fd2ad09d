//! Fixtures shared by the `reconcile_*` tests of the pure decisions: the
//! driver, its capabilities and configuration, and a dynamic content of
//! each kind as the snapshot-controller creates it.
#![allow(dead_code)]

use csi_snapshotter::csi::driver::DriverCapabilities;
use csi_snapshotter::k8s::keys;
use csi_snapshotter::reconcile::ReconcileConfig;
use serde_json::{Value, json};

/// The driver the sidecar serves.
pub const DRIVER: &str = "hostpath.csi.k8s.io";
/// UID of the VolumeSnapshot the dynamic content is bound to.
pub const VSC_UID: &str = "6f1e2d3c-0000-4000-8000-000000000001";
/// UID of the VolumeGroupSnapshot the dynamic group content is bound to.
pub const VGSC_UID: &str = "0a1b2c3d-1111-4222-8333-444455556666";

/// The sidecar's configuration with its defaults.
pub fn cfg() -> ReconcileConfig {
    ReconcileConfig::new(DRIVER)
}

/// A driver with snapshots, ListSnapshots and group snapshots, without
/// GetSnapshot.
pub fn caps() -> DriverCapabilities {
    DriverCapabilities {
        create_delete_snapshot: true,
        list_snapshots: true,
        get_snapshot: false,
        group_snapshots: true,
    }
}

/// A dynamic VolumeSnapshotContent, not yet created on the backend.
pub fn dynamic_vsc() -> Value {
    json!({
        "metadata": {"name": "snapcontent-1", "resourceVersion": "1",
                     "finalizers": [keys::FINALIZER_VSC]},
        "spec": {
            "deletionPolicy": "Delete",
            "driver": DRIVER,
            "source": {"volumeHandle": "vol-1"},
            "volumeSnapshotClassName": "default-class",
            "volumeSnapshotRef": {"name": "vs-1", "namespace": "default", "uid": VSC_UID}
        }
    })
}

/// A dynamic VolumeGroupSnapshotContent of two volumes, not yet created on
/// the backend.
pub fn dynamic_vgsc() -> Value {
    json!({
        "metadata": {"name": "groupsnapcontent-1", "resourceVersion": "1",
                     "finalizers": [keys::FINALIZER_VGSC]},
        "spec": {
            "deletionPolicy": "Delete",
            "driver": DRIVER,
            "source": {"volumeHandles": ["vol-1", "vol-2"]},
            "volumeGroupSnapshotClassName": "group-class",
            "volumeGroupSnapshotRef": {"name": "vgs-1", "namespace": "default", "uid": VGSC_UID}
        }
    })
}
