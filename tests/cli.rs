//! The binary's command line: Go-style flag parsing, usage, exit codes and
//! the values rejected at startup (spec A and B.1 steps 1–6).

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_csi-snapshotter");

/// Every flag upstream defines (spec A.1–A.3).
const UPSTREAM_FLAGS: &[&str] = &[
    "resync-period",
    "snapshot-name-prefix",
    "snapshot-name-uuid-length",
    "worker-threads",
    "timeout",
    "extra-create-metadata",
    "retry-interval-start",
    "retry-interval-max",
    "node-deployment",
    "groupsnapshot-name-prefix",
    "groupsnapshot-name-uuid-length",
    "feature-gates",
    "version",
    "kubeconfig",
    "csi-address",
    "leader-election",
    "leader-election-namespace",
    "leader-election-lease-duration",
    "leader-election-renew-deadline",
    "leader-election-retry-period",
    "leader-election-labels",
    "kube-api-qps",
    "kube-api-burst",
    "http-endpoint",
    "metrics-address",
    "metrics-path",
    "automaxprocs",
    "v",
    "vmodule",
    "logging-format",
    "log-flush-frequency",
    "log-text-split-stream",
    "log-json-split-stream",
    "log-text-info-buffer-size",
    "log-json-info-buffer-size",
];

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        // KUBECONFIG must be ignored; make sure a stray one cannot help.
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("NODE_NAME")
        .output()
        .expect("run csi-snapshotter")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A kubeconfig that loads but points at nothing listening.
