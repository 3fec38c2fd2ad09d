//! Pure decisions: given what was observed, say what to do next. No I/O, no
//! async; every function here is table-tested.
//!
//! # How the executor uses this module
//!
//! For a VSC key (C.1): look the object up in the cache (gone → remove it
//! from the [`filter::VersionStore`], done); check
//! [`filter::is_driver_match`] (false → forget); pass the version store;
//! then call [`content::decide`] with the cached object, the cached class
//! named by `spec.volumeSnapshotClassName` (`None` if unset or not found),
//! the driver capabilities and the [`ReconcileConfig`]. Run the returned
//! [`content::Step`]:
//!
//! - `Ignore`, `Done`: forget the key.
//! - `RemoveBeingCreated { patch, requeue }`: send `patch` to the main
//!   resource; error → requeue; else requeue iff `requeue`.
//! - `WaitForMember`: no call, no write; requeue with backoff.
//! - `Fail(failure)`: [`status::snapshot_error_patch`] on the cached status
//!   (`None` → nothing at all, not even the event); else send it to the
//!   `/status` subresource and emit `failure.warning()` even if the patch
//!   failed; requeue.
//! - `DeleteFailed(warning)`: emit it; requeue. No status write.
//! - `Create(plan)`, in order, stopping at the first error:
//!   1. GET `plan.secret_ref` (error → `Fail` with
//!      [`messages::Failure::snapshot`] for the plan's attempt and
//!      [`messages::create_input_error`]). The annotation is not added yet.
//!   2. send `plan.mark_in_flight` if any (error → `Fail`).
//!   3. CreateSnapshot. Error → [`content::on_create_error`]: send its
//!      `remove_being_created` if any (a failure of that patch becomes the
//!      reported error), then `Fail(outcome.failure)`.
//!   4. GET the content, [`status::merge_snapshot_status`] with
//!      [`status::SnapshotObservation::from_create`]; write with
//!      [`patch::set_status`] when `Some` (error →
//!      [`messages::status_update_error`] via `Fail`).
//!   5. send [`patch::remove_annotation`] of the being-created key (it is
//!      present: either it was there or step 2 added it).
//!   6. requeue iff [`requeue_after_success`] on the last reply.
//! - `Poll(plan)`: GET the secret; call ListSnapshots (no entry →
//!   [`messages::snapshot_not_found`]), GetSnapshot, or nothing for
//!   `Trust` ([`status::SnapshotObservation::trusted`]); GET, merge with
//!   [`status::SnapshotObservation::from_poll`] using
//!   `plan.status_handle`, write; any error → `Fail` with
//!   [`content::poll_failure`]; requeue iff
//!   [`requeue_after_success`].
//! - `Delete(plan)`: if `plan.csi_delete`: GET its secret (error → emit
//!   [`messages::snapshot_delete_warning`]`(Credentials)`, requeue);
//!   DeleteSnapshot (error → `(Rpc)`, requeue). Then send
//!   `plan.remove_finalizer` (error → requeue; the retry may repeat the
//!   DeleteSnapshot, which succeeds for an ID that is already gone). No
//!   status write: a delete is one write. Forget.
//!
//! The executor is [`crate::controller::pipeline`]; it keeps the replies
//! of its own writes in the version store and, when the cache is behind
//! them, decides on the newer written object instead of dropping the key.
//!
//! VGSCs use [`group::decide_group`] and [`group::GroupStep`] the same way
//! (statuses via [`status::merge_group_status`] /
//! [`status::group_error_patch`], warnings via
//! [`messages::group_delete_warning`]).
//!
//! Every step makes at most one CSI call; input errors are decided before
//! the being-created annotation is added, so an error that sent no RPC can
//! never leave the annotation behind to block deletion.

pub mod content;
pub mod filter;
pub mod group;
pub mod messages;
pub mod naming;
pub mod params;
pub mod patch;
pub mod secrets;
pub mod status;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use messages::{Attempt, Failure, Warning};
use naming::NamingRule;
use params::{ExtraMetadata, MetadataKind, create_parameters};
use patch::JsonPatch;
use secrets::{AnnotationSecret, SecretRef};

use crate::csi::error::CsiError;
use crate::k8s::keys;
use crate::k8s::types::{ContentObject, annotation};

