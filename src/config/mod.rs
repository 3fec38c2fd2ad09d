//! Command-line flags → a validated [`Config`].
//!
//! Flag names, defaults and value syntax are upstream's (spec A); the Go
//! `flag` spelling rules are handled by the [`goflag`] pre-pass and the value
//! syntax by [`values`]. Validation follows upstream's order and exit codes
//! (spec B.1 steps 1–2 and 5) and additionally rejects at startup the values
//! that make upstream crash later (spec Appendix).

pub mod gates;
pub mod goflag;
pub mod values;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, CommandFactory, Parser};

use crate::logging::{LogFormat, LoggingConfig, VModuleRule, parse_vmodule};
pub use gates::FeatureGates;
use goflag::{FlagKind, PrePass};
use values::{
    GoDuration, Quantity, parse_feature_gate_list, parse_go_bool, parse_go_duration,
    parse_go_float, parse_go_int, parse_go_u32, parse_label_list, parse_quantity,
};

/// The version printed by `--version` and logged at startup. A build may set
/// `CSI_SNAPSHOTTER_VERSION` (for example to a git tag); otherwise it is the
/// crate version.
pub const VERSION: &str = match option_env!("CSI_SNAPSHOTTER_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

/// Length of a Kubernetes UID with its dashes removed: the largest usable
/// `--*-uuid-length`.
const UID_CHARS_WITHOUT_DASHES: i64 = 32;

/// client-go's leader-election jitter factor: the renew deadline must exceed
/// the retry period times this.
const LEADER_ELECTION_JITTER: f64 = 1.2;

/// Why the process stops before running, with its exit status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A flag that is not defined or a value that does not parse: the message
    /// and then the usage are printed, exit 2 (Go `flag` behaviour).
    #[error("{message}\n{usage}")]
    Usage {
        /// What was wrong.
        message: String,
        /// The usage text.
        usage: String,
    },
    /// A flag combination or value that fails validation: exit 1.
    #[error("{0}")]
    Invalid(String),
    /// An unknown feature gate: exit 255 (upstream logs it as fatal).
    #[error("{0}")]
    Fatal(String),
}

impl ConfigError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Usage { .. } => 2,
            ConfigError::Invalid(_) => 1,
            ConfigError::Fatal(_) => 255,
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Run the sidecar.
    Run(Box<Config>),
    /// `-h`/`--help`: print this usage to stderr and exit 0.
    Help(String),
    /// `--version`: print this line to stdout and exit 0.
    Version(String),
}

/// The sidecar's flags, as clap sees them after the Go-style pre-pass.
/// Every field is a flag with upstream's name and default.
#[derive(Parser, Debug)]
#[command(
    disable_help_flag = true,
    disable_version_flag = true,
    args_override_self = true,
    about = "CSI snapshotter sidecar: drives a CSI driver's snapshot RPCs for VolumeSnapshotContent and VolumeGroupSnapshotContent objects.",
    after_help = "Flags may be written -name or --name; values as -name=value or -name value; booleans as -name or -name=true|false. Durations use Go syntax (300ms, 1m30s, 2h). -h or --help prints this text."
)]
struct Flags {
    /// Resync period of the informers: every cached object is re-delivered this often (0 disables)
    #[arg(long = "resync-period", value_name = "DURATION", default_value = "15m", value_parser = parse_go_duration)]
    resync_period: GoDuration,

