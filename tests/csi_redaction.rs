//! CSI secrets never reach log output, at any verbosity, while requests and
//! replies are logged at TRACE with the values replaced by `***stripped***`.

#[path = "support/capture.rs"]
mod capture;
use capture::Capture;

use std::collections::BTreeMap;
use std::time::Duration;

use csi_snapshotter::csi::client::{ConnectOptions, CsiConnection};
use csi_snapshotter::csi::connection::LossHandler;
use csi_snapshotter::csi::driver::{
    CreateGroupSnapshotArgs, CreateSnapshotArgs, Secrets, SnapshotDriver,
};
use csi_snapshotter::csi::redact::{Redact, STRIPPED};
use csi_snapshotter::metrics::{CsiOperationMetrics, Registry};
use csi_snapshotter::testing::mock_driver::{MockConfig, MockDriver};
use tracing::Level;

const SECRET_VALUE: &str = "S3cr3t-Valu3-9f1c";
const SECRET_KEY: &str = "csi-user-password";

fn secrets() -> Secrets {
    Secrets::new(BTreeMap::from([(
        SECRET_KEY.to_string(),
        SECRET_VALUE.to_string(),
    )]))
}

/// Every secret-carrying call the sidecar makes, successful and failing.
async fn scenario() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let mock = MockDriver::start(&socket, MockConfig::default())
        .await
        .unwrap();
    let opts = ConnectOptions::new(socket.to_str().unwrap(), Duration::from_secs(5))
        .unwrap()
        .with_metrics(CsiOperationMetrics::register(&Registry::new()).unwrap())
        .with_loss_handler(LossHandler::new(|| {}));
    let conn = CsiConnection::connect(opts).await.unwrap();
    let info = conn.plugin_info().await.unwrap();
    conn.probe_forever().await.unwrap();
    let caps = conn.capabilities().await.unwrap();
    let driver = conn.into_driver(info.name, caps);

    let args = CreateSnapshotArgs {
        name: "snapshot-1".into(),
        source_volume_id: "vol-1".into(),
        parameters: BTreeMap::new(),
        secrets: secrets(),
    };
    let snap = driver.create_snapshot(args.clone()).await.unwrap();
    // The driver did receive the secret: the redaction is in the logs only.
    let sent = mock.last_secrets("CreateSnapshot").unwrap();
    assert_eq!(sent.get(SECRET_KEY).map(String::as_str), Some(SECRET_VALUE));

    driver
        .list_snapshot(&snap.snapshot_id, &secrets())
        .await
        .unwrap();
    mock.fail_next("CreateSnapshot", tonic::Code::Internal, 1);
    assert!(driver.create_snapshot(args).await.is_err());
    driver
        .delete_snapshot(&snap.snapshot_id, &secrets())
        .await
        .unwrap();

    let group = driver
        .create_group_snapshot(CreateGroupSnapshotArgs {
            name: "group-1".into(),
            source_volume_ids: vec!["vol-a".into(), "vol-b".into()],
            parameters: BTreeMap::new(),
            secrets: secrets(),
        })
        .await
        .unwrap();
    let ids: Vec<String> = group
        .snapshots
        .iter()
        .map(|s| s.snapshot_id.clone())
        .collect();
    driver
        .get_group_snapshot(&group.group_snapshot_id, &ids, &secrets())
        .await
        .unwrap();
    driver
        .delete_group_snapshot(&group.group_snapshot_id, &ids, &secrets())
        .await
        .unwrap();
    drop(driver);
    mock.stop().await;
}

fn run_at(level: Level) -> String {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(scenario());
    });
    let bytes = capture.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn secret_values_never_reach_the_log() {
    for level in [
        Level::ERROR,
        Level::WARN,
        Level::INFO,
        Level::DEBUG,
        Level::TRACE,
    ] {
        let out = run_at(level);
        assert!(
            !out.contains(SECRET_VALUE),
            "secret value logged at {level}"
        );
        if level == Level::TRACE {
            for method in [
                "/csi.v1.Controller/CreateSnapshot",
                "/csi.v1.Controller/ListSnapshots",
                "/csi.v1.Controller/DeleteSnapshot",
                "/csi.v1.GroupController/CreateVolumeGroupSnapshot",
                "/csi.v1.GroupController/GetVolumeGroupSnapshot",
                "/csi.v1.GroupController/DeleteVolumeGroupSnapshot",
            ] {
                let line = out
                    .lines()
                    .find(|l| l.contains(method) && l.contains("GRPC call"))
                    .unwrap_or_else(|| panic!("no TRACE request line for {method}"));
                assert!(line.contains(SECRET_KEY), "{line}");
                assert!(line.contains(STRIPPED), "{line}");
            }
            assert!(out.contains("GRPC response"));
            assert!(out.contains("GRPC error"));
        }
    }
}

#[test]
fn redacted_copies_blank_only_secret_values() {
    use csi_snapshotter::csi::proto::v1;
    let req = v1::CreateSnapshotRequest {
        source_volume_id: "vol-1".into(),
        name: "n".into(),
        secrets: [(SECRET_KEY.to_string(), SECRET_VALUE.to_string())].into(),
        parameters: [("p".to_string(), "visible".to_string())].into(),
    };
    let shown = format!("{:?}", req.redacted());
    assert!(!shown.contains(SECRET_VALUE));
    assert!(shown.contains(SECRET_KEY) && shown.contains(STRIPPED));
    assert!(shown.contains("visible"));
    // The original is untouched: the driver still gets the value.
    assert_eq!(req.secrets[SECRET_KEY], SECRET_VALUE);

    let args = CreateSnapshotArgs {
        secrets: secrets(),
        ..Default::default()
    };
    assert!(!format!("{args:?}").contains(SECRET_VALUE));
}
