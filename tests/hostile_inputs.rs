//! Hostile-input acceptance test: at least 10,000 generated malformed or
//! hostile VolumeSnapshotContents and VolumeSnapshotClasses go through the
//! real reconcile path, and every one of them ends in a state that says what
//! is wrong with it.
//!
//! The path is the one the binary runs: the production content controller
//! ([`start`]: informers, intake filter, rate-limited queue, ten workers)
//! with unlimited client rate limits, against the embedded API server over
//! HTTP with the CRD schemas enforced (the upstream CRDs when
//! `../shared/crds` is present, the server's built-in schemas otherwise;
//! objects the schema refuses are answered 422 and counted as rejected at admission), and the mock CSI
//! driver over its Unix socket through the tonic client.
//!
//! Inputs come from a seeded generator (`HOSTILE_SEED`, printed; a fixed
//! default otherwise) and run in rounds, one after the other, against one
//! server and one controller:
//!
//! - input rounds: classes with unknown `csi.storage.k8s.io/` keys, list
//!   secret templates that are half given, empty, unresolvable, badly formed
//!   or name secrets that do not exist; contents whose deletion-secret
//!   annotations are empty or point nowhere, that name missing classes or no
//!   class, that are not bound, that belong to another driver (directly or
//!   through their class), pre-provisioned handles that are empty or unknown
//!   (up to 60 KiB); and schema-valid oddities that must still work: 10–60 KiB
//!   parameter values, empty and unusual keys, huge annotations, huge volume
//!   handles and UIDs, binary secret data, unknown fields, names of 253
//!   characters;
//! - driver rounds: valid contents against a driver that answers OK without
//!   a snapshot, with an empty id, without a creation time, with a negative
//!   size, with every gRPC error code (before and after cutting the
//!   snapshot), that fails DeleteSnapshot, whose delete secret vanished, and
//!   whose ListSnapshots entry has no snapshot.
//!
//! Every admitted object carries an expectation, checked at the end of its
//! round: an error status or a Warning event whose text names the problem
//! (the bad key, the missing secret or class, the gRPC code, the missing
//! snapshot in the reply), the being-created annotation present exactly when
//! a create may still be running on the driver, readiness for the oddities
//! that are valid, and no status, event, annotation or CSI call at all for
//! other drivers' objects. Rounds of inputs that are refused before any RPC
//! must not reach the driver at all. Every round ends by deleting its
//! objects as the snapshot-controller does; no backend snapshot may be left.
//!
//! Throughout, a panic anywhere in the process fails the test (panic hook),
//! and at the end a fresh valid content must still become ready quickly, the
//! queue must drain and no worker may be stuck on a key.

#[path = "support/crds.rs"]
mod crds;
#[path = "support/splitmix.rs"]
mod splitmix;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use csi_snapshotter::controller::content::{ContentController, Contents};
use csi_snapshotter::controller::pipeline::{ControllerOptions, Running};
use csi_snapshotter::controller::queue::Backoff;
use csi_snapshotter::csi::client::{ConnectOptions, CsiClient, CsiConnection};
use csi_snapshotter::csi::connection::LossHandler;
use csi_snapshotter::csi::error::go_code_name;
use csi_snapshotter::k8s::client::{RateLimit, build_client};
use csi_snapshotter::k8s::event::EventRecorder;
use csi_snapshotter::k8s::keys;
use csi_snapshotter::k8s::types::{VolumeSnapshotClass, VolumeSnapshotContent};
use csi_snapshotter::metrics::{CsiOperationMetrics, Registry};
use csi_snapshotter::reconcile::ReconcileConfig;
use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions};
use csi_snapshotter::testing::mock_driver::{FailWhen, Malformed, MockConfig, MockDriver};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::Api;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crds::crd_dir;
use splitmix::SplitMix64;

/// The driver name the mock announces.
const MOCK: &str = "mock.csi.k8s.io";
/// A driver this sidecar must leave alone.
const OTHER: &str = "other.csi.example.com";
/// Default seed when `HOSTILE_SEED` is not set.
const DEFAULT_SEED: u64 = 0x5eed_cafe_f00d_0001;
/// Objects generated per input round (contents and classes).
const INPUT_ROUND_OBJECTS: usize = 1000;
/// Input rounds.
const INPUT_ROUNDS: usize = 8;
/// Contents per driver round.
const DRIVER_ROUND_CONTENTS: usize = 70;
/// How long one round may take to settle before its unsettled objects are
/// reported as stuck.
const SETTLE: Duration = Duration::from_secs(90);
/// A valid class every driver round uses.
const PLAIN_CLASS: &str = "plain-class";
/// Characters safe inside an expected message (no quoting applies to them).
const SAFE: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-";

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts every panic in the process (the controller's tasks included),
/// then lets the default hook print it.
fn install_panic_counter() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
}

/// Seeded picks of variants and strings.
struct Rng(SplitMix64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0.below(n)
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    /// `n` characters from [`SAFE`], starting and ending alphanumeric.
    fn word(&mut self, n: usize) -> String {
        let mut s: Vec<u8> = (0..n).map(|_| *self.pick(SAFE)).collect();
        if let Some(first) = s.first_mut() {
            *first = b'a' + u8::try_from(self.below(26)).expect("fits");
        }
        if let Some(last) = s.last_mut() {
            *last = b'0' + u8::try_from(self.below(10)).expect("fits");
        }
        String::from_utf8(s).expect("ascii")
    }
    /// A [`Rng::word`] of `lo..=hi` characters.
    fn word_in(&mut self, lo: usize, hi: usize) -> String {
        let n = self.range(lo, hi);
        self.word(n)
    }
    /// A [`Rng::text`] of `lo..=hi` pieces.
    fn text_in(&mut self, lo: usize, hi: usize) -> String {
        let n = self.range(lo, hi);
        self.text(n)
    }
    /// Any text: printable ASCII, unicode, control characters, quotes.
    fn text(&mut self, n: usize) -> String {
        const POOL: &[&str] = &[
            "a", "Z", "0", " ", "\"", "\\", "\n", "\t", "$", "{", "}", "'", "/", "%", "é", "ключ",
            "雪", "🙂", "\u{0}", "\u{7f}", "=", ",", ":",
        ];
        (0..n).map(|_| *self.pick(POOL)).collect()
    }
}

/// A content name: usually short, sometimes 200–253 characters.
fn content_name(rng: &mut Rng, tag: &str, n: usize) -> String {
    let base = format!("h{tag}-{n}-{}", rng.word(6));
    if rng.chance(8) {
        let target = rng.range(200, 253);
        let pad = rng.word(target - base.len() - 1);
        format!("{base}.{pad}")
    } else {
        base
    }
}

/// How the being-created annotation must end up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// No create can be running: the annotation must be gone.
    Absent,
    /// A create may still run on the driver: the annotation must stay.
    Present,
}

/// The end state an admitted content must reach.
#[derive(Debug, Clone)]
enum Expect {
    /// An error status, or a Warning event with one of `reasons`, whose
    /// message contains every needle.
    Error {
        needles: Vec<String>,
        reasons: &'static [&'static str],
        marker: Marker,
    },
    /// Ready with a handle, no error, no marker.
    Ready(Tolerated),
    /// Never touched: no status, no event, no marker, no backend snapshot.
    Untouched,
    /// Deletion requested and refused: still there with the finalizer and
    /// a `SnapshotDeleteError` event with this message.
    DeleteBlocked(&'static str),
}

/// Extra checks for garbage the sidecar accepts by design.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tolerated {
    /// Nothing special.
    None,
    /// The driver gave no creation time: the reply time is recorded.
    CreationTimeIsNow,
    /// The driver gave a negative size: no restoreSize is recorded.
    NoRestoreSize,
}

const CREATE_REASONS: &[&str] = &[
    "SnapshotCreationFailed",
    "SnapshotContentCheckandUpdateFailed",
];
const CHECK_REASONS: &[&str] = &["SnapshotContentCheckandUpdateFailed"];

