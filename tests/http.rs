//! The diagnostics HTTP server (spec E): metrics at the configured path with
//! every family and its labels, the leader-election health check only when
//! configured, readiness, and 404 elsewhere.

use std::time::Duration;

#[path = "support/http_get.rs"]
mod http_get;

use csi_snapshotter::controller::queue::{Backoff, WorkQueue};
use csi_snapshotter::controller::queue_metrics::WorkQueueMetrics;
use csi_snapshotter::http::{self, HttpConfig, Readiness};
use csi_snapshotter::leader::{LeaderConfig, LeaderElector, LeaderMetrics};
use csi_snapshotter::metrics::{CsiOperationMetrics, Registry};
use csi_snapshotter::process_metrics::ProcessMetrics;
use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions};
use http_get::get;
use tokio_util::sync::CancellationToken;

async fn serve(
    registry: Registry,
    config: HttpConfig,
) -> (std::net::SocketAddr, CancellationToken) {
    let listener = http::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(http::serve(listener, registry, config, stop.clone()));
    (addr, stop)
}

/// One sample: (series name, labels, value).
type Sample = (String, Vec<(String, String)>, f64);

/// Parses the exposition into (family → TYPE) and samples (name, labels, value).
fn parse(text: &str) -> (Vec<(String, String)>, Vec<Sample>) {
    let mut types = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (n, t) = rest.split_once(' ').unwrap();
            types.push((n.to_string(), t.to_string()));
        } else if !line.starts_with('#') && !line.is_empty() {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap_or(f64::NAN);
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => {
                    let l = l.trim_end_matches('}');
                    let labels = l
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once('=').unwrap();
                            (k.to_string(), v.trim_matches('"').to_string())
                        })
                        .collect();
                    (n.to_string(), labels)
                }
                None => (series.to_string(), Vec::new()),
            };
            samples.push((name, labels, value));
        }
    }
    (types, samples)
}

fn label_names(samples: &[Sample], name: &str) -> Vec<Vec<String>> {
    samples
        .iter()
        .filter(|s| s.0 == name)
        .map(|s| s.1.iter().map(|(k, _)| k.clone()).collect())
        .collect()
}

#[tokio::test]
async fn a_scrape_shows_every_family_with_its_labels() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let registry = Registry::new();
    let csi = CsiOperationMetrics::register(&registry).unwrap();
    csi.set_driver_name("mock.csi.k8s.io");
    csi.observe(
        "/csi.v1.Controller/CreateSnapshot",
        "OK",
        Duration::from_millis(30),
    );
    let queues = WorkQueueMetrics::register(&registry);
    let content: WorkQueue<String> = WorkQueue::new("csi-snapshotter-content", Backoff::default());
    let group: WorkQueue<String> =
        WorkQueue::new("csi-snapshotter-groupsnapshotcontent", Backoff::default());
    queues.watch(&content);
    queues.watch(&group);
    content.add("c".into());
    let leader_metrics = LeaderMetrics::register(&registry).unwrap();
    ProcessMetrics::register(&registry);
    let mut cfg = LeaderConfig::new("l", "default", "me");
    cfg.lease_duration = Duration::from_secs(15);
    let elector =
        LeaderElector::new(server.client().await, cfg, None, Some(leader_metrics)).unwrap();

    let config = HttpConfig {
        metrics_path: "/custom-metrics".into(),
        leader_health: Some(elector.health()),
        readiness: Readiness::new(),
    };
    let (addr, stop) = serve(registry, config).await;
    let (status, body) = get(addr, "/custom-metrics").await;
    assert_eq!(status, 200);
    let (types, samples) = parse(&body);
    let want = [
        ("csi_sidecar_operations_seconds", "histogram"),
        ("workqueue_depth", "gauge"),
        ("workqueue_adds_total", "counter"),
        ("workqueue_queue_duration_seconds", "histogram"),
        ("workqueue_work_duration_seconds", "histogram"),
        ("workqueue_unfinished_work_seconds", "gauge"),
        ("workqueue_longest_running_processor_seconds", "gauge"),
        ("workqueue_retries_total", "counter"),
        ("leader_election_master_status", "gauge"),
        ("leader_election_slowpath_total", "counter"),
        ("process_start_time_seconds", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
    ];
    for (family, kind) in want {
        let found: Vec<_> = types.iter().filter(|(n, _)| n == family).collect();
        assert_eq!(found.len(), 1, "{family} declared once");
        assert_eq!(found[0].1, kind, "{family} type");
    }
    assert_eq!(
        label_names(&samples, "csi_sidecar_operations_seconds_count"),
        vec![vec!["driver_name", "grpc_status_code", "method_name"]]
    );
    let depth: Vec<_> = samples
        .iter()
        .filter(|s| s.0 == "workqueue_depth")
        .collect();
    assert_eq!(depth.len(), 2);
    assert!(depth.iter().any(|s| s.1
        == vec![("name".to_string(), "csi-snapshotter-content".to_string())]
        && s.2 == 1.0));
    assert!(
        samples
            .iter()
            .any(|s| s.0 == "workqueue_work_duration_seconds_bucket"
                && s.1.iter().any(|(k, v)| k == "le" && v == "1e-08"))
    );
    assert_eq!(
        label_names(&samples, "leader_election_master_status"),
        vec![vec!["name"]]
    );
    assert!(
        samples
            .iter()
            .any(|s| s.0 == "leader_election_master_status" && s.1[0].1.is_empty() && s.2 == 0.0)
    );
    assert!(
        samples
            .iter()
            .any(|s| s.0 == "process_resident_memory_bytes" && s.2 > 0.0)
    );

    // Not leading: healthy.
    assert_eq!(
        get(addr, "/healthz/leader-election").await,
        (200, "ok".to_string())
    );
    assert_eq!(
        get(addr, "/metrics").await.0,
        404,
        "only the configured path"
    );
    assert_eq!(get(addr, "/healthz").await.0, 404);
    stop.cancel();
}

