//! Shared harness of the `content_*` integration tests: the embedded API
//! server (with the upstream CRD schemas when `../shared/crds` exists), a
//! scriptable in-memory driver, and a content controller whose caches are
//! refreshed from the server before each sync, so every test is a
//! deterministic sequence of syncs.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use csi_snapshotter::controller::common::Outcome;
use csi_snapshotter::controller::content::ContentController;
use csi_snapshotter::csi::driver::{
    CreateGroupSnapshotArgs, CreateSnapshotArgs, DriverCapabilities, GroupSnapshotInfo, Secrets,
    SnapshotDriver, SnapshotInfo,
};
use csi_snapshotter::csi::error::CsiError;
use csi_snapshotter::k8s::event::EventRecorder;
use csi_snapshotter::k8s::types::{
    Lenient, VolumeSnapshotClass, VolumeSnapshotContent, VolumeSnapshotContentStatus,
};
use csi_snapshotter::k8s::watch::Cache;
use csi_snapshotter::reconcile::ReconcileConfig;
use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions};
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The driver name used throughout.
pub const DRIVER: &str = "hostpath.csi.k8s.io";
/// The VS UID of the default content.
pub const UID: &str = "6f1e2d3c-0000-4000-8000-000000000001";

#[path = "../support/crds.rs"]
mod crds;
pub use crds::crd_dir;

#[derive(Default)]
struct FakeState {
    snapshots: BTreeMap<String, SnapshotInfo>,
    calls: HashMap<&'static str, u64>,
    failures: HashMap<&'static str, VecDeque<CsiError>>,
    last_secrets: HashMap<&'static str, Secrets>,
    last_create: Option<CreateSnapshotArgs>,
    ready_after: u32,
    readiness_checks: HashMap<String, u32>,
}

/// An in-memory driver: CreateSnapshot is idempotent by name, a snapshot
/// turns ready after `ready_after` further creates or polls, failures are
/// injected per method, and creates can be held at a gate.
pub struct FakeDriver {
    caps: DriverCapabilities,
    state: Mutex<FakeState>,
    gate: Mutex<Option<Arc<Gate>>>,
}

/// Holds a CreateSnapshot until opened.
#[derive(Default)]
pub struct Gate {
    entered: Notify,
    open: Notify,
}

impl Gate {
    /// Waits until a create is held at the gate.
    pub async fn entered(&self) {
        self.entered.notified().await;
    }
    /// Lets the held create go on.
    pub fn open(&self) {
        self.open.notify_one();
    }
}

impl FakeDriver {
    /// A driver with CREATE_DELETE_SNAPSHOT and LIST_SNAPSHOTS.
    pub fn new() -> Self {
        Self::with_caps(DriverCapabilities {
            create_delete_snapshot: true,
            list_snapshots: true,
            get_snapshot: false,
            group_snapshots: false,
        })
    }

