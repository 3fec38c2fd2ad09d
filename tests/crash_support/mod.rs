//! Machinery of the crash test (`tests/crash.rs`): a small seeded PRNG, the
//! snapshot-controller's writes made in-process against the embedded API
//! server, and a supervisor that runs the real sidecar binary as a child
//! process, SIGKILLs it at random points and starts it again.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use csi_snapshotter::k8s::keys;
use csi_snapshotter::testing::apiserver::ApiServer;
use csi_snapshotter::testing::mock_driver::MockDriver;
use serde_json::{Value, json};
use tokio::process::Child;
use tokio::sync::watch;

#[path = "../support/crds.rs"]
mod crds;
#[path = "../support/splitmix.rs"]
mod splitmix;
pub use crds::crd_dir;
use splitmix::SplitMix64;

/// The sidecar binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_csi-snapshotter");
/// REST path of VolumeSnapshotContents.
pub const CONTENTS: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents";
/// REST path of VolumeSnapshotClasses.
pub const CLASSES: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses";
/// REST path of VolumeGroupSnapshotContents.
pub const GROUP_CONTENTS: &str =
    "/apis/groupsnapshot.storage.k8s.io/v1/volumegroupsnapshotcontents";
/// REST path of VolumeGroupSnapshotClasses.
pub const GROUP_CLASSES: &str = "/apis/groupsnapshot.storage.k8s.io/v1/volumegroupsnapshotclasses";
/// Store name of VolumeSnapshotContents (for [`ApiServer::object`]).
pub const VSC: &str = "volumesnapshotcontents";
/// Store name of VolumeGroupSnapshotContents.
pub const VGSC: &str = "volumegroupsnapshotcontents";

/// Every RPC whose calls the summary reports.
pub const RPCS: [&str; 10] = [
    "GetPluginInfo",
    "Probe",
    "ControllerGetCapabilities",
    "GroupControllerGetCapabilities",
    "CreateSnapshot",
    "ListSnapshots",
    "DeleteSnapshot",
    "CreateVolumeGroupSnapshot",
    "GetVolumeGroupSnapshot",
    "DeleteVolumeGroupSnapshot",
];

/// The seed: `CRASH_SEED` when set, else the clock.
pub fn seed() -> u64 {
    match std::env::var("CRASH_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CRASH_SEED={s:?} is not an unsigned integer")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// Seeded picks of delays and subsets.
#[derive(Debug, Clone)]
pub struct Prng(SplitMix64);

impl Prng {
    /// A generator for `seed`; `stream` separates independent sequences.
    pub fn new(seed: u64, stream: u64) -> Prng {
        Prng(SplitMix64::new(
            seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        self.0.below(n)
    }

    /// A duration uniform in `lo..=hi`, in whole milliseconds.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let lo_ms = lo.as_millis() as u64;
        let span = hi.as_millis() as u64 - lo_ms + 1;
        Duration::from_millis(lo_ms + self.next_u64() % span)
    }

    /// `k` distinct items of `items`, in random order.
    pub fn pick<T: Clone>(&mut self, items: &[T], k: usize) -> Vec<T> {
        let mut v = items.to_vec();
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
        v.truncate(k);
        v
    }
}

/// The snapshot-controller's writes, made in-process (not counted by the
/// server's request counters, so those count the sidecar's requests only).
pub struct Cluster<'a> {
    /// The embedded API server.
    pub server: &'a ApiServer,
}

impl Cluster<'_> {
    async fn send(&self, method: &str, path: &str, ct: Option<&str>, body: Option<&Value>) {
        let r = self
            .server
            .local_request(method, path, ct, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(
            (200..300).contains(&r.code),
            "{method} {path}: HTTP {}: {}",
            r.code,
            r.body
        );
    }

    /// Creates an object under the collection `path`.
    pub async fn create(&self, path: &str, obj: &Value) {
        self.send("POST", path, None, Some(obj)).await;
    }

    /// Merge-patches the object at `path` (a `/status` path for the status).
    pub async fn merge(&self, path: &str, patch: &Value) {
        self.send(
            "PATCH",
            path,
            Some("application/merge-patch+json"),
            Some(patch),
        )
        .await;
    }

    /// Deletes as the snapshot-controller does once the (group) snapshot
    /// is deleted: the being-deleted annotation `ann`, then DELETE; the
    /// finalizer keeps the object until the sidecar is done with it.
    pub async fn delete_as_controller(&self, collection: &str, name: &str, ann: &str) {
        let path = format!("{collection}/{name}");
        let mark = json!({"metadata": {"annotations": {ann: keys::ANN_VALUE_YES}}});
        self.merge(&path, &mark).await;
        self.send("DELETE", &path, None, None).await;
    }

    /// A stored VolumeSnapshotContent.
    pub fn content(&self, name: &str) -> Option<Value> {
        self.server.object(VSC, "", name)
    }

    /// A stored VolumeGroupSnapshotContent.
    pub fn group(&self, name: &str) -> Option<Value> {
        self.server.object(VGSC, "", name)
    }

    /// How many contents (of both kinds) carry a being-created annotation:
    /// creates the sidecar started and has not finished.
    pub fn creates_in_flight(&self) -> usize {
        let count = |resource: &str, ann: &str| {
            self.server
                .objects(resource)
                .iter()
                .filter(|o| has_annotation(o, ann))
                .count()
        };
        count(VSC, keys::ANN_VS_BEING_CREATED) + count(VGSC, keys::ANN_VGS_BEING_CREATED)
    }
}

/// Whether the object carries annotation `key`.
pub fn has_annotation(obj: &Value, key: &str) -> bool {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .is_some()
}

/// `status.readyToUse == true`.
pub fn is_ready(obj: &Value) -> bool {
    obj.pointer("/status/readyToUse") == Some(&Value::Bool(true))
}

/// A string field of the status.
pub fn status_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("status")?.get(field)?.as_str()
}

