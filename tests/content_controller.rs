//! The VolumeSnapshotContent controller against the embedded API server
//! (with the upstream CRD schemas) and an in-memory driver: spec H lines
//! 1–17 end to end, plus the invariants this implementation adds.

mod content_support;

use content_support::{DRIVER, FakeDriver, Harness, UID, dynamic, preprovisioned};
use csi_snapshotter::controller::common::Outcome;
use csi_snapshotter::csi::driver::{DriverCapabilities, SnapshotInfo};
use csi_snapshotter::csi::error::CsiError;
use csi_snapshotter::k8s::keys;
use csi_snapshotter::reconcile::ReconcileConfig;
use serde_json::json;

const NAME: &str = "snapcontent-1";

fn annotations(c: &csi_snapshotter::k8s::types::VolumeSnapshotContent) -> Vec<String> {
    c.metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_keys()
        .collect()
}

#[tokio::test]
async fn h01_dynamic_create_records_status_and_removes_annotation() {
    let mut cfg = ReconcileConfig::new(DRIVER);
    cfg.extra_create_metadata = true;
    let mut h = Harness::with(FakeDriver::new(), cfg).await;
    h.create_class(
        "default-class",
        json!({keys::PARAM_SNAPSHOTTER_SECRET_NAME: "s", keys::PARAM_SNAPSHOTTER_SECRET_NAMESPACE: "default"}),
    )
    .await;
    h.create(dynamic(NAME)).await;
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    let args = h.driver.last_create().unwrap();
    assert_eq!(args.name, format!("snapshot-{UID}"));
    assert_eq!(args.source_volume_id, "vol-1");
    let keys_sent: Vec<&str> = args.parameters.keys().map(String::as_str).collect();
    assert_eq!(
        keys_sent,
        vec![
            keys::PARAM_VS_NAME,
            keys::PARAM_VS_NAMESPACE,
            keys::PARAM_VSC_NAME
        ]
    );
    let c = h.get(NAME).await.unwrap();
    let s = c.status.clone().unwrap();
    assert_eq!(s.snapshot_handle, Some(format!("snap-snapshot-{UID}")));
    assert_eq!(s.restore_size, Some(1024));
    assert_eq!(s.ready_to_use, Some(true));
    assert_eq!(s.creation_time, Some(1_700_000_000_000_000_001));
    assert!(annotations(&c).is_empty(), "{:?}", annotations(&c));
    assert_eq!(h.events_for(NAME).await, vec![]);
}

#[tokio::test]
async fn h02_h03_not_ready_is_requeued_and_created_again_until_ready() {
    let h = Harness::new().await;
    h.driver.set_ready_after(2);
    h.create_class("default-class", json!({})).await;
    h.create(dynamic(NAME)).await;
    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    let c = h.get(NAME).await.unwrap();
    assert_eq!(c.status.as_ref().unwrap().ready_to_use, Some(false));
    assert!(c.annotation(keys::ANN_VS_BEING_CREATED).is_none());
    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    assert_eq!(h.driver.calls("CreateSnapshot"), 2);
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert_eq!(h.driver.calls("CreateSnapshot"), 3);
    let c = h.get(NAME).await.unwrap();
    assert_eq!(c.status.unwrap().ready_to_use, Some(true));
    // Ready: no more CSI calls.
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert_eq!(h.driver.calls("CreateSnapshot"), 3);
}

#[tokio::test]
async fn h03_get_snapshot_polls_a_known_handle_instead_of_creating() {
    let caps = DriverCapabilities {
        create_delete_snapshot: true,
        list_snapshots: true,
        get_snapshot: true,
        group_snapshots: false,
    };
    let h = Harness::with(FakeDriver::with_caps(caps), ReconcileConfig::new(DRIVER)).await;
    h.driver.set_ready_after(1);
    h.create_class("default-class", json!({})).await;
    h.create(dynamic(NAME)).await;
    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert_eq!(h.driver.calls("CreateSnapshot"), 1);
    assert_eq!(h.driver.calls("GetSnapshot"), 1);
    assert_eq!(
        h.get(NAME).await.unwrap().status.unwrap().ready_to_use,
        Some(true)
    );
}

