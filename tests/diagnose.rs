//! `csi-snapshotter diagnose` against the embedded API server and the mock
//! driver: one test per cause builds that situation (with the real sidecar
//! binary wherever the sidecar's own reaction is part of it) and checks the
//! verdict; the command line's exit statuses and output formats.

#[path = "support/crds.rs"]
mod crds;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use clap::Parser;
use csi_snapshotter::diagnose::cause::{Cause, Finding, Kind};
use csi_snapshotter::diagnose::{DiagnoseArgs, run};
use csi_snapshotter::k8s::keys;
use csi_snapshotter::k8s::types::VolumeSnapshotContent;
use csi_snapshotter::leader::lease_name;
use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions, RbacPolicy};
use csi_snapshotter::testing::mock_driver::{MockConfig, MockDriver, param_faults};
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_csi-snapshotter");
const MOCK: &str = "mock.csi.k8s.io";
const UID: &str = "0b1c2d3e-aaaa-4bbb-8ccc-dddddddddddd";

/// An embedded API server with the CRD schemas when they are present.
async fn server(restricted: Option<RbacPolicy>) -> ApiServer {
    ApiServer::start(ApiServerOptions {
        crd_schemas: crds::crd_dir(),
        restricted,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// The mock driver and the sidecar binary, run as the shipped RBAC allows.
struct Sidecar {
    _dir: TempDir,
    mock: MockDriver,
    _child: tokio::process::Child,
}

async fn sidecar(server: &ApiServer, mock_config: MockConfig) -> Sidecar {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let mock = MockDriver::start(&socket, mock_config).await.unwrap();
    let child = tokio::process::Command::new(BIN)
        .arg(format!(
            "--kubeconfig={}",
            server.restricted_kubeconfig_path().unwrap().display()
        ))
        .arg(format!("--csi-address={}", socket.display()))
        .arg("--retry-interval-start=50ms")
        .arg("--retry-interval-max=500ms")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    Sidecar {
        _dir: dir,
        mock,
        _child: child,
    }
}

/// Creates any object from JSON (kind and apiVersion inside).
async fn create(server: &ApiServer, obj: Value) {
    let api = dynamic_api(server, &obj).await;
    let obj: DynamicObject = serde_json::from_value(obj).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
}

/// Merge-patches the status subresource of an object.
async fn patch_status(server: &ApiServer, obj: Value, status: Value) {
    let api = dynamic_api(server, &obj).await;
    let name = obj["metadata"]["name"].as_str().unwrap();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .unwrap();
}

/// Deletes an object (it stays while it has finalizers).
async fn delete(server: &ApiServer, obj: Value) {
    let api = dynamic_api(server, &obj).await;
    let name = obj["metadata"]["name"].as_str().unwrap();
    api.delete(name, &DeleteParams::default()).await.unwrap();
}

async fn dynamic_api(server: &ApiServer, obj: &Value) -> Api<DynamicObject> {
    let (group, version) = match obj["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (
            String::new(),
            obj["apiVersion"].as_str().unwrap().to_owned(),
        ),
    };
    let kind = obj["kind"].as_str().unwrap();
    let lower = kind.to_ascii_lowercase();
    let plural = if lower.ends_with('s') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    };
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, &version, kind), &plural);
    let client = server.client().await;
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    }
}

fn class(name: &str, driver: &str, parameters: Value) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": name}, "driver": driver, "deletionPolicy": "Delete",
        "parameters": parameters
    })
}

/// A dynamic content bound to VolumeSnapshot `default/vs-<name>`.
fn content(name: &str, driver: &str, class: &str) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
        "metadata": {"name": name, "finalizers": [keys::FINALIZER_VSC]},
        "spec": {
            "deletionPolicy": "Delete", "driver": driver,
            "source": {"volumeHandle": format!("vol-{name}")},
            "volumeSnapshotClassName": class,
            "volumeSnapshotRef": {"name": format!("vs-{name}"), "namespace": "default", "uid": UID}
        }
    })
}

fn snapshot(name: &str, class: &str) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"source": {"persistentVolumeClaimName": "pvc-1"}, "volumeSnapshotClassName": class}
    })
}

