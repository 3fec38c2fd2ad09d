//! Event reasons and the texts of errors, statuses and events (spec C.11).
//! Only the reasons and the fixed messages are API-relevant; the inner texts
//! follow upstream's shapes (Go `%q` quoting of a nested error) so that logs
//! and `status.error.message` read the same.

use std::fmt;

/// Reasons of the Warning events the sidecar emits (it emits no others).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventReason {
    /// First create of a VSC failed.
    SnapshotCreationFailed,
    /// Re-create or status poll of a VSC failed.
    SnapshotContentCheckandUpdateFailed,
    /// Deleting a VSC's snapshot failed at some stage.
    SnapshotDeleteError,
    /// First create of a VGSC failed.
    GroupSnapshotCreationFailed,
    /// Re-create or poll of a VGSC failed.
    GroupSnapshotContentCheckandUpdateFailed,
    /// Deleting a VGSC's group snapshot failed at some stage.
    GroupSnapshotDeleteError,
}

impl EventReason {
    /// The reason string as written into the Event.
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::SnapshotCreationFailed => "SnapshotCreationFailed",
            EventReason::SnapshotContentCheckandUpdateFailed => {
                "SnapshotContentCheckandUpdateFailed"
            }
            EventReason::SnapshotDeleteError => "SnapshotDeleteError",
            EventReason::GroupSnapshotCreationFailed => "GroupSnapshotCreationFailed",
            EventReason::GroupSnapshotContentCheckandUpdateFailed => {
                "GroupSnapshotContentCheckandUpdateFailed"
            }
            EventReason::GroupSnapshotDeleteError => "GroupSnapshotDeleteError",
        }
    }
}

impl fmt::Display for EventReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Warning event to emit on the content being synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Event reason.
    pub reason: EventReason,
    /// Event message.
    pub message: String,
}

/// Whether a create-path failure was the first attempt (no status yet) or a
/// later check-and-update; it picks the event reason and message prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// `status` was absent.
    First,
    /// `status` existed (re-create, poll).
    Recheck,
}

/// A failure that is written to `status.error` (with `readyToUse: false`) and
/// emitted as a Warning event with the same message, unless the status
/// already carries exactly this message (spec C.11 dedup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Event reason.
    pub reason: EventReason,
    /// Full message, e.g. `Failed to create snapshot: <inner>`.
    pub message: String,
}

impl Failure {
    /// A VSC failure for the given attempt with upstream's message prefix.
    pub fn snapshot(attempt: Attempt, inner: impl fmt::Display) -> Failure {
        match attempt {
            Attempt::First => Failure {
                reason: EventReason::SnapshotCreationFailed,
                message: format!("Failed to create snapshot: {inner}"),
            },
            Attempt::Recheck => Failure {
                reason: EventReason::SnapshotContentCheckandUpdateFailed,
                message: format!("Failed to check and update snapshot content: {inner}"),
            },
        }
    }

    /// A VGSC failure for the given attempt with upstream's message prefix.
    pub fn group(attempt: Attempt, inner: impl fmt::Display) -> Failure {
        match attempt {
            Attempt::First => Failure {
                reason: EventReason::GroupSnapshotCreationFailed,
                message: format!("Failed to create group snapshot: {inner}"),
            },
            Attempt::Recheck => Failure {
                reason: EventReason::GroupSnapshotContentCheckandUpdateFailed,
                message: format!("Failed to check and update group snapshot content: {inner}"),
            },
        }
    }

    /// The event for this failure.
    pub fn warning(&self) -> Warning {
        Warning {
            reason: self.reason,
            message: self.message.clone(),
        }
    }
}

/// The stage of a delete that failed; each has a fixed event message and
/// none writes `status.error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteStage {
    /// The credentials could not be named or fetched.
    Credentials,
    /// The delete RPC failed (or, for groups, could not be formed).
    Rpc,
}

/// The Warning for a failed VSC delete stage.
pub fn snapshot_delete_warning(stage: DeleteStage) -> Warning {
    Warning {
        reason: EventReason::SnapshotDeleteError,
        message: match stage {
            DeleteStage::Credentials => "Failed to get snapshot credentials",
            DeleteStage::Rpc => "Failed to delete snapshot",
        }
        .into(),
    }
}

/// The Warning for a failed VGSC delete stage.
pub fn group_delete_warning(stage: DeleteStage) -> Warning {
    Warning {
        reason: EventReason::GroupSnapshotDeleteError,
        message: match stage {
            DeleteStage::Credentials => "Failed to get snapshot credentials",
            DeleteStage::Rpc => "Failed to delete group snapshot",
        }
        .into(),
    }
}

/// The texts that differ between the two content kinds, for the executor.
#[derive(Debug, Clone, Copy)]
pub struct KindTexts {
    /// How logs name the controller (`… started`).
    pub controller: &'static str,
    /// The failure of a create or re-check attempt.
    pub failure: fn(Attempt, String) -> Failure,
    /// Wraps a create input error.
    pub create_input_error: fn(&str, String) -> String,
    /// The Warning of a failed delete stage.
    pub delete_warning: fn(DeleteStage) -> Warning,
}

/// The texts of VolumeSnapshotContents.
pub const SNAPSHOT_TEXTS: KindTexts = KindTexts {
    controller: "Snapshot content controller",
    failure: Failure::snapshot,
    create_input_error,
    delete_warning: snapshot_delete_warning,
};

