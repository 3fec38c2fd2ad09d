//! A mock CSI driver serving Identity, Controller and GroupController on a
//! Unix socket, with an in-memory storage backend that follows the CSI
//! semantics the sidecar relies on, plus knobs for tests: latency, error
//! injection (before or after the backend change), malformed replies,
//! readiness after N polls, call counters and the last request per RPC.
//! A CreateSnapshot can also ask for a fault through its parameters (see
//! [`param_faults`]), for tests whose only handle on the driver is a class.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use csi_snapshotter::testing::mock_driver::{MockConfig, MockDriver};
//! let mock = MockDriver::start("/tmp/csi.sock", MockConfig::default()).await?;
//! mock.fail_next("CreateSnapshot", tonic::Code::Unavailable, 1);
//! assert_eq!(mock.calls("CreateSnapshot"), 0);
//! mock.stop().await;
//! # Ok(()) }
//! ```

mod backend;
pub mod param_faults;
mod rpc;
mod service;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint, Server};

use crate::csi::proto::v1 as pb;
use crate::csi::proto::v1::controller_service_capability::rpc::Type as CtrlCap;

pub use rpc::{FailWhen, Malformed};

use backend::{Backend, Knobs};
use rpc::{Rpc, RpcTable};

/// Default `size_bytes` of a snapshot whose source volume the mock does not
/// know (tests usually snapshot made-up volume handles): 1 GiB.
pub const DEFAULT_SNAPSHOT_SIZE: i64 = 1 << 30;

/// How long [`MockDriver::stop`] lets open connections drain before it
/// tears the server down; clients holding idle channels would otherwise
/// keep a graceful shutdown waiting.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// How often [`MockDriver::wait_for_calls`] looks at the counter: short
/// enough not to slow tests down, long enough not to busy-spin.
const WAIT_POLL: Duration = Duration::from_millis(5);

/// Start-up configuration of the mock driver.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// `GetPluginInfo.name`.
    pub driver_name: String,
    /// `GetPluginInfo.vendor_version`.
    pub vendor_version: String,
    /// Controller capabilities advertised; RPCs whose capability is missing
    /// answer `UNIMPLEMENTED` (CreateVolume/DeleteVolume, Create/DeleteSnapshot,
    /// ListSnapshots, GetSnapshot).
    pub controller_caps: Vec<CtrlCap>,
    /// Advertise and serve the GroupController service.
    pub group_caps: bool,
    /// Probe answers `ready = false` this many times first.
    pub probe_not_ready_times: u32,
    /// New snapshots and groups report `ready_to_use = false` until they were
    /// asked about this many times (0: ready at once).
    pub ready_after_polls: u32,
    /// `size_bytes` of snapshots of volumes not created through CreateVolume.
    pub default_snapshot_size: i64,
    /// Latency added to every RPC (per-RPC values can be set later).
    pub latency: Duration,
    /// When set, the backend state is loaded from this file at start and
    /// saved to it (atomically) after every change.
    pub state_file: Option<PathBuf>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            driver_name: "mock.csi.k8s.io".to_string(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            controller_caps: vec![
                CtrlCap::CreateDeleteSnapshot,
                CtrlCap::ListSnapshots,
                CtrlCap::CreateDeleteVolume,
            ],
            group_caps: true,
            probe_not_ready_times: 0,
            ready_after_polls: 0,
            default_snapshot_size: DEFAULT_SNAPSHOT_SIZE,
            latency: Duration::ZERO,
            state_file: None,
        }
    }
}

/// Settings that can change while the mock runs.
#[derive(Debug)]
struct Settings {
    driver_name: String,
    vendor_version: String,
    controller_caps: Vec<CtrlCap>,
    group_caps: bool,
    default_snapshot_size: i64,
}

/// State shared by the services and the handle. Not `Debug`: it holds the
/// secrets of the last requests.
pub(crate) struct Inner {
    settings: Mutex<Settings>,
    ready_after_polls: AtomicU32,
    probe_not_ready_left: AtomicU32,
    backend: Mutex<Backend>,
    rpcs: RpcTable,
    param_faults: param_faults::ParamFaults,
}

fn unpoison<'a, T>(
    r: Result<MutexGuard<'a, T>, PoisonError<MutexGuard<'a, T>>>,
) -> MutexGuard<'a, T> {
    r.unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn settings(&self) -> MutexGuard<'_, Settings> {
        unpoison(self.settings.lock())
    }

    fn backend(&self) -> MutexGuard<'_, Backend> {
        unpoison(self.backend.lock())
    }

    fn knobs(&self) -> Knobs {
        Knobs {
            ready_after_polls: self.ready_after_polls.load(Ordering::Relaxed),
            default_snapshot_size: self.settings().default_snapshot_size,
        }
    }

    fn plugin_info(&self) -> (String, String) {
        let s = self.settings();
        (s.driver_name.clone(), s.vendor_version.clone())
    }

    fn has_controller_cap(&self, cap: CtrlCap) -> bool {
        self.settings().controller_caps.contains(&cap)
    }

    fn controller_caps(&self) -> Vec<CtrlCap> {
        self.settings().controller_caps.clone()
    }

    fn group_caps(&self) -> bool {
        self.settings().group_caps
    }
}

