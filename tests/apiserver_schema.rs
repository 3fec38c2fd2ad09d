//! The embedded API server's schema checks: creates, updates and patches
//! of the snapshot kinds are checked against the schemas (422 Invalid),
//! the built-in ones by default and the upstream CRDs from `../shared/crds`
//! when given (each test runs with both when they are present).

#[path = "support/crds.rs"]
mod crds;

use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions};
use serde_json::{Value, json};

const VSC: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents";

/// A server with the built-in schemas, and one with the upstream CRDs when
/// they are beside the checkout.
async fn servers() -> Vec<ApiServer> {
    let mut servers = vec![ApiServer::start(ApiServerOptions::default()).await.unwrap()];
    if let Some(dir) = crds::crd_dir() {
        let opts = ApiServerOptions {
            crd_schemas: Some(dir),
            ..Default::default()
        };
        servers.push(ApiServer::start(opts).await.unwrap());
    }
    servers
}

fn vsc(name: &str) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": name},
        "spec": {"deletionPolicy": "Delete", "driver": "d", "source": {"volumeHandle": "v"},
                 "volumeSnapshotRef": {"name": "s", "namespace": "default"}}
    })
}

#[tokio::test]
async fn create_update_and_patch_are_validated() {
    for s in servers().await {
        let mut bad = vsc("bad");
        bad["spec"]["deletionPolicy"] = json!("Keep");
        let r = s
            .request("POST", VSC, Some("application/json"), Some(&bad))
            .await
            .unwrap();
        assert_eq!(r.code, 422, "{}", r.body);
        assert_eq!(r.body["reason"], "Invalid");
        let msg = r.body["message"].as_str().unwrap();
        assert!(
        msg.starts_with("VolumeSnapshotContent.snapshot.storage.k8s.io \"bad\" is invalid: ")
            && msg.contains("spec.deletionPolicy: Unsupported value: \"Keep\": supported values: \"Delete\", \"Retain\""),
        "{msg}"
    );
        assert_eq!(
            r.body["details"]["causes"][0]["field"],
            "spec.deletionPolicy"
        );

        let r = s
            .request("POST", VSC, Some("application/json"), Some(&vsc("good")))
            .await
            .unwrap();
        assert_eq!(r.code, 201, "{}", r.body);
        let r = s
            .request(
                "PATCH",
                &format!("{VSC}/good"),
                Some("application/merge-patch+json"),
                Some(&json!({"spec": {"driver": null}})),
            )
            .await
            .unwrap();
        assert_eq!(r.code, 422, "{}", r.body);
        let r = s
            .request(
                "PATCH",
                &format!("{VSC}/good/status"),
                Some("application/json-patch+json"),
                Some(&json!([{"op": "replace", "path": "/status/restoreSize", "value": -1}])),
            )
            .await
            .unwrap();
        assert_eq!(r.code, 422, "{}", r.body);
        let r = s
        .request("PATCH", &format!("{VSC}/good/status"), Some("application/json-patch+json"), Some(&json!([{"op": "replace", "path": "/status", "value": {"readyToUse": true, "unknownField": 1}}])))
        .await
        .unwrap();
        assert_eq!(r.code, 200, "{}", r.body);
        assert!(
            r.body["status"].get("unknownField").is_none(),
            "unknown fields are pruned"
        );
    }
}

#[tokio::test]
async fn strict_field_validation_refuses_unknown_fields() {
    for s in servers().await {
        let mut body = vsc("strict");
        body["spec"]["bogus"] = json!(1);
        let r = s
            .request(
                "POST",
                &format!("{VSC}?fieldValidation=Strict"),
                Some("application/json"),
                Some(&body),
            )
            .await
            .unwrap();
        assert_eq!(r.code, 400, "{}", r.body);
        assert_eq!(
            r.body["message"],
            "strict decoding error: unknown field \"spec.bogus\""
        );
        let r = s
            .request("POST", VSC, Some("application/json"), Some(&body))
            .await
            .unwrap();
        assert_eq!(r.code, 201);
        assert!(
            r.body["spec"].get("bogus").is_none(),
            "pruned without Strict"
        );
    }
}

