//! The mock's storage backend: volumes, snapshots and group snapshots kept in
//! memory, with the CSI semantics a real driver honours (idempotency by name,
//! idempotent deletes, group membership rules). Optionally persisted to a file
//! after every mutation so that a restarted mock keeps its snapshots.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::csi::proto::v1 as pb;

/// A point in time as stored: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stamp {
    secs: i64,
    nanos: i32,
}

impl Stamp {
    fn now() -> Stamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Stamp {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            // subsec_nanos is always below 1e9, so it fits an i32.
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        }
    }

    fn to_proto(self) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: self.secs,
            nanos: self.nanos,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct VolumeRec {
    id: String,
    name: String,
    capacity_bytes: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotRec {
    id: String,
    /// Empty for group members: they are created through their group.
    name: String,
    source_volume_id: String,
    size_bytes: i64,
    created: Stamp,
    /// How many times the snapshot was asked about after its creation.
    polls: u32,
    /// Latched: once ready, a snapshot stays ready.
    ready: bool,
    /// Empty unless the snapshot belongs to a group.
    group_id: String,
}

impl SnapshotRec {
    fn to_proto(&self) -> pb::Snapshot {
        pb::Snapshot {
            size_bytes: self.size_bytes,
            snapshot_id: self.id.clone(),
            source_volume_id: self.source_volume_id.clone(),
            creation_time: Some(self.created.to_proto()),
            ready_to_use: self.ready,
            group_snapshot_id: self.group_id.clone(),
        }
    }

    /// Counts one poll and latches readiness once `ready_after` polls were seen.
    fn poll(&mut self, ready_after: u32) -> bool {
        self.polls = self.polls.saturating_add(1);
        self.update_ready(ready_after)
    }

    /// Returns true when readiness flipped (a persisted change).
    fn update_ready(&mut self, ready_after: u32) -> bool {
        if !self.ready && self.polls >= ready_after {
            self.ready = true;
            return true;
        }
        false
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GroupRec {
    id: String,
    name: String,
    source_volume_ids: Vec<String>,
    parameters: BTreeMap<String, String>,
    /// Member snapshot keys (see [`State::snapshots`]), one per source volume, in order.
    members: Vec<u64>,
    created: Stamp,
    polls: u32,
    ready: bool,
}

/// Everything the backend stores; this is what the state file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Next sequence number for ids.
    next_seq: u64,
    volumes: BTreeMap<u64, VolumeRec>,
    /// Keyed by sequence number so that paging tokens stay valid across deletions.
    snapshots: BTreeMap<u64, SnapshotRec>,
    groups: BTreeMap<u64, GroupRec>,
}

/// The in-memory backend plus the indexes derived from it.
#[derive(Debug, Default)]
pub(crate) struct Backend {
    state: State,
    volume_by_name: HashMap<String, u64>,
    volume_by_id: HashMap<String, u64>,
    snapshot_by_name: HashMap<String, u64>,
    snapshot_by_id: HashMap<String, u64>,
    group_by_name: HashMap<String, u64>,
    group_by_id: HashMap<String, u64>,
    file: Option<PathBuf>,
}

/// Settings that shape backend answers, read from the live configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Knobs {
    /// Polls needed before a new snapshot or group reports ready.
    pub ready_after_polls: u32,
    /// Size reported for snapshots of volumes the backend does not know.
    pub default_snapshot_size: i64,
}

/// One page of a ListSnapshots answer.
pub(crate) struct Page {
    pub entries: Vec<pb::Snapshot>,
    pub next_token: String,
}

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg)
}

