//! The machine every content kind runs on: informers of the object and its
//! class, intake, the work queue, workers with per-key backoff, the version
//! store of the sidecar's own writes, cache sync, shutdown and the drain.
//! For one key it looks the object and its class up, asks the kind's pure
//! `decide` for a [`Decision`] and runs it: secret GET, being-created
//! annotation, one CSI call, status write, event, finalizer removal. A kind
//! ([`Kind`]) supplies only its types, its `decide` and the kind-specific
//! pieces of each step (which RPC, which texts, how its status is written).
//!
//! Invariant (upstream issue 1388): a delete that arrives while a create is in
//! flight ends with the backend snapshot deleted. The being-created
//! annotation holds the delete back; once the create is done, the object the
//! last write returned is kept in the version store and the key is requeued
//! while a deletion is pending, so the next pass sees the annotation gone and
//! deletes, even if the watch has not delivered that write yet.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use jiff::Timestamp;
use kube::core::ClusterResourceScope;
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::controller::common::{Outcome, SecretError, emit_warning, fetch_secrets, run_worker};
use crate::controller::intake::enqueue_when;
use crate::controller::queue::{Backoff, Key, WorkQueue};
use crate::controller::queue_metrics::WorkQueueMetrics;
use crate::csi::driver::{DriverCapabilities, Secrets, SnapshotDriver};
use crate::csi::error::CsiError;
use crate::k8s::event::EventRecorder;
use crate::k8s::types::{ContentObject, Lenient, annotation};
use crate::k8s::watch::{Cache, Informer, Notification, WatchOptions, make_lean};
use crate::k8s::write::{self, Target, WriteError};
use crate::reconcile::filter::{Freshness, VersionStore};
use crate::reconcile::messages::KindTexts;
use crate::reconcile::messages::{self, DeleteStage, Failure, Warning};
use crate::reconcile::patch::{self, JsonPatch};
use crate::reconcile::secrets::SecretRef;
use crate::reconcile::status::{MergeStatus, content_error_patch};
use crate::reconcile::{
    CreateErrorOutcome, CreateMark, Decision, DeletePlanOf, PlanSecret, ReconcileConfig, Steps,
    requeue_after_success,
};

/// The bounds of an object the pipeline watches and writes.
pub trait Object: Resource<DynamicType = (), Scope = ClusterResourceScope> + Plain {}

impl<T: Resource<DynamicType = (), Scope = ClusterResourceScope> + Plain> Object for T {}

/// The bounds of an object the caches store and the workers share.
pub trait Plain: Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static> Plain for T {}

/// The decision a kind's `decide` returns.
pub type StepOf<K> = Decision<CreateOf<K>, PollOf<K>, DeleteOf<K>>;

/// How a kind writes a new status.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusWrite<O> {
    /// A JSON Patch to `/status` (conditional on the base's version).
    Patch(JsonPatch),
    /// A PUT of the whole object to `/status`.
    Replace(O),
}

