//! The tonic client of a CSI driver: startup calls on [`CsiConnection`]
//! (driver name, readiness, capabilities) and the snapshot operations on
//! [`CsiClient`], which implements [`SnapshotDriver`].
//!
//! ```text
//! let conn = CsiConnection::connect(ConnectOptions::new("unix:///csi/csi.sock", timeout)?).await?;
//! let info = conn.plugin_info().await?;          // driver name (spec B.1 step 7)
//! conn.probe_forever().await?;                   // B.3
//! let caps = conn.capabilities().await?;         // B.1 step 10
//! require_snapshot_support(&info.name, &caps)?;
//! let driver = conn.into_driver(info.name, caps); // impl SnapshotDriver
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;

use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;

use super::address::{AddressError, parse_address};
use super::call::{Caller, methods};
use super::connection::{CONNECT_LIMIT, ConnectError, LossHandler, OwnerGuard, connect_unix};
use super::driver::{
    CreateGroupSnapshotArgs, CreateSnapshotArgs, DriverCapabilities, GroupSnapshotInfo, Secrets,
    SnapshotDriver, SnapshotInfo,
};
use super::error::CsiError;
use super::proto::v1;
use super::redact::Redact;
use crate::metrics::CsiOperationMetrics;

use v1::controller_client::ControllerClient;
use v1::group_controller_client::GroupControllerClient;
use v1::identity_client::IdentityClient;

/// Interval between Probe attempts (spec B.3).
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How to reach the driver.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The driver socket.
    pub socket: PathBuf,
    /// `--timeout`: the deadline of every CSI interaction.
    pub timeout: Duration,
    /// Overall limit of the initial connection (30 s).
    pub connect_limit: Duration,
    /// What happens when the connection is lost after it was made.
    pub on_loss: LossHandler,
    /// Where every RPC is observed.
    pub metrics: CsiOperationMetrics,
}

impl ConnectOptions {
    /// Options for `--csi-address` (`/path` or `unix://path`) and
    /// `--timeout`, with the production defaults: 30 s connect limit, exit
    /// on connection loss, and the histogram in the global registry.
    pub fn new(address: &str, timeout: Duration) -> Result<Self, AddressError> {
        Ok(ConnectOptions {
            socket: parse_address(address)?,
            timeout,
            connect_limit: CONNECT_LIMIT,
            on_loss: LossHandler::exit_process(),
            metrics: CsiOperationMetrics::global().clone(),
        })
    }

    /// Replaces the connection-loss handler.
    pub fn with_loss_handler(mut self, on_loss: LossHandler) -> Self {
        self.on_loss = on_loss;
        self
    }

    /// Replaces the metric the RPCs are recorded in.
    pub fn with_metrics(mut self, metrics: CsiOperationMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Replaces the overall connect limit.
    pub fn with_connect_limit(mut self, limit: Duration) -> Self {
        self.connect_limit = limit;
        self
    }
}

/// A startup step against the driver failed; the sidecar exits 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    /// GetPluginInfo failed.
    #[error("error getting CSI driver name: {0}")]
    PluginInfo(#[source] CsiError),
    /// GetPluginInfo returned an empty name.
    #[error("error getting CSI driver name: the driver returned an empty name")]
    EmptyDriverName,
    /// Probe failed with an error other than DeadlineExceeded.
    #[error("error waiting for CSI driver to be ready: {0}")]
    Probe(#[source] CsiError),
    /// ControllerGetCapabilities failed.
    #[error("error getting CSI driver capabilities: {0}")]
    Capabilities(#[source] CsiError),
    /// GroupControllerGetCapabilities failed (logged only, by upstream rule).
    #[error("error getting CSI driver group controller capabilities: {0}")]
    GroupCapabilities(#[source] CsiError),
    /// The driver lacks the mandatory CREATE_DELETE_SNAPSHOT capability.
    #[error(
        "CSI driver {driver} does not support snapshot creation: the CREATE_DELETE_SNAPSHOT controller capability is missing"
    )]
    SnapshotsNotSupported {
        /// The driver name.
        driver: String,
    },
}

/// What GetPluginInfo returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginInfo {
    /// The driver name (never empty).
    pub name: String,
    /// `vendor_version`.
    pub vendor_version: String,
    /// `manifest`.
    pub manifest: BTreeMap<String, String>,
}

/// An established connection to the driver, before its name and
/// capabilities are known. Cheap to clone.
#[derive(Clone)]
pub struct CsiConnection {
    // Declared first so it is dropped first: the socket closing when the
    // channel goes away must not count as a connection loss.
    _owner: Arc<OwnerGuard>,
    caller: Caller,
    timeout: Duration,
}

impl std::fmt::Debug for CsiConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsiConnection")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl CsiConnection {
    /// Connects to the driver socket (spec B.2). Fails after
    /// `options.connect_limit` without a connection.
    pub async fn connect(options: ConnectOptions) -> Result<Self, ConnectError> {
        let (channel, owner) =
            connect_unix(&options.socket, options.connect_limit, options.on_loss).await?;
        Ok(CsiConnection {
            caller: Caller {
                channel,
                metrics: options.metrics,
            },
            timeout: options.timeout,
            _owner: Arc::new(owner),
        })
    }

