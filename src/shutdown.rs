//! Graceful shutdown on SIGTERM and SIGINT.
//!
//! The first signal cancels the returned token: the controller stops taking
//! new keys, lets the keys in flight (CSI calls and their status writes)
//! finish within a bound, releases the Lease when configured, and the
//! process exits 0. A second signal exits 1 at once.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Default bound on waiting for in-flight work after the first signal:
/// inside Kubernetes' default 30 s termination grace period.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// Exit status after a second signal.
pub const FORCED_EXIT_CODE: i32 = 1;

/// Listens for SIGTERM and SIGINT: the first cancels `token`, the second
/// exits the process with status 1. Fails only if the signal handlers
/// cannot be installed.
pub fn spawn_signal_handler(
    token: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        let first = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = first, "Received signal, shutting down");
        token.cancel();
        let second = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(
            signal = second,
            "Received second signal, exiting immediately"
        );
        std::process::exit(FORCED_EXIT_CODE);
    }))
}

/// Waits for `work` at most `bound`; returns whether it finished in time.
pub async fn drain_within(bound: Duration, work: impl Future<Output = ()>) -> bool {
    match tokio::time::timeout(bound, work).await {
        Ok(()) => true,
        Err(_) => {
            tracing::warn!(timeout = ?bound, "In-flight work did not finish in time; exiting anyway");
            false
        }
    }
}