/// What differs between the kinds the pipeline runs. Everything here is
/// pure except the three RPC calls, which only talk to the driver. What the
/// object type itself knows (class, status, annotation, status merge) comes
/// from [`ContentObject`] and [`MergeStatus`].
pub trait Kind: Debug + Send + Sync + 'static {
    /// The watched object (a content).
    type Object: Object + MergeStatus;
    /// What `decide` returns: a [`Decision`] over the kind's plans.
    type Step: Steps;

    /// The work queue's name (the `name` label of the workqueue metrics).
    const QUEUE_NAME: &'static str;
    /// How logs name the kind's controller, and its failure, input-error
    /// and delete-warning texts.
    const TEXTS: KindTexts;
    /// Whether the class informer carries the `--node-deployment` label
    /// selector too (spec B.5).
    const CLASSES_SELECTED: bool = false;

    /// Whether a watch update is enqueued (adds and deletes always are).
    fn should_enqueue_update(_: &Lenient<Self::Object>, _: &Lenient<Self::Object>) -> bool {
        true
    }
    /// Whether the object is version-checked and synced at all.
    fn tracks(_: &Self::Object, _: Option<&ClassOf<Self>>, _: &str) -> bool {
        true
    }
    /// The pure decision (`reconcile`).
    fn decide(
        obj: &Self::Object,
        class: Option<&ClassOf<Self>>,
        caps: &DriverCapabilities,
        cfg: &ReconcileConfig,
    ) -> StepOf<Self>;
    /// The request that writes `status` over `base`.
    fn status_write(base: &Self::Object, status: StatusOf<Self>) -> StatusWrite<Self::Object>;
    /// What to do after the create RPC failed.
    fn on_create_error(plan: &CreateOf<Self>, err: &CsiError) -> CreateErrorOutcome;
    /// The create RPC.
    fn create<D: SnapshotDriver>(
        call: Call<'_, D, CreateOf<Self>>,
    ) -> impl Future<Output = Result<ObservationOf<Self>, CsiError>> + Send;
    /// The failure for a poll error.
    fn poll_failure(obj: &Self::Object, plan: &PollOf<Self>, inner: String) -> Failure;
    /// The poll RPC; the error is the failure's text.
    fn poll<D: SnapshotDriver>(
        call: Call<'_, D, PollOf<Self>>,
    ) -> impl Future<Output = Result<ObservationOf<Self>, String>> + Send;
    /// The delete RPC.
    fn delete<D: SnapshotDriver>(
        call: Call<'_, D, DeleteOf<Self>>,
    ) -> impl Future<Output = Result<(), CsiError>> + Send;
}

/// What a kind's RPC step is given.
#[derive(Debug)]
pub struct Call<'a, D, P> {
    /// The driver.
    pub driver: &'a D,
    /// The step's plan.
    pub plan: &'a P,
    /// The credentials from the plan's secret.
    pub secrets: Secrets,
    /// The object's name, for logs.
    pub name: &'a str,
}

/// The class of a kind's object.
pub type ClassOf<K> = <<K as Kind>::Object as ContentObject>::Class;
/// The status of a kind's object.
pub type StatusOf<K> = <<K as Kind>::Object as ContentObject>::Status;
/// What a kind's create or poll reply says.
pub type ObservationOf<K> = <<K as Kind>::Object as MergeStatus>::Observation;
/// A kind's create plan.
pub type CreateOf<K> = <<K as Kind>::Step as Steps>::Create;
/// A kind's poll plan.
pub type PollOf<K> = <<K as Kind>::Step as Steps>::Poll;
/// A kind's CSI delete.
pub type DeleteOf<K> = <<K as Kind>::Step as Steps>::Delete;

/// The executor of one kind; cheap to share behind an `Arc`.
pub struct Pipeline<K: Kind, D> {
    driver: Arc<D>,
    core_client: kube::Client,
    api: Api<K::Object>,
    contents: Cache<Lenient<K::Object>>,
    classes: Cache<Lenient<ClassOf<K>>>,
    events: EventRecorder,
    config: ReconcileConfig,
    /// Versions seen per object. Only replies to the sidecar's own writes
    /// keep the object, and only while work is pending; a sighting keeps
    /// just its version, so the store does not hold a second, decoded copy
    /// of every cached object.
    versions: Mutex<VersionStore<Option<Arc<K::Object>>>>,
    /// Objects whose backend snapshot this process deleted, by name, with
    /// their UID; an entry goes when the object leaves the cache.
    deleted: Mutex<HashMap<String, String>>,
}

impl<K: Kind, D> Debug for Pipeline<K, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("kind", &K::Object::kind(&()))
            .field("driver", &self.config.driver_name)
            .finish_non_exhaustive()
    }
}

fn name_of<O: Resource>(obj: &O) -> &str {
    obj.meta().name.as_deref().unwrap_or("")
}

fn uid_of<O: Resource>(obj: &O) -> String {
    obj.meta().uid.clone().unwrap_or_default()
}

/// A successful create reply without the handle (`field`) cannot be
/// recorded; it is a non-final error (the backend may hold a snapshot, so
/// the being-created annotation stays).
pub fn require_handle(handle: &str, rpc: &str, field: &str) -> Result<(), CsiError> {
    if handle.is_empty() {
        return Err(CsiError::InvalidReply(format!(
            "{rpc} reply has an empty {field}"
        )));
    }
    Ok(())
}

