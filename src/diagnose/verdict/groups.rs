//! Verdicts on VolumeGroupSnapshotContents: the shared content rules, then
//! whether the member contents agree with the driver's reply recorded in
//! `status.volumeSnapshotInfoList`.

use std::collections::BTreeSet;

use super::contents::{Facts, judge};
use super::{Context, Verdict, evidence};
use crate::diagnose::cause::{Cause, Kind};
use crate::diagnose::decide::{self, Decision};
use crate::k8s::keys;
use crate::k8s::types::{ContentObject, VolumeGroupSnapshotContent};

/// The verdict on a VolumeGroupSnapshotContent, `None` when it is fine.
pub(super) fn group_content(ctx: Context<'_>, c: &VolumeGroupSnapshotContent) -> Option<Verdict> {
    let class = c
        .class_name()
        .and_then(|n| ctx.cluster.group_classes.get(n));
    let class_driver = class.map(|k| k.driver.as_str());
    let decision = decide::group_content(c, class);
    let facts = Facts::of(Kind::VolumeGroupSnapshotContent, c, class_driver, decision);
    let checks_members = matches!(
        facts.decision,
        Decision::Settled | Decision::DriverCall { .. }
    ) && c.metadata.deletion_timestamp.is_none();
    if checks_members && let Some(v) = members(ctx, c) {
        return Some(v);
    }
    judge(ctx, &facts)
}

/// Disagreements between the driver's reply (the info list), the spec and
/// the member VolumeSnapshotContents.
fn members(ctx: Context<'_>, c: &VolumeGroupSnapshotContent) -> Option<Verdict> {
    let status = c.status.as_ref()?;
    let infos = status
        .volume_snapshot_info_list
        .as_deref()
        .unwrap_or_default();
    let handle = c.status_handle()?;
    let reply_handles: BTreeSet<&str> = infos
        .iter()
        .filter_map(|i| i.snapshot_handle.as_deref())
        .collect();
    let reply_volumes: BTreeSet<&str> = infos
        .iter()
        .filter_map(|i| i.volume_handle.as_deref())
        .collect();
    let mut ev = Vec::new();
    if let Some(volumes) = &c.spec.source.volume_handles {
        let wanted: BTreeSet<&str> = volumes.iter().map(String::as_str).collect();
        if c.is_ready() && wanted != reply_volumes {
            ev.push(format!(
                "spec.source.volumeHandles {wanted:?}, the driver's reply covers {reply_volumes:?}"
            ));
        }
    }
    if let Some(pre) = &c.spec.source.group_snapshot_handles {
        let wanted: BTreeSet<&str> = pre
            .volume_snapshot_handles
            .iter()
            .map(String::as_str)
            .collect();
        if !infos.is_empty() && wanted != reply_handles {
            ev.push(format!(
                "spec.source.groupSnapshotHandles.volumeSnapshotHandles {wanted:?}, the driver's reply {reply_handles:?}"
            ));
        }
    }
    let mut member_handles = BTreeSet::new();
    for m in &ctx.cluster.contents {
        let claims = m.annotation(keys::ANN_VGS_HANDLE_MEMBER) == Some(handle)
            || m.status_group_handle() == Some(handle);
        if !claims {
            continue;
        }
        let h = m
            .status_handle()
            .or(m.spec.source.snapshot_handle.as_deref());
        if let Some(h) = h {
            member_handles.insert(h.to_owned());
            if !reply_handles.contains(h) {
                ev.push(format!(
                    "member content {} has snapshot handle {h}, which the driver's reply does not list",
                    m.name()
                ));
            }
        }
    }
    let settled = evidence::age(&c.metadata, ctx.now) >= ctx.grace && c.is_ready();
    if settled {
        for h in reply_handles
            .iter()
            .filter(|h| !member_handles.contains(**h))
        {
            ev.push(format!(
                "no VolumeSnapshotContent for member snapshot {h} of the driver's reply"
            ));
        }
    }
    if ev.is_empty() {
        return None;
    }
    ev.insert(
        0,
        format!(
            "group handle {handle}, {} member(s) in the driver's reply",
            infos.len()
        ),
    );
    Some(Verdict::new(
        Cause::GroupMemberInconsistent,
        "member contents or handles disagree with the driver's reply",
        ev,
        "Compare the group in the backend with status.volumeSnapshotInfoList; the snapshot-controller creates one member content per entry. Recreate the group snapshot if the backend group is incomplete.",
    ))
}
