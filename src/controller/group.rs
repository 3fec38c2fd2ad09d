//! The VolumeGroupSnapshotContent executor (spec D): takes a key from the
//! group queue, looks the object and its class up in the caches, asks
//! [`decide_group`] what to do and runs that [`GroupStep`]: secret GET,
//! being-created annotation, one GroupController call, status merge and
//! write, event, finalizer removal. Decisions, texts and patch documents come
//! from `reconcile`; this module only does the I/O in the order the
//! `reconcile` module docs give.
//!
//! Writes:
//! - annotations, finalizers and error statuses are JSON Patches (no
//!   resourceVersion, so they never conflict);
//! - the success status and the status clear after a delete are PUTs of the
//!   whole object to `/status` (UpdateStatus, as upstream). The base object
//!   is the one the previous write of this sync returned, else the cached
//!   (or last written) copy; no GET is made first. On a 409 the object is
//!   read once and the merge retried; a second 409 requeues the key.
//!
//! Crash safety: the group being-created annotation is written before the
//! CreateVolumeGroupSnapshot call and removed only after the status holds
//! the group handle (or after a final error), and the group name is derived
//! from the VGS UID. A process killed at any point therefore re-issues the
//! same create on restart (idempotent by name: no duplicate) and a deletion
//! cannot overtake a create that may have reached the backend (no leak).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use jiff::Timestamp;
use kube::Api;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::controller::common::{Outcome, emit_warning, fetch_secrets, run_worker};
use crate::controller::intake::enqueue_always;
use crate::controller::queue::{Backoff, WorkQueue};
use crate::controller::queue_metrics::WorkQueueMetrics;
use crate::csi::driver::{CreateGroupSnapshotArgs, GroupSnapshotInfo, SnapshotDriver};
use crate::csi::error::CsiError;
use crate::k8s::event::EventRecorder;
use crate::k8s::keys;
use crate::k8s::types::{
    Lenient, VolumeGroupSnapshotClass, VolumeGroupSnapshotContent, VolumeGroupSnapshotContentStatus,
};
use crate::k8s::watch::{Cache, Informer, WatchOptions, make_lean};
use crate::k8s::write::{self, WriteError};
use crate::reconcile::ReconcileConfig;
use crate::reconcile::filter::{Freshness, VersionStore};
use crate::reconcile::group::{
    GroupCreatePlan, GroupDeletePlan, GroupPollPlan, GroupStep, decide_group,
    group_create_stage_failure, group_poll_failure, group_requeue_after_success,
    on_group_create_error,
};
use crate::reconcile::messages::{self, DeleteStage, Failure, Warning};
use crate::reconcile::patch::{self, JsonPatch};
use crate::reconcile::status::{
    GroupObservation, group_error_patch, group_status_after_delete, merge_group_status,
};

/// The name of the VGSC work queue (the `name` label of workqueue metrics).
pub const QUEUE_NAME: &str = "csi-snapshotter-groupsnapshotcontent";

/// Kind name used in write errors and logs.
const KIND: &str = "VolumeGroupSnapshotContent";

/// The cache type of the VGSC informer.
pub type ContentCache = Cache<Lenient<VolumeGroupSnapshotContent>>;
/// The cache type of the VGSClass informer.
pub type ClassCache = Cache<Lenient<VolumeGroupSnapshotClass>>;

/// Computes the status to PUT for an object: `None` means no change (no
/// write); `Some(None)` clears the status.
type StatusFn<'a> = dyn Fn(&VolumeGroupSnapshotContent) -> Option<Option<VolumeGroupSnapshotContentStatus>>
    + Send
    + Sync
    + 'a;

/// Why a status PUT did not land.
#[derive(Debug)]
enum StatusWriteError {
    /// Two conflicts in a row: the object keeps changing; retry later.
    Conflict(WriteError),
    /// Any other failure (reported as a status update error).
    Failed(WriteError),
}