/// A one-line summary of an object's state, for failure messages.
pub fn brief(obj: &Value) -> String {
    let ann: Vec<&str> = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    format!(
        "deletionTimestamp={} finalizers={} annotations={ann:?} status={}",
        obj.pointer("/metadata/deletionTimestamp")
            .unwrap_or(&Value::Null),
        obj.pointer("/metadata/finalizers").unwrap_or(&Value::Null),
        obj.get("status").unwrap_or(&Value::Null)
    )
}

/// Call counts of the RPCs in [`RPCS`] on one mock instance.
pub fn call_counts(mock: &MockDriver) -> BTreeMap<&'static str, u64> {
    RPCS.iter().map(|&r| (r, mock.calls(r))).collect()
}

/// What the supervisor is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Kill the sidecar at random points; restart it whenever it is gone.
    Chaos,
    /// Let it run; restart it only if it exits by itself.
    Calm,
    /// Kill it and return.
    Stop,
}

/// What happened to the sidecar processes.
#[derive(Debug, Clone, Default)]
pub struct SidecarStats {
    /// Processes started.
    pub starts: u32,
    /// SIGKILLs sent by the chaos phase.
    pub kills: u32,
    /// Kills sent before the process had started its controllers.
    pub kills_in_startup: u32,
    /// Kills while at least one create was marked in flight on the server.
    pub kills_with_creates_in_flight: u32,
    /// Exit codes of processes that ended by themselves (`None`: signal).
    pub own_exits: Vec<Option<i32>>,
}

/// The sidecar's log line once its content controller runs.
const STARTED: &str = "Snapshot content controller started";
/// Pause before restarting a sidecar that exited by itself.
const RESTART_PAUSE: Duration = Duration::from_millis(50);
/// How often the supervisor looks at the child and its log.
const TICK: Duration = Duration::from_millis(5);
/// One kill in this many lands during startup, before the controllers run.
const STARTUP_KILL_ONE_IN: usize = 5;
/// The delay of a startup kill, from the spawn.
const STARTUP_KILL: (Duration, Duration) = (Duration::ZERO, Duration::from_millis(150));

/// When to kill one process.
#[derive(Debug, Clone, Copy)]
enum KillPlan {
    /// This long after the spawn, whatever it is doing.
    InStartup(Duration),
    /// This long after its controllers started (timed from the log line,
    /// so a slow start on a loaded machine does not eat the process's
    /// working time).
    AfterStart(Duration),
}

/// Runs the sidecar binary as a child process, again and again.
pub struct Supervisor {
    args: Vec<String>,
    log: PathBuf,
    epoch: Instant,
    kill_after: (Duration, Duration),
    stats: Mutex<SidecarStats>,
}

