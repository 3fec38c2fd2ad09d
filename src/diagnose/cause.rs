//! The causes `diagnose` names, with their stable codes, and one finding
//! (one stuck object).

use serde::Serialize;

/// Why an object is not ready or not going away. The codes are stable: they
/// are documented in `docs/troubleshooting.md` and scripts match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// The named snapshot class does not exist.
    ClassNotFound,
    /// The class belongs to another driver than the content.
    ClassDriverMismatch,
    /// A class parameter is refused (e.g. an unknown `csi.storage.k8s.io/` key).
    ClassInvalidParameter,
    /// A VolumeSnapshot or VolumeGroupSnapshot has no bound content.
    NoContent,
    /// No csi-snapshotter handles the content's driver.
    NoSidecar,
    /// A secret the sidecar needs does not exist.
    SecretMissing,
    /// The sidecar may not read a secret it needs.
    SecretForbidden,
    /// The driver answered with an error.
    DriverError,
    /// The driver has the snapshot but says it is not ready yet.
    DriverNotReady,
    /// A create is running, or was interrupted and will be resumed.
    CreateInFlight,
    /// Deletion was asked for and a finalizer is still there.
    DeleteBlocked,
    /// Member contents or handles of a group disagree with the driver's reply.
    GroupMemberInconsistent,
    /// The content itself is malformed or not bound, so no create can start.
    ContentInvalid,
}

impl Cause {
    /// Every cause, in the order the text output groups them.
    pub const ALL: [Cause; 13] = [
        Cause::ClassNotFound,
        Cause::ClassDriverMismatch,
        Cause::ClassInvalidParameter,
        Cause::NoContent,
        Cause::NoSidecar,
        Cause::SecretMissing,
        Cause::SecretForbidden,
        Cause::DriverError,
        Cause::DriverNotReady,
        Cause::CreateInFlight,
        Cause::DeleteBlocked,
        Cause::GroupMemberInconsistent,
        Cause::ContentInvalid,
    ];

    /// The stable code, e.g. `class-not-found`.
    pub fn code(self) -> &'static str {
        match self {
            Cause::ClassNotFound => "class-not-found",
            Cause::ClassDriverMismatch => "class-driver-mismatch",
            Cause::ClassInvalidParameter => "class-invalid-parameter",
            Cause::NoContent => "no-content",
            Cause::NoSidecar => "no-sidecar",
            Cause::SecretMissing => "secret-missing",
            Cause::SecretForbidden => "secret-forbidden",
            Cause::DriverError => "driver-error",
            Cause::DriverNotReady => "driver-not-ready",
            Cause::CreateInFlight => "create-in-flight",
            Cause::DeleteBlocked => "delete-blocked",
            Cause::GroupMemberInconsistent => "group-member-inconsistent",
            Cause::ContentInvalid => "content-invalid",
        }
    }

    /// Looks a code up (the inverse of [`Cause::code`]).
    pub fn from_code(code: &str) -> Option<Cause> {
        Cause::ALL.into_iter().find(|c| c.code() == code)
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// The four kinds `diagnose` looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    /// `VolumeSnapshot`.
    VolumeSnapshot,
    /// `VolumeSnapshotContent`.
    VolumeSnapshotContent,
    /// `VolumeGroupSnapshot`.
    VolumeGroupSnapshot,
    /// `VolumeGroupSnapshotContent`.
    VolumeGroupSnapshotContent,
}

impl Kind {
    /// The kind as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::VolumeSnapshot => "VolumeSnapshot",
            Kind::VolumeSnapshotContent => "VolumeSnapshotContent",
            Kind::VolumeGroupSnapshot => "VolumeGroupSnapshot",
            Kind::VolumeGroupSnapshotContent => "VolumeGroupSnapshotContent",
        }
    }

    /// Parses a kind as kubectl accepts it: the kind, its plural or its
    /// short name, in any case (`vs`, `volumesnapshotcontents`, …).
    pub fn parse(s: &str) -> Option<Kind> {
        match s.to_ascii_lowercase().as_str() {
            "vs" | "volumesnapshot" | "volumesnapshots" => Some(Kind::VolumeSnapshot),
            "vsc" | "vscs" | "volumesnapshotcontent" | "volumesnapshotcontents" => {
                Some(Kind::VolumeSnapshotContent)
            }
            "vgs" | "volumegroupsnapshot" | "volumegroupsnapshots" => {
                Some(Kind::VolumeGroupSnapshot)
            }
            "vgsc" | "vgscs" | "volumegroupsnapshotcontent" | "volumegroupsnapshotcontents" => {
                Some(Kind::VolumeGroupSnapshotContent)
            }
            _ => None,
        }
    }
}

/// One stuck object: its cause, the evidence read from the cluster and the
/// fix. Serialized as one item of `-o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The object's kind.
    pub kind: Kind,
    /// Its namespace; `None` for the cluster-scoped contents.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Seconds since it was created.
    pub age_seconds: i64,
    /// The one cause.
    pub cause: Cause,
    /// One line saying what is wrong.
    pub summary: String,
    /// What was read that shows it.
    pub evidence: Vec<String>,
    /// What to do.
    pub fix: String,
}
