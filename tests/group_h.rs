//! The group lines of spec H (25–41), each a named test against the embedded
//! API server (CRD schemas on) and the mock CSI driver.

mod group_support;

use std::sync::Arc;

use csi_snapshotter::controller::common::Outcome;
use csi_snapshotter::csi::driver::{CreateGroupSnapshotArgs, SnapshotDriver};
use csi_snapshotter::csi::proto::v1 as pb;
use csi_snapshotter::k8s::keys;
use csi_snapshotter::k8s::types::{Lenient, VolumeGroupSnapshotContent};
use csi_snapshotter::reconcile::ReconcileConfig;
use csi_snapshotter::reconcile::group::group_create_name;
use csi_snapshotter::reconcile::naming::NamingRule;
use group_support::{CLASS, DRIVER, Harness, UID, dynamic_content, preprovisioned_content, set};
use serde_json::json;

const NAME: &str = "groupsnapcontent-1";
const CREATE: &str = "CreateVolumeGroupSnapshot";
const GET: &str = "GetVolumeGroupSnapshot";
const DELETE: &str = "DeleteVolumeGroupSnapshot";

fn has_annotation(c: &VolumeGroupSnapshotContent, key: &str) -> bool {
    c.annotation(key).is_some()
}

fn error_message(c: &VolumeGroupSnapshotContent) -> String {
    c.status
        .as_ref()
        .and_then(|s| s.error.as_ref())
        .and_then(|e| e.message.clone())
        .unwrap_or_default()
}

async fn with_class(h: &Harness) {
    h.create_class(CLASS, json!({"foo": "bar"})).await;
}

/// Creates a backend group of `volumes` directly on the mock; returns the
/// group handle and member handles.
async fn backend_group(h: &Harness, name: &str, volumes: &[&str]) -> (String, Vec<String>) {
    let info = h
        .driver
        .create_group_snapshot(CreateGroupSnapshotArgs {
            name: name.into(),
            source_volume_ids: volumes.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        })
        .await
        .expect("backend group");
    let members = info
        .snapshots
        .iter()
        .map(|s| s.snapshot_id.clone())
        .collect();
    h.mock.reset_calls();
    (info.group_snapshot_id, members)
}

/// A ready dynamic group (created through the controller).
async fn ready_dynamic(h: &Harness, obj: serde_json::Value) {
    with_class(h).await;
    h.create(obj).await;
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert!(h.get(NAME).await.is_ready());
}

#[tokio::test]
async fn h25_create_error_sets_error_status_event_and_requeues() {
    let h = harness!();
    with_class(&h).await;
    h.create(dynamic_content(NAME, &["vol-1", "vol-2"])).await;
    h.mock.fail_next(CREATE, tonic::Code::Unavailable, 1);

    assert_eq!(h.sync(NAME).await, Outcome::Requeue);

    let c = h.get(NAME).await;
    let status = c.status.as_ref().expect("error status written");
    assert_eq!(status.ready_to_use, Some(false));
    let msg = error_message(&c);
    assert!(
        msg.starts_with("Failed to create group snapshot: failed to take group snapshot of the volumes [vol-1 vol-2]:"),
        "{msg}"
    );
    assert!(msg.contains("code = Unavailable"), "{msg}");
    // Non-final: the create may still be running on the storage side.
    assert!(has_annotation(&c, keys::ANN_VGS_BEING_CREATED));
    let events = h.event_reasons(NAME).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "GroupSnapshotCreationFailed");
    assert_eq!(events[0].1, msg);
}

#[tokio::test]
async fn h26_final_create_error_removes_being_created() {
    let h = harness!();
    with_class(&h).await;
    h.create(dynamic_content(NAME, &["vol-1", "vol-2"])).await;
    h.mock.fail_next(CREATE, tonic::Code::InvalidArgument, 1);

    assert_eq!(h.sync(NAME).await, Outcome::Requeue);

    let c = h.get(NAME).await;
    assert!(!has_annotation(&c, keys::ANN_VGS_BEING_CREATED));
    assert!(error_message(&c).contains("code = InvalidArgument"));
    assert!(h.mock.group_snapshots().is_empty());
}

