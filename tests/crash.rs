//! Crash test of the content and group-content lifecycles: the real
//! `csi-snapshotter` binary runs as a child process and is SIGKILLed at
//! random points (50–600 ms after its controllers started, or one time in
//! five during its startup) and started again, while this test, playing
//! the snapshot-controller, creates 260 dynamic
//! VolumeSnapshotContents and 10 dynamic VolumeGroupSnapshotContents (with
//! their member contents) in waves and deletes 210 contents and 5 groups —
//! many of them while their create is still in flight (upstream issue
//! 1388). Mid-run the mock CSI driver is stopped and started again on the
//! same socket with the same state file (a driver restart: the sidecar
//! exits when it loses the driver, as upstream, and is restarted), and the
//! embedded API server closes every watch and answers the next one with
//! 410 Gone.
//!
//! Once the killing stops, one sidecar must converge within a bounded time
//! (no resync helps: the resync period is the default 15 min), and then:
//! - every content that was not deleted is readyToUse, has no being-created
//!   annotation, and its snapshotHandle is the one backend snapshot of its
//!   source volume;
//! - every deleted content and group content is gone from the API;
//! - the backend holds no snapshot that no remaining content or Retain
//!   deletion accounts for (nothing leaked) and never two for one source
//!   volume (nothing duplicated);
//! - every remaining group content has exactly one backend group snapshot
//!   with all its members, whose member contents are ready with those
//!   handles; a deleted group with the Delete policy left neither its group
//!   snapshot nor any member snapshot; a Retain group kept both;
//! - the sidecar, running as the user of `deploy/kubernetes/rbac.yaml`,
//!   made no request those rules refuse;
//! - the sidecar was really killed (at least [`MIN_KILLS`] times), so the
//!   test cannot pass without crashes.
//!
//! The seed is printed first; `CRASH_SEED=<seed>` replays the same
//! workload choices and kill delays (timing still varies). The summary at
//! the end gives the figures. Run with
//! `cargo test --test crash -- --nocapture` to see them.

mod crash_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crash_support::{
    CLASSES, CONTENTS, Cluster, GROUP_CLASSES, GROUP_CONTENTS, Phase, Prng, Supervisor, brief,
    call_counts, crd_dir, has_annotation, is_ready, keep_log, seed, status_str,
};
use csi_snapshotter::csi::proto::v1 as pb;
use csi_snapshotter::k8s::keys;
use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions, RbacPolicy};
use csi_snapshotter::testing::groups::GroupRequest;
use csi_snapshotter::testing::mock_driver::{MockConfig, MockDriver};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The mock's driver name.
const DRIVER: &str = "mock.csi.k8s.io";
/// VolumeSnapshotClass of the contents.
const CLASS: &str = "crash-class";
/// VolumeGroupSnapshotClass of the groups.
const GROUP_CLASS: &str = "crash-group-class";
/// Waves of creates and deletes.
const WAVES: usize = 10;
/// Contents created per wave.
const PER_WAVE: usize = 26;
/// Contents of a wave deleted right after their creation, mostly while
/// the create is in flight.
const EARLY_DELETES: usize = 8;
/// Contents of the previous wave deleted in each wave.
const LATE_DELETES: usize = 13;
/// Group contents (two per wave, in the first waves).
const GROUPS: usize = 10;
/// Groups deleted right after their creation.
const EARLY_GROUP_DELETES: [usize; 2] = [0, 5];
/// Groups deleted once their member contents exist, two waves after their
/// creation or later.
const LATE_GROUP_DELETES: [usize; 3] = [2, 3, 6];
/// Groups with the Retain policy.
const RETAIN_GROUPS: [usize; 2] = [3, 7];
/// The wave before which the mock driver is restarted.
const DRIVER_RESTART_WAVE: usize = 3;
/// The wave before which every watch is closed and the next answered 410.
const WATCH_FAULT_WAVE: usize = 6;
/// The chaos phase must kill the sidecar at least this often.
const MIN_KILLS: u32 = 10;
/// Longest extra chaos time to reach [`MIN_KILLS`] after the last wave.
const KILLS_WAIT: Duration = Duration::from_secs(60);
/// Each sidecar process is killed this long after its controllers
/// started (one in five is killed during its startup instead).
const KILL_AFTER: (Duration, Duration) = (Duration::from_millis(50), Duration::from_millis(600));
/// Longest wait for a content to show its create in flight before an
/// early delete goes ahead anyway.
const IN_FLIGHT_WAIT: Duration = Duration::from_millis(150);
/// Longest wait for convergence once the killing stopped.
const CONVERGE: Duration = Duration::from_secs(120);
/// How often the test looks at the objects.
const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Delete,
    Retain,
}

