//! The schemas the embedded API server carries for the custom resources it
//! serves, so that schema checks are on without any CRD files: each kind's
//! `openAPIV3Schema` is written in Rust ([`kinds`]) with a small vocabulary
//! ([`shape`]), and the names, scope and subresources come from the
//! server's resource table.

mod kinds;
mod shape;

use serde_json::Value;

use super::super::resources::RESOURCES;
use super::{CrdInfo, CrdVersion};

/// The schema of a served custom kind, by kind name.
fn schema_of(kind: &str) -> Option<Value> {
    let build: fn() -> Value = match kind {
        "VolumeSnapshotClass" => kinds::volume_snapshot_class,
        "VolumeSnapshot" => kinds::volume_snapshot,
        "VolumeSnapshotContent" => kinds::volume_snapshot_content,
        "VolumeGroupSnapshotClass" => kinds::volume_group_snapshot_class,
        "VolumeGroupSnapshot" => kinds::volume_group_snapshot,
        "VolumeGroupSnapshotContent" => kinds::volume_group_snapshot_content,
        _ => return None,
    };
    Some(build())
}

/// Every served custom resource with its schema, in the server's order.
pub(super) fn definitions() -> Vec<(CrdInfo, Value)> {
    RESOURCES
        .iter()
        .filter(|r| r.custom)
        .filter_map(|r| {
            let schema = schema_of(r.kind)?;
            let info = CrdInfo {
                group: r.group.to_string(),
                kind: r.kind.to_string(),
                list_kind: r.list_kind(),
                plural: r.plural.to_string(),
                singular: r.singular.to_string(),
                short_names: r.short_names.iter().map(|s| s.to_string()).collect(),
                namespaced: r.namespaced,
                versions: vec![CrdVersion {
                    name: r.version.to_string(),
                    served: true,
                    storage: true,
                    deprecated: false,
                    status_subresource: r.status,
                }],
            };
            Some((info, schema))
        })
        .collect()
}
