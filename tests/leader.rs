//! Leader election on a Lease (spec B.7) between replicas sharing the
//! embedded API server: one leader at a time, takeover after a crash within
//! the lease duration, immediate takeover after a release, loss when renewals
//! fail, labels, events and metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use csi_snapshotter::k8s::event::EventRecorder;
use csi_snapshotter::leader::{
    LeaderConfig, LeaderElector, LeaderMetrics, Leadership, event_component, lease_name,
};
use csi_snapshotter::metrics::Registry;
use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions};
use tokio_util::sync::CancellationToken;

const NS: &str = "kube-system";

fn config(identity: &str, lease: Duration, renew: Duration, retry: Duration) -> LeaderConfig {
    let mut c = LeaderConfig::new(lease_name("mock.csi.k8s.io"), NS, identity);
    c.lease_duration = lease;
    c.renew_deadline = renew;
    c.retry_period = retry;
    c
}

/// Timings with more room than [`fast`], for the test whose leader must
/// keep renewing through a long drain on a loaded machine (a renewal that
/// misses its deadline there would end the lead, not test the drain).
fn roomy(identity: &str) -> LeaderConfig {
    config(
        identity,
        Duration::from_secs(4),
        Duration::from_secs(3),
        Duration::from_millis(500),
    )
}

fn fast(identity: &str) -> LeaderConfig {
    config(
        identity,
        Duration::from_secs(2),
        Duration::from_millis(1500),
        Duration::from_millis(300),
    )
}

async fn elector(
    server: &ApiServer,
    cfg: LeaderConfig,
    registry: Option<&Registry>,
) -> LeaderElector {
    let metrics = registry.map(|r| LeaderMetrics::register(r).unwrap());
    let component = event_component("mock.csi.k8s.io", &cfg.identity);
    let (rec, _) = EventRecorder::start(server.client().await, component);
    LeaderElector::new(server.client().await, cfg, Some(rec), metrics).expect("valid config")
}

/// A replica: acquires, then holds until cancelled or lost; `leading` is
/// true only in between (and false once the task is gone).
struct Replica {
    leading: Arc<AtomicBool>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Option<Leadership>>,
}

struct ClearOnDrop(Arc<AtomicBool>);
impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

fn spawn(elector: LeaderElector) -> Replica {
    let leading = Arc::new(AtomicBool::new(false));
    let cancel = CancellationToken::new();
    let (l, c) = (leading.clone(), cancel.clone());
    let task = tokio::spawn(async move {
        let _guard = ClearOnDrop(l.clone());
        if !elector.acquire(&c).await {
            return None;
        }
        l.store(true, Ordering::SeqCst);
        let end = elector.hold(&c).await;
        l.store(false, Ordering::SeqCst);
        if end == Leadership::Cancelled {
            elector.release().await;
        }
        Some(end)
    });
    Replica {
        leading,
        cancel,
        task,
    }
}

