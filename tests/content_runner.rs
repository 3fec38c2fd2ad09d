//! The content controller wired as in the binary: informers, intake filter,
//! queue and workers against the embedded API server.

mod content_support;

use std::sync::Arc;
use std::time::Duration;

use content_support::{DRIVER, FakeDriver, Harness, dynamic};
use csi_snapshotter::controller::content::ContentController;
use csi_snapshotter::controller::pipeline::ControllerOptions;
use csi_snapshotter::controller::queue::Backoff;
use csi_snapshotter::k8s::event::EventRecorder;
use csi_snapshotter::reconcile::ReconcileConfig;
use serde_json::json;
use tokio_util::sync::CancellationToken;

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

#[tokio::test]
async fn watch_driven_create_poll_and_delete() {
    let h = Harness::new().await;
    h.create_class("default-class", json!({})).await;
    let driver = Arc::new(FakeDriver::new());
    driver.set_ready_after(1);
    let (events, _writer) =
        EventRecorder::start(h.client.clone(), format!("csi-snapshotter {DRIVER}"));
    let stop = CancellationToken::new();
    let running = ContentController::start(
        driver.clone(),
        h.client.clone(),
        h.client.clone(),
        events,
        ControllerOptions {
            config: ReconcileConfig::new(DRIVER),
            workers: 2,
            backoff: Backoff {
                start: Duration::from_millis(10),
                max: Duration::from_millis(100),
            },
            watch: Default::default(),
        },
        None,
        &stop,
    )
    .await
    .expect("caches sync");
    h.create(dynamic("snapcontent-w")).await;
    eventually("the content to become ready", || async {
        h.get("snapcontent-w")
            .await
            .and_then(|c| c.status)
            .and_then(|s| s.ready_to_use)
            == Some(true)
    })
    .await;
    // Not ready after the first create: it was polled by a second create.
    assert_eq!(driver.calls("CreateSnapshot"), 2);
    h.delete_as_controller("snapcontent-w").await;
    eventually("the content to be gone", || async {
        h.get("snapcontent-w").await.is_none()
    })
    .await;
    assert!(driver.snapshots().is_empty());
    running.shutdown().await;
}

#[tokio::test]
async fn h24_own_status_and_annotation_changes_do_not_enqueue() {
    let h = Harness::new().await;
    h.create_class("default-class", json!({})).await;
    let driver = Arc::new(FakeDriver::new());
    let (events, _writer) =
        EventRecorder::start(h.client.clone(), format!("csi-snapshotter {DRIVER}"));
    let stop = CancellationToken::new();
    // Retries wait an hour, so only watch events can run a key again.
    let running = ContentController::start(
        driver.clone(),
        h.client.clone(),
        h.client.clone(),
        events,
        ControllerOptions {
            config: ReconcileConfig::new(DRIVER),
            workers: 1,
            backoff: Backoff {
                start: Duration::from_secs(3600),
                max: Duration::from_secs(3600),
            },
            watch: Default::default(),
        },
        None,
        &stop,
    )
    .await
    .expect("caches sync");
    h.create(dynamic("a")).await;
    eventually("a to become ready", || async {
        h.get("a").await.is_some_and(|c| c.is_ready())
    })
    .await;
    let adds = || running.queue.stats().adds_total;
    let before = adds();
    // Another client changes only status and the being-created annotation.
    h.merge(
        "a",
        json!({"metadata": {"annotations": {csi_snapshotter::k8s::keys::ANN_VS_BEING_CREATED: "yes"}}}),
    )
    .await;
    h.set_status(
        "a",
        csi_snapshotter::k8s::types::VolumeSnapshotContentStatus {
            restore_size: Some(2048),
            ..Default::default()
        },
    )
    .await;
    // A later event on another object proves those were seen and dropped:
    // the watch delivers in order, and "b" fails visibly (no class).
    let mut b = dynamic("b");
    b["spec"]["volumeSnapshotClassName"] = json!("missing");
    h.create(b).await;
    eventually("b to get an error status", || async {
        h.get("b")
            .await
            .and_then(|c| c.status)
            .is_some_and(|s| s.error.is_some())
    })
    .await;
    assert_eq!(adds(), before + 1, "only b's add was enqueued");
    // A label change is a real change: it is enqueued.
    h.merge("a", json!({"metadata": {"labels": {"x": "y"}}}))
        .await;
    eventually("the label change to be enqueued", || async {
        adds() == before + 2
    })
    .await;
    assert_eq!(driver.calls("CreateSnapshot"), 1);
    running.shutdown().await;
}
