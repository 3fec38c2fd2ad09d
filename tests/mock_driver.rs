//! The mock CSI driver over its Unix socket, through the generated tonic
//! clients: CSI semantics (csi-wire.md §7) and the test knobs.
#![cfg(feature = "testing")]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use csi_snapshotter::csi::proto::v1 as pb;
use csi_snapshotter::csi::proto::v1::controller_client::ControllerClient;
use csi_snapshotter::csi::proto::v1::controller_service_capability::rpc::Type as CtrlCap;
use csi_snapshotter::csi::proto::v1::group_controller_client::GroupControllerClient;
use csi_snapshotter::csi::proto::v1::identity_client::IdentityClient;
use csi_snapshotter::testing::mock_driver::{FailWhen, Malformed, MockConfig, MockDriver};
use tonic::Code;
use tonic::transport::Channel;

struct Harness {
    _dir: tempfile::TempDir,
    mock: MockDriver,
    ctrl: ControllerClient<Channel>,
    group: GroupControllerClient<Channel>,
    identity: IdentityClient<Channel>,
}

async fn start(config: MockConfig) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    start_in(dir, config).await
}

async fn start_in(dir: tempfile::TempDir, config: MockConfig) -> Harness {
    let mock = MockDriver::start(dir.path().join("csi.sock"), config)
        .await
        .expect("mock starts");
    let channel = mock.channel().await.expect("connect");
    Harness {
        _dir: dir,
        ctrl: ControllerClient::new(channel.clone()),
        group: GroupControllerClient::new(channel.clone()),
        identity: IdentityClient::new(channel),
        mock,
    }
}

fn create_req(name: &str, source: &str) -> pb::CreateSnapshotRequest {
    pb::CreateSnapshotRequest {
        name: name.to_string(),
        source_volume_id: source.to_string(),
        ..Default::default()
    }
}

async fn create(h: &mut Harness, name: &str, source: &str) -> Result<pb::Snapshot, tonic::Status> {
    let resp = h.ctrl.create_snapshot(create_req(name, source)).await?;
    Ok(resp.into_inner().snapshot.expect("snapshot in reply"))
}

async fn list(
    h: &mut Harness,
    req: pb::ListSnapshotsRequest,
) -> Result<pb::ListSnapshotsResponse, tonic::Status> {
    Ok(h.ctrl.list_snapshots(req).await?.into_inner())
}

fn list_by_id(id: &str) -> pb::ListSnapshotsRequest {
    pb::ListSnapshotsRequest {
        snapshot_id: id.to_string(),
        ..Default::default()
    }
}

