//! Conformance of the embedded API server's REST semantics over raw HTTP:
//! each test checks the status code and `Status` body kube-apiserver gives.

use std::time::Duration;

use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions};
use csi_snapshotter::testing::bench::proc;
use serde_json::{Value, json};

const VSC: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents";
const SECRETS: &str = "/api/v1/namespaces/default/secrets";
const JSON: Option<&str> = Some("application/json");
const JSON_PATCH: Option<&str> = Some("application/json-patch+json");
const MERGE: Option<&str> = Some("application/merge-patch+json");
const WAIT: Duration = Duration::from_secs(5);
const VSC_PLURAL: &str = "volumesnapshotcontents";

async fn server() -> ApiServer {
    ApiServer::start(ApiServerOptions::default()).await.unwrap()
}

fn vsc(name: &str) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": name},
        "spec": {
            "deletionPolicy": "Delete",
            "driver": "mock.csi.k8s.io",
            "source": {"volumeHandle": "vol-1"},
            "volumeSnapshotRef": {"name": "snap", "namespace": "default"}
        },
        "status": {"readyToUse": true}
    })
}

fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn create(s: &ApiServer, name: &str) -> Value {
    let r = s
        .request("POST", VSC, JSON, Some(&vsc(name)))
        .await
        .unwrap();
    assert_eq!(r.code, 201, "{}", r.body);
    r.body
}

#[tokio::test]
async fn create_sets_system_fields_and_drops_status() {
    let s = server().await;
    let obj = create(&s, "c1").await;
    let meta = &obj["metadata"];
    assert_eq!(meta["uid"].as_str().unwrap().len(), 36);
    assert!(meta["creationTimestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(meta["generation"], 1);
    assert!(rv(&obj) > 0);
    assert!(
        obj.get("status").is_none(),
        "status is reset on create when /status exists"
    );
    // The raw client sends no User-Agent: upstream names the manager
    // "unknown".
    let mf = meta["managedFields"].as_array().unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0]["manager"], "unknown");
    assert_eq!(mf[0]["operation"], "Update");
    assert_eq!(mf[0]["apiVersion"], "snapshot.storage.k8s.io/v1");
    assert_eq!(mf[0]["fieldsType"], "FieldsV1");
    assert!(mf[0]["fieldsV1"]["f:spec"].get(".").is_some());
    let got = s
        .request("GET", &format!("{VSC}/c1"), None, None)
        .await
        .unwrap();
    assert_eq!(got.code, 200);
    assert_eq!(got.body, obj);
    assert_eq!(got.content_type, "application/json");
}

#[tokio::test]
async fn resource_versions_increase_monotonically() {
    let s = server().await;
    let a = rv(&create(&s, "a").await);
    let b = rv(&create(&s, "b").await);
    let r = s
        .request(
            "PATCH",
            &format!("{VSC}/a"),
            MERGE,
            Some(&json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert!(a < b && b < rv(&r.body));
}

#[tokio::test]
async fn errors_are_status_objects() {
    let s = server().await;
    let r = s
        .request("GET", &format!("{VSC}/missing"), None, None)
        .await
        .unwrap();
    assert_eq!(r.code, 404);
    assert_eq!(
        r.body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "volumesnapshotcontents.snapshot.storage.k8s.io \"missing\" not found",
            "reason": "NotFound",
            "details": {"name": "missing", "group": "snapshot.storage.k8s.io", "kind": "volumesnapshotcontents"},
            "code": 404})
    );
    create(&s, "dup").await;
    let r = s
        .request("POST", VSC, JSON, Some(&vsc("dup")))
        .await
        .unwrap();
    assert_eq!(r.code, 409);
    assert_eq!(r.body["reason"], "AlreadyExists");
    assert_eq!(
        r.body["message"],
        "volumesnapshotcontents.snapshot.storage.k8s.io \"dup\" already exists"
    );

    let r = s
        .request(
            "GET",
            "/apis/snapshot.storage.k8s.io/v1/nonsense",
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.code, 404);
    assert_eq!(r.body["kind"], "Status");
    assert_eq!(
        r.body["message"],
        "the server could not find the requested resource"
    );
    let r = s
        .request("GET", "/api/v1/namespaces/default/secrets/nope", None, None)
        .await
        .unwrap();
    assert_eq!(r.body["message"], "secrets \"nope\" not found");
    assert!(r.body["details"].get("group").is_none());
}

