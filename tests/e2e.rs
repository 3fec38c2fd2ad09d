//! End-to-end scenarios against a real Kubernetes cluster that has the
//! snapshot CRDs and the upstream snapshot-controller installed.
//!
//! ```text
//! E2E_KUBECONFIG=~/.kube/config E2E_DRIVER=hostpath.csi.k8s.io \
//!     cargo test --test e2e -- --nocapture --test-threads=1
//! ```
//!
//! Every setting is an environment variable; docs/e2e.md lists them. Without
//! `E2E_KUBECONFIG` the suite prints one line and passes, so that CI (which
//! has no cluster) stays green while still compiling the suite.
//!
//! The suite talks to the cluster only through kube and k8s-openapi (snapshot
//! objects are untyped JSON), so it tests the sidecar from outside, exactly as
//! a user would observe it.

#[path = "e2e/cluster.rs"]
mod cluster;
#[path = "support/crds.rs"]
mod crds;
#[path = "e2e/objects.rs"]
mod objects;
#[path = "e2e/scenarios.rs"]
mod scenarios;
#[path = "e2e/settings.rs"]
mod settings;
#[path = "e2e/sidecar.rs"]
mod sidecar;
#[path = "e2e/standin.rs"]
mod standin;
#[path = "e2e/volume.rs"]
mod volume;

use std::io::Write;
use std::time::Instant;

use settings::Settings;