fn kubeconfig(dir: &Path) -> String {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t\n",
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn help_lists_every_upstream_flag_and_exits_0() {
    for h in ["--help", "-h", "-help"] {
        let out = run(&[h]);
        assert_eq!(code(&out), 0, "{h}");
        let text = stderr(&out);
        for flag in UPSTREAM_FLAGS {
            assert!(
                text.contains(&format!("--{flag} ")),
                "{h}: usage lacks --{flag}"
            );
        }
    }
}

#[test]
fn unknown_flag_exits_2_with_usage() {
    let out = run(&["--no-such-flag"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("flag provided but not defined: -no-such-flag"),
        "{err}"
    );
    assert!(err.contains("--csi-address"), "usage missing: {err}");
}

#[test]
fn klog_flags_are_not_accepted() {
    for flag in ["--logtostderr", "--alsologtostderr=true", "--log_dir=/tmp"] {
        assert_eq!(code(&run(&[flag])), 2, "{flag}");
    }
}

#[test]
fn malformed_values_exit_2() {
    for args in [
        &["--timeout=10"][..],
        &["--timeout", "1d"],
        &["--resync-period=fast"],
        &["--worker-threads=1.5"],
        &["--leader-election=yes"],
        &["--leader-election-labels=novalue"],
        &["--timeout"],
    ] {
        let out = run(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--csi-address"), "{args:?}: no usage");
    }
}

#[test]
fn version_prints_argv0_and_version() {
    for v in ["--version", "-version", "--version=true"] {
        let out = run(&[v]);
        assert_eq!(code(&out), 0, "{v}");
        let line = String::from_utf8(out.stdout).unwrap();
        assert_eq!(line, format!("{BIN} {}\n", env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn single_dash_and_bare_bools_parse_like_go() {
    // A bare bool never takes the next argument: "false" here is the first
    // positional argument, which ends parsing, so --version stays true.
    let out = run(&["-version", "false", "--bogus"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // -version=false does not print the version; the run then fails on the
    // missing in-cluster configuration (exit 1), proving the flags parsed.
    let out = run(&["-version=false", "-timeout", "2s", "-v", "3"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
}

#[test]
fn feature_gate_errors() {
    assert_eq!(code(&run(&["--feature-gates=NoSuchGate=true"])), 255);
    assert_eq!(code(&run(&["--feature-gates=CSIVolumeGroupSnapshot"])), 2);
    assert_eq!(
        code(&run(&["--feature-gates=CSIVolumeGroupSnapshot=maybe"])),
        2
    );
    // Accepted gates, including repeats, pass validation.
    let out = run(&[
        "--feature-gates=AllAlpha=true,ComponentFlagz=false",
        "--feature-gates=ReleaseLeaderElectionOnExit=true",
        "--version",
    ]);
    assert_eq!(code(&out), 0);
}

#[test]
fn ga_gate_set_false_logs_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path());
    let out = run(&[
        "--kubeconfig",
        &kc,
        "--csi-address=tcp://127.0.0.1:1",
        "--feature-gates=CSIVolumeGroupSnapshot=false",
    ]);
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.starts_with('W') && l.contains("CSIVolumeGroupSnapshot=false")),
        "{err}"
    );
}

#[test]
fn flag_conflicts_exit_1() {
    let out = run(&["--node-deployment", "--leader-election"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("--node-deployment and --leader-election"));
    let out = run(&["--metrics-address=:8080", "--http-endpoint=:8081"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("--metrics-address"));
    assert_eq!(code(&run(&["--snapshot-name-prefix="])), 1);
}

#[test]
fn logging_validation_exits_1() {
    assert_eq!(code(&run(&["--logging-format=xml"])), 1);
    assert_eq!(code(&run(&["--log-text-split-stream"])), 1);
    assert_eq!(code(&run(&["--log-json-info-buffer-size=1Mi"])), 1);
}

#[test]
fn values_that_crash_upstream_are_rejected_at_startup() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--snapshot-name-uuid-length=33"],
            "--snapshot-name-uuid-length=33",
        ),
        (
            &["--snapshot-name-uuid-length=-2"],
            "--snapshot-name-uuid-length=-2",
        ),
        (
            &["--groupsnapshot-name-uuid-length=64"],
            "--groupsnapshot-name-uuid-length=64",
        ),
        (&["--worker-threads=0"], "--worker-threads=0"),
        (&["--timeout=0s"], "--timeout=0s"),
        (&["--retry-interval-start=0"], "--retry-interval-start"),
        (
            &["--retry-interval-start=10m", "--retry-interval-max=5m"],
            "--retry-interval-max",
        ),
        (
            &["--leader-election", "--leader-election-lease-duration=5s"],
            "leader-election",
        ),
        (&["--kube-api-burst=-1"], "--kube-api-burst"),
    ];
    for (args, mentions) in cases {
        let out = run(args);
        assert_eq!(code(&out), 1, "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(mentions), "{args:?}: {err}");
        assert!(
            !err.contains("Usage"),
            "{args:?}: validation errors print no usage"
        );
    }
}

#[test]
fn kubeconfig_env_is_ignored_and_missing_in_cluster_config_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path());
    let out = Command::new(BIN)
        .env("KUBECONFIG", &kc)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("in-cluster configuration"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn node_deployment_without_node_name_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path());
    let out = run(&["--kubeconfig", &kc, "--node-deployment"]);
    assert_eq!(code(&out), 255, "{}", stderr(&out));
    assert!(stderr(&out).contains("NODE_NAME"));
}

#[test]
fn non_unix_csi_address_exits_1_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path());
    for addr in ["tcp://127.0.0.1:10000", "localhost:10000", "dns:///csi"] {
        let out = run(&["--kubeconfig", &kc, "--csi-address", addr]);
        assert_eq!(code(&out), 1, "{addr}");
        let err = stderr(&out);
        assert!(
            err.contains("error connecting to CSI driver: invalid CSI address"),
            "{addr}: {err}"
        );
    }
}

#[test]
fn json_logging_writes_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path());
    let out = run(&[
        "--kubeconfig",
        &kc,
        "--logging-format=json",
        "--csi-address=tcp://x",
    ]);
    let err = stderr(&out);
    let objs: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(!objs.is_empty());
    for o in &objs {
        assert!(
            o["ts"].is_f64() && o["msg"].is_string() && o["level"].is_string(),
            "{o}"
        );
    }
    assert!(
        objs.iter()
            .any(|o| o["msg"] == "Version" && o["version"].is_string())
    );
}

/// Startup against the mock CSI driver (spec B.1 steps 6–13). The API server
/// is unreachable here, so the group CRD probe always fails.
#[cfg(feature = "testing")]
mod startup {
    use std::path::PathBuf;
    use std::process::{ExitStatus, Stdio};
    use std::time::Duration;

    use csi_snapshotter::csi::proto::v1::controller_service_capability::rpc::Type as CtrlCap;
    use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions};
    use csi_snapshotter::testing::mock_driver::{MockConfig, MockDriver};
    use tokio::io::{AsyncBufReadExt, BufReader};

    use super::{BIN, kubeconfig};

    /// Upper bound for one sidecar run in these tests; they finish in well
    /// under a second unless something hangs.
    const RUN_LIMIT: Duration = Duration::from_secs(30);

    struct Fixture {
        _dir: tempfile::TempDir,
        kubeconfig: String,
        socket: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        Fixture {
            kubeconfig: kubeconfig(dir.path()),
            socket: dir.path().join("csi.sock"),
            _dir: dir,
        }
    }

    /// Runs the sidecar to completion; returns its status and stderr.
    async fn run_to_exit(f: &Fixture, extra: &[&str]) -> (i32, String) {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg(format!("--kubeconfig={}", f.kubeconfig))
            .arg(format!("--csi-address=unix://{}", f.socket.display()))
            .args(extra)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .kill_on_drop(true);
        let out = tokio::time::timeout(RUN_LIMIT, cmd.output())
            .await
            .expect("sidecar exited in time")
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts the sidecar, waits until a stderr line contains `marker`,
    /// sends SIGTERM and returns the status and all stderr seen.
    async fn run_until(f: &Fixture, extra: &[&str], marker: &str) -> (ExitStatus, String) {
        let mut child = spawn(f, extra);
        let mut lines = stderr_lines(&mut child);
        let (found, mut seen) = wait_for_line(&mut lines, marker).await;
        assert!(found, "never logged {marker:?}:\n{seen}");
        let status = terminate(&mut child).await;
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_secs(1), lines.next_line()).await
        {
            seen.push_str(&line);
            seen.push('\n');
        }
        (status, seen)
    }

    #[tokio::test]
    async fn driver_without_snapshot_capability_exits_1() {
        let f = fixture();
        let config = MockConfig {
            controller_caps: vec![CtrlCap::CreateDeleteVolume],
            ..MockConfig::default()
        };
        let driver = MockDriver::start(&f.socket, config).await.unwrap();
        let (code, err) = run_to_exit(&f, &[]).await;
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("does not support snapshot creation"), "{err}");
        assert_eq!(driver.calls("GetPluginInfo"), 1);
        assert_eq!(driver.calls("Probe"), 1);
        assert_eq!(driver.calls("ControllerGetCapabilities"), 1);
        driver.stop().await;
    }

    #[tokio::test]
    async fn get_plugin_info_error_exits_1() {
        let f = fixture();
        let driver = MockDriver::start(&f.socket, MockConfig::default())
            .await
            .unwrap();
        driver.fail_next("GetPluginInfo", tonic::Code::Internal, 1);
        let (code, err) = run_to_exit(&f, &[]).await;
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("driver name"), "{err}");
        assert_eq!(driver.calls("Probe"), 0);
        driver.stop().await;
    }

    #[tokio::test]
    async fn probe_error_exits_1_but_not_ready_is_retried() {
        let f = fixture();
        let driver = MockDriver::start(&f.socket, MockConfig::default())
            .await
            .unwrap();
        driver.fail_next("Probe", tonic::Code::FailedPrecondition, 1);
        let (code, err) = run_to_exit(&f, &[]).await;
        assert_eq!(code, 1, "{err}");
        assert_eq!(driver.calls("ControllerGetCapabilities"), 0);

        driver.reset_calls();
        driver.set_probe_not_ready(1);
        let config = [
            "--feature-gates=CSIVolumeGroupSnapshot=false",
            "--http-endpoint=",
        ];
        let (status, err) = run_until(&f, &config, "Starting the controllers").await;
        assert!(status.success(), "{status:?}: {err}");
        assert_eq!(driver.calls("Probe"), 2, "{err}");
        driver.stop().await;
    }

    #[tokio::test]
    async fn missing_group_crds_turn_group_support_off() {
        let f = fixture();
        let driver = MockDriver::start(&f.socket, MockConfig::default())
            .await
            .unwrap();
        // An empty group prefix is fatal only while group support is on.
        let (status, err) = run_until(
            &f,
            &["--groupsnapshot-name-prefix=", "--timeout=5s"],
            "Starting the controllers",
        )
        .await;
        assert!(status.success(), "{status:?}: {err}");
        assert!(
            err.lines()
                .any(|l| l.starts_with('W') && l.contains("group snapshot support is disabled")),
            "{err}"
        );
        assert!(err.contains("group_snapshots=false"), "{err}");
        assert_eq!(driver.calls("GroupControllerGetCapabilities"), 0);
        driver.stop().await;
    }

    #[tokio::test]
    async fn http_listen_failure_is_fatal() {
        let f = fixture();
        let driver = MockDriver::start(&f.socket, MockConfig::default())
            .await
            .unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let (code, err) = run_to_exit(&f, &[&format!("--http-endpoint={addr}")]).await;
        assert_eq!(code, 255, "{err}");
        assert!(err.contains(&addr), "{err}");
        driver.stop().await;
    }

    /// A fixture whose kubeconfig points at a running embedded API server.
    async fn fixture_with_apiserver() -> (Fixture, ApiServer) {
        let server = ApiServer::start(ApiServerOptions::default()).await.unwrap();
        let mut f = fixture();
        f.kubeconfig = server.kubeconfig_path().to_string_lossy().into_owned();
        (f, server)
    }

    #[tokio::test]
    async fn group_crd_probe_lists_both_kinds_then_asks_group_capabilities() {
        let (f, server) = fixture_with_apiserver().await;
        let driver = MockDriver::start(&f.socket, MockConfig::default())
            .await
            .unwrap();
        let (status, err) = run_until(&f, &[], "Starting the controllers").await;
        assert!(status.success(), "{status:?}: {err}");
        assert!(err.contains("group_snapshots=true"), "{err}");
        assert!(server.request_count("LIST", "volumegroupsnapshotcontents") >= 1);
        assert!(server.request_count("LIST", "volumegroupsnapshotclasses") >= 1);
        assert_eq!(driver.calls("GroupControllerGetCapabilities"), 1);
        driver.stop().await;
        server.shutdown().await;
    }

    #[tokio::test]
    async fn group_capability_errors_are_only_logged_but_an_empty_group_prefix_is_fatal() {
        let (f, server) = fixture_with_apiserver().await;
        let driver = MockDriver::start(&f.socket, MockConfig::default())
            .await
            .unwrap();
        driver.fail_next(
            "GroupControllerGetCapabilities",
            tonic::Code::Unimplemented,
            1,
        );
        let (status, err) = run_until(&f, &[], "Starting the controllers").await;
        assert!(status.success(), "{status:?}: {err}");
        assert!(err.contains("group_snapshots=true"), "{err}");
        assert!(
            err.lines()
                .any(|l| l.starts_with('E') && l.contains("group controller capabilities")),
            "{err}"
        );

        driver.set_group_caps(false);
        let (status, err) = run_until(&f, &[], "Starting the controllers").await;
        assert!(status.success(), "{status:?}: {err}");
        assert!(err.contains("group_snapshots=true"), "{err}");
        assert!(
            err.lines().any(
                |l| l.starts_with('W') && l.contains("CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT")
            ),
            "{err}"
        );

        let (code, err) = run_to_exit(&f, &["--groupsnapshot-name-prefix="]).await;
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("--groupsnapshot-name-prefix"), "{err}");
        driver.stop().await;
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_failing_crd_list_disables_groups_without_asking_the_driver() {
        let (f, server) = fixture_with_apiserver().await;
        let driver = MockDriver::start(&f.socket, MockConfig::default())
            .await
            .unwrap();
        server
            .faults()
            .fail_next("LIST", "volumegroupsnapshotclasses", "", 403, 1);
        let (status, err) = run_until(&f, &[], "Starting the controllers").await;
        assert!(status.success(), "{status:?}: {err}");
        assert!(err.contains("group_snapshots=false"), "{err}");
        assert!(err.contains("volumegroupsnapshotclasses"), "{err}");
        assert_eq!(driver.calls("GroupControllerGetCapabilities"), 0);
        driver.stop().await;
        server.shutdown().await;
    }

    /// Lease of the mock driver (spec B.7 naming).
    const MOCK_LEASE: &str = "external-snapshotter-leader-mock-csi-k8s-io";

    fn lease_holder(server: &ApiServer) -> Option<String> {
        server
            .object("leases", "default", MOCK_LEASE)?
            .pointer("/spec/holderIdentity")?
            .as_str()
            .map(str::to_string)
    }

    #[tokio::test]
    async fn leader_election_takes_the_lease_before_starting_controllers() {
        let (f, server) = fixture_with_apiserver().await;
        let driver = MockDriver::start(&f.socket, MockConfig::default())
            .await
            .unwrap();
        let args = [
            "--leader-election",
            "--leader-election-namespace=default",
            "--leader-election-labels=app:snapshotter",
        ];
        let (status, err) = run_until(&f, &args, "Starting the controllers").await;
        // Without ReleaseLeaderElectionOnExit the Lease is kept on shutdown.
        assert!(status.success(), "{status:?}: {err}");
        assert!(
            lease_holder(&server).is_some_and(|h| !h.is_empty()),
            "{err}"
        );
        let lease = server.object("leases", "default", MOCK_LEASE).unwrap();
        assert_eq!(
            lease.pointer("/metadata/labels/app"),
            Some(&"snapshotter".into())
        );
        driver.stop().await;
        server.shutdown().await;
    }

    #[tokio::test]
    async fn release_on_exit_clears_the_holder() {
        let (f, server) = fixture_with_apiserver().await;
        let driver = MockDriver::start(&f.socket, MockConfig::default())
            .await
            .unwrap();
        let args = [
            "--leader-election",
            "--leader-election-namespace=default",
            "--feature-gates=ReleaseLeaderElectionOnExit=true",
        ];
        let (status, err) = run_until(&f, &args, "Starting the controllers").await;
        assert!(status.success(), "{status:?}: {err}");
        assert!(err.contains("Released the leader election lease"), "{err}");
        assert_eq!(lease_holder(&server), None, "{err}");
        driver.stop().await;
        server.shutdown().await;
    }

    #[tokio::test]
    async fn http_endpoint_serves_metrics_and_leader_health() {
        let (f, server) = fixture_with_apiserver().await;
        let driver = MockDriver::start(&f.socket, MockConfig::default())
            .await
            .unwrap();
        // A port that was free a moment ago.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let endpoint = format!("--http-endpoint={addr}");
        let args = [
            endpoint.as_str(),
            "--leader-election",
            "--leader-election-namespace=default",
        ];
        let mut child = spawn(&f, &args);
        let mut lines = stderr_lines(&mut child);
        let (found, seen) = wait_for_line(&mut lines, "Starting the controllers").await;
        assert!(found, "{seen}");
        let metrics = http_get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.contains("csi_sidecar_operations_seconds_count{driver_name=\"mock.csi.k8s.io\",grpc_status_code=\"OK\",method_name=\"/csi.v1.Identity/Probe\""),
            "{metrics}"
        );
        let health = http_get(addr, "/healthz/leader-election").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(health.ends_with("ok"), "{health}");
        terminate(&mut child).await;
        driver.stop().await;
        server.shutdown().await;
    }

    fn spawn(f: &Fixture, extra: &[&str]) -> tokio::process::Child {
        tokio::process::Command::new(BIN)
            .arg(format!("--kubeconfig={}", f.kubeconfig))
            .arg(format!("--csi-address={}", f.socket.display()))
            .args(extra)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStderr>>;

    fn stderr_lines(child: &mut tokio::process::Child) -> Lines {
        BufReader::new(child.stderr.take().unwrap()).lines()
    }

    /// Reads lines until one contains `marker`; returns whether it was seen
    /// and everything read.
    async fn wait_for_line(lines: &mut Lines, marker: &str) -> (bool, String) {
        let mut seen = String::new();
        let found = tokio::time::timeout(RUN_LIMIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(marker) {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        (found, seen)
    }

    async fn terminate(child: &mut tokio::process::Child) -> ExitStatus {
        let pid = child.id().unwrap().to_string();
        let killed = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
        tokio::time::timeout(RUN_LIMIT, child.wait())
            .await
            .expect("sidecar stopped after SIGTERM")
            .unwrap()
    }

    /// One plain HTTP/1.1 GET; returns the whole response.
    async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }
}