/// One generated content and what must become of it.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    category: &'static str,
    expect: Expect,
    /// The volume handle of a dynamic content (unique per content).
    volume: Option<String>,
    /// The annotations it was created with (for `Untouched`).
    annotations: Value,
}

fn error(needles: Vec<String>, marker: Marker) -> Expect {
    Expect::Error {
        needles,
        reasons: CREATE_REASONS,
        marker,
    }
}

/// Figures for the summary.
#[derive(Default)]
struct Tally {
    generated: BTreeMap<&'static str, usize>,
    admitted_contents: usize,
    admitted_classes: usize,
    admitted_secrets: usize,
    rejected: BTreeMap<&'static str, usize>,
    rejected_sample: BTreeMap<&'static str, String>,
    error_statuses: usize,
    events_by_reason: BTreeMap<String, usize>,
    ended: BTreeMap<&'static str, usize>,
    failures_without_event: usize,
}

/// The server, the mock and the controller under test.
struct World {
    server: ApiServer,
    contents: Api<DynamicObject>,
    classes: Api<DynamicObject>,
    secrets: Api<Secret>,
    events: Api<Event>,
    mock: MockDriver,
    running: Option<Running<Contents, CsiClient>>,
    start_ns: i64,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let server = ApiServer::start(ApiServerOptions {
        crd_schemas: crd_dir(),
        ..Default::default()
    })
    .await
    .expect("embedded API server starts");
    let client = server.client().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("csi.sock");
    let mock = MockDriver::start(
        &socket,
        MockConfig {
            driver_name: MOCK.into(),
            ..Default::default()
        },
    )
    .await
    .expect("mock driver");
    let opts = ConnectOptions::new(
        socket.to_str().expect("utf-8 path"),
        Duration::from_secs(10),
    )
    .expect("address")
    .with_loss_handler(LossHandler::new(|| {}))
    .with_metrics(CsiOperationMetrics::register(&Registry::new()).expect("fresh registry"));
    let conn = CsiConnection::connect(opts).await.expect("connect");
    let name = conn.plugin_info().await.expect("plugin info").name;
    let caps = conn.capabilities().await.expect("capabilities");
    let driver = Arc::new(conn.into_driver(name.clone(), caps));
    // The sidecar's own clients, as the binary builds them with
    // `--kube-api-qps=-1`: one per API group, no client-side limit.
    let unlimited = RateLimit::from_flags(-1.0, 0);
    let snapshot_client = build_client(Some(server.kubeconfig_path()), unlimited)
        .await
        .expect("snapshot client");
    let core_client = build_client(Some(server.kubeconfig_path()), unlimited)
        .await
        .expect("core client");
    let (events, _writer) =
        EventRecorder::start(core_client.clone(), format!("csi-snapshotter {name}"));
    let running = ContentController::start(
        driver,
        snapshot_client,
        core_client,
        events,
        ControllerOptions {
            config: ReconcileConfig::new(name),
            workers: 10,
            backoff: Backoff {
                start: Duration::from_millis(50),
                max: Duration::from_millis(500),
            },
            watch: Default::default(),
        },
        None,
        &CancellationToken::new(),
    )
    .await
    .expect("caches sync");
    let vsc = ApiResource::erase::<VolumeSnapshotContent>(&());
    let vsclass = ApiResource::erase::<VolumeSnapshotClass>(&());
    World {
        contents: Api::all_with(client.clone(), &vsc),
        classes: Api::all_with(client.clone(), &vsclass),
        secrets: Api::namespaced(client.clone(), "default"),
        events: Api::namespaced(client.clone(), "default"),
        server,
        mock,
        running: Some(running),
        start_ns: now_ns(),
        _dir: dir,
    }
}

fn now_ns() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos(),
    )
    .expect("fits")
}

/// A dynamic content of the mock driver, bound, with a unique volume.
fn dynamic(name: &str, volume: &str, class: Option<&str>) -> Value {
    let mut v = json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": name, "finalizers": [keys::FINALIZER_VSC]},
        "spec": {
            "deletionPolicy": "Delete",
            "driver": MOCK,
            "source": {"volumeHandle": volume},
            "volumeSnapshotRef": {"name": format!("vs-{name}"), "namespace": "default",
                                  "uid": format!("uid-{name}"),
                                  "kind": "VolumeSnapshot",
                                  "apiVersion": "snapshot.storage.k8s.io/v1"}
        }
    });
    if let Some(c) = class {
        v["spec"]["volumeSnapshotClassName"] = json!(c);
    }
    v
}

/// A pre-provisioned content of the mock driver for `handle`.
fn preprovisioned(name: &str, handle: &str, class: Option<&str>, policy: &str) -> Value {
    let mut v = json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": name, "finalizers": [keys::FINALIZER_VSC]},
        "spec": {
            "deletionPolicy": policy,
            "driver": MOCK,
            "source": {"snapshotHandle": handle},
            "volumeSnapshotRef": {"name": format!("vs-{name}"), "namespace": "default"}
        }
    });
    if let Some(c) = class {
        v["spec"]["volumeSnapshotClassName"] = json!(c);
    }
    v
}

fn class(name: &str, driver: &str, params: &BTreeMap<String, String>) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotClass",
        "metadata": {"name": name},
        "driver": driver,
        "deletionPolicy": "Delete",
        "parameters": params,
    })
}

/// What one round asks the server to hold.
#[derive(Default)]
struct Round {
    tag: String,
    classes: Vec<(&'static str, Value)>,
    secrets: Vec<(String, BTreeMap<String, Vec<u8>>)>,
    contents: Vec<(Case, Value)>,
    /// Objects the schema must refuse, by kind of defect.
    invalid: Vec<(&'static str, &'static str, Value)>,
}

impl Round {
    fn add(&mut self, tally: &mut Tally, case: Case, obj: Value) {
        *tally.generated.entry(case.category).or_default() += 1;
        self.contents.push((case, obj));
    }
    fn add_class(&mut self, tally: &mut Tally, category: &'static str, obj: Value) {
        *tally.generated.entry(category).or_default() += 1;
        self.classes.push((category, obj));
    }
    fn objects(&self) -> usize {
        self.classes.len() + self.contents.len()
    }
}

fn case(
    name: &str,
    category: &'static str,
    expect: Expect,
    volume: Option<&str>,
    obj: &Value,
) -> Case {
    Case {
        name: name.to_string(),
        category,
        expect,
        volume: volume.map(str::to_string),
        annotations: obj["metadata"]["annotations"].clone(),
    }
}

/// Key names under the reserved prefix that no sidecar knows.
fn unknown_reserved_key(rng: &mut Rng) -> String {
    let suffix = match rng.below(6) {
        0 => String::new(),
        1 => "Snapshotter-Secret-Name".to_string(),
        2 => format!("{}/{}", rng.word(5), rng.word(4)),
        3 => "snapshotter-secret-name-x".to_string(),
        4 => rng.word_in(100, 200),
        _ => rng.word_in(1, 12),
    };
    format!("{}{suffix}", keys::RESERVED_PARAM_PREFIX)
}

/// Parameters the sidecar passes through (or strips) without complaint.
fn odd_parameters(rng: &mut Rng, huge: bool) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    for _ in 0..rng.range(0, 40) {
        let n = rng.range(1, 20);
        let key = match rng.below(8) {
            0 => String::new(),
            1 => rng.text(n),
            2 => keys::ANN_DELETION_SECRET_NAME.to_string(),
            3 => format!("CSI.STORAGE.K8S.IO/{}", rng.word(n)),
            4 => "csi.storage.k8s.io".to_string(),
            5 => format!("csi.storage.k8s.iox/{}", rng.word(n)),
            _ => rng.word(n),
        };
        let value = if rng.chance(20) {
            String::new()
        } else {
            rng.text_in(1, 64)
        };
        p.insert(key, value);
    }
    if huge {
        for _ in 0..rng.range(1, 2) {
            let size = rng.range(10 * 1024, 60 * 1024);
            p.insert(rng.word(8), rng.word(size));
        }
    }
    // Reserved create/delete secret keys are the snapshot-controller's:
    // the sidecar strips them whatever they say.
    if rng.chance(50) {
        p.insert(
            keys::PARAM_SNAPSHOTTER_SECRET_NAME.into(),
            (*rng.pick(&[
                "${volumesnapshot.annotations['x']}",
                "",
                "bad name",
                "${nope}",
            ]))
            .into(),
        );
    }
    if rng.chance(30) {
        p.insert(keys::PARAM_SNAPSHOTTER_SECRET_NAMESPACE.into(), rng.text(5));
    }
    p
}

