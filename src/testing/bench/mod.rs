//! `csi-snapshotter bench`: how fast and how light the sidecar is.
//!
//! The benchmark runs the sidecar as a separate process (this binary in
//! sidecar mode, and with `--sidecar-binary` another one as well, with the
//! same flags), plays the snapshot-controller (creates N dynamic
//! VolumeSnapshotContents, then deletes them) and prints what it took:
//! time, throughput, latency as seen by a watch, API requests per snapshot
//! by verb, CSI calls per snapshot, and the sidecar's CPU time and resident
//! memory (from `/proc`).
//!
//! Its peers are either the embedded API server and the mock CSI driver,
//! started in this process (the default; requests are counted at the
//! server, and the idle memory with ready contents cached is measured
//! too), or a real cluster (`--kubeconfig`) and CSI driver
//! (`--csi-address`), where requests are counted from the sidecar's own
//! `rest_client_requests_total`. It asserts nothing.

mod cluster;
mod compare;
mod env;
pub mod proc;
mod report;
mod scrape;
mod sidecar;
mod workload;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures::StreamExt;

use crate::testing::flag_duration as duration;
use cluster::{Cluster, Target};
use compare::Comparison;
use env::{Counters, Env, Peers};
use report::{Idle, Latency, Phase, Report, Settings, by_verb};
use sidecar::SidecarSpec;
use workload::{Seen, Tracker};

/// How often completion is checked (the watch's records are in memory).
const POLL: Duration = Duration::from_millis(5);
/// Interval of progress lines on stderr during a long phase.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Objects written between yields, so that the watch and the embedded
/// server keep up while the benchmark writes.
const CREATE_BATCH: usize = 64;
/// The embedded API server's default CPU time per request: what a real one
/// spends beyond the embedded server's own work. kube-apiserver 1.36 and
/// its etcd, on loopback beside the sidecar, spent 18.2 s of CPU over the
/// 4,000 requests of a create of 1,000 snapshots (the benchmark's POST, the
/// sidecar's 3 PATCHes) and 12.9 s over the 3,000 of their delete; the
/// embedded server's own work for the same phases was 0.75 s and 0.50 s.
/// (31.1 - 1.25) s / 7,000 requests = 4.26 ms.
const DEFAULT_API_CPU: Duration = Duration::from_micros(4_250);
/// Idle phases run by default on the embedded peers.
const DEFAULT_IDLE: [usize; 2] = [100, 10_000];

/// Output format on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// A readable table.
    Table,
    /// The JSON report.
    Json,
}