#[tokio::test]
async fn h04_empty_secret_annotations_make_no_rpc() {
    let mut h = Harness::new().await;
    h.create_class("default-class", json!({})).await;
    let mut obj = dynamic(NAME);
    obj["metadata"]["annotations"] = json!({
        keys::ANN_DELETION_SECRET_NAME: "", keys::ANN_DELETION_SECRET_NAMESPACE: ""
    });
    obj["status"] = json!({"readyToUse": false});
    h.create(obj).await;
    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    assert_eq!(h.driver.calls("CreateSnapshot"), 0);
    let c = h.get(NAME).await.unwrap();
    let s = c.status.clone().unwrap();
    assert_eq!(s.ready_to_use, Some(false));
    assert_eq!(s.snapshot_handle, None);
    let msg = s.error.unwrap().message.unwrap();
    assert!(
        msg.contains("secret name or namespace not specified"),
        "{msg}"
    );
    assert!(c.annotation(keys::ANN_VS_BEING_CREATED).is_none());
    let events = h.events_for(NAME).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "SnapshotContentCheckandUpdateFailed");
}

#[tokio::test]
async fn h05_missing_secret_is_a_credentials_error() {
    let mut h = Harness::new().await;
    h.create_class("default-class", json!({})).await;
    let mut obj = dynamic(NAME);
    obj["metadata"]["annotations"] = json!({
        keys::ANN_DELETION_SECRET_NAME: "nope", keys::ANN_DELETION_SECRET_NAMESPACE: "default"
    });
    obj["status"] = json!({"readyToUse": false});
    h.create(obj).await;
    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    assert_eq!(h.driver.calls("CreateSnapshot"), 0);
    let msg = h
        .get(NAME)
        .await
        .unwrap()
        .status
        .unwrap()
        .error
        .unwrap()
        .message
        .unwrap();
    assert!(msg.contains("failed to get credentials"), "{msg}");
    let events = h.events_for(NAME).await;
    assert_eq!(events[0].0, "SnapshotContentCheckandUpdateFailed");
}

#[tokio::test]
async fn h06_secret_data_and_plain_parameters_reach_the_driver() {
    let h = Harness::new().await;
    h.create_class(
        "default-class",
        json!({keys::ANN_DELETION_SECRET_NAME: "x", "param1": "value1"}),
    )
    .await;
    h.create_secret(
        "default",
        "snap-secret",
        &[("user", "admin"), ("pass", "hunter2")],
    )
    .await;
    let mut obj = dynamic(NAME);
    obj["metadata"]["annotations"] = json!({
        keys::ANN_DELETION_SECRET_NAME: "snap-secret", keys::ANN_DELETION_SECRET_NAMESPACE: "default"
    });
    h.create(obj).await;
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    let args = h.driver.last_create().unwrap();
    assert_eq!(args.secrets.expose()["user"], "admin");
    assert_eq!(args.secrets.expose()["pass"], "hunter2");
    assert_eq!(args.parameters[keys::ANN_DELETION_SECRET_NAME], "x");
    assert_eq!(args.parameters["param1"], "value1");
    // The secret annotations stay; only being-created is gone.
    let c = h.get(NAME).await.unwrap();
    assert_eq!(annotations(&c).len(), 2);
}