/// List-secret parameters that cannot resolve, with the text that must
/// name the problem.
fn bad_list_secret(rng: &mut Rng, content: &str) -> (BTreeMap<String, String>, Vec<String>) {
    let name_key = keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAME.to_string();
    let ns_key = keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAMESPACE.to_string();
    let mut p = BTreeMap::new();
    let needles = match rng.below(9) {
        0 => {
            p.insert(name_key, rng.word(8));
            vec!["both must be specified".into()]
        }
        1 => {
            p.insert(ns_key, "default".into());
            vec!["both must be specified".into()]
        }
        2 => {
            p.insert(name_key.clone(), String::new());
            p.insert(ns_key, "default".into());
            vec![format!("{name_key} is empty")]
        }
        3 => {
            p.insert(name_key, rng.word(6));
            p.insert(ns_key.clone(), String::new());
            vec![format!("{ns_key} is empty")]
        }
        4 => {
            let t = (*rng.pick(&[
                "${volumesnapshot.annotations['x']}",
                "${volumesnapshot.name}",
                "pre-${volumesnapshot.namespace}",
                "${pvc.name}",
            ]))
            .to_string();
            p.insert(name_key, t);
            p.insert(ns_key, "default".into());
            vec!["contains invalid tokens".into()]
        }
        5 => {
            p.insert(name_key, "s".into());
            p.insert(ns_key, "${volumesnapshot.namespace}".into());
            vec!["contains invalid tokens".into()]
        }
        6 => {
            let bad = match rng.below(3) {
                0 => format!("bad name {}", rng.word(4)),
                1 => rng.word_in(254, 320),
                _ => format!("UPPER-{}", rng.word(4)),
            };
            p.insert(name_key, bad.clone());
            p.insert(ns_key, "default".into());
            vec![bad, "not a valid secret name".into()]
        }
        7 => {
            let bad = match rng.below(2) {
                0 => rng.word_in(64, 90),
                _ => format!("Bad-NS-{}", rng.word(3)),
            };
            p.insert(name_key, rng.word(6));
            p.insert(ns_key, bad.clone());
            vec![bad, "not a valid namespace name".into()]
        }
        _ => {
            // Resolves fine, to a secret that does not exist.
            p.insert(name_key, "${volumesnapshotcontent.name}".into());
            p.insert(ns_key, "default".into());
            vec![format!("failed to get secret default/{content}")]
        }
    };
    (p, needles)
}

/// Contents and classes refused before any RPC, plus other drivers' objects.
fn no_rpc_round(rng: &mut Rng, tally: &mut Tally, r: usize) -> Round {
    let mut round = Round {
        tag: format!("n{r}"),
        ..Default::default()
    };
    let plain = format!("plain-{}", round.tag);
    round.add_class(tally, "class: valid", class(&plain, MOCK, &BTreeMap::new()));
    let foreign = format!("foreign-{}", round.tag);
    round.add_class(
        tally,
        "class: another driver's",
        class(&foreign, OTHER, &odd_parameters(rng, false)),
    );
    let mut i = 0;
    while round.objects() < INPUT_ROUND_OBJECTS {
        i += 1;
        let name = content_name(rng, &round.tag, i);
        let volume = format!("vol-{name}");
        match rng.below(10) {
            0 => {
                let key = unknown_reserved_key(rng);
                let cname = format!("unk-{}-{i}", round.tag);
                let mut params = odd_parameters(rng, false);
                params.retain(|k, _| !k.starts_with(keys::RESERVED_PARAM_PREFIX));
                params.insert(key.clone(), rng.text_in(0, 30));
                round.add_class(
                    tally,
                    "class: unknown reserved key",
                    class(&cname, MOCK, &params),
                );
                for j in 0..rng.range(1, 3) {
                    let name = content_name(rng, &format!("{}k{j}", round.tag), i);
                    let volume = format!("vol-{name}");
                    let obj = dynamic(&name, &volume, Some(&cname));
                    let expect = error(
                        vec![format!("found unknown parameter key \"{key}\"")],
                        Marker::Absent,
                    );
                    let c = case(
                        &name,
                        "content: class has unknown reserved key",
                        expect,
                        Some(&volume),
                        &obj,
                    );
                    round.add(tally, c, obj);
                }
            }
            1 => {
                let missing = match rng.below(4) {
                    0 => String::new(),
                    1 => rng.word_in(200, 253),
                    2 => format!("Not A Class {}", rng.word(3)),
                    _ => format!("missing-{}", rng.word(6)),
                };
                let obj = dynamic(&name, &volume, Some(&missing));
                let mut needles = vec!["not found".to_string()];
                if !missing.is_empty() {
                    needles.push(missing);
                }
                let c = case(
                    &name,
                    "content: class does not exist",
                    error(needles, Marker::Absent),
                    Some(&volume),
                    &obj,
                );
                round.add(tally, c, obj);
            }
            2 => {
                let obj = dynamic(&name, &volume, None);
                let expect = error(
                    vec!["no VolumeSnapshotClass is named".into()],
                    Marker::Absent,
                );
                let c = case(&name, "content: no class", expect, Some(&volume), &obj);
                round.add(tally, c, obj);
            }
            3 => {
                let mut obj = dynamic(&name, &volume, Some(&plain));
                let (sn, sns) = match rng.below(3) {
                    0 => (String::new(), String::new()),
                    1 => (String::new(), "default".to_string()),
                    _ => (rng.word(8), String::new()),
                };
                obj["metadata"]["annotations"] = json!({
                    keys::ANN_DELETION_SECRET_NAME: sn,
                    keys::ANN_DELETION_SECRET_NAMESPACE: sns,
                });
                let expect = error(
                    vec!["secret name or namespace not specified".into()],
                    Marker::Absent,
                );
                let c = case(
                    &name,
                    "content: empty deletion-secret annotation",
                    expect,
                    Some(&volume),
                    &obj,
                );
                round.add(tally, c, obj);
            }
            4 => {
                let mut obj = dynamic(&name, &volume, Some(&plain));
                let sn = match rng.below(3) {
                    0 => format!("bad name {}", rng.word(3)),
                    1 => rng.word_in(300, 400),
                    _ => format!("gone-{}", rng.word(6)),
                };
                let sns = (*rng.pick(&["default", "no-such-namespace", "Bad NS"])).to_string();
                obj["metadata"]["annotations"] = json!({
                    keys::ANN_DELETION_SECRET_NAME: sn,
                    keys::ANN_DELETION_SECRET_NAMESPACE: sns,
                });
                let expect = error(
                    vec![format!("failed to get secret {sns}/{sn}")],
                    Marker::Absent,
                );
                let c = case(
                    &name,
                    "content: deletion secret does not exist",
                    expect,
                    Some(&volume),
                    &obj,
                );
                round.add(tally, c, obj);
            }
            5 => {
                let mut obj = dynamic(&name, &volume, Some(&plain));
                if rng.chance(50) {
                    obj["spec"]["volumeSnapshotRef"]
                        .as_object_mut()
                        .expect("object")
                        .remove("uid");
                } else {
                    obj["spec"]["volumeSnapshotRef"]["uid"] = json!("");
                }
                let expect = error(vec!["not bound to a snapshot".into()], Marker::Absent);
                let c = case(
                    &name,
                    "content: dynamic without UID",
                    expect,
                    Some(&volume),
                    &obj,
                );
                round.add(tally, c, obj);
            }
            6 => {
                let mut obj = if rng.chance(50) {
                    dynamic(&name, &volume, Some(&foreign))
                } else {
                    dynamic(&name, &volume, Some(&plain))
                };
                let category = if obj["spec"]["volumeSnapshotClassName"] == json!(foreign) {
                    "content: class of another driver"
                } else {
                    obj["spec"]["driver"] =
                        json!(*rng.pick(&[OTHER, "", "Mock.CSI.k8s.io", "mock.csi.k8s.io "]));
                    "content: another driver"
                };
                if rng.chance(30) {
                    obj["metadata"]["annotations"] = json!({keys::ANN_DELETION_SECRET_NAME: "", keys::ANN_DELETION_SECRET_NAMESPACE: ""});
                }
                let c = case(&name, category, Expect::Untouched, Some(&volume), &obj);
                round.add(tally, c, obj);
            }
            7 => {
                let cname = format!("list-{}-{i}", round.tag);
                let (params, needles) = bad_list_secret(rng, &name);
                round.add_class(
                    tally,
                    "class: unusable list secret",
                    class(&cname, MOCK, &params),
                );
                let policy = *rng.pick(&["Delete", "Retain"]);
                let obj = preprovisioned(&name, &rng.word(12), Some(&cname), policy);
                let expect = Expect::Error {
                    needles,
                    reasons: CHECK_REASONS,
                    marker: Marker::Absent,
                };
                let c = case(
                    &name,
                    "content: pre-provisioned, unusable list secret",
                    expect,
                    None,
                    &obj,
                );
                round.add(tally, c, obj);
            }
            8 => {
                let missing = format!("gone-{}", rng.word(5));
                let obj = preprovisioned(&name, &rng.word(12), Some(&missing), "Retain");
                let expect = Expect::Error {
                    needles: vec![format!("failed to get snapshot class {missing}")],
                    reasons: CHECK_REASONS,
                    marker: Marker::Absent,
                };
                let c = case(
                    &name,
                    "content: pre-provisioned, class does not exist",
                    expect,
                    None,
                    &obj,
                );
                round.add(tally, c, obj);
            }
            _ => {
                let obj = preprovisioned(&name, "", None, "Retain");
                let expect = Expect::Error {
                    needles: vec!["snapshot handle".into(), "is missing".into()],
                    reasons: CHECK_REASONS,
                    marker: Marker::Absent,
                };
                let c = case(
                    &name,
                    "content: pre-provisioned, empty handle",
                    expect,
                    None,
                    &obj,
                );
                round.add(tally, c, obj);
            }
        }
    }
    add_invalid(rng, &mut round);
    round
}

