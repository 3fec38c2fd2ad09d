//! deploy/monitoring: the PrometheusRule and the Grafana dashboard load as
//! what they claim to be, and every metric and label their PromQL uses (read
//! by parsing each expression) is exported by a running sidecar's /metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use csi_snapshotter::k8s::types::VolumeSnapshotContent;
use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions, RbacPolicy};
use csi_snapshotter::testing::mock_driver::{MockConfig, MockDriver, param_faults};
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use promql_parser::parser::{self, Expr, LabelModifier};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_csi-snapshotter");
const MOCK: &str = "mock.csi.k8s.io";
/// Labels Prometheus itself attaches to every scraped series.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];
/// Namespace of the leader-election Role in deploy/kubernetes/rbac.yaml.
const LEASE_NAMESPACE: &str = "csi-snapshotter";

fn monitoring_file(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/monitoring")
            .join(name),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------
// Typed forms of the two files
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PrometheusRule {
    api_version: String,
    kind: String,
    metadata: RuleMeta,
    spec: RuleSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleMeta {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Dashboard {
    title: String,
    uid: String,
    schema_version: u32,
    templating: Templating,
    panels: Vec<Panel>,
}

#[derive(Debug, Deserialize)]
struct Templating {
    list: Vec<Variable>,
}

#[derive(Debug, Deserialize)]
struct Variable {
    name: String,
    #[serde(rename = "type")]
    type_: String,
    query: serde_json::Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Panel {
    id: u32,
    #[serde(rename = "type")]
    type_: String,
    title: String,
    grid_pos: GridPos,
    datasource: DataSource,
    field_config: FieldConfig,
    targets: Vec<Target>,
}

#[derive(Debug, Deserialize)]
struct GridPos {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

#[derive(Debug, Deserialize)]
struct DataSource {
    #[serde(rename = "type")]
    type_: String,
    uid: String,
}

#[derive(Debug, Deserialize)]
struct FieldConfig {
    defaults: FieldDefaults,
}

#[derive(Debug, Deserialize)]
struct FieldDefaults {
    unit: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Target {
    ref_id: String,
    expr: String,
    legend_format: String,
}

// ---------------------------------------------------------------------------
// PromQL: what an expression uses
// ---------------------------------------------------------------------------

/// The metric names an expression selects, with the label names of its
/// matchers, and the label names used by grouping and vector matching.
#[derive(Debug, Default)]
struct Uses {
    selectors: Vec<(String, BTreeSet<String>)>,
    grouping: BTreeSet<String>,
}

fn uses(expr: &str) -> Uses {
    let ast = parser::parse(expr).unwrap_or_else(|e| panic!("PromQL does not parse: {e}\n{expr}"));
    let mut u = Uses::default();
    walk(&ast, &mut u);
    assert!(!u.selectors.is_empty(), "no metric selected by {expr}");
    u
}

fn modifier_labels(m: &LabelModifier) -> impl Iterator<Item = String> + '_ {
    m.labels().labels.iter().cloned()
}

fn walk(e: &Expr, u: &mut Uses) {
    match e {
        Expr::Aggregate(a) => {
            if let Some(m) = &a.modifier {
                u.grouping.extend(modifier_labels(m));
            }
            walk(&a.expr, u);
            if let Some(p) = &a.param {
                walk(p, u);
            }
        }
        Expr::Unary(x) => walk(&x.expr, u),
        Expr::Binary(b) => {
            if let Some(m) = &b.modifier {
                if let Some(matching) = &m.matching {
                    u.grouping.extend(modifier_labels(matching));
                }
                if let Some(extra) = m.card.labels() {
                    u.grouping.extend(extra.labels.iter().cloned());
                }
            }
            walk(&b.lhs, u);
            walk(&b.rhs, u);
        }
        Expr::Paren(p) => walk(&p.expr, u),
        Expr::Subquery(s) => walk(&s.expr, u),
        Expr::VectorSelector(vs) => selector(vs, u),
        Expr::MatrixSelector(ms) => selector(&ms.vs, u),
        Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, u)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn selector(vs: &parser::VectorSelector, u: &mut Uses) {
    let name = vs.name.clone().expect("every selector names its metric");
    let labels = vs
        .matchers
        .matchers
        .iter()
        .chain(vs.matchers.or_matchers.iter().flatten())
        .map(|m| m.name.clone())
        .filter(|n| n != "__name__")
        .collect();
    u.selectors.push((name, labels));
}

/// Checks an expression against the exported series: every metric exists,
/// every matcher label exists on its metric, every grouping label on one of
/// the metrics the expression selects. Returns the labels the result can
/// carry (for legends and alert templates).
fn check_expr(
    expr: &str,
    exported: &BTreeMap<String, BTreeSet<String>>,
    what: &str,
) -> BTreeSet<String> {
    let u = uses(expr);
    let mut available: BTreeSet<String> = TARGET_LABELS.iter().map(|s| (*s).to_owned()).collect();
    for (metric, labels) in &u.selectors {
        let Some(have) = exported.get(metric) else {
            panic!(
                "{what}: metric {metric} is not exported; exported: {:?}",
                exported.keys()
            );
        };
        for l in labels {
            assert!(
                have.contains(l) || TARGET_LABELS.contains(&l.as_str()),
                "{what}: {metric} has no label {l} (it has {have:?})"
            );
        }
        available.extend(have.iter().cloned());
    }
    for l in &u.grouping {
        assert!(
            available.contains(l),
            "{what}: grouping label {l} is on none of the selected metrics"
        );
    }
    available
}

/// `{{label}}` (Grafana legends) and `{{ $labels.label }}` (alert templates).
fn template_labels(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let inner = after[..end].trim();
        if let Some(l) = inner.strip_prefix("$labels.") {
            out.push(l.trim().to_owned());
        } else if !inner.starts_with('$') && !inner.contains(' ') {
            out.push(inner.to_owned());
        }
        rest = &after[end + 2..];
    }
    out
}

// ---------------------------------------------------------------------------
// The exported series
// ---------------------------------------------------------------------------

/// Metric name → label names, from the Prometheus text format.
fn parse_exposition(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = line[..end].to_owned();
        let labels = out.entry(name).or_default();
        if line[end..].starts_with('{') {
            let mut in_quotes = false;
            let mut escaped = false;
            let mut current = String::new();
            for ch in line[end + 1..].chars() {
                match ch {
                    _ if escaped => escaped = false,
                    '\\' if in_quotes => escaped = true,
                    '"' => in_quotes = !in_quotes,
                    '=' if !in_quotes => {
                        labels.insert(current.trim_start_matches(',').trim().to_owned());
                        current.clear();
                    }
                    '}' if !in_quotes => break,
                    c if !in_quotes => current.push(c),
                    _ => {}
                }
            }
        }
    }
    out
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8(buf).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

async fn create(server: &ApiServer, group: &str, kind: &str, plural: &str, obj: serde_json::Value) {
    let (g, v) = group.split_once('/').unwrap_or(("", group));
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, kind), plural);
    let api: Api<DynamicObject> = Api::all_with(server.client().await, &ar);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(obj).unwrap(),
    )
    .await
    .unwrap();
}

/// Runs the sidecar with leader election and the HTTP endpoint, makes it
/// create one snapshot and fail another, and returns its /metrics families
/// once the CSI, queue, retry and leader families are all there.
async fn scrape_running_sidecar() -> BTreeMap<String, BTreeSet<String>> {
    let server = ApiServer::start(ApiServerOptions {
        restricted: Some(RbacPolicy::sidecar()),
        ..Default::default()
    })
    .await
    .unwrap();
    create(
        &server,
        "v1",
        "Namespace",
        "namespaces",
        json!({"metadata": {"name": LEASE_NAMESPACE}}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let _mock = MockDriver::start(&socket, MockConfig::default())
        .await
        .unwrap();
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let _child = tokio::process::Command::new(BIN)
        .arg(format!(
            "--kubeconfig={}",
            server.restricted_kubeconfig_path().unwrap().display()
        ))
        .arg(format!("--csi-address={}", socket.display()))
        .arg(format!("--http-endpoint={http}"))
        .arg("--leader-election")
        .arg(format!("--leader-election-namespace={LEASE_NAMESPACE}"))
        .arg("--retry-interval-start=50ms")
        .arg("--retry-interval-max=500ms")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("POD_NAMESPACE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let snap = "snapshot.storage.k8s.io/v1";
    for (class, params) in [
        ("ok", json!({})),
        ("reject", json!({param_faults::REJECT: "yes"})),
    ] {
        create(&server, snap, "VolumeSnapshotClass", "volumesnapshotclasses",
            json!({"metadata": {"name": class}, "driver": MOCK, "deletionPolicy": "Delete", "parameters": params})).await;
        create(&server, snap, "VolumeSnapshotContent", "volumesnapshotcontents", json!({
            "metadata": {"name": format!("c-{class}")},
            "spec": {"deletionPolicy": "Delete", "driver": MOCK,
                     "source": {"volumeHandle": format!("vol-{class}")},
                     "volumeSnapshotClassName": class,
                     "volumeSnapshotRef": {"name": format!("vs-{class}"), "namespace": "default",
                                           "uid": "0b1c2d3e-aaaa-4bbb-8ccc-dddddddddddd"}}
        })).await;
    }
    let contents: Api<VolumeSnapshotContent> = Api::all(server.client().await);
    let wanted = [
        "csi_sidecar_operations_seconds_bucket",
        "workqueue_retries_total",
        "leader_election_master_status",
        "process_start_time_seconds",
    ];
    for _ in 0..600 {
        if let Some(body) = http_get(http, "/metrics").await {
            let families = parse_exposition(&body);
            let ready = contents.get("c-ok").await.is_ok_and(|c| c.is_ready());
            if ready
                && wanted.iter().all(|w| families.contains_key(*w))
                && body.contains("InvalidArgument")
            {
                return families;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the sidecar's /metrics never showed {wanted:?} and a failed CreateSnapshot");
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn rules_file_is_a_prometheus_rule() {
    let rule: PrometheusRule =
        serde_norway::from_str(&monitoring_file("prometheus-rule.yaml")).unwrap();
    assert_eq!(rule.api_version, "monitoring.coreos.com/v1");
    assert_eq!(rule.kind, "PrometheusRule");
    assert_eq!(rule.metadata.name, "csi-snapshotter");
    assert!(rule.metadata.labels.keys().all(|k| !k.is_empty()));
    let alerts: Vec<&Rule> = rule.spec.groups.iter().flat_map(|g| &g.rules).collect();
    assert!(rule.spec.groups.iter().all(|g| !g.name.is_empty()));
    let names: BTreeSet<&str> = alerts.iter().map(|r| r.alert.as_str()).collect();
    assert_eq!(names.len(), alerts.len(), "alert names repeat");
    for r in &alerts {
        assert!(
            r.alert
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_uppercase())
                && r.alert.chars().all(|c| c.is_ascii_alphanumeric()),
            "alert {} is not CamelCase",
            r.alert
        );
        assert!(
            matches!(
                r.labels.get("severity").map(String::as_str),
                Some("warning" | "critical")
            ),
            "{}",
            r.alert
        );
        assert!(
            r.labels
                .keys()
                .all(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_')),
            "{}",
            r.alert
        );
        assert!(
            r.annotations.contains_key("summary") && r.annotations.contains_key("description"),
            "{}",
            r.alert
        );
        if let Some(f) = &r.for_ {
            assert!(
                csi_snapshotter::config::values::parse_go_duration(f).is_ok(),
                "{}: for {f}",
                r.alert
            );
        }
        uses(&r.expr);
    }
    let expr_of = |name: &str| &alerts.iter().find(|r| r.alert == name).unwrap().expr;
    for (alert, needle) in [
        (
            "CSISnapshotterCreateSnapshotErrors",
            "CreateSnapshot\", grpc_status_code!=\"OK\"}[10m]",
        ),
        (
            "CSISnapshotterDeleteSnapshotErrors",
            "DeleteSnapshot\", grpc_status_code!=\"OK\"}[10m]",
        ),
        ("CSISnapshotterSlowCalls", "histogram_quantile(0.99"),
        ("CSISnapshotterQueueGrowing", "deriv(workqueue_depth"),
        ("CSISnapshotterNoLeader", "leader_election_master_status"),
        (
            "CSISnapshotterRestarting",
            "changes(process_start_time_seconds",
        ),
    ] {
        assert!(expr_of(alert).contains(needle), "{alert}");
    }
}

#[test]
fn dashboard_is_grafana_json() {
    let d: Dashboard = serde_json::from_str(&monitoring_file("grafana-dashboard.json")).unwrap();
    assert!(!d.title.is_empty() && !d.uid.is_empty() && d.uid.len() <= 40);
    assert!(d.schema_version >= 36, "schemaVersion {}", d.schema_version);
    let vars: BTreeSet<&str> = d.templating.list.iter().map(|v| v.name.as_str()).collect();
    assert!(
        d.templating
            .list
            .iter()
            .any(|v| v.type_ == "datasource" && v.query == "prometheus")
    );
    let ids: BTreeSet<u32> = d.panels.iter().map(|p| p.id).collect();
    assert_eq!(ids.len(), d.panels.len(), "panel ids repeat");
    for p in &d.panels {
        assert_eq!(p.type_, "timeseries", "{}", p.title);
        assert!(
            p.grid_pos.x + p.grid_pos.w <= 24 && p.grid_pos.w > 0 && p.grid_pos.h > 0,
            "{}",
            p.title
        );
        assert_eq!(
            (p.datasource.type_.as_str(), p.datasource.uid.as_str()),
            ("prometheus", "${datasource}")
        );
        assert!(
            ["ops", "s", "short", "bytes"].contains(&p.field_config.defaults.unit.as_str()),
            "{}",
            p.title
        );
        assert!(!p.targets.is_empty(), "{}", p.title);
        let refs: BTreeSet<&str> = p.targets.iter().map(|t| t.ref_id.as_str()).collect();
        assert_eq!(refs.len(), p.targets.len(), "{}: refIds repeat", p.title);
        for t in &p.targets {
            for var in dashboard_variables(&t.expr) {
                assert!(
                    vars.contains(var.as_str()) || var == "__rate_interval",
                    "{}: unknown ${var}",
                    p.title
                );
            }
        }
    }
    let by_overlap = |a: &Panel, b: &Panel| {
        a.grid_pos.x < b.grid_pos.x + b.grid_pos.w
            && b.grid_pos.x < a.grid_pos.x + a.grid_pos.w
            && a.grid_pos.y < b.grid_pos.y + b.grid_pos.h
            && b.grid_pos.y < a.grid_pos.y + a.grid_pos.h
    };
    for (i, a) in d.panels.iter().enumerate() {
        for b in &d.panels[i + 1..] {
            assert!(
                !by_overlap(a, b),
                "panels {} and {} overlap",
                a.title,
                b.title
            );
        }
    }
    let titles: Vec<&str> = d.panels.iter().map(|p| p.title.as_str()).collect();
    for topic in [
        "calls per second",
        "errors",
        "p50 / p99",
        "Retries",
        "Queue depth",
        "Queue age",
        "Leader",
        "CPU",
        "Memory",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(topic)),
            "no panel about {topic}: {titles:?}"
        );
    }
}

/// `$name` and `${name}` references in a dashboard expression.
fn dashboard_variables(expr: &str) -> Vec<String> {
    expr.split('$')
        .skip(1)
        .map(|s| {
            s.trim_start_matches('{')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// Grafana's variables as a query would see them after interpolation.
fn interpolate(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$job", ".*")
        .replace("$driver", ".*")
}

#[tokio::test]
async fn every_metric_and_label_used_is_exported() {
    let exported = scrape_running_sidecar().await;
    for (name, labels) in &exported {
        for l in labels {
            assert!(
                l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}: label {l}"
            );
        }
    }
    let rule: PrometheusRule =
        serde_norway::from_str(&monitoring_file("prometheus-rule.yaml")).unwrap();
    for r in rule.spec.groups.iter().flat_map(|g| &g.rules) {
        let available = check_expr(&r.expr, &exported, &r.alert);
        for text in r.annotations.values() {
            for l in template_labels(text) {
                assert!(
                    available.contains(&l),
                    "{}: annotation uses label {l}",
                    r.alert
                );
            }
        }
    }
    let d: Dashboard = serde_json::from_str(&monitoring_file("grafana-dashboard.json")).unwrap();
    for p in &d.panels {
        for t in &p.targets {
            let available = check_expr(&interpolate(&t.expr), &exported, &p.title);
            for l in template_labels(&t.legend_format) {
                assert!(available.contains(&l), "{}: legend uses label {l}", p.title);
            }
        }
    }
    for v in d.templating.list.iter().filter(|v| v.type_ == "query") {
        let q = v.query["query"].as_str().unwrap();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap();
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let available = check_expr(&interpolate(selector), &exported, &v.name);
        assert!(
            available.contains(label.trim()),
            "variable {}: label {label}",
            v.name
        );
    }
}

#[test]
fn the_expression_walk_sees_selectors_grouping_and_matching() {
    let u = uses(r#"max by (a) (x{b="1"} * on (c) group_left (d) y{e=~"2"})"#);
    assert_eq!(
        u.selectors,
        vec![
            ("x".to_owned(), BTreeSet::from(["b".to_owned()])),
            ("y".to_owned(), BTreeSet::from(["e".to_owned()]))
        ]
    );
    assert_eq!(
        u.grouping,
        BTreeSet::from(["a".to_owned(), "c".to_owned(), "d".to_owned()])
    );
    let exported = BTreeMap::from([("x".to_owned(), BTreeSet::from(["b".to_owned()]))]);
    let missing = std::panic::catch_unwind(|| check_expr(r#"x{zzz="1"}"#, &exported, "t"));
    assert!(missing.is_err(), "an unknown label must be refused");
    let missing = std::panic::catch_unwind(|| check_expr("sum by (zzz) (x)", &exported, "t"));
    assert!(
        missing.is_err(),
        "an unknown grouping label must be refused"
    );
    let missing = std::panic::catch_unwind(|| check_expr("nope", &exported, "t"));
    assert!(missing.is_err(), "an unknown metric must be refused");
    assert_eq!(
        template_labels("{{ $labels.driver_name }} {{ $value | humanize }} {{method_name}}"),
        ["driver_name", "method_name"]
    );
}
