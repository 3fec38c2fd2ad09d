//! The embedded API server against a real kube-apiserver: the same table of
//! request sequences is sent to both and what matters of each answer is
//! compared after normalising (status code, `Status` reason and cause
//! fields, chosen fields' values or presence, the names a list returns, the
//! event types and objects of a watch, in order).
//!
//! ```text
//! SNAPSHOTTER_DIFF_KUBECONFIG=/path/to/admin.kubeconfig \
//!     cargo test --test apiserver_differential -- --nocapture
//! ```
//!
//! The kubeconfig must name a cluster admin of a cluster with the snapshot
//! CRDs installed (docs/benchmark.md shows how to start one on loopback).
//! Without the variable the test prints one line and passes, so CI (which
//! has no cluster) still compiles it. Every object a sequence creates is
//! named with a prefix unique to the run and removed (finalizers first)
//! after the sequence, on both servers.

#[path = "support/crds.rs"]
mod crds;

use std::collections::BTreeSet;
use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions};
use http_body_util::BodyExt;
use serde_json::{Value, json};

/// The admin kubeconfig of the real cluster.
const ENV: &str = "SNAPSHOTTER_DIFF_KUBECONFIG";
/// Sent as the User-Agent, so both servers name the same field manager.
const USER_AGENT: &str = "apiserver-differential/1.0";
/// Longest wait for the events a watch sequence expects.
const WATCH_WAIT: Duration = Duration::from_secs(5);
/// Longest wait for one request.
const REQUEST_WAIT: Duration = Duration::from_secs(30);

const VSC: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents";
const VSCLASS: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses";
const VGSC: &str = "/apis/groupsnapshot.storage.k8s.io/v1/volumegroupsnapshotcontents";
const SECRETS: &str = "/api/v1/namespaces/default/secrets";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
const EVENTS: &str = "/api/v1/namespaces/default/events";
const MERGE: Option<&str> = Some("application/merge-patch+json");
const JSON_PATCH: Option<&str> = Some("application/json-patch+json");

/// Writes one line to the real stdout (test capture only intercepts
/// `print!`), so the skip line and the summary are always visible.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// One server under comparison.
struct Side {
    client: kube::Client,
}

/// One answer.
struct Reply {
    code: u16,
    body: Value,
}

/// Runs one sequence on one side and records what the answers show.
struct Probe<'a> {
    side: &'a Side,
    /// Prefix of every object name of this run.
    prefix: &'a str,
    /// What was observed, one line per request.
    seen: Vec<String>,
    /// Objects to remove afterwards (item paths).
    created: Vec<String>,
}