#[tokio::test]
async fn h27_create_not_ready_requeues_and_removes_annotation() {
    let h = harness!();
    with_class(&h).await;
    h.create(dynamic_content(NAME, &["vol-1", "vol-2"])).await;
    h.mock.set_ready_after_polls(2);

    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    let c = h.get(NAME).await;
    assert_eq!(c.status.as_ref().unwrap().ready_to_use, Some(false));
    assert!(!has_annotation(&c, keys::ANN_VGS_BEING_CREATED));

    // Re-created with the same name until ready; then no more requeues.
    let syncs = h.sync_until_forget(NAME, 5).await;
    assert!(h.get(NAME).await.is_ready());
    assert_eq!(h.mock.calls(CREATE), 1 + syncs as u64);
    assert_eq!(h.mock.group_snapshots().len(), 1);
}

#[tokio::test]
async fn h28_preprovisioned_poll_without_class() {
    let h = harness!();
    let (group, members) = backend_group(&h, "pre", &["vol-a", "vol-b"]).await;
    h.create(preprovisioned_content(NAME, &group, &members))
        .await;

    assert_eq!(h.sync(NAME).await, Outcome::Forget);

    assert_eq!(h.mock.calls(GET), 1);
    let secrets = h.mock.last_secrets(GET).unwrap_or_default();
    assert!(secrets.is_empty(), "no class, no secrets");
    let req: pb::GetVolumeGroupSnapshotRequest = h.mock.last_request(GET).unwrap();
    assert_eq!(req.group_snapshot_id, group);
    assert_eq!(req.snapshot_ids, members);
    let status = h.get(NAME).await.status.unwrap();
    assert_eq!(
        status.volume_group_snapshot_handle.as_deref(),
        Some(group.as_str())
    );
    assert_eq!(status.ready_to_use, Some(true));
    assert!(status.creation_time.is_some());
    // Members are not listed for pre-provisioned groups (D.4 step 5).
    assert!(status.volume_snapshot_info_list.is_none());
}

#[tokio::test]
async fn h29_get_not_ready_requeues_and_error_sets_status() {
    let h = harness!();
    h.mock.set_ready_after_polls(5);
    let (group, members) = backend_group(&h, "pre", &["vol-a"]).await;
    h.create(preprovisioned_content(NAME, &group, &members))
        .await;

    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    assert_eq!(h.get(NAME).await.status.unwrap().ready_to_use, Some(false));

    h.mock.fail_next(GET, tonic::Code::Internal, 1);
    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    let c = h.get(NAME).await;
    let msg = error_message(&c);
    assert!(
        msg.starts_with("Failed to check and update group snapshot content:"),
        "{msg}"
    );
    assert_eq!(c.status.as_ref().unwrap().ready_to_use, Some(false));
    let events = h.event_reasons(NAME).await;
    assert_eq!(
        events.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["GroupSnapshotContentCheckandUpdateFailed"]
    );
}

#[tokio::test]
async fn h30_existing_handle_kept_and_info_list_filled() {
    let h = harness!();
    with_class(&h).await;
    h.create(dynamic_content(NAME, &["vol-1", "vol-2"])).await;
    h.set_status(
        NAME,
        json!({"volumeGroupSnapshotHandle": "old-handle", "readyToUse": false}),
    )
    .await;

    assert_eq!(h.sync(NAME).await, Outcome::Forget);

    let status = h.get(NAME).await.status.unwrap();
    assert_eq!(
        status.volume_group_snapshot_handle.as_deref(),
        Some("old-handle")
    );
    let list = status.volume_snapshot_info_list.expect("info list filled");
    let volumes: Vec<_> = list
        .iter()
        .map(|i| i.volume_handle.clone().unwrap())
        .collect();
    assert_eq!(volumes, ["vol-1", "vol-2"]);
    let backend: Vec<String> = h
        .mock
        .snapshots()
        .into_iter()
        .map(|s| s.snapshot_id)
        .collect();
    for info in &list {
        assert!(backend.contains(info.snapshot_handle.as_ref().unwrap()));
    }
}

#[tokio::test]
async fn h31_status_already_equal_makes_no_write() {
    let h = harness!();
    h.mock.set_ready_after_polls(10);
    let (group, members) = backend_group(&h, "pre", &["vol-a"]).await;
    h.create(preprovisioned_content(NAME, &group, &members))
        .await;
    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    let writes = |h: &Harness| {
        h.server.request_count("PUT", "volumegroupsnapshotcontents")
            + h.server
                .request_count("PATCH", "volumegroupsnapshotcontents")
    };
    let before = writes(&h);
    let rv = h.get(NAME).await.metadata.resource_version;

    assert_eq!(h.sync(NAME).await, Outcome::Requeue);

    assert_eq!(h.mock.calls(GET), 2);
    assert_eq!(writes(&h), before);
    assert_eq!(h.get(NAME).await.metadata.resource_version, rv);
}

