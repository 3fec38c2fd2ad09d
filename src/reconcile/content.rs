//! `decide` for VolumeSnapshotContents (spec C.2–C.7) and the pure follow-ups
//! the executor calls after each effect. See the module docs of
//! [`crate::reconcile`] for what every [`Step`] asks the executor to do.

use std::collections::BTreeMap;

use super::filter::{is_driver_match, should_delete};
use super::messages::{self, Attempt, DeleteStage, Failure};
use super::params::MetadataKind;
use super::patch::JsonPatch;
use super::secrets::{self, AnnotationSecret, ClassSecret, SecretRef};
use super::{
    CreateErrorOutcome, CreateKind, Decision, DeletePlanOf, ReconcileConfig, create_inputs,
    delete_step, mark_in_flight, when_ready,
};
use crate::csi::driver::DriverCapabilities;
use crate::csi::error::CsiError;
use crate::k8s::keys;
use crate::k8s::types::{VolumeSnapshotClass, VolumeSnapshotContent};

/// What to do with one VSC now. Exactly one CSI call at most.
pub type Step = Decision<CreatePlan, PollPlan, CsiDelete>;

/// Everything a CreateSnapshot needs, decided from the cached object.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatePlan {
    /// First attempt (no status) or re-create: picks the failure reason.
    pub attempt: Attempt,
    /// `<prefix>-<VS UID>`.
    pub name: String,
    /// `spec.source.volumeHandle`.
    pub source_volume_id: String,
    /// Stripped class parameters plus extra metadata.
    pub parameters: BTreeMap<String, String>,
    /// Secret to GET before anything else; `None`: no secrets.
    pub secret_ref: Option<SecretRef>,
    /// Patch that adds the being-created annotation, when it is absent. Sent
    /// after the secret GET and before the RPC.
    pub mark_in_flight: Option<JsonPatch>,
}

/// How a status poll asks the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMethod {
    /// `ListSnapshots` filtered by the handle; zero entries is an error.
    ListSnapshots,
    /// `GetSnapshot` for the handle (driver advertises GET_SNAPSHOT).
    GetSnapshot,
    /// No way to ask: the handle is trusted and marked ready, no CSI call.
    Trust,
}

/// A status poll.
#[derive(Debug, Clone, PartialEq)]
pub struct PollPlan {
    /// The snapshot ID to ask about.
    pub snapshot_id: String,
    /// The handle recorded in status (spec handle first for pre-provisioned).
    pub status_handle: String,
    /// How to ask.
    pub method: PollMethod,
    /// Secret to GET first; `None`: no secrets.
    pub secret_ref: Option<SecretRef>,
}

/// The delete path.
pub type DeletePlan = DeletePlanOf<CsiDelete>;

/// One DeleteSnapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsiDelete {
    /// The handle to delete.
    pub snapshot_id: String,
    /// Secret to GET first; `None`: no secrets.
    pub secret_ref: Option<SecretRef>,
}

/// Decides the next step for a VSC (spec C.2). `class` is the cache lookup of
/// `spec.volumeSnapshotClassName`: `None` when no name is set or when the
/// named class is not in the cache (the two are told apart by the spec).
pub fn decide(
    content: &VolumeSnapshotContent,
    class: Option<&VolumeSnapshotClass>,
    caps: &DriverCapabilities,
    cfg: &ReconcileConfig,
) -> Step {
    if !is_driver_match(content, class, &cfg.driver_name) {
        return Step::Ignore;
    }
    if should_delete(content) {
        return decide_delete(content);
    }
    let is_member = content.annotation(keys::ANN_VGS_HANDLE_MEMBER).is_some();
    if content.spec.source.volume_handle.is_some() && content.status.is_none() && !is_member {
        return plan_create(content, class, cfg, Attempt::First);
    }
    if content.is_ready() {
        return when_ready(&content.metadata, keys::ANN_VS_BEING_CREATED);
    }
    check_and_update(content, class, caps, cfg)
}

