//! The snapshot-controller's side of the benchmark: the objects it writes
//! (a class, dynamic VolumeSnapshotContents, the delete sequence) and a
//! watch that timestamps what the sidecar did to them. On the embedded API
//! server the writes are made in-process, so they stay out of its request
//! counts; on a real cluster they go through the benchmark's own client.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::k8s::keys;
use crate::testing::apiserver::ApiServer;
use crate::testing::apiserver::raw::RawResponse;

/// REST path of VolumeSnapshotContents.
const CONTENTS: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents";
/// REST path of VolumeSnapshotClasses.
const CLASSES: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses";
/// Namespace of the (never created) VolumeSnapshots the contents point to.
const NAMESPACE: &str = "default";
/// How long the watch may take to list what exists before it counts as
/// broken.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// The VolumeSnapshotContent resource.
pub fn content_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotContent"),
        "volumesnapshotcontents",
    )
}

/// The VolumeSnapshotClass resource.
pub fn class_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotClass"),
        "volumesnapshotclasses",
    )
}

/// Name of the `i`-th content of a run labelled `run`.
pub fn content_name(run: &str, i: usize) -> String {
    format!("snapcontent-{run}-{i:05}")
}

/// A UID for the `i`-th VolumeSnapshot of a run: fixed shape, unique per
/// run and index.
fn vs_uid(run_id: u32, i: usize) -> String {
    format!("{run_id:08x}-0000-4000-8000-{i:012x}")
}

/// The objects of one run, as the snapshot-controller would write them.
#[derive(Debug, Clone)]
pub struct Workload {
    /// CSI driver name.
    pub driver: String,
    /// Name of the VolumeSnapshotClass.
    pub class: String,
    /// Run label in the object names.
    pub run: String,
    /// Distinguishes the VolumeSnapshot UIDs of runs.
    pub run_id: u32,
    /// Source volume of every snapshot (`None`: a made-up one per content,
    /// for a driver that snapshots any handle).
    pub volume: Option<String>,
    /// Labels put on every object.
    pub labels: BTreeMap<String, String>,
}

impl Workload {
    /// The VolumeSnapshotClass the contents name.
    pub fn class(&self) -> Value {
        json!({
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotClass",
            "metadata": {"name": self.class, "labels": self.labels},
            "driver": self.driver,
            "deletionPolicy": keys::DELETION_POLICY_DELETE,
        })
    }

    /// The `i`-th dynamic VolumeSnapshotContent as the snapshot-controller
    /// creates it for VolumeSnapshot `snapshot-<run>-<i>`: class, source
    /// volume, bound reference with UID, and the bound-protection finalizer.
    pub fn content(&self, i: usize) -> Value {
        let run = &self.run;
        let volume = match &self.volume {
            Some(v) => v.clone(),
            None => format!("volume-{run}-{i:05}"),
        };
        json!({
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent",
            "metadata": {
                "name": content_name(run, i),
                "labels": self.labels,
                "finalizers": [keys::FINALIZER_VSC],
            },
            "spec": {
                "deletionPolicy": keys::DELETION_POLICY_DELETE,
                "driver": self.driver,
                "source": {"volumeHandle": volume},
                "volumeSnapshotClassName": self.class,
                "volumeSnapshotRef": {
                    "apiVersion": "snapshot.storage.k8s.io/v1",
                    "kind": "VolumeSnapshot",
                    "namespace": NAMESPACE,
                    "name": format!("snapshot-{run}-{i:05}"),
                    "uid": vs_uid(self.run_id, i),
                },
            },
        })
    }
}

/// The status of a content the sidecar already made ready.
pub fn ready_status(run: &str, i: usize) -> Value {
    json!({"status": {
        "snapshotHandle": format!("handle-{run}-{i:05}"),
        "creationTime": 1_700_000_000_000_000_000_i64,
        "readyToUse": true,
        "restoreSize": 1_073_741_824_i64,
    }})
}

/// The being-deleted annotation the snapshot-controller sets before it
/// deletes a content.
fn being_deleted() -> Value {
    json!({"metadata": {"annotations": {keys::ANN_VS_BEING_DELETED: keys::ANN_VALUE_YES}}})
}

