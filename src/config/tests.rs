//! Table tests of flag parsing and validation.

use super::*;

fn run(args: &[&str]) -> Result<Config, ConfigError> {
    let argv = std::iter::once("csi-snapshotter").chain(args.iter().copied());
    match parse(argv)? {
        Invocation::Run(c) => Ok(*c),
        other => panic!("expected a run config, got {other:?}"),
    }
}

fn exit_code(args: &[&str]) -> i32 {
    match run(args) {
        Ok(_) => 0,
        Err(e) => e.exit_code(),
    }
}

#[test]
fn defaults_match_upstream() {
    let c = run(&[]).unwrap();
    assert_eq!(c.csi_address, "/run/csi/socket");
    assert_eq!(c.kubeconfig, None);
    assert_eq!(c.resync_period, Duration::from_secs(15 * 60));
    assert_eq!(c.snapshot_name_prefix, "snapshot");
    assert_eq!(c.snapshot_name_uuid_length, None);
    assert_eq!(c.groupsnapshot_name_prefix, "groupsnapshot");
    assert_eq!(c.groupsnapshot_name_uuid_length, None);
    assert_eq!(c.worker_threads, 10);
    assert_eq!(c.timeout, Duration::from_secs(60));
    assert!(!c.extra_create_metadata);
    assert_eq!(c.retry_interval_start, Duration::from_secs(1));
    assert_eq!(c.retry_interval_max, Duration::from_secs(300));
    assert!(!c.node_deployment);
    assert!(c.feature_gates.csi_volume_group_snapshot);
    assert!(!c.feature_gates.release_leader_election_on_exit);
    assert!(!c.leader_election);
    assert_eq!(c.leader_election_namespace, None);
    assert_eq!(c.leader_election_lease_duration, Duration::from_secs(15));
    assert_eq!(c.leader_election_renew_deadline, Duration::from_secs(10));
    assert_eq!(c.leader_election_retry_period, Duration::from_secs(5));
    assert!(c.leader_election_labels.is_empty());
    assert_eq!((c.kube_api_qps, c.kube_api_burst), (5.0, 10));
    assert_eq!(c.http_server, None);
    assert_eq!(c.metrics_path, "/metrics");
    assert!(!c.automaxprocs);
    assert_eq!(c.logging, LoggingConfig::default());
}

#[test]
fn every_flag_is_settable_with_go_spelling() {
    let c = run(&[
        "-csi-address=unix:///csi/csi.sock",
        "--kubeconfig",
        "/etc/kube.conf",
        "-resync-period=1m30s",
        "--snapshot-name-prefix=snap",
        "--snapshot-name-uuid-length",
        "8",
        "--groupsnapshot-name-prefix=grp",
        "--groupsnapshot-name-uuid-length=32",
        "--worker-threads=0x4",
        "--timeout=300ms",
        "--extra-create-metadata",
        "--retry-interval-start=2s",
        "--retry-interval-max=1.5h",
        "--feature-gates=ReleaseLeaderElectionOnExit=true",
        "--feature-gates",
        "CSIVolumeGroupSnapshot=false",
        "--leader-election",
        "--leader-election-namespace=kube-system",
        "--leader-election-lease-duration=30s",
        "--leader-election-renew-deadline=20s",
        "--leader-election-retry-period=10s",
        "--leader-election-labels=a:1,b:2",
        "--leader-election-labels=a:3",
        "--kube-api-qps=50.5",
        "--kube-api-burst=100",
        "--http-endpoint=:8080",
        "--metrics-path=/m",
        "--automaxprocs=true",
        "--v=5",
        "--vmodule=content=6",
        "--logging-format=text",
        "--log-flush-frequency=1s",
        "--log-text-split-stream=false",
        "--log-json-split-stream=false",
        "--log-text-info-buffer-size=0",
        "--log-json-info-buffer-size=0Mi",
        "positional",
        "--ignored-after-positional",
    ])
    .unwrap();
    assert_eq!(c.csi_address, "unix:///csi/csi.sock");
    assert_eq!(c.kubeconfig, Some(PathBuf::from("/etc/kube.conf")));
    assert_eq!(c.resync_period, Duration::from_secs(90));
    assert_eq!(c.snapshot_name_prefix, "snap");
    assert_eq!(c.snapshot_name_uuid_length, Some(8));
    assert_eq!(c.groupsnapshot_name_prefix, "grp");
    assert_eq!(c.groupsnapshot_name_uuid_length, Some(32));
    assert_eq!(c.worker_threads, 4);
    assert_eq!(c.timeout, Duration::from_millis(300));
    assert!(c.extra_create_metadata);
    assert_eq!(c.retry_interval_start, Duration::from_secs(2));
    assert_eq!(c.retry_interval_max, Duration::from_secs(5400));
    assert!(c.feature_gates.release_leader_election_on_exit);
    assert!(!c.feature_gates.csi_volume_group_snapshot);
    assert_eq!(c.startup_warnings().len(), 1);
    assert!(c.leader_election);
    assert_eq!(c.leader_election_namespace.as_deref(), Some("kube-system"));
    assert_eq!(c.leader_election_lease_duration, Duration::from_secs(30));
    assert_eq!(c.leader_election_renew_deadline, Duration::from_secs(20));
    assert_eq!(c.leader_election_retry_period, Duration::from_secs(10));
    assert_eq!(
        c.leader_election_labels,
        BTreeMap::from([("a".into(), "3".into()), ("b".into(), "2".into())])
    );
    assert_eq!((c.kube_api_qps, c.kube_api_burst), (50.5, 100));
    assert_eq!(
        c.http_server,
        Some(HttpServerConfig {
            address: ":8080".into(),
            metrics_path: "/m".into(),
            leader_election_healthz: true
        })
    );
    assert!(c.automaxprocs);
    assert_eq!(c.logging.verbosity, 5);
    assert_eq!(c.logging.vmodule.len(), 1);
    assert_eq!(c.logging.flush_frequency, Duration::from_secs(1));
}