/// Check-and-update (spec C.4, C.5) for a content that is not ready.
fn check_and_update(
    content: &VolumeSnapshotContent,
    class: Option<&VolumeSnapshotClass>,
    caps: &DriverCapabilities,
    cfg: &ReconcileConfig,
) -> Step {
    let spec_handle = content.spec.source.snapshot_handle.as_deref();
    let member_with_handles =
        content.status_group_handle().is_some() && content.status_handle().is_some();
    if spec_handle.is_some() || member_with_handles {
        return plan_poll(content, class, caps);
    }
    if content.annotation(keys::ANN_VGS_HANDLE_MEMBER).is_some() {
        return Step::WaitForMember;
    }
    // Dynamic and not ready. Better than upstream: with GET_SNAPSHOT and a
    // known handle, ask about that snapshot instead of re-sending the create.
    if caps.get_snapshot
        && let Some(handle) = content.status_handle()
    {
        return match secrets::from_annotations(&content.metadata, AnnotationSecret::Snapshot) {
            Ok(secret_ref) => Step::Poll(PollPlan {
                snapshot_id: handle.to_owned(),
                status_handle: handle.to_owned(),
                method: PollMethod::GetSnapshot,
                secret_ref,
            }),
            Err(e) => Step::Fail(Failure::snapshot(
                Attempt::Recheck,
                messages::get_snapshot_error(content.name(), e),
            )),
        };
    }
    plan_create(content, class, cfg, Attempt::Recheck)
}

/// What a VSC create reads.
const SNAPSHOT_CREATE: CreateKind = CreateKind {
    secret: AnnotationSecret::Snapshot,
    metadata: MetadataKind::Snapshot,
    class_resource: "volumesnapshotclass.snapshot.storage.k8s.io",
    class_kind: "VolumeSnapshotClass",
    noun: "snapshot",
    input_error: messages::create_input_error,
};

/// Builds a create plan; every input error is found here, before the
/// being-created annotation could be added (Appendix: no stuck annotation).
fn plan_create(
    content: &VolumeSnapshotContent,
    class: Option<&VolumeSnapshotClass>,
    cfg: &ReconcileConfig,
    attempt: Attempt,
) -> Step {
    let name = content.name();
    let fail = |inner: String| Step::Fail(Failure::snapshot(attempt, inner));
    let (secret_ref, parameters) = match create_inputs(
        &SNAPSHOT_CREATE,
        &content.metadata,
        content.spec.volume_snapshot_class_name.as_deref(),
        class.map(|c| c.parameters.as_ref()),
        &content.spec.volume_snapshot_ref,
        cfg,
    ) {
        Ok(inputs) => inputs,
        Err(inner) => return fail(inner),
    };
    let Some(volume_handle) = content.spec.source.volume_handle.clone() else {
        return fail(format!(
            "cannot create snapshot for content {name}: spec.source.volumeHandle is not set"
        ));
    };
    let snapshot_name = match content.snapshot_uid() {
        None => {
            return fail(messages::take_snapshot_error(
                &volume_handle,
                format!("cannot create snapshot. Snapshot content {name} not bound to a snapshot"),
            ));
        }
        Some(uid) => match cfg.snapshot_naming.name_for(uid) {
            Ok(n) => n,
            Err(e) => return fail(messages::take_snapshot_error(&volume_handle, e)),
        },
    };
    Step::Create(CreatePlan {
        attempt,
        name: snapshot_name,
        source_volume_id: volume_handle,
        parameters,
        secret_ref,
        mark_in_flight: mark_in_flight(&content.metadata, keys::ANN_VS_BEING_CREATED),
    })
}