impl StatusWriteError {
    fn classify(e: WriteError) -> Self {
        if e.is_conflict() {
            StatusWriteError::Conflict(e)
        } else {
            StatusWriteError::Failed(e)
        }
    }
}

/// The VGSC executor; cheap to share behind an `Arc`.
pub struct GroupController<D> {
    driver: Arc<D>,
    core_client: kube::Client,
    api: Api<VolumeGroupSnapshotContent>,
    contents: ContentCache,
    classes: ClassCache,
    events: EventRecorder,
    config: ReconcileConfig,
    versions: Mutex<VersionStore<Arc<VolumeGroupSnapshotContent>>>,
}

impl<D> std::fmt::Debug for GroupController<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupController")
            .field("driver", &self.config.driver_name)
            .finish_non_exhaustive()
    }
}

impl<D: SnapshotDriver> GroupController<D> {
    /// A controller over the given caches. `snapshot_client` makes the VGSC
    /// writes; `core_client` the secret GETs.
    pub fn new(
        driver: Arc<D>,
        snapshot_client: kube::Client,
        core_client: kube::Client,
        contents: ContentCache,
        classes: ClassCache,
        events: EventRecorder,
        config: ReconcileConfig,
    ) -> Self {
        GroupController {
            driver,
            core_client,
            api: Api::all(snapshot_client),
            contents,
            classes,
            events,
            config,
            versions: Mutex::new(VersionStore::new()),
        }
    }

