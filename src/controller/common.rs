//! Effects shared by the content executors (VSC and VGSC): the result of a
//! sync, the secret GET behind every CSI call that carries credentials, the
//! Warning events, and the worker loop that feeds a queue's keys to a sync.

use std::collections::BTreeMap;
use std::future::Future;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Resource};

use crate::controller::queue::{Key, WorkQueue};
use crate::csi::driver::Secrets;
use crate::k8s::event::{EventRecorder, object_ref};
use crate::reconcile::messages::Warning;
use crate::reconcile::secrets::SecretRef;

/// What the queue does with a key after a sync (spec B.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done: reset the key's backoff.
    Forget,
    /// Retry with the key's exponential backoff (an error, or not ready yet).
    Requeue,
}

/// A secret named by annotations or class parameters could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The GET failed (not found, forbidden, transport).
    #[error("failed to get secret {namespace}/{name}: {source}")]
    Get {
        /// Secret namespace.
        namespace: String,
        /// Secret name.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

/// GETs the secret `secret_ref` names and turns its `data` into CSI secrets
/// (values as UTF-8 text of the decoded bytes, spec C.12 step 5). `None`
/// means no credentials. The values are never logged.
pub async fn fetch_secrets(
    client: &kube::Client,
    secret_ref: Option<&SecretRef>,
) -> Result<Secrets, SecretError> {
    let Some(r) = secret_ref else {
        return Ok(Secrets::default());
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), &r.namespace);
    let secret = api.get(&r.name).await.map_err(|source| SecretError::Get {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        source,
    })?;
    let data: BTreeMap<String, String> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    Ok(Secrets::new(data))
}

/// Emits `warning` as a Warning event about `obj` (the recorder logs it too).
pub fn emit_warning<K: Resource<DynamicType = ()>>(
    events: &EventRecorder,
    obj: &K,
    warning: &Warning,
) {
    events.warning(&object_ref(obj), warning.reason.as_str(), &warning.message);
}

/// One worker: takes keys from `queue` until it shuts down and feeds each to
/// `sync`; `Requeue` re-adds the key with backoff, `Forget` resets it.
pub async fn run_worker<F, Fut>(queue: WorkQueue<Key>, sync: F)
where
    F: Fn(Key) -> Fut,
    Fut: Future<Output = Outcome>,
{
    while let Some(claimed) = queue.get().await {
        let key = claimed.key().clone();
        match sync(key.clone()).await {
            Outcome::Forget => queue.forget(&key),
            Outcome::Requeue => queue.add_rate_limited(key),
        }
        claimed.done();
    }
}
