//! The resources the embedded server serves and what a real kube-apiserver
//! says about them: REST names, scope, subresources and per-type strategy
//! (whether a PUT may create, whether `generation` is tracked).

/// How object names of a resource are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameRule {
    /// RFC 1123 subdomain (most resources).
    Subdomain,
    /// RFC 1123 label (namespaces).
    Label,
}

/// One served resource (group/version/plural).
#[derive(Debug)]
pub(crate) struct ResourceDef {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Has a `/status` subresource with the status-isolation strategy.
    pub status: bool,
    /// A custom resource (CRD-backed): generation tracking, no unconditional
    /// update, strategic merge patch refused, deleted object returned.
    pub custom: bool,
    /// PUT of a missing object creates it (events and leases upstream).
    pub create_on_update: bool,
    pub short_names: &'static [&'static str],
    pub name_rule: NameRule,
    /// Field selectors accepted besides metadata.name / metadata.namespace.
    pub extra_fields: &'static [&'static str],
}

impl ResourceDef {
    /// `group/version`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` as used in error messages (`secrets` for core).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Kind.group` as used in Invalid messages (`Secret` for core).
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// The list kind (`<Kind>List`).
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

const SNAP: &str = "snapshot.storage.k8s.io";
const GROUP: &str = "groupsnapshot.storage.k8s.io";
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

const fn custom(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
    short_names: &'static [&'static str],
) -> ResourceDef {
    ResourceDef {
        group,
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        status,
        custom: true,
        create_on_update: false,
        short_names,
        name_rule: NameRule::Subdomain,
        extra_fields: &[],
    }
}

#[allow(clippy::too_many_arguments)]
const fn core(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
    create_on_update: bool,
    short_names: &'static [&'static str],
    extra_fields: &'static [&'static str],
) -> ResourceDef {
    ResourceDef {
        group,
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        status,
        custom: false,
        create_on_update,
        short_names,
        name_rule: NameRule::Subdomain,
        extra_fields,
    }
}

/// Every served resource. The index into this table identifies a resource
/// inside the store.
pub(crate) static RESOURCES: &[ResourceDef] = &[
    custom(
        SNAP,
        "volumesnapshotcontents",
        "volumesnapshotcontent",
        "VolumeSnapshotContent",
        false,
        true,
        &["vsc", "vscs"],
    ),
    custom(
        SNAP,
        "volumesnapshotclasses",
        "volumesnapshotclass",
        "VolumeSnapshotClass",
        false,
        false,
        &["vsclass", "vsclasses"],
    ),
    custom(
        SNAP,
        "volumesnapshots",
        "volumesnapshot",
        "VolumeSnapshot",
        true,
        true,
        &["vs"],
    ),
    custom(
        GROUP,
        "volumegroupsnapshotcontents",
        "volumegroupsnapshotcontent",
        "VolumeGroupSnapshotContent",
        false,
        true,
        &["vgsc", "vgscs"],
    ),
    custom(
        GROUP,
        "volumegroupsnapshotclasses",
        "volumegroupsnapshotclass",
        "VolumeGroupSnapshotClass",
        false,
        false,
        &["vgsclass", "vgsclasses"],
    ),
    custom(
        GROUP,
        "volumegroupsnapshots",
        "volumegroupsnapshot",
        "VolumeGroupSnapshot",
        true,
        true,
        &["vgs"],
    ),
    core(
        "",
        "secrets",
        "secret",
        "Secret",
        true,
        false,
        false,
        &[],
        &["type"],
    ),
    core(
        "",
        "events",
        "event",
        "Event",
        true,
        false,
        true,
        &["ev"],
        EVENT_FIELDS,
    ),
    core(
        "",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        "PersistentVolumeClaim",
        true,
        true,
        false,
        &["pvc"],
        &["status.phase"],
    ),
    core(
        "",
        "persistentvolumes",
        "persistentvolume",
        "PersistentVolume",
        false,
        true,
        false,
        &["pv"],
        &["status.phase"],
    ),
    ResourceDef {
        name_rule: NameRule::Label,
        ..core(
            "",
            "namespaces",
            "namespace",
            "Namespace",
            false,
            true,
            false,
            &["ns"],
            &["status.phase"],
        )
    },
    core(
        "events.k8s.io",
        "events",
        "event",
        "Event",
        true,
        false,
        true,
        &["ev"],
        &[
            "reason",
            "regarding.kind",
            "regarding.name",
            "regarding.namespace",
            "type",
        ],
    ),
    core(
        "coordination.k8s.io",
        "leases",
        "lease",
        "Lease",
        true,
        false,
        true,
        &[],
        &[],
    ),
];

/// Finds a resource by group, version and plural.
pub(crate) fn find(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Index of the namespaces resource (namespace existence checks).
pub(crate) fn namespaces() -> usize {
    find("", "v1", "namespaces").unwrap_or_default()
}

/// The served API groups (non-core), in discovery order.
pub(crate) fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}