impl Policy {
    fn as_str(self) -> &'static str {
        match self {
            Policy::Delete => keys::DELETION_POLICY_DELETE,
            Policy::Retain => keys::DELETION_POLICY_RETAIN,
        }
    }
}

/// What the content looked like when the snapshot-controller deleted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum SeenAtDelete {
    /// No status and no being-created annotation: the sidecar had not
    /// started (or a killed sidecar had not got far).
    NotStarted,
    /// The being-created annotation was on: a CreateSnapshot was in flight.
    BeingCreated,
    /// A status, not ready yet.
    NotReady,
    /// Ready.
    Ready,
}

fn seen(obj: Option<&Value>, being_created: &str) -> SeenAtDelete {
    match obj {
        Some(o) if has_annotation(o, being_created) => SeenAtDelete::BeingCreated,
        Some(o) if is_ready(o) => SeenAtDelete::Ready,
        Some(o) if o.get("status").is_some_and(|s| !s.is_null()) => SeenAtDelete::NotReady,
        _ => SeenAtDelete::NotStarted,
    }
}

#[derive(Debug, Clone)]
struct Deletion {
    seen: SeenAtDelete,
    /// The status handle at the time of the delete, if any.
    handle: Option<String>,
}

#[derive(Debug)]
struct ContentRec {
    name: String,
    volume: String,
    policy: Policy,
    deleted: Option<Deletion>,
}

#[derive(Debug)]
struct MemberRec {
    name: String,
    volume: String,
    handle: String,
}

#[derive(Debug)]
struct GroupRec {
    req: GroupRequest,
    wave: usize,
    policy: Policy,
    deleted: Option<Deletion>,
    /// Member contents, once the snapshot-controller created them.
    members: Option<Vec<MemberRec>>,
}

impl GroupRec {
    fn name(&self) -> String {
        self.req.content_name()
    }
}

/// Everything the snapshot-controller created and deleted.
#[derive(Debug, Default)]
struct Plan {
    contents: Vec<ContentRec>,
    groups: Vec<GroupRec>,
}

/// A dynamic content as the snapshot-controller creates it for
/// VolumeSnapshot `snapshot-crash-<i>`.
fn dynamic_content(run: u32, i: usize, policy: Policy) -> (ContentRec, Value) {
    let name = format!("snapcontent-crash-{i:04}");
    let volume = format!("vol-crash-{i:04}");
    let obj = json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": name, "finalizers": [keys::FINALIZER_VSC]},
        "spec": {
            "deletionPolicy": policy.as_str(),
            "driver": DRIVER,
            "source": {"volumeHandle": volume},
            "volumeSnapshotClassName": CLASS,
            "volumeSnapshotRef": {
                "apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshot",
                "namespace": "default",
                "name": format!("snapshot-crash-{i:04}"),
                "uid": format!("{run:08x}-0000-4000-8000-{i:012x}"),
            },
        },
    });
    let rec = ContentRec {
        name,
        volume,
        policy,
        deleted: None,
    };
    (rec, obj)
}

fn group_request(run: u32, g: usize, policy: Policy) -> GroupRequest {
    let n = if g.is_multiple_of(2) { 2 } else { 3 };
    GroupRequest {
        driver: DRIVER.to_string(),
        name: format!("vgs-crash-{g:02}"),
        namespace: "default".to_string(),
        uid: format!("{run:08x}-0000-4000-9000-{g:012x}"),
        class: GROUP_CLASS.to_string(),
        deletion_policy: policy.as_str().to_string(),
        volume_handles: (0..n).map(|k| format!("vol-group-{g:02}-{k}")).collect(),
    }
}

/// Starts the mock driver on `socket`. Creates take longer than the other
/// calls, so kills and deletes land while they are in flight.
async fn start_mock(socket: &std::path::Path, config: &MockConfig) -> MockDriver {
    let mock = MockDriver::start(socket, config.clone())
        .await
        .expect("mock driver starts");
    mock.set_latency("CreateSnapshot", Duration::from_millis(25));
    mock.set_latency("CreateVolumeGroupSnapshot", Duration::from_millis(25));
    mock
}

/// Everything the test drives.
struct World<'a> {
    cluster: Cluster<'a>,
    server: &'a ApiServer,
    mock: MockDriver,
    mock_config: MockConfig,
    socket: std::path::PathBuf,
    /// CSI calls of mock instances already stopped.
    past_calls: BTreeMap<&'static str, u64>,
    rng: Prng,
    run: u32,
    plan: Plan,
    sup: &'a Supervisor,
    phase: watch::Sender<Phase>,
    seed: u64,
    log: std::path::PathBuf,
    watch_faults: u32,
    driver_restarts: u32,
    member_contents: usize,
}