#[tokio::test]
async fn request_validation_matches_the_url() {
    let s = server().await;
    let mut wrong_kind = vsc("k");
    wrong_kind["kind"] = json!("VolumeSnapshot");
    // A custom resource's kind is checked like a field (kube-apiserver 1.36).
    let r = s
        .request("POST", VSC, JSON, Some(&wrong_kind))
        .await
        .unwrap();
    assert_eq!(r.code, 422);
    assert_eq!(r.body["details"]["causes"][0]["field"], "kind");
    let mut wrong_av = vsc("k");
    wrong_av["apiVersion"] = json!("snapshot.storage.k8s.io/v1beta1");
    assert_eq!(
        s.request("POST", VSC, JSON, Some(&wrong_av))
            .await
            .unwrap()
            .code,
        400
    );

    let r = s
        .request("POST", VSC, JSON, Some(&vsc("Bad_Name")))
        .await
        .unwrap();
    assert_eq!(r.code, 422);
    assert_eq!(r.body["reason"], "Invalid");
    assert!(r.body["message"].as_str().unwrap().starts_with(
        "VolumeSnapshotContent.snapshot.storage.k8s.io \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"
    ));
    assert_eq!(r.body["details"]["causes"][0]["field"], "metadata.name");

    let mut no_name = vsc("");
    no_name["metadata"] = json!({});
    let r = s.request("POST", VSC, JSON, Some(&no_name)).await.unwrap();
    assert_eq!(r.code, 422);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("metadata.name: Required value: name or generateName is required")
    );

    no_name["metadata"] = json!({"generateName": "gen-"});
    let r = s.request("POST", VSC, JSON, Some(&no_name)).await.unwrap();
    assert_eq!(r.code, 201);
    let name = r.body["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "other"}});
    let r = s
        .request("POST", SECRETS, JSON, Some(&secret))
        .await
        .unwrap();
    assert_eq!(r.code, 400);
    assert_eq!(
        r.body["message"],
        "the namespace of the provided object does not match the namespace sent on the request"
    );

    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
    let r = s
        .request(
            "POST",
            "/api/v1/namespaces/nowhere/secrets",
            JSON,
            Some(&secret),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 404);
    assert_eq!(r.body["message"], "namespaces \"nowhere\" not found");

    let r = s
        .request(
            "POST",
            VSC,
            JSON,
            Some(&json!({"metadata": {"name": "x", "resourceVersion": "5"}})),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 500, "a create must not carry a resourceVersion");
}

