//! The measured sidecar: its own process, started with the benchmark's
//! flags, watched for readiness, and sampled for memory and CPU.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::proc::{ProcSample, sample};

/// How often the memory sampler reads `/proc`: often enough to catch
/// short peaks between phases, cheap enough not to load the machine.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// How often readiness is polled.
const READY_POLL: Duration = Duration::from_millis(25);
/// Lines of the sidecar's log shown when it fails.
const LOG_TAIL_LINES: usize = 20;

/// How to start the sidecar.
#[derive(Debug, Clone)]
pub struct SidecarSpec {
    /// Binary to run.
    pub binary: PathBuf,
    /// `--worker-threads`.
    pub worker_threads: u32,
    /// `--kube-api-qps`.
    pub kube_api_qps: f64,
    /// `--kube-api-burst`.
    pub kube_api_burst: i64,
    /// Further flags, passed as given.
    pub extra_args: Vec<String>,
}

/// A running sidecar process.
#[derive(Debug)]
pub struct Sidecar {
    child: Child,
    pid: u32,
    http: SocketAddr,
    log: PathBuf,
    peak_rss: Arc<AtomicU64>,
    last: Arc<Mutex<ProcSample>>,
    sampler: JoinHandle<()>,
}

/// A free loopback port (bound and released: the sidecar binds it next).
fn free_port() -> io::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    l.local_addr()
}

impl Sidecar {
    /// Starts the sidecar with `kubeconfig` and the driver at
    /// `csi_address`; its log goes to `log`. It runs in a process group of
    /// its own, so that Ctrl-C reaches only the benchmark, which cleans up
    /// before it stops the sidecar.
    pub fn start(
        spec: &SidecarSpec,
        kubeconfig: &Path,
        csi_address: &str,
        log: &Path,
    ) -> io::Result<Sidecar> {
        let http = free_port()?;
        let log_file = std::fs::File::create(log)?;
        let mut cmd = Command::new(&spec.binary);
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--csi-address={csi_address}"))
            .arg("--leader-election=false")
            .arg(format!("--worker-threads={}", spec.worker_threads))
            .arg(format!("--kube-api-qps={}", spec.kube_api_qps))
            .arg(format!("--kube-api-burst={}", spec.kube_api_burst))
            .arg(format!("--http-endpoint={http}"))
            .args(&spec.extra_args)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start {}: {e}", spec.binary.display()),
            )
        })?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the sidecar exited at once"))?;
        let peak_rss = Arc::new(AtomicU64::new(0));
        let last = Arc::new(Mutex::new(ProcSample::default()));
        let sampler = tokio::spawn({
            let peak_rss = peak_rss.clone();
            let last = last.clone();
            async move {
                let mut tick = tokio::time::interval(SAMPLE_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tick.tick().await;
                    let Ok(s) = sample(Some(pid)) else { return };
                    peak_rss.fetch_max(s.rss_bytes, Ordering::Relaxed);
                    *last.lock().unwrap_or_else(PoisonError::into_inner) = s;
                }
            }
        });
        Ok(Sidecar {
            child,
            pid,
            http,
            log: log.to_path_buf(),
            peak_rss,
            last,
            sampler,
        })
    }

    /// The sidecar's HTTP endpoint (`/metrics`, `/readyz`).
    pub fn http(&self) -> SocketAddr {
        self.http
    }

    /// The sidecar's counters now.
    pub fn sample(&self) -> io::Result<ProcSample> {
        let s = sample(Some(self.pid))?;
        self.peak_rss.fetch_max(s.rss_bytes, Ordering::Relaxed);
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = s;
        Ok(s)
    }

    /// The highest resident memory sampled since the last call (starting
    /// again from the current value).
    pub fn take_peak_rss(&self) -> u64 {
        let now = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rss_bytes;
        self.peak_rss.swap(now, Ordering::Relaxed).max(now)
    }

    /// Fails with the end of the sidecar's log if it has exited.
    pub fn check_alive(&mut self) -> io::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(io::Error::other(format!(
                "the sidecar exited ({status}); last lines of {}:\n{}",
                self.log.display(),
                log_tail(&self.log)
            ))),
        }
    }

    /// Waits until the sidecar is ready: `/readyz` answers 200 (driver
    /// probed, caches synced). A sidecar without `/readyz` (404, e.g. the
    /// Go one) counts as ready once `without_readyz` says so. Returns how
    /// long that took.
    pub async fn wait_ready(
        &mut self,
        timeout: Duration,
        mut without_readyz: impl FnMut(&Sidecar) -> bool,
    ) -> io::Result<Duration> {
        let start = Instant::now();
        // Once `/readyz` answered 404 it is not asked again: a request every
        // poll would keep the sidecar busy, and a quiet CPU is what
        // `without_readyz` usually waits for.
        let mut has_readyz = true;
        loop {
            self.check_alive()?;
            if has_readyz {
                match http_status(self.http, "/readyz").await {
                    Ok(200) => return Ok(start.elapsed()),
                    Ok(404) => has_readyz = false,
                    _ => {}
                }
            }
            if !has_readyz && without_readyz(self) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the sidecar was not ready within {timeout:?}; last lines of {}:\n{}",
                        self.log.display(),
                        log_tail(&self.log)
                    ),
                ));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Kills the sidecar and waits for it.
    pub async fn stop(mut self) {
        self.sampler.abort();
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// The status code of `GET path` on the sidecar's HTTP endpoint.
async fn http_status(addr: SocketAddr, path: &str) -> io::Result<u16> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<bytes::Bytes>::new())
        .map_err(io::Error::other)?;
    let resp = sender.send_request(req).await.map_err(io::Error::other)?;
    Ok(resp.status().as_u16())
}

/// The last lines of the sidecar's log.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}
