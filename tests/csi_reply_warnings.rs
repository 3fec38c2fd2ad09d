//! Replies that break the CSI spec but are tolerated, as upstream tolerates
//! them (no `creation_time`, a negative `size_bytes`), are logged as
//! warnings naming the snapshot, so an operator can see why a content shows
//! the time of the reply or no restoreSize.

#[path = "support/capture.rs"]
mod capture;
use capture::Capture;

use std::collections::BTreeMap;
use std::time::Duration;

use csi_snapshotter::csi::client::{ConnectOptions, CsiConnection};
use csi_snapshotter::csi::connection::LossHandler;
use csi_snapshotter::csi::driver::{CreateSnapshotArgs, Secrets, SnapshotDriver};
use csi_snapshotter::metrics::{CsiOperationMetrics, Registry};
use csi_snapshotter::testing::mock_driver::{Malformed, MockConfig, MockDriver};

async fn create_with(m: Malformed, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let mock = MockDriver::start(&socket, MockConfig::default())
        .await
        .unwrap();
    mock.set_malformed("CreateSnapshot", Some(m));
    let opts = ConnectOptions::new(socket.to_str().unwrap(), Duration::from_secs(5))
        .unwrap()
        .with_metrics(CsiOperationMetrics::register(&Registry::new()).unwrap())
        .with_loss_handler(LossHandler::new(|| {}));
    let conn = CsiConnection::connect(opts).await.unwrap();
    let info = conn.plugin_info().await.unwrap();
    let caps = conn.capabilities().await.unwrap();
    let driver = conn.into_driver(info.name, caps);
    let snap = driver
        .create_snapshot(CreateSnapshotArgs {
            name: name.into(),
            source_volume_id: "vol-1".into(),
            parameters: BTreeMap::new(),
            secrets: Secrets::new(BTreeMap::new()),
        })
        .await
        .expect("a tolerated reply is not an error");
    assert!(!snap.snapshot_id.is_empty());
    drop(driver);
    mock.stop().await;
}

fn logs_of(m: Malformed, name: &str) -> String {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(create_with(m, name));
    });
    String::from_utf8(capture.0.lock().unwrap().clone()).unwrap()
}

#[test]
fn missing_creation_time_and_negative_size_are_logged() {
    let out = logs_of(Malformed::MissingCreationTime, "snap-no-time");
    let line = out
        .lines()
        .find(|l| l.contains("lacks the required creation_time"))
        .unwrap_or_else(|| panic!("no warning in:\n{out}"));
    assert!(
        line.contains("WARN") && line.contains("snapshot_handle="),
        "{line}"
    );

    let out = logs_of(Malformed::NegativeSize, "snap-negative");
    let line = out
        .lines()
        .find(|l| l.contains("negative size_bytes"))
        .unwrap_or_else(|| panic!("no warning in:\n{out}"));
    assert!(line.contains("size_bytes=-1"), "{line}");
    assert!(
        !out.contains("creation_time;"),
        "only the size is wrong:\n{out}"
    );
}
