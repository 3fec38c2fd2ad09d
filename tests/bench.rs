//! Smoke test of `csi-snapshotter bench`: a tiny run through the built
//! binary yields a JSON report whose counts add up. No timing is checked.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_csi-snapshotter");
const N: u64 = 5;
const IDLE: u64 = 10;

#[test]
fn bench_reports_counts_for_a_tiny_run() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = Command::new(BIN)
        .args(["bench", "--snapshots", &N.to_string()])
        .args(["--idle-contents", &IDLE.to_string(), "--idle-settle", "0s"])
        .args(["--timeout", "60s", "--worker-threads", "2"])
        .arg(format!("--json={}", json.display()))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("API writes/object"), "{stdout}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();

    assert_eq!(report["settings"]["snapshots"], N);
    assert_eq!(report["settings"]["driver_latency_ms"], 0.0);
    // The embedded API server spends a real server's CPU per request.
    assert_eq!(report["settings"]["api_cpu_ms"], 4.25);
    let create = &report["create"];
    assert_eq!(create["completed"], N);
    assert_eq!(create["csi_calls"]["CreateSnapshot"], N, "{create}");
    assert!(create["csi_calls"].get("DeleteSnapshot").is_none());
    assert!(create["api_writes_per_object"].as_f64().unwrap() >= 1.0);
    assert!(create["sidecar_peak_rss_bytes"].as_u64().unwrap() > 0);
    // Every object is reconciled at least once.
    assert!(create["queue_adds_per_object"].as_f64().unwrap() >= 1.0);
    let delete = &report["delete"];
    assert_eq!(delete["completed"], N);
    assert_eq!(delete["csi_calls"]["DeleteSnapshot"], N, "{delete}");
    assert!(delete["csi_calls"].get("CreateSnapshot").is_none());
    // Removing the finalizer is at least one write per object.
    assert!(delete["api_writes_per_object"].as_f64().unwrap() >= 1.0);

    let idle = report["idle"].as_array().unwrap();
    assert_eq!(idle.len(), 1);
    assert_eq!(idle[0]["contents"], IDLE);
    assert!(idle[0]["rss_bytes"].as_u64().unwrap() > 0);
    // Ready contents need no snapshot RPC.
    assert!(idle[0]["csi_calls"].get("CreateSnapshot").is_none());
}

/// A child process killed when the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `path` exists (a peer process wrote it).
fn wait_for_file(path: &std::path::Path) {
    let start = std::time::Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "{} was not written",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// An API server and a CSI driver in processes of their own, as a real
/// cluster would be: the embedded API server (the sidecar's kubeconfig held
/// to deploy/kubernetes/rbac.yaml) and the mock driver, whose state file
/// shows what is left on the backend.
struct Peers {
    _dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
    restricted: std::path::PathBuf,
    address: String,
    state: std::path::PathBuf,
    _server: Child,
    _driver: Child,
}

impl Peers {
    fn start() -> Peers {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let rbac =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/rbac.yaml");
        let server = Command::new(BIN)
            .arg("embedded-apiserver")
            .arg(format!("--kubeconfig-out={}", kubeconfig.display()))
            .arg(format!("--restricted-rbac={}", rbac.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let socket = dir.path().join("csi.sock");
        let state = dir.path().join("backend.json");
        let driver = Command::new(env!("CARGO_BIN_EXE_csi-mock-driver"))
            .arg(format!("--endpoint=unix://{}", socket.display()))
            .arg(format!("--state-file={}", state.display()))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let restricted = dir.path().join("kubeconfig.restricted");
        wait_for_file(&restricted);
        wait_for_file(&socket);
        Peers {
            kubeconfig,
            restricted,
            address: format!("unix://{}", socket.display()),
            state,
            _dir: dir,
            _server: Child(server),
            _driver: Child(driver),
        }
    }

    fn bench(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .arg("bench")
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg(format!(
                "--sidecar-kubeconfig={}",
                self.restricted.display()
            ))
            .arg(format!("--csi-address={}", self.address))
            .args(["--timeout", "60s", "--worker-threads", "2"])
            .args(args)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap()
    }

    /// A request of the benchmark's (admin) identity.
    fn request(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap();
            let client = kube::Client::try_from(config).unwrap();
            let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
            let req = http::Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body)
                .unwrap();
            client.request::<Value>(req).await.unwrap()
        })
    }

    fn items(&self, resource: &str) -> Value {
        let list = self.request(
            "GET",
            &format!("/apis/snapshot.storage.k8s.io/v1/{resource}"),
            None,
        );
        list["items"].clone()
    }
}

