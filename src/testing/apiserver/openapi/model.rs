//! The REST surface the OpenAPI documents describe, derived from the
//! server's resource table: one endpoint per collection, object and
//! subresource path, each with the operations kube-apiserver offers there
//! and their query parameters, and the name of each kind's schema.

use super::super::resources::{RESOURCES, ResourceDef};

/// A query parameter: name and OpenAPI type.
pub(super) type Param = (&'static str, &'static str);

/// Query parameters of list and watch.
const LIST: &[Param] = &[
    ("allowWatchBookmarks", "boolean"),
    ("continue", "string"),
    ("fieldSelector", "string"),
    ("labelSelector", "string"),
    ("limit", "integer"),
    ("resourceVersion", "string"),
    ("resourceVersionMatch", "string"),
    ("sendInitialEvents", "boolean"),
    ("timeoutSeconds", "integer"),
    ("watch", "boolean"),
];
/// Query parameters of create and replace: `fieldValidation` here is what
/// tells kubectl the server validates fields itself.
const WRITE: &[Param] = &[
    ("dryRun", "string"),
    ("fieldManager", "string"),
    ("fieldValidation", "string"),
];
/// Query parameters of patch.
const PATCH: &[Param] = &[
    ("dryRun", "string"),
    ("fieldManager", "string"),
    ("fieldValidation", "string"),
    ("force", "boolean"),
];
/// Query parameters of delete.
const DELETE: &[Param] = &[
    ("dryRun", "string"),
    ("gracePeriodSeconds", "integer"),
    ("propagationPolicy", "string"),
];
/// Query parameters of a read.
const READ: &[Param] = &[("resourceVersion", "string")];

/// Patch bodies the documents offer. Custom resources take no strategic
/// merge patch; the built-in kinds do, but their fields are not described
/// here, so offering it would make kubectl compute one from an empty
/// schema: without it kubectl uses its compiled-in types instead.
pub(super) const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
];

/// Schema names of the shared `meta/v1` types.
pub(super) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(super) const PATCH_BODY: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub(super) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(super) const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// What an operation takes as its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyKind {
    /// No body.
    None,
    /// The resource's kind.
    Object,
    /// A patch in one of the resource's patch types.
    Patch,
    /// `DeleteOptions`.
    DeleteOptions,
}

/// One operation of an endpoint.
#[derive(Debug)]
pub(super) struct Operation {
    /// `get`, `post`, `put`, `patch` or `delete`.
    pub method: &'static str,
    /// `x-kubernetes-action`.
    pub action: &'static str,
    /// `operationId`, as kube-apiserver builds it.
    pub id: String,
    pub query: &'static [Param],
    pub body: BodyKind,
    /// Schema name of the 200 answer.
    pub answer: String,
}

/// One path of the API with its operations.
#[derive(Debug)]
pub(super) struct Endpoint {
    /// Absolute path with `{namespace}` and `{name}` templates.
    pub path: String,
    /// The templates in the path.
    pub path_params: Vec<&'static str>,
    pub def: &'static ResourceDef,
    pub ops: Vec<Operation>,
}

/// `io.k8s.api.core.v1.Secret`, `io.k8s.storage.snapshot.v1.VolumeSnapshot`:
/// built-in groups under `io.k8s.api`, custom groups reversed.
pub(super) fn schema_name(def: &ResourceDef, kind: &str) -> String {
    let prefix = if def.custom {
        def.group.rsplit('.').collect::<Vec<_>>().join(".")
    } else if def.group.is_empty() {
        "io.k8s.api.core".to_string()
    } else {
        format!(
            "io.k8s.api.{}",
            def.group.split('.').next().unwrap_or(def.group)
        )
    };
    format!("{prefix}.{}.{kind}", def.version)
}

/// `SnapshotStorageK8sIoV1`, `CoreV1`: the group-version part of operation ids.
fn id_infix(def: &ResourceDef) -> String {
    let group = if def.group.is_empty() {
        "core"
    } else {
        def.group
    };
    let mut out: String = group
        .split('.')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let mut v = def.version.chars();
    if let Some(f) = v.next() {
        out.push(f.to_ascii_uppercase());
        out.push_str(v.as_str());
    }
    out
}

