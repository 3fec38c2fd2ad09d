//! Status merge rules (spec C.6, D.6), error statuses (C.10, C.11) and the
//! status left after a delete (C.7 step 1.3, D.5 step 1.6). Every function
//! returns the new status, or `None` when nothing would change (no write).
//!
//! `now` is passed in so the rules stay pure.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::patch::{JsonPatch, PatchOp};
use crate::csi::driver::{GroupSnapshotInfo, SnapshotInfo};
use crate::k8s::types::{
    ContentObject, VolumeGroupSnapshotContent, VolumeGroupSnapshotContentStatus,
    VolumeSnapshotContent, VolumeSnapshotContentStatus, VolumeSnapshotError, VolumeSnapshotInfo,
};

/// What a CSI call said about one snapshot, in the form the merge needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotObservation {
    /// Handle to record (only written if the status has none).
    pub handle: String,
    /// Driver readiness.
    pub ready: bool,
    /// Creation time in Unix ns; `None` when the driver left it out or the
    /// handle was trusted blindly (both become `now`, see below).
    pub creation_time_ns: Option<i64>,
    /// Size in bytes; 0 means unknown and is never written.
    pub size_bytes: i64,
    /// Group handle from the driver; empty means none.
    pub group_snapshot_id: String,
}

impl SnapshotObservation {
    /// From a CreateSnapshot reply: the reply's `group_snapshot_id` is
    /// ignored (spec C.3 step 8).
    pub fn from_create(info: &SnapshotInfo) -> Self {
        SnapshotObservation {
            handle: info.snapshot_id.clone(),
            ready: info.ready_to_use,
            creation_time_ns: info.creation_time_ns,
            size_bytes: info.size_bytes,
            group_snapshot_id: String::new(),
        }
    }

    /// From a ListSnapshots/GetSnapshot entry, recorded under `handle` (the
    /// spec handle for pre-provisioned contents, spec C.5 step 3).
    pub fn from_poll(handle: &str, info: &SnapshotInfo) -> Self {
        SnapshotObservation {
            handle: handle.to_owned(),
            ready: info.ready_to_use,
            creation_time_ns: info.creation_time_ns,
            size_bytes: info.size_bytes,
            group_snapshot_id: info.group_snapshot_id.clone(),
        }
    }

    /// The driver has no LIST_SNAPSHOTS/GET_SNAPSHOT: the handle is trusted
    /// and ready, size unknown, created "now".
    pub fn trusted(handle: &str) -> Self {
        SnapshotObservation {
            handle: handle.to_owned(),
            ready: true,
            creation_time_ns: None,
            size_bytes: 0,
            group_snapshot_id: String::new(),
        }
    }
}

/// Nanoseconds since the epoch, saturating (a `Timestamp` fits in i64 ns
/// until the year 2262).
pub fn timestamp_ns(t: Timestamp) -> i64 {
    i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX)
}

/// Merges an observation into a VSC status (spec C.6).
///
/// An absent driver creation time is recorded as `now` rather than upstream's
/// 1970 epoch: a set `creationTime` means "the snapshot has been cut", and the
/// VS should not claim to be from 1970.
pub fn merge_snapshot_status(
    current: Option<&VolumeSnapshotContentStatus>,
    obs: &SnapshotObservation,
    now: Timestamp,
) -> Option<VolumeSnapshotContentStatus> {
    let creation = obs.creation_time_ns.unwrap_or_else(|| timestamp_ns(now));
    let size = (obs.size_bytes > 0).then_some(obs.size_bytes);
    let group = (!obs.group_snapshot_id.is_empty()).then(|| obs.group_snapshot_id.clone());
    let Some(cur) = current else {
        return Some(VolumeSnapshotContentStatus {
            creation_time: Some(creation),
            error: None,
            ready_to_use: Some(obs.ready),
            restore_size: size,
            snapshot_handle: Some(obs.handle.clone()),
            volume_group_snapshot_handle: group,
        });
    };
    let mut next = cur.clone();
    if next.snapshot_handle.is_none() {
        next.snapshot_handle = Some(obs.handle.clone());
    }
    if next.ready_to_use != Some(obs.ready) {
        next.ready_to_use = Some(obs.ready);
        if obs.ready {
            next.error = None;
        }
    }
    if next.creation_time.is_none() {
        next.creation_time = Some(creation);
    }
    if next.restore_size.is_none() {
        next.restore_size = size;
    }
    if next.volume_group_snapshot_handle.is_none() {
        next.volume_group_snapshot_handle = group;
    }
    (next != *cur).then_some(next)
}

