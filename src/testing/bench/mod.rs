//! `csi-snapshotter bench`: how fast and how light the sidecar is.
//!
//! The benchmark starts the embedded API server and the mock CSI driver in
//! its own process, runs the sidecar as a separate process (this binary in
//! sidecar mode, or `--sidecar-binary`), plays the snapshot-controller
//! (creates N dynamic VolumeSnapshotContents, then deletes them) and
//! prints what it took: time, throughput, latency as seen by a watch, API
//! requests per snapshot by verb (counted at the server; the benchmark's
//! own writes are made in-process and not counted), CSI calls per
//! snapshot, and the sidecar's CPU time and resident memory. It then
//! measures the sidecar's idle memory with ready contents cached. It
//! asserts nothing.

mod proc;
mod report;
mod sidecar;
mod workload;

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

use crate::config::values::parse_go_duration;
use crate::testing::apiserver::{ApiServer, ApiServerOptions, RbacPolicy, RequestCount};
use crate::testing::mock_driver::{MockConfig, MockDriver};
use report::{Idle, Latency, Phase, RPCS, Report, Settings, by_verb, diff};
use sidecar::{Sidecar, SidecarSpec};
use workload::{Seen, Tracker};

/// How long the sidecar must make no request (watches aside) for a phase
/// to count as finished: its last writes come after the last object
/// reached its goal (e.g. removing the being-created annotation).
const QUIET: Duration = Duration::from_millis(500);
/// How often completion and quiet are checked.
const POLL: Duration = Duration::from_millis(5);
/// Interval of progress lines on stderr during a long phase.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Objects created between yields, so that the watch and the server keep
/// up while the benchmark writes.
const CREATE_BATCH: usize = 64;

/// Output format on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// A readable table.
    Table,
    /// The JSON report.
    Json,
}

fn duration(text: &str) -> Result<Duration, String> {
    let d = parse_go_duration(text)?;
    d.to_std()
        .ok_or_else(|| format!("{text}: must not be negative"))
}

