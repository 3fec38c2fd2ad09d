//! Which objects and events the sidecar acts on: the driver filter (B.5,
//! H.38), the update filter (C.1, H.24), the deletion test (C.2 step 1, D.2
//! step 1, H.18, H.19) and the last-seen version store (C.1 step 3, H.20).

use std::collections::HashMap;

use serde_json::Value;

use crate::k8s::keys;
use crate::k8s::types::{
    VolumeGroupSnapshotClass, VolumeGroupSnapshotContent, VolumeSnapshotClass,
    VolumeSnapshotContent,
};

/// Whether this sidecar handles the VSC. `class` is the cache lookup of
/// `spec.volumeSnapshotClassName` (`None` when unset or not found: a missing
/// class still matches).
pub fn is_driver_match(
    content: &VolumeSnapshotContent,
    class: Option<&VolumeSnapshotClass>,
    driver: &str,
) -> bool {
    let src = &content.spec.source;
    if src.volume_handle.is_none() && src.snapshot_handle.is_none() {
        return false;
    }
    if content.spec.driver != driver {
        return false;
    }
    class.is_none_or(|c| c.driver == driver)
}

/// Whether this sidecar handles the VGSC (same rules as [`is_driver_match`];
/// the source is empty when `volumeHandles` is empty and
/// `groupSnapshotHandles` absent).
pub fn is_group_driver_match(
    content: &VolumeGroupSnapshotContent,
    class: Option<&VolumeGroupSnapshotClass>,
    driver: &str,
) -> bool {
    let src = &content.spec.source;
    let no_volumes = src.volume_handles.as_ref().is_none_or(Vec::is_empty);
    if no_volumes && src.group_snapshot_handles.is_none() {
        return false;
    }
    if content.spec.driver != driver {
        return false;
    }
    class.is_none_or(|c| c.driver == driver)
}

/// Whether a VSC is to be deleted now (spec C.2 step 1).
pub fn should_delete(content: &VolumeSnapshotContent) -> bool {
    if content.metadata.deletion_timestamp.is_none() {
        return false;
    }
    if content.spec.source.snapshot_handle.is_some() && content.snapshot_uid().is_none() {
        return true;
    }
    if content.annotation(keys::ANN_VS_BEING_CREATED).is_some() {
        return false;
    }
    content.annotation(keys::ANN_VS_BEING_DELETED).is_some()
}

/// Whether a VGSC is to be deleted now (spec D.2 step 1).
pub fn should_delete_group(content: &VolumeGroupSnapshotContent) -> bool {
    if content.metadata.deletion_timestamp.is_none() {
        return false;
    }
    if content.spec.source.group_snapshot_handles.is_some()
        && content.group_snapshot_uid().is_none()
    {
        return true;
    }
    if content.annotation(keys::ANN_VGS_BEING_CREATED).is_some() {
        return false;
    }
    content.annotation(keys::ANN_VGS_BEING_DELETED).is_some()
}

/// Whether a VSC update event is enqueued (spec C.1): resyncs, a readiness
/// change to true, or any change other than resourceVersion, status,
/// managedFields, finalizers and the being-created annotation.
pub fn should_enqueue_content_change(
    old: &VolumeSnapshotContent,
    new: &VolumeSnapshotContent,
) -> bool {
    if old.metadata.resource_version == new.metadata.resource_version {
        return true;
    }
    if !old.is_ready() && new.is_ready() {
        return true;
    }
    sanitized(old) != sanitized(new)
}

/// The object as JSON without the fields the update filter ignores, with
/// null/empty maps and lists pruned (semantic equality treats nil and empty
/// alike).
fn sanitized(content: &VolumeSnapshotContent) -> Value {
    let mut c = content.clone();
    c.status = None;
    c.metadata.resource_version = None;
    c.metadata.managed_fields = None;
    c.metadata.finalizers = None;
    if let Some(a) = c.metadata.annotations.as_mut() {
        a.remove(keys::ANN_VS_BEING_CREATED);
    }
    let mut v = serde_json::to_value(&c).unwrap_or_default();
    prune(&mut v);
    v
}

fn prune(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for x in map.values_mut() {
                prune(x);
            }
            map.retain(|_, x| !is_empty(x));
        }
        Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// What the version store says about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness<T> {
    /// Newer than (or first seen, or equal to) what was stored: process it.
    Current,
    /// Older than a version already seen (typically the sidecar's own write
    /// that the cache has not delivered yet). Upstream drops the key here;
    /// the stored object is returned so the caller may process that newer
    /// copy instead (spec C.9: "may keep polling instead").
    Stale(T),
}