#[test]
fn repeated_scalar_flags_take_the_last_value() {
    let c = run(&["--v=1", "--v=3", "--timeout=1s", "-timeout", "2s"]).unwrap();
    assert_eq!(c.logging.verbosity, 3);
    assert_eq!(c.timeout, Duration::from_secs(2));
}

#[test]
fn metrics_address_serves_without_healthz() {
    let c = run(&["--metrics-address=:9090"]).unwrap();
    let http = c.http_server.unwrap();
    assert_eq!(http.address, ":9090");
    assert!(!http.leader_election_healthz);
}

#[test]
fn parse_errors_exit_2_with_usage() {
    for args in [
        &["--no-such-flag"][..],
        &["--timeout=10"],
        &["--timeout=1d"],
        &["--timeout"],
        &["--worker-threads=many"],
        &["--leader-election=yes"],
        &["--v=-1"],
        &["--kube-api-qps=fast"],
        &["--feature-gates=CSIVolumeGroupSnapshot"],
        &["--feature-gates=CSIVolumeGroupSnapshot=maybe"],
        &["--leader-election-labels=a"],
        &["--leader-election-labels=a:b:c"],
        &["--vmodule=foo"],
        &["--log-text-info-buffer-size=lots"],
        &["--logtostderr"],
        &["--alsologtostderr"],
        &["---v=1"],
    ] {
        let err = run(args).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        let ConfigError::Usage { usage, .. } = &err else {
            panic!("{args:?}: {err:?}")
        };
        assert!(usage.contains("--csi-address"), "{args:?}");
    }
}

#[test]
fn unknown_flag_message_names_the_flag() {
    let err = run(&["-bogus=1"]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("flag provided but not defined: -bogus\n"),
        "{err}"
    );
}

#[test]
fn help_and_version() {
    for h in ["-h", "--help", "-help"] {
        let inv = parse(["csi-snapshotter", "--v=1", h]).unwrap();
        let Invocation::Help(text) = inv else {
            panic!("{h}")
        };
        for name in flag_names() {
            assert!(text.contains(&format!("--{name}")), "help lacks --{name}");
        }
    }
    let inv = parse(["/bin/csi-snapshotter", "-version"]).unwrap();
    let Invocation::Version(line) = inv else {
        panic!("version")
    };
    assert_eq!(line, format!("/bin/csi-snapshotter {VERSION}"));
}

#[test]
fn version_comes_after_logging_and_gate_validation_but_before_the_rest() {
    let code = |args: &[&str]| match parse(std::iter::once("x").chain(args.iter().copied())) {
        Ok(Invocation::Version(_)) => 0,
        Ok(_) => -1,
        Err(e) => e.exit_code(),
    };
    assert_eq!(code(&["--version", "--logging-format=xml"]), 1);
    assert_eq!(code(&["--version", "--feature-gates=Nope=true"]), 255);
    assert_eq!(
        code(&["--version", "--node-deployment", "--leader-election"]),
        0
    );
    assert_eq!(code(&["--version", "--timeout=0"]), 0);
}