    /// The histogram the RPCs are recorded in; call
    /// [`CsiOperationMetrics::set_driver_name`] on it once the name is known.
    pub fn metrics(&self) -> &CsiOperationMetrics {
        &self.caller.metrics
    }

    /// `--timeout`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// GetPluginInfo under `--timeout`; an empty name is an error.
    pub async fn plugin_info(&self) -> Result<PluginInfo, StartupError> {
        let reply = self
            .caller
            .unary(
                methods::GET_PLUGIN_INFO,
                v1::GetPluginInfoRequest {},
                self.deadline(),
                |ch, req| async move { IdentityClient::new(ch).get_plugin_info(req).await },
            )
            .await
            .map_err(StartupError::PluginInfo)?;
        if reply.name.is_empty() {
            return Err(StartupError::EmptyDriverName);
        }
        Ok(PluginInfo {
            name: reply.name,
            vendor_version: reply.vendor_version,
            manifest: reply.manifest.into_iter().collect(),
        })
    }

    /// One Probe under `--timeout`: `Ok(true)` when ready (`ready` absent or
    /// true).
    pub async fn probe(&self) -> Result<bool, CsiError> {
        let reply = self
            .caller
            .unary(
                methods::PROBE,
                v1::ProbeRequest {},
                self.deadline(),
                |ch, req| async move { IdentityClient::new(ch).probe(req).await },
            )
            .await?;
        Ok(reply.ready.unwrap_or(true))
    }

    /// Probes until the driver is ready (spec B.3): first attempt at once,
    /// then every second; not ready or DeadlineExceeded retries, any other
    /// error ends the wait. No overall limit.
    pub async fn probe_forever(&self) -> Result<(), StartupError> {
        let mut ticker = tokio::time::interval(PROBE_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.probe().await {
                Ok(true) => {
                    tracing::info!("CSI driver is ready");
                    return Ok(());
                }
                Ok(false) => tracing::info!("CSI driver is not ready yet"),
                Err(e) if e.code() == Some(Code::DeadlineExceeded) => {
                    tracing::info!(error = %e, "CSI driver probe timed out, retrying");
                }
                Err(e) => return Err(StartupError::Probe(e)),
            }
        }
    }