/// Command line of `csi-snapshotter bench`.
#[derive(Debug, Parser)]
#[command(
    name = "csi-snapshotter bench",
    about = "Measure the sidecar against the embedded API server and the mock CSI driver, \
             or against a real cluster and CSI driver (--kubeconfig, --csi-address)"
)]
struct Args {
    /// Snapshots created, then deleted (0 skips these phases).
    #[arg(long, default_value_t = 1000)]
    snapshots: usize,
    /// Real cluster: the benchmark's kubeconfig (it creates and deletes
    /// VolumeSnapshotClasses and VolumeSnapshotContents and lists Leases).
    /// Without it the embedded API server and the mock driver are used.
    #[arg(long, value_name = "FILE", requires = "csi_address")]
    kubeconfig: Option<PathBuf>,
    /// Real cluster: the CSI driver's socket (unix:///path or a path).
    #[arg(long, value_name = "ADDR", requires = "kubeconfig")]
    csi_address: Option<String>,
    /// Real cluster: the kubeconfig the sidecar runs with (default:
    /// --kubeconfig), e.g. one bound to the sidecar's RBAC rules only.
    #[arg(long, value_name = "FILE", requires = "kubeconfig")]
    sidecar_kubeconfig: Option<PathBuf>,
    /// Real cluster: snapshot this volume instead of creating one with
    /// the driver's CreateVolume (and deleting it afterwards).
    #[arg(long, value_name = "HANDLE", requires = "kubeconfig")]
    volume_handle: Option<String>,
    /// Real cluster: run even while another holder renews the driver's
    /// leader-election Lease (a second sidecar would race it).
    #[arg(long, requires = "kubeconfig")]
    force: bool,
    /// Mock driver latency added to every RPC (Go duration, e.g. 10ms).
    #[arg(long, value_parser = duration, default_value = "0s")]
    latency: Duration,
    /// Embedded API server: delay every response by this much (Go
    /// duration), like the service time of a busy real API server. The
    /// sidecar then sees requests spread in time as on a real cluster,
    /// rather than answered at once and in batches.
    #[arg(long, value_parser = duration, default_value = "0s")]
    api_latency: Duration,
    /// Embedded API server: CPU time spent on each request (watches aside)
    /// before it is answered, on at most as many threads as there are
    /// cores (Go duration; default 4.25ms). A real kube-apiserver and its
    /// etcd spend about that on each request for a custom resource, on the
    /// cores the sidecar runs on, and the sidecar's own CPU per snapshot
    /// depends on it; 0s measures the sidecar beside an idle peer.
    #[arg(long, value_parser = duration, conflicts_with = "kubeconfig")]
    api_cpu: Option<Duration>,
    /// Mock driver: snapshots report ready_to_use only after this many polls.
    #[arg(long, default_value_t = 0)]
    ready_after_polls: u32,
    /// Sidecar --worker-threads.
    #[arg(long, default_value_t = 10)]
    worker_threads: u32,
    /// Sidecar --kube-api-qps. Negative means unlimited (as in client-go; 0
    /// means the sidecar's default of 5). The benchmark's default is
    /// unlimited; pass 5 and --kube-api-burst 10 for the sidecar's defaults.
    #[arg(long, default_value_t = -1.0, allow_hyphen_values = true)]
    kube_api_qps: f64,
    /// Sidecar --kube-api-burst (0 means 10; ignored when qps is unlimited).
    #[arg(long, default_value_t = 10, allow_hyphen_values = true)]
    kube_api_burst: i64,
    /// Idle phases (embedded peers only): ready contents pre-created before
    /// the sidecar starts, comma-separated (default 100,10000; 0 or an
    /// empty value skips them).
    #[arg(long, value_delimiter = ',')]
    idle_contents: Option<Vec<usize>>,
    /// Idle phases: how long to wait after the sidecar is ready and quiet
    /// before reading its memory.
    #[arg(long, value_parser = duration, default_value = "5s")]
    idle_settle: Duration,
    /// Another sidecar binary (e.g. the upstream Go one). It is measured
    /// first, with the same flags, then this binary, and a comparison of
    /// the two is printed.
    #[arg(long, value_name = "PATH")]
    sidecar_binary: Option<PathBuf>,
    /// The sidecar binary measured as ours (default: this binary). The
    /// image's build (`cargo build --release --no-default-features`) leaves
    /// the test peers out, so it maps less code and is what runs in a pod.
    #[arg(long, value_name = "PATH")]
    ours_binary: Option<PathBuf>,
    /// Extra flag for the sidecar, e.g. --sidecar-arg=--v=5 (repeatable).
    #[arg(long = "sidecar-arg", value_name = "FLAG", allow_hyphen_values = true)]
    sidecar_args: Vec<String>,
    /// Directory of CRD YAML files: the embedded API server validates against them
    /// instead of its built-in schemas.
    #[arg(long, value_name = "DIR")]
    crd_schemas: Option<PathBuf>,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Format on stdout.
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
    /// Give up on a phase (or on the sidecar's readiness) after this long.
    #[arg(long, value_parser = duration, default_value = "10m")]
    timeout: Duration,
}

/// What the command measured: one sidecar, or another one and ours.
enum Outcome {
    One(Box<Report>),
    Two(Box<Comparison>),
}

