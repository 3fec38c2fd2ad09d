//! Spec H lines 1–24 for VolumeSnapshotContents at the decision layer: what
//! `decide` plans and what the pure follow-ups say about each outcome.

use std::collections::BTreeMap;

use csi_snapshotter::csi::driver::{DriverCapabilities, SnapshotInfo};
use csi_snapshotter::csi::error::CsiError;
use csi_snapshotter::k8s::keys;
use csi_snapshotter::k8s::types::{
    VolumeSnapshotClass, VolumeSnapshotContent, VolumeSnapshotContentStatus, VolumeSnapshotError,
};
use csi_snapshotter::reconcile::content::{
    CsiDelete, PollMethod, Step, decide, on_create_error, poll_failure,
};
use csi_snapshotter::reconcile::filter::{Freshness, VersionStore};
use csi_snapshotter::reconcile::messages::{
    self, Attempt, DeleteStage, EventReason, snapshot_delete_warning,
};
use csi_snapshotter::reconcile::patch;
use csi_snapshotter::reconcile::requeue_after_success;
use csi_snapshotter::reconcile::secrets::SecretRef;
use csi_snapshotter::reconcile::status::{
    SnapshotObservation, merge_snapshot_status, snapshot_error_patch,
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

mod reconcile_support;

use reconcile_support::{DRIVER, VSC_UID as UID, caps, cfg, dynamic_vsc};

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

/// A dynamic VSC as the controller creates it.
fn dynamic() -> VolumeSnapshotContent {
    serde_json::from_value(dynamic_vsc()).unwrap()
}

/// A pre-provisioned VSC (only `spec.source.snapshotHandle`).
fn preprovisioned() -> VolumeSnapshotContent {
    serde_json::from_value(json!({
        "metadata": {"name": "pre-1", "resourceVersion": "1",
                     "finalizers": [keys::FINALIZER_VSC]},
        "spec": {
            "deletionPolicy": "Delete",
            "driver": DRIVER,
            "source": {"snapshotHandle": "snap-pre"},
            "volumeSnapshotRef": {"name": "vs-1", "namespace": "default"}
        }
    }))
    .unwrap()
}

fn class(params: &[(&str, &str)]) -> VolumeSnapshotClass {
    VolumeSnapshotClass {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("default-class".into()),
            ..Default::default()
        },
        driver: DRIVER.into(),
        deletion_policy: Some("Delete".into()),
        parameters: Some(
            params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
    }
}

fn with_status(
    mut c: VolumeSnapshotContent,
    s: VolumeSnapshotContentStatus,
) -> VolumeSnapshotContent {
    c.status = Some(s);
    c
}

fn annotate(mut c: VolumeSnapshotContent, pairs: &[(&str, &str)]) -> VolumeSnapshotContent {
    let a = c.metadata.annotations.get_or_insert_default();
    for (k, v) in pairs {
        a.insert(k.to_string(), v.to_string());
    }
    c
}

fn being_deleted(c: VolumeSnapshotContent) -> VolumeSnapshotContent {
    let mut c = annotate(c, &[(keys::ANN_VS_BEING_DELETED, "yes")]);
    c.metadata.deletion_timestamp = Some(Time(now()));
    c
}

fn not_ready(handle: Option<&str>) -> VolumeSnapshotContentStatus {
    VolumeSnapshotContentStatus {
        ready_to_use: Some(false),
        snapshot_handle: handle.map(Into::into),
        ..Default::default()
    }
}

fn reply(ready: bool) -> SnapshotInfo {
    SnapshotInfo {
        snapshot_id: "snap-1".into(),
        source_volume_id: "vol-1".into(),
        size_bytes: 1024,
        creation_time_ns: Some(1_700_000_000_000_000_001),
        ready_to_use: ready,
        group_snapshot_id: String::new(),
    }
}

fn secret_class() -> VolumeSnapshotClass {
    class(&[
        (keys::PARAM_SNAPSHOTTER_SECRET_NAME, "secret"),
        (keys::PARAM_SNAPSHOTTER_SECRET_NAMESPACE, "default"),
    ])
}

#[test]
fn h01_dynamic_create_then_ready_status_and_no_requeue() {
    let cls = secret_class();
    let mut cfg = cfg();
    cfg.extra_create_metadata = true;
    let c = dynamic();
    let Step::Create(plan) = decide(&c, Some(&cls), &caps(), &cfg) else {
        panic!("expected a create");
    };
    assert_eq!(plan.attempt, Attempt::First);
    assert_eq!(plan.name, format!("snapshot-{UID}"));
    assert_eq!(plan.source_volume_id, "vol-1");
    let keys_sent: Vec<&str> = plan.parameters.keys().map(String::as_str).collect();
    assert_eq!(
        keys_sent,
        vec![
            keys::PARAM_VS_NAME,
            keys::PARAM_VS_NAMESPACE,
            keys::PARAM_VSC_NAME
        ]
    );
    assert_eq!(plan.parameters[keys::PARAM_VSC_NAME], "snapcontent-1");
    assert_eq!(plan.secret_ref, None);
    assert_eq!(
        plan.mark_in_flight.as_ref().map(|p| p.to_value()),
        Some(
            json!([{"op": "add", "path": "/metadata/resourceVersion", "value": "1"},
                    {"op": "add", "path": "/metadata/annotations",
                     "value": {keys::ANN_VS_BEING_CREATED: "yes"}}])
        )
    );
    let status =
        merge_snapshot_status(None, &SnapshotObservation::from_create(&reply(true)), now())
            .unwrap();
    assert_eq!(
        serde_json::to_value(&status).unwrap(),
        json!({"creationTime": 1_700_000_000_000_000_001i64, "readyToUse": true,
               "restoreSize": 1024, "snapshotHandle": "snap-1"})
    );
    let done = with_status(c, status);
    assert!(!requeue_after_success(&done));
    // The next sync of the ready content makes no call.
    assert_eq!(decide(&done, Some(&cls), &caps(), &cfg), Step::Done);
}

#[test]
fn h02_create_not_ready_requeues() {
    let status = merge_snapshot_status(
        None,
        &SnapshotObservation::from_create(&reply(false)),
        now(),
    )
    .unwrap();
    assert_eq!(status.ready_to_use, Some(false));
    assert!(requeue_after_success(&with_status(dynamic(), status)));
}

#[test]
fn h03_not_ready_dynamic_is_created_again() {
    let cls = class(&[]);
    let c = with_status(dynamic(), not_ready(Some("snap-1")));
    let Step::Create(plan) = decide(&c, Some(&cls), &caps(), &cfg()) else {
        panic!("expected a re-create");
    };
    assert_eq!(plan.attempt, Attempt::Recheck);
    assert_eq!(plan.name, format!("snapshot-{UID}"));
    let still = merge_snapshot_status(
        c.status.as_ref(),
        &SnapshotObservation::from_create(&reply(false)),
        now(),
    );
    // creationTime and size were absent: they are filled, readiness stays.
    let still = still.unwrap();
    assert!(requeue_after_success(&with_status(
        c.clone(),
        still.clone()
    )));
    let ready = merge_snapshot_status(
        Some(&still),
        &SnapshotObservation::from_create(&reply(true)),
        now(),
    )
    .unwrap();
    assert_eq!(ready.ready_to_use, Some(true));
    assert!(!requeue_after_success(&with_status(c, ready)));
}

#[test]
fn h03_with_get_snapshot_the_known_handle_is_polled_instead() {
    let c = with_status(dynamic(), not_ready(Some("snap-1")));
    let caps = DriverCapabilities {
        get_snapshot: true,
        ..caps()
    };
    let Step::Poll(plan) = decide(&c, Some(&class(&[])), &caps, &cfg()) else {
        panic!("expected a poll");
    };
    assert_eq!(plan.method, PollMethod::GetSnapshot);
    assert_eq!(plan.snapshot_id, "snap-1");
    // Without a handle yet, only the create can find the snapshot.
    let c = with_status(dynamic(), not_ready(None));
    assert!(matches!(
        decide(&c, Some(&class(&[])), &caps, &cfg()),
        Step::Create(_)
    ));
}

#[test]
fn h04_empty_secret_annotations_fail_before_any_call() {
    let c = annotate(
        with_status(dynamic(), not_ready(None)),
        &[
            (keys::ANN_DELETION_SECRET_NAME, ""),
            (keys::ANN_DELETION_SECRET_NAMESPACE, ""),
        ],
    );
    let Step::Fail(f) = decide(&c, Some(&class(&[])), &caps(), &cfg()) else {
        panic!("expected a failure");
    };
    assert_eq!(f.reason, EventReason::SnapshotContentCheckandUpdateFailed);
    assert!(
        f.message.contains("secret name or namespace not specified"),
        "{}",
        f.message
    );
    let p = snapshot_error_patch(c.status.as_ref(), &f.message, now()).unwrap();
    let v = p.to_value();
    assert_eq!(
        v[1],
        json!({"op": "add", "path": "/status/readyToUse", "value": false})
    );
    assert!(!v.to_string().contains("snapshotHandle"));
    // The being-created annotation is not added for an input error.
    assert!(c.annotation(keys::ANN_VS_BEING_CREATED).is_none());
}

#[test]
fn h05_secret_get_failure_reports_credentials() {
    let c = annotate(
        with_status(dynamic(), not_ready(None)),
        &[
            (keys::ANN_DELETION_SECRET_NAME, "missing"),
            (keys::ANN_DELETION_SECRET_NAMESPACE, "default"),
        ],
    );
    let Step::Create(plan) = decide(&c, Some(&class(&[])), &caps(), &cfg()) else {
        panic!("expected a create");
    };
    let f = (messages::SNAPSHOT_TEXTS.failure)(
        plan.attempt,
        messages::create_input_error(
            c.name(),
            messages::credentials_error(c.name(), "secrets \"missing\" not found"),
        ),
    );
    assert_eq!(f.reason, EventReason::SnapshotContentCheckandUpdateFailed);
    assert!(
        f.message.contains("failed to get credentials"),
        "{}",
        f.message
    );
}

#[test]
fn h06_valid_secret_and_lookalike_parameters_pass_through() {
    let c = annotate(
        dynamic(),
        &[
            (keys::ANN_DELETION_SECRET_NAME, "secret"),
            (keys::ANN_DELETION_SECRET_NAMESPACE, "default"),
        ],
    );
    let cls = class(&[(keys::ANN_DELETION_SECRET_NAME, "x"), ("param1", "value1")]);
    let Step::Create(plan) = decide(&c, Some(&cls), &caps(), &cfg()) else {
        panic!("expected a create");
    };
    assert_eq!(
        plan.secret_ref,
        Some(SecretRef {
            name: "secret".into(),
            namespace: "default".into()
        })
    );
    assert_eq!(
        plan.parameters,
        BTreeMap::from([
            (keys::ANN_DELETION_SECRET_NAME.to_string(), "x".to_string()),
            ("param1".to_string(), "value1".to_string()),
        ])
    );
    // The annotation map exists, so only the one key is added.
    assert_eq!(
        plan.mark_in_flight.unwrap().to_value()[0]["path"],
        json!("/metadata/annotations/snapshot.storage.kubernetes.io~1volumesnapshot-being-created")
    );
}

#[test]
fn h07_missing_class_on_recreate_keeps_handle() {
    let c = with_status(dynamic(), not_ready(Some("snap-1")));
    let Step::Fail(f) = decide(&c, None, &caps(), &cfg()) else {
        panic!("expected a failure");
    };
    assert_eq!(f.reason, EventReason::SnapshotContentCheckandUpdateFailed);
    assert!(
        f.message.contains("\\\"default-class\\\" not found"),
        "{}",
        f.message
    );
    let v = snapshot_error_patch(c.status.as_ref(), &f.message, now())
        .unwrap()
        .to_value();
    // Only error and readyToUse are touched: the handle stays.
    let paths: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["/status/error", "/status/readyToUse"]);
}