#[tokio::test]
async fn h32_failed_finalizer_patch_is_retried_without_a_second_delete() {
    let h = harness!();
    ready_dynamic(&h, dynamic_content(NAME, &["vol-1", "vol-2"])).await;
    assert_eq!(h.mock.snapshots().len(), 2);
    h.request_delete(NAME).await;
    h.server
        .faults()
        .fail_next("PATCH", "volumegroupsnapshotcontents", "", 500, 1);

    assert_eq!(h.sync(NAME).await, Outcome::Requeue);

    assert_eq!(h.mock.calls(DELETE), 1);
    assert!(h.mock.group_snapshots().is_empty());
    let c = h.get(NAME).await;
    assert!(c.metadata.finalizers.is_some(), "the finalizer holds it");

    // The retry only removes the finalizer: this process already deleted
    // the group.
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert_eq!(h.mock.calls(DELETE), 1);
    assert!(h.is_gone(NAME).await);
    assert!(h.event_reasons(NAME).await.is_empty());
}

#[tokio::test]
async fn h33_delete_of_empty_object_is_an_error_not_a_crash() {
    let h = harness!();
    with_class(&h).await;
    // A handle but no member IDs anywhere.
    h.create(dynamic_content(NAME, &["vol-1"])).await;
    h.set_status(
        NAME,
        json!({"volumeGroupSnapshotHandle": "g-1", "readyToUse": true}),
    )
    .await;
    h.request_delete(NAME).await;

    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    assert_eq!(h.mock.calls(DELETE), 0);
    assert!(h.get(NAME).await.metadata.finalizers.is_some());
    assert_eq!(
        h.event_reasons(NAME).await,
        [(
            "GroupSnapshotDeleteError".to_string(),
            "Failed to delete group snapshot".to_string()
        )]
    );

    // Neither handle nor IDs: nothing to delete, only the finalizer goes.
    let mut obj = dynamic_content("groupsnapcontent-2", &["vol-1"]);
    set(&mut obj, "metadata.name", json!("groupsnapcontent-2"));
    h.create(obj).await;
    h.request_delete("groupsnapcontent-2").await;
    assert_eq!(h.sync("groupsnapcontent-2").await, Outcome::Forget);
    assert!(h.is_gone("groupsnapcontent-2").await);
    assert_eq!(h.mock.calls(DELETE), 0);
}

#[tokio::test]
async fn h34_retain_delete_only_removes_finalizer() {
    let h = harness!();
    let mut obj = dynamic_content(NAME, &["vol-1", "vol-2"]);
    set(&mut obj, "spec.deletionPolicy", json!("Retain"));
    ready_dynamic(&h, obj).await;
    h.request_delete(NAME).await;

    assert_eq!(h.sync(NAME).await, Outcome::Forget);

    assert_eq!(h.mock.calls(DELETE), 0);
    assert_eq!(h.mock.group_snapshots().len(), 1, "backend group kept");
    assert!(h.is_gone(NAME).await);
}

#[tokio::test]
async fn h35_ready_with_leftover_annotation_only_removes_it() {
    let h = harness!();
    ready_dynamic(&h, dynamic_content(NAME, &["vol-1"])).await;
    h.annotate(NAME, json!({keys::ANN_VGS_BEING_CREATED: "yes"}))
        .await;
    let calls = h.mock.calls(CREATE);

    assert_eq!(h.sync(NAME).await, Outcome::Forget);

    assert!(!has_annotation(
        &h.get(NAME).await,
        keys::ANN_VGS_BEING_CREATED
    ));
    assert_eq!(h.mock.calls(CREATE), calls);
    assert!(h.event_reasons(NAME).await.is_empty());
}