/// Runs diagnose in-process with these arguments (plus the server's
/// kubeconfig and no grace period).
async fn diagnose(server: &ApiServer, extra: &[&str]) -> Vec<Finding> {
    let mut argv = vec![
        "csi-snapshotter diagnose".to_owned(),
        format!("--kubeconfig={}", server.kubeconfig_path().display()),
        "--grace=0s".to_owned(),
        "-A".to_owned(),
    ];
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    let args = DiagnoseArgs::try_parse_from(argv).unwrap();
    run(&args).await.unwrap().findings
}

/// The one finding about `kind/name`.
fn finding<'a>(findings: &'a [Finding], kind: Kind, name: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.kind == kind && f.name == name)
        .unwrap_or_else(|| panic!("no finding for {kind:?}/{name} in {findings:#?}"))
}

/// Polls until `check` holds; fails after 60 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn get_content(server: &ApiServer, name: &str) -> VolumeSnapshotContent {
    let api: Api<VolumeSnapshotContent> = Api::all(server.client().await);
    api.get(name).await.unwrap()
}

fn evidence_has(f: &Finding, needle: &str) -> bool {
    f.evidence.iter().any(|e| e.contains(needle))
}

#[tokio::test]
async fn healthy_cluster_has_no_finding() {
    let server = server(Some(RbacPolicy::sidecar())).await;
    let _sidecar = sidecar(&server, MockConfig::default()).await;
    create(&server, class("mock-class", MOCK, json!({}))).await;
    create(&server, content("ok", MOCK, "mock-class")).await;
    eventually("the content to become ready", || async {
        get_content(&server, "ok").await.is_ready()
    })
    .await;
    let vs = snapshot("vs-ok", "mock-class");
    create(&server, vs.clone()).await;
    patch_status(
        &server,
        vs,
        json!({"boundVolumeSnapshotContentName": "ok", "readyToUse": true}),
    )
    .await;
    assert_eq!(diagnose(&server, &[]).await, Vec::<Finding>::new());
}

#[tokio::test]
async fn class_not_found() {
    let server = server(None).await;
    create(&server, snapshot("vs-a", "gone-class")).await;
    create(&server, content("c-a", MOCK, "gone-class")).await;
    let findings = diagnose(&server, &[]).await;
    for (kind, name) in [
        (Kind::VolumeSnapshot, "vs-a"),
        (Kind::VolumeSnapshotContent, "c-a"),
    ] {
        let f = finding(&findings, kind, name);
        assert_eq!(f.cause, Cause::ClassNotFound, "{f:#?}");
        assert!(f.summary.contains("gone-class"), "{f:#?}");
    }
}

#[tokio::test]
async fn class_driver_mismatch() {
    let server = server(None).await;
    create(
        &server,
        class("other-class", "other.csi.example.com", json!({})),
    )
    .await;
    create(&server, content("c-m", MOCK, "other-class")).await;
    let f = diagnose(&server, &[]).await;
    let f = finding(&f, Kind::VolumeSnapshotContent, "c-m");
    assert_eq!(f.cause, Cause::ClassDriverMismatch, "{f:#?}");
    assert!(f.summary.contains("other.csi.example.com"), "{f:#?}");
}

#[tokio::test]
async fn class_invalid_parameter_agrees_with_the_sidecar() {
    let server = server(Some(RbacPolicy::sidecar())).await;
    let _sidecar = sidecar(&server, MockConfig::default()).await;
    create(
        &server,
        class(
            "bad-class",
            MOCK,
            json!({"csi.storage.k8s.io/not-a-key": "x"}),
        ),
    )
    .await;
    create(&server, content("c-p", MOCK, "bad-class")).await;
    eventually("the sidecar's error status", || async {
        get_content(&server, "c-p").await.status.is_some()
    })
    .await;
    let vsc = get_content(&server, "c-p").await;
    let sidecar_message = vsc.status.unwrap().error.unwrap().message.unwrap();
    assert!(sidecar_message.contains("csi.storage.k8s.io/not-a-key"));
    let f = diagnose(&server, &[]).await;
    let f = finding(&f, Kind::VolumeSnapshotContent, "c-p");
    assert_eq!(f.cause, Cause::ClassInvalidParameter, "{f:#?}");
    assert!(evidence_has(f, &sidecar_message), "{f:#?}");
    assert_eq!(get_content(&server, "c-p").await.spec.driver, MOCK);
}

