//! The benchmark's figures: JSON (every figure) and a readable table.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::Serialize;

use crate::testing::apiserver::RequestCount;

/// The verbs reported per object, in table order.
pub const VERBS: [&str; 7] = ["GET", "LIST", "WATCH", "PATCH", "PUT", "POST", "DELETE"];

/// The CSI RPCs the mock driver counts, in table order.
pub const RPCS: [&str; 14] = [
    "CreateSnapshot",
    "DeleteSnapshot",
    "ListSnapshots",
    "GetSnapshot",
    "Probe",
    "GetPluginInfo",
    "GetPluginCapabilities",
    "ControllerGetCapabilities",
    "GroupControllerGetCapabilities",
    "CreateVolume",
    "DeleteVolume",
    "CreateVolumeGroupSnapshot",
    "DeleteVolumeGroupSnapshot",
    "GetVolumeGroupSnapshot",
];

/// Everything the benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The run's settings.
    pub settings: Settings,
    /// Time from starting the sidecar process until it was ready.
    pub sidecar_startup_seconds: f64,
    /// Creating N snapshots (absent with `--snapshots 0`).
    pub create: Option<Phase>,
    /// Deleting them.
    pub delete: Option<Phase>,
    /// Sidecar CPU seconds over the whole create/delete run (startup included).
    pub sidecar_cpu_seconds_total: f64,
    /// Idle resident memory with ready contents cached.
    pub idle: Vec<Idle>,
}

/// The run's settings.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// `embedded`, or the URL of the real API server.
    pub api_server: String,
    /// The CSI driver's name.
    pub driver: String,
    /// Where the request counts come from: `api server` (the embedded
    /// one counts every request), `sidecar metrics` (its
    /// `rest_client_requests_total`) or `none` (n/a).
    pub api_counts: String,
    /// Snapshots created and deleted.
    pub snapshots: usize,
    /// Mock driver latency per RPC, in milliseconds.
    pub driver_latency_ms: f64,
    /// Embedded API server delay per response, in milliseconds.
    pub api_latency_ms: f64,
    /// Embedded API server CPU time per request, in milliseconds (0 on a
    /// real cluster, whose server spends its own).
    pub api_cpu_ms: f64,
    /// Mock driver: polls before a snapshot is ready.
    pub ready_after_polls: u32,
    /// Sidecar `--worker-threads`.
    pub worker_threads: u32,
    /// Sidecar `--kube-api-qps` (negative: unlimited).
    pub kube_api_qps: f64,
    /// Sidecar `--kube-api-burst`.
    pub kube_api_burst: i64,
    /// The sidecar binary run.
    pub sidecar_binary: String,
    /// Extra sidecar flags.
    pub sidecar_args: Vec<String>,
    /// Whether the API server validated against CRD files (`--crd-schemas`)
    /// rather than its built-in schemas.
    pub crd_schemas: bool,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Latency {
    /// Percentiles of `samples` (nearest rank).
    pub fn of(mut samples: Vec<Duration>) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort();
        let at = |q: f64| {
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            ms(samples[rank - 1])
        };
        Latency {
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: ms(samples[samples.len() - 1]),
        }
    }
}

/// Milliseconds of a duration.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One phase (create or delete) of N objects.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Objects in the phase.
    pub objects: usize,
    /// Objects that reached the goal (readyToUse, or gone).
    pub completed: usize,
    /// From the first write to the last object reaching the goal.
    pub seconds: f64,
    /// Objects per second over `seconds`.
    pub per_second: f64,
    /// From each object's write to its goal, as seen by a watch.
    pub latency: Latency,
    /// Requests per object by verb (sidecar only; the benchmark's own
    /// writes are not counted). Empty when not counted.
    pub api_per_object: BTreeMap<String, f64>,
    /// Requests (watches aside) per object; `None` when not counted.
    pub api_requests_per_object: Option<f64>,
    /// Writes (POST + PUT + PATCH + DELETE) per object; `None` when not
    /// counted.
    pub api_writes_per_object: Option<f64>,
    /// Every request counter of the phase, by verb, resource and subresource.
    pub api_requests: Vec<RequestCount>,
    /// CSI calls by RPC (non-zero only).
    pub csi_calls: BTreeMap<String, u64>,
    /// CSI calls per object by RPC (non-zero only).
    pub csi_per_object: BTreeMap<String, f64>,
    /// Keys the sidecar queued per object (about one per reconcile pass);
    /// `None` when not counted.
    pub queue_adds_per_object: Option<f64>,
    /// Sidecar CPU seconds during the phase (until it went quiet).
    pub sidecar_cpu_seconds: f64,
    /// Sidecar CPU milliseconds per object.
    pub sidecar_cpu_ms_per_object: f64,
    /// CPU seconds of the benchmark process (API server, mock driver,
    /// watch) during the phase.
    pub harness_cpu_seconds: f64,
    /// Highest sampled sidecar resident memory during the phase, bytes.
    pub sidecar_peak_rss_bytes: u64,
    /// Sidecar `VmHWM` (peak since it started) at the end of the phase.
    pub sidecar_hwm_bytes: u64,
    /// Sidecar resident memory once the phase went quiet, bytes.
    pub sidecar_steady_rss_bytes: u64,
}

