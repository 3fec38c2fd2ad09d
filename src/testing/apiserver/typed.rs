//! Validation of the built-in types whose rules clients commonly trip
//! over: core and events.k8s.io Events (namespace agreement, the fields a
//! "new style" event needs) and Leases.

use serde_json::{Value, json};

use super::resources::ResourceDef;
use super::status::Cause;
use super::validate::is_subdomain;

/// Upstream length limits for event fields.
const REPORTING_INSTANCE_LIMIT: usize = 128;
const ACTION_LIMIT: usize = 128;
const REASON_LIMIT: usize = 128;
const NOTE_LIMIT: usize = 1024;

fn s<'a>(obj: &'a Value, path: &str) -> &'a str {
    obj.pointer(path).and_then(Value::as_str).unwrap_or("")
}

fn required(field: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired".into(),
        message: "Required value".into(),
        field: field.into(),
    }
}

fn invalid(field: &str, value: &Value, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {value}: {detail}"),
        field: field.into(),
    }
}

/// The event fields in core/v1 terms, whichever API the event came from.
struct EventView<'a> {
    namespace: &'a str,
    involved_ns: &'a str,
    involved_ns_field: &'static str,
    event_time: &'a str,
    reporting_controller: &'a str,
    reporting_field: &'static str,
    reporting_instance: &'a str,
    action: &'a str,
    reason: &'a str,
    message: &'a str,
}

/// Checks an event as kube-apiserver's legacy event validation does (it
/// applies to every event), plus the strict checks for events.k8s.io.
pub(crate) fn validate(def: &ResourceDef, obj: &Value) -> Vec<Cause> {
    match (def.group, def.plural) {
        ("", "events") => validate_event(
            &EventView {
                namespace: s(obj, "/metadata/namespace"),
                involved_ns: s(obj, "/involvedObject/namespace"),
                involved_ns_field: "involvedObject.namespace",
                event_time: s(obj, "/eventTime"),
                reporting_controller: s(obj, "/reportingComponent"),
                reporting_field: "reportingComponent",
                reporting_instance: s(obj, "/reportingInstance"),
                action: s(obj, "/action"),
                reason: s(obj, "/reason"),
                message: s(obj, "/message"),
            },
            Vec::new(),
        ),
        ("events.k8s.io", "events") => {
            let mut strict = Vec::new();
            if s(obj, "/eventTime").is_empty() {
                strict.push(required("eventTime"));
            }
            let ty = s(obj, "/type");
            if ty != "Normal" && ty != "Warning" {
                strict.push(invalid(
                    "type",
                    &json!(""),
                    &format!("has invalid value: {ty}"),
                ));
            }
            for (path, field) in [
                ("/deprecatedFirstTimestamp", "deprecatedFirstTimestamp"),
                ("/deprecatedLastTimestamp", "deprecatedLastTimestamp"),
            ] {
                if !s(obj, path).is_empty() {
                    strict.push(invalid(field, &json!(""), "needs to be unset"));
                }
            }
            if obj
                .get("deprecatedCount")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                != 0
            {
                strict.push(invalid("deprecatedCount", &json!(""), "needs to be unset"));
            }
            if obj
                .get("deprecatedSource")
                .is_some_and(|v| v.as_object().is_some_and(|m| !m.is_empty()))
            {
                strict.push(invalid("deprecatedSource", &json!(""), "needs to be unset"));
            }
            validate_event(
                &EventView {
                    namespace: s(obj, "/metadata/namespace"),
                    involved_ns: s(obj, "/regarding/namespace"),
                    involved_ns_field: "regarding.namespace",
                    event_time: s(obj, "/eventTime"),
                    reporting_controller: s(obj, "/reportingController"),
                    reporting_field: "reportingController",
                    reporting_instance: s(obj, "/reportingInstance"),
                    action: s(obj, "/action"),
                    reason: s(obj, "/reason"),
                    message: s(obj, "/note"),
                },
                strict,
            )
        }
        ("coordination.k8s.io", "leases") => validate_lease(obj),
        ("", "secrets") => validate_secret_keys(obj),
        _ => Vec::new(),
    }
}

/// Upstream's rule for ConfigMap and Secret keys.
const CONFIG_KEY_ERR: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
/// Longest ConfigMap or Secret key (a DNS subdomain's length).
const CONFIG_KEY_MAX: usize = 253;

