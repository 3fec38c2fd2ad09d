//! How a create or an update turns the client's object into the stored one:
//! system fields, status isolation, generation, immutable fields.

use serde_json::{Map, Value, json};

use super::resources::ResourceDef;
use super::status::{ApiError, Cause, invalid1};
use super::validate::{check_meta, check_name};

/// RFC 3339 UTC with second precision, as metav1.Time serializes.
pub(crate) fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Characters upstream uses for generateName suffixes.
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Length of a generateName suffix.
const NAME_SUFFIX_LEN: usize = 5;

/// `prefix` plus a random 5-character suffix.
pub(crate) fn generate_name(prefix: &str) -> String {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let suffix: String = bytes[..NAME_SUFFIX_LEN]
        .iter()
        .map(|b| NAME_ALPHABET[*b as usize % NAME_ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// `metadata` as a mutable map (created if absent or not a map).
pub(crate) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let Value::Object(root) = obj else {
        unreachable!("made an object above")
    };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    let Value::Object(m) = meta else {
        unreachable!("made an object above")
    };
    m
}

/// A string field of `metadata`, or "".
pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The finalizers of an object.
pub(crate) fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks kind/apiVersion against the URL, filling them when absent.
pub(crate) fn check_type_meta(res: &ResourceDef, obj: &mut Value) -> Result<(), ApiError> {
    normalize_secret(res, obj)?;
    let Value::Object(m) = obj else {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {})",
            res.kind
        )));
    };
    let want_av = res.api_version();
    match m.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            m.insert("apiVersion".into(), json!(want_av));
        }
        Some(av) if av != want_av => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
        Some(_) => {}
    }
    match m.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            m.insert("kind".into(), json!(res.kind));
        }
        Some(k) if k != res.kind && res.custom => {
            // Custom resources are decoded as unstructured objects and
            // their kind is validated like a field.
            let name = m
                .get("metadata")
                .and_then(|md| md.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(ApiError::invalid(
                res,
                name,
                vec![Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!("Invalid value: \"{k}\": must be {}", res.kind),
                    field: "kind".into(),
                }],
            ));
        }
        Some(k) if k != res.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                res.kind
            )));
        }
        Some(_) => {}
    }
    if let Some(md) = m.get("metadata")
        && !md.is_object()
        && !md.is_null()
    {
        return Err(ApiError::bad_request("metadata: must be an object"));
    }
    Ok(())
}

/// Checks (and fills) the namespace of the body against the URL.
pub(crate) fn check_namespace(
    res: &ResourceDef,
    obj: &mut Value,
    url_ns: Option<&str>,
) -> Result<(), ApiError> {
    let meta = meta_mut(obj);
    if !res.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let url_ns = url_ns.unwrap_or("");
    match meta.get("namespace").and_then(Value::as_str) {
        None | Some("") => {
            meta.insert("namespace".into(), json!(url_ns));
        }
        Some(ns) if ns != url_ns => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        Some(_) => {}
    }
    Ok(())
}

/// The status a create starts with for resources with a status subresource.
fn initial_status(res: &ResourceDef) -> Option<Value> {
    match (res.custom, res.plural) {
        (false, "persistentvolumes" | "persistentvolumeclaims") => {
            Some(json!({"phase": "Pending"}))
        }
        (false, "namespaces") => Some(json!({"phase": "Active"})),
        _ => None,
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (Secret `data` values).
pub(crate) fn base64(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn is_base64(s: &str) -> bool {
    s.len().is_multiple_of(4)
        && s.trim_end_matches('=').bytes().all(|b| B64.contains(&b))
        && s.len() - s.trim_end_matches('=').len() <= 2
}

/// Secret decoding rules: `data` values must be base64 (else the body
/// does not decode: 400), `stringData` is write-only and merged into
/// `data`.
pub(crate) fn normalize_secret(res: &ResourceDef, obj: &mut Value) -> Result<(), ApiError> {
    if !(res.group.is_empty() && res.plural == "secrets") {
        return Ok(());
    }
    let Value::Object(m) = obj else { return Ok(()) };
    if let Some(Value::Object(data)) = m.get("data") {
        for (k, v) in data {
            if !v.as_str().is_some_and(is_base64) {
                return Err(ApiError::bad_request(format!(
                    "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data in field data.{k}"
                )));
            }
        }
    }
    if let Some(Value::Object(sd)) = m.remove("stringData") {
        let data = m.entry("data").or_insert_with(|| json!({}));
        if !data.is_object() {
            *data = json!({});
        }
        if let Value::Object(d) = data {
            for (k, v) in sd {
                let text = v.as_str().unwrap_or_default().to_string();
                d.insert(k, json!(base64(text.as_bytes())));
            }
        }
    }
    Ok(())
}

/// Type-specific defaults.
fn apply_defaults(res: &ResourceDef, obj: &mut Value) {
    let Value::Object(m) = obj else { return };
    match (res.group, res.plural) {
        ("", "secrets")
            if m.get("type")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty) =>
        {
            m.insert("type".into(), json!("Opaque"));
        }
        ("", "namespaces") => {
            let spec = m.entry("spec").or_insert_with(|| json!({}));
            if let Value::Object(s) = spec
                && !s.contains_key("finalizers")
            {
                s.insert("finalizers".into(), json!(["kubernetes"]));
            }
        }
        _ => {}
    }
}

/// Drops the metadata collections that are empty: the real server stores
/// metadata as ObjectMeta, whose labels, annotations, finalizers and owner
/// references are omitted when empty.
pub(crate) fn drop_empty_meta(obj: &mut Value) {
    let Some(Value::Object(meta)) = obj.get_mut("metadata") else {
        return;
    };
    for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
        let empty = match meta.get(field) {
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Null) => true,
            _ => false,
        };
        if empty {
            meta.remove(field);
        }
    }
}

