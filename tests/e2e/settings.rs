//! Settings of the end-to-end suite, all read from environment variables
//! (docs/e2e.md has the table).

use std::path::PathBuf;
use std::time::Duration;

/// How long a single wait may take unless `E2E_TIMEOUT` says otherwise. A
/// snapshot that needs retries waits through the sidecar's exponential
/// backoff (1s, 2s, 4s, ... by default), so this leaves room for several.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);

/// A class parameter `key=value` that a cooperating driver understands.
#[derive(Clone, Debug)]
pub struct Param {
    pub key: String,
    pub value: String,
}

/// Start our sidecar as a child process instead of using a running one.
#[derive(Clone, Debug)]
pub struct Launch {
    pub binary: PathBuf,
    pub csi_address: String,
    pub extra_args: Vec<String>,
    /// `E2E_SIDECAR_KUBECONFIG`: the sidecar's own kubeconfig, e.g. one of
    /// a service account bound to deploy/kubernetes/rbac.yaml (default:
    /// the suite's).
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// `E2E_KUBECONFIG`: the cluster.
    pub kubeconfig: PathBuf,
    /// `E2E_CONTEXT`: a context of that kubeconfig other than the current one.
    pub context: Option<String>,
    /// `E2E_DRIVER`: the CSI driver name the sidecar serves.
    pub driver: String,
    /// `E2E_STORAGE_CLASS`: provisions claims for the driver. When unset, a
    /// StorageClass whose provisioner is the driver is looked up; when there
    /// is none, claims are bound to pre-created PersistentVolumes.
    pub storage_class: Option<String>,
    /// `E2E_VOLUME_HANDLE`: the CSI volume handle of those pre-created
    /// PersistentVolumes (default: a fresh name, which suits drivers that
    /// snapshot any handle, such as the mock driver).
    pub volume_handle: Option<String>,
    /// `E2E_CREATE_VOLUME=1`: the pre-created PersistentVolumes use one
    /// volume made with the driver's CreateVolume at `E2E_CSI_ADDRESS`.
    pub create_volume: bool,
    /// `E2E_SIDECAR_BIN` + `E2E_CSI_ADDRESS` (+ `E2E_SIDECAR_ARGS`).
    pub sidecar: Option<Launch>,
    /// `E2E_TIMEOUT`: seconds per wait.
    pub timeout: Duration,
    /// `E2E_SCENARIOS`: comma-separated names to run (default: all).
    pub only: Option<Vec<String>>,
    /// `E2E_NO_LIST_SNAPSHOTS=1`: the driver does not advertise
    /// LIST_SNAPSHOTS, so whether a handle still exists on the backend cannot
    /// be observed through the sidecar and those checks are skipped.
    pub no_list_snapshots: bool,
    /// `E2E_REJECT_PARAM`: with this class parameter the driver fails
    /// CreateSnapshot with a final error.
    pub reject_param: Option<Param>,
    /// `E2E_SECRET_PARAM`: with this class parameter the driver fails
    /// CreateSnapshot unless the request carries secrets.
    pub secret_param: Option<Param>,
    /// `E2E_TRANSIENT_PARAM`: with this class parameter the driver fails the
    /// first CreateSnapshot for a snapshot name with a non-final code
    /// (e.g. Unavailable), then succeeds.
    pub transient_param: Option<Param>,
    /// `E2E_SLOW_PARAM`: with this class parameter CreateSnapshot takes
    /// several seconds (well below the sidecar's --timeout) before it succeeds.
    pub slow_param: Option<Param>,
    /// `E2E_SLOW_CREATES=1`: every CreateSnapshot of the driver is slow (for
    /// example the mock driver started with `--latency 10s`), so no class
    /// parameter is needed for the in-flight deletion scenario.
    pub slow_creates: bool,
    /// `E2E_STANDIN_CONTROLLER=1`: the cluster is only an API server (the
    /// embedded one); run the suite's stand-in for the snapshot-controller
    /// and the volume binder.
    pub standin_controller: bool,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn param(name: &str) -> Result<Option<Param>, String> {
    let Some(raw) = var(name) else {
        return Ok(None);
    };
    let (key, value) = raw
        .split_once('=')
        .ok_or_else(|| format!("{name} must be key=value, got {raw:?}"))?;
    if key.is_empty() {
        return Err(format!("{name} has an empty key"));
    }
    Ok(Some(Param {
        key: key.to_string(),
        value: value.to_string(),
    }))
}

impl Settings {
    /// `Ok(None)` when `E2E_KUBECONFIG` is unset: the suite is skipped.
    pub fn from_env() -> Result<Option<Settings>, String> {
        let Some(kubeconfig) = var("E2E_KUBECONFIG") else {
            return Ok(None);
        };
        let driver = var("E2E_DRIVER").ok_or("E2E_DRIVER (the CSI driver name) is required")?;
        let sidecar = match (var("E2E_SIDECAR_BIN"), var("E2E_CSI_ADDRESS")) {
            (Some(binary), Some(csi_address)) => Some(Launch {
                binary: PathBuf::from(binary),
                csi_address,
                extra_args: var("E2E_SIDECAR_ARGS")
                    .map(|a| a.split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default(),
                kubeconfig: var("E2E_SIDECAR_KUBECONFIG").map(PathBuf::from),
            }),
            (None, None) => None,
            _ => return Err("E2E_SIDECAR_BIN and E2E_CSI_ADDRESS go together".into()),
        };
        let create_volume = var("E2E_CREATE_VOLUME").is_some_and(|v| v != "0");
        if create_volume && (sidecar.is_none() || var("E2E_VOLUME_HANDLE").is_some()) {
            return Err(
                "E2E_CREATE_VOLUME needs E2E_CSI_ADDRESS (with E2E_SIDECAR_BIN) and no E2E_VOLUME_HANDLE"
                    .into(),
            );
        }
        let timeout = match var("E2E_TIMEOUT") {
            Some(s) => Duration::from_secs(
                s.parse()
                    .map_err(|_| format!("E2E_TIMEOUT must be whole seconds, got {s:?}"))?,
            ),
            None => DEFAULT_TIMEOUT,
        };
        Ok(Some(Settings {
            kubeconfig: PathBuf::from(kubeconfig),
            context: var("E2E_CONTEXT"),
            driver,
            storage_class: var("E2E_STORAGE_CLASS"),
            volume_handle: var("E2E_VOLUME_HANDLE"),
            create_volume,
            sidecar,
            timeout,
            only: var("E2E_SCENARIOS")
                .map(|s| s.split(',').map(|n| n.trim().to_string()).collect()),
            no_list_snapshots: var("E2E_NO_LIST_SNAPSHOTS").is_some_and(|v| v != "0"),
            reject_param: param("E2E_REJECT_PARAM")?,
            secret_param: param("E2E_SECRET_PARAM")?,
            transient_param: param("E2E_TRANSIENT_PARAM")?,
            slow_param: param("E2E_SLOW_PARAM")?,
            slow_creates: var("E2E_SLOW_CREATES").is_some_and(|v| v != "0"),
            standin_controller: var("E2E_STANDIN_CONTROLLER").is_some_and(|v| v != "0"),
        }))
    }

    /// Whether `E2E_SCENARIOS` selects the scenario.
    pub fn selects(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == name))
    }
}
