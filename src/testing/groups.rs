//! Driving a volume group snapshot from outside the sidecar, for the demo and
//! tests: the objects the snapshot-controller would create (a
//! VolumeGroupSnapshotClass, a dynamic VolumeGroupSnapshotContent bound to a
//! VolumeGroupSnapshot UID, with the bound-protection finalizer), its
//! deletion as the snapshot-controller performs it, and waits for the
//! sidecar's results.
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use csi_snapshotter::testing::groups::{self, GroupRequest};
//! // The sidecar (with its group controller) runs against the same API server.
//! let req = GroupRequest::new("mock.csi.k8s.io", "demo-group", ["vol-1", "vol-2"]);
//! let ready = groups::snapshot_group(&client, &req, Duration::from_secs(30)).await?;
//! println!("{:?}", ready.status);
//! groups::delete_group(&client, &req.content_name(), Duration::from_secs(30)).await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::k8s::keys;
use crate::k8s::types::{
    GROUP_SNAPSHOT_GROUP, VERSION_V1, VolumeGroupSnapshotClass, VolumeGroupSnapshotContent,
    VolumeGroupSnapshotContentSource, VolumeGroupSnapshotContentSpec,
};

/// How often the waits read the object: quick enough for a demo, light on
/// the API server.
const POLL: Duration = Duration::from_millis(50);

/// Why driving a group failed.
#[derive(Debug, thiserror::Error)]
pub enum GroupDriveError {
    /// An API request failed.
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    /// The group did not reach the wanted state in time.
    #[error("timed out after {timeout:?} waiting for {what} of {name}; last status: {last}")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// The VolumeGroupSnapshotContent.
        name: String,
        /// The wait.
        timeout: Duration,
        /// The last status seen, as JSON.
        last: String,
    },
}

/// A dynamic group snapshot of some volumes, as the snapshot-controller
/// would request it from the sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRequest {
    /// CSI driver name.
    pub driver: String,
    /// VolumeGroupSnapshot name (namespace `namespace`).
    pub name: String,
    /// VolumeGroupSnapshot namespace.
    pub namespace: String,
    /// VolumeGroupSnapshot UID: names the content and the backend group.
    pub uid: String,
    /// VolumeGroupSnapshotClass to use (created if missing).
    pub class: String,
    /// `Delete` or `Retain`.
    pub deletion_policy: String,
    /// CSI handles of the volumes, in order.
    pub volume_handles: Vec<String>,
}

impl GroupRequest {
    /// A request in namespace `default` with class `group-snapshot-class`,
    /// Delete policy and a fresh UID.
    pub fn new<I, S>(driver: &str, name: &str, volume_handles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        GroupRequest {
            driver: driver.to_string(),
            name: name.to_string(),
            namespace: "default".to_string(),
            uid: uuid::Uuid::new_v4().to_string(),
            class: "group-snapshot-class".to_string(),
            deletion_policy: keys::DELETION_POLICY_DELETE.to_string(),
            volume_handles: volume_handles.into_iter().map(Into::into).collect(),
        }
    }

    /// `groupsnapcontent-<UID>`, the name the snapshot-controller uses.
    pub fn content_name(&self) -> String {
        format!("groupsnapcontent-{}", self.uid)
    }

    /// The class object.
    pub fn class_object(&self) -> VolumeGroupSnapshotClass {
        VolumeGroupSnapshotClass {
            metadata: ObjectMeta {
                name: Some(self.class.clone()),
                ..ObjectMeta::default()
            },
            driver: self.driver.clone(),
            deletion_policy: Some(self.deletion_policy.clone()),
            parameters: Some(BTreeMap::new()),
        }
    }

