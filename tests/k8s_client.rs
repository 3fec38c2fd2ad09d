//! The Kubernetes client: built from `--kubeconfig`, every request passes the
//! client-side token bucket, a watch takes one token when it starts.

use std::time::Duration;

use csi_snapshotter::k8s::client::{self, RateLimit, TokenBucket};
use csi_snapshotter::k8s::types::VolumeSnapshotContent;
use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions};
use futures::StreamExt;
use kube::Api;
use kube::api::{ListParams, WatchParams};

#[tokio::test]
async fn client_from_kubeconfig_path_talks_to_the_server() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let client = client::build_client(Some(server.kubeconfig_path()), RateLimit::default())
        .await
        .expect("client");
    let api: Api<VolumeSnapshotContent> = Api::all(client);
    let list = api.list(&ListParams::default()).await.expect("list");
    assert!(list.items.is_empty());
    assert_eq!(server.request_count("LIST", "volumesnapshotcontents"), 1);
}

#[tokio::test]
async fn a_missing_kubeconfig_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let Err(err) = client::build_client(Some(&dir.path().join("nope")), RateLimit::Unlimited).await
    else {
        panic!("a missing kubeconfig must fail");
    };
    assert!(
        matches!(err, client::ClientError::ReadKubeconfig { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn every_request_takes_a_token_and_a_watch_takes_one() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let config = client::load_config(Some(server.kubeconfig_path()))
        .await
        .expect("config");
    // Refill so slow that it cannot matter during the test.
    let bucket = TokenBucket::new(1e-6, 100);
    let client = client::client_with_bucket(config, bucket.clone()).expect("client");
    let api: Api<VolumeSnapshotContent> = Api::all(client);
    for _ in 0..3 {
        api.list(&ListParams::default()).await.expect("list");
    }
    let used = 100.0 - bucket.available();
    assert!((used - 3.0).abs() < 0.01, "3 lists took {used} tokens");

    let mut watch = api
        .watch(&WatchParams::default().timeout(5), "0")
        .await
        .expect("watch")
        .boxed();
    let vsc: VolumeSnapshotContent = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "c1"},
        "spec": {"driver": "d", "deletionPolicy": "Delete", "source": {"volumeHandle": "v"},
                 "volumeSnapshotRef": {"name": "s", "namespace": "default", "uid": "u"}}
    }))
    .unwrap();
    api.create(&Default::default(), &vsc).await.expect("create");
    let ev = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("event");
    assert!(ev.is_some());
    let used = 100.0 - bucket.available();
    assert!(
        (used - 5.0).abs() < 0.01,
        "3 lists + 1 watch + 1 create took {used} tokens"
    );
}

#[tokio::test]
async fn an_empty_bucket_holds_requests_back() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let config = client::load_config(Some(server.kubeconfig_path()))
        .await
        .expect("config");
    let client = client::client_from_config(
        config,
        RateLimit::TokenBucket {
            qps: 1e-6,
            burst: 1,
        },
    )
    .expect("client");
    let api: Api<VolumeSnapshotContent> = Api::all(client);
    api.list(&ListParams::default())
        .await
        .expect("first list uses the burst");
    let second =
        tokio::time::timeout(Duration::from_millis(300), api.list(&ListParams::default())).await;
    assert!(second.is_err(), "the second request must wait for a token");
    assert_eq!(server.request_count("LIST", "volumesnapshotcontents"), 1);
}

#[tokio::test]
async fn unlimited_clients_are_not_held_back() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let client = client::build_client(Some(server.kubeconfig_path()), RateLimit::Unlimited)
        .await
        .expect("client");
    let api: Api<VolumeSnapshotContent> = Api::all(client);
    // At the default 5 QPS / burst 10 these would need 10 s.
    let all = async {
        for _ in 0..60 {
            api.list(&ListParams::default()).await.expect("list");
        }
    };
    tokio::time::timeout(Duration::from_secs(5), all)
        .await
        .expect("not rate limited");
    assert_eq!(server.request_count("LIST", "volumesnapshotcontents"), 60);
}
