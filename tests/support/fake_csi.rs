//! A tiny scriptable CSI server on a Unix socket for the wire-layer tests:
//! per-method latency and failures, a not-ready count for Probe, and
//! deliberately broken replies the full mock driver does not produce.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use csi_snapshotter::csi::proto::v1::{
    self, controller_server::ControllerServer, group_controller_server::GroupControllerServer,
    identity_server::IdentityServer,
};
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Code, Request, Response, Status};

/// Behaviour knobs and call counters.
#[derive(Default)]
pub struct Script {
    pub name: String,
    pub probe_not_ready: u32,
    pub probe_error: Option<Code>,
    pub controller_caps: Vec<i32>,
    pub group_caps: Vec<i32>,
    pub latency: HashMap<&'static str, Duration>,
    pub fail: HashMap<&'static str, Code>,
    pub omit_snapshot: bool,
    pub omit_creation_time: bool,
    pub calls: HashMap<&'static str, u32>,
}

#[derive(Clone, Default)]
pub struct Fake(pub Arc<Mutex<Script>>);

impl Fake {
    pub fn new(name: &str) -> Self {
        let fake = Fake::default();
        {
            let mut s = fake.0.lock().unwrap();
            s.name = name.to_string();
            s.controller_caps = vec![5, 6];
            s.group_caps = vec![1];
        }
        fake
    }

    pub fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.0.lock().unwrap()
    }

    pub fn calls(&self, method: &'static str) -> u32 {
        self.script().calls.get(method).copied().unwrap_or(0)
    }

    async fn enter(&self, method: &'static str) -> Result<(), Status> {
        let (latency, fail) = {
            let mut s = self.script();
            *s.calls.entry(method).or_default() += 1;
            (s.latency.get(method).copied(), s.fail.get(method).copied())
        };
        if let Some(d) = latency {
            tokio::time::sleep(d).await;
        }
        match fail {
            Some(code) => Err(Status::new(code, format!("{method} failed on purpose"))),
            None => Ok(()),
        }
    }

    fn snapshot(&self, id: &str, source: &str) -> v1::Snapshot {
        let omit = self.script().omit_creation_time;
        v1::Snapshot {
            size_bytes: 1024,
            snapshot_id: id.to_string(),
            source_volume_id: source.to_string(),
            creation_time: (!omit).then_some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 7,
            }),
            ready_to_use: true,
            group_snapshot_id: String::new(),
        }
    }
}

