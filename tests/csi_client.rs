//! The CSI client over a real Unix socket (spec B.2, B.3, C.8, C.9, E.1).

#[path = "support/fake_csi.rs"]
mod fake_csi;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use csi_snapshotter::csi::client::{
    ConnectOptions, CsiConnection, StartupError, require_snapshot_support,
};
use csi_snapshotter::csi::connection::LossHandler;
use csi_snapshotter::csi::driver::{
    CreateGroupSnapshotArgs, CreateSnapshotArgs, Secrets, SnapshotDriver,
};
use csi_snapshotter::csi::error::CsiError;
use csi_snapshotter::metrics::{CSI_OPERATIONS_BUCKETS, CsiOperationMetrics, Registry};
use fake_csi::{Fake, Server};
use tonic::Code;

struct Env {
    _dir: tempfile::TempDir,
    server: Server,
    conn: CsiConnection,
    registry: Registry,
    losses: Arc<AtomicU32>,
}

async fn start(fake: Fake, timeout: Duration) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let server = Server::start(&socket, fake);
    let registry = Registry::new();
    let losses = Arc::new(AtomicU32::new(0));
    let counter = losses.clone();
    let opts = ConnectOptions::new(&format!("unix://{}", socket.display()), timeout)
        .unwrap()
        .with_metrics(CsiOperationMetrics::register(&registry).unwrap())
        .with_loss_handler(LossHandler::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
    let conn = CsiConnection::connect(opts).await.unwrap();
    Env {
        _dir: dir,
        server,
        conn,
        registry,
        losses,
    }
}

fn secrets() -> Secrets {
    Secrets::new(BTreeMap::from([("user".to_string(), "pw".to_string())]))
}

#[tokio::test]
async fn probe_is_retried_until_ready() {
    let fake = Fake::new("fake.csi.example.com");
    fake.script().probe_not_ready = 2;
    let env = start(fake.clone(), Duration::from_secs(5)).await;
    env.conn.probe_forever().await.unwrap();
    assert_eq!(fake.calls("Probe"), 3);
}

#[tokio::test]
async fn probe_deadline_is_retried_other_errors_are_fatal() {
    let fake = Fake::new("fake.csi.example.com");
    fake.script()
        .latency
        .insert("Probe", Duration::from_millis(800));
    let env = start(fake.clone(), Duration::from_millis(100)).await;
    let waiter = {
        let fake = fake.clone();
        tokio::spawn(async move {
            while fake.calls("Probe") < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            fake.script().latency.clear();
        })
    };
    env.conn.probe_forever().await.unwrap();
    waiter.await.unwrap();
    assert!(fake.calls("Probe") >= 3);
    let text = env.registry.encode_text();
    assert!(
        text.contains(
            r#"grpc_status_code="DeadlineExceeded",method_name="/csi.v1.Identity/Probe""#
        ),
        "{text}"
    );

    fake.script().probe_error = Some(Code::FailedPrecondition);
    let before = fake.calls("Probe");
    let err = env.conn.probe_forever().await.unwrap_err();
    assert!(matches!(&err, StartupError::Probe(e) if e.code() == Some(Code::FailedPrecondition)));
    assert_eq!(fake.calls("Probe"), before + 1);
}

#[tokio::test]
async fn plugin_info_and_capabilities() {
    let fake = Fake::new("fake.csi.example.com");
    let env = start(fake.clone(), Duration::from_secs(5)).await;
    let info = env.conn.plugin_info().await.unwrap();
    assert_eq!(info.name, "fake.csi.example.com");
    assert_eq!(info.vendor_version, "1.0.0");
    let caps = env.conn.capabilities().await.unwrap();
    assert!(caps.create_delete_snapshot && caps.list_snapshots && !caps.get_snapshot);
    assert!(!caps.group_snapshots);
    assert!(env.conn.group_snapshot_capability().await.unwrap());
    require_snapshot_support(&info.name, &caps).unwrap();

    fake.script().name.clear();
    assert_eq!(
        env.conn.plugin_info().await.unwrap_err(),
        StartupError::EmptyDriverName
    );
    fake.script().group_caps.clear();
    assert!(!env.conn.group_snapshot_capability().await.unwrap());
    fake.script()
        .fail
        .insert("GroupControllerGetCapabilities", Code::Unimplemented);
    assert!(matches!(
        env.conn.group_snapshot_capability().await,
        Err(StartupError::GroupCapabilities(e)) if e.code() == Some(Code::Unimplemented)
    ));
}