/// Where the benchmark writes: the embedded server in-process, or a real
/// cluster through a client.
#[derive(Clone, Copy)]
pub enum Writer<'a> {
    /// The embedded API server.
    Local(&'a ApiServer),
    /// Any API server.
    Client(&'a kube::Client),
}

impl Writer<'_> {
    /// Creates the VolumeSnapshotClass.
    pub async fn create_class(&self, class: &Value) -> io::Result<()> {
        match self {
            Writer::Local(server) => {
                let r = server
                    .local_request("POST", CLASSES, None, Some(class))
                    .await?;
                check("create class", &r)
            }
            Writer::Client(client) => {
                let api: Api<DynamicObject> = Api::all_with((*client).clone(), &class_resource());
                api.create(&PostParams::default(), &dynamic(class)?)
                    .await
                    .map(drop)
                    .map_err(|e| io::Error::other(format!("create class: {e}")))
            }
        }
    }

    /// Creates one content.
    pub async fn create_content(&self, obj: &Value) -> io::Result<()> {
        match self {
            Writer::Local(server) => {
                let r = server
                    .local_request("POST", CONTENTS, None, Some(obj))
                    .await?;
                check("create content", &r)
            }
            Writer::Client(client) => contents(client)
                .create(&PostParams::default(), &dynamic(obj)?)
                .await
                .map(drop)
                .map_err(|e| io::Error::other(format!("create content: {e}"))),
        }
    }

    /// Writes a content's status (merge patch of the status subresource).
    pub async fn write_status(&self, name: &str, status: &Value) -> io::Result<()> {
        match self {
            Writer::Local(server) => {
                let r = server
                    .local_request(
                        "PATCH",
                        &format!("{CONTENTS}/{name}/status"),
                        Some("application/merge-patch+json"),
                        Some(status),
                    )
                    .await?;
                check("write status", &r)
            }
            Writer::Client(client) => contents(client)
                .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
                .await
                .map(drop)
                .map_err(|e| io::Error::other(format!("write status of {name}: {e}"))),
        }
    }

    /// Deletes a content as the snapshot-controller does once its
    /// VolumeSnapshot is deleted: the being-deleted annotation, then DELETE
    /// (the finalizer keeps the object until the sidecar is done). A
    /// content already gone counts as deleted.
    pub async fn delete_content(&self, name: &str) -> io::Result<()> {
        match self {
            Writer::Local(server) => {
                let path = format!("{CONTENTS}/{name}");
                let merge = Some("application/merge-patch+json");
                let r = server
                    .local_request("PATCH", &path, merge, Some(&being_deleted()))
                    .await?;
                check("annotate content", &r)?;
                let r = server.local_request("DELETE", &path, None, None).await?;
                check("delete content", &r)
            }
            Writer::Client(client) => {
                let api = contents(client);
                let gone = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 404);
                match api
                    .patch(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(being_deleted()),
                    )
                    .await
                {
                    Err(e) if gone(&e) => return Ok(()),
                    Err(e) => return Err(io::Error::other(format!("annotate {name}: {e}"))),
                    Ok(_) => {}
                }
                match api.delete(name, &DeleteParams::default()).await {
                    Err(e) if !gone(&e) => Err(io::Error::other(format!("delete {name}: {e}"))),
                    _ => Ok(()),
                }
            }
        }
    }
}

/// The contents API of a client.
pub fn contents(client: &kube::Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &content_resource())
}

fn dynamic(obj: &Value) -> io::Result<DynamicObject> {
    serde_json::from_value(obj.clone()).map_err(io::Error::other)
}

/// Fails unless the answer is a success.
fn check(what: &str, r: &RawResponse) -> io::Result<()> {
    if (200..300).contains(&r.code) {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what}: HTTP {}: {}",
            r.code, r.body
        )))
    }
}

/// What the watch saw of one content.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen {
    /// First event with `status.readyToUse: true`.
    pub ready: Option<Instant>,
    /// The being-created annotation is on the newest version.
    pub being_created: bool,
    /// A version with a deletion timestamp or the being-deleted annotation
    /// was seen (before the benchmark deletes, only another controller
    /// writes these).
    pub deleting: bool,
    /// The DELETED event (or a re-list without the object).
    pub gone: Option<Instant>,
}

