//! `/openapi/v2` and `/openapi/v3` for the served resources, generated from
//! the server's schemas, so that kubectl's `create -f` and `apply -f` run
//! their field validation (kubectl learns from them that the server checks
//! fields itself and sends `fieldValidation=Strict`) and pick a patch type
//! the resource accepts.

mod gnostic;
mod model;
mod v2;
mod v3;

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::Bytes;
use serde_json::{Value, json};

use super::schema::Schemas;

/// One rendered document.
#[derive(Debug, Clone)]
pub(crate) struct Document {
    /// Media type of `body`.
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Document {
    fn json(v: &Value) -> Document {
        Document {
            content_type: "application/json",
            body: Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
        }
    }
}

/// The media type kubectl asks `/openapi/v2` for.
const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// The media type of the answer: the same with `.` for `@`, which is not
/// allowed in a media type (Go clients refuse to parse it).
const V2_PROTOBUF_ANSWER: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Every OpenAPI document of the server, rendered once at start.
#[derive(Debug)]
pub(crate) struct OpenApi {
    v2_json: Document,
    v2_protobuf: Document,
    v3_index: Document,
    /// By path under `/openapi/v3/` (`apis/<g>/<v>`, `api/v1`).
    v3: BTreeMap<String, Document>,
}

/// A short content hash, as the index carries in each `serverRelativeURL`
/// (clients cache a document by it).
fn hash_of(bytes: &[u8]) -> String {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    format!("{:016X}", h.finish())
}

impl OpenApi {
    /// Renders the documents for the served resources from `schemas`.
    pub(crate) fn build(schemas: &Schemas) -> OpenApi {
        let mut v3 = BTreeMap::new();
        let mut index = serde_json::Map::new();
        for (group, version) in model::group_versions() {
            let path = model::gv_path(group, version);
            let doc = Document::json(&v3::document(group, version, schemas));
            index.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", hash_of(&doc.body))}),
            );
            v3.insert(path, doc);
        }
        let v2 = v2::document(schemas);
        OpenApi {
            v2_protobuf: Document {
                content_type: V2_PROTOBUF_ANSWER,
                body: Bytes::from(gnostic::encode(&v2)),
            },
            v2_json: Document::json(&v2),
            v3_index: Document::json(&json!({"paths": index})),
            v3,
        }
    }

    /// The document at `/openapi/<rest>`, if any; `/openapi/v2` in
    /// protobuf when `accept` names it.
    pub(crate) fn get(&self, rest: &str, accept: &str) -> Option<&Document> {
        match rest.split_once('/') {
            None if rest == "v2" && accept.contains(V2_PROTOBUF) => Some(&self.v2_protobuf),
            None if rest == "v2" => Some(&self.v2_json),
            None if rest == "v3" => Some(&self.v3_index),
            Some(("v3", gv)) => self.v3.get(gv),
            _ => None,
        }
    }
}
