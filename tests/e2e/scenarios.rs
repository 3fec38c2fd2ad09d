//! The end-to-end scenarios. Each one runs in its own namespace (see
//! `Scope`), prints a line per verified fact, and leaves cleanup to
//! `Scope::cleanup`, which runs whatever the outcome.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::future::BoxFuture;
use kube::runtime::watcher;
use serde_json::Value;

use crate::cluster::{
    BEING_CREATED, SECRET_NAME_ANN, SECRET_NAMESPACE_ANN, Scope, annotation, at,
    check_ready_content, is_ready, str_at, summary,
};
use crate::objects;

/// How a scenario ended when it did not fail.
pub enum Outcome {
    Passed,
    /// The scenario needs driver cooperation that was not configured.
    Skipped(String),
}

pub type ScenarioResult = Result<Outcome, String>;

pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub run: for<'a> fn(&'a Scope) -> BoxFuture<'a, ScenarioResult>,
}

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "snapshot-from-claim",
        about: "a VolumeSnapshot of a bound claim becomes ready with handle, size and creation time",
        run: |s| Box::pin(snapshot_from_claim(s)),
    },
    Scenario {
        name: "import-pre-provisioned",
        about: "a pre-provisioned VolumeSnapshotContent is imported and bound",
        run: |s| Box::pin(import_pre_provisioned(s)),
    },
    Scenario {
        name: "delete-policy-delete",
        about: "deleting a snapshot with the Delete policy deletes the backend snapshot",
        run: |s| Box::pin(delete_policy_delete(s)),
    },
    Scenario {
        name: "delete-policy-retain",
        about: "deleting a snapshot with the Retain policy keeps the backend snapshot",
        run: |s| Box::pin(delete_policy_retain(s)),
    },
    Scenario {
        name: "class-parameters",
        about: "class parameters reach the driver",
        run: |s| Box::pin(class_parameters(s)),
    },
    Scenario {
        name: "class-secrets",
        about: "secrets named by class templates are fetched and reach the driver",
        run: |s| Box::pin(class_secrets(s)),
    },
    Scenario {
        name: "unknown-reserved-parameter",
        about: "an unknown csi.storage.k8s.io/ class parameter gives an error status and an event",
        run: |s| Box::pin(unknown_reserved_parameter(s)),
    },
    Scenario {
        name: "transient-error-retried",
        about: "a transient driver error is retried with backoff and then succeeds",
        run: |s| Box::pin(transient_error_retried(s)),
    },
    Scenario {
        name: "delete-while-creating",
        about: "deleting a snapshot while its CreateSnapshot is in flight leaks nothing",
        run: |s| Box::pin(delete_while_creating(s)),
    },
];

/// Claim → class → snapshot → ready content; returns (snapshot, content,
/// snapshot handle). Checks every field of the ready content on the way.
async fn ready_snapshot(
    s: &Scope,
    deletion_policy: &str,
) -> Result<(String, String, String), String> {
    let (claim, volume) = s.bound_claim("src").await?;
    s.check(format!("claim {claim} is bound to volume {volume}"));
    let class = s
        .create_class(&deletion_policy.to_lowercase(), deletion_policy, &[])
        .await?;
    let snapshot = s.snapshot_claim("snap", &class, &claim).await?;
    let content = s.bound_content(&snapshot).await?;
    s.check(format!("snapshot {snapshot} is bound to content {content}"));
    let ready = s.wait_content_ready(&content).await?;
    let handle = check_ready_content(s, &ready, &volume)?;
    Ok((snapshot, content, handle))
}

async fn snapshot_from_claim(s: &Scope) -> ScenarioResult {
    let (snapshot, content, _) = ready_snapshot(s, "Delete").await?;
    let api = s.snapshots();
    let vs = s
        .wait_for(
            &format!("snapshot {snapshot} to report readyToUse"),
            || async {
                let vs = api.get(&snapshot).await.map_err(|e| e.to_string())?;
                Ok(is_ready(&vs).then_some(vs))
            },
        )
        .await?;
    for field in ["creationTime", "restoreSize"] {
        if at(&vs, &format!("/status/{field}")).is_none() {
            return Err(format!(
                "snapshot {snapshot} has no status.{field}: {}",
                summary(&vs)
            ));
        }
    }
    s.check(format!(
        "snapshot {snapshot} is readyToUse, creationTime {}, restoreSize {}",
        at(&vs, "/status/creationTime")
            .map(Value::to_string)
            .unwrap_or_default(),
        at(&vs, "/status/restoreSize")
            .map(Value::to_string)
            .unwrap_or_default()
    ));
    let warnings: Vec<String> = s
        .content_events(&content)
        .await?
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.reason)
        .collect();
    if !warnings.is_empty() {
        return Err(format!("a clean create recorded warnings: {warnings:?}"));
    }
    s.check("no Warning events on the content");
    Ok(Outcome::Passed)
}

