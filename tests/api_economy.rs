//! API and CSI economy of the production controllers (issue 9 targets), as
//! request counts at the embedded API server and call counts at the mock
//! driver: the content and group controllers run with their informers,
//! queues and workers, the objects are created and deleted as the
//! snapshot-controller would, and the counts are taken once the controller
//! has seen every watch event its own writes caused (so a sync triggered by
//! those events would show up as an extra request or CSI call).
//!
//! Per dynamic snapshot that is ready on the first reply: 3 writes (the
//! being-created annotation, the status, the annotation removal), no GET and
//! one CreateSnapshot. Per delete: 1 write (the finalizer removal), no GET
//! and one DeleteSnapshot. The same shape for one group.
//!
//! The test's own requests are made so that they can be told apart: objects
//! are read straight from the server's store (no HTTP), and its creates and
//! deletes are counted and subtracted.

mod content_support;

use std::sync::Arc;
use std::time::Duration;

use content_support::{Harness, crd_dir, dynamic, preprovisioned};
use csi_snapshotter::controller::common::Outcome;
use csi_snapshotter::controller::content::ContentController;
use csi_snapshotter::controller::group::GroupController;
use csi_snapshotter::controller::pipeline::ControllerOptions;
use csi_snapshotter::controller::queue::{Backoff, WorkQueue};
use csi_snapshotter::csi::client::{ConnectOptions, CsiClient, CsiConnection};
use csi_snapshotter::csi::connection::LossHandler;
use csi_snapshotter::csi::driver::SnapshotInfo;
use csi_snapshotter::k8s::event::EventRecorder;
use csi_snapshotter::k8s::keys;
use csi_snapshotter::k8s::types::{
    Lenient, VolumeGroupSnapshotClass, VolumeGroupSnapshotContent, VolumeSnapshotClass,
    VolumeSnapshotContent,
};
use csi_snapshotter::k8s::watch::Cache;
use csi_snapshotter::metrics::{CsiOperationMetrics, Registry};
use csi_snapshotter::reconcile::ReconcileConfig;
use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions};
use csi_snapshotter::testing::groups::{GroupRequest, is_ready_with_members};
use csi_snapshotter::testing::mock_driver::{MockConfig, MockDriver};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const DRIVER: &str = "mock.csi.k8s.io";
/// The content of the single-object tests.
const NAME: &str = "snapcontent-1";
/// Contents created and deleted in the content test.
const N: u64 = 20;
const VSC: &str = "volumesnapshotcontents";
const VSC_STATUS: &str = "volumesnapshotcontents/status";
const VGSC: &str = "volumegroupsnapshotcontents";
const VGSC_STATUS: &str = "volumegroupsnapshotcontents/status";
/// Verbs counted per phase.
const VERBS: [&str; 7] = ["GET", "LIST", "WATCH", "POST", "PUT", "PATCH", "DELETE"];
/// RPCs the mock serves; every one not expected in a phase must stay at 0.
const RPCS: [&str; 14] = [
    "GetPluginInfo",
    "GetPluginCapabilities",
    "Probe",
    "CreateVolume",
    "DeleteVolume",
    "ControllerGetCapabilities",
    "CreateSnapshot",
    "DeleteSnapshot",
    "ListSnapshots",
    "GetSnapshot",
    "GroupControllerGetCapabilities",
    "CreateVolumeGroupSnapshot",
    "DeleteVolumeGroupSnapshot",
    "GetVolumeGroupSnapshot",
];