#[test]
fn first_create_without_class_or_with_reserved_key_fails_before_annotation() {
    let mut c = dynamic();
    c.spec.volume_snapshot_class_name = None;
    let Step::Fail(f) = decide(&c, None, &caps(), &cfg()) else {
        panic!("expected a failure");
    };
    assert_eq!(f.reason, EventReason::SnapshotCreationFailed);
    let cls = class(&[("csi.storage.k8s.io/bim", "x")]);
    let Step::Fail(f) = decide(&dynamic(), Some(&cls), &caps(), &cfg()) else {
        panic!("expected a failure");
    };
    assert_eq!(
        f.message,
        "Failed to create snapshot: failed to remove CSI Parameters of prefixed keys: found unknown parameter key \"csi.storage.k8s.io/bim\" with reserved namespace csi.storage.k8s.io/"
    );
    let mut c = dynamic();
    c.spec.volume_snapshot_ref.uid = None;
    let Step::Fail(f) = decide(&c, Some(&class(&[])), &caps(), &cfg()) else {
        panic!("expected a failure");
    };
    assert!(
        f.message.contains("not bound to a snapshot"),
        "{}",
        f.message
    );
}

#[test]
fn stuck_annotation_does_not_block_deletion_after_input_error() {
    // A deleted content whose create never got past input checks has no
    // being-created annotation, so it goes straight to finalizer removal.
    let c = being_deleted(with_status(dynamic(), not_ready(None)));
    let Step::Delete(plan) = decide(&c, None, &caps(), &cfg()) else {
        panic!("expected a delete");
    };
    assert_eq!(plan.csi_delete, None);
    assert!(plan.remove_finalizer.is_some());
}