impl Probe<'_> {
    /// The name of object `n` of this run.
    fn name(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }

    /// Replaces the run's prefix with `~` so both sides' lines compare.
    fn strip(&self, s: &str) -> String {
        s.replace(self.prefix, "~")
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        ct: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let bytes = match body {
            Some(Value::String(raw)) => raw.clone().into_bytes(),
            Some(v) => serde_json::to_vec(v).expect("a body serializes"),
            None => Vec::new(),
        };
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::USER_AGENT, USER_AGENT)
            .header(http::header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, ct.unwrap_or("application/json"));
        }
        let req = req
            .body(kube::client::Body::from(bytes))
            .expect("a request builds");
        let res = tokio::time::timeout(REQUEST_WAIT, self.side.client.send(req))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer in {REQUEST_WAIT:?}"))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let code = res.status().as_u16();
        let bytes = res
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Reply { code, body }
    }

    /// Sends a request and records its code, its `Status` reason and the
    /// projections `look` names:
    /// - `/a/b`: the value at that pointer (or `absent`);
    /// - `?/a/b`: only whether it is present;
    /// - `#names`: the names of a list's items of this run, sorted;
    /// - `#causes`: the fields of a `Status`'s causes, sorted;
    /// - `#managers`: (manager, operation, subresource) of managedFields.
    async fn call(
        &mut self,
        label: &str,
        method: &str,
        path: &str,
        ct: Option<&str>,
        body: Option<Value>,
        look: &[&str],
    ) -> Value {
        let r = self.send(method, path, ct, body.as_ref()).await;
        if method == "POST"
            && (200..300).contains(&r.code)
            && !path.contains("dryRun")
            && let Some(name) = r.body["metadata"]["name"].as_str()
        {
            let collection = path.split('?').next().unwrap_or(path);
            self.created.push(format!("{collection}/{name}"));
        }
        let mut line = format!("{label}: {}", r.code);
        if r.body["kind"] == "Status" {
            line.push_str(&format!(" {}", r.body["reason"].as_str().unwrap_or("")));
        }
        for l in look {
            line.push_str(&format!(" | {l}={}", self.project(&r.body, l)));
        }
        let line = self.strip(&line);
        self.seen.push(line);
        r.body
    }

    fn project(&self, body: &Value, look: &str) -> String {
        match look {
            "#names" => {
                let names: BTreeSet<String> = body["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["metadata"]["name"].as_str())
                    .filter(|n| n.starts_with(self.prefix))
                    .map(|n| self.strip(n))
                    .collect();
                format!("{names:?}")
            }
            "#causes" => {
                let fields: BTreeSet<&str> = body["details"]["causes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["field"].as_str())
                    .collect();
                format!("{fields:?}")
            }
            "#managers" => {
                let managers: Vec<String> = body["metadata"]["managedFields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        format!(
                            "{}/{}/{}",
                            e["manager"].as_str().unwrap_or(""),
                            e["operation"].as_str().unwrap_or(""),
                            e["subresource"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                format!("{managers:?}")
            }
            _ => match look.strip_prefix('?') {
                Some(ptr) => match body.pointer(ptr) {
                    Some(_) => "present".into(),
                    None => "absent".into(),
                },
                None => body
                    .pointer(look)
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "absent".into()),
            },
        }
    }

    /// Creates the dynamic content `n` ([`vsc`]); returns the reply.
    async fn create_vsc(&mut self, n: &str) -> Value {
        self.post("create", VSC, vsc(n), &[]).await
    }

    /// Creates `body` in the collection `path`, recording what `look` names.
    async fn post(&mut self, label: &str, path: &str, body: Value, look: &[&str]) -> Value {
        self.call(label, "POST", path, None, Some(body), look).await
    }

    /// Replaces `path` with `body`, recording what `look` names.
    async fn put(&mut self, label: &str, path: &str, body: Value, look: &[&str]) -> Value {
        self.call(label, "PUT", path, None, Some(body), look).await
    }

    /// Patches `path` with `body` of content type `ct`, recording what
    /// `look` names.
    async fn patch(
        &mut self,
        label: &str,
        path: &str,
        ct: Option<&str>,
        body: Value,
        look: &[&str],
    ) -> Value {
        self.call(label, "PATCH", path, ct, Some(body), look).await
    }

    /// Reads `path`, recording what `look` names.
    async fn get(&mut self, label: &str, path: &str, look: &[&str]) -> Value {
        self.call(label, "GET", path, None, None, look).await
    }

    /// Opens a watch (`path` with its query, `watch=true` added) and
    /// records its code and, in order, the first `want` events that are
    /// not bookmarks (type, and the object's name or the `Status` code and
    /// reason of an ERROR), waiting at most [`WATCH_WAIT`] for them.
    async fn watch(&mut self, label: &str, path: &str, want: usize) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}watch=true");
        let req = http::Request::builder()
            .method("GET")
            .uri(&path)
            .header(http::header::USER_AGENT, USER_AGENT)
            .body(kube::client::Body::from(Vec::new()))
            .expect("a request builds");
        let res = tokio::time::timeout(REQUEST_WAIT, self.side.client.send(req))
            .await
            .unwrap_or_else(|_| panic!("WATCH {path}: no answer"))
            .unwrap_or_else(|e| panic!("WATCH {path}: {e}"));
        let code = res.status().as_u16();
        let mut body = res.into_body();
        let mut buf = Vec::new();
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + WATCH_WAIT;
        if code == 200 {
            while events.len() < want {
                let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                    Ok(Some(Ok(f))) => f,
                    _ => break,
                };
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
                while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=i).collect();
                    let Ok(ev) = serde_json::from_slice::<Value>(&line) else {
                        continue;
                    };
                    let kind = ev["type"].as_str().unwrap_or("").to_string();
                    let obj = &ev["object"];
                    match kind.as_str() {
                        "BOOKMARK" => {}
                        "ERROR" => events.push(format!(
                            "ERROR {} {}",
                            obj["code"],
                            obj["reason"].as_str().unwrap_or("")
                        )),
                        _ => {
                            let name = obj["metadata"]["name"].as_str().unwrap_or("");
                            if name.starts_with(self.prefix) {
                                events.push(format!("{kind} {}", self.strip(name)));
                            }
                        }
                    }
                }
            }
        }
        let mut line = format!("{label}: {code} {events:?}");
        if code != 200 {
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let status: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            line.push_str(&format!(
                " {} | #causes={}",
                status["reason"].as_str().unwrap_or(""),
                self.project(&status, "#causes")
            ));
        }
        let line = self.strip(&line);
        self.seen.push(line);
    }

    /// Removes what the sequence created: finalizers first, then DELETE.
    async fn clean(&mut self) {
        for item in std::mem::take(&mut self.created) {
            let strip = json!({"metadata": {"finalizers": null}});
            self.send("PATCH", &item, MERGE, Some(&strip)).await;
            self.send("DELETE", &item, None, None).await;
        }
    }
}

/// A dynamic VolumeSnapshotContent named `name`.
fn vsc(name: &str) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": name},
        "spec": {
            "deletionPolicy": "Delete",
            "driver": "diff.csi.k8s.io",
            "source": {"volumeHandle": format!("vol-{name}")},
            "volumeSnapshotClassName": "diff-class",
            "volumeSnapshotRef": {"name": format!("vs-{name}"), "namespace": "default",
                                  "uid": "9d1a8a5e-0000-4000-8000-000000000001"}
        }
    })
}

/// `obj` with `value` at the JSON pointer `ptr` (parents created).
fn with(mut obj: Value, ptr: &str, value: Value) -> Value {
    let mut cur = &mut obj;
    let parts: Vec<&str> = ptr.trim_start_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            cur[*p] = value;
            break;
        }
        if cur.get(*p).is_none() {
            cur[*p] = json!({});
        }
        cur = &mut cur[*p];
    }
    obj
}

fn item(collection: &str, name: &str) -> String {
    format!("{collection}/{name}")
}

type CaseFn = for<'a, 'b> fn(&'a mut Probe<'b>) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Boxes an `async fn(&mut Probe)` into a table entry.
macro_rules! case {
    ($f:ident) => {
        (stringify!($f), {
            fn boxed<'a, 'b>(p: &'a mut Probe<'b>) -> Pin<Box<dyn Future<Output = ()> + 'a>> {
                Box::pin($f(p))
            }
            boxed as CaseFn
        })
    };
}

// ---- create, get ----

async fn create_returns_the_object_without_status(p: &mut Probe<'_>) {
    let n = p.name("create");
    let obj = with(vsc(&n), "/status", json!({"readyToUse": true}));
    let look = [
        "/spec/driver",
        "/metadata/generation",
        "?/status",
        "?/metadata/uid",
        "?/metadata/creationTimestamp",
        "#managers",
    ];
    p.post("create", VSC, obj, &look).await;
    p.get("get", &item(VSC, &n), &look).await;
}

async fn create_twice_is_already_exists(p: &mut Probe<'_>) {
    let n = p.name("twice");
    p.post("first", VSC, vsc(&n), &[]).await;
    p.post("second", VSC, vsc(&n), &["/details/name", "/details/kind"])
        .await;
}

