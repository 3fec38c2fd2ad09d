//! Two sidecars measured in one run (`--sidecar-binary`): both reports and
//! a table of the figures that compare them.

use std::fmt;

use serde::Serialize;

use super::report::{NA, Phase, Report};

/// Bytes per megabyte (decimal, as memory figures of other tools are
/// usually quoted).
const MB: f64 = 1_000_000.0;

/// How a row's ratio is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ratio {
    /// other ÷ ours, printed with `×`: how many times faster ours is.
    Speedup,
    /// ours ÷ other: the fraction of the other's cost that ours has.
    Fraction,
}

/// One row of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What is compared.
    pub label: String,
    /// The other sidecar's figure (`None`: not measured).
    pub other: Option<f64>,
    /// Ours.
    pub ours: Option<f64>,
    /// How the ratio is formed.
    pub ratio_kind: Ratio,
    /// The ratio, when both figures are there.
    pub ratio: Option<f64>,
}

/// Both reports and the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The other sidecar (measured first).
    pub other: Report,
    /// Ours.
    pub ours: Report,
    /// The table.
    pub rows: Vec<Row>,
}

/// A figure of one report.
type Figure = fn(&Report) -> Option<f64>;

fn phases(r: &Report) -> Option<(&Phase, &Phase)> {
    Some((r.create.as_ref()?, r.delete.as_ref()?))
}

fn cpu_both(r: &Report) -> Option<f64> {
    phases(r).map(|(c, d)| c.sidecar_cpu_seconds + d.sidecar_cpu_seconds)
}

/// The rows, in order: label, figure, ratio kind.
const ROWS: [(&str, Figure, Ratio); 9] = [
    (
        "create → all ready (s)",
        |r| r.create.as_ref().map(|p| p.seconds),
        Ratio::Speedup,
    ),
    (
        "delete → all gone (s)",
        |r| r.delete.as_ref().map(|p| p.seconds),
        Ratio::Speedup,
    ),
    (
        "sidecar CPU, create + delete (s)",
        cpu_both,
        Ratio::Fraction,
    ),
    (
        "sidecar CPU per snapshot, create + delete (ms)",
        |r| cpu_both(r).map(|c| c * 1000.0 / r.settings.snapshots.max(1) as f64),
        Ratio::Fraction,
    ),
    (
        "sidecar peak RSS (MB)",
        |r| {
            phases(r).map(|(c, d)| {
                c.sidecar_peak_rss_bytes
                    .max(d.sidecar_peak_rss_bytes)
                    .max(d.sidecar_hwm_bytes) as f64
                    / MB
            })
        },
        Ratio::Fraction,
    ),
    (
        "sidecar API requests per create",
        |r| r.create.as_ref()?.api_requests_per_object,
        Ratio::Fraction,
    ),
    (
        "sidecar API requests per delete",
        |r| r.delete.as_ref()?.api_requests_per_object,
        Ratio::Fraction,
    ),
    (
        "sidecar API writes per create",
        |r| r.create.as_ref()?.api_writes_per_object,
        Ratio::Fraction,
    ),
    (
        "sidecar API writes per delete",
        |r| r.delete.as_ref()?.api_writes_per_object,
        Ratio::Fraction,
    ),
];

impl Comparison {
    /// Compares `other` with `ours`.
    pub fn new(other: Report, ours: Report) -> Comparison {
        let rows = ROWS
            .iter()
            .map(|(label, figure, kind)| {
                let (o, s) = (figure(&other), figure(&ours));
                let ratio = match (o, s, kind) {
                    (Some(o), Some(s), Ratio::Speedup) if s > 0.0 => Some(o / s),
                    (Some(o), Some(s), Ratio::Fraction) if o > 0.0 => Some(s / o),
                    _ => None,
                };
                Row {
                    label: label.to_string(),
                    other: o,
                    ours: s,
                    ratio_kind: *kind,
                    ratio,
                }
            })
            .collect();
        Comparison { other, ours, rows }
    }
}

