//! A stand-in for the cluster components the suite relies on but that an
//! API server alone lacks: the snapshot-controller and the PersistentVolume
//! binder. It exists only to exercise the suite against the embedded API
//! server (`E2E_STANDIN_CONTROLLER=1`, see docs/e2e.md); on a real cluster
//! the upstream snapshot-controller must do this work instead.
//!
//! It implements the controller facts of spec G.1 and nothing more, for the
//! scenarios' namespaces only (those labelled as e2e namespaces):
//! - a claim pre-bound to a volume becomes Bound;
//! - a VolumeSnapshot of a claim gets a content `snapcontent-<uid>` with the
//!   bound-protection finalizer and the resolved secret annotations;
//! - a VolumeSnapshot naming a content binds it (the content gets its UID);
//! - the content's status is copied into the snapshot's status;
//! - deleting a snapshot marks its content being-deleted and, under the
//!   Delete policy, deletes the content; the snapshot goes once that is done.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::cluster::{annotation, at, class_resource, content_resource, snapshot_resource, str_at};
use crate::objects::{CONTENT_FINALIZER, E2E_NAMESPACE_LABEL};

/// How often the stand-in looks at the cluster.
const TICK: Duration = Duration::from_millis(300);
/// The snapshot-controller's finalizer on snapshots (spec G.1).
const SNAPSHOT_FINALIZER: &str = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";
const BEING_DELETED: &str = "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted";
const SECRET_NAME_PARAM: &str = "csi.storage.k8s.io/snapshotter-secret-name";
const SECRET_NAMESPACE_PARAM: &str = "csi.storage.k8s.io/snapshotter-secret-namespace";

/// Runs until the task is aborted. Errors are retried on the next tick.
pub async fn run(client: Client) {
    loop {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let selector = format!("{E2E_NAMESPACE_LABEL}=csi-snapshotter-e2e");
        if let Ok(list) = namespaces
            .list(&ListParams::default().labels(&selector))
            .await
        {
            for ns in list.items.iter().filter_map(|n| n.metadata.name.clone()) {
                let _ = bind_claims(&client, &ns).await;
                let _ = sync_snapshots(&client, &ns).await;
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

type Res = Result<(), kube::Error>;

fn merge(value: Value) -> Patch<Value> {
    Patch::Merge(value)
}

async fn bind_claims(client: &Client, ns: &str) -> Res {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    for claim in claims.list(&ListParams::default()).await?.items {
        let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let (Some(name), Some(volume)) = (
            claim.metadata.name.clone(),
            claim.spec.as_ref().and_then(|s| s.volume_name.clone()),
        ) else {
            continue;
        };
        if bound {
            continue;
        }
        let pp = PatchParams::default();
        volumes
            .patch_status(&volume, &pp, &merge(json!({"status": {"phase": "Bound"}})))
            .await?;
        claims
            .patch_status(&name, &pp, &merge(json!({"status": {"phase": "Bound"}})))
            .await?;
    }
    Ok(())
}

async fn sync_snapshots(client: &Client, ns: &str) -> Res {
    let snapshots: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &snapshot_resource());
    for vs in snapshots.list(&ListParams::default()).await?.items {
        let name = vs.metadata.name.clone().unwrap_or_default();
        let bound = str_at(&vs, "/status/boundVolumeSnapshotContentName").map(str::to_string);
        let result = match (vs.metadata.deletion_timestamp.is_some(), bound) {
            (true, bound) => delete_snapshot(client, &snapshots, &vs, bound.as_deref()).await,
            (false, Some(content)) => copy_status(client, &snapshots, &name, &content).await,
            (false, None) => bind(client, &snapshots, &vs).await,
        };
        result?;
    }
    Ok(())
}

fn resolve(template: &str, vs: &DynamicObject, content: &str) -> String {
    template
        .replace(
            "${volumesnapshot.name}",
            vs.metadata.name.as_deref().unwrap_or_default(),
        )
        .replace(
            "${volumesnapshot.namespace}",
            vs.metadata.namespace.as_deref().unwrap_or_default(),
        )
        .replace("${volumesnapshotcontent.name}", content)
}

/// Creates (or binds) the content of a new snapshot.
async fn bind(client: &Client, snapshots: &Api<DynamicObject>, vs: &DynamicObject) -> Res {
    let name = vs.metadata.name.clone().unwrap_or_default();
    let ns = vs.metadata.namespace.clone().unwrap_or_default();
    let uid = vs.metadata.uid.clone().unwrap_or_default();
    let contents: Api<DynamicObject> = Api::all_with(client.clone(), &content_resource());
    let content = if let Some(pre) = str_at(vs, "/spec/source/volumeSnapshotContentName") {
        let patch = json!({
            "metadata": {"finalizers": [CONTENT_FINALIZER]},
            "spec": {"volumeSnapshotRef": {"uid": uid, "name": name, "namespace": ns}},
        });
        contents
            .patch(pre, &PatchParams::default(), &merge(patch))
            .await?;
        pre.to_string()
    } else {
        let Some(claim) = str_at(vs, "/spec/source/persistentVolumeClaimName") else {
            return Ok(());
        };
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        let Some(volume) = claims.get(claim).await?.spec.and_then(|s| s.volume_name) else {
            return Ok(());
        };
        let volumes: Api<PersistentVolume> = Api::all(client.clone());
        let Some(handle) = volumes
            .get(&volume)
            .await?
            .spec
            .and_then(|s| s.csi)
            .map(|c| c.volume_handle)
        else {
            return Ok(());
        };
        let class_name = str_at(vs, "/spec/volumeSnapshotClassName").unwrap_or_default();
        let classes: Api<DynamicObject> = Api::all_with(client.clone(), &class_resource());
        let class = classes.get(class_name).await?;
        let content = format!("snapcontent-{uid}");
        let mut annotations = serde_json::Map::new();
        if let (Some(n), Some(s)) = (
            str_at(
                &class,
                &format!("/parameters/{}", SECRET_NAME_PARAM.replace('/', "~1")),
            ),
            str_at(
                &class,
                &format!("/parameters/{}", SECRET_NAMESPACE_PARAM.replace('/', "~1")),
            ),
        ) {
            annotations.insert(
                "snapshot.storage.kubernetes.io/deletion-secret-name".into(),
                resolve(n, vs, &content).into(),
            );
            annotations.insert(
                "snapshot.storage.kubernetes.io/deletion-secret-namespace".into(),
                resolve(s, vs, &content).into(),
            );
        }
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": content, "finalizers": [CONTENT_FINALIZER], "annotations": annotations},
            "spec": {
                "volumeSnapshotRef": {
                    "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                    "name": name, "namespace": ns, "uid": uid,
                },
                "source": {"volumeHandle": handle},
                "volumeSnapshotClassName": class_name,
                "deletionPolicy": at(&class, "/deletionPolicy").cloned().unwrap_or(Value::Null),
                "driver": at(&class, "/driver").cloned().unwrap_or(Value::Null),
            },
        }))
        .map_err(kube::Error::SerdeError)?;
        match contents.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
        content
    };
    let pp = PatchParams::default();
    snapshots
        .patch(
            &name,
            &pp,
            &merge(json!({"metadata": {"finalizers": [SNAPSHOT_FINALIZER]}})),
        )
        .await?;
    snapshots
        .patch_status(
            &name,
            &pp,
            &merge(
                json!({"status": {"boundVolumeSnapshotContentName": content, "readyToUse": false}}),
            ),
        )
        .await?;
    Ok(())
}