/// Poll plan for pre-provisioned contents and filled-in group members (C.5).
fn plan_poll(
    content: &VolumeSnapshotContent,
    class: Option<&VolumeSnapshotClass>,
    caps: &DriverCapabilities,
) -> Step {
    let name = content.name();
    let fail = |inner: String| {
        Step::Fail(Failure::snapshot(
            Attempt::Recheck,
            messages::list_snapshot_error(name, inner),
        ))
    };
    let is_member = content.status_group_handle().is_some() && content.status_handle().is_some();
    let secret_ref = if is_member {
        secrets::from_annotations(&content.metadata, AnnotationSecret::Snapshot)
    } else {
        match (&content.spec.volume_snapshot_class_name, class) {
            (Some(class_name), None) => {
                return fail(format!(
                    "failed to get snapshot class {class_name}: volumesnapshotclass.snapshot.storage.k8s.io \"{class_name}\" not found"
                ));
            }
            (Some(_), Some(c)) => secrets::from_class_parameters(
                c.parameters.as_ref(),
                ClassSecret::SnapshotList,
                name,
            ),
            (None, _) => Ok(None),
        }
    };
    let secret_ref = match secret_ref {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    let status_handle = content.status_handle();
    let spec_handle = content
        .spec
        .source
        .snapshot_handle
        .as_deref()
        .filter(|s| !s.is_empty());
    let (Some(snapshot_id), Some(record)) =
        (status_handle.or(spec_handle), spec_handle.or(status_handle))
    else {
        return fail(format!("snapshot handle of content {name} is missing"));
    };
    let method = if caps.list_snapshots {
        PollMethod::ListSnapshots
    } else if caps.get_snapshot {
        PollMethod::GetSnapshot
    } else {
        PollMethod::Trust
    };
    Step::Poll(PollPlan {
        snapshot_id: snapshot_id.to_owned(),
        status_handle: record.to_owned(),
        method,
        secret_ref,
    })
}

/// The delete path (spec C.7). Members of a group are never deleted one by
/// one. Better than upstream: a pre-provisioned content with the Delete
/// policy whose status was never filled still deletes its spec handle
/// instead of leaking it.
fn decide_delete(content: &VolumeSnapshotContent) -> Step {
    let is_member = content.status_group_handle().is_some()
        || content.annotation(keys::ANN_VGS_HANDLE_MEMBER).is_some();
    let handle = content.status_handle().or(content
        .spec
        .source
        .snapshot_handle
        .as_deref()
        .filter(|s| !s.is_empty()));
    let csi_delete = match handle {
        Some(h) if content.is_delete_policy() && !is_member => {
            match secrets::from_annotations(&content.metadata, AnnotationSecret::Snapshot) {
                Ok(secret_ref) => Some(CsiDelete {
                    snapshot_id: h.to_owned(),
                    secret_ref,
                }),
                Err(_) => {
                    return Step::DeleteFailed(messages::snapshot_delete_warning(
                        DeleteStage::Credentials,
                    ));
                }
            }
        }
        _ => None,
    };
    delete_step(&content.metadata, keys::FINALIZER_VSC, csi_delete)
}

/// Classifies a CreateSnapshot error (spec C.3 step 7, C.8).
pub fn on_create_error(plan: &CreatePlan, err: &CsiError) -> CreateErrorOutcome {
    CreateErrorOutcome::new(
        err,
        keys::ANN_VS_BEING_CREATED,
        Failure::snapshot(
            plan.attempt,
            messages::take_snapshot_error(&plan.source_volume_id, err),
        ),
    )
}

/// The failure for a poll error (secret GET, RPC, no entry, status write).
pub fn poll_failure(
    content: &VolumeSnapshotContent,
    plan: &PollPlan,
    inner: impl std::fmt::Display,
) -> Failure {
    let text = match plan.method {
        PollMethod::GetSnapshot => messages::get_snapshot_error(content.name(), inner),
        PollMethod::ListSnapshots | PollMethod::Trust => {
            messages::list_snapshot_error(content.name(), inner)
        }
    };
    Failure::snapshot(Attempt::Recheck, text)
}