#[tokio::test]
async fn stale_update_conflicts() {
    let s = server().await;
    let obj = create(&s, "c").await;
    let mut first = obj.clone();
    first["spec"]["driver"] = json!("other.csi");
    let r = s
        .request("PUT", &format!("{VSC}/c"), JSON, Some(&first))
        .await
        .unwrap();
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(
        r.body["metadata"]["generation"], 2,
        "spec change bumps generation"
    );

    let r = s
        .request("PUT", &format!("{VSC}/c"), JSON, Some(&obj))
        .await
        .unwrap();
    assert_eq!(r.code, 409);
    assert_eq!(r.body["reason"], "Conflict");
    assert_eq!(
        r.body["message"],
        "Operation cannot be fulfilled on volumesnapshotcontents.snapshot.storage.k8s.io \"c\": the object has been modified; please apply your changes to the latest version and try again"
    );

    let mut unconditional = obj.clone();
    unconditional["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let r = s
        .request("PUT", &format!("{VSC}/c"), JSON, Some(&unconditional))
        .await
        .unwrap();
    assert_eq!(
        r.code, 422,
        "custom resources need a resourceVersion on update"
    );

    let r = s
        .request("PATCH", &format!("{VSC}/c"), MERGE, Some(&json!({"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "spec": {"driver": "x"}})))
        .await
        .unwrap();
    assert_eq!(
        r.code, 409,
        "a patch carrying a stale resourceVersion conflicts"
    );

    let r = s
        .request("PUT", &format!("{VSC}/nope"), JSON, Some(&vsc("nope")))
        .await
        .unwrap();
    assert_eq!(r.code, 404);
    let r = s
        .request("PUT", &format!("{VSC}/other"), JSON, Some(&first))
        .await
        .unwrap();
    assert_eq!(r.code, 400, "name in the body must match the URL");
}

#[tokio::test]
async fn metadata_changes_do_not_bump_generation_and_noops_make_no_version() {
    let s = server().await;
    let obj = create(&s, "g").await;
    let r = s
        .request(
            "PATCH",
            &format!("{VSC}/g"),
            MERGE,
            Some(&json!({"metadata": {"annotations": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(r.body["metadata"]["generation"], 1);
    assert!(rv(&r.body) > rv(&obj));
    let again = s
        .request(
            "PATCH",
            &format!("{VSC}/g"),
            MERGE,
            Some(&json!({"metadata": {"annotations": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(again.code, 200);
    assert_eq!(
        rv(&again.body),
        rv(&r.body),
        "a no-op write keeps the version"
    );
}

#[tokio::test]
async fn status_subresource_isolation() {
    let s = server().await;
    let obj = create(&s, "st").await;
    // Main resource: status changes are ignored.
    let mut main = obj.clone();
    main["status"] = json!({"readyToUse": true});
    main["metadata"]["labels"] = json!({"l": "1"});
    let r = s
        .request("PUT", &format!("{VSC}/st"), JSON, Some(&main))
        .await
        .unwrap();
    assert_eq!(r.code, 200);
    assert!(r.body.get("status").is_none());
    assert_eq!(r.body["metadata"]["labels"]["l"], "1");

    // Status: everything but status is ignored.
    let mut st = r.body.clone();
    st["status"] = json!({"readyToUse": false, "snapshotHandle": "h"});
    st["spec"]["driver"] = json!("changed");
    st["metadata"]["labels"] = json!({"l": "2"});
    let r = s
        .request("PUT", &format!("{VSC}/st/status"), JSON, Some(&st))
        .await
        .unwrap();
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.body["status"]["snapshotHandle"], "h");
    assert_eq!(r.body["spec"]["driver"], "mock.csi.k8s.io");
    assert_eq!(r.body["metadata"]["labels"]["l"], "1");
    assert_eq!(r.body["metadata"]["generation"], 1);

    let r = s
        .request("PATCH", &format!("{VSC}/st/status"), JSON_PATCH, Some(&json!([{"op": "replace", "path": "/status/error", "value": {"message": "m"}}, {"op": "replace", "path": "/spec/driver", "value": "z"}])))
        .await
        .unwrap();
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.body["status"]["error"]["message"], "m");
    assert_eq!(r.body["spec"]["driver"], "mock.csi.k8s.io");

    let r = s
        .request(
            "PATCH",
            &format!("{VSC}/st"),
            MERGE,
            Some(&json!({"status": {"readyToUse": true}})),
        )
        .await
        .unwrap();
    assert_eq!(
        r.body["status"]["readyToUse"], false,
        "main-resource patch ignores status"
    );

    let r = s
        .request("GET", &format!("{VSC}/st/status"), None, None)
        .await
        .unwrap();
    assert_eq!(r.code, 200);
    let r = s
        .request(
            "GET",
            "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses/x/status",
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.code, 404, "classes have no status subresource");
}

#[tokio::test]
async fn json_patch_semantics() {
    let s = server().await;
    create(&s, "p").await;
    let path = format!("{VSC}/p");
    // replace of a missing member adds it (upstream relies on this).
    let r = s
        .request("PATCH", &path, JSON_PATCH, Some(&json!([{"op": "replace", "path": "/metadata/annotations", "value": {"snapshot.storage.kubernetes.io/volumesnapshot-being-created": "yes"}}])))
        .await
        .unwrap();
    assert_eq!(r.code, 200, "{}", r.body);
    let r = s
        .request("PATCH", &path, JSON_PATCH, Some(&json!([{"op": "remove", "path": "/metadata/annotations/snapshot.storage.kubernetes.io~1volumesnapshot-being-created"}])))
        .await
        .unwrap();
    assert_eq!(r.code, 200);
    assert!(
        r.body["metadata"].get("annotations").is_none(),
        "an emptied map is dropped: {}",
        r.body["metadata"]
    );
    // remove of a missing member fails: 422 with the generic message.
    let r = s
        .request("PATCH", &path, JSON_PATCH, Some(&json!([{"op": "remove", "path": "/metadata/annotations/snapshot.storage.kubernetes.io~1volumesnapshot-being-created"}])))
        .await
        .unwrap();
    assert_eq!(r.code, 422);
    assert_eq!(r.body["reason"], "Invalid");
    assert_eq!(
        r.body["message"],
        "the server rejected our request due to an error in our request"
    );
    // test guards.
    let r = s
        .request("PATCH", &path, JSON_PATCH, Some(&json!([{"op": "test", "path": "/spec/driver", "value": "other"}, {"op": "replace", "path": "/spec/driver", "value": "x"}])))
        .await
        .unwrap();
    assert_eq!(r.code, 422);
    let r = s
        .request("PATCH", &path, JSON_PATCH, Some(&json!({"op": "add"})))
        .await
        .unwrap();
    assert_eq!(r.code, 400, "a patch that is not a list is a bad request");
    let r = s
        .request(
            "PATCH",
            &format!("{VSC}/missing"),
            JSON_PATCH,
            Some(&json!([])),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 404);
}

#[tokio::test]
async fn strategic_merge_patch_refused_for_custom_resources() {
    let s = server().await;
    create(&s, "smp").await;
    let r = s
        .request(
            "PATCH",
            &format!("{VSC}/smp"),
            Some("application/strategic-merge-patch+json"),
            Some(&json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 415);
    assert_eq!(r.body["reason"], "UnsupportedMediaType");

    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}});
    let r = s
        .request("POST", SECRETS, JSON, Some(&secret))
        .await
        .unwrap();
    assert_eq!(r.code, 201, "{}", r.body);
    assert_eq!(
        r.body["data"]["k"], "dg==",
        "stringData is folded into data"
    );
    assert_eq!(r.body["type"], "Opaque");
    let r = s
        .request(
            "PATCH",
            &format!("{SECRETS}/s"),
            Some("application/strategic-merge-patch+json"),
            Some(&json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 200);
    assert_eq!(r.body["metadata"]["labels"]["a"], "b");
}

#[tokio::test]
async fn finalizers_delay_deletion() {
    let s = server().await;
    let mut body = vsc("f");
    body["metadata"]["finalizers"] =
        json!(["snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection"]);
    let created = s
        .request("POST", VSC, JSON, Some(&body))
        .await
        .unwrap()
        .body;
    let mut w = s
        .watch_raw(&format!(
            "{VSC}?watch=true&resourceVersion={}",
            rv(&created)
        ))
        .await
        .unwrap();

    let r = s
        .request("DELETE", &format!("{VSC}/f"), None, None)
        .await
        .unwrap();
    assert_eq!(r.code, 200);
    assert!(r.body["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        r.body["metadata"]["generation"], 2,
        "graceful deletion bumps generation"
    );
    let ev = w.next(WAIT).await.unwrap().unwrap();
    assert_eq!(ev["type"], "MODIFIED");

    let got = s
        .request("GET", &format!("{VSC}/f"), None, None)
        .await
        .unwrap();
    assert_eq!(got.code, 200, "the object stays while finalizers remain");

    let r = s
        .request("PATCH", &format!("{VSC}/f"), JSON_PATCH, Some(&json!([{"op": "add", "path": "/metadata/finalizers/-", "value": "example.com/new"}])))
        .await
        .unwrap();
    assert_eq!(r.code, 422, "no new finalizers while deleting");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("no new finalizers can be added if the object is being deleted")
    );

    let r = s
        .request("PATCH", &format!("{VSC}/f"), JSON_PATCH, Some(&json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection"}, {"op": "remove", "path": "/metadata/finalizers/0"}])))
        .await
        .unwrap();
    assert_eq!(r.code, 200, "{}", r.body);
    let ev = w.next(WAIT).await.unwrap().unwrap();
    assert_eq!(ev["type"], "DELETED");
    assert_eq!(ev["object"]["metadata"]["name"], "f");
    assert_eq!(
        s.request("GET", &format!("{VSC}/f"), None, None)
            .await
            .unwrap()
            .code,
        404
    );
}

#[tokio::test]
async fn delete_without_finalizers_is_immediate() {
    let s = server().await;
    create(&s, "d").await;
    let r = s
        .request("DELETE", &format!("{VSC}/d"), None, None)
        .await
        .unwrap();
    assert_eq!(r.code, 200);
    // Custom resources too answer a completed delete with a Status.
    assert_eq!(r.body["kind"], "Status");
    assert_eq!(r.body["status"], "Success");
    assert_eq!(r.body["details"]["name"], "d");
    assert_eq!(r.body["details"]["kind"], "volumesnapshotcontents");
    assert_eq!(r.body["details"]["group"], "snapshot.storage.k8s.io");
    assert_eq!(
        s.request("GET", &format!("{VSC}/d"), None, None)
            .await
            .unwrap()
            .code,
        404
    );
    assert_eq!(
        s.request("DELETE", &format!("{VSC}/d"), None, None)
            .await
            .unwrap()
            .code,
        404
    );

    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
    s.request("POST", SECRETS, JSON, Some(&secret))
        .await
        .unwrap();
    let r = s
        .request("DELETE", &format!("{SECRETS}/s"), None, None)
        .await
        .unwrap();
    assert_eq!(r.code, 200);
    assert_eq!(r.body["kind"], "Status");
    assert_eq!(r.body["status"], "Success");

    let created = create(&s, "pre").await;
    let r = s
        .request(
            "DELETE",
            &format!("{VSC}/pre"),
            JSON,
            Some(&json!({"preconditions": {"uid": "wrong"}})),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 409);
    let r = s
        .request(
            "DELETE",
            &format!("{VSC}/pre"),
            JSON,
            Some(&json!({"preconditions": {"uid": created["metadata"]["uid"]}})),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 200);
}

#[tokio::test]
async fn list_pagination_and_selectors() {
    let s = server().await;
    for i in 0..5 {
        let mut b = vsc(&format!("c{i}"));
        b["metadata"]["labels"] = json!({"parity": if i % 2 == 0 { "even" } else { "odd" }});
        s.request("POST", VSC, JSON, Some(&b)).await.unwrap();
    }
    let first = s
        .request("GET", &format!("{VSC}?limit=2"), None, None)
        .await
        .unwrap()
        .body;
    assert_eq!(first["kind"], "VolumeSnapshotContentList");
    assert_eq!(first["apiVersion"], "snapshot.storage.k8s.io/v1");
    assert_eq!(first["metadata"]["remainingItemCount"], 3);
    let mut names: Vec<String> = Vec::new();
    let mut page = first.clone();
    loop {
        assert_eq!(
            page["metadata"]["resourceVersion"],
            first["metadata"]["resourceVersion"]
        );
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        match page["metadata"]["continue"].as_str() {
            Some(c) if !c.is_empty() => {
                page = s
                    .request("GET", &format!("{VSC}?limit=2&continue={c}"), None, None)
                    .await
                    .unwrap()
                    .body;
            }
            _ => break,
        }
    }
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);

    let odd = s
        .request(
            "GET",
            &format!("{VSC}?labelSelector=parity%3Dodd"),
            None,
            None,
        )
        .await
        .unwrap()
        .body;
    assert_eq!(odd["items"].as_array().unwrap().len(), 2);
    let notin = s
        .request(
            "GET",
            &format!("{VSC}?labelSelector=parity%20notin%20(odd)"),
            None,
            None,
        )
        .await
        .unwrap()
        .body;
    assert_eq!(notin["items"].as_array().unwrap().len(), 3);
    let one = s
        .request(
            "GET",
            &format!("{VSC}?fieldSelector=metadata.name%3Dc3"),
            None,
            None,
        )
        .await
        .unwrap()
        .body;
    assert_eq!(one["items"][0]["metadata"]["name"], "c3");
    assert_eq!(one["items"].as_array().unwrap().len(), 1);
    let bad = s
        .request(
            "GET",
            &format!("{VSC}?fieldSelector=spec.driver%3Dx"),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(bad.code, 400);

    let stale = first["metadata"]["continue"].as_str().unwrap().to_string();
    s.request("POST", VSC, JSON, Some(&vsc("later")))
        .await
        .unwrap();
    s.compact();
    let r = s
        .request(
            "GET",
            &format!("{VSC}?limit=2&continue={stale}"),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.code, 410);
    assert_eq!(r.body["reason"], "Expired");
}

#[tokio::test]
async fn core_list_items_have_no_type_meta() {
    let s = server().await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
    s.request("POST", SECRETS, JSON, Some(&secret))
        .await
        .unwrap();
    let l = s.request("GET", SECRETS, None, None).await.unwrap().body;
    assert_eq!(l["kind"], "SecretList");
    assert!(l["items"][0].get("kind").is_none());
    let all = s
        .request("GET", "/api/v1/secrets", None, None)
        .await
        .unwrap()
        .body;
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn discovery_documents() {
    let s = server().await;
    let v = s.request("GET", "/version", None, None).await.unwrap().body;
    assert_eq!(v["major"], "1");
    let api = s.request("GET", "/api", None, None).await.unwrap().body;
    assert_eq!(api["kind"], "APIVersions");
    assert_eq!(api["versions"], json!(["v1"]));
    let apis = s.request("GET", "/apis", None, None).await.unwrap().body;
    assert_eq!(apis["kind"], "APIGroupList");
    let names: Vec<&str> = apis["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    for g in [
        "snapshot.storage.k8s.io",
        "groupsnapshot.storage.k8s.io",
        "events.k8s.io",
        "coordination.k8s.io",
    ] {
        assert!(names.contains(&g), "{g}");
    }
    let rl = s
        .request("GET", "/apis/snapshot.storage.k8s.io/v1", None, None)
        .await
        .unwrap()
        .body;
    assert_eq!(rl["kind"], "APIResourceList");
    assert_eq!(rl["groupVersion"], "snapshot.storage.k8s.io/v1");
    let res = rl["resources"].as_array().unwrap();
    let vsc = res
        .iter()
        .find(|r| r["name"] == "volumesnapshotcontents")
        .unwrap();
    assert_eq!(vsc["namespaced"], false);
    assert_eq!(vsc["kind"], "VolumeSnapshotContent");
    assert!(
        res.iter()
            .any(|r| r["name"] == "volumesnapshotcontents/status")
    );
    assert!(
        !res.iter()
            .any(|r| r["name"] == "volumesnapshotclasses/status")
    );
    let core = s.request("GET", "/api/v1", None, None).await.unwrap().body;
    assert!(
        core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "secrets")
    );
    assert_eq!(
        s.request("GET", "/apis/example.com/v1", None, None)
            .await
            .unwrap()
            .code,
        404
    );
}

#[tokio::test]
async fn fault_injection_and_counters() {
    let s = server().await;
    create(&s, "x").await;
    s.faults()
        .fail_next("PATCH", "volumesnapshotcontents", "status", 500, 2);
    let st = |v| json!({"status": {"readyToUse": v}});
    for _ in 0..2 {
        let r = s
            .request("PATCH", &format!("{VSC}/x/status"), MERGE, Some(&st(true)))
            .await
            .unwrap();
        assert_eq!(r.code, 500);
        assert_eq!(r.body["reason"], "InternalError");
    }
    // The main resource is not affected by a status rule.
    let r = s
        .request(
            "PATCH",
            &format!("{VSC}/x"),
            MERGE,
            Some(&json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 200);
    let r = s
        .request("PATCH", &format!("{VSC}/x/status"), MERGE, Some(&st(true)))
        .await
        .unwrap();
    assert_eq!(r.code, 200);
    assert_eq!(s.request_count("PATCH", "volumesnapshotcontents"), 4);
    assert_eq!(s.request_count("PATCH", "volumesnapshotcontents/status"), 3);
    assert_eq!(s.request_count("POST", "volumesnapshotcontents"), 1);
    assert_eq!(s.request_count("create", "*"), 1);

    s.faults().fail_next("GET", "*", "*", 503, 1);
    assert_eq!(
        s.request("GET", &format!("{VSC}/x"), None, None)
            .await
            .unwrap()
            .code,
        503
    );
    assert_eq!(
        s.request("GET", &format!("{VSC}/x"), None, None)
            .await
            .unwrap()
            .code,
        200
    );
}

#[tokio::test]
async fn events_about_cluster_scoped_objects_live_in_default() {
    let s = server().await;
    let event = |ns: &str| {
        json!({"apiVersion": "v1", "kind": "Event",
               "metadata": {"name": "c1.17a", "namespace": ns},
               "involvedObject": {"kind": "VolumeSnapshotContent", "name": "c1", "apiVersion": "snapshot.storage.k8s.io/v1"},
               "reason": "SnapshotCreated", "message": "m", "type": "Normal", "count": 1,
               "source": {"component": "csi-snapshotter"}})
    };
    let r = s
        .request(
            "POST",
            "/api/v1/namespaces/default/events",
            JSON,
            Some(&event("default")),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 201, "{}", r.body);
    let r = s
        .request(
            "POST",
            "/api/v1/namespaces/kube-system/events",
            JSON,
            Some(&event("kube-system")),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 422);
    assert_eq!(
        r.body["details"]["causes"][0]["field"],
        "involvedObject.namespace"
    );
    let found = s
        .request("GET", "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dc1,reason%3DSnapshotCreated", None, None)
        .await
        .unwrap();
    assert_eq!(found.body["items"].as_array().unwrap().len(), 1);
    // A PUT of an event creates it, as upstream allows for events.
    let r = s
        .request(
            "PUT",
            "/api/v1/namespaces/default/events/e2",
            JSON,
            Some(&json!({"metadata": {"name": "e2"}, "involvedObject": {}})),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 201, "{}", r.body);
}

#[tokio::test]
async fn events_k8s_io_is_a_view_of_core_events() {
    let s = server().await;
    let v1_events = "/apis/events.k8s.io/v1/namespaces/default/events";
    let core_events = "/api/v1/namespaces/default/events";
    let now = s.resource_version();
    let mut w = s
        .watch_raw(&format!("{v1_events}?watch=true&resourceVersion={now}"))
        .await
        .unwrap();
    let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "old"},
        "involvedObject": {"kind": "VolumeSnapshotContent", "name": "c1"}, "reason": "R", "message": "hello", "type": "Normal"});
    assert_eq!(
        s.request("POST", core_events, JSON, Some(&core))
            .await
            .unwrap()
            .code,
        201
    );
    let got = s
        .request("GET", &format!("{v1_events}/old"), None, None)
        .await
        .unwrap()
        .body;
    assert_eq!(got["apiVersion"], "events.k8s.io/v1");
    assert_eq!(got["note"], "hello");
    assert_eq!(got["regarding"]["name"], "c1");
    let ev = w.next(WAIT).await.unwrap().unwrap();
    assert_eq!(
        (ev["type"].as_str(), ev["object"]["note"].as_str()),
        (Some("ADDED"), Some("hello"))
    );

    let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "new"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "example.com/c", "reportingInstance": "i",
        "action": "Create", "reason": "Created", "note": "n", "type": "Normal",
        "regarding": {"kind": "VolumeSnapshotContent", "name": "c2"}});
    let r = s.request("POST", v1_events, JSON, Some(&v1)).await.unwrap();
    assert_eq!(r.code, 201, "{}", r.body);
    assert_eq!(r.body["regarding"]["name"], "c2");
    let as_core = s
        .request("GET", &format!("{core_events}/new"), None, None)
        .await
        .unwrap()
        .body;
    assert_eq!(as_core["involvedObject"]["name"], "c2");
    assert_eq!(as_core["reportingComponent"], "example.com/c");
    let list = s
        .request(
            "GET",
            &format!("{v1_events}?fieldSelector=regarding.name%3Dc2"),
            None,
            None,
        )
        .await
        .unwrap()
        .body;
    assert_eq!(list["apiVersion"], "events.k8s.io/v1");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["note"], "n");
    let r = s
        .request(
            "PATCH",
            &format!("{v1_events}/new"),
            MERGE,
            Some(&json!({"note": "changed"})),
        )
        .await
        .unwrap();
    assert_eq!(r.body["note"], "changed");

    let mut no_time = v1.clone();
    no_time["metadata"]["name"] = json!("bad");
    no_time.as_object_mut().unwrap().remove("eventTime");
    let r = s
        .request("POST", v1_events, JSON, Some(&no_time))
        .await
        .unwrap();
    assert_eq!(r.code, 422);
    assert_eq!(r.body["details"]["causes"][0]["field"], "eventTime");
}

#[tokio::test]
async fn dry_run_and_delete_collection() {
    let s = server().await;
    let r = s
        .request(
            "POST",
            &format!("{VSC}?dryRun=All"),
            JSON,
            Some(&vsc("dry")),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 201);
    assert_eq!(
        s.request("GET", &format!("{VSC}/dry"), None, None)
            .await
            .unwrap()
            .code,
        404,
        "dry run stores nothing"
    );

    for (name, app) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let mut b = vsc(name);
        b["metadata"]["labels"] = json!({"app": app});
        s.request("POST", VSC, JSON, Some(&b)).await.unwrap();
    }
    let r = s
        .request(
            "DELETE",
            &format!("{VSC}?labelSelector=app%3Dx"),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.code, 200);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let left = s.request("GET", VSC, None, None).await.unwrap().body;
    let names: Vec<&str> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c"]);
}

#[tokio::test]
async fn namespaced_custom_resources_live_under_their_namespace() {
    let s = server().await;
    let vs = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "snap"}, "spec": {"source": {"persistentVolumeClaimName": "pvc"}}});
    let path = "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots";
    let r = s.request("POST", path, JSON, Some(&vs)).await.unwrap();
    assert_eq!(r.code, 201, "{}", r.body);
    assert_eq!(r.body["metadata"]["namespace"], "default");
    assert_eq!(
        s.request("GET", &format!("{path}/snap"), None, None)
            .await
            .unwrap()
            .code,
        200
    );
    assert_eq!(
        s.request(
            "GET",
            "/apis/snapshot.storage.k8s.io/v1/namespaces/kube-system/volumesnapshots/snap",
            None,
            None
        )
        .await
        .unwrap()
        .code,
        404
    );
    let all = s
        .request(
            "GET",
            "/apis/snapshot.storage.k8s.io/v1/volumesnapshots",
            None,
            None,
        )
        .await
        .unwrap()
        .body;
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
    let r = s
        .request(
            "POST",
            VSC.replace("volumesnapshotcontents", "volumesnapshots")
                .as_str(),
            JSON,
            Some(&vs),
        )
        .await
        .unwrap();
    assert_eq!(
        r.code, 405,
        "namespaced resources are created in a namespace"
    );
}

#[tokio::test]
async fn delay_fault_holds_matching_responses() {
    let s = server().await;
    create(&s, "slow").await;
    s.faults()
        .delay_matching("GET", "volumesnapshotcontents", Duration::from_secs(60));
    let held = tokio::time::timeout(
        Duration::from_secs(1),
        s.request("GET", &format!("{VSC}/slow"), None, None),
    )
    .await;
    assert!(held.is_err(), "a delayed GET is still pending");
    // Other verbs are not delayed.
    let list =
        tokio::time::timeout(Duration::from_secs(30), s.request("GET", VSC, None, None)).await;
    assert_eq!(list.unwrap().unwrap().code, 200);
    s.faults()
        .delay_matching("GET", "volumesnapshotcontents", Duration::ZERO);
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        s.request("GET", &format!("{VSC}/slow"), None, None),
    )
    .await;
    assert_eq!(r.unwrap().unwrap().code, 200);
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_content_and_waits_for_finalizers() {
    let s = server().await;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}});
    s.request("POST", "/api/v1/namespaces", JSON, Some(&ns))
        .await
        .unwrap();
    let secrets = "/api/v1/namespaces/team/secrets";
    let plain = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "plain"}});
    let held = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "held", "finalizers": ["example.com/hold"]}});
    s.request("POST", secrets, JSON, Some(&plain))
        .await
        .unwrap();
    s.request("POST", secrets, JSON, Some(&held)).await.unwrap();

    let r = s
        .request("DELETE", "/api/v1/namespaces/team", None, None)
        .await
        .unwrap();
    assert_eq!(r.code, 200);
    assert_eq!(r.body["status"]["phase"], "Terminating");
    assert_eq!(
        s.request("GET", &format!("{secrets}/plain"), None, None)
            .await
            .unwrap()
            .code,
        404
    );
    let r = s
        .request(
            "POST",
            secrets,
            JSON,
            Some(&json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "new"}})),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 403);
    assert_eq!(r.body["reason"], "Forbidden");

    let r = s
        .request(
            "PATCH",
            &format!("{secrets}/held"),
            MERGE,
            Some(&json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 200);
    assert_eq!(
        s.request("GET", "/api/v1/namespaces/team", None, None)
            .await
            .unwrap()
            .code,
        404,
        "the namespace goes with its last object"
    );
}

