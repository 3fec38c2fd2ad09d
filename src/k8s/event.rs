//! Kubernetes events (core/v1) with client-side aggregation and spam
//! filtering, written by a background task so a reconcile never waits for
//! the API server (spec C.11, B.7).
//!
//! - Events of cluster-scoped objects go to namespace `default`.
//! - The same (object, type, reason, message) seen again is not a new
//!   event: the existing one gets a PATCH of `count`, `lastTimestamp` and
//!   `message`. So only `create` and `patch` on events are needed.
//! - A token bucket per involved object (burst 25, one token per 5 minutes,
//!   as client-go) drops event storms.
//! - Every event is logged when recorded, even if it is later dropped.
//! - Recording never blocks: the queue to the writer task is bounded and a
//!   full queue drops the event with a log line.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Events waiting for the writer task; client-go buffers the same number.
const QUEUE_CAPACITY: usize = 1000;
/// Remembered aggregation and spam-filter entries (client-go's LRU size).
const CACHE_SIZE: usize = 4096;
/// Spam filter: events an object may produce at once.
const SPAM_BURST: f64 = 25.0;
/// Spam filter: one more event per object every 5 minutes.
const SPAM_REFILL_PER_SEC: f64 = 1.0 / 300.0;
/// Write attempts per event before it is given up (logged).
const WRITE_ATTEMPTS: u32 = 3;
/// Namespace of events about cluster-scoped objects.
const CLUSTER_SCOPED_EVENT_NAMESPACE: &str = "default";

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Informational.
    Normal,
    /// Something went wrong.
    Warning,
}

impl EventType {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The `involvedObject` of an event about `obj` (kind, apiVersion, name,
/// namespace, uid, resourceVersion).
pub fn object_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let meta = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..ObjectReference::default()
    }
}

struct Request {
    object: ObjectReference,
    type_: EventType,
    reason: String,
    message: String,
    at: jiff::Timestamp,
}

/// Records events; cheap to clone. The writer task ends when every clone
/// is dropped and the queue is drained.
#[derive(Clone)]
pub struct EventRecorder {
    tx: mpsc::Sender<Request>,
    component: String,
}

impl std::fmt::Debug for EventRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRecorder")
            .field("component", &self.component)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl EventRecorder {
    /// Starts the writer task; events carry `source.component = component`.
    pub fn start(client: Client, component: impl Into<String>) -> (EventRecorder, JoinHandle<()>) {
        let component = component.into();
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer = Writer {
            client,
            component: component.clone(),
            seen: Bounded::new(CACHE_SIZE),
            spam: Bounded::new(CACHE_SIZE),
        };
        let handle = tokio::spawn(writer.run(rx));
        (EventRecorder { tx, component }, handle)
    }

    /// The `source.component` of this recorder's events.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// Records a `Warning` event about `object`.
    pub fn warning(&self, object: &ObjectReference, reason: &str, message: &str) {
        self.record(object, EventType::Warning, reason, message);
    }

    /// Records a `Normal` event about `object`.
    pub fn normal(&self, object: &ObjectReference, reason: &str, message: &str) {
        self.record(object, EventType::Normal, reason, message);
    }

    /// Records an event about `object`; never waits.
    pub fn record(&self, object: &ObjectReference, type_: EventType, reason: &str, message: &str) {
        tracing::info!(
            kind = object.kind.as_deref().unwrap_or(""),
            object = object.name.as_deref().unwrap_or(""),
            event_type = type_.as_str(),
            reason,
            // `message` is tracing's own field name: it would replace the log text.
            event_message = message,
            "Event recorded"
        );
        let req = Request {
            object: object.clone(),
            type_,
            reason: reason.to_string(),
            message: message.to_string(),
            at: jiff::Timestamp::now(),
        };
        if let Err(e) = self.tx.try_send(req) {
            tracing::warn!(
                object = object.name.as_deref().unwrap_or(""),
                reason,
                closed = matches!(e, mpsc::error::TrySendError::Closed(_)),
                "Event dropped: the event queue is full or closed"
            );
        }
    }
}

/// Identity of one aggregated event.
#[derive(Clone, PartialEq, Eq, Hash)]
struct AggKey {
    object: ObjKey,
    type_: EventType,
    reason: String,
    message: String,
}

/// Identity of an involved object (spam-filter key).
#[derive(Clone, PartialEq, Eq, Hash)]
struct ObjKey {
    kind: Option<String>,
    api_version: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
}

impl ObjKey {
    fn of(o: &ObjectReference) -> ObjKey {
        ObjKey {
            kind: o.kind.clone(),
            api_version: o.api_version.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            uid: o.uid.clone(),
        }
    }
}

/// The event already written for an [`AggKey`].
struct Seen {
    namespace: String,
    name: String,
    count: i32,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A map that forgets its oldest entries beyond `cap`.
struct Bounded<K, V> {
    cap: usize,
    map: HashMap<K, V>,
    order: VecDeque<K>,
}

impl<K: Clone + Eq + Hash, V> Bounded<K, V> {
    fn new(cap: usize) -> Self {
        Bounded {
            cap,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k)
    }

