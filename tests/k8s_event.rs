//! Events (spec C.11): core/v1 Events in `default` for cluster-scoped
//! objects, repeated events aggregated by PATCHing `count`, a spam filter
//! per object, and no reads of events at all.

use std::time::Duration;

use csi_snapshotter::k8s::event::{EventRecorder, object_ref};
use csi_snapshotter::k8s::types::VolumeSnapshotContent;
use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

fn vsc(name: &str, uid: &str) -> VolumeSnapshotContent {
    serde_json::from_value(json!({
        "metadata": {"name": name, "uid": uid, "resourceVersion": "7"},
        "spec": {"driver": "d", "deletionPolicy": "Delete", "source": {"volumeHandle": "v"},
                 "volumeSnapshotRef": {"name": "s", "namespace": "default", "uid": "u"}}
    }))
    .unwrap()
}

/// Waits until `pred` holds for the stored events (the writer is async).
async fn events_until(server: &ApiServer, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..200 {
        let evs = server.objects("events");
        if pred(&evs) {
            return evs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let evs = server.objects("events");
    panic!("condition not reached; events: {evs:#?}");
}

#[tokio::test]
async fn a_warning_about_a_content_is_written_to_default() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let (rec, _task) =
        EventRecorder::start(server.client().await, "csi-snapshotter mock.csi.k8s.io");
    let obj = object_ref(&vsc("c1", "uid-1"));
    rec.warning(
        &obj,
        "SnapshotCreationFailed",
        "Failed to create snapshot: boom",
    );
    let evs = events_until(&server, |e| e.len() == 1).await;
    let e = &evs[0];
    assert_eq!(e["metadata"]["namespace"], "default");
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["reason"], "SnapshotCreationFailed");
    assert_eq!(e["message"], "Failed to create snapshot: boom");
    assert_eq!(e["count"], 1);
    assert_eq!(e["source"]["component"], "csi-snapshotter mock.csi.k8s.io");
    let io = &e["involvedObject"];
    assert_eq!(io["kind"], "VolumeSnapshotContent");
    assert_eq!(io["apiVersion"], "snapshot.storage.k8s.io/v1");
    assert_eq!(io["name"], "c1");
    assert_eq!(io["uid"], "uid-1");
    assert_eq!(io["resourceVersion"], "7");
    assert!(e["firstTimestamp"].is_string() && e["lastTimestamp"].is_string());
}

#[tokio::test]
async fn repeats_are_aggregated_with_a_patch_and_events_are_never_read() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let (rec, _task) = EventRecorder::start(server.client().await, "csi-snapshotter d");
    let obj = object_ref(&vsc("c1", "uid-1"));
    for _ in 0..3 {
        rec.warning(&obj, "SnapshotDeleteError", "Failed to delete snapshot");
    }
    rec.warning(
        &obj,
        "SnapshotDeleteError",
        "Failed to get snapshot credentials",
    );
    let evs = events_until(&server, |e| {
        e.len() == 2 && e.iter().any(|x| x["count"] == 3)
    })
    .await;
    let repeated = evs
        .iter()
        .find(|x| x["message"] == "Failed to delete snapshot")
        .unwrap();
    assert_eq!(repeated["count"], 3);
    assert_eq!(server.request_count("POST", "events"), 2);
    assert_eq!(server.request_count("PATCH", "events"), 2);
    assert_eq!(
        server.request_count("GET", "events") + server.request_count("LIST", "events"),
        0
    );
    assert_eq!(server.request_count("WATCH", "events"), 0);
}

#[tokio::test]
async fn an_expired_aggregate_starts_a_new_event() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let (rec, _task) = EventRecorder::start(server.client().await, "c");
    let obj = object_ref(&vsc("c1", "uid-1"));
    rec.warning(&obj, "R", "m");
    let first = events_until(&server, |e| e.len() == 1).await;
    let name = first[0]["metadata"]["name"].as_str().unwrap().to_string();
    let del = server
        .request(
            "DELETE",
            &format!("/api/v1/namespaces/default/events/{name}"),
            None,
            None,
        )
        .await
        .unwrap();
    assert!(del.code < 300, "delete: {}", del.code);
    rec.warning(&obj, "R", "m");
    let evs = events_until(&server, |e| {
        e.len() == 1 && e[0]["metadata"]["name"] != name.as_str()
    })
    .await;
    assert_eq!(evs[0]["count"], 1);
}