#[test]
fn create_error_classification() {
    let Step::Create(plan) = decide(&dynamic(), Some(&class(&[])), &caps(), &cfg()) else {
        panic!("expected a create");
    };
    let final_err = CsiError::status(tonic::Code::InvalidArgument, "bad");
    let out = on_create_error(&plan, &final_err);
    assert_eq!(
        out.remove_being_created.unwrap(),
        patch::remove_annotation(keys::ANN_VS_BEING_CREATED)
    );
    assert_eq!(out.failure.reason, EventReason::SnapshotCreationFailed);
    assert_eq!(
        out.failure.message,
        "Failed to create snapshot: failed to take snapshot of the volume vol-1: \"rpc error: code = InvalidArgument desc = bad\""
    );
    for e in [
        CsiError::status(tonic::Code::DeadlineExceeded, "slow"),
        CsiError::Transport("socket closed".into()),
    ] {
        assert_eq!(on_create_error(&plan, &e).remove_being_created, None);
    }
}

#[test]
fn h08_delete_policy_deletes_clears_and_removes_finalizer() {
    let c = being_deleted(with_status(
        dynamic(),
        VolumeSnapshotContentStatus {
            ready_to_use: Some(true),
            snapshot_handle: Some("snap-1".into()),
            creation_time: Some(1),
            restore_size: Some(2),
            ..Default::default()
        },
    ));
    let Step::Delete(plan) = decide(&c, None, &caps(), &cfg()) else {
        panic!("expected a delete");
    };
    assert_eq!(
        plan.csi_delete,
        Some(CsiDelete {
            snapshot_id: "snap-1".into(),
            secret_ref: None
        })
    );
    assert_eq!(
        plan.remove_finalizer.unwrap().to_value(),
        json!([{"op": "test", "path": "/metadata/finalizers/0", "value": keys::FINALIZER_VSC},
               {"op": "remove", "path": "/metadata/finalizers/0"}])
    );
}

