//! The CPU a real API server spends on each request, spent here too.
//!
//! kube-apiserver and etcd do a lot of work per request on custom
//! resources: decoding, defaulting, schema validation, managedFields,
//! conversion, an etcd transaction, encoding. On a node they share with the
//! sidecar, that work competes with the sidecar for the cores and evicts its
//! caches, which raises the sidecar's own CPU per object well above what it
//! costs next to an idle peer. [`CpuCost`] makes the embedded server do a
//! fixed amount of CPU work per request (measured in the thread's own CPU
//! time, so that a busy machine stretches it as it stretches the real one),
//! on at most as many threads as the machine has cores, as a Go server
//! limited to `GOMAXPROCS` is.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustix::time::{ClockId, clock_gettime};
use tokio::sync::Semaphore;

/// Memory each spending thread works through. A few MiB, like the hot part
/// of a Go server's heap: larger than the per-core caches, so that the work
/// evicts the sidecar's cache lines as the real server's does.
const WORKING_SET: usize = 4 << 20;

/// Bytes copied between two reads of the thread's CPU clock: short enough
/// (tens of microseconds) to stop close to the asked duration.
const STEP: usize = 64 << 10;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// CPU work done before a request is answered.
#[derive(Debug)]
pub(crate) struct CpuCost {
    /// Nanoseconds of CPU time per request.
    per_request: AtomicU64,
    threads: Arc<Semaphore>,
}

impl CpuCost {
    /// `per_request` of CPU time per request (zero spends nothing), on at
    /// most as many threads at once as the machine has cores.
    pub(crate) fn new(per_request: Duration) -> CpuCost {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        CpuCost {
            per_request: AtomicU64::new(nanos(per_request)),
            threads: Arc::new(Semaphore::new(cores)),
        }
    }

    /// Changes the CPU time spent per request from now on.
    pub(crate) fn set(&self, per_request: Duration) {
        self.per_request
            .store(nanos(per_request), Ordering::Relaxed);
    }

    /// Spends the per-request CPU time on a blocking thread, waiting for a
    /// free core first as a request waits for a Go processor.
    pub(crate) async fn spend(&self) {
        let d = Duration::from_nanos(self.per_request.load(Ordering::Relaxed));
        if d.is_zero() {
            return;
        }
        let Ok(permit) = self.threads.clone().acquire_owned().await else {
            return;
        };
        let _ = tokio::task::spawn_blocking(move || {
            burn(d);
            drop(permit);
        })
        .await;
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The calling thread's CPU time.
fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Copies memory around the thread's working set until the thread has
/// used `d` of CPU time. Returns the bytes copied.
pub(crate) fn burn(d: Duration) -> usize {
    let start = thread_cpu();
    SCRATCH.with(|s| {
        let mut buf = s.borrow_mut();
        if buf.len() != WORKING_SET {
            *buf = vec![1u8; WORKING_SET];
        }
        let (a, b) = buf.split_at_mut(WORKING_SET / 2);
        let (mut copied, mut at, mut forward) = (0, 0, true);
        while thread_cpu().saturating_sub(start) < d {
            let r = at..at + STEP;
            if forward {
                b[r.clone()].copy_from_slice(&a[r]);
            } else {
                a[r.clone()].copy_from_slice(&b[r]);
            }
            at += STEP;
            if at + STEP > a.len() {
                at = 0;
                forward = !forward;
            }
            copied += STEP;
        }
        copied
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burn_uses_at_least_the_asked_cpu_time() {
        let before = thread_cpu();
        let copied = burn(Duration::from_millis(20));
        let used = thread_cpu() - before;
        assert!(used >= Duration::from_millis(20), "{used:?}");
        assert!(copied > 0);
    }

    #[test]
    fn nothing_is_spent_for_zero() {
        assert_eq!(burn(Duration::ZERO), 0);
    }

    #[tokio::test]
    async fn spending_runs_off_the_async_threads() {
        let cost = CpuCost::new(Duration::from_millis(5));
        let before = thread_cpu();
        cost.spend().await;
        // The work ran on a blocking thread, not on this one.
        assert!(thread_cpu() - before < Duration::from_millis(5));
        cost.set(Duration::ZERO);
        assert_eq!(cost.per_request.load(Ordering::Relaxed), 0);
    }
}
