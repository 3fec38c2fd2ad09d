//! Cluster access for the end-to-end suite: the connection, the snapshot
//! resources as untyped objects, and a per-scenario `Scope` that names,
//! creates, waits for and finally deletes everything a scenario touches.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Event, Namespace, PersistentVolume, PersistentVolumeClaim, Secret,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use serde_json::Value;

use crate::objects;
use crate::say;
use crate::settings::Settings;

/// How often a wait re-reads the object it waits for.
const POLL: Duration = Duration::from_millis(500);

/// Annotation the sidecar keeps on a content while a CreateSnapshot may be in
/// flight (spec 0.1).
pub const BEING_CREATED: &str = "snapshot.storage.kubernetes.io/volumesnapshot-being-created";
/// Annotations the snapshot-controller writes from the class secret templates.
pub const SECRET_NAME_ANN: &str = "snapshot.storage.kubernetes.io/deletion-secret-name";
pub const SECRET_NAMESPACE_ANN: &str = "snapshot.storage.kubernetes.io/deletion-secret-namespace";

/// 2020-01-01T00:00:00Z in nanoseconds: a creation time before this is the
/// "absent timestamp became 1970" failure, not a real snapshot time.
const PLAUSIBLE_CREATION_NS: i64 = 1_577_836_800 * 1_000_000_000;

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

pub fn snapshot_resource() -> ApiResource {
    resource(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
        "volumesnapshots",
    )
}

pub fn content_resource() -> ApiResource {
    resource(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotContent",
        "volumesnapshotcontents",
    )
}

pub fn class_resource() -> ApiResource {
    resource(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotClass",
        "volumesnapshotclasses",
    )
}

/// A JSON pointer into an untyped object (`/status/readyToUse`).
pub fn at<'a>(obj: &'a DynamicObject, pointer: &str) -> Option<&'a Value> {
    obj.data.pointer(pointer)
}

pub fn str_at<'a>(obj: &'a DynamicObject, pointer: &str) -> Option<&'a str> {
    at(obj, pointer).and_then(Value::as_str)
}

pub fn is_ready(obj: &DynamicObject) -> bool {
    at(obj, "/status/readyToUse") == Some(&Value::Bool(true))
}

pub fn annotation<'a>(obj: &'a DynamicObject, key: &str) -> Option<&'a str> {
    obj.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// What a content looks like, for failure messages.
pub fn summary(obj: &DynamicObject) -> String {
    let annotations: Vec<&String> = obj
        .metadata
        .annotations
        .iter()
        .flat_map(|a| a.keys())
        .collect();
    format!(
        "{} annotations={annotations:?} finalizers={:?} deleting={} status={}",
        obj.metadata.name.as_deref().unwrap_or("?"),
        obj.metadata.finalizers.as_deref().unwrap_or_default(),
        obj.metadata.deletion_timestamp.is_some(),
        at(obj, "/status")
            .map(Value::to_string)
            .unwrap_or_else(|| "none".into())
    )
}

/// Connects and checks that the snapshot CRDs are served.
pub async fn connect(settings: &Settings) -> Result<Client, String> {
    let kubeconfig = Kubeconfig::read_from(&settings.kubeconfig)
        .map_err(|e| format!("{}: {e}", settings.kubeconfig.display()))?;
    let options = KubeConfigOptions {
        context: settings.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| e.to_string())?;
    let url = config.cluster_url.clone();
    let client = Client::try_from(config).map_err(|e| e.to_string())?;
    let classes: Api<DynamicObject> = Api::all_with(client.clone(), &class_resource());
    classes
        .list(&ListParams::default().limit(1))
        .await
        .map_err(|e| {
            format!(
                "cannot list VolumeSnapshotClasses at {url} (are the snapshot CRDs installed?): {e}"
            )
        })?;
    say(&format!("e2e: cluster {url}, driver {}", settings.driver));
    Ok(client)
}

/// A short random-enough suffix that keeps names of concurrent or repeated
/// runs apart (no randomness crate is available outside the test peers).
fn suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mixed = (nanos ^ (u128::from(std::process::id()) << 40)) % 0x100_0000;
    format!("{mixed:06x}")
}

/// One scenario's namespace and everything it created.
pub struct Scope {
    pub client: Client,
    pub settings: Settings,
    pub ns: String,
    suffix: String,
    /// Cluster-scoped objects to delete at the end: (resource, name).
    cluster_objects: Mutex<Vec<(ApiResource, String)>>,
    /// Statically created PersistentVolumes to delete at the end.
    volumes: Mutex<Vec<String>>,
}

