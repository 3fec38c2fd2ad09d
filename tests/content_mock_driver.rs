//! The content controller as the binary runs it (informers, queue, workers)
//! against the embedded API server and the mock CSI driver over its Unix
//! socket, through the real CSI client: the VSC lines of spec H that depend
//! on the wire (names, secrets, readiness polling, error classes, deletion).

mod content_support;

use std::sync::Arc;
use std::time::Duration;

use content_support::{Harness, UID};
use csi_snapshotter::controller::content::{ContentController, Contents};
use csi_snapshotter::controller::pipeline::{ControllerOptions, Running};
use csi_snapshotter::controller::queue::Backoff;
use csi_snapshotter::csi::client::{ConnectOptions, CsiClient, CsiConnection};
use csi_snapshotter::csi::connection::LossHandler;
use csi_snapshotter::k8s::event::EventRecorder;
use csi_snapshotter::k8s::keys;
use csi_snapshotter::metrics::{CsiOperationMetrics, Registry};
use csi_snapshotter::reconcile::ReconcileConfig;
use csi_snapshotter::testing::mock_driver::{MockConfig, MockDriver};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const MOCK: &str = "mock.csi.k8s.io";

struct World {
    h: Harness,
    mock: MockDriver,
    running: Option<Running<Contents, CsiClient>>,
    _dir: tempfile::TempDir,
}

async fn world(config: MockConfig, timeout: Duration) -> World {
    let h = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let mock = MockDriver::start(&socket, config)
        .await
        .expect("mock driver");
    let opts = ConnectOptions::new(socket.to_str().unwrap(), timeout)
        .unwrap()
        .with_loss_handler(LossHandler::new(|| {}))
        .with_metrics(CsiOperationMetrics::register(&Registry::new()).expect("fresh registry"));
    let conn = CsiConnection::connect(opts).await.expect("connect");
    let name = conn.plugin_info().await.expect("plugin info").name;
    let caps = conn.capabilities().await.expect("capabilities");
    let driver = Arc::new(conn.into_driver(name.clone(), caps));
    let (events, _writer) =
        EventRecorder::start(h.client.clone(), format!("csi-snapshotter {name}"));
    let running = ContentController::start(
        driver,
        h.client.clone(),
        h.client.clone(),
        events,
        ControllerOptions {
            config: ReconcileConfig::new(name),
            workers: 2,
            backoff: Backoff {
                start: Duration::from_millis(20),
                max: Duration::from_millis(200),
            },
            watch: Default::default(),
        },
        None,
        &CancellationToken::new(),
    )
    .await
    .expect("caches sync");
    World {
        h,
        mock,
        running: Some(running),
        _dir: dir,
    }
}

impl World {
    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self.mock.stop().await;
    }
}

/// Polls `check` until it holds; fails after 30 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn content(name: &str) -> Value {
    let mut v = content_support::dynamic(name);
    v["spec"]["driver"] = json!(MOCK);
    v
}

async fn class(h: &Harness, params: Value) {
    let api: kube::Api<csi_snapshotter::k8s::types::VolumeSnapshotClass> =
        kube::Api::all(h.client.clone());
    let class = serde_json::from_value(json!({
        "metadata": {"name": "default-class"}, "driver": MOCK,
        "deletionPolicy": "Delete", "parameters": params
    }))
    .unwrap();
    api.create(&Default::default(), &class).await.unwrap();
}

async fn ready(h: &Harness, name: &str) -> bool {
    h.get(name)
        .await
        .and_then(|c| c.status)
        .and_then(|s| s.ready_to_use)
        == Some(true)
}

