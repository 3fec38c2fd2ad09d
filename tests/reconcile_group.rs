//! Spec H lines 25–41 (group snapshots) at the decision layer.

use csi_snapshotter::csi::driver::{GroupSnapshotInfo, SnapshotInfo};
use csi_snapshotter::csi::error::CsiError;
use csi_snapshotter::k8s::keys;
use csi_snapshotter::k8s::types::{
    VolumeGroupSnapshotClass, VolumeGroupSnapshotContent, VolumeGroupSnapshotContentStatus,
    VolumeSnapshotInfo,
};
use csi_snapshotter::reconcile::filter::{Freshness, VersionStore};
use csi_snapshotter::reconcile::group::{
    GroupCsiDelete, GroupInputError, GroupStep, decide_group, group_create_name,
    group_delete_target, group_poll_failure, group_poll_target, on_group_create_error,
};
use csi_snapshotter::reconcile::messages::{
    Attempt, DeleteStage, EventReason, group_delete_warning,
};
use csi_snapshotter::reconcile::naming::NamingRule;
use csi_snapshotter::reconcile::patch;
use csi_snapshotter::reconcile::requeue_after_success;
use csi_snapshotter::reconcile::secrets::SecretRef;
use csi_snapshotter::reconcile::status::{GroupObservation, group_error_patch, merge_group_status};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::json;

mod reconcile_support;

use reconcile_support::{DRIVER, VGSC_UID as UID, cfg, dynamic_vgsc};

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn dynamic() -> VolumeGroupSnapshotContent {
    serde_json::from_value(dynamic_vgsc()).unwrap()
}

fn preprovisioned() -> VolumeGroupSnapshotContent {
    serde_json::from_value(json!({
        "metadata": {"name": "pre-group", "resourceVersion": "1",
                     "finalizers": [keys::FINALIZER_VGSC]},
        "spec": {
            "deletionPolicy": "Delete",
            "driver": DRIVER,
            "source": {"groupSnapshotHandles": {"volumeGroupSnapshotHandle": "group-pre",
                                                "volumeSnapshotHandles": ["s1", "s2"]}},
            "volumeGroupSnapshotRef": {"name": "vgs-1", "namespace": "default"}
        }
    }))
    .unwrap()
}