impl Args {
    /// The embedded API server's CPU time per request; zero on a real
    /// cluster.
    fn embedded_api_cpu(&self) -> Duration {
        match self.kubeconfig {
            Some(_) => Duration::ZERO,
            None => self.api_cpu.unwrap_or(DEFAULT_API_CPU),
        }
    }
}

/// Runs the command; `args` are the arguments after `bench`. Returns the
/// process exit code.
pub fn cli_main(args: Vec<String>) -> i32 {
    let argv = std::iter::once("csi-snapshotter bench".to_string()).chain(args);
    let parsed = match Args::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start runtime: {e}");
            return 1;
        }
    };
    let dir = std::env::temp_dir().join(format!("csi-snapshotter-bench-{}", uuid::Uuid::new_v4()));
    let result = std::fs::create_dir_all(&dir).and_then(|()| rt.block_on(run(&parsed, &dir)));
    let outcome = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: {e}\n(files kept in {})", dir.display());
            return 1;
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    let json = match &outcome {
        Outcome::One(r) => serde_json::to_string_pretty(r),
        Outcome::Two(c) => serde_json::to_string_pretty(c),
    };
    let json = match json {
        Ok(j) => j,
        Err(e) => {
            eprintln!("bench: {e}");
            return 1;
        }
    };
    if let Some(path) = &parsed.json
        && let Err(e) = std::fs::write(path, format!("{json}\n"))
    {
        eprintln!("bench: cannot write {}: {e}", path.display());
        return 1;
    }
    match (parsed.output, &outcome) {
        (Output::Table, Outcome::One(r)) => print!("{r}"),
        (Output::Table, Outcome::Two(c)) => print!("{c}"),
        (Output::Json, _) => println!("{json}"),
    }
    0
}

/// The whole benchmark: each sidecar in turn, on the chosen peers. On a
/// real cluster, what the benchmark created is removed afterwards, also
/// after a failure or Ctrl-C.
async fn run(args: &Args, dir: &Path) -> io::Result<Outcome> {
    let ours = SidecarSpec {
        binary: match &args.ours_binary {
            Some(path) => path.clone(),
            None => std::env::current_exe()?,
        },
        worker_threads: args.worker_threads,
        kube_api_qps: args.kube_api_qps,
        kube_api_burst: args.kube_api_burst,
        extra_args: args.sidecar_args.clone(),
    };
    let mut specs = Vec::new();
    if let Some(other) = &args.sidecar_binary {
        specs.push(SidecarSpec {
            binary: other.clone(),
            ..ours.clone()
        });
    }
    specs.push(ours.clone());
    let reports = match (&args.kubeconfig, &args.csi_address) {
        (Some(kubeconfig), Some(csi_address)) => {
            let target = Target {
                kubeconfig: kubeconfig.clone(),
                sidecar_kubeconfig: args.sidecar_kubeconfig.clone(),
                csi_address: csi_address.clone(),
                volume_handle: args.volume_handle.clone(),
                force: args.force,
            };
            let cluster = Cluster::connect(&target).await?;
            let result = tokio::select! {
                r = remote(args, &specs, dir, &cluster) => r,
                _ = tokio::signal::ctrl_c() => Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "interrupted",
                )),
            };
            eprintln!("bench: cleaning up");
            tokio::select! {
                () = cluster.cleanup(&ours, dir, args.timeout) => {}
                _ = tokio::signal::ctrl_c() => eprintln!(
                    "bench: cleanup interrupted; objects are labelled {}",
                    cluster.selector()
                ),
            }
            result?
        }
        _ => {
            let mut reports = Vec::new();
            for spec in &specs {
                reports.push(embedded(args, spec, dir).await?);
            }
            reports
        }
    };
    let mut reports = reports.into_iter();
    match (reports.next(), reports.next()) {
        (Some(other), Some(ours)) => Ok(Outcome::Two(Box::new(Comparison::new(other, ours)))),
        (Some(one), None) => Ok(Outcome::One(Box::new(one))),
        _ => Err(io::Error::other("no sidecar was measured")),
    }
}