    /// ControllerGetCapabilities under `--timeout`. `group_snapshots` is
    /// left false; see [`CsiConnection::group_snapshot_capability`].
    pub async fn capabilities(&self) -> Result<DriverCapabilities, StartupError> {
        use v1::controller_service_capability::{Type, rpc::Type as Rpc};
        let reply = self
            .caller
            .unary(
                methods::CONTROLLER_GET_CAPABILITIES,
                v1::ControllerGetCapabilitiesRequest {},
                self.deadline(),
                |ch, req| async move {
                    ControllerClient::new(ch)
                        .controller_get_capabilities(req)
                        .await
                },
            )
            .await
            .map_err(StartupError::Capabilities)?;
        let mut caps = DriverCapabilities::default();
        // Entries without `rpc` and unknown enum values are ignored.
        for cap in reply.capabilities {
            let Some(Type::Rpc(rpc)) = cap.r#type else {
                continue;
            };
            match Rpc::try_from(rpc.r#type) {
                Ok(Rpc::CreateDeleteSnapshot) => caps.create_delete_snapshot = true,
                Ok(Rpc::ListSnapshots) => caps.list_snapshots = true,
                Ok(Rpc::GetSnapshot) => caps.get_snapshot = true,
                _ => {}
            }
        }
        Ok(caps)
    }

    /// GroupControllerGetCapabilities under `--timeout`: whether
    /// CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT is advertised.
    pub async fn group_snapshot_capability(&self) -> Result<bool, StartupError> {
        use v1::group_controller_service_capability::{Type, rpc::Type as Rpc};
        let reply = self
            .caller
            .unary(
                methods::GROUP_CONTROLLER_GET_CAPABILITIES,
                v1::GroupControllerGetCapabilitiesRequest {},
                self.deadline(),
                |ch, req| async move {
                    GroupControllerClient::new(ch)
                        .group_controller_get_capabilities(req)
                        .await
                },
            )
            .await
            .map_err(StartupError::GroupCapabilities)?;
        Ok(reply.capabilities.iter().any(|cap| {
            matches!(&cap.r#type, Some(Type::Rpc(rpc))
                if rpc.r#type == Rpc::CreateDeleteGetVolumeGroupSnapshot as i32)
        }))
    }

    /// The snapshot client for a driver whose name and capabilities are
    /// known.
    pub fn into_driver(self, driver_name: String, capabilities: DriverCapabilities) -> CsiClient {
        CsiClient {
            conn: self,
            driver_name: Arc::from(driver_name),
            capabilities: Arc::new(capabilities),
        }
    }
}

/// Checks the mandatory controller capability (spec B.1 step 10).
pub fn require_snapshot_support(
    driver: &str,
    caps: &DriverCapabilities,
) -> Result<(), StartupError> {
    if caps.create_delete_snapshot {
        Ok(())
    } else {
        Err(StartupError::SnapshotsNotSupported {
            driver: driver.to_string(),
        })
    }
}

/// The driver's snapshot operations over gRPC. Cheap to clone.
#[derive(Clone)]
pub struct CsiClient {
    conn: CsiConnection,
    driver_name: Arc<str>,
    capabilities: Arc<DriverCapabilities>,
}

impl std::fmt::Debug for CsiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsiClient")
            .field("driver_name", &self.driver_name)
            .field("capabilities", &self.capabilities)
            .finish()
    }
}

impl CsiClient {
    /// The underlying connection (for metrics and the timeout).
    pub fn connection(&self) -> &CsiConnection {
        &self.conn
    }
}

fn secret_map(secrets: &Secrets) -> HashMap<String, String> {
    secrets
        .expose()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Unix nanoseconds of a Timestamp; out-of-range values are a bad reply.
fn timestamp_ns(ts: Option<prost_types::Timestamp>) -> Result<Option<i64>, CsiError> {
    let Some(ts) = ts else {
        return Ok(None);
    };
    ts.seconds
        .checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(i64::from(ts.nanos)))
        .map(Some)
        .ok_or_else(|| {
            CsiError::InvalidReply(format!(
                "creation_time {}s {}ns is out of range",
                ts.seconds, ts.nanos
            ))
        })
}