/// Watches VolumeSnapshotContents (all, or those with a label selector)
/// and records per name when each became ready and when it was gone.
#[derive(Debug)]
pub struct Tracker {
    seen: Arc<Mutex<HashMap<String, Seen>>>,
    events: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Tracker {
    /// Starts watching; returns once the initial list was read, so that
    /// every later change is seen.
    pub async fn start(client: kube::Client, selector: Option<&str>) -> io::Result<Tracker> {
        let api: Api<DynamicObject> = Api::all_with(client, &content_resource());
        let mut config = watcher::Config::default();
        if let Some(s) = selector {
            config = config.labels(s);
        }
        let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
        let events = Arc::new(AtomicU64::new(0));
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn({
            let seen = seen.clone();
            let events = events.clone();
            async move {
                let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
                let mut synced = Some(synced_tx);
                let mut listed = HashSet::new();
                while let Some(ev) = stream.next().await {
                    let Ok(ev) = ev else { continue };
                    events.fetch_add(1, Ordering::Relaxed);
                    let mut map = seen.lock().unwrap_or_else(PoisonError::into_inner);
                    match ev {
                        watcher::Event::Apply(obj) => record(&mut map, &obj, false),
                        watcher::Event::Delete(obj) => record(&mut map, &obj, true),
                        watcher::Event::Init => listed.clear(),
                        watcher::Event::InitApply(obj) => {
                            listed.insert(obj.metadata.name.clone().unwrap_or_default());
                            record(&mut map, &obj, false);
                        }
                        watcher::Event::InitDone => {
                            // Deleted while the watch was down.
                            let now = Instant::now();
                            for (name, s) in map.iter_mut() {
                                if !listed.contains(name) {
                                    s.gone.get_or_insert(now);
                                }
                            }
                            if let Some(tx) = synced.take() {
                                let _ = tx.send(());
                            }
                        }
                    }
                }
            }
        });
        match tokio::time::timeout(SYNC_TIMEOUT, synced_rx).await {
            Ok(Ok(())) => Ok(Tracker { seen, events, task }),
            _ => {
                task.abort();
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the benchmark's watch of VolumeSnapshotContents did not sync",
                ))
            }
        }
    }

    /// What was seen of `name` so far.
    pub fn get(&self, name: &str) -> Seen {
        self.lock().get(name).copied().unwrap_or_default()
    }

    /// Counts the contents among `names` that satisfy `pred`.
    pub fn count(&self, names: &[String], pred: impl Fn(&Seen) -> bool) -> usize {
        let seen = self.lock();
        names
            .iter()
            .filter(|n| seen.get(n.as_str()).is_some_and(&pred))
            .count()
    }

    /// Watch events received so far.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Records one version of a content (`deleted`: its DELETED event).
fn record(map: &mut HashMap<String, Seen>, obj: &DynamicObject, deleted: bool) {
    let now = Instant::now();
    let Some(name) = obj.metadata.name.as_deref() else {
        return;
    };
    let s = map.entry(name.to_string()).or_default();
    if deleted {
        s.gone.get_or_insert(now);
        return;
    }
    let ready = obj
        .data
        .pointer("/status/readyToUse")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if ready {
        s.ready.get_or_insert(now);
    }
    let annotations = obj.metadata.annotations.as_ref();
    let has = |key: &str| annotations.is_some_and(|a| a.contains_key(key));
    s.being_created = has(keys::ANN_VS_BEING_CREATED);
    s.deleting |= obj.metadata.deletion_timestamp.is_some() || has(keys::ANN_VS_BEING_DELETED);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, annotations: &[&str], status: Value) -> DynamicObject {
        let annotations: BTreeMap<String, String> = annotations
            .iter()
            .map(|a| (a.to_string(), "yes".to_string()))
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": name, "annotations": annotations},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn records_ready_annotation_and_deletion() {
        let mut map = HashMap::new();
        let ready = json!({"readyToUse": true});
        record(
            &mut map,
            &object("a", &[keys::ANN_VS_BEING_CREATED], ready.clone()),
            false,
        );
        let s = map["a"];
        assert!(s.ready.is_some() && s.being_created && s.gone.is_none() && !s.deleting);
        record(&mut map, &object("a", &[], ready.clone()), false);
        assert!(!map["a"].being_created);
        record(
            &mut map,
            &object("a", &[keys::ANN_VS_BEING_DELETED], ready.clone()),
            false,
        );
        assert!(map["a"].deleting);
        record(&mut map, &object("a", &[], ready), true);
        assert!(map["a"].gone.is_some());
    }

    #[test]
    fn contents_are_dynamic_with_a_bound_reference() {
        let mut w = Workload {
            driver: "d".into(),
            class: "cls".into(),
            run: "r".into(),
            run_id: 7,
            volume: None,
            labels: BTreeMap::from([("k".to_string(), "v".to_string())]),
        };
        let c = w.content(3);
        assert_eq!(c["metadata"]["name"], "snapcontent-r-00003");
        assert_eq!(c["metadata"]["labels"]["k"], "v");
        assert_eq!(c["metadata"]["finalizers"][0], keys::FINALIZER_VSC);
        assert_eq!(c["spec"]["source"]["volumeHandle"], "volume-r-00003");
        assert_eq!(c["spec"]["volumeSnapshotClassName"], "cls");
        assert_eq!(
            c["spec"]["volumeSnapshotRef"]["uid"],
            "00000007-0000-4000-8000-000000000003"
        );
        w.volume = Some("vol-1".into());
        assert_eq!(w.content(4)["spec"]["source"]["volumeHandle"], "vol-1");
        assert_eq!(w.class()["metadata"]["name"], "cls");
    }
}