async fn get_missing_is_not_found(p: &mut Probe<'_>) {
    let path = item(VSC, &p.name("missing"));
    p.get("get", &path, &["/details/kind", "/code"]).await;
}

async fn create_without_driver_is_invalid(p: &mut Probe<'_>) {
    let mut obj = vsc(&p.name("nodriver"));
    obj["spec"].as_object_mut().unwrap().remove("driver");
    p.post("create", VSC, obj, &["#causes", "/details/kind"])
        .await;
}

async fn create_with_both_sources_is_invalid(p: &mut Probe<'_>) {
    let obj = with(
        vsc(&p.name("twosources")),
        "/spec/source/snapshotHandle",
        json!("h"),
    );
    p.post("create", VSC, obj, &["#causes"]).await;
}

async fn create_with_bad_deletion_policy_is_invalid(p: &mut Probe<'_>) {
    let obj = with(
        vsc(&p.name("policy")),
        "/spec/deletionPolicy",
        json!("Keep"),
    );
    p.post("create", VSC, obj, &["#causes"]).await;
}

async fn create_prunes_unknown_fields(p: &mut Probe<'_>) {
    let obj = with(vsc(&p.name("prune")), "/spec/surplus", json!("x"));
    p.post("create", VSC, obj, &["?/spec/surplus", "/spec/driver"])
        .await;
}

async fn create_with_uppercase_name_is_invalid(p: &mut Probe<'_>) {
    let obj = vsc(&format!("{}-Upper", p.prefix));
    p.post("create", VSC, obj, &["#causes"]).await;
}

async fn create_with_mismatched_kind_is_bad_request(p: &mut Probe<'_>) {
    let obj = with(vsc(&p.name("kind")), "/kind", json!("VolumeSnapshotClass"));
    p.post("create", VSC, obj, &[]).await;
}

async fn create_with_malformed_json_is_bad_request(p: &mut Probe<'_>) {
    let raw = Value::String("{\"metadata\": {".into());
    p.post("create", VSC, raw, &[]).await;
}

async fn create_with_generate_name_gets_a_name(p: &mut Probe<'_>) {
    let mut obj = vsc("unused");
    obj["metadata"] = json!({"generateName": format!("{}-gen-", p.prefix)});
    let body = p.post("create", VSC, obj, &[]).await;
    let name = body["metadata"]["name"].as_str().unwrap_or("");
    let shaped = name.starts_with(&format!("{}-gen-", p.prefix)) && name.len() > p.prefix.len() + 5;
    p.seen.push(format!(
        "generated name has the prefix and a suffix: {shaped}"
    ));
}

async fn dry_run_create_stores_nothing(p: &mut Probe<'_>) {
    let n = p.name("dryrun");
    let path = format!("{VSC}?dryRun=All");
    p.post(
        "create",
        &path,
        vsc(&n),
        &["/metadata/name", "?/metadata/uid"],
    )
    .await;
    p.get("get", &item(VSC, &n), &[]).await;
}

async fn get_with_resource_version_zero(p: &mut Probe<'_>) {
    let n = p.name("rv0");
    p.create_vsc(&n).await;
    let path = format!("{}?resourceVersion=0", item(VSC, &n));
    p.get("get", &path, &["/metadata/name"]).await;
}

// ---- update ----

async fn update_with_stale_version_conflicts(p: &mut Probe<'_>) {
    let n = p.name("stale");
    let created = p
        .call("create", "POST", VSC, None, Some(vsc(&n)), &[])
        .await;
    let mut first = created.clone();
    first["metadata"]["labels"] = json!({"step": "one"});
    p.put("update", &item(VSC, &n), first, &["/metadata/labels"])
        .await;
    let mut stale = created;
    stale["metadata"]["labels"] = json!({"step": "two"});
    p.put("stale update", &item(VSC, &n), stale, &["/details/kind"])
        .await;
}

async fn update_without_version_is_unconditional(p: &mut Probe<'_>) {
    let n = p.name("uncond");
    let mut obj = p
        .call("create", "POST", VSC, None, Some(vsc(&n)), &[])
        .await;
    obj["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    obj["metadata"]["labels"] = json!({"a": "b"});
    p.put("update", &item(VSC, &n), obj, &["/metadata/labels"])
        .await;
}

async fn update_of_immutable_source_is_invalid(p: &mut Probe<'_>) {
    let n = p.name("immutable");
    let obj = p
        .call("create", "POST", VSC, None, Some(vsc(&n)), &[])
        .await;
    let changed = with(obj, "/spec/source/volumeHandle", json!("other"));
    p.put("update", &item(VSC, &n), changed, &["#causes"]).await;
}

async fn update_of_main_resource_ignores_status(p: &mut Probe<'_>) {
    let n = p.name("mainstatus");
    let obj = p
        .call("create", "POST", VSC, None, Some(vsc(&n)), &[])
        .await;
    let obj = with(obj, "/status", json!({"readyToUse": true}));
    p.put(
        "update",
        &item(VSC, &n),
        obj,
        &["?/status", "/metadata/generation"],
    )
    .await;
}

async fn status_update_ignores_spec(p: &mut Probe<'_>) {
    let n = p.name("statusspec");
    let obj = p
        .call("create", "POST", VSC, None, Some(vsc(&n)), &[])
        .await;
    let obj = with(obj, "/spec/deletionPolicy", json!("Retain"));
    let obj = with(
        obj,
        "/status",
        json!({"readyToUse": true, "restoreSize": 5}),
    );
    let look = [
        "/spec/deletionPolicy",
        "/status",
        "/metadata/generation",
        "#managers",
    ];
    let path = format!("{}/status", item(VSC, &n));
    p.put("status update", &path, obj, &look).await;
}

async fn status_update_with_stale_version_conflicts(p: &mut Probe<'_>) {
    let n = p.name("statusstale");
    let obj = p
        .call("create", "POST", VSC, None, Some(vsc(&n)), &[])
        .await;
    let path = format!("{}/status", item(VSC, &n));
    let first = with(obj.clone(), "/status", json!({"readyToUse": false}));
    p.put("first", &path, first, &["/status"]).await;
    let stale = with(obj, "/status", json!({"readyToUse": true}));
    p.put("stale", &path, stale, &[]).await;
}

async fn status_of_a_missing_object_is_not_found(p: &mut Probe<'_>) {
    let path = format!("{}/status", item(VSC, &p.name("nostatus")));
    let patch = json!({"status": {"readyToUse": true}});
    p.patch("patch", &path, MERGE, patch, &[]).await;
}

async fn status_subresource_of_a_class_is_not_found(p: &mut Probe<'_>) {
    let n = p.name("class");
    let class = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
                       "metadata": {"name": n}, "driver": "diff.csi.k8s.io", "deletionPolicy": "Delete"});
    p.post("create", VSCLASS, class, &["/deletionPolicy"]).await;
    let path = format!("{}/status", item(VSCLASS, &n));
    p.get("status", &path, &[]).await;
}

