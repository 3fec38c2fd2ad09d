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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tokio::task::JoinHandle;

use crate::controller::queue::WorkQueue;
use crate::csi::driver::{CreateSnapshotArgs, Secrets, SnapshotDriver, SnapshotInfo};
use crate::csi::error::CsiError;
use crate::k8s::event::{EventRecorder, object_ref};
use crate::k8s::keys;
use crate::k8s::types::{Lenient, VolumeSnapshotClass, VolumeSnapshotContent};
use crate::k8s::watch::Cache;
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

/// What the queue does with the key after a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done: reset the key's backoff.
    Forget,
    /// Retry with the key's exponential backoff.
    Requeue,
}

/// A secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The GET failed.
    #[error("failed to get secret {namespace}/{name}: {source}")]
    Get {
        /// Secret namespace.
        namespace: String,
        /// Secret name.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

/// Everything the executor needs; cheap to share behind an `Arc`.
pub struct ContentController<D> {
    driver: Arc<D>,
    client: kube::Client,
    api: Api<VolumeSnapshotContent>,
    contents: Cache<Lenient<VolumeSnapshotContent>>,
    classes: Cache<Lenient<VolumeSnapshotClass>>,
    events: EventRecorder,
    config: ReconcileConfig,
    versions: Mutex<VersionStore<Arc<VolumeSnapshotContent>>>,
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
    /// A controller over the given caches. `client` is used for the VSC
    /// writes and the secret GETs.
    pub fn new(
        driver: Arc<D>,
        client: kube::Client,
        contents: Cache<Lenient<VolumeSnapshotContent>>,
        classes: Cache<Lenient<VolumeSnapshotClass>>,
        events: EventRecorder,
        config: ReconcileConfig,
    ) -> Self {
        ContentController {
            driver,
            api: Api::all(client.clone()),
            client,
            contents,
            classes,
            events,
            config,
            versions: Mutex::new(VersionStore::new()),
        }
    }

    fn versions(&self) -> std::sync::MutexGuard<'_, VersionStore<Arc<VolumeSnapshotContent>>> {
        self.versions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Seeds the version store with every cached VSC of this driver (call
    /// once the caches have synced, spec C.1 step 3).
    pub fn seed_versions(&self) {
        for obj in self.contents.list() {
            let Some(content) = obj.as_ok() else { continue };
            if !is_driver_match(
                content,
                self.class_of(content).as_deref(),
                self.driver_name(),
            ) {
                continue;
            }
            let rv = content
                .metadata
                .resource_version
                .clone()
                .unwrap_or_default();
            let _ = self
                .versions()
                .observe(content.name(), &rv, &Arc::new(content.clone()));
        }
    }

    fn driver_name(&self) -> &str {
        &self.config.driver_name
    }

    fn class_of(&self, content: &VolumeSnapshotContent) -> Option<Arc<VolumeSnapshotClass>> {
        let name = content.spec.volume_snapshot_class_name.as_deref()?;
        let class = self.classes.get(name)?;
        class.as_ok().cloned().map(Arc::new)
    }

    /// Runs workers until the queue shuts down.
    pub fn spawn_workers(
        self: &Arc<Self>,
        queue: &WorkQueue<String>,
        n: usize,
    ) -> Vec<JoinHandle<()>> {
        (0..n.max(1))
            .map(|_| tokio::spawn(Arc::clone(self).run_worker(queue.clone())))
            .collect()
    }

    /// One worker: process keys until the queue shuts down.
    pub async fn run_worker(self: Arc<Self>, queue: WorkQueue<String>) {
        while let Some(claimed) = queue.get().await {
            let key = claimed.key().clone();
            match self.sync(&key).await {
                Outcome::Forget => queue.forget(&key),
                Outcome::Requeue => queue.add_rate_limited(key),
            }
            claimed.done();
        }
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
        if !is_driver_match(content, class.as_deref(), self.driver_name()) {
            return Outcome::Forget;
        }
        let rv = content
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let fresh = self
            .versions()
            .observe(name, &rv, &Arc::new(content.clone()));
        let content = match fresh {
            Ok(Freshness::Current) => Arc::new(content.clone()),
            Ok(Freshness::Stale(newer)) => {
                tracing::debug!(
                    content = name,
                    "Cache is behind the last write; using the written object"
                );
                newer
            }
            Err(e) => {
                tracing::error!(content = name, error = %e, "Skipping content");
                return Outcome::Forget;
            }
        };
        let class = self.class_of(&content);
        let step = decide(
            &content,
            class.as_deref(),
            self.driver.capabilities(),
            &self.config,
        );
        tracing::debug!(content = name, step = step_name(&step), "Syncing content");
        self.execute(&content, step).await
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
        self.events.warning(
            &object_ref(content),
            warning.reason.as_str(),
            &warning.message,
        );
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
            .record_observation(name, &SnapshotObservation::from_create(&info))
            .await
        {
            Ok(obj) => current = obj,
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
        match self.record_observation(name, &observed).await {
            Ok(updated) if requeue_after_success(&updated) => Outcome::Requeue,
            Ok(_) => Outcome::Forget,
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
            match self.clear_status(name).await {
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

    /// GETs the content and PUTs its status without the snapshot fields.
    /// `Ok(None)`: the object is gone.
    async fn clear_status(&self, name: &str) -> Result<Option<VolumeSnapshotContent>, WriteError> {
        let mut fresh = match self.api.get_opt(name).await {
            Ok(Some(obj)) => obj,
            Ok(None) => return Ok(None),
            Err(e) => return Err(WriteError::from_kube("VolumeSnapshotContent", name, e)),
        };
        let Some(status) = fresh.status.as_ref() else {
            return Ok(Some(fresh));
        };
        fresh.status = Some(snapshot_status_after_delete(status));
        let updated = write::replace_status(&self.api, &fresh).await?;
        self.remember(&updated);
        Ok(Some(updated))
    }

    /// GETs the content, merges `obs` into its status and writes it if it
    /// changed; returns the latest object.
    async fn record_observation(
        &self,
        name: &str,
        obs: &SnapshotObservation,
    ) -> Result<VolumeSnapshotContent, WriteError> {
        let fresh = self
            .api
            .get(name)
            .await
            .map_err(|e| WriteError::from_kube("VolumeSnapshotContent", name, e))?;
        match merge_snapshot_status(fresh.status.as_ref(), obs, Timestamp::now()) {
            Some(status) => self.patch_status(name, &patch::set_status(&status)).await,
            None => Ok(fresh),
        }
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
        self.versions()
            .record_write(obj.name(), &rv, &Arc::new(obj.clone()));
    }

    /// GETs the secret and turns its data into CSI secrets (values are never
    /// logged).
    async fn secrets(&self, secret_ref: Option<&SecretRef>) -> Result<Secrets, SecretError> {
        let Some(r) = secret_ref else {
            return Ok(Secrets::default());
        };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &r.namespace);
        let secret = api.get(&r.name).await.map_err(|source| SecretError::Get {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            source,
        })?;
        let data: BTreeMap<String, String> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect();
        Ok(Secrets::new(data))
    }
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

/// How to run the VSC side of the sidecar.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The decision inputs (driver name, naming, extra metadata).
    pub reconcile: ReconcileConfig,
    /// `--worker-threads`.
    pub workers: usize,
    /// `--retry-interval-start` / `--retry-interval-max`.
    pub backoff: crate::controller::queue::Backoff,
    /// `--resync-period` (`None`/zero: off).
    pub resync_period: Option<std::time::Duration>,
    /// `managed-by=<node>` selector with `--node-deployment` (VSCs only).
    pub label_selector: Option<String>,
}

/// The running VSC controller: its queue (for metrics and shutdown) and tasks.
#[derive(Debug)]
pub struct Running {
    /// The `csi-snapshotter-content` queue.
    pub queue: WorkQueue<String>,
    /// Informer and worker tasks.
    pub tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops taking work, waits for the workers to finish their current key,
    /// then stops the informers.
    pub async fn shutdown(self) {
        self.queue.shutdown_with_drain().await;
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Starts the VSC and VSClass informers, waits for both caches, seeds the
/// version store, then starts the workers (spec B.5, B.8, C.1).
pub async fn start<D: SnapshotDriver>(
    driver: Arc<D>,
    client: kube::Client,
    events: EventRecorder,
    opts: RunOptions,
) -> Running {
    use crate::controller::intake::enqueue_when;
    use crate::k8s::watch::{Informer, WatchOptions};

    let queue = WorkQueue::new(QUEUE_NAME, opts.backoff);
    let contents = Informer::new(
        Api::<Lenient<VolumeSnapshotContent>>::all(client.clone()),
        WatchOptions {
            label_selector: opts.label_selector.clone(),
            resync_period: opts.resync_period,
        },
    );
    let classes = Informer::new(
        Api::<Lenient<VolumeSnapshotClass>>::all(client.clone()),
        WatchOptions {
            label_selector: None,
            resync_period: opts.resync_period,
        },
    );
    let content_cache = contents.cache();
    let class_cache = classes.cache();
    let ctrl = Arc::new(ContentController::new(
        driver,
        client,
        content_cache.clone(),
        class_cache.clone(),
        events,
        opts.reconcile,
    ));
    let mut tasks = vec![
        tokio::spawn(contents.run(enqueue_when(queue.clone(), should_enqueue_update))),
        // Class events enqueue nothing: a key is decided with the class as
        // cached when the key runs (upstream has no class handler either).
        tokio::spawn(
            classes.run(|_: crate::k8s::watch::Notification<Lenient<VolumeSnapshotClass>>| {}),
        ),
    ];
    content_cache.wait_synced().await;
    class_cache.wait_synced().await;
    ctrl.seed_versions();
    tasks.extend(ctrl.spawn_workers(&queue, opts.workers));
    Running { queue, tasks }
}
