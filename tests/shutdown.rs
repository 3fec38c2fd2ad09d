//! Graceful shutdown of the binary (spec B.9, issue 7): a SIGTERM during a
//! slow CreateSnapshot lets the call finish and its status be written before
//! the process exits 0; a second signal exits 1 at once.

use std::process::Stdio;
use std::time::Duration;

use csi_snapshotter::k8s::types::{VolumeSnapshotClass, VolumeSnapshotContent};
use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions};
use csi_snapshotter::testing::mock_driver::{MockConfig, MockDriver};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use tokio::process::Child;

const BIN: &str = env!("CARGO_BIN_EXE_csi-snapshotter");
const MOCK: &str = "mock.csi.k8s.io";

struct World {
    server: ApiServer,
    http: std::net::SocketAddr,
    mock: MockDriver,
    child: Child,
    _dir: tempfile::TempDir,
}

async fn world(create_latency: Duration) -> World {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let mock = MockDriver::start(&socket, MockConfig::default())
        .await
        .expect("mock driver");
    mock.set_latency("CreateSnapshot", create_latency);
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let child = tokio::process::Command::new(BIN)
        .arg(format!(
            "--kubeconfig={}",
            server.kubeconfig_path().display()
        ))
        .arg(format!("--csi-address={}", socket.display()))
        .arg("--feature-gates=CSIVolumeGroupSnapshot=false")
        .arg(format!("--http-endpoint={http}"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the sidecar");
    World {
        server,
        http,
        mock,
        child,
        _dir: dir,
    }
}

async fn create_content(server: &ApiServer, name: &str) {
    let classes: Api<VolumeSnapshotClass> = Api::all(server.client().await);
    if classes.get_opt("mock-class").await.unwrap().is_none() {
        let class = serde_json::from_value(json!({
            "metadata": {"name": "mock-class"}, "driver": MOCK, "deletionPolicy": "Delete"
        }))
        .unwrap();
        classes
            .create(&PostParams::default(), &class)
            .await
            .expect("create class");
    }
    let api: Api<VolumeSnapshotContent> = Api::all(server.client().await);
    let vsc: VolumeSnapshotContent = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "deletionPolicy": "Delete",
            "driver": MOCK,
            "source": {"volumeHandle": "vol-1"},
            "volumeSnapshotClassName": "mock-class",
            "volumeSnapshotRef": {"name": "vs-1", "namespace": "default",
                                  "uid": "7d8e9f00-aaaa-4bbb-8ccc-dddddddddddd"}
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &vsc)
        .await
        .expect("create content");
}

fn signal(child: &Child, sig: &str) {
    let pid = child.id().expect("running").to_string();
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(&pid)
        .status()
        .expect("kill");
    assert!(ok.success(), "kill -{sig} {pid}");
}

#[tokio::test]
async fn sigterm_during_a_slow_create_lets_the_call_finish_and_its_status_be_written() {
    let mut w = world(Duration::from_secs(3)).await;
    create_content(&w.server, "slow").await;
    assert!(
        w.mock
            .wait_for_calls("CreateSnapshot", 1, Duration::from_secs(30))
            .await,
        "CreateSnapshot sent"
    );
    assert!(w.mock.snapshots().is_empty(), "the call is still in flight");
    signal(&w.child, "TERM");

    let status = tokio::time::timeout(Duration::from_secs(30), w.child.wait())
        .await
        .expect("exits after the call finished")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    // The status reached the API server before the process went away.
    let stored = w
        .server
        .object("volumesnapshotcontents", "", "slow")
        .expect("content");
    let snaps = w.mock.snapshots();
    assert_eq!(snaps.len(), 1, "the in-flight create completed");
    assert_eq!(
        stored["status"]["snapshotHandle"],
        json!(snaps[0].snapshot_id)
    );
    assert_eq!(stored["status"]["readyToUse"], json!(true));
    assert_eq!(w.mock.calls("CreateSnapshot"), 1);
}

#[tokio::test]
async fn no_new_work_is_taken_after_the_signal() {
    let mut w = world(Duration::from_secs(2)).await;
    create_content(&w.server, "first").await;
    assert!(
        w.mock
            .wait_for_calls("CreateSnapshot", 1, Duration::from_secs(30))
            .await
    );
    signal(&w.child, "TERM");
    // Give the sidecar time to see the signal, then add more work.
    tokio::time::sleep(Duration::from_millis(300)).await;
    create_content(&w.server, "second").await;
    let status = tokio::time::timeout(Duration::from_secs(30), w.child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        w.mock.calls("CreateSnapshot"),
        1,
        "the content added after the signal was not started"
    );
    let second = w
        .server
        .object("volumesnapshotcontents", "", "second")
        .expect("content");
    assert!(second.get("status").is_none_or(|s| s.is_null()));
}

#[tokio::test]
async fn a_second_signal_exits_1_at_once() {
    let mut w = world(Duration::from_secs(60)).await;
    create_content(&w.server, "stuck").await;
    assert!(
        w.mock
            .wait_for_calls("CreateSnapshot", 1, Duration::from_secs(30))
            .await
    );
    signal(&w.child, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "still draining after the first signal"
    );
    signal(&w.child, "INT");
    let status = tokio::time::timeout(Duration::from_secs(10), w.child.wait())
        .await
        .expect("the second signal ends the process")
        .unwrap();
    assert_eq!(status.code(), Some(1));
}

/// `GET /readyz` status, or 0 while nothing listens yet.
async fn readyz(addr: std::net::SocketAddr) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    let _ = s
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_binary_is_ready_once_the_driver_answered_and_the_caches_synced() {
    let mut w = world(Duration::ZERO).await;
    let mut seen = 0;
    for _ in 0..300 {
        seen = readyz(w.http).await;
        if seen == 200 {
            break;
        }
        assert!(seen == 0 || seen == 503, "unexpected /readyz status {seen}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, 200);
    // Ready means working: a new content is created.
    create_content(&w.server, "after-ready").await;
    assert!(
        w.mock
            .wait_for_calls("CreateSnapshot", 1, Duration::from_secs(30))
            .await
    );
    signal(&w.child, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(30), w.child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