/// The run's settings as reported.
fn settings(args: &Args, spec: &SidecarSpec, api_server: &str, driver: &str) -> Settings {
    Settings {
        api_server: api_server.to_string(),
        driver: driver.to_string(),
        api_counts: "none".to_string(),
        snapshots: args.snapshots,
        driver_latency_ms: report::ms(args.latency),
        api_latency_ms: report::ms(args.api_latency),
        api_cpu_ms: report::ms(args.embedded_api_cpu()),
        ready_after_polls: args.ready_after_polls,
        worker_threads: args.worker_threads,
        kube_api_qps: args.kube_api_qps,
        kube_api_burst: args.kube_api_burst,
        sidecar_binary: spec.binary.display().to_string(),
        sidecar_args: args.sidecar_args.clone(),
        crd_schemas: args.crd_schemas.is_some(),
    }
}

fn empty_report(settings: Settings) -> Report {
    Report {
        settings,
        sidecar_startup_seconds: 0.0,
        create: None,
        delete: None,
        sidecar_cpu_seconds_total: 0.0,
        idle: Vec::new(),
    }
}

/// One sidecar on the embedded peers: the create/delete run, then the
/// idle phases.
async fn embedded(args: &Args, spec: &SidecarSpec, dir: &Path) -> io::Result<Report> {
    let driver = crate::testing::mock_driver::MockConfig::default().driver_name;
    let mut report = empty_report(settings(args, spec, "embedded", &driver));
    report.settings.api_counts = "api server".to_string();
    eprintln!("bench: sidecar {}", spec.binary.display());
    if args.snapshots > 0 {
        let env = Env::embedded(args, spec, dir, "run", 0).await?;
        let result = run_phases(args, &env, &mut report).await;
        env.stop().await;
        result?;
    }
    let idle_contents = args.idle_contents.as_deref().unwrap_or(&DEFAULT_IDLE);
    for &contents in idle_contents.iter().filter(|&&n| n > 0) {
        eprintln!("bench: idle with {contents} ready contents");
        let env = Env::embedded(args, spec, dir, &format!("idle{contents}"), contents).await?;
        let result = idle(args, &env, contents).await;
        env.stop().await;
        report.idle.push(result?);
    }
    Ok(report)
}

/// Every sidecar against a real cluster, one after the other.
async fn remote(
    args: &Args,
    specs: &[SidecarSpec],
    dir: &Path,
    cluster: &Cluster,
) -> io::Result<Vec<Report>> {
    if args
        .idle_contents
        .as_ref()
        .is_some_and(|v| v.iter().any(|&n| n > 0))
    {
        eprintln!("bench: --idle-contents applies to the embedded peers only; skipped");
    }
    cluster.prepare().await?;
    let mut reports = Vec::new();
    for (k, spec) in specs.iter().enumerate() {
        eprintln!("bench: sidecar {}", spec.binary.display());
        let mut report = empty_report(settings(args, spec, &cluster.server, &cluster.driver));
        if args.snapshots > 0 {
            let env = Env::remote(args, spec, dir, cluster, k + 1).await?;
            let result = run_phases(args, &env, &mut report).await;
            env.stop().await;
            result?;
        }
        reports.push(report);
    }
    Ok(reports)
}

