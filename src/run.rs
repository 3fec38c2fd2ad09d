//! The startup sequence (spec B.1) from a validated [`Config`] to an exit
//! status, then the controllers under optional leader election until
//! shutdown. Each step is a small function; the flag-only checks of steps 1,
//! 2, 5 and 11 already ran in [`crate::config`].

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, VERSION};
use crate::controller::content::Contents;
use crate::controller::group::GroupContents;
use crate::controller::pipeline::{ControllerOptions, Pipeline};
use crate::controller::queue::Backoff;
use crate::controller::queue_metrics::WorkQueueMetrics;
use crate::csi::client::{
    ConnectOptions, CsiClient, CsiConnection, StartupError as DriverStartupError,
    require_snapshot_support,
};
use crate::http::{self, HttpConfig, Readiness};
use crate::k8s::client::{ClientError, RateLimit, client_from_config, load_config};
use crate::k8s::event::EventRecorder;
use crate::k8s::watch::{WatchOptions, managed_by_selector};
use crate::leader::{
    self, LeaderConfig, LeaderConfigError, LeaderElector, LeaderMetrics, Leadership,
};
use crate::metrics::Registry;
use crate::process_metrics::ProcessMetrics;
use crate::reconcile::ReconcileConfig;
use crate::reconcile::naming::NamingRule;
use crate::shutdown;

/// Exit status of a startup failure (upstream `os.Exit(1)`).
pub const EXIT_FAILURE: i32 = 1;
/// Exit status of upstream's fatal log calls (`klog.Fatal`).
pub const EXIT_FATAL: i32 = 255;

/// API group and version of the group-snapshot CRDs probed at startup.
const GROUP_SNAPSHOT_GROUP: &str = "groupsnapshot.storage.k8s.io";
const GROUP_SNAPSHOT_VERSION: &str = "v1";

/// cgroup v2 CPU limit file: `<quota> <period>` or `max <period>`.
const CGROUP_V2_CPU_MAX: &str = "/sys/fs/cgroup/cpu.max";
/// cgroup v1 CPU quota and period files (quota -1 means no limit).
const CGROUP_V1_CPU_QUOTA: &str = "/sys/fs/cgroup/cpu/cpu.cfs_quota_us";
const CGROUP_V1_CPU_PERIOD: &str = "/sys/fs/cgroup/cpu/cpu.cfs_period_us";

/// Environment variable asking for a multi-threaded runtime with this many
/// worker threads (tokio's own name for it).
const WORKER_THREADS_ENV: &str = "TOKIO_WORKER_THREADS";

/// Builds the runtime: one thread unless `TOKIO_WORKER_THREADS` asks for
/// more, capped by the cgroup CPU quota with `--automaxprocs` (as Go's
/// automaxprocs caps GOMAXPROCS); see [`worker_threads`].
pub fn build_runtime(automaxprocs: bool) -> std::io::Result<tokio::runtime::Runtime> {
    let requested = std::env::var(WORKER_THREADS_ENV).ok();
    let quota = if automaxprocs {
        cgroup_cpu_limit()
    } else {
        None
    };
    let workers = worker_threads(requested.as_deref(), quota);
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder.enable_all().build()
}

/// The number of runtime threads. One by default: the sidecar's tasks
/// spend their time waiting on the API server and the driver, and every
/// request passes through several tasks (the rate limiter, the client's
/// buffer, the connection); on one thread each hand-off is a queue push,
/// on several it is a cross-thread wake-up, which costs more CPU than the
/// work itself at a few requests per second. `requested` is the value of
/// `TOKIO_WORKER_THREADS` (an unusable value is ignored); `quota` the CPUs
/// of the cgroup quota, which caps the count.
fn worker_threads(requested: Option<&str>, quota: Option<usize>) -> usize {
    let requested = requested
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1);
    quota.map_or(requested, |q| requested.min(q)).max(1)
}