/// Oddities that are valid and must work, plus inputs the driver refuses.
fn driver_input_round(rng: &mut Rng, tally: &mut Tally, r: usize) -> Round {
    let mut round = Round {
        tag: format!("d{r}"),
        ..Default::default()
    };
    let secret = format!("odd-secret-{}", round.tag);
    let mut data = BTreeMap::new();
    data.insert("empty".to_string(), Vec::new());
    data.insert("binary".to_string(), vec![0xff, 0x00, 0xfe, 0x80]);
    data.insert(rng.word(30), rng.word(4096).into_bytes());
    round.secrets.push((secret.clone(), data));
    let mut odd_classes = Vec::new();
    for k in 0..12 {
        let cname = format!("odd-{}-{k}", round.tag);
        let huge = k < 3;
        let category = if huge {
            "class: 10-60 KiB parameter values"
        } else {
            "class: odd but valid parameters"
        };
        round.add_class(
            tally,
            category,
            class(&cname, MOCK, &odd_parameters(rng, huge)),
        );
        odd_classes.push(cname);
    }
    let mut i = 0;
    while round.objects() < INPUT_ROUND_OBJECTS {
        i += 1;
        let name = content_name(rng, &round.tag, i);
        let volume = format!("vol-{name}");
        let cname = rng.pick(&odd_classes).clone();
        match rng.below(8) {
            0 => {
                let obj = dynamic(&name, &volume, Some(&cname));
                let c = case(
                    &name,
                    "content: odd class parameters",
                    Expect::Ready(Tolerated::None),
                    Some(&volume),
                    &obj,
                );
                round.add(tally, c, obj);
            }
            1 => {
                let mut obj = dynamic(&name, &volume, Some(&cname));
                let mut ann = serde_json::Map::new();
                for _ in 0..rng.range(1, 30) {
                    ann.insert(
                        format!("example.com/{}", rng.word_in(1, 40)),
                        json!(rng.text_in(0, 64)),
                    );
                }
                if rng.chance(25) {
                    ann.insert(
                        "example.com/huge".into(),
                        json!(rng.word_in(10 * 1024, 60 * 1024)),
                    );
                }
                if rng.chance(50) {
                    ann.insert(keys::ANN_DELETION_SECRET_NAME.into(), json!(secret));
                    ann.insert(keys::ANN_DELETION_SECRET_NAMESPACE.into(), json!("default"));
                } else if rng.chance(50) {
                    // Only one half of the pair: no secret, as upstream.
                    ann.insert(keys::ANN_DELETION_SECRET_NAME.into(), json!(rng.text(8)));
                }
                obj["metadata"]["annotations"] = Value::Object(ann);
                let mut labels = serde_json::Map::new();
                for _ in 0..rng.range(0, 20) {
                    labels.insert(
                        format!("l.example.com/{}", rng.word(10)),
                        json!(rng.word(20)),
                    );
                }
                obj["metadata"]["labels"] = Value::Object(labels);
                let c = case(
                    &name,
                    "content: huge annotations, odd secret data",
                    Expect::Ready(Tolerated::None),
                    Some(&volume),
                    &obj,
                );
                round.add(tally, c, obj);
            }
            2 => {
                let size = if rng.chance(25) {
                    rng.range(10 * 1024, 60 * 1024)
                } else {
                    rng.range(100, 2000)
                };
                let volume = format!("vol-{name}-{}", rng.word(size));
                let obj = dynamic(&name, &volume, Some(&cname));
                let c = case(
                    &name,
                    "content: long (up to 60 KiB) volume handle",
                    Expect::Ready(Tolerated::None),
                    Some(&volume),
                    &obj,
                );
                round.add(tally, c, obj);
            }
            3 => {
                let mut obj = dynamic(&name, &volume, Some(&cname));
                let uid = match rng.below(3) {
                    0 => rng.word_in(300, 2000),
                    1 => format!("{name} {}", rng.text(20)),
                    _ => format!("{name}-ключ-雪"),
                };
                obj["spec"]["volumeSnapshotRef"]["uid"] = json!(uid);
                let c = case(
                    &name,
                    "content: odd VolumeSnapshot UID",
                    Expect::Ready(Tolerated::None),
                    Some(&volume),
                    &obj,
                );
                round.add(tally, c, obj);
            }
            4 => {
                let mut obj = dynamic(&name, &volume, Some(&cname));
                obj["spec"]["sourceVolumeMode"] =
                    json!(*rng.pick(&["Block", "Filesystem", "Weird", ""]));
                obj["spec"]["unknownField"] = json!({"nested": [1, "two", null]});
                obj["metadata"]["finalizers"] =
                    json!([keys::FINALIZER_VSC, "example.com/other-finalizer"]);
                obj["spec"]["volumeSnapshotRef"]["fieldPath"] = json!(rng.text(30));
                obj["spec"]["volumeSnapshotRef"]["resourceVersion"] = json!("not-a-number");
                obj["extra"] = json!(rng.word(10));
                let c = case(
                    &name,
                    "content: unknown fields and odd references",
                    Expect::Ready(Tolerated::None),
                    Some(&volume),
                    &obj,
                );
                round.add(tally, c, obj);
            }
            5 => {
                let obj = dynamic(&name, "", Some(&cname));
                let expect = error(
                    vec![
                        "source_volume_id is required".into(),
                        "InvalidArgument".into(),
                    ],
                    Marker::Absent,
                );
                let c = case(&name, "content: empty volume handle", expect, None, &obj);
                round.add(tally, c, obj);
            }
            _ => {
                let handle = if rng.chance(15) {
                    format!("h-{}", rng.word_in(10 * 1024, 60 * 1024))
                } else {
                    format!("h-{}", rng.word_in(1, 300))
                };
                let policy = *rng.pick(&["Delete", "Retain"]);
                let class = rng.chance(50).then_some(cname.as_str());
                let obj = preprovisioned(&name, &handle, class, policy);
                let needle: String = format!(
                    "no snapshot found for snapshotID {}",
                    &handle[..handle.len().min(200)]
                );
                let expect = Expect::Error {
                    needles: vec![needle],
                    reasons: CHECK_REASONS,
                    marker: Marker::Absent,
                };
                let c = case(
                    &name,
                    "content: pre-provisioned, unknown (up to 60 KiB) handle",
                    expect,
                    None,
                    &obj,
                );
                round.add(tally, c, obj);
            }
        }
    }
    add_invalid(rng, &mut round);
    round
}

