//! Informer-style watch caches (spec B.5, B.6): list + watch one kind into an
//! in-memory store and tell a handler about every add, update and delete.
//!
//! - Stored objects are lean: `managedFields` and the
//!   `kubectl.kubernetes.io/last-applied-configuration` annotation are
//!   dropped before storing, as the sidecar never reads them.
//! - After a re-list, objects that vanished meanwhile are delivered as
//!   deletes and the rest as updates, like a client-go informer.
//! - With a resync period, every cached object is re-delivered as an update
//!   whose old and new object are the same (no API traffic).
//! - The cache reports "synced" once the first list has been stored.
//! - Watch errors are logged and the watch restarts with backoff; it never
//!   ends. Objects that do not decode are the concern of the type: watch a
//!   lenient wrapper type (e.g. `Lenient<T>`) so one bad object cannot break
//!   the list.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::k8s::compact;

/// Annotation written by `kubectl apply`; it holds a full copy of the object.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Label that assigns a content to one node with `--node-deployment` (spec B.6).
pub const MANAGED_BY_LABEL: &str = "snapshot.storage.kubernetes.io/managed-by";

/// The label selector of `--node-deployment` for node `node_name`.
pub fn managed_by_selector(node_name: &str) -> String {
    format!("{MANAGED_BY_LABEL}={node_name}")
}

/// A change seen by an informer.
#[derive(Debug, Clone)]
pub enum Notification<K> {
    /// A new object.
    Add(Arc<K>),
    /// A changed object, or a resync (then `old` and `new` are the same).
    Update {
        /// The previously cached object.
        old: Arc<K>,
        /// The object now cached.
        new: Arc<K>,
    },
    /// The object is gone (the last cached state).
    Delete(Arc<K>),
}

impl<K: Resource> Notification<K> {
    /// The object's name (the queue key of a cluster-scoped kind).
    pub fn name(&self) -> Option<&str> {
        let obj = match self {
            Notification::Add(o) | Notification::Delete(o) => o,
            Notification::Update { new, .. } => new,
        };
        obj.meta().name.as_deref()
    }
}

/// Options of one informer.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// Label selector for list and watch (`--node-deployment`).
    pub label_selector: Option<String>,
    /// Period of the resync (`--resync-period`); `None` or zero disables it.
    pub resync_period: Option<Duration>,
}

/// One cached object and its name. Objects are kept as their compact JSON,
/// packed (see [`compact`]): about a quarter of the size of the decoded
/// struct (no empty `Option` slots, no map nodes, no repeated key names),
/// which is what keeps 10,000 cached contents within the memory budget. The
/// name shares that one allocation, and is not kept a second time inside
/// the JSON, so a cached object costs one heap block and one table slot. An
/// object that cannot be encoded (a malformed one), or whose name is too
/// long for the length prefix, is kept as is.
enum Stored<K> {
    /// `[name length, u16 LE][name][cut, u32 LE][packed compact JSON]`: the
    /// JSON's `"name":<name>` member was taken out at packed offset `cut`
    /// (`NO_CUT`: the JSON holds it).
    Encoded(Box<[u8]>),
    /// The name and the object.
    Decoded(Box<(Box<str>, Arc<K>)>),
}

/// Bytes of the name-length prefix of [`Stored::Encoded`].
const NAME_PREFIX: usize = 2;
/// Bytes of the cut offset that follows the name.
const CUT: usize = 4;
/// The cut of JSON that kept its name member.
const NO_CUT: u32 = u32::MAX;

/// The JSON member that holds `name` (`"name":"…"`), as `serde_json`
/// writes it.
fn name_member(name: &str) -> Vec<u8> {
    let mut member = b"\"name\":".to_vec();
    // Writing a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut member, name);
    member
}

impl<K> Stored<K> {
    fn name(&self) -> &str {
        match self {
            Stored::Encoded(bytes) => {
                let len = usize::from(u16::from_le_bytes([bytes[0], bytes[1]]));
                // Written from a `&str` by `Stored::new`, so always UTF-8.
                std::str::from_utf8(&bytes[NAME_PREFIX..NAME_PREFIX + len]).unwrap_or_default()
            }
            Stored::Decoded(entry) => &entry.0,
        }
    }
}