/// `/openapi/v3` lists every served group-version; each document carries
/// the kinds' schemas (the very ones the server validates against), and
/// each PATCH operation its kind and the `fieldValidation` parameter that
/// tells kubectl the server checks fields itself.
#[tokio::test]
async fn openapi_v3_describes_the_served_kinds_from_the_schemas() {
    use csi_snapshotter::testing::apiserver::schema::Schemas;
    let s = ApiServer::start(ApiServerOptions::default()).await.unwrap();
    let index = s.request("GET", "/openapi/v3", None, None).await.unwrap();
    assert_eq!(index.code, 200, "{}", index.body);
    let paths = index.body["paths"].as_object().expect("paths");
    for gv in [
        "api/v1",
        "apis/snapshot.storage.k8s.io/v1",
        "apis/groupsnapshot.storage.k8s.io/v1",
        "apis/coordination.k8s.io/v1",
        "apis/events.k8s.io/v1",
    ] {
        assert!(paths.contains_key(gv), "{gv} missing: {:?}", paths.keys());
    }
    let builtin = Schemas::builtin();
    for crd in builtin.crds() {
        let url = paths[&format!("apis/{}/v1", crd.group)]["serverRelativeURL"]
            .as_str()
            .expect("serverRelativeURL");
        assert!(url.contains("?hash="), "{url}");
        let doc = s.request("GET", url, None, None).await.unwrap();
        assert_eq!(doc.code, 200, "{}", doc.body);
        let reversed: Vec<&str> = crd.group.rsplit('.').collect();
        let name = format!("{}.v1.{}", reversed.join("."), crd.kind);
        let mut schema = doc.body["components"]["schemas"][&name].clone();
        assert_eq!(
            schema["x-kubernetes-group-version-kind"],
            json!([{"group": crd.group, "version": "v1", "kind": crd.kind}]),
            "{name}"
        );
        schema
            .as_object_mut()
            .unwrap()
            .remove("x-kubernetes-group-version-kind");
        assert_eq!(
            &schema,
            builtin.document(&crd.group, "v1", &crd.plural).unwrap(),
            "{name}"
        );
        let scope = if crd.namespaced {
            "namespaces/{namespace}/"
        } else {
            ""
        };
        let path = format!("/apis/{}/v1/{scope}{}/{{name}}", crd.group, crd.plural);
        let patch = &doc.body["paths"][&path]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"], crd.kind,
            "{path}"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"),
            "{path}"
        );
        let content = patch["requestBody"]["content"].as_object().unwrap();
        assert!(content.contains_key("application/merge-patch+json"));
        assert!(!content.contains_key("application/strategic-merge-patch+json"));
    }
    let missing = s
        .request("GET", "/openapi/v3/apis/example.com/v1", None, None)
        .await
        .unwrap();
    assert_eq!(missing.code, 404);
}

/// `/openapi/v2` carries the same schemas as definitions (JSON by default,
/// protobuf for kubectl's media type), each PATCH without strategic merge
/// patch for the custom kinds.
#[tokio::test]
async fn openapi_v2_carries_the_same_schemas() {
    use csi_snapshotter::testing::apiserver::schema::Schemas;
    let s = ApiServer::start(ApiServerOptions::default()).await.unwrap();
    let doc = s.request("GET", "/openapi/v2", None, None).await.unwrap();
    assert_eq!(doc.code, 200, "{}", doc.body);
    assert_eq!(doc.body["swagger"], "2.0");
    let builtin = Schemas::builtin();
    let mut vsclass =
        doc.body["definitions"]["io.k8s.storage.snapshot.v1.VolumeSnapshotClass"].clone();
    assert_eq!(
        vsclass["x-kubernetes-group-version-kind"][0]["kind"],
        "VolumeSnapshotClass"
    );
    vsclass
        .as_object_mut()
        .unwrap()
        .remove("x-kubernetes-group-version-kind");
    assert_eq!(
        &vsclass,
        builtin
            .document("snapshot.storage.k8s.io", "v1", "volumesnapshotclasses")
            .unwrap()
    );
    let patch = &doc.body["paths"]["/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses/{name}"]
        ["patch"];
    assert_eq!(
        patch["consumes"],
        json!([
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml"
        ])
    );
    let list = &doc.body["paths"]["/apis/snapshot.storage.k8s.io/v1/namespaces/{namespace}/volumesnapshots"]
        ["get"];
    assert_eq!(list["x-kubernetes-action"], "list");
    assert_eq!(
        list["responses"]["200"]["schema"]["$ref"],
        "#/definitions/io.k8s.storage.snapshot.v1.VolumeSnapshotList"
    );
}
