//! The `process_*` families: the `prometheus` crate's process collector,
//! exposed as the Go sidecar exposes them.
//!
//! Three adjustments keep the families as Kubernetes components serve
//! them: `process_start_time_seconds` carries the `[ALPHA] ` help prefix
//! (component-base registers it as alpha), `process_cpu_seconds_total`
//! keeps its fraction of a second (the crate truncates it to whole
//! seconds, which makes `rate()` of a lightly loaded sidecar jump between 0
//! and 1/window), and the crate's extra `process_threads` is left out.
//! Families whose source cannot be read (not Linux, hardened `/proc`) are
//! left out rather than reported as zero.

use crate::metrics::Registry;

/// The `process_*` collector.
#[derive(Debug)]
pub struct ProcessMetrics {
    #[cfg(target_os = "linux")]
    inner: prometheus::process_collector::ProcessCollector,
}

impl ProcessMetrics {
    /// Registers the collector in `registry`; a second registration in the
    /// same registry is a no-op.
    pub fn register(registry: &Registry) {
        #[cfg(target_os = "linux")]
        {
            let me = ProcessMetrics {
                inner: prometheus::process_collector::ProcessCollector::for_self(),
            };
            if let Err(e) = registry.register(me) {
                tracing::debug!(error = %e, "Process metrics already registered");
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = registry;
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use prometheus::core::{Collector, Desc};
    use prometheus::proto::MetricFamily;

    use super::ProcessMetrics;
    use crate::metrics::Stability;

    /// The crate's family that the Go sidecar does not have.
    const LEFT_OUT: &str = "process_threads";
    const START_TIME: &str = "process_start_time_seconds";
    const CPU: &str = "process_cpu_seconds_total";

    /// User plus system CPU time of this process, in seconds.
    fn cpu_seconds() -> Option<f64> {
        let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
        Some((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
    }

    impl Collector for ProcessMetrics {
        fn desc(&self) -> Vec<&Desc> {
            self.inner.desc()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            let mut families = self.inner.collect();
            families.retain(|f| f.name() != LEFT_OUT);
            for f in &mut families {
                match f.name() {
                    START_TIME => {
                        let help = Stability::Alpha.help(f.help());
                        f.set_help(help);
                    }
                    CPU => {
                        if let Some(seconds) = cpu_seconds() {
                            for m in f.mut_metric() {
                                let mut counter = m.get_counter().clone();
                                counter.set_value(seconds);
                                m.set_counter(counter);
                            }
                        }
                    }
                    _ => {}
                }
            }
            families
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn families_as_kubernetes_components_expose_them() {
        let registry = Registry::new();
        ProcessMetrics::register(&registry);
        ProcessMetrics::register(&registry);
        let text = registry.encode_text();
        for family in [
            "process_cpu_seconds_total counter",
            "process_resident_memory_bytes gauge",
            "process_virtual_memory_bytes gauge",
            "process_open_fds gauge",
            "process_max_fds gauge",
            "process_start_time_seconds gauge",
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {family}\n")).count(),
                1,
                "{family} once in\n{text}"
            );
        }
        assert!(!text.contains("process_threads"), "{text}");
        assert!(
            text.contains(
                "# HELP process_start_time_seconds [ALPHA] Start time of the process since unix epoch in seconds.\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn cpu_time_keeps_its_fraction() {
        // Burn CPU until the tick count is not a whole second, then the
        // exposed value must not be truncated to whole seconds.
        let registry = Registry::new();
        ProcessMetrics::register(&registry);
        let value = || {
            registry
                .encode_text()
                .lines()
                .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
                .and_then(|v| v.parse::<f64>().ok())
        };
        let mut x = 0u64;
        for _ in 0..1000 {
            let v = value().expect("cpu seconds exposed");
            if v.fract() != 0.0 {
                return;
            }
            for i in 0..200_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
        panic!("process_cpu_seconds_total stayed a whole number");
    }
}