impl<K: Serialize + DeserializeOwned> Stored<K> {
    fn new(name: String, obj: &Arc<K>) -> Stored<K> {
        let encoded = serde_json::to_vec(&**obj).ok();
        match (encoded, u16::try_from(name.len())) {
            (Some(json), Ok(len)) => {
                let mut bytes = Vec::with_capacity(NAME_PREFIX + name.len() + CUT + json.len() / 2);
                bytes.extend_from_slice(&len.to_le_bytes());
                bytes.extend_from_slice(name.as_bytes());
                let member = name_member(&name);
                // The API server caps objects at a few MiB, so any offset
                // into the packed JSON fits the 32-bit cut; a larger input
                // keeps its name member.
                let at = (json.len() < NO_CUT as usize)
                    .then(|| json.windows(member.len()).position(|w| w == member))
                    .flatten();
                let cut_at = bytes.len();
                bytes.extend_from_slice(&NO_CUT.to_le_bytes());
                match at {
                    Some(at) => {
                        compact::pack_into(&json[..at], &mut bytes);
                        let cut = (bytes.len() - cut_at - CUT) as u32;
                        bytes[cut_at..cut_at + CUT].copy_from_slice(&cut.to_le_bytes());
                        compact::pack_into(&json[at + member.len()..], &mut bytes);
                    }
                    None => compact::pack_into(&json, &mut bytes),
                }
                Stored::Encoded(bytes.into_boxed_slice())
            }
            _ => Stored::Decoded(Box::new((name.into_boxed_str(), Arc::clone(obj)))),
        }
    }

    /// The object's compact JSON.
    fn json(bytes: &[u8]) -> Vec<u8> {
        let name_len = usize::from(u16::from_le_bytes([bytes[0], bytes[1]]));
        let name_end = NAME_PREFIX + name_len;
        let mut cut = [0; CUT];
        cut.copy_from_slice(&bytes[name_end..name_end + CUT]);
        let cut = u32::from_le_bytes(cut);
        let packed = &bytes[name_end + CUT..];
        match usize::try_from(cut)
            .ok()
            .filter(|&c| cut != NO_CUT && c <= packed.len())
        {
            Some(cut) => {
                let name = std::str::from_utf8(&bytes[NAME_PREFIX..name_end]).unwrap_or_default();
                let mut json = compact::unpack(&packed[..cut]);
                json.extend_from_slice(&name_member(name));
                json.extend_from_slice(&compact::unpack(&packed[cut..]));
                json
            }
            None => compact::unpack(packed),
        }
    }

    fn object(&self) -> Option<Arc<K>> {
        match self {
            Stored::Encoded(bytes) => match serde_json::from_slice(&Self::json(bytes)) {
                Ok(obj) => Some(Arc::new(obj)),
                Err(e) => {
                    // Cannot happen for a type whose encoding round-trips;
                    // treated as absent rather than a crash.
                    tracing::error!(error = %e, "Cached object does not decode");
                    None
                }
            },
            Stored::Decoded(entry) => Some(Arc::clone(&entry.1)),
        }
    }
}

/// Entries are told apart by name alone, so the set is a map by name.
impl<K> PartialEq for Stored<K> {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl<K> Eq for Stored<K> {}

impl<K> Hash for Stored<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that lookups by `&str` find the entry.
        self.name().hash(state);
    }
}

impl<K> Borrow<str> for Stored<K> {
    fn borrow(&self) -> &str {
        self.name()
    }
}

struct CacheInner<K> {
    objects: RwLock<HashSet<Stored<K>>>,
    synced: watch::Sender<bool>,
}

/// The read side of an informer: the current objects by name. Cheap to
/// clone. Each read decodes a fresh copy of the object.
pub struct Cache<K> {
    inner: Arc<CacheInner<K>>,
}

impl<K> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Cache {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K> Debug for Cache<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("synced", &*self.inner.synced.borrow())
            .finish_non_exhaustive()
    }
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Cache::new()
    }
}

