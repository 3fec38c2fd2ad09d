//! `csi-mock-driver`: the mock CSI driver as a standalone process, for demos,
//! benchmarks and tests that need the driver to live in another process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use csi_snapshotter::csi::proto::v1::controller_service_capability::rpc::Type as CtrlCap;
use csi_snapshotter::testing::mock_driver::{MockConfig, MockDriver};

/// A mock CSI driver serving Identity, Controller and GroupController on a
/// Unix socket, with an in-memory snapshot backend.
#[derive(Debug, Parser)]
#[command(name = "csi-mock-driver", version, after_help = PARAM_FAULTS_HELP)]
struct Args {
    /// Socket to listen on: `unix:///path/csi.sock` or a plain path.
    #[arg(long, default_value = "unix:///tmp/csi-mock.sock")]
    endpoint: String,
    /// Driver name returned by GetPluginInfo.
    #[arg(long, default_value = "mock.csi.k8s.io")]
    name: String,
    /// Snapshots become ready after this many polls (0: at once).
    #[arg(long, default_value_t = 0)]
    ready_after_polls: u32,
    /// Latency added to every RPC, e.g. `10ms`, `1s`, `500us`.
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    latency: Duration,
    /// Persist the backend state in this file across restarts.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Do not advertise LIST_SNAPSHOTS.
    #[arg(long)]
    no_list_snapshots: bool,
    /// Advertise GET_SNAPSHOT and serve GetSnapshot.
    #[arg(long)]
    get_snapshot: bool,
    /// Do not offer the GroupController service.
    #[arg(long)]
    no_group: bool,
}

/// The class parameters with which a CreateSnapshot asks for a fault.
const PARAM_FAULTS_HELP: &str = "\
CreateSnapshot parameters that inject faults (e.g. set in a VolumeSnapshotClass):
  mock.csi.k8s.io/reject=<any>           fail with INVALID_ARGUMENT (final)
  mock.csi.k8s.io/require-secrets=<any>  fail with UNAUTHENTICATED unless secrets are sent
  mock.csi.k8s.io/fail-once=<any>        fail the first call per snapshot name with UNAVAILABLE
  mock.csi.k8s.io/slow=<duration>        answer after e.g. 10s (at most 10m)";

/// Parses `<number><unit>` with unit ns, us, ms, s or m; a bare number is
/// milliseconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 10ms"))?;
    let secs = match unit {
        "ns" => value / 1e9,
        "us" | "µs" => value / 1e6,
        "" | "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("invalid duration unit {unit:?} in {s:?}")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

fn socket_path(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let mut config = MockConfig {
        driver_name: args.name,
        ready_after_polls: args.ready_after_polls,
        latency: args.latency,
        state_file: args.state_file,
        group_caps: !args.no_group,
        ..MockConfig::default()
    };
    if args.no_list_snapshots {
        config
            .controller_caps
            .retain(|c| *c != CtrlCap::ListSnapshots);
    }
    if args.get_snapshot {
        config.controller_caps.push(CtrlCap::GetSnapshot);
    }

    let socket = socket_path(&args.endpoint);
    let mock = match MockDriver::start(&socket, config).await {
        Ok(m) => m,
        Err(error) => {
            tracing::error!(socket = %socket.display(), %error, "cannot start the mock driver");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(socket = %socket.display(), "mock CSI driver serving");

    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "cannot install the SIGTERM handler");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("mock CSI driver stopping");
    mock.stop().await;
    ExitCode::SUCCESS
}
