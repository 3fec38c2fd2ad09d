//! Two replicas of the sidecar (each with its own runtime, clients and CSI
//! driver) against one embedded API server under leader election (spec B.7):
//! exactly one reconciles; when the leader crashes, the other takes over
//! within the lease duration and reconciles; never both lead at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use csi_snapshotter::controller::content::ContentController;
use csi_snapshotter::controller::pipeline::ControllerOptions;
use csi_snapshotter::controller::queue::Backoff;
use csi_snapshotter::csi::client::{ConnectOptions, CsiConnection};
use csi_snapshotter::csi::connection::LossHandler;
use csi_snapshotter::k8s::client::{self, RateLimit};
use csi_snapshotter::k8s::event::EventRecorder;
use csi_snapshotter::k8s::types::{VolumeSnapshotClass, VolumeSnapshotContent};
use csi_snapshotter::leader::{LeaderConfig, LeaderElector, lease_name};
use csi_snapshotter::metrics::{CsiOperationMetrics, Registry};
use csi_snapshotter::reconcile::ReconcileConfig;
use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions, RbacPolicy};
use csi_snapshotter::testing::mock_driver::{MockConfig, MockDriver};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Namespace of the Lease: that of the example deployment's leader-election Role.
const LEASE_NAMESPACE: &str = "csi-snapshotter";

const MOCK: &str = "mock.csi.k8s.io";
const LEASE: Duration = Duration::from_secs(2);
const RENEW: Duration = Duration::from_millis(1500);
const RETRY: Duration = Duration::from_millis(300);

/// One sidecar replica on its own runtime; killing it drops every task at
/// once, like a crashed process (no release, no drain).
struct Replica {
    rt: Option<tokio::runtime::Runtime>,
    leading: Arc<AtomicBool>,
}

impl Replica {
    fn start(kubeconfig: PathBuf, socket: PathBuf, identity: &'static str) -> Replica {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let leading = Arc::new(AtomicBool::new(false));
        rt.spawn(replica_main(kubeconfig, socket, identity, leading.clone()));
        Replica {
            rt: Some(rt),
            leading,
        }
    }

