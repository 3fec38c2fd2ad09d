//! Discovery documents (`/api`, `/apis`, `/apis/<group>[/<version>]`,
//! `/version`) shaped as kube-apiserver returns them.

use std::net::SocketAddr;

use serde_json::{Value, json};

use super::resources::{RESOURCES, ResourceDef, groups};

fn verbs(r: &ResourceDef) -> Value {
    if r.plural == "namespaces" {
        json!([
            "create", "delete", "get", "list", "patch", "update", "watch"
        ])
    } else {
        json!([
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch"
        ])
    }
}

/// `/version`: the Kubernetes release this server imitates.
pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `/api`.
pub(crate) fn core_versions(addr: SocketAddr) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}]
    })
}

fn group_doc(g: &str) -> Value {
    let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `/apis`.
pub(crate) fn group_list() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": groups().into_iter().map(group_doc).collect::<Vec<_>>()
    })
}

/// `/apis/<group>`, if served.
pub(crate) fn group(g: &str) -> Option<Value> {
    if !groups().contains(&g) {
        return None;
    }
    let mut doc = group_doc(g);
    if let Value::Object(m) = &mut doc {
        m.insert("kind".into(), json!("APIGroup"));
        m.insert("apiVersion".into(), json!("v1"));
    }
    Some(doc)
}

/// `/api/v1` or `/apis/<group>/<version>`, if served.
pub(crate) fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut doc = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": verbs(r),
        });
        if !r.short_names.is_empty()
            && let Value::Object(m) = &mut doc
        {
            m.insert("shortNames".into(), json!(r.short_names));
        }
        resources.push(doc);
        if r.status {
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources
    }))
}
