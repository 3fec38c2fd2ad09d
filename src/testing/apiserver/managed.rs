//! `metadata.managedFields`, kept as kube-apiserver keeps them: one entry
//! per (manager, operation, subresource) with the set of fields that writer
//! set, in the `FieldsV1` form (`f:` fields, `k:` keyed list items, `v:`
//! set items, `.` for a map or list that is itself owned).
//!
//! An update gives its writer the fields it added or changed and takes
//! them from every other entry; fields it removed leave every entry; an
//! entry left with no field is dropped. A write that changes nothing
//! leaves the entries (and their times) alone.
//!
//! An apply owns exactly the fields of its configuration.
//!
//! Known differences from kube-apiserver: an apply takes the fields it
//! names from other managers without conflict detection; no
//! more-than-ten-updaters folding into `ancient-changes`; list types come
//! from a fixed table (the metadata lists, the atomic object references of
//! Events), every other list is atomic, as in CRDs without list types.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::object::now_rfc3339;

/// Longest manager name the server keeps (upstream's
/// `FieldManagerMaxLength`).
const MAX_MANAGER_LEN: usize = 128;

/// The manager of a request with neither `fieldManager` nor User-Agent.
const UNKNOWN_MANAGER: &str = "unknown";

/// Metadata fields the server sets or that name the object: never owned.
const STRIPPED_META: &[&str] = &[
    "name",
    "namespace",
    "creationTimestamp",
    "selfLink",
    "uid",
    "clusterName",
    "generation",
    "managedFields",
    "resourceVersion",
];

/// The manager name of a request: `fieldManager` if given, else the
/// User-Agent up to its first `/`, without unprintable characters and
/// at most 128 bytes long (as upstream derives it).
pub(crate) fn manager_name(field_manager: Option<&str>, user_agent: &str) -> String {
    if let Some(m) = field_manager.filter(|m| !m.is_empty()) {
        return m.to_string();
    }
    if user_agent.is_empty() {
        return UNKNOWN_MANAGER.to_string();
    }
    let prefix = user_agent.split('/').next().unwrap_or("");
    let mut out = String::new();
    for c in prefix.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_MANAGER_LEN {
            break;
        }
        out.push(c);
    }
    out
}

/// Who writes, and how.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    /// The manager name ([`manager_name`]).
    pub manager: String,
    /// `true` for server-side apply (`Apply`), else `Update`.
    pub apply: bool,
    /// `group/version` (or `v1`) of the request.
    pub api_version: String,
    /// `status` for writes to the status subresource.
    pub subresource: Option<String>,
    /// The configuration of an apply: its fields are what the applier owns.
    pub applied: Option<Value>,
}

impl Writer {
    fn operation(&self) -> &'static str {
        if self.apply { "Apply" } else { "Update" }
    }
}

/// A set of field paths as a tree: `own` = the path of this node is in
/// the set; `kids` by path element (`f:name`, `k:{…}`, `v:…`).
#[derive(Debug, Clone, Default, PartialEq)]
struct Node {
    own: bool,
    kids: BTreeMap<String, Node>,
}

impl Node {
    fn is_empty(&self) -> bool {
        !self.own && self.kids.is_empty()
    }

    /// Decodes a `fieldsV1` object (the root has no `.`).
    fn decode(v: &Value) -> Node {
        let mut node = Node::default();
        if let Some(m) = v.as_object() {
            for (k, child) in m {
                if k == "." {
                    node.own = true;
                    continue;
                }
                let mut c = Node::decode(child);
                if child.as_object().is_none_or(Map::is_empty) {
                    c.own = true;
                }
                if !c.is_empty() {
                    node.kids.insert(k.clone(), c);
                }
            }
        }
        node
    }

    /// Encodes as `fieldsV1` (keys sorted, `.` first).
    fn encode(&self) -> Value {
        let mut m = Map::new();
        if self.own && !self.kids.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &self.kids {
            m.insert(k.clone(), c.encode());
        }
        Value::Object(m)
    }

    fn union(&mut self, other: &Node) {
        self.own |= other.own;
        for (k, c) in &other.kids {
            self.kids.entry(k.clone()).or_default().union(c);
        }
    }

