//! The VolumeSnapshotContent executor: takes a key from the queue, looks the
//! object and its class up in the caches, asks [`reconcile::content::decide`]
//! what to do and runs that [`Step`] (secret GET, annotation patch, one CSI
//! call, status merge and write, event, finalizer removal). All decisions,
//! texts and patch documents come from `reconcile`; this module only does
//! the I/O in the order `reconcile`'s module docs give.
//!
//! Invariant (upstream issue 1388): a delete that arrives while a create is in
//! flight ends with the backend snapshot deleted. The being-created
//! annotation holds the delete back; once the create is done, the object the
//! last write returned is kept in the version store and the key is requeued
//! while a deletion is pending, so the next pass sees the annotation gone and
//! deletes, even if the watch has not delivered that write yet.
//!
//! [`reconcile::content::decide`]: crate::reconcile::content::decide

use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use kube::Api;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::controller::common::{Outcome, SecretError, emit_warning, fetch_secrets, run_worker};
use crate::controller::intake::enqueue_when;
use crate::controller::queue::{Backoff, WorkQueue};
use crate::controller::queue_metrics::WorkQueueMetrics;
use crate::csi::driver::{CreateSnapshotArgs, Secrets, SnapshotDriver, SnapshotInfo};
use crate::csi::error::CsiError;
use crate::k8s::event::EventRecorder;
use crate::k8s::keys;
use crate::k8s::types::{Lenient, VolumeSnapshotClass, VolumeSnapshotContent};
use crate::k8s::watch::{Cache, Informer, Notification, WatchOptions, make_lean};
use crate::k8s::write::{self, WriteError};
use crate::reconcile::ReconcileConfig;
use crate::reconcile::content::{
    CreatePlan, DeletePlan, PollMethod, PollPlan, Step, create_stage_failure, decide,
    on_create_error, poll_failure, requeue_after_success,
};
use crate::reconcile::filter::{
    Freshness, VersionStore, is_driver_match, should_enqueue_content_change,
};
use crate::reconcile::messages::{self, DeleteStage, Failure, Warning};
use crate::reconcile::patch::{self, JsonPatch};
use crate::reconcile::secrets::SecretRef;
use crate::reconcile::status::{
    SnapshotObservation, merge_snapshot_status, snapshot_error_patch, snapshot_status_after_delete,
};

/// The name of the VSC work queue (the `name` label of workqueue metrics).
pub const QUEUE_NAME: &str = "csi-snapshotter-content";

/// Everything the executor needs; cheap to share behind an `Arc`.
pub struct ContentController<D> {
    driver: Arc<D>,
    core_client: kube::Client,
    api: Api<VolumeSnapshotContent>,
    contents: Cache<Lenient<VolumeSnapshotContent>>,
    classes: Cache<Lenient<VolumeSnapshotClass>>,
    events: EventRecorder,
    config: ReconcileConfig,
    /// Versions seen per content. Only replies to the sidecar's own writes
    /// keep the object; a sighting keeps just its version, so the store does
    /// not hold a second, decoded copy of every cached content.
    versions: Mutex<VersionStore<Option<Arc<VolumeSnapshotContent>>>>,
}

impl<D> std::fmt::Debug for ContentController<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentController")
            .field("driver", &self.config.driver_name)
            .finish_non_exhaustive()
    }
}

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

impl<D: SnapshotDriver> ContentController<D> {
    /// A controller over the given caches. `snapshot_client` makes the VSC
    /// reads and writes, `core_client` the secret GETs (upstream uses
    /// separate clientsets, each with its own rate limit).
    pub fn new(
        driver: Arc<D>,
        snapshot_client: kube::Client,
        core_client: kube::Client,
        contents: Cache<Lenient<VolumeSnapshotContent>>,
        classes: Cache<Lenient<VolumeSnapshotClass>>,
        events: EventRecorder,
        config: ReconcileConfig,
    ) -> Self {
        ContentController {
            driver,
            api: Api::all(snapshot_client),
            core_client,
            contents,
            classes,
            events,
            config,
            versions: Mutex::new(VersionStore::new()),
        }
    }

