//! Shared harness of the `group_*` integration tests: the embedded API
//! server with schema checks (the upstream CRDs from `../shared/crds` when
//! present, its built-in schemas otherwise), the mock CSI driver on a Unix socket, and a group controller whose caches are
//! refreshed from the server before each sync, so most tests are a
//! deterministic sequence of syncs.
#![allow(dead_code)]

#[path = "../support/crds.rs"]
mod crds;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crds::crd_dir;
use csi_snapshotter::controller::common::Outcome;
use csi_snapshotter::controller::group::{ClassCache, ContentCache, GroupController};
use csi_snapshotter::csi::driver::{
    CreateGroupSnapshotArgs, CreateSnapshotArgs, DriverCapabilities, GroupSnapshotInfo, Secrets,
    SnapshotDriver, SnapshotInfo,
};
use csi_snapshotter::csi::error::CsiError;
use csi_snapshotter::csi::proto::v1 as pb;
use csi_snapshotter::k8s::event::EventRecorder;
use csi_snapshotter::k8s::keys;
use csi_snapshotter::k8s::types::{Lenient, VolumeGroupSnapshotClass, VolumeGroupSnapshotContent};
use csi_snapshotter::reconcile::ReconcileConfig;
use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions};
use csi_snapshotter::testing::mock_driver::{MockConfig, MockDriver};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, ObjectReference, Secret};
use kube::Api;
use kube::api::DynamicObject;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tonic::transport::Channel;

/// The driver name used throughout (the mock's default).
pub const DRIVER: &str = "mock.csi.k8s.io";
/// The VGS UID of the default content.
pub const UID: &str = "6f1e2d3c-0000-4000-8000-000000000001";
/// The VGSClass of the default content.
pub const CLASS: &str = "group-class";
/// How long the helpers wait for something asynchronous (events, watches).
pub const WAIT: Duration = Duration::from_secs(10);
/// Deadline of each CSI call of the test driver (`--timeout`).
const CSI_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a [`Harness`].
#[macro_export]
macro_rules! harness {
    () => {
        harness!(csi_snapshotter::reconcile::ReconcileConfig::new(
            group_support::DRIVER
        ))
    };
    ($cfg:expr) => {
        group_support::Harness::start($cfg).await
    };
}

/// The group half of [`SnapshotDriver`] over the mock's GroupController,
/// each call under a deadline as the sidecar's client does.
pub struct MockGroupDriver {
    caps: DriverCapabilities,
    channel: Channel,
}

fn status_err(s: tonic::Status) -> CsiError {
    CsiError::status(s.code(), s.message())
}

fn ts_ns(t: Option<prost_types::Timestamp>) -> Option<i64> {
    t.map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
}

fn snapshot_info(s: pb::Snapshot) -> SnapshotInfo {
    SnapshotInfo {
        snapshot_id: s.snapshot_id,
        source_volume_id: s.source_volume_id,
        size_bytes: s.size_bytes,
        creation_time_ns: ts_ns(s.creation_time),
        ready_to_use: s.ready_to_use,
        group_snapshot_id: s.group_snapshot_id,
    }
}

fn group_info(g: Option<pb::VolumeGroupSnapshot>) -> Result<GroupSnapshotInfo, CsiError> {
    let g = g.ok_or_else(|| CsiError::InvalidReply("no group_snapshot in the reply".into()))?;
    Ok(GroupSnapshotInfo {
        group_snapshot_id: g.group_snapshot_id,
        snapshots: g.snapshots.into_iter().map(snapshot_info).collect(),
        creation_time_ns: ts_ns(g.creation_time),
        ready_to_use: g.ready_to_use,
    })
}

async fn deadline<T>(
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CsiError> {
    match tokio::time::timeout(CSI_TIMEOUT, f).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(status_err(s)),
        Err(_) => Err(CsiError::status(
            tonic::Code::DeadlineExceeded,
            "context deadline exceeded",
        )),
    }
}

fn secret_map(s: &Secrets) -> std::collections::HashMap<String, String> {
    s.expose().clone().into_iter().collect()
}

