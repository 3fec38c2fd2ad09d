//! The Kubernetes manifests in `deploy/kubernetes/` are parsed into the typed
//! Kubernetes objects, so that a typo in a field name, a wrong kind or a value
//! of the wrong type fails here rather than at `kubectl apply` time. On top of
//! parsing, the tests pin what the manifests promise: the sidecar's RBAC rules
//! are exactly upstream's (under names of their own), the root example runs
//! driver and sidecar as root without privileges, the non-root overlay
//! (`nonroot/`) meets the restricted Pod Security level, and every flag passed
//! to the sidecar is one the binary accepts.

#[path = "support/crds.rs"]
mod crds;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use csi_snapshotter::http::{LEADER_HEALTH_PATH, READY_PATH};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Name of the sidecar's ClusterRole (its own, so that applying rbac.yaml
/// never changes upstream's objects).
const RUNNER_ROLE: &str = "csi-snapshotter-rs-runner";
/// Name of the leader-election Role (its own, as above).
const LEADER_ROLE: &str = "csi-snapshotter-rs-leaderelection";
/// RBAC object names of the upstream sidecars' and snapshot-controller's
/// example manifests (external-snapshotter v8.6, external-provisioner v6):
/// applying ours must not overwrite any of them.
const UPSTREAM_RBAC_NAMES: &[&str] = &[
    "external-snapshotter-runner",
    "csi-snapshotter-role",
    "external-snapshotter-leaderelection",
    "csi-snapshotter-leaderelection",
    "snapshot-controller-runner",
    "snapshot-controller-role",
    "snapshot-controller-leaderelection",
    "external-provisioner-runner",
    "csi-provisioner-role",
    "external-provisioner-cfg",
    "csi-provisioner-role-cfg",
];
/// Tag suffix of the non-root image variant.
const NONROOT_TAG_SUFFIX: &str = "-nonroot";
/// The non-root image's user and group.
const NONROOT_ID: i64 = 65532;
/// The sidecar's ServiceAccount.
const SERVICE_ACCOUNT: &str = "csi-snapshotter";
/// Name of our container in the example pod.
const SIDECAR_CONTAINER: &str = "csi-snapshotter";

/// Spec section F, ClusterRole part: (API group, resource, verbs).
const SPEC_F_CLUSTER_RULES: &[(&str, &str, &[&str])] = &[
    (
        "",
        "events",
        &["list", "watch", "create", "update", "patch"],
    ),
    ("", "secrets", &["get"]),
    (
        "snapshot.storage.k8s.io",
        "volumesnapshotclasses",
        &["get", "list", "watch"],
    ),
    (
        "snapshot.storage.k8s.io",
        "volumesnapshotcontents",
        &["get", "list", "watch", "update", "patch"],
    ),
    (
        "snapshot.storage.k8s.io",
        "volumesnapshotcontents/status",
        &["update", "patch"],
    ),
    (
        "groupsnapshot.storage.k8s.io",
        "volumegroupsnapshotclasses",
        &["get", "list", "watch"],
    ),
    (
        "groupsnapshot.storage.k8s.io",
        "volumegroupsnapshotcontents",
        &["get", "list", "watch", "update", "patch"],
    ),
    (
        "groupsnapshot.storage.k8s.io",
        "volumegroupsnapshotcontents/status",
        &["update", "patch"],
    ),
];

/// Spec section F, leader-election Role part.
const SPEC_F_LEASE_RULES: &[(&str, &str, &[&str])] = &[(
    "coordination.k8s.io",
    "leases",
    &["get", "watch", "list", "delete", "update", "create"],
)];

/// `VolumeSnapshotClass` is a custom resource, so k8s-openapi has no type for
/// it; this one knows every field of the v1 CRD and rejects anything else.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VolumeSnapshotClass {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    driver: String,
    deletion_policy: DeletionPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parameters: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, Deserialize)]
enum DeletionPolicy {
    Delete,
    Retain,
}

/// The subset of kustomize's Kustomization that the manifests use; an unknown
/// (misspelt) key is an error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Kustomization {
    api_version: String,
    kind: String,
    namespace: String,
    resources: Vec<String>,
    #[serde(default)]
    images: Vec<KustomizeImage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KustomizeImage {
    name: String,
    new_name: Option<String>,
    new_tag: Option<String>,
}

