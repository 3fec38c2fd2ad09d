//! The VolumeSnapshotContent kind of the [`Pipeline`]: its types, its
//! decision ([`reconcile::content::decide`]) and its RPCs (CreateSnapshot,
//! ListSnapshots or GetSnapshot, DeleteSnapshot). Statuses are written as
//! JSON Patches conditional on the base object's resourceVersion.
//!
//! [`reconcile::content::decide`]: crate::reconcile::content::decide

use crate::controller::pipeline::{Call, Kind, Pipeline, StatusWrite, require_handle};
use crate::csi::driver::{CreateSnapshotArgs, DriverCapabilities, SnapshotDriver};
use crate::csi::error::CsiError;
use crate::k8s::types::{
    Lenient, VolumeSnapshotClass, VolumeSnapshotContent, VolumeSnapshotContentStatus,
};
use crate::reconcile::content::{
    CreatePlan, CsiDelete, PollMethod, PollPlan, Step, decide, on_create_error, poll_failure,
};
use crate::reconcile::filter::{is_driver_match, should_enqueue_content_change};
use crate::reconcile::messages::{self, Failure, KindTexts};
use crate::reconcile::patch;
use crate::reconcile::status::SnapshotObservation;
use crate::reconcile::{CreateErrorOutcome, ReconcileConfig};

/// The name of the VSC work queue (the `name` label of workqueue metrics).
pub const QUEUE_NAME: &str = "csi-snapshotter-content";

/// VolumeSnapshotContents (`snapshot.storage.k8s.io/v1`) with their
/// VolumeSnapshotClasses.
#[derive(Debug)]
pub struct Contents;

/// The VSC executor.
pub type ContentController<D> = Pipeline<Contents, D>;

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
    type Step = Step;

    const QUEUE_NAME: &'static str = QUEUE_NAME;
    const TEXTS: KindTexts = messages::SNAPSHOT_TEXTS;
    // Classes are never filtered (spec B.5): the default.

    fn should_enqueue_update(
        old: &Lenient<VolumeSnapshotContent>,
        new: &Lenient<VolumeSnapshotContent>,
    ) -> bool {
        should_enqueue_update(old, new)
    }

    /// Only this driver's contents are version-checked and synced (spec C.1).
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
    ) -> Step {
        decide(obj, class, caps, cfg)
    }

    /// A JSON Patch conditional on the base's resourceVersion.
    fn status_write(
        base: &VolumeSnapshotContent,
        status: VolumeSnapshotContentStatus,
    ) -> StatusWrite<VolumeSnapshotContent> {
        let rv = base
            .metadata
            .resource_version
            .as_deref()
            .unwrap_or_default();
        StatusWrite::Patch(patch::at_version(rv, patch::set_status(&status)))
    }

    fn on_create_error(plan: &CreatePlan, err: &CsiError) -> CreateErrorOutcome {
        on_create_error(plan, err)
    }

    async fn create<D: SnapshotDriver>(
        call: Call<'_, D, CreatePlan>,
    ) -> Result<SnapshotObservation, CsiError> {
        let (plan, name) = (call.plan, call.name);
        let args = CreateSnapshotArgs {
            name: plan.name.clone(),
            source_volume_id: plan.source_volume_id.clone(),
            parameters: plan.parameters.clone(),
            secrets: call.secrets,
        };
        tracing::debug!(
            content = name,
            snapshot = plan.name.as_str(),
            volume = plan.source_volume_id.as_str(),
            "CreateSnapshot"
        );
        let info = call.driver.create_snapshot(args).await?;
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

    /// ListSnapshots, GetSnapshot, or no call at all (`Trust`).
    async fn poll<D: SnapshotDriver>(
        call: Call<'_, D, PollPlan>,
    ) -> Result<SnapshotObservation, String> {
        let (plan, secrets) = (call.plan, &call.secrets);
        let id = plan.snapshot_id.as_str();
        let handle = &plan.status_handle;
        match plan.method {
            PollMethod::Trust => Ok(SnapshotObservation::trusted(handle)),
            PollMethod::ListSnapshots => match call.driver.list_snapshot(id, secrets).await {
                Ok(Some(info)) => Ok(SnapshotObservation::from_poll(handle, &info)),
                Ok(None) => Err(messages::snapshot_not_found(id)),
                Err(e) => Err(e.to_string()),
            },
            PollMethod::GetSnapshot => call
                .driver
                .get_snapshot(id, secrets)
                .await
                .map(|info| SnapshotObservation::from_poll(handle, &info))
                .map_err(|e| e.to_string()),
        }
    }

    async fn delete<D: SnapshotDriver>(call: Call<'_, D, CsiDelete>) -> Result<(), CsiError> {
        let (handle, name) = (call.plan.snapshot_id.as_str(), call.name);
        match call.driver.delete_snapshot(handle, &call.secrets).await {
            Ok(()) => tracing::info!(content = name, handle, "Snapshot deleted"),
            Err(e) => {
                tracing::error!(content = name, handle, error = %e, "DeleteSnapshot failed");
                return Err(e);
            }
        }
        Ok(())
    }
}