fn class(params: &[(&str, &str)]) -> VolumeGroupSnapshotClass {
    VolumeGroupSnapshotClass {
        metadata: ObjectMeta {
            name: Some("group-class".into()),
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

fn annotate(
    mut c: VolumeGroupSnapshotContent,
    pairs: &[(&str, &str)],
) -> VolumeGroupSnapshotContent {
    let a = c.metadata.annotations.get_or_insert_default();
    for (k, v) in pairs {
        a.insert(k.to_string(), v.to_string());
    }
    c
}

fn being_deleted(c: VolumeGroupSnapshotContent) -> VolumeGroupSnapshotContent {
    let mut c = annotate(c, &[(keys::ANN_VGS_BEING_DELETED, "yes")]);
    c.metadata.deletion_timestamp = Some(Time(now()));
    c
}

fn with_status(
    mut c: VolumeGroupSnapshotContent,
    s: VolumeGroupSnapshotContentStatus,
) -> VolumeGroupSnapshotContent {
    c.status = Some(s);
    c
}

fn group_reply(ready: bool) -> GroupSnapshotInfo {
    let member = |id: &str, vol: &str| SnapshotInfo {
        snapshot_id: id.into(),
        source_volume_id: vol.into(),
        size_bytes: 10,
        creation_time_ns: Some(5),
        ready_to_use: ready,
        group_snapshot_id: "group-1".into(),
    };
    GroupSnapshotInfo {
        group_snapshot_id: "group-1".into(),
        snapshots: vec![member("s1", "vol-1"), member("s2", "vol-2")],
        creation_time_ns: Some(1_700_000_000_000_000_000),
        ready_to_use: ready,
    }
}

fn create_plan() -> csi_snapshotter::reconcile::group::GroupCreatePlan {
    match decide_group(&dynamic(), Some(&class(&[])), &cfg()) {
        GroupStep::Create(p) => p,
        other => panic!("expected a create, got {other:?}"),
    }
}

#[test]
fn dynamic_group_create_plan() {
    let mut cfg = cfg();
    cfg.extra_create_metadata = true;
    let cls = class(&[(keys::PARAM_GROUP_SNAPSHOTTER_SECRET_NAME, "s"), ("k", "v")]);
    let c = annotate(
        dynamic(),
        &[
            (keys::ANN_GROUP_DELETION_SECRET_NAME, "gsec"),
            (keys::ANN_GROUP_DELETION_SECRET_NAMESPACE, "default"),
        ],
    );
    let GroupStep::Create(plan) = decide_group(&c, Some(&cls), &cfg) else {
        panic!("expected a create");
    };
    assert_eq!(plan.attempt, Attempt::First);
    assert_eq!(plan.name, format!("groupsnapshot-{UID}"));
    assert_eq!(plan.source_volume_ids, vec!["vol-1", "vol-2"]);
    assert_eq!(plan.parameters.len(), 4);
    assert_eq!(plan.parameters[keys::PARAM_VGSC_NAME], "groupsnapcontent-1");
    assert_eq!(plan.parameters[keys::PARAM_VGS_NAME], "vgs-1");
    assert_eq!(
        plan.secret_ref,
        Some(SecretRef {
            name: "gsec".into(),
            namespace: "default".into()
        })
    );
    assert!(
        plan.mark_in_flight.unwrap().to_value()[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("groupsnapshot.storage.kubernetes.io~1volumegroupsnapshot-being-created")
    );
}

#[test]
fn h25_plain_create_error_sets_error_status_and_keeps_annotation() {
    let out = on_group_create_error(&create_plan(), &CsiError::Transport("boom".into()));
    assert_eq!(out.remove_being_created, None);
    assert_eq!(out.failure.reason, EventReason::GroupSnapshotCreationFailed);
    assert_eq!(
        out.failure.message,
        "Failed to create group snapshot: failed to take group snapshot of the volumes [vol-1 vol-2]: \"boom\""
    );
    let p = group_error_patch(None, &out.failure.message, now()).unwrap();
    assert_eq!(p.to_value()[0]["path"], json!("/status"));
}

#[test]
fn h26_final_create_error_removes_annotation() {
    let out = on_group_create_error(
        &create_plan(),
        &CsiError::status(tonic::Code::InvalidArgument, "bad"),
    );
    assert_eq!(
        out.remove_being_created,
        Some(patch::remove_annotation(keys::ANN_VGS_BEING_CREATED))
    );
}

#[test]
fn h27_create_not_ready_requeues() {
    let s = merge_group_status(
        None,
        &GroupObservation::from_create(&group_reply(false)),
        now(),
    )
    .unwrap();
    assert_eq!(s.ready_to_use, Some(false));
    assert_eq!(s.volume_snapshot_info_list.as_ref().unwrap().len(), 2);
    assert!(requeue_after_success(&with_status(dynamic(), s)));
    let s = merge_group_status(
        None,
        &GroupObservation::from_create(&group_reply(true)),
        now(),
    )
    .unwrap();
    assert!(!requeue_after_success(&with_status(dynamic(), s)));
}

#[test]
fn h28_preprovisioned_poll_without_class() {
    let GroupStep::Poll(plan) = decide_group(&preprovisioned(), None, &cfg()) else {
        panic!("expected a poll");
    };
    assert_eq!(plan.secret_ref, None);
    assert_eq!(plan.group_snapshot_id, "group-pre");
    assert_eq!(plan.snapshot_ids, vec!["s1", "s2"]);
    assert_eq!(plan.status_handle, "group-pre");
    let reply = GroupSnapshotInfo {
        group_snapshot_id: "other".into(),
        ready_to_use: true,
        ..group_reply(true)
    };
    let s = merge_group_status(
        None,
        &GroupObservation::from_get(&plan.status_handle, &reply),
        now(),
    )
    .unwrap();
    assert_eq!(s.volume_group_snapshot_handle.as_deref(), Some("group-pre"));
    // Members of pre-provisioned groups are not listed.
    assert_eq!(s.volume_snapshot_info_list, None);
    assert!(!requeue_after_success(&with_status(preprovisioned(), s)));
}

#[test]
fn preprovisioned_poll_resolves_get_secret() {
    let mut c = preprovisioned();
    c.spec.volume_group_snapshot_class_name = Some("group-class".into());
    let cls = class(&[
        (
            keys::PARAM_GROUP_SNAPSHOTTER_GET_SECRET_NAME,
            "${volumegroupsnapshotcontent.name}",
        ),
        (keys::PARAM_GROUP_SNAPSHOTTER_GET_SECRET_NAMESPACE, "ns"),
    ]);
    let GroupStep::Poll(plan) = decide_group(&c, Some(&cls), &cfg()) else {
        panic!("expected a poll");
    };
    assert_eq!(plan.secret_ref.unwrap().name, "pre-group");
}

#[test]
fn h29_poll_not_ready_requeues_and_error_sets_status() {
    let s = merge_group_status(
        None,
        &GroupObservation::from_get("group-pre", &group_reply(false)),
        now(),
    )
    .unwrap();
    assert!(requeue_after_success(&with_status(
        preprovisioned(),
        s.clone()
    )));
    let f = group_poll_failure(
        &preprovisioned(),
        CsiError::status(tonic::Code::Internal, "x"),
    );
    assert_eq!(
        f.reason,
        EventReason::GroupSnapshotContentCheckandUpdateFailed
    );
    let v = group_error_patch(Some(&s), &f.message, now())
        .unwrap()
        .to_value();
    assert_eq!(v[0]["path"], json!("/status/error"));
    assert_eq!(v[0]["value"]["message"], json!(f.message));
}

#[test]
fn h30_existing_handle_kept_and_empty_list_filled() {
    let cur = VolumeGroupSnapshotContentStatus {
        volume_group_snapshot_handle: Some("old-handle".into()),
        ready_to_use: Some(false),
        ..Default::default()
    };
    let s = merge_group_status(
        Some(&cur),
        &GroupObservation::from_create(&group_reply(true)),
        now(),
    )
    .unwrap();
    assert_eq!(
        s.volume_group_snapshot_handle.as_deref(),
        Some("old-handle")
    );
    assert_eq!(s.volume_snapshot_info_list.unwrap().len(), 2);
}

#[test]
fn h31_equal_status_means_no_write() {
    let o = GroupObservation::from_create(&group_reply(true));
    let s = merge_group_status(None, &o, now()).unwrap();
    assert_eq!(merge_group_status(Some(&s), &o, now()), None);
}

fn ready_status() -> VolumeGroupSnapshotContentStatus {
    VolumeGroupSnapshotContentStatus {
        volume_group_snapshot_handle: Some("group-1".into()),
        ready_to_use: Some(true),
        creation_time: Some(Time(now())),
        volume_snapshot_info_list: Some(vec![
            VolumeSnapshotInfo {
                snapshot_handle: Some("s1".into()),
                ..Default::default()
            },
            VolumeSnapshotInfo {
                snapshot_handle: Some("s2".into()),
                ..Default::default()
            },
        ]),
        error: None,
    }
}

#[test]
fn h32_group_delete_clears_handle_then_removes_finalizer() {
    let c = being_deleted(with_status(dynamic(), ready_status()));
    let GroupStep::Delete(plan) = decide_group(&c, None, &cfg()) else {
        panic!("expected a delete");
    };
    assert_eq!(
        plan.csi_delete,
        Some(GroupCsiDelete {
            group_snapshot_id: "group-1".into(),
            snapshot_ids: vec!["s1".into(), "s2".into()],
            secret_ref: None
        })
    );
    assert!(plan.remove_finalizer.is_some());
}

#[test]
fn h33_delete_of_empty_object_is_an_error_not_a_crash() {
    let empty = VolumeGroupSnapshotContent::default();
    assert_eq!(
        group_delete_target(&empty),
        Err(GroupInputError::NoSnapshots(String::new()))
    );
    // A handle without IDs: the event is the RPC failure, requeue.
    let mut c = being_deleted(with_status(
        dynamic(),
        VolumeGroupSnapshotContentStatus {
            volume_group_snapshot_handle: Some("group-1".into()),
            ..Default::default()
        },
    ));
    c.spec.source.group_snapshot_handles = None;
    assert_eq!(
        decide_group(&c, None, &cfg()),
        GroupStep::DeleteFailed(group_delete_warning(DeleteStage::Rpc))
    );
}

#[test]
fn h36_group_credentials_from_annotations() {
    let c = annotate(
        dynamic(),
        &[
            (keys::ANN_GROUP_DELETION_SECRET_NAME, ""),
            (keys::ANN_GROUP_DELETION_SECRET_NAMESPACE, "ns"),
        ],
    );
    let GroupStep::Fail(f) = decide_group(&c, Some(&class(&[])), &cfg()) else {
        panic!("expected a failure");
    };
    assert!(f.message.contains("secret name or namespace not specified"));
    let c = being_deleted(with_status(c, ready_status()));
    assert_eq!(
        decide_group(&c, None, &cfg()),
        GroupStep::DeleteFailed(group_delete_warning(DeleteStage::Credentials))
    );
}

#[test]
fn h37_group_class_lookup() {
    // dynamic without a class name → error
    let mut c = dynamic();
    c.spec.volume_group_snapshot_class_name = None;
    assert!(matches!(decide_group(&c, None, &cfg()), GroupStep::Fail(_)));
    // pre-provisioned without a class → fine
    assert!(matches!(
        decide_group(&preprovisioned(), None, &cfg()),
        GroupStep::Poll(_)
    ));
    // named but missing → error, for both kinds
    let GroupStep::Fail(f) = decide_group(&dynamic(), None, &cfg()) else {
        panic!("expected a failure");
    };
    assert_eq!(f.reason, EventReason::GroupSnapshotCreationFailed);
    assert!(f.message.contains("not found"));
    let mut p = preprovisioned();
    p.spec.volume_group_snapshot_class_name = Some("gone".into());
    let GroupStep::Fail(f) = decide_group(&p, None, &cfg()) else {
        panic!("expected a failure");
    };
    assert_eq!(
        f.reason,
        EventReason::GroupSnapshotContentCheckandUpdateFailed
    );
}

#[test]
fn h39_store_forgets_missing_keys_and_keeps_failed_ones() {
    let mut store = VersionStore::new();
    let c = dynamic();
    assert_eq!(store.observe(c.name(), "1", &c), Ok(Freshness::Current));
    // A failed sync leaves the entry in place.
    assert!(store.contains(c.name()));
    // A key missing from the cache is forgotten.
    store.remove(c.name());
    assert!(store.is_empty());
}

#[test]
fn h40_group_create_pre_rpc_checks() {
    let mut c = dynamic();
    c.spec.volume_group_snapshot_ref.uid = None;
    let err = group_create_name(&c, &cfg()).unwrap_err();
    assert!(err.contains("not bound to a group snapshot"), "{err}");
    let mut c = dynamic();
    c.spec.source.volume_handles = Some(vec![]);
    let err = group_create_name(&c, &cfg()).unwrap_err();
    assert!(err.contains("No volumes found to snapshot"), "{err}");
    let mut cfg = cfg();
    cfg.group_snapshot_naming = NamingRule {
        prefix: "groupsnapshot".into(),
        uuid_length: NamingRule::uuid_length_from_flag(-1).unwrap(),
    };
    assert_eq!(
        group_create_name(&dynamic(), &cfg).unwrap(),
        format!("groupsnapshot-{UID}")
    );
    // Unbound dynamic content fails before the annotation is added.
    let mut c = dynamic();
    c.spec.volume_group_snapshot_ref.uid = None;
    assert!(matches!(
        decide_group(&c, Some(&class(&[])), &cfg),
        GroupStep::Fail(_)
    ));
}

#[test]
fn h41_empty_ids_and_handle_fallbacks() {
    let mut c = preprovisioned();
    c.spec
        .source
        .group_snapshot_handles
        .as_mut()
        .unwrap()
        .volume_snapshot_handles
        .clear();
    assert!(matches!(
        group_poll_target(&c),
        Err(GroupInputError::NoSnapshots(_))
    ));
    assert!(matches!(
        decide_group(&c, None, &cfg()),
        GroupStep::Fail(f) if f.message.contains("no snapshots found")
    ));
    // handle: status first, then spec
    let c = with_status(
        preprovisioned(),
        VolumeGroupSnapshotContentStatus {
            volume_group_snapshot_handle: Some("from-status".into()),
            ..Default::default()
        },
    );
    assert_eq!(group_poll_target(&c).unwrap().0, "from-status");
    assert_eq!(group_delete_target(&c).unwrap().0, "from-status");
    assert_eq!(group_poll_target(&preprovisioned()).unwrap().0, "group-pre");
    assert_eq!(
        group_delete_target(&preprovisioned()).unwrap().0,
        "group-pre"
    );
    // neither → error
    let mut c = dynamic();
    c.status = Some(ready_status());
    c.status.as_mut().unwrap().volume_group_snapshot_handle = None;
    assert!(matches!(
        group_delete_target(&c),
        Err(GroupInputError::MissingHandle(_))
    ));
}
