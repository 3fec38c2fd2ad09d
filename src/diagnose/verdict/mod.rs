//! From what was read to one cause per stuck object. Pure: the cluster, the
//! scope, the time and the grace period in; findings out.

mod contents;
pub mod evidence;
mod groups;
mod snapshots;

use std::collections::BTreeSet;

use jiff::Timestamp;

use super::cause::{Cause, Finding, Kind};
use super::decide::{self, Decision};
use super::observe::Cluster;

/// Which objects to report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Only this namespace (contents: those bound into it); `None` = all.
    pub namespace: Option<String>,
    /// Only objects of this CSI driver.
    pub driver: Option<String>,
    /// Only this one object.
    pub object: Option<(Kind, String)>,
}

/// The facts every verdict reads.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// What was read.
    pub cluster: &'a Cluster,
    /// When it was read.
    pub now: Timestamp,
    /// Seconds an object may take before a missing reaction counts as stuck.
    pub grace: i64,
}

/// A cause with what shows it and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The cause.
    pub cause: Cause,
    /// One line.
    pub summary: String,
    /// Evidence lines.
    pub evidence: Vec<String>,
    /// The fix.
    pub fix: String,
}

impl Verdict {
    fn new(
        cause: Cause,
        summary: impl Into<String>,
        evidence: Vec<String>,
        fix: impl Into<String>,
    ) -> Self {
        Verdict {
            cause,
            summary: summary.into(),
            evidence,
            fix: fix.into(),
        }
    }
}

/// Every stuck object in scope, sorted by cause, then kind, namespace, name.
pub fn diagnose(ctx: Context<'_>, scope: &Scope) -> Vec<Finding> {
    let c = ctx.cluster;
    let mut out = Vec::new();
    let mut push = |kind: Kind,
                    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
                    v: Option<Verdict>| {
        if let Some(v) = v {
            out.push(Finding {
                kind,
                namespace: meta.namespace.clone(),
                name: meta.name.clone().unwrap_or_default(),
                age_seconds: evidence::age(meta, ctx.now),
                cause: v.cause,
                summary: v.summary,
                evidence: v.evidence,
                fix: v.fix,
            });
        }
    };
    for vs in c
        .snapshots
        .iter()
        .filter(|x| snapshots::in_scope(ctx, scope, x))
    {
        push(
            Kind::VolumeSnapshot,
            &vs.metadata,
            snapshots::snapshot(ctx, vs),
        );
    }
    for vsc in c
        .contents
        .iter()
        .filter(|x| contents::in_scope(scope, Kind::VolumeSnapshotContent, *x))
    {
        push(
            Kind::VolumeSnapshotContent,
            &vsc.metadata,
            contents::content(ctx, vsc),
        );
    }
    for vgs in c
        .group_snapshots
        .iter()
        .filter(|x| snapshots::group_in_scope(ctx, scope, x))
    {
        push(
            Kind::VolumeGroupSnapshot,
            &vgs.metadata,
            snapshots::group_snapshot(ctx, vgs),
        );
    }
    for vgsc in c
        .group_contents
        .iter()
        .filter(|x| contents::in_scope(scope, Kind::VolumeGroupSnapshotContent, *x))
    {
        push(
            Kind::VolumeGroupSnapshotContent,
            &vgsc.metadata,
            groups::group_content(ctx, vgsc),
        );
    }
    out.sort_by(|a, b| {
        (a.cause, a.kind, &a.namespace, &a.name).cmp(&(b.cause, b.kind, &b.namespace, &b.name))
    });
    out
}

/// The secrets the sidecar would read for the contents in the cluster:
/// `diagnose` asks whether each exists.
pub fn wanted_secrets(cluster: &Cluster) -> BTreeSet<(String, String)> {
    let vsc = cluster.contents.iter().map(|c| {
        let class = c
            .spec
            .volume_snapshot_class_name
            .as_ref()
            .and_then(|n| cluster.snapshot_classes.get(n));
        decide::content(c, class)
    });
    let vgsc = cluster.group_contents.iter().map(|c| {
        let class = c
            .spec
            .volume_group_snapshot_class_name
            .as_ref()
            .and_then(|n| cluster.group_classes.get(n));
        decide::group_content(c, class)
    });
    vsc.chain(vgsc)
        .filter_map(|d| match d {
            Decision::DriverCall { secret } | Decision::Delete { secret, .. } => secret,
            _ => None,
        })
        .map(|s| (s.namespace, s.name))
        .collect()
}

/// Whether `scope.object` (if any) is this object.
fn is_selected(scope: &Scope, kind: Kind, namespace: Option<&str>, name: &str) -> bool {
    match &scope.object {
        None => true,
        Some((k, n)) => {
            *k == kind
                && n == name
                && (namespace.is_none()
                    || scope.namespace.is_none()
                    || scope.namespace.as_deref() == namespace)
        }
    }
}