    fn versions(
        &self,
    ) -> std::sync::MutexGuard<'_, VersionStore<Option<Arc<VolumeSnapshotContent>>>> {
        self.versions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Seeds the version store with every cached VSC of this driver (call
    /// once the caches have synced, spec C.1 step 3).
    pub fn seed_versions(&self) {
        self.contents.for_each(|obj| {
            let Some(content) = obj.as_ok() else { return };
            if !is_driver_match(
                content,
                self.class_of(content).as_deref(),
                self.driver_name(),
            ) {
                return;
            }
            let rv = content
                .metadata
                .resource_version
                .clone()
                .unwrap_or_default();
            let _ = self.versions().observe(content.name(), &rv, &None);
        });
    }

    fn driver_name(&self) -> &str {
        &self.config.driver_name
    }

    /// The VSC cache the workers read (for inspection: tests wait on it to
    /// know which watch events the controller has seen).
    pub fn contents(&self) -> &Cache<Lenient<VolumeSnapshotContent>> {
        &self.contents
    }

    /// How many contents the version store holds a whole written object
    /// for (the others only a version): those with work still pending
    /// after the sidecar's own writes.
    pub fn written_objects_held(&self) -> usize {
        self.versions().values().filter(|v| v.is_some()).count()
    }

    /// The cached class the content names. A class that does not decode
    /// counts as missing (logged), so the content reports a class error.
    fn class_of(&self, content: &VolumeSnapshotContent) -> Option<Arc<VolumeSnapshotClass>> {
        let name = content.spec.volume_snapshot_class_name.as_deref()?;
        match self.classes.get(name)?.as_ref() {
            Lenient::Ok(class) => Some(Arc::new(class.clone())),
            Lenient::Malformed { error, .. } => {
                tracing::warn!(
                    class = name,
                    error = error.as_str(),
                    "Ignoring a VolumeSnapshotClass that does not decode"
                );
                None
            }
        }
    }

    /// Runs workers until the queue shuts down.
    pub fn spawn_workers(
        self: &Arc<Self>,
        queue: &WorkQueue<String>,
        n: usize,
    ) -> Vec<JoinHandle<()>> {
        (0..n.max(1))
            .map(|_| {
                let ctrl = Arc::clone(self);
                tokio::spawn(run_worker(queue.clone(), move |key| {
                    let ctrl = Arc::clone(&ctrl);
                    async move { ctrl.sync(&key).await }
                }))
            })
            .collect()
    }

    /// Processes one key (spec C.1).
    pub async fn sync(&self, name: &str) -> Outcome {
        let Some(cached) = self.contents.get(name) else {
            self.versions().remove(name);
            tracing::debug!(content = name, "Content is gone");
            return Outcome::Forget;
        };
        let content = match cached.as_ref() {
            Lenient::Ok(c) => c,
            Lenient::Malformed { error, .. } => {
                tracing::warn!(
                    content = name,
                    error = error.as_str(),
                    "Ignoring a content that does not decode"
                );
                return Outcome::Forget;
            }
        };
        let class = self.class_of(content);
        let class_name = content.spec.volume_snapshot_class_name.clone();
        if !is_driver_match(content, class.as_deref(), self.driver_name()) {
            return Outcome::Forget;
        }
        let rv = content
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let fresh = self.versions().observe(name, &rv, &None);
        let content = match fresh {
            Ok(Freshness::Current) => Arc::new(content.clone()),
            Ok(Freshness::Stale(Some(newer))) => {
                tracing::debug!(
                    content = name,
                    "Cache is behind the last write; using the written object"
                );
                newer
            }
            Ok(Freshness::Stale(None)) => {
                tracing::debug!(
                    content = name,
                    "Skipping an older version than already seen"
                );
                return Outcome::Forget;
            }
            Err(e) => {
                tracing::error!(content = name, error = %e, "Skipping content");
                return Outcome::Forget;
            }
        };
        let class = if content.spec.volume_snapshot_class_name == class_name {
            class
        } else {
            self.class_of(&content)
        };
        let step = decide(
            &content,
            class.as_deref(),
            self.driver.capabilities(),
            &self.config,
        );
        tracing::debug!(content = name, step = step_name(&step), "Syncing content");
        let outcome = self.execute(&content, step).await;
        if outcome == Outcome::Forget {
            // Nothing is pending, so no later pass needs the object the last
            // write returned: keep only its version (older events are still
            // skipped). Otherwise every content this sidecar created would
            // hold a second, decoded copy here for as long as it exists.
            self.versions().set_value(name, None);
        }
        outcome
    }

    async fn execute(&self, content: &VolumeSnapshotContent, step: Step) -> Outcome {
        match step {
            Step::Ignore | Step::Done => Outcome::Forget,
            Step::WaitForMember => Outcome::Requeue,
            Step::RemoveBeingCreated { patch, requeue } => {
                match self.patch_main(content.name(), &patch).await {
                    Ok(_) if requeue => Outcome::Requeue,
                    Ok(_) => Outcome::Forget,
                    Err(e) => self.write_failed(content.name(), &e),
                }
            }
            Step::Fail(failure) => self.fail(content, &failure).await,
            Step::DeleteFailed(warning) => self.warn(content, &warning),
            Step::Create(plan) => self.create(content, plan).await,
            Step::Poll(plan) => self.poll(content, plan).await,
            Step::Delete(plan) => self.delete(content, plan).await,
        }
    }

    /// Writes the error status (unless it already says the same) and emits the
    /// event, even when the write failed (spec C.11); always a requeue.
    async fn fail(&self, content: &VolumeSnapshotContent, failure: &Failure) -> Outcome {
        let name = content.name();
        let Some(doc) =
            snapshot_error_patch(content.status.as_ref(), &failure.message, Timestamp::now())
        else {
            tracing::debug!(content = name, "Same error already recorded");
            return Outcome::Requeue;
        };
        if let Err(e) = self.patch_status(name, &doc).await {
            tracing::warn!(content = name, error = %e, "Failed to write the error status");
        }
        self.emit(content, &failure.warning());
        Outcome::Requeue
    }

    fn warn(&self, content: &VolumeSnapshotContent, warning: &Warning) -> Outcome {
        self.emit(content, warning);
        Outcome::Requeue
    }

    fn emit(&self, content: &VolumeSnapshotContent, warning: &Warning) {
        emit_warning(&self.events, content, warning);
    }

    fn write_failed(&self, name: &str, e: &WriteError) -> Outcome {
        if e.is_conflict() {
            tracing::debug!(content = name, error = %e, "Write conflict");
        } else {
            tracing::error!(content = name, error = %e, "Write failed");
        }
        Outcome::Requeue
    }

    /// Dynamic creation (spec C.3), input errors already excluded by decide.
    async fn create(&self, content: &VolumeSnapshotContent, plan: CreatePlan) -> Outcome {
        let name = content.name();
        let secrets = match self.secrets(plan.secret_ref.as_ref()).await {
            Ok(s) => s,
            Err(e) => {
                let inner = messages::credentials_error(name, e);
                let failure =
                    create_stage_failure(&plan, messages::create_input_error(name, inner));
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
                Err(e) if e.is_conflict() => return self.write_failed(name, &e),
                Err(e) => {
                    let inner = format!(
                        "failed to add VolumeSnapshotBeingCreated annotation on the content {name}: {e}"
                    );
                    return self
                        .fail(content, &create_stage_failure(&plan, inner))
                        .await;
                }
            }
        }
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
        let info = match self
            .driver
            .create_snapshot(args)
            .await
            .and_then(check_reply)
        {
            Ok(info) => info,
            Err(err) => {
                let outcome = on_create_error(&plan, &err);
                let mut failure = outcome.failure;
                if let Some(remove) = &outcome.remove_being_created {
                    match self.patch_main(name, remove).await {
                        Ok(obj) => current = obj,
                        Err(e) => {
                            failure = create_stage_failure(
                                &plan,
                                format!(
                                    "failed to remove VolumeSnapshotBeingCreated annotation from the content {name}: {e}"
                                ),
                            );
                        }
                    }
                }
                return self.fail(&current, &failure).await;
            }
        };
        tracing::info!(
            content = name,
            handle = info.snapshot_id.as_str(),
            ready = info.ready_to_use,
            "Snapshot created"
        );
        match self
            .record_observation(&current, &SnapshotObservation::from_create(&info))
            .await
        {
            Ok(obj) => current = obj,
            // The object kept changing under us: no error status is written
            // over a copy known to be stale. The being-created annotation
            // stays, so the next pass repeats the (idempotent) create and
            // records the handle; a delete cannot overtake it.
            Err(e) if e.is_conflict() => return self.write_failed(name, &e),
            Err(e) => {
                let inner = messages::status_update_error(name, e);
                return self
                    .fail(&current, &create_stage_failure(&plan, inner))
                    .await;
            }
        }
        if current.annotation(keys::ANN_VS_BEING_CREATED).is_some() {
            let remove = patch::remove_annotation(keys::ANN_VS_BEING_CREATED);
            match self.patch_main(name, &remove).await {
                Ok(obj) => current = obj,
                Err(e) => {
                    let inner = format!(
                        "failed to remove VolumeSnapshotBeingCreated annotation from the content {name}: {e}"
                    );
                    return self
                        .fail(&current, &create_stage_failure(&plan, inner))
                        .await;
                }
            }
        }
        if requeue_after_success(&current) {
            Outcome::Requeue
        } else {
            Outcome::Forget
        }
    }

    /// Status poll (spec C.5, or GetSnapshot for dynamic contents).
    async fn poll(&self, content: &VolumeSnapshotContent, plan: PollPlan) -> Outcome {
        let name = content.name();
        let secrets = match self.secrets(plan.secret_ref.as_ref()).await {
            Ok(s) => s,
            Err(e) => {
                let failure = poll_failure(content, &plan, messages::credentials_error(name, e));
                return self.fail(content, &failure).await;
            }
        };
        let id = plan.snapshot_id.as_str();
        let observed = match plan.method {
            PollMethod::Trust => Ok(SnapshotObservation::trusted(&plan.status_handle)),
            PollMethod::ListSnapshots => match self.driver.list_snapshot(id, &secrets).await {
                Ok(Some(info)) => Ok(SnapshotObservation::from_poll(&plan.status_handle, &info)),
                Ok(None) => Err(messages::snapshot_not_found(id)),
                Err(e) => Err(e.to_string()),
            },
            PollMethod::GetSnapshot => match self.driver.get_snapshot(id, &secrets).await {
                Ok(info) => Ok(SnapshotObservation::from_poll(&plan.status_handle, &info)),
                Err(e) => Err(e.to_string()),
            },
        };
        let observed = match observed {
            Ok(o) => o,
            Err(inner) => {
                return self
                    .fail(content, &poll_failure(content, &plan, inner))
                    .await;
            }
        };
        match self.record_observation(content, &observed).await {
            Ok(updated) if requeue_after_success(&updated) => Outcome::Requeue,
            Ok(_) => Outcome::Forget,
            Err(e) if e.is_conflict() => self.write_failed(name, &e),
            Err(e) => {
                let failure = poll_failure(content, &plan, messages::status_update_error(name, e));
                self.fail(content, &failure).await
            }
        }
    }

    /// Deletion (spec C.7).
    async fn delete(&self, content: &VolumeSnapshotContent, plan: DeletePlan) -> Outcome {
        let name = content.name();
        let mut finalizer_patch = plan.remove_finalizer;
        if let Some(del) = plan.csi_delete {
            let secrets = match self.secrets(del.secret_ref.as_ref()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(content = name, error = %e, "Failed to get snapshot credentials");
                    return self.warn(
                        content,
                        &messages::snapshot_delete_warning(DeleteStage::Credentials),
                    );
                }
            };
            if let Err(e) = self
                .driver
                .delete_snapshot(&del.snapshot_id, &secrets)
                .await
            {
                tracing::error!(content = name, handle = del.snapshot_id.as_str(), error = %e, "DeleteSnapshot failed");
                return self.warn(
                    content,
                    &messages::snapshot_delete_warning(DeleteStage::Rpc),
                );
            }
            tracing::info!(
                content = name,
                handle = del.snapshot_id.as_str(),
                "Snapshot deleted"
            );
            match self.clear_status(content).await {
                Ok(Some(updated)) => {
                    finalizer_patch =
                        patch::remove_finalizer(&updated.metadata, keys::FINALIZER_VSC);
                }
                Ok(None) => return Outcome::Forget,
                Err(e) => {
                    tracing::error!(content = name, error = %e, "Failed to clear content status");
                    return self.warn(
                        content,
                        &messages::snapshot_delete_warning(DeleteStage::ClearStatus),
                    );
                }
            }
        }
        if let Some(doc) = finalizer_patch {
            if let Err(e) = self.patch_main(name, &doc).await {
                return self.write_failed(name, &e);
            }
            tracing::info!(content = name, "Finalizer removed");
        }
        Outcome::Forget
    }