#[test]
fn h10_delete_rpc_error_is_a_warning_only() {
    let w = snapshot_delete_warning(DeleteStage::Rpc);
    assert_eq!(w.reason, EventReason::SnapshotDeleteError);
    assert_eq!(w.message, "Failed to delete snapshot");
}

#[test]
fn h11_delete_credentials_failure_makes_no_rpc() {
    let c = annotate(
        being_deleted(with_status(dynamic(), not_ready(Some("snap-1")))),
        &[
            (keys::ANN_DELETION_SECRET_NAME, ""),
            (keys::ANN_DELETION_SECRET_NAMESPACE, "default"),
        ],
    );
    assert_eq!(
        decide(&c, None, &caps(), &cfg()),
        Step::DeleteFailed(snapshot_delete_warning(DeleteStage::Credentials))
    );
    assert_eq!(
        snapshot_delete_warning(DeleteStage::Credentials).message,
        "Failed to get snapshot credentials"
    );
}

#[test]
fn h12_class_secret_parameters_are_ignored_for_delete() {
    let cls = class(&[
        (keys::ANN_DELETION_SECRET_NAME, "nope"),
        (keys::ANN_DELETION_SECRET_NAMESPACE, "default"),
    ]);
    let c = being_deleted(with_status(dynamic(), not_ready(Some("snap-1"))));
    let Step::Delete(plan) = decide(&c, Some(&cls), &caps(), &cfg()) else {
        panic!("expected a delete");
    };
    assert_eq!(plan.csi_delete.unwrap().secret_ref, None);
    assert!(plan.remove_finalizer.is_some());
}