/// Turns a create body into the object to store (name already resolved).
pub(crate) fn prepare_create(
    res: &ResourceDef,
    obj: &mut Value,
    uid: String,
) -> Result<(), ApiError> {
    let name = meta_str(obj, "name").to_string();
    if !meta_str(obj, "resourceVersion").is_empty() {
        return Err(ApiError::internal(
            "Internal error occurred: resourceVersion should not be set on objects to be created",
        ));
    }
    drop_empty_meta(obj);
    let meta = meta_mut(obj);
    meta.insert("uid".into(), json!(uid));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("selfLink");
    if res.custom {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    if res.status
        && let Value::Object(m) = obj
    {
        m.remove("status");
        if let Some(s) = initial_status(res) {
            m.insert("status".into(), s);
        }
    }
    apply_defaults(res, obj);
    validate_common(res, &name, obj)
}

/// Name and metadata checks shared by create and update.
pub(crate) fn validate_common(res: &ResourceDef, name: &str, obj: &Value) -> Result<(), ApiError> {
    let mut causes: Vec<Cause> = Vec::new();
    check_name(name, res.name_rule, &mut causes);
    if let Some(meta) = obj.get("metadata") {
        check_meta(meta, &mut causes);
    }
    causes.extend(super::typed::validate(res, obj));
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(res, name, causes))
    }
}

/// Whether two objects are equal ignoring the given top-level keys
/// (compared in place, without copying).
fn eq_except(a: &Value, b: &Value, ignore: &[&str]) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let relevant =
                |m: &Map<String, Value>| m.keys().filter(|k| !ignore.contains(&k.as_str())).count();
            relevant(x) == relevant(y)
                && x.iter()
                    .filter(|(k, _)| !ignore.contains(&k.as_str()))
                    .all(|(k, v)| y.get(k) == Some(v))
        }
        _ => a == b,
    }
}

/// Which part of the object an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The main resource: status is kept from the stored object.
    Main,
    /// The status subresource: only status (and managedFields) change.
    Status,
}

/// Merges an update body with the stored object the way the real
/// strategy does, then validates it. `new` has passed the type checks.
pub(crate) fn prepare_update(
    res: &ResourceDef,
    part: Part,
    old: &Value,
    mut new: Value,
) -> Result<Value, ApiError> {
    let name = meta_str(old, "name").to_string();
    if part == Part::Status {
        let status = new.get("status").cloned();
        let managed = new.pointer("/metadata/managedFields").cloned();
        let mut out = old.clone();
        if let Value::Object(m) = &mut out {
            match status {
                Some(s) => m.insert("status".into(), s),
                None => m.remove("status"),
            };
        }
        let meta = meta_mut(&mut out);
        match managed {
            Some(mf) => meta.insert("managedFields".into(), mf),
            None => meta.remove("managedFields"),
        };
        if let Some(rv) = new.pointer("/metadata/resourceVersion").cloned() {
            meta.insert("resourceVersion".into(), rv);
        }
        return Ok(out);
    }
    if res.status
        && let Value::Object(m) = &mut new
    {
        match old.get("status") {
            Some(s) => m.insert("status".into(), s.clone()),
            None => m.remove("status"),
        };
    }
    let old_uid = meta_str(old, "uid").to_string();
    let new_uid = meta_str(&new, "uid").to_string();
    if !new_uid.is_empty() && new_uid != old_uid {
        return Err(invalid1(
            res,
            &name,
            "metadata.uid",
            "FieldValueInvalid",
            format!("Invalid value: {}: field is immutable", json!(new_uid)),
        ));
    }
    let old_fin = finalizers(old);
    let being_deleted = !meta_str(old, "deletionTimestamp").is_empty();
    if being_deleted {
        let added: Vec<String> = finalizers(&new)
            .into_iter()
            .filter(|f| !old_fin.contains(f))
            .collect();
        if !added.is_empty() {
            let list = added
                .iter()
                .map(|f| format!("{f:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(invalid1(
                res,
                &name,
                "metadata.finalizers",
                "FieldValueForbidden",
                format!(
                    "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{list}}}"
                ),
            ));
        }
    }
    let om = old.get("metadata").cloned().unwrap_or_default();
    let meta = meta_mut(&mut new);
    meta.insert("uid".into(), json!(old_uid));
    for f in [
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "name",
        "namespace",
    ] {
        match om.get(f) {
            Some(v) => meta.insert(f.into(), v.clone()),
            None => meta.remove(f),
        };
    }
    meta.remove("selfLink");
    if res.custom {
        let ignore: &[&str] = if res.status {
            &["metadata", "status", "kind", "apiVersion"]
        } else {
            &["metadata", "kind", "apiVersion"]
        };
        if !eq_except(old, &new, ignore) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
    }
    drop_empty_meta(&mut new);
    validate_common(res, &name, &new)?;
    Ok(new)
}

/// Whether two stored states are equal apart from resourceVersion: such a
/// write is a no-op and the real server makes no new version.
pub(crate) fn same_object(a: &Value, b: &Value) -> bool {
    if !eq_except(a, b, &["metadata"]) {
        return false;
    }
    match (a.get("metadata"), b.get("metadata")) {
        (Some(x), Some(y)) => eq_except(x, y, &["resourceVersion"]),
        (x, y) => x == y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_encoding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert!(is_base64("YWI="));
        assert!(!is_base64("not base64!"));
    }
}