#[test]
fn feature_gate_exit_codes() {
    assert_eq!(exit_code(&["--feature-gates=NoSuchGate=true"]), 255);
    assert_eq!(
        exit_code(&["--feature-gates=AllAlpha=true,AllBeta=false"]),
        0
    );
    assert_eq!(
        exit_code(&["--feature-gates=ComponentFlagz=true,ComponentStatusz=true"]),
        0
    );
    assert_eq!(exit_code(&["--feature-gates=CSIVolumeGroupSnapshot=0"]), 0);
    let c = run(&["--feature-gates=CSIVolumeGroupSnapshot=false"]).unwrap();
    assert!(!c.feature_gates.csi_volume_group_snapshot);
    assert!(c.startup_warnings()[0].contains("GA feature gate"));
}

#[test]
fn logging_validation_exits_1() {
    for args in [
        &["--logging-format=xml"][..],
        &["--log-text-split-stream"],
        &["--log-json-split-stream=true"],
        &["--log-text-info-buffer-size=1Mi"],
        &["--log-json-info-buffer-size=64"],
        &["--logging-format=json", "--vmodule=run=5"],
        &["--log-flush-frequency=-1s"],
    ] {
        assert_eq!(exit_code(args), 1, "{args:?}");
    }
    let c = run(&["--logging-format=json"]).unwrap();
    assert_eq!(c.logging.format, LogFormat::Json);
}

#[test]
fn upstream_flag_conflicts_exit_1() {
    assert_eq!(exit_code(&["--node-deployment", "--leader-election"]), 1);
    assert_eq!(
        exit_code(&["--metrics-address=:1", "--http-endpoint=:2"]),
        1
    );
    assert_eq!(exit_code(&["--snapshot-name-prefix="]), 1);
    // An empty group prefix is only fatal once group support is known to be on.
    assert_eq!(exit_code(&["--groupsnapshot-name-prefix="]), 0);
}

#[test]
fn values_that_crash_upstream_are_rejected_with_a_message() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--snapshot-name-uuid-length=33"],
            "snapshot-name-uuid-length",
        ),
        (
            &["--snapshot-name-uuid-length=-2"],
            "snapshot-name-uuid-length",
        ),
        (
            &["--groupsnapshot-name-uuid-length=40"],
            "groupsnapshot-name-uuid-length",
        ),
        (
            &["--groupsnapshot-name-uuid-length=-5"],
            "groupsnapshot-name-uuid-length",
        ),
        (&["--worker-threads=0"], "worker-threads"),
        (&["--worker-threads=-3"], "worker-threads"),
        (&["--timeout=0"], "timeout"),
        (&["--timeout=-1s"], "timeout"),
        (&["--retry-interval-start=0s"], "retry-interval-start"),
        (&["--retry-interval-max=0"], "retry-interval-max"),
        (&["--retry-interval-start=10m"], "retry-interval-max"),
        (&["--resync-period=-1m"], "resync-period"),
        (
            &["--leader-election", "--leader-election-lease-duration=10s"],
            "leader-election-lease-duration",
        ),
        (
            &["--leader-election", "--leader-election-renew-deadline=6s"],
            "leader-election-retry-period",
        ),
        (
            &["--leader-election", "--leader-election-retry-period=0"],
            "leader-election-retry-period",
        ),
        (&["--kube-api-burst=-1"], "kube-api-burst"),
        (&["--kube-api-qps=NaN"], "kube-api-qps"),
    ];
    for (args, mentions) in cases {
        let err = run(args).unwrap_err();
        assert_eq!(err.exit_code(), 1, "{args:?}");
        assert!(err.to_string().contains(mentions), "{args:?}: {err}");
    }
}

#[test]
fn boundary_values_are_accepted() {
    assert_eq!(
        run(&["--snapshot-name-uuid-length=0"])
            .unwrap()
            .snapshot_name_uuid_length,
        Some(0)
    );
    assert_eq!(
        run(&["--snapshot-name-uuid-length=32"])
            .unwrap()
            .snapshot_name_uuid_length,
        Some(32)
    );
    assert_eq!(
        run(&["--resync-period=0"]).unwrap().resync_period,
        Duration::ZERO
    );
    assert_eq!(exit_code(&["--retry-interval-start=5m"]), 0);
    // Leader-election timing is only checked when election is on.
    assert_eq!(exit_code(&["--leader-election-retry-period=0"]), 0);
    assert_eq!(
        exit_code(&[
            "--leader-election",
            "--leader-election-renew-deadline=6001ms"
        ]),
        0
    );
}

#[test]
fn qps_and_burst_keep_client_go_meanings() {
    // 0 and negative QPS are valid (default and unlimited); a negative burst
    // is only an error while a limiter is in use.
    assert_eq!(exit_code(&["--kube-api-qps=0", "--kube-api-burst=0"]), 0);
    assert_eq!(exit_code(&["--kube-api-qps=-1", "--kube-api-burst=-1"]), 0);
    assert_eq!(exit_code(&["--kube-api-qps=0", "--kube-api-burst=-1"]), 1);
}