/// Deletes a snapshot and waits for it and (when `content_goes`) its content
/// to disappear.
async fn delete_snapshot(
    s: &Scope,
    snapshot: &str,
    content: &str,
    content_goes: bool,
) -> Result<(), String> {
    let snapshots = s.snapshots();
    s.delete(&snapshots, snapshot).await?;
    if content_goes {
        s.wait_gone(&s.contents(), content, "content").await?;
        s.check(format!("content {content} was removed"));
    }
    s.wait_gone(&snapshots, snapshot, "snapshot").await?;
    s.check(format!("snapshot {snapshot} was removed"));
    Ok(())
}

/// Reports whether a handle that should be gone from the backend is gone.
async fn expect_backend_gone(s: &Scope, handle: &str) -> Result<(), String> {
    match s.handle_exists(handle).await? {
        Some(false) => Ok(()),
        Some(true) => Err(format!("backend snapshot {handle} still exists: it leaked")),
        None => {
            s.note(format!(
                "backend check for {handle} skipped (E2E_NO_LIST_SNAPSHOTS)"
            ));
            Ok(())
        }
    }
}

async fn delete_policy_delete(s: &Scope) -> ScenarioResult {
    let (snapshot, content, handle) = ready_snapshot(s, "Delete").await?;
    delete_snapshot(s, &snapshot, &content, true).await?;
    expect_backend_gone(s, &handle).await?;
    Ok(Outcome::Passed)
}

/// Takes a snapshot under the Retain policy, deletes the VolumeSnapshot and
/// then the retained content, and returns the handle, which must survive.
async fn retained_handle(s: &Scope) -> Result<String, String> {
    let (snapshot, content, handle) = ready_snapshot(s, "Retain").await?;
    delete_snapshot(s, &snapshot, &content, false).await?;
    let contents = s.contents();
    let kept = contents
        .get_opt(&content)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("content {content} was deleted although its policy is Retain"))?;
    if kept.metadata.deletion_timestamp.is_some()
        || str_at(&kept, "/status/snapshotHandle") != Some(handle.as_str())
    {
        return Err(format!("retained content changed: {}", summary(&kept)));
    }
    s.check(format!(
        "content {content} is kept with its handle after the snapshot is gone"
    ));
    s.delete(&contents, &content).await?;
    s.wait_gone(&contents, &content, "content").await?;
    s.check(format!(
        "retained content {content} deleted by hand is removed"
    ));
    Ok(handle)
}

async fn delete_policy_retain(s: &Scope) -> ScenarioResult {
    let handle = retained_handle(s).await?;
    match s.handle_exists(&handle).await? {
        Some(true) => s.check(format!(
            "backend snapshot {handle} survived (no DeleteSnapshot)"
        )),
        Some(false) => {
            return Err(format!(
                "backend snapshot {handle} was deleted despite the Retain policy"
            ));
        }
        None => s.note("backend check skipped (E2E_NO_LIST_SNAPSHOTS)"),
    }
    // Leave nothing behind on the backend either.
    s.delete_backend_snapshot(&handle).await?;
    expect_backend_gone(s, &handle).await?;
    Ok(Outcome::Passed)
}

