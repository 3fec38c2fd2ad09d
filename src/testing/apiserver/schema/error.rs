//! Field errors in the wording of the Kubernetes API server, and the 422
//! `Invalid` status built from them.

use serde_json::{Value, json};
use std::fmt;

/// What is wrong with a field; each kind has the apiserver's wording and
/// its `details.causes[].reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldErrorKind {
    /// A required field is missing (`FieldValueRequired`).
    Required,
    /// The value is malformed or breaks a rule (`FieldValueInvalid`).
    Invalid,
    /// The value is not one of an enum's values (`FieldValueNotSupported`).
    NotSupported,
    /// The value has the wrong JSON type or format (`FieldValueTypeInvalid`).
    TypeInvalid,
    /// The field may not be set (`FieldValueForbidden`).
    Forbidden,
    /// A string is longer than `maxLength` (`FieldValueTooLong`).
    TooLong,
    /// A list has more than `maxItems` items (`FieldValueTooMany`).
    TooMany,
    /// A set-type list repeats an item (`FieldValueDuplicate`).
    Duplicate,
}

impl FieldErrorKind {
    /// The apiserver's phrase for the kind, e.g. `Unsupported value`.
    pub fn phrase(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid | FieldErrorKind::TypeInvalid => "Invalid value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
            FieldErrorKind::Duplicate => "Duplicate value",
        }
    }

    /// The `reason` of a `details.causes` entry, e.g. `FieldValueRequired`.
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::TypeInvalid => "FieldValueTypeInvalid",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
        }
    }

    /// Kinds whose message never shows the offending value.
    fn omits_value(self) -> bool {
        matches!(
            self,
            FieldErrorKind::Required | FieldErrorKind::Forbidden | FieldErrorKind::TooLong
        )
    }
}

/// One validation failure at a field path such as `spec.source`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Dotted field path, e.g. `spec.source.volumeHandle`; `<nil>` for
    /// errors about the object as a whole.
    pub field: String,
    /// What is wrong.
    pub kind: FieldErrorKind,
    /// The explanation after the value, e.g. `supported values: "Delete", "Retain"`.
    pub detail: String,
    /// The offending value as the apiserver shows it (for rule failures,
    /// the schema type of the node, e.g. `"object"`).
    pub value: Option<Value>,
}

impl FieldError {
    /// A missing required field.
    pub fn required(field: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Required,
            detail: String::new(),
            value: None,
        }
    }

    /// An invalid value with an explanation.
    pub fn invalid(
        field: impl Into<String>,
        value: Value,
        detail: impl Into<String>,
    ) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Invalid,
            detail: detail.into(),
            value: Some(value),
        }
    }

    /// A value of the wrong type or format.
    pub fn type_invalid(
        field: impl Into<String>,
        value: Value,
        detail: impl Into<String>,
    ) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::TypeInvalid,
            detail: detail.into(),
            value: Some(value),
        }
    }

    /// A value outside an enum.
    pub fn not_supported(
        field: impl Into<String>,
        value: Value,
        supported: &[Value],
    ) -> FieldError {
        let list: Vec<String> = supported
            .iter()
            .map(|v| match v {
                Value::String(s) => quote(s),
                other => quote(&other.to_string()),
            })
            .collect();
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::NotSupported,
            detail: format!("supported values: {}", list.join(", ")),
            value: Some(value),
        }
    }

    /// The message without the field path (Go's `ErrorBody`); this is the
    /// `message` of a `details.causes` entry.
    pub fn body(&self) -> String {
        let mut s = self.kind.phrase().to_string();
        if !self.kind.omits_value() {
            s.push_str(": ");
            s.push_str(&render_value(self.value.as_ref()));
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// The `details.causes` entry for this error.
    pub fn cause(&self) -> Value {
        json!({"reason": self.kind.reason(), "message": self.body(), "field": self.field})
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

impl std::error::Error for FieldError {}

/// Quotes a string as Go's `%q` does for the strings that appear here.
pub(crate) fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

fn render_value(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "null".to_string(),
        Some(Value::String(s)) => quote(s),
        Some(other) => other.to_string(),
    }
}

/// The message of the apiserver's 422 `Invalid` status, e.g.
/// `VolumeSnapshotContent.snapshot.storage.k8s.io "c1" is invalid: spec.driver: Required value`.
/// Several errors are joined in brackets; repeated messages appear once.
pub fn invalid_status_message(
    kind: &str,
    group: &str,
    name: &str,
    errors: &[FieldError],
) -> String {
    let qualified = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let head = format!("{qualified} {} is invalid", quote(name));
    let mut seen = std::collections::HashSet::new();
    let msgs: Vec<String> = errors
        .iter()
        .map(ToString::to_string)
        .filter(|m| seen.insert(m.clone()))
        .collect();
    match msgs.len() {
        0 => head,
        1 => format!("{head}: {}", msgs[0]),
        _ => format!("{head}: [{}]", msgs.join(", ")),
    }
}

/// The whole 422 `Status` object the apiserver answers for an invalid
/// object, with `details.causes`.
pub fn invalid_status(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": invalid_status_message(kind, group, name, errors),
        "reason": "Invalid",
        "details": {
            "name": name,
            "group": group,
            "kind": kind,
            "causes": errors.iter().map(FieldError::cause).collect::<Vec<_>>(),
        },
        "code": 422,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wording_matches_the_apiserver() {
        let e = FieldError::not_supported(
            "spec.deletionPolicy",
            json!("Foo"),
            &[json!("Delete"), json!("Retain")],
        );
        assert_eq!(
            e.to_string(),
            r#"spec.deletionPolicy: Unsupported value: "Foo": supported values: "Delete", "Retain""#
        );
        assert_eq!(
            FieldError::required("spec.driver").to_string(),
            "spec.driver: Required value"
        );
        let e = FieldError::type_invalid(
            "status.restoreSize",
            json!("string"),
            r#"status.restoreSize in body must be of type integer: "string""#,
        );
        assert_eq!(
            e.body(),
            r#"Invalid value: "string": status.restoreSize in body must be of type integer: "string""#
        );
        let e = FieldError::invalid("status.restoreSize", json!(-1), "x");
        assert_eq!(e.body(), "Invalid value: -1: x");
    }

    #[test]
    fn status_message_brackets_only_several_errors() {
        let one = [FieldError::required("spec.driver")];
        assert_eq!(
            invalid_status_message(
                "VolumeSnapshotContent",
                "snapshot.storage.k8s.io",
                "c1",
                &one
            ),
            r#"VolumeSnapshotContent.snapshot.storage.k8s.io "c1" is invalid: spec.driver: Required value"#
        );
        let two = [
            FieldError::required("spec.driver"),
            FieldError::invalid("spec.source", json!("object"), "m"),
            FieldError::required("spec.driver"),
        ];
        assert_eq!(
            invalid_status_message("K", "g", "n", &two),
            r#"K.g "n" is invalid: [spec.driver: Required value, spec.source: Invalid value: "object": m]"#
        );
        let st = invalid_status("K", "g", "n", &two);
        assert_eq!(st["code"], 422);
        assert_eq!(st["details"]["causes"][0]["reason"], "FieldValueRequired");
        assert_eq!(
            st["details"]["causes"][1]["message"],
            r#"Invalid value: "object": m"#
        );
        assert_eq!(st["details"]["causes"][1]["field"], "spec.source");
    }
}