fn group_req(name: &str, vols: &[&str]) -> pb::CreateVolumeGroupSnapshotRequest {
    pb::CreateVolumeGroupSnapshotRequest {
        name: name.to_string(),
        source_volume_ids: vols.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

async fn create_group(
    h: &mut Harness,
    name: &str,
    vols: &[&str],
) -> Result<pb::VolumeGroupSnapshot, tonic::Status> {
    let resp = h
        .group
        .create_volume_group_snapshot(group_req(name, vols))
        .await?;
    Ok(resp
        .into_inner()
        .group_snapshot
        .expect("group_snapshot in reply"))
}

fn ids(g: &pb::VolumeGroupSnapshot) -> Vec<String> {
    g.snapshots.iter().map(|s| s.snapshot_id.clone()).collect()
}

#[tokio::test]
async fn identity_reports_name_capabilities_and_probe_readiness() {
    let mut h = start(MockConfig {
        driver_name: "hostpath.csi.k8s.io".into(),
        probe_not_ready_times: 2,
        ..MockConfig::default()
    })
    .await;
    let info = h
        .identity
        .get_plugin_info(pb::GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "hostpath.csi.k8s.io");
    assert!(!info.vendor_version.is_empty());

    let mut ready = Vec::new();
    for _ in 0..3 {
        let p = h
            .identity
            .probe(pb::ProbeRequest {})
            .await
            .unwrap()
            .into_inner();
        ready.push(p.ready);
    }
    assert_eq!(ready, vec![Some(false), Some(false), Some(true)]);
    assert_eq!(h.mock.calls("Probe"), 3);

    let caps = h
        .identity
        .get_plugin_capabilities(pb::GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let types: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(pb::plugin_capability::Type::Service(s)) => Some(s.r#type),
            _ => None,
        })
        .collect();
    use pb::plugin_capability::service::Type;
    assert!(types.contains(&(Type::ControllerService as i32)));
    assert!(types.contains(&(Type::GroupControllerService as i32)));

    let ctrl = h
        .ctrl
        .controller_get_capabilities(pb::ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let ctrl: Vec<i32> = ctrl
        .capabilities
        .iter()
        .filter_map(|c| {
            c.r#type
                .as_ref()
                .map(|pb::controller_service_capability::Type::Rpc(r)| r.r#type)
        })
        .collect();
    assert!(ctrl.contains(&(CtrlCap::CreateDeleteSnapshot as i32)));
    assert!(ctrl.contains(&(CtrlCap::ListSnapshots as i32)));
    assert!(!ctrl.contains(&(CtrlCap::GetSnapshot as i32)));
    h.mock.stop().await;
}

#[tokio::test]
async fn group_service_can_be_switched_off() {
    let mut h = start(MockConfig {
        group_caps: false,
        ..MockConfig::default()
    })
    .await;
    let caps = h
        .identity
        .get_plugin_capabilities(pb::GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caps.capabilities.len(), 1, "only CONTROLLER_SERVICE");
    let err = create_group(&mut h, "g", &["v1"]).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    h.mock.set_group_caps(true);
    create_group(&mut h, "g", &["v1"]).await.unwrap();
}

#[tokio::test]
async fn create_snapshot_is_idempotent_by_name() {
    let mut h = start(MockConfig::default()).await;
    let a = create(&mut h, "snapshot-1", "vol-a").await.unwrap();
    assert!(!a.snapshot_id.is_empty());
    assert_eq!(a.source_volume_id, "vol-a");
    assert!(a.creation_time.is_some());
    assert!(a.ready_to_use);
    assert_eq!(
        a.size_bytes,
        csi_snapshotter::testing::mock_driver::DEFAULT_SNAPSHOT_SIZE
    );

    assert_eq!(h.mock.snapshot(&a.snapshot_id).as_ref(), Some(&a));
    let again = create(&mut h, "snapshot-1", "vol-a").await.unwrap();
    assert_eq!(again.snapshot_id, a.snapshot_id);
    assert_eq!(again.creation_time, a.creation_time);

    let other = create(&mut h, "snapshot-2", "vol-a").await.unwrap();
    assert_ne!(other.snapshot_id, a.snapshot_id);

    let err = create(&mut h, "snapshot-1", "vol-b").await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(h.mock.snapshots().len(), 2);
    assert_eq!(h.mock.calls("CreateSnapshot"), 4);
}

#[tokio::test]
async fn create_snapshot_validates_arguments() {
    let mut h = start(MockConfig::default()).await;
    assert_eq!(
        create(&mut h, "", "vol").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        create(&mut h, "n", "").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert!(h.mock.snapshots().is_empty());
}

#[tokio::test]
async fn snapshot_size_comes_from_the_source_volume() {
    let mut h = start(MockConfig::default()).await;
    let vol = h
        .ctrl
        .create_volume(pb::CreateVolumeRequest {
            name: "pvc-1".into(),
            capacity_range: Some(pb::CapacityRange {
                required_bytes: 5 << 20,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(vol.capacity_bytes, 5 << 20);
    let snap = create(&mut h, "s", &vol.volume_id).await.unwrap();
    assert_eq!(snap.size_bytes, 5 << 20);
    assert_eq!(h.mock.volumes().len(), 1);
}

#[tokio::test]
async fn snapshot_becomes_ready_after_n_polls() {
    let mut h = start(MockConfig {
        ready_after_polls: 2,
        ..MockConfig::default()
    })
    .await;
    let first = create(&mut h, "s", "v").await.unwrap();
    assert!(!first.ready_to_use);
    let poll1 = create(&mut h, "s", "v").await.unwrap();
    assert!(!poll1.ready_to_use);
    // A ListSnapshots counts as a poll too.
    let listed = list(&mut h, list_by_id(&first.snapshot_id)).await.unwrap();
    assert!(listed.entries[0].snapshot.as_ref().unwrap().ready_to_use);
    let later = create(&mut h, "s", "v").await.unwrap();
    assert!(later.ready_to_use);

    // Readiness is latched even if the threshold is raised afterwards.
    h.mock.set_ready_after_polls(100);
    assert!(create(&mut h, "s", "v").await.unwrap().ready_to_use);
    assert!(!create(&mut h, "t", "v").await.unwrap().ready_to_use);
}

#[tokio::test]
async fn delete_snapshot_is_idempotent() {
    let mut h = start(MockConfig::default()).await;
    let s = create(&mut h, "s", "v").await.unwrap();
    let del = |id: &str| pb::DeleteSnapshotRequest {
        snapshot_id: id.to_string(),
        secrets: HashMap::new(),
    };
    h.ctrl.delete_snapshot(del(&s.snapshot_id)).await.unwrap();
    assert!(h.mock.snapshots().is_empty());
    h.ctrl.delete_snapshot(del(&s.snapshot_id)).await.unwrap();
    h.ctrl.delete_snapshot(del("never-existed")).await.unwrap();
    let err = h.ctrl.delete_snapshot(del("")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // The name is free again.
    let again = create(&mut h, "s", "other").await.unwrap();
    assert_ne!(again.snapshot_id, s.snapshot_id);
}

#[tokio::test]
async fn list_snapshots_filters_and_pages() {
    let mut h = start(MockConfig::default()).await;
    let mut all = Vec::new();
    for i in 0..5 {
        let src = if i % 2 == 0 { "even" } else { "odd" };
        all.push(
            create(&mut h, &format!("s{i}"), src)
                .await
                .unwrap()
                .snapshot_id,
        );
    }

    let one = list(&mut h, list_by_id(&all[3])).await.unwrap();
    assert_eq!(one.entries.len(), 1);
    assert_eq!(
        one.entries[0].snapshot.as_ref().unwrap().snapshot_id,
        all[3]
    );

    let none = list(&mut h, list_by_id("missing")).await.unwrap();
    assert!(
        none.entries.is_empty(),
        "unknown id is zero entries with OK"
    );

    let odd = list(
        &mut h,
        pb::ListSnapshotsRequest {
            source_volume_id: "odd".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let odd: Vec<_> = odd
        .entries
        .iter()
        .map(|e| e.snapshot.as_ref().unwrap().snapshot_id.clone())
        .collect();
    assert_eq!(odd, vec![all[1].clone(), all[3].clone()]);

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list(
            &mut h,
            pb::ListSnapshotsRequest {
                max_entries: 2,
                starting_token: token.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        pages += 1;
        assert!(page.entries.len() <= 2);
        seen.extend(
            page.entries
                .iter()
                .map(|e| e.snapshot.as_ref().unwrap().snapshot_id.clone()),
        );
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, all);

    let bad = list(
        &mut h,
        pb::ListSnapshotsRequest {
            starting_token: "not-a-token".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(bad.code(), Code::Aborted);
    let negative = list(
        &mut h,
        pb::ListSnapshotsRequest {
            max_entries: -1,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(negative.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn list_and_get_follow_capabilities() {
    let mut h = start(MockConfig {
        controller_caps: vec![CtrlCap::CreateDeleteSnapshot],
        ..MockConfig::default()
    })
    .await;
    let s = create(&mut h, "s", "v").await.unwrap();
    assert_eq!(
        list(&mut h, list_by_id(&s.snapshot_id))
            .await
            .unwrap_err()
            .code(),
        Code::Unimplemented
    );
    let get = |id: &str| pb::GetSnapshotRequest {
        snapshot_id: id.to_string(),
        secrets: HashMap::new(),
    };
    assert_eq!(
        h.ctrl
            .get_snapshot(get(&s.snapshot_id))
            .await
            .unwrap_err()
            .code(),
        Code::Unimplemented
    );

    h.mock
        .set_controller_caps(vec![CtrlCap::CreateDeleteSnapshot, CtrlCap::GetSnapshot]);
    let got = h
        .ctrl
        .get_snapshot(get(&s.snapshot_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.snapshot.unwrap().snapshot_id, s.snapshot_id);
    assert_eq!(
        h.ctrl
            .get_snapshot(get("missing"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn injected_errors_before_the_backend_change() {
    let mut h = start(MockConfig::default()).await;
    h.mock
        .fail_next("CreateSnapshot", Code::ResourceExhausted, 2);
    for _ in 0..2 {
        let err = create(&mut h, "s", "v").await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
    }
    assert!(
        h.mock.snapshots().is_empty(),
        "a failed-before call has no effect"
    );
    create(&mut h, "s", "v").await.unwrap();
    assert_eq!(h.mock.calls("CreateSnapshot"), 3);

    h.mock.fail_always("*", Code::Unavailable, FailWhen::Before);
    assert_eq!(
        h.identity
            .probe(pb::ProbeRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::Unavailable
    );
    assert_eq!(
        create(&mut h, "s", "v").await.unwrap_err().code(),
        Code::Unavailable
    );
    h.mock.clear_failures("*");
    create(&mut h, "s", "v").await.unwrap();
}

#[tokio::test]
async fn injected_errors_after_the_backend_change() {
    let mut h = start(MockConfig::default()).await;
    h.mock
        .fail_next_after("CreateSnapshot", Code::DeadlineExceeded, 1);
    let err = create(&mut h, "s", "v").await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    let stored = h.mock.snapshots();
    assert_eq!(stored.len(), 1, "the storage side did the work");
    let retry = create(&mut h, "s", "v").await.unwrap();
    assert_eq!(retry.snapshot_id, stored[0].snapshot_id);
}

#[tokio::test]
async fn latency_delays_the_reply() {
    let mut h = start(MockConfig::default()).await;
    h.mock
        .set_latency("CreateSnapshot", Duration::from_secs(30));
    // The call is still pending long after a latency-free call would be done.
    let pending = tokio::time::timeout(
        Duration::from_millis(100),
        h.ctrl.clone().create_snapshot(create_req("s", "v")),
    )
    .await;
    assert!(pending.is_err(), "the reply waits for the injected latency");
    // Other RPCs are not delayed, and clearing the latency restores the call.
    h.identity.probe(pb::ProbeRequest {}).await.unwrap();
    h.mock.set_latency("CreateSnapshot", Duration::ZERO);
    create(&mut h, "s", "v").await.unwrap();
}

/// A CreateSnapshot asks for faults through its parameters: the e2e suite's
/// only handle on a driver in another process is the class.
#[tokio::test]
async fn parameters_ask_for_faults() {
    use csi_snapshotter::testing::mock_driver::param_faults::{
        FAIL_ONCE, REJECT, REQUIRE_SECRETS, SLOW,
    };
    let mut h = start(MockConfig::default()).await;
    let with = |name: &str, key: &str, value: &str| {
        let mut req = create_req(name, "vol-p");
        req.parameters.insert(key.to_string(), value.to_string());
        req
    };

    let e = h
        .ctrl
        .create_snapshot(with("p-reject", REJECT, "x"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let req = with("p-secret", REQUIRE_SECRETS, "x");
    let e = h.ctrl.create_snapshot(req.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut with_secret = req;
    with_secret.secrets.insert("user".into(), "u".into());
    h.ctrl
        .create_snapshot(with_secret)
        .await
        .expect("served with secrets");

    let req = with("p-once", FAIL_ONCE, "x");
    let e = h.ctrl.create_snapshot(req.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    h.ctrl
        .create_snapshot(req)
        .await
        .expect("second attempt served");

    let started = Instant::now();
    h.ctrl
        .create_snapshot(with("p-slow", SLOW, "300ms"))
        .await
        .expect("slow create served");
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Only the failures that happened before the backend change were refused:
    // the backend holds exactly the three snapshots that were served.
    let mut names: Vec<String> = h
        .mock
        .snapshots()
        .iter()
        .map(|s| s.snapshot_id.clone())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
    h.mock.stop().await;
}

#[tokio::test]
async fn malformed_replies() {
    let mut h = start(MockConfig::default()).await;
    h.mock
        .set_malformed("CreateSnapshot", Some(Malformed::MissingMessage));
    let resp = h
        .ctrl
        .create_snapshot(create_req("s", "v"))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.snapshot.is_none());

    h.mock
        .set_malformed("CreateSnapshot", Some(Malformed::MissingCreationTime));
    let s = create(&mut h, "s", "v").await.unwrap();
    assert!(s.creation_time.is_none());

    h.mock
        .set_malformed("CreateSnapshot", Some(Malformed::EmptyId));
    assert!(
        create(&mut h, "s", "v")
            .await
            .unwrap()
            .snapshot_id
            .is_empty()
    );

    h.mock
        .set_malformed("CreateSnapshot", Some(Malformed::NegativeSize));
    assert!(create(&mut h, "s", "v").await.unwrap().size_bytes < 0);

    h.mock.set_malformed("CreateSnapshot", None);
    let good = create(&mut h, "s", "v").await.unwrap();
    assert!(good.creation_time.is_some() && !good.snapshot_id.is_empty());

    h.mock
        .set_malformed("CreateVolumeGroupSnapshot", Some(Malformed::MissingMessage));
    let resp = h
        .group
        .create_volume_group_snapshot(group_req("g", &["v1"]))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.group_snapshot.is_none());
}

#[tokio::test]
async fn counters_last_request_and_secrets() {
    let mut h = start(MockConfig::default()).await;
    let mut req = create_req("s", "v");
    req.secrets.insert("password".into(), "hunter2".into());
    req.parameters.insert("type".into(), "fast".into());
    h.ctrl.create_snapshot(req.clone()).await.unwrap();
    assert_eq!(h.mock.calls("CreateSnapshot"), 1);
    assert_eq!(h.mock.calls("DeleteSnapshot"), 0);
    let last: pb::CreateSnapshotRequest = h.mock.last_request("CreateSnapshot").unwrap();
    assert_eq!(last, req);
    assert_eq!(
        h.mock.last_secrets("CreateSnapshot").unwrap()["password"],
        "hunter2"
    );
    assert!(
        h.mock
            .last_request::<pb::DeleteSnapshotRequest>("DeleteSnapshot")
            .is_none()
    );
    assert!(
        h.mock
            .wait_for_calls("CreateSnapshot", 1, Duration::from_secs(5))
            .await
    );
    assert!(
        !h.mock
            .wait_for_calls("DeleteSnapshot", 1, Duration::from_millis(20))
            .await
    );
    h.mock.reset_calls();
    assert_eq!(h.mock.calls("CreateSnapshot"), 0);
}

#[tokio::test]
#[should_panic(expected = "unknown RPC")]
async fn unknown_method_names_are_rejected() {
    let h = start(MockConfig::default()).await;
    h.mock.calls("CreateSnapshots");
}

#[tokio::test]
async fn group_snapshot_lifecycle() {
    let mut h = start(MockConfig {
        ready_after_polls: 1,
        ..MockConfig::default()
    })
    .await;
    let g = create_group(&mut h, "g1", &["v1", "v2"]).await.unwrap();
    assert!(!g.group_snapshot_id.is_empty());
    assert!(!g.ready_to_use);
    assert!(g.creation_time.is_some());
    assert_eq!(g.snapshots.len(), 2);
    for (s, v) in g.snapshots.iter().zip(["v1", "v2"]) {
        assert_eq!(s.source_volume_id, v);
        assert_eq!(s.group_snapshot_id, g.group_snapshot_id);
        assert!(!s.snapshot_id.is_empty());
    }

    let again = create_group(&mut h, "g1", &["v1", "v2"]).await.unwrap();
    assert_eq!(again.group_snapshot_id, g.group_snapshot_id);
    assert_eq!(ids(&again), ids(&g));
    assert!(again.ready_to_use && again.snapshots.iter().all(|s| s.ready_to_use));

    let err = create_group(&mut h, "g1", &["v1", "v3"]).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(
        create_group(&mut h, "", &["v1"]).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        create_group(&mut h, "g2", &[]).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // Members are listed with their group id and cannot be deleted alone.
    let listed = list(&mut h, list_by_id(&g.snapshots[0].snapshot_id))
        .await
        .unwrap();
    assert_eq!(
        listed.entries[0]
            .snapshot
            .as_ref()
            .unwrap()
            .group_snapshot_id,
        g.group_snapshot_id
    );
    let err = h
        .ctrl
        .delete_snapshot(pb::DeleteSnapshotRequest {
            snapshot_id: g.snapshots[0].snapshot_id.clone(),
            secrets: HashMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let get = |id: &str, snaps: Vec<String>| pb::GetVolumeGroupSnapshotRequest {
        group_snapshot_id: id.to_string(),
        snapshot_ids: snaps,
        secrets: HashMap::new(),
    };
    let got = h
        .group
        .get_volume_group_snapshot(get(&g.group_snapshot_id, ids(&g)))
        .await
        .unwrap();
    assert_eq!(
        got.into_inner().group_snapshot.unwrap().group_snapshot_id,
        g.group_snapshot_id
    );
    let err = h
        .group
        .get_volume_group_snapshot(get("nope", ids(&g)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = h
        .group
        .get_volume_group_snapshot(get(&g.group_snapshot_id, vec!["snap-x".into()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let del = |id: &str, snaps: Vec<String>| pb::DeleteVolumeGroupSnapshotRequest {
        group_snapshot_id: id.to_string(),
        snapshot_ids: snaps,
        secrets: HashMap::new(),
    };
    let err = h
        .group
        .delete_volume_group_snapshot(del(&g.group_snapshot_id, vec![ids(&g)[0].clone()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(h.mock.group_snapshots().len(), 1);
    h.group
        .delete_volume_group_snapshot(del(&g.group_snapshot_id, ids(&g)))
        .await
        .unwrap();
    assert!(h.mock.group_snapshots().is_empty());
    assert!(
        h.mock.snapshots().is_empty(),
        "members are deleted with the group"
    );
    h.group
        .delete_volume_group_snapshot(del(&g.group_snapshot_id, ids(&g)))
        .await
        .unwrap();
}

#[tokio::test]
async fn state_file_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let config = MockConfig {
        state_file: Some(state.clone()),
        ready_after_polls: 1,
        ..MockConfig::default()
    };
    let sock_dir = tempfile::tempdir().unwrap();
    let mut h = start_in(sock_dir, config.clone()).await;
    let s = create(&mut h, "s", "v").await.unwrap();
    let g = create_group(&mut h, "g", &["v1", "v2"]).await.unwrap();
    let before = h.mock.snapshots();
    h.mock.stop().await;
    assert!(state.exists());

    let sock_dir = tempfile::tempdir().unwrap();
    let mut h = start_in(sock_dir, config).await;
    assert_eq!(h.mock.snapshots(), before);
    assert_eq!(h.mock.group_snapshots().len(), 1);
    let again = create(&mut h, "s", "v").await.unwrap();
    assert_eq!(again.snapshot_id, s.snapshot_id);
    assert_eq!(again.creation_time, s.creation_time);
    assert!(again.ready_to_use);
    let g2 = create_group(&mut h, "g", &["v1", "v2"]).await.unwrap();
    assert_eq!(g2.group_snapshot_id, g.group_snapshot_id);
    // New ids do not collide with restored ones.
    let fresh = create(&mut h, "t", "v").await.unwrap();
    assert!(before.iter().all(|b| b.snapshot_id != fresh.snapshot_id));
}

#[tokio::test]
async fn corrupt_state_file_is_a_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(&state, b"{ not json").unwrap();
    let err = MockDriver::start(
        dir.path().join("csi.sock"),
        MockConfig {
            state_file: Some(state),
            ..MockConfig::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("csi.sock");
    std::fs::write(&sock, b"stale").unwrap();
    let mock = MockDriver::start(&sock, MockConfig::default())
        .await
        .unwrap();
    let mut id = IdentityClient::new(mock.channel().await.unwrap());
    id.probe(pb::ProbeRequest {}).await.unwrap();
    mock.stop().await;
    assert!(!sock.exists(), "stop removes the socket");
}

#[tokio::test]
async fn binary_serves_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("csi.sock");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_csi-mock-driver"))
        .arg("--endpoint")
        .arg(format!("unix://{}", sock.display()))
        .args(["--name", "bin.csi.example.com", "--latency", "1ms"])
        .args(["--no-list-snapshots", "--get-snapshot", "--no-group"])
        .kill_on_drop(true)
        .spawn()
        .expect("spawn csi-mock-driver");
    // Wait (bounded) for the socket to accept connections.
    let mut channel = None;
    for _ in 0..300 {
        if sock.exists()
            && let Ok(c) = csi_snapshotter::testing::mock_driver::connect(&sock).await
        {
            channel = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let channel = channel.expect("csi-mock-driver did not start listening");
    let mut id = IdentityClient::new(channel.clone());
    let info = id
        .get_plugin_info(pb::GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "bin.csi.example.com");
    let caps = id
        .get_plugin_capabilities(pb::GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        caps.capabilities.len(),
        1,
        "--no-group drops GROUP_CONTROLLER_SERVICE"
    );
    let mut ctrl = ControllerClient::new(channel.clone());
    let caps = ctrl
        .controller_get_capabilities(pb::ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let caps: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| {
            c.r#type
                .as_ref()
                .map(|pb::controller_service_capability::Type::Rpc(r)| r.r#type)
        })
        .collect();
    assert!(!caps.contains(&(CtrlCap::ListSnapshots as i32)));
    assert!(caps.contains(&(CtrlCap::GetSnapshot as i32)));
    let snap = ctrl
        .create_snapshot(create_req("s", "v"))
        .await
        .unwrap()
        .into_inner();
    assert!(snap.snapshot.is_some());
    drop((id, ctrl, channel));

    let pid = child.id().expect("child pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().await.unwrap();
    assert!(status.success(), "exits cleanly on SIGTERM: {status}");
    assert!(!sock.exists(), "the socket is removed on exit");
}

/// Throughput figure for the report: CreateSnapshot RPCs per second from
/// one client over the Unix socket. Prints, asserts nothing about speed.
/// Run with `cargo test --release --test mock_driver -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark; prints a figure"]
async fn bench_create_snapshot_rate() {
    let h = start(MockConfig::default()).await;
    const TOTAL: usize = 20_000;
    const CONCURRENCY: usize = 32;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..CONCURRENCY {
        let mut c = h.ctrl.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..TOTAL).step_by(CONCURRENCY) {
                c.create_snapshot(create_req(&format!("s{i}"), "v"))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "CreateSnapshot: {TOTAL} RPCs in {secs:.2}s = {:.0} RPC/s ({CONCURRENCY} concurrent callers, one channel)",
        TOTAL as f64 / secs
    );
    assert_eq!(h.mock.snapshots().len(), TOTAL);
}
