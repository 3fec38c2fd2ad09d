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
