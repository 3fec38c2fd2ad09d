//! `csi-snapshotter embedded-apiserver`: run the embedded API server on its
//! own (or its benchmark).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::bench::{BenchOptions, run_bench};
use super::{ApiServer, ApiServerOptions, RbacPolicy};

/// Command line of `csi-snapshotter embedded-apiserver`.
#[derive(Debug, Parser)]
#[command(
    name = "csi-snapshotter embedded-apiserver",
    about = "Serve an in-memory Kubernetes API (snapshot CRDs, core types) over HTTPS on 127.0.0.1"
)]
struct Args {
    /// Where to write a kubeconfig for clients (required unless --bench).
    #[arg(long, value_name = "PATH")]
    kubeconfig_out: Option<PathBuf>,
    /// Listen address (default 127.0.0.1 with a port chosen by the OS).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Directory of CRD YAML files to validate custom resources against
    /// instead of the built-in schemas.
    #[arg(long, value_name = "DIR")]
    crd_schemas: Option<PathBuf>,
    /// Also write `<kubeconfig-out>.restricted`, for a user held to the
    /// ClusterRoles and Roles of this YAML file (e.g.
    /// deploy/kubernetes/rbac.yaml); its other requests get 403.
    #[arg(long, value_name = "FILE")]
    restricted_rbac: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    plain_http: bool,
    /// CPU time spent on each request (watches aside) before it is
    /// answered, like a real kube-apiserver and etcd (Go duration, e.g.
    /// 4.25ms).
    #[arg(long, value_name = "DURATION", value_parser = crate::testing::flag_duration, default_value = "0s")]
    cpu_per_request: Duration,
    /// Run the write/watch benchmark against an in-process server and exit.
    #[arg(long)]
    bench: bool,
    /// Benchmark: objects created (each is then status-patched once).
    #[arg(long, default_value_t = 20_000)]
    bench_objects: usize,
    /// Benchmark: concurrent writer connections.
    #[arg(long, default_value_t = 16)]
    bench_writers: usize,
    /// Benchmark: concurrent watchers.
    #[arg(long, default_value_t = 8)]
    bench_watchers: usize,
}

/// Runs the command; `args` are the arguments after `embedded-apiserver`
/// (a leading program name and/or `embedded-apiserver` are skipped).
/// Returns the process exit code.
pub fn cli_main(args: Vec<String>) -> i32 {
    let skip = args
        .iter()
        .position(|a| a == "embedded-apiserver")
        .map(|i| i + 1)
        .unwrap_or(0);
    let argv = std::iter::once("csi-snapshotter embedded-apiserver".to_string())
        .chain(args.into_iter().skip(skip));
    let parsed = match Args::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    // Run on a dedicated runtime; from inside a runtime, on its own thread.
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::spawn(move || run_blocking(parsed))
            .join()
            .unwrap_or(1)
    } else {
        run_blocking(parsed)
    }
}

fn run_blocking(args: Args) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("embedded-apiserver: cannot start runtime: {e}");
            return 1;
        }
    };
    rt.block_on(run(args))
}

async fn run(args: Args) -> i32 {
    if args.bench {
        let opts = BenchOptions {
            objects: args.bench_objects,
            writers: args.bench_writers,
            watchers: args.bench_watchers,
            crd_schemas: args.crd_schemas,
        };
        return match run_bench(opts).await {
            Ok(report) => {
                println!("{report}");
                0
            }
            Err(e) => {
                eprintln!("embedded-apiserver bench: {e}");
                1
            }
        };
    }
    let Some(kubeconfig_out) = args.kubeconfig_out else {
        eprintln!("embedded-apiserver: --kubeconfig-out PATH is required");
        return 2;
    };
    let restricted = match &args.restricted_rbac {
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| RbacPolicy::from_yaml(&text))
        {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("embedded-apiserver: {}: {e}", path.display());
                return 1;
            }
        },
        None => None,
    };
    let server = match ApiServer::start(ApiServerOptions {
        listen: args.listen,
        crd_schemas: args.crd_schemas,
        kubeconfig_out: Some(kubeconfig_out),
        restricted,
        plain_http: args.plain_http,
        cpu_per_request: args.cpu_per_request,
        ..ApiServerOptions::default()
    })
    .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("embedded-apiserver: {e}");
            return 1;
        }
    };
    println!("{}", server.url());
    eprintln!(
        "kubeconfig written to {}",
        server.kubeconfig_path().display()
    );
    if let Some(path) = server.restricted_kubeconfig_path() {
        eprintln!("restricted kubeconfig written to {}", path.display());
    }
    wait_for_signal().await;
    server.shutdown().await;
    0
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
