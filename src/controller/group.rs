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

use crate::controller::pipeline::{Call, Kind, Pipeline, StatusWrite, require_handle};
use crate::csi::driver::{CreateGroupSnapshotArgs, DriverCapabilities, SnapshotDriver};
use crate::csi::error::CsiError;
use crate::k8s::types::{
    Lenient, VolumeGroupSnapshotClass, VolumeGroupSnapshotContent, VolumeGroupSnapshotContentStatus,
};
use crate::k8s::watch::Cache;
use crate::reconcile::group::{
    GroupCreatePlan, GroupCsiDelete, GroupPollPlan, GroupStep, decide_group, group_poll_failure,
    on_group_create_error,
};
use crate::reconcile::messages::{self, Failure, KindTexts};
use crate::reconcile::status::GroupObservation;
use crate::reconcile::{CreateErrorOutcome, ReconcileConfig};

/// The name of the VGSC work queue (the `name` label of workqueue metrics).
pub const QUEUE_NAME: &str = "csi-snapshotter-groupsnapshotcontent";

/// VolumeGroupSnapshotContents (`groupsnapshot.storage.k8s.io/v1`) with
/// their VolumeGroupSnapshotClasses.
#[derive(Debug)]
pub struct GroupContents;

/// The VGSC executor.
pub type GroupController<D> = Pipeline<GroupContents, D>;
/// The cache type of the VGSC informer.
pub type ContentCache = Cache<Lenient<VolumeGroupSnapshotContent>>;
/// The cache type of the VGSClass informer.
pub type ClassCache = Cache<Lenient<VolumeGroupSnapshotClass>>;

impl Kind for GroupContents {
    type Object = VolumeGroupSnapshotContent;
    type Step = GroupStep;

    const QUEUE_NAME: &'static str = QUEUE_NAME;
    const TEXTS: KindTexts = messages::GROUP_TEXTS;
    // Upstream quirk kept: with `--node-deployment` only labelled classes
    // are visible (spec B.5).
    const CLASSES_SELECTED: bool = true;

    // Every update is enqueued, and every VGSC is version-checked, of any
    // driver (spec D.1; the defaults): the driver filter is in
    // [`decide_group`].

    fn decide(
        obj: &VolumeGroupSnapshotContent,
        class: Option<&VolumeGroupSnapshotClass>,
        _: &DriverCapabilities,
        cfg: &ReconcileConfig,
    ) -> GroupStep {
        decide_group(obj, class, cfg)
    }

    /// A PUT of the whole object (UpdateStatus, as upstream).
    fn status_write(
        base: &VolumeGroupSnapshotContent,
        status: VolumeGroupSnapshotContentStatus,
    ) -> StatusWrite<VolumeGroupSnapshotContent> {
        let mut obj = base.clone();
        obj.status = Some(status);
        StatusWrite::Replace(obj)
    }

    fn on_create_error(plan: &GroupCreatePlan, err: &CsiError) -> CreateErrorOutcome {
        on_group_create_error(plan, err)
    }

    async fn create<D: SnapshotDriver>(
        call: Call<'_, D, GroupCreatePlan>,
    ) -> Result<GroupObservation, CsiError> {
        let plan = call.plan;
        tracing::debug!(
            group_content = call.name,
            group_snapshot = plan.name.as_str(),
            volumes = ?plan.source_volume_ids,
            "CreateVolumeGroupSnapshot"
        );
        let reply = call
            .driver
            .create_group_snapshot(CreateGroupSnapshotArgs {
                name: plan.name.clone(),
                source_volume_ids: plan.source_volume_ids.clone(),
                parameters: plan.parameters.clone(),
                secrets: call.secrets,
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
            tracing::warn!(group_content = call.name, error = %err, final_error = err.is_final(), "CreateVolumeGroupSnapshot failed");
        })?;
        tracing::info!(
            group_content = call.name,
            handle = info.group_snapshot_id.as_str(),
            members = info.snapshots.len(),
            ready = info.ready_to_use,
            "Group snapshot created"
        );
        Ok(GroupObservation::from_create(&info))
    }

    fn poll_failure(obj: &VolumeGroupSnapshotContent, _: &GroupPollPlan, inner: String) -> Failure {
        group_poll_failure(obj, inner)
    }

    /// GetVolumeGroupSnapshot.
    async fn poll<D: SnapshotDriver>(
        call: Call<'_, D, GroupPollPlan>,
    ) -> Result<GroupObservation, String> {
        let plan = call.plan;
        let handle = plan.group_snapshot_id.as_str();
        let reply = call
            .driver
            .get_group_snapshot(handle, &plan.snapshot_ids, &call.secrets);
        match reply.await {
            Ok(info) => Ok(GroupObservation::from_get(&plan.status_handle, &info)),
            Err(e) => {
                tracing::warn!(group_content = call.name, handle, error = %e, "GetVolumeGroupSnapshot failed");
                Err(e.to_string())
            }
        }
    }

    async fn delete<D: SnapshotDriver>(call: Call<'_, D, GroupCsiDelete>) -> Result<(), CsiError> {
        let del = call.plan;
        let handle = del.group_snapshot_id.as_str();
        let result = call
            .driver
            .delete_group_snapshot(handle, &del.snapshot_ids, &call.secrets)
            .await;
        if let Err(e) = &result {
            tracing::error!(group_content = call.name, handle, error = %e, "DeleteVolumeGroupSnapshot failed");
        } else {
            tracing::info!(group_content = call.name, handle, "Group snapshot deleted");
        }
        result
    }
}
