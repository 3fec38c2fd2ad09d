//! The writes the sidecar makes to its objects (spec C.10): JSON Patch
//! documents on the main resource or the `/status` subresource, and the one
//! status PUT after a delete.
//!
//! Each function sends exactly one request (no GET first) and returns the
//! server's reply, so the caller can record the new resourceVersion. The
//! patch documents themselves are built elsewhere (pure code); here they are
//! only sent.

use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The object does not exist (any more).
    #[error("{kind} {name:?} not found: {message}")]
    NotFound {
        /// Kind of the object.
        kind: String,
        /// Name of the object.
        name: String,
        /// The server's message.
        message: String,
    },
    /// The object changed since it was read (only possible for a write
    /// that carries a resourceVersion: the PUT, or a patch that sets one).
    #[error("conflict writing {kind} {name:?}: {message}")]
    Conflict {
        /// Kind of the object.
        kind: String,
        /// Name of the object.
        name: String,
        /// The server's message.
        message: String,
    },
    /// The server rejected the request with another status.
    #[error("writing {kind} {name:?} failed: {code} {reason}: {message}")]
    Rejected {
        /// Kind of the object.
        kind: String,
        /// Name of the object.
        name: String,
        /// HTTP status code.
        code: u16,
        /// The `Status.reason` (e.g. `Invalid`, `Forbidden`).
        reason: String,
        /// The server's message.
        message: String,
    },
    /// The document is not a JSON Patch (a bug in the caller; retrying cannot help).
    #[error("invalid JSON Patch document for {kind} {name:?}: {source}")]
    InvalidPatch {
        /// Kind of the object.
        kind: String,
        /// Name of the object.
        name: String,
        /// Why it does not parse as a JSON Patch.
        #[source]
        source: serde_json::Error,
    },
    /// The request did not get a Kubernetes status reply (connection,
    /// TLS, or an undecodable body).
    #[error("writing {kind} {name:?} failed: {source}")]
    Transport {
        /// Kind of the object.
        kind: String,
        /// Name of the object.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

impl WriteError {
    /// Whether the server answered 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, WriteError::NotFound { .. })
    }

    /// Whether the server answered 409.
    pub fn is_conflict(&self) -> bool {
        matches!(self, WriteError::Conflict { .. })
    }

    /// Whether the key should be retried with backoff. A vanished object
    /// needs no more work (its delete event arrives anyway) and a malformed
    /// patch document will not improve by retrying; everything else may be
    /// transient.
    pub fn should_requeue(&self) -> bool {
        !matches!(
            self,
            WriteError::NotFound { .. } | WriteError::InvalidPatch { .. }
        )
    }

    /// A short label for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            WriteError::NotFound { .. } => "not_found",
            WriteError::Conflict { .. } => "conflict",
            WriteError::Rejected { .. } => "rejected",
            WriteError::InvalidPatch { .. } => "invalid_patch",
            WriteError::Transport { .. } => "transport",
        }
    }

    /// Classifies a client error for the object `kind`/`name`.
    pub fn from_kube(kind: &str, name: &str, err: kube::Error) -> WriteError {
        let (kind, name) = (kind.to_string(), name.to_string());
        match err {
            kube::Error::Api(status) => {
                let kube::core::Status {
                    code,
                    reason,
                    message,
                    ..
                } = *status;
                match code {
                    404 => WriteError::NotFound {
                        kind,
                        name,
                        message,
                    },
                    409 => WriteError::Conflict {
                        kind,
                        name,
                        message,
                    },
                    _ => WriteError::Rejected {
                        kind,
                        name,
                        code,
                        reason,
                        message,
                    },
                }
            }
            other => WriteError::Transport {
                kind,
                name,
                source: other,
            },
        }
    }
}

/// Whether a write goes to the main resource or the `/status` subresource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The object itself (metadata: annotations, finalizers).
    Main,
    /// The `/status` subresource.
    Status,
}

/// Sends the JSON Patch `doc` (`application/json-patch+json`) to `target`
/// of the object `name` and returns the patched object.
pub async fn json_patch<K>(
    api: &Api<K>,
    name: &str,
    target: Target,
    doc: &serde_json::Value,
) -> Result<K, WriteError>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let kind = K::kind(&());
    let ops = serde_json::from_value(doc.clone()).map_err(|source| WriteError::InvalidPatch {
        kind: kind.to_string(),
        name: name.to_string(),
        source,
    })?;
    let patch: Patch<()> = Patch::Json(ops);
    let pp = PatchParams::default();
    let res = match target {
        Target::Main => api.patch(name, &pp, &patch).await,
        Target::Status => api.patch_status(name, &pp, &patch).await,
    };
    res.map_err(|e| WriteError::from_kube(&kind, name, e))
}

/// PUT of `obj` to the `/status` subresource (the status clear after a
/// delete, spec C.7). It carries `obj`'s resourceVersion, so it can conflict.
pub async fn replace_status<K>(api: &Api<K>, obj: &K) -> Result<K, WriteError>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let kind = K::kind(&());
    let name = obj.meta().name.clone().unwrap_or_default();
    api.replace_status(&name, &PostParams::default(), obj)
        .await
        .map_err(|e| WriteError::from_kube(&kind, &name, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_err(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("m", reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn classifies_status_codes() {
        let nf = WriteError::from_kube("VolumeSnapshotContent", "c", api_err(404, "NotFound"));
        assert!(nf.is_not_found() && !nf.should_requeue());
        let c = WriteError::from_kube("VolumeSnapshotContent", "c", api_err(409, "Conflict"));
        assert!(c.is_conflict() && c.should_requeue());
        let r = WriteError::from_kube("VolumeSnapshotContent", "c", api_err(422, "Invalid"));
        assert!(matches!(r, WriteError::Rejected { code: 422, .. }) && r.should_requeue());
        assert_eq!(r.metric_label(), "rejected");
    }
}