/// The non-root overlay's kustomization: the base directory, strategic
/// merge patches and the image tag.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Overlay {
    api_version: String,
    kind: String,
    resources: Vec<String>,
    patches: Vec<PatchRef>,
    images: Vec<KustomizeImage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchRef {
    path: String,
}

/// One YAML document of a manifest file.
struct Doc {
    origin: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }
    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }
    /// Parses into `K` and checks that serializing gives the document back, so
    /// that a field the type does not know (a typo) cannot be silently dropped.
    fn typed<K: DeserializeOwned + Serialize>(&self) -> K {
        let obj: K = serde_json::from_value(self.value.clone())
            .unwrap_or_else(|e| panic!("{}: does not parse as {}: {e}", self.origin, self.kind()));
        let back = serde_json::to_value(&obj).expect("serialize");
        if let Some(path) = first_difference(&self.value, &back, String::new()) {
            panic!(
                "{}: field {path} is not part of {} (misspelt or misplaced?)",
                self.origin,
                self.kind()
            );
        }
        obj
    }
}

/// Path of the first place where `a` and `b` differ, if any.
fn first_difference(a: &Value, b: &Value, path: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(xv), Some(yv)) => first_difference(xv, yv, format!("{path}.{k}")),
                _ => Some(format!("{path}.{k}")),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (xv, yv))| first_difference(xv, yv, format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(if path.is_empty() {
            ".".to_string()
        } else {
            path
        }),
    }
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

fn read_kustomization() -> Kustomization {
    let path = deploy_dir().join("kustomization.yaml");
    let text = std::fs::read_to_string(&path).expect("read kustomization.yaml");
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("kustomization.yaml: {e}"))
}

fn read_overlay() -> Overlay {
    let path = deploy_dir().join("nonroot/kustomization.yaml");
    let text = std::fs::read_to_string(&path).expect("read nonroot/kustomization.yaml");
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("nonroot/kustomization.yaml: {e}"))
}

/// Every document of one YAML file.
fn read_yaml_docs(path: &Path, origin: &str) -> Vec<Doc> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{origin}: {e}"));
    serde_norway::Deserializer::from_str(&text)
        .enumerate()
        .filter_map(|(i, de)| {
            let value = Value::deserialize(de).unwrap_or_else(|e| panic!("{origin}: {e}"));
            (!value.is_null()).then(|| Doc {
                origin: format!("{origin} document {}", i + 1),
                value,
            })
        })
        .collect()
}