    /// Writes the status of `base` without the snapshot fields (spec C.7
    /// step 1.3). `Ok(None)`: the object is gone.
    async fn clear_status(
        &self,
        base: &VolumeSnapshotContent,
    ) -> Result<Option<VolumeSnapshotContent>, WriteError> {
        let clear = |obj: &VolumeSnapshotContent| {
            let status = obj.status.as_ref()?;
            let cleared = snapshot_status_after_delete(status);
            (cleared != *status).then(|| patch::set_status(&cleared))
        };
        match self.write_status(base, &clear).await {
            Ok(obj) => Ok(Some(obj)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Merges `obs` into the status of `base` (spec C.6) and writes it if it
    /// changed; returns the latest object.
    async fn record_observation(
        &self,
        base: &VolumeSnapshotContent,
        obs: &SnapshotObservation,
    ) -> Result<VolumeSnapshotContent, WriteError> {
        let now = Timestamp::now();
        let merge = |obj: &VolumeSnapshotContent| {
            merge_snapshot_status(obj.status.as_ref(), obs, now).map(|s| patch::set_status(&s))
        };
        self.write_status(base, &merge).await
    }

    /// Writes the status patch `next` computes from `base` (`None`: nothing
    /// to change, no request) and returns the updated object.
    ///
    /// Upstream GETs the object before every status merge and before the
    /// status clear, so that the write-once fields (handle, creation time,
    /// size, group handle) and the error are merged into the live status.
    /// Here `base` is the freshest copy the sync has: the reply to its own
    /// previous write, else the cached object or the version store's reply,
    /// whichever is newer. Since the sidecar is the only writer of a VSC
    /// status, that copy normally is the live state. The patch is made
    /// conditional on `base`'s resourceVersion ([`patch::at_version`]), so a
    /// status merged from an older copy can never land: on `409 Conflict`
    /// the object is read once and the patch rebuilt from it (the one GET
    /// left, only when someone else changed the object meanwhile); a second
    /// conflict is returned and the key is retried.
    async fn write_status(
        &self,
        base: &VolumeSnapshotContent,
        next: &StatusPatchFn<'_>,
    ) -> Result<VolumeSnapshotContent, WriteError> {
        let name = base.name();
        let Some(doc) = next(base) else {
            return Ok(base.clone());
        };
        match self.patch_status(name, &guarded(base, doc)).await {
            Err(e) if e.is_conflict() => {
                tracing::debug!(content = name, error = %e, "Status write conflict; reading the object");
            }
            other => return other,
        }
        let fresh = self
            .api
            .get(name)
            .await
            .map_err(|e| WriteError::from_kube("VolumeSnapshotContent", name, e))?;
        self.remember(&fresh);
        let Some(doc) = next(&fresh) else {
            return Ok(fresh);
        };
        self.patch_status(name, &guarded(&fresh, doc)).await
    }

    async fn patch_main(
        &self,
        name: &str,
        doc: &JsonPatch,
    ) -> Result<VolumeSnapshotContent, WriteError> {
        let obj = write::patch_main(&self.api, name, &doc.to_value()).await?;
        self.remember(&obj);
        Ok(obj)
    }

    async fn patch_status(
        &self,
        name: &str,
        doc: &JsonPatch,
    ) -> Result<VolumeSnapshotContent, WriteError> {
        let obj = write::patch_status(&self.api, name, &doc.to_value()).await?;
        self.remember(&obj);
        Ok(obj)
    }

    /// Stores the server's reply to one of our writes (spec C.1 step 3).
    fn remember(&self, obj: &VolumeSnapshotContent) {
        let rv = obj.metadata.resource_version.clone().unwrap_or_default();
        let mut kept = obj.clone();
        make_lean(&mut kept);
        self.versions()
            .record_write(obj.name(), &rv, &Some(Arc::new(kept)));
    }

    async fn secrets(&self, secret_ref: Option<&SecretRef>) -> Result<Secrets, SecretError> {
        fetch_secrets(&self.core_client, secret_ref).await
    }
}

/// Computes the status patch for an object; `None` when its status needs no
/// change.
type StatusPatchFn<'a> = dyn Fn(&VolumeSnapshotContent) -> Option<JsonPatch> + Send + Sync + 'a;

/// `doc`, applied only while the object is at `base`'s resourceVersion.
fn guarded(base: &VolumeSnapshotContent, doc: JsonPatch) -> JsonPatch {
    patch::at_version(
        base.metadata
            .resource_version
            .as_deref()
            .unwrap_or_default(),
        doc,
    )
}

/// A successful reply without a snapshot ID cannot be recorded; treat it as a
/// non-final error (the backend may hold a snapshot, so the annotation stays).
fn check_reply(info: SnapshotInfo) -> Result<SnapshotInfo, CsiError> {
    if info.snapshot_id.is_empty() {
        return Err(CsiError::InvalidReply(
            "CreateSnapshot reply has an empty snapshot_id".into(),
        ));
    }
    Ok(info)
}

fn step_name(step: &Step) -> &'static str {
    match step {
        Step::Ignore => "ignore",
        Step::Done => "done",
        Step::RemoveBeingCreated { .. } => "remove-being-created",
        Step::WaitForMember => "wait-for-member",
        Step::Fail(_) => "fail",
        Step::Delete(_) => "delete",
        Step::DeleteFailed(_) => "delete-failed",
        Step::Create(_) => "create",
        Step::Poll(_) => "poll",
    }
}

/// How to run the VSC controller.
#[derive(Debug, Clone)]
pub struct ContentControllerOptions {
    /// Driver name, naming rules and `--extra-create-metadata`.
    pub config: ReconcileConfig,
    /// `--worker-threads`.
    pub workers: usize,
    /// `--retry-interval-start` / `--retry-interval-max`.
    pub backoff: Backoff,
    /// Label selector (`--node-deployment`; VSCs only, classes are never
    /// filtered, spec B.5) and `--resync-period` (both informers).
    pub watch: WatchOptions,
}

impl ContentControllerOptions {
    /// Flag defaults for `driver_name`: one worker, 1 s → 5 min backoff,
    /// no selector, no resync.
    pub fn new(driver_name: impl Into<String>) -> Self {
        ContentControllerOptions {
            config: ReconcileConfig::new(driver_name),
            workers: 1,
            backoff: Backoff::default(),
            watch: WatchOptions::default(),
        }
    }
}

/// A started VSC controller: informers, queue and workers.
#[derive(Debug)]
pub struct RunningContentController<D> {
    /// The executor (for inspection).
    pub controller: Arc<ContentController<D>>,
    /// The `csi-snapshotter-content` queue.
    pub queue: WorkQueue<String>,
    informers: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl<D: SnapshotDriver> RunningContentController<D> {
    /// Stops taking keys, waits for the workers to finish the keys in
    /// flight, then stops the informers.
    pub async fn shutdown(self) {
        self.queue.shutdown();
        for w in self.workers {
            if let Err(e) = w.await {
                tracing::error!(error = %e, "Content worker failed");
            }
        }
        for i in self.informers {
            i.abort();
        }
    }
}

/// Starts the VSC and VSClass informers (`snapshot.storage.k8s.io/v1`)
/// feeding the queue [`QUEUE_NAME`] through the update filter of spec C.1,
/// waits for both caches (or `stop`), seeds the version store and starts
/// `options.workers` workers. Returns `None` when `stop` fired before the
/// caches synced. Registers the queue's metrics with `metrics`, if given.
#[allow(clippy::too_many_arguments)]
pub async fn start<D: SnapshotDriver>(
    driver: Arc<D>,
    snapshot_client: kube::Client,
    core_client: kube::Client,
    events: EventRecorder,
    options: ContentControllerOptions,
    metrics: Option<&WorkQueueMetrics>,
    stop: &CancellationToken,
) -> Option<RunningContentController<D>> {
    let queue = WorkQueue::new(QUEUE_NAME, options.backoff);
    if let Some(m) = metrics {
        m.watch(&queue);
    }
    let content_informer = Informer::<Lenient<VolumeSnapshotContent>>::new(
        Api::all(snapshot_client.clone()),
        options.watch.clone(),
    );
    let class_informer = Informer::<Lenient<VolumeSnapshotClass>>::new(
        Api::all(snapshot_client.clone()),
        WatchOptions {
            label_selector: None,
            resync_period: options.watch.resync_period,
        },
    );
    let contents = content_informer.cache();
    let classes = class_informer.cache();
    let informers = vec![
        tokio::spawn(content_informer.run(enqueue_when(queue.clone(), should_enqueue_update))),
        // Class events enqueue nothing: a key is decided with the class as
        // cached when it runs (upstream has no class handler either).
        tokio::spawn(class_informer.run(|_: Notification<Lenient<VolumeSnapshotClass>>| {})),
    ];
    let synced = async {
        contents.wait_synced().await;
        classes.wait_synced().await;
    };
    tokio::select! {
        () = synced => {}
        () = stop.cancelled() => {
            tracing::error!("Snapshot caches did not sync before shutdown; not starting content workers");
            queue.shutdown();
            for i in informers {
                i.abort();
            }
            return None;
        }
    }
    let controller = Arc::new(ContentController::new(
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
        "Snapshot content controller started"
    );
    Some(RunningContentController {
        controller,
        queue,
        informers,
        workers,
    })
}

/// [`start`], then run until `stop` fires, then
/// [`RunningContentController::shutdown`].
#[allow(clippy::too_many_arguments)]
pub async fn run<D: SnapshotDriver>(
    driver: Arc<D>,
    snapshot_client: kube::Client,
    core_client: kube::Client,
    events: EventRecorder,
    options: ContentControllerOptions,
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