async fn until(what: &str, limit: Duration, f: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

#[tokio::test]
async fn exactly_one_leads_and_the_other_takes_over_after_a_crash() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let a = spawn(elector(&server, fast("replica-a"), None).await);
    let b = spawn(elector(&server, fast("replica-b"), None).await);
    let both = Arc::new(AtomicUsize::new(0));
    let monitor = {
        let (la, lb, both) = (a.leading.clone(), b.leading.clone(), both.clone());
        tokio::spawn(async move {
            loop {
                if la.load(Ordering::SeqCst) && lb.load(Ordering::SeqCst) {
                    both.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    until("a leader", Duration::from_secs(10), || {
        a.leading.load(Ordering::SeqCst) || b.leading.load(Ordering::SeqCst)
    })
    .await;
    // Several renew periods: the leader keeps it, the other keeps waiting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (leader, follower) = if a.leading.load(Ordering::SeqCst) {
        (a, b)
    } else {
        (b, a)
    };
    assert!(leader.leading.load(Ordering::SeqCst) && !follower.leading.load(Ordering::SeqCst));

    // Crash: no release, the Lease just stops being renewed.
    leader.task.abort();
    let _ = leader.task.await;
    let took = until("takeover", Duration::from_secs(10), || {
        follower.leading.load(Ordering::SeqCst)
    })
    .await;
    // Lease duration, plus at most one retry period with 1.2 jitter to notice,
    // plus slack for a loaded machine.
    assert!(
        took <= Duration::from_millis(2000 + 300 * 22 / 10 + 1500),
        "takeover took {took:?}"
    );
    monitor.abort();
    assert_eq!(both.load(Ordering::SeqCst), 0, "two leaders at once");
    follower.cancel.cancel();
    let _ = follower.task.await;
}

#[tokio::test]
async fn a_released_lease_is_taken_over_at_once() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let slow = |id: &str| {
        config(
            id,
            Duration::from_secs(30),
            Duration::from_secs(20),
            Duration::from_millis(300),
        )
    };
    let a = spawn(elector(&server, slow("replica-a"), None).await);
    until("a leads", Duration::from_secs(10), || {
        a.leading.load(Ordering::SeqCst)
    })
    .await;
    let b = spawn(elector(&server, slow("replica-b"), None).await);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!b.leading.load(Ordering::SeqCst));
    a.cancel.cancel();
    assert_eq!(a.task.await.unwrap(), Some(Leadership::Cancelled));
    let lease = server
        .object("leases", NS, &lease_name("mock.csi.k8s.io"))
        .unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null() || lease["spec"]["holderIdentity"] == "");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 1);
    // Far sooner than the 30 s lease duration.
    until("b takes over", Duration::from_secs(5), || {
        b.leading.load(Ordering::SeqCst)
    })
    .await;
    let lease = server
        .object("leases", NS, &lease_name("mock.csi.k8s.io"))
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    b.cancel.cancel();
    let _ = b.task.await;
}

#[tokio::test]
async fn failing_renewals_lose_the_lease_within_the_renew_deadline() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let registry = Registry::new();
    let a = spawn(elector(&server, fast("replica-a"), Some(&registry)).await);
    until("a leads", Duration::from_secs(10), || {
        a.leading.load(Ordering::SeqCst)
    })
    .await;
    assert!(
        registry
            .encode_text()
            .contains("leader_election_master_status{name=\"\"} 1\n")
    );
    server.faults().fail_next("PUT", "leases", "", 500, 10_000);
    server.faults().fail_next("GET", "leases", "", 500, 10_000);
    let end = tokio::time::timeout(Duration::from_secs(5), a.task)
        .await
        .expect("hold ends")
        .unwrap();
    assert_eq!(end, Some(Leadership::Lost));
    let text = registry.encode_text();
    assert!(
        text.contains("leader_election_master_status{name=\"\"} 0\n"),
        "{text}"
    );
    // The optimistic update failed first, then the slow path was taken.
    assert!(
        !text.contains("leader_election_slowpath_total{name=\"\"} 0\n"),
        "{text}"
    );
    until("stopped-leading event", Duration::from_secs(5), || {
        server
            .objects("events")
            .iter()
            .any(|e| e["message"] == "replica-a stopped leading")
    })
    .await;
}

#[tokio::test]
async fn the_lease_carries_the_record_labels_and_leader_events() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let mut cfg = fast("replica-a");
    cfg.labels.insert("app".into(), "snapshotter".into());
    let a = spawn(elector(&server, cfg, None).await);
    until("a leads", Duration::from_secs(10), || {
        a.leading.load(Ordering::SeqCst)
    })
    .await;
    let lease = server
        .object("leases", NS, "external-snapshotter-leader-mock-csi-k8s-io")
        .expect("lease");
    assert_eq!(lease["metadata"]["labels"]["app"], "snapshotter");
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 2);
    assert!(lease["spec"]["acquireTime"].is_string() && lease["spec"]["renewTime"].is_string());
    let first_renew = lease["spec"]["renewTime"].clone();
    until("a renewal", Duration::from_secs(5), || {
        server
            .object("leases", NS, "external-snapshotter-leader-mock-csi-k8s-io")
            .unwrap()["spec"]["renewTime"]
            != first_renew
    })
    .await;
    until("leader event", Duration::from_secs(5), || {
        server
            .objects("events")
            .iter()
            .any(|e| e["message"] == "replica-a became leader")
    })
    .await;
    let evs = server.objects("events");
    let e = evs
        .iter()
        .find(|e| e["message"] == "replica-a became leader")
        .unwrap();
    assert_eq!(e["reason"], "LeaderElection");
    assert_eq!(e["type"], "Normal");
    assert_eq!(e["metadata"]["namespace"], NS);
    assert_eq!(e["involvedObject"]["kind"], "Lease");
    assert_eq!(
        e["source"]["component"],
        "external-snapshotter-leader-mock.csi.k8s.io/replica-a"
    );
    a.cancel.cancel();
    let _ = a.task.await;
}

