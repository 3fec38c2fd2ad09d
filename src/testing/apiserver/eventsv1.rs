//! `events.k8s.io/v1` Events are a second view of the core Events, as in
//! kube-apiserver: one storage, field names converted on the way in and
//! out (`involvedObject` ↔ `regarding`, `message` ↔ `note`, …).

use serde_json::{Map, Value, json};

use super::object::{check_namespace, check_type_meta, meta_str};
use super::resources::{RESOURCES, ResourceDef, find};
use super::selector::FieldSelector;
use super::status::ApiError;
use super::typed;

/// A resource served as a converted view of another one's storage.
pub(crate) struct View {
    /// The resource as served.
    pub def: &'static ResourceDef,
    /// Stored form → served form.
    pub to_view: fn(&Value) -> Value,
    /// Served form → stored form.
    pub to_storage: fn(&Value) -> Value,
}

/// (core field, events.k8s.io field) pairs with the same value.
const FIELDS: &[(&str, &str)] = &[
    ("metadata", "metadata"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("reportingComponent", "reportingController"),
    ("reportingInstance", "reportingInstance"),
    ("action", "action"),
    ("reason", "reason"),
    ("involvedObject", "regarding"),
    ("related", "related"),
    ("message", "note"),
    ("type", "type"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn convert(obj: &Value, api_version: &str, from_core: bool) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    for (core, v1) in FIELDS {
        let (src, dst) = if from_core { (core, v1) } else { (v1, core) };
        if let Some(v) = obj.get(*src)
            && !v.is_null()
        {
            out.insert((*dst).to_string(), v.clone());
        }
    }
    if from_core && !out.contains_key("eventTime") {
        // eventTime is a required field of events.k8s.io/v1 and always
        // serialized, as null for events recorded the old way.
        out.insert("eventTime".into(), Value::Null);
    }
    Value::Object(out)
}

fn core_to_v1(obj: &Value) -> Value {
    convert(obj, "events.k8s.io/v1", true)
}

fn v1_to_core(obj: &Value) -> Value {
    convert(obj, "v1", false)
}

/// The view for a served resource index, if it is one.
pub(crate) fn view_for(res: usize) -> Option<(&'static View, usize)> {
    let def = &RESOURCES[res];
    if def.group == "events.k8s.io" && def.plural == "events" {
        static VIEW: std::sync::OnceLock<View> = std::sync::OnceLock::new();
        let view = VIEW.get_or_init(|| View {
            def: &RESOURCES[res],
            to_view: core_to_v1,
            to_storage: v1_to_core,
        });
        return Some((view, find("", "v1", "events")?));
    }
    None
}

/// The stored (core) name of a served top-level field.
fn storage_field(v1: &str) -> &str {
    FIELDS
        .iter()
        .find(|(_, v)| *v == v1)
        .map(|(c, _)| *c)
        .unwrap_or(v1)
}

/// Renames the first segment of a dotted field-selector path.
fn storage_selector(sel: &str) -> String {
    sel.split(',')
        .map(|req| {
            let (head, rest) = match req.find(['.', '=', '!']) {
                Some(i) => req.split_at(i),
                None => (req, ""),
            };
            format!("{}{rest}", storage_field(head))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Renames the first segment of a JSON pointer.
fn storage_pointer(p: &str) -> String {
    let Some(rest) = p.strip_prefix('/') else {
        return p.to_string();
    };
    let (head, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    format!("/{}{tail}", storage_field(head))
}

/// Renames the top-level keys of a (merge or apply) patch document.
fn storage_keys(doc: &Value) -> Value {
    match doc {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if k == "apiVersion" && v == "events.k8s.io/v1" {
                        json!("v1")
                    } else {
                        v.clone()
                    };
                    (storage_field(k).to_string(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Rewrites a request to the view into one on the stored form: the field
/// selector, a create/update body (after the view's own checks), or a
/// patch document. Returns the new body, if it changed.
pub(crate) fn translate_request(
    view: &View,
    verb: &str,
    content_type: &str,
    body: &[u8],
    namespace: Option<&str>,
    q: &mut std::collections::HashMap<String, String>,
) -> Result<Option<Vec<u8>>, ApiError> {
    if let Some(sel) = q.get_mut("fieldSelector") {
        FieldSelector::parse(sel, view.def)?;
        *sel = storage_selector(sel);
    }
    let parse = |b: &[u8]| -> Result<Value, ApiError> {
        if content_type == "application/yaml" || content_type.starts_with("application/apply-patch")
        {
            serde_norway::from_slice(b).map_err(|e| ApiError::bad_request(e.to_string()))
        } else {
            serde_json::from_slice(b).map_err(|e| ApiError::bad_request(e.to_string()))
        }
    };
    let out = match verb {
        "POST" | "PUT" => {
            let mut obj = parse(body)?;
            check_type_meta(view.def, &mut obj)?;
            check_namespace(view.def, &mut obj, namespace)?;
            let causes = typed::validate(view.def, &obj);
            if !causes.is_empty() {
                return Err(ApiError::invalid(view.def, meta_str(&obj, "name"), causes));
            }
            (view.to_storage)(&obj)
        }
        "PATCH" if content_type == "application/json-patch+json" => {
            let mut ops = parse(body)?;
            if let Value::Array(list) = &mut ops {
                for op in list.iter_mut().filter_map(Value::as_object_mut) {
                    for key in ["path", "from"] {
                        if let Some(Value::String(p)) = op.get_mut(key) {
                            *p = storage_pointer(p);
                        }
                    }
                }
            }
            ops
        }
        "PATCH" => storage_keys(&parse(body)?),
        _ => return Ok(None),
    };
    Ok(Some(serde_json::to_vec(&out).unwrap_or_default()))
}

/// Rewrites a response body of the stored form into the view's form.
pub(crate) fn translate_body(view: &View, body: &[u8]) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    match v.get("kind").and_then(Value::as_str) {
        Some("Event") => v = (view.to_view)(&v),
        Some("EventList") => {
            v["apiVersion"] = json!(view.def.api_version());
            if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
                for item in items.iter_mut() {
                    let mut converted = (view.to_view)(item);
                    if let Value::Object(m) = &mut converted {
                        m.remove("apiVersion");
                        m.remove("kind");
                    }
                    *item = converted;
                }
            }
        }
        _ => return None,
    }
    serde_json::to_vec(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_renamed() {
        assert_eq!(
            storage_selector("regarding.name=c,reason=R"),
            "involvedObject.name=c,reason=R"
        );
        assert_eq!(storage_pointer("/note"), "/message");
        assert_eq!(storage_pointer("/regarding/name"), "/involvedObject/name");
        assert_eq!(
            storage_keys(&json!({"note": "n", "series": null})),
            json!({"message": "n", "series": null})
        );
    }

    #[test]
    fn round_trip() {
        let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "VolumeSnapshotContent", "name": "c"}, "message": "m", "reason": "R",
            "type": "Normal", "count": 2, "source": {"component": "x"}});
        let v1 = core_to_v1(&core);
        assert_eq!(v1["regarding"]["name"], "c");
        assert_eq!(v1["note"], "m");
        assert_eq!(v1["deprecatedCount"], 2);
        assert!(v1["eventTime"].is_null());
        assert_eq!(v1_to_core(&v1), core);
    }
}
