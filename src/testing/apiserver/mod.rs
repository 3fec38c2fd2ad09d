//! An embedded Kubernetes API server for tests, benchmarks and the demo.
//!
//! It serves, over HTTPS on 127.0.0.1 (with a self-signed CA written into
//! the kubeconfig it produces; plain HTTP only with
//! [`ApiServerOptions::plain_http`]), the resources the sidecar and
//! its demo use at their real REST paths, with kube-apiserver's semantics
//! for versions, conflicts, the status subresource, patches, finalizers,
//! selectors, pagination, watches and error bodies. See
//! [`ApiServer::start`]; the `csi-snapshotter embedded-apiserver` command
//! ([`cli_main`]) runs it on its own; `csi-snapshotter embedded-apiserver
//! --bench` runs [`run_bench`].
//!
//! Known differences from kube-apiserver (none of them reachable by the
//! sidecar's own requests):
//! - no authentication or authorization; every request is allowed;
//! - request bodies may be JSON, YAML, or protobuf for Secret and
//!   Namespace (what kubectl's generators send); answers are always JSON,
//!   and `kubectl get` falls back to NAME/AGE columns (no server-side Table);
//! - server-side apply is applied as a merge patch (creating the object if
//!   missing), without conflict detection; `managedFields` are kept as
//!   upstream keeps them otherwise (see `managed.rs`);
//! - the OpenAPI documents describe the fields of the custom resources
//!   only; the built-in kinds are objects without described fields (kubectl
//!   then patches them from its compiled-in types);
//! - no garbage collector: `ownerReferences` and propagation policies are
//!   stored but do not cascade; deleting a namespace deletes its content at
//!   once (the namespace controller's job) and the namespace goes with its
//!   last object;
//! - only `v1` of `groupsnapshot.storage.k8s.io` is served;
//! - later pages of a paginated list show the newest state of the
//!   remaining objects (each page reports the first page's version);
//! - a watch from a version newer than the server's does not wait for it;
//! - a list is always of the newest state, also with
//!   `resourceVersionMatch=Exact` (whose parameters are checked as
//!   upstream checks them).
//!
//! `tests/apiserver_differential.rs` sends one table of request sequences
//! to this server and to a real kube-apiserver and compares the answers.

mod bench;
mod cli;
mod cost;
mod discovery;
mod eventsv1;
mod faults;
mod handler;
mod managed;
mod object;
mod openapi;
mod patch;
mod protobuf;
pub mod raw;
pub mod rbac;
mod resources;
pub mod schema;
mod selector;
mod status;
mod store;
mod tls;
mod typed;
mod validate;
mod watch;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch as signal;
use tokio::task::{JoinHandle, JoinSet};

pub use bench::{BenchOptions, BenchReport, run_bench};
pub use cli::cli_main;
pub use faults::{Faults, RequestCount};
pub use rbac::RbacPolicy;
pub use store::WatchHistory;

use faults::Counters;
use resources::{RESOURCES, ResourceDef};
use status::Cause;
use store::Store;

/// Default interval between watch bookmarks. Upstream sends one about
/// every minute; tests that want them sooner call
/// [`ApiServer::set_bookmark_interval`].
const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

/// Namespaces every cluster starts with.
const INITIAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// How to start an [`ApiServer`].
#[derive(Debug, Clone, Default)]
pub struct ApiServerOptions {
    /// Address to listen on; `None` = 127.0.0.1 with a port chosen by the OS.
    pub listen: Option<SocketAddr>,
    /// Directory of CRD YAML files to prune and validate custom resources
    /// against instead of the built-in schemas ([`schema::Schemas::builtin`]);
    /// either way a breach is refused with 422 Invalid.
    pub crd_schemas: Option<PathBuf>,
    /// Where to write the kubeconfig; `None` = a fresh temporary directory
    /// removed when the server is dropped.
    pub kubeconfig_out: Option<PathBuf>,
    /// A restricted user held to these RBAC rules (e.g.
    /// [`RbacPolicy::sidecar`]): its kubeconfig is written beside the other
    /// one ([`ApiServer::restricted_kubeconfig_path`]) and its requests that
    /// the rules do not allow get 403 Forbidden, as on a real cluster.
    pub restricted: Option<RbacPolicy>,
    /// Watch events kept per resource (default: like kube-apiserver's watch
    /// cache); watches from versions older than that get 410 Expired.
    pub watch_history: WatchHistory,
    /// Serve plain HTTP instead of HTTPS (the kubeconfig then names an
    /// `http://` server and carries no CA).
    pub plain_http: bool,
    /// CPU time spent on each request (watches aside) before it is
    /// answered, as kube-apiserver and etcd spend it (zero: none). See
    /// `cost.rs`.
    pub cpu_per_request: Duration,
}

