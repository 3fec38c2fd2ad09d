//! One measured sidecar with its peers: the embedded API server and mock
//! driver of this process, or a real cluster and driver.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use super::Args;
use super::cluster::{self, Cluster};
use super::report::{RPCS, diff};
use super::scrape::scrape;
use super::sidecar::{Sidecar, SidecarSpec};
use super::workload::{self, Tracker, Workload, Writer};
use crate::testing::apiserver::{ApiServer, ApiServerOptions, RbacPolicy, RequestCount};
use crate::testing::mock_driver::{MockConfig, MockDriver};

/// How long the sidecar must make no request (watches aside) for a phase
/// to count as finished: its last writes come after the last object
/// reached its goal (e.g. removing the being-created annotation).
const QUIET: Duration = Duration::from_millis(500);
/// How often quiet is checked on the embedded peers (the counters are in
/// this process).
const POLL_LOCAL: Duration = Duration::from_millis(5);
/// How often quiet is checked on a real cluster: each check scrapes the
/// sidecar's `/metrics`, which costs the sidecar CPU.
const POLL_REMOTE: Duration = Duration::from_millis(100);
/// A sidecar without `/readyz` counts as ready on a real cluster once its
/// CPU time stood still this long (its startup list is done).
const READY_QUIET: Duration = Duration::from_secs(1);
/// CPU seconds a quiet sidecar may still spend in `READY_QUIET`: one clock
/// tick of `/proc/<pid>/stat` (10 ms), for a runtime's own timers.
const READY_QUIET_CPU: f64 = 0.01;

/// The peers of the sidecar.
pub enum Peers<'a> {
    /// The embedded API server and the mock driver, started for this
    /// environment.
    Embedded {
        /// The API server.
        server: ApiServer,
        /// The driver.
        mock: MockDriver,
    },
    /// A real cluster.
    Remote(&'a Cluster),
}

/// How many writes the benchmark keeps in flight, on either peers: the
/// snapshot-controller's default `--worker-threads`, since the benchmark
/// plays it (and each write costs the API server's CPU time per request).
pub const WRITERS: usize = 10;

/// The sidecar's activity counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// API requests, or `None` where they are not counted.
    pub requests: Option<Vec<RequestCount>>,
    /// CSI calls by RPC.
    pub csi: BTreeMap<String, u64>,
    /// Keys the sidecar queued (about one per reconcile pass), from its
    /// `/metrics`; `None` when it does not export them.
    pub queue_adds: Option<u64>,
}

impl Counters {
    /// `self - before`.
    pub fn since(&self, before: &Counters) -> Counters {
        let requests = match (&self.requests, &before.requests) {
            (Some(a), Some(b)) => Some(diff(b, a)),
            (Some(a), None) => Some(a.clone()),
            (None, _) => None,
        };
        let csi = self
            .csi
            .iter()
            .filter_map(|(k, v)| {
                let d = v.saturating_sub(before.csi.get(k).copied().unwrap_or(0));
                (d > 0).then(|| (k.clone(), d))
            })
            .collect();
        let queue_adds = self
            .queue_adds
            .map(|a| a.saturating_sub(before.queue_adds.unwrap_or(0)));
        Counters {
            requests,
            csi,
            queue_adds,
        }
    }

    /// Requests (watches aside) plus CSI calls.
    fn activity(&self) -> u64 {
        let requests: u64 = self
            .requests
            .iter()
            .flatten()
            .filter(|c| c.verb != "WATCH")
            .map(|c| c.count)
            .sum();
        requests + self.csi.values().sum::<u64>()
    }
}

/// The embedded server's request counters and the mock driver's calls.
fn local_counters(server: &ApiServer, mock: &MockDriver, queue_adds: Option<u64>) -> Counters {
    Counters {
        queue_adds,
        requests: Some(server.request_counts()),
        csi: RPCS
            .iter()
            .map(|r| (r.to_string(), mock.calls(r)))
            .filter(|(_, n)| *n > 0)
            .collect(),
    }
}

/// A sidecar, its peers, and the watch on the contents.
pub struct Env<'a> {
    /// The peers.
    pub peers: Peers<'a>,
    /// The sidecar.
    pub sidecar: tokio::sync::Mutex<Sidecar>,
    /// How long the sidecar took to be ready.
    pub startup: Duration,
    /// Counters from before the sidecar started.
    pub baseline: Counters,
    /// The benchmark's watch.
    pub tracker: Tracker,
    /// The objects.
    pub workload: Workload,
}

