//! OpenAPI v3: the `/openapi/v3` index and one document per group-version,
//! shaped as kube-apiserver serves them (what kubectl reads to learn that
//! the server validates fields itself and which patch types a kind takes).

use serde_json::{Map, Value, json};

use super::super::resources::ResourceDef;
use super::super::schema::Schemas;
use super::model::{
    self, BodyKind, DELETE_OPTIONS, Endpoint, LIST_META, Operation, PATCH_BODY, PATCH_TYPES, STATUS,
};

/// Where component schemas are referenced from in v3.
pub(super) const REF_PREFIX: &str = "#/components/schemas/";

fn reference(name: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{name}")})
}

/// `x-kubernetes-group-version-kind` of one kind.
pub(super) fn gvk(def: &ResourceDef, kind: &str) -> Value {
    json!({"group": def.group, "version": def.version, "kind": kind})
}

/// The schemas of a group-version's kinds, their lists and the `meta/v1`
/// types the operations use. A kind without a schema (the built-in types)
/// is an object whose fields are not described.
pub(super) fn components(group: &str, version: &str, schemas: &Schemas) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, description) in [
        (
            STATUS,
            "Status is a return value for calls that don't return other objects.",
        ),
        (
            PATCH_BODY,
            "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
        ),
        (
            DELETE_OPTIONS,
            "DeleteOptions may be provided when deleting an API object.",
        ),
        (
            LIST_META,
            "ListMeta describes metadata that synthetic resources must have.",
        ),
    ] {
        out.insert(
            name.to_string(),
            json!({"type": "object", "description": description}),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for e in model::endpoints(group, version) {
        let def = e.def;
        if !seen.insert(def.kind) {
            continue;
        }
        let mut kind = schemas
            .document(def.group, def.version, def.plural)
            .cloned()
            .unwrap_or_else(
                || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            );
        if let Value::Object(m) = &mut kind {
            m.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([gvk(def, def.kind)]),
            );
        }
        let list_kind = def.list_kind();
        let list = json!({
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": {"type": "string"},
                "items": {"type": "array", "items": reference(&model::schema_name(def, def.kind))},
                "kind": {"type": "string"},
                "metadata": reference(LIST_META),
            },
            "x-kubernetes-group-version-kind": [gvk(def, &list_kind)],
        });
        out.insert(model::schema_name(def, def.kind), kind);
        out.insert(model::schema_name(def, &list_kind), list);
    }
    out
}

fn parameter(name: &str, location: &str, ty: &str) -> Value {
    let mut p = json!({"name": name, "in": location, "schema": {"type": ty, "uniqueItems": true}});
    if location == "path" {
        p["required"] = json!(true);
    }
    p
}

fn operation(e: &Endpoint, op: &Operation) -> Value {
    let def = e.def;
    let body_types: &[&str] = match op.body {
        BodyKind::Patch => PATCH_TYPES,
        _ => &[
            "application/json",
            "application/yaml",
            "application/vnd.kubernetes.protobuf",
        ],
    };
    let body_schema = match op.body {
        BodyKind::None => None,
        BodyKind::Object => Some(model::schema_name(def, def.kind)),
        BodyKind::Patch => Some(PATCH_BODY.to_string()),
        BodyKind::DeleteOptions => Some(DELETE_OPTIONS.to_string()),
    };
    let answer = json!({"schema": reference(&op.answer)});
    let mut out = json!({
        "operationId": op.id,
        "parameters": op
            .query
            .iter()
            .map(|(n, t)| parameter(n, "query", t))
            .collect::<Vec<_>>(),
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": answer, "application/yaml": answer},
            },
            "401": {"description": "Unauthorized"},
        },
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": gvk(def, def.kind),
    });
    if let Some(schema) = body_schema {
        let content: Map<String, Value> = body_types
            .iter()
            .map(|t| (t.to_string(), json!({"schema": reference(&schema)})))
            .collect();
        out["requestBody"] =
            json!({"content": content, "required": op.body != BodyKind::DeleteOptions});
    }
    out
}

/// The document of one group-version (`/openapi/v3/apis/<g>/<v>`).
pub(super) fn document(group: &str, version: &str, schemas: &Schemas) -> Value {
    let mut paths = Map::new();
    for e in model::endpoints(group, version) {
        let mut item = Map::new();
        for op in &e.ops {
            item.insert(op.method.to_string(), operation(&e, op));
        }
        let mut params: Vec<Value> = e
            .path_params
            .iter()
            .map(|p| parameter(p, "path", "string"))
            .collect();
        params.push(parameter("pretty", "query", "string"));
        item.insert("parameters".into(), Value::Array(params));
        paths.insert(e.path.clone(), Value::Object(item));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": super::super::discovery::version()["gitVersion"]},
        "paths": paths,
        "components": {"schemas": components(group, version, schemas)},
    })
}