/// A strategic merge patch as kustomize applies it to these manifests:
/// objects merge key by key, lists of named objects (containers, volumes,
/// env) merge by name, anything else is replaced.
fn strategic_merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (key, pv) in p {
                match b.get_mut(key) {
                    Some(bv) => strategic_merge(bv, pv),
                    None => {
                        b.insert(key.clone(), pv.clone());
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(p))
            if p.iter().all(|v| v["name"].is_string())
                && b.iter().all(|v| v["name"].is_string()) =>
        {
            for pv in p {
                match b.iter_mut().find(|bv| bv["name"] == pv["name"]) {
                    Some(bv) => strategic_merge(bv, pv),
                    None => b.push(pv.clone()),
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// The documents of the non-root overlay: the base with its patches applied.
fn load_nonroot_docs() -> Vec<Doc> {
    let overlay = read_overlay();
    assert_eq!(overlay.api_version, "kustomize.config.k8s.io/v1beta1");
    assert_eq!(overlay.kind, "Kustomization");
    assert_eq!(
        overlay.resources,
        vec!["..".to_string()],
        "the overlay's base"
    );
    let mut docs = load_docs();
    for patch_ref in &overlay.patches {
        let path = deploy_dir().join("nonroot").join(&patch_ref.path);
        for patch in read_yaml_docs(&path, &patch_ref.path) {
            let target = docs
                .iter_mut()
                .find(|d| d.kind() == patch.kind() && d.name() == patch.name())
                .unwrap_or_else(|| panic!("{}: patches nothing", patch.origin));
            strategic_merge(&mut target.value, &patch.value);
        }
    }
    docs
}

/// The sidecar's image reference after the kustomization's `images` entry.
fn kustomized_image(images: &[KustomizeImage], image: &str) -> String {
    let name = image.split(':').next().unwrap_or_default();
    let entry = images
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("no images entry for {name}"));
    format!(
        "{}:{}",
        entry.new_name.as_deref().unwrap_or(name),
        entry.new_tag.as_deref().unwrap_or("latest")
    )
}

/// The Pod Security level a namespace document enforces.
fn enforced_level(docs: &[Doc]) -> String {
    let namespace = read_kustomization().namespace;
    find(docs, "Namespace", &namespace).value["metadata"]["labels"]
        ["pod-security.kubernetes.io/enforce"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Every document of every file the kustomization lists, in order.
fn load_docs() -> Vec<Doc> {
    read_kustomization()
        .resources
        .iter()
        .flat_map(|file| read_yaml_docs(&deploy_dir().join(file), file))
        .collect()
}

fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    docs.iter()
        .find(|d| d.kind() == kind && d.name() == name)
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
}

/// Rules flattened to (group, resource, verb) triples, so that the same grant
/// written as one rule or as several compares equal.
fn flatten(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in rules {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "rules must not use resourceNames or nonResourceURLs: {rule:?}"
        );
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    out.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    out
}

fn expected(table: &[(&str, &str, &[&str])]) -> BTreeSet<(String, String, String)> {
    table
        .iter()
        .flat_map(|(g, r, verbs)| {
            verbs
                .iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect()
}

fn example_pod(docs: &[Doc]) -> PodSpec {
    let deployment: Deployment = find(docs, "Deployment", "csi-hostpath-snapshotter").typed();
    deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod spec")
}

fn sidecar(pod: &PodSpec) -> &Container {
    pod.containers
        .iter()
        .find(|c| c.name == SIDECAR_CONTAINER)
        .expect("sidecar container")
}

/// The value of `--name=value` in `args` (the manifests always use that form).
fn flag_value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("--{name}=");
    args.iter().find_map(|a| a.strip_prefix(&prefix))
}

#[test]
fn every_manifest_parses_into_its_typed_object() {
    let docs = load_docs();
    assert!(!docs.is_empty());
    for doc in &docs {
        check_typed(doc);
    }
}

/// Parses `doc` into the typed object of its kind (see [`Doc::typed`]).
fn check_typed(doc: &Doc) {
    let api_version = doc.value["apiVersion"].as_str().unwrap_or("");
    match (api_version, doc.kind()) {
        ("v1", "Namespace") => drop(doc.typed::<Namespace>()),
        ("v1", "ServiceAccount") => drop(doc.typed::<ServiceAccount>()),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => drop(doc.typed::<ClusterRole>()),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            drop(doc.typed::<ClusterRoleBinding>())
        }
        ("rbac.authorization.k8s.io/v1", "Role") => drop(doc.typed::<Role>()),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => drop(doc.typed::<RoleBinding>()),
        ("apps/v1", "Deployment") => drop(doc.typed::<Deployment>()),
        ("storage.k8s.io/v1", "StorageClass") => drop(doc.typed::<StorageClass>()),
        ("snapshot.storage.k8s.io/v1", "VolumeSnapshotClass") => {
            drop(doc.typed::<VolumeSnapshotClass>())
        }
        (v, k) => panic!("{}: no typed check for {v} {k}", doc.origin),
    }
    assert!(
        !doc.name().is_empty(),
        "{}: metadata.name missing",
        doc.origin
    );
}

#[test]
fn a_misspelt_field_is_caught() {
    let doc = Doc {
        origin: "inline".into(),
        value: serde_json::json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "x"}, "automountServiceAcountToken": false
        }),
    };
    let result = std::panic::catch_unwind(|| doc.typed::<ServiceAccount>());
    assert!(
        result.is_err(),
        "a document with an unknown field must not pass"
    );
}

#[test]
fn kustomization_lists_every_manifest_and_sets_one_namespace() {
    let kustomization = read_kustomization();
    assert_eq!(kustomization.api_version, "kustomize.config.k8s.io/v1beta1");
    assert_eq!(kustomization.kind, "Kustomization");
    let listed: BTreeSet<String> = kustomization.resources.iter().cloned().collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(deploy_dir())
        .expect("read deploy/kubernetes")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, on_disk,
        "kustomization resources vs files in deploy/kubernetes"
    );

    let docs = load_docs();
    let ns = &kustomization.namespace;
    find(&docs, "Namespace", ns);
    for doc in &docs {
        if let Some(obj_ns) = doc.value["metadata"]["namespace"].as_str() {
            assert_eq!(obj_ns, ns, "{}: namespace", doc.origin);
        }
        for subject in doc.value["subjects"].as_array().into_iter().flatten() {
            assert_eq!(
                subject["namespace"].as_str(),
                Some(ns.as_str()),
                "{}: subject namespace",
                doc.origin
            );
        }
    }

    let pod = example_pod(&docs);
    let image = sidecar(&pod).image.clone().expect("sidecar image");
    let image_name = image.split(':').next().unwrap_or_default();
    let entry = kustomization
        .images
        .iter()
        .find(|i| i.name == image_name)
        .expect("kustomization overrides the sidecar image");
    assert!(entry.new_name.is_some() || entry.new_tag.is_some());
}

#[test]
fn cluster_role_has_exactly_the_spec_f_rules() {
    let docs = load_docs();
    let role: ClusterRole = find(&docs, "ClusterRole", RUNNER_ROLE).typed();
    assert!(role.aggregation_rule.is_none());
    let got = flatten(role.rules.as_deref().unwrap_or_default());
    let want = expected(SPEC_F_CLUSTER_RULES);
    let extra: Vec<_> = got.difference(&want).collect();
    let missing: Vec<_> = want.difference(&got).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "ClusterRole {RUNNER_ROLE}: extra {extra:?}, missing {missing:?}"
    );
}