#[tokio::test]
async fn h07_missing_class_on_recreate_keeps_the_handle() {
    let mut h = Harness::new().await;
    let mut obj = dynamic(NAME);
    obj["status"] = json!({"readyToUse": false, "snapshotHandle": "snap-old"});
    h.create(obj).await;
    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    assert_eq!(h.driver.calls("CreateSnapshot"), 0);
    let s = h.get(NAME).await.unwrap().status.unwrap();
    assert_eq!(s.snapshot_handle.as_deref(), Some("snap-old"));
    assert_eq!(s.ready_to_use, Some(false));
    assert!(s.error.unwrap().message.unwrap().contains("not found"));
    let events = h.events_for(NAME).await;
    assert_eq!(events[0].0, "SnapshotContentCheckandUpdateFailed");
}

async fn ready_content(h: &Harness) {
    h.create_class("default-class", json!({})).await;
    h.create(dynamic(NAME)).await;
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert_eq!(h.driver.snapshots().len(), 1);
}

#[tokio::test]
async fn h08_h17_delete_policy_deletes_backend_clears_status_and_finalizer() {
    let mut h = Harness::new().await;
    ready_content(&h).await;
    h.delete_as_controller(NAME).await;
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert_eq!(h.driver.calls("DeleteSnapshot"), 1);
    assert!(h.driver.snapshots().is_empty());
    // The finalizer was the last one: the object is gone.
    assert!(h.get(NAME).await.is_none());
    assert_eq!(h.events_for(NAME).await, vec![]);
}

#[tokio::test]
async fn h08_h23_only_our_finalizer_removed_and_the_delete_not_repeated() {
    let h = Harness::new().await;
    ready_content(&h).await;
    h.merge(
        NAME,
        json!({"metadata": {"finalizers": [keys::FINALIZER_VSC, "example.com/keep"]}}),
    )
    .await;
    let status = h.get(NAME).await.unwrap().status;
    h.delete_as_controller(NAME).await;
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    let c = h.get(NAME).await.unwrap();
    // One write per delete: the status is left as it was.
    assert_eq!(c.status, status);
    assert_eq!(
        c.metadata.finalizers,
        Some(vec!["example.com/keep".to_string()])
    );
    assert_eq!(h.driver.calls("DeleteSnapshot"), 1);
    // Another pass while the other finalizer holds the object: nothing to do.
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert_eq!(h.driver.calls("DeleteSnapshot"), 1);
}

#[tokio::test]
async fn h09_retain_keeps_backend_and_status() {
    let h = Harness::new().await;
    ready_content(&h).await;
    h.merge(NAME, json!({"spec": {"deletionPolicy": "Retain"}, "metadata": {"finalizers": [keys::FINALIZER_VSC, "example.com/keep"]}}))
        .await;
    let before = h.get(NAME).await.unwrap().status;
    h.delete_as_controller(NAME).await;
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert_eq!(h.driver.calls("DeleteSnapshot"), 0);
    assert_eq!(h.driver.snapshots().len(), 1);
    let c = h.get(NAME).await.unwrap();
    assert_eq!(c.status, before);
    assert_eq!(
        c.metadata.finalizers,
        Some(vec!["example.com/keep".to_string()])
    );
}

#[tokio::test]
async fn h10_delete_error_keeps_finalizer_and_requeues() {
    let mut h = Harness::new().await;
    ready_content(&h).await;
    h.delete_as_controller(NAME).await;
    h.driver.fail_next(
        "DeleteSnapshot",
        CsiError::status(tonic::Code::Internal, "boom"),
        1,
    );
    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    let c = h.get(NAME).await.unwrap();
    assert!(
        c.metadata
            .finalizers
            .unwrap()
            .contains(&keys::FINALIZER_VSC.to_string())
    );
    assert_eq!(
        c.status.unwrap().error,
        None,
        "delete errors do not write status.error"
    );
    assert_eq!(
        h.events_for(NAME).await,
        vec![(
            "SnapshotDeleteError".to_string(),
            "Failed to delete snapshot".to_string()
        )]
    );
}