    /// Removes the members of `other`.
    fn subtract(&mut self, other: &Node) {
        if other.own {
            self.own = false;
        }
        for (k, c) in &other.kids {
            if let Some(mine) = self.kids.get_mut(k) {
                mine.subtract(c);
                if mine.is_empty() {
                    self.kids.remove(k);
                }
            }
        }
    }

    fn child(&mut self, key: String) -> &mut Node {
        self.kids.entry(key).or_default()
    }
}

/// How a list at a path merges.
enum ListKind {
    Atomic,
    /// Items are scalars, each its own member (`v:`).
    Set,
    /// Items are objects keyed by these fields (`k:`).
    Map(&'static [&'static str]),
}

/// List types of the served kinds (by path from the object root).
fn list_kind(path: &[String]) -> ListKind {
    match path {
        [m, f] if m == "f:metadata" && f == "f:finalizers" => ListKind::Set,
        [m, f] if m == "f:metadata" && f == "f:ownerReferences" => ListKind::Map(&["uid"]),
        _ => ListKind::Atomic,
    }
}

/// Maps that are owned as a whole (atomic structs): the object references
/// of core Events and those the snapshot CRDs mark
/// `x-kubernetes-map-type: atomic`.
fn atomic_map(kind: &str, path: &[String]) -> bool {
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    matches!(
        (kind, path.as_slice()),
        ("Event", ["f:involvedObject" | "f:related"])
            | ("VolumeSnapshotContent", ["f:spec", "f:volumeSnapshotRef"])
            | (
                "VolumeGroupSnapshotContent",
                ["f:spec", "f:volumeGroupSnapshotRef"]
            )
    )
}

/// Walks one value pair and records what changed.
struct Diff<'a> {
    kind: &'a str,
    added: Node,
    changed: Node,
    removed: Node,
}

/// Every path in `v` below `at` (and `at` itself) into `out`.
fn all_paths(kind: &str, path: &mut Vec<String>, v: &Value, out: &mut Node) {
    out.own = true;
    match v {
        Value::Object(m) if !atomic_map(kind, path) => {
            for (k, c) in m {
                path.push(format!("f:{k}"));
                all_paths(kind, path, c, out.child(format!("f:{k}")));
                path.pop();
            }
        }
        Value::Array(items) => match list_kind(path) {
            ListKind::Atomic => {}
            ListKind::Set => {
                for item in items {
                    out.child(format!("v:{item}")).own = true;
                }
            }
            ListKind::Map(keys) => {
                for item in items {
                    if let Some(key) = item_key(keys, item) {
                        path.push(key.clone());
                        all_paths(kind, path, item, out.child(key));
                        path.pop();
                    }
                }
            }
        },
        _ => {}
    }
}

/// `k:{"uid":"…"}` for a keyed list item.
fn item_key(keys: &[&str], item: &Value) -> Option<String> {
    let mut m = Map::new();
    for k in keys {
        m.insert((*k).to_string(), item.get(*k)?.clone());
    }
    Some(format!("k:{}", Value::Object(m)))
}

/// A list's items by their path element.
fn items_by_key<'v>(kind: &ListKind, items: &'v [Value]) -> BTreeMap<String, &'v Value> {
    items
        .iter()
        .filter_map(|item| match kind {
            ListKind::Set => Some((format!("v:{item}"), item)),
            ListKind::Map(keys) => item_key(keys, item).map(|k| (k, item)),
            ListKind::Atomic => None,
        })
        .collect()
}