/// Command line of `csi-snapshotter bench`.
#[derive(Debug, Parser)]
#[command(
    name = "csi-snapshotter bench",
    about = "Measure the sidecar against the embedded API server and the mock CSI driver"
)]
struct Args {
    /// Snapshots created, then deleted (0 skips these phases).
    #[arg(long, default_value_t = 1000)]
    snapshots: usize,
    /// Mock driver latency added to every RPC (Go duration, e.g. 10ms).
    #[arg(long, value_parser = duration, default_value = "0s")]
    latency: Duration,
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
    /// Idle phases: ready contents pre-created before the sidecar starts,
    /// comma-separated (0 or an empty value skips them).
    #[arg(long, value_delimiter = ',', default_value = "100,10000")]
    idle_contents: Vec<usize>,
    /// Idle phases: how long to wait after the sidecar is ready and quiet
    /// before reading its memory.
    #[arg(long, value_parser = duration, default_value = "5s")]
    idle_settle: Duration,
    /// Sidecar binary to run (default: this binary). It gets the same flags.
    #[arg(long, value_name = "PATH")]
    sidecar_binary: Option<PathBuf>,
    /// Extra flag for the sidecar, e.g. --sidecar-arg=--v=5 (repeatable).
    #[arg(long = "sidecar-arg", value_name = "FLAG", allow_hyphen_values = true)]
    sidecar_args: Vec<String>,
    /// Directory of CRD YAML files: the API server validates against them
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
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: {e}\n(files kept in {})", dir.display());
            return 1;
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    let json = match serde_json::to_string_pretty(&report) {
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
    match parsed.output {
        Output::Table => print!("{report}"),
        Output::Json => println!("{json}"),
    }
    0
}

/// The whole benchmark.
async fn run(args: &Args, dir: &std::path::Path) -> io::Result<Report> {
    let binary = match &args.sidecar_binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    let spec = SidecarSpec {
        binary: binary.clone(),
        worker_threads: args.worker_threads,
        kube_api_qps: args.kube_api_qps,
        kube_api_burst: args.kube_api_burst,
        extra_args: args.sidecar_args.clone(),
    };
    let mut report = Report {
        settings: Settings {
            snapshots: args.snapshots,
            driver_latency_ms: report::ms(args.latency),
            ready_after_polls: args.ready_after_polls,
            worker_threads: args.worker_threads,
            kube_api_qps: args.kube_api_qps,
            kube_api_burst: args.kube_api_burst,
            sidecar_binary: binary.display().to_string(),
            sidecar_args: args.sidecar_args.clone(),
            crd_schemas: args.crd_schemas.is_some(),
        },
        sidecar_startup_seconds: 0.0,
        create: None,
        delete: None,
        sidecar_cpu_seconds_total: 0.0,
        idle: Vec::new(),
    };
    if args.snapshots > 0 {
        let env = Env::start(args, &spec, dir, "run", 0).await?;
        let result = run_phases(args, &env, &mut report).await;
        env.stop().await;
        result?;
    }
    for &contents in args.idle_contents.iter().filter(|&&n| n > 0) {
        eprintln!("bench: idle with {contents} ready contents");
        let env = Env::start(args, &spec, dir, &format!("idle{contents}"), contents).await;
        let env = env?;
        let result = idle(args, &env, contents).await;
        env.stop().await;
        report.idle.push(result?);
    }
    Ok(report)
}

/// One API server, mock driver and sidecar.
struct Env {
    server: ApiServer,
    mock: MockDriver,
    sidecar: tokio::sync::Mutex<Sidecar>,
    startup: Duration,
    baseline: Vec<RequestCount>,
}

impl Env {
    /// Starts the server and the driver, creates the class and `ready`
    /// ready contents, then starts the sidecar and waits until it is ready
    /// and quiet. `baseline` holds the counters from before the sidecar.
    async fn start(
        args: &Args,
        spec: &SidecarSpec,
        dir: &std::path::Path,
        label: &str,
        ready: usize,
    ) -> io::Result<Env> {
        let server = ApiServer::start(ApiServerOptions {
            crd_schemas: args.crd_schemas.clone(),
            kubeconfig_out: Some(dir.join(format!("{label}.kubeconfig"))),
            // The sidecar runs as a user held to the shipped RBAC rules.
            restricted: Some(RbacPolicy::sidecar()),
            ..Default::default()
        })
        .await?;
        let config = MockConfig {
            latency: args.latency,
            ready_after_polls: args.ready_after_polls,
            ..MockConfig::default()
        };
        let driver = config.driver_name.clone();
        let socket = dir.join(format!("{label}.sock"));
        let mock = MockDriver::start(&socket, config).await?;
        workload::create_class(&server, &driver).await?;
        for i in 0..ready {
            let obj = workload::dynamic_content(&driver, label, 0, i);
            workload::create_content(&server, &obj).await?;
            let name = workload::content_name(label, i);
            workload::write_status(&server, &name, &workload::ready_status(label, i)).await?;
        }
        let baseline = server.request_counts();
        let mut sidecar =
            Sidecar::start(spec, &server, &socket, &dir.join(format!("{label}.log")))?;
        let startup = sidecar.wait_ready(&server, args.timeout).await?;
        let env = Env {
            server,
            mock,
            sidecar: tokio::sync::Mutex::new(sidecar),
            startup,
            baseline,
        };
        env.wait_quiet(args.timeout).await?;
        Ok(env)
    }

    /// Requests so far, watches aside.
    fn requests(&self) -> u64 {
        self.server
            .request_counts()
            .iter()
            .filter(|c| c.verb != "WATCH")
            .map(|c| c.count)
            .sum()
    }