async fn import_pre_provisioned(s: &Scope) -> ScenarioResult {
    let handle = retained_handle(s).await?;
    let snapshot = s.name("imported");
    let content = s
        .import_content("import", &handle, "Delete", &snapshot)
        .await?;
    let ready = s.wait_content_ready(&content).await?;
    if str_at(&ready, "/status/snapshotHandle") != Some(handle.as_str()) {
        return Err(format!(
            "imported content has another handle: {}",
            summary(&ready)
        ));
    }
    if at(&ready, "/status/creationTime")
        .and_then(Value::as_i64)
        .is_none_or(|t| t <= 0)
    {
        return Err(format!(
            "imported content has no creationTime: {}",
            summary(&ready)
        ));
    }
    s.check(format!(
        "the sidecar filled the status of {content} before binding (ready, handle {handle})"
    ));

    let vs: kube::api::DynamicObject =
        serde_json::from_value(objects::snapshot_of_content(&snapshot, &content))
            .map_err(|e| e.to_string())?;
    let snapshots = s.snapshots();
    let created = snapshots
        .create(&Default::default(), &vs)
        .await
        .map_err(|e| format!("create VolumeSnapshot {snapshot}: {e}"))?;
    let uid = created.metadata.uid.clone().unwrap_or_default();
    s.wait_for(&format!("snapshot {snapshot} to be ready"), || async {
        let vs = snapshots.get(&snapshot).await.map_err(|e| e.to_string())?;
        Ok(is_ready(&vs).then_some(()))
    })
    .await?;
    s.wait_content(
        &content,
        "the content to be bound to the snapshot's UID",
        |o| str_at(o, "/spec/volumeSnapshotRef/uid") == Some(uid.as_str()),
    )
    .await?;
    s.check(format!(
        "snapshot {snapshot} is ready and bound to {content}"
    ));
    delete_snapshot(s, &snapshot, &content, true).await?;
    expect_backend_gone(s, &handle).await?;
    Ok(Outcome::Passed)
}

async fn class_parameters(s: &Scope) -> ScenarioResult {
    let (claim, volume) = s.bound_claim("src").await?;
    let marker_key = "e2e.snapshot.example.com/marker";
    let marker = s.name("marker");
    let class = s
        .create_class("params", "Delete", &[(marker_key, &marker)])
        .await?;
    let snapshot = s.snapshot_claim("snap", &class, &claim).await?;
    let content = s.bound_content(&snapshot).await?;
    let ready = s.wait_content_ready(&content).await?;
    check_ready_content(s, &ready, &volume)?;
    s.check(format!(
        "a class with the plain parameter {marker_key} snapshots normally"
    ));

    let Some(reject) = s.settings.reject_param.clone() else {
        s.note("that the driver receives the parameters is not checked (set E2E_REJECT_PARAM)");
        return Ok(Outcome::Passed);
    };
    let class = s
        .create_class("reject", "Delete", &[(&reject.key, &reject.value)])
        .await?;
    let snapshot = s.snapshot_claim("rejected", &class, &claim).await?;
    let content = s.bound_content(&snapshot).await?;
    let (obj, message) = s.wait_content_error(&content).await?;
    if !message.contains("rpc error") {
        return Err(format!("the error did not come from the driver: {message}"));
    }
    if str_at(&obj, "/status/snapshotHandle").is_some() || is_ready(&obj) {
        return Err(format!(
            "a rejected create left a snapshot: {}",
            summary(&obj)
        ));
    }
    s.check(format!(
        "with {}={} the driver rejected the create: {message}",
        reject.key, reject.value
    ));
    let event = s.wait_event(&content, "SnapshotCreationFailed").await?;
    s.check(format!(
        "event SnapshotCreationFailed: {}",
        event.message.unwrap_or_default()
    ));
    Ok(Outcome::Passed)
}

