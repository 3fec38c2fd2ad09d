//! The driver as the controller sees it: a trait over domain types. The
//! tonic client is one implementation; controller tests use fakes.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

use super::error::CsiError;
use super::redact::STRIPPED;

/// Credentials passed to the driver. `Debug` never shows the values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(BTreeMap<String, String>);

impl Secrets {
    /// Wraps a key → value map.
    pub fn new(map: BTreeMap<String, String>) -> Self {
        Secrets(map)
    }
    /// True when no credentials are carried.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The credential values; only for building the RPC request.
    pub fn expose(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, STRIPPED)))
            .finish()
    }
}

/// What the driver said about one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// `snapshot_id`: the handle.
    pub snapshot_id: String,
    /// `source_volume_id`.
    pub source_volume_id: String,
    /// `size_bytes`; 0 means unknown.
    pub size_bytes: i64,
    /// `creation_time` in Unix nanoseconds; `None` when the driver left it out.
    pub creation_time_ns: Option<i64>,
    /// `ready_to_use`.
    pub ready_to_use: bool,
    /// `group_snapshot_id`; empty when not part of a group.
    pub group_snapshot_id: String,
}

/// What the driver said about one group snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupSnapshotInfo {
    /// `group_snapshot_id`.
    pub group_snapshot_id: String,
    /// The member snapshots, in the driver's order.
    pub snapshots: Vec<SnapshotInfo>,
    /// `creation_time` in Unix nanoseconds; `None` when absent.
    pub creation_time_ns: Option<i64>,
    /// `ready_to_use`.
    pub ready_to_use: bool,
}

/// Driver capabilities learned at startup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverCapabilities {
    /// Controller `CREATE_DELETE_SNAPSHOT` (mandatory).
    pub create_delete_snapshot: bool,
    /// Controller `LIST_SNAPSHOTS`.
    pub list_snapshots: bool,
    /// Controller `GET_SNAPSHOT` (alpha).
    pub get_snapshot: bool,
    /// GroupController `CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT`.
    pub group_snapshots: bool,
}

/// Arguments of CreateSnapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateSnapshotArgs {
    /// Deterministic snapshot name (prefix + VS UID).
    pub name: String,
    /// The source volume handle.
    pub source_volume_id: String,
    /// Class parameters with reserved keys removed (plus extra metadata).
    pub parameters: BTreeMap<String, String>,
    /// Credentials.
    pub secrets: Secrets,
}

/// Arguments of CreateVolumeGroupSnapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateGroupSnapshotArgs {
    /// Deterministic group snapshot name (prefix + VGS UID).
    pub name: String,
    /// Source volume handles, in spec order.
    pub source_volume_ids: Vec<String>,
    /// Class parameters with reserved keys removed (plus extra metadata).
    pub parameters: BTreeMap<String, String>,
    /// Credentials.
    pub secrets: Secrets,
}

/// The snapshot operations the controller needs from a CSI driver. Every
/// method is one CSI interaction bounded by `--timeout`.
pub trait SnapshotDriver: Send + Sync + 'static {
    /// The driver name from GetPluginInfo at startup.
    fn driver_name(&self) -> &str;

    /// Capabilities as advertised at startup.
    fn capabilities(&self) -> &DriverCapabilities;

    /// CreateSnapshot (idempotent by name).
    fn create_snapshot(
        &self,
        args: CreateSnapshotArgs,
    ) -> impl Future<Output = Result<SnapshotInfo, CsiError>> + Send;

    /// GetSnapshot for one handle (only when `capabilities().get_snapshot`).
    fn get_snapshot(
        &self,
        snapshot_id: &str,
        secrets: &Secrets,
    ) -> impl Future<Output = Result<SnapshotInfo, CsiError>> + Send;

    /// ListSnapshots filtered by `snapshot_id`; `None` when no entry came back.
    fn list_snapshot(
        &self,
        snapshot_id: &str,
        secrets: &Secrets,
    ) -> impl Future<Output = Result<Option<SnapshotInfo>, CsiError>> + Send;

    /// DeleteSnapshot (OK for an unknown id).
    fn delete_snapshot(
        &self,
        snapshot_id: &str,
        secrets: &Secrets,
    ) -> impl Future<Output = Result<(), CsiError>> + Send;

    /// CreateVolumeGroupSnapshot (idempotent by name).
    fn create_group_snapshot(
        &self,
        args: CreateGroupSnapshotArgs,
    ) -> impl Future<Output = Result<GroupSnapshotInfo, CsiError>> + Send;

    /// GetVolumeGroupSnapshot.
    fn get_group_snapshot(
        &self,
        group_snapshot_id: &str,
        snapshot_ids: &[String],
        secrets: &Secrets,
    ) -> impl Future<Output = Result<GroupSnapshotInfo, CsiError>> + Send;

    /// DeleteVolumeGroupSnapshot (OK for an unknown id).
    fn delete_group_snapshot(
        &self,
        group_snapshot_id: &str,
        snapshot_ids: &[String],
        secrets: &Secrets,
    ) -> impl Future<Output = Result<(), CsiError>> + Send;
}