/// Idle memory with ready contents cached.
#[derive(Debug, Clone, Serialize)]
pub struct Idle {
    /// Ready contents in the cluster.
    pub contents: usize,
    /// Time from start until ready.
    pub startup_seconds: f64,
    /// Resident memory once idle, bytes.
    pub rss_bytes: u64,
    /// Peak resident memory since start (`VmHWM`), bytes.
    pub hwm_bytes: u64,
    /// Sidecar CPU seconds from start until measured.
    pub cpu_seconds: f64,
    /// Requests the sidecar made from start until measured, by verb.
    pub api_requests: BTreeMap<String, u64>,
    /// CSI calls from start until measured (non-zero only).
    pub csi_calls: BTreeMap<String, u64>,
}

/// Requests by verb, summed over resources.
pub fn by_verb(counts: &[RequestCount]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for c in counts {
        *m.entry(c.verb.clone()).or_default() += c.count;
    }
    m
}

/// `after - before`, counter by counter (zero counters dropped).
pub fn diff(before: &[RequestCount], after: &[RequestCount]) -> Vec<RequestCount> {
    after
        .iter()
        .filter_map(|a| {
            let b = before
                .iter()
                .find(|b| {
                    b.verb == a.verb && b.resource == a.resource && b.subresource == a.subresource
                })
                .map_or(0, |b| b.count);
            (a.count > b).then(|| RequestCount {
                count: a.count - b,
                ..a.clone()
            })
        })
        .collect()
}

/// A figure that was not measured.
pub const NA: &str = "n/a";

