//! The startup sequence (spec B.1) from a validated [`Config`] to an exit
//! status. Each step is a small function; the flag-only checks of steps 1, 2
//! and 5 already ran in [`crate::config`].

use std::path::Path;

use crate::config::{Config, VERSION};

/// Exit status for a startup failure (upstream `os.Exit(1)`).
pub const EXIT_FAILURE: i32 = 1;
/// Exit status of upstream's fatal log calls (`klog.Fatal`).
pub const EXIT_FATAL: i32 = 255;

/// cgroup v2 CPU limit file: `<quota> <period>` or `max <period>`.
const CGROUP_V2_CPU_MAX: &str = "/sys/fs/cgroup/cpu.max";
/// cgroup v1 CPU quota and period files (quota -1 means no limit).
const CGROUP_V1_CPU_QUOTA: &str = "/sys/fs/cgroup/cpu/cpu.cfs_quota_us";
const CGROUP_V1_CPU_PERIOD: &str = "/sys/fs/cgroup/cpu/cpu.cfs_period_us";

/// Builds the multi-threaded runtime. With `--automaxprocs` and a cgroup CPU
/// quota, the worker count is the quota in whole CPUs (at least 1), as Go's
/// automaxprocs sets GOMAXPROCS; otherwise tokio's default (one per CPU).
pub fn build_runtime(automaxprocs: bool) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if automaxprocs && let Some(n) = cgroup_cpu_limit() {
        builder.worker_threads(n);
    }
    builder.build()
}

/// Whole CPUs allowed by the cgroup CPU quota, if one is set.
fn cgroup_cpu_limit() -> Option<usize> {
    if let Ok(text) = std::fs::read_to_string(CGROUP_V2_CPU_MAX) {
        return parse_cpu_max(&text);
    }
    let quota = std::fs::read_to_string(CGROUP_V1_CPU_QUOTA).ok()?;
    let period = std::fs::read_to_string(CGROUP_V1_CPU_PERIOD).ok()?;
    cpus_from_quota(quota.trim().parse().ok()?, period.trim().parse().ok()?)
}

/// Parses cgroup v2 `cpu.max` (`"200000 100000"`, `"max 100000"`).
fn parse_cpu_max(text: &str) -> Option<usize> {
    let mut parts = text.split_whitespace();
    let quota = parts.next()?;
    let period = parts.next()?.parse().ok()?;
    if quota == "max" {
        return None;
    }
    cpus_from_quota(quota.parse().ok()?, period)
}

/// `quota / period` rounded down, at least 1; `None` for no limit.
fn cpus_from_quota(quota: i64, period: i64) -> Option<usize> {
    if quota <= 0 || period <= 0 {
        return None;
    }
    Some(usize::try_from(quota / period).unwrap_or(1).max(1))
}

/// Runs the sidecar; returns the process exit status.
pub async fn run(config: Config) -> i32 {
    match startup(&config).await {
        Ok(()) => 0,
        Err(code) => code,
    }
}

/// Steps of spec B.1 in order; an `Err` is the exit status, already logged.
async fn startup(config: &Config) -> Result<(), i32> {
    log_version(config);
    let _kube = kube_client(config).await?;
    let _node_name = node_name(config)?;
    let socket = csi_socket(config)?;
    tracing::error!(
        socket = %socket.display(),
        "Error connecting to CSI driver: the CSI client is not available in this build"
    );
    Err(EXIT_FAILURE)
}

/// Step 6, first half: only Unix sockets are supported, as upstream's
/// connection-loss handler works only with them.
fn csi_socket(config: &Config) -> Result<std::path::PathBuf, i32> {
    config.csi_socket_path().map_err(|e| {
        tracing::error!(error = e.as_str(), "Error connecting to CSI driver");
        EXIT_FAILURE
    })
}

/// Step 1: the version line and any flag warnings.
fn log_version(config: &Config) {
    tracing::info!(version = VERSION, "Version");
    for warning in config.startup_warnings() {
        tracing::warn!("{warning}");
    }
}

/// Step 3: the API server client from `--kubeconfig`, else in-cluster.
/// `KUBECONFIG` is deliberately not read.
async fn kube_client(config: &Config) -> Result<kube::Client, i32> {
    let kube_config = match &config.kubeconfig {
        Some(path) => kubeconfig_file(path).await,
        None => kube::Config::incluster().map_err(|e| e.to_string()),
    };
    let kube_config = kube_config.map_err(|e| {
        tracing::error!(
            error = e.as_str(),
            "Failed to create the Kubernetes client configuration"
        );
        EXIT_FAILURE
    })?;
    kube::Client::try_from(kube_config).map_err(|e| {
        tracing::error!(error = %e, "Failed to create the Kubernetes client");
        EXIT_FAILURE
    })
}

/// Reads one kubeconfig file with its current context.
async fn kubeconfig_file(path: &Path) -> Result<kube::Config, String> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| format!("reading kubeconfig {}: {e}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| format!("loading kubeconfig {}: {e}", path.display()))
}

/// Step 4: with `--node-deployment`, `NODE_NAME` must be set (fatal).
fn node_name(config: &Config) -> Result<Option<String>, i32> {
    if !config.node_deployment {
        return Ok(None);
    }
    match std::env::var("NODE_NAME") {
        Ok(name) if !name.is_empty() => Ok(Some(name)),
        _ => {
            tracing::error!("--node-deployment requires the NODE_NAME environment variable");
            Err(EXIT_FATAL)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v2_cpu_max() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2));
        assert_eq!(parse_cpu_max("150000 100000"), Some(1));
        assert_eq!(parse_cpu_max("50000 100000"), Some(1));
        assert_eq!(parse_cpu_max("garbage"), None);
        assert_eq!(cpus_from_quota(-1, 100000), None);
    }
}