struct World {
    server: ApiServer,
    client: kube::Client,
    mock: MockDriver,
    driver: Arc<CsiClient>,
    events: EventRecorder,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let server = ApiServer::start(ApiServerOptions {
        crd_schemas: crd_dir(),
        ..Default::default()
    })
    .await
    .expect("embedded API server starts");
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let mock = MockDriver::start(&socket, MockConfig::default())
        .await
        .expect("mock driver");
    let opts = ConnectOptions::new(socket.to_str().unwrap(), Duration::from_secs(10))
        .unwrap()
        .with_loss_handler(LossHandler::new(|| {}))
        .with_metrics(CsiOperationMetrics::register(&Registry::new()).expect("fresh registry"));
    let conn = CsiConnection::connect(opts).await.expect("connect");
    let name = conn.plugin_info().await.expect("plugin info").name;
    let caps = conn.capabilities().await.expect("capabilities");
    let driver = Arc::new(conn.into_driver(name.clone(), caps));
    let (events, _writer) = EventRecorder::start(client.clone(), format!("csi-snapshotter {name}"));
    World {
        server,
        client,
        mock,
        driver,
        events,
        _dir: dir,
    }
}

/// Request counts by verb for one resource (`plural` or `plural/status`),
/// and call counts by RPC.
#[derive(Debug, Clone, PartialEq)]
struct Counts {
    api: Vec<(String, u64)>,
    csi: Vec<(&'static str, u64)>,
}

impl World {
    fn counts(&self, resources: &[&str]) -> Counts {
        let mut api = Vec::new();
        for r in resources {
            for v in VERBS {
                api.push((format!("{v} {r}"), self.server.request_count(v, r)));
            }
        }
        for r in ["secrets", "events"] {
            api.push((format!("* {r}"), self.server.request_count("*", r)));
        }
        let csi = RPCS.iter().map(|m| (*m, self.mock.calls(m))).collect();
        Counts { api, csi }
    }