#[tokio::test]
async fn without_leader_election_the_health_path_is_not_served() {
    let config = HttpConfig {
        metrics_path: "/metrics".into(),
        leader_health: None,
        readiness: Readiness::new(),
    };
    let (addr, stop) = serve(Registry::new(), config).await;
    assert_eq!(get(addr, "/healthz/leader-election").await.0, 404);
    assert_eq!(get(addr, "/metrics").await.0, 200);
    stop.cancel();
}

#[tokio::test]
async fn readiness_needs_the_driver_and_every_cache() {
    let readiness = Readiness::new();
    let synced = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = synced.clone();
    readiness.add_check("volumesnapshotcontents cache synced", move || {
        s.load(std::sync::atomic::Ordering::SeqCst)
    });
    let config = HttpConfig {
        metrics_path: "/metrics".into(),
        leader_health: None,
        readiness: readiness.clone(),
    };
    let (addr, stop) = serve(Registry::new(), config).await;
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("CSI driver not ready")
            && body.contains("volumesnapshotcontents cache synced"),
        "{body}"
    );
    readiness.set_driver_ready(true);
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(
        !body.contains("CSI driver") && body.contains("cache synced"),
        "{body}"
    );
    synced.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(get(addr, "/readyz").await, (200, "ok".to_string()));
    stop.cancel();
}

#[tokio::test]
async fn go_style_listen_addresses_bind_every_interface() {
    let l = http::bind(":0").await.expect("bind :0");
    assert!(l.local_addr().unwrap().ip().is_unspecified());
}

#[tokio::test]
async fn required_conditions_hold_readiness_until_satisfied() {
    let readiness = Readiness::new();
    readiness.set_driver_ready(true);
    readiness.require(http::CACHES_SYNCED);
    let config = HttpConfig {
        metrics_path: "/metrics".into(),
        leader_health: None,
        readiness: readiness.clone(),
    };
    let (addr, stop) = serve(Registry::new(), config).await;
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains(http::CACHES_SYNCED), "{body}");
    readiness.satisfy("something else");
    assert_eq!(get(addr, "/readyz").await.0, 503);
    readiness.satisfy(http::CACHES_SYNCED);
    assert_eq!(get(addr, "/readyz").await, (200, "ok".to_string()));
    stop.cancel();
}

#[tokio::test]
async fn a_standby_is_ready_once_the_driver_is() {
    let readiness = Readiness::new();
    readiness.require(http::CACHES_SYNCED);
    readiness.set_standby(true);
    let config = HttpConfig {
        metrics_path: "/metrics".into(),
        leader_health: None,
        readiness: readiness.clone(),
    };
    let (addr, stop) = serve(Registry::new(), config).await;
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("CSI driver not ready") && !body.contains(http::CACHES_SYNCED),
        "{body}"
    );
    readiness.set_driver_ready(true);
    assert_eq!(get(addr, "/readyz").await, (200, "ok".to_string()));
    // Elected: now the controllers' caches must sync first.
    readiness.set_standby(false);
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains(http::CACHES_SYNCED), "{body}");
    readiness.satisfy(http::CACHES_SYNCED);
    assert_eq!(get(addr, "/readyz").await, (200, "ok".to_string()));
    stop.cancel();
}