#[derive(Debug)]
struct ServerHandle {
    socket: PathBuf,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Handle to a running mock driver. Cheap to clone; every clone controls the
/// same server.
///
/// Methods taking a `method` name accept the gRPC method names
/// (`"CreateSnapshot"`, `"Probe"`, `"GroupControllerGetCapabilities"`, …) and
/// panic on an unknown name, which is a bug in the calling test. Where noted,
/// `"*"` means every RPC.
#[derive(Clone)]
pub struct MockDriver {
    inner: Arc<Inner>,
    server: Arc<ServerHandle>,
}

impl std::fmt::Debug for MockDriver {
    // Only the socket: the state holds received secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockDriver")
            .field("socket", &self.server.socket)
            .finish_non_exhaustive()
    }
}

impl MockDriver {
    /// Binds `socket` (removing a stale socket file first) and serves the mock
    /// until [`MockDriver::stop`]. With `config.state_file` set, the saved
    /// backend state is loaded first.
    pub async fn start(socket: impl AsRef<Path>, config: MockConfig) -> io::Result<MockDriver> {
        let socket = socket.as_ref().to_path_buf();
        let backend = Backend::open(config.state_file.as_deref())?;
        let inner = Arc::new(Inner {
            settings: Mutex::new(Settings {
                driver_name: config.driver_name,
                vendor_version: config.vendor_version,
                controller_caps: config.controller_caps,
                group_caps: config.group_caps,
                default_snapshot_size: config.default_snapshot_size,
            }),
            ready_after_polls: AtomicU32::new(config.ready_after_polls),
            probe_not_ready_left: AtomicU32::new(config.probe_not_ready_times),
            backend: Mutex::new(backend),
            rpcs: RpcTable::default(),
            param_faults: param_faults::ParamFaults::default(),
        });
        if !config.latency.is_zero() {
            for rpc in Rpc::ALL {
                inner.rpcs.set_latency(rpc, config.latency);
            }
        }

        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let listener = UnixListener::bind(&socket)?;

        let svc = service::Svc(inner.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let router = Server::builder()
            .add_service(pb::identity_server::IdentityServer::new(svc.clone()))
            .add_service(pb::controller_server::ControllerServer::new(svc.clone()))
            .add_service(pb::group_controller_server::GroupControllerServer::new(svc));
        let incoming = UnixListenerStream::new(listener);
        let path_for_log = socket.display().to_string();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            if let Err(error) = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
            {
                tracing::warn!(socket = %path_for_log, %error, "mock driver server failed");
            }
        });
        tracing::debug!(socket = %socket.display(), "mock driver listening");
        Ok(MockDriver {
            inner,
            server: Arc::new(ServerHandle {
                socket,
                shutdown: Mutex::new(Some(tx)),
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// The Unix socket the mock listens on.
    pub fn socket_path(&self) -> &Path {
        &self.server.socket
    }

    /// A tonic channel to this mock (for tests and benchmarks).
    pub async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        connect(self.socket_path()).await
    }

    /// How many times `method` was called (including failed calls).
    pub fn calls(&self, method: &str) -> u64 {
        self.inner.rpcs.calls(Rpc::expect(method))
    }

    /// Waits until `method` was called at least `n` times; false if that did
    /// not happen within `timeout`.
    pub async fn wait_for_calls(&self, method: &str, n: u64, timeout: Duration) -> bool {
        let rpc = Rpc::expect(method);
        let poll = async {
            while self.inner.rpcs.calls(rpc) < n {
                tokio::time::sleep(WAIT_POLL).await;
            }
        };
        tokio::time::timeout(timeout, poll).await.is_ok()
    }

    /// Resets every call counter to zero.
    pub fn reset_calls(&self) {
        self.inner.rpcs.reset_calls();
    }

    /// The last request received for `method`, decoded as `T`. It holds the
    /// secrets as received; do not log it.
    pub fn last_request<T: prost::Message + Default>(&self, method: &str) -> Option<T> {
        let bytes = self.inner.rpcs.last_request(Rpc::expect(method))?;
        T::decode(bytes.as_slice()).ok()
    }

    /// The `secrets` map of the last request for `method` (`None` if never
    /// called or the RPC carries no secrets).
    pub fn last_secrets(&self, method: &str) -> Option<HashMap<String, String>> {
        self.inner.rpcs.last_secrets(Rpc::expect(method))
    }

    /// Latency added to each call of `method` (`"*"`: every RPC).
    pub fn set_latency(&self, method: &str, d: Duration) {
        for rpc in rpcs_of(method) {
            self.inner.rpcs.set_latency(rpc, d);
        }
    }

    /// The next `times` calls of `method` fail with `code` before touching
    /// the backend. Replaces an earlier "before" injection for `method`.
    pub fn fail_next(&self, method: &str, code: tonic::Code, times: u32) {
        self.inner
            .rpcs
            .inject(Rpc::expect(method), FailWhen::Before, code, Some(times));
    }

    /// The next `times` calls of `method` are applied to the backend and then
    /// answer `code`, as when the storage did the work but the reply was lost.
    pub fn fail_next_after(&self, method: &str, code: tonic::Code, times: u32) {
        self.inner
            .rpcs
            .inject(Rpc::expect(method), FailWhen::After, code, Some(times));
    }

    /// Every call of `method` (`"*"`: every RPC) fails with `code` until
    /// [`MockDriver::clear_failures`].
    pub fn fail_always(&self, method: &str, code: tonic::Code, when: FailWhen) {
        for rpc in rpcs_of(method) {
            self.inner.rpcs.inject(rpc, when, code, None);
        }
    }

    /// Removes injected errors of `method` (`"*"`: every RPC).
    pub fn clear_failures(&self, method: &str) {
        for rpc in rpcs_of(method) {
            self.inner.rpcs.clear_failures(rpc);
        }
    }

    /// Successful replies of `method` are malformed as given (`None`: well
    /// formed again). Applies to CreateSnapshot, ListSnapshots, GetSnapshot,
    /// CreateVolumeGroupSnapshot and GetVolumeGroupSnapshot; other RPCs
    /// ignore it.
    pub fn set_malformed(&self, method: &str, m: Option<Malformed>) {
        self.inner.rpcs.set_malformed(Rpc::expect(method), m);
    }

    /// Polls needed before snapshots and groups not yet ready become ready.
    pub fn set_ready_after_polls(&self, n: u32) {
        self.inner.ready_after_polls.store(n, Ordering::Relaxed);
    }

    /// Probe answers `ready = false` the next `n` times.
    pub fn set_probe_not_ready(&self, n: u32) {
        self.inner.probe_not_ready_left.store(n, Ordering::Relaxed);
    }

    /// Replaces the advertised controller capabilities.
    pub fn set_controller_caps(&self, caps: Vec<CtrlCap>) {
        self.inner.settings().controller_caps = caps;
    }

    /// Turns the GroupController service on or off.
    pub fn set_group_caps(&self, on: bool) {
        self.inner.settings().group_caps = on;
    }

    /// Changes `GetPluginInfo.name`.
    pub fn set_driver_name(&self, name: &str) {
        self.inner.settings().driver_name = name.to_string();
    }

    /// Live backend state: every snapshot, group members included.
    pub fn snapshots(&self) -> Vec<pb::Snapshot> {
        self.inner.backend().snapshots()
    }

    /// Live backend state: the snapshot with this id, if it exists.
    pub fn snapshot(&self, snapshot_id: &str) -> Option<pb::Snapshot> {
        self.snapshots()
            .into_iter()
            .find(|s| s.snapshot_id == snapshot_id)
    }

    /// Live backend state: every group snapshot with its members.
    pub fn group_snapshots(&self) -> Vec<pb::VolumeGroupSnapshot> {
        self.inner.backend().group_snapshots()
    }

    /// Live backend state: every volume created through CreateVolume.
    pub fn volumes(&self) -> Vec<pb::Volume> {
        self.inner.backend().volumes()
    }

    /// Stops serving and removes the socket file. Other clones of the handle
    /// keep the backend readable but the server is gone.
    pub async fn stop(self) {
        let tx = unpoison(self.server.shutdown.lock()).take();
        let task = unpoison(self.server.task.lock()).take();
        if let Some(tx) = tx {
            let _ = tx.send(());
        }
        if let Some(mut task) = task
            && tokio::time::timeout(STOP_GRACE, &mut task).await.is_err()
        {
            task.abort();
            let _ = task.await;
        }
        let _ = std::fs::remove_file(&self.server.socket);
    }
}

fn rpcs_of(method: &str) -> Vec<Rpc> {
    if method == "*" {
        Rpc::ALL.to_vec()
    } else {
        vec![Rpc::expect(method)]
    }
}

/// Opens a tonic channel to a CSI driver listening on the Unix socket `path`.
pub async fn connect(path: impl AsRef<Path>) -> Result<Channel, tonic::transport::Error> {
    let path = path.as_ref().to_path_buf();
    // The URI is required by the API but unused: the connector dials the socket.
    Endpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}
