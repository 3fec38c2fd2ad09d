//! The client of `diagnose`, configured as kubectl does: `--kubeconfig`,
//! else `KUBECONFIG`, else `~/.kube/config`, else the in-cluster service
//! account; `--context` picks a context. (The sidecar itself reads only
//! `--kubeconfig`, see [`crate::k8s::client`].)

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};

/// Why no client could be built (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A kubeconfig file could not be read, or its context is unusable.
    #[error("kubeconfig {source_name}: {error}")]
    Kubeconfig {
        /// Where it came from.
        source_name: String,
        /// The loader's error.
        #[source]
        error: KubeconfigError,
    },
    /// No kubeconfig anywhere and not inside a cluster.
    #[error("no kubeconfig (--kubeconfig, KUBECONFIG, ~/.kube/config) and not in a cluster: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    /// `--context` was given without any kubeconfig.
    #[error("--context {0} given but no kubeconfig was found")]
    ContextWithoutKubeconfig(String),
    /// The HTTP client could not be built.
    #[error("cannot build the client: {0}")]
    Build(#[source] kube::Error),
}

/// Where the kubeconfig comes from.
fn find_kubeconfig(flag: Option<&Path>) -> Result<Option<(String, Kubeconfig)>, ConnectError> {
    let read = |path: PathBuf| {
        Kubeconfig::read_from(&path)
            .map(|kc| Some((path.display().to_string(), kc)))
            .map_err(|error| ConnectError::Kubeconfig {
                source_name: path.display().to_string(),
                error,
            })
    };
    if let Some(p) = flag {
        return read(p.to_path_buf());
    }
    match Kubeconfig::from_env() {
        Ok(Some(kc)) => return Ok(Some(("$KUBECONFIG".to_owned(), kc))),
        Ok(None) => {}
        Err(error) => {
            return Err(ConnectError::Kubeconfig {
                source_name: "$KUBECONFIG".to_owned(),
                error,
            });
        }
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    match home.map(|h| h.join(".kube").join("config")) {
        Some(p) if p.is_file() => read(p),
        _ => Ok(None),
    }
}

/// The client and the namespace of the chosen context (`default` when it
/// names none).
pub async fn connect(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<(Client, String), ConnectError> {
    let config = match find_kubeconfig(kubeconfig)? {
        Some((source_name, kc)) => {
            let opts = KubeConfigOptions {
                context: context.map(str::to_owned),
                ..KubeConfigOptions::default()
            };
            Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|error| ConnectError::Kubeconfig { source_name, error })?
        }
        None => {
            if let Some(c) = context {
                return Err(ConnectError::ContextWithoutKubeconfig(c.to_owned()));
            }
            Config::incluster().map_err(ConnectError::InCluster)?
        }
    };
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config).map_err(ConnectError::Build)?;
    Ok((client, namespace))
}