#[tokio::test]
async fn no_content_without_a_snapshot_controller() {
    let server = server(None).await;
    create(&server, class("mock-class", MOCK, json!({}))).await;
    create(&server, snapshot("vs-quiet", "mock-class")).await;
    let f = diagnose(&server, &[]).await;
    let f = finding(&f, Kind::VolumeSnapshot, "vs-quiet");
    assert_eq!(f.cause, Cause::NoContent);
    assert!(f.summary.contains("not running"), "{f:#?}");
}

#[tokio::test]
async fn no_content_rejected_by_the_snapshot_controller() {
    let server = server(None).await;
    create(&server, class("mock-class", MOCK, json!({}))).await;
    create(&server, snapshot("vs-rejected", "mock-class")).await;
    create(
        &server,
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "vs-rejected.1", "namespace": "default"},
            "involvedObject": {"kind": "VolumeSnapshot", "namespace": "default", "name": "vs-rejected",
                               "apiVersion": "snapshot.storage.k8s.io/v1"},
            "type": "Warning", "reason": "SnapshotContentCreationFailed",
            "message": "Failed to create snapshot content with error persistentvolumeclaims \"pvc-1\" not found",
            "source": {"component": "snapshot-controller"}, "count": 3
        }),
    )
    .await;
    let f = diagnose(&server, &[]).await;
    let f = finding(&f, Kind::VolumeSnapshot, "vs-rejected");
    assert_eq!(f.cause, Cause::NoContent);
    assert!(f.summary.contains("rejects"), "{f:#?}");
    assert!(
        evidence_has(f, "persistentvolumeclaims \"pvc-1\" not found"),
        "{f:#?}"
    );
    assert!(evidence_has(f, "snapshot-controller"), "{f:#?}");
}

#[tokio::test]
async fn no_sidecar_names_the_lease() {
    let server = server(None).await;
    create(&server, class("mock-class", MOCK, json!({}))).await;
    create(&server, content("c-n", MOCK, "mock-class")).await;
    let renewed = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(600);
    create(
        &server,
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": lease_name(MOCK), "namespace": "kube-system"},
            "spec": {"holderIdentity": "csi-snapshotter-0", "leaseDurationSeconds": 15,
                     "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}
        }),
    )
    .await;
    let f = diagnose(&server, &[]).await;
    let f = finding(&f, Kind::VolumeSnapshotContent, "c-n");
    assert_eq!(f.cause, Cause::NoSidecar, "{f:#?}");
    let lease = format!("kube-system/{}", lease_name(MOCK));
    assert!(evidence_has(f, &lease), "{f:#?}");
    assert!(evidence_has(f, "held by csi-snapshotter-0"), "{f:#?}");
    assert!(evidence_has(f, "expired"), "{f:#?}");
}

/// A content whose deletion-secret annotations name `namespace/name`.
fn content_with_secret(name: &str, secret: &str) -> Value {
    let mut c = content(name, MOCK, "mock-class");
    c["metadata"]["annotations"] = json!({
        keys::ANN_DELETION_SECRET_NAME: secret,
        keys::ANN_DELETION_SECRET_NAMESPACE: "default",
    });
    c
}

#[tokio::test]
async fn secret_missing() {
    let server = server(Some(RbacPolicy::sidecar())).await;
    let _sidecar = sidecar(&server, MockConfig::default()).await;
    create(&server, class("mock-class", MOCK, json!({}))).await;
    create(&server, content_with_secret("c-s", "no-such-secret")).await;
    eventually("the sidecar's error status", || async {
        get_content(&server, "c-s").await.status.is_some()
    })
    .await;
    let f = diagnose(&server, &[]).await;
    let f = finding(&f, Kind::VolumeSnapshotContent, "c-s");
    assert_eq!(f.cause, Cause::SecretMissing, "{f:#?}");
    assert!(f.summary.contains("default/no-such-secret"), "{f:#?}");
}