impl Env<'static> {
    /// Starts the embedded server and the mock driver, creates the class
    /// and `ready` ready contents, then starts the sidecar and waits until
    /// it is ready and quiet.
    pub async fn embedded(
        args: &Args,
        spec: &SidecarSpec,
        dir: &Path,
        label: &str,
        ready: usize,
    ) -> io::Result<Env<'static>> {
        let server = ApiServer::start(ApiServerOptions {
            crd_schemas: args.crd_schemas.clone(),
            kubeconfig_out: Some(dir.join(format!("{label}.kubeconfig"))),
            // The sidecar runs as a user held to the shipped RBAC rules.
            restricted: Some(RbacPolicy::sidecar()),
            ..Default::default()
        })
        .await?;
        if !args.api_latency.is_zero() {
            server.faults().delay(args.api_latency);
        }
        let config = MockConfig {
            latency: args.latency,
            ready_after_polls: args.ready_after_polls,
            ..MockConfig::default()
        };
        let workload = Workload {
            driver: config.driver_name.clone(),
            class: "bench-class".to_string(),
            run: label.to_string(),
            run_id: std::process::id(),
            volume: None,
            labels: BTreeMap::new(),
        };
        let socket = dir.join(format!("{label}.sock"));
        let mock = MockDriver::start(&socket, config).await?;
        let writer = Writer::Local(&server);
        writer.create_class(&workload.class()).await?;
        for i in 0..ready {
            writer.create_content(&workload.content(i)).await?;
            let name = workload::content_name(label, i);
            writer
                .write_status(&name, &workload::ready_status(label, i))
                .await?;
        }
        // The setup above is not the workload: the server's per-request CPU
        // starts with the sidecar.
        server.set_cpu_per_request(args.embedded_api_cpu());
        let tracker =
            Tracker::start(cluster::client(server.kubeconfig_path()).await?, None).await?;
        let peers = Peers::Embedded { server, mock };
        let kubeconfig = match &peers {
            Peers::Embedded { server, .. } => server
                .restricted_kubeconfig_path()
                .unwrap_or(server.kubeconfig_path())
                .to_path_buf(),
            Peers::Remote(_) => unreachable!("built above"),
        };
        let address = socket.display().to_string();
        Env::start(
            args,
            spec,
            dir,
            label,
            peers,
            &kubeconfig,
            &address,
            tracker,
            workload,
        )
        .await
    }
}

impl<'a> Env<'a> {
    /// Starts the sidecar against a real cluster for the `k`-th run and
    /// waits until it is ready and quiet.
    pub async fn remote(
        args: &Args,
        spec: &SidecarSpec,
        dir: &Path,
        cluster: &'a Cluster,
        k: usize,
    ) -> io::Result<Env<'a>> {
        let workload = cluster.workload(k);
        let tracker = Tracker::start(cluster.client.clone(), Some(&cluster.selector())).await?;
        let label = format!("run{k}");
        Env::start(
            args,
            spec,
            dir,
            &label,
            Peers::Remote(cluster),
            &cluster.sidecar_kubeconfig,
            &cluster.csi_address,
            tracker,
            workload,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn start(
        args: &Args,
        spec: &SidecarSpec,
        dir: &Path,
        label: &str,
        peers: Peers<'a>,
        kubeconfig: &Path,
        csi_address: &str,
        tracker: Tracker,
        workload: Workload,
    ) -> io::Result<Env<'a>> {
        let baseline = match &peers {
            // The sidecar is not started yet: its queue counts from zero.
            Peers::Embedded { server, mock } => local_counters(server, mock, None),
            // A sidecar process of its own counts from zero.
            Peers::Remote(_) => Counters::default(),
        };
        let log = dir.join(format!("{label}.log"));
        let mut sidecar = Sidecar::start(spec, kubeconfig, csi_address, &log)?;
        let startup = match &peers {
            Peers::Embedded { server, .. } => {
                let resource = "volumesnapshotcontents";
                let watches = server.request_count("WATCH", resource);
                sidecar
                    .wait_ready(args.timeout, |_| {
                        server.request_count("WATCH", resource) > watches
                    })
                    .await?
            }
            Peers::Remote(_) => {
                let mut last: Option<(f64, Instant)> = None;
                sidecar
                    .wait_ready(args.timeout, |sc| {
                        let Ok(now) = sc.sample() else { return false };
                        match last {
                            Some((cpu, since)) if now.cpu_seconds - cpu <= READY_QUIET_CPU => {
                                since.elapsed() >= READY_QUIET
                            }
                            _ => {
                                last = Some((now.cpu_seconds, Instant::now()));
                                false
                            }
                        }
                    })
                    .await?
            }
        };
        let env = Env {
            peers,
            sidecar: tokio::sync::Mutex::new(sidecar),
            startup,
            baseline,
            tracker,
            workload,
        };
        env.wait_quiet(args.timeout).await?;
        Ok(env)
    }