#[tokio::test]
async fn h36_credentials_from_group_annotations() {
    let h = harness!();
    with_class(&h).await;
    // None: no secrets.
    h.create(dynamic_content(NAME, &["vol-1"])).await;
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert!(h.mock.last_secrets(CREATE).unwrap_or_default().is_empty());

    // Empty name: an error, no RPC.
    let mut obj = dynamic_content("gsc-empty", &["vol-2"]);
    set(
        &mut obj,
        "spec.volumeGroupSnapshotRef.uid",
        json!("uid-empty"),
    );
    set(
        &mut obj,
        "metadata.annotations",
        json!({
            keys::ANN_GROUP_DELETION_SECRET_NAME: "",
            keys::ANN_GROUP_DELETION_SECRET_NAMESPACE: "default",
        }),
    );
    h.create(obj).await;
    let calls = h.mock.calls(CREATE);
    assert_eq!(h.sync("gsc-empty").await, Outcome::Requeue);
    assert_eq!(h.mock.calls(CREATE), calls);
    let c = h.get("gsc-empty").await;
    assert!(
        error_message(&c).contains("secret name or namespace not specified"),
        "{}",
        error_message(&c)
    );
    assert!(!has_annotation(&c, keys::ANN_VGS_BEING_CREATED));

    // A valid pair: the secret's data is sent.
    h.create_secret("default", "group-secret", &[("user", "alice")])
        .await;
    let mut obj = dynamic_content("gsc-secret", &["vol-3"]);
    set(
        &mut obj,
        "spec.volumeGroupSnapshotRef.uid",
        json!("uid-secret"),
    );
    set(
        &mut obj,
        "metadata.annotations",
        json!({
            keys::ANN_GROUP_DELETION_SECRET_NAME: "group-secret",
            keys::ANN_GROUP_DELETION_SECRET_NAMESPACE: "default",
        }),
    );
    h.create(obj).await;
    assert_eq!(h.sync("gsc-secret").await, Outcome::Forget);
    let secrets = h.mock.last_secrets(CREATE).unwrap();
    assert_eq!(secrets.get("user").map(String::as_str), Some("alice"));

    // A pair naming a missing secret: an error, no RPC.
    let mut obj = dynamic_content("gsc-missing", &["vol-4"]);
    set(
        &mut obj,
        "spec.volumeGroupSnapshotRef.uid",
        json!("uid-missing"),
    );
    set(
        &mut obj,
        "metadata.annotations",
        json!({
            keys::ANN_GROUP_DELETION_SECRET_NAME: "nope",
            keys::ANN_GROUP_DELETION_SECRET_NAMESPACE: "default",
        }),
    );
    h.create(obj).await;
    let calls = h.mock.calls(CREATE);
    assert_eq!(h.sync("gsc-missing").await, Outcome::Requeue);
    assert_eq!(h.mock.calls(CREATE), calls);
    let msg = error_message(&h.get("gsc-missing").await);
    assert!(msg.contains("failed to get credentials"), "{msg}");
}

#[tokio::test]
async fn h37_class_lookup() {
    let h = harness!();
    // Dynamic without a class: an error.
    let mut obj = dynamic_content(NAME, &["vol-1"]);
    obj["spec"]
        .as_object_mut()
        .unwrap()
        .remove("volumeGroupSnapshotClassName");
    h.create(obj).await;
    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    assert_eq!(h.mock.calls(CREATE), 0);
    assert!(error_message(&h.get(NAME).await).starts_with("Failed to create group snapshot:"));

    // Named but missing class: an error.
    let mut obj = dynamic_content("gsc-missing-class", &["vol-2"]);
    set(&mut obj, "spec.volumeGroupSnapshotClassName", json!("nope"));
    set(&mut obj, "spec.volumeGroupSnapshotRef.uid", json!("uid-2"));
    h.create(obj).await;
    assert_eq!(h.sync("gsc-missing-class").await, Outcome::Requeue);
    let msg = error_message(&h.get("gsc-missing-class").await);
    assert!(msg.contains("nope") && msg.contains("not found"), "{msg}");
    assert_eq!(h.mock.calls(CREATE), 0);

    // Pre-provisioned without a class: fine.
    let (group, members) = backend_group(&h, "pre", &["vol-a"]).await;
    h.create(preprovisioned_content("gsc-pre", &group, &members))
        .await;
    assert_eq!(h.sync("gsc-pre").await, Outcome::Forget);
    assert!(h.get("gsc-pre").await.is_ready());
}