impl Backend {
    /// An empty backend, or the one saved in `file` when it exists.
    pub(crate) fn open(file: Option<&Path>) -> io::Result<Backend> {
        let state = match file {
            Some(path) => match std::fs::read(path) {
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("mock driver state file {}: {e}", path.display()),
                    )
                })?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => State::default(),
                Err(e) => return Err(e),
            },
            None => State::default(),
        };
        let mut backend = Backend {
            state,
            file: file.map(Path::to_path_buf),
            ..Backend::default()
        };
        backend.reindex();
        Ok(backend)
    }

    fn reindex(&mut self) {
        for (&k, v) in &self.state.volumes {
            self.volume_by_name.insert(v.name.clone(), k);
            self.volume_by_id.insert(v.id.clone(), k);
        }
        for (&k, s) in &self.state.snapshots {
            if !s.name.is_empty() {
                self.snapshot_by_name.insert(s.name.clone(), k);
            }
            self.snapshot_by_id.insert(s.id.clone(), k);
        }
        for (&k, g) in &self.state.groups {
            self.group_by_name.insert(g.name.clone(), k);
            self.group_by_id.insert(g.id.clone(), k);
        }
    }

    /// Writes the state file, if any: a temporary file renamed over the old
    /// one, so a crash never leaves a half-written state behind.
    fn save(&self) -> Result<(), Status> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let write = || -> io::Result<()> {
            let bytes = serde_json::to_vec(&self.state)?;
            let mut tmp = path.clone().into_os_string();
            tmp.push(".tmp");
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| Status::internal(format!("mock backend could not save state: {e}")))
    }

    fn next_seq(&mut self) -> u64 {
        self.state.next_seq += 1;
        self.state.next_seq
    }

    // ---- volumes ----

    pub(crate) fn create_volume(
        &mut self,
        req: &pb::CreateVolumeRequest,
        knobs: Knobs,
    ) -> Result<pb::Volume, Status> {
        if req.name.is_empty() {
            return Err(invalid("name is required"));
        }
        let capacity = req
            .capacity_range
            .as_ref()
            .map(|r| r.required_bytes)
            .filter(|&b| b > 0)
            .unwrap_or(knobs.default_snapshot_size);
        if capacity < 0 {
            return Err(Status::out_of_range("capacity must not be negative"));
        }
        if let Some(src) = req
            .volume_content_source
            .as_ref()
            .and_then(|s| s.r#type.as_ref())
        {
            use pb::volume_content_source::Type;
            let found = match src {
                Type::Snapshot(s) => self.snapshot_by_id.contains_key(&s.snapshot_id),
                Type::Volume(v) => self.volume_by_id.contains_key(&v.volume_id),
            };
            if !found {
                return Err(Status::not_found("volume content source not found"));
            }
        }
        if let Some(k) = self.volume_by_name.get(&req.name) {
            let v = &self.state.volumes[k];
            if v.capacity_bytes != capacity {
                return Err(Status::already_exists(format!(
                    "volume {:?} exists with a different capacity",
                    req.name
                )));
            }
            return Ok(volume_proto(v, req));
        }
        let seq = self.next_seq();
        let rec = VolumeRec {
            id: format!("vol-{seq}"),
            name: req.name.clone(),
            capacity_bytes: capacity,
        };
        self.volume_by_name.insert(rec.name.clone(), seq);
        self.volume_by_id.insert(rec.id.clone(), seq);
        let out = volume_proto(&rec, req);
        self.state.volumes.insert(seq, rec);
        self.save()?;
        Ok(out)
    }

    pub(crate) fn delete_volume(&mut self, req: &pb::DeleteVolumeRequest) -> Result<(), Status> {
        if req.volume_id.is_empty() {
            return Err(invalid("volume_id is required"));
        }
        if let Some(k) = self.volume_by_id.remove(&req.volume_id) {
            if let Some(v) = self.state.volumes.remove(&k) {
                self.volume_by_name.remove(&v.name);
            }
            self.save()?;
        }
        Ok(())
    }

    // ---- snapshots ----

    pub(crate) fn create_snapshot(
        &mut self,
        req: &pb::CreateSnapshotRequest,
        knobs: Knobs,
    ) -> Result<pb::Snapshot, Status> {
        if req.name.is_empty() {
            return Err(invalid("name is required"));
        }
        if req.source_volume_id.is_empty() {
            return Err(invalid("source_volume_id is required"));
        }
        if let Some(&k) = self.snapshot_by_name.get(&req.name) {
            let Some(s) = self.state.snapshots.get_mut(&k) else {
                return Err(Status::internal("mock backend index out of sync"));
            };
            if s.source_volume_id != req.source_volume_id {
                return Err(Status::already_exists(format!(
                    "snapshot {:?} exists with source volume {:?}",
                    req.name, s.source_volume_id
                )));
            }
            let flipped = s.poll(knobs.ready_after_polls);
            let out = s.to_proto();
            if flipped {
                self.save()?;
            }
            return Ok(out);
        }
        let size = self
            .volume_by_id
            .get(&req.source_volume_id)
            .map(|k| self.state.volumes[k].capacity_bytes)
            .unwrap_or(knobs.default_snapshot_size);
        let seq = self.next_seq();
        let mut rec = SnapshotRec {
            id: format!("snap-{seq}"),
            name: req.name.clone(),
            source_volume_id: req.source_volume_id.clone(),
            size_bytes: size,
            created: Stamp::now(),
            polls: 0,
            ready: false,
            group_id: String::new(),
        };
        rec.update_ready(knobs.ready_after_polls);
        self.snapshot_by_name.insert(rec.name.clone(), seq);
        self.snapshot_by_id.insert(rec.id.clone(), seq);
        let out = rec.to_proto();
        self.state.snapshots.insert(seq, rec);
        self.save()?;
        Ok(out)
    }

    pub(crate) fn delete_snapshot(
        &mut self,
        req: &pb::DeleteSnapshotRequest,
    ) -> Result<(), Status> {
        if req.snapshot_id.is_empty() {
            return Err(invalid("snapshot_id is required"));
        }
        let Some(&k) = self.snapshot_by_id.get(&req.snapshot_id) else {
            return Ok(());
        };
        let s = &self.state.snapshots[&k];
        if !s.group_id.is_empty() {
            return Err(invalid(format!(
                "snapshot {:?} belongs to group snapshot {:?} and cannot be deleted alone",
                s.id, s.group_id
            )));
        }
        self.remove_snapshot(k);
        self.save()
    }

    fn remove_snapshot(&mut self, k: u64) {
        if let Some(s) = self.state.snapshots.remove(&k) {
            self.snapshot_by_id.remove(&s.id);
            if !s.name.is_empty() {
                self.snapshot_by_name.remove(&s.name);
            }
        }
    }

    /// ListSnapshots: each listed snapshot counts as one poll.
    pub(crate) fn list_snapshots(
        &mut self,
        req: &pb::ListSnapshotsRequest,
        knobs: Knobs,
    ) -> Result<Page, Status> {
        if req.max_entries < 0 {
            return Err(invalid("max_entries must not be negative"));
        }
        let start = if req.starting_token.is_empty() {
            0
        } else {
            req.starting_token.parse::<u64>().map_err(|_| {
                Status::aborted(format!("invalid starting_token {:?}", req.starting_token))
            })?
        };
        let limit = if req.max_entries == 0 {
            usize::MAX
        } else {
            // max_entries is positive here, so the conversion cannot fail.
            usize::try_from(req.max_entries).unwrap_or(usize::MAX)
        };
        let mut entries = Vec::new();
        let mut next_token = String::new();
        let mut flipped = false;
        if !req.snapshot_id.is_empty() {
            if let Some(&k) = self.snapshot_by_id.get(&req.snapshot_id)
                && k >= start
                && let Some(s) = self.state.snapshots.get_mut(&k)
                && (req.source_volume_id.is_empty() || s.source_volume_id == req.source_volume_id)
            {
                flipped |= s.poll(knobs.ready_after_polls);
                entries.push(s.to_proto());
            }
        } else {
            for (&k, s) in self.state.snapshots.range_mut(start..) {
                if !req.source_volume_id.is_empty() && s.source_volume_id != req.source_volume_id {
                    continue;
                }
                if entries.len() == limit {
                    next_token = k.to_string();
                    break;
                }
                flipped |= s.poll(knobs.ready_after_polls);
                entries.push(s.to_proto());
            }
        }
        if flipped {
            self.save()?;
        }
        Ok(Page {
            entries,
            next_token,
        })
    }

    pub(crate) fn get_snapshot(
        &mut self,
        req: &pb::GetSnapshotRequest,
        knobs: Knobs,
    ) -> Result<pb::Snapshot, Status> {
        if req.snapshot_id.is_empty() {
            return Err(invalid("snapshot_id is required"));
        }
        let Some(s) = self
            .snapshot_by_id
            .get(&req.snapshot_id)
            .and_then(|k| self.state.snapshots.get_mut(k))
        else {
            return Err(Status::not_found(format!(
                "snapshot {:?} not found",
                req.snapshot_id
            )));
        };
        let flipped = s.poll(knobs.ready_after_polls);
        let out = s.to_proto();
        if flipped {
            self.save()?;
        }
        Ok(out)
    }

    // ---- group snapshots ----

    pub(crate) fn create_group(
        &mut self,
        req: &pb::CreateVolumeGroupSnapshotRequest,
        knobs: Knobs,
    ) -> Result<pb::VolumeGroupSnapshot, Status> {
        if req.name.is_empty() {
            return Err(invalid("name is required"));
        }
        if req.source_volume_ids.is_empty() {
            return Err(invalid("source_volume_ids is required"));
        }
        if req.source_volume_ids.iter().any(String::is_empty) {
            return Err(invalid("source_volume_ids must not contain empty ids"));
        }
        let mut sorted: Vec<&String> = req.source_volume_ids.iter().collect();
        sorted.sort();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(invalid("source_volume_ids must not repeat a volume"));
        }
        let parameters: BTreeMap<String, String> = req
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(&k) = self.group_by_name.get(&req.name) {
            let g = &self.state.groups[&k];
            let mut existing: Vec<&String> = g.source_volume_ids.iter().collect();
            existing.sort();
            if existing != sorted || g.parameters != parameters {
                return Err(Status::already_exists(format!(
                    "group snapshot {:?} exists with other source volumes or parameters",
                    req.name
                )));
            }
            let flipped = self.poll_group(k, knobs);
            let out = self.group_proto(k);
            if flipped {
                self.save()?;
            }
            return Ok(out);
        }
        let gseq = self.next_seq();
        let group_id = format!("group-{gseq}");
        let created = Stamp::now();
        let ready = knobs.ready_after_polls == 0;
        let mut members = Vec::with_capacity(req.source_volume_ids.len());
        for vol in &req.source_volume_ids {
            let size = self
                .volume_by_id
                .get(vol)
                .map(|k| self.state.volumes[k].capacity_bytes)
                .unwrap_or(knobs.default_snapshot_size);
            let seq = self.next_seq();
            let rec = SnapshotRec {
                id: format!("snap-{seq}"),
                name: String::new(),
                source_volume_id: vol.clone(),
                size_bytes: size,
                created,
                polls: 0,
                ready,
                group_id: group_id.clone(),
            };
            self.snapshot_by_id.insert(rec.id.clone(), seq);
            self.state.snapshots.insert(seq, rec);
            members.push(seq);
        }
        let rec = GroupRec {
            id: group_id,
            name: req.name.clone(),
            source_volume_ids: req.source_volume_ids.clone(),
            parameters,
            members,
            created,
            polls: 0,
            ready,
        };
        self.group_by_name.insert(rec.name.clone(), gseq);
        self.group_by_id.insert(rec.id.clone(), gseq);
        self.state.groups.insert(gseq, rec);
        let out = self.group_proto(gseq);
        self.save()?;
        Ok(out)
    }

    /// Counts a poll of the group; when the group becomes ready, so do its
    /// members. Returns true when readiness flipped.
    fn poll_group(&mut self, k: u64, knobs: Knobs) -> bool {
        let Some(g) = self.state.groups.get_mut(&k) else {
            return false;
        };
        g.polls = g.polls.saturating_add(1);
        if g.ready || g.polls < knobs.ready_after_polls {
            return false;
        }
        g.ready = true;
        for m in &g.members {
            if let Some(s) = self.state.snapshots.get_mut(m) {
                s.ready = true;
            }
        }
        true
    }

    fn group_proto(&self, k: u64) -> pb::VolumeGroupSnapshot {
        let g = &self.state.groups[&k];
        let snapshots: Vec<pb::Snapshot> = g
            .members
            .iter()
            .filter_map(|m| self.state.snapshots.get(m))
            .map(SnapshotRec::to_proto)
            .collect();
        pb::VolumeGroupSnapshot {
            group_snapshot_id: g.id.clone(),
            ready_to_use: g.ready && snapshots.iter().all(|s| s.ready_to_use),
            snapshots,
            creation_time: Some(g.created.to_proto()),
        }
    }

    /// Looks a group up by id and checks `snapshot_ids` against its members.
    fn checked_group(
        &self,
        group_id: &str,
        snapshot_ids: &[String],
    ) -> Result<Option<u64>, Status> {
        if group_id.is_empty() {
            return Err(invalid("group_snapshot_id is required"));
        }
        if snapshot_ids.is_empty() {
            return Err(invalid("snapshot_ids is required"));
        }
        let Some(&k) = self.group_by_id.get(group_id) else {
            return Ok(None);
        };
        let g = &self.state.groups[&k];
        let mut want: Vec<&str> = snapshot_ids.iter().map(String::as_str).collect();
        want.sort_unstable();
        let mut have: Vec<&str> = g
            .members
            .iter()
            .filter_map(|m| self.state.snapshots.get(m))
            .map(|s| s.id.as_str())
            .collect();
        have.sort_unstable();
        if want != have {
            return Err(invalid(format!(
                "snapshot_ids {snapshot_ids:?} do not match the members of group snapshot {group_id:?}"
            )));
        }
        Ok(Some(k))
    }

    pub(crate) fn get_group(
        &mut self,
        req: &pb::GetVolumeGroupSnapshotRequest,
        knobs: Knobs,
    ) -> Result<pb::VolumeGroupSnapshot, Status> {
        let Some(k) = self.checked_group(&req.group_snapshot_id, &req.snapshot_ids)? else {
            return Err(Status::not_found(format!(
                "group snapshot {:?} not found",
                req.group_snapshot_id
            )));
        };
        let flipped = self.poll_group(k, knobs);
        let out = self.group_proto(k);
        if flipped {
            self.save()?;
        }
        Ok(out)
    }

    pub(crate) fn delete_group(
        &mut self,
        req: &pb::DeleteVolumeGroupSnapshotRequest,
    ) -> Result<(), Status> {
        let Some(k) = self.checked_group(&req.group_snapshot_id, &req.snapshot_ids)? else {
            return Ok(());
        };
        if let Some(g) = self.state.groups.remove(&k) {
            self.group_by_id.remove(&g.id);
            self.group_by_name.remove(&g.name);
            for m in g.members {
                self.remove_snapshot(m);
            }
        }
        self.save()
    }

    // ---- inspection ----

    pub(crate) fn snapshots(&self) -> Vec<pb::Snapshot> {
        self.state
            .snapshots
            .values()
            .map(SnapshotRec::to_proto)
            .collect()
    }

    pub(crate) fn group_snapshots(&self) -> Vec<pb::VolumeGroupSnapshot> {
        self.state
            .groups
            .keys()
            .map(|&k| self.group_proto(k))
            .collect()
    }

    pub(crate) fn volumes(&self) -> Vec<pb::Volume> {
        self.state
            .volumes
            .values()
            .map(|v| pb::Volume {
                capacity_bytes: v.capacity_bytes,
                volume_id: v.id.clone(),
                ..pb::Volume::default()
            })
            .collect()
    }
}

fn volume_proto(v: &VolumeRec, req: &pb::CreateVolumeRequest) -> pb::Volume {
    pb::Volume {
        capacity_bytes: v.capacity_bytes,
        volume_id: v.id.clone(),
        content_source: req.volume_content_source.clone(),
        ..pb::Volume::default()
    }
}
