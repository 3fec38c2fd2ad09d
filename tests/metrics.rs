//! The `/metrics` exposition of the sidecar binary, scraped while it runs
//! against the embedded API server and the mock CSI driver: every family
//! with its type, help text, label names and buckets matches the checked-in
//! expectation (`tests/data/metrics_families.txt`), so a dependency upgrade
//! or a refactoring cannot change what dashboards and alerts read without
//! this test failing. And `rest_client_requests_total` counts exactly the
//! requests the API server saw, by HTTP method, for one client and for the
//! whole sidecar.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use csi_snapshotter::k8s::client::{RateLimit, client_with_metrics, load_config};
use csi_snapshotter::k8s::types::VolumeSnapshotContent;
use csi_snapshotter::metrics::{NO_RESPONSE_CODE, Registry, RestClientMetrics};
use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions, RequestCount};
use csi_snapshotter::testing::mock_driver::{MockConfig, MockDriver};
use futures::StreamExt;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use serde_json::{Value, json};
use tokio::process::Child;

#[path = "support/http_get.rs"]
mod http_get;

use http_get::get;

const BIN: &str = env!("CARGO_BIN_EXE_csi-snapshotter");
const MOCK: &str = "mock.csi.k8s.io";
const CLASSES: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses";
const CONTENTS: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents";
/// The families the sidecar exposes, one block per family.
const EXPECTED: &str = include_str!("data/metrics_families.txt");
/// Generous for a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(60);

/// A sidecar process with its peers.
struct Sidecar {
    server: ApiServer,
    mock: MockDriver,
    http: SocketAddr,
    _child: Child,
    _dir: tempfile::TempDir,
}

/// Starts the binary with `--http-endpoint` and `extra` flags and waits
/// until `/readyz` answers 200.
async fn start(extra: &[&str]) -> Sidecar {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("csi.sock");
    let mock = MockDriver::start(&socket, MockConfig::default())
        .await
        .expect("mock driver");
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let child = tokio::process::Command::new(BIN)
        .arg(format!(
            "--kubeconfig={}",
            server.kubeconfig_path().display()
        ))
        .arg(format!("--csi-address={}", socket.display()))
        .arg(format!("--http-endpoint={http}"))
        .args(extra)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the sidecar");
    let deadline = tokio::time::Instant::now() + WAIT;
    while get(http, "/readyz").await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sidecar never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Sidecar {
        server,
        mock,
        http,
        _child: child,
        _dir: dir,
    }
}

/// A dynamic content named `content-{i}` of the class `mock-class`.
fn content(i: usize) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
        "metadata": {"name": format!("content-{i}")},
        "spec": {
            "deletionPolicy": "Delete",
            "driver": MOCK,
            "source": {"volumeHandle": format!("vol-{i}")},
            "volumeSnapshotClassName": "mock-class",
            "volumeSnapshotRef": {"name": format!("vs-{i}"), "namespace": "default",
                                  "uid": format!("7d8e9f00-aaaa-4bbb-8ccc-{i:012}")}
        }
    })
}

/// Creates the class and `n` dynamic contents in-process (the server does
/// not count these requests).
async fn create_contents(server: &ApiServer, n: usize) {
    let class = json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": "mock-class"}, "driver": MOCK, "deletionPolicy": "Delete"
    });
    let r = server
        .local_request("POST", CLASSES, None, Some(&class))
        .await
        .expect("create class");
    assert_eq!(r.code, 201, "{}", r.body);
    for i in 0..n {
        let r = server
            .local_request("POST", CONTENTS, None, Some(&content(i)))
            .await
            .expect("create content");
        assert_eq!(r.code, 201, "{}", r.body);
    }
}

/// One series line: name and `(label, value)` pairs.
fn parse_series(line: &str) -> (String, Vec<(String, String)>) {
    let Some((name, rest)) = line.split_once('{') else {
        let name = line.split_whitespace().next().unwrap_or_default();
        return (name.to_string(), Vec::new());
    };
    let mut labels = Vec::new();
    let mut chars = rest.chars();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim_start_matches(',').to_string();
        if key.is_empty() || key.starts_with('}') || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((key, value));
    }
    (name.to_string(), labels)
}

/// What the expectation pins down about one family.
#[derive(Debug, Default)]
struct Family {
    kinds: Vec<String>,
    helps: Vec<String>,
    labels: BTreeSet<String>,
    /// `le` values of the first series, in order.
    buckets: Vec<String>,
    first_series: Option<Vec<(String, String)>>,
}

