//! The protobuf form of the v2 document, which kubectl asks for
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`): the
//! `openapi.v2.Document` message of the gnostic OpenAPI model, written
//! field by field from the JSON document. Only the parts the server's
//! document uses are written; vendor extensions carry their value as YAML
//! (JSON text, which YAML reads).

use serde_json::{Map, Value};

/// A message being written.
#[derive(Default)]
struct Msg(Vec<u8>);

/// Wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u64, wire: u64) {
        self.varint((field << 3) | wire);
    }

    fn bytes(&mut self, field: u64, b: &[u8]) {
        self.key(field, LEN);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn string(&mut self, field: u64, v: Option<&Value>) {
        if let Some(s) = v.and_then(Value::as_str).filter(|s| !s.is_empty()) {
            self.bytes(field, s.as_bytes());
        }
    }

    fn strings(&mut self, field: u64, v: Option<&Value>) {
        for s in v.and_then(Value::as_array).into_iter().flatten() {
            self.string(field, Some(s));
        }
    }

    fn message(&mut self, field: u64, m: Msg) {
        self.bytes(field, &m.0);
    }

    fn boolean(&mut self, field: u64, v: Option<&Value>) {
        if v.and_then(Value::as_bool) == Some(true) {
            self.key(field, VARINT);
            self.varint(1);
        }
    }

    fn int64(&mut self, field: u64, v: Option<&Value>) {
        if let Some(n) = v.and_then(Value::as_i64) {
            self.key(field, VARINT);
            self.varint(n as u64);
        }
    }

    fn double(&mut self, field: u64, v: Option<&Value>) {
        if let Some(f) = v.and_then(Value::as_f64) {
            self.key(field, FIXED64);
            self.0.extend_from_slice(&f.to_le_bytes());
        }
    }

    /// `NamedAny` entries for the `x-` keys of `m`.
    fn extensions(&mut self, field: u64, m: &Map<String, Value>) {
        for (k, v) in m.iter().filter(|(k, _)| k.starts_with("x-")) {
            let mut named = Msg::default();
            named.bytes(1, k.as_bytes());
            named.message(2, any(v));
            self.message(field, named);
        }
    }
}

/// `Any` holding a value as YAML.
fn any(v: &Value) -> Msg {
    let mut m = Msg::default();
    m.bytes(2, v.to_string().as_bytes());
    m
}

/// `Schema`.
fn schema(v: &Value) -> Msg {
    let mut m = Msg::default();
    let Some(o) = v.as_object() else { return m };
    m.string(1, o.get("$ref"));
    m.string(2, o.get("format"));
    m.string(4, o.get("description"));
    m.double(7, o.get("maximum"));
    m.boolean(8, o.get("exclusiveMaximum"));
    m.double(9, o.get("minimum"));
    m.boolean(10, o.get("exclusiveMinimum"));
    m.int64(11, o.get("maxLength"));
    m.int64(12, o.get("minLength"));
    m.string(13, o.get("pattern"));
    m.int64(14, o.get("maxItems"));
    m.int64(15, o.get("minItems"));
    m.strings(19, o.get("required"));
    for e in o
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(20, any(e));
    }
    match o.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut item = Msg::default();
            item.key(2, VARINT);
            item.varint(u64::from(*b));
            m.message(21, item);
        }
        Some(s @ Value::Object(_)) => {
            let mut item = Msg::default();
            item.message(1, schema(s));
            m.message(21, item);
        }
        _ => {}
    }
    if o.get("type").is_some() {
        let mut ty = Msg::default();
        ty.string(1, o.get("type"));
        m.message(22, ty);
    }
    if let Some(items) = o.get("items") {
        let mut list = Msg::default();
        match items {
            Value::Array(a) => a.iter().for_each(|s| list.message(1, schema(s))),
            s => list.message(1, schema(s)),
        }
        m.message(23, list);
    }
    if let Some(props) = o.get("properties").and_then(Value::as_object) {
        m.message(25, named_schemas(props));
    }
    m.extensions(31, o);
    m
}

/// `Properties` or `Definitions`: `NamedSchema` entries in field 1.
fn named_schemas(entries: &Map<String, Value>) -> Msg {
    let mut m = Msg::default();
    for (name, s) in entries {
        let mut named = Msg::default();
        named.bytes(1, name.as_bytes());
        named.message(2, schema(s));
        m.message(1, named);
    }
    m
}

/// `ParametersItem` holding a body parameter or a query/path parameter.
fn parameter(p: &Value) -> Msg {
    let location = p.get("in").and_then(Value::as_str).unwrap_or_default();
    let mut param = Msg::default();
    if location == "body" {
        let mut body = Msg::default();
        body.string(2, p.get("name"));
        body.string(3, p.get("in"));
        body.boolean(4, p.get("required"));
        if let Some(s) = p.get("schema") {
            body.message(5, schema(s));
        }
        param.message(1, body);
    } else {
        // Query and path parameters share their first fields; `type` and
        // `uniqueItems` sit at different numbers.
        let (variant, ty, unique) = if location == "path" {
            (4, 5, 19)
        } else {
            (3, 6, 20)
        };
        let mut sub = Msg::default();
        sub.boolean(1, p.get("required"));
        sub.string(2, p.get("in"));
        sub.string(3, p.get("description"));
        sub.string(4, p.get("name"));
        sub.string(ty, p.get("type"));
        sub.boolean(unique, p.get("uniqueItems"));
        let mut non_body = Msg::default();
        non_body.message(variant, sub);
        param.message(2, non_body);
    }
    let mut item = Msg::default();
    item.message(1, param);
    item
}

/// `Responses`.
fn responses(v: &Map<String, Value>) -> Msg {
    let mut m = Msg::default();
    for (code, r) in v {
        let mut response = Msg::default();
        response.string(1, r.get("description"));
        if let Some(s) = r.get("schema") {
            let mut item = Msg::default();
            item.message(1, schema(s));
            response.message(2, item);
        }
        let mut value = Msg::default();
        value.message(1, response);
        let mut named = Msg::default();
        named.bytes(1, code.as_bytes());
        named.message(2, value);
        m.message(1, named);
    }
    m
}

/// `Operation`.
fn operation(o: &Map<String, Value>) -> Msg {
    let mut m = Msg::default();
    m.string(5, o.get("operationId"));
    m.strings(6, o.get("produces"));
    m.strings(7, o.get("consumes"));
    for p in o
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(8, parameter(p));
    }
    if let Some(r) = o.get("responses").and_then(Value::as_object) {
        m.message(9, responses(r));
    }
    m.strings(10, o.get("schemes"));
    m.extensions(13, o);
    m
}

/// `PathItem`.
fn path_item(o: &Map<String, Value>) -> Msg {
    let mut m = Msg::default();
    for (method, field) in [
        ("get", 2),
        ("put", 3),
        ("post", 4),
        ("delete", 5),
        ("patch", 8),
    ] {
        if let Some(op) = o.get(method).and_then(Value::as_object) {
            m.message(field, operation(op));
        }
    }
    for p in o
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(9, parameter(p));
    }
    m
}

/// The `Document` message of a Swagger 2.0 JSON document.
pub(super) fn encode(doc: &Value) -> Vec<u8> {
    let mut m = Msg::default();
    m.string(1, doc.get("swagger"));
    if let Some(info) = doc.get("info") {
        let mut i = Msg::default();
        i.string(1, info.get("title"));
        i.string(2, info.get("version"));
        m.message(2, i);
    }
    let mut paths = Msg::default();
    for (path, item) in doc
        .get("paths")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let mut named = Msg::default();
        named.bytes(1, path.as_bytes());
        named.message(2, path_item(item.as_object().unwrap_or(&Map::new())));
        paths.message(2, named);
    }
    m.message(8, paths);
    if let Some(defs) = doc.get("definitions").and_then(Value::as_object) {
        m.message(9, named_schemas(defs));
    }
    m.0
}