/// What to do with one content of either kind now; at most one CSI call.
/// `C`, `P` and `X` are the kind's create plan, poll plan and CSI delete
/// ([`content::Step`] and [`group::GroupStep`] name the two instances).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<C, P, X> {
    /// Not this driver's content: forget the key, no requeue, no writes.
    Ignore,
    /// Nothing to do (ready, no leftover annotation): forget the key.
    Done,
    /// Ready with a leftover being-created annotation: send `patch`; on error
    /// requeue. Afterwards requeue only if `requeue` (a deletion is waiting
    /// behind the annotation, upstream issue 1388).
    RemoveBeingCreated {
        /// The annotation removal.
        patch: JsonPatch,
        /// Requeue after a successful removal.
        requeue: bool,
    },
    /// A group member whose status the controller has not filled yet: no
    /// call, no write; requeue with backoff (VSCs only).
    WaitForMember,
    /// An input error found before any effect: write the error status and
    /// event (deduplicated), requeue with backoff.
    Fail(Failure),
    /// Deletion was requested (spec C.7, D.5).
    Delete(DeletePlanOf<X>),
    /// Event-only failure of the delete path (no status write); requeue.
    DeleteFailed(Warning),
    /// The create RPC, first attempt or re-create for polling (C.3, C.4, D.3).
    Create(C),
    /// Status poll of an existing handle (C.5, D.4).
    Poll(P),
}

impl<C, P, X> Decision<C, P, X> {
    /// A short name of the step, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Ignore => "ignore",
            Decision::Done => "done",
            Decision::RemoveBeingCreated { .. } => "remove-being-created",
            Decision::WaitForMember => "wait-for-member",
            Decision::Fail(_) => "fail",
            Decision::Delete(_) => "delete",
            Decision::DeleteFailed(_) => "delete-failed",
            Decision::Create(_) => "create",
            Decision::Poll(_) => "poll",
        }
    }
}

/// The plans a [`Decision`] carries, named for code generic over the kinds.
pub trait Steps {
    /// The create plan.
    type Create: CreateMark + Send + Sync;
    /// The poll plan.
    type Poll: PlanSecret + Send + Sync;
    /// The CSI delete.
    type Delete: PlanSecret + Send + Sync;
}

impl<C, P, X> Steps for Decision<C, P, X>
where
    C: CreateMark + Send + Sync,
    P: PlanSecret + Send + Sync,
    X: PlanSecret + Send + Sync,
{
    type Create = C;
    type Poll = P;
    type Delete = X;
}

/// The delete path of either kind.
#[derive(Debug, Clone, PartialEq)]
pub struct DeletePlanOf<X> {
    /// The CSI delete to make first, if any.
    pub csi_delete: Option<X>,
    /// Finalizer removal to send last (after a successful delete); `None`
    /// when the finalizer is absent.
    pub remove_finalizer: Option<JsonPatch>,
}

/// The step for a ready object: remove the leftover being-created
/// annotation `key` if present (requeue when a deletion waits), else done.
fn when_ready<C, P, X>(meta: &ObjectMeta, key: &str) -> Decision<C, P, X> {
    match annotation(meta, key) {
        Some(_) => Decision::RemoveBeingCreated {
            patch: patch::remove_annotation(key),
            requeue: meta.deletion_timestamp.is_some(),
        },
        None => Decision::Done,
    }
}

/// The delete step: nothing to do when there is neither a CSI delete nor a
/// finalizer to remove.
fn delete_step<C, P, X>(
    meta: &ObjectMeta,
    finalizer: &str,
    csi_delete: Option<X>,
) -> Decision<C, P, X> {
    let remove_finalizer = patch::remove_finalizer(meta, finalizer);
    if csi_delete.is_none() && remove_finalizer.is_none() {
        return Decision::Done;
    }
    Decision::Delete(DeletePlanOf {
        csi_delete,
        remove_finalizer,
    })
}

/// How a kind names what its create reads, in texts and keys.
struct CreateKind {
    /// The credentials annotations.
    secret: AnnotationSecret,
    /// The extra metadata keys.
    metadata: MetadataKind,
    /// `<kind>.<group>` of the class, as the API's not-found text names it.
    class_resource: &'static str,
    /// The class kind.
    class_kind: &'static str,
    /// `snapshot` or `group snapshot`.
    noun: &'static str,
    /// Wraps an input error (`create_input_error` or its group twin).
    input_error: fn(&str, String) -> String,
}