    /// The content object.
    pub fn content_object(&self) -> VolumeGroupSnapshotContent {
        VolumeGroupSnapshotContent {
            metadata: ObjectMeta {
                name: Some(self.content_name()),
                finalizers: Some(vec![keys::FINALIZER_VGSC.to_string()]),
                ..ObjectMeta::default()
            },
            spec: VolumeGroupSnapshotContentSpec {
                deletion_policy: Some(self.deletion_policy.clone()),
                driver: self.driver.clone(),
                source: VolumeGroupSnapshotContentSource {
                    group_snapshot_handles: None,
                    volume_handles: Some(self.volume_handles.clone()),
                },
                volume_group_snapshot_class_name: Some(self.class.clone()),
                volume_group_snapshot_ref: ObjectReference {
                    api_version: Some(format!("{GROUP_SNAPSHOT_GROUP}/{VERSION_V1}")),
                    kind: Some("VolumeGroupSnapshot".to_string()),
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    uid: Some(self.uid.clone()),
                    ..ObjectReference::default()
                },
            },
            status: None,
        }
    }
}

/// Creates the class (unless it exists) and the content; returns the
/// created content.
pub async fn request_group(
    client: &kube::Client,
    req: &GroupRequest,
) -> Result<VolumeGroupSnapshotContent, GroupDriveError> {
    let classes: Api<VolumeGroupSnapshotClass> = Api::all(client.clone());
    if classes.get_opt(&req.class).await?.is_none() {
        classes
            .create(&PostParams::default(), &req.class_object())
            .await?;
    }
    let contents: Api<VolumeGroupSnapshotContent> = Api::all(client.clone());
    Ok(contents
        .create(&PostParams::default(), &req.content_object())
        .await?)
}

/// Waits until the content `name` satisfies `done`; returns it.
pub async fn wait_content(
    client: &kube::Client,
    name: &str,
    what: &'static str,
    timeout: Duration,
    done: impl Fn(&VolumeGroupSnapshotContent) -> bool,
) -> Result<VolumeGroupSnapshotContent, GroupDriveError> {
    let api: Api<VolumeGroupSnapshotContent> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = api.get_opt(name).await?;
        if let Some(c) = last.as_ref().filter(|c| done(c)) {
            return Ok(c.clone());
        }
        if tokio::time::Instant::now() >= deadline {
            let last = last
                .and_then(|c| c.status)
                .map(|s| serde_json::to_string(&s).unwrap_or_default())
                .unwrap_or_else(|| "none".to_string());
            return Err(GroupDriveError::Timeout {
                what,
                name: name.to_string(),
                timeout,
                last,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Requests the group and waits until the sidecar reports it ready with
/// its member list.
pub async fn snapshot_group(
    client: &kube::Client,
    req: &GroupRequest,
    timeout: Duration,
) -> Result<VolumeGroupSnapshotContent, GroupDriveError> {
    request_group(client, req).await?;
    wait_content(
        client,
        &req.content_name(),
        "readiness",
        timeout,
        is_ready_with_members,
    )
    .await
}

/// Ready, with a group handle and a non-empty member list, and the sidecar
/// done with the create (no being-created annotation left).
pub fn is_ready_with_members(c: &VolumeGroupSnapshotContent) -> bool {
    c.is_ready()
        && c.annotation(keys::ANN_VGS_BEING_CREATED).is_none()
        && c.status_handle().is_some()
        && c.status
            .as_ref()
            .and_then(|s| s.volume_snapshot_info_list.as_ref())
            .is_some_and(|l| !l.is_empty())
}

/// Deletes the content as the snapshot-controller does when its VGS is
/// deleted (being-deleted annotation, then DELETE), and waits until the
/// sidecar has removed the finalizer and the object is gone.
pub async fn delete_group(
    client: &kube::Client,
    name: &str,
    timeout: Duration,
) -> Result<(), GroupDriveError> {
    let api: Api<VolumeGroupSnapshotContent> = Api::all(client.clone());
    let mark =
        json!({"metadata": {"annotations": {keys::ANN_VGS_BEING_DELETED: keys::ANN_VALUE_YES}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(mark))
        .await?;
    api.delete(name, &DeleteParams::default()).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let Some(last) = api.get_opt(name).await? else {
            return Ok(());
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(GroupDriveError::Timeout {
                what: "deletion",
                name: name.to_string(),
                timeout,
                last: serde_json::to_string(&last.status).unwrap_or_default(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}