#[test]
fn leader_election_role_has_exactly_the_lease_rules() {
    let docs = load_docs();
    let role: Role = find(&docs, "Role", LEADER_ROLE).typed();
    assert_eq!(
        flatten(role.rules.as_deref().unwrap_or_default()),
        expected(SPEC_F_LEASE_RULES)
    );
}

#[test]
fn bindings_grant_both_roles_to_the_sidecar_service_account() {
    let docs = load_docs();
    let namespace = read_kustomization().namespace;
    let sa: ServiceAccount = find(&docs, "ServiceAccount", SERVICE_ACCOUNT).typed();
    assert_eq!(sa.metadata.namespace.as_deref(), Some(namespace.as_str()));

    let is_our_sa = |kind: &str, name: &str, ns: Option<&str>| {
        kind == "ServiceAccount" && name == SERVICE_ACCOUNT && ns == Some(namespace.as_str())
    };
    let cluster_bindings: Vec<ClusterRoleBinding> = docs
        .iter()
        .filter(|d| d.kind() == "ClusterRoleBinding")
        .map(|d| d.typed())
        .collect();
    assert!(
        cluster_bindings.iter().any(|b| {
            b.role_ref.kind == "ClusterRole"
                && b.role_ref.name == RUNNER_ROLE
                && b.subjects
                    .iter()
                    .flatten()
                    .any(|s| is_our_sa(&s.kind, &s.name, s.namespace.as_deref()))
        }),
        "no ClusterRoleBinding of {RUNNER_ROLE} to the ServiceAccount"
    );
    let bindings: Vec<RoleBinding> = docs
        .iter()
        .filter(|d| d.kind() == "RoleBinding")
        .map(|d| d.typed())
        .collect();
    assert!(
        bindings.iter().any(|b| {
            b.role_ref.kind == "Role"
                && b.role_ref.name == LEADER_ROLE
                && b.metadata.namespace.as_deref() == Some(namespace.as_str())
                && b.subjects
                    .iter()
                    .flatten()
                    .any(|s| is_our_sa(&s.kind, &s.name, s.namespace.as_deref()))
        }),
        "no RoleBinding of {LEADER_ROLE} to the ServiceAccount"
    );

    let pod = example_pod(&docs);
    assert_eq!(pod.service_account_name.as_deref(), Some(SERVICE_ACCOUNT));
}