/// Schema checks for custom resources (pruning and validation).
pub(crate) trait Validator: Send + Sync {
    /// Drops fields the schema does not declare; returns their paths.
    fn prune(&self, def: &ResourceDef, obj: &mut Value) -> Vec<String>;
    /// Validates a create (`old` = None) or an update.
    fn validate(
        &self,
        def: &ResourceDef,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), Vec<Cause>>;
}

/// State shared by all connections.
pub(crate) struct Shared {
    store: Mutex<Store>,
    pub(crate) published: Arc<AtomicU64>,
    pub(crate) faults: Faults,
    /// CPU work done per request.
    pub(crate) cost: cost::CpuCost,
    pub(crate) counters: Counters,
    pub(crate) validator: Option<Box<dyn Validator>>,
    /// `/openapi/v2` and `/openapi/v3`, from the same schemas.
    pub(crate) openapi: openapi::OpenApi,
    pub(crate) addr: SocketAddr,
    /// The HTTPS material; `None` = plain HTTP.
    tls: Option<Arc<tls::Tls>>,
    /// Rules of the restricted user, when there is one.
    pub(crate) rbac: Option<RbacPolicy>,
    /// Requests of the restricted user refused with 403.
    pub(crate) forbidden: AtomicU64,
    bookmark_ms: AtomicU64,
    shutdown: signal::Sender<bool>,
}

impl Shared {
    /// Locks the store (a poisoned lock is still usable: every write leaves
    /// the store consistent before it can panic).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current bookmark interval.
    pub(crate) fn bookmark_interval(&self) -> Duration {
        Duration::from_millis(self.bookmark_ms.load(Ordering::Relaxed).max(1))
    }

    /// A receiver that changes when the server shuts down.
    pub(crate) fn shutdown_signal(&self) -> signal::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// A running embedded API server. Dropping it stops it.
pub struct ApiServer {
    shared: Arc<Shared>,
    kubeconfig: PathBuf,
    restricted_kubeconfig: Option<PathBuf>,
    temp_dir: Option<PathBuf>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("addr", &self.shared.addr)
            .field("kubeconfig", &self.kubeconfig)
            .finish()
    }
}

/// The token of the unrestricted user.
const ADMIN_TOKEN: &str = "embedded-apiserver-token";

/// The kubeconfig text for a server at `addr` and a user with `token`;
/// `ca_data` (base64 PEM) for an HTTPS server, `None` for plain HTTP.
fn kubeconfig_yaml(addr: SocketAddr, ca_data: Option<&str>, token: &str) -> String {
    let cluster = match ca_data {
        Some(ca) => format!("    server: https://{addr}\n    certificate-authority-data: {ca}\n"),
        None => format!("    server: http://{addr}\n"),
    };
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: embedded\n  cluster:\n{cluster}\
         users:\n\
         - name: embedded\n  user:\n    token: {token}\n\
         contexts:\n\
         - name: embedded\n  context:\n    cluster: embedded\n    user: embedded\n    namespace: default\n\
         current-context: embedded\n"
    )
}

/// A kube client built from the kubeconfig at `path`.
async fn client_from(path: &Path) -> io::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path).map_err(io::Error::other)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(io::Error::other)?;
    kube::Client::try_from(config).map_err(io::Error::other)
}

/// Adapts the CRD schema checks to the server.
struct SchemaValidator(schema::Schemas);

impl Validator for SchemaValidator {
    fn prune(&self, def: &ResourceDef, obj: &mut Value) -> Vec<String> {
        self.0.prune(def.group, def.version, def.plural, obj)
    }

    fn validate(
        &self,
        def: &ResourceDef,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), Vec<Cause>> {
        let result = match old {
            Some(old) => self
                .0
                .validate_update(def.group, def.version, def.plural, obj, old),
            None => self.0.validate(def.group, def.version, def.plural, obj),
        };
        result.map_err(|errs| {
            errs.iter()
                .map(|e| Cause {
                    reason: e.kind.reason().to_string(),
                    message: e.body(),
                    field: e.field.clone(),
                })
                .collect()
        })
    }
}

/// The CRDs in `dir`, or the built-in schemas.
fn load_schemas(dir: Option<&Path>) -> io::Result<schema::Schemas> {
    match dir {
        Some(dir) => schema::Schemas::load_dir(dir).map_err(io::Error::other),
        None => Ok(schema::Schemas::builtin()),
    }
}

