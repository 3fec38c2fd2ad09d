//! The tonic services of the mock: Identity, Controller and GroupController
//! on top of the backend and the per-RPC table.

use std::sync::atomic::Ordering;

use tonic::{Request, Response, Status};

use super::Inner;
use super::rpc::{Malformed, Rpc};
use crate::csi::proto::v1 as pb;
use crate::csi::proto::v1::controller_service_capability::rpc::Type as CtrlCap;
use crate::csi::redact::Redact;

/// The three CSI services sharing one mock state.
#[derive(Clone)]
pub(crate) struct Svc(pub(crate) std::sync::Arc<Inner>);

type Reply<T> = Result<Response<T>, Status>;

fn unimplemented(rpc: Rpc) -> Status {
    Status::unimplemented(format!("mock driver: {} is not enabled", rpc.name()))
}

fn mangle_snapshot(s: &mut pb::Snapshot, m: Option<Malformed>) {
    match m {
        Some(Malformed::MissingCreationTime) => s.creation_time = None,
        Some(Malformed::EmptyId) => s.snapshot_id.clear(),
        Some(Malformed::NegativeSize) => s.size_bytes = -1,
        Some(Malformed::MissingMessage) | None => {}
    }
}

/// Applies a malformation to a single-snapshot reply.
fn snapshot_reply(mut s: pb::Snapshot, m: Option<Malformed>) -> Option<pb::Snapshot> {
    if m == Some(Malformed::MissingMessage) {
        return None;
    }
    mangle_snapshot(&mut s, m);
    Some(s)
}

/// Applies a malformation to a group reply.
fn group_reply(
    mut g: pb::VolumeGroupSnapshot,
    m: Option<Malformed>,
) -> Option<pb::VolumeGroupSnapshot> {
    match m {
        Some(Malformed::MissingMessage) => return None,
        Some(Malformed::MissingCreationTime) => g.creation_time = None,
        Some(Malformed::EmptyId) => g.group_snapshot_id.clear(),
        Some(Malformed::NegativeSize) | None => {}
    }
    if m == Some(Malformed::NegativeSize) {
        for s in &mut g.snapshots {
            mangle_snapshot(s, m);
        }
    }
    Some(g)
}

impl Svc {
    fn trace<M: Redact>(&self, rpc: Rpc, req: &M) {
        tracing::trace!(method = rpc.name(), request = ?req.redacted(), "mock driver call");
    }

    fn require_ctrl(&self, rpc: Rpc, cap: CtrlCap) -> Result<(), Status> {
        if self.0.has_controller_cap(cap) {
            Ok(())
        } else {
            Err(unimplemented(rpc))
        }
    }

    fn require_group(&self, rpc: Rpc) -> Result<(), Status> {
        if self.0.group_caps() {
            Ok(())
        } else {
            Err(unimplemented(rpc))
        }
    }
}