fn snapshot_info(s: v1::Snapshot) -> Result<SnapshotInfo, CsiError> {
    // Both are tolerated, as upstream tolerates them (the reply time is
    // recorded instead, no restoreSize is written); the log says why.
    if s.creation_time.is_none() {
        tracing::warn!(
            snapshot_handle = %s.snapshot_id,
            "driver reply lacks the required creation_time; recording the time of the reply"
        );
    }
    if s.size_bytes < 0 {
        tracing::warn!(
            snapshot_handle = %s.snapshot_id,
            size_bytes = s.size_bytes,
            "driver reply has a negative size_bytes; restoreSize is not written"
        );
    }
    Ok(SnapshotInfo {
        creation_time_ns: timestamp_ns(s.creation_time)?,
        snapshot_id: s.snapshot_id,
        source_volume_id: s.source_volume_id,
        size_bytes: s.size_bytes,
        ready_to_use: s.ready_to_use,
        group_snapshot_id: s.group_snapshot_id,
    })
}

fn group_info(g: v1::VolumeGroupSnapshot) -> Result<GroupSnapshotInfo, CsiError> {
    if g.creation_time.is_none() {
        tracing::warn!(
            group_snapshot_handle = %g.group_snapshot_id,
            "driver reply lacks the required creation_time; recording the time of the reply"
        );
    }
    Ok(GroupSnapshotInfo {
        creation_time_ns: timestamp_ns(g.creation_time)?,
        group_snapshot_id: g.group_snapshot_id,
        snapshots: g
            .snapshots
            .into_iter()
            .map(snapshot_info)
            .collect::<Result<_, _>>()?,
        ready_to_use: g.ready_to_use,
    })
}

fn missing(what: &str, method: &str) -> CsiError {
    CsiError::InvalidReply(format!("{method} returned OK without {what}"))
}

impl CsiClient {
    /// One unary RPC under `--timeout`.
    async fn call<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        request: Req,
        send: F,
    ) -> Result<Resp, CsiError>
    where
        Req: Redact,
        Resp: Redact,
        F: FnOnce(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let deadline = self.conn.deadline();
        self.conn
            .caller
            .unary(method, request, deadline, send)
            .await
    }
}

impl SnapshotDriver for CsiClient {
    fn driver_name(&self) -> &str {
        &self.driver_name
    }

    fn capabilities(&self) -> &DriverCapabilities {
        &self.capabilities
    }

    async fn create_snapshot(&self, args: CreateSnapshotArgs) -> Result<SnapshotInfo, CsiError> {
        let req = v1::CreateSnapshotRequest {
            source_volume_id: args.source_volume_id,
            name: args.name,
            secrets: secret_map(&args.secrets),
            parameters: args.parameters.into_iter().collect(),
        };
        let reply = self
            .call(methods::CREATE_SNAPSHOT, req, |ch, req| async move {
                ControllerClient::new(ch).create_snapshot(req).await
            })
            .await?;
        snapshot_info(
            reply
                .snapshot
                .ok_or_else(|| missing("snapshot", "CreateSnapshot"))?,
        )
    }

    async fn get_snapshot(
        &self,
        snapshot_id: &str,
        secrets: &Secrets,
    ) -> Result<SnapshotInfo, CsiError> {
        let req = v1::GetSnapshotRequest {
            snapshot_id: snapshot_id.to_string(),
            secrets: secret_map(secrets),
        };
        let reply = self
            .call(methods::GET_SNAPSHOT, req, |ch, req| async move {
                ControllerClient::new(ch).get_snapshot(req).await
            })
            .await?;
        snapshot_info(
            reply
                .snapshot
                .ok_or_else(|| missing("snapshot", "GetSnapshot"))?,
        )
    }

    async fn list_snapshot(
        &self,
        snapshot_id: &str,
        secrets: &Secrets,
    ) -> Result<Option<SnapshotInfo>, CsiError> {
        let req = v1::ListSnapshotsRequest {
            snapshot_id: snapshot_id.to_string(),
            secrets: secret_map(secrets),
            ..Default::default()
        };
        let reply = self
            .call(methods::LIST_SNAPSHOTS, req, |ch, req| async move {
                ControllerClient::new(ch).list_snapshots(req).await
            })
            .await?;
        let Some(entry) = reply.entries.into_iter().next() else {
            return Ok(None);
        };
        let snap = entry
            .snapshot
            .ok_or_else(|| missing("snapshot in the first entry", "ListSnapshots"))?;
        snapshot_info(snap).map(Some)
    }