impl Supervisor {
    /// A supervisor for the sidecar with `args`, appending the output of
    /// every process to `log`. In the chaos phase each process is killed
    /// a random delay in `kill_after` after its controllers started, or
    /// (one in [`STARTUP_KILL_ONE_IN`]) during its startup.
    pub fn new(args: Vec<String>, log: PathBuf, kill_after: (Duration, Duration)) -> Self {
        Supervisor {
            args,
            log,
            epoch: Instant::now(),
            kill_after,
            stats: Mutex::new(SidecarStats::default()),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> SidecarStats {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, SidecarStats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a marker line to the log, so each process's output can be
    /// told apart.
    pub fn note(&self, what: &str) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the sidecar log");
        let at = self.epoch.elapsed().as_secs_f64();
        writeln!(f, "==== +{at:.3}s {what} ====").expect("write the sidecar log");
    }

    /// Starts process `n`; returns it and the log offset its output
    /// starts at.
    fn spawn(&self, n: u32) -> (Child, u64) {
        self.note(&format!("start sidecar #{n}"));
        let out = OpenOptions::new()
            .append(true)
            .open(&self.log)
            .expect("open the sidecar log");
        let offset = out.metadata().map(|m| m.len()).unwrap_or(0);
        let err = out.try_clone().expect("clone the log handle");
        let child = tokio::process::Command::new(BIN)
            .args(&self.args)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .expect("start the sidecar");
        (child, offset)
    }

    /// Whether the log shows, after `offset`, that a process started its
    /// controllers.
    fn started_since(&self, offset: u64) -> bool {
        let Ok(mut f) = std::fs::File::open(&self.log) else {
            return false;
        };
        let mut text = String::new();
        f.seek(SeekFrom::Start(offset)).is_ok()
            && f.read_to_string(&mut text).is_ok()
            && text.contains(STARTED)
    }

    /// Supervises until the phase becomes [`Phase::Stop`] (or its sender
    /// is dropped). `in_flight` counts the creates marked in flight at the
    /// moment of a kill.
    pub async fn run(
        &self,
        mut phase: watch::Receiver<Phase>,
        mut rng: Prng,
        in_flight: impl Fn() -> usize,
    ) {
        loop {
            if *phase.borrow() == Phase::Stop {
                return;
            }
            let n = {
                let mut s = self.lock();
                s.starts += 1;
                s.starts
            };
            let (mut child, offset) = self.spawn(n);
            let spawned = Instant::now();
            let plan = if rng.below(STARTUP_KILL_ONE_IN) == 0 {
                KillPlan::InStartup(rng.between(STARTUP_KILL.0, STARTUP_KILL.1))
            } else {
                KillPlan::AfterStart(rng.between(self.kill_after.0, self.kill_after.1))
            };
            let mut kill_at = match plan {
                KillPlan::InStartup(d) => Some(spawned + d),
                KillPlan::AfterStart(_) => None,
            };
            loop {
                tokio::select! {
                    status = child.wait() => {
                        let code = status.ok().and_then(|s| s.code());
                        self.note(&format!("sidecar #{n} exited by itself: {code:?}"));
                        self.lock().own_exits.push(code);
                        tokio::time::sleep(RESTART_PAUSE).await;
                        break;
                    }
                    changed = phase.changed() => {
                        if changed.is_err() || *phase.borrow() == Phase::Stop {
                            let _ = child.start_kill();
                            let _ = child.wait().await;
                            self.note(&format!("stopped sidecar #{n}"));
                            return;
                        }
                    }
                    () = tokio::time::sleep(TICK) => {}
                }
                if *phase.borrow() != Phase::Chaos {
                    continue;
                }
                if let (None, KillPlan::AfterStart(d)) = (kill_at, plan)
                    && self.started_since(offset)
                {
                    kill_at = Some(Instant::now() + d);
                }
                if kill_at.is_none_or(|t| Instant::now() < t) {
                    continue;
                }
                let creating = in_flight();
                let started = self.started_since(offset);
                let _ = child.start_kill();
                let _ = child.wait().await;
                self.note(&format!(
                    "SIGKILL sidecar #{n} {:.0} ms after its start ({}; {creating} creates marked in flight)",
                    spawned.elapsed().as_secs_f64() * 1000.0,
                    if started { "controllers running" } else { "in startup" },
                ));
                let mut s = self.lock();
                s.kills += 1;
                if !started {
                    s.kills_in_startup += 1;
                }
                if creating > 0 {
                    s.kills_with_creates_in_flight += 1;
                }
                break;
            }
        }
    }
}

/// The last `n` lines of the log, and a copy of the whole log kept outside
/// the test's temporary directory (which is removed when the test fails).
pub fn keep_log(log: &Path, seed: u64, n: usize) -> (String, PathBuf) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let kept = std::env::temp_dir().join(format!("csi-snapshotter-crash-{seed}.log"));
    let _ = std::fs::write(&kept, &text);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(n)..].join("\n");
    (tail, kept)
}