/// A resourceVersion that is not an integer, met when a version is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot compare resource versions {stored:?} and {new:?} of {name}: not an integer")]
pub struct VersionError {
    /// Object name.
    pub name: String,
    /// Stored version.
    pub stored: String,
    /// Incoming version.
    pub new: String,
}

/// The last-seen version (and object) per name, compared as integers.
///
/// Upstream seeds it with every cached object once the caches synced and
/// keeps every entry. Here an entry lives only while the sidecar's own
/// writes are ahead of the cache or work is pending (see
/// [`release`](Self::release)): an informer's versions only go forward, so
/// an entry equal to the cached version can skip nothing, and the store
/// stays small however many objects are cached. An entry is kept small: the name as a boxed
/// `str` and the version as the integer the API server writes.
#[derive(Debug, Clone)]
pub struct VersionStore<T> {
    entries: HashMap<Box<str>, (StoredVersion, T)>,
}

/// A stored resourceVersion: an integer, or the text of one that is not
/// (kept to be reported when it is compared).
#[derive(Debug, Clone)]
enum StoredVersion {
    Number(u64),
    Text(Box<str>),
}

impl StoredVersion {
    fn of(rv: &str) -> Self {
        match rv.parse::<u64>() {
            Ok(n) => StoredVersion::Number(n),
            Err(_) => StoredVersion::Text(rv.into()),
        }
    }

    fn number(&self) -> Option<u64> {
        match self {
            StoredVersion::Number(n) => Some(*n),
            StoredVersion::Text(_) => None,
        }
    }

    fn text(&self) -> String {
        match self {
            StoredVersion::Number(n) => n.to_string(),
            StoredVersion::Text(t) => t.to_string(),
        }
    }
}

impl<T> Default for VersionStore<T> {
    fn default() -> Self {
        VersionStore {
            entries: HashMap::new(),
        }
    }
}

impl<T: Clone> VersionStore<T> {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks an incoming object and stores it when it is current. A first
    /// sighting is always stored. With an entry present, an unparsable
    /// version on either side is an error (the event is skipped).
    pub fn observe(&mut self, name: &str, rv: &str, obj: &T) -> Result<Freshness<T>, VersionError> {
        let incoming = StoredVersion::of(rv);
        if let Some((stored_rv, stored)) = self.entries.get_mut(name) {
            let (Some(old), Some(new)) = (stored_rv.number(), incoming.number()) else {
                return Err(VersionError {
                    name: name.to_owned(),
                    stored: stored_rv.text(),
                    new: rv.to_owned(),
                });
            };
            if old > new {
                return Ok(Freshness::Stale(stored.clone()));
            }
            // Newer, or the same version: keep the caller's value (it may
            // be lighter than a stored reply of the same version).
            *stored_rv = incoming;
            *stored = obj.clone();
            return Ok(Freshness::Current);
        }
        self.entries.insert(name.into(), (incoming, obj.clone()));
        Ok(Freshness::Current)
    }

    /// Records the API server's reply to one of the sidecar's own writes.
    pub fn record_write(&mut self, name: &str, rv: &str, obj: &T) {
        let version = StoredVersion::of(rv);
        match self.entries.get_mut(name) {
            Some(entry) => *entry = (version, obj.clone()),
            None => {
                self.entries.insert(name.into(), (version, obj.clone()));
            }
        }
    }

    /// Replaces the value stored for `name`, keeping its version (no-op
    /// when `name` has no entry).
    pub fn set_value(&mut self, name: &str, obj: T) {
        if let Some((_, stored)) = self.entries.get_mut(name) {
            *stored = obj;
        }
    }