/// Create, then delete, `args.snapshots` contents.
async fn run_phases(args: &Args, env: &Env<'_>, report: &mut Report) -> io::Result<()> {
    report.sidecar_startup_seconds = env.startup.as_secs_f64();
    let n = args.snapshots;
    let w = &env.workload;
    let names: Vec<String> = (0..n).map(|i| workload::content_name(&w.run, i)).collect();
    let writer = env.writer();

    let phase = PhaseStart::begin(env, "create", n).await?;
    let started = write_all(n, env::WRITERS, |i| {
        let obj = w.content(i);
        async move { writer.create_content(&obj).await }
    })
    .await?;
    let goal = Goal {
        at: |s: &Seen| s.ready,
        settled: |s: &Seen| s.ready.is_some() && !s.being_created,
        foreign_deletes: true,
    };
    let create = phase.finish(args, env, &names, &started, goal).await?;

    let phase = PhaseStart::begin(env, "delete", n).await?;
    let started = write_all(n, env::WRITERS, |i| {
        let name = names[i].as_str();
        async move { writer.delete_content(name).await }
    })
    .await?;
    let goal = Goal {
        at: |s: &Seen| s.gone,
        settled: |s: &Seen| s.gone.is_some(),
        foreign_deletes: false,
    };
    let delete = phase.finish(args, env, &names, &started, goal).await?;
    if let Peers::Remote(_) = env.peers {
        report.settings.api_counts = if create.api_writes_per_object.is_some() {
            "sidecar metrics"
        } else {
            "none"
        }
        .to_string();
    }
    report.create = Some(create);
    report.delete = Some(delete);
    report.sidecar_cpu_seconds_total = env.sidecar.lock().await.sample()?.cpu_seconds;
    Ok(())
}

/// Runs `write(i)` for every `i < n`, `concurrency` at a time; returns
/// when each write started.
async fn write_all<F, Fut>(n: usize, concurrency: usize, write: F) -> io::Result<Vec<Instant>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = io::Result<()>>,
{
    let mut started = vec![Instant::now(); n];
    let mut writes = futures::stream::iter(0..n)
        .map(|i| {
            let t = Instant::now();
            let fut = write(i);
            async move { fut.await.map(|()| (i, t)) }
        })
        .buffer_unordered(concurrency.max(1));
    let mut done = 0;
    while let Some(result) = writes.next().await {
        let (i, t) = result?;
        started[i] = t;
        done += 1;
        if done % CREATE_BATCH == 0 {
            tokio::task::yield_now().await;
        }
    }
    Ok(started)
}

/// What a phase waits for: when an object reached its goal, and whether
/// the sidecar is done with it.
struct Goal<A, S> {
    at: A,
    settled: S,
    /// Fail when an object is being deleted by someone else (during the
    /// create phase only the snapshot-controller would do that).
    foreign_deletes: bool,
}

/// Counters at the start of a phase.
struct PhaseStart {
    label: String,
    n: usize,
    before: Counters,
    cpu: f64,
    harness_cpu: f64,
    t0: Instant,
}

impl PhaseStart {
    /// Resets the peak and reads the counters.
    async fn begin(env: &Env<'_>, label: &str, n: usize) -> io::Result<PhaseStart> {
        let before = env.counters().await;
        let sc = env.sidecar.lock().await;
        sc.take_peak_rss();
        let cpu = sc.sample()?.cpu_seconds;
        eprintln!("bench: {label} {n}");
        Ok(PhaseStart {
            label: label.to_string(),
            n,
            before,
            cpu,
            harness_cpu: proc::sample(None)?.cpu_seconds,
            t0: Instant::now(),
        })
    }