async fn class_with_bad_deletion_policy_is_invalid(p: &mut Probe<'_>) {
    let class = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
                       "metadata": {"name": p.name("badclass")}, "driver": "d", "deletionPolicy": "Never"});
    p.post("create", VSCLASS, class, &["#causes"]).await;
}

// ---- patch ----

async fn status_merge_patch_sets_status_only(p: &mut Probe<'_>) {
    let n = p.name("statuspatch");
    p.create_vsc(&n).await;
    let path = format!("{}/status", item(VSC, &n));
    let patch = json!({"status": {"readyToUse": true, "snapshotHandle": "h-1"},
                       "spec": {"deletionPolicy": "Retain"}});
    let look = [
        "/status",
        "/spec/deletionPolicy",
        "/metadata/generation",
        "#managers",
    ];
    p.patch("patch", &path, MERGE, patch, &look).await;
}

async fn merge_patch_of_labels_keeps_generation(p: &mut Probe<'_>) {
    let n = p.name("labels");
    p.create_vsc(&n).await;
    let patch = json!({"metadata": {"labels": {"a": "1"}}});
    p.patch(
        "patch",
        &item(VSC, &n),
        MERGE,
        patch,
        &["/metadata/labels", "/metadata/generation"],
    )
    .await;
}

async fn merge_patch_of_spec_bumps_generation(p: &mut Probe<'_>) {
    let n = p.name("generation");
    p.create_vsc(&n).await;
    let patch = json!({"spec": {"deletionPolicy": "Retain"}});
    p.patch(
        "patch",
        &item(VSC, &n),
        MERGE,
        patch,
        &["/spec/deletionPolicy", "/metadata/generation"],
    )
    .await;
}

async fn merge_patch_with_stale_version_conflicts(p: &mut Probe<'_>) {
    let n = p.name("mergestale");
    let obj = p
        .call("create", "POST", VSC, None, Some(vsc(&n)), &[])
        .await;
    let rv = obj["metadata"]["resourceVersion"].clone();
    p.patch(
        "first",
        &item(VSC, &n),
        MERGE,
        json!({"metadata": {"labels": {"x": "1"}}}),
        &[],
    )
    .await;
    let stale = json!({"metadata": {"resourceVersion": rv, "labels": {"x": "2"}}});
    p.patch("stale", &item(VSC, &n), MERGE, stale, &[]).await;
}

async fn merge_patch_of_a_missing_object_is_not_found(p: &mut Probe<'_>) {
    let path = item(VSC, &p.name("nopatch"));
    p.patch(
        "patch",
        &path,
        MERGE,
        json!({"metadata": {"labels": {"a": "b"}}}),
        &[],
    )
    .await;
}

async fn json_patch_adds_and_removes_an_annotation(p: &mut Probe<'_>) {
    let n = p.name("jsonpatch");
    p.create_vsc(&n).await;
    let add = json!([{"op": "add", "path": "/metadata/annotations", "value": {"a": "1"}}]);
    p.patch(
        "add",
        &item(VSC, &n),
        JSON_PATCH,
        add,
        &["/metadata/annotations"],
    )
    .await;
    let remove = json!([{"op": "remove", "path": "/metadata/annotations/a"}]);
    p.patch(
        "remove",
        &item(VSC, &n),
        JSON_PATCH,
        remove,
        &["/metadata/annotations"],
    )
    .await;
}

async fn json_patch_failing_test_is_refused(p: &mut Probe<'_>) {
    let n = p.name("jsontest");
    p.create_vsc(&n).await;
    let patch = json!([{"op": "test", "path": "/spec/driver", "value": "other"},
                       {"op": "replace", "path": "/spec/deletionPolicy", "value": "Retain"}]);
    p.patch("patch", &item(VSC, &n), JSON_PATCH, patch, &[])
        .await;
    p.get("get", &item(VSC, &n), &["/spec/deletionPolicy"])
        .await;
}

async fn json_patch_removing_a_missing_path_is_refused(p: &mut Probe<'_>) {
    let n = p.name("jsonmissing");
    p.create_vsc(&n).await;
    let patch = json!([{"op": "remove", "path": "/metadata/annotations/none"}]);
    p.patch("patch", &item(VSC, &n), JSON_PATCH, patch, &[])
        .await;
}

async fn json_patch_replacing_status_on_the_subresource(p: &mut Probe<'_>) {
    let n = p.name("jsonstatus");
    p.create_vsc(&n).await;
    let path = format!("{}/status", item(VSC, &n));
    let patch = json!([{"op": "replace", "path": "/status", "value": {"readyToUse": true}}]);
    p.patch("replace", &path, JSON_PATCH, patch, &["/status"])
        .await;
    let patch = json!([{"op": "add", "path": "/status", "value": {"restoreSize": 3}}]);
    p.patch("add", &path, JSON_PATCH, patch, &["/status"]).await;
}