fn requeue_if(requeue: bool) -> Outcome {
    if requeue {
        Outcome::Requeue
    } else {
        Outcome::Forget
    }
}

/// The decoded object of a cache entry, without a copy when the entry is
/// not shared.
fn unwrap_lenient<T: Clone>(entry: Arc<Lenient<T>>) -> Result<T, String> {
    Arc::try_unwrap(entry)
        .unwrap_or_else(|shared| (*shared).clone())
        .into_result()
}

impl<K: Kind, D: SnapshotDriver> Pipeline<K, D> {
    /// An executor over the given caches. `snapshot_client` makes the reads
    /// and writes of the objects, `core_client` the secret GETs (upstream
    /// uses separate clientsets, each with its own rate limit).
    pub fn new(
        driver: Arc<D>,
        snapshot_client: kube::Client,
        core_client: kube::Client,
        contents: Cache<Lenient<K::Object>>,
        classes: Cache<Lenient<ClassOf<K>>>,
        events: EventRecorder,
        config: ReconcileConfig,
    ) -> Self {
        Pipeline {
            driver,
            api: Api::all(snapshot_client),
            core_client,
            contents,
            classes,
            events,
            config,
            versions: Mutex::new(VersionStore::new()),
            deleted: Mutex::new(HashMap::new()),
        }
    }

