//! A group snapshot's whole life through the group controller: the
//! watch-driven runner, the CreateVolumeGroupSnapshot request, retries that
//! reuse the backend group, a restart in the middle of a create, status
//! write conflicts, pre-provisioned credentials and error dedup.

mod group_support;

use std::sync::Arc;
use std::time::Duration;

use csi_snapshotter::controller::common::Outcome;
use csi_snapshotter::controller::group::GroupController;
use csi_snapshotter::controller::pipeline::ControllerOptions;
use csi_snapshotter::controller::queue::Backoff;
use csi_snapshotter::csi::driver::{CreateGroupSnapshotArgs, SnapshotDriver};
use csi_snapshotter::csi::proto::v1 as pb;
use csi_snapshotter::k8s::keys;
use csi_snapshotter::reconcile::ReconcileConfig;
use csi_snapshotter::reconcile::naming::NamingRule;
use csi_snapshotter::testing::groups::{self, GroupRequest};
use group_support::{CLASS, DRIVER, WAIT, dynamic_content, preprovisioned_content, set};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const NAME: &str = "groupsnapcontent-1";
const CREATE: &str = "CreateVolumeGroupSnapshot";
const DELETE: &str = "DeleteVolumeGroupSnapshot";

fn error_message(c: &csi_snapshotter::k8s::types::VolumeGroupSnapshotContent) -> String {
    c.status
        .as_ref()
        .and_then(|s| s.error.as_ref())
        .and_then(|e| e.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn two_volume_group_ready_then_deleted_through_the_watch() {
    let h = harness!();
    // Not ready on the first answers: the key is requeued until it is.
    h.mock.set_ready_after_polls(2);
    let mut options = ControllerOptions::new(DRIVER);
    options.workers = 2;
    options.backoff = Backoff {
        start: Duration::from_millis(10),
        max: Duration::from_millis(100),
    };
    let stop = CancellationToken::new();
    let running = GroupController::start(
        h.driver.clone(),
        h.client.clone(),
        h.client.clone(),
        h.events.clone(),
        options,
        None,
        &stop,
    )
    .await
    .expect("caches sync");

    let req = GroupRequest::new(DRIVER, "vgs-demo", ["vol-1", "vol-2"]);
    let ready = groups::snapshot_group(&h.client, &req, WAIT)
        .await
        .expect("group becomes ready");

    let status = ready.status.as_ref().unwrap();
    let backend = h.mock.group_snapshots();
    assert_eq!(backend.len(), 1);
    assert_eq!(
        status.volume_group_snapshot_handle.as_deref(),
        Some(backend[0].group_snapshot_id.as_str())
    );
    let list = status.volume_snapshot_info_list.as_ref().unwrap();
    let volumes: Vec<_> = list
        .iter()
        .map(|i| i.volume_handle.as_deref().unwrap())
        .collect();
    assert_eq!(volumes, ["vol-1", "vol-2"]);
    let member_ids: Vec<String> = backend[0]
        .snapshots
        .iter()
        .map(|s| s.snapshot_id.clone())
        .collect();
    for info in list {
        assert!(member_ids.contains(info.snapshot_handle.as_ref().unwrap()));
        // The list is written once, from the first (not ready) reply, and
        // never refreshed (D.6 step 3).
        assert_eq!(info.ready_to_use, Some(false));
    }
    // The group creationTime is an RFC 3339 string, the members' are ns.
    let raw = h.raw(&req.content_name());
    let created = raw["status"]["creationTime"].as_str().expect("a string");
    assert!(created.parse::<jiff::Timestamp>().is_ok(), "{created}");
    assert!(raw["status"]["volumeSnapshotInfoList"][0]["creationTime"].is_i64());
    assert!(ready.annotation(keys::ANN_VGS_BEING_CREATED).is_none());
    let req_sent: pb::CreateVolumeGroupSnapshotRequest = h.mock.last_request(CREATE).unwrap();
    assert_eq!(req_sent.name, format!("groupsnapshot-{}", req.uid));
    assert_eq!(req_sent.source_volume_ids, ["vol-1", "vol-2"]);

    // Delete policy: the backend group and its members go, then the object.
    groups::delete_group(&h.client, &req.content_name(), WAIT)
        .await
        .expect("content removed");
    assert!(h.mock.group_snapshots().is_empty());
    assert!(h.mock.snapshots().is_empty());
    assert_eq!(h.mock.calls(DELETE), 1);

    stop.cancel();
    running.shutdown().await;
}

#[tokio::test]
async fn create_request_name_parameters_and_extra_metadata() {
    let mut cfg = ReconcileConfig::new(DRIVER);
    cfg.extra_create_metadata = true;
    cfg.group_snapshot_naming = NamingRule {
        prefix: "gs".into(),
        uuid_length: Some(8),
    };
    let h = harness!(cfg);
    h.create_secret("default", "create-secret", &[("key", "value")])
        .await;
    h.create_class(
        CLASS,
        json!({
            "csi.storage.k8s.io/group-snapshotter-secret-name": "create-secret",
            "csi.storage.k8s.io/group-snapshotter-secret-namespace": "default",
            "foo": "bar",
        }),
    )
    .await;
    let mut obj = dynamic_content(NAME, &["vol-2", "vol-1"]);
    set(
        &mut obj,
        "metadata.annotations",
        json!({
            keys::ANN_GROUP_DELETION_SECRET_NAME: "create-secret",
            keys::ANN_GROUP_DELETION_SECRET_NAMESPACE: "default",
        }),
    );
    h.create(obj).await;

    assert_eq!(h.sync(NAME).await, Outcome::Forget);

    let req: pb::CreateVolumeGroupSnapshotRequest = h.mock.last_request(CREATE).unwrap();
    assert_eq!(req.name, "gs-6f1e2d3c");
    assert_eq!(req.source_volume_ids, ["vol-2", "vol-1"]);
    let params: std::collections::BTreeMap<_, _> = req.parameters.into_iter().collect();
    assert_eq!(
        params,
        [
            ("csi.storage.k8s.io/volumegroupsnapshot/name", "vgs-1"),
            (
                "csi.storage.k8s.io/volumegroupsnapshot/namespace",
                "default"
            ),
            ("csi.storage.k8s.io/volumegroupsnapshotcontent/name", NAME),
            ("foo", "bar"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    );
    let secrets = h.mock.last_secrets(CREATE).unwrap();
    assert_eq!(secrets.get("key").map(String::as_str), Some("value"));
    // GetPluginInfo precedes the create (D.3 step 6).
    assert_eq!(h.mock.calls("GetPluginInfo"), 1);
}

#[tokio::test]
async fn unknown_reserved_parameter_fails_before_the_annotation() {
    let h = harness!();
    h.create_class(CLASS, json!({"csi.storage.k8s.io/bim": "x"}))
        .await;
    h.create(dynamic_content(NAME, &["vol-1"])).await;

    assert_eq!(h.sync(NAME).await, Outcome::Requeue);

    let c = h.get(NAME).await;
    assert!(
        error_message(&c).contains("csi.storage.k8s.io/bim"),
        "{}",
        error_message(&c)
    );
    assert!(c.annotation(keys::ANN_VGS_BEING_CREATED).is_none());
    assert_eq!(h.mock.calls(CREATE), 0);
    // So a deletion is not blocked: only the finalizer goes.
    h.request_delete(NAME).await;
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert!(h.is_gone(NAME).await);
}

#[tokio::test]
async fn lost_reply_keeps_annotation_and_the_retry_reuses_the_group() {
    let h = harness!();
    h.create_class(CLASS, json!({})).await;
    h.create(dynamic_content(NAME, &["vol-1", "vol-2"])).await;
    // The backend creates the group, but the reply is lost.
    h.mock.fail_next_after(CREATE, tonic::Code::Unavailable, 1);

    assert_eq!(h.sync(NAME).await, Outcome::Requeue);

    let c = h.get(NAME).await;
    assert!(c.annotation(keys::ANN_VGS_BEING_CREATED).is_some());
    assert!(error_message(&c).contains("code = Unavailable"));
    let backend = h.mock.group_snapshots();
    assert_eq!(backend.len(), 1);

    assert_eq!(h.sync(NAME).await, Outcome::Forget);

    let after = h.mock.group_snapshots();
    assert_eq!(after.len(), 1, "no second group");
    assert_eq!(after[0].group_snapshot_id, backend[0].group_snapshot_id);
    assert_eq!(h.mock.snapshots().len(), 2, "no extra member snapshots");
    let c = h.get(NAME).await;
    assert!(c.annotation(keys::ANN_VGS_BEING_CREATED).is_none());
    assert_eq!(
        c.status_handle(),
        Some(backend[0].group_snapshot_id.as_str())
    );
    assert!(c.is_ready());
    assert_eq!(
        c.status.as_ref().unwrap().error,
        None,
        "error cleared when ready"
    );
}

#[tokio::test]
async fn restart_in_the_middle_of_a_create_neither_leaks_nor_duplicates() {
    let h = harness!();
    h.create_class(CLASS, json!({})).await;
    h.create(dynamic_content(NAME, &["vol-1", "vol-2"])).await;
    h.mock
        .fail_next_after(CREATE, tonic::Code::DeadlineExceeded, 1);
    assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    assert_eq!(h.mock.group_snapshots().len(), 1);
    // The VGS is deleted while the create is unresolved.
    h.request_delete(NAME).await;

    // A new process: empty version store, caches filled from the server.
    let restarted = Arc::new(GroupController::new(
        h.driver.clone(),
        h.client.clone(),
        h.client.clone(),
        h.contents.clone(),
        h.classes.clone(),
        h.events.clone(),
        ReconcileConfig::new(DRIVER),
    ));
    h.refresh().await;
    // The create is finished first (same group), then the delete proceeds.
    assert_eq!(restarted.sync(NAME).await, Outcome::Requeue);
    assert_eq!(h.mock.group_snapshots().len(), 1, "no duplicate");
    assert_eq!(h.mock.calls(DELETE), 0);
    let mut passes = 0;
    while !h.is_gone(NAME).await {
        passes += 1;
        assert!(passes <= 3, "content not removed");
        h.refresh().await;
        restarted.sync(NAME).await;
    }
    assert_eq!(h.mock.calls(DELETE), 1);
    assert!(h.mock.group_snapshots().is_empty(), "no leaked group");
    assert!(h.mock.snapshots().is_empty(), "no leaked members");
}

#[tokio::test]
async fn status_conflict_reads_once_and_retries() {
    let h = harness!();
    let info = h
        .driver
        .create_group_snapshot(CreateGroupSnapshotArgs {
            name: "pre".into(),
            source_volume_ids: vec!["vol-a".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let members: Vec<String> = info
        .snapshots
        .iter()
        .map(|s| s.snapshot_id.clone())
        .collect();
    h.create(preprovisioned_content(
        NAME,
        &info.group_snapshot_id,
        &members,
    ))
    .await;
    h.refresh().await;
    // Someone else writes: the cached copy is now stale.
    h.annotate(NAME, json!({"example.com/touched": "yes"}))
        .await;
    let gets = h.server.request_count("GET", "volumegroupsnapshotcontents");

    assert_eq!(h.ctrl.sync(NAME).await, Outcome::Forget);

    assert!(h.get(NAME).await.is_ready());
    // One GET after the conflict (plus the one just above).
    assert_eq!(
        h.server.request_count("GET", "volumegroupsnapshotcontents"),
        gets + 2
    );
    assert_eq!(
        h.server
            .request_count("PUT", "volumegroupsnapshotcontents/status"),
        2
    );

    // Two conflicts in a row: requeue, no error status, no event.
    let mut obj = preprovisioned_content("gsc-2", &info.group_snapshot_id, &members);
    set(&mut obj, "metadata.name", json!("gsc-2"));
    h.create(obj).await;
    h.server
        .faults()
        .fail_next("PUT", "volumegroupsnapshotcontents", "status", 409, 2);
    assert_eq!(h.sync("gsc-2").await, Outcome::Requeue);
    assert!(h.get("gsc-2").await.status.is_none());
    assert!(h.event_reasons("gsc-2").await.is_empty());
    assert_eq!(h.sync("gsc-2").await, Outcome::Forget);
    assert!(h.get("gsc-2").await.is_ready());
}

#[tokio::test]
async fn preprovisioned_get_secret_from_class_template() {
    let h = harness!();
    h.create_secret("default", &format!("{NAME}-get"), &[("token", "t")])
        .await;
    h.create_class(
        CLASS,
        json!({
            "csi.storage.k8s.io/group-snapshotter-get-secret-name": "${volumegroupsnapshotcontent.name}-get",
            "csi.storage.k8s.io/group-snapshotter-get-secret-namespace": "default",
        }),
    )
    .await;
    let info = h
        .driver
        .create_group_snapshot(CreateGroupSnapshotArgs {
            name: "pre".into(),
            source_volume_ids: vec!["vol-a".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let members: Vec<String> = info
        .snapshots
        .iter()
        .map(|s| s.snapshot_id.clone())
        .collect();
    let mut obj = preprovisioned_content(NAME, &info.group_snapshot_id, &members);
    set(&mut obj, "spec.volumeGroupSnapshotClassName", json!(CLASS));
    h.create(obj).await;

    assert_eq!(h.sync(NAME).await, Outcome::Forget);

    let secrets = h.mock.last_secrets("GetVolumeGroupSnapshot").unwrap();
    assert_eq!(secrets.get("token").map(String::as_str), Some("t"));
}

#[tokio::test]
async fn identical_failures_write_one_event() {
    let h = harness!();
    h.create_class(CLASS, json!({})).await;
    h.create(dynamic_content(NAME, &["vol-1"])).await;
    h.mock.fail_next(CREATE, tonic::Code::Internal, 3);

    for _ in 0..3 {
        assert_eq!(h.sync(NAME).await, Outcome::Requeue);
    }

    let events = h.event_reasons(NAME).await;
    let mut reasons: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    reasons.sort_unstable();
    // The first attempt (no status) and the first re-check differ in prefix;
    // the third failure repeats the second message exactly and is dropped.
    assert_eq!(
        reasons,
        [
            "GroupSnapshotContentCheckandUpdateFailed",
            "GroupSnapshotCreationFailed"
        ]
    );
    assert_eq!(h.mock.calls(CREATE), 3);
}

/// Found by the crash test (the group form of the content case): a group
/// content without annotations marked being-deleted just before the
/// sidecar marks its create in flight from the older copy keeps that
/// annotation, no group is cut, and the deletion then goes ahead.
#[tokio::test]
async fn marking_a_group_create_in_flight_never_drops_an_annotation_added_meanwhile() {
    let h = harness!();
    h.create_class(CLASS, json!({})).await;
    h.create(dynamic_content(NAME, &["vol-1", "vol-2"])).await;
    h.refresh().await;
    h.request_delete(NAME).await;
    // This pass still sees the copy without annotations and no deletion.
    assert_eq!(h.ctrl.sync(NAME).await, Outcome::Requeue);
    let live = h.get(NAME).await;
    assert_eq!(live.annotation(keys::ANN_VGS_BEING_DELETED), Some("yes"));
    assert!(live.status.is_none(), "a conflict is not an error status");
    assert_eq!(h.mock.calls(CREATE), 0);
    assert_eq!(h.sync(NAME).await, Outcome::Forget);
    assert!(h.is_gone(NAME).await);
    assert!(h.mock.group_snapshots().is_empty());
}