    /// Waits until every object of `names` reached its goal and is
    /// settled and the sidecar went quiet; `started[i]` is when the
    /// benchmark's write of `names[i]` started.
    async fn finish<A, S>(
        self,
        args: &Args,
        env: &Env<'_>,
        names: &[String],
        started: &[Instant],
        goal: Goal<A, S>,
    ) -> io::Result<Phase>
    where
        A: Fn(&Seen) -> Option<Instant>,
        S: Fn(&Seen) -> bool,
    {
        let (n, t0, label) = (self.n, self.t0, &self.label);
        let tracker: &Tracker = &env.tracker;
        let mut progress = Instant::now();
        loop {
            let done = tracker.count(names, |s| (goal.at)(s).is_some());
            if done == n && tracker.count(names, &goal.settled) == n {
                break;
            }
            if goal.foreign_deletes && tracker.count(names, |s| s.deleting) > 0 {
                return Err(io::Error::other(format!(
                    "{label}: another controller is deleting the benchmark's contents \
                     (a snapshot-controller? stop it while the benchmark runs)"
                )));
            }
            env.sidecar.lock().await.check_alive()?;
            if t0.elapsed() > args.timeout {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{label}: {done} of {n} done after {:?}", args.timeout),
                ));
            }
            if progress.elapsed() > PROGRESS_EVERY {
                eprintln!(
                    "bench: {label}: {done}/{n} after {:.1} s",
                    t0.elapsed().as_secs_f64()
                );
                progress = Instant::now();
            }
            tokio::time::sleep(POLL).await;
        }
        let seen: Vec<Seen> = names.iter().map(|name| tracker.get(name)).collect();
        let last = seen.iter().filter_map(&goal.at).max().unwrap_or(t0);
        let latencies: Vec<Duration> = seen
            .iter()
            .zip(started)
            .filter_map(|(s, t)| (goal.at)(s).map(|g| g.saturating_duration_since(*t)))
            .collect();
        env.wait_quiet(args.timeout).await?;
        let counted = env.counters().await.since(&self.before);
        let (s1, harness_cpu, peak) = {
            let sc = env.sidecar.lock().await;
            let s = sc.sample()?;
            (s, proc::sample(None)?.cpu_seconds, sc.take_peak_rss())
        };
        let per = |x: f64| x / n.max(1) as f64;
        let counted_api = counted.requests.is_some();
        let requests = counted.requests.unwrap_or_default();
        let verbs = by_verb(&requests);
        let sum = |pred: &dyn Fn(&str) -> bool| -> f64 {
            per(verbs
                .iter()
                .filter(|(v, _)| pred(v))
                .map(|(_, c)| *c)
                .sum::<u64>() as f64)
        };
        let seconds = last.saturating_duration_since(t0).as_secs_f64();
        let cpu = s1.cpu_seconds - self.cpu;
        Ok(Phase {
            objects: n,
            completed: latencies.len(),
            seconds,
            per_second: n as f64 / seconds.max(1e-9),
            latency: Latency::of(latencies),
            api_per_object: verbs
                .iter()
                .map(|(v, c)| (v.clone(), per(*c as f64)))
                .collect(),
            api_requests_per_object: counted_api.then(|| sum(&|v| v != "WATCH")),
            api_writes_per_object: counted_api
                .then(|| sum(&|v| ["POST", "PUT", "PATCH", "DELETE"].contains(&v))),
            api_requests: requests,
            csi_per_object: counted
                .csi
                .iter()
                .map(|(r, c)| (r.clone(), per(*c as f64)))
                .collect(),
            queue_adds_per_object: counted.queue_adds.map(|a| per(a as f64)),
            csi_calls: counted.csi,
            sidecar_cpu_seconds: cpu,
            sidecar_cpu_ms_per_object: per(cpu * 1000.0),
            harness_cpu_seconds: harness_cpu - self.harness_cpu,
            sidecar_peak_rss_bytes: peak,
            sidecar_hwm_bytes: s1.hwm_bytes,
            sidecar_steady_rss_bytes: s1.rss_bytes,
        })
    }
}

/// The sidecar idle with `contents` ready contents cached.
async fn idle(args: &Args, env: &Env<'_>, contents: usize) -> io::Result<Idle> {
    tokio::time::sleep(args.idle_settle).await;
    env.wait_quiet(args.timeout).await?;
    let s = env.sidecar.lock().await.sample()?;
    let counted = env.counters().await.since(&env.baseline);
    Ok(Idle {
        contents,
        startup_seconds: env.startup.as_secs_f64(),
        rss_bytes: s.rss_bytes,
        hwm_bytes: s.hwm_bytes,
        cpu_seconds: s.cpu_seconds,
        api_requests: by_verb(&counted.requests.unwrap_or_default()),
        csi_calls: counted.csi,
    })
}
