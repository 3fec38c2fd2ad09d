//! The diagnostics HTTP server (spec E): Prometheus metrics, the
//! leader-election health check, and a readiness check.
//!
//! Paths:
//! - `<metrics path>` (default `/metrics`): text exposition of the registry;
//! - `/healthz/leader-election`: only when leader election runs and the
//!   server was started from `--http-endpoint` (not `--metrics-address`);
//!   200 `ok`, or 500 `internal server error: <reason>`;
//! - `/readyz` (not in upstream): 200 `ok` once the CSI driver has answered
//!   Probe and every watch cache is synced, else 503 with the missing parts;
//! - anything else: 404.
//!
//! Plain HTTP/1, no TLS, no server-side timeouts (as upstream).

use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::leader::LeaderHealth;
use crate::metrics::{Registry, TEXT_CONTENT_TYPE};

/// Path of the leader-election health check.
pub const LEADER_HEALTH_PATH: &str = "/healthz/leader-election";
/// Path of the readiness check.
pub const READY_PATH: &str = "/readyz";
/// The readiness condition met once the controllers' watch caches have
/// synced. A standby replica does not watch, so it is not asked of it (see
/// [`Readiness::set_standby`]).
pub const CACHES_SYNCED: &str = "watch caches synced";

type Check = Box<dyn Fn() -> bool + Send + Sync>;
/// A named condition of [`Readiness::require`] and whether it is met.
type Flag = (String, Arc<AtomicBool>);

/// What `/readyz` waits for: the driver's Probe and named checks (e.g. one
/// per watch cache). Cheap to clone.
#[derive(Clone, Default)]
pub struct Readiness {
    driver_ready: Arc<AtomicBool>,
    standby: Arc<AtomicBool>,
    checks: Arc<Mutex<Vec<(String, Check)>>>,
    flags: Arc<Mutex<Vec<Flag>>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("driver_ready", &self.driver_ready.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Readiness {
    /// Nothing ready yet.
    pub fn new() -> Self {
        Readiness::default()
    }

    /// Records whether the CSI driver answered Probe as ready.
    pub fn set_driver_ready(&self, ready: bool) {
        self.driver_ready.store(ready, Ordering::SeqCst);
    }

    /// Marks this replica as a standby under leader election (or as the
    /// leader again). A standby runs no controllers, so only the driver's
    /// Probe counts: it is ready to take over, and a rolling update of a
    /// multi-replica deployment is not held up by replicas that wait for
    /// the Lease.
    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::SeqCst);
    }

    /// Adds a condition named `name` (e.g. `volumesnapshotcontents cache synced`).
    pub fn add_check(
        &self,
        name: impl Into<String>,
        check: impl Fn() -> bool + Send + Sync + 'static,
    ) {
        self.checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((name.into(), Box::new(check)));
    }

    /// Adds a condition named `name` that is unmet until
    /// [`satisfy`](Self::satisfy) is called with the same name.
    pub fn require(&self, name: impl Into<String>) {
        let flag = Arc::new(AtomicBool::new(false));
        let name = name.into();
        self.flags
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((name.clone(), flag.clone()));
        self.add_check(name, move || flag.load(Ordering::SeqCst));
    }

    /// Marks the condition `name` of [`require`](Self::require) as met.
    pub fn satisfy(&self, name: &str) {
        for (n, flag) in self
            .flags
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            if n == name {
                flag.store(true, Ordering::SeqCst);
            }
        }
    }

    /// `Ok` when ready, else the names of the unmet conditions.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut missing = Vec::new();
        if !self.driver_ready.load(Ordering::SeqCst) {
            missing.push("CSI driver not ready".to_string());
        }
        let standby = self.standby.load(Ordering::SeqCst);
        for (name, check) in self
            .checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            if !standby && !check() {
                missing.push(name.clone());
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }
}

/// What the server serves.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// `--metrics-path`.
    pub metrics_path: String,
    /// The leader-election health view; `None` leaves the path unregistered.
    pub leader_health: Option<LeaderHealth>,
    /// The readiness conditions.
    pub readiness: Readiness,
}

/// Binds `addr` in Go's `host:port` syntax; `:8080` means every interface.
pub async fn bind(addr: &str) -> io::Result<TcpListener> {
    if addr.starts_with(':') {
        // Dual-stack when IPv6 is available, else IPv4 only.
        match TcpListener::bind(format!("[::]{addr}")).await {
            Ok(l) => Ok(l),
            Err(_) => TcpListener::bind(format!("0.0.0.0{addr}")).await,
        }
    } else {
        TcpListener::bind(addr).await
    }
}

/// Serves `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    config: HttpConfig,
    shutdown: CancellationToken,
) {
    let config = Arc::new(config);
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, path = config.metrics_path, "Serving metrics"),
        Err(err) => tracing::info!(error = %err, path = config.metrics_path, "Serving metrics"),
    }
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "Accepting an HTTP connection failed");
                    continue;
                }
            },
        };
        let (registry, config) = (registry.clone(), config.clone());
        let svc = service_fn(move |req| {
            let resp = route(&req, &registry, &config);
            async move { Ok::<_, Infallible>(resp) }
        });
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "HTTP connection error");
                    }
                }
                () = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}

fn text(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

const PLAIN: &str = "text/plain; charset=utf-8";

fn route(
    req: &Request<Incoming>,
    registry: &Registry,
    config: &HttpConfig,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let readable = req.method() == Method::GET || req.method() == Method::HEAD;
    if path == config.metrics_path && readable {
        return text(StatusCode::OK, TEXT_CONTENT_TYPE, registry.encode_text());
    }
    if path == LEADER_HEALTH_PATH
        && readable
        && let Some(h) = &config.leader_health
    {
        return match h.check() {
            Ok(()) => text(StatusCode::OK, PLAIN, "ok"),
            Err(reason) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                PLAIN,
                format!("internal server error: {reason}"),
            ),
        };
    }
    if path == READY_PATH && readable {
        return match config.readiness.check() {
            Ok(()) => text(StatusCode::OK, PLAIN, "ok"),
            Err(missing) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                format!("not ready: {}", missing.join(", ")),
            ),
        };
    }
    text(StatusCode::NOT_FOUND, PLAIN, "404 page not found\n")
}
