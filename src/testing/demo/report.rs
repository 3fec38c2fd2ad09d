//! Text the demo prints: one-line descriptions of contents, sizes, times,
//! events and the request/call summary.

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Event;

use crate::k8s::keys;
use crate::k8s::types::{VolumeGroupSnapshotContent, VolumeSnapshotContent};
use crate::testing::apiserver::ApiServer;
use crate::testing::mock_driver::MockDriver;

/// API verbs counted by the embedded API server, in summary order.
pub const VERBS: [&str; 7] = ["GET", "LIST", "WATCH", "POST", "PUT", "PATCH", "DELETE"];

/// The mock driver's RPCs, in summary order.
pub const RPCS: [&str; 14] = [
    "Probe",
    "GetPluginInfo",
    "GetPluginCapabilities",
    "ControllerGetCapabilities",
    "GroupControllerGetCapabilities",
    "CreateSnapshot",
    "ListSnapshots",
    "GetSnapshot",
    "DeleteSnapshot",
    "CreateVolumeGroupSnapshot",
    "GetVolumeGroupSnapshot",
    "DeleteVolumeGroupSnapshot",
    "CreateVolume",
    "DeleteVolume",
];

/// What the timeline shows of a content: readiness, handle, error.
pub fn content_state(c: Option<&VolumeSnapshotContent>) -> String {
    let Some(c) = c else {
        return "gone".to_string();
    };
    let Some(status) = &c.status else {
        return if c.annotation(keys::ANN_VS_BEING_CREATED).is_some() {
            "no status yet, CreateSnapshot in flight".to_string()
        } else {
            "no status yet".to_string()
        };
    };
    let mut line = format!("readyToUse={}", status.ready_to_use.unwrap_or(false));
    if let Some(h) = &status.snapshot_handle {
        let _ = write!(line, " handle={h}");
    }
    if status.error.is_some() {
        line.push_str(" error set");
    }
    line
}

/// What the timeline shows of a group content.
pub fn group_state(c: Option<&VolumeGroupSnapshotContent>) -> String {
    let Some(c) = c else {
        return "gone".to_string();
    };
    let Some(status) = &c.status else {
        return "no status yet".to_string();
    };
    let mut line = format!("readyToUse={}", status.ready_to_use.unwrap_or(false));
    if let Some(h) = &status.volume_group_snapshot_handle {
        let _ = write!(line, " groupHandle={h}");
    }
    if let Some(list) = &status.volume_snapshot_info_list {
        let _ = write!(line, " members={}", list.len());
    }
    if status.error.is_some() {
        line.push_str(" error set");
    }
    line
}

/// Unix nanoseconds as RFC 3339 (the raw value when out of range).
pub fn nanos_time(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("{ns}ns"))
}

/// Bytes, with the binary unit when it divides evenly: `1073741824 (1Gi)`.
pub fn size(bytes: i64) -> String {
    const UNITS: [(&str, i64); 4] = [
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    UNITS
        .iter()
        .find(|(_, n)| bytes >= *n && bytes % n == 0)
        .map(|(unit, n)| format!("{bytes} ({}{unit})", bytes / n))
        .unwrap_or_else(|| bytes.to_string())
}

/// One event: `Warning SnapshotCreationFailed (x1): <message>`.
pub fn event_line(e: &Event) -> String {
    format!(
        "{} {} (x{}): {}",
        e.type_.as_deref().unwrap_or("?"),
        e.reason.as_deref().unwrap_or("?"),
        e.count.unwrap_or(1),
        e.message.as_deref().unwrap_or("")
    )
}

/// `total=N VERB=n …` over the verbs served (zero counts left out).
pub fn api_counts(api: &ApiServer) -> String {
    counts(VERBS.iter().map(|v| (*v, api.request_count(v, "*"))))
}

/// `total=N RPC=n …` over the RPCs served (zero counts left out).
pub fn csi_counts(mock: &MockDriver) -> String {
    counts(RPCS.iter().map(|m| (*m, mock.calls(m))))
}

fn counts<'a>(items: impl Iterator<Item = (&'a str, u64)>) -> String {
    let items: Vec<(&str, u64)> = items.filter(|(_, n)| *n > 0).collect();
    let total: u64 = items.iter().map(|(_, n)| n).sum();
    let mut line = format!("total={total}");
    for (name, n) in items {
        let _ = write!(line, " {name}={n}");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_show_even_binary_units() {
        assert_eq!(size(1 << 30), "1073741824 (1Gi)");
        assert_eq!(size(3 << 20), "3145728 (3Mi)");
        assert_eq!(size(1000), "1000");
    }

    #[test]
    fn nanoseconds_become_rfc3339() {
        assert_eq!(nanos_time(1_500_000_000), "1970-01-01T00:00:01.5Z");
    }

    #[test]
    fn counts_skip_zero_and_total() {
        assert_eq!(
            counts([("A", 2), ("B", 0), ("C", 3)].into_iter()),
            "total=5 A=2 C=3"
        );
    }
}