fn per_object(v: Option<f64>) -> String {
    v.map_or(NA.to_string(), |v| format!("{v:.2}"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn qps_text(qps: f64, burst: i64) -> String {
    if qps < 0.0 {
        "unlimited".to_string()
    } else {
        format!("{qps} (burst {burst})")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        writeln!(
            f,
            "sidecar: {} {}",
            s.sidecar_binary,
            s.sidecar_args.join(" ")
        )?;
        writeln!(
            f,
            "API server: {}  driver: {}  API requests counted by: {}",
            s.api_server, s.driver, s.api_counts
        )?;
        writeln!(
            f,
            "snapshots: {}  workers: {}  kube-api-qps: {}  driver latency: {} ms  API latency: {} ms  API CPU/request: {} ms  ready after polls: {}  schema checks: {}",
            s.snapshots,
            s.worker_threads,
            qps_text(s.kube_api_qps, s.kube_api_burst),
            s.driver_latency_ms,
            s.api_latency_ms,
            s.api_cpu_ms,
            s.ready_after_polls,
            if s.crd_schemas {
                "CRD files"
            } else {
                "built in"
            }
        )?;
        writeln!(
            f,
            "sidecar ready after {:.2} s",
            self.sidecar_startup_seconds
        )?;
        let phases: Vec<(&str, &Phase)> = [("create", &self.create), ("delete", &self.delete)]
            .into_iter()
            .filter_map(|(n, p)| p.as_ref().map(|p| (n, p)))
            .collect();
        if !phases.is_empty() {
            writeln!(f)?;
            let mut rows: Vec<(String, Vec<String>)> = Vec::new();
            let mut row = |label: &str, cell: &dyn Fn(&Phase) -> String| {
                rows.push((
                    label.to_string(),
                    phases.iter().map(|(_, p)| cell(p)).collect(),
                ));
            };
            row("completed", &|p| format!("{}/{}", p.completed, p.objects));
            row("total time (s)", &|p| format!("{:.2}", p.seconds));
            row("objects/s", &|p| format!("{:.0}", p.per_second));
            row("latency p50 (ms)", &|p| format!("{:.1}", p.latency.p50_ms));
            row("latency p99 (ms)", &|p| format!("{:.1}", p.latency.p99_ms));
            row("latency max (ms)", &|p| format!("{:.1}", p.latency.max_ms));
            for verb in VERBS {
                row(
                    &format!("API {verb}/object"),
                    &|p| match p.api_writes_per_object {
                        None => NA.to_string(),
                        Some(_) => {
                            format!("{:.2}", p.api_per_object.get(verb).copied().unwrap_or(0.0))
                        }
                    },
                );
            }
            row("API requests/object", &|p| {
                per_object(p.api_requests_per_object)
            });
            row("API writes/object", &|p| {
                per_object(p.api_writes_per_object)
            });
            for rpc in RPCS {
                if phases.iter().any(|(_, p)| p.csi_calls.contains_key(rpc)) {
                    row(&format!("CSI {rpc}/object"), &|p| {
                        format!("{:.2}", p.csi_per_object.get(rpc).copied().unwrap_or(0.0))
                    });
                }
            }
            row("queue adds/object", &|p| {
                per_object(p.queue_adds_per_object)
            });
            row("sidecar CPU (s)", &|p| {
                format!("{:.2}", p.sidecar_cpu_seconds)
            });
            row("sidecar CPU/object (ms)", &|p| {
                format!("{:.3}", p.sidecar_cpu_ms_per_object)
            });
            row("harness CPU (s)", &|p| {
                format!("{:.2}", p.harness_cpu_seconds)
            });
            row("sidecar peak RSS (MiB)", &|p| {
                format!("{:.1}", mib(p.sidecar_peak_rss_bytes))
            });
            row("sidecar VmHWM (MiB)", &|p| {
                format!("{:.1}", mib(p.sidecar_hwm_bytes))
            });
            row("sidecar steady RSS (MiB)", &|p| {
                format!("{:.1}", mib(p.sidecar_steady_rss_bytes))
            });
            let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
            let mut header = format!("{:width$}", "");
            for (name, _) in &phases {
                let _ = write!(header, " {name:>12}");
            }
            writeln!(f, "{header}")?;
            for (label, cells) in rows {
                let mut line = format!("{label:width$}");
                for c in cells {
                    let _ = write!(line, " {c:>12}");
                }
                writeln!(f, "{line}")?;
            }
            writeln!(
                f,
                "sidecar CPU, whole run: {:.2} s",
                self.sidecar_cpu_seconds_total
            )?;
        }
        if !self.idle.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "{:>9} {:>10} {:>12} {:>12} {:>9}  API requests at startup",
                "idle with", "ready (s)", "RSS (MiB)", "VmHWM (MiB)", "CPU (s)"
            )?;
            for i in &self.idle {
                let api: Vec<String> = i
                    .api_requests
                    .iter()
                    .map(|(v, n)| format!("{v} {n}"))
                    .collect();
                writeln!(
                    f,
                    "{:>9} {:>10.2} {:>12.1} {:>12.1} {:>9.2}  {}",
                    i.contents,
                    i.startup_seconds,
                    mib(i.rss_bytes),
                    mib(i.hwm_bytes),
                    i.cpu_seconds,
                    api.join(", ")
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(verb: &str, resource: &str, count: u64) -> RequestCount {
        RequestCount {
            verb: verb.into(),
            resource: resource.into(),
            subresource: String::new(),
            count,
        }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let l = Latency::of((1..=100).map(Duration::from_millis).collect());
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (50.0, 99.0, 100.0));
        assert_eq!(Latency::of(Vec::new()).max_ms, 0.0);
    }

    #[test]
    fn diff_keeps_only_new_requests() {
        let before = vec![rc("GET", "a", 2), rc("LIST", "a", 1)];
        let after = vec![rc("GET", "a", 5), rc("LIST", "a", 1), rc("PATCH", "a", 3)];
        let d = diff(&before, &after);
        assert_eq!(d, vec![rc("GET", "a", 3), rc("PATCH", "a", 3)]);
        assert_eq!(by_verb(&d)["PATCH"], 3);
    }
}