/// The keys of a Secret's `data`.
fn validate_secret_keys(obj: &Value) -> Vec<Cause> {
    let Some(data) = obj.get("data").and_then(Value::as_object) else {
        return Vec::new();
    };
    data.keys()
        .filter_map(|k| {
            let field = format!("data[{k}]");
            let detail = if k.is_empty()
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                CONFIG_KEY_ERR
            } else if k.len() > CONFIG_KEY_MAX {
                "must be no more than 253 characters"
            } else if k == "." {
                "must not be '.'"
            } else if k == ".." {
                "must not be '..'"
            } else if k.starts_with("..") {
                "must not start with '..'"
            } else {
                return None;
            };
            Some(invalid(&field, &json!(k), detail))
        })
        .collect()
}

fn validate_event(e: &EventView<'_>, mut out: Vec<Cause>) -> Vec<Cause> {
    let mismatch = |out: &mut Vec<Cause>| {
        out.push(invalid(
            e.involved_ns_field,
            &json!(e.involved_ns),
            "does not match event.namespace",
        ))
    };
    if e.event_time.is_empty() {
        // Old-style events: an event about a cluster-scoped object lives
        // in "default" (or has no namespace); otherwise namespaces agree.
        if e.involved_ns.is_empty() {
            if !e.namespace.is_empty() && e.namespace != "default" {
                mismatch(&mut out);
            }
        } else if e.namespace != e.involved_ns {
            mismatch(&mut out);
        }
    } else {
        if e.involved_ns.is_empty() && e.namespace != "default" && e.namespace != "kube-system" {
            mismatch(&mut out);
        }
        if e.reporting_controller.is_empty() {
            out.push(required(e.reporting_field));
        }
        if e.reporting_instance.is_empty() {
            out.push(required("reportingInstance"));
        } else if e.reporting_instance.len() > REPORTING_INSTANCE_LIMIT {
            out.push(invalid(
                "reportingInstance",
                &json!(""),
                &format!("can have at most {REPORTING_INSTANCE_LIMIT} characters"),
            ));
        }
        if e.action.is_empty() {
            out.push(required("action"));
        } else if e.action.len() > ACTION_LIMIT {
            out.push(invalid(
                "action",
                &json!(""),
                &format!("can have at most {ACTION_LIMIT} characters"),
            ));
        }
        if e.reason.is_empty() {
            out.push(required("reason"));
        } else if e.reason.len() > REASON_LIMIT {
            out.push(invalid(
                "reason",
                &json!(""),
                &format!("can have at most {REASON_LIMIT} characters"),
            ));
        }
        if e.message.len() > NOTE_LIMIT {
            out.push(invalid(
                "message",
                &json!(""),
                &format!("can have at most {NOTE_LIMIT} characters"),
            ));
        }
    }
    if !e.namespace.is_empty() && !is_subdomain(e.namespace) {
        out.push(invalid("namespace", &json!(e.namespace), "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"));
    }
    out
}

fn validate_lease(obj: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    let spec = obj.get("spec");
    if let Some(d) = spec
        .and_then(|s| s.get("leaseDurationSeconds"))
        .and_then(Value::as_i64)
        && d <= 0
    {
        out.push(invalid(
            "spec.leaseDurationSeconds",
            &json!(d),
            "must be greater than 0",
        ));
    }
    if let Some(t) = spec
        .and_then(|s| s.get("leaseTransitions"))
        .and_then(Value::as_i64)
        && t < 0
    {
        out.push(invalid(
            "spec.leaseTransitions",
            &json!(t),
            "must be greater than or equal to 0",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::apiserver::resources::{RESOURCES, find};

    fn core_event() -> &'static ResourceDef {
        &RESOURCES[find("", "v1", "events").unwrap()]
    }

    #[test]
    fn old_style_event_namespaces() {
        let ok = json!({"metadata": {"namespace": "default"}, "involvedObject": {"kind": "VolumeSnapshotContent", "name": "c"}});
        assert!(validate(core_event(), &ok).is_empty());
        let bad = json!({"metadata": {"namespace": "ns1"}, "involvedObject": {"kind": "VolumeSnapshotContent", "name": "c"}});
        assert_eq!(
            validate(core_event(), &bad)[0].field,
            "involvedObject.namespace"
        );
        let pod = json!({"metadata": {"namespace": "ns1"}, "involvedObject": {"namespace": "ns2"}});
        assert_eq!(validate(core_event(), &pod).len(), 1);
    }

    #[test]
    fn new_style_event_needs_reporting_fields() {
        let e = json!({"metadata": {"namespace": "default"}, "eventTime": "2024-01-01T00:00:00.000000Z", "involvedObject": {}});
        let fields: Vec<String> = validate(core_event(), &e)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(
            fields,
            [
                "reportingComponent",
                "reportingInstance",
                "action",
                "reason"
            ]
        );
    }
}
