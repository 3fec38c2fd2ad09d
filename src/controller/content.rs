//! The VolumeSnapshotContent kind of the [`Pipeline`]: its types, its
//! decision ([`reconcile::content::decide`]) and its RPCs (CreateSnapshot,
//! ListSnapshots or GetSnapshot, DeleteSnapshot). Statuses are written as
//! JSON Patches conditional on the base object's resourceVersion.
//!
//! [`reconcile::content::decide`]: crate::reconcile::content::decide

use jiff::Timestamp;

use crate::controller::pipeline::{
    ControllerOptions, Kind, Pipeline, Running, StatusWrite, StepOf, require_handle,
};
use crate::csi::driver::{CreateSnapshotArgs, DriverCapabilities, Secrets, SnapshotDriver};
use crate::csi::error::CsiError;
use crate::k8s::keys;
use crate::k8s::types::{Lenient, VolumeSnapshotClass, VolumeSnapshotContent};
use crate::reconcile::ReconcileConfig;
use crate::reconcile::content::{
    CreatePlan, CsiDelete, PollMethod, PollPlan, create_stage_failure, decide, on_create_error,
    poll_failure,
};
use crate::reconcile::filter::{is_driver_match, should_enqueue_content_change};
use crate::reconcile::messages::{self, DeleteStage, Failure, Warning};
use crate::reconcile::patch::{self, JsonPatch};
use crate::reconcile::status::{SnapshotObservation, merge_snapshot_status, snapshot_error_patch};

/// The name of the VSC work queue (the `name` label of workqueue metrics).
pub const QUEUE_NAME: &str = "csi-snapshotter-content";

/// VolumeSnapshotContents (`snapshot.storage.k8s.io/v1`) with their
/// VolumeSnapshotClasses.
#[derive(Debug)]
pub struct Contents;

/// The VSC executor.
pub type ContentController<D> = Pipeline<Contents, D>;
/// A started VSC controller.
pub type RunningContentController<D> = Running<Contents, D>;
/// How to run the VSC controller.
pub type ContentControllerOptions = ControllerOptions;

/// The intake predicate for VSC updates on the lenient cache type (spec C.1):
/// malformed objects are always enqueued so their state gets logged.
pub fn should_enqueue_update(
    old: &Lenient<VolumeSnapshotContent>,
    new: &Lenient<VolumeSnapshotContent>,
) -> bool {
    match (old.as_ok(), new.as_ok()) {
        (Some(o), Some(n)) => should_enqueue_content_change(o, n),
        _ => true,
    }
}

impl Kind for Contents {
    type Object = VolumeSnapshotContent;
    type Class = VolumeSnapshotClass;
    type Status = crate::k8s::types::VolumeSnapshotContentStatus;
    type CreatePlan = CreatePlan;
    type PollPlan = PollPlan;
    type CsiDelete = CsiDelete;
    type Observation = SnapshotObservation;

    const QUEUE_NAME: &'static str = QUEUE_NAME;
    const CONTROLLER: &'static str = "Snapshot content controller";
    // Classes are never filtered (spec B.5).
    const CLASSES_SELECTED: bool = false;
    const BEING_CREATED: &'static str = keys::ANN_VS_BEING_CREATED;
    const BEING_CREATED_NAME: &'static str = "VolumeSnapshotBeingCreated";
    const FINALIZER: &'static str = keys::FINALIZER_VSC;

    fn should_enqueue_update(
        old: &Lenient<VolumeSnapshotContent>,
        new: &Lenient<VolumeSnapshotContent>,
    ) -> bool {
        should_enqueue_update(old, new)
    }

    /// Only this driver's contents are seeded and checked (spec C.1).
    fn tracks(
        obj: &VolumeSnapshotContent,
        class: Option<&VolumeSnapshotClass>,
        driver: &str,
    ) -> bool {
        is_driver_match(obj, class, driver)
    }

    fn decide(
        obj: &VolumeSnapshotContent,
        class: Option<&VolumeSnapshotClass>,
        caps: &DriverCapabilities,
        cfg: &ReconcileConfig,
    ) -> StepOf<Self> {
        decide(obj, class, caps, cfg)
    }