async fn json_patch_that_breaks_the_schema_is_invalid(p: &mut Probe<'_>) {
    let n = p.name("jsonschema");
    p.create_vsc(&n).await;
    let patch = json!([{"op": "replace", "path": "/spec/deletionPolicy", "value": 7}]);
    p.patch("patch", &item(VSC, &n), JSON_PATCH, patch, &["#causes"])
        .await;
}

async fn strategic_merge_patch_of_a_custom_resource_is_unsupported(p: &mut Probe<'_>) {
    let n = p.name("strategic");
    p.create_vsc(&n).await;
    let patch = json!({"metadata": {"labels": {"a": "b"}}});
    let ct = Some("application/strategic-merge-patch+json");
    p.patch("patch", &item(VSC, &n), ct, patch, &[]).await;
}

async fn unknown_content_type_is_unsupported(p: &mut Probe<'_>) {
    let n = p.name("ctype");
    p.call(
        "create",
        "POST",
        VSC,
        Some("text/plain"),
        Some(vsc(&n)),
        &[],
    )
    .await;
}

async fn apply_patch_creates_and_records_the_manager(p: &mut Probe<'_>) {
    let n = p.name("apply");
    let path = format!("{}?fieldManager=differ", item(VSC, &n));
    let ct = Some("application/apply-patch+yaml");
    p.patch("apply", &path, ct, vsc(&n), &["/spec/driver", "#managers"])
        .await;
    p.created.push(item(VSC, &n));
}

async fn apply_patch_without_field_manager_is_invalid(p: &mut Probe<'_>) {
    let n = p.name("applynomgr");
    let ct = Some("application/apply-patch+yaml");
    p.patch("apply", &item(VSC, &n), ct, vsc(&n), &["#causes"])
        .await;
}

// ---- finalizers and deletion ----

async fn delete_with_finalizer_waits_for_its_removal(p: &mut Probe<'_>) {
    let n = p.name("finalizer");
    let obj = with(vsc(&n), "/metadata/finalizers", json!(["example.com/hold"]));
    p.post("create", VSC, obj, &[]).await;
    let look = [
        "?/metadata/deletionTimestamp",
        "/metadata/finalizers",
        "/metadata/deletionGracePeriodSeconds",
    ];
    p.call("delete", "DELETE", &item(VSC, &n), None, None, &look)
        .await;
    p.get("get", &item(VSC, &n), &look).await;
    p.call("delete again", "DELETE", &item(VSC, &n), None, None, &look)
        .await;
    let patch = json!({"metadata": {"finalizers": null}});
    p.patch("unhold", &item(VSC, &n), MERGE, patch, &look).await;
    p.get("gone", &item(VSC, &n), &[]).await;
}