    /// Waits until the sidecar made no request and no CSI call for [`QUIET`].
    async fn wait_quiet(&self, timeout: Duration) -> io::Result<()> {
        let start = Instant::now();
        let activity = || self.requests() + RPCS.iter().map(|r| self.mock.calls(r)).sum::<u64>();
        let mut last = activity();
        let mut since = Instant::now();
        while since.elapsed() < QUIET {
            tokio::time::sleep(POLL).await;
            self.sidecar.lock().await.check_alive()?;
            let now = activity();
            if now != last {
                last = now;
                since = Instant::now();
            }
            if start.elapsed() > timeout {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the sidecar did not go quiet",
                ));
            }
        }
        Ok(())
    }

    /// CSI calls since the last reset, non-zero only.
    fn csi_calls(&self) -> std::collections::BTreeMap<String, u64> {
        RPCS.iter()
            .map(|r| (r.to_string(), self.mock.calls(r)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    async fn stop(self) {
        self.sidecar.into_inner().stop().await;
        self.mock.stop().await;
        self.server.shutdown().await;
    }
}

/// Create, then delete, `args.snapshots` contents.
async fn run_phases(args: &Args, env: &Env, report: &mut Report) -> io::Result<()> {
    report.sidecar_startup_seconds = env.startup.as_secs_f64();
    let tracker = Tracker::start(&env.server).await?;
    let n = args.snapshots;
    let driver = MockConfig::default().driver_name;
    let names: Vec<String> = (0..n).map(|i| workload::content_name("run", i)).collect();
    let run_id = std::process::id();

    let phase = PhaseStart::begin(env, "create", n).await?;
    let mut started = Vec::with_capacity(n);
    for i in 0..n {
        started.push(Instant::now());
        let obj = workload::dynamic_content(&driver, "run", run_id, i);
        workload::create_content(&env.server, &obj).await?;
        if i % CREATE_BATCH == CREATE_BATCH - 1 {
            tokio::task::yield_now().await;
        }
    }
    let goal = Goal {
        at: |s: &Seen| s.ready,
        settled: |s: &Seen| s.ready.is_some() && !s.being_created,
    };
    report.create = Some(
        phase
            .finish(args, env, &tracker, &names, &started, goal)
            .await?,
    );

    let phase = PhaseStart::begin(env, "delete", n).await?;
    let mut started = Vec::with_capacity(n);
    for (i, name) in names.iter().enumerate() {
        started.push(Instant::now());
        workload::delete_content(&env.server, name).await?;
        if i % CREATE_BATCH == CREATE_BATCH - 1 {
            tokio::task::yield_now().await;
        }
    }
    let goal = Goal {
        at: |s: &Seen| s.gone,
        settled: |s: &Seen| s.gone.is_some(),
    };
    report.delete = Some(
        phase
            .finish(args, env, &tracker, &names, &started, goal)
            .await?,
    );
    report.sidecar_cpu_seconds_total = env.sidecar.lock().await.sample()?.cpu_seconds;
    Ok(())
}

/// What a phase waits for: when an object reached its goal, and whether
/// the sidecar is done with it.
struct Goal<A, S> {
    at: A,
    settled: S,
}

/// Counters at the start of a phase.
struct PhaseStart {
    label: String,
    n: usize,
    before: Vec<RequestCount>,
    cpu: f64,
    harness_cpu: f64,
    t0: Instant,
}

impl PhaseStart {
    /// Resets the CSI counters and the peak, and reads the counters.
    async fn begin(env: &Env, label: &str, n: usize) -> io::Result<PhaseStart> {
        let before = env.server.request_counts();
        env.mock.reset_calls();
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
        env: &Env,
        tracker: &Tracker,
        names: &[String],
        started: &[Instant],
        goal: Goal<A, S>,
    ) -> io::Result<Phase>
    where
        A: Fn(&Seen) -> Option<Instant>,
        S: Fn(&Seen) -> bool,
    {
        let (n, t0, label) = (self.n, self.t0, &self.label);
        let mut progress = Instant::now();
        loop {
            let done = tracker.count(names, |s| (goal.at)(s).is_some());
            if done == n && tracker.count(names, &goal.settled) == n {
                break;
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
        let after = env.server.request_counts();
        let (s1, harness_cpu, peak) = {
            let sc = env.sidecar.lock().await;
            let s = sc.sample()?;
            (s, proc::sample(None)?.cpu_seconds, sc.take_peak_rss())
        };
        let requests = diff(&self.before, &after);
        let per = |x: f64| x / n.max(1) as f64;
        let verbs = by_verb(&requests);
        let writes: u64 = ["POST", "PUT", "PATCH", "DELETE"]
            .iter()
            .filter_map(|v| verbs.get(*v))
            .sum();
        let csi_calls = env.csi_calls();
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
            api_writes_per_object: per(writes as f64),
            api_requests: requests,
            csi_per_object: csi_calls
                .iter()
                .map(|(r, c)| (r.clone(), per(*c as f64)))
                .collect(),
            csi_calls,
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
async fn idle(args: &Args, env: &Env, contents: usize) -> io::Result<Idle> {
    tokio::time::sleep(args.idle_settle).await;
    env.wait_quiet(args.timeout).await?;
    let s = env.sidecar.lock().await.sample()?;
    let requests = diff(&env.baseline, &env.server.request_counts());
    Ok(Idle {
        contents,
        startup_seconds: env.startup.as_secs_f64(),
        rss_bytes: s.rss_bytes,
        hwm_bytes: s.hwm_bytes,
        cpu_seconds: s.cpu_seconds,
        api_requests: by_verb(&requests),
        csi_calls: env.csi_calls(),
    })
}