/// The patch for an error status (spec C.10, C.11), or `None` when the status
/// already carries exactly `message`: then neither a write nor an event
/// happens. `readyToUse` becomes false; other fields stay.
pub fn error_status_patch(
    current: Option<&VolumeSnapshotError>,
    status_present: bool,
    message: &str,
    now: Timestamp,
) -> Option<JsonPatch> {
    if current.and_then(|e| e.message.as_deref()) == Some(message) {
        return None;
    }
    let error = VolumeSnapshotError {
        message: Some(message.to_owned()),
        time: Some(Time(now)),
    };
    let error = serde_json::to_value(error).unwrap_or_default();
    let ops = if status_present {
        vec![
            PatchOp::Add {
                path: "/status/error".into(),
                value: error,
            },
            PatchOp::Add {
                path: "/status/readyToUse".into(),
                value: json!(false),
            },
        ]
    } else {
        vec![PatchOp::Add {
            path: "/status".into(),
            value: json!({"readyToUse": false, "error": error}),
        }]
    };
    Some(JsonPatch(ops))
}

/// [`error_status_patch`] for a content of either kind.
pub fn content_error_patch<O: ContentObject>(
    obj: &O,
    message: &str,
    now: Timestamp,
) -> Option<JsonPatch> {
    error_status_patch(obj.error(), obj.has_status(), message, now)
}

/// How a reply of either kind's RPCs is merged into the object's status.
pub trait MergeStatus: ContentObject {
    /// What a create or poll reply says, ready to merge.
    type Observation: Send + Sync;
    /// The status with `obs` merged in, `None` when unchanged.
    fn merge(&self, obs: &Self::Observation, now: Timestamp) -> Option<Self::Status>;
}

/// [`MergeStatus`] of a content kind: its observation and merge rule.
macro_rules! merge_status {
    ($($ty:ty: $obs:ty, $merge:ident);*) => {$(
        impl MergeStatus for $ty {
            type Observation = $obs;
            fn merge(&self, obs: &$obs, now: Timestamp) -> Option<Self::Status> {
                $merge(self.status.as_ref(), obs, now)
            }
        }
    )*};
}

merge_status!(
    VolumeSnapshotContent: SnapshotObservation, merge_snapshot_status;
    VolumeGroupSnapshotContent: GroupObservation, merge_group_status
);

/// [`error_status_patch`] for a VSC status.
pub fn snapshot_error_patch(
    status: Option<&VolumeSnapshotContentStatus>,
    message: &str,
    now: Timestamp,
) -> Option<JsonPatch> {
    error_status_patch(
        status.and_then(|s| s.error.as_ref()),
        status.is_some(),
        message,
        now,
    )
}

/// [`error_status_patch`] for a VGSC status.
pub fn group_error_patch(
    status: Option<&VolumeGroupSnapshotContentStatus>,
    message: &str,
    now: Timestamp,
) -> Option<JsonPatch> {
    error_status_patch(
        status.and_then(|s| s.error.as_ref()),
        status.is_some(),
        message,
        now,
    )
}

/// What a group CSI call said, in the form the merge needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupObservation {
    /// Group handle to record (only if the status has none).
    pub handle: String,
    /// Group readiness.
    pub ready: bool,
    /// Creation time in Unix ns; `None` (or 0) becomes `now`.
    pub creation_time_ns: Option<i64>,
    /// Members, in the driver's order; empty for pre-provisioned polls.
    pub members: Vec<SnapshotInfo>,
}

impl GroupObservation {
    /// From a CreateVolumeGroupSnapshot reply.
    pub fn from_create(info: &GroupSnapshotInfo) -> Self {
        GroupObservation {
            handle: info.group_snapshot_id.clone(),
            ready: info.ready_to_use,
            creation_time_ns: info.creation_time_ns,
            members: info.snapshots.clone(),
        }
    }

    /// From a GetVolumeGroupSnapshot reply for a pre-provisioned group: the
    /// spec handle is recorded and the returned members are ignored (D.4).
    pub fn from_get(spec_handle: &str, info: &GroupSnapshotInfo) -> Self {
        GroupObservation {
            handle: spec_handle.to_owned(),
            ready: info.ready_to_use,
            creation_time_ns: info.creation_time_ns,
            members: Vec::new(),
        }
    }
}

fn info_entry(s: &SnapshotInfo) -> VolumeSnapshotInfo {
    VolumeSnapshotInfo {
        creation_time: s.creation_time_ns,
        ready_to_use: Some(s.ready_to_use),
        restore_size: (s.size_bytes > 0).then_some(s.size_bytes),
        snapshot_handle: Some(s.snapshot_id.clone()),
        volume_handle: Some(s.source_volume_id.clone()),
    }
}