/// The shipped rules without the optional secrets rule.
fn rbac_without_secrets() -> RbacPolicy {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/rbac.yaml"),
    )
    .unwrap();
    let mut out = String::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let mut v: serde_norway::Value = serde::Deserialize::deserialize(doc).unwrap();
        if let Some(rules) = v.get_mut("rules").and_then(|r| r.as_sequence_mut()) {
            rules.retain(|r| {
                !r["resources"]
                    .as_sequence()
                    .is_some_and(|s| s.iter().any(|x| x.as_str() == Some("secrets")))
            });
        }
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&v).unwrap());
    }
    RbacPolicy::from_yaml(&out).unwrap()
}

#[tokio::test]
async fn secret_forbidden() {
    let server = server(Some(rbac_without_secrets())).await;
    let _sidecar = sidecar(&server, MockConfig::default()).await;
    create(&server, class("mock-class", MOCK, json!({}))).await;
    create(
        &server,
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "creds", "namespace": "default"},
               "stringData": {"password": "not-for-your-eyes"}}),
    )
    .await;
    create(&server, content_with_secret("c-f", "creds")).await;
    eventually("the sidecar's error status", || async {
        get_content(&server, "c-f").await.status.is_some()
    })
    .await;
    let f = diagnose(&server, &[]).await;
    let f = finding(&f, Kind::VolumeSnapshotContent, "c-f");
    assert_eq!(f.cause, Cause::SecretForbidden, "{f:#?}");
    assert!(f.summary.contains("default/creds"), "{f:#?}");
    let all = serde_json::to_string(f).unwrap();
    assert!(!all.contains("not-for-your-eyes"));
}

#[tokio::test]
async fn driver_error_final() {
    let server = server(Some(RbacPolicy::sidecar())).await;
    let _sidecar = sidecar(&server, MockConfig::default()).await;
    create(
        &server,
        class("reject-class", MOCK, json!({param_faults::REJECT: "yes"})),
    )
    .await;
    create(&server, content("c-e", MOCK, "reject-class")).await;
    eventually("the sidecar's error status", || async {
        get_content(&server, "c-e").await.status.is_some()
    })
    .await;
    let f = diagnose(&server, &[]).await;
    let f = finding(&f, Kind::VolumeSnapshotContent, "c-e");
    assert_eq!(f.cause, Cause::DriverError, "{f:#?}");
    assert!(f.summary.contains("InvalidArgument"), "{f:#?}");
    assert!(evidence_has(f, "gRPC InvalidArgument is final"), "{f:#?}");
}

#[tokio::test]
async fn driver_error_transient() {
    let server = server(Some(RbacPolicy::sidecar())).await;
    let sidecar = sidecar(&server, MockConfig::default()).await;
    sidecar
        .mock
        .fail_next("CreateSnapshot", tonic::Code::Unavailable, 1000);
    create(&server, class("mock-class", MOCK, json!({}))).await;
    create(&server, content("c-t", MOCK, "mock-class")).await;
    eventually("the sidecar's error status", || async {
        get_content(&server, "c-t").await.status.is_some()
    })
    .await;
    let f = diagnose(&server, &[]).await;
    let f = finding(&f, Kind::VolumeSnapshotContent, "c-t");
    assert_eq!(f.cause, Cause::DriverError, "{f:#?}");
    assert!(evidence_has(f, "gRPC Unavailable is transient"), "{f:#?}");
    assert!(evidence_has(f, "create may still be running"), "{f:#?}");
}

#[tokio::test]
async fn driver_not_ready() {
    let server = server(Some(RbacPolicy::sidecar())).await;
    let _sidecar = sidecar(
        &server,
        MockConfig {
            ready_after_polls: 1_000_000,
            ..Default::default()
        },
    )
    .await;
    create(&server, class("mock-class", MOCK, json!({}))).await;
    create(&server, content("c-r", MOCK, "mock-class")).await;
    eventually("a status with a handle", || async {
        get_content(&server, "c-r").await.status_handle().is_some()
    })
    .await;
    let f = diagnose(&server, &[]).await;
    let f = finding(&f, Kind::VolumeSnapshotContent, "c-r");
    assert_eq!(f.cause, Cause::DriverNotReady, "{f:#?}");
}

