//! The `csi-snapshotter` binary end to end: startup wires the content
//! controller to the embedded API server and the mock CSI driver, and a
//! VolumeSnapshotContent goes through create, ready and delete.

mod content_support;

use std::process::Stdio;
use std::time::Duration;

use content_support::crd_dir;
use csi_snapshotter::k8s::keys;
use csi_snapshotter::k8s::types::{VolumeSnapshotClass, VolumeSnapshotContent};
use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions, RbacPolicy};
use csi_snapshotter::testing::mock_driver::{MockConfig, MockDriver};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_csi-snapshotter");
const MOCK: &str = "mock.csi.k8s.io";

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
async fn binary_creates_and_deletes_a_snapshot() {
    let server = ApiServer::start(ApiServerOptions {
        crd_schemas: crd_dir(),
        restricted: Some(RbacPolicy::sidecar()),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let mock = MockDriver::start(
        &socket,
        MockConfig {
            ready_after_polls: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .arg(format!(
            "--kubeconfig={}",
            server.restricted_kubeconfig_path().unwrap().display()
        ))
        .arg(format!("--csi-address={}", socket.display()))
        .arg("--retry-interval-start=20ms")
        .arg("--retry-interval-max=200ms")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let client = server.client().await;
    let classes: Api<VolumeSnapshotClass> = Api::all(client.clone());
    let class = serde_json::from_value(json!({
        "metadata": {"name": "mock-class"}, "driver": MOCK, "deletionPolicy": "Delete"
    }))
    .unwrap();
    classes
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    let contents: Api<VolumeSnapshotContent> = Api::all(client);
    let vsc: VolumeSnapshotContent = serde_json::from_value(json!({
        "metadata": {"name": "snapcontent-bin", "finalizers": [keys::FINALIZER_VSC]},
        "spec": {
            "deletionPolicy": "Delete",
            "driver": MOCK,
            "source": {"volumeHandle": "vol-bin"},
            "volumeSnapshotClassName": "mock-class",
            "volumeSnapshotRef": {"name": "vs-bin", "namespace": "default",
                                  "uid": "0b1c2d3e-aaaa-4bbb-8ccc-dddddddddddd"}
        }
    }))
    .unwrap();
    contents.create(&PostParams::default(), &vsc).await.unwrap();

    eventually("the content to become ready", || async {
        contents
            .get_opt("snapcontent-bin")
            .await
            .unwrap()
            .is_some_and(|c| c.is_ready())
    })
    .await;
    // The sidecar's writes are recorded under its User-Agent's program
    // name, as the Go sidecar's are; the only other manager is the test's
    // own client (no User-Agent: `unknown`), which created the object.
    let stored = server
        .object("volumesnapshotcontents", "", "snapcontent-bin")
        .unwrap();
    let entries = stored["metadata"]["managedFields"].as_array().unwrap();
    let managers: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["manager"].as_str().unwrap_or(""),
                e["operation"].as_str().unwrap_or(""),
                e["subresource"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        managers.contains(&("csi-snapshotter", "Update", "status")),
        "{managers:?}"
    );
    assert!(
        managers
            .iter()
            .all(|m| m.0 == "csi-snapshotter" || *m == ("unknown", "Update", "")),
        "{managers:?}"
    );
    let snaps = mock.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(
        contents
            .get("snapcontent-bin")
            .await
            .unwrap()
            .status_handle(),
        Some(snaps[0].snapshot_id.as_str())
    );

    contents
        .patch(
            "snapcontent-bin",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {keys::ANN_VS_BEING_DELETED: "yes"}}}),
            ),
        )
        .await
        .unwrap();
    contents
        .delete("snapcontent-bin", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the content to be gone", || async {
        contents.get_opt("snapcontent-bin").await.unwrap().is_none()
    })
    .await;
    assert!(mock.snapshots().is_empty());
    assert_eq!(
        server.forbidden_count(),
        0,
        "the sidecar made requests deploy/kubernetes/rbac.yaml does not allow"
    );

    child.start_kill().unwrap();
    let _ = child.wait().await;
    mock.stop().await;
}
