//! The snapshot-controller's side of the benchmark: the objects it writes
//! (a class, dynamic VolumeSnapshotContents, the delete sequence), written
//! in-process so they stay out of the request counts, and a watch that
//! timestamps what the sidecar did to them.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::k8s::keys;
use crate::testing::apiserver::ApiServer;

/// REST path of VolumeSnapshotContents.
const CONTENTS: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents";
/// REST path of VolumeSnapshotClasses.
const CLASSES: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses";
/// Name of the benchmark's VolumeSnapshotClass.
pub const CLASS: &str = "bench-class";
/// Namespace of the (never created) VolumeSnapshots the contents point to.
const NAMESPACE: &str = "default";
/// How long one read of the watch waits before checking for shutdown.
const WATCH_POLL: Duration = Duration::from_millis(200);
/// Pause before reopening a watch that failed to open.
const REOPEN_PAUSE: Duration = Duration::from_millis(50);

/// Name of the `i`-th content of a run labelled `run`.
pub fn content_name(run: &str, i: usize) -> String {
    format!("snapcontent-{run}-{i:05}")
}

/// A UID for the `i`-th VolumeSnapshot of a run: fixed shape, unique per
/// run and index.
fn vs_uid(run_id: u32, i: usize) -> String {
    format!("{run_id:08x}-0000-4000-8000-{i:012x}")
}

/// The VolumeSnapshotClass the contents name.
pub fn class(driver: &str) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotClass",
        "metadata": {"name": CLASS},
        "driver": driver,
        "deletionPolicy": keys::DELETION_POLICY_DELETE,
    })
}

/// A dynamic VolumeSnapshotContent as the snapshot-controller creates it
/// for VolumeSnapshot `snapshot-<run>-<i>`: class, source volume,
/// bound reference with UID, and the bound-protection finalizer.
pub fn dynamic_content(driver: &str, run: &str, run_id: u32, i: usize) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {
            "name": content_name(run, i),
            "finalizers": [keys::FINALIZER_VSC],
        },
        "spec": {
            "deletionPolicy": keys::DELETION_POLICY_DELETE,
            "driver": driver,
            "source": {"volumeHandle": format!("volume-{run}-{i:05}")},
            "volumeSnapshotClassName": CLASS,
            "volumeSnapshotRef": {
                "apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshot",
                "namespace": NAMESPACE,
                "name": format!("snapshot-{run}-{i:05}"),
                "uid": vs_uid(run_id, i),
            },
        },
    })
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

/// Fails unless the answer is a success.
fn check(what: &str, r: &crate::testing::apiserver::raw::RawResponse) -> io::Result<()> {
    if (200..300).contains(&r.code) {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what}: HTTP {}: {}",
            r.code, r.body
        )))
    }
}

/// Creates the VolumeSnapshotClass.
pub async fn create_class(server: &ApiServer, driver: &str) -> io::Result<()> {
    let r = server
        .local_request("POST", CLASSES, None, Some(&class(driver)))
        .await?;
    check("create class", &r)
}

/// Creates one content.
pub async fn create_content(server: &ApiServer, obj: &Value) -> io::Result<()> {
    let r = server
        .local_request("POST", CONTENTS, None, Some(obj))
        .await?;
    check("create content", &r)
}

/// Writes a content's status (merge patch of the status subresource).
pub async fn write_status(server: &ApiServer, name: &str, status: &Value) -> io::Result<()> {
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

/// Deletes a content as the snapshot-controller does once its
/// VolumeSnapshot is deleted: the being-deleted annotation, then DELETE
/// (the finalizer keeps the object until the sidecar is done).
pub async fn delete_content(server: &ApiServer, name: &str) -> io::Result<()> {
    let ann =
        json!({"metadata": {"annotations": {keys::ANN_VS_BEING_DELETED: keys::ANN_VALUE_YES}}});
    let r = server
        .local_request(
            "PATCH",
            &format!("{CONTENTS}/{name}"),
            Some("application/merge-patch+json"),
            Some(&ann),
        )
        .await?;
    check("annotate content", &r)?;
    let r = server
        .local_request("DELETE", &format!("{CONTENTS}/{name}"), None, None)
        .await?;
    check("delete content", &r)
}

/// What the watch saw of one content.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen {
    /// First event with `status.readyToUse: true`.
    pub ready: Option<Instant>,
    /// The being-created annotation is on the newest version.
    pub being_created: bool,
    /// The DELETED event.
    pub gone: Option<Instant>,
}

