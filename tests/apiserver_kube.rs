//! kube-rs against the embedded API server, unmodified: Api verbs, the
//! watcher (list+watch and streaming lists, recovery from 410) and a
//! Controller.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use csi_snapshotter::testing::apiserver::{ApiServer, ApiServerOptions};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn vsc_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotContent"),
        "volumesnapshotcontents",
    )
}

fn vsc(name: &str) -> DynamicObject {
    let mut o = DynamicObject::new(name, &vsc_resource());
    o.data = json!({"spec": {"deletionPolicy": "Delete", "driver": "d", "source": {"volumeHandle": "v"},
                             "volumeSnapshotRef": {"name": "s", "namespace": "default"}}});
    o
}

async fn server() -> (ApiServer, kube::Client) {
    let s = ApiServer::start(ApiServerOptions::default()).await.unwrap();
    let c = s.client().await;
    (s, c)
}

#[tokio::test]
async fn kubeconfig_is_read_by_kube_config() {
    let s = ApiServer::start(ApiServerOptions::default()).await.unwrap();
    let text = std::fs::read_to_string(s.kubeconfig_path()).unwrap();
    assert!(text.contains(&format!("server: https://{}", s.addr())));
    assert!(text.contains("certificate-authority-data: "));
    assert_eq!(s.url(), format!("https://{}", s.addr()));
    let kc = kube::config::Kubeconfig::read_from(s.kubeconfig_path()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");
}

#[tokio::test]
async fn plain_http_only_when_asked_for() {
    let s = ApiServer::start(ApiServerOptions {
        plain_http: true,
        ..ApiServerOptions::default()
    })
    .await
    .unwrap();
    let text = std::fs::read_to_string(s.kubeconfig_path()).unwrap();
    assert!(text.contains(&format!("server: http://{}", s.addr())));
    assert!(!text.contains("certificate-authority"));
    let v = s.client().await.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");
    let r = s.request("GET", "/version", None, None).await.unwrap();
    assert_eq!(r.code, 200);
}

#[tokio::test]
async fn https_server_refuses_plain_http() {
    let s = ApiServer::start(ApiServerOptions::default()).await.unwrap();
    let mut tcp = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut buf),
    )
    .await;
    assert!(!String::from_utf8_lossy(&buf).contains("\"major\""));
    // The same request over TLS is answered.
    let r = s.request("GET", "/version", None, None).await.unwrap();
    assert_eq!(r.code, 200);
}

#[tokio::test]
async fn api_verbs_on_custom_and_core_resources() {
    let (_s, client) = server().await;
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &vsc_resource());
    let created = api
        .create(&PostParams::default(), &vsc("c1"))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    let patched = api
        .patch_status(
            "c1",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(
                    json!([{"op": "replace", "path": "/status", "value": {"readyToUse": true}}]),
                )
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["readyToUse"], true);
    let mut fresh = api.get("c1").await.unwrap();
    fresh.data["status"] = json!({"readyToUse": false});
    let replaced = api
        .replace_status("c1", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_eq!(replaced.data["status"]["readyToUse"], false);

    // A stale replace surfaces as a 409 ApiError.
    let err = api
        .replace("c1", &PostParams::default(), &created)
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict")),
        other => panic!("unexpected {other:?}"),
    }
    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    api.delete("c1", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("c1").await.unwrap().is_none());

    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let mut s = Secret::default();
    s.metadata.name = Some("creds".into());
    s.string_data = Some([("user".to_string(), "me".to_string())].into());
    secrets.create(&PostParams::default(), &s).await.unwrap();
    let got = secrets.get("creds").await.unwrap();
    assert_eq!(got.data.unwrap()["user"].0, b"me");
    let list = secrets.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1, "typed lists decode items without kind");
    secrets
        .patch(
            "creds",
            &PatchParams::apply("test"),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"labels": {"a": "b"}}}),
            ),
        )
        .await
        .unwrap();
    assert!(
        secrets
            .delete("creds", &DeleteParams::default())
            .await
            .unwrap()
            .is_right()
    );
}