#[tokio::test]
async fn create_in_flight() {
    let server = server(Some(RbacPolicy::sidecar())).await;
    let _sidecar = sidecar(&server, MockConfig::default()).await;
    create(
        &server,
        class("slow-class", MOCK, json!({param_faults::SLOW: "600s"})),
    )
    .await;
    create(&server, content("c-i", MOCK, "slow-class")).await;
    eventually("the being-created annotation", || async {
        get_content(&server, "c-i")
            .await
            .annotation(keys::ANN_VS_BEING_CREATED)
            .is_some()
    })
    .await;
    let f = diagnose(&server, &[]).await;
    let f = finding(&f, Kind::VolumeSnapshotContent, "c-i");
    assert_eq!(f.cause, Cause::CreateInFlight, "{f:#?}");
    assert!(evidence_has(f, keys::ANN_VS_BEING_CREATED), "{f:#?}");
}

#[tokio::test]
async fn delete_blocked_by_the_being_created_annotation() {
    let server = server(None).await;
    create(&server, class("mock-class", MOCK, json!({}))).await;
    let mut c = content("c-h", MOCK, "mock-class");
    c["metadata"]["annotations"] = json!({
        keys::ANN_VS_BEING_CREATED: "yes", keys::ANN_VS_BEING_DELETED: "yes"
    });
    create(&server, c.clone()).await;
    delete(&server, c).await;
    let f = diagnose(&server, &[]).await;
    let f = finding(&f, Kind::VolumeSnapshotContent, "c-h");
    assert_eq!(f.cause, Cause::DeleteBlocked, "{f:#?}");
    assert!(f.summary.contains("being-created"), "{f:#?}");
}

#[tokio::test]
async fn delete_blocked_without_a_sidecar() {
    let server = server(None).await;
    create(&server, class("mock-class", MOCK, json!({}))).await;
    let mut c = content("c-d", MOCK, "mock-class");
    c["metadata"]["annotations"] = json!({keys::ANN_VS_BEING_DELETED: "yes"});
    create(&server, c.clone()).await;
    patch_status(
        &server,
        c.clone(),
        json!({"snapshotHandle": "snap-1", "readyToUse": true}),
    )
    .await;
    delete(&server, c).await;
    let f = diagnose(&server, &[]).await;
    let f = finding(&f, Kind::VolumeSnapshotContent, "c-d");
    assert_eq!(f.cause, Cause::DeleteBlocked, "{f:#?}");
    assert!(f.summary.contains("no sidecar"), "{f:#?}");
    assert!(evidence_has(f, keys::FINALIZER_VSC), "{f:#?}");
}

#[tokio::test]
async fn delete_blocked_by_a_failing_delete_snapshot() {
    let server = server(Some(RbacPolicy::sidecar())).await;
    let sidecar = sidecar(&server, MockConfig::default()).await;
    sidecar
        .mock
        .fail_next("DeleteSnapshot", tonic::Code::Internal, 1000);
    create(&server, class("mock-class", MOCK, json!({}))).await;
    let mut c = content("c-x", MOCK, "mock-class");
    c["metadata"]["annotations"] = json!({keys::ANN_VS_BEING_DELETED: "yes"});
    create(&server, c.clone()).await;
    eventually("the content to become ready", || async {
        get_content(&server, "c-x").await.is_ready()
    })
    .await;
    delete(&server, c).await;
    eventually("a DeleteSnapshot attempt", || async {
        sidecar.mock.calls("DeleteSnapshot") > 0
    })
    .await;
    let mut last = Vec::new();
    for _ in 0..600 {
        last = diagnose(&server, &[]).await;
        if last.iter().any(|f| f.summary.contains("failing")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let f = finding(&last, Kind::VolumeSnapshotContent, "c-x");
    assert_eq!(f.cause, Cause::DeleteBlocked, "{f:#?}");
    assert!(
        f.summary.contains("the driver's delete call is failing"),
        "{f:#?}"
    );
    assert!(evidence_has(f, "SnapshotDeleteError"), "{f:#?}");
}

#[tokio::test]
async fn group_member_inconsistent() {
    let server = server(None).await;
    let vgsc = json!({
        "apiVersion": "groupsnapshot.storage.k8s.io/v1", "kind": "VolumeGroupSnapshotContent",
        "metadata": {"name": "g-1", "finalizers": [keys::FINALIZER_VGSC]},
        "spec": {
            "deletionPolicy": "Delete", "driver": MOCK,
            "source": {"volumeHandles": ["vol-1", "vol-2"]},
            "volumeGroupSnapshotClassName": "mock-group-class",
            "volumeGroupSnapshotRef": {"name": "vgs-1", "namespace": "default", "uid": UID}
        }
    });
    create(
        &server,
        json!({"apiVersion": "groupsnapshot.storage.k8s.io/v1", "kind": "VolumeGroupSnapshotClass",
               "metadata": {"name": "mock-group-class"}, "driver": MOCK, "deletionPolicy": "Delete"}),
    )
    .await;
    create(&server, vgsc.clone()).await;
    patch_status(
        &server,
        vgsc,
        json!({"volumeGroupSnapshotHandle": "group-1", "readyToUse": true,
               "volumeSnapshotInfoList": [
                   {"volumeHandle": "vol-1", "snapshotHandle": "snap-1", "readyToUse": true},
                   {"volumeHandle": "vol-2", "snapshotHandle": "snap-2", "readyToUse": true}]}),
    )
    .await;
    let member = json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
        "metadata": {"name": "member-1", "annotations": {keys::ANN_VGS_HANDLE_MEMBER: "group-1"}},
        "spec": {"deletionPolicy": "Delete", "driver": MOCK,
                 "source": {"snapshotHandle": "snap-9"},
                 "volumeSnapshotRef": {"name": "vs-member-1", "namespace": "default", "uid": UID}}
    });
    create(&server, member).await;
    let f = diagnose(&server, &[]).await;
    let f = finding(&f, Kind::VolumeGroupSnapshotContent, "g-1");
    assert_eq!(f.cause, Cause::GroupMemberInconsistent, "{f:#?}");
    assert!(
        evidence_has(f, "member content member-1 has snapshot handle snap-9"),
        "{f:#?}"
    );
    assert!(
        evidence_has(f, "no VolumeSnapshotContent for member snapshot snap-1"),
        "{f:#?}"
    );
}

