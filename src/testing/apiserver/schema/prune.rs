//! Dropping fields the schema does not know, as the apiserver does before
//! it validates or stores a custom resource.

use super::node::{Node, child_path};
use serde_json::Value;

/// Fields left alone at an object's root (and in embedded resources)
/// whatever the schema says; `metadata` is the apiserver's own business.
const META_FIELDS: &[&str] = &["apiVersion", "kind", "metadata"];

/// Removes unknown fields from `v` in place and returns their paths
/// (e.g. `spec.foo`), in the order found. Then, as the apiserver's decoder
/// does, drops object fields set to `null` whose schema is neither
/// nullable nor defaulted (silently: they are not unknown).
pub(crate) fn prune(root: &Node, v: &mut Value) -> Vec<String> {
    let mut pruned = Vec::new();
    walk(Some(root), v, "", true, &mut pruned);
    drop_nulls(Some(root), v);
    pruned
}

fn drop_nulls(node: Option<&Node>, v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, child| {
                let sub = node.and_then(|n| n.properties.get(k).or(n.additional.as_deref()));
                !(child.is_null() && sub.is_some_and(|s| !s.nullable && !s.has_default))
            });
            for (k, child) in map.iter_mut() {
                let sub = node.and_then(|n| n.properties.get(k).or(n.additional.as_deref()));
                drop_nulls(sub, child);
            }
        }
        Value::Array(items) => {
            let sub = node.and_then(|n| n.items.as_deref());
            for item in items {
                drop_nulls(sub, item);
            }
        }
        _ => {}
    }
}

fn walk(
    node: Option<&Node>,
    v: &mut Value,
    path: &str,
    resource_root: bool,
    out: &mut Vec<String>,
) {
    if let Some(n) = node.filter(|n| n.preserve_unknown) {
        keep_unknown(n, v, path, out);
        return;
    }
    match v {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if resource_root && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                let sub = node.and_then(|n| n.properties.get(&k).or(n.additional.as_deref()));
                let child_path = child_path(path, &k);
                match (sub, map.get_mut(&k)) {
                    (Some(sub), Some(child)) => {
                        let embedded = sub.embedded_resource;
                        walk(Some(sub), child, &child_path, embedded, out);
                    }
                    (None, _) => {
                        map.remove(&k);
                        out.push(child_path);
                    }
                    (Some(_), None) => {}
                }
            }
        }
        Value::Array(items) => {
            let sub = node.and_then(|n| n.items.as_deref());
            for (i, item) in items.iter_mut().enumerate() {
                let embedded = sub.is_some_and(|s| s.embedded_resource);
                walk(sub, item, &format!("{path}[{i}]"), embedded, out);
            }
        }
        _ => {}
    }
}

/// Under `x-kubernetes-preserve-unknown-fields`, unknown fields stay but
/// declared properties are still pruned inside.
fn keep_unknown(node: &Node, v: &mut Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                let sub = node.properties.get(k).or(node.additional.as_deref());
                if let Some(sub) = sub {
                    walk(
                        Some(sub),
                        child,
                        &child_path(path, k),
                        sub.embedded_resource,
                        out,
                    );
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = node.items.as_deref() {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(
                        Some(sub),
                        item,
                        &format!("{path}[{i}]"),
                        sub.embedded_resource,
                        out,
                    );
                }
            }
        }
        _ => {}
    }
}