async fn no_new_finalizer_once_deleting(p: &mut Probe<'_>) {
    let n = p.name("nonew");
    let obj = with(vsc(&n), "/metadata/finalizers", json!(["example.com/hold"]));
    p.post("create", VSC, obj, &[]).await;
    p.call("delete", "DELETE", &item(VSC, &n), None, None, &[])
        .await;
    let patch = json!({"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}});
    p.patch("add finalizer", &item(VSC, &n), MERGE, patch, &["#causes"])
        .await;
    let patch = json!({"metadata": {"labels": {"still": "writable"}}});
    p.patch("label", &item(VSC, &n), MERGE, patch, &["/metadata/labels"])
        .await;
}

async fn deletion_timestamp_cannot_be_cleared(p: &mut Probe<'_>) {
    let n = p.name("keepdeleting");
    let obj = with(vsc(&n), "/metadata/finalizers", json!(["example.com/hold"]));
    p.post("create", VSC, obj, &[]).await;
    let mut obj = p
        .call("delete", "DELETE", &item(VSC, &n), None, None, &[])
        .await;
    obj["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("deletionTimestamp");
    p.put(
        "update",
        &item(VSC, &n),
        obj,
        &["?/metadata/deletionTimestamp"],
    )
    .await;
}

async fn delete_without_finalizers_is_immediate(p: &mut Probe<'_>) {
    let n = p.name("delete");
    p.create_vsc(&n).await;
    p.call(
        "delete",
        "DELETE",
        &item(VSC, &n),
        None,
        None,
        &["/metadata/name", "/kind"],
    )
    .await;
    p.get("get", &item(VSC, &n), &[]).await;
}

async fn delete_of_a_missing_object_is_not_found(p: &mut Probe<'_>) {
    p.call(
        "delete",
        "DELETE",
        &item(VSC, &p.name("nodelete")),
        None,
        None,
        &[],
    )
    .await;
}

async fn delete_with_a_stale_precondition_conflicts(p: &mut Probe<'_>) {
    let n = p.name("precondition");
    let obj = p
        .call("create", "POST", VSC, None, Some(vsc(&n)), &[])
        .await;
    p.patch(
        "label",
        &item(VSC, &n),
        MERGE,
        json!({"metadata": {"labels": {"a": "b"}}}),
        &[],
    )
    .await;
    let opts = json!({"kind": "DeleteOptions", "apiVersion": "v1",
                      "preconditions": {"resourceVersion": obj["metadata"]["resourceVersion"]}});
    p.call("delete", "DELETE", &item(VSC, &n), None, Some(opts), &[])
        .await;
    let opts = json!({"kind": "DeleteOptions", "apiVersion": "v1",
                      "preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}});
    p.call(
        "delete by uid",
        "DELETE",
        &item(VSC, &n),
        None,
        Some(opts),
        &[],
    )
    .await;
}

// ---- lists and selectors ----

/// Creates contents `a`, `b`, `c` with labels; returns their names.
async fn three_labelled(p: &mut Probe<'_>, tag: &str) {
    for (n, app) in [("a", "x"), ("b", "y"), ("c", "")] {
        let mut obj = vsc(&p.name(&format!("{tag}-{n}")));
        obj["metadata"]["labels"] = if app.is_empty() {
            json!({"run": p.prefix})
        } else {
            json!({"run": p.prefix, "app": app})
        };
        p.post("create", VSC, obj, &[]).await;
    }
}

async fn list_with_label_selectors(p: &mut Probe<'_>) {
    three_labelled(p, "sel").await;
    let run = p.prefix.to_string();
    for (label, sel) in [
        ("equality", format!("run={run},app=x")),
        ("inequality", format!("run={run},app!=x")),
        ("set", format!("run={run},app+in+(x,y)")),
        ("notin", format!("run={run},app+notin+(x)")),
        ("exists", format!("run={run},app")),
        ("absent", format!("run={run},!app")),
    ] {
        let path = format!("{VSC}?labelSelector={sel}");
        p.get(label, &path, &["#names", "/kind"]).await;
    }
}

async fn list_with_an_invalid_label_selector_is_bad_request(p: &mut Probe<'_>) {
    let path = format!("{VSC}?labelSelector=a%3D%3D%3Db");
    p.get("list", &path, &[]).await;
}

async fn list_with_field_selectors(p: &mut Probe<'_>) {
    three_labelled(p, "field").await;
    let name = p.name("field-b");
    let path = format!("{VSC}?fieldSelector=metadata.name%3D{name}");
    p.get("by name", &path, &["#names"]).await;
    let path = format!(
        "{VSC}?fieldSelector=metadata.name!%3D{name}&labelSelector=run%3D{}",
        p.prefix
    );
    p.get("not name", &path, &["#names"]).await;
    let path = format!("{VSC}?fieldSelector=spec.driver%3Dx");
    p.get("unsupported", &path, &[]).await;
}

async fn list_pages_with_limit_and_continue(p: &mut Probe<'_>) {
    three_labelled(p, "page").await;
    let path = format!("{VSC}?labelSelector=run%3D{}&limit=2", p.prefix);
    let first = p
        .call(
            "first page",
            "GET",
            &path,
            None,
            None,
            &[
                "#names",
                "?/metadata/continue",
                "?/metadata/remainingItemCount",
            ],
        )
        .await;
    let token = first["metadata"]["continue"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let path = format!("{path}&continue={token}");
    p.get("second page", &path, &["#names", "?/metadata/continue"])
        .await;
    let path = format!("{VSC}?limit=2&continue=not-a-token");
    p.get("bad token", &path, &[]).await;
}

async fn list_with_resource_version_match(p: &mut Probe<'_>) {
    let n = p.name("rvmatch");
    p.create_vsc(&n).await;
    let sel = format!("labelSelector=run%3D{}", p.prefix);
    let path = format!("{VSC}?{sel}&resourceVersion=1&resourceVersionMatch=NotOlderThan");
    p.get("not older than 1", &path, &["#names"]).await;
    let path = format!("{VSC}?{sel}&resourceVersionMatch=NotOlderThan");
    p.get("match without version", &path, &[]).await;
    let path = format!("{VSC}?{sel}&resourceVersion=1&resourceVersionMatch=Sometimes");
    p.get("unknown match", &path, &[]).await;
    let path = format!("{VSC}?resourceVersion=x");
    p.get("bad version", &path, &[]).await;
}

// ---- watches ----

async fn watch_from_a_version_sees_later_changes(p: &mut Probe<'_>) {
    let n = p.name("watched");
    let obj = p
        .call("create", "POST", VSC, None, Some(vsc(&n)), &[])
        .await;
    let rv = obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    p.patch(
        "label",
        &item(VSC, &n),
        MERGE,
        json!({"metadata": {"labels": {"a": "b"}}}),
        &[],
    )
    .await;
    p.call("delete", "DELETE", &item(VSC, &n), None, None, &[])
        .await;
    p.watch("watch", &format!("{VSC}?resourceVersion={rv}"), 2)
        .await;
}

async fn watch_from_zero_starts_with_the_current_objects(p: &mut Probe<'_>) {
    three_labelled(p, "initial").await;
    let path = format!("{VSC}?labelSelector=run%3D{}&resourceVersion=0", p.prefix);
    p.watch("watch", &path, 3).await;
}

async fn watch_from_a_too_old_version_is_expired(p: &mut Probe<'_>) {
    p.watch("watch", &format!("{VSC}?resourceVersion=1"), 1)
        .await;
}

async fn watch_with_a_selector_sees_objects_leave_and_enter(p: &mut Probe<'_>) {
    let n = p.name("moving");
    let obj = with(
        vsc(&n),
        "/metadata/labels",
        json!({"run": p.prefix, "in": "yes"}),
    );
    let obj = p.post("create", VSC, obj, &[]).await;
    let rv = obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    p.patch(
        "out",
        &item(VSC, &n),
        MERGE,
        json!({"metadata": {"labels": {"in": "no"}}}),
        &[],
    )
    .await;
    p.patch(
        "in",
        &item(VSC, &n),
        MERGE,
        json!({"metadata": {"labels": {"in": "yes"}}}),
        &[],
    )
    .await;
    let path = format!(
        "{VSC}?labelSelector=in%3Dyes,run%3D{}&resourceVersion={rv}",
        p.prefix
    );
    p.watch("watch", &path, 2).await;
}

async fn watch_of_status_writes_and_finalizer_removal(p: &mut Probe<'_>) {
    let n = p.name("statuswatch");
    let obj = with(vsc(&n), "/metadata/finalizers", json!(["example.com/hold"]));
    let obj = p.post("create", VSC, obj, &[]).await;
    let rv = obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let path = format!("{}/status", item(VSC, &n));
    p.patch(
        "status",
        &path,
        MERGE,
        json!({"status": {"readyToUse": true}}),
        &[],
    )
    .await;
    p.call("delete", "DELETE", &item(VSC, &n), None, None, &[])
        .await;
    p.patch(
        "unhold",
        &item(VSC, &n),
        MERGE,
        json!({"metadata": {"finalizers": null}}),
        &[],
    )
    .await;
    p.watch("watch", &format!("{VSC}?resourceVersion={rv}"), 4)
        .await;
}

async fn watch_with_initial_events_needs_not_older_than(p: &mut Probe<'_>) {
    p.watch(
        "no match",
        &format!("{VSC}?sendInitialEvents=true&allowWatchBookmarks=true"),
        1,
    )
    .await;
    let path =
        format!("{VSC}?sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=");
    p.watch("no bookmarks", &path, 1).await;
}

async fn watch_with_initial_events_lists_then_follows(p: &mut Probe<'_>) {
    three_labelled(p, "stream").await;
    let path = format!(
        "{VSC}?labelSelector=run%3D{}&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
        p.prefix
    );
    p.watch("watch", &path, 3).await;
}

// ---- managedFields ----

async fn managed_fields_are_kept_per_manager_and_subresource(p: &mut Probe<'_>) {
    let n = p.name("managed");
    p.post("create", VSC, vsc(&n), &["#managers"]).await;
    let path = format!("{}/status?fieldManager=status-writer", item(VSC, &n));
    p.patch(
        "status",
        &path,
        MERGE,
        json!({"status": {"readyToUse": true}}),
        &["#managers"],
    )
    .await;
    let path = format!("{}?fieldManager=labeller", item(VSC, &n));
    p.patch(
        "label",
        &path,
        MERGE,
        json!({"metadata": {"labels": {"a": "b"}}}),
        &["#managers"],
    )
    .await;
    let path = format!("{VSC}?labelSelector=a%3Db");
    p.get(
        "list",
        &path,
        &["#names", "?/items/0/metadata/managedFields"],
    )
    .await;
}

async fn managed_fields_cleared_with_one_empty_entry(p: &mut Probe<'_>) {
    let n = p.name("clear");
    p.create_vsc(&n).await;
    let patch = json!({"metadata": {"managedFields": [{}]}});
    p.patch(
        "clear",
        &item(VSC, &n),
        MERGE,
        patch,
        &["?/metadata/managedFields", "#managers"],
    )
    .await;
    p.get("get", &item(VSC, &n), &["?/metadata/managedFields"])
        .await;
}

async fn managed_fields_empty_list_changes_nothing(p: &mut Probe<'_>) {
    let n = p.name("keepmf");
    p.create_vsc(&n).await;
    let patch = json!({"metadata": {"managedFields": [], "labels": {"a": "b"}}});
    p.patch("patch", &item(VSC, &n), MERGE, patch, &["#managers"])
        .await;
}

// ---- other kinds ----

async fn group_content_with_both_sources_is_invalid(p: &mut Probe<'_>) {
    let obj = json!({
        "apiVersion": "groupsnapshot.storage.k8s.io/v1", "kind": "VolumeGroupSnapshotContent",
        "metadata": {"name": p.name("group")},
        "spec": {"deletionPolicy": "Delete", "driver": "diff.csi.k8s.io",
                 "source": {"volumeHandles": ["a"], "groupSnapshotHandles": {"volumeGroupSnapshotHandle": "g", "volumeSnapshotHandles": ["s"]}},
                 "volumeGroupSnapshotRef": {"name": "g", "namespace": "default"}}
    });
    p.post("create", VGSC, obj.clone(), &["#causes"]).await;
    let mut ok = obj;
    ok["spec"]["source"]
        .as_object_mut()
        .unwrap()
        .remove("groupSnapshotHandles");
    p.post("valid", VGSC, ok, &["/spec/source", "?/status"])
        .await;
}

async fn secret_in_a_missing_namespace_is_not_found(p: &mut Probe<'_>) {
    let secret =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": p.name("secret")}});
    let path = "/api/v1/namespaces/no-such-namespace-differential/secrets";
    p.post("create", path, secret, &["/details/kind", "/details/name"])
        .await;
}

async fn secret_with_a_bad_key_is_invalid(p: &mut Probe<'_>) {
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": p.name("badkey")},
                        "data": {"bad key!": "dg=="}});
    p.post("create", SECRETS, secret, &["#causes"]).await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": p.name("goodkey")},
                        "stringData": {"good": "v"}});
    p.post(
        "valid",
        SECRETS,
        secret,
        &["/data", "/type", "?/stringData"],
    )
    .await;
    p.call(
        "delete",
        "DELETE",
        &item(SECRETS, &p.name("goodkey")),
        None,
        None,
        &["/details/kind"],
    )
    .await;
}

async fn secret_namespace_mismatch_is_bad_request(p: &mut Probe<'_>) {
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": p.name("secretns"), "namespace": "kube-system"}});
    p.post("create", SECRETS, secret, &[]).await;
}

async fn lease_update_with_stale_version_conflicts(p: &mut Probe<'_>) {
    let n = p.name("lease");
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                       "metadata": {"name": n}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}});
    let created = p
        .call(
            "create",
            "POST",
            LEASES,
            None,
            Some(lease),
            &["/spec/holderIdentity"],
        )
        .await;
    let first = with(created.clone(), "/spec/holderIdentity", json!("b"));
    p.put("take", &item(LEASES, &n), first, &["/spec/holderIdentity"])
        .await;
    let stale = with(created, "/spec/holderIdentity", json!("c"));
    p.put("stale", &item(LEASES, &n), stale, &[]).await;
}