/// What both examples promise for every container: no privileges, no
/// capabilities, a read-only root filesystem, resource requests and limits,
/// no host namespaces or hostPath volumes, the runtime's seccomp profile.
fn assert_hardened(pod: &PodSpec) {
    let pod_sc = pod.security_context.clone().unwrap_or_default();
    assert_eq!(
        pod_sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault"),
        "pod seccomp profile"
    );
    assert!(
        pod.host_network != Some(true) && pod.host_pid != Some(true) && pod.host_ipc != Some(true)
    );
    for volume in pod.volumes.iter().flatten() {
        assert!(
            volume.host_path.is_none(),
            "volume {} is a hostPath",
            volume.name
        );
    }
    for c in all_containers(pod) {
        let sc = c.security_context.clone().unwrap_or_default();
        assert_eq!(sc.privileged, None, "{}: privileged", c.name);
        assert_eq!(
            sc.allow_privilege_escalation,
            Some(false),
            "{}: privilege escalation",
            c.name
        );
        assert_eq!(
            sc.read_only_root_filesystem,
            Some(true),
            "{}: read-only root",
            c.name
        );
        let caps = sc.capabilities.unwrap_or_default();
        assert_eq!(
            caps.drop,
            Some(vec!["ALL".to_string()]),
            "{}: capabilities drop",
            c.name
        );
        assert!(caps.add.is_none(), "{}: capabilities add", c.name);
        let resources = c.resources.clone().unwrap_or_default();
        for what in ["cpu", "memory"] {
            assert!(
                resources
                    .requests
                    .as_ref()
                    .is_some_and(|r| r.contains_key(what))
                    && resources
                        .limits
                        .as_ref()
                        .is_some_and(|r| r.contains_key(what)),
                "{}: {what} request and limit",
                c.name
            );
        }
    }
}

fn all_containers(pod: &PodSpec) -> impl Iterator<Item = &Container> {
    pod.containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
}

#[test]
fn root_example_runs_driver_and_sidecar_as_root_without_privileges() {
    let docs = load_docs();
    let pod = example_pod(&docs);
    assert_hardened(&pod);
    // The images' own users: root for the driver and for the sidecar's
    // default image, as in a vendor's pod that used the upstream image.
    let pod_sc = pod.security_context.clone().unwrap_or_default();
    assert!(pod_sc.run_as_user.is_none() && pod_sc.run_as_non_root.is_none());
    for c in all_containers(&pod) {
        let sc = c.security_context.clone().unwrap_or_default();
        assert!(
            sc.run_as_user.is_none() && sc.run_as_non_root.is_none(),
            "{}: the root example sets no user",
            c.name
        );
    }
    let image = kustomized_image(
        &read_kustomization().images,
        sidecar(&pod).image.as_deref().expect("sidecar image"),
    );
    assert!(!image.ends_with(NONROOT_TAG_SUFFIX), "{image}");
    assert_eq!(enforced_level(&docs), "baseline");
}

#[test]
fn nonroot_example_meets_the_restricted_pod_security_level() {
    let patches: BTreeSet<String> = read_overlay().patches.into_iter().map(|p| p.path).collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(deploy_dir().join("nonroot"))
        .expect("read deploy/kubernetes/nonroot")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(patches, on_disk, "nonroot patches vs files in nonroot/");
    let docs = load_nonroot_docs();
    for doc in &docs {
        check_typed(doc);
    }
    let pod = example_pod(&docs);
    assert_hardened(&pod);
    let pod_sc = pod.security_context.clone().unwrap_or_default();
    for c in all_containers(&pod) {
        let sc = c.security_context.clone().unwrap_or_default();
        let non_root = sc.run_as_non_root.or(pod_sc.run_as_non_root) == Some(true);
        let uid = sc.run_as_user.or(pod_sc.run_as_user);
        let gid = sc.run_as_group.or(pod_sc.run_as_group);
        // One user for the whole pod: the sidecar may open the socket the
        // driver creates because it is its owner.
        assert!(non_root, "{}: must run as non-root", c.name);
        assert_eq!(uid, Some(NONROOT_ID), "{}: user", c.name);
        assert_eq!(gid, Some(NONROOT_ID), "{}: group", c.name);
    }
    let image = kustomized_image(
        &read_overlay().images,
        sidecar(&pod).image.as_deref().expect("sidecar image"),
    );
    assert!(image.ends_with(NONROOT_TAG_SUFFIX), "{image}");
    assert_eq!(enforced_level(&docs), "restricted");
}

#[test]
fn rbac_names_are_our_own_so_upstream_bindings_stay_untouched() {
    let docs = load_docs();
    let mut checked = 0;
    for doc in &docs {
        if !matches!(
            doc.kind(),
            "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding"
        ) {
            continue;
        }
        assert!(
            !UPSTREAM_RBAC_NAMES.contains(&doc.name()),
            "{}: {} {} is an upstream name; applying it would overwrite upstream's object",
            doc.origin,
            doc.kind(),
            doc.name()
        );
        checked += 1;
    }
    assert!(
        checked >= 4,
        "the sidecar's roles and bindings were checked"
    );
}