#[tokio::test]
async fn h01_h06_h08_create_with_secrets_then_delete() {
    let w = world(
        MockConfig {
            driver_name: MOCK.into(),
            ready_after_polls: 1,
            ..Default::default()
        },
        Duration::from_secs(10),
    )
    .await;
    class(&w.h, json!({"param1": "value1"})).await;
    w.h.create_secret("default", "snap-secret", &[("user", "admin")])
        .await;
    let mut obj = content("snapcontent-m");
    obj["metadata"]["annotations"] = json!({
        keys::ANN_DELETION_SECRET_NAME: "snap-secret",
        keys::ANN_DELETION_SECRET_NAMESPACE: "default"
    });
    w.h.create(obj).await;
    eventually("ready", || ready(&w.h, "snapcontent-m")).await;
    let snaps = w.mock.snapshots();
    assert_eq!(snaps.len(), 1);
    let c = w.h.get("snapcontent-m").await.unwrap();
    assert_eq!(
        c.status.as_ref().unwrap().snapshot_handle.as_deref(),
        Some(snaps[0].snapshot_id.as_str())
    );
    assert!(c.annotation(keys::ANN_VS_BEING_CREATED).is_none());
    let req: csi_snapshotter::csi::proto::v1::CreateSnapshotRequest =
        w.mock.last_request("CreateSnapshot").unwrap();
    assert_eq!(req.name, format!("snapshot-{UID}"));
    assert_eq!(req.source_volume_id, "vol-1");
    assert_eq!(
        req.parameters.get("param1").map(String::as_str),
        Some("value1")
    );
    assert_eq!(
        w.mock
            .last_secrets("CreateSnapshot")
            .unwrap()
            .get("user")
            .map(String::as_str),
        Some("admin")
    );
    w.h.delete_as_controller("snapcontent-m").await;
    eventually("deleted", || async {
        w.h.get("snapcontent-m").await.is_none()
    })
    .await;
    assert!(w.mock.snapshots().is_empty());
    assert_eq!(
        w.mock
            .last_secrets("DeleteSnapshot")
            .unwrap()
            .get("user")
            .map(String::as_str),
        Some("admin")
    );
    w.stop().await;
}

#[tokio::test]
async fn h14_preprovisioned_content_is_filled_from_list_snapshots() {
    let w = world(
        MockConfig {
            driver_name: MOCK.into(),
            ..Default::default()
        },
        Duration::from_secs(10),
    )
    .await;
    class(&w.h, json!({})).await;
    w.h.create(content("source")).await;
    eventually("source ready", || ready(&w.h, "source")).await;
    let handle = w.mock.snapshots()[0].snapshot_id.clone();
    let mut pre = content_support::preprovisioned("pre-m", &handle);
    pre["spec"]["driver"] = json!(MOCK);
    pre["spec"]["deletionPolicy"] = json!("Retain");
    w.h.create(pre).await;
    eventually("pre-provisioned ready", || ready(&w.h, "pre-m")).await;
    let s = w.h.get("pre-m").await.unwrap().status.unwrap();
    assert_eq!(s.snapshot_handle.as_deref(), Some(handle.as_str()));
    assert!(s.creation_time.is_some());
    assert!(w.mock.calls("ListSnapshots") >= 1);
    // Retain: deleting the pre-provisioned content keeps the snapshot.
    w.h.api.delete("pre-m", &Default::default()).await.unwrap();
    eventually("pre-provisioned gone", || async {
        w.h.get("pre-m").await.is_none()
    })
    .await;
    assert_eq!(w.mock.snapshots().len(), 1);
    w.stop().await;
}

#[tokio::test]
async fn final_error_is_reported_then_retried_to_success() {
    let w = world(
        MockConfig {
            driver_name: MOCK.into(),
            ..Default::default()
        },
        Duration::from_secs(10),
    )
    .await;
    class(&w.h, json!({})).await;
    w.mock
        .fail_next("CreateSnapshot", tonic::Code::InvalidArgument, 1);
    w.h.create(content("snapcontent-e")).await;
    eventually("ready after the retry", || ready(&w.h, "snapcontent-e")).await;
    let s = w.h.get("snapcontent-e").await.unwrap().status.unwrap();
    assert_eq!(s.error, None, "error is cleared once ready");
    assert_eq!(w.mock.snapshots().len(), 1);
    w.stop().await;
}

#[tokio::test]
async fn issue_1388_delete_during_slow_create_does_not_leak() {
    let w = world(
        MockConfig {
            driver_name: MOCK.into(),
            ..Default::default()
        },
        Duration::from_millis(300),
    )
    .await;
    class(&w.h, json!({})).await;
    // Creates time out (non-final) while the backend still cuts the snapshot.
    w.mock
        .set_latency("CreateSnapshot", Duration::from_millis(600));
    w.h.create(content("snapcontent-s")).await;
    eventually("the create to be in flight", || async {
        w.h.get("snapcontent-s")
            .await
            .is_some_and(|c| c.annotation(keys::ANN_VS_BEING_CREATED).is_some())
    })
    .await;
    w.h.delete_as_controller("snapcontent-s").await;
    // Deletion waits behind the annotation; then the driver speeds up.
    eventually("a create attempt to time out", || async {
        w.mock.calls("CreateSnapshot") >= 2
    })
    .await;
    assert!(w.h.get("snapcontent-s").await.is_some());
    w.mock.set_latency("CreateSnapshot", Duration::ZERO);
    eventually("the content to be gone", || async {
        w.h.get("snapcontent-s").await.is_none()
    })
    .await;
    assert!(w.mock.snapshots().is_empty(), "backend snapshot leaked");
    w.stop().await;
}