async fn event_is_created_and_listed_by_field(p: &mut Probe<'_>) {
    let n = p.name("event");
    let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": n, "namespace": "default"},
                    "involvedObject": {"kind": "VolumeSnapshotContent", "name": p.name("content"),
                                       "apiVersion": "snapshot.storage.k8s.io/v1"},
                    "reason": "Differential", "message": "m", "type": "Normal", "count": 1,
                    "source": {"component": "differential"}});
    p.post("create", EVENTS, ev, &["/reason", "/count"]).await;
    let path = format!(
        "{EVENTS}?fieldSelector=involvedObject.name%3D{},reason%3DDifferential",
        p.name("content")
    );
    p.get("list", &path, &["#names"]).await;
    let path = format!("{EVENTS}?fieldSelector=involvedObject.nothing%3Dx");
    p.get("unsupported field", &path, &[]).await;
}

/// The sequences, in the order they run.
fn cases() -> Vec<(&'static str, CaseFn)> {
    vec![
        case!(create_returns_the_object_without_status),
        case!(create_twice_is_already_exists),
        case!(get_missing_is_not_found),
        case!(create_without_driver_is_invalid),
        case!(create_with_both_sources_is_invalid),
        case!(create_with_bad_deletion_policy_is_invalid),
        case!(create_prunes_unknown_fields),
        case!(create_with_uppercase_name_is_invalid),
        case!(create_with_mismatched_kind_is_bad_request),
        case!(create_with_malformed_json_is_bad_request),
        case!(create_with_generate_name_gets_a_name),
        case!(dry_run_create_stores_nothing),
        case!(get_with_resource_version_zero),
        case!(update_with_stale_version_conflicts),
        case!(update_without_version_is_unconditional),
        case!(update_of_immutable_source_is_invalid),
        case!(update_of_main_resource_ignores_status),
        case!(status_update_ignores_spec),
        case!(status_update_with_stale_version_conflicts),
        case!(status_of_a_missing_object_is_not_found),
        case!(status_subresource_of_a_class_is_not_found),
        case!(class_with_bad_deletion_policy_is_invalid),
        case!(status_merge_patch_sets_status_only),
        case!(merge_patch_of_labels_keeps_generation),
        case!(merge_patch_of_spec_bumps_generation),
        case!(merge_patch_with_stale_version_conflicts),
        case!(merge_patch_of_a_missing_object_is_not_found),
        case!(json_patch_adds_and_removes_an_annotation),
        case!(json_patch_failing_test_is_refused),
        case!(json_patch_removing_a_missing_path_is_refused),
        case!(json_patch_replacing_status_on_the_subresource),
        case!(json_patch_that_breaks_the_schema_is_invalid),
        case!(strategic_merge_patch_of_a_custom_resource_is_unsupported),
        case!(unknown_content_type_is_unsupported),
        case!(apply_patch_creates_and_records_the_manager),
        case!(apply_patch_without_field_manager_is_invalid),
        case!(delete_with_finalizer_waits_for_its_removal),
        case!(no_new_finalizer_once_deleting),
        case!(deletion_timestamp_cannot_be_cleared),
        case!(delete_without_finalizers_is_immediate),
        case!(delete_of_a_missing_object_is_not_found),
        case!(delete_with_a_stale_precondition_conflicts),
        case!(list_with_label_selectors),
        case!(list_with_an_invalid_label_selector_is_bad_request),
        case!(list_with_field_selectors),
        case!(list_pages_with_limit_and_continue),
        case!(list_with_resource_version_match),
        case!(watch_from_a_version_sees_later_changes),
        case!(watch_from_zero_starts_with_the_current_objects),
        case!(watch_from_a_too_old_version_is_expired),
        case!(watch_with_a_selector_sees_objects_leave_and_enter),
        case!(watch_of_status_writes_and_finalizer_removal),
        case!(watch_with_initial_events_needs_not_older_than),
        case!(watch_with_initial_events_lists_then_follows),
        case!(managed_fields_are_kept_per_manager_and_subresource),
        case!(managed_fields_cleared_with_one_empty_entry),
        case!(managed_fields_empty_list_changes_nothing),
        case!(group_content_with_both_sources_is_invalid),
        case!(secret_in_a_missing_namespace_is_not_found),
        case!(secret_with_a_bad_key_is_invalid),
        case!(secret_namespace_mismatch_is_bad_request),
        case!(lease_update_with_stale_version_conflicts),
        case!(event_is_created_and_listed_by_field),
    ]
}