#[tokio::test]
async fn a_conflicting_optimistic_renewal_takes_the_slow_path_and_keeps_the_lease() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let registry = Registry::new();
    let a = spawn(elector(&server, fast("replica-a"), Some(&registry)).await);
    until("a leads", Duration::from_secs(10), || {
        a.leading.load(Ordering::SeqCst)
    })
    .await;
    server.faults().fail_next("PUT", "leases", "", 409, 1);
    until("slow path", Duration::from_secs(5), || {
        registry
            .encode_text()
            .contains("leader_election_slowpath_total{name=\"\"} 1\n")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(a.leading.load(Ordering::SeqCst));
    a.cancel.cancel();
    let _ = a.task.await;
}

#[tokio::test]
async fn the_lease_is_renewed_until_the_work_has_drained() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let a = elector(&server, roomy("replica-a"), None).await;
    let shutdown = CancellationToken::new();
    assert!(a.acquire(&shutdown).await);
    let drained = Arc::new(AtomicBool::new(false));
    let led = {
        let (shutdown, drained) = (shutdown.clone(), drained.clone());
        tokio::spawn(async move {
            let end = a
                .lead_while(&shutdown, |stop| async move {
                    stop.cancelled().await;
                    // A drain longer than the 4 s lease duration.
                    tokio::time::sleep(Duration::from_secs(6)).await;
                    drained.store(true, Ordering::SeqCst);
                })
                .await;
            let released = a.release().await;
            (end, released)
        })
    };
    let b = spawn(elector(&server, roomy("replica-b"), None).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    // B must not lead while A drains, even though the drain outlasts A's
    // lease duration.
    until("drain done", Duration::from_secs(15), || {
        assert!(
            !b.leading.load(Ordering::SeqCst),
            "B led while A was still draining"
        );
        drained.load(Ordering::SeqCst)
    })
    .await;
    let (end, released) = led.await.unwrap();
    assert_eq!(end, Leadership::Cancelled);
    assert!(released);
    until("b takes over", Duration::from_secs(8), || {
        b.leading.load(Ordering::SeqCst)
    })
    .await;
    b.cancel.cancel();
    let _ = b.task.await;
}

#[tokio::test]
async fn losing_the_lease_stops_the_work_at_once() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let a = elector(&server, fast("replica-a"), None).await;
    let shutdown = CancellationToken::new();
    assert!(a.acquire(&shutdown).await);
    let token = Arc::new(std::sync::Mutex::new(None::<CancellationToken>));
    let t = token.clone();
    let led = tokio::spawn(async move {
        a.lead_while(&shutdown, |stop| async move {
            *t.lock().unwrap() = Some(stop);
            std::future::pending::<()>().await;
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.faults().fail_next("PUT", "leases", "", 500, 10_000);
    server.faults().fail_next("GET", "leases", "", 500, 10_000);
    let end = tokio::time::timeout(Duration::from_secs(5), led)
        .await
        .expect("returns on loss")
        .unwrap();
    assert_eq!(end, Leadership::Lost);
    let stop = token.lock().unwrap().clone().expect("work started");
    assert!(stop.is_cancelled(), "the work was told to stop");
}