#[tokio::test]
async fn h38_driver_match() {
    let h = harness!();
    let writes = |h: &Harness| h.server.request_count("*", "volumegroupsnapshotcontents");

    // No source at all (the schema forbids it, so it only exists in a cache).
    let mut bare: VolumeGroupSnapshotContent =
        serde_json::from_value(dynamic_content("gsc-bare", &["v"])).unwrap();
    bare.spec.source = Default::default();
    h.contents
        .insert("gsc-bare".into(), Arc::new(Lenient::Ok(bare)));
    let before = writes(&h);
    assert_eq!(h.ctrl.sync("gsc-bare").await, Outcome::Forget);
    assert_eq!(writes(&h), before);

    // Another driver: ignored.
    let mut obj = dynamic_content("gsc-other", &["vol-1"]);
    set(&mut obj, "spec.driver", json!("other.csi.k8s.io"));
    h.create(obj).await;
    assert_eq!(h.sync("gsc-other").await, Outcome::Forget);
    assert!(h.get("gsc-other").await.status.is_none());

    // A class of another driver: ignored.
    let classes = group_support::dyn_api(&h.client, "volumegroupsnapshotclasses");
    group_support::create_raw(
        &classes,
        &json!({
                "apiVersion": "groupsnapshot.storage.k8s.io/v1",
                "kind": "VolumeGroupSnapshotClass",
                "metadata": {"name": "foreign"},
                "driver": "other.csi.k8s.io",
                "deletionPolicy": "Delete",
        }),
    )
    .await
    .unwrap();
    let mut obj = dynamic_content("gsc-foreign-class", &["vol-2"]);
    set(
        &mut obj,
        "spec.volumeGroupSnapshotClassName",
        json!("foreign"),
    );
    h.create(obj).await;
    assert_eq!(h.sync("gsc-foreign-class").await, Outcome::Forget);
    assert!(h.get("gsc-foreign-class").await.status.is_none());
    assert_eq!(h.mock.calls(CREATE), 0);

    // Matching class, dynamic source: processed.
    with_class(&h).await;
    h.create(dynamic_content(NAME, &["vol-3"])).await;
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert!(h.get(NAME).await.is_ready());

    // No class, pre-provisioned source: processed.
    let (group, members) = backend_group(&h, "pre", &["vol-a"]).await;
    h.create(preprovisioned_content("gsc-pre", &group, &members))
        .await;
    assert_eq!(h.sync("gsc-pre").await, Outcome::Forget);
    assert!(h.get("gsc-pre").await.is_ready());

    // Matching class, pre-provisioned source: processed.
    let (group, members) = backend_group(&h, "pre-2", &["vol-b"]).await;
    let mut obj = preprovisioned_content("gsc-pre-class", &group, &members);
    set(&mut obj, "spec.volumeGroupSnapshotClassName", json!(CLASS));
    h.create(obj).await;
    assert_eq!(h.sync("gsc-pre-class").await, Outcome::Forget);
    assert!(h.get("gsc-pre-class").await.is_ready());
}

#[tokio::test]
async fn h39_worker_store_follows_the_cache() {
    let h = harness!();
    with_class(&h).await;
    h.create(dynamic_content(NAME, &["vol-1"])).await;

    // A failing sync keeps the object in the store and requeues.
    h.mock.fail_next(CREATE, tonic::Code::Unavailable, 1);
    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    assert!(h.ctrl.is_tracked(NAME));

    // Gone from the cache: dropped from the store, no requeue, no CSI call.
    h.contents.remove(NAME);
    let calls = h.mock.calls(CREATE);
    assert_eq!(h.ctrl.sync(NAME).await, Outcome::Forget);
    assert!(!h.ctrl.is_tracked(NAME));
    assert_eq!(h.mock.calls(CREATE), calls);

    // Through a real queue: the missing key leaves the queue empty.
    let queue = csi_snapshotter::controller::queue::WorkQueue::new(
        csi_snapshotter::controller::group::QUEUE_NAME,
        Default::default(),
    );
    let workers = h.ctrl.spawn_workers(&queue, 1);
    queue.add("missing".into());
    tokio::time::timeout(group_support::WAIT, async {
        while !queue.is_empty() {
            tokio::task::yield_now().await;
        }
        queue.wait_idle().await;
    })
    .await
    .expect("queue drained");
    assert_eq!(queue.delayed_len(), 0);
    assert_eq!(queue.num_requeues(&"missing".into()), 0);
    queue.shutdown();
    for w in workers {
        w.await.unwrap();
    }
}

