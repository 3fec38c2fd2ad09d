//! Checking a value against a schema node, in two passes as the apiserver
//! does: the OpenAPI keywords first, then the `x-kubernetes-validations`
//! rules, which are skipped when the first pass found a blocking error.

use super::error::{FieldError, FieldErrorKind, quote};
use super::node::{Node, child_path};
use serde_json::Value;

/// The note the apiserver adds when rules were skipped because of
/// blocking schema errors.
const RULES_SKIPPED: &str = "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation";

/// Validates `new` (and, on update, against `old`) and returns all errors.
///
/// On update, a subtree equal to its old value is not checked again
/// (validation ratcheting): an object stored before a schema tightened can
/// still be updated elsewhere.
pub(crate) fn validate(root: &Node, new: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    schema_pass(root, new, old, "", &mut errs);
    if root.subtree_has_rules {
        if errs.iter().any(is_blocking) {
            errs.push(FieldError {
                field: "<nil>".to_string(),
                kind: FieldErrorKind::Invalid,
                detail: RULES_SKIPPED.to_string(),
                value: None,
            });
        } else {
            rules_pass(root, new, old, "", &mut errs);
        }
    }
    errs
}

/// Errors after which the apiserver does not evaluate CEL rules.
fn is_blocking(e: &FieldError) -> bool {
    matches!(
        e.kind,
        FieldErrorKind::NotSupported
            | FieldErrorKind::Required
            | FieldErrorKind::TooLong
            | FieldErrorKind::TooMany
            | FieldErrorKind::TypeInvalid
    )
}

/// The JSON type name the OpenAPI validator reports for a value.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "number" => v.is_number(),
        // A float with no fractional part is accepted as an integer.
        "integer" => v.as_f64().is_some_and(|f| f.fract() == 0.0) || v.is_i64() || v.is_u64(),
        _ => true,
    }
}

fn unchanged(new: &Value, old: Option<&Value>) -> bool {
    old.is_some_and(|o| o == new)
}

fn schema_pass(
    node: &Node,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    if unchanged(v, old) {
        return;
    }
    if v.is_null() {
        if !node.nullable {
            if node.int_or_string {
                errs.push(type_error(path, "integer,string", v));
            } else if let Some(ty) = &node.ty {
                errs.push(type_error(path, ty, v));
            }
        }
        return;
    }
    if !node.any_of.is_empty() {
        let branch_errs: Vec<Vec<FieldError>> = node
            .any_of
            .iter()
            .map(|b| {
                let mut e = Vec::new();
                schema_pass(b, v, None, path, &mut e);
                e
            })
            .collect();
        if branch_errs.iter().all(|e| !e.is_empty()) {
            errs.push(FieldError::invalid(
                path,
                v.clone(),
                format!("{path} in body must validate at least one schema (anyOf)"),
            ));
            errs.extend(branch_errs.into_iter().flatten());
        }
    }
    // An int-or-string node takes either type whatever its `type` says,
    // and is reported as the apiserver's type list "integer,string".
    let type_ok = if node.int_or_string {
        let ok = type_matches("integer", v) || v.is_string();
        if !ok {
            errs.push(type_error(path, "integer,string", v));
        }
        ok
    } else if let Some(ty) = &node.ty {
        let ok = type_matches(ty, v);
        if !ok {
            errs.push(type_error(path, ty, v));
        }
        ok
    } else {
        true
    };
    if type_ok {
        match v {
            Value::String(s) => string_checks(node, s, path, errs),
            Value::Number(n) => number_checks(node, n.as_f64().unwrap_or_default(), v, path, errs),
            _ => {}
        }
    }
    if let Some(allowed) = &node.enumeration
        && !allowed.iter().any(|a| a == v)
    {
        errs.push(FieldError::not_supported(path, v.clone(), allowed));
    }
    if !type_ok {
        return;
    }
    match v {
        Value::Array(items) => array_checks(node, items, path, errs),
        Value::Object(map) => {
            for k in &node.required {
                if !map.contains_key(k) {
                    errs.push(FieldError::required(child_path(path, k)));
                }
            }
            for (k, child) in map {
                let sub = node.properties.get(k).or(node.additional.as_deref());
                if let Some(sub) = sub {
                    let old_child = old.and_then(|o| o.get(k));
                    schema_pass(sub, child, old_child, &child_path(path, k), errs);
                }
            }
        }
        _ => {}
    }
}

fn type_error(path: &str, ty: &str, v: &Value) -> FieldError {
    let actual = json_type(v);
    FieldError::type_invalid(
        path,
        Value::String(actual.to_string()),
        format!("{path} in body must be of type {ty}: {}", quote(actual)),
    )
}

