//! The in-memory object store: one table per resource, one global
//! resourceVersion counter, and per resource a bounded window of recent
//! events for watch resume plus a broadcast channel for live fan-out.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::broadcast;

use super::resources::RESOURCES;
use super::status::ApiError;

/// How many events each resource keeps for watches that resume from a
/// version; a watch from an older version gets 410 Expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatchHistory {
    /// As kube-apiserver's watch cache: at least [`MIN_EVENTS`] and every
    /// event younger than [`FRESH_FOR`], at most [`MAX_EVENTS`].
    #[default]
    LikeUpstream,
    /// Exactly this many events (at least one).
    Events(usize),
}

/// Upstream's lower bound of watch cache capacity.
pub const MIN_EVENTS: usize = 100;
/// Upstream's upper bound of watch cache capacity (100 × 1024).
pub const MAX_EVENTS: usize = 102_400;
/// Upstream grows its watch cache to keep events at least this long
/// (`eventFreshDuration`).
pub const FRESH_FOR: Duration = Duration::from_secs(75);

/// Capacity of the live fan-out channel per resource. A watcher that falls
/// this far behind is closed (as upstream closes blocked watchers) and
/// resumes from its last version.
const FANOUT_CAPACITY: usize = 8_192;

/// `(namespace, name)`; namespace is empty for cluster-scoped objects, so
/// the map iterates in etcd key order.
pub(crate) type Key = (String, String);

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Debug)]
pub(crate) struct Event {
    pub kind: EventType,
    pub rv: u64,
    pub namespace: String,
    pub obj: Arc<Value>,
    /// The object before the change (selector transitions).
    pub prev: Option<Arc<Value>>,
    line: OnceLock<Bytes>,
    at: Instant,
}

/// A watch line `{"type":…,"object":…}\n`.
pub(crate) fn watch_line(kind: &str, obj: &Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    // Serializing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, obj);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

impl Event {
    /// The serialized line, computed once and shared by all watchers.
    pub fn line(&self) -> Bytes {
        self.line
            .get_or_init(|| watch_line(self.kind.as_str(), &self.obj))
            .clone()
    }
}

/// A stored object and its version.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub obj: Arc<Value>,
    pub rv: u64,
}

/// The objects and recent events of one resource.
pub(crate) struct Table {
    pub objects: BTreeMap<Key, Entry>,
    ring: VecDeque<Arc<Event>>,
    /// Watches from a version below this are answered 410 Expired.
    pub compacted: u64,
    tx: broadcast::Sender<Arc<Event>>,
}

/// The write raced with another one; recompute from the new state.
#[derive(Debug)]
pub(crate) struct Retry;

/// What a new watch starts with.
pub(crate) struct Subscription {
    /// Synthetic ADDED objects (initial state), in key order.
    pub initial: Vec<Arc<Value>>,
    /// Retained events after the requested version.
    pub backlog: Vec<Arc<Event>>,
    pub rx: broadcast::Receiver<Arc<Event>>,
    /// The version the watch is at after `initial` and `backlog`.
    pub rv: u64,
}

/// All tables plus the version counter.
pub(crate) struct Store {
    rv: u64,
    pub tables: Vec<Table>,
    /// The newest version whose event has been broadcast; read without the
    /// lock by watchers deciding a bookmark's version.
    published: Arc<AtomicU64>,
    history: WatchHistory,
}

/// Sets `metadata.resourceVersion`.
pub(crate) fn set_rv(obj: &mut Value, rv: u64) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

impl Store {
    /// An empty store.
    pub fn new(published: Arc<AtomicU64>, history: WatchHistory) -> Store {
        let tables = RESOURCES
            .iter()
            .map(|_| Table {
                objects: BTreeMap::new(),
                ring: VecDeque::new(),
                compacted: 0,
                tx: broadcast::channel(FANOUT_CAPACITY).0,
            })
            .collect();
        Store {
            rv: 1,
            tables,
            published,
            history,
        }
    }

    /// The newest resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// The current entry for a key.
    pub fn get(&self, res: usize, key: &Key) -> Option<Entry> {
        self.tables[res].objects.get(key).cloned()
    }