    fn error_patch(
        obj: &VolumeSnapshotContent,
        message: &str,
        now: Timestamp,
    ) -> Option<JsonPatch> {
        snapshot_error_patch(obj.status.as_ref(), message, now)
    }

    fn merge(
        obj: &VolumeSnapshotContent,
        obs: &SnapshotObservation,
        now: Timestamp,
    ) -> Option<Self::Status> {
        merge_snapshot_status(obj.status.as_ref(), obs, now)
    }

    fn status_write(
        base: &VolumeSnapshotContent,
        status: Self::Status,
    ) -> StatusWrite<Self::Object> {
        let rv = base
            .metadata
            .resource_version
            .as_deref()
            .unwrap_or_default();
        StatusWrite::Patch(patch::at_version(rv, patch::set_status(&status)))
    }

    fn create_failure(plan: &CreatePlan, inner: String) -> Failure {
        create_stage_failure(plan, inner)
    }

    fn create_input_error(name: &str, inner: String) -> String {
        messages::create_input_error(name, inner)
    }

    fn on_create_error(plan: &CreatePlan, err: &CsiError) -> (Option<JsonPatch>, Failure) {
        let outcome = on_create_error(plan, err);
        (outcome.remove_being_created, outcome.failure)
    }

    async fn create<D: SnapshotDriver>(
        driver: &D,
        plan: &CreatePlan,
        secrets: Secrets,
        name: &str,
    ) -> Result<SnapshotObservation, CsiError> {
        let args = CreateSnapshotArgs {
            name: plan.name.clone(),
            source_volume_id: plan.source_volume_id.clone(),
            parameters: plan.parameters.clone(),
            secrets,
        };
        tracing::debug!(
            content = name,
            snapshot = plan.name.as_str(),
            volume = plan.source_volume_id.as_str(),
            "CreateSnapshot"
        );
        let info = driver.create_snapshot(args).await?;
        require_handle(&info.snapshot_id, "CreateSnapshot", "snapshot_id")?;
        tracing::info!(
            content = name,
            handle = info.snapshot_id.as_str(),
            ready = info.ready_to_use,
            "Snapshot created"
        );
        Ok(SnapshotObservation::from_create(&info))
    }

    fn poll_failure(obj: &VolumeSnapshotContent, plan: &PollPlan, inner: String) -> Failure {
        poll_failure(obj, plan, inner)
    }

    async fn poll<D: SnapshotDriver>(
        driver: &D,
        plan: &PollPlan,
        secrets: &Secrets,
        _name: &str,
    ) -> Result<SnapshotObservation, String> {
        let id = plan.snapshot_id.as_str();
        let handle = &plan.status_handle;
        match plan.method {
            PollMethod::Trust => Ok(SnapshotObservation::trusted(handle)),
            PollMethod::ListSnapshots => match driver.list_snapshot(id, secrets).await {
                Ok(Some(info)) => Ok(SnapshotObservation::from_poll(handle, &info)),
                Ok(None) => Err(messages::snapshot_not_found(id)),
                Err(e) => Err(e.to_string()),
            },
            PollMethod::GetSnapshot => driver
                .get_snapshot(id, secrets)
                .await
                .map(|info| SnapshotObservation::from_poll(handle, &info))
                .map_err(|e| e.to_string()),
        }
    }

    fn delete_warning(stage: DeleteStage) -> Warning {
        messages::snapshot_delete_warning(stage)
    }

    async fn delete<D: SnapshotDriver>(
        driver: &D,
        del: &CsiDelete,
        secrets: &Secrets,
        name: &str,
    ) -> Result<(), CsiError> {
        let handle = del.snapshot_id.as_str();
        match driver.delete_snapshot(handle, secrets).await {
            Ok(()) => tracing::info!(content = name, handle, "Snapshot deleted"),
            Err(e) => {
                tracing::error!(content = name, handle, error = %e, "DeleteSnapshot failed");
                return Err(e);
            }
        }
        Ok(())
    }
}
