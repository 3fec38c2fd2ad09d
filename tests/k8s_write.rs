//! Writes (spec C.10): one JSON Patch request on the main resource or on
//! `/status`, the status PUT, the reply carries the new resourceVersion, and
//! errors know NotFound / Conflict / retry.

use csi_snapshotter::k8s::types::VolumeSnapshotContent;
use csi_snapshotter::k8s::write::{self, Target, WriteError};
use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions};
use kube::Api;
use serde_json::json;

async fn setup() -> (ApiServer, Api<VolumeSnapshotContent>, VolumeSnapshotContent) {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let api: Api<VolumeSnapshotContent> = Api::all(server.client().await);
    let vsc: VolumeSnapshotContent = serde_json::from_value(json!({
        "metadata": {"name": "c1", "annotations": {"a": "1"}, "finalizers": ["f1", "f2"]},
        "spec": {"driver": "d", "deletionPolicy": "Delete", "source": {"volumeHandle": "v"},
                 "volumeSnapshotRef": {"name": "s", "namespace": "default", "uid": "u"}}
    }))
    .unwrap();
    let created = api.create(&Default::default(), &vsc).await.expect("create");
    (server, api, created)
}

fn rv(o: &VolumeSnapshotContent) -> u64 {
    o.metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn main_resource_patch_is_one_request_and_returns_the_new_object() {
    let (server, api, created) = setup().await;
    let gets_before = server.request_count("GET", "volumesnapshotcontents");
    let doc = json!([{"op": "add", "path": "/metadata/annotations/snapshot.storage.kubernetes.io~1volumesnapshot-being-created", "value": "yes"}]);
    let reply = write::json_patch(&api, "c1", Target::Main, &doc)
        .await
        .expect("patch");
    assert!(rv(&reply) > rv(&created));
    let ann = reply.metadata.annotations.as_ref().unwrap();
    assert_eq!(
        ann.get("snapshot.storage.kubernetes.io/volumesnapshot-being-created")
            .map(String::as_str),
        Some("yes")
    );
    assert_eq!(ann.get("a").map(String::as_str), Some("1"));
    assert_eq!(server.request_count("PATCH", "volumesnapshotcontents"), 1);
    assert_eq!(
        server.request_count("GET", "volumesnapshotcontents"),
        gets_before,
        "no GET before a patch"
    );
    let stored = server.object("volumesnapshotcontents", "", "c1").unwrap();
    assert_eq!(
        stored["metadata"]["resourceVersion"],
        json!(rv(&reply).to_string())
    );
}

#[tokio::test]
async fn status_patch_goes_to_the_subresource() {
    let (server, api, _) = setup().await;
    let doc = json!([{"op": "replace", "path": "/status", "value": {"readyToUse": true, "snapshotHandle": "h1", "restoreSize": 10}}]);
    let reply = write::json_patch(&api, "c1", Target::Status, &doc)
        .await
        .expect("patch status");
    let status = reply.status.as_ref().expect("status");
    assert_eq!(status.ready_to_use, Some(true));
    assert_eq!(status.snapshot_handle.as_deref(), Some("h1"));
    assert_eq!(
        server.request_count("PATCH", "volumesnapshotcontents/status"),
        1
    );
    // A status patch does not touch metadata.
    assert_eq!(
        reply.metadata.finalizers,
        Some(vec!["f1".to_string(), "f2".to_string()])
    );
}

#[tokio::test]
async fn status_put_carries_the_resource_version_and_can_conflict() {
    let (server, api, created) = setup().await;
    let doc = json!([{"op": "replace", "path": "/status", "value": {"readyToUse": true}}]);
    let newer = write::json_patch(&api, "c1", Target::Status, &doc)
        .await
        .expect("patch status");

    // The stale copy conflicts and says so.
    let mut stale = created.clone();
    stale.status = None;
    let err = write::replace_status(&api, &stale).await.unwrap_err();
    assert!(err.is_conflict() && err.should_requeue(), "{err}");

    let mut fresh = newer.clone();
    fresh.status = None;
    let reply = write::replace_status(&api, &fresh).await.expect("put");
    assert!(reply.status.is_none() || reply.status.as_ref().unwrap().ready_to_use.is_none());
    assert!(rv(&reply) > rv(&newer));
    assert_eq!(
        server.request_count("PUT", "volumesnapshotcontents/status"),
        2
    );
}

#[tokio::test]
async fn a_missing_object_is_not_found_and_not_requeued() {
    let (_server, api, _) = setup().await;
    let doc = json!([{"op": "replace", "path": "/metadata/finalizers", "value": []}]);
    let err = write::json_patch(&api, "nope", Target::Main, &doc)
        .await
        .unwrap_err();
    assert!(err.is_not_found() && !err.should_requeue(), "{err}");
    assert_eq!(err.metric_label(), "not_found");
}

#[tokio::test]
async fn a_rejected_patch_is_an_error_that_requeues() {
    let (_server, api, _) = setup().await;
    // Removing an annotation the live object lacks is rejected by the server.
    let doc = json!([{"op": "remove", "path": "/metadata/annotations/missing"}]);
    let err = write::json_patch(&api, "c1", Target::Main, &doc)
        .await
        .unwrap_err();
    assert!(
        matches!(err, WriteError::Rejected { .. }) && err.should_requeue(),
        "{err}"
    );
}

#[tokio::test]
async fn server_errors_are_classified_and_retryable() {
    let (server, api, _) = setup().await;
    server
        .faults()
        .fail_next("PATCH", "volumesnapshotcontents", "", 500, 1);
    let doc = json!([{"op": "replace", "path": "/metadata/finalizers", "value": ["f1"]}]);
    let err = write::json_patch(&api, "c1", Target::Main, &doc)
        .await
        .unwrap_err();
    assert!(
        matches!(err, WriteError::Rejected { code: 500, .. }) && err.should_requeue(),
        "{err}"
    );
    let ok = write::json_patch(&api, "c1", Target::Main, &doc)
        .await
        .expect("second try");
    assert_eq!(ok.metadata.finalizers, Some(vec!["f1".to_string()]));
}

#[tokio::test]
async fn a_document_that_is_not_a_json_patch_is_refused_locally() {
    let (server, api, _) = setup().await;
    let before = server.request_count("*", "*");
    let err = write::json_patch(&api, "c1", Target::Main, &json!({"metadata": {}}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, WriteError::InvalidPatch { .. }) && !err.should_requeue(),
        "{err}"
    );
    assert_eq!(server.request_count("*", "*"), before, "nothing sent");
}
