//! Patch application with kube-apiserver's semantics.
//!
//! JSON Patch follows the library the real server uses (evanphx/json-patch
//! v4), which differs from a strict reading of RFC 6902 in one way clients
//! rely on: `replace` of a member missing from an object sets it (an add),
//! while `remove` of a missing member fails. Any failure while applying is
//! answered `422 Invalid` with the message "the server rejected our request
//! due to an error in our request" and the library's text as the cause —
//! the real server's answer (a malformed patch document is `400`).

use serde_json::{Map, Value};

use super::status::ApiError;

/// A failure of one patch operation, worded like the Go library.
#[derive(Debug)]
struct OpError(String);

fn decode_token(t: &str) -> String {
    t.replace("~1", "/").replace("~0", "~")
}

fn split_path(path: &str) -> Result<Vec<String>, OpError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(OpError(format!("invalid JSON pointer: {path}")));
    };
    Ok(rest.split('/').map(decode_token).collect())
}

/// Walks to the container that holds the last token.
fn parent_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(t)?,
            Value::Array(a) => {
                let i = index(t, a.len())?;
                a.get_mut(i)?
            }
            _ => return None,
        };
    }
    Some(cur)
}

/// Parses an array index; negative indices count from the end, as the Go
/// library allows.
fn index(t: &str, len: usize) -> Option<usize> {
    let i: i64 = t.parse().ok()?;
    let i = if i < 0 { i + len as i64 } else { i };
    if i < 0 { None } else { Some(i as usize) }
}

fn get<'a>(doc: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get(t)?,
            Value::Array(a) => a.get(index(t, a.len())?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn missing(op: &str, path: &str) -> OpError {
    OpError(format!(
        "{op} operation does not apply: doc is missing path: \"{path}\": missing value"
    ))
}

fn op_add(doc: &mut Value, path: &str, value: Value) -> Result<(), OpError> {
    let tokens = split_path(path)?;
    let Some((last, parents)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    let Some(con) = parent_mut(doc, parents) else {
        return Err(missing("add", path));
    };
    match con {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            let i: i64 = last.parse().map_err(|_| {
                OpError(format!(
                    "Unable to access invalid index: {last}: invalid index referenced"
                ))
            })?;
            let len = a.len() as i64;
            if i > len || i < -len {
                return Err(OpError(format!(
                    "Unable to access invalid index: {i}: invalid index referenced"
                )));
            }
            let i = if i < 0 { i + len } else { i };
            a.insert(i as usize, value);
            Ok(())
        }
        _ => Err(missing("add", path)),
    }
}

fn op_remove(doc: &mut Value, path: &str) -> Result<Value, OpError> {
    let tokens = split_path(path)?;
    let Some((last, parents)) = tokens.split_last() else {
        return Err(missing("remove", path));
    };
    let Some(con) = parent_mut(doc, parents) else {
        return Err(missing("remove", path));
    };
    match con {
        Value::Object(m) => m.remove(last).ok_or_else(|| {
            OpError(format!(
                "unable to remove nonexistent key: {last}: missing value"
            ))
        }),
        Value::Array(a) => match index(last, a.len()) {
            Some(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err(OpError(format!(
                "Unable to access invalid index: {last}: invalid index referenced"
            ))),
        },
        _ => Err(missing("remove", path)),
    }
}

fn op_replace(doc: &mut Value, path: &str, value: Value) -> Result<(), OpError> {
    let tokens = split_path(path)?;
    let Some((last, parents)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    let Some(con) = parent_mut(doc, parents) else {
        return Err(missing("replace", path));
    };
    match con {
        // The Go library sets a missing member instead of failing.
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => match index(last, a.len()) {
            Some(i) if i < a.len() => {
                a[i] = value;
                Ok(())
            }
            _ => Err(OpError(format!(
                "replace operation does not apply: doc is missing key: {path}: missing value"
            ))),
        },
        _ => Err(missing("replace", path)),
    }
}

fn op_test(doc: &Value, path: &str, value: &Value) -> Result<(), OpError> {
    let tokens = split_path(path)?;
    if let Some((_, parents)) = tokens.split_last()
        && get(doc, parents).is_none()
    {
        return Err(missing("test", path));
    }
    let actual = get(doc, &tokens);
    let ok = match actual {
        // A missing member tests equal to null, as in the Go library.
        None => value.is_null(),
        Some(v) => v == value,
    };
    if ok {
        Ok(())
    } else {
        Err(OpError(format!("testing value {path} failed: test failed")))
    }
}

fn field<'a>(op: &'a Map<String, Value>, name: &str) -> Result<&'a str, OpError> {
    match op.get(name) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(OpError(format!(
            "operation missing {name} field: missing value"
        ))),
    }
}

/// Checks that a JSON Patch body is an array of operations (else 400).
pub(crate) fn decode_json_patch(body: &[u8]) -> Result<Vec<Map<String, Value>>, ApiError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let Value::Array(ops) = v else {
        return Err(ApiError::bad_request(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch",
        ));
    };
    ops.into_iter()
        .map(|o| match o {
            Value::Object(m) => Ok(m),
            _ => Err(ApiError::bad_request(
                "json: cannot unmarshal into Go value of type jsonpatch.Operation",
            )),
        })
        .collect()
}

/// Applies a decoded JSON Patch to `doc`.
pub(crate) fn apply_json_patch(
    doc: &mut Value,
    ops: &[Map<String, Value>],
) -> Result<(), ApiError> {
    for op in ops {
        apply_op(doc, op).map_err(|e| ApiError::patch_failed(&e.0))?;
    }
    Ok(())
}

