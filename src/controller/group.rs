//! The VolumeGroupSnapshotContent kind of the [`Pipeline`] (spec D): its
//! types, its decision ([`decide_group`]) and its GroupController RPCs.
//!
//! Writes: annotations, finalizers and error statuses are JSON Patches; the
//! success status and the status clear after a delete are PUTs of the whole
//! object to `/status` (UpdateStatus, as upstream), conflicting when the
//! object changed since the base copy.
//!
//! Crash safety: the group being-created annotation is written before the
//! CreateVolumeGroupSnapshot call and removed only after the status holds
//! the group handle (or after a final error), and the group name is derived
//! from the VGS UID. A process killed at any point therefore re-issues the
//! same create on restart (idempotent by name: no duplicate) and a deletion
//! cannot overtake a create that may have reached the backend (no leak).

use jiff::Timestamp;

use crate::controller::pipeline::{
    ControllerOptions, Kind, Pipeline, Running, StatusWrite, StepOf, require_handle,
};
use crate::csi::driver::{CreateGroupSnapshotArgs, DriverCapabilities, Secrets, SnapshotDriver};
use crate::csi::error::CsiError;
use crate::k8s::keys;
use crate::k8s::types::{
    Lenient, VolumeGroupSnapshotClass, VolumeGroupSnapshotContent, VolumeGroupSnapshotContentStatus,
};
use crate::k8s::watch::Cache;
use crate::reconcile::ReconcileConfig;
use crate::reconcile::group::{
    GroupCreatePlan, GroupCsiDelete, GroupPollPlan, decide_group, group_create_stage_failure,
    group_poll_failure, on_group_create_error,
};
use crate::reconcile::messages::{self, DeleteStage, Failure, Warning};
use crate::reconcile::patch::JsonPatch;
use crate::reconcile::status::{GroupObservation, group_error_patch, merge_group_status};

/// The name of the VGSC work queue (the `name` label of workqueue metrics).
pub const QUEUE_NAME: &str = "csi-snapshotter-groupsnapshotcontent";

/// VolumeGroupSnapshotContents (`groupsnapshot.storage.k8s.io/v1`) with
/// their VolumeGroupSnapshotClasses.
#[derive(Debug)]
pub struct GroupContents;

/// The VGSC executor.
pub type GroupController<D> = Pipeline<GroupContents, D>;
/// A started group controller.
pub type RunningGroupController<D> = Running<GroupContents, D>;
/// How to run the group controller.
pub type GroupControllerOptions = ControllerOptions;
/// The cache type of the VGSC informer.
pub type ContentCache = Cache<Lenient<VolumeGroupSnapshotContent>>;
/// The cache type of the VGSClass informer.
pub type ClassCache = Cache<Lenient<VolumeGroupSnapshotClass>>;

impl Kind for GroupContents {
    type Object = VolumeGroupSnapshotContent;
    type Class = VolumeGroupSnapshotClass;
    type Status = VolumeGroupSnapshotContentStatus;
    type CreatePlan = GroupCreatePlan;
    type PollPlan = GroupPollPlan;
    type CsiDelete = GroupCsiDelete;
    type Observation = GroupObservation;

    const QUEUE_NAME: &'static str = QUEUE_NAME;
    const CONTROLLER: &'static str = "Group snapshot content controller";
    // Upstream quirk kept: with `--node-deployment` only labelled classes
    // are visible (spec B.5).
    const CLASSES_SELECTED: bool = true;
    const BEING_CREATED: &'static str = keys::ANN_VGS_BEING_CREATED;
    const BEING_CREATED_NAME: &'static str = "VolumeGroupSnapshotBeingCreated";
    const FINALIZER: &'static str = keys::FINALIZER_VGSC;

    /// Every update is enqueued (spec D.1).
    fn should_enqueue_update(
        _: &Lenient<VolumeGroupSnapshotContent>,
        _: &Lenient<VolumeGroupSnapshotContent>,
    ) -> bool {
        true
    }

    /// Every VGSC is seeded and checked, of any driver (spec D.1); the
    /// driver filter is in [`decide_group`].
    fn tracks(
        _: &VolumeGroupSnapshotContent,
        _: Option<&VolumeGroupSnapshotClass>,
        _: &str,
    ) -> bool {
        true
    }