/// Objects the CRD schema (or ObjectMeta validation) must refuse.
fn add_invalid(rng: &mut Rng, round: &mut Round) {
    for k in 0..rng.range(30, 60) {
        let name = format!("bad-{}-{k}", round.tag);
        let mut obj = dynamic(&name, "vol-x", Some(PLAIN_CLASS));
        let (defect, kind) = match rng.below(9) {
            0 => {
                obj["spec"]["deletionPolicy"] = json!("Sometimes");
                ("content: deletionPolicy not in the enum", "content")
            }
            1 => {
                obj["spec"]["source"]["snapshotHandle"] = json!("h");
                ("content: both volumeHandle and snapshotHandle", "content")
            }
            2 => {
                obj["spec"]["source"] = json!({});
                ("content: no source handle", "content")
            }
            3 => {
                obj["spec"]["volumeSnapshotRef"]
                    .as_object_mut()
                    .expect("object")
                    .remove("namespace");
                ("content: volumeSnapshotRef without namespace", "content")
            }
            4 => {
                obj["spec"]["source"]["volumeHandle"] = json!(42);
                ("content: volumeHandle is a number", "content")
            }
            5 => {
                obj["metadata"]["name"] = json!(format!("Bad_Name {k}"));
                ("content: invalid name", "content")
            }
            6 => {
                obj["spec"]
                    .as_object_mut()
                    .expect("object")
                    .remove("driver");
                ("content: no driver", "content")
            }
            7 => {
                obj = json!({
                    "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
                    "metadata": {"name": name}, "deletionPolicy": "Delete",
                    "parameters": {"a": 1, "b": true}
                });
                ("class: parameter values not strings", "class")
            }
            _ => {
                obj = json!({
                    "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
                    "metadata": {"name": name}, "deletionPolicy": "Delete"
                });
                ("class: no driver", "class")
            }
        };
        round.invalid.push((defect, kind, obj));
    }
}

/// Creates `obj`; `Ok(false)` when the server refused it with 422.
async fn create(api: &Api<DynamicObject>, obj: &Value) -> Result<bool, String> {
    Ok(admit(api, obj).await?.is_ok())
}

/// Creates `obj`: `Ok(Ok(()))` when admitted, `Ok(Err(message))` when the
/// server refused it with 422; any other failure is an error.
async fn admit(api: &Api<DynamicObject>, obj: &Value) -> Result<Result<(), String>, String> {
    let dynobj: DynamicObject = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
    match api.create(&PostParams::default(), &dynobj).await {
        Ok(_) => Ok(Ok(())),
        Err(kube::Error::Api(ae)) if ae.code == 422 => Ok(Err(ae.message.clone())),
        Err(e) => Err(format!("unexpected error: {e}")),
    }
}

/// The events of the default namespace by involved object name.
async fn events_by_object(w: &World) -> HashMap<String, Vec<(String, String, String)>> {
    let mut out: HashMap<String, Vec<(String, String, String)>> = HashMap::new();
    for e in w
        .events
        .list(&ListParams::default())
        .await
        .expect("list events")
    {
        out.entry(e.involved_object.name.clone().unwrap_or_default())
            .or_default()
            .push((
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            ));
    }
    out
}

async fn contents_by_name(w: &World) -> HashMap<String, Value> {
    w.contents
        .list(&ListParams::default())
        .await
        .expect("list contents")
        .into_iter()
        .map(|o| {
            let name = o.metadata.name.clone().unwrap_or_default();
            (name, serde_json::to_value(o).expect("json"))
        })
        .collect()
}

fn has_marker(obj: &Value) -> bool {
    obj.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key(keys::ANN_VS_BEING_CREATED))
}

fn contains_all(text: &str, needles: &[String]) -> bool {
    !text.is_empty() && needles.iter().all(|n| text.contains(n.as_str()))
}

/// Whether `case` reached its end state; the reason when not.
fn check(
    w: &World,
    case: &Case,
    obj: Option<&Value>,
    events: &[(String, String, String)],
    backend_volumes: &HashSet<String>,
) -> Result<(), String> {
    let obj = obj.ok_or("the content is gone")?;
    let status_error = obj
        .pointer("/status/error/message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match &case.expect {
        Expect::Error {
            needles,
            reasons,
            marker,
        } => {
            let by_status = contains_all(status_error, needles);
            let by_event = events.iter().any(|(t, r, m)| {
                t == "Warning" && reasons.contains(&r.as_str()) && contains_all(m, needles)
            });
            if !by_status && !by_event {
                return Err(format!(
                    "no error status or event says {needles:?}; status.error: {:?}, events: {:?}",
                    truncate(status_error),
                    events
                        .iter()
                        .map(|(_, r, m)| (r.clone(), truncate(m)))
                        .collect::<Vec<_>>()
                ));
            }
            if let Some((_, r, _)) = events
                .iter()
                .find(|(t, r, _)| t != "Warning" || !reasons.contains(&r.as_str()))
            {
                return Err(format!("unexpected event reason {r}"));
            }
            match (marker, has_marker(obj)) {
                (Marker::Absent, true) => return Err("being-created annotation left".into()),
                (Marker::Present, false) => {
                    return Err("being-created annotation missing while a create may run".into());
                }
                _ => {}
            }
            if *marker == Marker::Absent && obj.pointer("/status/snapshotHandle").is_some() {
                return Err("a snapshot handle was recorded".into());
            }
        }
        Expect::Ready(tolerated) => {
            if obj.pointer("/status/readyToUse") != Some(&json!(true)) {
                return Err(format!(
                    "not ready; status.error: {:?}",
                    truncate(status_error)
                ));
            }
            if obj
                .pointer("/status/snapshotHandle")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err("ready without a handle".into());
            }
            if has_marker(obj) {
                return Err("being-created annotation left on a ready content".into());
            }
            if obj.pointer("/status/error").is_some() {
                return Err("error left on a ready content".into());
            }
            match tolerated {
                Tolerated::None => {}
                Tolerated::CreationTimeIsNow => {
                    let t = obj.pointer("/status/creationTime").and_then(Value::as_i64);
                    if t.is_none_or(|t| t < w.start_ns) {
                        return Err(format!("creationTime {t:?} is not the reply time"));
                    }
                }
                Tolerated::NoRestoreSize => {
                    if obj.pointer("/status/restoreSize").is_some() {
                        return Err("a restoreSize was recorded from a negative size".into());
                    }
                }
            }
        }
        Expect::Untouched => {
            if obj.get("status").is_some_and(|s| !s.is_null()) {
                return Err(format!("status written: {}", obj["status"]));
            }
            if !events.is_empty() {
                return Err(format!("events recorded: {events:?}"));
            }
            if obj["metadata"]["annotations"] != case.annotations {
                return Err("annotations changed".into());
            }
            if obj.pointer("/metadata/finalizers/0").is_none() {
                return Err("finalizer removed".into());
            }
            if case
                .volume
                .as_ref()
                .is_some_and(|v| backend_volumes.contains(v))
            {
                return Err("the driver cut a snapshot for it".into());
            }
        }
        Expect::DeleteBlocked(message) => {
            if obj.pointer("/metadata/deletionTimestamp").is_none() {
                return Err("not being deleted".into());
            }
            if obj.pointer("/metadata/finalizers/0").is_none() {
                return Err("finalizer removed although the delete failed".into());
            }
            if !events
                .iter()
                .any(|(t, r, m)| t == "Warning" && r == "SnapshotDeleteError" && m == message)
            {
                return Err(format!(
                    "no SnapshotDeleteError event {message:?}; events: {events:?}"
                ));
            }
        }
    }
    if let (
        Expect::Error {
            marker: Marker::Absent,
            ..
        },
        Some(v),
    ) = (&case.expect, &case.volume)
        && backend_volumes.contains(v)
    {
        return Err("a backend snapshot exists for a content that failed".into());
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    if s.len() <= 300 {
        s.to_string()
    } else {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &s[..end], s.len())
    }
}

