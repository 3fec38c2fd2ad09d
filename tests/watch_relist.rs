//! The sidecar's re-list after its watch fell behind the API server's
//! history: the `csi-snapshotter` binary runs against the embedded API
//! server, which keeps only [`WINDOW`] watch events per resource, and the
//! mock CSI driver. Its watch of the contents is cut off (the open stream
//! ends and the next WATCH request is held) while, in the gap,
//! - a new dynamic content is created (it needs its create RPC),
//! - a ready content is deleted (it needs its delete RPC and the
//!   finalizer removal),
//! - a content is created and deleted (with the finalizer, so it waits
//!   being deleted; and without, so it is gone before the sidecar could
//!   see it),
//! - contents of another driver are created, changed and deleted,
//!
//! more events than the window holds. When the held WATCH goes on, its
//! version is older than the window: the server answers 200 with an ERROR
//! event carrying 410 Expired, and the sidecar must list again. Every
//! change of the gap must then be handled exactly once: one create RPC, one
//! delete RPC, the finalizer removed and the object gone, no RPC for the
//! content that was created and deleted, no write to another driver's
//! objects, and no backend snapshot leaked. The same table runs for
//! VolumeSnapshotContents and VolumeGroupSnapshotContents.

#[path = "support/crds.rs"]
mod crds;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use csi_snapshotter::k8s::keys;
use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions, RbacPolicy, WatchHistory};
use csi_snapshotter::testing::groups::GroupRequest;
use csi_snapshotter::testing::mock_driver::{MockConfig, MockDriver};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_csi-snapshotter");
/// The mock's driver name.
const DRIVER: &str = "mock.csi.k8s.io";
/// A driver no sidecar here serves.
const OTHER: &str = "other.csi.k8s.io";
/// Watch events kept per resource: the gap makes more than this, so a
/// watch resumed from before the gap is too old.
const WINDOW: usize = 4;
/// Longest wait for any one state; generous for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(90);
/// How often the test looks.
const POLL: Duration = Duration::from_millis(25);

/// What differs between the two kinds of content.
struct Kind {
    /// Store name and counter name.
    plural: &'static str,
    /// REST path of the collection.
    path: &'static str,
    /// REST path of the class collection.
    class_path: &'static str,
    finalizer: &'static str,
    being_created: &'static str,
    being_deleted: &'static str,
    create_rpc: &'static str,
    delete_rpc: &'static str,
    /// The class object for `driver`.
    class: fn(driver: &str) -> Value,
    /// A dynamic content `name` of `driver`, bound to a new UID, with the
    /// bound-protection finalizer.
    content: fn(name: &str, driver: &str) -> Value,
}

const CONTENTS: Kind = Kind {
    plural: "volumesnapshotcontents",
    path: "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents",
    class_path: "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses",
    finalizer: keys::FINALIZER_VSC,
    being_created: keys::ANN_VS_BEING_CREATED,
    being_deleted: keys::ANN_VS_BEING_DELETED,
    create_rpc: "CreateSnapshot",
    delete_rpc: "DeleteSnapshot",
    class: |driver| {
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
               "metadata": {"name": class_name(driver)}, "driver": driver,
               "deletionPolicy": "Delete"})
    },
    content: |name, driver| {
        json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": name, "finalizers": [keys::FINALIZER_VSC]},
            "spec": {
                "deletionPolicy": "Delete",
                "driver": driver,
                "source": {"volumeHandle": format!("vol-{name}")},
                "volumeSnapshotClassName": class_name(driver),
                "volumeSnapshotRef": {"name": format!("vs-{name}"), "namespace": "default",
                                      "uid": uuid::Uuid::new_v4().to_string(),
                                      "kind": "VolumeSnapshot",
                                      "apiVersion": "snapshot.storage.k8s.io/v1"}
            }
        })
    },
};

