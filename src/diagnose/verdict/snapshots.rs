//! Verdicts on VolumeSnapshots and VolumeGroupSnapshots: no content bound
//! (the snapshot-controller's part), else the verdict of the bound content.

use super::evidence::{self, describe_event, events_for, span};
use super::{Context, Scope, Verdict, contents, groups, is_selected};
use crate::diagnose::cause::{Cause, Kind};
use crate::diagnose::objects::{SnapshotStatus, VolumeGroupSnapshot, VolumeSnapshot};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// What a verdict needs of either namespaced kind.
struct Facts<'a> {
    kind: Kind,
    content_kind: Kind,
    meta: &'a ObjectMeta,
    status: Option<&'a SnapshotStatus>,
    /// The content named by the spec (pre-provisioned) or the status.
    bound: Option<&'a str>,
    /// Dynamic, with a class named.
    class_name: Option<&'a str>,
    class_exists: bool,
}

/// The driver of a VolumeSnapshot: that of its bound content, else its class.
fn snapshot_driver<'a>(ctx: Context<'a>, vs: &VolumeSnapshot) -> Option<&'a str> {
    let c = ctx.cluster;
    let bound = bound_name(
        vs.status.as_ref(),
        vs.spec.source.volume_snapshot_content_name.as_deref(),
    );
    bound
        .and_then(|b| c.contents.iter().find(|x| x.name() == b))
        .map(|x| x.spec.driver.as_str())
        .or_else(|| {
            vs.spec
                .volume_snapshot_class_name
                .as_ref()
                .and_then(|n| c.snapshot_classes.get(n))
                .map(|k| k.driver.as_str())
        })
}

fn group_driver<'a>(ctx: Context<'a>, vgs: &VolumeGroupSnapshot) -> Option<&'a str> {
    let c = ctx.cluster;
    let bound = bound_name(
        vgs.status.as_ref(),
        vgs.spec
            .source
            .volume_group_snapshot_content_name
            .as_deref(),
    );
    bound
        .and_then(|b| c.group_contents.iter().find(|x| x.name() == b))
        .map(|x| x.spec.driver.as_str())
        .or_else(|| {
            vgs.spec
                .volume_group_snapshot_class_name
                .as_ref()
                .and_then(|n| c.group_classes.get(n))
                .map(|k| k.driver.as_str())
        })
}

fn bound_name<'a>(status: Option<&'a SnapshotStatus>, spec: Option<&'a str>) -> Option<&'a str> {
    status
        .and_then(SnapshotStatus::bound_content)
        .or(spec.filter(|s| !s.is_empty()))
}

fn ns_scope(scope: &Scope, meta: &ObjectMeta, kind: Kind, driver: Option<&str>) -> bool {
    let ns = meta.namespace.as_deref();
    scope.namespace.as_deref().is_none_or(|n| ns == Some(n))
        && scope.driver.as_deref().is_none_or(|d| driver == Some(d))
        && is_selected(scope, kind, ns, meta.name.as_deref().unwrap_or(""))
}

pub(super) fn in_scope(ctx: Context<'_>, scope: &Scope, vs: &VolumeSnapshot) -> bool {
    ns_scope(
        scope,
        &vs.metadata,
        Kind::VolumeSnapshot,
        snapshot_driver(ctx, vs),
    )
}

pub(super) fn group_in_scope(ctx: Context<'_>, scope: &Scope, vgs: &VolumeGroupSnapshot) -> bool {
    ns_scope(
        scope,
        &vgs.metadata,
        Kind::VolumeGroupSnapshot,
        group_driver(ctx, vgs),
    )
}

/// The verdict on a VolumeSnapshot, `None` when it is fine.
pub(super) fn snapshot(ctx: Context<'_>, vs: &VolumeSnapshot) -> Option<Verdict> {
    let class_name = vs
        .spec
        .volume_snapshot_class_name
        .as_deref()
        .filter(|_| vs.spec.source.persistent_volume_claim_name.is_some());
    let f = Facts {
        kind: Kind::VolumeSnapshot,
        content_kind: Kind::VolumeSnapshotContent,
        meta: &vs.metadata,
        status: vs.status.as_ref(),
        bound: bound_name(
            vs.status.as_ref(),
            vs.spec.source.volume_snapshot_content_name.as_deref(),
        ),
        class_name,
        class_exists: class_name.is_some_and(|n| ctx.cluster.snapshot_classes.contains_key(n)),
    };
    let content = f
        .bound
        .and_then(|b| ctx.cluster.contents.iter().find(|c| c.name() == b));
    let bound = content.map(|c| (c.is_ready(), contents::content(ctx, c)));
    judge(ctx, &f, bound)
}