#[tokio::test]
async fn h11_secret_get_failure_during_delete_makes_no_rpc() {
    let mut h = Harness::new().await;
    ready_content(&h).await;
    h.merge(
        NAME,
        json!({"metadata": {"annotations": {keys::ANN_DELETION_SECRET_NAME: "gone", keys::ANN_DELETION_SECRET_NAMESPACE: "default"}}}),
    )
    .await;
    h.delete_as_controller(NAME).await;
    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    assert_eq!(h.driver.calls("DeleteSnapshot"), 0);
    assert!(h.get(NAME).await.is_some());
    assert_eq!(
        h.events_for(NAME).await,
        vec![(
            "SnapshotDeleteError".to_string(),
            "Failed to get snapshot credentials".to_string()
        )]
    );
}

#[tokio::test]
async fn h12_class_secret_parameters_are_not_used_for_delete() {
    let h = Harness::new().await;
    h.create_class(
        "default-class",
        json!({keys::ANN_DELETION_SECRET_NAME: "nope", keys::ANN_DELETION_SECRET_NAMESPACE: "default"}),
    )
    .await;
    h.create(dynamic(NAME)).await;
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    h.delete_as_controller(NAME).await;
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert_eq!(h.driver.calls("DeleteSnapshot"), 1);
    assert!(h.driver.last_secrets("DeleteSnapshot").unwrap().is_empty());
    assert!(h.get(NAME).await.is_none());
}

#[tokio::test]
async fn h13_h14_preprovisioned_is_polled_then_deleted_without_class() {
    let h = Harness::new().await;
    h.driver.add_snapshot(SnapshotInfo {
        snapshot_id: "snap-pre".into(),
        source_volume_id: "vol-9".into(),
        size_bytes: 0,
        creation_time_ns: Some(42),
        ready_to_use: true,
        group_snapshot_id: String::new(),
    });
    h.create(preprovisioned("pre-1", "snap-pre")).await;
    // H.14: no deletionTimestamp, no UID: only a status poll.
    assert_eq!(h.sync("pre-1").await, Outcome::Forget);
    assert_eq!(h.driver.calls("ListSnapshots"), 1);
    assert_eq!(h.driver.calls("DeleteSnapshot"), 0);
    let s = h.get("pre-1").await.unwrap().status.unwrap();
    assert_eq!(s.snapshot_handle.as_deref(), Some("snap-pre"));
    assert_eq!(s.creation_time, Some(42));
    assert_eq!(s.restore_size, None, "size 0 is never written");
    // H.13: deleted (unbound, so no annotation needed) → DeleteSnapshot.
    h.api
        .delete("pre-1", &Default::default())
        .await
        .expect("delete");
    assert_eq!(h.sync("pre-1").await, Outcome::Forget);
    assert_eq!(h.driver.calls("DeleteSnapshot"), 1);
    assert!(h.driver.snapshots().is_empty());
    assert!(h.get("pre-1").await.is_none());
}

#[tokio::test]
async fn preprovisioned_missing_on_backend_is_an_error_status() {
    let mut h = Harness::new().await;
    h.create(preprovisioned("pre-1", "snap-missing")).await;
    assert_eq!(h.sync("pre-1").await, Outcome::Requeue);
    let msg = h
        .get("pre-1")
        .await
        .unwrap()
        .status
        .unwrap()
        .error
        .unwrap()
        .message
        .unwrap();
    assert!(
        msg.contains("no snapshot found for snapshotID snap-missing"),
        "{msg}"
    );
    // The same failure again writes nothing and emits no second event.
    let rv = h.get("pre-1").await.unwrap().metadata.resource_version;
    assert_eq!(h.sync("pre-1").await, Outcome::Requeue);
    assert_eq!(h.get("pre-1").await.unwrap().metadata.resource_version, rv);
    let events = h.events_for("pre-1").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "SnapshotContentCheckandUpdateFailed");
}

