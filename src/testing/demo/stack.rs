//! The three parts the demo runs in one process: the embedded API server,
//! the mock CSI driver on a temporary Unix socket, and the sidecar started
//! through its production entry point ([`crate::run::run_until`]) from an
//! ordinary command line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::filter::LevelFilter;

use super::{DemoError, READY_AFTER_POLLS};
use crate::config::{self, Invocation};
use crate::csi::proto::v1 as pb;
use crate::logging::{self, LoggingConfig};
use crate::testing::apiserver::{ApiServer, ApiServerOptions, RbacPolicy};
use crate::testing::mock_driver::{MockConfig, MockDriver};

/// The sidecar's first retry comes this soon (its default is 1 s), so the
/// demo's polls take a fraction of a second.
const RETRY_INTERVAL_START: &str = "100ms";
/// Client-side API rate of the sidecar: its defaults (5 QPS, burst 10)
/// would make the demo wait on its own limiter.
const KUBE_API_QPS: &str = "100";
const KUBE_API_BURST: &str = "200";
/// Bound on the sidecar's graceful stop (it drains keys in flight).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Volume and name of the snapshot that exists on the backend before the
/// sidecar starts (the pre-provisioned content points at it).
const PRE_CREATED_VOLUME: &str = "vol-legacy";
const PRE_CREATED_NAME: &str = "imported-from-another-cluster";