#[tokio::test]
async fn h40_create_handler_checks_and_uuid_length() {
    let h = harness!();
    with_class(&h).await;
    // Not bound: empty ref UID.
    let mut obj = dynamic_content(NAME, &["vol-1"]);
    obj["spec"]["volumeGroupSnapshotRef"]
        .as_object_mut()
        .unwrap()
        .remove("uid");
    h.create(obj).await;
    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    let msg = error_message(&h.get(NAME).await);
    assert!(msg.contains("not bound to a group snapshot"), "{msg}");

    // Empty volumeHandles.
    let mut obj = dynamic_content("gsc-novol", &[]);
    set(&mut obj, "spec.volumeGroupSnapshotRef.uid", json!("uid-2"));
    let created = h.create(obj).await;
    // An empty source fails the driver filter first (B.5): ignored, untouched.
    assert_eq!(h.sync("gsc-novol").await, Outcome::Forget);
    assert!(h.get("gsc-novol").await.status.is_none());
    assert_eq!(h.mock.calls(CREATE), 0);
    // The handler check itself reports it.
    let err = group_create_name(&created, &ReconcileConfig::new(DRIVER)).unwrap_err();
    assert!(err.contains("No volumes found to snapshot"), "{err}");

    // uuid-length -1 (the default rule): the whole UID, dashes included.
    let mut cfg = ReconcileConfig::new(DRIVER);
    cfg.group_snapshot_naming = NamingRule {
        prefix: "groupsnapshot".into(),
        uuid_length: None,
    };
    let h2 = harness!(cfg);
    with_class(&h2).await;
    h2.create(dynamic_content(NAME, &["vol-1"])).await;
    assert_eq!(h2.sync(NAME).await, Outcome::Forget);
    let req: pb::CreateVolumeGroupSnapshotRequest = h2.mock.last_request(CREATE).unwrap();
    assert_eq!(req.name, format!("groupsnapshot-{UID}"));
}

#[tokio::test]
async fn h41_empty_snapshot_ids_and_handle_source() {
    let h = harness!();
    // Get with an empty ID list: error, no RPC.
    h.create(preprovisioned_content(NAME, "g-1", &[])).await;
    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    assert_eq!(h.mock.calls(GET), 0);
    let msg = error_message(&h.get(NAME).await);
    assert!(msg.contains("no snapshots found"), "{msg}");

    // Delete with an empty ID list: error event, no RPC, finalizer kept.
    h.set_status(NAME, json!({"volumeGroupSnapshotHandle": "g-1"}))
        .await;
    h.request_delete(NAME).await;
    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    assert_eq!(h.mock.calls(DELETE), 0);
    assert!(h.get(NAME).await.metadata.finalizers.is_some());
    let events = h.event_reasons(NAME).await;
    assert!(
        events
            .iter()
            .any(|e| e.0 == "GroupSnapshotDeleteError" && e.1 == "Failed to delete group snapshot"),
        "{events:?}"
    );

    // The handle comes from status when set, else from spec.
    h.mock.set_ready_after_polls(10);
    let (group, members) = backend_group(&h, "pre", &["vol-a"]).await;
    h.create(preprovisioned_content("gsc-spec", &group, &members))
        .await;
    assert_eq!(h.sync("gsc-spec").await, Outcome::Requeue);
    let req: pb::GetVolumeGroupSnapshotRequest = h.mock.last_request(GET).unwrap();
    assert_eq!(req.group_snapshot_id, group);
    let status = h.get("gsc-spec").await.status.unwrap();
    assert_eq!(
        status.volume_group_snapshot_handle.as_deref(),
        Some(group.as_str())
    );

    h.create(preprovisioned_content(
        "gsc-status",
        "spec-handle",
        &members,
    ))
    .await;
    h.set_status(
        "gsc-status",
        json!({"volumeGroupSnapshotHandle": group, "readyToUse": false}),
    )
    .await;
    assert_eq!(h.sync("gsc-status").await, Outcome::Requeue);
    let req: pb::GetVolumeGroupSnapshotRequest = h.mock.last_request(GET).unwrap();
    assert_eq!(req.group_snapshot_id, group, "status handle wins");
}