    fn versions(&self) -> MutexGuard<'_, VersionStore<Arc<VolumeGroupSnapshotContent>>> {
        self.versions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Seeds the version store with every cached VGSC, of any driver (call
    /// once the caches have synced, spec D.1).
    pub fn seed_versions(&self) {
        let mut versions = self.versions();
        self.contents.for_each(|obj| {
            let Some(content) = obj.as_ok() else { return };
            let rv = content
                .metadata
                .resource_version
                .clone()
                .unwrap_or_default();
            if let Err(e) = versions.observe(content.name(), &rv, &Arc::new(content.clone())) {
                tracing::warn!(group_content = content.name(), error = %e, "Not seeding");
            }
        });
    }

    /// The VGSC cache the workers read (for inspection: tests wait on it to
    /// know which watch events the controller has seen).
    pub fn contents(&self) -> &ContentCache {
        &self.contents
    }

    /// Whether the version store holds an entry for `name` (spec H.39).
    pub fn is_tracked(&self, name: &str) -> bool {
        self.versions().contains(name)
    }

    fn class_of(&self, content: &VolumeGroupSnapshotContent) -> Option<VolumeGroupSnapshotClass> {
        let name = content.spec.volume_group_snapshot_class_name.as_deref()?;
        self.classes.get(name)?.as_ok().cloned()
    }

    /// Starts `n` (at least one) workers on `queue`; they end when it shuts
    /// down.
    pub fn spawn_workers(
        self: &Arc<Self>,
        queue: &WorkQueue<String>,
        n: usize,
    ) -> Vec<JoinHandle<()>> {
        (0..n.max(1))
            .map(|_| {
                let me = Arc::clone(self);
                tokio::spawn(run_worker(queue.clone(), move |key| {
                    let me = Arc::clone(&me);
                    async move { me.sync(&key).await }
                }))
            })
            .collect()
    }

    /// Processes one key (spec D.1).
    pub async fn sync(&self, name: &str) -> Outcome {
        let Some(cached) = self.contents.get(name) else {
            self.versions().remove(name);
            tracing::debug!(group_content = name, "Group snapshot content is gone");
            return Outcome::Forget;
        };
        let content = match cached.as_ref() {
            Lenient::Ok(c) => c,
            Lenient::Malformed { error, .. } => {
                tracing::warn!(
                    group_content = name,
                    error = error.as_str(),
                    "Ignoring a group snapshot content that does not decode"
                );
                return Outcome::Forget;
            }
        };
        let rv = content
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let fresh = self
            .versions()
            .observe(name, &rv, &Arc::new(content.clone()));
        let content = match fresh {
            Ok(Freshness::Current) => content.clone(),
            Ok(Freshness::Stale(newer)) => {
                tracing::debug!(
                    group_content = name,
                    "Cache is behind the last write; using the written object"
                );
                (*newer).clone()
            }
            Err(e) => {
                tracing::error!(group_content = name, error = %e, "Skipping group snapshot content");
                return Outcome::Forget;
            }
        };
        let class = self.class_of(&content);
        let step = decide_group(&content, class.as_ref(), &self.config);
        tracing::debug!(
            group_content = name,
            step = step_name(&step),
            "Syncing group snapshot content"
        );
        self.execute(&content, step).await
    }

    async fn execute(&self, content: &VolumeGroupSnapshotContent, step: GroupStep) -> Outcome {
        match step {
            GroupStep::Ignore | GroupStep::Done => Outcome::Forget,
            GroupStep::RemoveBeingCreated { patch, requeue } => {
                match self.patch_main(content.name(), &patch).await {
                    Ok(_) if requeue => Outcome::Requeue,
                    Ok(_) => Outcome::Forget,
                    Err(e) => write_failed(content.name(), &e),
                }
            }
            GroupStep::Fail(failure) => self.fail(content, &failure).await,
            GroupStep::DeleteFailed(warning) => self.warn(content, &warning),
            GroupStep::Create(plan) => self.create(content, plan).await,
            GroupStep::Poll(plan) => self.poll(content, plan).await,
            GroupStep::Delete(plan) => self.delete(content, plan).await,
        }
    }

    /// Writes the error status unless it already carries this message, and
    /// then emits the event even if the write failed (spec C.11, D.6).
    async fn fail(&self, content: &VolumeGroupSnapshotContent, failure: &Failure) -> Outcome {
        let name = content.name();
        let Some(doc) =
            group_error_patch(content.status.as_ref(), &failure.message, Timestamp::now())
        else {
            tracing::debug!(group_content = name, "Same error already recorded");
            return Outcome::Requeue;
        };
        if let Err(e) = self.patch_status(name, &doc).await {
            tracing::warn!(group_content = name, error = %e, "Failed to write the error status");
        }
        emit_warning(&self.events, content, &failure.warning());
        Outcome::Requeue
    }

    fn warn(&self, content: &VolumeGroupSnapshotContent, warning: &Warning) -> Outcome {
        emit_warning(&self.events, content, warning);
        Outcome::Requeue
    }

    /// Dynamic creation (spec D.3); the input checks already ran in decide.
    async fn create(&self, content: &VolumeGroupSnapshotContent, plan: GroupCreatePlan) -> Outcome {
        let name = content.name();
        let secrets = match fetch_secrets(&self.core_client, plan.secret_ref.as_ref()).await {
            Ok(s) => s,
            Err(e) => {
                let inner = messages::credentials_error(name, e);
                let failure = group_create_stage_failure(
                    &plan,
                    messages::group_create_input_error(name, inner),
                );
                return self.fail(content, &failure).await;
            }
        };
        let mut current = content.clone();
        if let Some(mark) = &plan.mark_in_flight {
            match self.patch_main(name, mark).await {
                Ok(obj) => current = obj,
                // The object changed since the copy the mark was made from
                // (see `patch::add_annotation`): no RPC was sent, retry the
                // key from a fresh copy without reporting an error.
                Err(e) if e.is_conflict() => return write_failed(name, &e),
                Err(e) => {
                    let inner = format!(
                        "failed to add VolumeGroupSnapshotBeingCreated annotation on the content {name}: {e}"
                    );
                    return self
                        .fail(content, &group_create_stage_failure(&plan, inner))
                        .await;
                }
            }
        }
        let args = CreateGroupSnapshotArgs {
            name: plan.name.clone(),
            source_volume_ids: plan.source_volume_ids.clone(),
            parameters: plan.parameters.clone(),
            secrets,
        };
        tracing::debug!(
            group_content = name,
            group_snapshot = plan.name.as_str(),
            volumes = ?plan.source_volume_ids,
            "CreateVolumeGroupSnapshot"
        );
        let info = match self
            .driver
            .create_group_snapshot(args)
            .await
            .and_then(check_create_reply)
        {
            Ok(info) => info,
            Err(err) => {
                tracing::warn!(group_content = name, error = %err, final_error = err.is_final(), "CreateVolumeGroupSnapshot failed");
                let outcome = on_group_create_error(&plan, &err);
                let mut failure = outcome.failure;
                if let Some(remove) = &outcome.remove_being_created {
                    match self.patch_main(name, remove).await {
                        Ok(obj) => current = obj,
                        Err(e) => {
                            failure = group_create_stage_failure(
                                &plan,
                                format!(
                                    "failed to remove VolumeGroupSnapshotBeingCreated annotation from the content {name}: {e}"
                                ),
                            );
                        }
                    }
                }
                return self.fail(&current, &failure).await;
            }
        };
        tracing::info!(
            group_content = name,
            handle = info.group_snapshot_id.as_str(),
            members = info.snapshots.len(),
            ready = info.ready_to_use,
            "Group snapshot created"
        );
        match self
            .record(&current, &GroupObservation::from_create(&info))
            .await
        {
            Ok(obj) => current = obj,
            Err(StatusWriteError::Conflict(e)) => return write_failed(name, &e),
            Err(StatusWriteError::Failed(e)) => {
                let inner = messages::status_update_error(name, e);
                return self
                    .fail(&current, &group_create_stage_failure(&plan, inner))
                    .await;
            }
        }
        if current.annotation(keys::ANN_VGS_BEING_CREATED).is_some() {
            let remove = patch::remove_annotation(keys::ANN_VGS_BEING_CREATED);
            match self.patch_main(name, &remove).await {
                Ok(obj) => current = obj,
                Err(e) => {
                    let inner = format!(
                        "failed to remove VolumeGroupSnapshotBeingCreated annotation from the content {name}: {e}"
                    );
                    return self
                        .fail(&current, &group_create_stage_failure(&plan, inner))
                        .await;
                }
            }
        }
        requeue_if(group_requeue_after_success(&current))
    }

    /// GetVolumeGroupSnapshot for a pre-provisioned group (spec D.4).
    async fn poll(&self, content: &VolumeGroupSnapshotContent, plan: GroupPollPlan) -> Outcome {
        let name = content.name();
        let secrets = match fetch_secrets(&self.core_client, plan.secret_ref.as_ref()).await {
            Ok(s) => s,
            Err(e) => {
                let failure = group_poll_failure(content, messages::credentials_error(name, e));
                return self.fail(content, &failure).await;
            }
        };
        let info = match self
            .driver
            .get_group_snapshot(&plan.group_snapshot_id, &plan.snapshot_ids, &secrets)
            .await
        {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(group_content = name, handle = plan.group_snapshot_id.as_str(), error = %e, "GetVolumeGroupSnapshot failed");
                return self.fail(content, &group_poll_failure(content, e)).await;
            }
        };
        let observed = GroupObservation::from_get(&plan.status_handle, &info);
        match self.record(content, &observed).await {
            Ok(updated) => requeue_if(group_requeue_after_success(&updated)),
            Err(StatusWriteError::Conflict(e)) => write_failed(name, &e),
            Err(StatusWriteError::Failed(e)) => {
                let failure = group_poll_failure(content, messages::status_update_error(name, e));
                self.fail(content, &failure).await
            }
        }
    }

