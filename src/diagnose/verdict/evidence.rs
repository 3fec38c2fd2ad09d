//! Evidence read around an object: its events, the Lease of its driver's
//! sidecar, ages and times in a form an operator can paste.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::super::cause::Kind;
use super::super::observe::Cluster;
use crate::leader::lease_name;

/// When an event last happened (lastTimestamp, else eventTime, else
/// firstTimestamp, else its creation).
pub fn event_time(e: &Event) -> Option<Timestamp> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.first_timestamp.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Events about one object, newest first.
pub fn events_for<'a>(
    cluster: &'a Cluster,
    kind: Kind,
    namespace: Option<&str>,
    name: &str,
) -> Vec<&'a Event> {
    let mut out: Vec<&Event> = cluster
        .events
        .iter()
        .filter(|e| {
            let o = &e.involved_object;
            o.kind.as_deref() == Some(kind.as_str())
                && o.name.as_deref() == Some(name)
                && o.namespace.as_deref().filter(|n| !n.is_empty()) == namespace
        })
        .collect();
    out.sort_by_key(|e| std::cmp::Reverse(event_time(e)));
    out
}

/// One event as an evidence line: `Warning Reason (xN, last 2m ago, from
/// "component"): message`.
pub fn describe_event(e: &Event, now: Timestamp) -> String {
    let count = e.count.unwrap_or(1);
    let when = event_time(e).map_or_else(|| "unknown time".to_owned(), |t| ago(t, now));
    let from = e
        .source
        .as_ref()
        .and_then(|s| s.component.clone())
        .or(e.reporting_component.clone())
        .unwrap_or_else(|| "unknown component".to_owned());
    format!(
        "event {} {} (x{count}, last {when}, from \"{from}\"): {}",
        e.type_.as_deref().unwrap_or("Normal"),
        e.reason.as_deref().unwrap_or(""),
        e.message.as_deref().unwrap_or("")
    )
}

/// An event whose message is already shown (as `status.error`): type,
/// reason, count and time only.
pub fn describe_event_brief(e: &Event, now: Timestamp) -> String {
    let count = e.count.unwrap_or(1);
    let when = event_time(e).map_or_else(|| "unknown time".to_owned(), |t| ago(t, now));
    format!(
        "event {} {} (x{count}, last {when}): same message as status.error",
        e.type_.as_deref().unwrap_or("Normal"),
        e.reason.as_deref().unwrap_or("")
    )
}

/// `37s ago`, `5m ago`, `2h ago`, `3d ago`.
pub fn ago(t: Timestamp, now: Timestamp) -> String {
    format!("{} ago", span(seconds_between(t, now)))
}

/// Whole seconds from `from` to `to` (0 when `to` is earlier).
pub fn seconds_between(from: Timestamp, to: Timestamp) -> i64 {
    (to.as_second() - from.as_second()).max(0)
}

/// A short duration: `37s`, `5m`, `2h`, `3d`.
pub fn span(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Seconds since the object was created (0 when unknown).
pub fn age(meta: &ObjectMeta, now: Timestamp) -> i64 {
    meta.creation_timestamp
        .as_ref()
        .map_or(0, |t| seconds_between(t.0, now))
}

/// Seconds since deletion was asked for (0 when not deleting).
pub fn deleting_for(meta: &ObjectMeta, now: Timestamp) -> i64 {
    meta.deletion_timestamp
        .as_ref()
        .map_or(0, |t| seconds_between(t.0, now))
}

/// What the leader-election Lease of a driver's sidecar says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// `namespace/name`.
    pub name: String,
    /// `spec.holderIdentity` (empty: released).
    pub holder: String,
    /// When the holder last renewed.
    pub renewed: Option<Timestamp>,
    /// Whether the holder missed its renewal (or there is none).
    pub expired: bool,
}

impl LeaseView {
    /// One evidence line.
    pub fn describe(&self, now: Timestamp) -> String {
        let renewed = self.renewed.map_or_else(
            || "never renewed".to_owned(),
            |t| format!("renewed {}", ago(t, now)),
        );
        let holder = if self.holder.is_empty() {
            "no holder".to_owned()
        } else {
            format!("held by {}", self.holder)
        };
        let state = if self.expired { ", expired" } else { "" };
        format!("Lease {}: {holder}, {renewed}{state}", self.name)
    }
}

/// The Lease of `driver`'s sidecar in any namespace (its namespace is the
/// sidecar's), when leader election is used.
pub fn lease_of(cluster: &Cluster, driver: &str, now: Timestamp) -> Option<LeaseView> {
    let wanted = lease_name(driver);
    let lease: &Lease = cluster
        .leases
        .iter()
        .find(|l| l.metadata.name.as_deref() == Some(wanted.as_str()))?;
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    let renewed = spec.renew_time.map(|t| t.0);
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    let expired =
        holder.is_empty() || renewed.is_none_or(|t| seconds_between(t, now) > duration.max(0));
    Some(LeaseView {
        name: format!(
            "{}/{wanted}",
            lease.metadata.namespace.as_deref().unwrap_or("")
        ),
        holder,
        renewed,
        expired,
    })
}

/// The evidence line about a driver's Lease: what it says, or that there is
/// none under its name.
pub fn lease_line(cluster: &Cluster, driver: &str, now: Timestamp) -> String {
    match lease_of(cluster, driver, now) {
        Some(l) => l.describe(now),
        None => format!(
            "no Lease {} in any namespace (expected when leader election is off)",
            lease_name(driver)
        ),
    }
}