#[test]
fn h13_preprovisioned_delete_without_class_deletes_handle() {
    let c = being_deleted(with_status(
        preprovisioned(),
        VolumeSnapshotContentStatus {
            snapshot_handle: Some("snap-pre".into()),
            ready_to_use: Some(true),
            ..Default::default()
        },
    ));
    let Step::Delete(plan) = decide(&c, None, &caps(), &cfg()) else {
        panic!("expected a delete");
    };
    assert_eq!(plan.csi_delete.unwrap().snapshot_id, "snap-pre");
    // Even before its status was filled, the spec handle is deleted.
    let c = being_deleted(preprovisioned());
    let Step::Delete(plan) = decide(&c, None, &caps(), &cfg()) else {
        panic!("expected a delete");
    };
    assert_eq!(plan.csi_delete.unwrap().snapshot_id, "snap-pre");
}

#[test]
fn h14_preprovisioned_unbound_without_deletion_is_only_polled() {
    let Step::Poll(plan) = decide(&preprovisioned(), None, &caps(), &cfg()) else {
        panic!("expected a poll");
    };
    assert_eq!(plan.method, PollMethod::ListSnapshots);
    assert_eq!(plan.snapshot_id, "snap-pre");
    assert_eq!(plan.status_handle, "snap-pre");
    assert_eq!(plan.secret_ref, None);
    // Without LIST_SNAPSHOTS the handle is trusted.
    let no_list = DriverCapabilities {
        list_snapshots: false,
        ..caps()
    };
    let Step::Poll(plan) = decide(&preprovisioned(), None, &no_list, &cfg()) else {
        panic!("expected a poll");
    };
    assert_eq!(plan.method, PollMethod::Trust);
    let s = merge_snapshot_status(None, &SnapshotObservation::trusted("snap-pre"), now()).unwrap();
    assert_eq!(s.ready_to_use, Some(true));
    assert_eq!(s.restore_size, None);
    assert_eq!(s.creation_time, Some(1_800_000_000_000_000_000));
}

#[test]
fn preprovisioned_poll_resolves_list_secret_from_class() {
    let mut c = preprovisioned();
    c.spec.volume_snapshot_class_name = Some("default-class".into());
    let cls = class(&[
        (
            keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAME,
            "list-${volumesnapshotcontent.name}",
        ),
        (keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAMESPACE, "kube-system"),
    ]);
    let Step::Poll(plan) = decide(&c, Some(&cls), &caps(), &cfg()) else {
        panic!("expected a poll");
    };
    assert_eq!(
        plan.secret_ref,
        Some(SecretRef {
            name: "list-pre-1".into(),
            namespace: "kube-system".into()
        })
    );
    let Step::Fail(f) = decide(&c, None, &caps(), &cfg()) else {
        panic!("expected a failure for the missing class");
    };
    assert_eq!(f.reason, EventReason::SnapshotContentCheckandUpdateFailed);
    let f = poll_failure(&c, &plan, messages::snapshot_not_found("snap-pre"));
    assert_eq!(
        f.message,
        "Failed to check and update snapshot content: failed to list snapshot for content pre-1: \"no snapshot found for snapshotID snap-pre\""
    );
}