    fn emit(
        &mut self,
        res: usize,
        kind: EventType,
        key: &Key,
        obj: Arc<Value>,
        prev: Option<Arc<Value>>,
    ) {
        let ev = Arc::new(Event {
            kind,
            rv: self.rv,
            namespace: key.0.clone(),
            obj,
            prev,
            line: OnceLock::new(),
            at: Instant::now(),
        });
        let t = &mut self.tables[res];
        t.ring.push_back(ev.clone());
        let (min, max) = match self.history {
            WatchHistory::LikeUpstream => (MIN_EVENTS, MAX_EVENTS),
            WatchHistory::Events(n) => (n.max(1), n.max(1)),
        };
        while t.ring.len() > max
            || (t.ring.len() > min && t.ring.front().is_some_and(|e| e.at.elapsed() > FRESH_FOR))
        {
            if let Some(old) = t.ring.pop_front() {
                t.compacted = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = t.tx.send(ev);
        self.published.store(self.rv, Ordering::Release);
    }

    /// Stores `obj` at `key` if the current version is `base` (`None`: the
    /// key must be absent). Returns the stored object.
    pub fn put(
        &mut self,
        res: usize,
        key: Key,
        mut obj: Value,
        base: Option<u64>,
    ) -> Result<Arc<Value>, Retry> {
        let prev = self.tables[res].objects.get(&key).cloned();
        if prev.as_ref().map(|e| e.rv) != base {
            return Err(Retry);
        }
        self.rv += 1;
        set_rv(&mut obj, self.rv);
        let obj = Arc::new(obj);
        self.tables[res].objects.insert(
            key.clone(),
            Entry {
                obj: obj.clone(),
                rv: self.rv,
            },
        );
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.emit(res, kind, &key, obj.clone(), prev.map(|e| e.obj));
        Ok(obj)
    }

    /// Removes `key` if its version is `base`; `last` is the final state
    /// reported in the DELETED event.
    pub fn remove(
        &mut self,
        res: usize,
        key: &Key,
        mut last: Value,
        base: u64,
    ) -> Result<Arc<Value>, Retry> {
        match self.tables[res].objects.get(key) {
            Some(e) if e.rv == base => {}
            _ => return Err(Retry),
        }
        let prev = self.tables[res].objects.remove(key).map(|e| e.obj);
        self.rv += 1;
        set_rv(&mut last, self.rv);
        let last = Arc::new(last);
        self.emit(res, EventType::Deleted, key, last.clone(), prev);
        Ok(last)
    }

    /// Starts a watch. `from`: `None` = now with the current objects as
    /// synthetic ADDED events; `Some(v)` = replay retained events after `v`.
    pub fn subscribe(
        &self,
        res: usize,
        from: Option<u64>,
        namespace: Option<&str>,
    ) -> Result<Subscription, ApiError> {
        let t = &self.tables[res];
        let rx = t.tx.subscribe();
        match from {
            None => Ok(Subscription {
                initial: t
                    .objects
                    .iter()
                    .filter(|(k, _)| namespace.is_none_or(|ns| k.0 == ns))
                    .map(|(_, e)| e.obj.clone())
                    .collect(),
                backlog: Vec::new(),
                rx,
                rv: self.rv,
            }),
            Some(v) => {
                if v < t.compacted {
                    // Upstream names the newest version it cannot serve.
                    let oldest = t.ring.front().map(|e| e.rv - 1).unwrap_or(self.rv);
                    return Err(ApiError::expired(v, oldest));
                }
                let start = t.ring.partition_point(|e| e.rv <= v);
                Ok(Subscription {
                    initial: Vec::new(),
                    backlog: t.ring.range(start..).cloned().collect(),
                    rx,
                    rv: v.max(t.ring.back().map(|e| e.rv).unwrap_or(0)),
                })
            }
        }
    }

    /// Drops every retained event (as an etcd compaction would): watches
    /// and continue tokens from any earlier version get 410 Expired.
    pub fn compact(&mut self) {
        for t in &mut self.tables {
            t.ring.clear();
            t.compacted = self.rv;
        }
    }
}