    /// Prefix of the snapshot name sent to CreateSnapshot; must not be empty
    #[arg(
        long = "snapshot-name-prefix",
        value_name = "STRING",
        default_value = "snapshot"
    )]
    snapshot_name_prefix: String,

    /// Characters of the VolumeSnapshot UID (dashes removed) appended to the prefix; -1 uses the whole UID with dashes; -1..=32
    #[arg(long = "snapshot-name-uuid-length", value_name = "INT", default_value = "-1", value_parser = parse_go_int, allow_hyphen_values = true)]
    snapshot_name_uuid_length: i64,

    /// Number of concurrent workers per queue (content, and group content when enabled)
    #[arg(long = "worker-threads", value_name = "INT", default_value = "10", value_parser = parse_go_int, allow_hyphen_values = true)]
    worker_threads: i64,

    /// Deadline of each CSI call, of each Probe attempt and of the startup CRD probe
    #[arg(long = "timeout", value_name = "DURATION", default_value = "1m", value_parser = parse_go_duration, allow_hyphen_values = true)]
    timeout: GoDuration,

    /// Add VolumeSnapshot/VolumeGroupSnapshot name and namespace and the content name to the CreateSnapshot/CreateVolumeGroupSnapshot parameters
    #[arg(long = "extra-create-metadata", value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = parse_go_bool, action = ArgAction::Set)]
    extra_create_metadata: bool,

    /// First delay of the per-object exponential retry backoff
    #[arg(long = "retry-interval-start", value_name = "DURATION", default_value = "1s", value_parser = parse_go_duration, allow_hyphen_values = true)]
    retry_interval_start: GoDuration,

    /// Largest delay of the per-object exponential retry backoff
    #[arg(long = "retry-interval-max", value_name = "DURATION", default_value = "5m", value_parser = parse_go_duration, allow_hyphen_values = true)]
    retry_interval_max: GoDuration,

    /// Only handle contents labelled snapshot.storage.kubernetes.io/managed-by=$NODE_NAME; excludes --leader-election
    #[arg(long = "node-deployment", value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = parse_go_bool, action = ArgAction::Set)]
    node_deployment: bool,

    /// Prefix of the group snapshot name sent to CreateVolumeGroupSnapshot; must not be empty while group snapshots are enabled
    #[arg(
        long = "groupsnapshot-name-prefix",
        value_name = "STRING",
        default_value = "groupsnapshot"
    )]
    groupsnapshot_name_prefix: String,

    /// Same as --snapshot-name-uuid-length, for the VolumeGroupSnapshot UID; -1..=32
    #[arg(long = "groupsnapshot-name-uuid-length", value_name = "INT", default_value = "-1", value_parser = parse_go_int, allow_hyphen_values = true)]
    groupsnapshot_name_uuid_length: i64,

    /// Comma-separated Name=bool pairs: CSIVolumeGroupSnapshot (GA, default true), ReleaseLeaderElectionOnExit (alpha, default false); may be repeated
    #[arg(long = "feature-gates", value_name = "NAME=BOOL,...", value_parser = parse_gate_list, action = ArgAction::Append)]
    feature_gates: Vec<GateList>,

    /// Print the version and exit
    #[arg(long = "version", value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = parse_go_bool, action = ArgAction::Set)]
    version: bool,

    /// Path to a kubeconfig file; when empty the in-cluster configuration is used (KUBECONFIG is not read)
    #[arg(long = "kubeconfig", value_name = "PATH", default_value = "")]
    kubeconfig: String,

    /// CSI endpoint: an absolute socket path or unix://<path>
    #[arg(
        long = "csi-address",
        value_name = "ADDRESS",
        default_value = "/run/csi/socket"
    )]
    csi_address: String,

    /// Enable Lease-based leader election
    #[arg(long = "leader-election", value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = parse_go_bool, action = ArgAction::Set)]
    leader_election: bool,

    /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, then the service-account namespace, then "default")
    #[arg(
        long = "leader-election-namespace",
        value_name = "STRING",
        default_value = ""
    )]
    leader_election_namespace: String,

    /// Leader-election lease duration
    #[arg(long = "leader-election-lease-duration", value_name = "DURATION", default_value = "15s", value_parser = parse_go_duration, allow_hyphen_values = true)]
    leader_election_lease_duration: GoDuration,

    /// Leader-election renew deadline
    #[arg(long = "leader-election-renew-deadline", value_name = "DURATION", default_value = "10s", value_parser = parse_go_duration, allow_hyphen_values = true)]
    leader_election_renew_deadline: GoDuration,

    /// Leader-election retry period
    #[arg(long = "leader-election-retry-period", value_name = "DURATION", default_value = "5s", value_parser = parse_go_duration, allow_hyphen_values = true)]
    leader_election_retry_period: GoDuration,

    /// Comma-separated key:value labels put on the Lease while this replica leads; may be repeated
    #[arg(long = "leader-election-labels", value_name = "KEY:VALUE,...", value_parser = parse_labels, action = ArgAction::Append)]
    leader_election_labels: Vec<LabelList>,

    /// Client-side QPS limit of each Kubernetes client (0 means 5; negative means unlimited)
    #[arg(long = "kube-api-qps", value_name = "FLOAT", default_value = "5", value_parser = parse_go_float, allow_hyphen_values = true)]
    kube_api_qps: f64,

    /// Client-side burst of each Kubernetes client (0 means 10)
    #[arg(long = "kube-api-burst", value_name = "INT", default_value = "10", value_parser = parse_go_int, allow_hyphen_values = true)]
    kube_api_burst: i64,

    /// TCP address (e.g. :8080) of the HTTP server for metrics and, with leader election, /healthz/leader-election; empty disables it
    #[arg(long = "http-endpoint", value_name = "ADDRESS", default_value = "")]
    http_endpoint: String,

    /// Deprecated: like --http-endpoint but without the leader-election health check; excludes --http-endpoint
    #[arg(long = "metrics-address", value_name = "ADDRESS", default_value = "")]
    metrics_address: String,

    /// HTTP path of the Prometheus metrics
    #[arg(long = "metrics-path", value_name = "PATH", default_value = "/metrics")]
    metrics_path: String,

    /// Size the worker thread pool from the container's CPU quota
    #[arg(long = "automaxprocs", value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = parse_go_bool, action = ArgAction::Set)]
    automaxprocs: bool,

    /// Log verbosity: 0-1 info, 2-4 debug, 5 and above trace
    #[arg(long = "v", value_name = "LEVEL", default_value = "0", value_parser = parse_go_u32)]
    v: u32,

    /// Comma-separated pattern=N per-source-file verbosity (text format only)
    #[arg(long = "vmodule", value_name = "PATTERN=N,...", default_value = "", value_parser = parse_vmodule)]
    vmodule: VModuleList,

    /// Log format: text or json
    #[arg(long = "logging-format", value_name = "FORMAT", default_value = "text")]
    logging_format: String,

    /// Longest time between log flushes (logs are written unbuffered, so this has no effect)
    #[arg(long = "log-flush-frequency", value_name = "DURATION", default_value = "5s", value_parser = parse_go_duration, allow_hyphen_values = true)]
    log_flush_frequency: GoDuration,

    /// Alpha option, not enabled in this component: setting it to true fails validation
    #[arg(long = "log-text-split-stream", value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = parse_go_bool, action = ArgAction::Set)]
    log_text_split_stream: bool,

    /// Alpha option, not enabled in this component: a non-zero value fails validation
    #[arg(long = "log-text-info-buffer-size", value_name = "QUANTITY", default_value = "0", value_parser = parse_quantity)]
    log_text_info_buffer_size: Quantity,

    /// Alpha option, not enabled in this component: setting it to true fails validation
    #[arg(long = "log-json-split-stream", value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = parse_go_bool, action = ArgAction::Set)]
    log_json_split_stream: bool,

    /// Alpha option, not enabled in this component: a non-zero value fails validation
    #[arg(long = "log-json-info-buffer-size", value_name = "QUANTITY", default_value = "0", value_parser = parse_quantity)]
    log_json_info_buffer_size: Quantity,
}