    fn is_leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    fn kill(&mut self) {
        self.leading.store(false, Ordering::SeqCst);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the binary does after startup: elect, then run the content
/// controller while leading.
async fn replica_main(
    kubeconfig: PathBuf,
    socket: PathBuf,
    identity: &str,
    leading: Arc<AtomicBool>,
) {
    let client = client::build_client(Some(&kubeconfig), RateLimit::Unlimited)
        .await
        .expect("client");
    let opts = ConnectOptions::new(socket.to_str().unwrap(), Duration::from_secs(10))
        .unwrap()
        .with_loss_handler(LossHandler::new(|| {}))
        .with_metrics(CsiOperationMetrics::register(&Registry::new()).unwrap());
    let conn = CsiConnection::connect(opts).await.expect("connect");
    let name = conn.plugin_info().await.expect("plugin info").name;
    let caps = conn.capabilities().await.expect("capabilities");
    let driver = Arc::new(conn.into_driver(name.clone(), caps));
    let mut cfg = LeaderConfig::new(lease_name(&name), LEASE_NAMESPACE, identity);
    cfg.lease_duration = LEASE;
    cfg.renew_deadline = RENEW;
    cfg.retry_period = RETRY;
    let elector = LeaderElector::new(client.clone(), cfg, None, None).expect("elector");
    let shutdown = CancellationToken::new();
    if !elector.acquire(&shutdown).await {
        return;
    }
    leading.store(true, Ordering::SeqCst);
    let (events, _writer) = EventRecorder::start(client.clone(), format!("csi-snapshotter {name}"));
    let options = ControllerOptions {
        config: ReconcileConfig::new(name),
        workers: 2,
        backoff: Backoff {
            start: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        watch: Default::default(),
    };
    elector
        .lead_while(&shutdown, |work| {
            ContentController::run(
                driver,
                client.clone(),
                client.clone(),
                events,
                options,
                None,
                work,
            )
        })
        .await;
    leading.store(false, Ordering::SeqCst);
}

async fn create_content(api: &Api<VolumeSnapshotContent>, name: &str) {
    let vsc: VolumeSnapshotContent = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "deletionPolicy": "Delete", "driver": MOCK, "source": {"volumeHandle": format!("vol-{name}")},
            "volumeSnapshotClassName": "mock-class",
            "volumeSnapshotRef": {"name": format!("vs-{name}"), "namespace": "default",
                                  "uid": "5a6b7c8d-aaaa-4bbb-8ccc-dddddddddddd"}
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &vsc)
        .await
        .expect("create content");
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

fn ready(server: &ApiServer, name: &str) -> bool {
    server
        .object("volumesnapshotcontents", "", name)
        .is_some_and(|o| o["status"]["readyToUse"] == json!(true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_reconciles_and_the_other_takes_over_after_a_crash() {
    // The replicas are held to the shipped RBAC rules, whose leader-election
    // Role lives in the deployment's namespace.
    let server = ApiServer::start(ApiServerOptions {
        restricted: Some(RbacPolicy::sidecar()),
        ..Default::default()
    })
    .await
    .expect("api server");
    let client = server.client().await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": LEASE_NAMESPACE}})).unwrap(),
        )
        .await
        .unwrap();
    let classes: Api<VolumeSnapshotClass> = Api::all(client.clone());
    let class = serde_json::from_value(
        json!({"metadata": {"name": "mock-class"}, "driver": MOCK, "deletionPolicy": "Delete"}),
    )
    .unwrap();
    classes
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    let contents: Api<VolumeSnapshotContent> = Api::all(client);

    let dir = tempfile::tempdir().unwrap();
    let (sock_a, sock_b) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
    let mock_a = MockDriver::start(&sock_a, MockConfig::default())
        .await
        .expect("mock a");
    let mock_b = MockDriver::start(&sock_b, MockConfig::default())
        .await
        .expect("mock b");
    let kubeconfig = server.restricted_kubeconfig_path().unwrap().to_path_buf();
    let mut a = Replica::start(kubeconfig.clone(), sock_a, "replica-a");
    let mut b = Replica::start(kubeconfig, sock_b, "replica-b");

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

    until("a leader", Duration::from_secs(15), || {
        a.is_leading() || b.is_leading()
    })
    .await;
    create_content(&contents, "first").await;
    until("first ready", Duration::from_secs(15), || {
        ready(&server, "first")
    })
    .await;
    // Only the leader's driver saw the create; the follower reconciled nothing.
    let a_leads = a.is_leading();
    let (leader_mock, follower_mock) = if a_leads {
        (&mock_a, &mock_b)
    } else {
        (&mock_b, &mock_a)
    };
    assert_eq!(leader_mock.calls("CreateSnapshot"), 1);
    assert_eq!(follower_mock.calls("CreateSnapshot"), 0);
    assert_eq!(follower_mock.snapshots().len(), 0);

    // Crash the leader.
    let leader_calls_at_crash = leader_mock.calls("CreateSnapshot");
    let (dead, survivor) = if a_leads { (&mut a, &b) } else { (&mut b, &a) };
    dead.kill();
    let took = until("takeover", Duration::from_secs(15), || {
        survivor.is_leading()
    })
    .await;
    // Within the lease duration plus one jittered retry period to notice,
    // plus slack for a loaded machine.
    assert!(
        took <= LEASE + RETRY.mul_f64(2.2) + Duration::from_millis(1500),
        "takeover took {took:?}"
    );

    create_content(&contents, "second").await;
    until("second ready", Duration::from_secs(15), || {
        ready(&server, "second")
    })
    .await;
    assert_eq!(
        follower_mock.calls("CreateSnapshot"),
        1,
        "the new leader created the second snapshot"
    );
    assert_eq!(
        leader_mock.calls("CreateSnapshot"),
        leader_calls_at_crash,
        "the crashed replica did nothing more"
    );
    let lease = server
        .object("leases", LEASE_NAMESPACE, &lease_name(MOCK))
        .expect("lease");
    let new_holder = if a_leads { "replica-b" } else { "replica-a" };
    assert_eq!(lease["spec"]["holderIdentity"], new_holder);
    monitor.abort();
    assert_eq!(both.load(Ordering::SeqCst), 0, "two leaders at once");
    assert_eq!(
        server.forbidden_count(),
        0,
        "requests outside the RBAC rules"
    );
}