#[tonic::async_trait]
impl pb::identity_server::Identity for Svc {
    async fn get_plugin_info(
        &self,
        req: Request<pb::GetPluginInfoRequest>,
    ) -> Reply<pb::GetPluginInfoResponse> {
        let rpc = Rpc::GetPluginInfo;
        let req = req.into_inner();
        self.0.rpcs.enter(rpc, &req, None).await?;
        let (name, vendor_version) = self.0.plugin_info();
        self.0.rpcs.leave(rpc)?;
        Ok(Response::new(pb::GetPluginInfoResponse {
            name,
            vendor_version,
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        req: Request<pb::GetPluginCapabilitiesRequest>,
    ) -> Reply<pb::GetPluginCapabilitiesResponse> {
        use pb::plugin_capability::service::Type;
        let rpc = Rpc::GetPluginCapabilities;
        let req = req.into_inner();
        self.0.rpcs.enter(rpc, &req, None).await?;
        let mut types = vec![Type::ControllerService];
        if self.0.group_caps() {
            types.push(Type::GroupControllerService);
        }
        self.0.rpcs.leave(rpc)?;
        let capabilities = types
            .into_iter()
            .map(|t| pb::PluginCapability {
                r#type: Some(pb::plugin_capability::Type::Service(
                    pb::plugin_capability::Service { r#type: t as i32 },
                )),
            })
            .collect();
        Ok(Response::new(pb::GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(&self, req: Request<pb::ProbeRequest>) -> Reply<pb::ProbeResponse> {
        let rpc = Rpc::Probe;
        let req = req.into_inner();
        self.0.rpcs.enter(rpc, &req, None).await?;
        let not_ready = self
            .0
            .probe_not_ready_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        self.0.rpcs.leave(rpc)?;
        Ok(Response::new(pb::ProbeResponse {
            ready: Some(!not_ready),
        }))
    }
}

#[tonic::async_trait]
impl pb::controller_server::Controller for Svc {
    async fn create_volume(
        &self,
        req: Request<pb::CreateVolumeRequest>,
    ) -> Reply<pb::CreateVolumeResponse> {
        let rpc = Rpc::CreateVolume;
        let req = req.into_inner();
        self.trace(rpc, &req);
        self.0.rpcs.enter(rpc, &req, Some(&req.secrets)).await?;
        self.require_ctrl(rpc, CtrlCap::CreateDeleteVolume)?;
        let knobs = self.0.knobs();
        let vol = self.0.backend().create_volume(&req, knobs);
        self.0.rpcs.leave(rpc)?;
        Ok(Response::new(pb::CreateVolumeResponse {
            volume: Some(vol?),
        }))
    }

    async fn delete_volume(
        &self,
        req: Request<pb::DeleteVolumeRequest>,
    ) -> Reply<pb::DeleteVolumeResponse> {
        let rpc = Rpc::DeleteVolume;
        let req = req.into_inner();
        self.trace(rpc, &req);
        self.0.rpcs.enter(rpc, &req, Some(&req.secrets)).await?;
        self.require_ctrl(rpc, CtrlCap::CreateDeleteVolume)?;
        let res = self.0.backend().delete_volume(&req);
        self.0.rpcs.leave(rpc)?;
        res?;
        Ok(Response::new(pb::DeleteVolumeResponse {}))
    }

    async fn controller_get_capabilities(
        &self,
        req: Request<pb::ControllerGetCapabilitiesRequest>,
    ) -> Reply<pb::ControllerGetCapabilitiesResponse> {
        let rpc = Rpc::ControllerGetCapabilities;
        let req = req.into_inner();
        self.0.rpcs.enter(rpc, &req, None).await?;
        let capabilities = self
            .0
            .controller_caps()
            .into_iter()
            .map(|t| pb::ControllerServiceCapability {
                r#type: Some(pb::controller_service_capability::Type::Rpc(
                    pb::controller_service_capability::Rpc { r#type: t as i32 },
                )),
            })
            .collect();
        self.0.rpcs.leave(rpc)?;
        Ok(Response::new(pb::ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn create_snapshot(
        &self,
        req: Request<pb::CreateSnapshotRequest>,
    ) -> Reply<pb::CreateSnapshotResponse> {
        let rpc = Rpc::CreateSnapshot;
        let req = req.into_inner();
        self.trace(rpc, &req);
        self.0.rpcs.enter(rpc, &req, Some(&req.secrets)).await?;
        self.require_ctrl(rpc, CtrlCap::CreateDeleteSnapshot)?;
        let asked =
            self.0
                .param_faults
                .check(&req.name, &req.parameters, !req.secrets.is_empty())?;
        if let Some(delay) = asked.delay {
            tokio::time::sleep(delay).await;
        }
        let knobs = self.0.knobs();
        let snap = self.0.backend().create_snapshot(&req, knobs);
        let m = self.0.rpcs.leave(rpc)?;
        Ok(Response::new(pb::CreateSnapshotResponse {
            snapshot: snapshot_reply(snap?, m),
        }))
    }

    async fn delete_snapshot(
        &self,
        req: Request<pb::DeleteSnapshotRequest>,
    ) -> Reply<pb::DeleteSnapshotResponse> {
        let rpc = Rpc::DeleteSnapshot;
        let req = req.into_inner();
        self.trace(rpc, &req);
        self.0.rpcs.enter(rpc, &req, Some(&req.secrets)).await?;
        self.require_ctrl(rpc, CtrlCap::CreateDeleteSnapshot)?;
        let res = self.0.backend().delete_snapshot(&req);
        self.0.rpcs.leave(rpc)?;
        res?;
        Ok(Response::new(pb::DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Reply<pb::ListSnapshotsResponse> {
        let rpc = Rpc::ListSnapshots;
        let req = req.into_inner();
        self.trace(rpc, &req);
        self.0.rpcs.enter(rpc, &req, Some(&req.secrets)).await?;
        self.require_ctrl(rpc, CtrlCap::ListSnapshots)?;
        let knobs = self.0.knobs();
        let page = self.0.backend().list_snapshots(&req, knobs);
        let m = self.0.rpcs.leave(rpc)?;
        let page = page?;
        let entries = page
            .entries
            .into_iter()
            .map(|s| pb::list_snapshots_response::Entry {
                snapshot: snapshot_reply(s, m),
            })
            .collect();
        Ok(Response::new(pb::ListSnapshotsResponse {
            entries,
            next_token: page.next_token,
        }))
    }

    async fn get_snapshot(
        &self,
        req: Request<pb::GetSnapshotRequest>,
    ) -> Reply<pb::GetSnapshotResponse> {
        let rpc = Rpc::GetSnapshot;
        let req = req.into_inner();
        self.trace(rpc, &req);
        self.0.rpcs.enter(rpc, &req, Some(&req.secrets)).await?;
        self.require_ctrl(rpc, CtrlCap::GetSnapshot)?;
        let knobs = self.0.knobs();
        let snap = self.0.backend().get_snapshot(&req, knobs);
        let m = self.0.rpcs.leave(rpc)?;
        Ok(Response::new(pb::GetSnapshotResponse {
            snapshot: snapshot_reply(snap?, m),
        }))
    }
}

#[tonic::async_trait]
impl pb::group_controller_server::GroupController for Svc {
    async fn group_controller_get_capabilities(
        &self,
        req: Request<pb::GroupControllerGetCapabilitiesRequest>,
    ) -> Reply<pb::GroupControllerGetCapabilitiesResponse> {
        use pb::group_controller_service_capability as cap;
        let rpc = Rpc::GroupControllerGetCapabilities;
        let req = req.into_inner();
        self.0.rpcs.enter(rpc, &req, None).await?;
        let enabled = self.0.group_caps();
        self.0.rpcs.leave(rpc)?;
        let capabilities = if enabled {
            vec![pb::GroupControllerServiceCapability {
                r#type: Some(cap::Type::Rpc(cap::Rpc {
                    r#type: cap::rpc::Type::CreateDeleteGetVolumeGroupSnapshot as i32,
                })),
            }]
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::GroupControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn create_volume_group_snapshot(
        &self,
        req: Request<pb::CreateVolumeGroupSnapshotRequest>,
    ) -> Reply<pb::CreateVolumeGroupSnapshotResponse> {
        let rpc = Rpc::CreateVolumeGroupSnapshot;
        let req = req.into_inner();
        self.trace(rpc, &req);
        self.0.rpcs.enter(rpc, &req, Some(&req.secrets)).await?;
        self.require_group(rpc)?;
        let knobs = self.0.knobs();
        let group = self.0.backend().create_group(&req, knobs);
        let m = self.0.rpcs.leave(rpc)?;
        Ok(Response::new(pb::CreateVolumeGroupSnapshotResponse {
            group_snapshot: group_reply(group?, m),
        }))
    }

    async fn delete_volume_group_snapshot(
        &self,
        req: Request<pb::DeleteVolumeGroupSnapshotRequest>,
    ) -> Reply<pb::DeleteVolumeGroupSnapshotResponse> {
        let rpc = Rpc::DeleteVolumeGroupSnapshot;
        let req = req.into_inner();
        self.trace(rpc, &req);
        self.0.rpcs.enter(rpc, &req, Some(&req.secrets)).await?;
        self.require_group(rpc)?;
        let res = self.0.backend().delete_group(&req);
        self.0.rpcs.leave(rpc)?;
        res?;
        Ok(Response::new(pb::DeleteVolumeGroupSnapshotResponse {}))
    }

    async fn get_volume_group_snapshot(
        &self,
        req: Request<pb::GetVolumeGroupSnapshotRequest>,
    ) -> Reply<pb::GetVolumeGroupSnapshotResponse> {
        let rpc = Rpc::GetVolumeGroupSnapshot;
        let req = req.into_inner();
        self.trace(rpc, &req);
        self.0.rpcs.enter(rpc, &req, Some(&req.secrets)).await?;
        self.require_group(rpc)?;
        let knobs = self.0.knobs();
        let group = self.0.backend().get_group(&req, knobs);
        let m = self.0.rpcs.leave(rpc)?;
        Ok(Response::new(pb::GetVolumeGroupSnapshotResponse {
            group_snapshot: group_reply(group?, m),
        }))
    }
}