    fn object<K: serde::de::DeserializeOwned>(&self, resource: &str, name: &str) -> Option<K> {
        self.server
            .object(resource, "", name)
            .map(|v| serde_json::from_value(v).expect("stored object decodes"))
    }
}

/// What changed between two snapshots of the counts, without zeros.
fn delta(before: &Counts, after: &Counts) -> Vec<(String, u64)> {
    let api = before
        .api
        .iter()
        .zip(&after.api)
        .map(|((k, b), (_, a))| (k.clone(), a - b));
    let csi = before
        .csi
        .iter()
        .zip(&after.csi)
        .map(|((k, b), (_, a))| (format!("csi {k}"), a - b));
    api.chain(csi).filter(|(_, n)| *n > 0).collect()
}

fn expect(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

/// Polls `check` until it holds; fails after 60 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Waits until the controller's cache holds exactly the server's objects,
/// at the server's versions, and its queue has nothing left to do: every
/// watch event the writes caused has been seen and handled.
async fn settle<K>(server: &ApiServer, resource: &str, cache: &Cache<Lenient<K>>, queue: &WorkQueue)
where
    K: Resource + serde::Serialize + serde::de::DeserializeOwned,
    Lenient<K>: serde::Serialize + serde::de::DeserializeOwned,
{
    eventually("the controller's cache to catch up", || {
        let live = server.objects(resource);
        live.len() == cache.len()
            && live.iter().all(|o| {
                let name = o["metadata"]["name"].as_str().unwrap_or_default();
                let rv = o["metadata"]["resourceVersion"].as_str();
                cache
                    .get(name)
                    .and_then(|c| c.as_ok().and_then(|c| c.meta().resource_version.clone()))
                    .as_deref()
                    == rv
            })
    })
    .await;
    eventually("the queue to drain", || {
        queue.is_empty() && queue.delayed_len() == 0
    })
    .await;
    queue.wait_idle().await;
}

fn backoff() -> Backoff {
    Backoff {
        start: Duration::from_millis(20),
        max: Duration::from_millis(200),
    }
}

fn vsc(i: u64) -> VolumeSnapshotContent {
    serde_json::from_value(json!({
        "metadata": {"name": format!("eco-{i}"), "finalizers": [keys::FINALIZER_VSC]},
        "spec": {
            "deletionPolicy": "Delete",
            "driver": DRIVER,
            "source": {"volumeHandle": format!("vol-{i}")},
            "volumeSnapshotClassName": "eco-class",
            "volumeSnapshotRef": {"name": format!("vs-{i}"), "namespace": "default",
                                  "uid": format!("6f1e2d3c-0000-4000-8000-{i:012}"),
                                  "kind": "VolumeSnapshot",
                                  "apiVersion": "snapshot.storage.k8s.io/v1"}
        }
    }))
    .expect("valid VSC")
}

/// Being-deleted annotation, then DELETE: what the snapshot-controller does
/// when the VolumeSnapshot goes (one PATCH and one DELETE each).
async fn delete_as_controller<K>(client: &kube::Client, name: &str, annotation: &str)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let mark = json!({"metadata": {"annotations": {annotation: keys::ANN_VALUE_YES}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(mark))
        .await
        .expect("being-deleted annotation");
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete");
}

fn per_item(d: &[(String, u64)], n: u64) -> String {
    d.iter()
        .map(|(k, v)| format!("{k}={:.2}", *v as f64 / n as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test]
async fn content_create_and_delete_make_three_and_one_writes_and_one_csi_call_each() {
    let w = world().await;
    let class: VolumeSnapshotClass = serde_json::from_value(json!({
        "metadata": {"name": "eco-class"}, "driver": DRIVER, "deletionPolicy": "Delete"
    }))
    .unwrap();
    Api::<VolumeSnapshotClass>::all(w.client.clone())
        .create(&PostParams::default(), &class)
        .await
        .expect("class");
    let running = ContentController::start(
        w.driver.clone(),
        w.client.clone(),
        w.client.clone(),
        w.events.clone(),
        ControllerOptions {
            config: ReconcileConfig::new(DRIVER),
            workers: 4,
            backoff: backoff(),
            watch: Default::default(),
        },
        None,
        &CancellationToken::new(),
    )
    .await
    .expect("caches sync");
    let cache = running.controller.contents().clone();
    let resources = [VSC, VSC_STATUS];

    // Create N contents as the snapshot-controller would.
    let before = w.counts(&resources);
    let api: Api<VolumeSnapshotContent> = Api::all(w.client.clone());
    for i in 0..N {
        api.create(&PostParams::default(), &vsc(i))
            .await
            .expect("create VSC");
    }
    eventually("all contents ready, annotation removed", || {
        (0..N).all(|i| {
            w.object::<VolumeSnapshotContent>(VSC, &format!("eco-{i}"))
                .is_some_and(|c| c.is_ready() && c.annotation(keys::ANN_VS_BEING_CREATED).is_none())
        })
    })
    .await;
    settle(&w.server, VSC, &cache, &running.queue).await;
    let created = delta(&before, &w.counts(&resources));
    eprintln!("per created content: {}", per_item(&created, N));
    // The test's own requests: N POSTs. The sidecar's: two main-resource
    // PATCHes (annotation on, annotation off) and one status PATCH each.
    assert_eq!(
        created,
        expect(&[
            ("POST volumesnapshotcontents", N),
            ("PATCH volumesnapshotcontents", 3 * N),
            ("PATCH volumesnapshotcontents/status", N),
            ("csi CreateSnapshot", N),
        ]),
        "requests while creating {N} contents"
    );
    for i in 0..N {
        let c: VolumeSnapshotContent = w.object(VSC, &format!("eco-{i}")).unwrap();
        let status = c.status.expect("status");
        assert!(status.snapshot_handle.is_some() && status.creation_time.is_some());
        assert!(status.error.is_none());
    }
    assert_eq!(w.mock.snapshots().len(), N as usize);
    assert_eq!(
        running.controller.written_objects_held(),
        0,
        "nothing pending: only versions are kept"
    );

    // Delete them as the snapshot-controller would.
    let before = w.counts(&resources);
    for i in 0..N {
        delete_as_controller::<VolumeSnapshotContent>(
            &w.client,
            &format!("eco-{i}"),
            keys::ANN_VS_BEING_DELETED,
        )
        .await;
    }
    eventually("all contents gone", || w.server.objects(VSC).is_empty()).await;
    settle(&w.server, VSC, &cache, &running.queue).await;
    let deleted = delta(&before, &w.counts(&resources));
    eprintln!("per deleted content: {}", per_item(&deleted, N));
    // The test's own: N annotation PATCHes and N DELETEs. The sidecar's: one
    // main PATCH (finalizer) each, no status write.
    assert_eq!(
        deleted,
        expect(&[
            ("PATCH volumesnapshotcontents", 2 * N),
            ("DELETE volumesnapshotcontents", N),
            ("csi DeleteSnapshot", N),
        ]),
        "requests while deleting {N} contents"
    );
    assert!(w.mock.snapshots().is_empty(), "no leaked snapshot");
    running.shutdown().await;
    w.mock.stop().await;
}

#[tokio::test]
async fn group_create_and_delete_make_three_and_one_writes_and_one_csi_call() {
    let w = world().await;
    let req = GroupRequest::new(DRIVER, "eco-group", ["vol-a", "vol-b", "vol-c"]);
    Api::<VolumeGroupSnapshotClass>::all(w.client.clone())
        .create(&PostParams::default(), &req.class_object())
        .await
        .expect("group class");
    let mut options = ControllerOptions::new(DRIVER);
    options.workers = 2;
    options.backoff = backoff();
    let running = GroupController::start(
        w.driver.clone(),
        w.client.clone(),
        w.client.clone(),
        w.events.clone(),
        options,
        None,
        &CancellationToken::new(),
    )
    .await
    .expect("caches sync");
    let cache = running.controller.contents().clone();
    let resources = [VGSC, VGSC_STATUS];
    let name = req.content_name();

    let before = w.counts(&resources);
    Api::<VolumeGroupSnapshotContent>::all(w.client.clone())
        .create(&PostParams::default(), &req.content_object())
        .await
        .expect("create VGSC");
    eventually("group ready with members", || {
        w.object::<VolumeGroupSnapshotContent>(VGSC, &name)
            .is_some_and(|c| is_ready_with_members(&c))
    })
    .await;
    settle(&w.server, VGSC, &cache, &running.queue).await;
    let created = delta(&before, &w.counts(&resources));
    eprintln!("group create: {}", per_item(&created, 1));
    // The test's POST; the sidecar's annotation on and off (main PATCHes)
    // and one status write (an UpdateStatus PUT, spec D.6).
    assert_eq!(
        created,
        expect(&[
            ("POST volumegroupsnapshotcontents", 1),
            ("PUT volumegroupsnapshotcontents", 1),
            ("PATCH volumegroupsnapshotcontents", 2),
            ("PUT volumegroupsnapshotcontents/status", 1),
            ("csi CreateVolumeGroupSnapshot", 1),
        ]),
        "requests while creating one group"
    );

    let before = w.counts(&resources);
    delete_as_controller::<VolumeGroupSnapshotContent>(
        &w.client,
        &name,
        keys::ANN_VGS_BEING_DELETED,
    )
    .await;
    eventually("group content gone", || w.server.objects(VGSC).is_empty()).await;
    settle(&w.server, VGSC, &cache, &running.queue).await;
    let deleted = delta(&before, &w.counts(&resources));
    eprintln!("group delete: {}", per_item(&deleted, 1));
    // The test's annotation PATCH and DELETE; the sidecar's finalizer
    // removal (PATCH), no status write.
    assert_eq!(
        deleted,
        expect(&[
            ("PATCH volumegroupsnapshotcontents", 2),
            ("DELETE volumegroupsnapshotcontents", 1),
            ("csi DeleteVolumeGroupSnapshot", 1),
        ]),
        "requests while deleting one group"
    );
    assert!(w.mock.group_snapshots().is_empty(), "no leaked group");
    running.shutdown().await;
    w.mock.stop().await;
}

/// The status merge is made against the sync's copy of the object, guarded
/// by its resourceVersion: when someone else changed the object meanwhile,
/// the write is refused, the object read once and the merge redone on it,
/// so the write-once fields of the live status are kept (spec C.6).
#[tokio::test]
async fn stale_copy_costs_one_get_and_never_overwrites_write_once_fields() {
    let h = Harness::new().await;
    // A pre-provisioned content being polled (C.5): the status write is the
    // sync's only request, so its base is the cached copy.
    h.driver.add_snapshot(SnapshotInfo {
        snapshot_id: "snap-pre".into(),
        source_volume_id: "vol-1".into(),
        size_bytes: 1024,
        creation_time_ns: Some(1_700_000_000_000_000_000),
        ready_to_use: true,
        group_snapshot_id: String::new(),
    });
    let mut obj = preprovisioned(NAME, "snap-pre");
    obj["status"] = json!({"snapshotHandle": "snap-pre", "readyToUse": false,
                           "creationTime": 1_600_000_000_000_000_000_i64});
    h.create(obj).await;
    h.refresh().await;
    // Someone else fills in the size after the cache was filled.
    h.server
        .request(
            "PATCH",
            &format!("/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents/{NAME}/status"),
            Some("application/merge-patch+json"),
            Some(&json!({"status": {"restoreSize": 5}})),
        )
        .await
        .expect("status patch");
    let gets = h.server.request_count("GET", VSC);

    assert_eq!(h.ctrl().sync(NAME).await, Outcome::Forget);

    assert_eq!(h.server.request_count("GET", VSC), gets + 1, "one GET");
    let s = h.get(NAME).await.unwrap().status.unwrap();
    assert_eq!(s.snapshot_handle.as_deref(), Some("snap-pre"));
    assert_eq!(s.creation_time, Some(1_600_000_000_000_000_000));
    assert_eq!(s.restore_size, Some(5), "the live size is kept");
    assert_eq!(s.ready_to_use, Some(true));
}

/// Two refused status writes in a row: the key is retried, no error status
/// is written over the stale copy, and the being-created annotation stays
/// so a delete cannot overtake the create; the next pass records the handle.
#[tokio::test]
async fn repeated_status_conflicts_requeue_and_keep_the_create_marker() {
    let mut h = Harness::new().await;
    h.create_class("default-class", json!({})).await;
    h.create(dynamic(NAME)).await;
    h.server.faults().fail_next("PATCH", VSC, "status", 409, 2);

    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    let c = h.get(NAME).await.unwrap();
    assert!(c.status.is_none(), "{:?}", c.status);
    assert!(c.annotation(keys::ANN_VS_BEING_CREATED).is_some());

    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    let c = h.get(NAME).await.unwrap();
    assert!(c.is_ready());
    assert!(c.status.as_ref().unwrap().snapshot_handle.is_some());
    assert!(c.annotation(keys::ANN_VS_BEING_CREATED).is_none());
    assert_eq!(h.driver.calls("CreateSnapshot"), 2);
    assert_eq!(h.driver.snapshots().len(), 1, "one backend snapshot");
    assert_eq!(h.events_for(NAME).await, vec![]);
}

/// A refused finalizer removal after DeleteSnapshot loses nothing: the key
/// is retried, the retry removes the finalizer without a second
/// DeleteSnapshot (this process knows it deleted the snapshot), and no
/// status is written on the way.
#[tokio::test]
async fn finalizer_removal_conflict_is_retried_without_a_second_delete() {
    let h = Harness::new().await;
    h.create_class("default-class", json!({})).await;
    h.create(dynamic(NAME)).await;
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    h.delete_as_controller(NAME).await;
    h.server.faults().fail_next("PATCH", VSC, "", 409, 1);
    let patches = h.server.request_count("PATCH", VSC);

    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    assert!(
        h.get(NAME).await.is_some(),
        "the finalizer holds the object"
    );
    assert_eq!(h.driver.calls("DeleteSnapshot"), 1);
    assert!(h.driver.snapshots().is_empty());

    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert!(
        h.get(NAME).await.is_none(),
        "finalizer removed, object gone"
    );
    assert_eq!(h.driver.calls("DeleteSnapshot"), 1, "not repeated");
    // Two main PATCHes (the refused one and the retry), nothing else.
    assert_eq!(h.server.request_count("PATCH", VSC), patches + 2);
}
