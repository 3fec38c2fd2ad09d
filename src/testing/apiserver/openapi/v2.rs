//! OpenAPI v2 (`/openapi/v2`): one Swagger 2.0 document for every served
//! group-version, with the same operations and schemas as the v3
//! documents.

use serde_json::{Map, Value, json};

use super::super::schema::Schemas;
use super::model::{self, BodyKind, DELETE_OPTIONS, PATCH_BODY, PATCH_TYPES};
use super::v3;

/// Where schemas are referenced from in v2.
const REF_PREFIX: &str = "#/definitions/";

fn reference(name: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{name}")})
}

/// A v3 schema as v2 spells it: references point at `definitions`, and
/// the keywords v2 lacks (`nullable`, `anyOf`, `oneOf`, `not`) are dropped.
fn schema_v2(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "nullable" | "anyOf" | "oneOf" | "not"))
                .map(|(k, v)| match (k.as_str(), v.as_str()) {
                    ("$ref", Some(r)) => (
                        k.clone(),
                        Value::from(r.replacen(v3::REF_PREFIX, REF_PREFIX, 1)),
                    ),
                    _ => (k.clone(), schema_v2(v)),
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(schema_v2).collect()),
        other => other.clone(),
    }
}

fn parameter(name: &str, location: &str, ty: &str) -> Value {
    let mut p = json!({"name": name, "in": location, "type": ty, "uniqueItems": true});
    if location == "path" {
        p["required"] = json!(true);
    }
    p
}

/// The whole document.
pub(super) fn document(schemas: &Schemas) -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    for (group, version) in model::group_versions() {
        for (name, schema) in v3::components(group, version, schemas) {
            definitions.insert(name, schema_v2(&schema));
        }
        for e in model::endpoints(group, version) {
            let def = e.def;
            let mut item = Map::new();
            for op in &e.ops {
                let mut params: Vec<Value> = op
                    .query
                    .iter()
                    .map(|(n, t)| parameter(n, "query", t))
                    .collect();
                let body = match op.body {
                    BodyKind::None => None,
                    BodyKind::Object => Some(model::schema_name(def, def.kind)),
                    BodyKind::Patch => Some(PATCH_BODY.to_string()),
                    BodyKind::DeleteOptions => Some(DELETE_OPTIONS.to_string()),
                };
                if let Some(schema) = body {
                    params.push(json!({
                        "name": "body",
                        "in": "body",
                        "required": op.body != BodyKind::DeleteOptions,
                        "schema": reference(&schema),
                    }));
                }
                let consumes: &[&str] = match op.body {
                    BodyKind::Patch => PATCH_TYPES,
                    _ => &["*/*"],
                };
                item.insert(
                    op.method.to_string(),
                    json!({
                        "operationId": op.id,
                        "consumes": consumes,
                        "produces": ["application/json", "application/yaml"],
                        "schemes": ["https"],
                        "parameters": params,
                        "responses": {
                            "200": {"description": "OK", "schema": reference(&op.answer)},
                            "401": {"description": "Unauthorized"},
                        },
                        "x-kubernetes-action": op.action,
                        "x-kubernetes-group-version-kind": v3::gvk(def, def.kind),
                    }),
                );
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
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": super::super::discovery::version()["gitVersion"]},
        "paths": paths,
        "definitions": definitions,
    })
}