async fn class_secrets(s: &Scope) -> ScenarioResult {
    let (claim, volume) = s.bound_claim("src").await?;
    let mut params = vec![
        (
            "csi.storage.k8s.io/snapshotter-secret-name",
            "${volumesnapshot.name}-creds".to_string(),
        ),
        (
            "csi.storage.k8s.io/snapshotter-secret-namespace",
            "${volumesnapshot.namespace}".to_string(),
        ),
    ];
    let require = s.settings.secret_param.clone();
    if let Some(p) = &require {
        params.push((p.key.as_str(), p.value.clone()));
    }
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let class = s.create_class("secrets", "Delete", &pairs).await?;
    let snapshot = s.snapshot_claim("snap", &class, &claim).await?;
    let content = s.bound_content(&snapshot).await?;
    let secret = format!("{snapshot}-creds");

    // The controller resolved the templates into the content's annotations.
    let obj = s
        .wait_content(&content, "the deletion-secret annotations", |o| {
            annotation(o, SECRET_NAME_ANN).is_some()
        })
        .await?;
    if annotation(&obj, SECRET_NAME_ANN) != Some(secret.as_str())
        || annotation(&obj, SECRET_NAMESPACE_ANN) != Some(s.ns.as_str())
    {
        return Err(format!(
            "templates resolved unexpectedly: {}",
            summary(&obj)
        ));
    }
    s.check(format!("templates resolved to secret {}/{secret}", s.ns));

    // The secret does not exist yet: the sidecar cannot fetch it, sends no
    // request, and reports it.
    let (obj, message) = s.wait_content_error(&content).await?;
    if str_at(&obj, "/status/snapshotHandle").is_some() {
        return Err(format!(
            "a snapshot was cut without its secret: {}",
            summary(&obj)
        ));
    }
    if annotation(&obj, BEING_CREATED).is_some() {
        return Err(
            "the being-created annotation was added although the inputs were invalid".into(),
        );
    }
    s.check(format!(
        "without the secret: error status, no handle, no being-created annotation ({message})"
    ));
    s.wait_event(&content, "SnapshotCreationFailed").await?;
    s.check("event SnapshotCreationFailed recorded");

    s.create_secret(
        &secret,
        &[("e2e-user", "e2e"), ("e2e-token", &s.name("token"))],
    )
    .await?;
    let ready = s.wait_content_ready(&content).await?;
    check_ready_content(s, &ready, &volume)?;
    s.check("after the secret was created the retried create succeeded and the error was cleared");
    match &require {
        Some(p) => s.check(format!(
            "the driver, told by {}={} to require secrets, accepted them",
            p.key, p.value
        )),
        None => {
            s.note("that the driver receives the secret data is not checked (set E2E_SECRET_PARAM)")
        }
    }

    if let Some(p) = &require {
        let control = s
            .create_class("nosecret", "Delete", &[(&p.key, &p.value)])
            .await?;
        let snapshot = s.snapshot_claim("nosecret", &control, &claim).await?;
        let content = s.bound_content(&snapshot).await?;
        let (_, message) = s.wait_content_error(&content).await?;
        s.check(format!(
            "control: the same parameter without secrets is rejected ({message})"
        ));
    }

    let handle = str_at(&ready, "/status/snapshotHandle")
        .unwrap_or_default()
        .to_string();
    delete_snapshot(s, &snapshot, &content, true).await?;
    s.check("DeleteSnapshot with the secret succeeded");
    expect_backend_gone(s, &handle).await?;
    Ok(Outcome::Passed)
}

async fn unknown_reserved_parameter(s: &Scope) -> ScenarioResult {
    let (claim, _) = s.bound_claim("src").await?;
    let key = "csi.storage.k8s.io/e2e-unknown";
    let class = s.create_class("reserved", "Delete", &[(key, "x")]).await?;
    let snapshot = s.snapshot_claim("snap", &class, &claim).await?;
    let content = s.bound_content(&snapshot).await?;
    let (obj, message) = s.wait_content_error(&content).await?;
    if !message.contains(key) {
        return Err(format!("the error does not name the key {key}: {message}"));
    }
    if is_ready(&obj) || str_at(&obj, "/status/snapshotHandle").is_some() {
        return Err(format!("content is not in error: {}", summary(&obj)));
    }
    s.check(format!("error status names the key: {message}"));
    if annotation(&obj, BEING_CREATED).is_some() {
        return Err(
            "the being-created annotation was added for a request that was never sent".into(),
        );
    }
    s.check("no being-created annotation (parameters are checked before it is added)");
    let event = s.wait_event(&content, "SnapshotCreationFailed").await?;
    let text = event.message.unwrap_or_default();
    if !text.starts_with("Failed to create snapshot") {
        return Err(format!("unexpected event message: {text}"));
    }
    s.check(format!("event SnapshotCreationFailed: {text}"));
    let snapshots = s.snapshots();
    s.wait_for("the error to reach the VolumeSnapshot", || async {
        let vs = snapshots.get(&snapshot).await.map_err(|e| e.to_string())?;
        Ok(str_at(&vs, "/status/error/message").map(str::to_string))
    })
    .await?;
    s.check(format!("snapshot {snapshot} shows the error"));
    delete_snapshot(s, &snapshot, &content, true).await?;
    s.check("the failed content did not block deletion");
    Ok(Outcome::Passed)
}