    fn versions(&self) -> MutexGuard<'_, VersionStore<Option<Arc<K::Object>>>> {
        self.versions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The object cache the workers read (for inspection: tests wait on it
    /// to know which watch events the controller has seen).
    pub fn contents(&self) -> &Cache<Lenient<K::Object>> {
        &self.contents
    }

    /// Whether the version store holds an entry for `name` (spec H.39).
    pub fn is_tracked(&self, name: &str) -> bool {
        self.versions().contains(name)
    }

    /// How many objects the version store holds a whole written object for
    /// (the others only a version): those with work still pending after the
    /// sidecar's own writes.
    pub fn written_objects_held(&self) -> usize {
        self.versions().values().filter(|v| v.is_some()).count()
    }

    /// The cached class the object names. A class that does not decode
    /// counts as missing (logged), so the object reports a class error.
    fn class_of(&self, obj: &K::Object) -> Option<Arc<ClassOf<K>>> {
        let name = obj.class_name()?;
        match unwrap_lenient(self.classes.get(name)?) {
            Ok(class) => Some(Arc::new(class)),
            Err(error) => {
                tracing::warn!(class = name, error, "Ignoring a class that does not decode");
                None
            }
        }
    }

    /// Starts `n` (at least one) workers on `queue`; they end when it shuts
    /// down.
    pub fn spawn_workers(
        self: &Arc<Self>,
        queue: &WorkQueue<Key>,
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

    /// Processes one key (spec C.1, D.1).
    pub async fn sync(&self, name: &str) -> Outcome {
        let Some(cached) = self.contents.get(name) else {
            self.versions().remove(name);
            self.deleted().remove(name);
            tracing::debug!(content = name, "Object is gone");
            return Outcome::Forget;
        };
        let obj = match unwrap_lenient(cached) {
            Ok(obj) => obj,
            Err(error) => {
                tracing::warn!(
                    content = name,
                    error,
                    "Ignoring an object that does not decode"
                );
                return Outcome::Forget;
            }
        };
        let mut class = self.class_of(&obj);
        if !K::tracks(&obj, class.as_deref(), &self.config.driver_name) {
            return Outcome::Forget;
        }
        let rv = obj.meta().resource_version.clone().unwrap_or_default();
        let fresh = self.versions().observe(name, &rv, &None);
        let from_cache = matches!(fresh, Ok(Freshness::Current));
        let obj = match fresh {
            Ok(Freshness::Current) => Arc::new(obj),
            Ok(Freshness::Stale(Some(newer))) => {
                tracing::debug!(
                    content = name,
                    "Cache is behind the last write; using the written object"
                );
                if newer.class_name() != obj.class_name() {
                    class = self.class_of(&newer);
                }
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
                tracing::error!(content = name, error = %e, "Skipping object");
                return Outcome::Forget;
            }
        };
        let step = K::decide(
            &obj,
            class.as_deref(),
            self.driver.capabilities(),
            &self.config,
        );
        tracing::debug!(content = name, step = step.name(), "Syncing");
        let outcome = self.execute(&obj, step).await;
        if outcome == Outcome::Forget {
            // Nothing is pending, so no later pass needs the object the last
            // write returned: keep only its version (older events are still
            // skipped). Otherwise every object this sidecar wrote would hold
            // a second, decoded copy here for as long as it exists. When this
            // pass wrote nothing and read the cache's own copy, not even the
            // version is needed: a ready content that stays untouched costs
            // no entry (100,000 of them would otherwise hold about 10 MiB).
            let mut versions = self.versions();
            if !(from_cache && versions.release(name, &rv)) {
                versions.set_value(name, None);
            }
        }
        outcome
    }

    async fn execute(&self, obj: &K::Object, step: StepOf<K>) -> Outcome {
        match step {
            Decision::Ignore | Decision::Done => Outcome::Forget,
            Decision::WaitForMember => Outcome::Requeue,
            Decision::RemoveBeingCreated { patch, requeue } => {
                match self.patch(Target::Main, name_of(obj), &patch).await {
                    Ok(_) => requeue_if(requeue),
                    Err(e) => self.write_failed(name_of(obj), &e),
                }
            }
            Decision::Fail(failure) => self.fail(obj, &failure).await,
            Decision::DeleteFailed(warning) => self.warn(obj, &warning),
            Decision::Create(plan) => self.create(obj, plan).await,
            Decision::Poll(plan) => self.poll(obj, plan).await,
            Decision::Delete(plan) => self.delete(obj, plan).await,
        }
    }

    /// Writes the error status (unless it already says the same) and emits the
    /// event, even when the write failed (spec C.11, D.6); always a requeue.
    async fn fail(&self, obj: &K::Object, failure: &Failure) -> Outcome {
        let name = name_of(obj);
        let Some(doc) = content_error_patch(obj, &failure.message, Timestamp::now()) else {
            tracing::debug!(content = name, "Same error already recorded");
            return Outcome::Requeue;
        };
        if let Err(e) = self.patch(Target::Status, name, &doc).await {
            tracing::warn!(content = name, error = %e, "Failed to write the error status");
        }
        emit_warning(&self.events, obj, &failure.warning());
        Outcome::Requeue
    }

    fn warn(&self, obj: &K::Object, warning: &Warning) -> Outcome {
        emit_warning(&self.events, obj, warning);
        Outcome::Requeue
    }

    fn write_failed(&self, name: &str, e: &WriteError) -> Outcome {
        if e.is_conflict() {
            tracing::debug!(content = name, error = %e, "Write conflict");
        } else {
            tracing::error!(content = name, error = %e, "Write failed");
        }
        Outcome::Requeue
    }

    /// Dynamic creation (spec C.3, D.3); input errors already excluded by
    /// decide.
    async fn create(&self, obj: &K::Object, plan: CreateOf<K>) -> Outcome {
        let name = name_of(obj);
        let secrets = match self.secrets(plan.secret_ref()).await {
            Ok(s) => s,
            Err(e) => {
                let inner =
                    (K::TEXTS.create_input_error)(name, messages::credentials_error(name, e));
                return self
                    .fail(obj, &(K::TEXTS.failure)(plan.attempt(), inner))
                    .await;
            }
        };
        let mut current = obj.clone();
        if let Some(mark) = plan.mark_in_flight() {
            match self.patch(Target::Main, name, mark).await {
                Ok(written) => current = written,
                // The object changed since the copy the mark was made from
                // (see `patch::add_annotation`): no RPC was sent, retry the
                // key from a fresh copy without reporting an error.
                Err(e) if e.is_conflict() => return self.write_failed(name, &e),
                Err(e) => {
                    let inner = format!(
                        "failed to add {} annotation on the content {name}: {e}",
                        K::Object::BEING_CREATED_NAME
                    );
                    return self
                        .fail(obj, &(K::TEXTS.failure)(plan.attempt(), inner))
                        .await;
                }
            }
        }
        let observed = match K::create(self.call(&plan, secrets, name)).await {
            Ok(observed) => observed,
            Err(err) => {
                let outcome = K::on_create_error(&plan, &err);
                let mut failure = outcome.failure;
                if let Some(remove) = outcome.remove_being_created {
                    match self.patch(Target::Main, name, &remove).await {
                        Ok(written) => current = written,
                        Err(e) => {
                            failure =
                                (K::TEXTS.failure)(plan.attempt(), removal_error::<K>(name, e))
                        }
                    }
                }
                return self.fail(&current, &failure).await;
            }
        };
        match self.record(&current, &observed).await {
            Ok(written) => current = written,
            // The object kept changing under us: no error status is written
            // over a copy known to be stale. The being-created annotation
            // stays, so the next pass repeats the (idempotent) create and
            // records the handle; a delete cannot overtake it.
            Err(e) if e.is_conflict() => return self.write_failed(name, &e),
            Err(e) => {
                let inner = messages::status_update_error(name, e);
                return self
                    .fail(&current, &(K::TEXTS.failure)(plan.attempt(), inner))
                    .await;
            }
        }
        if annotation(current.meta(), K::Object::BEING_CREATED).is_some() {
            let remove = patch::remove_annotation(K::Object::BEING_CREATED);
            match self.patch(Target::Main, name, &remove).await {
                Ok(written) => current = written,
                Err(e) => {
                    let failure = (K::TEXTS.failure)(plan.attempt(), removal_error::<K>(name, e));
                    return self.fail(&current, &failure).await;
                }
            }
        }
        requeue_if(requeue_after_success(&current))
    }

    /// Status poll (spec C.5, D.4, or GetSnapshot for dynamic contents).
    async fn poll(&self, obj: &K::Object, plan: PollOf<K>) -> Outcome {
        let name = name_of(obj);
        let secrets = match self.secrets(plan.secret_ref()).await {
            Ok(s) => s,
            Err(e) => {
                let failure = K::poll_failure(obj, &plan, messages::credentials_error(name, e));
                return self.fail(obj, &failure).await;
            }
        };
        let observed = match K::poll(self.call(&plan, secrets, name)).await {
            Ok(observed) => observed,
            Err(inner) => return self.fail(obj, &K::poll_failure(obj, &plan, inner)).await,
        };
        match self.record(obj, &observed).await {
            Ok(updated) => requeue_if(requeue_after_success(&updated)),
            Err(e) if e.is_conflict() => self.write_failed(name, &e),
            Err(e) => {
                let inner = messages::status_update_error(name, e);
                self.fail(obj, &K::poll_failure(obj, &plan, inner)).await
            }
        }
    }

    /// Deletion (spec C.7, D.5) with one write: the CSI delete, then the
    /// finalizer removal. Upstream clears the status in between (a second
    /// write); that clear protects nothing a CSI-conformant driver does not
    /// already guarantee, since deleting an unknown snapshot ID succeeds, so
    /// a delete repeated after a crash or after a refused finalizer removal
    /// is harmless. Within one process the delete is not repeated: the
    /// object is remembered until it leaves the cache.
    async fn delete(&self, obj: &K::Object, plan: DeletePlanOf<DeleteOf<K>>) -> Outcome {
        let name = name_of(obj);
        if let Some(del) = plan.csi_delete
            && !self.was_deleted(obj)
        {
            let secrets = match self.secrets(del.secret_ref()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(content = name, error = %e, "Failed to get snapshot credentials");
                    return self.warn(obj, &(K::TEXTS.delete_warning)(DeleteStage::Credentials));
                }
            };
            if K::delete(self.call(&del, secrets, name)).await.is_err() {
                return self.warn(obj, &(K::TEXTS.delete_warning)(DeleteStage::Rpc));
            }
            self.deleted().insert(name.to_owned(), uid_of(obj));
        }
        if let Some(doc) = plan.remove_finalizer {
            if let Err(e) = self.patch(Target::Main, name, &doc).await {
                return self.write_failed(name, &e);
            }
            tracing::info!(content = name, "Finalizer removed");
        }
        Outcome::Forget
    }

    fn deleted(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.deleted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this process already deleted the backend snapshot of this
    /// very object (same name and UID).
    fn was_deleted(&self, obj: &K::Object) -> bool {
        self.deleted()
            .get(name_of(obj))
            .is_some_and(|uid| *uid == uid_of(obj))
    }

    /// Merges `obs` into the status of `base` (spec C.6, D.6) and writes it
    /// if it changed; returns the latest object.
    async fn record(
        &self,
        base: &K::Object,
        obs: &ObservationOf<K>,
    ) -> Result<K::Object, WriteError> {
        let now = Timestamp::now();
        self.write_status(base, &|obj: &K::Object| obj.merge(obs, now))
            .await
    }

    /// Writes the status `next` computes from `base` (`None`: nothing to
    /// change, no request) and returns the updated object.
    ///
    /// Upstream GETs the object before every status merge. Here `base` is the freshest copy the sync has: the
    /// reply to its own previous write, else the cached object or the
    /// version store's reply, whichever is newer. Since the sidecar is the
    /// only writer of a content's status, that copy normally is the live
    /// state. The write is conditional on `base`'s resourceVersion, so a
    /// status merged from an older copy can never land: on `409 Conflict`
    /// the object is read once and the status rebuilt from it (the one GET
    /// left, only when someone else changed the object meanwhile); a second
    /// conflict is returned and the key is retried.
    async fn write_status(
        &self,
        base: &K::Object,
        next: &(dyn Fn(&K::Object) -> Option<StatusOf<K>> + Send + Sync),
    ) -> Result<K::Object, WriteError> {
        let name = name_of(base);
        let Some(status) = next(base) else {
            return Ok(base.clone());
        };
        match self.send_status(base, status).await {
            Err(e) if e.is_conflict() => {
                tracing::debug!(content = name, error = %e, "Status write conflict; reading the object");
            }
            other => return other,
        }
        let fresh = self
            .api
            .get(name)
            .await
            .map_err(|e| WriteError::from_kube(&K::Object::kind(&()), name, e))?;
        self.remember(&fresh);
        let Some(status) = next(&fresh) else {
            return Ok(fresh);
        };
        self.send_status(&fresh, status).await
    }

    async fn send_status(
        &self,
        base: &K::Object,
        status: StatusOf<K>,
    ) -> Result<K::Object, WriteError> {
        match K::status_write(base, status) {
            StatusWrite::Patch(doc) => self.patch(Target::Status, name_of(base), &doc).await,
            StatusWrite::Replace(obj) => {
                let written = write::replace_status(&self.api, &obj).await?;
                self.remember(&written);
                Ok(written)
            }
        }
    }

    async fn patch(
        &self,
        target: Target,
        name: &str,
        doc: &JsonPatch,
    ) -> Result<K::Object, WriteError> {
        let obj = write::json_patch(&self.api, name, target, &doc.to_value()).await?;
        self.remember(&obj);
        Ok(obj)
    }

    /// Stores the server's reply to one of our writes (spec C.1 step 3),
    /// kept as the informer keeps objects: without managedFields.
    fn remember(&self, obj: &K::Object) {
        let rv = obj.meta().resource_version.clone().unwrap_or_default();
        let mut kept = obj.clone();
        make_lean(&mut kept);
        self.versions()
            .record_write(name_of(obj), &rv, &Some(Arc::new(kept)));
    }

    fn call<'a, P>(&'a self, plan: &'a P, secrets: Secrets, name: &'a str) -> Call<'a, D, P> {
        Call {
            driver: &*self.driver,
            plan,
            secrets,
            name,
        }
    }