    /// Deletion (spec D.5).
    async fn delete(&self, content: &VolumeGroupSnapshotContent, plan: GroupDeletePlan) -> Outcome {
        let name = content.name();
        let mut finalizer_patch = plan.remove_finalizer;
        if let Some(del) = plan.csi_delete {
            let secrets = match fetch_secrets(&self.core_client, del.secret_ref.as_ref()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(group_content = name, error = %e, "Failed to get group snapshot credentials");
                    return self.warn(
                        content,
                        &messages::group_delete_warning(DeleteStage::Credentials),
                    );
                }
            };
            if let Err(e) = self
                .driver
                .delete_group_snapshot(&del.group_snapshot_id, &del.snapshot_ids, &secrets)
                .await
            {
                tracing::error!(group_content = name, handle = del.group_snapshot_id.as_str(), error = %e, "DeleteVolumeGroupSnapshot failed");
                return self.warn(content, &messages::group_delete_warning(DeleteStage::Rpc));
            }
            tracing::info!(
                group_content = name,
                handle = del.group_snapshot_id.as_str(),
                "Group snapshot deleted"
            );
            match self.clear_status(content).await {
                Ok(updated) => {
                    finalizer_patch =
                        patch::remove_finalizer(&updated.metadata, keys::FINALIZER_VGSC);
                }
                Err(e) if e.is_not_found() => return Outcome::Forget,
                Err(e) => {
                    tracing::error!(group_content = name, error = %e, "Failed to clear group snapshot content status");
                    return self.warn(
                        content,
                        &messages::group_delete_warning(DeleteStage::ClearStatus),
                    );
                }
            }
        }
        if let Some(doc) = finalizer_patch {
            if let Err(e) = self.patch_main(name, &doc).await {
                return write_failed(name, &e);
            }
            tracing::info!(group_content = name, "Finalizer removed");
        }
        Outcome::Forget
    }

    /// PUTs the status without handle, readiness, creation time and error
    /// (spec D.5 step 1.6); returns the updated object.
    async fn clear_status(
        &self,
        content: &VolumeGroupSnapshotContent,
    ) -> Result<VolumeGroupSnapshotContent, WriteError> {
        let clear = |obj: &VolumeGroupSnapshotContent| {
            let status = obj.status.as_ref().map(group_status_after_delete);
            (status != obj.status).then_some(status)
        };
        match self.put_status(content, &clear).await {
            Ok(obj) => Ok(obj),
            Err(StatusWriteError::Conflict(e) | StatusWriteError::Failed(e)) => Err(e),
        }
    }

    /// Merges `obs` into the status (spec D.6) and PUTs it when it changed;
    /// returns the latest object.
    async fn record(
        &self,
        base: &VolumeGroupSnapshotContent,
        obs: &GroupObservation,
    ) -> Result<VolumeGroupSnapshotContent, StatusWriteError> {
        let now = Timestamp::now();
        let merge = |obj: &VolumeGroupSnapshotContent| {
            merge_group_status(obj.status.as_ref(), obs, now).map(Some)
        };
        self.put_status(base, &merge).await
    }

    /// Computes the new status of `base` with `next` (`None`: unchanged, no
    /// write) and PUTs it. On a 409 the object is read once and `next`
    /// applied again; a second 409 is [`StatusWriteError::Conflict`].
    async fn put_status(
        &self,
        base: &VolumeGroupSnapshotContent,
        next: &StatusFn<'_>,
    ) -> Result<VolumeGroupSnapshotContent, StatusWriteError> {
        let name = base.name();
        let Some(status) = next(base) else {
            return Ok(base.clone());
        };
        let mut obj = base.clone();
        obj.status = status;
        match self.replace_status(&obj).await {
            Ok(updated) => return Ok(updated),
            Err(e) if e.is_conflict() => {
                tracing::debug!(group_content = name, error = %e, "Status write conflict; reading the object");
            }
            Err(e) => return Err(StatusWriteError::Failed(e)),
        }
        let fresh = self
            .api
            .get(name)
            .await
            .map_err(|e| StatusWriteError::Failed(WriteError::from_kube(KIND, name, e)))?;
        let Some(status) = next(&fresh) else {
            return Ok(fresh);
        };
        let mut obj = fresh;
        obj.status = status;
        self.replace_status(&obj)
            .await
            .map_err(StatusWriteError::classify)
    }

    async fn replace_status(
        &self,
        obj: &VolumeGroupSnapshotContent,
    ) -> Result<VolumeGroupSnapshotContent, WriteError> {
        let updated = write::replace_status(&self.api, obj).await?;
        self.remember(&updated);
        Ok(updated)
    }

    async fn patch_main(
        &self,
        name: &str,
        doc: &JsonPatch,
    ) -> Result<VolumeGroupSnapshotContent, WriteError> {
        let obj = write::patch_main(&self.api, name, &doc.to_value()).await?;
        self.remember(&obj);
        Ok(obj)
    }

    async fn patch_status(
        &self,
        name: &str,
        doc: &JsonPatch,
    ) -> Result<VolumeGroupSnapshotContent, WriteError> {
        let obj = write::patch_status(&self.api, name, &doc.to_value()).await?;
        self.remember(&obj);
        Ok(obj)
    }

    /// Stores the server's reply to one of our writes (spec C.1 step 3).
    fn remember(&self, obj: &VolumeGroupSnapshotContent) {
        let rv = obj.metadata.resource_version.clone().unwrap_or_default();
        // Kept as the informer keeps objects: without managedFields.
        let mut kept = obj.clone();
        make_lean(&mut kept);
        self.versions()
            .record_write(obj.name(), &rv, &Arc::new(kept));
    }
}