fn apply_op(doc: &mut Value, op: &Map<String, Value>) -> Result<(), OpError> {
    let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
    let value = || {
        op.get("value")
            .cloned()
            .ok_or_else(|| OpError("operation missing value field: missing value".into()))
    };
    match kind {
        "add" => op_add(doc, field(op, "path")?, value()?),
        "remove" => op_remove(doc, field(op, "path")?).map(|_| ()),
        "replace" => op_replace(doc, field(op, "path")?, value()?),
        "test" => op_test(
            doc,
            field(op, "path")?,
            &op.get("value").cloned().unwrap_or(Value::Null),
        ),
        "move" => {
            let from = field(op, "from")?;
            let v = op_remove(doc, from)?;
            op_add(doc, field(op, "path")?, v)
        }
        "copy" => {
            let from = field(op, "from")?;
            let tokens = split_path(from)?;
            let v = get(doc, &tokens)
                .cloned()
                .ok_or_else(|| missing("copy", from))?;
            op_add(doc, field(op, "path")?, v)
        }
        other => Err(OpError(format!("Unexpected kind: {other}"))),
    }
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(doc: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !doc.is_object() {
                *doc = Value::Object(Map::new());
            }
            if let Value::Object(d) = doc {
                for (k, v) in p {
                    if v.is_null() {
                        d.remove(k);
                    } else {
                        merge_patch(d.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *doc = other.clone(),
    }
}

/// A strategic merge patch on a core type, applied as a merge patch after
/// dropping the strategic directives (`$setElementOrder/…`, `$retainKeys`,
/// `$deleteFromPrimitiveList/…`); `$patch: replace|delete` are honoured.
pub(crate) fn strategic_as_merge(doc: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            match p.get("$patch").and_then(Value::as_str) {
                Some("delete") => {
                    *doc = Value::Null;
                    return;
                }
                Some("replace") => {
                    let mut clean = p.clone();
                    clean.remove("$patch");
                    *doc = Value::Object(clean);
                    return;
                }
                _ => {}
            }
            if !doc.is_object() {
                *doc = Value::Object(Map::new());
            }
            if let Value::Object(d) = doc {
                for (k, v) in p {
                    if k.starts_with('$') {
                        continue;
                    }
                    if v.is_null() {
                        d.remove(k);
                    } else {
                        let slot = d.entry(k.clone()).or_insert(Value::Null);
                        strategic_as_merge(slot, v);
                        if slot.is_null() {
                            d.remove(k);
                        }
                    }
                }
            }
        }
        other => *doc = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(doc: Value, ops: Value) -> Result<Value, ApiError> {
        let ops = decode_json_patch(ops.to_string().as_bytes())?;
        let mut d = doc;
        apply_json_patch(&mut d, &ops)?;
        Ok(d)
    }

    #[test]
    fn replace_of_missing_member_adds_it() {
        let out = patch(
            json!({"a": {}}),
            json!([{"op": "replace", "path": "/a/b", "value": 1}]),
        )
        .unwrap();
        assert_eq!(out, json!({"a": {"b": 1}}));
        let out = patch(
            json!({}),
            json!([{"op": "replace", "path": "/status", "value": {"x": 1}}]),
        )
        .unwrap();
        assert_eq!(out, json!({"status": {"x": 1}}));
    }

    #[test]
    fn replace_under_missing_parent_fails() {
        let e = patch(
            json!({}),
            json!([{"op": "replace", "path": "/a/b", "value": 1}]),
        )
        .unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"));
    }

    #[test]
    fn remove_of_missing_member_fails_with_422() {
        let e = patch(json!({"a": {}}), json!([{"op": "remove", "path": "/a/b"}])).unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "the server rejected our request due to an error in our request"
        );
    }

    #[test]
    fn escaped_keys_and_test_op() {
        let doc = json!({"m": {"a/b": "yes", "t~": 1}});
        let out = patch(doc.clone(), json!([{"op": "test", "path": "/m/a~1b", "value": "yes"}, {"op": "remove", "path": "/m/a~1b"}, {"op": "remove", "path": "/m/t~0"}])).unwrap();
        assert_eq!(out, json!({"m": {}}));
        let e = patch(
            doc,
            json!([{"op": "test", "path": "/m/a~1b", "value": "no"}]),
        )
        .unwrap_err();
        assert_eq!(e.code, 422);
    }

    #[test]
    fn array_ops() {
        let doc = json!({"f": ["a", "b", "c"]});
        let out = patch(doc.clone(), json!([{"op": "test", "path": "/f/1", "value": "b"}, {"op": "remove", "path": "/f/1"}, {"op": "add", "path": "/f/-", "value": "d"}])).unwrap();
        assert_eq!(out, json!({"f": ["a", "c", "d"]}));
        assert!(patch(doc.clone(), json!([{"op": "remove", "path": "/f/3"}])).is_err());
        assert!(patch(doc, json!([{"op": "replace", "path": "/f/3", "value": 1}])).is_err());
    }

    #[test]
    fn malformed_patch_is_bad_request() {
        assert_eq!(decode_json_patch(b"{}").unwrap_err().code, 400);
        assert_eq!(decode_json_patch(b"nope").unwrap_err().code, 400);
    }

    #[test]
    fn merge_patch_deletes_nulls() {
        let mut d = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut d, &json!({"a": null, "b": {"c": 5}}));
        assert_eq!(d, json!({"b": {"c": 5, "d": 3}}));
    }
}