    async fn delete_snapshot(&self, snapshot_id: &str, secrets: &Secrets) -> Result<(), CsiError> {
        let req = v1::DeleteSnapshotRequest {
            snapshot_id: snapshot_id.to_string(),
            secrets: secret_map(secrets),
        };
        self.call(methods::DELETE_SNAPSHOT, req, |ch, req| async move {
            ControllerClient::new(ch).delete_snapshot(req).await
        })
        .await
        .map(drop)
    }

    async fn create_group_snapshot(
        &self,
        args: CreateGroupSnapshotArgs,
    ) -> Result<GroupSnapshotInfo, CsiError> {
        let req = v1::CreateVolumeGroupSnapshotRequest {
            name: args.name,
            source_volume_ids: args.source_volume_ids,
            secrets: secret_map(&args.secrets),
            parameters: args.parameters.into_iter().collect(),
        };
        let reply = self
            .call(
                methods::CREATE_VOLUME_GROUP_SNAPSHOT,
                req,
                |ch, req| async move {
                    let mut client = GroupControllerClient::new(ch);
                    client.create_volume_group_snapshot(req).await
                },
            )
            .await?;
        group_info(
            reply
                .group_snapshot
                .ok_or_else(|| missing("group_snapshot", "CreateVolumeGroupSnapshot"))?,
        )
    }

    async fn get_group_snapshot(
        &self,
        group_snapshot_id: &str,
        snapshot_ids: &[String],
        secrets: &Secrets,
    ) -> Result<GroupSnapshotInfo, CsiError> {
        let req = v1::GetVolumeGroupSnapshotRequest {
            group_snapshot_id: group_snapshot_id.to_string(),
            snapshot_ids: snapshot_ids.to_vec(),
            secrets: secret_map(secrets),
        };
        let reply = self
            .call(
                methods::GET_VOLUME_GROUP_SNAPSHOT,
                req,
                |ch, req| async move {
                    let mut client = GroupControllerClient::new(ch);
                    client.get_volume_group_snapshot(req).await
                },
            )
            .await?;
        group_info(
            reply
                .group_snapshot
                .ok_or_else(|| missing("group_snapshot", "GetVolumeGroupSnapshot"))?,
        )
    }

    async fn delete_group_snapshot(
        &self,
        group_snapshot_id: &str,
        snapshot_ids: &[String],
        secrets: &Secrets,
    ) -> Result<(), CsiError> {
        let req = v1::DeleteVolumeGroupSnapshotRequest {
            group_snapshot_id: group_snapshot_id.to_string(),
            snapshot_ids: snapshot_ids.to_vec(),
            secrets: secret_map(secrets),
        };
        self.call(
            methods::DELETE_VOLUME_GROUP_SNAPSHOT,
            req,
            |ch, req| async move {
                let mut client = GroupControllerClient::new(ch);
                client.delete_volume_group_snapshot(req).await
            },
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_conversion() {
        assert_eq!(timestamp_ns(None), Ok(None));
        let ts = prost_types::Timestamp {
            seconds: 2,
            nanos: 5,
        };
        assert_eq!(timestamp_ns(Some(ts)), Ok(Some(2_000_000_005)));
        let huge = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert!(matches!(
            timestamp_ns(Some(huge)),
            Err(CsiError::InvalidReply(_))
        ));
    }

    #[test]
    fn snapshot_support_is_required() {
        let caps = DriverCapabilities {
            list_snapshots: true,
            ..Default::default()
        };
        let err = require_snapshot_support("d.example.com", &caps).unwrap_err();
        assert!(err.to_string().contains("CREATE_DELETE_SNAPSHOT"));
        assert!(err.to_string().contains("d.example.com"));
        let ok = DriverCapabilities {
            create_delete_snapshot: true,
            ..Default::default()
        };
        assert_eq!(require_snapshot_support("d", &ok), Ok(()));
    }
}
