//! The gRPC channel to the driver over its Unix socket (spec B.2).
//!
//! - Dialing is retried about every second, with one log line per attempt and
//!   a "still connecting" line every 10 s, for at most 30 s overall.
//! - A socket the sidecar may not open (`EACCES`), or a path that is not a
//!   socket, is logged at once as an error saying what to change
//!   ([`SocketProblem`]), and dialing goes on as for any other failure.
//! - The channel is never re-established: once connected, a closed socket or
//!   a request to dial again means the driver went away, and the
//!   [`LossHandler`] runs (in production: note it in
//!   `/dev/termination-log`, log it and exit 1, so the pod restarts).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint, Uri};

use super::socket_access::SocketProblem;

/// Message written to the termination log and logged on connection loss.
pub const LOST_CONNECTION_MESSAGE: &str = "Lost connection to CSI driver, exiting";
/// Where Kubernetes reads a container's termination message.
const TERMINATION_LOG: &str = "/dev/termination-log";
/// Delay between dial attempts (upstream caps gRPC's backoff at 1 s).
const DIAL_INTERVAL: Duration = Duration::from_secs(1);
/// How often a "still connecting" line is logged while dialing.
const STILL_CONNECTING_EVERY: Duration = Duration::from_secs(10);
/// Overall limit of the initial connection (spec B.2).
pub const CONNECT_LIMIT: Duration = Duration::from_secs(30);

/// What to do when an established connection to the driver is lost.
#[derive(Clone)]
pub struct LossHandler(Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for LossHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LossHandler")
    }
}

impl LossHandler {
    /// A handler running `f` (tests use this to observe the loss).
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> Self {
        LossHandler(Arc::new(f))
    }

    /// The production handler: writes [`LOST_CONNECTION_MESSAGE`] to
    /// `/dev/termination-log` (best effort), logs it and exits with status 1.
    pub fn exit_process() -> Self {
        LossHandler::new(|| {
            // Best effort: the file exists only inside a Kubernetes container.
            let _ = std::fs::write(TERMINATION_LOG, LOST_CONNECTION_MESSAGE);
            tracing::error!("{LOST_CONNECTION_MESSAGE}");
            std::process::exit(1);
        })
    }

    fn call(&self) {
        (self.0)()
    }
}

/// The initial connection could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to connect to CSI driver at {address} within {limit:?}: {last_error}")]
pub struct ConnectError {
    /// The socket path.
    pub address: String,
    /// The overall limit that was hit.
    pub limit: Duration,
    /// The error of the last attempt.
    pub last_error: String,
}

/// State shared by the connector, the socket wrappers and the owner.
struct ConnState {
    socket: PathBuf,
    /// Set once the first connection is up; a dial after that is a loss.
    established: AtomicBool,
    /// Set when the owner is dropped: closing our own side is not a loss.
    closed: AtomicBool,
    /// The handler runs at most once.
    fired: AtomicBool,
    on_loss: LossHandler,
}

impl ConnState {
    fn lost(&self, why: &str) {
        if self.closed.load(Ordering::SeqCst)
            || !self.established.load(Ordering::SeqCst)
            || self.fired.swap(true, Ordering::SeqCst)
        {
            return;
        }
        tracing::error!(address = %self.socket.display(), reason = why, "connection to CSI driver lost");
        self.on_loss.call();
    }
}

/// Keeps the connection "owned": when the last clone of the client is
/// dropped, a closing socket is no longer reported as a loss.
pub(crate) struct OwnerGuard(Arc<ConnState>);

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::SeqCst);
    }
}

/// A Unix stream that reports end-of-stream or a read error of an
/// established connection as a connection loss.
struct WatchedStream {
    inner: UnixStream,
    state: Arc<ConnState>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let wanted = buf.remaining() > 0;
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &res {
            Poll::Ready(Ok(())) if wanted && buf.filled().len() == before => {
                self.state.lost("the driver closed the socket");
            }
            Poll::Ready(Err(_)) => self.state.lost("read error on the driver socket"),
            _ => {}
        }
        res
    }
}

impl Drop for WatchedStream {
    /// The HTTP/2 layer drops the socket when the connection ends, for
    /// example after the driver sent GOAWAY; while the client is still in
    /// use that is a loss too.
    fn drop(&mut self) {
        self.state.lost("the connection to the driver ended");
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Dials `socket` until the gRPC channel is up, for at most `limit`.
pub(crate) async fn connect_unix(
    socket: &Path,
    limit: Duration,
    on_loss: LossHandler,
) -> Result<(Channel, OwnerGuard), ConnectError> {
    let state = Arc::new(ConnState {
        socket: socket.to_path_buf(),
        established: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        fired: AtomicBool::new(false),
        on_loss,
    });
    // The URI is required by the HTTP/2 layer but never resolved: every
    // connection goes through the connector below.
    let endpoint = Endpoint::from_static("http://localhost");
    let address = socket.display().to_string();
    let start = Instant::now();
    let give_up = start + limit;
    let mut next_still_connecting = start + STILL_CONNECTING_EVERY;
    let mut attempt = 0u32;
    // What the connector found wrong with the socket path on its last dial,
    // and the problem last logged (logged again only when it changes).
    let found: Arc<Mutex<Option<SocketProblem>>> = Arc::default();
    let mut reported: Option<SocketProblem> = None;
    tracing::info!(address = %address, "connecting to CSI driver");
    loop {
        attempt += 1;
        let connector = {
            let state = state.clone();
            let found = found.clone();
            tower::service_fn(move |_: Uri| {
                let state = state.clone();
                let found = found.clone();
                async move {
                    if state.established.load(Ordering::SeqCst) {
                        state.lost("the channel asked to dial the driver again");
                        return Err(io::Error::new(
                            io::ErrorKind::NotConnected,
                            LOST_CONNECTION_MESSAGE,
                        ));
                    }
                    let inner = UnixStream::connect(&state.socket).await.inspect_err(|e| {
                        *lock(&found) = SocketProblem::diagnose(&state.socket, e);
                    })?;
                    Ok::<_, io::Error>(TokioIo::new(WatchedStream { inner, state }))
                }
            })
        };
        let remaining = give_up.saturating_duration_since(Instant::now());
        let result =
            tokio::time::timeout(remaining, endpoint.connect_with_connector(connector)).await;
        let last_error = match result {
            Ok(Ok(channel)) => {
                state.established.store(true, Ordering::SeqCst);
                tracing::info!(address = %address, attempt, "connected to CSI driver");
                return Ok((channel, OwnerGuard(state)));
            }
            Ok(Err(e)) => error_chain(&e),
            Err(_) => "connection attempt timed out".to_string(),
        };
        let problem = lock(&found).take();
        if let Some(problem) = &problem
            && reported.as_ref() != Some(problem)
        {
            problem.log(&address);
        }
        reported = problem;
        tracing::info!(address = %address, attempt, error = %last_error, "CSI driver not reachable yet");
        let now = Instant::now();
        if now + DIAL_INTERVAL > give_up {
            return Err(ConnectError {
                address,
                limit,
                last_error,
            });
        }
        if now >= next_still_connecting {
            tracing::info!(address = %address, "still connecting to CSI driver");
            next_still_connecting += STILL_CONNECTING_EVERY;
        }
        tokio::time::sleep(DIAL_INTERVAL).await;
    }
}

/// The slot's contents; a panic elsewhere while it was held does not matter
/// for a diagnosis that is rewritten on every dial.
fn lock<T>(slot: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An error with its sources, `outer: inner: …`, for one log field.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
