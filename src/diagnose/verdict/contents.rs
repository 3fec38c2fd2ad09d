//! Verdicts on contents (both kinds share [`judge`]): what the sidecar of
//! the content's driver would do now, checked against what the cluster
//! shows of it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::evidence::{
    self, ago, describe_event, describe_event_brief, events_for, lease_line, lease_of, span,
};
use super::{Context, Scope, Verdict, is_selected};
use crate::diagnose::cause::{Cause, Kind};
use crate::diagnose::decide::{self, Decision, InputError};
use crate::diagnose::observe::SecretAccess;
use crate::k8s::keys;
use crate::k8s::types::{ContentObject, VolumeSnapshotContent, VolumeSnapshotError};
use crate::reconcile::secrets::SecretRef;

/// What [`judge`] needs of a content of either kind.
pub(super) struct Facts<'a> {
    pub kind: Kind,
    pub meta: &'a ObjectMeta,
    pub driver: &'a str,
    /// `spec.volume(Group)SnapshotClassName`.
    pub class_name: Option<&'a str>,
    /// The driver of that class, when it exists.
    pub class_driver: Option<&'a str>,
    pub ready: bool,
    pub has_status: bool,
    /// The driver's handle is recorded in status.
    pub has_handle: bool,
    pub error: Option<&'a VolumeSnapshotError>,
    pub being_created_key: &'static str,
    pub being_deleted_key: &'static str,
    pub decision: Decision,
}

impl<'a> Facts<'a> {
    /// The facts of `c`, whose class has the driver `class_driver` and
    /// whose decision is `decision`.
    pub(super) fn of<C: ContentObject>(
        kind: Kind,
        c: &'a C,
        class_driver: Option<&'a str>,
        decision: Decision,
    ) -> Self {
        Facts {
            kind,
            meta: c.meta(),
            driver: c.driver(),
            class_name: c.class_name(),
            class_driver,
            ready: c.is_ready(),
            has_status: c.has_status(),
            has_handle: c.recorded_handle().is_some(),
            error: c.error(),
            being_created_key: C::BEING_CREATED,
            being_deleted_key: C::BEING_DELETED,
            decision,
        }
    }

    fn name(&self) -> &str {
        self.meta.name.as_deref().unwrap_or("")
    }
    fn annotation(&self, key: &str) -> bool {
        crate::k8s::types::annotation(self.meta, key).is_some()
    }
    fn error_message(&self) -> Option<&str> {
        self.error.and_then(|e| e.message.as_deref())
    }
}

/// Whether a content of either kind (`kind`) is in `scope`: its bound
/// snapshot's namespace, its driver and its name.
pub(super) fn in_scope<C: ContentObject>(scope: &Scope, kind: Kind, c: &C) -> bool {
    let ns = c.bound_ref().namespace.as_deref();
    let name = c.meta().name.as_deref().unwrap_or("");
    scope.namespace.as_deref().is_none_or(|n| ns == Some(n))
        && scope.driver.as_deref().is_none_or(|d| c.driver() == d)
        && is_selected(scope, kind, None, name)
}

/// The verdict on a VolumeSnapshotContent, `None` when it is fine.
pub(super) fn content(ctx: Context<'_>, c: &VolumeSnapshotContent) -> Option<Verdict> {
    let class = c
        .class_name()
        .and_then(|n| ctx.cluster.snapshot_classes.get(n));
    let class_driver = class.map(|k| k.driver.as_str());
    let facts = Facts::of(
        Kind::VolumeSnapshotContent,
        c,
        class_driver,
        decide::content(c, class),
    );
    if let Decision::WaitForGroup = facts.decision {
        return waiting_member(ctx, c);
    }
    judge(ctx, &facts)
}

/// A member content whose group has not filled in its status: stuck only
/// when no group content claims its group handle.
fn waiting_member(ctx: Context<'_>, c: &VolumeSnapshotContent) -> Option<Verdict> {
    let handle = c.annotation(keys::ANN_VGS_HANDLE_MEMBER).unwrap_or("");
    let claimed = ctx
        .cluster
        .group_contents
        .iter()
        .any(|g| g.status_handle() == Some(handle));
    if claimed || evidence::age(&c.metadata, ctx.now) < ctx.grace {
        return None;
    }
    Some(Verdict::new(
        Cause::GroupMemberInconsistent,
        format!("member of group snapshot {handle}, which no VolumeGroupSnapshotContent reports"),
        vec![format!(
            "annotation {}={handle}; no VolumeGroupSnapshotContent has status.volumeGroupSnapshotHandle={handle}",
            keys::ANN_VGS_HANDLE_MEMBER
        )],
        "Find the group content that created this member; if it is gone, delete this content (with deletionPolicy Retain first if the backend snapshot must be kept).",
    ))
}

