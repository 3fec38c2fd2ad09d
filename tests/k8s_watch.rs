//! Watch caches (spec B.5, B.6): adds, updates and deletes reach the handler,
//! the cache syncs, stored objects are lean, resync re-delivers every object,
//! a label selector narrows the watch, a malformed object does not break it,
//! and the intake enqueues per B.5.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use csi_snapshotter::controller::intake;
use csi_snapshotter::controller::queue::{Backoff, WorkQueue};
use csi_snapshotter::k8s::types::{Lenient, VolumeSnapshotContent};
use csi_snapshotter::k8s::watch::{
    Cache, Informer, Notification, WatchOptions, managed_by_selector,
};
use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

type Vsc = Lenient<VolumeSnapshotContent>;

fn vsc_json(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"big\":true}", "keep": "1"}},
        "spec": {"driver": "d", "deletionPolicy": "Delete", "source": {"volumeHandle": "v"},
                 "volumeSnapshotRef": {"name": "s", "namespace": "default", "uid": "u"}}
    })
}

async fn create(server: &ApiServer, body: Value) {
    let r = server
        .request(
            "POST",
            "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents",
            Some("application/json"),
            Some(&body),
        )
        .await
        .expect("post");
    assert!(r.code < 300, "create failed: {} {:?}", r.code, r.body);
}

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Add(String),
    Update(String, bool),
    Delete(String),
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn start(
    server_client: kube::Client,
    options: WatchOptions,
) -> (Cache<Vsc>, Log, tokio::task::JoinHandle<()>) {
    let informer = Informer::new(Api::<Vsc>::all(server_client), options);
    let cache = informer.cache();
    let log: Log = Arc::default();
    let l = log.clone();
    let task = tokio::spawn(informer.run(move |n: Notification<Vsc>| {
        let name = n.name().unwrap_or("").to_string();
        l.lock().unwrap().push(match n {
            Notification::Add(_) => Seen::Add(name),
            Notification::Update { old, new } => Seen::Update(name, Arc::ptr_eq(&old, &new)),
            Notification::Delete(_) => Seen::Delete(name),
        });
    }));
    (cache, log, task)
}

async fn until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..250 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn adds_updates_and_deletes_reach_the_handler_and_the_cache() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    create(&server, vsc_json("before", json!({}))).await;
    let client = server.client().await;
    let (cache, log, _task) = start(client.clone(), WatchOptions::default());
    tokio::time::timeout(Duration::from_secs(5), cache.wait_synced())
        .await
        .expect("synced");
    assert!(cache.is_synced());
    assert_eq!(cache.len(), 1);
    assert_eq!(
        log.lock().unwrap().clone(),
        vec![Seen::Add("before".into())]
    );

    create(&server, vsc_json("after", json!({}))).await;
    let api: Api<VolumeSnapshotContent> = Api::all(client);
    api.patch(
        "after",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await
    .expect("patch");
    api.delete("before", &DeleteParams::default())
        .await
        .expect("delete");
    until("delete seen", || {
        log.lock().unwrap().contains(&Seen::Delete("before".into()))
    })
    .await;
    let seen = log.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            Seen::Add("before".into()),
            Seen::Add("after".into()),
            Seen::Update("after".into(), false),
            Seen::Delete("before".into()),
        ]
    );
    assert!(cache.get("before").is_none());
    let after = cache.get("after").expect("cached");
    let after = after.as_ok().expect("decodes");
    assert_eq!(
        after
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .get("x")
            .map(String::as_str),
        Some("y")
    );
}

#[tokio::test]
async fn cached_objects_are_lean() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let mut body = vsc_json("c1", json!({}));
    body["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]);
    create(&server, body).await;
    let stored = server.object("volumesnapshotcontents", "", "c1").unwrap();
    assert!(
        stored["metadata"]["managedFields"].is_array(),
        "precondition: the server keeps managedFields"
    );
    let (cache, _log, _task) = start(server.client().await, WatchOptions::default());
    tokio::time::timeout(Duration::from_secs(5), cache.wait_synced())
        .await
        .expect("synced");
    let obj = cache.get("c1").expect("cached");
    let meta = &obj.as_ok().expect("decodes").metadata;
    assert!(meta.managed_fields.is_none());
    let ann = meta.annotations.as_ref().unwrap();
    assert!(!ann.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
    assert_eq!(ann.get("keep").map(String::as_str), Some("1"));
}

#[tokio::test]
async fn resync_redelivers_every_cached_object_as_an_unchanged_update() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    create(&server, vsc_json("a", json!({}))).await;
    create(&server, vsc_json("b", json!({}))).await;
    let options = WatchOptions {
        resync_period: Some(Duration::from_millis(200)),
        ..Default::default()
    };
    let (cache, log, _task) = start(server.client().await, options);
    tokio::time::timeout(Duration::from_secs(5), cache.wait_synced())
        .await
        .expect("synced");
    let lists = server.request_count("LIST", "volumesnapshotcontents");
    until("two resyncs", || {
        let l = log.lock().unwrap();
        ["a", "b"].iter().all(|n| {
            l.iter()
                .filter(|s| **s == Seen::Update((*n).into(), true))
                .count()
                >= 2
        })
    })
    .await;
    assert_eq!(
        server.request_count("LIST", "volumesnapshotcontents"),
        lists,
        "a resync does not re-list"
    );
}