impl SnapshotDriver for MockGroupDriver {
    fn driver_name(&self) -> &str {
        DRIVER
    }
    fn capabilities(&self) -> &DriverCapabilities {
        &self.caps
    }
    async fn create_snapshot(&self, _: CreateSnapshotArgs) -> Result<SnapshotInfo, CsiError> {
        Err(CsiError::status(tonic::Code::Unimplemented, "not used"))
    }
    async fn get_snapshot(&self, _: &str, _: &Secrets) -> Result<SnapshotInfo, CsiError> {
        Err(CsiError::status(tonic::Code::Unimplemented, "not used"))
    }
    async fn list_snapshot(&self, _: &str, _: &Secrets) -> Result<Option<SnapshotInfo>, CsiError> {
        Err(CsiError::status(tonic::Code::Unimplemented, "not used"))
    }
    async fn delete_snapshot(&self, _: &str, _: &Secrets) -> Result<(), CsiError> {
        Err(CsiError::status(tonic::Code::Unimplemented, "not used"))
    }
    async fn create_group_snapshot(
        &self,
        args: CreateGroupSnapshotArgs,
    ) -> Result<GroupSnapshotInfo, CsiError> {
        let mut id = pb::identity_client::IdentityClient::new(self.channel.clone());
        deadline(id.get_plugin_info(pb::GetPluginInfoRequest {})).await?;
        let mut c = pb::group_controller_client::GroupControllerClient::new(self.channel.clone());
        let reply = deadline(c.create_volume_group_snapshot(
            pb::CreateVolumeGroupSnapshotRequest {
                name: args.name,
                source_volume_ids: args.source_volume_ids,
                secrets: secret_map(&args.secrets),
                parameters: args.parameters.into_iter().collect(),
            },
        ))
        .await?;
        group_info(reply.group_snapshot)
    }
    async fn get_group_snapshot(
        &self,
        group_snapshot_id: &str,
        snapshot_ids: &[String],
        secrets: &Secrets,
    ) -> Result<GroupSnapshotInfo, CsiError> {
        let mut c = pb::group_controller_client::GroupControllerClient::new(self.channel.clone());
        let reply = deadline(
            c.get_volume_group_snapshot(pb::GetVolumeGroupSnapshotRequest {
                group_snapshot_id: group_snapshot_id.into(),
                snapshot_ids: snapshot_ids.to_vec(),
                secrets: secret_map(secrets),
            }),
        )
        .await?;
        group_info(reply.group_snapshot)
    }
    async fn delete_group_snapshot(
        &self,
        group_snapshot_id: &str,
        snapshot_ids: &[String],
        secrets: &Secrets,
    ) -> Result<(), CsiError> {
        let mut c = pb::group_controller_client::GroupControllerClient::new(self.channel.clone());
        deadline(
            c.delete_volume_group_snapshot(pb::DeleteVolumeGroupSnapshotRequest {
                group_snapshot_id: group_snapshot_id.into(),
                snapshot_ids: snapshot_ids.to_vec(),
                secrets: secret_map(secrets),
            }),
        )
        .await?;
        Ok(())
    }
}