async fn transient_error_retried(s: &Scope) -> ScenarioResult {
    let Some(p) = s.settings.transient_param.clone() else {
        return Ok(Outcome::Skipped(
            "needs a fault-injecting driver (set E2E_TRANSIENT_PARAM)".into(),
        ));
    };
    let (claim, volume) = s.bound_claim("src").await?;
    let class = s
        .create_class("transient", "Delete", &[(&p.key, &p.value)])
        .await?;
    let snapshot = s.snapshot_claim("snap", &class, &claim).await?;
    let content = s.bound_content(&snapshot).await?;
    let ready = s.wait_content_ready(&content).await?;
    let failures: Vec<_> = s
        .content_events(&content)
        .await?
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("SnapshotCreationFailed"))
        .collect();
    let Some(first) = failures.first() else {
        return Err(format!(
            "the content became ready without a recorded failure; does the driver honour {}={}?",
            p.key, p.value
        ));
    };
    s.check(format!(
        "the first create failed ({} time(s)): {}",
        first.count.unwrap_or(1),
        first.message.clone().unwrap_or_default()
    ));
    check_ready_content(s, &ready, &volume)?;
    s.check("a later attempt, made by the sidecar on its own, succeeded and cleared the error");
    let handle = str_at(&ready, "/status/snapshotHandle")
        .unwrap_or_default()
        .to_string();
    delete_snapshot(s, &snapshot, &content, true).await?;
    expect_backend_gone(s, &handle).await?;
    Ok(Outcome::Passed)
}

async fn delete_while_creating(s: &Scope) -> ScenarioResult {
    let params: Vec<(String, String)> = match (&s.settings.slow_param, s.settings.slow_creates) {
        (Some(p), _) => vec![(p.key.clone(), p.value.clone())],
        (None, true) => Vec::new(),
        (None, false) => {
            return Ok(Outcome::Skipped(
                "needs a driver with slow creates (set E2E_SLOW_PARAM or E2E_SLOW_CREATES)".into(),
            ));
        }
    };
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (claim, _) = s.bound_claim("src").await?;
    let class = s.create_class("slow", "Delete", &pairs).await?;
    let snapshot = s.snapshot_claim("snap", &class, &claim).await?;
    let content = s.bound_content(&snapshot).await?;

    // Record every handle the content ever shows, however briefly.
    let handles = Arc::new(Mutex::new(BTreeSet::new()));
    let seen = Arc::clone(&handles);
    let config = watcher::Config::default().fields(&format!("metadata.name={content}"));
    let mut stream = watcher(s.contents(), config).boxed();
    let recorder = tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            let obj = match event {
                Ok(
                    watcher::Event::Apply(o)
                    | watcher::Event::InitApply(o)
                    | watcher::Event::Delete(o),
                ) => o,
                _ => continue,
            };
            if let (Some(h), Ok(mut set)) = (str_at(&obj, "/status/snapshotHandle"), seen.lock()) {
                set.insert(h.to_string());
            }
        }
    });

    let in_flight = s
        .wait_content(
            &content,
            "the being-created annotation (create in flight)",
            |o| annotation(o, BEING_CREATED).is_some(),
        )
        .await?;
    if is_ready(&in_flight) {
        recorder.abort();
        return Err("the create had already finished; the driver is not slow enough".into());
    }
    s.check("CreateSnapshot is in flight (being-created annotation set)");
    s.delete(&s.snapshots(), &snapshot).await?;
    // The content is marked for deletion (or, if everything went fast, is
    // already gone).
    let contents = s.contents();
    let pending = s
        .wait_for("the content to be marked for deletion", || async {
            let obj = contents
                .get_opt(&content)
                .await
                .map_err(|e| e.to_string())?;
            Ok(match obj {
                None => Some(None),
                Some(o) if o.metadata.deletion_timestamp.is_some() => Some(Some(o)),
                Some(_) => None,
            })
        })
        .await;
    match pending {
        Ok(Some(o)) if annotation(&o, BEING_CREATED).is_some() => {
            s.check("the content is marked for deletion but kept while the create is in flight");
        }
        Ok(_) => s.note("the create finished before the deletion request was seen"),
        Err(e) => {
            recorder.abort();
            return Err(e);
        }
    }
    let gone = s.wait_gone(&s.contents(), &content, "content").await;
    recorder.abort();
    gone?;
    s.check(format!("content {content} was removed"));
    let handles: Vec<String> = handles
        .lock()
        .map(|h| h.iter().cloned().collect())
        .unwrap_or_default();
    let [handle] = handles.as_slice() else {
        return Err(format!(
            "expected the finished create to record exactly one handle before deletion, saw {handles:?}"
        ));
    };
    s.check(format!(
        "the in-flight create finished with handle {handle} before the content went"
    ));
    expect_backend_gone(s, handle).await?;
    Ok(Outcome::Passed)
}