impl ApiServer {
    /// Binds, writes the kubeconfig and starts serving.
    pub async fn start(opts: ApiServerOptions) -> io::Result<ApiServer> {
        let schemas = load_schemas(opts.crd_schemas.as_deref())?;
        let openapi = openapi::OpenApi::build(&schemas);
        let validator: Option<Box<dyn Validator>> = Some(Box::new(SchemaValidator(schemas)));
        let listen = opts
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let tls = if opts.plain_http {
            None
        } else {
            Some(tls::for_ip(addr.ip())?)
        };
        let published = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(published.clone(), opts.watch_history)),
            published,
            faults: Faults::default(),
            cost: cost::CpuCost::new(opts.cpu_per_request),
            counters: Counters::default(),
            validator,
            openapi,
            addr,
            tls,
            rbac: opts.restricted.clone(),
            forbidden: AtomicU64::new(0),
            bookmark_ms: AtomicU64::new(DEFAULT_BOOKMARK_INTERVAL.as_millis() as u64),
            shutdown: signal::channel(false).0,
        });
        for ns in INITIAL_NAMESPACES {
            handler::seed(
                &shared,
                "namespaces",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .map_err(|e| io::Error::other(e.message))?;
        }
        // Like a real server's watch cache, the history starts now: a watch
        // from an earlier version is too old.
        shared.lock().compact();
        let (kubeconfig, temp_dir) = match &opts.kubeconfig_out {
            Some(p) => (p.clone(), None),
            None => {
                let dir = std::env::temp_dir()
                    .join(format!("embedded-apiserver-{}", uuid::Uuid::new_v4()));
                (dir.join("kubeconfig"), Some(dir))
            }
        };
        if let Some(parent) = kubeconfig.parent()
            && !parent.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(parent).await?;
        }
        let ca_data = shared.tls.as_ref().map(|t| t.ca_data());
        tokio::fs::write(
            &kubeconfig,
            kubeconfig_yaml(addr, ca_data.as_deref(), ADMIN_TOKEN),
        )
        .await?;
        let restricted_kubeconfig = match &opts.restricted {
            Some(_) => {
                let mut path = kubeconfig.clone().into_os_string();
                path.push(".restricted");
                let path = PathBuf::from(path);
                tokio::fs::write(
                    &path,
                    kubeconfig_yaml(addr, ca_data.as_deref(), rbac::RESTRICTED_TOKEN),
                )
                .await?;
                Some(path)
            }
            None => None,
        };
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        tracing::debug!(%addr, kubeconfig = %kubeconfig.display(), "embedded API server listening");
        Ok(ApiServer {
            shared,
            kubeconfig,
            restricted_kubeconfig,
            temp_dir,
            accept: Some(accept),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The kubeconfig of the restricted user (see
    /// [`ApiServerOptions::restricted`]), when there is one.
    pub fn restricted_kubeconfig_path(&self) -> Option<&Path> {
        self.restricted_kubeconfig.as_deref()
    }

    /// How many requests of the restricted user were refused with 403.
    pub fn forbidden_count(&self) -> u64 {
        self.shared.forbidden.load(Ordering::Relaxed)
    }

    /// `https://127.0.0.1:PORT` (`http://…` with
    /// [`ApiServerOptions::plain_http`]).
    pub fn url(&self) -> String {
        let scheme = if self.shared.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.shared.addr)
    }

    /// How raw clients reach this server (TLS trusting its CA, or plain).
    pub fn endpoint(&self) -> raw::Endpoint {
        raw::Endpoint::new(
            self.shared.addr,
            self.shared.tls.as_ref().map(|t| t.client.clone()),
        )
    }

    /// The kubeconfig written at start.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kube client for this server, built from the written kubeconfig.
    pub async fn try_client(&self) -> io::Result<kube::Client> {
        client_from(&self.kubeconfig).await
    }

    /// A kube client of the restricted user (see
    /// [`ApiServerOptions::restricted`]).
    pub async fn try_restricted_client(&self) -> io::Result<kube::Client> {
        match &self.restricted_kubeconfig {
            Some(path) => client_from(path).await,
            None => Err(io::Error::other(
                "the server was started without a restricted user",
            )),
        }
    }

    /// A kube client for this server (test convenience).
    ///
    /// # Panics
    /// If the client cannot be built from the server's own kubeconfig,
    /// which would be a bug in this module.
    pub async fn client(&self) -> kube::Client {
        match self.try_client().await {
            Ok(c) => c,
            Err(e) => panic!("client for the embedded API server: {e}"),
        }
    }

    /// Requests served so far. `verb`: `GET`, `LIST`, `WATCH`, `POST`,
    /// `PUT`, `PATCH`, `DELETE` (or kube verbs like `create`), `*` for
    /// all. `resource`: a plural (counts its subresources too),
    /// `plural/status` (only the subresource), `*` for all.
    pub fn request_count(&self, verb: &str, resource: &str) -> u64 {
        self.shared.counters.count(verb, resource)
    }

    /// Watches of `resource` (a plural, `*` for all) that were answered
    /// or ended with an ERROR event carrying 410 Expired: a watch from a
    /// version older than the retained history, or one ended by
    /// [`Faults::expire_watches`] or [`Faults::next_watch_gone`].
    pub fn expired_watch_count(&self, resource: &str) -> u64 {
        self.shared.counters.expired_count(resource)
    }

    /// Every request counter so far (a snapshot; subtract two snapshots to
    /// count the requests of one phase).
    pub fn request_counts(&self) -> Vec<RequestCount> {
        self.shared.counters.all()
    }

    /// Serves one request in-process, without HTTP: answered as over HTTP
    /// (validation, versions, finalizers, watch events) but not counted by
    /// [`ApiServer::request_count`] and not subject to [`Faults`]. For a
    /// benchmark's own writes. `path` may carry a query; watches answer 405.
    pub async fn local_request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> io::Result<raw::RawResponse> {
        let method = http::Method::from_bytes(method.as_bytes()).map_err(io::Error::other)?;
        let bytes = match body {
            Some(b) => bytes::Bytes::from(serde_json::to_vec(b).map_err(io::Error::other)?),
            None => bytes::Bytes::new(),
        };
        let ct = content_type.unwrap_or(if body.is_some() {
            "application/json"
        } else {
            ""
        });
        let (code, out) = handler::local(&self.shared, &method, path, ct, bytes).await;
        let body = serde_json::from_slice(&out)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&out).into_owned()));
        Ok(raw::RawResponse {
            code,
            content_type: "application/json".to_string(),
            body,
        })
    }

    /// Fault injection.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Sets the CPU time spent on each request from now on (see
    /// [`ApiServerOptions::cpu_per_request`]).
    pub fn set_cpu_per_request(&self, d: Duration) {
        self.shared.cost.set(d);
    }

    /// Sets the interval of periodic bookmarks for watches that allow them
    /// (applies to watches started afterwards).
    pub fn set_bookmark_interval(&self, d: Duration) {
        self.shared
            .bookmark_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Forgets all retained watch events, as an etcd compaction does:
    /// watches and continue tokens from older versions then get 410.
    pub fn compact(&self) {
        self.shared.lock().compact();
    }

    /// The newest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv()
    }

    /// A stored object, read without going through HTTP. `resource` is a
    /// plural (`volumesnapshotcontents`) or `plural.group` to pick among
    /// groups (`events.events.k8s.io`); `namespace` is "" for
    /// cluster-scoped objects.
    pub fn object(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let res = resource_index(resource)?;
        self.shared
            .lock()
            .get(res, &(namespace.to_string(), name.to_string()))
            .map(|e| (*e.obj).clone())
    }

    /// All stored objects of a resource, in key order.
    pub fn objects(&self, resource: &str) -> Vec<Value> {
        let Some(res) = resource_index(resource) else {
            return Vec::new();
        };
        self.shared.lock().tables[res]
            .objects
            .values()
            .map(|e| (*e.obj).clone())
            .collect()
    }

    /// Sends one raw HTTP request (`body` as given, no client-side
    /// processing): for tests that check the wire.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> io::Result<raw::RawResponse> {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        raw::request(
            &self.endpoint(),
            method,
            path,
            content_type,
            bytes.as_deref(),
        )
        .await
    }

    /// Opens a raw watch stream (`path` must include `watch=true`).
    pub async fn watch_raw(&self, path: &str) -> io::Result<raw::RawWatch> {
        raw::RawWatch::open(&self.endpoint(), path).await
    }

    /// Stops serving and closes all connections and watches.
    pub async fn shutdown(mut self) {
        let _ = self.shared.shutdown.send(true);
        if let Some(h) = self.accept.take() {
            let _ = h.await;
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.shared.shutdown.send(true);
        if let Some(h) = self.accept.take() {
            h.abort();
        }
        if let Some(dir) = &self.temp_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn resource_index(resource: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.plural == resource || r.qualified() == resource)
}

/// Serves HTTP/1.1 on one connection until it closes.
async fn serve<I>(io: I, sh: Arc<Shared>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| handler::handle(sh.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc);
    if let Err(e) = conn.await {
        tracing::trace!(error = %e, "embedded API server connection ended");
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown_signal();
    let mut conns = JoinSet::new();
    let acceptor = shared
        .tls
        .as_ref()
        .map(|t| tokio_rustls::TlsAcceptor::from(t.server.clone()));
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let sh = shared.clone();
                    let acceptor = acceptor.clone();
                    conns.spawn(async move {
                        match acceptor {
                            None => serve(stream, sh).await,
                            Some(a) => match a.accept(stream).await {
                                Ok(tls) => serve(tls, sh).await,
                                Err(e) => tracing::debug!(error = %e, "embedded API server TLS handshake failed"),
                            },
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "embedded API server accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next() => {}
            _ = shutdown.changed() => break,
        }
    }
    conns.shutdown().await;
}
