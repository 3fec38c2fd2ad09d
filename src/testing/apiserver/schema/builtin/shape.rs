//! A compact vocabulary for writing `openAPIV3Schema` trees in Rust: leaf
//! types, objects, lists and maps, and the validation-rule idioms the
//! snapshot API uses (immutable fields, fields that stay set once set,
//! exactly one of two sources).

use serde_json::{Map, Value, json};

/// `type: string`.
pub(super) fn string() -> Value {
    json!({"type": "string"})
}

/// A string holding an RFC 3339 timestamp.
pub(super) fn date_time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

/// A 64-bit integer.
pub(super) fn int64() -> Value {
    json!({"type": "integer", "format": "int64"})
}

/// `type: boolean`.
pub(super) fn boolean() -> Value {
    json!({"type": "boolean"})
}

/// A string limited to `values`.
pub(super) fn one_of(values: &[&str]) -> Value {
    json!({"type": "string", "enum": values})
}

/// A list of `items`.
pub(super) fn list(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

/// A map of string to string.
pub(super) fn string_map() -> Value {
    json!({"type": "object", "additionalProperties": string()})
}

/// An object with these properties (in this order).
pub(super) fn object(props: &[(&str, Value)]) -> Value {
    let props: Map<String, Value> = props
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect();
    json!({"type": "object", "properties": props})
}

/// The root of a kind: `apiVersion`, `kind` and `metadata` beside the
/// kind's own top-level fields.
pub(super) fn kind_root(fields: &[(&str, Value)]) -> Value {
    let mut all = vec![
        ("apiVersion", string()),
        ("kind", string()),
        ("metadata", json!({"type": "object"})),
    ];
    all.extend(fields.iter().cloned());
    object(&all)
}

/// Chainable keywords on a schema node.
pub(super) trait Shape: Sized {
    /// Sets a keyword.
    fn with(self, key: &str, value: Value) -> Value;
    /// Appends one `x-kubernetes-validations` entry.
    fn rule(self, rule: &str, message: &str) -> Value;

    /// `required`.
    fn required(self, names: &[&str]) -> Value {
        self.with("required", json!(names))
    }

    /// Refuses any change once the field exists (`self == oldSelf`).
    fn immutable(self, message: &str) -> Value {
        self.rule("self == oldSelf", message)
    }

    /// An object replaced as a whole by merges (`x-kubernetes-map-type`).
    fn atomic_map(self) -> Value {
        self.with("x-kubernetes-map-type", json!("atomic"))
    }

    /// A list replaced as a whole by merges (`x-kubernetes-list-type`).
    fn atomic_list(self) -> Value {
        self.with("x-kubernetes-list-type", json!("atomic"))
    }

    /// On an object: `field` may not be removed once set.
    fn kept_once_set(self, field: &str) -> Value {
        self.rule(
            &format!("!has(oldSelf.{field}) || has(self.{field})"),
            &format!("{field} is required once set"),
        )
    }

    /// On an object: exactly one of `a` and `b` is set.
    fn exactly_one(self, a: &str, b: &str) -> Value {
        self.rule(
            &format!("(has(self.{a}) && !has(self.{b})) || (!has(self.{a}) && has(self.{b}))"),
            &format!("exactly one of {a} and {b} must be set"),
        )
    }
}

impl Shape for Value {
    fn with(mut self, key: &str, value: Value) -> Value {
        if let Value::Object(m) = &mut self {
            m.insert(key.to_string(), value);
        }
        self
    }

    fn rule(mut self, rule: &str, message: &str) -> Value {
        if let Value::Object(m) = &mut self {
            let entry = json!({"rule": rule, "message": message});
            match m.get_mut("x-kubernetes-validations") {
                Some(Value::Array(rules)) => rules.push(entry),
                _ => {
                    m.insert("x-kubernetes-validations".into(), json!([entry]));
                }
            }
        }
        self
    }
}