/// Whole CPUs allowed by the cgroup CPU quota, if one is set.
fn cgroup_cpu_limit() -> Option<usize> {
    if let Ok(text) = std::fs::read_to_string(CGROUP_V2_CPU_MAX) {
        return parse_cpu_max(&text);
    }
    let quota = std::fs::read_to_string(CGROUP_V1_CPU_QUOTA).ok()?;
    let period = std::fs::read_to_string(CGROUP_V1_CPU_PERIOD).ok()?;
    cpus_from_quota(quota.trim().parse().ok()?, period.trim().parse().ok()?)
}

/// Parses cgroup v2 `cpu.max` (`"200000 100000"`, `"max 100000"`).
fn parse_cpu_max(text: &str) -> Option<usize> {
    let mut parts = text.split_whitespace();
    let quota = parts.next()?;
    let period = parts.next()?.parse().ok()?;
    if quota == "max" {
        return None;
    }
    cpus_from_quota(quota.parse().ok()?, period)
}

/// `quota / period` rounded down, at least 1; `None` for no limit.
fn cpus_from_quota(quota: i64, period: i64) -> Option<usize> {
    if quota <= 0 || period <= 0 {
        return None;
    }
    Some(usize::try_from(quota / period).unwrap_or(1).max(1))
}

/// Why the sidecar stops during startup; each maps to upstream's status.
#[derive(Debug, thiserror::Error)]
pub enum StartupFailure {
    /// Step 3: no usable Kubernetes configuration or client.
    #[error(transparent)]
    Kube(#[from] ClientError),
    /// Step 4: `--node-deployment` without `NODE_NAME`.
    #[error("--node-deployment requires the NODE_NAME environment variable to be set")]
    NodeName,
    /// Step 6: the CSI address is not a Unix socket, or connecting failed.
    #[error("error connecting to CSI driver: {0}")]
    Connect(String),
    /// Steps 7, 9 and 10: a driver call failed or the driver cannot snapshot.
    #[error(transparent)]
    Driver(#[from] DriverStartupError),
    /// Step 8: the diagnostics HTTP server cannot listen.
    #[error("failed to listen on {address}: {source}")]
    HttpListen {
        /// `--http-endpoint` / `--metrics-address`.
        address: String,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// Step 8: leader election cannot be set up.
    #[error("invalid leader election configuration: {0}")]
    Leader(#[from] LeaderConfigError),
    /// Step 13: group snapshots are on but `--groupsnapshot-name-prefix` is empty.
    #[error("--groupsnapshot-name-prefix cannot be empty when group snapshots are enabled")]
    EmptyGroupPrefix,
    /// The signal handlers could not be installed.
    #[error("failed to install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

impl StartupFailure {
    /// The process exit status (upstream's for each step).
    pub fn exit_code(&self) -> i32 {
        match self {
            StartupFailure::NodeName | StartupFailure::HttpListen { .. } => EXIT_FATAL,
            _ => EXIT_FAILURE,
        }
    }
}

/// Everything the controllers need, produced by the startup steps.
pub struct Started {
    /// The validated flags.
    pub config: Config,
    /// Client for the snapshot CRDs (its own rate-limit bucket).
    pub snapshot_client: kube::Client,
    /// Client for core objects: events and secrets (its own bucket).
    pub core_client: kube::Client,
    /// `NODE_NAME` with `--node-deployment`.
    pub node_name: Option<String>,
    /// The driver name from GetPluginInfo.
    pub driver_name: String,
    /// The driver's snapshot RPCs (implements `SnapshotDriver`).
    pub driver: CsiClient,
    /// Whether VolumeGroupSnapshotContents are handled (gate on, CRDs
    /// present).
    pub group_snapshots: bool,
    /// The registry `/metrics` serves; controllers register their families
    /// (work queues) here.
    pub registry: Registry,
    /// The readiness view of the HTTP server.
    pub readiness: Readiness,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("driver_name", &self.driver_name)
            .field("group_snapshots", &self.group_snapshots)
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

/// Runs the sidecar; returns the process exit status.
pub async fn run(config: Config) -> i32 {
    run_until(config, CancellationToken::new()).await
}

/// [`run`] for a sidecar embedded in a larger process: cancelling
/// `shutdown` has the same effect as the first SIGTERM (stop taking keys,
/// finish the keys in flight, exit status 0).
pub async fn run_until(config: Config, shutdown: CancellationToken) -> i32 {
    let stop_http = CancellationToken::new();
    let result = match startup(config, stop_http.clone()).await {
        Ok((started, elector)) => serve(Arc::new(started), elector, shutdown).await,
        Err(failure) => {
            tracing::error!(error = %failure, "Startup failed");
            failure.exit_code()
        }
    };
    stop_http.cancel();
    result
}

/// Spec B.1 steps 1–13. The HTTP server, once started, stops with `stop_http`.
async fn startup(
    config: Config,
    stop_http: CancellationToken,
) -> Result<(Started, Option<LeaderElector>), StartupFailure> {
    log_version(&config);
    let clients = kube_clients(&config).await?;
    let node_name = node_name(&config)?;
    let conn = connect_driver(&config).await?;
    let info = conn.plugin_info().await?;
    let driver_name = info.name;
    tracing::info!(
        driver = driver_name.as_str(),
        vendor_version = info.vendor_version.as_str(),
        "CSI driver name"
    );
    let registry = Registry::global().clone();
    let readiness = Readiness::new();
    readiness.require(http::CACHES_SYNCED);
    let elector = leader_elector(&config, &clients, &driver_name)?;
    if config.http_server.is_some() {
        conn.metrics().set_driver_name(&driver_name);
        start_http_server(&config, &registry, &readiness, elector.as_ref(), stop_http).await?;
    }
    conn.probe_forever().await?;
    readiness.set_driver_ready(true);
    let capabilities = conn.capabilities().await?;
    require_snapshot_support(&driver_name, &capabilities)?;
    let group_snapshots = group_snapshot_support(&config, &clients.snapshot, &conn).await?;
    Ok((
        Started {
            driver: conn.into_driver(driver_name.clone(), capabilities),
            config,
            snapshot_client: clients.snapshot,
            core_client: clients.core,
            node_name,
            driver_name,
            group_snapshots,
            registry,
            readiness,
        },
        elector,
    ))
}

/// Step 1: the version line and any flag warnings.
fn log_version(config: &Config) {
    tracing::info!(version = VERSION, "Version");
    for warning in config.startup_warnings() {
        tracing::warn!("{warning}");
    }
}

/// The Kubernetes clients, each with its own rate-limit bucket like
/// upstream's separate clientsets (spec B.4).
struct KubeClients {
    snapshot: kube::Client,
    core: kube::Client,
    leader: kube::Client,
}

/// Step 3: the clients from `--kubeconfig`, else in-cluster. `KUBECONFIG` is
/// deliberately not read.
async fn kube_clients(config: &Config) -> Result<KubeClients, StartupFailure> {
    let rest = load_config(config.kubeconfig.as_deref()).await?;
    let limit = RateLimit::from_flags(config.kube_api_qps, config.kube_api_burst);
    Ok(KubeClients {
        snapshot: client_from_config(rest.clone(), limit)?,
        core: client_from_config(rest.clone(), limit)?,
        leader: client_from_config(rest, limit)?,
    })
}

/// Step 4: with `--node-deployment`, `NODE_NAME` must be set.
fn node_name(config: &Config) -> Result<Option<String>, StartupFailure> {
    if !config.node_deployment {
        return Ok(None);
    }
    match std::env::var("NODE_NAME") {
        Ok(name) if !name.is_empty() => Ok(Some(name)),
        _ => Err(StartupFailure::NodeName),
    }
}

/// Step 6: connect to the driver socket (Unix sockets only; at most 30 s;
/// a later connection loss exits the process).
async fn connect_driver(config: &Config) -> Result<CsiConnection, StartupFailure> {
    let options = ConnectOptions::new(&config.csi_address, config.timeout)
        .map_err(|e| StartupFailure::Connect(e.to_string()))?;
    CsiConnection::connect(options)
        .await
        .map_err(|e| StartupFailure::Connect(e.to_string()))
}

/// With `--leader-election`, the elector for this driver's Lease. It is made
/// before the HTTP server so the server can serve its health check; the
/// election itself starts after startup.
fn leader_elector(
    config: &Config,
    clients: &KubeClients,
    driver_name: &str,
) -> Result<Option<LeaderElector>, StartupFailure> {
    if !config.leader_election {
        return Ok(None);
    }
    let lease_name = leader::lease_name(driver_name);
    let namespace = leader::resolve_namespace(
        config
            .leader_election_namespace
            .as_deref()
            .unwrap_or_default(),
    );
    let identity = leader::default_identity();
    let mut cfg = LeaderConfig::new(lease_name.clone(), namespace, identity.clone());
    cfg.lease_duration = config.leader_election_lease_duration;
    cfg.renew_deadline = config.leader_election_renew_deadline;
    cfg.retry_period = config.leader_election_retry_period;
    cfg.labels = config.leader_election_labels.clone();
    // The event source names the unsanitised Lease name (spec B.7).
    let component = leader::event_component(driver_name, &identity);
    let (recorder, _events) = EventRecorder::start(clients.core.clone(), component);
    let metrics = match LeaderMetrics::register(Registry::global()) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(error = %e, "Leader election metrics are not exposed");
            None
        }
    };
    Ok(Some(LeaderElector::new(
        clients.leader.clone(),
        cfg,
        Some(recorder),
        metrics,
    )?))
}

/// Step 8: metrics (and, for `--http-endpoint` with leader election, the
/// leader health check) over HTTP, in the background.
async fn start_http_server(
    config: &Config,
    registry: &Registry,
    readiness: &Readiness,
    elector: Option<&LeaderElector>,
    stop: CancellationToken,
) -> Result<(), StartupFailure> {
    let Some(http_config) = &config.http_server else {
        return Ok(());
    };
    ProcessMetrics::register(registry);
    let listener =
        http::bind(&http_config.address)
            .await
            .map_err(|source| StartupFailure::HttpListen {
                address: http_config.address.clone(),
                source,
            })?;
    let leader_health = elector
        .filter(|_| http_config.leader_election_healthz)
        .map(LeaderElector::health);
    let serve_config = HttpConfig {
        metrics_path: http_config.metrics_path.clone(),
        leader_health,
        readiness: readiness.clone(),
    };
    tokio::spawn(http::serve(listener, registry.clone(), serve_config, stop));
    Ok(())
}

/// Steps 12–13: whether group snapshots are handled. The gate must be on,
/// the group CRDs must be listable (any error turns support off, with a
/// warning), and GroupControllerGetCapabilities is asked but, as upstream,
/// neither its error nor a missing capability turns support off. Then an
/// empty `--groupsnapshot-name-prefix` is fatal.
async fn group_snapshot_support(
    config: &Config,
    client: &kube::Client,
    conn: &CsiConnection,
) -> Result<bool, StartupFailure> {
    if !config.feature_gates.csi_volume_group_snapshot {
        return Ok(false);
    }
    if let Err(reason) = probe_group_crds(client, config.timeout).await {
        tracing::warn!(
            error = reason.as_str(),
            "Group snapshot CRDs are not available; group snapshot support is disabled"
        );
        return Ok(false);
    }
    match conn.group_snapshot_capability().await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "CSI driver does not advertise the CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT group controller capability"
        ),
        Err(e) => {
            tracing::error!(error = %e, "Failed to get the CSI driver's group controller capabilities")
        }
    }
    if config.groupsnapshot_name_prefix.is_empty() {
        return Err(StartupFailure::EmptyGroupPrefix);
    }
    Ok(true)
}

/// Step 12: LIST `volumegroupsnapshotcontents` then `volumegroupsnapshotclasses`
/// (`groupsnapshot.storage.k8s.io/v1`, `limit=1`) under `timeout`.
async fn probe_group_crds(client: &kube::Client, timeout: Duration) -> Result<(), String> {
    let probe = async {
        for (kind, plural) in [
            ("VolumeGroupSnapshotContent", "volumegroupsnapshotcontents"),
            ("VolumeGroupSnapshotClass", "volumegroupsnapshotclasses"),
        ] {
            let resource = ApiResource {
                group: GROUP_SNAPSHOT_GROUP.to_string(),
                version: GROUP_SNAPSHOT_VERSION.to_string(),
                api_version: format!("{GROUP_SNAPSHOT_GROUP}/{GROUP_SNAPSHOT_VERSION}"),
                kind: kind.to_string(),
                plural: plural.to_string(),
            };
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            api.list(&ListParams::default().limit(1))
                .await
                .map_err(|e| {
                    format!("listing {plural}.{GROUP_SNAPSHOT_GROUP}/{GROUP_SNAPSHOT_VERSION}: {e}")
                })?;
        }
        Ok(())
    };
    tokio::time::timeout(timeout, probe)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the group snapshot CRD probe timed out after {timeout:?}"
            ))
        })
}

