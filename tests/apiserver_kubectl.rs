//! kubectl against the embedded API server: discovery, get, create, apply,
//! patch and delete of snapshot objects and Secrets work as on a real
//! cluster. Skipped (one line) when `kubectl` is not on the PATH.

#[path = "support/crds.rs"]
mod crds;

use std::path::Path;
use std::process::Command;

use crds::crd_dir;
use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions};

/// Runs kubectl with the server's kubeconfig; returns (success, stdout, stderr).
fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("KUBECACHEDIR", cache)
        .output()
        .expect("kubectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kubectl_ok(kubeconfig: &Path, cache: &Path, args: &[&str]) -> String {
    let (ok, out, err) = kubectl(kubeconfig, cache, args);
    assert!(ok, "kubectl {args:?} failed:\n{out}\n{err}");
    out
}

fn have_kubectl() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_works_against_the_embedded_server() {
    if !have_kubectl() {
        println!("kubectl not found on the PATH: kubectl test skipped");
        return;
    }
    let server = ApiServer::start(ApiServerOptions {
        crd_schemas: crd_dir(),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = server.kubeconfig_path().to_path_buf();
    let cache = dir.path().join("cache");
    let manifest = dir.path().join("class.yaml");
    let class = |policy: &str| {
        format!(
            "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotClass\n\
             metadata:\n  name: kc-class\ndriver: kc.csi.example.com\ndeletionPolicy: {policy}\n"
        )
    };

    tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| kubectl_ok(&kc, &cache, args);

        // Discovery: the snapshot kinds with their short names and scope.
        let resources = run(&["api-resources", "--api-group=snapshot.storage.k8s.io"]);
        for kind in [
            "VolumeSnapshotClass",
            "VolumeSnapshotContent",
            "VolumeSnapshot",
        ] {
            assert!(resources.contains(kind), "{resources}");
        }
        assert!(resources.contains("vsclass"), "{resources}");

        std::fs::write(&manifest, class("Delete")).unwrap();
        let m = manifest.to_str().unwrap();
        let created = run(&["create", "--validate=false", "-f", m]);
        assert!(created.contains("kc-class created"), "{created}");
        let (ok, _, err) = kubectl(&kc, &cache, &["create", "--validate=false", "-f", m]);
        assert!(!ok && err.contains("AlreadyExists"), "{err}");

        let listed = run(&["get", "volumesnapshotclasses"]);
        assert!(listed.contains("kc-class"), "{listed}");

        std::fs::write(&manifest, class("Retain")).unwrap();
        let applied = run(&["apply", "--validate=false", "-f", m]);
        assert!(applied.contains("configured"), "{applied}");
        let policy = run(&[
            "get",
            "vsclass",
            "kc-class",
            "-o",
            "jsonpath={.deletionPolicy}",
        ]);
        assert_eq!(policy, "Retain");

        run(&[
            "patch",
            "vsclass",
            "kc-class",
            "--type=merge",
            "-p",
            r#"{"parameters":{"tier":"gold"}}"#,
        ]);
        let params = run(&[
            "get",
            "vsclass",
            "kc-class",
            "-o",
            "jsonpath={.parameters.tier}",
        ]);
        assert_eq!(params, "gold");
        run(&[
            "patch",
            "vsclass",
            "kc-class",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/parameters/tier"}]"#,
        ]);
        let (ok, _, err) = kubectl(
            &kc,
            &cache,
            &[
                "patch",
                "vsclass",
                "kc-class",
                "--type=merge",
                "-p",
                r#"{"deletionPolicy":"Sometimes"}"#,
            ],
        );
        assert!(!ok, "an invalid enum value must be refused");
        assert!(err.contains("Unsupported value"), "{err}");

        run(&[
            "create",
            "secret",
            "generic",
            "kc-secret",
            "--from-literal=user=u",
        ]);
        let secrets = run(&["get", "secrets", "-n", "default"]);
        assert!(secrets.contains("kc-secret"), "{secrets}");

        let deleted = run(&["delete", "vsclass", "kc-class"]);
        assert!(deleted.contains("deleted"), "{deleted}");
        let (ok, _, err) = kubectl(&kc, &cache, &["get", "vsclass", "kc-class"]);
        assert!(!ok && err.contains("NotFound"), "{err}");
        run(&["delete", "secret", "kc-secret"]);
    })
    .await
    .unwrap();
    server.shutdown().await;
}