#[tokio::test]
async fn an_event_storm_about_one_object_is_cut_off() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let (rec, task) = EventRecorder::start(server.client().await, "c");
    let noisy = object_ref(&vsc("noisy", "uid-n"));
    let quiet = object_ref(&vsc("quiet", "uid-q"));
    for i in 0..40 {
        rec.warning(&noisy, "R", &format!("message {i}"));
    }
    rec.warning(&quiet, "R", "one");
    drop(rec);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("writer drains")
        .unwrap();
    let evs = server.objects("events");
    let noisy_n = evs
        .iter()
        .filter(|e| e["involvedObject"]["name"] == "noisy")
        .count();
    assert_eq!(noisy_n, 25, "burst of 25 per object");
    assert_eq!(
        evs.iter()
            .filter(|e| e["involvedObject"]["name"] == "quiet")
            .count(),
        1
    );
}

#[tokio::test]
async fn events_about_namespaced_objects_go_to_their_namespace() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let (rec, _task) =
        EventRecorder::start(server.client().await, "external-snapshotter-leader-d/me");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("l".into()),
            namespace: Some("kube-system".into()),
            ..Default::default()
        },
        spec: None,
    };
    rec.normal(&object_ref(&lease), "LeaderElection", "me became leader");
    let evs = events_until(&server, |e| e.len() == 1).await;
    assert_eq!(evs[0]["metadata"]["namespace"], "kube-system");
    assert_eq!(evs[0]["type"], "Normal");
    assert_eq!(evs[0]["involvedObject"]["kind"], "Lease");
}

#[tokio::test]
async fn a_write_that_keeps_failing_is_given_up_and_later_events_still_go_out() {
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    server.faults().fail_next("POST", "events", "", 500, 3);
    let (rec, _task) = EventRecorder::start(server.client().await, "c");
    let obj = object_ref(&vsc("c1", "uid-1"));
    rec.warning(&obj, "R", "lost");
    rec.warning(&obj, "R", "kept");
    let evs = events_until(&server, |e| e.len() == 1).await;
    assert_eq!(evs[0]["message"], "kept");
    assert_eq!(
        server.request_count("POST", "events"),
        4,
        "three attempts for the first, one for the second"
    );
}

#[tokio::test]
async fn an_object_with_a_253_character_name_still_gets_its_event() {
    // `<name>.<hex time>` would pass the 253-character limit of names: the
    // API server refuses it and, for a refused delete (no status.error), the
    // content would show no error anywhere.
    let server = ApiServer::start(ApiServerOptions::default())
        .await
        .expect("api server");
    let (rec, _task) = EventRecorder::start(server.client().await, "csi-snapshotter d");
    let long = format!("{}-{}", "a".repeat(200), "b.c-".repeat(13));
    let long = long.trim_end_matches(['-', '.']).to_string();
    assert!(long.len() > 250 && long.len() <= 253, "{}", long.len());
    rec.warning(
        &object_ref(&vsc(&long, "uid-long")),
        "SnapshotDeleteError",
        "Failed to delete snapshot",
    );
    let evs = events_until(&server, |e| e.len() == 1).await;
    let name = evs[0]["metadata"]["name"].as_str().unwrap();
    assert!(name.len() <= 253, "{}", name.len());
    let (base, suffix) = name.rsplit_once('.').unwrap();
    assert!(
        long.starts_with(base) && !base.ends_with(['-', '.']),
        "{name}"
    );
    assert!(suffix.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
    assert_eq!(evs[0]["involvedObject"]["name"], long.as_str());
    assert_eq!(evs[0]["reason"], "SnapshotDeleteError");
}

#[test]
fn event_names_keep_client_go_form_and_fit_the_name_limit() {
    use csi_snapshotter::k8s::event::event_name;
    assert_eq!(
        event_name("c1", 0x17f0_0000_0000_0001),
        "c1.17f0000000000001"
    );
    assert_eq!(event_name("c1", -5), "c1.0");
    let cut = event_name(&format!("{}-x", "a".repeat(235)), 0x17f0_0000_0000_0001);
    assert_eq!(cut, format!("{}.17f0000000000001", "a".repeat(235)));
    assert!(event_name(&"z".repeat(253), i128::MAX).len() <= 253);
}