/// The scrape reduced to the expectation's form: per family (sorted) its
/// type, help, label names (sorted, `le` excluded) and buckets; series that
/// belong to no declared family are listed as such.
fn summarize(text: &str) -> String {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut undeclared = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let f = families.entry(name.to_string()).or_default();
            f.helps.push(help.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let f = families.entry(name.to_string()).or_default();
            f.kinds.push(kind.to_string());
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, labels) = parse_series(line);
        let histogram_part = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| series.strip_suffix(s).map(|base| (base, *s)))
            .filter(|(base, _)| {
                families
                    .get(*base)
                    .is_some_and(|f| f.kinds.iter().any(|k| k == "histogram"))
            });
        let (family, part) = match histogram_part {
            Some((base, part)) => (base.to_string(), part),
            None => (series.clone(), ""),
        };
        let Some(f) = families.get_mut(&family) else {
            undeclared.insert(series);
            continue;
        };
        let (le, others): (Vec<_>, Vec<_>) = labels.into_iter().partition(|(k, _)| k == "le");
        f.labels.extend(others.iter().map(|(k, _)| k.clone()));
        if part == "_bucket" {
            let first = f.first_series.get_or_insert_with(|| others.clone());
            if *first == others {
                f.buckets.extend(le.into_iter().map(|(_, v)| v));
            }
        }
    }
    let mut out = String::new();
    for (name, f) in &families {
        out.push_str(&format!("{name} {}\n", f.kinds.join(" ")));
        for help in &f.helps {
            out.push_str(&format!("  help: {help}\n"));
        }
        let labels: Vec<&str> = f.labels.iter().map(String::as_str).collect();
        out.push_str(&format!("  labels: {}\n", labels.join(" ")));
        if !f.buckets.is_empty() {
            out.push_str(&format!("  buckets: {}\n", f.buckets.join(" ")));
        }
    }
    for series in undeclared {
        out.push_str(&format!("undeclared series {series}\n"));
    }
    out
}

#[tokio::test]
async fn every_family_keeps_its_type_help_labels_and_buckets() {
    let s = start(&["--leader-election", "--leader-election-namespace=default"]).await;
    create_contents(&s.server, 1).await;
    assert!(
        s.mock.wait_for_calls("CreateSnapshot", 1, WAIT).await,
        "the content was never snapshotted"
    );
    let (status, body) = get(s.http, "/metrics").await;
    assert_eq!(status, 200);
    let actual = summarize(&body);
    assert_eq!(
        actual, EXPECTED,
        "the exposition changed; scrape:\n{body}\nsummary:\n{actual}"
    );
}

#[test]
fn the_summary_reads_labels_buckets_and_strays() {
    let text = "# HELP h [ALPHA] H\n# TYPE h histogram\n\
                h_bucket{a=\"x,\\\"y\",le=\"0.1\"} 1\nh_bucket{a=\"x,\\\"y\",le=\"+Inf\"} 1\n\
                h_bucket{a=\"z\",le=\"0.1\"} 0\nh_bucket{a=\"z\",le=\"+Inf\"} 0\n\
                h_sum{a=\"z\"} 0\nh_count{a=\"z\"} 0\n\
                # HELP g G\n# TYPE g gauge\ng 1\ng_sum 2\n";
    assert_eq!(
        summarize(text),
        "g gauge\n  help: G\n  labels: \n\
         h histogram\n  help: [ALPHA] H\n  labels: a\n  buckets: 0.1 +Inf\n\
         undeclared series g_sum\n"
    );
    assert_eq!(
        parse_series("h_bucket{a=\"x,\\\"y\",le=\"0.1\"} 1"),
        (
            "h_bucket".to_string(),
            vec![
                ("a".to_string(), "x,\"y".to_string()),
                ("le".to_string(), "0.1".to_string())
            ]
        )
    );
}

/// Requests the server counted, by HTTP method (lists and watches are GETs).
fn served_by_method(counts: &[RequestCount]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for c in counts {
        let method = match c.verb.as_str() {
            "LIST" | "WATCH" => "GET",
            v => v,
        };
        *out.entry(method.to_string()).or_default() += c.count as f64;
    }
    out
}

/// `served_by_method` of the requests between two snapshots.
fn served_between(before: &[RequestCount], after: &[RequestCount]) -> BTreeMap<String, f64> {
    let mut out = served_by_method(after);
    for (method, n) in served_by_method(before) {
        *out.entry(method).or_default() -= n;
    }
    out.retain(|_, n| *n != 0.0);
    out
}

/// `rest_client_requests_total` of an exposition: (code, method) → count
/// for `host`.
fn counted(text: &str, host: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if !line.starts_with("rest_client_requests_total{") {
            continue;
        }
        let (series, labels) = parse_series(line);
        assert_eq!(series, "rest_client_requests_total");
        let label = |k: &str| {
            labels
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        if label("host") != host {
            continue;
        }
        let value: f64 = line
            .rsplit_once(' ')
            .and_then(|(_, v)| v.parse().ok())
            .expect("sample value");
        *out.entry((label("code"), label("method"))).or_default() += value;
    }
    out
}

