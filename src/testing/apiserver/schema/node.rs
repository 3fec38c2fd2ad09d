//! One node of a CRD's `openAPIV3Schema`, reduced to what validation and
//! pruning need.

use super::cel::{self, Expr};
use serde_json::Value;
use std::collections::BTreeMap;

/// A schema node. Unknown keywords (descriptions, defaults, map types) are
/// dropped when parsing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Node {
    /// `type`: object, array, string, integer, number or boolean.
    pub ty: Option<String>,
    /// `format`, e.g. `date-time`.
    pub format: Option<String>,
    /// `enum`.
    pub enumeration: Option<Vec<Value>>,
    /// `required`, in schema order.
    pub required: Vec<String>,
    /// `properties`.
    pub properties: BTreeMap<String, Node>,
    /// `additionalProperties` when it is a schema (a map's values).
    pub additional: Option<Box<Node>>,
    /// `items`.
    pub items: Option<Box<Node>>,
    /// `anyOf`.
    pub any_of: Vec<Node>,
    /// `nullable`.
    pub nullable: bool,
    /// Whether a `default` is declared.
    pub has_default: bool,
    /// `x-kubernetes-preserve-unknown-fields`.
    pub preserve_unknown: bool,
    /// `x-kubernetes-int-or-string`.
    pub int_or_string: bool,
    /// `x-kubernetes-embedded-resource`.
    pub embedded_resource: bool,
    /// `x-kubernetes-list-type`.
    pub list_type: Option<String>,
    pub max_length: Option<u64>,
    pub min_length: Option<u64>,
    pub max_items: Option<u64>,
    pub min_items: Option<u64>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub exclusive_minimum: bool,
    pub exclusive_maximum: bool,
    /// `pattern`, with the source kept for messages.
    pub pattern: Option<(String, regex::Regex)>,
    /// `x-kubernetes-validations` in the supported CEL subset.
    pub rules: Vec<Rule>,
    /// Whether this node or a descendant carries rules.
    pub subtree_has_rules: bool,
}

/// One `x-kubernetes-validations` entry the evaluator understands.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// The rule text as written in the CRD.
    pub source: String,
    /// The CRD's `message` (may be empty).
    pub message: String,
    /// The parsed expression.
    pub expr: Expr,
    /// Whether the rule references `oldSelf` (checked on update only).
    pub transition: bool,
}

/// A rule that is not evaluated, with where it is and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredRule {
    /// Field path of the node carrying the rule.
    pub field: String,
    /// The rule text.
    pub rule: String,
    /// Why it is not evaluated.
    pub reason: String,
}

/// Joins a child property name onto a field path.
pub(crate) fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Node {
    /// Builds a node from its JSON form; rules outside the supported CEL
    /// subset (and patterns the regex engine rejects) land in `ignored`.
    pub(crate) fn parse(v: &Value, path: &str, ignored: &mut Vec<IgnoredRule>) -> Node {
        let str_of = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let u64_of = |k: &str| v.get(k).and_then(Value::as_u64);
        let f64_of = |k: &str| v.get(k).and_then(Value::as_f64);
        let bool_of = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
        let mut node = Node {
            ty: str_of("type"),
            format: str_of("format"),
            enumeration: v.get("enum").and_then(Value::as_array).cloned(),
            required: v
                .get("required")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            nullable: bool_of("nullable"),
            has_default: v.get("default").is_some(),
            preserve_unknown: bool_of("x-kubernetes-preserve-unknown-fields"),
            int_or_string: bool_of("x-kubernetes-int-or-string"),
            embedded_resource: bool_of("x-kubernetes-embedded-resource"),
            list_type: str_of("x-kubernetes-list-type"),
            max_length: u64_of("maxLength"),
            min_length: u64_of("minLength"),
            max_items: u64_of("maxItems"),
            min_items: u64_of("minItems"),
            minimum: f64_of("minimum"),
            maximum: f64_of("maximum"),
            exclusive_minimum: bool_of("exclusiveMinimum"),
            exclusive_maximum: bool_of("exclusiveMaximum"),
            ..Node::default()
        };
        if let Some(p) = str_of("pattern") {
            match regex::Regex::new(&p) {
                Ok(re) => node.pattern = Some((p, re)),
                Err(e) => ignored.push(IgnoredRule {
                    field: path.to_string(),
                    rule: format!("pattern: {p}"),
                    reason: e.to_string(),
                }),
            }
        }
        if let Some(props) = v.get("properties").and_then(Value::as_object) {
            for (k, sub) in props {
                let child = Node::parse(sub, &child_path(path, k), ignored);
                node.properties.insert(k.clone(), child);
            }
        }
        if let Some(sub) = v.get("additionalProperties").filter(|a| a.is_object()) {
            node.additional = Some(Box::new(Node::parse(sub, &format!("{path}[*]"), ignored)));
        }
        if let Some(sub) = v.get("items").filter(|a| a.is_object()) {
            node.items = Some(Box::new(Node::parse(sub, &format!("{path}[*]"), ignored)));
        }
        if let Some(branches) = v.get("anyOf").and_then(Value::as_array) {
            node.any_of = branches
                .iter()
                .map(|b| Node::parse(b, path, ignored))
                .collect();
        }
        for r in v
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let source = r.get("rule").and_then(Value::as_str).unwrap_or_default();
            let message = r.get("message").and_then(Value::as_str).unwrap_or_default();
            match cel::parse(source) {
                Ok(expr) => node.rules.push(Rule {
                    source: source.to_string(),
                    message: message.trim().to_string(),
                    transition: expr.uses_old_self(),
                    expr,
                }),
                Err(reason) => {
                    tracing::debug!(field = path, rule = source, %reason, "validation rule outside the supported CEL subset is ignored");
                    ignored.push(IgnoredRule {
                        field: path.to_string(),
                        rule: source.to_string(),
                        reason,
                    });
                }
            }
        }
        node.subtree_has_rules = !node.rules.is_empty()
            || node.properties.values().any(|n| n.subtree_has_rules)
            || node
                .additional
                .as_deref()
                .is_some_and(|n| n.subtree_has_rules)
            || node.items.as_deref().is_some_and(|n| n.subtree_has_rules);
        node
    }

    /// The schema type shown as the value of a failed rule (`"object"`).
    pub(crate) fn type_name(&self) -> &str {
        self.ty.as_deref().unwrap_or("")
    }
}