impl Scope {
    pub async fn new(client: Client, settings: &Settings, scenario: &str) -> Result<Scope, String> {
        let suffix = suffix();
        let ns = format!("e2e-{scenario}-{suffix}");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let object: Namespace =
            serde_json::from_value(objects::namespace(&ns)).map_err(|e| e.to_string())?;
        namespaces
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Scope {
            client,
            settings: settings.clone(),
            ns,
            suffix,
            cluster_objects: Mutex::new(Vec::new()),
            volumes: Mutex::new(Vec::new()),
        })
    }

    /// A name unique to this scenario run.
    pub fn name(&self, base: &str) -> String {
        format!("e2e-{base}-{}", self.suffix)
    }

    /// Prints one verified fact.
    pub fn check(&self, what: impl AsRef<str>) {
        say(&format!("   ok   {}", what.as_ref()));
    }

    /// Prints something that was not verified, and why.
    pub fn note(&self, what: impl AsRef<str>) {
        say(&format!("   --   {}", what.as_ref()));
    }

    pub fn snapshots(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &snapshot_resource())
    }

    pub fn contents(&self) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), &content_resource())
    }

    fn remember(&self, resource: ApiResource, name: &str) {
        if let Ok(mut list) = self.cluster_objects.lock() {
            list.push((resource, name.to_string()));
        }
    }

    /// Polls `probe` until it yields a value. Errors from the API are
    /// retried (and reported if the wait times out).
    pub async fn wait_for<T, F, Fut>(&self, what: &str, mut probe: F) -> Result<T, String>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, String>>,
    {
        let deadline = Instant::now() + self.settings.timeout;
        let mut last_error = None;
        loop {
            match probe().await {
                Ok(Some(value)) => return Ok(value),
                Ok(None) => {}
                Err(e) => last_error = Some(e),
            }
            if Instant::now() >= deadline {
                let detail = last_error
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default();
                return Err(format!(
                    "timed out after {:?} waiting for {what}{detail}",
                    self.settings.timeout
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the content satisfies `done`; on timeout the error shows
    /// the content as last seen.
    pub async fn wait_content(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&DynamicObject) -> bool,
    ) -> Result<DynamicObject, String> {
        let api = self.contents();
        let last = Mutex::new(None::<DynamicObject>);
        let result = self
            .wait_for(what, || async {
                let obj = api.get_opt(name).await.map_err(|e| e.to_string())?;
                let Some(obj) = obj else { return Ok(None) };
                let hit = done(&obj);
                if let Ok(mut l) = last.lock() {
                    *l = Some(obj.clone());
                }
                Ok(hit.then_some(obj))
            })
            .await;
        result.map_err(|e| {
            let seen = last.lock().ok().and_then(|l| l.as_ref().map(summary));
            format!(
                "{e}; content last seen: {}",
                seen.unwrap_or_else(|| "never".into())
            )
        })
    }

    pub async fn wait_content_ready(&self, name: &str) -> Result<DynamicObject, String> {
        self.wait_content(
            name,
            &format!("content {name} to become readyToUse"),
            is_ready,
        )
        .await
    }

    /// Waits until the content has an error status and reports its message.
    pub async fn wait_content_error(&self, name: &str) -> Result<(DynamicObject, String), String> {
        let obj = self
            .wait_content(name, &format!("an error status on content {name}"), |o| {
                str_at(o, "/status/error/message").is_some()
            })
            .await?;
        let message = str_at(&obj, "/status/error/message")
            .unwrap_or_default()
            .to_string();
        Ok((obj, message))
    }

    pub async fn wait_gone(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        what: &str,
    ) -> Result<(), String> {
        let last = Mutex::new(None::<DynamicObject>);
        let result = self
            .wait_for(&format!("{what} {name} to disappear"), || async {
                let obj = api.get_opt(name).await.map_err(|e| e.to_string())?;
                let gone = obj.is_none();
                if let Ok(mut l) = last.lock() {
                    *l = obj;
                }
                Ok(gone.then_some(()))
            })
            .await;
        result.map_err(|e| {
            let seen = last.lock().ok().and_then(|l| l.as_ref().map(summary));
            format!("{e}; last seen: {}", seen.unwrap_or_default())
        })
    }

    /// Creates a VolumeSnapshotClass for the driver.
    pub async fn create_class(
        &self,
        base: &str,
        deletion_policy: &str,
        params: &[(&str, &str)],
    ) -> Result<String, String> {
        let name = self.name(base);
        let obj: DynamicObject = serde_json::from_value(objects::snapshot_class(
            &name,
            &self.settings.driver,
            deletion_policy,
            params,
        ))
        .map_err(|e| e.to_string())?;
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &class_resource());
        api.create(&PostParams::default(), &obj)
            .await
            .map_err(|e| format!("create VolumeSnapshotClass {name}: {e}"))?;
        self.remember(class_resource(), &name);
        Ok(name)
    }

    pub async fn create_secret(&self, name: &str, data: &[(&str, &str)]) -> Result<(), String> {
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        api.create(&PostParams::default(), &secret)
            .await
            .map_err(|e| format!("create Secret {name}: {e}"))?;
        Ok(())
    }

    /// A claim bound to a volume of the driver; returns (claim name, CSI
    /// volume handle). Uses dynamic provisioning when a StorageClass for the
    /// driver is known, else a pre-created PersistentVolume.
    pub async fn bound_claim(&self, base: &str) -> Result<(String, String), String> {
        let claim = self.name(base);
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &self.ns);
        let object = match self.storage_class().await? {
            Some(class) => objects::claim(&claim, Some(&class), None),
            None => {
                let volume = self.static_volume(&claim).await?;
                objects::claim(&claim, None, Some(&volume))
            }
        };
        let object: PersistentVolumeClaim =
            serde_json::from_value(object).map_err(|e| e.to_string())?;
        claims
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| format!("create PersistentVolumeClaim {claim}: {e}"))?;
        let volume_name = self
            .wait_for(&format!("claim {claim} to be Bound"), || async {
                let c = claims.get(&claim).await.map_err(|e| e.to_string())?;
                let bound = c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
                Ok(bound.then(|| c.spec.and_then(|s| s.volume_name)).flatten())
            })
            .await?;
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = volumes.get(&volume_name).await.map_err(|e| e.to_string())?;
        let csi = pv
            .spec
            .and_then(|s| s.csi)
            .ok_or_else(|| format!("volume {volume_name} is not a CSI volume"))?;
        if csi.driver != self.settings.driver {
            return Err(format!(
                "volume {volume_name} belongs to driver {}",
                csi.driver
            ));
        }
        Ok((claim, csi.volume_handle))
    }

    /// `E2E_STORAGE_CLASS`, else a StorageClass whose provisioner is the
    /// driver (the default class first), else none.
    async fn storage_class(&self) -> Result<Option<String>, String> {
        let classes: Api<StorageClass> = Api::all(self.client.clone());
        let chosen = match &self.settings.storage_class {
            Some(name) => Some(
                classes
                    .get(name)
                    .await
                    .map_err(|e| format!("StorageClass {name}: {e}"))?,
            ),
            None => {
                let listed = match classes.list(&ListParams::default()).await {
                    Ok(list) => list.items,
                    // An API server without the storage API (the embedded one).
                    Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
                    Err(e) => return Err(e.to_string()),
                };
                let mut ours: Vec<StorageClass> = listed
                    .into_iter()
                    .filter(|c| c.provisioner == self.settings.driver)
                    .collect();
                ours.sort_by_key(|c| {
                    let default = c
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("storageclass.kubernetes.io/is-default-class"))
                        .is_some_and(|v| v == "true");
                    (!default, c.metadata.name.clone())
                });
                ours.into_iter().next()
            }
        };
        let Some(class) = chosen else { return Ok(None) };
        let name = class.metadata.name.clone().unwrap_or_default();
        if class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer") {
            return Err(format!(
                "StorageClass {name} binds on first consumer, so a claim without a pod never binds; \
                 set E2E_STORAGE_CLASS to a class with volumeBindingMode Immediate"
            ));
        }
        Ok(Some(name))
    }

    /// A PersistentVolume of the driver, pre-bound to `claim`.
    async fn static_volume(&self, claim: &str) -> Result<String, String> {
        let name = self.name(&format!("pv-{claim}"));
        let handle = self
            .settings
            .volume_handle
            .clone()
            .unwrap_or_else(|| self.name("volume"));
        let pv: PersistentVolume = serde_json::from_value(objects::static_volume(
            &name,
            &self.settings.driver,
            &handle,
            &self.ns,
            claim,
        ))
        .map_err(|e| e.to_string())?;
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        api.create(&PostParams::default(), &pv)
            .await
            .map_err(|e| format!("create PersistentVolume {name}: {e}"))?;
        if let Ok(mut list) = self.volumes.lock() {
            list.push(name.clone());
        }
        Ok(name)
    }

    /// Creates a VolumeSnapshot of `claim` and returns its name.
    pub async fn snapshot_claim(
        &self,
        base: &str,
        class: &str,
        claim: &str,
    ) -> Result<String, String> {
        let name = self.name(base);
        let obj: DynamicObject =
            serde_json::from_value(objects::snapshot_of_claim(&name, class, claim))
                .map_err(|e| e.to_string())?;
        self.snapshots()
            .create(&PostParams::default(), &obj)
            .await
            .map_err(|e| format!("create VolumeSnapshot {name}: {e}"))?;
        Ok(name)
    }

    /// The content the snapshot-controller bound to a snapshot.
    pub async fn bound_content(&self, snapshot: &str) -> Result<String, String> {
        let api = self.snapshots();
        self.wait_for(
            &format!(
                "snapshot {snapshot} to be bound to a content (is the snapshot-controller running?)"
            ),
            || async {
                let vs = api.get(snapshot).await.map_err(|e| e.to_string())?;
                Ok(str_at(&vs, "/status/boundVolumeSnapshotContentName").map(str::to_string))
            },
        )
        .await
    }

    /// Creates a pre-provisioned content for an existing backend handle.
    /// `snapshot` is the VolumeSnapshot it is meant for (it need not exist).
    pub async fn import_content(
        &self,
        base: &str,
        handle: &str,
        deletion_policy: &str,
        snapshot: &str,
    ) -> Result<String, String> {
        let name = self.name(base);
        let obj: DynamicObject = serde_json::from_value(objects::pre_provisioned_content(
            &name,
            &self.settings.driver,
            handle,
            deletion_policy,
            snapshot,
            &self.ns,
        ))
        .map_err(|e| e.to_string())?;
        self.contents()
            .create(&PostParams::default(), &obj)
            .await
            .map_err(|e| format!("create VolumeSnapshotContent {name}: {e}"))?;
        self.remember(content_resource(), &name);
        Ok(name)
    }

    pub async fn delete(&self, api: &Api<DynamicObject>, name: &str) -> Result<(), String> {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(format!("delete {name}: {e}")),
        }
    }

    /// Warning events recorded for a content (any namespace; the sidecar
    /// records them in `default` because contents are cluster-scoped).
    pub async fn content_events(&self, content: &str) -> Result<Vec<Event>, String> {
        let events: Api<Event> = Api::all(self.client.clone());
        let selector =
            format!("involvedObject.kind=VolumeSnapshotContent,involvedObject.name={content}");
        Ok(events
            .list(&ListParams::default().fields(&selector))
            .await
            .map_err(|e| e.to_string())?
            .items)
    }

    /// Waits for a Warning event with `reason` on the content.
    pub async fn wait_event(&self, content: &str, reason: &str) -> Result<Event, String> {
        self.wait_for(
            &format!("a {reason} event on content {content}"),
            || async {
                let events = self.content_events(content).await?;
                Ok(events.into_iter().find(|e| {
                    e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some("Warning")
                }))
            },
        )
        .await
    }

    /// Whether a snapshot handle still exists on the storage backend, as the
    /// sidecar sees it: a throw-away pre-provisioned content (Retain, bound
    /// to nothing) makes the sidecar call ListSnapshots for the handle; it
    /// becomes ready when the snapshot exists and gets an error status when
    /// it does not. `None` when the driver has no LIST_SNAPSHOTS (every
    /// handle would look present).
    pub async fn handle_exists(&self, handle: &str) -> Result<Option<bool>, String> {
        if self.settings.no_list_snapshots {
            return Ok(None);
        }
        let probe = self
            .import_content(
                &format!("probe-{}", probe_id()),
                handle,
                "Retain",
                "e2e-no-such-snapshot",
            )
            .await?;
        let seen = self
            .wait_content(
                &probe,
                &format!("the sidecar to look up handle {handle}"),
                |o| is_ready(o) || str_at(o, "/status/error/message").is_some(),
            )
            .await;
        let contents = self.contents();
        self.delete(&contents, &probe).await?;
        self.wait_gone(&contents, &probe, "probe content").await?;
        let seen = seen?;
        if !is_ready(&seen) {
            let message = str_at(&seen, "/status/error/message").unwrap_or_default();
            self.check(format!(
                "handle {handle} is not found on the backend ({message})"
            ));
        }
        Ok(Some(is_ready(&seen)))
    }

    /// Deletes a backend snapshot through the sidecar: a pre-provisioned
    /// content with the Delete policy that is deleted again at once.
    pub async fn delete_backend_snapshot(&self, handle: &str) -> Result<(), String> {
        let content = self
            .import_content(
                &format!("drop-{}", probe_id()),
                handle,
                "Delete",
                "e2e-no-such-snapshot",
            )
            .await?;
        self.wait_content(
            &content,
            &format!("the sidecar to fill content {content}"),
            |o| str_at(o, "/status/snapshotHandle").is_some(),
        )
        .await?;
        let contents = self.contents();
        self.delete(&contents, &content).await?;
        self.wait_gone(&contents, &content, "content").await
    }

    /// Deletes everything the scenario created. Snapshots go first and their
    /// contents are waited for, so a content stuck in deletion is reported
    /// (and left in place for inspection) instead of being torn down by force.
    pub async fn cleanup(&self) {
        let snapshots = self.snapshots();
        let contents = self.contents();
        if let Ok(list) = snapshots.list(&ListParams::default()).await {
            for vs in list.items {
                let name = vs.metadata.name.clone().unwrap_or_default();
                let done = match self.delete(&snapshots, &name).await {
                    Ok(()) => self.wait_gone(&snapshots, &name, "snapshot").await,
                    Err(e) => Err(e),
                };
                if let Err(e) = done {
                    self.note(format!("cleanup: {e}"));
                }
            }
        }
        // Contents left behind: Retain contents of our snapshots, and the
        // pre-provisioned contents the scenario made.
        let made: Vec<(ApiResource, String)> = self
            .cluster_objects
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        if let Ok(list) = contents.list(&ListParams::default()).await {
            for vsc in list.items {
                let name = vsc.metadata.name.clone().unwrap_or_default();
                let ours = str_at(&vsc, "/spec/volumeSnapshotRef/namespace")
                    == Some(self.ns.as_str())
                    || made.iter().any(|(_, n)| *n == name);
                if !ours {
                    continue;
                }
                let done = match self.delete(&contents, &name).await {
                    Ok(()) => self.wait_gone(&contents, &name, "content").await,
                    Err(e) => Err(e),
                };
                if let Err(e) = done {
                    self.note(format!(
                        "cleanup: content {name} is stuck ({e}); left for inspection, see docs/troubleshooting.md"
                    ));
                }
            }
        }
        for (resource, name) in made.iter().rev() {
            if resource.kind == "VolumeSnapshotContent" {
                continue;
            }
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), resource);
            if let Err(e) = self.delete(&api, name).await {
                self.note(format!("cleanup: {} {e}", resource.kind));
            }
        }
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &self.ns);
        let _ = claims
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        for pv in self.volumes.lock().map(|l| l.clone()).unwrap_or_default() {
            let _ = volumes.delete(&pv, &DeleteParams::default()).await;
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match namespaces.delete(&self.ns, &DeleteParams::default()).await {
            Ok(_) => say(&format!("   cleaned up namespace {}", self.ns)),
            Err(e) => self.note(format!("cleanup: namespace {}: {e}", self.ns)),
        }
    }
}