    async fn secrets(&self, secret_ref: Option<&SecretRef>) -> Result<Secrets, SecretError> {
        fetch_secrets(&self.core_client, secret_ref).await
    }
}

/// The text of a failed being-created annotation removal.
fn removal_error<K: Kind>(name: &str, e: WriteError) -> String {
    format!(
        "failed to remove {} annotation from the content {name}: {e}",
        K::Object::BEING_CREATED_NAME
    )
}

/// How to run a controller.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Driver name, naming rules and `--extra-create-metadata`.
    pub config: ReconcileConfig,
    /// `--worker-threads`.
    pub workers: usize,
    /// `--retry-interval-start` / `--retry-interval-max`.
    pub backoff: Backoff,
    /// Label selector (`--node-deployment`; the classes get it only where
    /// [`Kind::CLASSES_SELECTED`], spec B.5) and `--resync-period` (both
    /// informers).
    pub watch: WatchOptions,
}

impl ControllerOptions {
    /// Flag defaults for `driver_name`: one worker, 1 s → 5 min backoff,
    /// no selector, no resync.
    pub fn new(driver_name: impl Into<String>) -> Self {
        ControllerOptions {
            config: ReconcileConfig::new(driver_name),
            workers: 1,
            backoff: Backoff::default(),
            watch: WatchOptions::default(),
        }
    }
}