const GROUPS: Kind = Kind {
    plural: "volumegroupsnapshotcontents",
    path: "/apis/groupsnapshot.storage.k8s.io/v1/volumegroupsnapshotcontents",
    class_path: "/apis/groupsnapshot.storage.k8s.io/v1/volumegroupsnapshotclasses",
    finalizer: keys::FINALIZER_VGSC,
    being_created: keys::ANN_VGS_BEING_CREATED,
    being_deleted: keys::ANN_VGS_BEING_DELETED,
    create_rpc: "CreateVolumeGroupSnapshot",
    delete_rpc: "DeleteVolumeGroupSnapshot",
    class: |driver| {
        let mut req = GroupRequest::new(driver, "class", ["vol"]);
        req.class = class_name(driver);
        let mut class = serde_json::to_value(req.class_object()).expect("class serializes");
        class["apiVersion"] = json!("groupsnapshot.storage.k8s.io/v1");
        class["kind"] = json!("VolumeGroupSnapshotClass");
        class
    },
    content: |name, driver| {
        let mut req = GroupRequest::new(
            driver,
            &format!("vgs-{name}"),
            [format!("vol-{name}-1"), format!("vol-{name}-2")],
        );
        req.class = class_name(driver);
        let mut content = serde_json::to_value(req.content_object()).expect("content serializes");
        content["apiVersion"] = json!("groupsnapshot.storage.k8s.io/v1");
        content["kind"] = json!("VolumeGroupSnapshotContent");
        content["metadata"]["name"] = json!(name);
        content
    },
};

fn class_name(driver: &str) -> String {
    format!("class-{}", driver.split('.').next().unwrap_or(driver))
}

/// Prints the sidecar's log when the test fails.
struct LogOnFailure(PathBuf);

impl Drop for LogOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            eprintln!("---- sidecar log ----\n{log}");
        }
    }
}

struct World<'k> {
    kind: &'k Kind,
    server: ApiServer,
    mock: MockDriver,
    _sidecar: tokio::process::Child,
    _log: LogOnFailure,
    _dir: tempfile::TempDir,
}

impl World<'_> {
    async fn start(kind: &Kind) -> World<'_> {
        let server = ApiServer::start(ApiServerOptions {
            crd_schemas: crds::crd_dir(),
            restricted: Some(RbacPolicy::sidecar()),
            watch_history: WatchHistory::Events(WINDOW),
            ..Default::default()
        })
        .await
        .expect("embedded API server starts");
        let dir = tempfile::tempdir().expect("temporary directory");
        let socket = dir.path().join("csi.sock");
        let mock = MockDriver::start(&socket, MockConfig::default())
            .await
            .expect("mock driver starts");
        let log = dir.path().join("sidecar.log");
        let sidecar = spawn_sidecar(&server, &socket, &log);
        let w = World {
            kind,
            server,
            mock,
            _sidecar: sidecar,
            _log: LogOnFailure(log),
            _dir: dir,
        };
        for driver in [DRIVER, OTHER] {
            w.send("POST", kind.class_path, None, &(kind.class)(driver))
                .await;
        }
        w
    }

    /// One request of the test itself; returns the reply body.
    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &Value,
    ) -> Value {
        let r = self
            .server
            .request(method, path, content_type, Some(body))
            .await
            .expect("request reaches the server");
        assert!(
            (200..300).contains(&r.code),
            "{method} {path}: {} {}",
            r.code,
            r.body
        );
        r.body
    }

    async fn create(&self, obj: &Value) -> Value {
        self.send("POST", self.kind.path, None, obj).await
    }

    fn item(&self, name: &str) -> String {
        format!("{}/{name}", self.kind.path)
    }

    /// What the snapshot-controller does when the snapshot goes: the
    /// being-deleted annotation, then DELETE. Returns the DELETE reply.
    async fn delete_as_controller(&self, name: &str) -> Value {
        let mark =
            json!({"metadata": {"annotations": {self.kind.being_deleted: keys::ANN_VALUE_YES}}});
        self.send(
            "PATCH",
            &self.item(name),
            Some("application/merge-patch+json"),
            &mark,
        )
        .await;
        self.send("DELETE", &self.item(name), None, &json!({}))
            .await
    }

    fn object(&self, name: &str) -> Option<Value> {
        self.server.object(self.kind.plural, "", name)
    }

    /// Ready, with a handle, and the create marker gone.
    fn ready(&self, name: &str) -> bool {
        self.object(name).is_some_and(|o| {
            o["status"]["readyToUse"] == json!(true)
                && o["metadata"]["annotations"]
                    .get(self.kind.being_created)
                    .is_none()
        })
    }

    fn rpcs(&self) -> (u64, u64) {
        (
            self.mock.calls(self.kind.create_rpc),
            self.mock.calls(self.kind.delete_rpc),
        )
    }
}