fn string_checks(node: &Node, s: &str, path: &str, errs: &mut Vec<FieldError>) {
    let chars = s.chars().count() as u64;
    if let Some(max) = node.max_length
        && chars > max
    {
        errs.push(FieldError {
            field: path.to_string(),
            kind: FieldErrorKind::TooLong,
            detail: format!("may not be more than {max} bytes"),
            value: Some(Value::String(s.to_string())),
        });
    }
    if let Some(min) = node.min_length
        && chars < min
    {
        errs.push(FieldError::invalid(
            path,
            Value::String(s.to_string()),
            format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some((src, re)) = &node.pattern
        && !re.is_match(s)
    {
        errs.push(FieldError::invalid(
            path,
            Value::String(s.to_string()),
            format!("{path} in body should match '{src}'"),
        ));
    }
    if let Some(format) = &node.format
        && !format_ok(format, s)
    {
        errs.push(FieldError::type_invalid(
            path,
            Value::String(s.to_string()),
            format!("{path} in body must be of type {format}: {}", quote(s)),
        ));
    }
}

/// Checks the string formats the snapshot CRDs use; formats the apiserver
/// does not check (or that do not apply to strings) pass.
fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "date-time" => s.parse::<jiff::Timestamp>().is_ok(),
        "date" => s.parse::<jiff::civil::Date>().is_ok() && s.len() == 10,
        "int32" => s.parse::<i32>().is_ok(),
        "int64" => s.parse::<i64>().is_ok(),
        _ => true,
    }
}

fn number_checks(node: &Node, n: f64, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(min) = node.minimum {
        let bad = if node.exclusive_minimum {
            n <= min
        } else {
            n < min
        };
        if bad {
            let rel = if node.exclusive_minimum {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errs.push(FieldError::invalid(
                path,
                v.clone(),
                format!("{path} in body should be {rel} {}", fmt_num(min)),
            ));
        }
    }
    if let Some(max) = node.maximum {
        let bad = if node.exclusive_maximum {
            n >= max
        } else {
            n > max
        };
        if bad {
            let rel = if node.exclusive_maximum {
                "less than"
            } else {
                "less than or equal to"
            };
            errs.push(FieldError::invalid(
                path,
                v.clone(),
                format!("{path} in body should be {rel} {}", fmt_num(max)),
            ));
        }
    }
}

fn fmt_num(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

fn array_checks(node: &Node, items: &[Value], path: &str, errs: &mut Vec<FieldError>) {
    let len = items.len() as u64;
    if let Some(max) = node.max_items
        && len > max
    {
        errs.push(FieldError {
            field: path.to_string(),
            kind: FieldErrorKind::TooMany,
            detail: format!("must have at most {max} items"),
            value: Some(Value::from(len)),
        });
    }
    if let Some(min) = node.min_items
        && len < min
    {
        errs.push(FieldError::invalid(
            path,
            Value::Array(items.to_vec()),
            format!("{path} in body should have at least {min} items"),
        ));
    }
    if node.list_type.as_deref() == Some("set") {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                errs.push(FieldError {
                    field: format!("{path}[{i}]"),
                    kind: FieldErrorKind::Duplicate,
                    detail: String::new(),
                    value: Some(item.clone()),
                });
            }
        }
    }
    if let Some(sub) = &node.items {
        for (i, item) in items.iter().enumerate() {
            schema_pass(sub, item, None, &format!("{path}[{i}]"), errs);
        }
    }
}

/// Evaluates the rules of `node` and its descendants present in `v`.
/// Transition rules run only where an old value correlates (same property
/// path); list items never correlate here since no snapshot CRD keys its
/// lists.
fn rules_pass(node: &Node, v: &Value, old: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    if v.is_null() || unchanged(v, old) {
        return;
    }
    for rule in &node.rules {
        if rule.transition && old.is_none() {
            continue;
        }
        let shown = Value::String(node.type_name().to_string());
        match rule.expr.eval_bool(v, old) {
            Ok(true) => {}
            Ok(false) => {
                let detail = if rule.message.is_empty() {
                    format!("failed rule: {}", rule.source.trim())
                } else {
                    rule.message.clone()
                };
                errs.push(FieldError::invalid(path, shown, detail));
            }
            Err(e) => {
                let what = if rule.message.is_empty() {
                    rule.source.trim()
                } else {
                    rule.message.as_str()
                };
                errs.push(FieldError::invalid(
                    path,
                    shown,
                    format!("{e} evaluating rule: {what}"),
                ));
            }
        }
    }
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let sub = node.properties.get(k).or(node.additional.as_deref());
                if let Some(sub) = sub.filter(|s| s.subtree_has_rules) {
                    rules_pass(
                        sub,
                        child,
                        old.and_then(|o| o.get(k)),
                        &child_path(path, k),
                        errs,
                    );
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = node.items.as_deref().filter(|s| s.subtree_has_rules) {
                for (i, item) in items.iter().enumerate() {
                    rules_pass(sub, item, None, &format!("{path}[{i}]"), errs);
                }
            }
        }
        _ => {}
    }
}