/// One `--feature-gates` occurrence.
#[derive(Clone, Debug)]
struct GateList(Vec<(String, bool)>);

fn parse_gate_list(text: &str) -> Result<GateList, String> {
    parse_feature_gate_list(text).map(GateList)
}

/// One `--leader-election-labels` occurrence.
#[derive(Clone, Debug)]
struct LabelList(Vec<(String, String)>);

fn parse_labels(text: &str) -> Result<LabelList, String> {
    parse_label_list(text).map(LabelList)
}

/// The parsed `--vmodule` value.
pub type VModuleList = Vec<VModuleRule>;

/// Where the diagnostics HTTP server listens, and whether it serves the
/// leader-election health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpServerConfig {
    /// The listen address as given (`:8080`, `0.0.0.0:8080`, `[::]:8080`).
    pub address: String,
    /// Prometheus handler path (`--metrics-path`).
    pub metrics_path: String,
    /// True for `--http-endpoint` (serves `/healthz/leader-election` when
    /// leader election is on), false for the deprecated `--metrics-address`.
    pub leader_election_healthz: bool,
}

/// The validated configuration of one sidecar run.
#[derive(Clone, Debug)]
pub struct Config {
    /// `--csi-address` as given (`/path` or `unix://<path>`; checked when
    /// connecting).
    pub csi_address: String,
    /// `--kubeconfig`; `None` means in-cluster configuration.
    pub kubeconfig: Option<PathBuf>,
    /// `--resync-period`; zero disables resync.
    pub resync_period: Duration,
    /// `--snapshot-name-prefix` (never empty).
    pub snapshot_name_prefix: String,
    /// `--snapshot-name-uuid-length`: `None` (flag value -1) uses the whole
    /// UID with dashes; `Some(n)` the first `n` (≤ 32) characters of the UID
    /// with dashes removed.
    pub snapshot_name_uuid_length: Option<usize>,
    /// `--groupsnapshot-name-prefix`; may be empty, which is fatal only when
    /// group snapshots stay enabled after the startup probes.
    pub groupsnapshot_name_prefix: String,
    /// `--groupsnapshot-name-uuid-length`, same encoding as
    /// [`Config::snapshot_name_uuid_length`].
    pub groupsnapshot_name_uuid_length: Option<usize>,
    /// `--worker-threads` (≥ 1): workers per queue.
    pub worker_threads: usize,
    /// `--timeout` (> 0): deadline of each CSI call and startup probe.
    pub timeout: Duration,
    /// `--extra-create-metadata`.
    pub extra_create_metadata: bool,
    /// `--retry-interval-start` (> 0).
    pub retry_interval_start: Duration,
    /// `--retry-interval-max` (≥ start).
    pub retry_interval_max: Duration,
    /// `--node-deployment`.
    pub node_deployment: bool,
    /// `--feature-gates`, resolved.
    pub feature_gates: FeatureGates,
    /// `--leader-election`.
    pub leader_election: bool,
    /// `--leader-election-namespace`; `None` when empty (then `$POD_NAMESPACE`,
    /// the service-account namespace, then `default`).
    pub leader_election_namespace: Option<String>,
    /// `--leader-election-lease-duration`.
    pub leader_election_lease_duration: Duration,
    /// `--leader-election-renew-deadline`.
    pub leader_election_renew_deadline: Duration,
    /// `--leader-election-retry-period`.
    pub leader_election_retry_period: Duration,
    /// `--leader-election-labels`, merged over repeats.
    pub leader_election_labels: BTreeMap<String, String>,
    /// `--kube-api-qps` as given (resolved by
    /// `k8s::client::RateLimit::from_flags`).
    pub kube_api_qps: f64,
    /// `--kube-api-burst` as given.
    pub kube_api_burst: i64,
    /// `--http-endpoint` or `--metrics-address` (at most one is set).
    pub http_server: Option<HttpServerConfig>,
    /// `--metrics-path`.
    pub metrics_path: String,
    /// `--automaxprocs`.
    pub automaxprocs: bool,
    /// `--v`, `--vmodule`, `--logging-format`, `--log-flush-frequency`.
    pub logging: LoggingConfig,
}