/// The verdict on a content of either kind from its [`Facts`].
pub(super) fn judge(ctx: Context<'_>, f: &Facts<'_>) -> Option<Verdict> {
    let deleting = f.meta.deletion_timestamp.is_some();
    if f.ready && !deleting {
        return None;
    }
    let mut ev = vec![format!("driver {}", f.driver)];
    if let Some(m) = f.error_message() {
        let when = f
            .error
            .and_then(|e| e.time.as_ref())
            .map_or_else(String::new, |t| {
                format!(" (first reported {})", ago(t.0, ctx.now))
            });
        ev.push(format!("status.error{when}: {m}"));
    }
    let events = events_for(ctx.cluster, f.kind, None, f.name());
    let repeats_status = |e: &&k8s_openapi::api::core::v1::Event| {
        f.error_message()
            .is_some_and(|m| e.message.as_deref() == Some(m))
    };
    ev.extend(events.iter().take(3).map(|e| {
        if repeats_status(e) {
            describe_event_brief(e, ctx.now)
        } else {
            describe_event(e, ctx.now)
        }
    }));
    match &f.decision {
        Decision::NotHandled => not_handled(ctx, f, ev),
        Decision::Settled | Decision::WaitForGroup => None,
        Decision::InputError { kind, message } => Some(input_error(f, *kind, message, ev)),
        Decision::DeleteWaiting => delete_waiting(ctx, f, ev),
        Decision::DeleteCredentials(message) => {
            ev.push(format!("the sidecar reports: {message}"));
            Some(Verdict::new(
                Cause::DeleteBlocked,
                "deletion blocked: the deletion-secret annotations do not name a secret",
                ev,
                format!(
                    "Set both {} and {} to an existing Secret (or remove both) on this content.",
                    keys::ANN_DELETION_SECRET_NAME,
                    keys::ANN_DELETION_SECRET_NAMESPACE
                ),
            ))
        }
        Decision::Delete {
            calls_driver,
            secret,
        } => {
            if let Some(v) = secret_verdict(ctx, f, secret.as_ref(), &mut ev) {
                return Some(v);
            }
            (evidence::deleting_for(f.meta, ctx.now) >= ctx.grace)
                .then(|| delete_running(ctx, f, *calls_driver, &events, ev))
        }
        Decision::DriverCall { secret } => {
            if let Some(v) = secret_verdict(ctx, f, secret.as_ref(), &mut ev) {
                return Some(v);
            }
            driver_call(ctx, f, !events.is_empty(), ev)
        }
    }
}

fn not_handled(ctx: Context<'_>, f: &Facts<'_>, mut ev: Vec<String>) -> Option<Verdict> {
    if let (Some(class), Some(class_driver)) = (f.class_name, f.class_driver)
        && class_driver != f.driver
    {
        ev.push(format!("class {class} has driver {class_driver}"));
        return Some(Verdict::new(
            Cause::ClassDriverMismatch,
            format!(
                "class {class} belongs to driver {class_driver}, the content to {}: no sidecar acts on it",
                f.driver
            ),
            ev,
            "Use a class of the content's driver: delete the snapshot and create it again with the right class (a content's class cannot be changed once bound).",
        ));
    }
    (evidence::age(f.meta, ctx.now) >= ctx.grace).then(|| {
        Verdict::new(
            Cause::ContentInvalid,
            "the content has no source handle: no sidecar can act on it",
            ev,
            "Set spec.source.volumeHandle (dynamic) or spec.source.snapshotHandle (pre-provisioned), or delete the content.",
        )
    })
}

fn input_error(f: &Facts<'_>, kind: InputError, message: &str, mut ev: Vec<String>) -> Verdict {
    if f.error_message() != Some(message) {
        ev.push(format!("the sidecar's next attempt reports: {message}"));
    }
    let class = f.class_name.unwrap_or("");
    match kind {
        InputError::ClassNotFound => Verdict::new(
            Cause::ClassNotFound,
            format!("class {class} does not exist"),
            ev,
            format!(
                "Create the class {class} for driver {} (or recreate the snapshot with an existing class).",
                f.driver
            ),
        ),
        InputError::ClassParameter => Verdict::new(
            Cause::ClassInvalidParameter,
            format!("class {class} has a parameter the sidecar refuses"),
            ev,
            format!(
                "Remove or correct the parameter in class {class}: under {} only the documented secret keys are allowed; then recreate the snapshot.",
                keys::RESERVED_PARAM_PREFIX
            ),
        ),
        InputError::Content => Verdict::new(
            Cause::ContentInvalid,
            "the content itself is refused before any driver call",
            ev,
            "Correct the content as the message says (usually the snapshot-controller's binding or deletion-secret annotations).",
        ),
    }
}