/// Creates the round's objects; returns the cases that were admitted.
async fn submit(w: &World, round: &Round, tally: &mut Tally) -> Vec<Case> {
    for (name, data) in &round.secrets {
        let s = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.clone(), k8s_openapi::ByteString(v.clone())))
                    .collect(),
            ),
            ..Default::default()
        };
        w.secrets
            .create(&PostParams::default(), &s)
            .await
            .expect("create secret");
        tally.admitted_secrets += 1;
    }
    let classes = futures::stream::iter(round.classes.iter())
        .map(|(category, obj)| async move { (category, create(&w.classes, obj).await) })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    for (category, res) in classes {
        assert_eq!(
            res,
            Ok(true),
            "class of category {category:?} must be admitted"
        );
        tally.admitted_classes += 1;
    }
    let results = futures::stream::iter(round.contents.iter())
        .map(|(case, obj)| async move { (case, create(&w.contents, obj).await) })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let mut admitted = Vec::new();
    for (case, res) in results {
        match res {
            Ok(true) => {
                tally.admitted_contents += 1;
                admitted.push(case.clone());
            }
            other => panic!(
                "content {} ({}) was not admitted: {other:?}",
                case.name, case.category
            ),
        }
    }
    for (defect, kind, obj) in &round.invalid {
        let api = if *kind == "class" {
            &w.classes
        } else {
            &w.contents
        };
        match admit(api, obj).await {
            Ok(Err(message)) => {
                *tally.rejected.entry(defect).or_default() += 1;
                tally
                    .rejected_sample
                    .entry(defect)
                    .or_insert_with(|| truncate(&message));
            }
            other => panic!("the schema must refuse {defect:?}, got {other:?}"),
        }
    }
    admitted
}

/// How often to look at a round's objects: a LIST of a big round costs more.
fn poll_interval(objects: usize) -> Duration {
    if objects > 300 {
        Duration::from_millis(300)
    } else {
        Duration::from_millis(100)
    }
}