impl Config {
    /// Warnings to log once logging is up.
    pub fn startup_warnings(&self) -> Vec<String> {
        self.feature_gates.warnings()
    }
}

/// Parses and validates the full argument list (`args[0]` is the program
/// name, as in `std::env::args_os`).
pub fn parse<I, T>(args: I) -> Result<Invocation, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let argv0 = args
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "csi-snapshotter".to_string());
    let usage = usage(&argv0);
    let kinds = flag_kinds();
    let normalized = match goflag::normalize(args.get(1..).unwrap_or(&[]), |name| {
        kinds.get(name).copied()
    }) {
        Ok(PrePass::Help) => return Ok(Invocation::Help(usage)),
        Ok(PrePass::Flags(f)) => f,
        Err(message) => return Err(ConfigError::Usage { message, usage }),
    };
    let flags =
        Flags::try_parse_from(std::iter::once(argv0.clone()).chain(normalized)).map_err(|e| {
            ConfigError::Usage {
                message: clap_message(&e),
                usage: usage.clone(),
            }
        })?;

    // Step 1 of startup: logging validation (exit 1), feature gates (exit
    // 255), then --version.
    let logging = validate_logging(&flags)?;
    let gate_pairs: Vec<(String, bool)> = flags
        .feature_gates
        .iter()
        .flat_map(|g| g.0.iter().cloned())
        .collect();
    let feature_gates = FeatureGates::from_pairs(&gate_pairs).map_err(ConfigError::Fatal)?;
    if flags.version {
        return Ok(Invocation::Version(format!("{argv0} {VERSION}")));
    }
    build(flags, logging, feature_gates).map(|c| Invocation::Run(Box::new(c)))
}

/// The usage text, as printed for `--help` and after a flag error.
pub fn usage(argv0: &str) -> String {
    Flags::command()
        .name("csi-snapshotter")
        .override_usage(format!("{argv0} [flags]"))
        .render_help()
        .to_string()
}

