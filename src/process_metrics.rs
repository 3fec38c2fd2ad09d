//! The `process_*` families, read from `/proc/self` at scrape time.
//!
//! Families whose source cannot be read (not Linux, hardened `/proc`) are
//! left out rather than reported as zero.

use std::sync::Arc;

use crate::metrics::{
    Collector, FamilySnapshot, MetricKind, Registry, SampleSnapshot, SampleValue,
};

/// Clock ticks per second of `/proc/<pid>/stat` times. `USER_HZ` is 100 on
/// every Linux architecture the image targets.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// Collector of the process families.
#[derive(Debug, Default)]
pub struct ProcessMetrics;

impl ProcessMetrics {
    /// Registers the collector in `registry`.
    pub fn register(registry: &Registry) {
        registry.register_collector(Arc::new(ProcessMetrics));
    }
}

/// Values of `/proc/self/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    cpu_seconds: f64,
    start_ticks: u64,
    virtual_bytes: u64,
}

/// Parses the content of `/proc/<pid>/stat`. The command name (field 2) is
/// in parentheses and may contain spaces, so fields are counted from the
/// last `)`.
fn parse_stat(s: &str) -> Option<Stat> {
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is f[n - 3].
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let utime = field(14)?;
    let stime = field(15)?;
    Some(Stat {
        cpu_seconds: (utime + stime) as f64 / CLOCK_TICKS_PER_SEC,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
    })
}

/// `btime` (boot time, seconds since the epoch) from `/proc/stat`.
fn parse_boot_time(s: &str) -> Option<u64> {
    s.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn parse_rss_bytes(s: &str) -> Option<u64> {
    let kb = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// The soft "Max open files" limit from `/proc/self/limits`.
fn parse_max_fds(s: &str) -> Option<f64> {
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(f64::INFINITY)
    } else {
        soft.parse().ok()
    }
}

fn gauge(name: &str, help: &str, kind: MetricKind, v: f64) -> FamilySnapshot {
    FamilySnapshot {
        name: name.to_string(),
        help: help.to_string(),
        kind,
        samples: vec![SampleSnapshot {
            labels: Vec::new(),
            value: SampleValue::Scalar(v),
        }],
    }
}

impl Collector for ProcessMetrics {
    fn collect(&self) -> Vec<FamilySnapshot> {
        let mut out = Vec::new();
        let stat = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| parse_stat(&s));
        if let Some(st) = stat {
            out.push(gauge(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                MetricKind::Counter,
                st.cpu_seconds,
            ));
            out.push(gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                MetricKind::Gauge,
                st.virtual_bytes as f64,
            ));
            if let Some(boot) = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| parse_boot_time(&s))
            {
                out.push(gauge(
                    "process_start_time_seconds",
                    "[ALPHA] Start time of the process since unix epoch in seconds.",
                    MetricKind::Gauge,
                    boot as f64 + st.start_ticks as f64 / CLOCK_TICKS_PER_SEC,
                ));
            }
        }
        if let Some(rss) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| parse_rss_bytes(&s))
        {
            out.push(gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                MetricKind::Gauge,
                rss as f64,
            ));
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle itself is one of the entries.
            let open = dir.count().saturating_sub(1);
            out.push(gauge(
                "process_open_fds",
                "Number of open file descriptors.",
                MetricKind::Gauge,
                open as f64,
            ));
        }
        if let Some(max) = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| parse_max_fds(&s))
        {
            out.push(gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                MetricKind::Gauge,
                max,
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_command() {
        let s = "1234 (csi snap) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 150 0 0 20 0 12 0 8000 104857600 2048 \
                 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let st = parse_stat(s).unwrap();
        assert_eq!(st.cpu_seconds, 4.0);
        assert_eq!(st.start_ticks, 8000);
        assert_eq!(st.virtual_bytes, 104_857_600);
    }

    #[test]
    fn parses_status_stat_and_limits() {
        assert_eq!(
            parse_rss_bytes("Name:\tx\nVmRSS:\t   2048 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(
            parse_boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 1048576              files\n";
        assert_eq!(parse_max_fds(limits), Some(1024.0));
    }

    #[test]
    fn reads_this_process() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            eprintln!("skipping: no /proc");
            return;
        }
        let names: Vec<String> = ProcessMetrics
            .collect()
            .into_iter()
            .map(|f| f.name)
            .collect();
        for n in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
    }
}