/// Waits until every case has passed its check; panics with the stuck ones.
/// A case that passed once counts as settled: a content whose create keeps
/// failing with a final error carries the being-created annotation again
/// during each retry, so all of a round's looping contents are rarely
/// between attempts in the same LIST.
async fn settle(
    w: &World,
    cases: &[Case],
    what: &str,
) -> HashMap<String, Vec<(String, String, String)>> {
    let deadline = Instant::now() + SETTLE;
    let mut settled: HashSet<&str> = HashSet::new();
    loop {
        assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a panic happened");
        let looked = Instant::now();
        let objs = contents_by_name(w).await;
        let events = events_by_object(w).await;
        let backend: HashSet<String> = w
            .mock
            .snapshots()
            .into_iter()
            .map(|s| s.source_volume_id)
            .collect();
        let none = Vec::new();
        let mut failing: Vec<(String, &'static str, String)> = Vec::new();
        for c in cases {
            if settled.contains(c.name.as_str()) {
                continue;
            }
            match check(
                w,
                c,
                objs.get(&c.name),
                events.get(&c.name).unwrap_or(&none),
                &backend,
            ) {
                Ok(()) => {
                    settled.insert(c.name.as_str());
                }
                Err(e) => failing.push((c.name.clone(), c.category, e)),
            }
        }
        if failing.is_empty() {
            return events;
        }
        if Instant::now() > deadline {
            let sample: Vec<String> = failing
                .iter()
                .take(10)
                .map(|(n, c, e)| format!("  {} [{c}]: {e}", truncate(n)))
                .collect();
            panic!(
                "{what}: {} of {} objects did not reach their end state within {SETTLE:?}:\n{}",
                failing.len(),
                cases.len(),
                sample.join("\n")
            );
        }
        // Looking costs the server too: never spend more than a third of
        // the time listing.
        tokio::time::sleep(poll_interval(cases.len()).max(2 * looked.elapsed())).await;
    }
}

fn count_outcomes(
    tally: &mut Tally,
    cases: &[Case],
    objs: &HashMap<String, Value>,
    events: &HashMap<String, Vec<(String, String, String)>>,
) {
    for c in cases {
        let kind = match &c.expect {
            Expect::Error { .. } => "error status or event",
            Expect::Ready(Tolerated::None) => "ready (valid oddity)",
            Expect::Ready(_) => "ready (garbage tolerated by design)",
            Expect::Untouched => "untouched (another driver)",
            Expect::DeleteBlocked(_) => "delete refused with an event",
        };
        *tally.ended.entry(kind).or_default() += 1;
        if objs
            .get(&c.name)
            .and_then(|o| o.pointer("/status/error/message"))
            .is_some()
        {
            tally.error_statuses += 1;
        }
        let evs = events.get(&c.name);
        if matches!(c.expect, Expect::Error { .. }) && evs.is_none_or(Vec::is_empty) {
            tally.failures_without_event += 1;
        }
        for (_, reason, _) in evs.into_iter().flatten() {
            *tally.events_by_reason.entry(reason.clone()).or_default() += 1;
        }
    }
}

/// Deletes the round's contents as the snapshot-controller does (another
/// driver's: the test removes its finalizer itself), waits until all are
/// gone, then removes classes, secrets and events.
async fn cleanup(w: &World, cases: &[Case], round: &Round) {
    let merge = Patch::Merge::<Value>;
    futures::stream::iter(cases.iter())
        .map(|c| async move {
            let patch = if matches!(c.expect, Expect::Untouched) {
                json!({"metadata": {"finalizers": null}})
            } else {
                json!({"metadata": {"annotations": {keys::ANN_VS_BEING_DELETED: "yes"}}})
            };
            match w
                .contents
                .patch(&c.name, &PatchParams::default(), &merge(patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => panic!("patch {}: {e}", c.name),
            }
            match w.contents.delete(&c.name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => panic!("delete {}: {e}", c.name),
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    // Contents with a second finalizer of someone else: that someone
    // removes it once the sidecar has removed its own.
    let deadline = Instant::now() + SETTLE;
    loop {
        assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a panic happened");
        // Only a page of what is left: a full LIST of a big round would
        // slow the server down for everyone.
        let objs: HashMap<String, Value> = w
            .contents
            .list(&ListParams::default().limit(50))
            .await
            .expect("list contents")
            .into_iter()
            .map(|o| {
                let name = o.metadata.name.clone().unwrap_or_default();
                (name, serde_json::to_value(o).expect("json"))
            })
            .collect();
        let mut left = 0;
        for (name, obj) in &objs {
            let fins: Vec<&str> = obj
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if fins == ["example.com/other-finalizer"] {
                let _ = w
                    .contents
                    .patch(
                        name,
                        &PatchParams::default(),
                        &merge(json!({"metadata": {"finalizers": null}})),
                    )
                    .await;
            }
            left += 1;
        }
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            let sample: Vec<String> = objs
                .iter()
                .take(5)
                .map(|(n, o)| {
                    format!(
                        "  {}: annotations {:?} status {}",
                        truncate(n),
                        o.pointer("/metadata/annotations")
                            .map(|a| truncate(&a.to_string())),
                        truncate(&o["status"].to_string())
                    )
                })
                .collect();
            panic!(
                "round {}: {left} contents not deleted:\n{}",
                round.tag,
                sample.join("\n")
            );
        }
        tokio::time::sleep(poll_interval(cases.len())).await;
    }
    for (_, obj) in &round.classes {
        let name = obj["metadata"]["name"].as_str().expect("name");
        w.classes
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete class");
    }
    for (name, _) in &round.secrets {
        let _ = w.secrets.delete(name, &DeleteParams::default()).await;
    }
    w.events
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("delete events");
    let leaked = w.mock.snapshots();
    assert!(
        leaked.is_empty(),
        "round {}: {} backend snapshots leaked, e.g. of volume {}",
        round.tag,
        leaked.len(),
        truncate(&leaked[0].source_volume_id)
    );
}

/// CSI calls of the snapshot RPCs so far.
fn snapshot_calls(m: &MockDriver) -> [u64; 4] {
    [
        "CreateSnapshot",
        "DeleteSnapshot",
        "ListSnapshots",
        "GetSnapshot",
    ]
    .map(|r| m.calls(r))
}

/// A driver fault for one round of valid contents.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Malformed(Malformed),
    Create(tonic::Code, FailWhen),
    Delete(tonic::Code),
    DeleteSecretGone,
    ListMissingMessage,
}

const FINAL: &[tonic::Code] = &[
    tonic::Code::Unknown,
    tonic::Code::InvalidArgument,
    tonic::Code::NotFound,
    tonic::Code::AlreadyExists,
    tonic::Code::PermissionDenied,
    tonic::Code::FailedPrecondition,
    tonic::Code::OutOfRange,
    tonic::Code::Unimplemented,
    tonic::Code::Internal,
    tonic::Code::DataLoss,
    tonic::Code::Unauthenticated,
];
const NON_FINAL: &[tonic::Code] = &[
    tonic::Code::Cancelled,
    tonic::Code::DeadlineExceeded,
    tonic::Code::Unavailable,
    tonic::Code::ResourceExhausted,
    tonic::Code::Aborted,
];

fn faults() -> Vec<Fault> {
    let mut f = vec![
        Fault::Malformed(Malformed::MissingMessage),
        Fault::Malformed(Malformed::EmptyId),
        Fault::Malformed(Malformed::MissingCreationTime),
        Fault::Malformed(Malformed::NegativeSize),
    ];
    f.extend(FINAL.iter().map(|c| Fault::Create(*c, FailWhen::Before)));
    f.extend(
        NON_FINAL
            .iter()
            .map(|c| Fault::Create(*c, FailWhen::Before)),
    );
    f.extend(NON_FINAL.iter().map(|c| Fault::Create(*c, FailWhen::After)));
    f.push(Fault::Delete(tonic::Code::Internal));
    f.push(Fault::Delete(tonic::Code::Unavailable));
    f.push(Fault::DeleteSecretGone);
    f.push(Fault::ListMissingMessage);
    f
}

fn fault_category(f: Fault) -> &'static str {
    match f {
        Fault::Malformed(Malformed::MissingMessage) => "driver: OK without snapshot",
        Fault::Malformed(Malformed::EmptyId) => "driver: empty snapshot_id",
        Fault::Malformed(Malformed::MissingCreationTime) => "driver: no creation_time",
        Fault::Malformed(Malformed::NegativeSize) => "driver: negative size_bytes",
        Fault::Create(c, FailWhen::Before) if FINAL.contains(&c) => "driver: final error code",
        Fault::Create(_, FailWhen::Before) => "driver: non-final error code",
        Fault::Create(..) => "driver: non-final code after cutting the snapshot",
        Fault::Delete(_) => "driver: DeleteSnapshot fails",
        Fault::DeleteSecretGone => "driver: delete secret vanished",
        Fault::ListMissingMessage => "driver: ListSnapshots entry without snapshot",
    }
}

/// One round of valid contents against a garbage driver: the fault shows in
/// every content, then the driver heals, everything becomes ready and is
/// deleted without leaking a backend snapshot.
async fn driver_round(w: &World, rng: &mut Rng, tally: &mut Tally, r: usize, fault: Fault) {
    let tag = format!("g{r}");
    let category = fault_category(fault);
    let mut round = Round {
        tag: tag.clone(),
        ..Default::default()
    };
    let secret = format!("del-secret-{tag}");
    if matches!(fault, Fault::DeleteSecretGone) {
        round.secrets.push((
            secret.clone(),
            BTreeMap::from([("k".to_string(), b"v".to_vec())]),
        ));
    }
    let code_name = |c: tonic::Code| format!("code = {}", go_code_name(c));
    for i in 0..DRIVER_ROUND_CONTENTS {
        let name = content_name(rng, &tag, i);
        let volume = format!("vol-{name}");
        let mut obj = dynamic(&name, &volume, Some(PLAIN_CLASS));
        if matches!(fault, Fault::DeleteSecretGone) {
            obj["metadata"]["annotations"] = json!({
                keys::ANN_DELETION_SECRET_NAME: secret, keys::ANN_DELETION_SECRET_NAMESPACE: "default"});
        }
        let expect = match fault {
            Fault::Malformed(Malformed::MissingMessage) => error(
                vec!["CreateSnapshot returned OK without snapshot".into()],
                Marker::Present,
            ),
            Fault::Malformed(Malformed::EmptyId) => {
                error(vec!["empty snapshot_id".into()], Marker::Present)
            }
            Fault::Malformed(Malformed::MissingCreationTime) => {
                Expect::Ready(Tolerated::CreationTimeIsNow)
            }
            Fault::Malformed(Malformed::NegativeSize) => Expect::Ready(Tolerated::NoRestoreSize),
            Fault::Create(c, _) => error(
                vec![
                    code_name(c),
                    format!("failed to take snapshot of the volume {volume}"),
                ],
                if FINAL.contains(&c) {
                    Marker::Absent
                } else {
                    Marker::Present
                },
            ),
            // Ready first; the delete is refused later.
            Fault::Delete(_) | Fault::DeleteSecretGone | Fault::ListMissingMessage => {
                Expect::Ready(Tolerated::None)
            }
        };
        let c = case(&name, category, expect, Some(&volume), &obj);
        round.add(tally, c, obj);
    }
    match fault {
        Fault::Malformed(m) => w.mock.set_malformed("CreateSnapshot", Some(m)),
        Fault::Create(c, when) => w.mock.fail_always("CreateSnapshot", c, when),
        _ => {}
    }
    let started = Instant::now();
    let mut cases = submit(w, &round, tally).await;
    let events = settle(w, &cases, &format!("round {tag} ({fault:?})")).await;
    // Then the driver heals; the cleanup deletes the contents as the
    // snapshot-controller does, which waits for the creates still marked
    // in flight, and finds no backend snapshot left over.
    match fault {
        Fault::Malformed(_) => {
            count_outcomes(tally, &cases, &contents_by_name(w).await, &events);
            w.mock.set_malformed("CreateSnapshot", None);
        }
        Fault::Create(..) => {
            count_outcomes(tally, &cases, &contents_by_name(w).await, &events);
            w.mock.clear_failures("CreateSnapshot");
        }
        Fault::Delete(_) | Fault::DeleteSecretGone => {
            let message = if matches!(fault, Fault::Delete(_)) {
                "Failed to delete snapshot"
            } else {
                "Failed to get snapshot credentials"
            };
            let blocked: Vec<Case> = cases
                .iter()
                .map(|c| Case {
                    expect: Expect::DeleteBlocked(message),
                    ..c.clone()
                })
                .collect();
            if let Fault::Delete(code) = fault {
                w.mock.fail_always("DeleteSnapshot", code, FailWhen::Before);
            } else {
                w.secrets
                    .delete(&secret, &DeleteParams::default())
                    .await
                    .expect("delete secret");
            }
            request_deletion(w, &blocked).await;
            let events = settle(w, &blocked, &format!("round {tag}: delete refused")).await;
            count_outcomes(tally, &blocked, &contents_by_name(w).await, &events);
            if matches!(fault, Fault::Delete(_)) {
                w.mock.clear_failures("DeleteSnapshot");
            } else {
                let s = Secret {
                    metadata: kube::api::ObjectMeta {
                        name: Some(secret.clone()),
                        namespace: Some("default".into()),
                        ..Default::default()
                    },
                    data: Some(BTreeMap::from([(
                        "k".to_string(),
                        k8s_openapi::ByteString(b"v".to_vec()),
                    )])),
                    ..Default::default()
                };
                w.secrets
                    .create(&PostParams::default(), &s)
                    .await
                    .expect("recreate secret");
            }
        }
        Fault::ListMissingMessage => {
            // The dynamic contents are ready; now pre-provisioned contents
            // for their handles, polled through a ListSnapshots that
            // answers entries without a snapshot.
            let objs = contents_by_name(w).await;
            let mut pre_round = Round {
                tag: format!("{tag}p"),
                ..Default::default()
            };
            w.mock
                .set_malformed("ListSnapshots", Some(Malformed::MissingMessage));
            for (i, c) in cases.iter().enumerate() {
                let handle = objs[&c.name]["status"]["snapshotHandle"]
                    .as_str()
                    .expect("handle")
                    .to_string();
                let name = format!("pre-{tag}-{i}");
                let obj = preprovisioned(&name, &handle, None, "Retain");
                let expect = Expect::Error {
                    needles: vec!["ListSnapshots returned OK without snapshot".into()],
                    reasons: CHECK_REASONS,
                    marker: Marker::Absent,
                };
                let pc = case(
                    &name,
                    "driver: ListSnapshots entry without snapshot",
                    expect,
                    None,
                    &obj,
                );
                pre_round.add(tally, pc, obj);
            }
            let pre = submit(w, &pre_round, tally).await;
            let events = settle(w, &pre, &format!("round {tag}: list garbage")).await;
            count_outcomes(tally, &pre, &contents_by_name(w).await, &events);
            w.mock.set_malformed("ListSnapshots", None);
            count_outcomes(tally, &cases, &objs, &HashMap::new());
            cases.extend(pre);
        }
    }
    let settled = started.elapsed();
    cleanup(w, &cases, &round).await;
    println!(
        "  round {tag} done: {fault:?}, settled in {settled:?}, cleaned up in {:?}",
        started.elapsed() - settled
    );
}

/// Puts the being-deleted annotation on and deletes, as the
/// snapshot-controller does when the VolumeSnapshot goes.
async fn request_deletion(w: &World, cases: &[Case]) {
    futures::stream::iter(cases.iter())
        .map(|c| async move {
            w.contents
                .patch(
                    &c.name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {keys::ANN_VS_BEING_DELETED: "yes"}}}),
                    ),
                )
                .await
                .expect("annotate");
            w.contents
                .delete(&c.name, &DeleteParams::default())
                .await
                .expect("delete");
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_hostile_objects_each_end_with_a_reason() {
    install_panic_counter();
    let seed = std::env::var("HOSTILE_SEED")
        .ok()
        .map(|s| {
            s.parse::<u64>()
                .unwrap_or_else(|e| panic!("HOSTILE_SEED={s:?} is not a u64: {e}"))
        })
        .unwrap_or(DEFAULT_SEED);
    println!("hostile inputs: seed {seed} (set HOSTILE_SEED to replay)");
    let began = Instant::now();
    let mut rng = Rng(SplitMix64::new(seed));
    let mut tally = Tally::default();
    let w = world().await;
    w.classes
        .create(
            &PostParams::default(),
            &serde_json::from_value(class(
                PLAIN_CLASS,
                MOCK,
                &BTreeMap::from([("tier".to_string(), "gold".to_string())]),
            ))
            .expect("class"),
        )
        .await
        .expect("plain class");

    for r in 0..INPUT_ROUNDS {
        let no_rpc = r % 2 == 0;
        let round = if no_rpc {
            no_rpc_round(&mut rng, &mut tally, r)
        } else {
            driver_input_round(&mut rng, &mut tally, r)
        };
        let calls_before = snapshot_calls(&w.mock);
        let t0 = Instant::now();
        let cases = submit(&w, &round, &mut tally).await;
        let t1 = Instant::now();
        let events = settle(&w, &cases, &format!("round {}", round.tag)).await;
        let t2 = Instant::now();
        if no_rpc {
            assert_eq!(
                snapshot_calls(&w.mock),
                calls_before,
                "round {}: inputs refused before any RPC reached the driver",
                round.tag
            );
        }
        count_outcomes(&mut tally, &cases, &contents_by_name(&w).await, &events);
        cleanup(&w, &cases, &round).await;
        println!(
            "    submit {:?}, settle {:?}, cleanup {:?}",
            t1 - t0,
            t2 - t1,
            t2.elapsed()
        );
        println!(
            "  round {} done: {} objects, {:?} elapsed",
            round.tag,
            round.objects(),
            began.elapsed()
        );
    }
    for (r, fault) in faults().into_iter().enumerate() {
        driver_round(&w, &mut rng, &mut tally, r, fault).await;
    }
    println!("  driver rounds done: {:?} elapsed", began.elapsed());

    // No stuck worker: a fresh valid content still becomes ready at once.
    let fresh_started = Instant::now();
    let fresh = Case {
        name: "fresh-after-the-flood".into(),
        category: "fresh",
        expect: Expect::Ready(Tolerated::None),
        volume: Some("vol-fresh".into()),
        annotations: Value::Null,
    };
    assert_eq!(
        create(
            &w.contents,
            &dynamic(&fresh.name, "vol-fresh", Some(PLAIN_CLASS))
        )
        .await,
        Ok(true)
    );
    tokio::time::timeout(
        Duration::from_secs(20),
        settle(&w, std::slice::from_ref(&fresh), "fresh content"),
    )
    .await
    .expect("a fresh content becomes ready within 20 s after the flood");
    let fresh_latency = fresh_started.elapsed();
    let running = w.running.as_ref().expect("running");
    let stats = running.queue.stats();
    assert!(
        stats.longest_running_processor_seconds < 10.0,
        "a worker has been on one key for {} s",
        stats.longest_running_processor_seconds
    );
    let admitted = tally.admitted_contents + tally.admitted_classes;
    assert!(
        admitted >= 10_000,
        "only {admitted} objects reached the sidecar"
    );
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a panic happened");

    println!("hostile inputs summary (seed {seed})");
    println!("  generated per category:");
    for (k, v) in &tally.generated {
        println!("    {v:>6}  {k}");
    }
    println!(
        "  admitted: {} contents + {} classes = {admitted} (and {} secrets)",
        tally.admitted_contents, tally.admitted_classes, tally.admitted_secrets
    );
    println!(
        "  rejected at admission (422): {}",
        tally.rejected.values().sum::<usize>()
    );
    for (k, v) in &tally.rejected {
        println!("    {v:>6}  {k}");
    }
    for (k, v) in &tally.rejected_sample {
        println!("    e.g. {k}: {v}");
    }
    println!("  end states:");
    for (k, v) in &tally.ended {
        println!("    {v:>6}  {k}");
    }
    println!("  contents with status.error: {}", tally.error_statuses);
    println!(
        "  failing contents without any event (dropped or refused; status.error carried it): {}",
        tally.failures_without_event
    );
    println!("  Warning events by reason:");
    for (k, v) in &tally.events_by_reason {
        println!("    {v:>6}  {k}");
    }
    println!("  CSI calls:");
    for rpc in [
        "GetPluginInfo",
        "CreateSnapshot",
        "DeleteSnapshot",
        "ListSnapshots",
        "GetSnapshot",
    ] {
        println!("    {:>6}  {rpc}", w.mock.calls(rpc));
    }
    println!(
        "  API requests: {} (POST {}, PATCH {}, GET {}, LIST {}, DELETE {})",
        w.server.request_count("*", "*"),
        w.server.request_count("POST", "*"),
        w.server.request_count("PATCH", "*"),
        w.server.request_count("GET", "*"),
        w.server.request_count("LIST", "*"),
        w.server.request_count("DELETE", "*"),
    );
    println!(
        "  queue: {} adds, {} retries",
        stats.adds_total, stats.retries_total
    );
    println!("  fresh content ready after the flood in {fresh_latency:?}");
    println!("  elapsed: {:?}", began.elapsed());
    let mut w = w;
    if let Some(r) = w.running.take() {
        r.shutdown().await;
    }
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a panic happened");
    w.mock.stop().await;
}