/// API server + mock driver + controller with hand-fed caches.
pub struct Harness {
    pub server: ApiServer,
    pub client: kube::Client,
    pub mock: MockDriver,
    pub driver: Arc<MockGroupDriver>,
    pub contents: ContentCache,
    pub classes: ClassCache,
    pub events: EventRecorder,
    pub ctrl: Arc<GroupController<MockGroupDriver>>,
    pub api: Api<VolumeGroupSnapshotContent>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Starts everything (the server checks against the upstream CRDs when
    /// they are beside the checkout, its built-in schemas otherwise).
    pub async fn start(cfg: ReconcileConfig) -> Harness {
        let server = ApiServer::start(ApiServerOptions {
            crd_schemas: crd_dir(),
            ..ApiServerOptions::default()
        })
        .await
        .expect("api server starts");
        let client = server.client().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mock = MockDriver::start(dir.path().join("csi.sock"), MockConfig::default())
            .await
            .expect("mock driver starts");
        let channel = mock.channel().await.expect("mock channel");
        let driver = Arc::new(MockGroupDriver {
            caps: DriverCapabilities {
                create_delete_snapshot: true,
                list_snapshots: true,
                get_snapshot: false,
                group_snapshots: true,
            },
            channel,
        });
        let (events, _) = EventRecorder::start(client.clone(), format!("csi-snapshotter {DRIVER}"));
        let contents = ContentCache::new();
        let classes = ClassCache::new();
        let ctrl = Arc::new(GroupController::new(
            driver.clone(),
            client.clone(),
            client.clone(),
            contents.clone(),
            classes.clone(),
            events.clone(),
            cfg,
        ));
        Harness {
            api: Api::all(client.clone()),
            server,
            client,
            mock,
            driver,
            contents,
            classes,
            events,
            ctrl,
            _dir: dir,
        }
    }

    /// Replaces the caches' content with the server's objects.
    pub async fn refresh(&self) {
        let lp = ListParams::default();
        let list = self.api.list(&lp).await.expect("list VGSCs");
        for name in self.contents.list().iter().filter_map(o_name) {
            if !list
                .items
                .iter()
                .any(|c| c.metadata.name.as_deref() == Some(&name))
            {
                self.contents.remove(&name);
            }
        }
        for c in list.items {
            let name = c.metadata.name.clone().unwrap();
            self.contents.insert(name, Arc::new(Lenient::Ok(c)));
        }
        let classes: Api<VolumeGroupSnapshotClass> = Api::all(self.client.clone());
        for c in classes.list(&lp).await.expect("list classes").items {
            let name = c.metadata.name.clone().unwrap();
            self.classes.insert(name, Arc::new(Lenient::Ok(c)));
        }
    }

    /// Refreshes the caches from the server, then syncs `name` once.
    pub async fn sync(&self, name: &str) -> Outcome {
        self.refresh().await;
        self.ctrl.sync(name).await
    }

    /// Syncs until the outcome is `Forget` (at most `max` times).
    pub async fn sync_until_forget(&self, name: &str, max: usize) -> usize {
        for i in 1..=max {
            if self.sync(name).await == Outcome::Forget {
                return i;
            }
        }
        panic!("{name} still requeued after {max} syncs");
    }

    /// The VGSC as stored.
    pub async fn get(&self, name: &str) -> VolumeGroupSnapshotContent {
        self.api.get(name).await.expect("get VGSC")
    }

    /// The VGSC as raw JSON from the server's store.
    pub fn raw(&self, name: &str) -> Value {
        self.server
            .object("volumegroupsnapshotcontents", "", name)
            .expect("VGSC stored")
    }

    /// Creates a VGSClass for the mock driver with `parameters`.
    pub async fn create_class(&self, name: &str, parameters: Value) {
        let class = json!({
            "apiVersion": "groupsnapshot.storage.k8s.io/v1",
            "kind": "VolumeGroupSnapshotClass",
            "metadata": {"name": name},
            "driver": DRIVER,
            "deletionPolicy": "Delete",
            "parameters": parameters,
        });
        let api = dyn_api(&self.client, "volumegroupsnapshotclasses");
        create_raw(&api, &class).await.expect("create class");
    }

    /// Creates a VGSC from JSON (schema-checked by the server).
    pub async fn create(&self, obj: Value) -> VolumeGroupSnapshotContent {
        let api = dyn_api(&self.client, "volumegroupsnapshotcontents");
        let created = create_raw(&api, &obj).await.expect("create VGSC");
        serde_json::from_value(created).expect("decode VGSC")
    }

    /// Writes a status (as the snapshot-controller or an earlier sidecar
    /// would have) through the status subresource.
    pub async fn set_status(&self, name: &str, status: Value) {
        self.api
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .expect("set status");
    }

    /// Merges `annotations` into the object's annotations.
    pub async fn annotate(&self, name: &str, annotations: Value) {
        self.api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
            )
            .await
            .expect("annotate");
    }

    /// What the snapshot-controller does when the VGS is deleted: mark the
    /// content being-deleted, then delete it (the finalizer keeps it).
    pub async fn request_delete(&self, name: &str) {
        self.annotate(name, json!({keys::ANN_VGS_BEING_DELETED: "yes"}))
            .await;
        self.api
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete VGSC");
    }

    /// Whether the VGSC is gone from the server.
    pub async fn is_gone(&self, name: &str) -> bool {
        self.api.get_opt(name).await.expect("get").is_none()
    }