/// Several stuck objects through the binary: text grouped by cause, JSON
/// with items and summary, exit 1; one object by KIND/NAME.
#[tokio::test]
async fn command_line_reports_and_exit_statuses() {
    let server = server(None).await;
    create(&server, class("mock-class", MOCK, json!({}))).await;
    create(&server, snapshot("vs-quiet", "mock-class")).await;
    create(&server, snapshot("vs-lost", "gone-class")).await;
    create(&server, content("c-n", MOCK, "mock-class")).await;
    let kubeconfig = format!("--kubeconfig={}", server.kubeconfig_path().display());
    let run_bin = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(BIN)
            .arg("diagnose")
            .args(args)
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .await
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, text, _) = run_bin(vec![kubeconfig.clone(), "--grace=0s".into(), "-A".into()]).await;
    println!("{text}");
    assert_eq!(code, Some(1));
    assert!(
        text.contains("class-not-found (1)\n  VolumeSnapshot/default/vs-lost"),
        "{text}"
    );
    assert!(
        text.contains("no-content (1)\n  VolumeSnapshot/default/vs-quiet"),
        "{text}"
    );
    assert!(
        text.contains("no-sidecar (1)\n  VolumeSnapshotContent/c-n"),
        "{text}"
    );
    assert!(text.contains("      fix: "), "{text}");

    let (code, json_text, _) = run_bin(vec![
        kubeconfig.clone(),
        "--grace=0s".into(),
        "-A".into(),
        "-o".into(),
        "json".into(),
    ])
    .await;
    assert_eq!(code, Some(1));
    let doc: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(
        doc["summary"],
        json!({"class-not-found": 1, "no-content": 1, "no-sidecar": 1})
    );
    let item = doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "c-n")
        .unwrap();
    for key in [
        "kind",
        "namespace",
        "name",
        "age_seconds",
        "cause",
        "summary",
        "evidence",
        "fix",
    ] {
        assert!(item.get(key).is_some(), "{key} missing in {item}");
    }
    assert_eq!(item["cause"], "no-sidecar");
    assert_eq!(item["kind"], "VolumeSnapshotContent");

    let (code, text, _) = run_bin(vec![
        kubeconfig.clone(),
        "--grace=0s".into(),
        "vsc/c-n".into(),
    ])
    .await;
    assert_eq!(code, Some(1));
    assert!(
        text.contains("VolumeSnapshotContent/c-n") && !text.contains("vs-quiet"),
        "{text}"
    );

    let (code, text, _) = run_bin(vec![
        kubeconfig.clone(),
        "--grace=1h".into(),
        "-n".into(),
        "default".into(),
    ])
    .await;
    assert_eq!((code, text.as_str()), (Some(1), text.as_str()));
    assert!(
        text.contains("class-not-found") && !text.contains("no-sidecar"),
        "{text}"
    );

    let (code, _, err) = run_bin(vec![kubeconfig.clone(), "--output=yaml".into()]).await;
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = run_bin(vec![kubeconfig.clone(), "pod/x".into()]).await;
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = run_bin(vec![kubeconfig.clone(), "vs/none".into()]).await;
    assert_eq!(code, Some(2), "{err}");
}