impl Diff<'_> {
    /// Compares `old` and `new` at `path` (both present).
    fn walk(&mut self, path: &mut Vec<String>, old: &Value, new: &Value) {
        match (old, new) {
            (Value::Object(a), Value::Object(b)) if !atomic_map(self.kind, path) => {
                for (k, nv) in b {
                    path.push(format!("f:{k}"));
                    match a.get(k) {
                        Some(ov) => self.walk(path, ov, nv),
                        None => self.add(path, nv),
                    }
                    path.pop();
                }
                for (k, ov) in a {
                    if !b.contains_key(k) {
                        path.push(format!("f:{k}"));
                        self.remove(path, ov);
                        path.pop();
                    }
                }
            }
            (Value::Array(a), Value::Array(b)) if !matches!(list_kind(path), ListKind::Atomic) => {
                let kind = list_kind(path);
                let (a, b) = (items_by_key(&kind, a), items_by_key(&kind, b));
                for (k, nv) in &b {
                    path.push(k.clone());
                    match a.get(k) {
                        Some(ov) => self.walk(path, ov, nv),
                        None => self.add(path, nv),
                    }
                    path.pop();
                }
                for (k, ov) in &a {
                    if !b.contains_key(k) {
                        path.push(k.clone());
                        self.remove(path, ov);
                        path.pop();
                    }
                }
            }
            _ if old != new => at(&mut self.changed, path).own = true,
            _ => {}
        }
    }

    fn add(&mut self, path: &mut Vec<String>, v: &Value) {
        let node = at(&mut self.added, path);
        all_paths(self.kind, path, v, node);
    }

    fn remove(&mut self, path: &mut Vec<String>, v: &Value) {
        let node = at(&mut self.removed, path);
        all_paths(self.kind, path, v, node);
    }
}

/// The node at `path` (created).
fn at<'n>(root: &'n mut Node, path: &[String]) -> &'n mut Node {
    path.iter().fold(root, |n, k| n.child(k.clone()))
}

/// The object without what no one owns (see [`STRIPPED_META`]).
fn stripped(obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Value::Object(m) = &mut out {
        m.remove("apiVersion");
        m.remove("kind");
        if let Some(Value::Object(meta)) = m.get_mut("metadata") {
            for f in STRIPPED_META {
                meta.remove(*f);
            }
        }
    }
    out
}

/// One decoded entry.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    subresource: String,
    time: String,
    fields: Node,
}

impl Entry {
    fn decode(v: &Value) -> Option<Entry> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        if v.get("fieldsType").and_then(Value::as_str) != Some("FieldsV1") {
            return None;
        }
        Some(Entry {
            manager: s("manager"),
            operation: s("operation"),
            api_version: s("apiVersion"),
            subresource: s("subresource"),
            time: s("time"),
            fields: Node::decode(v.get("fieldsV1").unwrap_or(&Value::Null)),
        })
    }

    fn encode(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation));
        m.insert("apiVersion".into(), json!(self.api_version));
        if !self.time.is_empty() {
            m.insert("time".into(), json!(self.time));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.fields.encode());
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(m)
    }

    fn is(&self, w: &Writer) -> bool {
        self.manager == w.manager
            && self.operation == w.operation()
            && self.subresource == w.subresource.as_deref().unwrap_or("")
    }
}

/// Decodes `managedFields`; `None` if absent, empty or not decodable.
fn decode_all(v: Option<&Value>) -> Option<Vec<Entry>> {
    let list = v?.as_array()?;
    if list.is_empty() {
        return None;
    }
    list.iter().map(Entry::decode).collect()
}

/// Whether `managedFields` is the reset marker: one empty entry.
fn is_reset(v: Option<&Value>) -> bool {
    matches!(v.and_then(Value::as_array).map(Vec::as_slice), Some([e]) if e.as_object().is_some_and(Map::is_empty))
}

/// Writes `entries` into `obj` in upstream's order (operation, time,
/// manager, apiVersion, subresource); none = the field is removed.
fn store(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.fields.is_empty());
    entries.sort_by(|a, b| {
        (
            &a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert(
                "managedFields".into(),
                Value::Array(entries.iter().map(Entry::encode).collect()),
            );
        }
    }
}