/// Why a part of the demo could not start or stop.
#[derive(Debug, thiserror::Error)]
pub(super) enum StackError {
    /// Logging could not be set up.
    #[error("{0}")]
    Logging(#[from] logging::LoggingError),
    /// A part failed to start.
    #[error("cannot start the {part}: {message}")]
    Start {
        /// Which part.
        part: &'static str,
        /// Why.
        message: String,
    },
    /// The sidecar did not stop in time.
    #[error("the sidecar did not stop within {0:?}")]
    Stop(Duration),
}

/// Sidecar logs on stderr: the team's `--v` mapping when given, otherwise
/// errors only, so the narrative on stdout stays readable.
pub(super) fn init_logging(verbosity: Option<u32>) -> Result<(), StackError> {
    match verbosity {
        Some(v) => logging::init(&LoggingConfig {
            verbosity: v,
            ..LoggingConfig::default()
        })?,
        None => {
            let _ = tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_max_level(LevelFilter::ERROR)
                .try_init();
        }
    }
    Ok(())
}

/// The running parts.
pub(super) struct Stack {
    /// The embedded API server.
    pub(super) api: ApiServer,
    /// The mock CSI driver.
    pub(super) mock: MockDriver,
    /// The demo's own client (it plays the snapshot-controller).
    pub(super) client: kube::Client,
    /// The driver name the sidecar serves.
    pub(super) driver_name: String,
    /// Handle of the backend snapshot created before the sidecar started.
    pub(super) pre_created: String,
    sidecar: Option<JoinHandle<i32>>,
    stop: CancellationToken,
    dir: PathBuf,
    started: Instant,
}

impl Stack {
    /// Starts the API server (schema checks from `crd_schemas`, or built in),
    /// the mock driver with one pre-created snapshot, and the sidecar.
    pub(super) async fn start(
        crd_schemas: Option<&Path>,
        verbosity: Option<u32>,
    ) -> Result<Stack, StackError> {
        let dir =
            std::env::temp_dir().join(format!("csi-snapshotter-demo-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).map_err(|e| start_err("temporary directory", e))?;
        let api = ApiServer::start(ApiServerOptions {
            listen: None,
            crd_schemas: crd_schemas.map(Path::to_path_buf),
            kubeconfig_out: Some(dir.join("kubeconfig")),
            restricted: Some(RbacPolicy::sidecar()),
        })
        .await
        .map_err(|e| start_err("embedded API server", e))?;
        let client = api
            .try_client()
            .await
            .map_err(|e| start_err("API client", e))?;
        let config = MockConfig {
            ready_after_polls: READY_AFTER_POLLS,
            ..MockConfig::default()
        };
        let driver_name = config.driver_name.clone();
        let socket = dir.join("csi.sock");
        let mock = MockDriver::start(&socket, config)
            .await
            .map_err(|e| start_err("mock CSI driver", e))?;
        let pre_created = pre_create_snapshot(&mock).await?;
        // From here on every CSI call is the sidecar's.
        mock.reset_calls();

        println!(
            "csi-snapshotter demo: the sidecar against an embedded API server and a mock CSI driver\n"
        );
        println!(
            "  API server   {} (CRD schema checks {})",
            api.url(),
            match crd_schemas {
                Some(d) => format!("on, from {}", d.display()),
                None => "on, built in".to_string(),
            }
        );
        println!(
            "  CSI driver   {driver_name} on {} (snapshots turn ready after {READY_AFTER_POLLS} polls)",
            socket.display()
        );
        println!("  backend      holds snapshot {pre_created} of volume {PRE_CREATED_VOLUME}");
        println!(
            "  RBAC         the sidecar may make only the requests deploy/kubernetes/rbac.yaml allows"
        );
        let sidecar_kubeconfig = api
            .restricted_kubeconfig_path()
            .ok_or_else(|| start_err("embedded API server", "no restricted kubeconfig"))?;
        let args = sidecar_args(&socket, sidecar_kubeconfig, verbosity);
        println!("  sidecar      {}", args.join(" "));
        let sidecar_config = match config::parse(args) {
            Ok(Invocation::Run(c)) => *c,
            Ok(_) => return Err(start_err("sidecar", "unexpected flags")),
            Err(e) => return Err(start_err("sidecar", e)),
        };
        let stop = CancellationToken::new();
        let sidecar = tokio::spawn(crate::run::run_until(sidecar_config, stop.clone()));
        Ok(Stack {
            api,
            mock,
            client,
            driver_name,
            pre_created,
            sidecar: Some(sidecar),
            stop,
            dir,
            started: Instant::now(),
        })
    }

    /// Time since the sidecar was started.
    pub(super) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// An error when the sidecar has already exited.
    pub(super) async fn check_running(&mut self) -> Result<(), DemoError> {
        if !self.sidecar.as_ref().is_some_and(JoinHandle::is_finished) {
            return Ok(());
        }
        let status = match self.sidecar.take() {
            Some(task) => task.await.unwrap_or(1),
            None => 1,
        };
        Err(DemoError::SidecarExited(status))
    }

    /// Stops the sidecar as a SIGTERM would and waits for it; returns its
    /// exit status. The mock driver and the temporary files go too; the
    /// API server stays readable for the summary.
    pub(super) async fn stop(&mut self) -> Result<i32, StackError> {
        self.stop.cancel();
        let status = match self.sidecar.take() {
            Some(task) => match tokio::time::timeout(STOP_TIMEOUT, task).await {
                Ok(joined) => joined.unwrap_or(1),
                Err(_) => return Err(StackError::Stop(STOP_TIMEOUT)),
            },
            None => 1,
        };
        self.mock.clone().stop().await;
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(status)
    }
}

fn start_err(part: &'static str, e: impl std::fmt::Display) -> StackError {
    StackError::Start {
        part,
        message: e.to_string(),
    }
}

/// The sidecar's command line: the usual flags pointing at the temporary
/// kubeconfig and socket, leader election off (its default).
fn sidecar_args(socket: &Path, kubeconfig: &Path, verbosity: Option<u32>) -> Vec<String> {
    vec![
        "csi-snapshotter".to_string(),
        format!("--csi-address=unix://{}", socket.display()),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--retry-interval-start={RETRY_INTERVAL_START}"),
        format!("--kube-api-qps={KUBE_API_QPS}"),
        format!("--kube-api-burst={KUBE_API_BURST}"),
        format!("--v={}", verbosity.unwrap_or(0)),
    ]
}

/// Creates the snapshot the pre-provisioned content will point at, as if
/// it had been cut outside this cluster; returns its handle.
async fn pre_create_snapshot(mock: &MockDriver) -> Result<String, StackError> {
    let channel = mock
        .channel()
        .await
        .map_err(|e| start_err("mock CSI driver connection", e))?;
    let mut client = pb::controller_client::ControllerClient::new(channel);
    let reply = client
        .create_snapshot(pb::CreateSnapshotRequest {
            source_volume_id: PRE_CREATED_VOLUME.to_string(),
            name: PRE_CREATED_NAME.to_string(),
            ..pb::CreateSnapshotRequest::default()
        })
        .await
        .map_err(|e| start_err("pre-created snapshot", e))?;
    reply
        .into_inner()
        .snapshot
        .map(|s| s.snapshot_id)
        .ok_or_else(|| start_err("pre-created snapshot", "the reply has no snapshot"))
}