/// The sidecar needs a secret: is it there, may the sidecar read it?
fn secret_verdict(
    ctx: Context<'_>,
    f: &Facts<'_>,
    secret: Option<&SecretRef>,
    ev: &mut Vec<String>,
) -> Option<Verdict> {
    let s = secret?;
    let key = (s.namespace.clone(), s.name.clone());
    let access = ctx.cluster.secrets.get(&key);
    let reported = f
        .error_message()
        .filter(|m| m.contains("failed to get secret"))
        .map(str::to_ascii_lowercase);
    let sidecar_forbidden = reported.as_deref().is_some_and(|m| m.contains("forbidden"));
    let id = format!("{}/{}", s.namespace, s.name);
    match access {
        Some(SecretAccess::Missing) => {
            ev.push(format!("secret {id}: not found"));
            Some(Verdict::new(
                Cause::SecretMissing,
                format!("secret {id} does not exist"),
                std::mem::take(ev),
                format!(
                    "Create secret {id} with the driver's credentials, or correct the class's secret parameters and recreate the snapshot."
                ),
            ))
        }
        _ if sidecar_forbidden => {
            ev.push(format!("secret {id}: the sidecar was refused (403)"));
            Some(forbidden(&id, std::mem::take(ev)))
        }
        Some(SecretAccess::Forbidden) if reported.is_some() => {
            ev.push(format!("secret {id}: this user may not read it either"));
            Some(forbidden(&id, std::mem::take(ev)))
        }
        Some(SecretAccess::Forbidden) => {
            ev.push(format!(
                "secret {id}: not readable by this user, existence unknown"
            ));
            None
        }
        Some(SecretAccess::Unknown(e)) => {
            ev.push(format!("secret {id}: {e}"));
            None
        }
        Some(SecretAccess::Exists) | None => None,
    }
}

fn forbidden(id: &str, ev: Vec<String>) -> Verdict {
    Verdict::new(
        Cause::SecretForbidden,
        format!("the sidecar may not read secret {id}"),
        ev,
        "Grant the sidecar's service account `get` on secrets (the optional rule of deploy/kubernetes/rbac.yaml), in a Role of the secret's namespace or the ClusterRole.",
    )
}

fn delete_waiting(ctx: Context<'_>, f: &Facts<'_>, mut ev: Vec<String>) -> Option<Verdict> {
    if evidence::deleting_for(f.meta, ctx.now) < ctx.grace {
        return None;
    }
    ev.push(finalizers_line(f.meta));
    if f.annotation(f.being_created_key) {
        ev.push(format!("annotation {} present", f.being_created_key));
        return Some(Verdict::new(
            Cause::DeleteBlocked,
            "deletion held back by the being-created annotation: a create may still be running in the driver",
            ev,
            "Let the create finish (check the driver); the sidecar removes the annotation when the driver answers, then deletes. Remove it by hand only once you know the driver cut no snapshot for this content.",
        ));
    }
    ev.push(format!("annotation {} absent", f.being_deleted_key));
    Some(Verdict::new(
        Cause::DeleteBlocked,
        "deletion waits for the snapshot-controller to mark the content being-deleted",
        ev,
        "Check that the snapshot-controller runs and that the bound snapshot object is being deleted or gone; it adds the annotation, then the sidecar deletes.",
    ))
}

fn delete_running(
    ctx: Context<'_>,
    f: &Facts<'_>,
    calls_driver: bool,
    events: &[&k8s_openapi::api::core::v1::Event],
    mut ev: Vec<String>,
) -> Verdict {
    ev.push(finalizers_line(f.meta));
    let failing = events.iter().find(|e| {
        e.reason
            .as_deref()
            .is_some_and(|r| r.ends_with("DeleteError"))
    });
    if let Some(e) = failing {
        let what = if calls_driver {
            "the driver's delete call is failing"
        } else {
            "the status clear or finalizer removal is failing"
        };
        return Verdict::new(
            Cause::DeleteBlocked,
            format!(
                "deletion blocked: {what} ({})",
                e.message.as_deref().unwrap_or("")
            ),
            ev,
            "Read the sidecar's log for this content (the event only says which stage failed) and fix the driver or the backend; the sidecar retries with backoff.",
        );
    }
    ev.push(lease_line(ctx.cluster, f.driver, ctx.now));
    Verdict::new(
        Cause::DeleteBlocked,
        format!(
            "deletion blocked for {}: no sidecar of driver {} has acted on it",
            span(evidence::deleting_for(f.meta, ctx.now)),
            f.driver
        ),
        ev,
        format!(
            "Start a csi-snapshotter for driver {} (check its pod and leader election); it deletes the backend snapshot and removes the finalizer.",
            f.driver
        ),
    )
}

