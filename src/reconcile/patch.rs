//! JSON Patch documents (RFC 6902) for the sidecar's writes (spec C.10).
//!
//! Safer than upstream: each patch targets the one key it changes, so an
//! annotation or finalizer another client added meanwhile is never lost, and
//! `add` is used where the target member may be missing (on an existing
//! member `add` replaces it, so the end state matches upstream's `replace`).
//! The executor sends `serde_json::to_vec(&patch)` with content type
//! `application/json-patch+json`; [`JsonPatch::to_value`] gives the document.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde_json::{Value, json};

/// One operation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum PatchOp {
    /// Add a member (or replace it if present).
    Add {
        /// JSON Pointer.
        path: String,
        /// New value.
        value: Value,
    },
    /// Remove a member; fails when it is missing.
    Remove {
        /// JSON Pointer.
        path: String,
    },
    /// Fail the whole patch unless the member equals `value`.
    Test {
        /// JSON Pointer.
        path: String,
        /// Expected value.
        value: Value,
    },
}

/// A whole JSON Patch document.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct JsonPatch(pub Vec<PatchOp>);

impl JsonPatch {
    /// The document as JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Escapes one JSON Pointer reference token (`~` → `~0`, `/` → `~1`).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Adds one annotation: `add /metadata/annotations/<key>` when the map
/// exists in `meta`, else `add /metadata/annotations {key: value}` guarded
/// by `meta`'s resourceVersion ([`at_version`]). Without the guard, that
/// `add` would replace a map another client created meanwhile (the
/// snapshot-controller's being-deleted annotation, put on a content that
/// had none), and the lost annotation would hold the deletion back
/// forever; with it the server answers `409 Conflict` and the sync is
/// retried from a fresh copy.
pub fn add_annotation(meta: &ObjectMeta, key: &str, value: &str) -> JsonPatch {
    if meta.annotations.is_some() {
        return JsonPatch(vec![PatchOp::Add {
            path: format!("/metadata/annotations/{}", escape(key)),
            value: json!(value),
        }]);
    }
    let add = JsonPatch(vec![PatchOp::Add {
        path: "/metadata/annotations".into(),
        value: json!({ key: value }),
    }]);
    at_version(meta.resource_version.as_deref().unwrap_or_default(), add)
}

/// Removes one annotation. The server rejects it if the live object lacks the
/// key; callers send it only when their copy has the key.
pub fn remove_annotation(key: &str) -> JsonPatch {
    JsonPatch(vec![PatchOp::Remove {
        path: format!("/metadata/annotations/{}", escape(key)),
    }])
}

/// Removes one finalizer with `test` + `remove` on its index, so a list that
/// changed meanwhile makes the patch fail (and the sync retry) instead of
/// removing the wrong entry. `None` when the finalizer is not present.
/// Removes every occurrence (H.23), highest index first so the earlier
/// indexes stay valid.
pub fn remove_finalizer(meta: &ObjectMeta, finalizer: &str) -> Option<JsonPatch> {
    let list = meta.finalizers.as_ref()?;
    let indexes: Vec<usize> = list
        .iter()
        .enumerate()
        .filter(|(_, f)| *f == finalizer)
        .map(|(i, _)| i)
        .collect();
    if indexes.is_empty() {
        return None;
    }
    let mut ops = Vec::with_capacity(indexes.len() * 2);
    for i in indexes.into_iter().rev() {
        let path = format!("/metadata/finalizers/{i}");
        ops.push(PatchOp::Test {
            path: path.clone(),
            value: json!(finalizer),
        });
        ops.push(PatchOp::Remove { path });
    }
    Some(JsonPatch(ops))
}

/// Sets the whole status (`add /status`: adds or replaces).
pub fn set_status<S: Serialize>(status: &S) -> JsonPatch {
    JsonPatch(vec![PatchOp::Add {
        path: "/status".into(),
        value: serde_json::to_value(status).unwrap_or(Value::Null),
    }])
}

/// `patch`, applied only if the object is still at resourceVersion `rv`.
///
/// The first operation sets `/metadata/resourceVersion` to `rv`. The API
/// server treats a resourceVersion in the patched object as an optimistic
/// lock: when the stored object has moved on, the patch is refused with
/// `409 Conflict` (a distinct answer, unlike a failed `test`, which is a
/// generic `422` the caller could not tell from a schema error). When the
/// versions match, the operation changes nothing. With an empty `rv` there
/// is nothing to guard with and `patch` is returned as it is.
pub fn at_version(rv: &str, patch: JsonPatch) -> JsonPatch {
    if rv.is_empty() {
        return patch;
    }
    let mut ops = Vec::with_capacity(patch.0.len() + 1);
    ops.push(PatchOp::Add {
        path: "/metadata/resourceVersion".into(),
        value: json!(rv),
    });
    ops.extend(patch.0);
    JsonPatch(ops)
}

/// Removes every occurrence of `value` from a list (H.23); an empty result is
/// `None` so it serializes as absent.
pub fn remove_string(list: Option<&[String]>, value: &str) -> Option<Vec<String>> {
    let out: Vec<String> = list?.iter().filter(|s| *s != value).cloned().collect();
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ann: Option<&[(&str, &str)]>, fins: Option<&[&str]>) -> ObjectMeta {
        ObjectMeta {
            annotations: ann.map(|a| {
                a.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            finalizers: fins.map(|f| f.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn add_annotation_targets_single_key_when_map_exists() {
        let p = add_annotation(
            &meta(Some(&[("other", "x")]), None),
            "snapshot.storage.kubernetes.io/volumesnapshot-being-created",
            "yes",
        );
        assert_eq!(
            p.to_value(),
            json!([{"op": "add",
                    "path": "/metadata/annotations/snapshot.storage.kubernetes.io~1volumesnapshot-being-created",
                    "value": "yes"}])
        );
    }

    #[test]
    fn add_annotation_creates_map_when_absent() {
        let p = add_annotation(&meta(None, None), "a/b", "yes");
        assert_eq!(
            p.to_value(),
            json!([{"op": "add", "path": "/metadata/annotations", "value": {"a/b": "yes"}}])
        );
    }

    #[test]
    fn add_annotation_creating_the_map_is_guarded_by_the_version() {
        let mut m = meta(None, None);
        m.resource_version = Some("42".into());
        assert_eq!(
            add_annotation(&m, "a/b", "yes").to_value(),
            json!([
                {"op": "add", "path": "/metadata/resourceVersion", "value": "42"},
                {"op": "add", "path": "/metadata/annotations", "value": {"a/b": "yes"}}
            ])
        );
        // A single key added to an existing map needs no guard.
        let mut m = meta(Some(&[("x", "1")]), None);
        m.resource_version = Some("42".into());
        assert_eq!(add_annotation(&m, "a/b", "yes").0.len(), 1);
    }

    #[test]
    fn remove_annotation_escapes_slash_and_tilde() {
        assert_eq!(
            remove_annotation("a/b~c").to_value(),
            json!([{"op": "remove", "path": "/metadata/annotations/a~1b~0c"}])
        );
    }

    #[test]
    fn remove_finalizer_tests_then_removes_by_index() {
        let m = meta(None, Some(&["x", "f", "y"]));
        assert_eq!(
            remove_finalizer(&m, "f").unwrap().to_value(),
            json!([{"op": "test", "path": "/metadata/finalizers/1", "value": "f"},
                   {"op": "remove", "path": "/metadata/finalizers/1"}])
        );
        assert_eq!(remove_finalizer(&m, "z"), None);
        assert_eq!(remove_finalizer(&meta(None, None), "f"), None);
    }

    #[test]
    fn h23_remove_finalizer_removes_every_occurrence() {
        let m = meta(None, Some(&["f", "x", "f"]));
        let ops = remove_finalizer(&m, "f").unwrap().to_value();
        assert_eq!(
            ops,
            json!([{"op": "test", "path": "/metadata/finalizers/2", "value": "f"},
                   {"op": "remove", "path": "/metadata/finalizers/2"},
                   {"op": "test", "path": "/metadata/finalizers/0", "value": "f"},
                   {"op": "remove", "path": "/metadata/finalizers/0"}])
        );
    }

    #[test]
    fn at_version_puts_the_version_lock_first() {
        let guarded = at_version("42", set_status(&json!({"readyToUse": true})));
        assert_eq!(
            guarded.to_value(),
            json!([{"op": "add", "path": "/metadata/resourceVersion", "value": "42"},
                   {"op": "add", "path": "/status", "value": {"readyToUse": true}}])
        );
        let unguarded = set_status(&json!({}));
        assert_eq!(at_version("", unguarded.clone()), unguarded);
    }

    #[test]
    fn h23_remove_string_from_list() {
        let l = vec!["a".to_string(), "b".into(), "a".into()];
        assert_eq!(remove_string(Some(&l), "a"), Some(vec!["b".to_string()]));
        assert_eq!(remove_string(Some(&["a".to_string()]), "a"), None);
        assert_eq!(remove_string(None, "a"), None);
    }
}