#[tokio::test]
async fn h15_content_removed_during_sync_is_requeued_then_dropped() {
    let h = Harness::new().await;
    h.create_class("default-class", json!({})).await;
    h.create(dynamic(NAME)).await;
    h.refresh().await;
    let gate = h.driver.hold_creates();
    let ctrl = h.ctrl().clone();
    let sync = tokio::spawn(async move { ctrl.sync(NAME).await });
    gate.entered().await;
    // Remove the object outright while the create is in flight.
    h.merge(NAME, json!({"metadata": {"finalizers": null}}))
        .await;
    h.api
        .delete(NAME, &Default::default())
        .await
        .expect("delete");
    gate.open();
    assert_eq!(sync.await.unwrap(), Outcome::Requeue);
    // Next pass: the cache has no such key; nothing is recreated.
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert!(h.get(NAME).await.is_none());
    assert_eq!(h.driver.calls("CreateSnapshot"), 1);
}

#[tokio::test]
async fn h16_member_is_not_deleted_individually() {
    let h = Harness::new().await;
    let mut obj = dynamic("member-1");
    obj["spec"]["volumeSnapshotClassName"] = serde_json::Value::Null;
    obj["metadata"]["annotations"] = json!({keys::ANN_VGS_HANDLE_MEMBER: "group-1"});
    obj["status"] = json!({"snapshotHandle": "snap-m", "volumeGroupSnapshotHandle": "group-1", "readyToUse": true});
    h.create(obj).await;
    assert_eq!(h.sync("member-1").await, Outcome::Forget);
    assert_eq!(h.driver.calls("CreateSnapshot"), 0);
    h.delete_as_controller("member-1").await;
    assert_eq!(h.sync("member-1").await, Outcome::Forget);
    assert_eq!(h.driver.calls("DeleteSnapshot"), 0);
    assert!(h.get("member-1").await.is_none());
}

#[tokio::test]
async fn h19_final_create_error_releases_annotation_non_final_keeps_it() {
    let mut h = Harness::new().await;
    h.create_class("default-class", json!({})).await;
    h.create(dynamic(NAME)).await;
    h.driver.fail_next(
        "CreateSnapshot",
        CsiError::status(tonic::Code::DeadlineExceeded, "slow"),
        1,
    );
    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    let c = h.get(NAME).await.unwrap();
    assert!(c.annotation(keys::ANN_VS_BEING_CREATED).is_some());
    // A deletion now waits behind the annotation: no delete yet.
    h.delete_as_controller(NAME).await;
    h.driver.fail_next(
        "CreateSnapshot",
        CsiError::status(tonic::Code::InvalidArgument, "bad"),
        1,
    );
    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    let c = h.get(NAME).await.unwrap();
    assert!(c.annotation(keys::ANN_VS_BEING_CREATED).is_none());
    assert_eq!(h.driver.calls("DeleteSnapshot"), 0);
    // Released: the deletion goes ahead (no snapshot was made).
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert!(h.get(NAME).await.is_none());
    let events = h.events_for(NAME).await;
    let reasons: Vec<&str> = events.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        reasons,
        vec![
            "SnapshotContentCheckandUpdateFailed",
            "SnapshotCreationFailed"
        ]
    );
}

#[tokio::test]
async fn h20_issue_1388_stale_cache_after_in_flight_create_still_deletes() {
    let h = Harness::new().await;
    h.create_class("default-class", json!({})).await;
    h.create(dynamic(NAME)).await;
    h.refresh().await;
    let gate = h.driver.hold_creates();
    let ctrl = h.ctrl().clone();
    let sync = tokio::spawn(async move { ctrl.sync(NAME).await });
    gate.entered().await;
    h.delete_as_controller(NAME).await;
    gate.open();
    // The create finishes and asks for another pass because of the deletion.
    assert_eq!(sync.await.unwrap(), Outcome::Requeue);
    assert_eq!(h.driver.snapshots().len(), 1);
    // Even with a cache that still shows the object from before the
    // create's writes, the next pass deletes the snapshot.
    assert_eq!(h.ctrl().sync(NAME).await, Outcome::Forget);
    assert!(h.driver.snapshots().is_empty(), "backend snapshot leaked");
    assert!(h.get(NAME).await.is_none());
}