impl<K> Cache<K> {
    /// An empty, unsynced cache.
    pub fn new() -> Self {
        Cache {
            inner: Arc::new(CacheInner {
                objects: RwLock::new(HashSet::new()),
                synced: watch::channel(false).0,
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashSet<Stored<K>>> {
        self.inner
            .objects
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<Stored<K>>> {
        self.inner
            .objects
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of cached objects.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the cache holds no object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `name` is cached (without decoding it).
    pub fn contains(&self, name: &str) -> bool {
        self.read().contains(name)
    }

    /// The names of all cached objects, in no particular order.
    pub fn names(&self) -> Vec<String> {
        self.read().iter().map(|e| e.name().to_owned()).collect()
    }

    /// Whether the first full list has been stored.
    pub fn is_synced(&self) -> bool {
        *self.inner.synced.borrow()
    }

    /// Resolves once the first full list has been stored.
    pub async fn wait_synced(&self) {
        let mut rx = self.inner.synced.subscribe();
        // The sender lives in `self`, so the channel cannot close here.
        let _ = rx.wait_for(|s| *s).await;
    }

    fn mark_synced(&self) {
        self.inner.synced.send_replace(true);
    }
}

impl<K: Serialize + DeserializeOwned> Cache<K> {
    /// The cached object named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<K>> {
        self.read().get(name).and_then(Stored::object)
    }

    /// All cached objects, in no particular order. This decodes every
    /// object at once; prefer [`for_each`](Self::for_each) for large caches.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().iter().filter_map(Stored::object).collect()
    }

    /// Calls `f` with each cached object, decoding one at a time, so at most
    /// one decoded copy exists at once (seeding and resync of 10,000 objects
    /// would otherwise hold them all decoded). Objects added during the walk
    /// may be missed and removed ones may still be seen.
    pub fn for_each(&self, mut f: impl FnMut(Arc<K>)) {
        for name in self.names() {
            if let Some(obj) = self.get(&name) {
                f(obj);
            }
        }
    }

    /// Stores `obj` under `name`; returns the object it replaced.
    pub fn insert(&self, name: String, obj: Arc<K>) -> Option<Arc<K>> {
        let stored = Stored::new(name, &obj);
        self.write().replace(stored).and_then(|old| old.object())
    }

    /// Removes `name`; returns the removed object. A table left mostly
    /// empty (after many deletions) gives its memory back.
    pub fn remove(&self, name: &str) -> Option<Arc<K>> {
        let mut objects = self.write();
        let old = objects.take(name);
        if objects.capacity() > 64 && objects.len() < objects.capacity() / 4 {
            objects.shrink_to_fit();
        }
        drop(objects);
        old.and_then(|old| old.object())
    }
}

/// Drops what the sidecar never reads from a watched object.
pub fn make_lean<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED_ANNOTATION);
    }
}

/// What an [`Informer`] needs of the objects it watches.
pub trait Watched:
    Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug + Send + Sync + 'static
{
}

impl<K> Watched for K where
    K: Resource<DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// A list + watch of one kind feeding a [`Cache`].
pub struct Informer<K: Watched> {
    api: Api<K>,
    options: WatchOptions,
    cache: Cache<K>,
}

impl<K: Watched> Informer<K> {
    /// An informer over `api` (use `Api::all` for cluster-scoped kinds).
    pub fn new(api: Api<K>, options: WatchOptions) -> Self {
        Informer {
            api,
            options,
            cache: Cache::new(),
        }
    }

    /// The cache this informer fills.
    pub fn cache(&self) -> Cache<K> {
        self.cache.clone()
    }