/// Every endpoint of the resources served in `group`/`version`.
pub(super) fn endpoints(group: &str, version: &str) -> Vec<Endpoint> {
    RESOURCES
        .iter()
        .filter(|d| d.group == group && d.version == version)
        .flat_map(resource_endpoints)
        .collect()
}

/// The group-versions the server serves, as `api/v1` and `apis/<g>/<v>`.
pub(super) fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut gvs: Vec<_> = RESOURCES.iter().map(|d| (d.group, d.version)).collect();
    gvs.sort_unstable();
    gvs.dedup();
    gvs
}

/// The path of a group-version's document under `/openapi/v3/`.
pub(super) fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn resource_endpoints(def: &'static ResourceDef) -> Vec<Endpoint> {
    let base = format!("/{}", gv_path(def.group, def.version));
    let infix = id_infix(def);
    let kind = def.kind;
    let (scope, scoped_params) = if def.namespaced {
        (
            format!("{base}/namespaces/{{namespace}}/{}", def.plural),
            vec!["namespace"],
        )
    } else {
        (format!("{base}/{}", def.plural), vec![])
    };
    let ns = if def.namespaced { "Namespaced" } else { "" };
    let object = schema_name(def, kind);
    let list = schema_name(def, &def.list_kind());
    let op = |method, action, verb: &str, suffix: &str, query, body, answer: &String| Operation {
        method,
        action,
        id: format!("{verb}{infix}{ns}{kind}{suffix}"),
        query,
        body,
        answer: answer.clone(),
    };
    let mut with_name = scoped_params.clone();
    with_name.push("name");
    let status = STATUS.to_string();
    let mut out = vec![
        Endpoint {
            path: scope.clone(),
            path_params: scoped_params,
            def,
            ops: vec![
                op("get", "list", "list", "", LIST, BodyKind::None, &list),
                op(
                    "post",
                    "post",
                    "create",
                    "",
                    WRITE,
                    BodyKind::Object,
                    &object,
                ),
                op(
                    "delete",
                    "deletecollection",
                    "deleteCollection",
                    "",
                    LIST,
                    BodyKind::DeleteOptions,
                    &status,
                ),
            ],
        },
        Endpoint {
            path: format!("{scope}/{{name}}"),
            path_params: with_name.clone(),
            def,
            ops: vec![
                op("get", "get", "read", "", READ, BodyKind::None, &object),
                op(
                    "put",
                    "put",
                    "replace",
                    "",
                    WRITE,
                    BodyKind::Object,
                    &object,
                ),
                op(
                    "patch",
                    "patch",
                    "patch",
                    "",
                    PATCH,
                    BodyKind::Patch,
                    &object,
                ),
                op(
                    "delete",
                    "delete",
                    "delete",
                    "",
                    DELETE,
                    BodyKind::DeleteOptions,
                    &status,
                ),
            ],
        },
    ];
    if def.status {
        out.push(Endpoint {
            path: format!("{scope}/{{name}}/status"),
            path_params: with_name,
            def,
            ops: vec![
                op(
                    "get",
                    "get",
                    "read",
                    "Status",
                    READ,
                    BodyKind::None,
                    &object,
                ),
                op(
                    "put",
                    "put",
                    "replace",
                    "Status",
                    WRITE,
                    BodyKind::Object,
                    &object,
                ),
                op(
                    "patch",
                    "patch",
                    "patch",
                    "Status",
                    PATCH,
                    BodyKind::Patch,
                    &object,
                ),
            ],
        });
    }
    if def.namespaced {
        out.push(Endpoint {
            path: format!("{base}/{}", def.plural),
            path_params: vec![],
            def,
            ops: vec![Operation {
                id: format!("list{infix}{kind}ForAllNamespaces"),
                ..op("get", "list", "list", "", LIST, BodyKind::None, &list)
            }],
        });
    }
    out
}