/// Flag name → how it takes a value, from the clap definition: flags whose
/// value is optional are the booleans.
fn flag_kinds() -> BTreeMap<String, FlagKind> {
    Flags::command()
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            let optional_value = a.get_num_args().is_some_and(|r| r.min_values() == 0);
            let kind = if optional_value {
                FlagKind::Bool
            } else {
                FlagKind::Value
            };
            Some((long.to_string(), kind))
        })
        .collect()
}

/// The first line of a clap error, without clap's "error: " prefix and tips.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// The logging flags' validation (upstream: component-base logging options;
/// exit 1).
fn validate_logging(f: &Flags) -> Result<LoggingConfig, ConfigError> {
    let mut errors = Vec::new();
    let format = match f.logging_format.as_str() {
        "text" => Some(LogFormat::Text),
        "json" => Some(LogFormat::Json),
        other => {
            errors.push(format!(
                "format: Unsupported value: \"{other}\": supported values: \"json\", \"text\""
            ));
            None
        }
    };
    for (flag, set) in [
        ("log-text-split-stream", f.log_text_split_stream),
        ("log-json-split-stream", f.log_json_split_stream),
    ] {
        if set {
            errors.push(format!(
                "--{flag}: Forbidden: Feature LoggingAlphaOptions is disabled"
            ));
        }
    }
    for (flag, q) in [
        ("log-text-info-buffer-size", &f.log_text_info_buffer_size),
        ("log-json-info-buffer-size", &f.log_json_info_buffer_size),
    ] {
        if !q.is_zero {
            errors.push(format!(
                "--{flag}: Forbidden: Feature LoggingAlphaOptions is disabled"
            ));
        }
    }
    if format == Some(LogFormat::Json) && !f.vmodule.is_empty() {
        errors.push("--vmodule: Forbidden: only supported for text log format".to_string());
    }
    let flush_frequency = f.log_flush_frequency.to_std();
    if flush_frequency.is_none() {
        errors.push(format!(
            "--log-flush-frequency: Invalid value: \"{}\": must not be negative",
            f.log_flush_frequency
        ));
    }
    match (format, flush_frequency) {
        (Some(format), Some(flush_frequency)) if errors.is_empty() => Ok(LoggingConfig {
            verbosity: f.v,
            vmodule: f.vmodule.clone(),
            format,
            flush_frequency,
        }),
        _ => Err(ConfigError::Invalid(format!(
            "invalid logging configuration: {}",
            errors.join("; ")
        ))),
    }
}

/// A duration flag that must be strictly positive.
fn positive(flag: &str, d: GoDuration) -> Result<Duration, ConfigError> {
    match d.to_std() {
        Some(std) if d.is_positive() => Ok(std),
        _ => Err(ConfigError::Invalid(format!(
            "--{flag}={d} is invalid: must be greater than zero"
        ))),
    }
}

/// A `--*-uuid-length` value: -1 or 0..=32.
fn uuid_length(flag: &str, n: i64) -> Result<Option<usize>, ConfigError> {
    match n {
        -1 => Ok(None),
        0..=UID_CHARS_WITHOUT_DASHES => Ok(usize::try_from(n).ok()),
        _ => Err(ConfigError::Invalid(format!(
            "--{flag}={n} is invalid: must be -1 (the whole UID) or between 0 and {UID_CHARS_WITHOUT_DASHES} (a UID without dashes has {UID_CHARS_WITHOUT_DASHES} characters)"
        ))),
    }
}