#[test]
fn h15_content_removed_during_sync_is_dropped_from_the_store() {
    let mut store = VersionStore::new();
    let c = dynamic();
    assert_eq!(store.observe(c.name(), "1", &c), Ok(Freshness::Current));
    // The status write failed with NotFound: that is an error (requeue) …
    let msg = messages::status_update_error(
        c.name(),
        "volumesnapshotcontents \"snapcontent-1\" not found",
    );
    assert!(msg.starts_with("snapshot controller failed to update snapcontent-1 on API server"));
    // … and the next pass finds no object: the key leaves the store.
    assert!(store.remove(c.name()).is_some());
    assert!(!store.contains(c.name()));
}

fn member(status: Option<VolumeSnapshotContentStatus>) -> VolumeSnapshotContent {
    let mut c = annotate(dynamic(), &[(keys::ANN_VGS_HANDLE_MEMBER, "group-1")]);
    c.spec.volume_snapshot_class_name = None;
    c.status = status;
    c
}

#[test]
fn h16_member_delete_never_calls_delete_snapshot() {
    let c = being_deleted(member(Some(VolumeSnapshotContentStatus {
        snapshot_handle: Some("snap-m".into()),
        volume_group_snapshot_handle: Some("group-1".into()),
        ready_to_use: Some(true),
        ..Default::default()
    })));
    let Step::Delete(plan) = decide(&c, None, &caps(), &cfg()) else {
        panic!("expected a delete");
    };
    assert_eq!(plan.csi_delete, None);
    assert!(plan.remove_finalizer.is_some());
}

#[test]
fn members_are_never_created_and_wait_for_their_status() {
    assert_eq!(
        decide(&member(None), None, &caps(), &cfg()),
        Step::WaitForMember
    );
    let filled = member(Some(VolumeSnapshotContentStatus {
        snapshot_handle: Some("snap-m".into()),
        volume_group_snapshot_handle: Some("group-1".into()),
        ready_to_use: Some(false),
        ..Default::default()
    }));
    let filled = annotate(
        filled,
        &[
            (keys::ANN_DELETION_SECRET_NAME, "gs"),
            (keys::ANN_DELETION_SECRET_NAMESPACE, "ns"),
        ],
    );
    let Step::Poll(plan) = decide(&filled, None, &caps(), &cfg()) else {
        panic!("expected a poll");
    };
    assert_eq!(plan.snapshot_id, "snap-m");
    assert_eq!(plan.secret_ref.unwrap().name, "gs");
}

#[test]
fn h17_deletion_with_status_handle_and_no_group_deletes() {
    let c = being_deleted(with_status(dynamic(), not_ready(Some("snap-1"))));
    let Step::Delete(plan) = decide(&c, None, &caps(), &cfg()) else {
        panic!("expected a delete");
    };
    assert_eq!(plan.csi_delete.unwrap().snapshot_id, "snap-1");
}

#[test]
fn h19_create_continues_while_being_created_is_set() {
    let c = annotate(
        being_deleted(with_status(dynamic(), not_ready(None))),
        &[(keys::ANN_VS_BEING_CREATED, "yes")],
    );
    let Step::Create(plan) = decide(&c, Some(&class(&[])), &caps(), &cfg()) else {
        panic!("expected the create to continue");
    };
    // Already marked: no second annotation patch.
    assert_eq!(plan.mark_in_flight, None);
    // Once it is ready, a requeue lets the waiting deletion run (#1388).
    let ready = with_status(
        c.clone(),
        VolumeSnapshotContentStatus {
            ready_to_use: Some(true),
            snapshot_handle: Some("snap-1".into()),
            ..Default::default()
        },
    );
    assert!(requeue_after_success(&ready));
    assert_eq!(
        decide(&ready, None, &caps(), &cfg()),
        Step::RemoveBeingCreated {
            patch: patch::remove_annotation(keys::ANN_VS_BEING_CREATED),
            requeue: true
        }
    );
}

#[test]
fn error_status_dedup_means_no_event() {
    let f = messages::Failure::snapshot(Attempt::Recheck, "x");
    let c = with_status(
        dynamic(),
        VolumeSnapshotContentStatus {
            error: Some(VolumeSnapshotError {
                message: Some(f.message.clone()),
                time: None,
            }),
            ..Default::default()
        },
    );
    assert_eq!(
        snapshot_error_patch(c.status.as_ref(), &f.message, now()),
        None
    );
}