    /// Where the benchmark writes.
    pub fn writer(&self) -> Writer<'_> {
        match &self.peers {
            Peers::Embedded { server, .. } => Writer::Local(server),
            Peers::Remote(cluster) => Writer::Client(&cluster.client),
        }
    }

    /// The counters now. On the embedded peers this scrapes the sidecar
    /// for its queue adds, which costs it CPU: [`Env::wait_quiet`] polls
    /// [`Env::activity`] instead.
    pub async fn counters(&self) -> Counters {
        match &self.peers {
            Peers::Embedded { server, mock } => {
                let addr = self.sidecar.lock().await.http();
                let queue_adds = scrape(addr).await.ok().and_then(|s| s.queue_adds);
                local_counters(server, mock, queue_adds)
            }
            Peers::Remote(_) => {
                let addr = self.sidecar.lock().await.http();
                match scrape(addr).await {
                    Ok(s) => Counters {
                        requests: s.requests.map(|r| {
                            r.into_iter()
                                .map(|(verb, count)| RequestCount {
                                    verb,
                                    resource: String::new(),
                                    subresource: String::new(),
                                    count,
                                })
                                .collect()
                        }),
                        csi: s.csi_calls,
                        queue_adds: s.queue_adds,
                    },
                    Err(_) => Counters::default(),
                }
            }
        }
    }

    /// Requests (watches aside) plus CSI calls so far, read where it costs
    /// the sidecar nothing: on the embedded peers from the server and the
    /// driver, on a real cluster from a scrape (the only source there).
    async fn activity(&self) -> u64 {
        match &self.peers {
            Peers::Embedded { server, mock } => local_counters(server, mock, None).activity(),
            Peers::Remote(_) => self.counters().await.activity(),
        }
    }

    /// Waits until the sidecar made no request and no CSI call, and the
    /// watch saw no change, for [`QUIET`].
    pub async fn wait_quiet(&self, timeout: Duration) -> io::Result<()> {
        let poll = match self.peers {
            Peers::Embedded { .. } => POLL_LOCAL,
            Peers::Remote(_) => POLL_REMOTE,
        };
        let start = Instant::now();
        let mut last = None;
        let mut since = Instant::now();
        loop {
            self.sidecar.lock().await.check_alive()?;
            let now = self.activity().await + self.tracker.events();
            if last != Some(now) {
                last = Some(now);
                since = Instant::now();
            } else if since.elapsed() >= QUIET {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the sidecar did not go quiet",
                ));
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Stops the sidecar and the embedded peers.
    pub async fn stop(self) {
        self.sidecar.into_inner().stop().await;
        if let Peers::Embedded { server, mock } = self.peers {
            mock.stop().await;
            server.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(verb: &str, count: u64) -> RequestCount {
        RequestCount {
            verb: verb.into(),
            resource: String::new(),
            subresource: String::new(),
            count,
        }
    }

    #[test]
    fn counters_since_and_activity_leave_watches_out() {
        let before = Counters {
            requests: Some(vec![rc("GET", 2), rc("WATCH", 1)]),
            csi: BTreeMap::from([("Probe".to_string(), 1)]),
            queue_adds: Some(3),
        };
        let after = Counters {
            requests: Some(vec![rc("GET", 2), rc("WATCH", 3), rc("PATCH", 4)]),
            csi: BTreeMap::from([("Probe".to_string(), 1), ("CreateSnapshot".to_string(), 2)]),
            queue_adds: Some(5),
        };
        let d = after.since(&before);
        assert_eq!(d.requests, Some(vec![rc("WATCH", 2), rc("PATCH", 4)]));
        assert_eq!(d.csi, BTreeMap::from([("CreateSnapshot".to_string(), 2)]));
        assert_eq!(d.activity(), 6);
        assert_eq!(d.queue_adds, Some(2));
        let uncounted = Counters {
            requests: None,
            csi: after.csi.clone(),
            queue_adds: None,
        };
        assert_eq!(uncounted.since(&before).requests, None);
        assert_eq!(uncounted.since(&before).queue_adds, None);
    }
}