#[tonic::async_trait]
impl v1::identity_server::Identity for Fake {
    async fn get_plugin_info(
        &self,
        _: Request<v1::GetPluginInfoRequest>,
    ) -> Result<Response<v1::GetPluginInfoResponse>, Status> {
        self.enter("GetPluginInfo").await?;
        Ok(Response::new(v1::GetPluginInfoResponse {
            name: self.script().name.clone(),
            vendor_version: "1.0.0".into(),
            manifest: Default::default(),
        }))
    }
    async fn get_plugin_capabilities(
        &self,
        _: Request<v1::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<v1::GetPluginCapabilitiesResponse>, Status> {
        Err(Status::unimplemented("not used"))
    }
    async fn probe(
        &self,
        _: Request<v1::ProbeRequest>,
    ) -> Result<Response<v1::ProbeResponse>, Status> {
        self.enter("Probe").await?;
        let mut s = self.script();
        if let Some(code) = s.probe_error {
            return Err(Status::new(code, "probe broken"));
        }
        let ready = if s.probe_not_ready > 0 {
            s.probe_not_ready -= 1;
            Some(false)
        } else {
            None
        };
        Ok(Response::new(v1::ProbeResponse { ready }))
    }
}

#[tonic::async_trait]
impl v1::controller_server::Controller for Fake {
    async fn create_volume(
        &self,
        _: Request<v1::CreateVolumeRequest>,
    ) -> Result<Response<v1::CreateVolumeResponse>, Status> {
        Err(Status::unimplemented("not used"))
    }
    async fn delete_volume(
        &self,
        _: Request<v1::DeleteVolumeRequest>,
    ) -> Result<Response<v1::DeleteVolumeResponse>, Status> {
        Err(Status::unimplemented("not used"))
    }
    async fn controller_get_capabilities(
        &self,
        _: Request<v1::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<v1::ControllerGetCapabilitiesResponse>, Status> {
        use v1::controller_service_capability::{Rpc, Type};
        self.enter("ControllerGetCapabilities").await?;
        let mut capabilities: Vec<v1::ControllerServiceCapability> = self
            .script()
            .controller_caps
            .iter()
            .map(|t| v1::ControllerServiceCapability {
                r#type: Some(Type::Rpc(Rpc { r#type: *t })),
            })
            .collect();
        // An entry without `rpc` must be ignored by the client.
        capabilities.push(v1::ControllerServiceCapability { r#type: None });
        Ok(Response::new(v1::ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }
    async fn create_snapshot(
        &self,
        req: Request<v1::CreateSnapshotRequest>,
    ) -> Result<Response<v1::CreateSnapshotResponse>, Status> {
        self.enter("CreateSnapshot").await?;
        let req = req.into_inner();
        let omit = self.script().omit_snapshot;
        let snapshot =
            (!omit).then(|| self.snapshot(&format!("snap-{}", req.name), &req.source_volume_id));
        Ok(Response::new(v1::CreateSnapshotResponse { snapshot }))
    }
    async fn delete_snapshot(
        &self,
        _: Request<v1::DeleteSnapshotRequest>,
    ) -> Result<Response<v1::DeleteSnapshotResponse>, Status> {
        self.enter("DeleteSnapshot").await?;
        Ok(Response::new(v1::DeleteSnapshotResponse {}))
    }
    async fn list_snapshots(
        &self,
        req: Request<v1::ListSnapshotsRequest>,
    ) -> Result<Response<v1::ListSnapshotsResponse>, Status> {
        self.enter("ListSnapshots").await?;
        let req = req.into_inner();
        let entries = if req.snapshot_id == "missing" {
            vec![]
        } else {
            vec![v1::list_snapshots_response::Entry {
                snapshot: Some(self.snapshot(&req.snapshot_id, "vol-1")),
            }]
        };
        Ok(Response::new(v1::ListSnapshotsResponse {
            entries,
            next_token: String::new(),
        }))
    }
    async fn get_snapshot(
        &self,
        req: Request<v1::GetSnapshotRequest>,
    ) -> Result<Response<v1::GetSnapshotResponse>, Status> {
        self.enter("GetSnapshot").await?;
        let id = req.into_inner().snapshot_id;
        Ok(Response::new(v1::GetSnapshotResponse {
            snapshot: Some(self.snapshot(&id, "vol-1")),
        }))
    }
}

#[tonic::async_trait]
impl v1::group_controller_server::GroupController for Fake {
    async fn group_controller_get_capabilities(
        &self,
        _: Request<v1::GroupControllerGetCapabilitiesRequest>,
    ) -> Result<Response<v1::GroupControllerGetCapabilitiesResponse>, Status> {
        use v1::group_controller_service_capability::{Rpc, Type};
        self.enter("GroupControllerGetCapabilities").await?;
        let capabilities = self
            .script()
            .group_caps
            .iter()
            .map(|t| v1::GroupControllerServiceCapability {
                r#type: Some(Type::Rpc(Rpc { r#type: *t })),
            })
            .collect();
        Ok(Response::new(v1::GroupControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }
    async fn create_volume_group_snapshot(
        &self,
        req: Request<v1::CreateVolumeGroupSnapshotRequest>,
    ) -> Result<Response<v1::CreateVolumeGroupSnapshotResponse>, Status> {
        self.enter("CreateVolumeGroupSnapshot").await?;
        let req = req.into_inner();
        if self.script().omit_snapshot {
            return Ok(Response::new(v1::CreateVolumeGroupSnapshotResponse {
                group_snapshot: None,
            }));
        }
        let snapshots = req
            .source_volume_ids
            .iter()
            .map(|v| self.snapshot(&format!("snap-{v}"), v))
            .collect();
        Ok(Response::new(v1::CreateVolumeGroupSnapshotResponse {
            group_snapshot: Some(v1::VolumeGroupSnapshot {
                group_snapshot_id: format!("group-{}", req.name),
                snapshots,
                creation_time: None,
                ready_to_use: true,
            }),
        }))
    }
    async fn delete_volume_group_snapshot(
        &self,
        _: Request<v1::DeleteVolumeGroupSnapshotRequest>,
    ) -> Result<Response<v1::DeleteVolumeGroupSnapshotResponse>, Status> {
        self.enter("DeleteVolumeGroupSnapshot").await?;
        Ok(Response::new(v1::DeleteVolumeGroupSnapshotResponse {}))
    }
    async fn get_volume_group_snapshot(
        &self,
        req: Request<v1::GetVolumeGroupSnapshotRequest>,
    ) -> Result<Response<v1::GetVolumeGroupSnapshotResponse>, Status> {
        self.enter("GetVolumeGroupSnapshot").await?;
        let req = req.into_inner();
        let snapshots = req
            .snapshot_ids
            .iter()
            .map(|id| self.snapshot(id, "vol-1"))
            .collect();
        Ok(Response::new(v1::GetVolumeGroupSnapshotResponse {
            group_snapshot: Some(v1::VolumeGroupSnapshot {
                group_snapshot_id: req.group_snapshot_id,
                snapshots,
                creation_time: None,
                ready_to_use: true,
            }),
        }))
    }
}

/// A running fake server.
pub struct Server {
    pub path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `fake` on a new socket at `path`.
    pub fn start(path: &Path, fake: Fake) -> Server {
        let listener = UnixListener::bind(path).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(IdentityServer::new(fake.clone()))
                .add_service(ControllerServer::new(fake.clone()))
                .add_service(GroupControllerServer::new(fake))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Server {
            path: path.to_path_buf(),
            stop: Some(tx),
            task,
        }
    }

    /// Stops serving and closes the connections.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}