/// A started controller: informers, queue and workers.
#[derive(Debug)]
pub struct Running<K: Kind, D> {
    /// The executor (for inspection).
    pub controller: Arc<Pipeline<K, D>>,
    /// The kind's queue.
    pub queue: WorkQueue<Key>,
    informers: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl<K: Kind, D: SnapshotDriver> Running<K, D> {
    /// Stops taking keys, waits for the workers to finish the keys in
    /// flight, then stops the informers.
    pub async fn shutdown(self) {
        self.queue.shutdown();
        for w in self.workers {
            if let Err(e) = w.await {
                tracing::error!(error = %e, "{} worker failed", K::TEXTS.controller);
            }
        }
        for i in self.informers {
            i.abort();
        }
    }
}

impl<K: Kind, D: SnapshotDriver> Pipeline<K, D> {
    /// Starts the object and class informers feeding the queue
    /// [`Kind::QUEUE_NAME`] through the kind's update filter, waits for both
    /// caches (or `stop`) and starts `options.workers` workers. Returns `None` when `stop` fired before the
    /// caches synced (no worker started). Registers the queue's metrics with
    /// `metrics`, if given.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        driver: Arc<D>,
        snapshot_client: kube::Client,
        core_client: kube::Client,
        events: EventRecorder,
        options: ControllerOptions,
        metrics: Option<&WorkQueueMetrics>,
        stop: &CancellationToken,
    ) -> Option<Running<K, D>> {
        let queue = WorkQueue::new(K::QUEUE_NAME, options.backoff);
        if let Some(m) = metrics {
            m.watch(&queue);
        }
        let object_informer = Informer::<Lenient<K::Object>>::new(
            Api::all(snapshot_client.clone()),
            options.watch.clone(),
        );
        let class_watch = WatchOptions {
            label_selector: options
                .watch
                .label_selector
                .clone()
                .filter(|_| K::CLASSES_SELECTED),
            resync_period: options.watch.resync_period,
        };
        let class_informer =
            Informer::<Lenient<ClassOf<K>>>::new(Api::all(snapshot_client.clone()), class_watch);
        let contents = object_informer.cache();
        let classes = class_informer.cache();
        let informers = vec![
            tokio::spawn(
                object_informer.run(enqueue_when(queue.clone(), K::should_enqueue_update)),
            ),
            // Class events enqueue nothing: a key is decided with the class as
            // cached when it runs (upstream has no class handler either).
            tokio::spawn(class_informer.run(|_: Notification<Lenient<ClassOf<K>>>| {})),
        ];
        let synced = async {
            contents.wait_synced().await;
            classes.wait_synced().await;
        };
        tokio::select! {
            () = synced => {}
            () = stop.cancelled() => {
                tracing::error!("{} caches did not sync before shutdown; not starting its workers", K::TEXTS.controller);
                queue.shutdown();
                for i in informers {
                    i.abort();
                }
                return None;
            }
        }
        let controller = Arc::new(Pipeline::new(
            driver,
            snapshot_client,
            core_client,
            contents,
            classes,
            events,
            options.config,
        ));
        let workers = controller.spawn_workers(&queue, options.workers);
        tracing::info!(
            workers = options.workers.max(1),
            "{} started",
            K::TEXTS.controller
        );
        Some(Running {
            controller,
            queue,
            informers,
            workers,
        })
    }

    /// [`Pipeline::start`], then run until `stop` fires, then
    /// [`Running::shutdown`].
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        driver: Arc<D>,
        snapshot_client: kube::Client,
        core_client: kube::Client,
        events: EventRecorder,
        options: ControllerOptions,
        metrics: Option<&WorkQueueMetrics>,
        stop: CancellationToken,
    ) {
        let Some(running) = Self::start(
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
}