/// The credentials and parameters of a create (spec C.3, D.3) from the
/// object's metadata, the class lookup (`None`: not in the cache) and the
/// reference to the bound snapshot; `Err` is the failure text.
fn create_inputs(
    kind: &CreateKind,
    meta: &ObjectMeta,
    class_name: Option<&str>,
    class: Option<Option<&BTreeMap<String, String>>>,
    bound: &ObjectReference,
    cfg: &ReconcileConfig,
) -> Result<(Option<SecretRef>, BTreeMap<String, String>), String> {
    let name = meta.name.as_deref().unwrap_or("");
    let input_error = |inner: String| (kind.input_error)(name, inner);
    let class_parameters = match (class_name, class) {
        (Some(_), Some(parameters)) => parameters,
        (Some(class_name), None) => {
            let resource = kind.class_resource;
            return Err(input_error(format!(
                "{resource} \"{class_name}\" not found"
            )));
        }
        (None, _) => {
            let (noun, class_kind) = (kind.noun, kind.class_kind);
            return Err(input_error(format!(
                "cannot create {noun} for content {name}: no {class_kind} is named"
            )));
        }
    };
    let secret_ref =
        secrets::from_annotations(meta, kind.secret).map_err(|e| input_error(e.to_string()))?;
    let extra = cfg.extra_create_metadata.then(|| {
        (
            kind.metadata,
            ExtraMetadata {
                snapshot_name: bound.name.as_deref().unwrap_or(""),
                snapshot_namespace: bound.namespace.as_deref().unwrap_or(""),
                content_name: name,
            },
        )
    });
    let parameters =
        create_parameters(class_parameters, extra).map_err(messages::parameters_error)?;
    Ok((secret_ref, parameters))
}

/// What the executor reads from a plan of either kind before its CSI call.
pub trait PlanSecret {
    /// The secret to GET first; `None`: no secrets.
    fn secret_ref(&self) -> Option<&SecretRef>;
}

/// What the executor reads from a create plan of either kind besides its
/// secret.
pub trait CreateMark: PlanSecret {
    /// The patch adding the being-created annotation, when it is absent.
    fn mark_in_flight(&self) -> Option<&JsonPatch>;
    /// First attempt or re-create: picks the failure reason.
    fn attempt(&self) -> Attempt;
}

/// [`PlanSecret`] (and [`CreateMark`] for the create plans) of the plan
/// types, which name both fields alike.
macro_rules! plan_fields {
    (creates: $($create:ty),*; others: $($other:ty),*) => {
        $(impl CreateMark for $create {
            fn mark_in_flight(&self) -> Option<&JsonPatch> {
                self.mark_in_flight.as_ref()
            }
            fn attempt(&self) -> Attempt {
                self.attempt
            }
        })*
        $(impl PlanSecret for $other {
            fn secret_ref(&self) -> Option<&SecretRef> {
                self.secret_ref.as_ref()
            }
        })*
    };
}

plan_fields!(
    creates: content::CreatePlan, group::GroupCreatePlan;
    others: content::CreatePlan, group::GroupCreatePlan, content::PollPlan, group::GroupPollPlan,
        content::CsiDelete, group::GroupCsiDelete
);

/// What to do after the create RPC of either kind failed.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateErrorOutcome {
    /// Remove the being-created annotation (final error); a failure of this
    /// patch replaces the reported error.
    pub remove_being_created: Option<JsonPatch>,
    /// The error status and event to write.
    pub failure: Failure,
}

impl CreateErrorOutcome {
    /// Final errors release the deletion block (the being-created annotation
    /// `key` goes), non-final ones keep it; both report `failure`.
    fn new(err: &CsiError, key: &str, failure: Failure) -> Self {
        CreateErrorOutcome {
            remove_being_created: err.is_final().then(|| patch::remove_annotation(key)),
            failure,
        }
    }
}

/// Whether to requeue after a successful create or poll, given the object the
/// last write returned: while not ready, and also when a deletion is waiting
/// so it is not stalled by the filtered annotation-removal event (#1388).
pub fn requeue_after_success<O: ContentObject>(updated: &O) -> bool {
    !updated.is_ready() || updated.meta().deletion_timestamp.is_some()
}

/// The patch adding the being-created annotation `key`, when it is absent.
fn mark_in_flight(meta: &ObjectMeta, key: &str) -> Option<JsonPatch> {
    annotation(meta, key)
        .is_none()
        .then(|| patch::add_annotation(meta, key, keys::ANN_VALUE_YES))
}

/// A map of owned strings from `pairs`, for tests.
#[cfg(test)]
pub(crate) fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The flag values the decisions depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileConfig {
    /// Driver name from GetPluginInfo.
    pub driver_name: String,
    /// `--snapshot-name-prefix` / `--snapshot-name-uuid-length`.
    pub snapshot_naming: NamingRule,
    /// `--groupsnapshot-name-prefix` / `--groupsnapshot-name-uuid-length`.
    pub group_snapshot_naming: NamingRule,
    /// `--extra-create-metadata`.
    pub extra_create_metadata: bool,
}

impl ReconcileConfig {
    /// Defaults of the flags for a driver.
    pub fn new(driver_name: impl Into<String>) -> Self {
        ReconcileConfig {
            driver_name: driver_name.into(),
            snapshot_naming: NamingRule::snapshot_default(),
            group_snapshot_naming: NamingRule::group_default(),
            extra_create_metadata: false,
        }
    }
}