/// Step 14 onwards: the controllers, directly or under leader election,
/// until a signal, `shutdown_token` or lost leadership. Returns the exit
/// status.
async fn serve(
    started: Arc<Started>,
    elector: Option<LeaderElector>,
    shutdown_token: CancellationToken,
) -> i32 {
    if let Err(e) = shutdown::spawn_signal_handler(shutdown_token.clone()) {
        let failure = StartupFailure::Signals(e);
        tracing::error!(error = %failure, "Startup failed");
        return failure.exit_code();
    }
    let Some(elector) = elector else {
        let controllers = spawn_controllers(started, shutdown_token.clone());
        shutdown_token.cancelled().await;
        drain(controllers).await;
        return 0;
    };
    started.readiness.set_standby(true);
    if !elector.acquire(&shutdown_token).await {
        // Shut down before this replica ever led: nothing to stop.
        return 0;
    }
    started.readiness.set_standby(false);
    let release_on_exit = started.config.feature_gates.release_leader_election_on_exit;
    // The Lease is renewed until the controllers have drained, so no other
    // replica starts while calls and writes are still in flight here.
    let outcome = elector
        .lead_while(&shutdown_token, |work| async move {
            let controllers = spawn_controllers(started, work.clone());
            work.cancelled().await;
            drain(controllers).await;
        })
        .await;
    match outcome {
        Leadership::Lost => {
            tracing::error!("Stopped leading");
            EXIT_FAILURE
        }
        Leadership::Cancelled => {
            // With ReleaseLeaderElectionOnExit the Lease is given up so another
            // replica takes over at once. Upstream then leaves through its
            // "stopped leading" exit 1; a requested shutdown that completed
            // exits 0 here, as documented in the README.
            if release_on_exit {
                if elector.release().await {
                    tracing::info!("Released the leader election lease");
                } else {
                    tracing::warn!("Failed to release the leader election lease");
                }
            }
            0
        }
    }
}