fn figure(v: Option<f64>) -> String {
    match v {
        None => NA.to_string(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "== other")?;
        write!(f, "{}", self.other)?;
        writeln!(f, "\n== ours")?;
        write!(f, "{}", self.ours)?;
        let s = &self.ours.settings;
        writeln!(
            f,
            "\n== comparison (N={}, {} workers, kube-api-qps {}; other: {}, ours: {})",
            s.snapshots,
            s.worker_threads,
            if s.kube_api_qps < 0.0 {
                "unlimited".to_string()
            } else {
                format!("{} / burst {}", s.kube_api_qps, s.kube_api_burst)
            },
            self.other.settings.sidecar_binary,
            s.sidecar_binary
        )?;
        writeln!(f, "| | other | ours | ratio |")?;
        writeln!(f, "|---|---|---|---|")?;
        for row in &self.rows {
            let ratio = match (row.ratio, row.ratio_kind) {
                (None, _) => NA.to_string(),
                (Some(r), Ratio::Speedup) => format!("{r:.2}×"),
                (Some(r), Ratio::Fraction) => format!("{r:.2}"),
            };
            writeln!(
                f,
                "| {} | {} | {} | {ratio} |",
                row.label,
                figure(row.other),
                figure(row.ours)
            )?;
        }
        writeln!(
            f,
            "(ratio: × = other's time ÷ ours; otherwise ours ÷ other's)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::bench::report::{Latency, Settings};

    fn phase(seconds: f64, cpu: f64, rss: u64, requests: Option<f64>) -> Phase {
        Phase {
            objects: 10,
            completed: 10,
            seconds,
            per_second: 10.0 / seconds,
            latency: Latency::default(),
            api_per_object: Default::default(),
            api_requests_per_object: requests,
            api_writes_per_object: requests,
            api_requests: Vec::new(),
            csi_calls: Default::default(),
            csi_per_object: Default::default(),
            queue_adds_per_object: None,
            sidecar_cpu_seconds: cpu,
            sidecar_cpu_ms_per_object: cpu * 100.0,
            harness_cpu_seconds: 0.0,
            sidecar_peak_rss_bytes: rss,
            sidecar_hwm_bytes: rss,
            sidecar_steady_rss_bytes: rss,
        }
    }

    fn report(create: Phase, delete: Phase) -> Report {
        Report {
            settings: Settings {
                api_server: "embedded".into(),
                driver: "d".into(),
                api_counts: "none".into(),
                snapshots: 10,
                driver_latency_ms: 0.0,
                api_latency_ms: 0.0,
                api_cpu_ms: 0.0,
                ready_after_polls: 0,
                worker_threads: 10,
                kube_api_qps: -1.0,
                kube_api_burst: 10,
                sidecar_binary: "x".into(),
                sidecar_args: Vec::new(),
                crd_schemas: false,
            },
            sidecar_startup_seconds: 0.0,
            create: Some(create),
            delete: Some(delete),
            sidecar_cpu_seconds_total: 0.0,
            idle: Vec::new(),
        }
    }

    #[test]
    fn ratios_are_speedups_for_times_and_fractions_for_costs() {
        let other = report(
            phase(20.0, 4.0, 60_000_000, None),
            phase(10.0, 2.0, 70_000_000, None),
        );
        let ours = report(
            phase(10.0, 1.0, 20_000_000, Some(3.0)),
            phase(4.0, 1.0, 21_000_000, Some(1.0)),
        );
        let c = Comparison::new(other, ours);
        let row = |label: &str| c.rows.iter().find(|r| r.label == label).unwrap().clone();
        assert_eq!(row("create → all ready (s)").ratio, Some(2.0));
        assert_eq!(row("delete → all gone (s)").ratio, Some(2.5));
        assert_eq!(
            row("sidecar CPU, create + delete (s)").ratio,
            Some(2.0 / 6.0)
        );
        let per = row("sidecar CPU per snapshot, create + delete (ms)");
        assert_eq!((per.other, per.ours), (Some(600.0), Some(200.0)));
        assert_eq!(row("sidecar peak RSS (MB)").ratio, Some(0.3));
        let requests = row("sidecar API requests per create");
        assert_eq!(
            (requests.other, requests.ours, requests.ratio),
            (None, Some(3.0), None)
        );
        let text = c.to_string();
        assert!(
            text.contains("| create → all ready (s) | 20.0 | 10.0 | 2.00× |"),
            "{text}"
        );
        assert!(
            text.contains("| sidecar API requests per create | n/a | 3.00 | n/a |"),
            "{text}"
        );
    }
}