/// The checks after `--version`: upstream's flag-combination checks (exit 1)
/// and the values that would crash upstream later.
fn build(
    f: Flags,
    logging: LoggingConfig,
    feature_gates: FeatureGates,
) -> Result<Config, ConfigError> {
    if f.node_deployment && f.leader_election {
        return Err(ConfigError::Invalid(
            "--node-deployment and --leader-election cannot be used together".to_string(),
        ));
    }
    if !f.metrics_address.is_empty() && !f.http_endpoint.is_empty() {
        return Err(ConfigError::Invalid(
            "only one of --metrics-address and --http-endpoint can be set".to_string(),
        ));
    }
    if f.snapshot_name_prefix.is_empty() {
        return Err(ConfigError::Invalid(
            "--snapshot-name-prefix cannot be empty".to_string(),
        ));
    }
    let snapshot_name_uuid_length =
        uuid_length("snapshot-name-uuid-length", f.snapshot_name_uuid_length)?;
    let groupsnapshot_name_uuid_length = uuid_length(
        "groupsnapshot-name-uuid-length",
        f.groupsnapshot_name_uuid_length,
    )?;
    let worker_threads = usize::try_from(f.worker_threads)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            ConfigError::Invalid(format!(
                "--worker-threads={} is invalid: must be at least 1",
                f.worker_threads
            ))
        })?;
    let timeout = positive("timeout", f.timeout)?;
    let retry_interval_start = positive("retry-interval-start", f.retry_interval_start)?;
    let retry_interval_max = positive("retry-interval-max", f.retry_interval_max)?;
    if retry_interval_start > retry_interval_max {
        return Err(ConfigError::Invalid(format!(
            "--retry-interval-start={} is invalid: must not exceed --retry-interval-max={}",
            f.retry_interval_start, f.retry_interval_max
        )));
    }
    let resync_period = f.resync_period.to_std().ok_or_else(|| {
        ConfigError::Invalid(format!(
            "--resync-period={} is invalid: must not be negative",
            f.resync_period
        ))
    })?;
    let (lease, renew, retry) = (
        f.leader_election_lease_duration,
        f.leader_election_renew_deadline,
        f.leader_election_retry_period,
    );
    if f.leader_election {
        let retry_jittered = retry.0 as f64 * LEADER_ELECTION_JITTER;
        if !(retry.0 > 0 && (renew.0 as f64) > retry_jittered && lease > renew) {
            return Err(ConfigError::Invalid(format!(
                "invalid leader-election timing: need --leader-election-lease-duration ({lease}) > --leader-election-renew-deadline ({renew}) > {LEADER_ELECTION_JITTER} x --leader-election-retry-period ({retry}) > 0"
            )));
        }
    }
    if f.kube_api_qps.is_nan() {
        return Err(ConfigError::Invalid(
            "--kube-api-qps=NaN is invalid: must be a number".to_string(),
        ));
    }
    let effective_qps = if f.kube_api_qps == 0.0 {
        crate::k8s::client::DEFAULT_QPS
    } else {
        f.kube_api_qps
    };
    if effective_qps > 0.0 && f.kube_api_burst < 0 {
        return Err(ConfigError::Invalid(format!(
            "--kube-api-burst={} is invalid: the burst must be greater than 0 when --kube-api-qps is greater than 0",
            f.kube_api_burst
        )));
    }
    let http_server = [(&f.http_endpoint, true), (&f.metrics_address, false)]
        .into_iter()
        .find(|(addr, _)| !addr.is_empty())
        .map(|(addr, healthz)| HttpServerConfig {
            address: addr.clone(),
            metrics_path: f.metrics_path.clone(),
            leader_election_healthz: healthz,
        });
    // Only the negative-duration cases can fail here; they were rejected above.
    let non_negative = |d: GoDuration| d.to_std().unwrap_or_default();
    Ok(Config {
        csi_address: f.csi_address,
        kubeconfig: Some(PathBuf::from(f.kubeconfig)).filter(|p| !p.as_os_str().is_empty()),
        resync_period,
        snapshot_name_prefix: f.snapshot_name_prefix,
        snapshot_name_uuid_length,
        groupsnapshot_name_prefix: f.groupsnapshot_name_prefix,
        groupsnapshot_name_uuid_length,
        worker_threads,
        timeout,
        extra_create_metadata: f.extra_create_metadata,
        retry_interval_start,
        retry_interval_max,
        node_deployment: f.node_deployment,
        feature_gates,
        leader_election: f.leader_election,
        leader_election_namespace: Some(f.leader_election_namespace).filter(|s| !s.is_empty()),
        leader_election_lease_duration: non_negative(lease),
        leader_election_renew_deadline: non_negative(renew),
        leader_election_retry_period: non_negative(retry),
        leader_election_labels: values::merge_labels(
            &f.leader_election_labels
                .into_iter()
                .map(|l| l.0)
                .collect::<Vec<_>>(),
        ),
        kube_api_qps: f.kube_api_qps,
        kube_api_burst: f.kube_api_burst,
        http_server,
        metrics_path: f.metrics_path,
        automaxprocs: f.automaxprocs,
        logging,
    })
}

/// Every flag name the sidecar defines, for the README and tests.
pub fn flag_names() -> Vec<String> {
    flag_kinds().into_keys().collect()
}

#[cfg(test)]
mod tests;