/// Waits for the controllers to finish their in-flight work, within
/// [`shutdown::DEFAULT_DRAIN_TIMEOUT`].
async fn drain(controllers: JoinHandle<()>) {
    shutdown::drain_within(shutdown::DEFAULT_DRAIN_TIMEOUT, async {
        if let Err(e) = controllers.await {
            tracing::error!(error = %e, "Controller task failed");
        }
    })
    .await;
}

/// Spawns [`run_controllers`].
fn spawn_controllers(started: Arc<Started>, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(run_controllers(started, stop))
}

/// **The controllers' start hook** (spec B.1 steps 14–15): build the
/// VolumeSnapshotContent controller (and the VolumeGroupSnapshotContent
/// controller when `started.group_snapshots`), start the informers, wait for
/// the caches, seed, start `--worker-threads` workers per queue, and run
/// until `stop` is cancelled; then stop taking keys and return once the keys
/// in flight are done.
pub async fn run_controllers(started: Arc<Started>, stop: CancellationToken) {
    let config = &started.config;
    tracing::info!(
        driver = started.driver_name.as_str(),
        group_snapshots = started.group_snapshots,
        workers = config.worker_threads,
        "Starting the controllers"
    );
    let reconcile = reconcile_config(config, &started.driver_name);
    let backoff = Backoff {
        start: config.retry_interval_start,
        max: config.retry_interval_max,
    };
    let watch = WatchOptions {
        label_selector: started.node_name.as_deref().map(managed_by_selector),
        resync_period: Some(config.resync_period),
    };
    let metrics = WorkQueueMetrics::register(&started.registry);
    let (events, _event_writer) = EventRecorder::start(
        started.core_client.clone(),
        format!("csi-snapshotter {}", started.driver_name),
    );
    let driver = Arc::new(started.driver.clone());
    let content = Pipeline::<Contents, _>::start(
        Arc::clone(&driver),
        started.snapshot_client.clone(),
        started.core_client.clone(),
        events.clone(),
        ControllerOptions {
            config: reconcile.clone(),
            workers: config.worker_threads,
            backoff,
            watch: watch.clone(),
        },
        Some(&metrics),
        &stop,
    );
    let group = async {
        if !started.group_snapshots {
            return Some(None);
        }
        Pipeline::<GroupContents, _>::start(
            driver,
            started.snapshot_client.clone(),
            started.core_client.clone(),
            events,
            ControllerOptions {
                config: reconcile,
                workers: config.worker_threads,
                backoff,
                watch,
            },
            Some(&metrics),
            &stop,
        )
        .await
        .map(Some)
    };
    let (content, group) = tokio::join!(content, group);
    if let (Some(_), Some(_)) = (&content, &group) {
        started.readiness.satisfy(http::CACHES_SYNCED);
        stop.cancelled().await;
    }
    // Stop taking keys and wait for the keys in flight, both queues at once.
    let stop_content = async {
        if let Some(c) = content {
            c.shutdown().await;
        }
    };
    let stop_group = async {
        if let Some(Some(g)) = group {
            g.shutdown().await;
        }
    };
    tokio::join!(stop_content, stop_group);
}