/// Writes one line to the real stdout. Test output capture only intercepts
/// `print!`, so the progress of a long run (and the skip line in CI) is
/// visible even without `--nocapture`.
pub(crate) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[test]
fn e2e() {
    let settings = match Settings::from_env() {
        Ok(Some(settings)) => settings,
        Ok(None) => {
            say("e2e: skipped (E2E_KUBECONFIG not set)");
            return;
        }
        Err(e) => panic!("e2e: bad settings: {e}"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let summary = runtime.block_on(run(settings));
    assert!(
        summary.failed.is_empty(),
        "e2e: failed scenarios: {:?}",
        summary.failed
    );
}

/// The names of the scenarios that failed and of those that were skipped.
#[derive(Debug, Default)]
struct Summary {
    failed: Vec<&'static str>,
    skipped: Vec<&'static str>,
}

/// Runs the selected scenarios one after another. A failing scenario does
/// not stop the others.
async fn run(mut settings: Settings) -> Summary {
    let source = match (settings.create_volume, &settings.sidecar) {
        (true, Some(launch)) => match volume::SourceVolume::create(&launch.csi_address).await {
            Ok(v) => {
                settings.volume_handle = Some(v.handle.clone());
                Some(v)
            }
            Err(e) => panic!("e2e: cannot create the source volume: {e}"),
        },
        _ => None,
    };
    let client = match cluster::connect(&settings).await {
        Ok(client) => client,
        Err(e) => panic!("e2e: cannot use the cluster: {e}"),
    };
    let _sidecar = match &settings.sidecar {
        Some(launch) => match sidecar::Sidecar::start(launch, &settings).await {
            Ok(s) => Some(s),
            Err(e) => panic!("e2e: cannot start the sidecar: {e}"),
        },
        None => {
            say(&format!(
                "e2e: using the csi-snapshotter already running for driver {}",
                settings.driver
            ));
            None
        }
    };

    let standin = settings.standin_controller.then(|| {
        say("e2e: running the stand-in snapshot-controller (E2E_STANDIN_CONTROLLER)");
        tokio::spawn(standin::run(client.clone()))
    });

    let mut summary = Summary::default();
    let mut ran = 0;
    for scenario in scenarios::ALL {
        if !settings.selects(scenario.name) {
            continue;
        }
        ran += 1;
        say(&format!("== {}: {}", scenario.name, scenario.about));
        let started = Instant::now();
        let scope = cluster::Scope::new(client.clone(), &settings, scenario.name).await;
        let outcome = match &scope {
            Ok(scope) => (scenario.run)(scope).await,
            Err(e) => Err(format!("cannot create the scenario namespace: {e}")),
        };
        match outcome {
            Ok(scenarios::Outcome::Passed) => {
                say(&format!(
                    "   PASS {} ({:.0?})",
                    scenario.name,
                    started.elapsed()
                ));
            }
            Ok(scenarios::Outcome::Skipped(why)) => {
                say(&format!("   SKIP {}: {why}", scenario.name));
                summary.skipped.push(scenario.name);
            }
            Err(e) => {
                say(&format!("   FAIL {}: {e}", scenario.name));
                summary.failed.push(scenario.name);
            }
        }
        if let Ok(scope) = scope {
            scope.cleanup().await;
        }
    }
    if let Some(task) = standin {
        task.abort();
    }
    if let Some(v) = source {
        v.delete().await;
    }
    say(&format!(
        "e2e: {ran} scenarios run, {} failed, {} skipped",
        summary.failed.len(),
        summary.skipped.len()
    ));
    summary
}

/// The whole suite against the embedded API server (checking against the
/// upstream CRDs when `../shared/crds` is there, its built-in schemas
/// otherwise; the sidecar held to the shipped RBAC rules),
/// the suite's stand-in snapshot-controller, the
/// mock driver with its parameter faults (so every scenario runs, none is
/// skipped) and the sidecar binary. It proves the suite and the sidecar
/// agree on one machine; it does not replace a run on a real cluster with
/// the upstream snapshot-controller.
#[cfg(feature = "testing")]
#[test]
fn suite_passes_against_the_stand_in() {
    use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions, RbacPolicy};
    use csi_snapshotter::testing::mock_driver::{MockConfig, MockDriver, param_faults};
    use settings::{Launch, Param};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let summary = runtime.block_on(async {
        let server = ApiServer::start(ApiServerOptions {
            crd_schemas: crds::crd_dir(),
            restricted: Some(RbacPolicy::sidecar()),
            ..Default::default()
        })
        .await
        .expect("embedded API server");
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("csi.sock");
        let mock = MockDriver::start(&socket, MockConfig::default())
            .await
            .expect("mock driver");
        let param = |key: &str, value: &str| {
            Some(Param {
                key: key.to_string(),
                value: value.to_string(),
            })
        };
        let settings = Settings {
            kubeconfig: server.kubeconfig_path().to_path_buf(),
            context: None,
            driver: MockConfig::default().driver_name,
            storage_class: None,
            volume_handle: None,
            // One source volume from the driver's CreateVolume, as on the
            // real-stack rig, where the hostpath driver needs a real one.
            create_volume: true,
            sidecar: Some(Launch {
                binary: env!("CARGO_BIN_EXE_csi-snapshotter").into(),
                csi_address: format!("unix://{}", socket.display()),
                extra_args: Vec::new(),
                kubeconfig: server.restricted_kubeconfig_path().map(Into::into),
            }),
            timeout: std::time::Duration::from_secs(60),
            only: None,
            no_list_snapshots: false,
            reject_param: param(param_faults::REJECT, "yes"),
            secret_param: param(param_faults::REQUIRE_SECRETS, "yes"),
            transient_param: param(param_faults::FAIL_ONCE, "yes"),
            slow_param: param(param_faults::SLOW, "5s"),
            slow_creates: false,
            standin_controller: true,
        };
        let summary = run(settings).await;
        assert_eq!(
            server.forbidden_count(),
            0,
            "the sidecar made requests its RBAC rules do not allow"
        );
        mock.stop().await;
        server.shutdown().await;
        summary
    });
    assert!(
        summary.failed.is_empty() && summary.skipped.is_empty(),
        "e2e stand-in: failed {:?}, skipped {:?}",
        summary.failed,
        summary.skipped
    );
}

/// The objects the suite sends are accepted by the API: snapshot objects
/// pass the CRD schemas (upstream or built in; no unknown, i.e. misspelt, fields and no rule
/// violations), core objects round-trip through their k8s-openapi types.
/// Runs offline, so that a typo fails CI rather than a cluster run.
#[cfg(feature = "testing")]
#[test]
fn objects_are_valid_for_the_api() {
    use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
    use serde_json::Value;

    fn round_trips<K: serde::de::DeserializeOwned + serde::Serialize>(obj: &Value) {
        let typed: K = serde_json::from_value(obj.clone()).expect("parses as its type");
        assert_eq!(
            &serde_json::to_value(&typed).expect("serializes"),
            obj,
            "lost a field"
        );
    }
    round_trips::<Namespace>(&objects::namespace("e2e-x"));
    round_trips::<PersistentVolumeClaim>(&objects::claim("c", Some("sc"), None));
    round_trips::<PersistentVolumeClaim>(&objects::claim("c", None, Some("pv")));
    round_trips::<PersistentVolume>(&objects::static_volume(
        "pv",
        "d.example.com",
        "h",
        "ns",
        "c",
    ));

    let schemas = crds::schemas();
    let snapshot_objects = [
        (
            "volumesnapshotclasses",
            objects::snapshot_class("c", "d.example.com", "Delete", &[("k", "v")]),
        ),
        (
            "volumesnapshots",
            objects::snapshot_of_claim("s", "c", "claim"),
        ),
        (
            "volumesnapshots",
            objects::snapshot_of_content("s", "content"),
        ),
        (
            "volumesnapshotcontents",
            objects::pre_provisioned_content("p", "d.example.com", "h", "Retain", "s", "ns"),
        ),
    ];
    for (plural, obj) in snapshot_objects {
        let mut pruned = obj.clone();
        let unknown = schemas.prune("snapshot.storage.k8s.io", "v1", plural, &mut pruned);
        assert!(unknown.is_empty(), "{plural}: unknown fields {unknown:?}");
        if let Err(errors) = schemas.validate("snapshot.storage.k8s.io", "v1", plural, &obj) {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            panic!("{plural}: {text:?}");
        }
    }
}
