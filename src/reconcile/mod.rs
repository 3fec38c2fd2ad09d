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
//!      [`content::create_stage_failure`] and
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
//!   6. requeue iff [`content::requeue_after_success`] on the last reply.
//! - `Poll(plan)`: GET the secret; call ListSnapshots (no entry →
//!   [`messages::snapshot_not_found`]), GetSnapshot, or nothing for
//!   `Trust` ([`status::SnapshotObservation::trusted`]); GET, merge with
//!   [`status::SnapshotObservation::from_poll`] using
//!   `plan.status_handle`, write; any error → `Fail` with
//!   [`content::poll_failure`]; requeue iff
//!   [`content::requeue_after_success`].
//! - `Delete(plan)`: if `plan.csi_delete`: GET its secret (error → emit
//!   [`messages::snapshot_delete_warning`]`(Credentials)`, requeue);
//!   DeleteSnapshot (error → `(Rpc)`, requeue); GET the content and PUT
//!   [`status::snapshot_status_after_delete`] to `/status` (error →
//!   `(ClearStatus)`, requeue). Then remove the finalizer: `plan.remove_finalizer`
//!   when no CSI delete ran, else [`patch::remove_finalizer`] recomputed on
//!   the object the status PUT returned (error → requeue). Forget.
//!
//! The VSC executor is [`crate::controller::content`]; it keeps the replies
//! of its own writes in the version store and, when the cache is behind
//! them, decides on the newer written object instead of dropping the key.
//!
//! VGSCs use [`group::decide_group`] and [`group::GroupStep`] the same way
//! (statuses via [`status::merge_group_status`] /
//! [`status::group_error_patch`] / [`status::group_status_after_delete`],
//! warnings via [`messages::group_delete_warning`]).
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

use naming::NamingRule;

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