#[tokio::test]
async fn the_node_selector_narrows_the_watch() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    create(
        &server,
        vsc_json(
            "mine",
            json!({"snapshot.storage.kubernetes.io/managed-by": "node-1"}),
        ),
    )
    .await;
    create(
        &server,
        vsc_json(
            "other",
            json!({"snapshot.storage.kubernetes.io/managed-by": "node-2"}),
        ),
    )
    .await;
    create(&server, vsc_json("unlabelled", json!({}))).await;
    let options = WatchOptions {
        label_selector: Some(managed_by_selector("node-1")),
        ..Default::default()
    };
    let (cache, log, _task) = start(server.client().await, options);
    tokio::time::timeout(Duration::from_secs(5), cache.wait_synced())
        .await
        .expect("synced");
    create(
        &server,
        vsc_json(
            "mine-later",
            json!({"snapshot.storage.kubernetes.io/managed-by": "node-1"}),
        ),
    )
    .await;
    create(
        &server,
        vsc_json(
            "other-later",
            json!({"snapshot.storage.kubernetes.io/managed-by": "node-2"}),
        ),
    )
    .await;
    until("mine-later", || cache.get("mine-later").is_some()).await;
    let mut names: Vec<String> = cache
        .list()
        .iter()
        .map(|o| o.as_ok().unwrap().metadata.name.clone().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["mine", "mine-later"]);
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .all(|s| !matches!(s, Seen::Add(n) if n.starts_with("other")))
    );
}

/// VolumeSnapshotContent with a schema that checks nothing.
const LOOSE_CONTENT_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: volumesnapshotcontents.snapshot.storage.k8s.io
spec:
  group: snapshot.storage.k8s.io
  scope: Cluster
  names:
    plural: volumesnapshotcontents
    singular: volumesnapshotcontent
    kind: VolumeSnapshotContent
    listKind: VolumeSnapshotContentList
  versions:
    - name: v1
      served: true
      storage: true
      subresources:
        status: {}
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"#;

#[tokio::test]
async fn a_malformed_object_does_not_break_the_watch() {
    // A CRD whose schema accepts any content, so the server stores what a
    // cluster with looser CRDs (or a conversion bug) could serve.
    let no_schemas = tempfile::tempdir().expect("temp dir");
    std::fs::write(no_schemas.path().join("loose.yaml"), LOOSE_CONTENT_CRD).expect("write CRD");
    let server = ApiServer::start(ApiServerOptions {
        crd_schemas: Some(no_schemas.path().to_path_buf()),
        ..ApiServerOptions::default()
    })
    .await
    .expect("api server");
    let mut bad = vsc_json("bad", json!({}));
    bad["spec"]["source"] = json!("not an object");
    create(&server, bad).await;
    create(&server, vsc_json("good", json!({}))).await;
    let (cache, _log, _task) = start(server.client().await, WatchOptions::default());
    tokio::time::timeout(Duration::from_secs(5), cache.wait_synced())
        .await
        .expect("synced despite a bad object");
    assert!(cache.get("good").unwrap().as_ok().is_some());
    assert!(
        cache.get("bad").unwrap().as_ok().is_none(),
        "kept by name as malformed"
    );
    create(&server, vsc_json("later", json!({}))).await;
    until("later", || cache.get("later").is_some()).await;
}

#[tokio::test]
async fn a_relist_after_a_lost_watch_delivers_deletes_for_vanished_objects() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    create(&server, vsc_json("stays", json!({}))).await;
    create(&server, vsc_json("goes", json!({}))).await;
    let (cache, log, _task) = start(server.client().await, WatchOptions::default());
    tokio::time::timeout(Duration::from_secs(5), cache.wait_synced())
        .await
        .expect("synced");
    server.faults().next_watch_gone();
    server.faults().close_watches();
    let r = server
        .request(
            "DELETE",
            "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents/goes",
            None,
            None,
        )
        .await
        .unwrap();
    assert!(r.code < 300);
    until("delete of goes", || {
        log.lock().unwrap().contains(&Seen::Delete("goes".into()))
    })
    .await;
    assert!(cache.get("goes").is_none());
    assert!(cache.get("stays").is_some());
}

#[tokio::test]
async fn intake_enqueues_adds_deletes_and_only_wanted_updates() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let client = server.client().await;
    let queue: WorkQueue = WorkQueue::new("csi-snapshotter-content", Backoff::default());
    let informer = Informer::new(Api::<Vsc>::all(client.clone()), WatchOptions::default());
    let cache = informer.cache();
    // Only label changes are wanted in this test.
    let handler = intake::enqueue_when(queue.clone(), |old: &Vsc, new: &Vsc| {
        old.as_ok().map(|o| &o.metadata.labels) != new.as_ok().map(|n| &n.metadata.labels)
    });
    let _task = tokio::spawn(informer.run(handler));
    create(&server, vsc_json("c1", json!({}))).await;
    tokio::time::timeout(Duration::from_secs(5), cache.wait_synced())
        .await
        .expect("synced");
    let first = tokio::time::timeout(Duration::from_secs(5), queue.get())
        .await
        .expect("add enqueued")
        .unwrap();
    assert_eq!(&**first.key(), "c1");
    first.done();

    let api: Api<VolumeSnapshotContent> = Api::all(client);
    api.patch(
        "c1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"z": "1"}}})),
    )
    .await
    .unwrap();
    until("annotation cached", || {
        cache
            .get("c1")
            .and_then(|o| o.as_ok().and_then(|v| v.metadata.annotations.clone()))
            .is_some_and(|a| a.contains_key("z"))
    })
    .await;
    assert!(queue.is_empty(), "unwanted update not enqueued");

    api.patch(
        "c1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"l": "1"}}})),
    )
    .await
    .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), queue.get())
        .await
        .expect("update enqueued")
        .unwrap();
    assert_eq!(&**second.key(), "c1");
    second.done();

    api.delete("c1", &DeleteParams::default()).await.unwrap();
    let third = tokio::time::timeout(Duration::from_secs(5), queue.get())
        .await
        .expect("delete enqueued")
        .unwrap();
    assert_eq!(&**third.key(), "c1");
}