/// The texts of VolumeGroupSnapshotContents.
pub const GROUP_TEXTS: KindTexts = KindTexts {
    controller: "Group snapshot content controller",
    failure: Failure::group,
    create_input_error: group_create_input_error,
    delete_warning: group_delete_warning,
};

/// Go `%q` quoting of a string: double quotes, with `"`, `\` and control
/// characters escaped.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `failed to get input parameters to create snapshot for content <n>: "<e>"`.
pub fn create_input_error(content: &str, inner: impl fmt::Display) -> String {
    format!(
        "failed to get input parameters to create snapshot for content {content}: {}",
        go_quote(&inner.to_string())
    )
}

/// `failed to get input parameters to create group snapshot for content <n>: "<e>"`.
pub fn group_create_input_error(content: &str, inner: impl fmt::Display) -> String {
    format!(
        "failed to get input parameters to create group snapshot for content {content}: {}",
        go_quote(&inner.to_string())
    )
}

/// `failed to remove CSI Parameters of prefixed keys: <e>`.
pub fn parameters_error(inner: impl fmt::Display) -> String {
    format!("failed to remove CSI Parameters of prefixed keys: {inner}")
}

/// `failed to take snapshot of the volume <handle>: "<e>"`.
pub fn take_snapshot_error(volume_handle: &str, inner: impl fmt::Display) -> String {
    format!(
        "failed to take snapshot of the volume {volume_handle}: {}",
        go_quote(&inner.to_string())
    )
}

/// `failed to take group snapshot of the volumes [v1 v2]: "<e>"`.
pub fn take_group_snapshot_error(volume_handles: &[String], inner: impl fmt::Display) -> String {
    format!(
        "failed to take group snapshot of the volumes [{}]: {}",
        volume_handles.join(" "),
        go_quote(&inner.to_string())
    )
}

/// `failed to list snapshot for content <n>: "<e>"`.
pub fn list_snapshot_error(content: &str, inner: impl fmt::Display) -> String {
    format!(
        "failed to list snapshot for content {content}: {}",
        go_quote(&inner.to_string())
    )
}

/// `failed to get snapshot for content <n>: "<e>"` (GetSnapshot polls).
pub fn get_snapshot_error(content: &str, inner: impl fmt::Display) -> String {
    format!(
        "failed to get snapshot for content {content}: {}",
        go_quote(&inner.to_string())
    )
}

/// `failed to get group snapshot status for content <n>: "<e>"`.
pub fn get_group_snapshot_error(content: &str, inner: impl fmt::Display) -> String {
    format!(
        "failed to get group snapshot status for content {content}: {}",
        go_quote(&inner.to_string())
    )
}

/// `snapshot controller failed to update <n> on API server: <cause>`.
pub fn status_update_error(content: &str, inner: impl fmt::Display) -> String {
    format!("snapshot controller failed to update {content} on API server: {inner}")
}

/// `failed to get credentials for content <n>: <cause>` (secret GET).
pub fn credentials_error(content: &str, inner: impl fmt::Display) -> String {
    format!("failed to get credentials for content {content}: {inner}")
}

/// `no snapshot found for snapshotID <id>` (ListSnapshots returned nothing).
pub fn snapshot_not_found(snapshot_id: &str) -> String {
    format!("no snapshot found for snapshotID {snapshot_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote_escapes_like_percent_q() {
        assert_eq!(go_quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(go_quote("é\u{1}"), "\"é\\x01\"");
    }

    #[test]
    fn take_snapshot_error_quotes_rpc_error() {
        let e = crate::csi::error::CsiError::status(tonic::Code::InvalidArgument, "bad \"x\"");
        assert_eq!(
            take_snapshot_error("vol-1", e),
            "failed to take snapshot of the volume vol-1: \"rpc error: code = InvalidArgument desc = bad \\\"x\\\"\""
        );
    }

    #[test]
    fn failure_prefixes_and_reasons() {
        let f = Failure::snapshot(Attempt::First, "x");
        assert_eq!(f.reason.as_str(), "SnapshotCreationFailed");
        assert_eq!(f.message, "Failed to create snapshot: x");
        let f = Failure::snapshot(Attempt::Recheck, "x");
        assert_eq!(f.reason.as_str(), "SnapshotContentCheckandUpdateFailed");
        assert_eq!(f.message, "Failed to check and update snapshot content: x");
        let f = Failure::group(Attempt::First, "x");
        assert_eq!(f.reason.as_str(), "GroupSnapshotCreationFailed");
        assert_eq!(f.message, "Failed to create group snapshot: x");
        let f = Failure::group(Attempt::Recheck, "x");
        assert_eq!(
            f.reason.as_str(),
            "GroupSnapshotContentCheckandUpdateFailed"
        );
        assert_eq!(
            f.message,
            "Failed to check and update group snapshot content: x"
        );
    }

    #[test]
    fn delete_warnings_have_fixed_texts() {
        let w = snapshot_delete_warning(DeleteStage::Credentials);
        assert_eq!(
            (w.reason.as_str(), w.message.as_str()),
            ("SnapshotDeleteError", "Failed to get snapshot credentials")
        );
        let w = snapshot_delete_warning(DeleteStage::Rpc);
        assert_eq!(w.message, "Failed to delete snapshot");
        let w = group_delete_warning(DeleteStage::Rpc);
        assert_eq!(
            (w.reason.as_str(), w.message.as_str()),
            (
                "GroupSnapshotDeleteError",
                "Failed to delete group snapshot"
            )
        );
    }
}