#[test]
fn sidecar_shares_the_driver_socket_and_probes_its_http_endpoint() {
    let docs = load_docs();
    let pod = example_pod(&docs);
    let ours = sidecar(&pod);
    let args = ours.args.clone().unwrap_or_default();

    // The socket: --csi-address points into a volume that the driver container
    // mounts too, and that volume is an emptyDir.
    let address = flag_value(&args, "csi-address").expect("--csi-address");
    let socket = address.strip_prefix("unix://").unwrap_or(address);
    let mount = ours
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| Path::new(socket).starts_with(&m.mount_path))
        .expect("socket directory is mounted into the sidecar");
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .expect("socket volume");
    assert!(volume.empty_dir.is_some(), "socket volume is an emptyDir");
    let driver = pod
        .containers
        .iter()
        .find(|c| c.name == "hostpath")
        .expect("driver container");
    let driver_mount = driver
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == mount.name)
        .expect("driver mounts the socket volume");
    let endpoint = driver
        .args
        .iter()
        .flatten()
        .find_map(|a| a.strip_prefix("--endpoint=unix://"))
        .expect("driver --endpoint");
    let relative = Path::new(socket)
        .strip_prefix(&mount.mount_path)
        .expect("socket under mount");
    assert_eq!(
        Path::new(endpoint),
        Path::new(&driver_mount.mount_path).join(relative)
    );

    // The probes: both httpGet on the port --http-endpoint listens on; the
    // liveness probe uses the leader-election health check, which exists only
    // with --leader-election.
    let http = flag_value(&args, "http-endpoint").expect("--http-endpoint");
    let port: i32 = http
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in --http-endpoint");
    let named_port = |p: &IntOrString| match p {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => ours
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .map(|cp| cp.container_port)
            .expect("named port"),
    };
    let liveness = ours
        .liveness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("liveness httpGet");
    assert_eq!(named_port(&liveness.port), port);
    assert_eq!(liveness.path.as_deref(), Some(LEADER_HEALTH_PATH));
    assert!(args.iter().any(|a| a == "--leader-election"));
    let readiness = ours
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("readiness httpGet");
    assert_eq!(named_port(&readiness.port), port);
    assert_eq!(readiness.path.as_deref(), Some(READY_PATH));

    // The Lease namespace comes from the pod's namespace via the downward API.
    let ns_arg =
        flag_value(&args, "leader-election-namespace").expect("--leader-election-namespace");
    let var = ns_arg
        .strip_prefix("$(")
        .and_then(|s| s.strip_suffix(')'))
        .expect("$(VAR) reference");
    let env = ours
        .env
        .iter()
        .flatten()
        .find(|e| e.name == var)
        .expect("env var for the namespace");
    let field = env
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("fieldRef");
    assert_eq!(field.field_path, "metadata.namespace");
}

#[test]
fn snapshot_class_uses_the_example_driver() {
    let docs = load_docs();
    let class: VolumeSnapshotClass =
        find(&docs, "VolumeSnapshotClass", "csi-hostpath-snapclass").typed();
    let storage: StorageClass = find(&docs, "StorageClass", "csi-hostpath-sc").typed();
    let pod = example_pod(&docs);
    let driver = pod
        .containers
        .iter()
        .find(|c| c.name == "hostpath")
        .expect("driver container");
    let name = driver
        .args
        .iter()
        .flatten()
        .find_map(|a| a.strip_prefix("--drivername="))
        .expect("--drivername");
    assert_eq!(class.driver, name);
    assert_eq!(storage.provisioner, name);
    assert_eq!(storage.volume_binding_mode.as_deref(), Some("Immediate"));
    assert!(matches!(
        class.deletion_policy,
        DeletionPolicy::Delete | DeletionPolicy::Retain
    ));
    // Reserved keys are the only ones the sidecar interprets; anything else
    // under the prefix would make every create fail (spec C.3).
    for key in class.parameters.iter().flatten().map(|(k, _)| k) {
        assert!(
            !key.starts_with("csi.storage.k8s.io/"),
            "reserved key {key} in the example class"
        );
    }
}

