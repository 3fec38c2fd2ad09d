//! A restricted user whose requests are authorized with Kubernetes RBAC
//! rules, so that a sidecar run against the embedded server is refused
//! exactly what a real cluster would refuse it with the same ClusterRole
//! and Role. Other requests (the tests' own, the default kubeconfig's) are
//! not checked.
//!
//! What is modelled: the rules of every `ClusterRole` (any namespace and
//! cluster-scoped resources) and `Role` (its own namespace only) of a YAML
//! stream, taken as bound to the one restricted user; `apiGroups`,
//! `resources` (with `plural/subresource`), `verbs`, `resourceNames` and
//! `*`. Request verbs follow kube-apiserver: get, list, watch, create,
//! update, patch, delete, deletecollection. Discovery and health paths are
//! open to every user, as for `system:authenticated`.

use serde::Deserialize;
use serde_json::json;

use super::resources::ResourceDef;
use super::status::ApiError;

/// The bearer token of the restricted user in its kubeconfig.
pub const RESTRICTED_TOKEN: &str = "embedded-apiserver-restricted-token";

/// The user name in Forbidden messages: the example deployment's service
/// account.
const RESTRICTED_USER: &str = "system:serviceaccount:csi-snapshotter:csi-snapshotter";

/// The sidecar's RBAC manifest as shipped in `deploy/kubernetes/`.
const SIDECAR_RBAC_YAML: &str = include_str!("../../../deploy/kubernetes/rbac.yaml");

/// One RBAC rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    api_groups: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

/// A `ClusterRole` or `Role` document (other kinds are skipped).
#[derive(Debug, Deserialize)]
struct RoleDoc {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    rules: Vec<Rule>,
}

#[derive(Debug, Default, Deserialize)]
struct Meta {
    #[serde(default)]
    namespace: Option<String>,
}

/// Rules granted to the restricted user.
#[derive(Debug, Clone, Default)]
pub struct RbacPolicy {
    /// ClusterRole rules: every namespace and the cluster scope.
    cluster: Vec<Rule>,
    /// Role rules with their namespace.
    namespaced: Vec<(String, Rule)>,
}

/// A request as RBAC sees it.
pub(crate) struct Attributes<'a> {
    pub verb: &'a str,
    pub def: &'a ResourceDef,
    pub sub: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

fn matches(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

impl Rule {
    fn allows(&self, a: &Attributes<'_>, resource: &str) -> bool {
        matches(&self.api_groups, a.def.group)
            && matches(&self.verbs, a.verb)
            && (self.resources.iter().any(|r| r == "*" || r == resource))
            && (self.resource_names.is_empty()
                || a.name
                    .is_some_and(|n| self.resource_names.iter().any(|r| r == n)))
    }
}

impl RbacPolicy {
    /// The rules of every ClusterRole and Role in a YAML stream.
    pub fn from_yaml(text: &str) -> Result<RbacPolicy, String> {
        let mut policy = RbacPolicy::default();
        for doc in serde_norway::Deserializer::from_str(text) {
            let value = serde_norway::Value::deserialize(doc).map_err(|e| e.to_string())?;
            if value.is_null() {
                continue;
            }
            let role: RoleDoc = serde_norway::from_value(value).map_err(|e| e.to_string())?;
            match role.kind.as_str() {
                "ClusterRole" => policy.cluster.extend(role.rules),
                "Role" => {
                    let ns = role
                        .metadata
                        .namespace
                        .ok_or("a Role without metadata.namespace")?;
                    policy
                        .namespaced
                        .extend(role.rules.into_iter().map(|r| (ns.clone(), r)));
                }
                _ => {}
            }
        }
        Ok(policy)
    }

    /// The rules of `deploy/kubernetes/rbac.yaml`: the sidecar's ClusterRole
    /// (spec F, with the optional secrets rule) and its leader-election Role
    /// in namespace `csi-snapshotter`.
    pub fn sidecar() -> RbacPolicy {
        RbacPolicy::from_yaml(SIDECAR_RBAC_YAML).expect("deploy/kubernetes/rbac.yaml parses")
    }

    /// Whether the restricted user may make the request.
    pub(crate) fn allows(&self, a: &Attributes<'_>) -> bool {
        let resource = match a.sub {
            Some(sub) => format!("{}/{sub}", a.def.plural),
            None => a.def.plural.to_string(),
        };
        self.cluster.iter().any(|r| r.allows(a, &resource))
            || a.namespace.is_some_and(|ns| {
                self.namespaced
                    .iter()
                    .any(|(rns, r)| rns == ns && r.allows(a, &resource))
            })
    }
}

/// The RBAC verb of a request, from the counters' verb.
pub(crate) fn rbac_verb(verb: &str, named: bool) -> &'static str {
    match verb {
        "GET" => "get",
        "LIST" => "list",
        "WATCH" => "watch",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if named => "delete",
        "DELETE" => "deletecollection",
        _ => "unknown",
    }
}

