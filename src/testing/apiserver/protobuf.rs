//! Decoding of the protobuf request bodies kubectl's generators send for
//! built-in types (`kubectl create secret generic …`, `kubectl create
//! namespace …` post `application/vnd.kubernetes.protobuf`). Only Secret
//! and Namespace, with the ObjectMeta fields clients set, are decoded;
//! responses are always JSON, which such clients accept.

use serde_json::{Map, Value, json};

use super::object::base64;
use super::resources::ResourceDef;
use super::status::ApiError;

/// Prefix of every Kubernetes protobuf body.
const MAGIC: &[u8] = b"k8s\0";

fn bad(what: &str) -> ApiError {
    ApiError::bad_request(format!(
        "the body of the request could not be decoded: {what}"
    ))
}

/// A protobuf field: number and payload.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self
                .0
                .split_first()
                .ok_or_else(|| bad("truncated varint"))?;
            self.0 = rest;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(bad("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ApiError> {
        if n > self.0.len() {
            return Err(bad("truncated field"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, ApiError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Bytes(self.take(8)?),
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| bad("length"))?;
                Field::Bytes(self.take(n)?)
            }
            5 => Field::Bytes(self.take(4)?),
            _ => return Err(bad("unsupported wire type")),
        };
        Ok(Some((key >> 3, field)))
    }
}

fn text(b: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(b.to_vec()).map_err(|_| bad("invalid UTF-8"))
}

/// A map entry (key = 1, value = 2).
fn entry(b: &[u8]) -> Result<(String, Vec<u8>), ApiError> {
    let mut r = Reader(b);
    let (mut k, mut v) = (String::new(), Vec::new());
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(b)) => k = text(b)?,
            (2, Field::Bytes(b)) => v = b.to_vec(),
            _ => {}
        }
    }
    Ok((k, v))
}

fn owner_reference(b: &[u8]) -> Result<Value, ApiError> {
    let mut r = Reader(b);
    let mut m = Map::new();
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(b)) => m.insert("kind".into(), json!(text(b)?)),
            (3, Field::Bytes(b)) => m.insert("name".into(), json!(text(b)?)),
            (4, Field::Bytes(b)) => m.insert("uid".into(), json!(text(b)?)),
            (5, Field::Bytes(b)) => m.insert("apiVersion".into(), json!(text(b)?)),
            (6, Field::Varint(v)) => m.insert("controller".into(), json!(v != 0)),
            (7, Field::Varint(v)) => m.insert("blockOwnerDeletion".into(), json!(v != 0)),
            _ => None,
        };
    }
    Ok(Value::Object(m))
}

fn object_meta(b: &[u8]) -> Result<Value, ApiError> {
    let mut r = Reader(b);
    let mut m = Map::new();
    let (mut labels, mut annotations) = (Map::new(), Map::new());
    let (mut owners, mut finalizers) = (Vec::new(), Vec::new());
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(b)) => {
                m.insert("name".into(), json!(text(b)?));
            }
            (2, Field::Bytes(b)) => {
                m.insert("generateName".into(), json!(text(b)?));
            }
            (3, Field::Bytes(b)) => {
                m.insert("namespace".into(), json!(text(b)?));
            }
            (6, Field::Bytes(b)) => {
                m.insert("resourceVersion".into(), json!(text(b)?));
            }
            (11, Field::Bytes(b)) => {
                let (k, v) = entry(b)?;
                labels.insert(k, json!(text(&v)?));
            }
            (12, Field::Bytes(b)) => {
                let (k, v) = entry(b)?;
                annotations.insert(k, json!(text(&v)?));
            }
            (13, Field::Bytes(b)) => owners.push(owner_reference(b)?),
            (14, Field::Bytes(b)) => finalizers.push(json!(text(b)?)),
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    if !owners.is_empty() {
        m.insert("ownerReferences".into(), Value::Array(owners));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    Ok(Value::Object(m))
}