#[tokio::test]
async fn h21_unknown_reserved_parameter_never_blocks_deletion() {
    let mut h = Harness::new().await;
    h.create_class("default-class", json!({"csi.storage.k8s.io/bim": "x"}))
        .await;
    h.create(dynamic(NAME)).await;
    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    let c = h.get(NAME).await.unwrap();
    assert!(c.annotation(keys::ANN_VS_BEING_CREATED).is_none());
    assert_eq!(h.driver.calls("CreateSnapshot"), 0);
    h.delete_as_controller(NAME).await;
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert!(h.get(NAME).await.is_none());
    let events = h.events_for(NAME).await;
    assert_eq!(events[0].0, "SnapshotCreationFailed");
    assert!(
        events[0]
            .1
            .contains("found unknown parameter key \"csi.storage.k8s.io/bim\"")
    );
}

#[tokio::test]
async fn other_drivers_contents_are_left_alone() {
    let h = Harness::new().await;
    h.create_class("default-class", json!({})).await;
    let mut obj = dynamic(NAME);
    obj["spec"]["driver"] = json!("other.csi.k8s.io");
    h.create(obj).await;
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert_eq!(h.driver.calls("CreateSnapshot"), 0);
    assert_eq!(h.get(NAME).await.unwrap().status, None);
}

#[tokio::test]
async fn h22_preprovisioned_poll_uses_the_class_list_secret_template() {
    let mut h = Harness::new().await;
    h.driver.add_snapshot(SnapshotInfo {
        snapshot_id: "snap-pre".into(),
        ready_to_use: true,
        ..Default::default()
    });
    h.create_class(
        "list-class",
        json!({
            keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAME: "list-${volumesnapshotcontent.name}",
            keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAMESPACE: "kube-system"
        }),
    )
    .await;
    h.create_secret("kube-system", "list-pre-1", &[("token", "t")])
        .await;
    let mut obj = preprovisioned("pre-1", "snap-pre");
    obj["spec"]["volumeSnapshotClassName"] = json!("list-class");
    h.create(obj).await;
    assert_eq!(h.sync("pre-1").await, Outcome::Forget);
    let secrets = h.driver.last_secrets("ListSnapshots").unwrap();
    assert_eq!(secrets.expose()["token"], "t");
    // A template using a VolumeSnapshot variable cannot be resolved here.
    h.create_class(
        "bad-class",
        json!({
            keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAME: "${volumesnapshot.name}",
            keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAMESPACE: "kube-system"
        }),
    )
    .await;
    let mut obj = preprovisioned("pre-2", "snap-pre");
    obj["spec"]["volumeSnapshotClassName"] = json!("bad-class");
    h.create(obj).await;
    assert_eq!(h.sync("pre-2").await, Outcome::Requeue);
    assert_eq!(h.driver.calls("ListSnapshots"), 1);
    let msg = h
        .get("pre-2")
        .await
        .unwrap()
        .status
        .unwrap()
        .error
        .unwrap()
        .message
        .unwrap();
    assert!(msg.contains("invalid tokens"), "{msg}");
    let events = h.events_for("pre-2").await;
    assert_eq!(events[0].0, "SnapshotContentCheckandUpdateFailed");
}

#[tokio::test]
async fn h18_deletion_without_the_controllers_annotation_waits() {
    let h = Harness::new().await;
    ready_content(&h).await;
    // Deleted by hand: deletionTimestamp but no being-deleted annotation.
    h.api
        .delete(NAME, &Default::default())
        .await
        .expect("delete");
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert_eq!(h.driver.calls("DeleteSnapshot"), 0);
    assert!(h.get(NAME).await.is_some(), "waits for the controller");
    // The controller's annotation arrives: now it is deleted.
    h.merge(
        NAME,
        json!({"metadata": {"annotations": {keys::ANN_VS_BEING_DELETED: "yes"}}}),
    )
    .await;
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert_eq!(h.driver.calls("DeleteSnapshot"), 1);
    assert!(h.get(NAME).await.is_none());
}