/// The verdict on a VolumeGroupSnapshot, `None` when it is fine.
pub(super) fn group_snapshot(ctx: Context<'_>, vgs: &VolumeGroupSnapshot) -> Option<Verdict> {
    let pre = vgs
        .spec
        .source
        .volume_group_snapshot_content_name
        .as_deref();
    let class_name = vgs
        .spec
        .volume_group_snapshot_class_name
        .as_deref()
        .filter(|_| pre.is_none());
    let f = Facts {
        kind: Kind::VolumeGroupSnapshot,
        content_kind: Kind::VolumeGroupSnapshotContent,
        meta: &vgs.metadata,
        status: vgs.status.as_ref(),
        bound: bound_name(vgs.status.as_ref(), pre),
        class_name,
        class_exists: class_name.is_some_and(|n| ctx.cluster.group_classes.contains_key(n)),
    };
    let content = f
        .bound
        .and_then(|b| ctx.cluster.group_contents.iter().find(|c| c.name() == b));
    let bound = content.map(|c| (c.is_ready(), groups::group_content(ctx, c)));
    judge(ctx, &f, bound)
}

/// `bound`: the bound content's readiness and verdict, when it exists.
fn judge(
    ctx: Context<'_>,
    f: &Facts<'_>,
    bound: Option<(bool, Option<Verdict>)>,
) -> Option<Verdict> {
    let ready = f.status.and_then(|s| s.ready_to_use) == Some(true);
    let deleting = f.meta.deletion_timestamp.is_some();
    if ready && !deleting {
        return None;
    }
    let old = evidence::age(f.meta, ctx.now) >= ctx.grace;
    let name = f.meta.name.as_deref().unwrap_or("");
    let mut ev: Vec<String> = events_for(ctx.cluster, f.kind, f.meta.namespace.as_deref(), name)
        .iter()
        .take(3)
        .map(|e| describe_event(e, ctx.now))
        .collect();
    if let Some(m) = f
        .status
        .and_then(|s| s.error.as_ref())
        .and_then(|e| e.message.as_deref())
    {
        ev.insert(0, format!("status.error: {m}"));
    }
    match (f.bound, bound) {
        (Some(content), Some((_, Some(v)))) => Some(Verdict {
            summary: format!("{} {content}: {}", f.content_kind.as_str(), v.summary),
            evidence: [format!("bound to {} {content}", f.content_kind.as_str())]
                .into_iter()
                .chain(v.evidence)
                .collect(),
            ..v
        }),
        (Some(_), Some(_)) if deleting => {
            (evidence::deleting_for(f.meta, ctx.now) >= ctx.grace).then(|| {
                ev.push(format!(
                    "deletion requested {} ago; finalizers: {}",
                    span(evidence::deleting_for(f.meta, ctx.now)),
                    f.meta.finalizers.as_deref().unwrap_or_default().join(", ")
                ));
                Verdict::new(
                    Cause::DeleteBlocked,
                    "deletion waits for the snapshot-controller to remove its finalizers",
                    ev,
                    "Check that the snapshot-controller runs (its log names this object); it removes the finalizers once the content is handled.",
                )
            })
        }
        (Some(content), Some((content_ready, None))) => (old && content_ready).then(|| {
            ev.push(format!("{} {content} is ready", f.content_kind.as_str()));
            Verdict::new(
                Cause::NoContent,
                format!("the bound content is ready but the snapshot-controller has not updated this {}", f.kind.as_str()),
                ev,
                "Check that the snapshot-controller runs; it copies readiness from the content.",
            )
        }),
        (Some(content), None) => old.then(|| {
            ev.push(format!("{} {content} does not exist", f.content_kind.as_str()));
            Verdict::new(
                Cause::NoContent,
                format!("bound to {} {content}, which does not exist", f.content_kind.as_str()),
                ev,
                "For a pre-provisioned snapshot, create the content it names (with the matching volumeSnapshotRef); otherwise the content was deleted: delete and recreate this snapshot.",
            )
        }),
        (None, _) => unbound(ctx, f, old, ev),
    }
}

fn unbound(ctx: Context<'_>, f: &Facts<'_>, old: bool, mut ev: Vec<String>) -> Option<Verdict> {
    if let Some(class) = f.class_name.filter(|_| !f.class_exists) {
        ev.push(format!("{} class {class} not found", f.kind.as_str()));
        return Some(Verdict::new(
            Cause::ClassNotFound,
            format!("class {class} does not exist"),
            ev,
            format!(
                "Create the class {class}, or delete this {} and create it with an existing class.",
                f.kind.as_str()
            ),
        ));
    }
    if !old {
        return None;
    }
    let age = span(evidence::age(f.meta, ctx.now));
    let (summary, fix) = if ev.is_empty() {
        let field = match f.kind {
            Kind::VolumeGroupSnapshot => "boundVolumeGroupSnapshotContentName",
            _ => "boundVolumeSnapshotContentName",
        };
        ev.push(format!(
            "no status.{field}, no status.error and no event in {age}"
        ));
        (
            "no content bound: the snapshot-controller is not running (no event, no status)",
            "Start the snapshot-controller (and check its log and RBAC); it creates or binds the content.",
        )
    } else {
        (
            "no content bound: the snapshot-controller rejects it (see its events)",
            "Fix what the snapshot-controller's event names (claim, class, source); it retries on its own.",
        )
    };
    Some(Verdict::new(Cause::NoContent, summary, ev, fix))
}