    /// The stored values, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.values().map(|(_, v)| v)
    }

    /// Drops the entry of `name` when it holds version `rv`: the caller has
    /// just processed that version from its cache, so the entry says
    /// nothing the cache does not (an informer's versions only go forward)
    /// until the sidecar writes again. An entry ahead of `rv` (a write the
    /// cache has not delivered yet) is kept. Returns whether it was dropped.
    pub fn release(&mut self, name: &str, rv: &str) -> bool {
        let caught_up = self.entries.get(name).is_some_and(|(stored, _)| {
            match (stored.number(), rv.parse::<u64>()) {
                (Some(stored), Ok(seen)) => stored == seen,
                _ => false,
            }
        });
        if caught_up {
            self.entries.remove(name);
            if self.entries.capacity() > 64 && self.entries.len() < self.entries.capacity() / 4 {
                self.entries.shrink_to_fit();
            }
        }
        caught_up
    }

    /// Forgets an object that left the cache.
    pub fn remove(&mut self, name: &str) -> Option<T> {
        self.entries.remove(name).map(|(_, o)| o)
    }

    /// Whether the store has an entry for `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::types::{GroupSnapshotHandles, VolumeSnapshotContentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn vsc(driver: &str, volume: Option<&str>, snap: Option<&str>) -> VolumeSnapshotContent {
        let mut c = VolumeSnapshotContent::default();
        c.metadata.name = Some("c".into());
        c.metadata.resource_version = Some("1".into());
        c.spec.driver = driver.into();
        c.spec.source.volume_handle = volume.map(Into::into);
        c.spec.source.snapshot_handle = snap.map(Into::into);
        c
    }

    fn class(driver: &str) -> VolumeSnapshotClass {
        VolumeSnapshotClass {
            driver: driver.into(),
            ..Default::default()
        }
    }

    #[test]
    fn release_drops_only_an_entry_the_cache_has_caught_up_with() {
        let mut store: VersionStore<Option<u8>> = VersionStore::new();
        store.observe("a", "5", &None).unwrap();
        store.record_write("b", "9", &Some(1));
        store.observe("c", "abc", &None).unwrap();
        assert!(store.release("a", "5"));
        assert!(!store.contains("a"));
        // A write ahead of the processed copy is kept.
        assert!(!store.release("b", "8"));
        assert!(store.contains("b"));
        // Versions that are not integers are never taken as equal.
        assert!(!store.release("c", "abc"));
        assert!(!store.release("missing", "1"));
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn vsc_driver_match() {
        let d = "drv";
        assert!(!is_driver_match(&vsc(d, None, None), None, d));
        assert!(!is_driver_match(&vsc("other", Some("v"), None), None, d));
        assert!(is_driver_match(&vsc(d, Some("v"), None), None, d));
        assert!(is_driver_match(&vsc(d, None, Some("s")), None, d));
        assert!(!is_driver_match(
            &vsc(d, Some("v"), None),
            Some(&class("other")),
            d
        ));
        assert!(is_driver_match(
            &vsc(d, Some("v"), None),
            Some(&class(d)),
            d
        ));
    }

    fn vgsc(driver: &str, volumes: Option<Vec<&str>>, pre: bool) -> VolumeGroupSnapshotContent {
        let mut c = VolumeGroupSnapshotContent::default();
        c.spec.driver = driver.into();
        c.spec.source.volume_handles = volumes.map(|v| v.into_iter().map(Into::into).collect());
        if pre {
            c.spec.source.group_snapshot_handles = Some(GroupSnapshotHandles {
                volume_group_snapshot_handle: "g".into(),
                volume_snapshot_handles: vec!["a".into()],
            });
        }
        c
    }

    fn gclass(driver: &str) -> VolumeGroupSnapshotClass {
        VolumeGroupSnapshotClass {
            driver: driver.into(),
            ..Default::default()
        }
    }

    #[test]
    fn h38_group_driver_match() {
        let d = "drv";
        let table: Vec<(
            VolumeGroupSnapshotContent,
            Option<VolumeGroupSnapshotClass>,
            bool,
        )> = vec![
            (vgsc(d, None, false), None, false),
            (vgsc(d, Some(vec![]), false), None, false),
            (vgsc("other", Some(vec!["v"]), false), None, false),
            (vgsc(d, Some(vec!["v"]), false), None, true),
            (
                vgsc(d, Some(vec!["v"]), false),
                Some(gclass("other")),
                false,
            ),
            (vgsc(d, None, true), Some(gclass("other")), false),
            (vgsc(d, Some(vec!["v"]), false), Some(gclass(d)), true),
            (vgsc(d, None, true), Some(gclass(d)), true),
        ];
        for (i, (c, cl, want)) in table.into_iter().enumerate() {
            assert_eq!(is_group_driver_match(&c, cl.as_ref(), d), want, "row {i}");
        }
    }

    fn deleted(mut c: VolumeSnapshotContent, ann: &[&str]) -> VolumeSnapshotContent {
        c.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let a = c.metadata.annotations.get_or_insert_default();
        for k in ann {
            a.insert(k.to_string(), "yes".into());
        }
        c
    }

    #[test]
    fn h18_should_delete() {
        // no deletionTimestamp → false, even with the annotation
        let mut c = vsc("d", Some("v"), None);
        c.metadata.annotations =
            Some([(keys::ANN_VS_BEING_DELETED.to_string(), "yes".to_string())].into());
        assert!(!should_delete(&c));
        // pre-provisioned with an empty UID → true
        assert!(should_delete(&deleted(vsc("d", None, Some("s")), &[])));
        // being-deleted annotation → true
        let mut c = deleted(vsc("d", Some("v"), None), &[keys::ANN_VS_BEING_DELETED]);
        c.spec.volume_snapshot_ref.uid = Some("u".into());
        assert!(should_delete(&c));
        // deletionTimestamp, no annotation, no snapshotHandle source → false
        let mut c = deleted(vsc("d", Some("v"), None), &[]);
        c.spec.volume_snapshot_ref.uid = Some("u".into());
        assert!(!should_delete(&c));
    }

    #[test]
    fn h19_being_created_blocks_deletion() {
        let mut c = deleted(
            vsc("d", Some("v"), None),
            &[keys::ANN_VS_BEING_DELETED, keys::ANN_VS_BEING_CREATED],
        );
        c.spec.volume_snapshot_ref.uid = Some("u".into());
        assert!(!should_delete(&c));

        let mut g = vgsc("d", Some(vec!["v"]), false);
        g.spec.volume_group_snapshot_ref.uid = Some("u".into());
        g.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        g.metadata.annotations = Some(
            [
                (keys::ANN_VGS_BEING_DELETED.to_string(), "yes".to_string()),
                (keys::ANN_VGS_BEING_CREATED.to_string(), "yes".to_string()),
            ]
            .into(),
        );
        assert!(!should_delete_group(&g));
        g.metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(keys::ANN_VGS_BEING_CREATED);
        assert!(should_delete_group(&g));
    }

    #[test]
    fn group_should_delete_preprovisioned_unbound() {
        let mut g = vgsc("d", None, true);
        assert!(!should_delete_group(&g));
        g.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert!(should_delete_group(&g));
        g.spec.volume_group_snapshot_ref.uid = Some("u".into());
        assert!(!should_delete_group(&g));
    }

    #[test]
    fn h24_should_enqueue_content_change() {
        let base = {
            let mut c = vsc("d", Some("v"), None);
            c.metadata.annotations = Some([("a".to_string(), "1".to_string())].into());
            c.metadata.finalizers = Some(vec!["f".into()]);
            c
        };
        let bumped = |f: &dyn Fn(&mut VolumeSnapshotContent)| {
            let mut n = base.clone();
            n.metadata.resource_version = Some("2".into());
            f(&mut n);
            n
        };
        let ann = |k: &'static str, v: Option<&'static str>| {
            move |n: &mut VolumeSnapshotContent| {
                let a = n.metadata.annotations.get_or_insert_default();
                match v {
                    Some(v) => {
                        a.insert(k.into(), v.into());
                    }
                    None => {
                        a.remove(k);
                    }
                }
            }
        };
        let with_being_created = {
            let mut b = base.clone();
            b.metadata
                .annotations
                .as_mut()
                .unwrap()
                .insert(keys::ANN_VS_BEING_CREATED.into(), "yes".into());
            b
        };
        let rows: Vec<(&str, VolumeSnapshotContent, VolumeSnapshotContent, bool)> = vec![
            (
                "status only",
                base.clone(),
                bumped(&|n| {
                    n.status = Some(VolumeSnapshotContentStatus {
                        snapshot_handle: Some("h".into()),
                        ..Default::default()
                    })
                }),
                false,
            ),
            (
                "finalizer only",
                base.clone(),
                bumped(&|n| n.metadata.finalizers = None),
                false,
            ),
            (
                "managedFields only",
                base.clone(),
                bumped(&|n| n.metadata.managed_fields = Some(vec![Default::default()])),
                false,
            ),
            (
                "add being-created",
                base.clone(),
                bumped(&ann(keys::ANN_VS_BEING_CREATED, Some("yes"))),
                false,
            ),
            (
                "change being-created",
                with_being_created.clone(),
                {
                    let mut n = with_being_created.clone();
                    n.metadata.resource_version = Some("2".into());
                    ann(keys::ANN_VS_BEING_CREATED, Some("no"))(&mut n);
                    n
                },
                false,
            ),
            (
                "delete being-created",
                with_being_created.clone(),
                {
                    let mut n = with_being_created.clone();
                    n.metadata.resource_version = Some("2".into());
                    n.metadata.annotations.as_mut().unwrap().clear();
                    n.metadata
                        .annotations
                        .as_mut()
                        .unwrap()
                        .insert("a".into(), "1".into());
                    n
                },
                false,
            ),
            (
                "spec change",
                base.clone(),
                bumped(&|n| n.spec.deletion_policy = Some("Retain".into())),
                true,
            ),
            (
                "add other annotation",
                base.clone(),
                bumped(&ann(keys::ANN_VS_BEING_DELETED, Some("yes"))),
                true,
            ),
            (
                "change other annotation",
                base.clone(),
                bumped(&ann("a", Some("2"))),
                true,
            ),
            (
                "delete other annotation",
                base.clone(),
                bumped(&ann("a", None)),
                true,
            ),
            ("equal resource versions", base.clone(), base.clone(), true),
            (
                "ready false to true",
                {
                    let mut o = base.clone();
                    o.status = Some(VolumeSnapshotContentStatus {
                        ready_to_use: Some(false),
                        ..Default::default()
                    });
                    o
                },
                bumped(&|n| {
                    n.status = Some(VolumeSnapshotContentStatus {
                        ready_to_use: Some(true),
                        ..Default::default()
                    })
                }),
                true,
            ),
            (
                "deletionTimestamp set",
                base.clone(),
                bumped(&|n| {
                    n.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH))
                }),
                true,
            ),
        ];
        for (name, old, new, want) in rows {
            assert_eq!(should_enqueue_content_change(&old, &new), want, "{name}");
        }
    }

    #[test]
    fn only_being_created_annotation_vs_no_annotations_is_no_change() {
        let mut old = vsc("d", Some("v"), None);
        old.metadata.annotations =
            Some([(keys::ANN_VS_BEING_CREATED.to_string(), "yes".to_string())].into());
        let mut new = vsc("d", Some("v"), None);
        new.metadata.resource_version = Some("2".into());
        assert!(!should_enqueue_content_change(&old, &new));
    }

    #[test]
    fn h20_version_store_integer_comparison() {
        let mut s = VersionStore::<u32>::new();
        assert_eq!(s.observe("a", "1", &1), Ok(Freshness::Current));
        assert_eq!(s.observe("a", "1", &1), Ok(Freshness::Current));
        assert_eq!(s.observe("a", "2", &2), Ok(Freshness::Current));
        assert_eq!(s.observe("a", "1", &1), Ok(Freshness::Stale(2)));
        assert_eq!(s.observe("a", "10", &10), Ok(Freshness::Current));
        let err = |name: &str, stored: &str, new: &str| VersionError {
            name: name.into(),
            stored: stored.into(),
            new: new.into(),
        };
        assert_eq!(s.observe("a", "xxx", &0), Err(err("a", "10", "xxx")));
        // A refused version leaves the entry as it was.
        assert_eq!(s.observe("a", "9", &9), Ok(Freshness::Stale(10)));
        // a first sighting is stored whatever it looks like
        assert_eq!(s.observe("b", "xxx", &0), Ok(Freshness::Current));
        assert_eq!(s.observe("b", "3", &3), Err(err("b", "xxx", "3")));
        // A write's reply replaces it with a comparable version.
        s.record_write("b", "4", &4);
        assert_eq!(s.observe("b", "3", &3), Ok(Freshness::Stale(4)));
    }

    #[test]
    fn h39_version_store_remove_and_writes() {
        let mut s = VersionStore::<u32>::new();
        s.observe("a", "5", &5).unwrap();
        s.record_write("a", "9", &9);
        assert_eq!(s.observe("a", "6", &6), Ok(Freshness::Stale(9)));
        assert_eq!(s.remove("a"), Some(9));
        assert!(!s.contains("a"));
        assert!(s.is_empty());
    }

    #[test]
    fn set_value_keeps_the_version() {
        let mut s = VersionStore::<Option<u32>>::new();
        s.record_write("a", "9", &Some(9));
        s.set_value("a", None);
        assert_eq!(s.observe("a", "6", &Some(6)), Ok(Freshness::Stale(None)));
        assert_eq!(s.values().collect::<Vec<_>>(), [&None]);
        s.set_value("b", Some(1));
        assert!(!s.contains("b"));
    }
}