    fn insert(&mut self, k: K, v: V) {
        if self.map.insert(k.clone(), v).is_none() {
            self.order.push_back(k);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    fn remove(&mut self, k: &K) {
        if self.map.remove(k).is_some() {
            self.order.retain(|x| x != k);
        }
    }
}

/// The longest object name the API server accepts (a DNS-1123 subdomain).
const MAX_NAME_LEN: usize = 253;

/// The name of a new Event about the object `object`, created at `at_ns`:
/// `<object>.<nanoseconds in hex>`, as client-go names them, except that the
/// object part is shortened when the whole would be longer than
/// [`MAX_NAME_LEN`]. Object names may themselves have 253 characters, and the
/// API server refuses a longer event name, so without this every event
/// about such an object would be lost; for a refused delete, which writes
/// no `status.error`, the object would show no error at all. The
/// `involvedObject` still names the object in full.
pub fn event_name(object: &str, at_ns: i128) -> String {
    let suffix = format!("{:x}", at_ns.max(0));
    let mut room = MAX_NAME_LEN
        .saturating_sub(suffix.len() + 1)
        .min(object.len());
    while !object.is_char_boundary(room) {
        room -= 1;
    }
    // A name part may not end with '-' or '.' (the cut may land on one).
    let base = object[..room].trim_end_matches(['-', '.']);
    let base = if base.is_empty() { "event" } else { base };
    format!("{base}.{suffix}")
}

struct Writer {
    client: Client,
    component: String,
    seen: Bounded<AggKey, Seen>,
    spam: Bounded<ObjKey, Bucket>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        while let Some(req) = rx.recv().await {
            if !self.allow(&req.object) {
                tracing::debug!(
                    object = req.object.name.as_deref().unwrap_or(""),
                    reason = req.reason,
                    "Event suppressed by the spam filter"
                );
                continue;
            }
            self.write(req).await;
        }
    }

    /// Spam filter: one token per event from the object's bucket.
    fn allow(&mut self, object: &ObjectReference) -> bool {
        let key = ObjKey::of(object);
        let now = Instant::now();
        match self.spam.get_mut(&key) {
            Some(b) => {
                let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
                b.last = now;
                b.tokens = (b.tokens + elapsed * SPAM_REFILL_PER_SEC).min(SPAM_BURST);
                if b.tokens >= 1.0 {
                    b.tokens -= 1.0;
                    true
                } else {
                    false
                }
            }
            None => {
                self.spam.insert(
                    key,
                    Bucket {
                        tokens: SPAM_BURST - 1.0,
                        last: now,
                    },
                );
                true
            }
        }
    }

    async fn write(&mut self, req: Request) {
        let key = AggKey {
            object: ObjKey::of(&req.object),
            type_: req.type_,
            reason: req.reason.clone(),
            message: req.message.clone(),
        };
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=WRITE_ATTEMPTS {
            match self.write_once(&key, &req).await {
                Ok(()) => return,
                Err(e) if attempt == WRITE_ATTEMPTS => {
                    tracing::warn!(
                        object = req.object.name.as_deref().unwrap_or(""),
                        reason = req.reason,
                        error = %e,
                        "Failed to write event, giving up"
                    );
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "Failed to write event, retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }

    /// Patches the aggregated event when there is one, else creates one.
    async fn write_once(&mut self, key: &AggKey, req: &Request) -> Result<(), kube::Error> {
        if let Some(seen) = self.seen.get_mut(key) {
            let api: Api<Event> = Api::namespaced(self.client.clone(), &seen.namespace);
            let patch = serde_json::json!({
                "count": seen.count + 1,
                "lastTimestamp": Time(req.at),
                "message": req.message,
            });
            match api
                .patch(&seen.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    seen.count += 1;
                    return Ok(());
                }
                // The event expired on the server: start a new one.
                Err(kube::Error::Api(s)) if s.is_not_found() => self.seen.remove(key),
                Err(e) => return Err(e),
            }
        }
        let namespace = req
            .object
            .namespace
            .clone()
            .unwrap_or_else(|| CLUSTER_SCOPED_EVENT_NAMESPACE.to_string());
        let name = event_name(
            req.object.name.as_deref().unwrap_or("unknown"),
            req.at.as_nanosecond(),
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: req.object.clone(),
            reason: Some(req.reason.clone()),
            message: Some(req.message.clone()),
            type_: Some(req.type_.as_str().to_string()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            first_timestamp: Some(Time(req.at)),
            last_timestamp: Some(Time(req.at)),
            count: Some(1),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(String::new()),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event).await?;
        self.seen.insert(
            key.clone(),
            Seen {
                namespace,
                name,
                count: 1,
            },
        );
        Ok(())
    }
}