    fn decide(
        obj: &VolumeGroupSnapshotContent,
        class: Option<&VolumeGroupSnapshotClass>,
        _: &DriverCapabilities,
        cfg: &ReconcileConfig,
    ) -> StepOf<Self> {
        decide_group(obj, class, cfg)
    }

    fn error_patch(obj: &Self::Object, message: &str, now: Timestamp) -> Option<JsonPatch> {
        group_error_patch(obj.status.as_ref(), message, now)
    }

    fn merge(obj: &Self::Object, obs: &GroupObservation, now: Timestamp) -> Option<Self::Status> {
        merge_group_status(obj.status.as_ref(), obs, now)
    }

    fn status_write(base: &Self::Object, status: Self::Status) -> StatusWrite<Self::Object> {
        let mut obj = base.clone();
        obj.status = Some(status);
        StatusWrite::Replace(obj)
    }

    fn create_failure(plan: &GroupCreatePlan, inner: String) -> Failure {
        group_create_stage_failure(plan, inner)
    }

    fn create_input_error(name: &str, inner: String) -> String {
        messages::group_create_input_error(name, inner)
    }

    fn on_create_error(plan: &GroupCreatePlan, err: &CsiError) -> (Option<JsonPatch>, Failure) {
        let outcome = on_group_create_error(plan, err);
        (outcome.remove_being_created, outcome.failure)
    }

    async fn create<D: SnapshotDriver>(
        driver: &D,
        plan: &GroupCreatePlan,
        secrets: Secrets,
        name: &str,
    ) -> Result<GroupObservation, CsiError> {
        tracing::debug!(
            group_content = name,
            group_snapshot = plan.name.as_str(),
            volumes = ?plan.source_volume_ids,
            "CreateVolumeGroupSnapshot"
        );
        let reply = driver
            .create_group_snapshot(CreateGroupSnapshotArgs {
                name: plan.name.clone(),
                source_volume_ids: plan.source_volume_ids.clone(),
                parameters: plan.parameters.clone(),
                secrets,
            })
            .await
            .and_then(|info| {
                require_handle(
                    &info.group_snapshot_id,
                    "CreateVolumeGroupSnapshot",
                    "group_snapshot_id",
                )
                .map(|()| info)
            });
        let info = reply.inspect_err(|err| {
            tracing::warn!(group_content = name, error = %err, final_error = err.is_final(), "CreateVolumeGroupSnapshot failed");
        })?;
        tracing::info!(
            group_content = name,
            handle = info.group_snapshot_id.as_str(),
            members = info.snapshots.len(),
            ready = info.ready_to_use,
            "Group snapshot created"
        );
        Ok(GroupObservation::from_create(&info))
    }

    fn poll_failure(obj: &Self::Object, _: &GroupPollPlan, inner: String) -> Failure {
        group_poll_failure(obj, inner)
    }

    async fn poll<D: SnapshotDriver>(
        driver: &D,
        plan: &GroupPollPlan,
        secrets: &Secrets,
        name: &str,
    ) -> Result<GroupObservation, String> {
        let handle = plan.group_snapshot_id.as_str();
        match driver
            .get_group_snapshot(handle, &plan.snapshot_ids, secrets)
            .await
        {
            Ok(info) => Ok(GroupObservation::from_get(&plan.status_handle, &info)),
            Err(e) => {
                tracing::warn!(group_content = name, handle, error = %e, "GetVolumeGroupSnapshot failed");
                Err(e.to_string())
            }
        }
    }

    fn delete_warning(stage: DeleteStage) -> Warning {
        messages::group_delete_warning(stage)
    }

    async fn delete<D: SnapshotDriver>(
        driver: &D,
        del: &GroupCsiDelete,
        secrets: &Secrets,
        name: &str,
    ) -> Result<(), CsiError> {
        let handle = del.group_snapshot_id.as_str();
        let result = driver
            .delete_group_snapshot(handle, &del.snapshot_ids, secrets)
            .await;
        if let Err(e) = &result {
            tracing::error!(group_content = name, handle, error = %e, "DeleteVolumeGroupSnapshot failed");
        } else {
            tracing::info!(group_content = name, handle, "Group snapshot deleted");
        }
        result
    }
}
