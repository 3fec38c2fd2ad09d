//! Conformance of the embedded API server's watch: event types, resume,
//! bookmarks, 410 Expired, selectors and fault injection.

use std::time::Duration;

use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions, WatchHistory};
use serde_json::{Value, json};

const VSC: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents";
const JSON: Option<&str> = Some("application/json");
const MERGE: Option<&str> = Some("application/merge-patch+json");
const WAIT: Duration = Duration::from_secs(5);

async fn server() -> ApiServer {
    ApiServer::start(ApiServerOptions::default()).await.unwrap()
}

fn vsc(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": name, "labels": labels},
        "spec": {"deletionPolicy": "Delete", "driver": "d", "source": {"volumeHandle": "v"},
                 "volumeSnapshotRef": {"name": "s", "namespace": "default"}}
    })
}

async fn create(s: &ApiServer, name: &str) -> Value {
    s.request("POST", VSC, JSON, Some(&vsc(name, json!({}))))
        .await
        .unwrap()
        .body
}

fn rv(obj: &Value) -> String {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn watch_streams_added_modified_deleted_as_chunked_lines() {
    let s = server().await;
    let start = s.resource_version();
    let mut w = s
        .watch_raw(&format!("{VSC}?watch=true&resourceVersion={start}"))
        .await
        .unwrap();
    assert_eq!(w.code, 200);
    assert_eq!(w.transfer_encoding, "chunked");
    assert_eq!(w.content_type, "application/json");
    let created = create(&s, "a").await;
    s.request(
        "PATCH",
        &format!("{VSC}/a"),
        MERGE,
        Some(&json!({"metadata": {"labels": {"x": "1"}}})),
    )
    .await
    .unwrap();
    s.request("DELETE", &format!("{VSC}/a"), None, None)
        .await
        .unwrap();
    let mut types = Vec::new();
    let mut versions = Vec::new();
    for _ in 0..3 {
        let ev = w.next(WAIT).await.unwrap().unwrap();
        assert_eq!(ev["object"]["kind"], "VolumeSnapshotContent");
        types.push(ev["type"].as_str().unwrap().to_string());
        versions.push(rv(&ev["object"]).parse::<u64>().unwrap());
    }
    assert_eq!(types, ["ADDED", "MODIFIED", "DELETED"]);
    assert_eq!(versions[0].to_string(), rv(&created));
    assert!(versions.windows(2).all(|p| p[0] < p[1]));
}

#[tokio::test]
async fn watch_resumes_from_a_version() {
    let s = server().await;
    let a = create(&s, "a").await;
    create(&s, "b").await;
    create(&s, "c").await;
    // From a's version: only b and c are replayed.
    let mut w = s
        .watch_raw(&format!("{VSC}?watch=true&resourceVersion={}", rv(&a)))
        .await
        .unwrap();
    let names: Vec<Value> = vec![
        w.next(WAIT).await.unwrap().unwrap()["object"]["metadata"]["name"].clone(),
        w.next(WAIT).await.unwrap().unwrap()["object"]["metadata"]["name"].clone(),
    ];
    assert_eq!(names, [json!("b"), json!("c")]);
    assert!(
        w.next(Duration::from_millis(200)).await.is_err(),
        "nothing else"
    );
}

#[tokio::test]
async fn watch_without_version_starts_with_current_state() {
    let s = server().await;
    create(&s, "a").await;
    let mut w = s.watch_raw(&format!("{VSC}?watch=true")).await.unwrap();
    let ev = w.next(WAIT).await.unwrap().unwrap();
    assert_eq!(
        (
            ev["type"].as_str(),
            ev["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("a"))
    );
}

#[tokio::test]
async fn too_old_version_gets_410_expired_in_the_stream() {
    let s = server().await;
    let old = create(&s, "a").await;
    create(&s, "b").await;
    s.compact();
    let mut w = s
        .watch_raw(&format!("{VSC}?watch=true&resourceVersion={}", rv(&old)))
        .await
        .unwrap();
    assert_eq!(w.code, 200);
    let ev = w.next(WAIT).await.unwrap().unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["kind"], "Status");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
    assert!(
        ev["object"]["message"]
            .as_str()
            .unwrap()
            .starts_with("too old resource version: ")
    );
    assert!(
        w.next(WAIT).await.unwrap().is_none(),
        "the stream ends after the error"
    );

    // The current version still works after compaction.
    let now = s.resource_version();
    let mut w = s
        .watch_raw(&format!("{VSC}?watch=true&resourceVersion={now}"))
        .await
        .unwrap();
    create(&s, "c").await;
    assert_eq!(w.next(WAIT).await.unwrap().unwrap()["type"], "ADDED");
}

#[tokio::test]
async fn bookmarks_carry_only_the_version() {
    let s = server().await;
    s.set_bookmark_interval(Duration::from_millis(50));
    create(&s, "a").await;
    let now = s.resource_version();
    let mut w = s
        .watch_raw(&format!(
            "{VSC}?watch=true&resourceVersion={now}&allowWatchBookmarks=true"
        ))
        .await
        .unwrap();
    let ev = w.next(WAIT).await.unwrap().unwrap();
    assert_eq!(ev["type"], "BOOKMARK");
    assert_eq!(
        ev["object"],
        json!({"kind": "VolumeSnapshotContent", "apiVersion": "snapshot.storage.k8s.io/v1", "metadata": {"resourceVersion": now.to_string()}})
    );
    // Without allowWatchBookmarks there are none.
    let mut quiet = s
        .watch_raw(&format!("{VSC}?watch=true&resourceVersion={now}"))
        .await
        .unwrap();
    assert!(quiet.next(Duration::from_millis(300)).await.is_err());
}

#[tokio::test]
async fn send_initial_events_ends_with_an_annotated_bookmark() {
    let s = server().await;
    create(&s, "a").await;
    create(&s, "b").await;
    let mut w = s
        .watch_raw(&format!("{VSC}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"))
        .await
        .unwrap();
    assert_eq!(w.next(WAIT).await.unwrap().unwrap()["type"], "ADDED");
    assert_eq!(w.next(WAIT).await.unwrap().unwrap()["type"], "ADDED");
    let bm = w.next(WAIT).await.unwrap().unwrap();
    assert_eq!(bm["type"], "BOOKMARK");
    assert_eq!(
        bm["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    let bad = s
        .request(
            "GET",
            &format!("{VSC}?watch=true&sendInitialEvents=true"),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        bad.code, 422,
        "sendInitialEvents needs resourceVersionMatch=NotOlderThan"
    );
}

#[tokio::test]
async fn selector_transitions_are_added_and_deleted() {
    let s = server().await;
    s.request("POST", VSC, JSON, Some(&vsc("a", json!({"app": "x"}))))
        .await
        .unwrap();
    s.request("POST", VSC, JSON, Some(&vsc("other", json!({}))))
        .await
        .unwrap();
    let now = s.resource_version();
    let mut w = s
        .watch_raw(&format!(
            "{VSC}?watch=true&resourceVersion={now}&labelSelector=app%3Dx"
        ))
        .await
        .unwrap();
    let mut by_name = s
        .watch_raw(&format!(
            "{VSC}?watch=true&resourceVersion={now}&fieldSelector=metadata.name%3Dother"
        ))
        .await
        .unwrap();
    s.request(
        "PATCH",
        &format!("{VSC}/a"),
        MERGE,
        Some(&json!({"metadata": {"labels": {"app": "y"}}})),
    )
    .await
    .unwrap();
    s.request(
        "PATCH",
        &format!("{VSC}/other"),
        MERGE,
        Some(&json!({"metadata": {"labels": {"app": "x"}}})),
    )
    .await
    .unwrap();
    let ev = w.next(WAIT).await.unwrap().unwrap();
    assert_eq!(
        (
            ev["type"].as_str(),
            ev["object"]["metadata"]["name"].as_str()
        ),
        (Some("DELETED"), Some("a"))
    );
    let ev = w.next(WAIT).await.unwrap().unwrap();
    assert_eq!(
        (
            ev["type"].as_str(),
            ev["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("other"))
    );
    let ev = by_name.next(WAIT).await.unwrap().unwrap();
    assert_eq!(
        (
            ev["type"].as_str(),
            ev["object"]["metadata"]["name"].as_str()
        ),
        (Some("MODIFIED"), Some("other"))
    );
}

#[tokio::test]
async fn namespaced_watch_sees_only_its_namespace() {
    let s = server().await;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}});
    assert_eq!(
        s.request("POST", "/api/v1/namespaces", JSON, Some(&ns))
            .await
            .unwrap()
            .code,
        201
    );
    let now = s.resource_version();
    let mut w = s
        .watch_raw(&format!(
            "/api/v1/namespaces/default/secrets?watch=true&resourceVersion={now}"
        ))
        .await
        .unwrap();
    for ns in ["other", "default"] {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
        s.request(
            "POST",
            &format!("/api/v1/namespaces/{ns}/secrets"),
            JSON,
            Some(&secret),
        )
        .await
        .unwrap();
    }
    let ev = w.next(WAIT).await.unwrap().unwrap();
    assert_eq!(ev["object"]["metadata"]["namespace"], "default");
    assert_eq!(
        ev["object"]["kind"], "Secret",
        "watch objects carry their type"
    );
}

#[tokio::test]
async fn faults_close_watches_and_answer_gone() {
    let s = server().await;
    let now = s.resource_version();
    let mut w = s
        .watch_raw(&format!("{VSC}?watch=true&resourceVersion={now}"))
        .await
        .unwrap();
    s.faults().close_watches();
    assert!(w.next(WAIT).await.unwrap().is_none(), "the stream ends");

    s.faults().next_watch_gone();
    let mut w = s
        .watch_raw(&format!("{VSC}?watch=true&resourceVersion={now}"))
        .await
        .unwrap();
    let ev = w.next(WAIT).await.unwrap().unwrap();
    assert_eq!(
        (ev["type"].as_str(), ev["object"]["code"].as_i64()),
        (Some("ERROR"), Some(410))
    );
    // Only the next one.
    let mut w = s
        .watch_raw(&format!("{VSC}?watch=true&resourceVersion={now}"))
        .await
        .unwrap();
    create(&s, "a").await;
    assert_eq!(w.next(WAIT).await.unwrap().unwrap()["type"], "ADDED");
    assert_eq!(s.request_count("WATCH", "volumesnapshotcontents"), 3);
}

#[tokio::test]
async fn watch_timeout_ends_the_stream() {
    let s = server().await;
    let rv = s.resource_version();
    let mut w = s
        .watch_raw(&format!(
            "{VSC}?watch=true&resourceVersion={rv}&timeoutSeconds=1"
        ))
        .await
        .unwrap();
    assert!(w.next(WAIT).await.unwrap().is_none());
}

#[tokio::test]
async fn a_watch_behind_the_bounded_history_gets_410_in_the_stream() {
    let s = ApiServer::start(ApiServerOptions {
        watch_history: WatchHistory::Events(3),
        ..ApiServerOptions::default()
    })
    .await
    .unwrap();
    let first = create(&s, "h0").await;
    for i in 1..5 {
        create(&s, &format!("h{i}")).await;
    }
    let mut w = s
        .watch_raw(&format!("{VSC}?watch=true&resourceVersion={}", rv(&first)))
        .await
        .unwrap();
    assert_eq!(w.code, 200);
    let ev = w.next(Duration::from_secs(10)).await.unwrap().unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["kind"], "Status");
    assert_eq!(ev["object"]["status"], "Failure");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
    let msg = ev["object"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("too old resource version: {} (", rv(&first))),
        "{msg}"
    );
    assert!(w.next(Duration::from_secs(10)).await.unwrap().is_none());
    // The last three events are still served.
    let recent = s.resource_version() - 2;
    let mut w = s
        .watch_raw(&format!("{VSC}?watch=true&resourceVersion={recent}"))
        .await
        .unwrap();
    let ev = w.next(Duration::from_secs(10)).await.unwrap().unwrap();
    assert_eq!(ev["type"], "ADDED");
}

#[tokio::test]
async fn expired_watches_end_with_410_at_any_time() {
    let s = server().await;
    let now = s.resource_version();
    let mut w = s
        .watch_raw(&format!("{VSC}?watch=true&resourceVersion={now}"))
        .await
        .unwrap();
    create(&s, "e1").await;
    let ev = w.next(Duration::from_secs(10)).await.unwrap().unwrap();
    assert_eq!(ev["type"], "ADDED");
    s.faults().expire_watches();
    let ev = w.next(Duration::from_secs(10)).await.unwrap().unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
    assert!(w.next(Duration::from_secs(10)).await.unwrap().is_none());
}

#[tokio::test]
async fn watch_events_carry_managed_fields() {
    let s = server().await;
    let now = s.resource_version();
    let mut w = s
        .watch_raw(&format!("{VSC}?watch=true&resourceVersion={now}"))
        .await
        .unwrap();
    create(&s, "m1").await;
    let ev = w.next(Duration::from_secs(10)).await.unwrap().unwrap();
    let mf = &ev["object"]["metadata"]["managedFields"][0];
    assert_eq!(mf["operation"], "Update");
    assert_eq!(mf["fieldsType"], "FieldsV1");
}