/// Merges an observation into a VGSC status (spec D.6). The group
/// `creationTime` is a date-time (second precision); member creation times
/// are ns and left out when the driver did not send one.
pub fn merge_group_status(
    current: Option<&VolumeGroupSnapshotContentStatus>,
    obs: &GroupObservation,
    now: Timestamp,
) -> Option<VolumeGroupSnapshotContentStatus> {
    let creation = match obs.creation_time_ns {
        Some(ns) if ns != 0 => Timestamp::from_nanosecond(i128::from(ns)).unwrap_or(now),
        _ => now,
    };
    let members: Vec<VolumeSnapshotInfo> = obs.members.iter().map(info_entry).collect();
    let Some(cur) = current else {
        return Some(VolumeGroupSnapshotContentStatus {
            creation_time: Some(Time(creation)),
            error: None,
            ready_to_use: Some(obs.ready),
            volume_group_snapshot_handle: Some(obs.handle.clone()),
            volume_snapshot_info_list: (!members.is_empty()).then_some(members),
        });
    };
    let mut next = cur.clone();
    if next.volume_group_snapshot_handle.is_none() {
        next.volume_group_snapshot_handle = Some(obs.handle.clone());
    }
    if next.ready_to_use != Some(obs.ready) {
        next.ready_to_use = Some(obs.ready);
        if obs.ready {
            next.error = None;
        }
    }
    if next.creation_time.is_none() {
        next.creation_time = Some(Time(creation));
    }
    let list_empty = next
        .volume_snapshot_info_list
        .as_ref()
        .is_none_or(Vec::is_empty);
    if list_empty && !members.is_empty() {
        next.volume_snapshot_info_list = Some(members);
    }
    (next != *cur).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn obs(ready: bool) -> SnapshotObservation {
        SnapshotObservation {
            handle: "snap-1".into(),
            ready,
            creation_time_ns: Some(1_700_000_000_123_456_789),
            size_bytes: 1024,
            group_snapshot_id: String::new(),
        }
    }

    #[test]
    fn new_status_from_first_observation() {
        let s = merge_snapshot_status(None, &obs(true), now()).unwrap();
        assert_eq!(
            s,
            VolumeSnapshotContentStatus {
                creation_time: Some(1_700_000_000_123_456_789),
                ready_to_use: Some(true),
                restore_size: Some(1024),
                snapshot_handle: Some("snap-1".into()),
                ..Default::default()
            }
        );
    }

    #[test]
    fn size_zero_is_never_written_and_absent_time_becomes_now() {
        let mut o = obs(false);
        o.size_bytes = 0;
        o.creation_time_ns = None;
        let s = merge_snapshot_status(None, &o, now()).unwrap();
        assert_eq!(s.restore_size, None);
        assert_eq!(s.creation_time, Some(1_800_000_000_000_000_000));
        let cur = VolumeSnapshotContentStatus {
            ready_to_use: Some(false),
            ..Default::default()
        };
        let s = merge_snapshot_status(Some(&cur), &o, now()).unwrap();
        assert_eq!(s.restore_size, None);
    }

    #[test]
    fn write_once_fields_stick() {
        let cur = VolumeSnapshotContentStatus {
            creation_time: Some(1),
            ready_to_use: Some(false),
            restore_size: Some(7),
            snapshot_handle: Some("first".into()),
            volume_group_snapshot_handle: Some("g-first".into()),
            error: None,
        };
        let mut o = obs(false);
        o.handle = "second".into();
        o.group_snapshot_id = "g-second".into();
        assert_eq!(merge_snapshot_status(Some(&cur), &o, now()), None);
        let s = merge_snapshot_status(Some(&cur), &obs(true), now()).unwrap();
        assert_eq!(
            s,
            VolumeSnapshotContentStatus {
                ready_to_use: Some(true),
                ..cur
            }
        );
    }

    #[test]
    fn error_cleared_only_when_becoming_ready() {
        let err = VolumeSnapshotError {
            message: Some("boom".into()),
            time: None,
        };
        let cur = VolumeSnapshotContentStatus {
            ready_to_use: Some(false),
            error: Some(err.clone()),
            ..Default::default()
        };
        let s = merge_snapshot_status(Some(&cur), &obs(false), now()).unwrap();
        assert_eq!(s.error, Some(err));
        assert_eq!(s.snapshot_handle.as_deref(), Some("snap-1"));
        let s = merge_snapshot_status(Some(&cur), &obs(true), now()).unwrap();
        assert_eq!(s.error, None);
    }

    #[test]
    fn group_id_from_poll_is_recorded_once() {
        let mut o = obs(true);
        o.group_snapshot_id = "g".into();
        let s = merge_snapshot_status(None, &o, now()).unwrap();
        assert_eq!(s.volume_group_snapshot_handle.as_deref(), Some("g"));
        let create = SnapshotObservation::from_create(&SnapshotInfo {
            snapshot_id: "h".into(),
            group_snapshot_id: "g".into(),
            ..Default::default()
        });
        assert_eq!(create.group_snapshot_id, "");
    }

    #[test]
    fn error_patch_dedups_identical_message() {
        let cur = VolumeSnapshotContentStatus {
            error: Some(VolumeSnapshotError {
                message: Some("same".into()),
                time: None,
            }),
            ..Default::default()
        };
        assert_eq!(snapshot_error_patch(Some(&cur), "same", now()), None);
        let p = snapshot_error_patch(Some(&cur), "other", now()).unwrap();
        assert_eq!(
            p.to_value(),
            json!([{"op": "add", "path": "/status/error",
                    "value": {"message": "other", "time": "2027-01-15T08:00:00Z"}},
                   {"op": "add", "path": "/status/readyToUse", "value": false}])
        );
    }

    #[test]
    fn error_patch_creates_status_when_absent() {
        let p = snapshot_error_patch(None, "m", now()).unwrap();
        assert_eq!(
            p.to_value(),
            json!([{"op": "add", "path": "/status",
                    "value": {"readyToUse": false,
                              "error": {"message": "m", "time": "2027-01-15T08:00:00Z"}}}])
        );
    }

    fn member(id: &str, vol: &str, size: i64, t: Option<i64>) -> SnapshotInfo {
        SnapshotInfo {
            snapshot_id: id.into(),
            source_volume_id: vol.into(),
            size_bytes: size,
            creation_time_ns: t,
            ready_to_use: true,
            group_snapshot_id: "g".into(),
        }
    }

    #[test]
    fn new_group_status() {
        let o = GroupObservation {
            handle: "g".into(),
            ready: true,
            creation_time_ns: Some(1_700_000_000_900_000_000),
            members: vec![member("a", "va", 5, Some(9)), member("b", "vb", 0, None)],
        };
        let s = merge_group_status(None, &o, now()).unwrap();
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({
                "creationTime": "2023-11-14T22:13:20Z",
                "readyToUse": true,
                "volumeGroupSnapshotHandle": "g",
                "volumeSnapshotInfoList": [
                    {"creationTime": 9, "readyToUse": true, "restoreSize": 5,
                     "snapshotHandle": "a", "volumeHandle": "va"},
                    {"readyToUse": true, "snapshotHandle": "b", "volumeHandle": "vb"}
                ]
            })
        );
    }

    #[test]
    fn h30_old_handle_kept_and_empty_info_list_filled() {
        let cur = VolumeGroupSnapshotContentStatus {
            volume_group_snapshot_handle: Some("old-handle".into()),
            ready_to_use: Some(false),
            volume_snapshot_info_list: Some(vec![]),
            ..Default::default()
        };
        let o = GroupObservation {
            handle: "new-handle".into(),
            ready: false,
            creation_time_ns: None,
            members: vec![member("a", "va", 1, None)],
        };
        let s = merge_group_status(Some(&cur), &o, now()).unwrap();
        assert_eq!(
            s.volume_group_snapshot_handle.as_deref(),
            Some("old-handle")
        );
        assert_eq!(s.volume_snapshot_info_list.unwrap().len(), 1);
        assert_eq!(s.creation_time, Some(Time(now())));
    }

    #[test]
    fn h31_group_status_equal_means_no_write() {
        let o = GroupObservation {
            handle: "g".into(),
            ready: true,
            creation_time_ns: Some(1_000_000_000),
            members: vec![member("a", "va", 1, None)],
        };
        let s = merge_group_status(None, &o, now()).unwrap();
        assert_eq!(merge_group_status(Some(&s), &o, now()), None);
        // per-member readiness is never refreshed once the list is set
        let mut o2 = o.clone();
        o2.members[0].ready_to_use = false;
        assert_eq!(merge_group_status(Some(&s), &o2, now()), None);
    }

    #[test]
    fn group_ready_clears_error() {
        let cur = VolumeGroupSnapshotContentStatus {
            ready_to_use: Some(false),
            error: Some(VolumeSnapshotError::default()),
            volume_group_snapshot_handle: Some("g".into()),
            creation_time: Some(Time(now())),
            ..Default::default()
        };
        let o = GroupObservation {
            handle: "g".into(),
            ready: true,
            creation_time_ns: None,
            members: vec![],
        };
        let s = merge_group_status(Some(&cur), &o, now()).unwrap();
        assert_eq!(s.error, None);
        assert_eq!(s.ready_to_use, Some(true));
    }
}