async fn watcher_roundtrip(cfg: watcher::Config) {
    let (s, client) = server().await;
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &vsc_resource());
    api.create(&PostParams::default(), &vsc("before"))
        .await
        .unwrap();
    let mut stream = watcher(api.clone(), cfg).boxed();
    let mut seen_init = false;
    while let Ok(Some(ev)) = tokio::time::timeout(WAIT, stream.try_next()).await.unwrap() {
        if let watcher::Event::InitDone = ev {
            seen_init = true;
            break;
        }
    }
    assert!(seen_init);
    api.create(&PostParams::default(), &vsc("after"))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(WAIT, stream.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(watcher::Event::Apply(o)) if o.metadata.name.as_deref() == Some("after") => break,
            _ => {}
        }
    }
    // Compaction plus closed watches: the watcher gets 410 and relists.
    s.compact();
    s.faults().close_watches();
    api.create(&PostParams::default(), &vsc("third"))
        .await
        .unwrap();
    let mut relisted = false;
    loop {
        match tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
            Some(Ok(watcher::Event::Init)) => relisted = true,
            Some(Ok(watcher::Event::InitApply(o)))
                if relisted && o.metadata.name.as_deref() == Some("third") =>
            {
                break;
            }
            Some(Ok(watcher::Event::Apply(o))) if o.metadata.name.as_deref() == Some("third") => {
                break;
            }
            Some(_) => {}
            None => panic!("watcher ended"),
        }
    }
    api.delete("third", &DeleteParams::default()).await.unwrap();
    loop {
        match tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
            Some(Ok(watcher::Event::Delete(o))) => {
                assert_eq!(o.metadata.name.as_deref(), Some("third"));
                break;
            }
            Some(_) => {}
            None => panic!("watcher ended"),
        }
    }
}

#[tokio::test]
async fn watcher_list_then_watch() {
    watcher_roundtrip(watcher::Config::default()).await;
}

#[tokio::test]
async fn watcher_streaming_list() {
    watcher_roundtrip(watcher::Config::default().streaming_lists()).await;
}

#[tokio::test]
async fn watcher_pages_the_initial_list() {
    let (s, client) = server().await;
    let api: Api<DynamicObject> = Api::all_with(client, &vsc_resource());
    for i in 0..7 {
        api.create(&PostParams::default(), &vsc(&format!("c{i}")))
            .await
            .unwrap();
    }
    let mut stream = watcher(api, watcher::Config::default().page_size(3)).boxed();
    let mut n = 0;
    loop {
        match tokio::time::timeout(WAIT, stream.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(watcher::Event::InitApply(_)) => n += 1,
            Some(watcher::Event::InitDone) => break,
            _ => {}
        }
    }
    assert_eq!(n, 7);
    assert_eq!(s.request_count("LIST", "volumesnapshotcontents"), 3);
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[tokio::test]
async fn controller_reconciles_objects() {
    let (_s, client) = server().await;
    let api: Api<DynamicObject> = Api::all_with(client, &vsc_resource());
    let count = Arc::new(AtomicUsize::new(0));
    let ctx = count.clone();
    let ctrl = Controller::new_with(api.clone(), watcher::Config::default(), vsc_resource())
        .run(
            |obj: Arc<DynamicObject>, ctx: Arc<Arc<AtomicUsize>>| async move {
                if obj.metadata.name.as_deref() == Some("reconcile-me") {
                    ctx.fetch_add(1, Ordering::SeqCst);
                }
                Ok::<_, Never>(Action::await_change())
            },
            |_obj, _err: &Never, _ctx| Action::await_change(),
            Arc::new(ctx),
        )
        .for_each(|_| async {});
    let task = tokio::spawn(ctrl);
    api.create(&PostParams::default(), &vsc("reconcile-me"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while count.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no reconcile");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
}
