//! `metav1.Status` error bodies with the reasons and messages a real
//! kube-apiserver uses.

use serde_json::{Value, json};

use super::resources::ResourceDef;

/// An error answered to the client as a `Status` object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// One cause of an Invalid error (`details.causes[]`).
#[derive(Debug, Clone)]
pub(crate) struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, …
    pub reason: String,
    /// The whole message for the field, e.g. `Required value`.
    pub message: String,
    pub field: String,
}

fn details(res: &ResourceDef, name: &str, kind_is_plural: bool) -> Value {
    let mut d = serde_json::Map::new();
    if !name.is_empty() {
        d.insert("name".into(), json!(name));
    }
    if !res.group.is_empty() {
        d.insert("group".into(), json!(res.group));
    }
    let kind = if kind_is_plural { res.plural } else { res.kind };
    d.insert("kind".into(), json!(kind));
    Value::Object(d)
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 404 for a named object.
    pub fn not_found(res: &ResourceDef, name: &str) -> ApiError {
        ApiError {
            details: Some(details(res, name, true)),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{}\" not found", res.qualified(), name),
            )
        }
    }

    /// 404 for a path the server does not serve.
    pub fn no_route() -> ApiError {
        ApiError {
            details: Some(json!({})),
            ..Self::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        }
    }

    /// 409 AlreadyExists on create.
    pub fn already_exists(res: &ResourceDef, name: &str) -> ApiError {
        ApiError {
            details: Some(details(res, name, true)),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{}\" already exists", res.qualified(), name),
            )
        }
    }

    /// 409 Conflict: stale resourceVersion (or another precondition).
    pub fn conflict(res: &ResourceDef, name: &str, why: &str) -> ApiError {
        ApiError {
            details: Some(details(res, name, true)),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": {}",
                    res.qualified(),
                    name,
                    why
                ),
            )
        }
    }

    /// The standard stale-version conflict.
    pub fn stale(res: &ResourceDef, name: &str) -> ApiError {
        Self::conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid with field causes.
    pub fn invalid(res: &ResourceDef, name: &str, causes: Vec<Cause>) -> ApiError {
        let mut seen = std::collections::HashSet::new();
        let list: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .filter(|m| seen.insert(m.clone()))
            .collect();
        let joined = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let mut d = details(res, name, false);
        if let Value::Object(m) = &mut d {
            m.insert(
                "causes".into(),
                Value::Array(
                    causes
                        .iter()
                        .map(
                            |c| json!({"reason": c.reason, "message": c.message, "field": c.field}),
                        )
                        .collect(),
                ),
            );
        }
        ApiError {
            details: Some(d),
            ..Self::new(
                422,
                "Invalid",
                format!(
                    "{} \"{}\" is invalid: {}",
                    res.qualified_kind(),
                    name,
                    joined
                ),
            )
        }
    }

    /// 422 Invalid from a failed JSON Patch application. The real server
    /// answers this generic message with empty details; the patch
    /// library's text (`detail`) is only logged.
    pub fn patch_failed(detail: &str) -> ApiError {
        tracing::debug!(detail, "JSON patch did not apply");
        ApiError {
            details: Some(json!({})),
            ..Self::new(
                422,
                "Invalid",
                "the server rejected our request due to an error in our request",
            )
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(400, "BadRequest", message)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> ApiError {
        ApiError {
            details: Some(json!({})),
            ..Self::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        }
    }

    /// 415 for a patch type the resource does not support.
    pub fn unsupported_patch(custom: bool) -> ApiError {
        let accepted = if custom {
            "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
        } else {
            "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml"
        };
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {accepted}"
            ),
        )
    }

    /// 410 Expired: a resourceVersion older than the retained window.
    pub fn expired(requested: u64, oldest: u64) -> ApiError {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 410 Expired for an outdated continue token.
    pub fn continue_expired() -> ApiError {
        Self::new(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        )
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(500, "InternalError", message)
    }

    /// An injected fault with the reason real servers pair with `code`.
    pub fn injected(code: u16) -> ApiError {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Expired",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "",
        };
        Self::new(code, reason, format!("injected fault (code {code})"))
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("kind".into(), json!("Status"));
        m.insert("apiVersion".into(), json!("v1"));
        m.insert("metadata".into(), json!({}));
        m.insert("status".into(), json!("Failure"));
        m.insert("message".into(), json!(self.message));
        if !self.reason.is_empty() {
            m.insert("reason".into(), json!(self.reason));
        }
        if let Some(d) = &self.details {
            m.insert("details".into(), d.clone());
        }
        m.insert("code".into(), json!(self.code));
        Value::Object(m)
    }
}

/// Shorthand for a single-cause Invalid error.
pub(crate) fn invalid1(
    res: &ResourceDef,
    name: &str,
    field: &str,
    reason: &str,
    message: String,
) -> ApiError {
    ApiError::invalid(
        res,
        name,
        vec![Cause {
            reason: reason.into(),
            message,
            field: field.into(),
        }],
    )
}