fn kind_of(obj: &Value) -> &str {
    obj.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// Every field of `obj` (as owned by its writer).
fn fields_of(obj: &Value) -> Node {
    let mut fields = Node::default();
    all_paths(kind_of(obj), &mut Vec::new(), &stripped(obj), &mut fields);
    fields.own = false;
    if let Some(meta) = fields.kids.get_mut("f:metadata") {
        meta.own = false;
        if meta.is_empty() {
            fields.kids.remove("f:metadata");
        }
    }
    fields
}

/// Records the creation of `obj` by `w`: it owns every field it set.
pub(crate) fn on_create(w: &Writer, obj: &mut Value) {
    let fields = fields_of(w.applied.as_ref().unwrap_or(obj));
    let entry = Entry {
        manager: w.manager.clone(),
        operation: w.operation().into(),
        api_version: w.api_version.clone(),
        subresource: w.subresource.clone().unwrap_or_default(),
        time: now_rfc3339(),
        fields,
    };
    store(obj, vec![entry]);
}

/// Records the update of `old` to `new` by `w` (`new` still carries the
/// `managedFields` the client sent, if any). As upstream: one empty entry
/// (`[{}]`) strips them; an empty list is ignored (the stored ones stay);
/// an object without any keeps none unless the write is an apply.
pub(crate) fn on_update(w: &Writer, old: &Value, new: &mut Value) {
    let sent = new.pointer("/metadata/managedFields").cloned();
    if is_reset(sent.as_ref()) {
        store(new, Vec::new());
        return;
    }
    let from_client = match w.subresource {
        None => decode_all(sent.as_ref()),
        Some(_) => None,
    };
    let Some(mut entries) =
        from_client.or_else(|| decode_all(old.pointer("/metadata/managedFields")))
    else {
        if w.applied.is_none() {
            store(new, Vec::new());
            return;
        }
        return on_create(w, new);
    };
    let mut diff = Diff {
        kind: kind_of(new),
        added: Node::default(),
        changed: Node::default(),
        removed: Node::default(),
    };
    diff.walk(&mut Vec::new(), &stripped(old), &stripped(new));
    let mut taken = diff.added;
    taken.union(&diff.changed);
    taken.own = false;
    if let Some(m) = taken.kids.get_mut("f:metadata") {
        m.own = false;
    }
    for e in &mut entries {
        e.fields.subtract(&diff.removed);
        e.fields.subtract(&taken);
    }
    if let Some(applied) = &w.applied {
        entries.retain(|e| !e.is(w));
        taken = fields_of(applied);
    }
    if !taken.is_empty() {
        match entries.iter_mut().find(|e| e.is(w)) {
            Some(e) => {
                e.fields.union(&taken);
                e.api_version = w.api_version.clone();
                e.time = now_rfc3339();
            }
            None => entries.push(Entry {
                manager: w.manager.clone(),
                operation: w.operation().into(),
                api_version: w.api_version.clone(),
                subresource: w.subresource.clone().unwrap_or_default(),
                time: now_rfc3339(),
                fields: taken,
            }),
        }
    }
    store(new, entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(manager: &str, sub: Option<&str>) -> Writer {
        Writer {
            manager: manager.into(),
            apply: false,
            api_version: "snapshot.storage.k8s.io/v1".into(),
            subresource: sub.map(str::to_string),
            applied: None,
        }
    }

    fn content() -> Value {
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
               "metadata": {"name": "c", "uid": "u", "resourceVersion": "5",
                            "finalizers": ["a/b"], "labels": {"x": "1"}},
               "spec": {"driver": "d", "source": {"volumeHandle": "v"}}})
    }

    #[test]
    fn manager_is_the_user_agent_up_to_the_first_slash() {
        assert_eq!(
            manager_name(None, "kubectl/v1.36.0 (linux/amd64)"),
            "kubectl"
        );
        assert_eq!(manager_name(Some("mine"), "kubectl/v1"), "mine");
        assert_eq!(manager_name(Some(""), "a/b"), "a");
        assert_eq!(manager_name(None, ""), "unknown");
        assert_eq!(manager_name(None, &"m".repeat(200)).len(), 128);
    }

    #[test]
    fn create_owns_every_field_it_set() {
        let mut obj = content();
        on_create(&writer("w", None), &mut obj);
        let mf = &obj["metadata"]["managedFields"][0];
        assert_eq!(mf["manager"], "w");
        assert_eq!(mf["operation"], "Update");
        assert_eq!(mf["fieldsType"], "FieldsV1");
        assert_eq!(
            mf["fieldsV1"],
            json!({"f:metadata": {"f:finalizers": {".": {}, "v:\"a/b\"": {}},
                                  "f:labels": {".": {}, "f:x": {}}},
                   "f:spec": {".": {}, "f:driver": {}, "f:source": {".": {}, "f:volumeHandle": {}}}})
        );
        assert!(mf.get("subresource").is_none());
    }

    #[test]
    fn status_write_gets_its_own_entry_and_changes_move_ownership() {
        let mut old = content();
        on_create(&writer("creator", None), &mut old);
        let mut new = old.clone();
        new["status"] = json!({"readyToUse": true});
        on_update(&writer("sidecar", Some("status")), &old, &mut new);
        let mf = new["metadata"]["managedFields"].as_array().unwrap().clone();
        assert_eq!(mf.len(), 2);
        let status = mf.iter().find(|e| e["subresource"] == "status").unwrap();
        assert_eq!(
            status["fieldsV1"],
            json!({"f:status": {".": {}, "f:readyToUse": {}}})
        );
        // The sidecar changes a label the creator set, and drops the finalizer.
        let old = new.clone();
        new["metadata"]["labels"]["x"] = json!("2");
        new["metadata"]["finalizers"] = json!([]);
        on_update(&writer("sidecar", None), &old, &mut new);
        let mf = new["metadata"]["managedFields"].as_array().unwrap().clone();
        let creator = mf.iter().find(|e| e["manager"] == "creator").unwrap();
        assert_eq!(
            creator["fieldsV1"],
            json!({"f:metadata": {"f:finalizers": {}, "f:labels": {}},
                   "f:spec": {".": {}, "f:driver": {}, "f:source": {".": {}, "f:volumeHandle": {}}}})
        );
        let main = mf
            .iter()
            .find(|e| e["manager"] == "sidecar" && e.get("subresource").is_none())
            .unwrap();
        assert_eq!(
            main["fieldsV1"],
            json!({"f:metadata": {"f:labels": {"f:x": {}}}})
        );
    }

    #[test]
    fn a_write_that_changes_nothing_keeps_the_entries() {
        let mut old = content();
        on_create(&writer("creator", None), &mut old);
        let mut new = old.clone();
        on_update(&writer("other", None), &old, &mut new);
        assert_eq!(new, old);
    }

    #[test]
    fn one_empty_entry_resets_the_entries() {
        let mut old = content();
        on_create(&writer("creator", None), &mut old);
        let mut new = old.clone();
        new["metadata"]["managedFields"] = json!([{}]);
        new["metadata"]["labels"]["y"] = json!("2");
        on_update(&writer("other", None), &old, &mut new);
        assert!(new["metadata"].get("managedFields").is_none());
        // An object without entries gets none from an update ...
        let old = new.clone();
        new["metadata"]["labels"]["z"] = json!("3");
        on_update(&writer("other", None), &old, &mut new);
        assert!(new["metadata"].get("managedFields").is_none());
        // ... and an empty list does not strip them.
        let mut old = content();
        on_create(&writer("creator", None), &mut old);
        let mut new = old.clone();
        new["metadata"]["managedFields"] = json!([]);
        on_update(&writer("other", None), &old, &mut new);
        assert_eq!(new, old);
    }

    #[test]
    fn atomic_references_are_owned_whole() {
        let mut obj = content();
        obj["spec"]["volumeSnapshotRef"] = json!({"name": "s", "namespace": "n"});
        on_create(&writer("w", None), &mut obj);
        assert_eq!(
            obj["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:volumeSnapshotRef"],
            json!({})
        );
    }

    #[test]
    fn keyed_lists_use_k_elements() {
        let mut obj = json!({"kind": "ConfigMap", "metadata": {"name": "x",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "1"}]}});
        on_create(&writer("w", None), &mut obj);
        assert_eq!(
            obj["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:metadata": {"f:ownerReferences": {".": {}, "k:{\"uid\":\"1\"}": {
                ".": {}, "f:apiVersion": {}, "f:kind": {}, "f:name": {}, "f:uid": {}}}}})
        );
    }
}