/// The decision inputs from the flags and the driver name.
fn reconcile_config(config: &Config, driver_name: &str) -> ReconcileConfig {
    ReconcileConfig {
        driver_name: driver_name.to_string(),
        snapshot_naming: NamingRule {
            prefix: config.snapshot_name_prefix.clone(),
            uuid_length: config.snapshot_name_uuid_length,
        },
        group_snapshot_naming: NamingRule {
            prefix: config.groupsnapshot_name_prefix.clone(),
            uuid_length: config.groupsnapshot_name_uuid_length,
        },
        extra_create_metadata: config.extra_create_metadata,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v2_cpu_max() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2));
        assert_eq!(parse_cpu_max("150000 100000"), Some(1));
        assert_eq!(parse_cpu_max("50000 100000"), Some(1));
        assert_eq!(parse_cpu_max("garbage"), None);
        assert_eq!(cpus_from_quota(-1, 100000), None);
    }

    #[test]
    fn one_thread_unless_asked_capped_by_the_quota() {
        assert_eq!(worker_threads(None, None), 1);
        assert_eq!(worker_threads(None, Some(4)), 1);
        assert_eq!(worker_threads(Some("4"), None), 4);
        assert_eq!(worker_threads(Some("4"), Some(2)), 2);
        assert_eq!(worker_threads(Some("0"), None), 1);
        assert_eq!(worker_threads(Some("many"), Some(8)), 1);
    }

    #[test]
    fn fatal_steps_exit_255_others_1() {
        assert_eq!(StartupFailure::NodeName.exit_code(), 255);
        assert_eq!(
            StartupFailure::HttpListen {
                address: ":1".into(),
                source: std::io::Error::other("in use")
            }
            .exit_code(),
            255
        );
        assert_eq!(StartupFailure::EmptyGroupPrefix.exit_code(), 1);
        assert_eq!(StartupFailure::Connect("x".into()).exit_code(), 1);
    }
}