    /// Creates a secret in `namespace`.
    pub async fn create_secret(&self, namespace: &str, name: &str, data: &[(&str, &str)]) {
        let data: BTreeMap<String, ByteString> = data
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect();
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        };
        Api::<Secret>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create secret");
    }

    /// All events recorded so far about `name`, once the recorder has
    /// written everything emitted before this call (a marker event is
    /// recorded last and waited for; the writer keeps order).
    pub async fn events_for(&self, name: &str) -> Vec<Event> {
        let marker = format!("flush-{}", uuid_like());
        let obj = ObjectReference {
            kind: Some("ConfigMap".into()),
            api_version: Some("v1".into()),
            namespace: Some("default".into()),
            name: Some(marker.clone()),
            ..Default::default()
        };
        self.events.normal(&obj, "Flush", "flush");
        let api: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let all = api.list(&ListParams::default()).await.expect("list events");
            let flushed = all
                .items
                .iter()
                .any(|e| e.involved_object.name.as_deref() == Some(&marker));
            if flushed {
                return all
                    .items
                    .into_iter()
                    .filter(|e| e.involved_object.name.as_deref() == Some(name))
                    .collect();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "events were not written"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `(reason, message)` of the events about `name`.
    pub async fn event_reasons(&self, name: &str) -> Vec<(String, String)> {
        self.events_for(name)
            .await
            .into_iter()
            .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect()
    }
}

fn o_name(o: &Arc<Lenient<VolumeGroupSnapshotContent>>) -> Option<String> {
    use kube::Resource;
    o.meta().name.clone()
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates an object through an untyped API (so tests can send what the
/// typed structs cannot express); returns the server's reply.
pub async fn create_raw(api: &Api<DynamicObject>, obj: &Value) -> kube::Result<Value> {
    let obj: DynamicObject = serde_json::from_value(obj.clone()).expect("object JSON");
    let created = api.create(&PostParams::default(), &obj).await?;
    Ok(serde_json::to_value(created).expect("encode"))
}

/// An untyped API for a group-snapshot plural (cluster-scoped, v1).
pub fn dyn_api(client: &kube::Client, plural: &str) -> Api<DynamicObject> {
    let kind = match plural {
        "volumegroupsnapshotclasses" => "VolumeGroupSnapshotClass",
        _ => "VolumeGroupSnapshotContent",
    };
    let gvk = kube::api::GroupVersionKind::gvk("groupsnapshot.storage.k8s.io", "v1", kind);
    let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
    Api::all_with(client.clone(), &ar)
}

/// A dynamic VGSC as the snapshot-controller creates it: finalizer, class,
/// Delete policy, bound to VGS `default/vgs-1` with UID [`UID`].
pub fn dynamic_content(name: &str, volumes: &[&str]) -> Value {
    json!({
        "apiVersion": "groupsnapshot.storage.k8s.io/v1",
        "kind": "VolumeGroupSnapshotContent",
        "metadata": {"name": name, "finalizers": [keys::FINALIZER_VGSC]},
        "spec": {
            "deletionPolicy": "Delete",
            "driver": DRIVER,
            "volumeGroupSnapshotClassName": CLASS,
            "source": {"volumeHandles": volumes},
            "volumeGroupSnapshotRef": {
                "apiVersion": "groupsnapshot.storage.k8s.io/v1",
                "kind": "VolumeGroupSnapshot",
                "name": "vgs-1",
                "namespace": "default",
                "uid": UID,
            },
        },
    })
}

/// A pre-provisioned VGSC naming an existing backend group.
pub fn preprovisioned_content(name: &str, group: &str, members: &[String]) -> Value {
    json!({
        "apiVersion": "groupsnapshot.storage.k8s.io/v1",
        "kind": "VolumeGroupSnapshotContent",
        "metadata": {"name": name, "finalizers": [keys::FINALIZER_VGSC]},
        "spec": {
            "deletionPolicy": "Delete",
            "driver": DRIVER,
            "source": {"groupSnapshotHandles": {
                "volumeGroupSnapshotHandle": group,
                "volumeSnapshotHandles": members,
            }},
            "volumeGroupSnapshotRef": {
                "apiVersion": "groupsnapshot.storage.k8s.io/v1",
                "kind": "VolumeGroupSnapshot",
                "name": "vgs-pre",
                "namespace": "default",
            },
        },
    })
}

/// Sets a key inside a JSON object by a dotted path (creating objects).
pub fn set(obj: &mut Value, path: &str, value: Value) {
    let mut cur = obj;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        cur = cur
            .as_object_mut()
            .expect("object")
            .entry(p.to_string())
            .or_insert_with(|| json!({}));
    }
    cur.as_object_mut()
        .expect("object")
        .insert(parts[parts.len() - 1].to_string(), value);
}