#[tokio::test]
async fn malformed_objects_are_left_alone() {
    use csi_snapshotter::k8s::types::{Lenient, VolumeSnapshotClass, VolumeSnapshotContent};
    use std::sync::Arc;
    let mut h = Harness::new().await;
    let mut bad = dynamic(NAME);
    bad["status"] = json!({"readyToUse": "maybe"});
    h.contents.insert(
        NAME.into(),
        Arc::new(Lenient::<VolumeSnapshotContent>::from_value(bad)),
    );
    assert_eq!(h.ctrl().sync(NAME).await, Outcome::Forget);
    assert_eq!(h.driver.calls("CreateSnapshot"), 0);
    // A class that does not decode counts as missing: a class error, no RPC.
    h.create(dynamic(NAME)).await;
    h.refresh().await;
    h.classes.insert(
        "default-class".into(),
        Arc::new(Lenient::<VolumeSnapshotClass>::from_value(
            json!({"metadata": {"name": "default-class"}, "driver": DRIVER, "parameters": ["x"]}),
        )),
    );
    assert_eq!(h.ctrl().sync(NAME).await, Outcome::Requeue);
    assert_eq!(h.driver.calls("CreateSnapshot"), 0);
    let events = h.events_for(NAME).await;
    assert_eq!(events[0].0, "SnapshotCreationFailed");
    assert!(events[0].1.contains("not found"), "{}", events[0].1);
}

/// Found by the crash test: the snapshot-controller can put the
/// being-deleted annotation on a content that had no annotations at all
/// just before the sidecar marks its create in flight from the older copy.
/// That mark adds the whole annotation map; it must not replace the one
/// written meanwhile, or being-deleted is lost and the content waits
/// forever for a deletion that never comes (finalizer kept, snapshot kept).
#[tokio::test]
async fn marking_a_create_in_flight_never_drops_an_annotation_added_meanwhile() {
    let mut h = Harness::new().await;
    h.create_class("default-class", json!({})).await;
    h.create(dynamic(NAME)).await;
    h.refresh().await;
    h.delete_as_controller(NAME).await;
    // This pass still sees the copy without annotations and no deletion.
    assert_eq!(h.ctrl().sync(NAME).await, Outcome::Requeue);
    let live = h.get(NAME).await.unwrap();
    assert_eq!(live.annotation(keys::ANN_VS_BEING_DELETED), Some("yes"));
    assert_eq!(h.driver.calls("CreateSnapshot"), 0);
    assert!(live.status.is_none(), "a conflict is not an error status");
    // With the cache caught up the deletion goes ahead.
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert!(h.get(NAME).await.is_none());
    assert!(h.driver.snapshots().is_empty());
    assert_eq!(h.events_for(NAME).await, vec![]);
}

#[tokio::test]
async fn version_store_keeps_an_entry_only_while_a_write_is_ahead_of_the_cache() {
    let h = Harness::new().await;
    h.create_class("default-class", json!({})).await;
    h.create(dynamic(NAME)).await;
    // The create writes three times; the cache still holds the copy that
    // was read, so the last write's version is kept to skip older events.
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert!(h.ctrl().is_tracked(NAME));
    // Once the cache delivered that write, a pass with nothing to do
    // leaves no entry behind.
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert!(!h.ctrl().is_tracked(NAME));
    // The next pass is a first sighting again, and still does nothing.
    let creates = h.driver.snapshots().len();
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert_eq!(h.driver.snapshots().len(), creates);
}