/// Copies readiness, creation time, size and error into the snapshot.
async fn copy_status(
    client: &Client,
    snapshots: &Api<DynamicObject>,
    name: &str,
    content: &str,
) -> Res {
    let contents: Api<DynamicObject> = Api::all_with(client.clone(), &content_resource());
    let Some(vsc) = contents.get_opt(content).await? else {
        return Ok(());
    };
    let mut status = json!({
        "readyToUse": at(&vsc, "/status/readyToUse").cloned().unwrap_or(Value::Bool(false)),
        "error": at(&vsc, "/status/error").cloned().unwrap_or(Value::Null),
    });
    if let Some(ns) = at(&vsc, "/status/creationTime").and_then(Value::as_i64) {
        let time = jiff::Timestamp::from_nanosecond(i128::from(ns))
            .map_err(|e| kube::Error::SerdeError(serde::de::Error::custom(e.to_string())))?;
        status["creationTime"] = Value::from(time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    }
    if let Some(size) = at(&vsc, "/status/restoreSize").and_then(Value::as_i64) {
        status["restoreSize"] = Value::from(size.to_string());
    }
    snapshots
        .patch_status(
            name,
            &PatchParams::default(),
            &merge(json!({"status": status})),
        )
        .await?;
    Ok(())
}

async fn delete_snapshot(
    client: &Client,
    snapshots: &Api<DynamicObject>,
    vs: &DynamicObject,
    bound: Option<&str>,
) -> Res {
    let name = vs.metadata.name.clone().unwrap_or_default();
    let contents: Api<DynamicObject> = Api::all_with(client.clone(), &content_resource());
    if let Some(content) = bound
        && let Some(vsc) = contents.get_opt(content).await?
    {
        if annotation(&vsc, BEING_DELETED).is_none() {
            let patch = json!({"metadata": {"annotations": {BEING_DELETED: "yes"}}});
            contents
                .patch(content, &PatchParams::default(), &merge(patch))
                .await?;
        }
        if str_at(&vsc, "/spec/deletionPolicy") == Some("Delete") {
            if vsc.metadata.deletion_timestamp.is_none() {
                contents.delete(content, &DeleteParams::default()).await?;
            }
            // The snapshot goes once its content is gone.
            return Ok(());
        }
    }
    snapshots
        .patch(
            &name,
            &PatchParams::default(),
            &merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    Ok(())
}
