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
    let create = &report["create"];
    assert_eq!(create["completed"], N);
    assert_eq!(create["csi_calls"]["CreateSnapshot"], N, "{create}");
    assert!(create["csi_calls"].get("DeleteSnapshot").is_none());
    assert!(create["api_writes_per_object"].as_f64().unwrap() >= 1.0);
    assert!(create["sidecar_peak_rss_bytes"].as_u64().unwrap() > 0);
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