/// [`counted`] summed over codes: method → count.
fn counted_by_method(text: &str, host: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for ((_, method), n) in counted(text, host) {
        *out.entry(method).or_default() += n;
    }
    out
}

/// A client of `config` counting its requests in a fresh registry:
/// (registry, counter, API of contents).
fn counted_client(
    config: kube::Config,
) -> (Registry, RestClientMetrics, Api<VolumeSnapshotContent>) {
    let registry = Registry::new();
    let metrics = RestClientMetrics::register(&registry).expect("fresh registry");
    let client = client_with_metrics(config, RateLimit::Unlimited, Some(&metrics)).expect("client");
    (registry, metrics, Api::all(client))
}

/// The kubeconfig of `server`.
async fn config_of(server: &ApiServer) -> kube::Config {
    load_config(Some(server.kubeconfig_path()))
        .await
        .expect("kubeconfig")
}

#[tokio::test]
async fn every_request_of_a_client_is_counted_with_its_code_method_and_host() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let (registry, _, api) = counted_client(config_of(&server).await);
    let host = server.addr().to_string();
    let obj = |i| serde_json::from_value::<VolumeSnapshotContent>(content(i)).expect("content");

    let before = server.request_counts();
    api.create(&PostParams::default(), &obj(1))
        .await
        .expect("create");
    api.create(&PostParams::default(), &obj(2))
        .await
        .expect("create");
    assert!(api.create(&PostParams::default(), &obj(1)).await.is_err());
    api.get("content-1").await.expect("get");
    assert!(api.get_opt("missing").await.expect("get").is_none());
    api.list(&ListParams::default()).await.expect("list");
    let status = json!({"status": {"readyToUse": true}});
    api.patch_status("content-1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("patch status");
    let mut events = api
        .watch(&WatchParams::default(), "0")
        .await
        .expect("watch")
        .boxed();
    assert!(events.next().await.is_some(), "a watch event");
    drop(events);
    api.delete("content-2", &DeleteParams::default())
        .await
        .expect("delete");
    let after = server.request_counts();

    let text = registry.encode_text();
    let by_code = counted(&text, &host);
    let want = |code: &str, method: &str| by_code.get(&(code.to_string(), method.to_string()));
    assert_eq!(want("201", "POST"), Some(&2.0), "{text}");
    assert_eq!(want("409", "POST"), Some(&1.0), "{text}");
    assert_eq!(want("404", "GET"), Some(&1.0), "{text}");
    assert_eq!(want("200", "GET"), Some(&3.0), "get, list, watch: {text}");
    assert_eq!(want("200", "PATCH"), Some(&1.0), "{text}");
    assert_eq!(want("200", "DELETE"), Some(&1.0), "{text}");
    assert_eq!(
        counted_by_method(&text, &host),
        served_between(&before, &after),
        "{text}"
    );
}

#[tokio::test]
async fn a_request_without_a_response_counts_as_error() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    // The listener is gone: the connection is refused.
    let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
    let (registry, metrics, api) = counted_client(config);
    assert!(api.get("x").await.is_err());
    assert_eq!(metrics.get(NO_RESPONSE_CODE, "GET", &addr.to_string()), 1.0);
    assert_eq!(
        counted(&registry.encode_text(), &addr.to_string()).len(),
        1,
        "only the failed request"
    );
}

#[tokio::test]
async fn a_request_given_up_before_its_answer_counts_as_error() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    server
        .faults()
        .delay_matching("GET", "volumesnapshotcontents", Duration::from_secs(30));
    let (registry, metrics, api) = counted_client(config_of(&server).await);
    let host = server.addr().to_string();
    let call = tokio::time::timeout(Duration::from_millis(300), api.get("x")).await;
    assert!(call.is_err(), "the delayed GET was given up");
    assert_eq!(metrics.get(NO_RESPONSE_CODE, "GET", &host), 1.0);
    assert_eq!(counted(&registry.encode_text(), &host).len(), 1);
}

#[tokio::test]
async fn the_sidecar_counts_every_api_request_the_server_serves() {
    let s = start(&[]).await;
    let host = s.server.addr().to_string();
    create_contents(&s.server, 5).await;
    assert!(
        s.mock.wait_for_calls("CreateSnapshot", 5, WAIT).await,
        "the contents were never snapshotted"
    );
    // The server counts a request when it arrives, the client when its
    // answer does; compare once both have settled.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = get(s.http, "/metrics").await;
        assert_eq!(status, 200);
        let counted = counted_by_method(&body, &host);
        let served = served_by_method(&s.server.request_counts());
        if counted == served {
            // Lists, watches and the status writes of five contents.
            assert!(counted.get("GET").is_some_and(|n| *n >= 2.0), "{counted:?}");
            assert!(
                counted.get("PATCH").is_some_and(|n| *n >= 5.0),
                "{counted:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "counted {counted:?}, served {served:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