fn spawn_sidecar(server: &ApiServer, socket: &Path, log: &Path) -> tokio::process::Child {
    let out = std::fs::File::create(log).expect("sidecar log");
    let err = out.try_clone().expect("sidecar log handle");
    tokio::process::Command::new(BIN)
        .arg(format!(
            "--kubeconfig={}",
            server
                .restricted_kubeconfig_path()
                .expect("a restricted user")
                .display()
        ))
        .arg(format!("--csi-address={}", socket.display()))
        .arg("--retry-interval-start=20ms")
        .arg("--retry-interval-max=200ms")
        .arg("--v=4")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .expect("the sidecar starts")
}

/// Polls `check` until it holds; fails after [`DEADLINE`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

fn rv(obj: &Value) -> &str {
    obj["metadata"]["resourceVersion"].as_str().unwrap_or("")
}

fn without_finalizers(mut obj: Value) -> Value {
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("finalizers");
    }
    obj
}

async fn relist_handles_the_gap_exactly_once(kind: &Kind) {
    let w = World::start(kind).await;
    let plural = kind.plural;

    // Before the gap: a content that becomes ready, and two of another
    // driver, once the sidecar watches.
    eventually("the sidecar to watch", || {
        w.server.request_count("WATCH", plural) >= 1
    })
    .await;
    w.create(&(kind.content)("ready-then-deleted", DRIVER))
        .await;
    let other_changed = w
        .create(&without_finalizers((kind.content)("other-changed", OTHER)))
        .await;
    w.create(&without_finalizers((kind.content)("other-deleted", OTHER)))
        .await;
    eventually("the first content to be ready", || {
        w.ready("ready-then-deleted")
    })
    .await;
    assert_eq!(w.rpcs(), (1, 0));

    // The gap: the open watch ends and the next one is held.
    let watches = w.server.request_count("WATCH", plural);
    w.server.faults().hold_watches(plural);
    w.server.faults().close_watches();
    eventually("the sidecar's next watch to be held", || {
        w.server.faults().held_watch_requests() >= 1
    })
    .await;
    assert!(w.server.request_count("WATCH", plural) > watches);
    let before_gap = w.server.resource_version();

    w.create(&(kind.content)("created-in-gap", DRIVER)).await;
    let deleted = w.delete_as_controller("ready-then-deleted").await;
    assert_eq!(deleted["metadata"]["finalizers"], json!([kind.finalizer]));
    w.create(&(kind.content)("created-and-deleted", DRIVER))
        .await;
    let pending = w.delete_as_controller("created-and-deleted").await;
    assert!(
        pending["metadata"]["deletionTimestamp"].is_string()
            && pending["metadata"]["finalizers"] == json!([kind.finalizer]),
        "the finalizer holds it: {pending}"
    );
    w.create(&without_finalizers((kind.content)("came-and-went", DRIVER)))
        .await;
    w.send("DELETE", &w.item("came-and-went"), None, &json!({}))
        .await;
    assert!(w.object("came-and-went").is_none());
    let relabel = json!({"metadata": {"labels": {"changed": "in-gap"}}});
    let other_changed = {
        let reply = w
            .send(
                "PATCH",
                &w.item("other-changed"),
                Some("application/merge-patch+json"),
                &relabel,
            )
            .await;
        assert_ne!(rv(&reply), rv(&other_changed));
        reply
    };
    w.send("DELETE", &w.item("other-deleted"), None, &json!({}))
        .await;
    let other_created = w
        .create(&without_finalizers((kind.content)("other-created", OTHER)))
        .await;
    let gap_events = w.server.resource_version() - before_gap;
    assert!(
        gap_events > WINDOW as u64,
        "the gap must outrun the window: {gap_events} events"
    );
    assert_eq!(w.rpcs(), (1, 0), "nothing reached the sidecar in the gap");

    // The held watch goes on from before the gap: 410, then a re-list.
    let lists = w.server.request_count("LIST", plural);
    let expired = w.server.expired_watch_count(plural);
    w.server.faults().release_watches(plural);
    eventually("the resumed watch to be answered 410", || {
        w.server.expired_watch_count(plural) > expired
    })
    .await;
    eventually("the sidecar to list again", || {
        w.server.request_count("LIST", plural) > lists
    })
    .await;

    eventually("the gap's changes to be handled", || {
        w.ready("created-in-gap")
            && w.object("ready-then-deleted").is_none()
            && w.object("created-and-deleted").is_none()
    })
    .await;
    let handled = w.rpcs();
    // A content created after everything else, handled through the watch
    // that followed the re-list: once it is ready, every earlier event has
    // been seen.
    w.create(&(kind.content)("after-relist", DRIVER)).await;
    eventually("the content created after the re-list to be ready", || {
        w.ready("after-relist")
    })
    .await;
    let (creates, deletes) = w.rpcs();
    assert_eq!(
        handled,
        (2, 1),
        "one {} for the content created in the gap, one {} for the one deleted in it",
        kind.create_rpc,
        kind.delete_rpc
    );
    assert_eq!(
        (creates, deletes),
        (3, 1),
        "only the content created after the re-list made calls since"
    );

    // Nothing of the other driver was written by the sidecar.
    for (name, reply) in [
        ("other-changed", &other_changed),
        ("other-created", &other_created),
    ] {
        let now = w.object(name).expect("the other driver's object stays");
        assert_eq!(rv(&now), rv(reply), "{name} was not written by the sidecar");
    }
    assert!(w.object("other-deleted").is_none());

    // The backend holds exactly the snapshots of the remaining contents.
    let mut handles: Vec<String> = ["created-in-gap", "after-relist"]
        .iter()
        .map(|n| {
            let o = w.object(n).expect("remaining content");
            let field = if kind.plural == GROUPS.plural {
                "volumeGroupSnapshotHandle"
            } else {
                "snapshotHandle"
            };
            o["status"][field]
                .as_str()
                .expect("a handle in the status")
                .to_string()
        })
        .collect();
    handles.sort();
    let mut backend: Vec<String> = if kind.plural == GROUPS.plural {
        let groups = w.mock.group_snapshots();
        for s in w.mock.snapshots() {
            assert!(
                groups
                    .iter()
                    .any(|g| g.group_snapshot_id == s.group_snapshot_id),
                "member snapshot {} of a deleted group was leaked",
                s.snapshot_id
            );
        }
        groups.into_iter().map(|g| g.group_snapshot_id).collect()
    } else {
        w.mock
            .snapshots()
            .into_iter()
            .map(|s| s.snapshot_id)
            .collect()
    };
    backend.sort();
    assert_eq!(backend, handles, "no backend snapshot leaked or lost");
    assert_eq!(
        w.server.forbidden_count(),
        0,
        "the sidecar made requests deploy/kubernetes/rbac.yaml does not allow"
    );
    w.mock.clone().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contents_changed_while_the_watch_was_gone_are_handled_once_after_410() {
    relist_handles_the_gap_exactly_once(&CONTENTS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_contents_changed_while_the_watch_was_gone_are_handled_once_after_410() {
    relist_handles_the_gap_exactly_once(&GROUPS).await;
}