impl World<'_> {
    /// Panics with `msg`, the seed and the tail of the sidecar log.
    fn fail(&self, msg: &str) -> ! {
        let (tail, kept) = keep_log(&self.log, self.seed, 120);
        panic!(
            "{msg}\n(seed {seed}: rerun with CRASH_SEED={seed}; sidecar log kept at {})\n--- last lines of the sidecar log ---\n{tail}",
            kept.display(),
            seed = self.seed
        );
    }

    /// Stops the driver (the sidecar exits on the lost connection) and
    /// starts it again on the same socket and state file.
    async fn restart_driver(&mut self) {
        for (rpc, n) in call_counts(&self.mock) {
            *self.past_calls.entry(rpc).or_default() += n;
        }
        self.sup.note("stopping the mock driver");
        self.mock.clone().stop().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.mock = start_mock(&self.socket, &self.mock_config).await;
        self.sup.note("mock driver started again");
        self.driver_restarts += 1;
    }

    fn watch_fault(&mut self) {
        self.sup
            .note("closing every watch; the next one answers 410");
        self.server.faults().next_watch_gone();
        self.server.faults().close_watches();
        self.watch_faults += 1;
    }

    fn csi_calls(&self) -> BTreeMap<&'static str, u64> {
        let mut all = self.past_calls.clone();
        for (rpc, n) in call_counts(&self.mock) {
            *all.entry(rpc).or_default() += n;
        }
        all
    }

    async fn create_classes(&self) {
        self.cluster
            .create(
                CLASSES,
                &json!({
                    "apiVersion": "snapshot.storage.k8s.io/v1",
                    "kind": "VolumeSnapshotClass",
                    "metadata": {"name": CLASS},
                    "driver": DRIVER,
                    "deletionPolicy": keys::DELETION_POLICY_DELETE,
                }),
            )
            .await;
        let class = group_request(self.run, 0, Policy::Delete).class_object();
        let class = serde_json::to_value(class).expect("class serializes");
        self.cluster.create(GROUP_CLASSES, &class).await;
    }

    async fn create_wave(&mut self, wave: usize) -> Vec<usize> {
        let mut made = Vec::new();
        for i in wave * PER_WAVE..(wave + 1) * PER_WAVE {
            let policy = if i % 6 == 5 {
                Policy::Retain
            } else {
                Policy::Delete
            };
            let (rec, obj) = dynamic_content(self.run, i, policy);
            self.cluster.create(CONTENTS, &obj).await;
            self.plan.contents.push(rec);
            made.push(i);
        }
        made
    }

    async fn create_group(&mut self, g: usize, wave: usize) {
        let policy = if RETAIN_GROUPS.contains(&g) {
            Policy::Retain
        } else {
            Policy::Delete
        };
        let req = group_request(self.run, g, policy);
        let obj = serde_json::to_value(req.content_object()).expect("group serializes");
        self.cluster.create(GROUP_CONTENTS, &obj).await;
        self.plan.groups.push(GroupRec {
            req,
            wave,
            policy,
            deleted: None,
            members: None,
        });
    }

    /// Waits (briefly) until content `name` shows its create in flight.
    async fn wait_in_flight(&self, name: &str, group: bool) {
        let until = Instant::now() + IN_FLIGHT_WAIT;
        while Instant::now() < until {
            let obj = if group {
                self.cluster.group(name)
            } else {
                self.cluster.content(name)
            };
            let ann = if group {
                keys::ANN_VGS_BEING_CREATED
            } else {
                keys::ANN_VS_BEING_CREATED
            };
            match obj.as_ref().map(|o| seen(Some(o), ann)) {
                Some(SeenAtDelete::NotStarted) => {
                    tokio::time::sleep(Duration::from_millis(2)).await
                }
                _ => return,
            }
        }
    }

    async fn delete_content(&mut self, i: usize) {
        let name = self.plan.contents[i].name.clone();
        let obj = self.cluster.content(&name);
        let deletion = Deletion {
            seen: seen(obj.as_ref(), keys::ANN_VS_BEING_CREATED),
            handle: obj
                .as_ref()
                .and_then(|o| status_str(o, "snapshotHandle"))
                .map(str::to_string),
        };
        self.cluster
            .delete_as_controller(CONTENTS, &name, keys::ANN_VS_BEING_DELETED)
            .await;
        self.plan.contents[i].deleted = Some(deletion);
    }

    /// Deletes group `g` as the snapshot-controller does when its
    /// VolumeGroupSnapshot goes: the member contents first (their
    /// VolumeSnapshots go with the group), then the group content.
    async fn delete_group(&mut self, g: usize) {
        let members: Vec<String> = self.plan.groups[g]
            .members
            .iter()
            .flatten()
            .map(|m| m.name.clone())
            .collect();
        for m in members {
            self.cluster
                .delete_as_controller(CONTENTS, &m, keys::ANN_VS_BEING_DELETED)
                .await;
        }
        let name = self.plan.groups[g].name();
        let obj = self.cluster.group(&name);
        let deletion = Deletion {
            seen: seen(obj.as_ref(), keys::ANN_VGS_BEING_CREATED),
            handle: obj
                .as_ref()
                .and_then(|o| status_str(o, "volumeGroupSnapshotHandle"))
                .map(str::to_string),
        };
        self.cluster
            .delete_as_controller(GROUP_CONTENTS, &name, keys::ANN_VGS_BEING_DELETED)
            .await;
        self.plan.groups[g].deleted = Some(deletion);
    }

    /// The snapshot-controller's member step (spec D.7): once a group
    /// content has its handle and member list, create one member content
    /// per entry, with the status copied from the entry.
    async fn sync_members(&mut self) {
        for g in 0..self.plan.groups.len() {
            let group = &self.plan.groups[g];
            if group.deleted.is_some() || group.members.is_some() {
                continue;
            }
            let Some(obj) = self.cluster.group(&group.name()) else {
                continue;
            };
            let Some(handle) = status_str(&obj, "volumeGroupSnapshotHandle").map(str::to_string)
            else {
                continue;
            };
            let infos = obj
                .pointer("/status/volumeSnapshotInfoList")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if infos.is_empty() {
                continue;
            }
            let mut members = Vec::new();
            for (k, info) in infos.iter().enumerate() {
                let volume = info["volumeHandle"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let snap_handle = info["snapshotHandle"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let name = format!("snapcontent-member-{g:02}-{k}");
                let obj = json!({
                    "apiVersion": "snapshot.storage.k8s.io/v1",
                    "kind": "VolumeSnapshotContent",
                    "metadata": {
                        "name": name,
                        "annotations": {keys::ANN_VGS_HANDLE_MEMBER: handle},
                        "finalizers": [keys::FINALIZER_VSC],
                    },
                    "spec": {
                        "deletionPolicy": group.policy.as_str(),
                        "driver": DRIVER,
                        "source": {"volumeHandle": volume},
                        "volumeSnapshotRef": {
                            "apiVersion": "snapshot.storage.k8s.io/v1",
                            "kind": "VolumeSnapshot",
                            "namespace": "default",
                            "name": format!("snapshot-member-{g:02}-{k}"),
                            "uid": format!("{:08x}-0000-4000-a000-{:012x}", self.run, g * 16 + k),
                        },
                    },
                });
                self.cluster.create(CONTENTS, &obj).await;
                let mut status = serde_json::Map::new();
                status.insert("snapshotHandle".into(), json!(snap_handle));
                status.insert("volumeGroupSnapshotHandle".into(), json!(handle));
                for field in ["creationTime", "restoreSize", "readyToUse"] {
                    if let Some(v) = info.get(field).filter(|v| !v.is_null()) {
                        status.insert(field.into(), v.clone());
                    }
                }
                self.cluster
                    .merge(
                        &format!("{CONTENTS}/{name}/status"),
                        &json!({ "status": status }),
                    )
                    .await;
                members.push(MemberRec {
                    name,
                    volume,
                    handle: snap_handle,
                });
            }
            self.member_contents += members.len();
            self.plan.groups[g].members = Some(members);
        }
    }

    /// Sleeps `d` while keeping the member step going.
    async fn pause(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.sync_members().await;
            tokio::time::sleep(POLL).await;
        }
    }

    /// Deletes the late-deleted groups whose members exist (or, when
    /// `force`, waits for them first).
    async fn late_group_deletes(&mut self, wave: usize, force: bool) {
        for g in LATE_GROUP_DELETES {
            let Some(group) = self.plan.groups.get(g) else {
                continue;
            };
            if group.deleted.is_some() || (!force && wave < group.wave + 2) {
                continue;
            }
            if group.members.is_none() && force {
                let until = Instant::now() + CONVERGE;
                while self.plan.groups[g].members.is_none() && Instant::now() < until {
                    self.pause(POLL).await;
                }
            }
            if self.plan.groups[g].members.is_some() {
                self.delete_group(g).await;
            } else if force {
                let state = self
                    .cluster
                    .group(&self.plan.groups[g].name())
                    .map(|o| brief(&o))
                    .unwrap_or_else(|| "absent".into());
                self.fail(&format!(
                    "group {g} never got its member list within {CONVERGE:?}: {state}"
                ));
            }
        }
    }

    /// The chaos phase: waves of creates and deletes while the supervisor
    /// kills the sidecar.
    async fn chaos(&mut self) {
        let mut previous: Vec<usize> = Vec::new();
        for wave in 0..WAVES {
            if wave == DRIVER_RESTART_WAVE {
                self.restart_driver().await;
            }
            if wave == WATCH_FAULT_WAVE {
                self.watch_fault();
            }
            let made = self.create_wave(wave).await;
            let first_group = wave * 2;
            for g in first_group..(first_group + 2).min(GROUPS) {
                self.create_group(g, wave).await;
            }
            for g in first_group..(first_group + 2).min(GROUPS) {
                if EARLY_GROUP_DELETES.contains(&g) {
                    let name = self.plan.groups[g].name();
                    self.wait_in_flight(&name, true).await;
                    self.delete_group(g).await;
                }
            }
            let pause = self.rng.between(Duration::ZERO, Duration::from_millis(60));
            tokio::time::sleep(pause).await;
            let early = self.rng.pick(&made, EARLY_DELETES);
            for &i in &early {
                let name = self.plan.contents[i].name.clone();
                self.wait_in_flight(&name, false).await;
                self.delete_content(i).await;
            }
            let pause = self
                .rng
                .between(Duration::from_millis(200), Duration::from_millis(600));
            self.pause(pause).await;
            let late = self.rng.pick(&previous, LATE_DELETES);
            for i in late {
                self.delete_content(i).await;
            }
            self.late_group_deletes(wave, false).await;
            previous = made.into_iter().filter(|i| !early.contains(i)).collect();
        }
        let late = self.rng.pick(&previous, LATE_DELETES);
        for i in late {
            self.delete_content(i).await;
        }
        self.pause(Duration::from_millis(300)).await;
        // On a slow machine the processes live longer: keep the chaos
        // going until enough kills happened.
        let until = Instant::now() + KILLS_WAIT;
        while self.sup.stats().kills < MIN_KILLS {
            if Instant::now() > until {
                self.fail(&format!(
                    "only {} kills within {KILLS_WAIT:?} after the last wave (want {MIN_KILLS}): {:?}",
                    self.sup.stats().kills,
                    self.sup.stats()
                ));
            }
            self.pause(Duration::from_millis(100)).await;
        }
    }

    /// What is not yet in its final state; empty once converged.
    fn missing(&self) -> Vec<String> {
        let mut out = Vec::new();
        let c = &self.cluster;
        for rec in &self.plan.contents {
            let obj = c.content(&rec.name);
            match (&rec.deleted, obj) {
                (Some(_), Some(o)) => out.push(format!(
                    "deleted content {} still exists: {}",
                    rec.name,
                    brief(&o)
                )),
                (None, None) => out.push(format!("content {} vanished", rec.name)),
                (None, Some(o)) => {
                    if !is_ready(&o)
                        || has_annotation(&o, keys::ANN_VS_BEING_CREATED)
                        || status_str(&o, "snapshotHandle").is_none()
                    {
                        out.push(format!("content {} not done: {}", rec.name, brief(&o)));
                    }
                }
                (Some(_), None) => {}
            }
        }
        for (g, group) in self.plan.groups.iter().enumerate() {
            let obj = c.group(&group.name());
            match (&group.deleted, obj) {
                (Some(_), Some(o)) => {
                    out.push(format!("deleted group {g} still exists: {}", brief(&o)))
                }
                (None, None) => out.push(format!("group {g} vanished")),
                (None, Some(o)) => {
                    if !is_ready(&o)
                        || has_annotation(&o, keys::ANN_VGS_BEING_CREATED)
                        || group.members.is_none()
                    {
                        out.push(format!(
                            "group {g} not done (members created: {}): {}",
                            group.members.is_some(),
                            brief(&o)
                        ));
                    }
                }
                (Some(_), None) => {}
            }
            for m in group.members.iter().flatten() {
                match (group.deleted.is_some(), c.content(&m.name)) {
                    (true, Some(o)) => out.push(format!(
                        "member {} of deleted group {g} still exists: {}",
                        m.name,
                        brief(&o)
                    )),
                    (false, None) => out.push(format!("member {} vanished", m.name)),
                    (false, Some(o)) if !is_ready(&o) => {
                        out.push(format!("member {} not ready: {}", m.name, brief(&o)));
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// Waits until [`World::missing`] is empty; fails with what is left.
    async fn converge(&mut self) -> Duration {
        let start = Instant::now();
        loop {
            self.sync_members().await;
            let left = self.missing();
            if left.is_empty() {
                return start.elapsed();
            }
            if start.elapsed() > CONVERGE {
                let shown: Vec<&str> = left.iter().take(15).map(String::as_str).collect();
                self.fail(&format!(
                    "no convergence within {CONVERGE:?} after the last kill; {} items left, e.g.:\n  {}",
                    left.len(),
                    shown.join("\n  ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Compares the backend with the API objects; returns the problems and
    /// the backend figures.
    fn audit(&self) -> (Vec<String>, Backend) {
        let snaps = self.mock.snapshots();
        let groups = self.mock.group_snapshots();
        let mut problems = Vec::new();
        let by_id: HashMap<&str, &pb::Snapshot> =
            snaps.iter().map(|s| (s.snapshot_id.as_str(), s)).collect();
        let mut single: HashMap<&str, Vec<&pb::Snapshot>> = HashMap::new();
        let mut member_by_volume: HashMap<&str, Vec<&pb::Snapshot>> = HashMap::new();
        for s in &snaps {
            let map = if s.group_snapshot_id.is_empty() {
                &mut single
            } else {
                &mut member_by_volume
            };
            map.entry(s.source_volume_id.as_str()).or_default().push(s);
        }
        let mut fig = Backend {
            snapshots: snaps.len(),
            groups: groups.len(),
            ..Backend::default()
        };

        for rec in &self.plan.contents {
            let found = single.remove(rec.volume.as_str()).unwrap_or_default();
            let ids: Vec<&str> = found.iter().map(|s| s.snapshot_id.as_str()).collect();
            match &rec.deleted {
                None => {
                    let handle = self
                        .cluster
                        .content(&rec.name)
                        .and_then(|o| status_str(&o, "snapshotHandle").map(str::to_string));
                    if found.len() != 1 {
                        problems.push(format!(
                            "content {} (volume {}): {} backend snapshots {ids:?}, want exactly one",
                            rec.name,
                            rec.volume,
                            found.len()
                        ));
                    } else if handle.as_deref() != Some(ids[0]) || !found[0].ready_to_use {
                        problems.push(format!(
                            "content {} has handle {handle:?}, the backend snapshot is {} (ready: {})",
                            rec.name, ids[0], found[0].ready_to_use
                        ));
                    }
                    fig.single += found.len();
                }
                Some(d) if rec.policy == Policy::Delete => {
                    if !found.is_empty() {
                        problems.push(format!(
                            "leaked: content {} (Delete, deleted while {:?}) left backend snapshots {ids:?}",
                            rec.name, d.seen
                        ));
                    }
                }
                Some(d) => {
                    if found.len() > 1 {
                        problems.push(format!(
                            "duplicated: Retain content {} has backend snapshots {ids:?}",
                            rec.name
                        ));
                    }
                    if let Some(h) = &d.handle
                        && ids != [h.as_str()]
                    {
                        problems.push(format!(
                            "Retain content {} had handle {h}; the backend now has {ids:?}",
                            rec.name
                        ));
                    }
                    fig.retained += found.len();
                }
            }
        }
        for (volume, left) in &single {
            let ids: Vec<&str> = left.iter().map(|s| s.snapshot_id.as_str()).collect();
            problems.push(format!(
                "leaked: backend snapshots {ids:?} of volume {volume} belong to no content"
            ));
        }

        let mut group_by_volumes: HashMap<BTreeSet<String>, Vec<&pb::VolumeGroupSnapshot>> =
            HashMap::new();
        for g in &groups {
            let vols: BTreeSet<String> = g
                .snapshots
                .iter()
                .map(|s| s.source_volume_id.clone())
                .collect();
            group_by_volumes.entry(vols).or_default().push(g);
        }
        for (g, group) in self.plan.groups.iter().enumerate() {
            let vols: BTreeSet<String> = group.req.volume_handles.iter().cloned().collect();
            let found = group_by_volumes.remove(&vols).unwrap_or_default();
            let ids: Vec<&str> = found.iter().map(|x| x.group_snapshot_id.as_str()).collect();
            let members: Vec<&pb::Snapshot> = vols
                .iter()
                .flat_map(|v| member_by_volume.remove(v.as_str()).unwrap_or_default())
                .collect();
            // A Retain group keeps its backend group if it was ever cut
            // (its handle was seen, or the backend has it).
            let keep = match (&group.deleted, group.policy) {
                (None, _) => true,
                (Some(d), Policy::Retain) => d.handle.is_some() || !found.is_empty(),
                (Some(_), Policy::Delete) => false,
            };
            if !keep {
                if !found.is_empty() || !members.is_empty() {
                    let m: Vec<&str> = members.iter().map(|s| s.snapshot_id.as_str()).collect();
                    problems.push(format!(
                        "leaked: deleted group {g} (Delete, deleted while {:?}) left groups {ids:?} and member snapshots {m:?}",
                        group.deleted.as_ref().map(|d| d.seen)
                    ));
                }
                continue;
            }
            if found.len() != 1 {
                problems.push(format!(
                    "group {g}: {} backend group snapshots {ids:?}, want exactly one",
                    found.len()
                ));
                continue;
            }
            let backend = found[0];
            let want_handle = match &group.deleted {
                None => self
                    .cluster
                    .group(&group.name())
                    .and_then(|o| status_str(&o, "volumeGroupSnapshotHandle").map(str::to_string)),
                Some(d) => d.handle.clone(),
            };
            if let Some(h) = &want_handle
                && h != &backend.group_snapshot_id
            {
                problems.push(format!(
                    "group {g} has handle {h}, the backend group is {}",
                    backend.group_snapshot_id
                ));
            }
            if backend.snapshots.len() != vols.len() || members.len() != vols.len() {
                problems.push(format!(
                    "group {g}: backend group {} has {} members and {} member snapshots exist, want {}",
                    backend.group_snapshot_id,
                    backend.snapshots.len(),
                    members.len(),
                    vols.len()
                ));
            }
            for m in &members {
                if m.group_snapshot_id != backend.group_snapshot_id {
                    problems.push(format!(
                        "member snapshot {} of group {g} belongs to {}",
                        m.snapshot_id, m.group_snapshot_id
                    ));
                }
            }
            if group.deleted.is_none() {
                for m in group.members.iter().flatten() {
                    let live = self
                        .cluster
                        .content(&m.name)
                        .and_then(|o| status_str(&o, "snapshotHandle").map(str::to_string));
                    let exists = by_id.get(m.handle.as_str()).is_some_and(|s| {
                        s.group_snapshot_id == backend.group_snapshot_id
                            && s.source_volume_id == m.volume
                    });
                    if live.as_deref() != Some(m.handle.as_str()) || !exists {
                        problems.push(format!(
                            "member content {} has handle {live:?}; its snapshot {} exists in group {}: {exists}",
                            m.name, m.handle, backend.group_snapshot_id
                        ));
                    }
                }
                fig.live_groups += 1;
            } else {
                fig.retained_groups += 1;
            }
            fig.members += members.len();
        }
        for (vols, left) in &group_by_volumes {
            let ids: Vec<&str> = left.iter().map(|x| x.group_snapshot_id.as_str()).collect();
            problems.push(format!(
                "leaked: backend groups {ids:?} of volumes {vols:?} belong to no group content"
            ));
        }
        for (volume, left) in &member_by_volume {
            let ids: Vec<&str> = left.iter().map(|s| s.snapshot_id.as_str()).collect();
            problems.push(format!(
                "leaked: member snapshots {ids:?} of volume {volume} belong to no group"
            ));
        }
        (problems, fig)
    }
}

/// The backend at the end.
#[derive(Debug, Default)]
struct Backend {
    snapshots: usize,
    groups: usize,
    single: usize,
    retained: usize,
    members: usize,
    live_groups: usize,
    retained_groups: usize,
}

/// The whole run: see the module docs for what it proves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_driver_restart_and_watch_loss_leak_or_duplicate_no_snapshot() {
    let seed = seed();
    println!("crash test seed {seed} (CRASH_SEED={seed} replays the same choices)");
    let began = Instant::now();
    let server = ApiServer::start(ApiServerOptions {
        crd_schemas: crd_dir(),
        restricted: Some(RbacPolicy::sidecar()),
        ..Default::default()
    })
    .await
    .expect("embedded API server starts");
    let kubeconfig = server
        .restricted_kubeconfig_path()
        .expect("a kubeconfig of the restricted user")
        .to_path_buf();
    let dir = tempfile::tempdir().expect("temporary directory");
    let socket = dir.path().join("csi.sock");
    let log = dir.path().join("sidecar.log");
    let mock_config = MockConfig {
        driver_name: DRIVER.to_string(),
        ready_after_polls: 1,
        latency: Duration::from_millis(3),
        state_file: Some(dir.path().join("driver-state.json")),
        ..MockConfig::default()
    };
    let args = vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--csi-address={}", socket.display()),
        "--retry-interval-start=20ms".to_string(),
        "--retry-interval-max=500ms".to_string(),
        "--kube-api-qps=-1".to_string(),
        "--timeout=10s".to_string(),
        "--v=4".to_string(),
    ];
    let sup = Supervisor::new(args, log.clone(), KILL_AFTER);
    let (phase_tx, phase_rx) = watch::channel(Phase::Chaos);
    let mock = start_mock(&socket, &mock_config).await;
    let mut world = World {
        cluster: Cluster { server: &server },
        server: &server,
        mock,
        mock_config,
        socket,
        past_calls: BTreeMap::new(),
        rng: Prng::new(seed, 1),
        run: (seed as u32) | 1,
        plan: Plan::default(),
        sup: &sup,
        phase: phase_tx,
        seed,
        log: log.clone(),
        watch_faults: 0,
        driver_restarts: 0,
        member_contents: 0,
    };
    world.create_classes().await;

    let in_flight = || Cluster { server: &server }.creates_in_flight();
    let workload = async {
        world.chaos().await;
        let chaos_time = began.elapsed();
        let _ = world.phase.send(Phase::Calm);
        sup.note("chaos over: no more kills");
        world.late_group_deletes(WAVES, true).await;
        let converge_time = world.converge().await;
        // Nothing may change once converged: look again after a while.
        world.pause(Duration::from_secs(1)).await;
        let left = world.missing();
        if !left.is_empty() {
            world.fail(&format!("state changed after convergence: {left:?}"));
        }
        let _ = world.phase.send(Phase::Stop);
        (chaos_time, converge_time)
    };
    let ((), (chaos_time, converge_time)) =
        tokio::join!(sup.run(phase_rx, Prng::new(seed, 2), in_flight), workload);

    let (problems, backend) = world.audit();
    if !problems.is_empty() {
        world.fail(&format!(
            "{} backend problems:\n  {}",
            problems.len(),
            problems.join("\n  ")
        ));
    }
    let stats = sup.stats();

    let contents = &world.plan.contents;
    let deleted: Vec<&ContentRec> = contents.iter().filter(|c| c.deleted.is_some()).collect();
    let retain_deleted = deleted
        .iter()
        .filter(|c| c.policy == Policy::Retain)
        .count();
    let mut by_seen: BTreeMap<SeenAtDelete, usize> = BTreeMap::new();
    for c in &deleted {
        *by_seen
            .entry(
                c.deleted
                    .as_ref()
                    .map_or(SeenAtDelete::NotStarted, |d| d.seen),
            )
            .or_default() += 1;
    }
    let groups = &world.plan.groups;
    let groups_deleted: Vec<&GroupRec> = groups.iter().filter(|g| g.deleted.is_some()).collect();
    let group_seen: Vec<String> = groups_deleted
        .iter()
        .map(|g| {
            format!(
                "{}:{:?}",
                g.req.name,
                g.deleted
                    .as_ref()
                    .map(|d| d.seen)
                    .unwrap_or(SeenAtDelete::NotStarted)
            )
        })
        .collect();
    let csi: Vec<String> = world
        .csi_calls()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut verbs: BTreeMap<String, u64> = BTreeMap::new();
    for c in server.request_counts() {
        *verbs.entry(c.verb).or_default() += c.count;
    }
    let verbs: Vec<String> = verbs.iter().map(|(k, v)| format!("{k}={v}")).collect();

    println!("crash test summary");
    println!("  seed: {seed}");
    println!(
        "  elapsed: {:.1}s (chaos {:.1}s, convergence after the last kill {:.1}s)",
        began.elapsed().as_secs_f64(),
        chaos_time.as_secs_f64(),
        converge_time.as_secs_f64()
    );
    println!(
        "  sidecar: {} processes started, {} SIGKILLs ({} during startup, {} with creates marked in flight), {} exits by itself {:?}",
        stats.starts,
        stats.kills,
        stats.kills_in_startup,
        stats.kills_with_creates_in_flight,
        stats.own_exits.len(),
        stats.own_exits
    );
    println!(
        "  faults: {} mock driver restart(s), {} watch close(s) with 410 on the next watch",
        world.driver_restarts, world.watch_faults
    );
    println!(
        "  contents: {} created, {} deleted ({} Delete, {} Retain), {} remaining",
        contents.len(),
        deleted.len(),
        deleted.len() - retain_deleted,
        retain_deleted,
        contents.len() - deleted.len()
    );
    println!("  contents by state when deleted: {by_seen:?}");
    println!(
        "  groups: {} created ({} volumes), {} deleted [{}], {} member contents created",
        groups.len(),
        groups
            .iter()
            .map(|g| g.req.volume_handles.len())
            .sum::<usize>(),
        groups_deleted.len(),
        group_seen.join(", "),
        world.member_contents
    );
    println!("  CSI calls: {}", csi.join(" "));
    println!(
        "  API requests by the sidecar (as the user of deploy/kubernetes/rbac.yaml): {}; refused: {}",
        verbs.join(" "),
        server.forbidden_count()
    );
    println!(
        "  backend at the end: {} snapshots ({} of remaining contents, {} kept by Retain deletions, {} group members), {} group snapshots ({} of remaining groups, {} kept by Retain)",
        backend.snapshots,
        backend.single,
        backend.retained,
        backend.members,
        backend.groups,
        backend.live_groups,
        backend.retained_groups
    );

    assert!(
        stats.kills >= MIN_KILLS,
        "the sidecar was killed only {} times (want at least {MIN_KILLS}); seed {seed}",
        stats.kills
    );
    assert_eq!(
        server.forbidden_count(),
        0,
        "the sidecar made requests deploy/kubernetes/rbac.yaml does not allow; seed {seed}"
    );
    assert_eq!(world.driver_restarts, 1);
    assert_eq!(world.watch_faults, 1);
    assert!(
        by_seen
            .get(&SeenAtDelete::BeingCreated)
            .copied()
            .unwrap_or(0)
            + by_seen.get(&SeenAtDelete::NotReady).copied().unwrap_or(0)
            >= 10,
        "too few deletions hit a create in flight: {by_seen:?}; seed {seed}"
    );
    world.mock.clone().stop().await;
    drop(dir);
}