async fn client_from(path: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("{ENV}={}: {e}", path.display()));
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{ENV}={}: {e}", path.display()));
    kube::Client::try_from(config).expect("a client for the real server")
}

/// Runs every sequence on both sides; returns the divergences.
async fn run(real_kubeconfig: &Path) -> Vec<String> {
    let embedded = ApiServer::start(ApiServerOptions {
        crd_schemas: crds::crd_dir(),
        ..Default::default()
    })
    .await
    .expect("embedded API server starts");
    let sides = [
        Side {
            client: embedded.client().await,
        },
        Side {
            client: client_from(real_kubeconfig).await,
        },
    ];
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let mut divergences = Vec::new();
    let table = cases();
    for (i, (name, case)) in table.iter().enumerate() {
        let prefix = format!("diff-{run_id}-{i}");
        let mut seen: Vec<Vec<String>> = Vec::new();
        for side in &sides {
            let mut probe = Probe {
                side,
                prefix: &prefix,
                seen: Vec::new(),
                created: Vec::new(),
            };
            case(&mut probe).await;
            probe.clean().await;
            seen.push(probe.seen);
        }
        if seen[0] == seen[1] {
            say(&format!("same     {name}"));
        } else {
            say(&format!("DIFFERS  {name}"));
            for (e, r) in seen[0].iter().zip(&seen[1]).filter(|(e, r)| e != r) {
                say(&format!("    embedded: {e}\n    real:     {r}"));
            }
            if seen[0].len() != seen[1].len() {
                say(&format!(
                    "    {} vs {} observations",
                    seen[0].len(),
                    seen[1].len()
                ));
            }
            divergences.push(name.to_string());
        }
    }
    say(&format!(
        "apiserver_differential: {} sequences, {} divergences",
        table.len(),
        divergences.len()
    ));
    divergences
}

#[test]
fn embedded_server_answers_like_a_real_one() {
    let Some(kubeconfig) = std::env::var_os(ENV) else {
        say(&format!("apiserver_differential: skipped ({ENV} not set)"));
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let divergences = runtime.block_on(run(Path::new(&kubeconfig)));
    assert!(
        divergences.is_empty(),
        "divergent sequences: {divergences:?}"
    );
}