fn driver_call(
    ctx: Context<'_>,
    f: &Facts<'_>,
    has_events: bool,
    mut ev: Vec<String>,
) -> Option<Verdict> {
    let old = evidence::age(f.meta, ctx.now) >= ctx.grace;
    let lease = lease_of(ctx.cluster, f.driver, ctx.now);
    if old && lease.as_ref().is_some_and(|l| l.expired) {
        ev.push(lease_line(ctx.cluster, f.driver, ctx.now));
        return Some(no_sidecar(f, ev));
    }
    if let Some(message) = f.error_message() {
        return Some(driver_error(f, message, ev));
    }
    if f.annotation(f.being_created_key) && !f.has_handle {
        ev.push(format!("annotation {} present", f.being_created_key));
        return Some(Verdict::new(
            Cause::CreateInFlight,
            "a create is running in the driver, or was interrupted and will be resumed",
            ev,
            "Wait: the sidecar repeats the create (idempotent by name) until the driver answers. If it lasts, check the driver's log and the sidecar's --timeout.",
        ));
    }
    if !old {
        return None;
    }
    if f.has_handle {
        return old.then(|| {
            Verdict::new(
                Cause::DriverNotReady,
                "the driver has the snapshot but reports it not ready to use yet",
                ev,
                "Usually nothing: the sidecar keeps asking until the driver reports it ready (uploads can take long). If it never does, check the backend.",
            )
        });
    }
    if !f.has_status && !has_events {
        ev.push(format!(
            "no status and no event in {}",
            span(evidence::age(f.meta, ctx.now))
        ));
        ev.push(lease_line(ctx.cluster, f.driver, ctx.now));
        return Some(no_sidecar(f, ev));
    }
    Some(Verdict::new(
        Cause::DriverNotReady,
        "the sidecar has a status but no handle and no error yet",
        ev,
        "Usually nothing: the next attempt fills the handle or reports an error.",
    ))
}

fn no_sidecar(f: &Facts<'_>, ev: Vec<String>) -> Verdict {
    Verdict::new(
        Cause::NoSidecar,
        format!("no csi-snapshotter handles driver {}", f.driver),
        ev,
        format!(
            "Deploy or restart the csi-snapshotter sidecar beside driver {} (its log says why it does not lead or does not start).",
            f.driver
        ),
    )
}

fn driver_error(f: &Facts<'_>, message: &str, mut ev: Vec<String>) -> Verdict {
    let in_flight = f.annotation(f.being_created_key);
    let retry = match decide::grpc_code_in(message) {
        Some((code, true)) => format!(
            "gRPC {code} is final: the driver refuses the request as it is; the sidecar still retries with backoff"
        ),
        Some((code, false)) => {
            format!("gRPC {code} is transient: the sidecar retries with backoff")
        }
        None => "the sidecar retries with backoff".to_owned(),
    };
    ev.push(format!(
        "{retry} (at most --retry-interval-max apart, 5m by default; an identical failure writes no new status and no new event, so the times above are those of its first occurrence)"
    ));
    if in_flight {
        ev.push(format!(
            "annotation {} present: the create may still be running",
            f.being_created_key
        ));
    }
    Verdict::new(
        Cause::DriverError,
        format!("the driver failed: {}", rpc_part(message)),
        ev,
        "Fix what the driver's message names (class parameters, volume, backend); the next retry picks it up. The driver's own log has the detail.",
    )
}

fn finalizers_line(meta: &ObjectMeta) -> String {
    format!(
        "deletion requested; finalizers: {}",
        meta.finalizers.as_deref().unwrap_or_default().join(", ")
    )
}

/// The driver's own words: from `rpc error:` on (without the closing
/// quote of the sidecar's wrapping), else the first line.
fn rpc_part(s: &str) -> &str {
    match s.find("rpc error:") {
        Some(i) => s[i..].trim_end_matches('"'),
        None => s.lines().next().unwrap_or(""),
    }
}