/// Watches VolumeSnapshotContents (over HTTP, the server's raw watch) and
/// records per name when each became ready and when it was gone.
#[derive(Debug)]
pub struct Tracker {
    seen: Arc<Mutex<HashMap<String, Seen>>>,
    task: JoinHandle<()>,
}

impl Tracker {
    /// Starts watching from the server's current version. Events of
    /// objects created before this call are not reported.
    pub async fn start(server: &ApiServer) -> io::Result<Tracker> {
        let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
        let rv = server.resource_version();
        let mut watch = open(server, rv).await?;
        let endpoint = server.endpoint();
        let map = seen.clone();
        let task = tokio::spawn(async move {
            let mut rv = rv;
            loop {
                match watch.next(WATCH_POLL).await {
                    Ok(Some(ev)) => {
                        if let Some(v) = record(&map, &ev) {
                            rv = v;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                    // The stream ended or broke: resume from the last version.
                    _ => loop {
                        let path = watch_path(rv);
                        match crate::testing::apiserver::raw::RawWatch::open(&endpoint, &path).await
                        {
                            Ok(w) => {
                                watch = w;
                                break;
                            }
                            Err(_) => tokio::time::sleep(REOPEN_PAUSE).await,
                        }
                    },
                }
            }
        });
        Ok(Tracker { seen, task })
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn watch_path(rv: u64) -> String {
    format!("{CONTENTS}?watch=true&allowWatchBookmarks=true&resourceVersion={rv}")
}

async fn open(server: &ApiServer, rv: u64) -> io::Result<crate::testing::apiserver::raw::RawWatch> {
    let w = server.watch_raw(&watch_path(rv)).await?;
    if w.code != 200 {
        return Err(io::Error::other(format!("watch answered HTTP {}", w.code)));
    }
    Ok(w)
}

/// Records one watch event; returns its resourceVersion.
fn record(map: &Mutex<HashMap<String, Seen>>, ev: &Value) -> Option<u64> {
    let now = Instant::now();
    let kind = ev.get("type")?.as_str()?;
    let obj = ev.get("object")?;
    let meta = obj.get("metadata")?;
    let rv = meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok());
    if kind == "BOOKMARK" || kind == "ERROR" {
        return rv;
    }
    let name = meta.get("name")?.as_str()?;
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    let s = map.entry(name.to_string()).or_default();
    if kind == "DELETED" {
        s.gone.get_or_insert(now);
        return rv;
    }
    let ready = obj
        .pointer("/status/readyToUse")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if ready {
        s.ready.get_or_insert(now);
    }
    s.being_created = meta
        .pointer("/annotations")
        .and_then(|a| a.get(keys::ANN_VS_BEING_CREATED))
        .is_some();
    rv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_ready_annotation_and_deletion() {
        let map = Mutex::new(HashMap::new());
        let ev = |kind: &str, obj: Value| json!({"type": kind, "object": obj});
        let pending = json!({"metadata": {"name": "a", "resourceVersion": "5",
            "annotations": {keys::ANN_VS_BEING_CREATED: "yes"}}, "status": {"readyToUse": true}});
        assert_eq!(record(&map, &ev("MODIFIED", pending)), Some(5));
        let s = map.lock().unwrap()["a"];
        assert!(s.ready.is_some() && s.being_created && s.gone.is_none());
        let done = json!({"metadata": {"name": "a", "resourceVersion": "6"}, "status": {"readyToUse": true}});
        record(&map, &ev("MODIFIED", done.clone()));
        assert!(!map.lock().unwrap()["a"].being_created);
        record(&map, &ev("DELETED", done));
        assert!(map.lock().unwrap()["a"].gone.is_some());
    }

    #[test]
    fn contents_are_dynamic_with_a_bound_reference() {
        let c = dynamic_content("d", "r", 7, 3);
        assert_eq!(c["metadata"]["name"], "snapcontent-r-00003");
        assert_eq!(c["metadata"]["finalizers"][0], keys::FINALIZER_VSC);
        assert_eq!(c["spec"]["source"]["volumeHandle"], "volume-r-00003");
        assert_eq!(c["spec"]["volumeSnapshotClassName"], CLASS);
        assert_eq!(
            c["spec"]["volumeSnapshotRef"]["uid"],
            "00000007-0000-4000-8000-000000000003"
        );
    }
}