fn requeue_if(requeue: bool) -> Outcome {
    if requeue {
        Outcome::Requeue
    } else {
        Outcome::Forget
    }
}

fn write_failed(name: &str, e: &WriteError) -> Outcome {
    if e.is_conflict() {
        tracing::debug!(group_content = name, error = %e, "Write conflict");
    } else {
        tracing::error!(group_content = name, error = %e, "Write failed");
    }
    Outcome::Requeue
}

/// An OK reply without a group handle cannot be recorded; it is a non-final
/// error (the backend may hold a group, so the annotation stays).
fn check_create_reply(info: GroupSnapshotInfo) -> Result<GroupSnapshotInfo, CsiError> {
    if info.group_snapshot_id.is_empty() {
        return Err(CsiError::InvalidReply(
            "CreateVolumeGroupSnapshot reply has an empty group_snapshot_id".into(),
        ));
    }
    Ok(info)
}

fn step_name(step: &GroupStep) -> &'static str {
    match step {
        GroupStep::Ignore => "ignore",
        GroupStep::Done => "done",
        GroupStep::RemoveBeingCreated { .. } => "remove-being-created",
        GroupStep::Fail(_) => "fail",
        GroupStep::Delete(_) => "delete",
        GroupStep::DeleteFailed(_) => "delete-failed",
        GroupStep::Create(_) => "create",
        GroupStep::Poll(_) => "poll",
    }
}