/// The sidecar binary built for this test run.
const SIDECAR_BIN: &str = env!("CARGO_BIN_EXE_csi-snapshotter");

/// Long flag names (`--name`) mentioned in the binary's `--help` text.
fn flags_in_help() -> BTreeSet<String> {
    let out = Command::new(SIDECAR_BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "--help exits 0");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Option lines start with the flag (clap's layout: `  --name <VALUE>`);
    // prose elsewhere in the text may mention `--name` as an example.
    text.lines()
        .filter_map(|line| line.trim_start().strip_prefix("--"))
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// Exit status of the binary for `args` followed by `--version`: the flags
/// are parsed and checked, then it prints its version instead of running.
fn exit_status_with_version(args: &[String]) -> Option<i32> {
    Command::new(SIDECAR_BIN)
        .args(args)
        .arg("--version")
        .output()
        .expect("run the sidecar binary")
        .status
        .code()
}

#[test]
fn sidecar_args_are_flags_the_binary_accepts() {
    let docs = load_docs();
    let pod = example_pod(&docs);
    let args = sidecar(&pod).args.clone().unwrap_or_default();
    let known = flags_in_help();
    for arg in &args {
        let name = arg
            .trim_start_matches('-')
            .split('=')
            .next()
            .unwrap_or_default();
        assert!(arg.starts_with("--"), "{arg}: use the --flag spelling");
        assert!(
            known.contains(name),
            "{arg}: not a flag of csi-snapshotter --help"
        );
    }
    assert_eq!(
        exit_status_with_version(&args),
        Some(0),
        "the example's args must parse: {args:?}"
    );
    // The same check notices a flag the binary does not know.
    assert_eq!(
        exit_status_with_version(&["--no-such-flag".to_string()]),
        Some(2)
    );
}

/// One row of a flag table in docs/migrating.md: the flags it names and
/// whether the row says they are rejected.
fn migration_rows() -> Vec<(Vec<String>, bool)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/migrating.md");
    let text = std::fs::read_to_string(&path).expect("read docs/migrating.md");
    text.lines()
        .filter(|l| l.starts_with("| `--") || l.starts_with("| klog flags"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let flags = cells[1]
                .split('`')
                .filter(|t| t.starts_with("--"))
                .map(|t| t.trim_start_matches('-').to_string())
                .collect();
            let rejected = cells.get(3).is_some_and(|c| c.starts_with("rejected"));
            (flags, rejected)
        })
        .collect()
}

#[test]
fn migration_guide_covers_every_flag_of_the_binary() {
    let known = flags_in_help();
    let mut documented = BTreeSet::new();
    for (flags, rejected) in migration_rows() {
        for flag in flags {
            if rejected {
                assert_eq!(
                    exit_status_with_version(&[format!("--{flag}")]),
                    Some(2),
                    "docs/migrating.md says --{flag} is rejected"
                );
            } else {
                assert!(
                    known.contains(&flag),
                    "docs/migrating.md lists --{flag}, which the binary lacks"
                );
                documented.insert(flag);
            }
        }
    }
    let missing: Vec<_> = known.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "flags missing from docs/migrating.md: {missing:?}"
    );
}

/// Custom resources in the manifests also pass the CRD schemas (the
/// upstream ones when shared/crds is beside the repository, the built-in
/// ones otherwise).
#[cfg(feature = "testing")]
#[test]
fn custom_resources_pass_the_crd_schemas() {
    let schemas = crds::schemas();
    let mut checked = 0;
    for doc in load_docs() {
        let api_version = doc.value["apiVersion"].as_str().unwrap_or_default();
        let Some((group, version)) = api_version.split_once('/') else {
            continue;
        };
        let Some(crd) = schemas
            .crds()
            .iter()
            .find(|c| c.group == group && c.kind == doc.kind())
        else {
            continue;
        };
        let plural = crd.plural.clone();
        let mut pruned = doc.value.clone();
        let unknown = schemas.prune(group, version, &plural, &mut pruned);
        assert!(
            unknown.is_empty(),
            "{}: unknown fields {unknown:?}",
            doc.origin
        );
        if let Err(errors) = schemas.validate(group, version, &plural, &doc.value) {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            panic!("{}: {text:?}", doc.origin);
        }
        checked += 1;
    }
    assert!(checked > 0, "no custom resource was checked");
}