    /// A driver with the given capabilities.
    pub fn with_caps(caps: DriverCapabilities) -> Self {
        FakeDriver {
            caps,
            state: Mutex::new(FakeState::default()),
            gate: Mutex::new(None),
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    /// Number of calls of `method` ("CreateSnapshot", …).
    pub fn calls(&self, method: &str) -> u64 {
        self.st().calls.get(method).copied().unwrap_or(0)
    }

    /// Makes the next `n` calls of `method` fail with `err`.
    pub fn fail_next(&self, method: &'static str, err: CsiError, n: usize) {
        let mut st = self.st();
        let q = st.failures.entry(method).or_default();
        for _ in 0..n {
            q.push_back(err.clone());
        }
    }

    /// Snapshots become ready after this many further creates/polls.
    pub fn set_ready_after(&self, n: u32) {
        self.st().ready_after = n;
    }

    /// The backend's snapshots by ID.
    pub fn snapshots(&self) -> BTreeMap<String, SnapshotInfo> {
        self.st().snapshots.clone()
    }

    /// Adds a backend snapshot (for pre-provisioned contents).
    pub fn add_snapshot(&self, info: SnapshotInfo) {
        self.st().snapshots.insert(info.snapshot_id.clone(), info);
    }

    /// Secrets of the last call of `method`.
    pub fn last_secrets(&self, method: &str) -> Option<Secrets> {
        self.st().last_secrets.get(method).cloned()
    }

    /// Arguments of the last CreateSnapshot.
    pub fn last_create(&self) -> Option<CreateSnapshotArgs> {
        self.st().last_create.clone()
    }

    /// Holds every following create at the returned gate.
    pub fn hold_creates(&self) -> Arc<Gate> {
        let g = Arc::new(Gate::default());
        *self.gate.lock().unwrap() = Some(g.clone());
        g
    }

    fn begin(&self, method: &'static str, secrets: &Secrets) -> Result<(), CsiError> {
        let mut st = self.st();
        *st.calls.entry(method).or_default() += 1;
        st.last_secrets.insert(method, secrets.clone());
        match st.failures.get_mut(method).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn check_ready(st: &mut FakeState, id: &str) -> Option<SnapshotInfo> {
        let ready_after = st.ready_after;
        let n = st.readiness_checks.entry(id.to_string()).or_default();
        *n += 1;
        let ready = *n > ready_after;
        let snap = st.snapshots.get_mut(id)?;
        if ready {
            snap.ready_to_use = true;
        }
        Some(snap.clone())
    }
}

impl SnapshotDriver for FakeDriver {
    fn driver_name(&self) -> &str {
        DRIVER
    }

    fn capabilities(&self) -> &DriverCapabilities {
        &self.caps
    }

    async fn create_snapshot(&self, args: CreateSnapshotArgs) -> Result<SnapshotInfo, CsiError> {
        self.begin("CreateSnapshot", &args.secrets)?;
        self.st().last_create = Some(args.clone());
        let gate = self.gate.lock().unwrap().take();
        if let Some(g) = gate {
            g.entered.notify_one();
            g.open.notified().await;
        }
        let id = format!("snap-{}", args.name);
        let mut st = self.st();
        st.snapshots.entry(id.clone()).or_insert(SnapshotInfo {
            snapshot_id: id.clone(),
            source_volume_id: args.source_volume_id.clone(),
            size_bytes: 1024,
            creation_time_ns: Some(1_700_000_000_000_000_001),
            ready_to_use: false,
            group_snapshot_id: String::new(),
        });
        Ok(Self::check_ready(&mut st, &id).expect("just inserted"))
    }

    async fn get_snapshot(&self, id: &str, secrets: &Secrets) -> Result<SnapshotInfo, CsiError> {
        self.begin("GetSnapshot", secrets)?;
        let mut st = self.st();
        Self::check_ready(&mut st, id)
            .ok_or_else(|| CsiError::status(tonic::Code::NotFound, "no such snapshot"))
    }

    async fn list_snapshot(
        &self,
        id: &str,
        secrets: &Secrets,
    ) -> Result<Option<SnapshotInfo>, CsiError> {
        self.begin("ListSnapshots", secrets)?;
        let mut st = self.st();
        Ok(Self::check_ready(&mut st, id))
    }

    async fn delete_snapshot(&self, id: &str, secrets: &Secrets) -> Result<(), CsiError> {
        self.begin("DeleteSnapshot", secrets)?;
        self.st().snapshots.remove(id);
        Ok(())
    }

    async fn create_group_snapshot(
        &self,
        _args: CreateGroupSnapshotArgs,
    ) -> Result<GroupSnapshotInfo, CsiError> {
        Err(CsiError::status(tonic::Code::Unimplemented, "no groups"))
    }

    async fn get_group_snapshot(
        &self,
        _id: &str,
        _ids: &[String],
        _secrets: &Secrets,
    ) -> Result<GroupSnapshotInfo, CsiError> {
        Err(CsiError::status(tonic::Code::Unimplemented, "no groups"))
    }

    async fn delete_group_snapshot(
        &self,
        _id: &str,
        _ids: &[String],
        _secrets: &Secrets,
    ) -> Result<(), CsiError> {
        Err(CsiError::status(tonic::Code::Unimplemented, "no groups"))
    }
}

/// One test's world.
pub struct Harness {
    pub server: ApiServer,
    pub client: kube::Client,
    pub api: Api<VolumeSnapshotContent>,
    pub driver: Arc<FakeDriver>,
    pub contents: Cache<Lenient<VolumeSnapshotContent>>,
    pub classes: Cache<Lenient<VolumeSnapshotClass>>,
    pub ctrl: Option<Arc<ContentController<FakeDriver>>>,
    events_writer: Option<JoinHandle<()>>,
}

impl Harness {
    /// A server, the default driver and a controller with default flags.
    pub async fn new() -> Harness {
        Self::with(FakeDriver::new(), ReconcileConfig::new(DRIVER)).await
    }

    /// A server with the given driver and flags.
    pub async fn with(driver: FakeDriver, config: ReconcileConfig) -> Harness {
        let server = ApiServer::start(ApiServerOptions {
            crd_schemas: crd_dir(),
            ..Default::default()
        })
        .await
        .expect("embedded API server starts");
        let client = server.client().await;
        let driver = Arc::new(driver);
        let contents = Cache::new();
        let classes = Cache::new();
        let (events, writer) =
            EventRecorder::start(client.clone(), format!("csi-snapshotter {DRIVER}"));
        let ctrl = ContentController::new(
            driver.clone(),
            client.clone(),
            client.clone(),
            contents.clone(),
            classes.clone(),
            events,
            config,
        );
        Harness {
            api: Api::all(client.clone()),
            server,
            client,
            driver,
            contents,
            classes,
            ctrl: Some(Arc::new(ctrl)),
            events_writer: Some(writer),
        }
    }

    /// Creates a VSC (and its status, if any) on the server.
    pub async fn create(&self, obj: Value) -> VolumeSnapshotContent {
        let mut obj: VolumeSnapshotContent = serde_json::from_value(obj).expect("valid VSC");
        let status = obj.status.take();
        let name = obj.name().to_string();
        let created = self
            .api
            .create(&PostParams::default(), &obj)
            .await
            .expect("create VSC");
        match status {
            Some(s) => self.set_status(&name, s).await,
            None => created,
        }
    }

    /// Replaces the status with a JSON merge patch.
    pub async fn set_status(
        &self,
        name: &str,
        s: VolumeSnapshotContentStatus,
    ) -> VolumeSnapshotContent {
        self.api
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": s })),
            )
            .await
            .expect("status patch")
    }

    /// Merge-patches the main resource.
    pub async fn merge(&self, name: &str, patch: Value) -> VolumeSnapshotContent {
        self.api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("merge patch")
    }

    /// Puts the being-deleted annotation on and deletes the object, as the
    /// snapshot-controller does when the VolumeSnapshot goes.
    pub async fn delete_as_controller(&self, name: &str) {
        self.merge(
            name,
            json!({"metadata": {"annotations": {csi_snapshotter::k8s::keys::ANN_VS_BEING_DELETED: "yes"}}}),
        )
        .await;
        self.api
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete VSC");
    }

    /// Creates a VolumeSnapshotClass.
    pub async fn create_class(&self, name: &str, params: Value) {
        let class: VolumeSnapshotClass = serde_json::from_value(json!({
            "metadata": {"name": name},
            "driver": DRIVER,
            "deletionPolicy": "Delete",
            "parameters": params,
        }))
        .unwrap();
        let api: Api<VolumeSnapshotClass> = Api::all(self.client.clone());
        api.create(&PostParams::default(), &class)
            .await
            .expect("create class");
    }

    /// Creates a secret in `ns`.
    pub async fn create_secret(&self, ns: &str, name: &str, data: &[(&str, &str)]) {
        let string_data: BTreeMap<String, String> = data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let secret = Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            data: Some(
                string_data
                    .into_iter()
                    .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Default::default()
        };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        api.create(&PostParams::default(), &secret)
            .await
            .expect("create secret");
    }

    /// The live object, if it exists.
    pub async fn get(&self, name: &str) -> Option<VolumeSnapshotContent> {
        self.api.get_opt(name).await.expect("GET VSC")
    }

    /// Loads every VSC and class from the server into the caches (what the
    /// informers would have delivered by now).
    pub async fn refresh(&self) {
        for k in self.contents.list() {
            if let Some(n) = k.meta().name.clone() {
                self.contents.remove(&n);
            }
        }
        for obj in self
            .api
            .list(&ListParams::default())
            .await
            .expect("list VSC")
        {
            let name = obj.name().to_string();
            self.contents.insert(name, Arc::new(Lenient::Ok(obj)));
        }
        let api: Api<VolumeSnapshotClass> = Api::all(self.client.clone());
        for obj in api
            .list(&ListParams::default())
            .await
            .expect("list classes")
        {
            let name = obj.metadata.name.clone().unwrap_or_default();
            self.classes.insert(name, Arc::new(Lenient::Ok(obj)));
        }
    }

    /// Refreshes the caches and runs one sync of `name`.
    pub async fn sync(&self, name: &str) -> Outcome {
        self.refresh().await;
        self.ctrl().sync(name).await
    }

    /// The controller.
    pub fn ctrl(&self) -> &Arc<ContentController<FakeDriver>> {
        self.ctrl.as_ref().expect("controller still running")
    }

    /// Stops the controller, flushes the event writer and returns the
    /// Warning events about `name` as (reason, message).
    pub async fn events_for(&mut self, name: &str) -> Vec<(String, String)> {
        self.ctrl = None;
        if let Some(w) = self.events_writer.take() {
            tokio::time::timeout(Duration::from_secs(20), w)
                .await
                .expect("event writer drains")
                .expect("event writer ends cleanly");
        }
        let api: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let mut out: Vec<(String, String)> = api
            .list(&ListParams::default())
            .await
            .expect("list events")
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect();
        out.sort();
        out
    }
}

/// A dynamic VSC as the snapshot-controller creates it.
pub fn dynamic(name: &str) -> Value {
    json!({
        "metadata": {"name": name, "finalizers": [csi_snapshotter::k8s::keys::FINALIZER_VSC]},
        "spec": {
            "deletionPolicy": "Delete",
            "driver": DRIVER,
            "source": {"volumeHandle": "vol-1"},
            "volumeSnapshotClassName": "default-class",
            "volumeSnapshotRef": {"name": "vs-1", "namespace": "default", "uid": UID,
                                  "kind": "VolumeSnapshot",
                                  "apiVersion": "snapshot.storage.k8s.io/v1"}
        }
    })
}

/// A pre-provisioned VSC for backend handle `handle`.
pub fn preprovisioned(name: &str, handle: &str) -> Value {
    json!({
        "metadata": {"name": name, "finalizers": [csi_snapshotter::k8s::keys::FINALIZER_VSC]},
        "spec": {
            "deletionPolicy": "Delete",
            "driver": DRIVER,
            "source": {"snapshotHandle": handle},
            "volumeSnapshotRef": {"name": "vs-pre", "namespace": "default"}
        }
    })
}