#[tokio::test]
async fn local_requests_are_served_like_http_but_not_counted() {
    let s = server().await;
    let mut w = s
        .watch_raw(&format!("{VSC}?watch=true&resourceVersion=0"))
        .await
        .unwrap();
    let created = s
        .local_request("POST", VSC, None, Some(&vsc("local")))
        .await
        .unwrap();
    assert_eq!(created.code, 201, "{}", created.body);
    let patched = s
        .local_request(
            "PATCH",
            &format!("{VSC}/local/status"),
            MERGE,
            Some(&json!({"status": {"readyToUse": false}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.code, 200, "{}", patched.body);
    assert_eq!(patched.body["status"]["readyToUse"], false);
    let dup = s
        .local_request("POST", VSC, None, Some(&vsc("local")))
        .await
        .unwrap();
    assert_eq!(dup.code, 409);
    assert_eq!(dup.body["reason"], "AlreadyExists");
    let watch = s
        .local_request("GET", &format!("{VSC}?watch=true"), None, None)
        .await
        .unwrap();
    assert_eq!(watch.code, 405);

    // Watchers see the local writes.
    let ev = w
        .next_matching(WAIT, |e| e["type"] == "ADDED")
        .await
        .unwrap();
    assert_eq!(ev.unwrap()["object"]["metadata"]["name"], "local");
    // Only the HTTP watch was counted.
    assert_eq!(s.request_count("*", VSC_PLURAL), 1);
    let counts = s.request_counts();
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert_eq!(
        (
            counts[0].verb.as_str(),
            counts[0].resource.as_str(),
            counts[0].count
        ),
        ("WATCH", VSC_PLURAL, 1)
    );
    let got = s
        .request("GET", &format!("{VSC}/local"), None, None)
        .await
        .unwrap();
    assert_eq!(got.body["status"]["readyToUse"], false);
    assert_eq!(s.request_count("GET", VSC_PLURAL), 1);
}

/// A restricted user held to the sidecar's shipped RBAC rules: what the
/// ClusterRole and the leader-election Role grant goes through, anything
/// else is 403 Forbidden with kube-apiserver's message, and the default
/// kubeconfig's user is not restricted.
#[tokio::test]
async fn restricted_user_is_held_to_the_sidecar_rbac_rules() {
    use csi_snapshotter::k8s::types::VolumeSnapshotContent;
    use csi_snapshotter::testing::apiserver::RbacPolicy;
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Secret;
    use kube::Api;
    use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};

    let server = ApiServer::start(ApiServerOptions {
        restricted: Some(RbacPolicy::sidecar()),
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = server.client().await;
    let restricted = server.try_restricted_client().await.unwrap();
    fn forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> String {
        match r {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 403, "{s:?}");
                assert_eq!(s.reason, "Forbidden", "{s:?}");
                s.message
            }
            other => panic!("expected 403, got {other:?}"),
        }
    }

    let obj: VolumeSnapshotContent = serde_json::from_value(vsc("rbac-1")).unwrap();
    let admin_vsc: Api<VolumeSnapshotContent> = Api::all(admin.clone());
    admin_vsc
        .create(&PostParams::default(), &obj)
        .await
        .unwrap();

    let vscs: Api<VolumeSnapshotContent> = Api::all(restricted.clone());
    vscs.list(&ListParams::default().limit(1)).await.unwrap();
    vscs.get("rbac-1").await.unwrap();
    let merge = |v: Value| Patch::Merge(v);
    vscs.patch(
        "rbac-1",
        &PatchParams::default(),
        &merge(json!({"metadata": {"annotations": {"a": "b"}}})),
    )
    .await
    .unwrap();
    vscs.patch_status(
        "rbac-1",
        &PatchParams::default(),
        &merge(json!({"status": {"readyToUse": false}})),
    )
    .await
    .unwrap();
    let msg = forbidden(vscs.create(&PostParams::default(), &obj).await);
    assert!(
        msg.contains("cannot create resource \"volumesnapshotcontents\" in API group \"snapshot.storage.k8s.io\" at the cluster scope"),
        "{msg}"
    );
    forbidden(
        vscs.delete("rbac-1", &DeleteParams::default())
            .await
            .map(|_| ()),
    );

    let secrets: Api<Secret> = Api::namespaced(restricted.clone(), "default");
    let msg = forbidden(secrets.list(&ListParams::default()).await);
    assert!(msg.contains("in the namespace \"default\""), "{msg}");
    // get is granted: the answer is the object's absence, not a refusal.
    assert!(secrets.get_opt("nope").await.unwrap().is_none());

    let lease = |ns: &str| -> Lease {
        serde_json::from_value(json!({"metadata": {"name": "l", "namespace": ns}})).unwrap()
    };
    let admin_ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    admin_ns
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "csi-snapshotter"}})).unwrap(),
        )
        .await
        .unwrap();
    let own: Api<Lease> = Api::namespaced(restricted.clone(), "csi-snapshotter");
    own.create(&PostParams::default(), &lease("csi-snapshotter"))
        .await
        .unwrap();
    let other: Api<Lease> = Api::namespaced(restricted, "default");
    forbidden(
        other
            .create(&PostParams::default(), &lease("default"))
            .await,
    );

    assert_eq!(server.forbidden_count(), 4);
    // The default user is not restricted.
    admin_vsc
        .delete("rbac-1", &DeleteParams::default())
        .await
        .unwrap();
}

/// CPU time of this process so far.
fn process_cpu() -> Duration {
    Duration::from_secs_f64(proc::sample(None).unwrap().cpu_seconds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_costs_the_cpu_time_asked_for_and_a_local_one_too() {
    const COST: Duration = Duration::from_millis(25);
    const REQUESTS: u32 = 8;
    let s = ApiServer::start(ApiServerOptions {
        cpu_per_request: COST,
        ..Default::default()
    })
    .await
    .unwrap();
    let cpu = process_cpu();
    for i in 0..REQUESTS / 2 {
        let started = std::time::Instant::now();
        create(&s, &format!("cost-{i}")).await;
        assert!(started.elapsed() >= COST, "{:?}", started.elapsed());
        let started = std::time::Instant::now();
        let r = s
            .local_request("GET", &format!("{VSC}/cost-{i}"), None, None)
            .await
            .unwrap();
        assert_eq!(r.code, 200, "{}", r.body);
        assert!(started.elapsed() >= COST, "{:?}", started.elapsed());
    }
    // Spent on the server's threads, in this process; a tick's rounding
    // aside.
    let spent = process_cpu() - cpu;
    assert!(
        spent + Duration::from_millis(20) >= COST * REQUESTS,
        "{spent:?}"
    );
}