/// A distinct id for each probe content within a run.
fn probe_id() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .to_string()
}

/// Checks the fields the spec requires of a ready dynamic content and
/// returns its snapshot handle.
pub fn check_ready_content(
    scope: &Scope,
    content: &DynamicObject,
    volume_handle: &str,
) -> Result<String, String> {
    let name = content.metadata.name.as_deref().unwrap_or("?");
    if str_at(content, "/spec/driver") != Some(scope.settings.driver.as_str()) {
        return Err(format!(
            "content {name} has driver {:?}",
            str_at(content, "/spec/driver")
        ));
    }
    if str_at(content, "/spec/source/volumeHandle") != Some(volume_handle) {
        return Err(format!(
            "content {name} does not snapshot volume {volume_handle}"
        ));
    }
    let handle = str_at(content, "/status/snapshotHandle")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            format!(
                "ready content {name} has no snapshotHandle: {}",
                summary(content)
            )
        })?;
    scope.check(format!(
        "content {name} is readyToUse with snapshotHandle {handle}"
    ));
    let size = at(content, "/status/restoreSize").and_then(Value::as_i64);
    match size {
        Some(n) if n > 0 => scope.check(format!("restoreSize is {n} bytes")),
        _ => {
            return Err(format!(
                "ready content {name} has no positive restoreSize: {}",
                summary(content)
            ));
        }
    }
    let created = at(content, "/status/creationTime").and_then(Value::as_i64);
    match created {
        Some(ns) if ns >= PLAUSIBLE_CREATION_NS => {
            scope.check(format!("creationTime is {ns} ns since the epoch"));
        }
        other => {
            return Err(format!(
                "content {name} has an implausible creationTime {other:?}"
            ));
        }
    }
    if annotation(content, BEING_CREATED).is_some() {
        return Err(format!(
            "ready content {name} still has the being-created annotation"
        ));
    }
    if at(content, "/status/error").is_some() {
        return Err(format!(
            "ready content {name} still has an error status: {}",
            summary(content)
        ));
    }
    scope.check("no being-created annotation and no error status remain");
    Ok(handle.to_string())
}