fn secret(raw: &[u8], out: &mut Map<String, Value>) -> Result<(), ApiError> {
    let mut r = Reader(raw);
    let (mut data, mut string_data) = (Map::new(), Map::new());
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(b)) => {
                out.insert("metadata".into(), object_meta(b)?);
            }
            (2, Field::Bytes(b)) => {
                let (k, v) = entry(b)?;
                data.insert(k, json!(base64(&v)));
            }
            (3, Field::Bytes(b)) => {
                out.insert("type".into(), json!(text(b)?));
            }
            (4, Field::Bytes(b)) => {
                let (k, v) = entry(b)?;
                string_data.insert(k, json!(text(&v)?));
            }
            (5, Field::Varint(v)) => {
                out.insert("immutable".into(), json!(v != 0));
            }
            _ => {}
        }
    }
    if !data.is_empty() {
        out.insert("data".into(), Value::Object(data));
    }
    if !string_data.is_empty() {
        out.insert("stringData".into(), Value::Object(string_data));
    }
    Ok(())
}

fn namespace(raw: &[u8], out: &mut Map<String, Value>) -> Result<(), ApiError> {
    let mut r = Reader(raw);
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(b)) => {
                out.insert("metadata".into(), object_meta(b)?);
            }
            (2, Field::Bytes(b)) => {
                let mut spec = Reader(b);
                let mut fins = Vec::new();
                while let Some((n, f)) = spec.next()? {
                    if let (1, Field::Bytes(b)) = (n, f) {
                        fins.push(json!(text(b)?));
                    }
                }
                out.insert("spec".into(), json!({"finalizers": fins}));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether protobuf bodies of this resource can be decoded.
pub(crate) fn supported(def: &ResourceDef) -> bool {
    def.group.is_empty() && matches!(def.plural, "secrets" | "namespaces")
}

/// Decodes a protobuf body (the `k8s\0` envelope around runtime.Unknown)
/// into the JSON form of the object.
pub(crate) fn decode(def: &ResourceDef, body: &[u8]) -> Result<Value, ApiError> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("missing protobuf magic"))?;
    let mut r = Reader(rest);
    let mut out = Map::new();
    let mut raw: &[u8] = &[];
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(b)) => {
                let mut tm = Reader(b);
                while let Some((n, f)) = tm.next()? {
                    match (n, f) {
                        (1, Field::Bytes(b)) => out.insert("apiVersion".into(), json!(text(b)?)),
                        (2, Field::Bytes(b)) => out.insert("kind".into(), json!(text(b)?)),
                        _ => None,
                    };
                }
            }
            (2, Field::Bytes(b)) => raw = b,
            (3, Field::Bytes(b)) if !b.is_empty() => {
                return Err(bad("content encodings are not supported"));
            }
            _ => {}
        }
    }
    match def.plural {
        "secrets" => secret(raw, &mut out)?,
        "namespaces" => namespace(raw, &mut out)?,
        _ => return Err(bad("unsupported type")),
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::apiserver::resources::{RESOURCES, find};

    fn field(n: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_a_secret_envelope() {
        let meta = [
            field(1, b"creds"),
            field(3, b"default"),
            field(11, &[field(1, b"app"), field(2, b"x")].concat()),
        ]
        .concat();
        let secret = [
            field(1, &meta),
            field(2, &[field(1, b"user"), field(2, b"me")].concat()),
            field(3, b"Opaque"),
        ]
        .concat();
        let tm = [field(1, b"v1"), field(2, b"Secret")].concat();
        let body = [MAGIC.to_vec(), field(1, &tm), field(2, &secret)].concat();
        let def = &RESOURCES[find("", "v1", "secrets").unwrap()];
        let v = decode(def, &body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                   "metadata": {"name": "creds", "namespace": "default", "labels": {"app": "x"}},
                   "data": {"user": "bWU="}})
        );
        assert_eq!(decode(def, b"garbage").unwrap_err().code, 400);
        assert_eq!(decode(def, &body[..body.len() - 3]).unwrap_err().code, 400);
    }
}