#[tokio::test]
async fn missing_create_delete_snapshot_capability_is_detected() {
    let fake = Fake::new("nosnap.csi.example.com");
    fake.script().controller_caps = vec![1, 6];
    let env = start(fake, Duration::from_secs(5)).await;
    let caps = env.conn.capabilities().await.unwrap();
    assert!(!caps.create_delete_snapshot);
    assert!(caps.list_snapshots);
    let err = require_snapshot_support("nosnap.csi.example.com", &caps).unwrap_err();
    assert_eq!(
        err,
        StartupError::SnapshotsNotSupported {
            driver: "nosnap.csi.example.com".into()
        }
    );
    assert!(
        err.to_string()
            .contains("does not support snapshot creation")
    );
}

#[tokio::test]
async fn slow_rpc_ends_in_deadline_exceeded() {
    let fake = Fake::new("fake.csi.example.com");
    fake.script()
        .latency
        .insert("CreateSnapshot", Duration::from_secs(3));
    let env = start(fake, Duration::from_millis(200)).await;
    let driver = env.conn.clone().into_driver("d".into(), Default::default());
    let err = driver
        .create_snapshot(CreateSnapshotArgs {
            name: "snapshot-1".into(),
            source_volume_id: "vol-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::DeadlineExceeded));
    assert!(!err.is_final());
    assert!(
        err.to_string()
            .starts_with("rpc error: code = DeadlineExceeded")
    );
}

/// The create classification of csi-wire.md §6, written out independently.
const CODE_TABLE: &[(Code, &str, bool)] = &[
    (Code::Cancelled, "Canceled", false),
    (Code::Unknown, "Unknown", true),
    (Code::InvalidArgument, "InvalidArgument", true),
    (Code::DeadlineExceeded, "DeadlineExceeded", false),
    (Code::NotFound, "NotFound", true),
    (Code::AlreadyExists, "AlreadyExists", true),
    (Code::PermissionDenied, "PermissionDenied", true),
    (Code::ResourceExhausted, "ResourceExhausted", false),
    (Code::FailedPrecondition, "FailedPrecondition", true),
    (Code::Aborted, "Aborted", false),
    (Code::OutOfRange, "OutOfRange", true),
    (Code::Unimplemented, "Unimplemented", true),
    (Code::Internal, "Internal", true),
    (Code::Unavailable, "Unavailable", false),
    (Code::DataLoss, "DataLoss", true),
    (Code::Unauthenticated, "Unauthenticated", true),
];

#[tokio::test]
async fn every_grpc_code_is_classified_and_labelled() {
    let fake = Fake::new("fake.csi.example.com");
    let env = start(fake.clone(), Duration::from_secs(5)).await;
    let driver = env.conn.clone().into_driver("d".into(), Default::default());
    for (code, go_name, is_final) in CODE_TABLE {
        fake.script().fail.insert("CreateSnapshot", *code);
        let err = driver
            .create_snapshot(CreateSnapshotArgs {
                name: "snapshot-1".into(),
                source_volume_id: "vol-1".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(*code));
        assert_eq!(err.is_final(), *is_final, "{code:?}");
        assert_eq!(err.metric_label(), *go_name);
        assert_eq!(
            err.to_string(),
            format!("rpc error: code = {go_name} desc = CreateSnapshot failed on purpose")
        );
    }
    let non_grpc = [
        CsiError::InvalidReply("x".into()),
        CsiError::Transport("y".into()),
    ];
    for e in non_grpc {
        assert!(!e.is_final());
        assert_eq!(e.metric_label(), "unknown-non-grpc");
    }
    let samples = parse_exposition(&env.registry.encode_text());
    for (_, go_name, _) in CODE_TABLE {
        let count = samples.iter().find(|s| {
            s.name == "csi_sidecar_operations_seconds_count"
                && s.label("grpc_status_code") == Some(go_name)
        });
        assert_eq!(count.map(|s| s.value), Some(1.0), "{go_name}");
    }
}

#[tokio::test]
async fn replies_are_converted_and_bad_replies_are_errors() {
    let fake = Fake::new("fake.csi.example.com");
    let env = start(fake.clone(), Duration::from_secs(5)).await;
    let driver = env.conn.clone().into_driver(
        "fake.csi.example.com".into(),
        env.conn.capabilities().await.unwrap(),
    );
    assert_eq!(driver.driver_name(), "fake.csi.example.com");
    assert!(driver.capabilities().list_snapshots);
    let args = CreateSnapshotArgs {
        name: "snapshot-1".into(),
        source_volume_id: "vol-1".into(),
        parameters: BTreeMap::from([("k".into(), "v".into())]),
        secrets: secrets(),
    };
    let info = driver.create_snapshot(args.clone()).await.unwrap();
    assert_eq!(info.snapshot_id, "snap-snapshot-1");
    assert_eq!(info.source_volume_id, "vol-1");
    assert_eq!(info.size_bytes, 1024);
    assert_eq!(info.creation_time_ns, Some(1_700_000_000_000_000_007));
    assert!(info.ready_to_use);
    // Issue 5: no GetPluginInfo before a create, no capabilities before a list.
    assert_eq!(fake.calls("GetPluginInfo"), 0);
    assert_eq!(fake.calls("ControllerGetCapabilities"), 1);

    let listed = driver.list_snapshot("snap-x", &secrets()).await.unwrap();
    assert_eq!(listed.map(|s| s.snapshot_id), Some("snap-x".to_string()));
    assert_eq!(driver.list_snapshot("missing", &secrets()).await, Ok(None));
    assert_eq!(fake.calls("ControllerGetCapabilities"), 1);
    driver.delete_snapshot("snap-x", &secrets()).await.unwrap();
    let got = driver.get_snapshot("snap-y", &secrets()).await.unwrap();
    assert_eq!(got.snapshot_id, "snap-y");

    fake.script().omit_creation_time = true;
    let info = driver.create_snapshot(args.clone()).await.unwrap();
    assert_eq!(info.creation_time_ns, None);

    fake.script().omit_snapshot = true;
    let err = driver.create_snapshot(args).await.unwrap_err();
    assert!(matches!(err, CsiError::InvalidReply(_)), "{err:?}");
    assert!(!err.is_final());
    let gerr = driver
        .create_group_snapshot(CreateGroupSnapshotArgs {
            name: "group-1".into(),
            source_volume_ids: vec!["a".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(gerr, CsiError::InvalidReply(_)), "{gerr:?}");

    fake.script().omit_snapshot = false;
    let group = driver
        .create_group_snapshot(CreateGroupSnapshotArgs {
            name: "g".into(),
            source_volume_ids: vec!["a".into(), "b".into()],
            parameters: BTreeMap::new(),
            secrets: secrets(),
        })
        .await
        .unwrap();
    assert_eq!(group.group_snapshot_id, "group-g");
    let members: Vec<_> = group
        .snapshots
        .iter()
        .map(|s| s.source_volume_id.as_str())
        .collect();
    assert_eq!(members, ["a", "b"]);
    assert_eq!(group.creation_time_ns, None);
    let ids = vec!["s1".to_string(), "s2".to_string()];
    let got = driver
        .get_group_snapshot("group-g", &ids, &secrets())
        .await
        .unwrap();
    assert_eq!(got.snapshots.len(), 2);
    driver
        .delete_group_snapshot("group-g", &ids, &secrets())
        .await
        .unwrap();
}

/// One sample line of the text exposition.
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// A small parser of the text format: enough for the label values used here
/// (no escaped quotes or commas).
fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => {
                    let body = rest.strip_suffix('}').unwrap();
                    let labels = body
                        .split("\",")
                        .map(|pair| {
                            let (k, v) = pair.split_once("=\"").unwrap();
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (n.to_string(), labels)
                }
                None => (series.to_string(), Vec::new()),
            };
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap(),
            };
            Sample {
                name,
                labels,
                value,
            }
        })
        .collect()
}

#[tokio::test]
async fn every_rpc_is_observed_with_its_labels_and_buckets() {
    let fake = Fake::new("fake.csi.example.com");
    let env = start(fake, Duration::from_secs(5)).await;
    let info = env.conn.plugin_info().await.unwrap();
    env.conn.metrics().set_driver_name(&info.name);
    env.conn.probe_forever().await.unwrap();
    let caps = env.conn.capabilities().await.unwrap();
    env.conn.group_snapshot_capability().await.unwrap();
    let driver = env.conn.clone().into_driver(info.name.clone(), caps);
    let args = CreateSnapshotArgs {
        name: "s".into(),
        source_volume_id: "v".into(),
        ..Default::default()
    };
    driver.create_snapshot(args).await.unwrap();
    driver
        .list_snapshot("s", &Secrets::default())
        .await
        .unwrap();
    driver
        .delete_snapshot("s", &Secrets::default())
        .await
        .unwrap();

    let text = env.registry.encode_text();
    assert!(text.contains(
        "# HELP csi_sidecar_operations_seconds [ALPHA] Container Storage Interface operation duration with gRPC error code status total\n# TYPE csi_sidecar_operations_seconds histogram\n"
    ));
    let samples = parse_exposition(&text);
    let expected: HashMap<&str, &str> = HashMap::from([
        ("/csi.v1.Identity/GetPluginInfo", "unknown-driver"),
        ("/csi.v1.Identity/Probe", "fake.csi.example.com"),
        (
            "/csi.v1.Controller/ControllerGetCapabilities",
            "fake.csi.example.com",
        ),
        (
            "/csi.v1.GroupController/GroupControllerGetCapabilities",
            "fake.csi.example.com",
        ),
        ("/csi.v1.Controller/CreateSnapshot", "fake.csi.example.com"),
        ("/csi.v1.Controller/ListSnapshots", "fake.csi.example.com"),
        ("/csi.v1.Controller/DeleteSnapshot", "fake.csi.example.com"),
    ]);
    let mut want_le: Vec<String> = CSI_OPERATIONS_BUCKETS
        .iter()
        .map(|b| b.to_string())
        .collect();
    want_le.push("+Inf".into());
    for (method, driver_name) in &expected {
        let of_method: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.label("method_name") == Some(method))
            .collect();
        let buckets: Vec<&Sample> = of_method
            .iter()
            .copied()
            .filter(|s| s.name == "csi_sidecar_operations_seconds_bucket")
            .collect();
        let les: Vec<String> = buckets
            .iter()
            .map(|s| s.label("le").unwrap().to_string())
            .collect();
        assert_eq!(les, want_le, "{method}");
        for s in &buckets {
            let names: Vec<&str> = s.labels.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(
                names,
                ["driver_name", "grpc_status_code", "method_name", "le"]
            );
            assert_eq!(s.label("driver_name"), Some(*driver_name));
            assert_eq!(s.label("grpc_status_code"), Some("OK"));
        }
        // A fast local call lands in the first bucket, and +Inf equals _count.
        assert_eq!(buckets[0].value, 1.0, "{method}");
        let count = of_method
            .iter()
            .find(|s| s.name == "csi_sidecar_operations_seconds_count")
            .unwrap();
        assert_eq!(count.value, 1.0);
        assert_eq!(buckets.last().unwrap().value, count.value);
        assert!(
            of_method
                .iter()
                .any(|s| s.name == "csi_sidecar_operations_seconds_sum")
        );
    }
    let methods: std::collections::HashSet<&str> = samples
        .iter()
        .filter_map(|s| s.label("method_name"))
        .collect();
    assert_eq!(methods.len(), expected.len());
}

#[tokio::test]
async fn connection_loss_calls_the_handler() {
    let fake = Fake::new("fake.csi.example.com");
    let env = start(fake, Duration::from_secs(2)).await;
    env.conn.probe_forever().await.unwrap();
    assert_eq!(env.losses.load(Ordering::SeqCst), 0);
    let Env {
        server,
        conn,
        losses,
        _dir,
        ..
    } = env;
    server.stop().await;
    for _ in 0..100 {
        if losses.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(losses.load(Ordering::SeqCst), 1);
    // Later calls fail (the channel is never re-established) and the
    // handler is not called twice.
    assert!(conn.probe().await.is_err());
    assert_eq!(losses.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn dropping_the_client_is_not_a_loss() {
    let fake = Fake::new("fake.csi.example.com");
    let env = start(fake, Duration::from_secs(2)).await;
    env.conn.probe_forever().await.unwrap();
    let Env {
        server,
        conn,
        losses,
        _dir,
        ..
    } = env;
    drop(conn);
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(losses.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn connect_waits_for_the_socket_and_gives_up_after_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("late.sock");
    let address = socket.display().to_string();

    let err = CsiConnection::connect(
        ConnectOptions::new(&address, Duration::from_secs(1))
            .unwrap()
            .with_connect_limit(Duration::from_millis(1500))
            .with_loss_handler(LossHandler::new(|| {})),
    )
    .await
    .unwrap_err();
    assert_eq!(err.address, address);
    assert!(err.to_string().contains("failed to connect to CSI driver"));

    let late = {
        let socket = socket.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            Server::start(&socket, Fake::new("late.csi.example.com"))
        })
    };
    let conn = CsiConnection::connect(
        ConnectOptions::new(&address, Duration::from_secs(1))
            .unwrap()
            .with_loss_handler(LossHandler::new(|| {})),
    )
    .await
    .unwrap();
    assert_eq!(
        conn.plugin_info().await.unwrap().name,
        "late.csi.example.com"
    );
    late.await.unwrap().stop().await;
}

#[test]
fn non_unix_addresses_are_rejected() {
    for bad in ["tcp://127.0.0.1:9000", "localhost:9000", ""] {
        let err = ConnectOptions::new(bad, Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("invalid CSI address"), "{err}");
    }
}

#[tokio::test]
async fn against_the_mock_driver_probe_waits_and_missing_snapshot_capability_is_reported() {
    use csi_snapshotter::csi::proto::v1::controller_service_capability::rpc::Type as CtrlCap;
    use csi_snapshotter::testing::mock_driver::{MockConfig, MockDriver};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("mock.sock");
    let mock = MockDriver::start(
        &socket,
        MockConfig {
            probe_not_ready_times: 2,
            controller_caps: vec![CtrlCap::CreateDeleteVolume, CtrlCap::ListSnapshots],
            ..MockConfig::default()
        },
    )
    .await
    .unwrap();
    let conn = CsiConnection::connect(
        ConnectOptions::new(socket.to_str().unwrap(), Duration::from_secs(5))
            .unwrap()
            .with_metrics(CsiOperationMetrics::register(&Registry::new()).unwrap())
            .with_loss_handler(LossHandler::new(|| {})),
    )
    .await
    .unwrap();
    let info = conn.plugin_info().await.unwrap();
    assert_eq!(info.name, "mock.csi.k8s.io");
    conn.probe_forever().await.unwrap();
    assert_eq!(mock.calls("Probe"), 3);
    let caps = conn.capabilities().await.unwrap();
    assert!(caps.list_snapshots && !caps.create_delete_snapshot);
    let err = require_snapshot_support(&info.name, &caps).unwrap_err();
    assert!(err.to_string().contains("mock.csi.k8s.io"));
    drop(conn);
    mock.stop().await;
}