/// kube-apiserver's 403 for a request the user may not make.
pub(crate) fn forbidden(a: &Attributes<'_>) -> ApiError {
    let resource = a.def.plural;
    let what = match a.name {
        Some(n) => format!("{} \"{n}\"", a.def.qualified()),
        None => a.def.qualified(),
    };
    let sub = a
        .sub
        .map(|s| format!(" subresource \"{s}\""))
        .unwrap_or_default();
    let scope = match a.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let mut details = serde_json::Map::new();
    if let Some(n) = a.name {
        details.insert("name".into(), json!(n));
    }
    if !a.def.group.is_empty() {
        details.insert("group".into(), json!(a.def.group));
    }
    details.insert("kind".into(), json!(resource));
    ApiError {
        code: 403,
        reason: "Forbidden",
        message: format!(
            "{what} is forbidden: User \"{RESTRICTED_USER}\" cannot {} resource \"{resource}\"{sub} \
             in API group \"{}\" {scope}",
            a.verb, a.def.group
        ),
        details: Some(serde_json::Value::Object(details)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::resources::{RESOURCES, find};
    use super::*;

    fn def(group: &str, plural: &str) -> &'static ResourceDef {
        &RESOURCES[find(group, "v1", plural).expect("served resource")]
    }

    fn attrs<'a>(
        verb: &'a str,
        def: &'a ResourceDef,
        sub: Option<&'a str>,
        namespace: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            def,
            sub,
            namespace,
            name: Some("x"),
        }
    }

    #[test]
    fn the_shipped_rules_allow_what_the_sidecar_does_and_nothing_more() {
        let p = RbacPolicy::sidecar();
        let vsc = def("snapshot.storage.k8s.io", "volumesnapshotcontents");
        let events = def("", "events");
        let secrets = def("", "secrets");
        let leases = def("coordination.k8s.io", "leases");
        for verb in ["get", "list", "watch", "update", "patch"] {
            assert!(p.allows(&attrs(verb, vsc, None, None)), "{verb}");
        }
        assert!(p.allows(&attrs("patch", vsc, Some("status"), None)));
        assert!(!p.allows(&attrs("create", vsc, None, None)));
        assert!(!p.allows(&attrs("delete", vsc, None, None)));
        assert!(!p.allows(&attrs("get", vsc, Some("status"), None)));
        assert!(p.allows(&attrs("create", events, None, Some("default"))));
        assert!(p.allows(&attrs("get", secrets, None, Some("any"))));
        assert!(!p.allows(&attrs("list", secrets, None, Some("any"))));
        assert!(p.allows(&attrs("update", leases, None, Some("csi-snapshotter"))));
        assert!(!p.allows(&attrs("update", leases, None, Some("default"))));
        let vs = def("snapshot.storage.k8s.io", "volumesnapshots");
        assert!(!p.allows(&attrs("get", vs, None, Some("default"))));
    }

    #[test]
    fn wildcards_and_resource_names() {
        let p = RbacPolicy::from_yaml(
            "kind: ClusterRole\nrules:\n- apiGroups: ['*']\n  resources: [secrets]\n  \
             verbs: ['*']\n  resourceNames: [only]\n",
        )
        .unwrap();
        let secrets = def("", "secrets");
        let named = |name| Attributes {
            verb: "get",
            def: secrets,
            sub: None,
            namespace: Some("ns"),
            name,
        };
        assert!(p.allows(&named(Some("only"))));
        assert!(!p.allows(&named(Some("other"))));
        assert!(!p.allows(&named(None)));
    }

    #[test]
    fn forbidden_reads_like_kube_apiserver() {
        let vsc = def("snapshot.storage.k8s.io", "volumesnapshotcontents");
        let e = forbidden(&attrs("delete", vsc, None, None));
        assert_eq!(e.code, 403);
        assert_eq!(e.reason, "Forbidden");
        assert_eq!(
            e.message,
            "volumesnapshotcontents.snapshot.storage.k8s.io \"x\" is forbidden: User \
             \"system:serviceaccount:csi-snapshotter:csi-snapshotter\" cannot delete resource \
             \"volumesnapshotcontents\" in API group \"snapshot.storage.k8s.io\" at the cluster scope"
        );
    }
}