    /// Runs the watch forever, calling `handler` for every change. The
    /// handler runs on the watch task and must not block (enqueue and return).
    pub async fn run<F>(self, handler: F)
    where
        F: Fn(Notification<K>) + Send + Sync,
    {
        let Informer {
            api,
            options,
            cache,
        } = self;
        let kind = K::kind(&()).into_owned();
        // Paged lists (500 per page, the most recent state) rather than
        // one unpaged list from the watch cache (resourceVersion=0): the
        // decoded page, not the whole collection, is the transient memory.
        let mut config = watcher::Config::default();
        if let Some(sel) = &options.label_selector {
            config = config.labels(sel);
        }
        let stream = watcher::watcher(api, config).default_backoff();
        futures::pin_mut!(stream);
        let resync = options.resync_period.filter(|d| !d.is_zero());
        let mut ticker = resync.map(|d| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut relisting: Option<HashSet<String>> = None;
        loop {
            let tick = async {
                match ticker.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = stream.next() => match ev {
                    None => {
                        tracing::error!(kind, "Watch stream ended");
                        return;
                    }
                    Some(Err(e)) => tracing::warn!(kind, error = %e, "Watch failed, restarting"),
                    Some(Ok(Event::Init)) => {
                        tracing::debug!(kind, "Listing");
                        // Only a re-list can find objects gone meanwhile; the
                        // first list (an empty cache) needs no set of names.
                        relisting = (!cache.is_empty()).then(HashSet::new);
                    }
                    Some(Ok(Event::InitApply(obj))) => {
                        if let (Some(seen), Some(name)) = (relisting.as_mut(), obj.meta().name.clone()) {
                            seen.insert(name);
                        }
                        apply(&cache, obj, &handler);
                    }
                    Some(Ok(Event::InitDone)) => {
                        if let Some(seen) = relisting.take() {
                            let gone: Vec<String> = cache
                                .read()
                                .iter()
                                .map(Stored::name)
                                .filter(|k| !seen.contains(*k))
                                .map(str::to_owned)
                                .collect();
                            for name in gone {
                                if let Some(old) = cache.remove(&name) {
                                    handler(Notification::Delete(old));
                                }
                            }
                        }
                        if !cache.is_synced() {
                            tracing::info!(kind, objects = cache.len(), "Cache synced");
                            cache.mark_synced();
                        }
                    }
                    Some(Ok(Event::Apply(obj))) => apply(&cache, obj, &handler),
                    Some(Ok(Event::Delete(mut obj))) => {
                        if let Some(name) = obj.meta().name.clone() {
                            make_lean(&mut obj);
                            let last = cache.remove(&name).unwrap_or_else(|| Arc::new(obj));
                            handler(Notification::Delete(last));
                        }
                    }
                },
                () = tick => {
                    if cache.is_synced() {
                        tracing::debug!(kind, objects = cache.len(), "Resync");
                        cache.for_each(|obj| {
                            handler(Notification::Update { old: obj.clone(), new: obj });
                        });
                    }
                }
            }
        }
    }
}

fn apply<K: Resource + Serialize + DeserializeOwned>(
    cache: &Cache<K>,
    obj: K,
    handler: &impl Fn(Notification<K>),
) {
    let Some((new, old)) = store(cache, obj) else {
        return;
    };
    match old {
        Some(old) => handler(Notification::Update { old, new }),
        None => handler(Notification::Add(new)),
    }
}

/// Stores a lean `obj`; returns it and the object it replaced.
fn store<K: Resource + Serialize + DeserializeOwned>(
    cache: &Cache<K>,
    mut obj: K,
) -> Option<(Arc<K>, Option<Arc<K>>)> {
    let Some(name) = obj.meta().name.clone() else {
        tracing::warn!("Ignoring a watched object without a name");
        return None;
    };
    make_lean(&mut obj);
    let new = Arc::new(obj);
    let old = cache.insert(name, new.clone());
    Some((new, old))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};

    #[test]
    fn lean_objects_drop_managed_fields_and_last_applied() {
        let mut cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("x".into()),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                annotations: Some(
                    [
                        (LAST_APPLIED_ANNOTATION.to_string(), "{}".to_string()),
                        ("keep".to_string(), "1".to_string()),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        make_lean(&mut cm);
        assert!(cm.metadata.managed_fields.is_none());
        assert_eq!(
            cm.metadata
                .annotations
                .unwrap()
                .into_keys()
                .collect::<Vec<_>>(),
            vec!["keep".to_string()]
        );
    }

    #[test]
    fn cached_objects_come_back_the_same_with_the_name_kept_once() {
        use serde_json::{Value, json};
        let cache: Cache<Value> = Cache::new();
        let uid = "8c1f5a2e-5f3b-4f43-9d7e-0e7f3c2a1b9e";
        let objects = [
            (
                "c1",
                json!({"metadata": {"name": "c1", "uid": uid}, "spec": {"driver": "d"}}),
            ),
            // A label named "name" with the same value comes first: it is
            // the member taken out, and put back at the same place.
            (
                "c2",
                json!({"metadata": {"labels": {"name": "c2"}, "name": "c2"}}),
            ),
            // Names that JSON escapes, and an object without its name.
            ("q\"\\é", json!({"metadata": {"name": "q\"\\é"}})),
            ("absent", json!({"metadata": {"uid": uid}})),
            ("", json!({"metadata": {"name": ""}, "x": "\"name\":\"\""})),
        ];
        for (name, obj) in &objects {
            cache.insert((*name).to_owned(), Arc::new(obj.clone()));
        }
        for (name, obj) in &objects {
            assert_eq!(cache.get(name).as_deref(), Some(obj), "{name}");
        }
        let stored = cache.read();
        let c1 = stored.get("c1").expect("c1");
        let Stored::Encoded(bytes) = c1 else {
            panic!("c1 not encoded")
        };
        // The name once in the prefix, not again in the packed JSON.
        assert_eq!(bytes.windows(2).filter(|w| w == b"c1").count(), 1);
    }

    #[test]
    fn node_selector() {
        assert_eq!(
            managed_by_selector("node-1"),
            "snapshot.storage.kubernetes.io/managed-by=node-1"
        );
    }
}