#[tokio::test]
async fn healthy_and_unreachable_exit_statuses() {
    let server = server(None).await;
    let out = tokio::process::Command::new(BIN)
        .args([
            "diagnose",
            &format!("--kubeconfig={}", server.kubeconfig_path().display()),
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "No stuck snapshot objects.\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    let addr = server.addr();
    drop(server);
    std::fs::write(
        &path,
        csi_snapshotter::testing::apiserver::kubeconfig_yaml(addr),
    )
    .unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["diagnose", &format!("--kubeconfig={}", path.display())])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = tokio::process::Command::new(BIN)
        .args(["diagnose", "--kubeconfig=/nonexistent/kubeconfig"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// One cluster with several stuck objects next to a healthy one: each gets
/// its own cause and the healthy one none (the text is printed for the docs).
#[tokio::test]
async fn several_stuck_objects_in_one_report() {
    let server = server(Some(RbacPolicy::sidecar())).await;
    let _sidecar = sidecar(&server, MockConfig::default()).await;
    create(&server, class("mock-class", MOCK, json!({}))).await;
    create(
        &server,
        class("reject-class", MOCK, json!({param_faults::REJECT: "yes"})),
    )
    .await;
    create(
        &server,
        class("slow-class", MOCK, json!({param_faults::SLOW: "600s"})),
    )
    .await;
    create(
        &server,
        class(
            "typo-class",
            MOCK,
            json!({"csi.storage.k8s.io/snapshotter-secret-nmae": "x"}),
        ),
    )
    .await;
    create(&server, content("snapcontent-ok", MOCK, "mock-class")).await;
    create(
        &server,
        content("snapcontent-rejected", MOCK, "reject-class"),
    )
    .await;
    create(&server, content("snapcontent-slow", MOCK, "slow-class")).await;
    create(&server, content("snapcontent-typo", MOCK, "typo-class")).await;
    create(
        &server,
        content_with_secret("snapcontent-creds", "backup-creds"),
    )
    .await;
    create(&server, snapshot("orphan", "mock-class")).await;
    for name in [
        "snapcontent-ok",
        "snapcontent-rejected",
        "snapcontent-typo",
        "snapcontent-creds",
    ] {
        eventually("the sidecar's status", || async {
            get_content(&server, name).await.status.is_some()
        })
        .await;
    }
    eventually("the slow create to be in flight", || async {
        get_content(&server, "snapcontent-slow")
            .await
            .annotation(keys::ANN_VS_BEING_CREATED)
            .is_some()
    })
    .await;
    let out = tokio::process::Command::new(BIN)
        .args([
            "diagnose",
            &format!("--kubeconfig={}", server.kubeconfig_path().display()),
            "--grace=0s",
            "-A",
        ])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    println!("{text}");
    assert_eq!(out.status.code(), Some(1));
    let findings = diagnose(&server, &[]).await;
    let causes: Vec<(&str, Cause)> = findings
        .iter()
        .map(|f| (f.name.as_str(), f.cause))
        .collect();
    assert_eq!(
        causes,
        [
            ("snapcontent-typo", Cause::ClassInvalidParameter),
            ("orphan", Cause::NoContent),
            ("snapcontent-creds", Cause::SecretMissing),
            ("snapcontent-rejected", Cause::DriverError),
            ("snapcontent-slow", Cause::CreateInFlight),
        ]
    );
    assert!(!text.contains("snapcontent-ok"), "{text}");
}