/// `bench --kubeconfig --csi-address` with `--sidecar-binary`: both
/// sidecars complete the run, the CSI calls are counted from the sidecar's
/// metrics, the comparison table is printed, and nothing is left behind:
/// no content, no class, and on the backend no snapshot and no volume.
#[test]
fn bench_against_a_cluster_compares_two_sidecars_and_cleans_up() {
    let peers = Peers::start();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = peers.bench(&[
        "--snapshots",
        &N.to_string(),
        "--sidecar-binary",
        BIN,
        &format!("--json={}", json.display()),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("| create → all ready (s) |"), "{stdout}");
    assert!(stderr.contains("created volume"), "{stderr}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for side in ["other", "ours"] {
        let r = &report[side];
        assert_ne!(r["settings"]["api_server"], "embedded");
        assert_eq!(r["settings"]["driver"], "mock.csi.k8s.io");
        // A real server spends its own CPU; none is added.
        assert_eq!(r["settings"]["api_cpu_ms"], 0.0);
        assert!(r["create"]["queue_adds_per_object"].as_f64().unwrap() >= 1.0);
        assert_eq!(r["create"]["completed"], N, "{side}: {r}");
        assert_eq!(r["create"]["csi_calls"]["CreateSnapshot"], N, "{side}: {r}");
        assert_eq!(r["delete"]["completed"], N, "{side}: {r}");
        assert_eq!(r["delete"]["csi_calls"]["DeleteSnapshot"], N, "{side}: {r}");
        // Requests are counted only from the sidecar's own metric.
        let counted = r["settings"]["api_counts"] == "sidecar metrics";
        assert_eq!(
            r["create"]["api_writes_per_object"].is_number(),
            counted,
            "{side}: {r}"
        );
        assert!(r["idle"].as_array().unwrap().is_empty());
    }
    let rows = report["rows"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["label"] == "sidecar peak RSS (MB)" && r["ratio"].is_number())
    );

    assert_eq!(peers.items("volumesnapshotcontents"), serde_json::json!([]));
    assert_eq!(peers.items("volumesnapshotclasses"), serde_json::json!([]));
    let backend: Value = serde_json::from_slice(&std::fs::read(&peers.state).unwrap()).unwrap();
    assert_eq!(backend["snapshots"], serde_json::json!({}), "{backend}");
    assert_eq!(backend["volumes"], serde_json::json!({}), "{backend}");
}

/// While another holder renews the driver's leader-election Lease, bench
/// refuses to start a second sidecar, and creates nothing.
#[test]
fn bench_refuses_while_the_drivers_lease_is_held() {
    let peers = Peers::start();
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    peers.request(
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/default/leases",
        Some(serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "external-snapshotter-leader-mock-csi-k8s-io"},
            "spec": {
                "holderIdentity": "another-sidecar",
                "leaseDurationSeconds": 15,
                "renewTime": now,
            },
        })),
    );
    let out = peers.bench(&["--snapshots", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("held by another-sidecar"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(peers.items("volumesnapshotclasses"), serde_json::json!([]));
    let backend = std::fs::read(&peers.state).unwrap_or_default();
    let backend: Value = serde_json::from_slice(&backend).unwrap_or(Value::Null);
    assert!(
        backend["volumes"].as_object().is_none_or(|v| v.is_empty()),
        "{backend}"
    );
}

/// `--api-latency` delays every answer of the embedded API server, so a
/// content is ready no sooner than two delays after it was created (the
/// sidecar's being-created annotation, then its status write, one after
/// the other); `--ours-binary` runs the given binary as the measured
/// sidecar.
#[test]
fn bench_api_latency_spreads_requests_and_ours_binary_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let ours = dir.path().join("sidecar-under-test");
    std::fs::copy(BIN, &ours).unwrap();
    let out = Command::new(BIN)
        .args(["bench", "--snapshots", "2", "--idle-contents", "0"])
        .args(["--timeout", "60s", "--api-latency", "100ms"])
        .arg(format!("--ours-binary={}", ours.display()))
        .arg(format!("--json={}", json.display()))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["settings"]["api_latency_ms"], 100.0);
    assert_eq!(
        report["settings"]["sidecar_binary"],
        ours.display().to_string()
    );
    let create = &report["create"];
    assert_eq!(create["completed"], 2);
    let total = create["seconds"].as_f64().unwrap();
    assert!(
        total >= 0.2,
        "two delayed writes before ready, took {total} s"
    );
}