/// How to run the group controller.
#[derive(Debug, Clone)]
pub struct GroupControllerOptions {
    /// Driver name, naming rules and `--extra-create-metadata`.
    pub config: ReconcileConfig,
    /// `--worker-threads`.
    pub workers: usize,
    /// `--retry-interval-start` / `--retry-interval-max`.
    pub backoff: Backoff,
    /// Label selector (`--node-deployment`, also applied to the classes as
    /// upstream does, spec B.5) and `--resync-period`.
    pub watch: WatchOptions,
}

impl GroupControllerOptions {
    /// Flag defaults for `driver_name`: one worker, 1 s → 5 min backoff,
    /// no selector, no resync.
    pub fn new(driver_name: impl Into<String>) -> Self {
        GroupControllerOptions {
            config: ReconcileConfig::new(driver_name),
            workers: 1,
            backoff: Backoff::default(),
            watch: WatchOptions::default(),
        }
    }
}

/// A started group controller: informers, queue and workers.
#[derive(Debug)]
pub struct RunningGroupController<D> {
    /// The executor (for inspection).
    pub controller: Arc<GroupController<D>>,
    /// The group queue.
    pub queue: WorkQueue<String>,
    informers: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl<D: SnapshotDriver> RunningGroupController<D> {
    /// Stops taking keys, waits for the workers to finish the keys in
    /// flight, then stops the informers.
    pub async fn shutdown(self) {
        self.queue.shutdown();
        for w in self.workers {
            if let Err(e) = w.await {
                tracing::error!(error = %e, "Group worker failed");
            }
        }
        for i in self.informers {
            i.abort();
        }
    }
}

/// Starts the VGSC and VGSClass informers (`groupsnapshot.storage.k8s.io/v1`)
/// feeding the queue [`QUEUE_NAME`], waits for both caches (or `stop`),
/// seeds the version store and starts `options.workers` workers. Returns
/// `None` when `stop` fired before the caches synced (no worker started).
/// Register the queue's metrics with `metrics`, if given.
#[allow(clippy::too_many_arguments)]
pub async fn start<D: SnapshotDriver>(
    driver: Arc<D>,
    snapshot_client: kube::Client,
    core_client: kube::Client,
    events: EventRecorder,
    options: GroupControllerOptions,
    metrics: Option<&WorkQueueMetrics>,
    stop: &CancellationToken,
) -> Option<RunningGroupController<D>> {
    let queue = WorkQueue::new(QUEUE_NAME, options.backoff);
    if let Some(m) = metrics {
        m.watch(&queue);
    }
    let content_informer = Informer::<Lenient<VolumeGroupSnapshotContent>>::new(
        Api::all(snapshot_client.clone()),
        options.watch.clone(),
    );
    let class_informer = Informer::<Lenient<VolumeGroupSnapshotClass>>::new(
        Api::all(snapshot_client.clone()),
        options.watch.clone(),
    );
    let contents = content_informer.cache();
    let classes = class_informer.cache();
    let informers = vec![
        tokio::spawn(content_informer.run(enqueue_always(queue.clone()))),
        tokio::spawn(class_informer.run(|_| {})),
    ];
    let synced = async {
        contents.wait_synced().await;
        classes.wait_synced().await;
    };
    tokio::select! {
        () = synced => {}
        () = stop.cancelled() => {
            tracing::error!("Group snapshot caches did not sync before shutdown; not starting group workers");
            queue.shutdown();
            for i in informers {
                i.abort();
            }
            return None;
        }
    }
    let controller = Arc::new(GroupController::new(
        driver,
        snapshot_client,
        core_client,
        contents,
        classes,
        events,
        options.config,
    ));
    controller.seed_versions();
    let workers = controller.spawn_workers(&queue, options.workers);
    tracing::info!(
        workers = options.workers.max(1),
        "Group snapshot content controller started"
    );
    Some(RunningGroupController {
        controller,
        queue,
        informers,
        workers,
    })
}

/// [`start`], then run until `stop` fires, then [`RunningGroupController::shutdown`].
#[allow(clippy::too_many_arguments)]
pub async fn run<D: SnapshotDriver>(
    driver: Arc<D>,
    snapshot_client: kube::Client,
    core_client: kube::Client,
    events: EventRecorder,
    options: GroupControllerOptions,
    metrics: Option<&WorkQueueMetrics>,
    stop: CancellationToken,
) {
    let Some(running) = start(
        driver,
        snapshot_client,
        core_client,
        events,
        options,
        metrics,
        &stop,
    )
    .await
    else {
        return;
    };
    stop.cancelled().await;
    running.shutdown().await;
}
