//! The sidecar's metric families on the `prometheus` crate: their names,
//! help texts (with the Kubernetes stability prefix), label names and
//! buckets, and the text exposition that `/metrics` serves.
//!
//! One [`Registry`] serves the whole process; [`Registry::global`] is the
//! shared instance, tests build their own with [`Registry::new`] and inject
//! it. Families: [`CsiOperationMetrics`] (spec E.1), [`RestClientMetrics`],
//! `leader_election_*` (`crate::leader`), `workqueue_*`
//! (`crate::controller::queue_metrics`) and `process_*`
//! (`crate::process_metrics`).

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::proto::{Metric, MetricFamily, MetricType};
use prometheus::{CounterVec, GaugeVec, HistogramOpts, HistogramVec, Opts};

/// `Content-Type` of the text exposition format produced by
/// [`Registry::encode_text`].
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why a family could not be registered: a family of that name is already
/// registered, or a name is invalid.
pub type MetricsError = prometheus::Error;

/// Kubernetes metric stability level; decides the help-text prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stability {
    /// No prefix (metrics outside the Kubernetes stability framework,
    /// such as most `process_*`).
    None,
    /// `[ALPHA] `.
    Alpha,
    /// `[BETA] `.
    Beta,
    /// `[STABLE] `.
    Stable,
}

impl Stability {
    /// `help` with this level's prefix, as Kubernetes components expose it.
    pub fn help(self, help: &str) -> String {
        let prefix = match self {
            Stability::None => "",
            Stability::Alpha => "[ALPHA] ",
            Stability::Beta => "[BETA] ",
            Stability::Stable => "[STABLE] ",
        };
        format!("{prefix}{help}")
    }

    /// Options of a family named `name` at this level.
    pub fn opts(self, name: &str, help: &str) -> Opts {
        Opts::new(name, self.help(help))
    }
}

/// The registry `/metrics` serves. Cloning is cheap and shares state.
#[derive(Clone, Debug, Default)]
pub struct Registry(prometheus::Registry);

impl Registry {
    /// An empty registry (for tests and embedding).
    pub fn new() -> Self {
        Registry::default()
    }

    /// The registry shared by the whole process.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::new)
    }

    /// Adds a collector (a family or a set of families read at scrape
    /// time). Fails when one of its families is already registered.
    pub fn register(&self, collector: impl Collector + 'static) -> Result<(), MetricsError> {
        self.0.register(Box::new(collector))
    }

    /// Registers a counter family with the given label names.
    pub fn counter_vec(&self, opts: Opts, labels: &[&str]) -> Result<CounterVec, MetricsError> {
        let family = CounterVec::new(opts, labels)?;
        self.register(family.clone())?;
        Ok(family)
    }

    /// Registers a gauge family with the given label names.
    pub fn gauge_vec(&self, opts: Opts, labels: &[&str]) -> Result<GaugeVec, MetricsError> {
        let family = GaugeVec::new(opts, labels)?;
        self.register(family.clone())?;
        Ok(family)
    }

    /// Registers a histogram family with the given label names and bucket
    /// upper bounds (`+Inf` is implicit).
    pub fn histogram_vec(
        &self,
        opts: Opts,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<HistogramVec, MetricsError> {
        let family =
            HistogramVec::new(HistogramOpts::from(opts).buckets(buckets.to_vec()), labels)?;
        self.register(family.clone())?;
        Ok(family)
    }

    /// Every family with at least one sample, sorted by name.
    pub fn gather(&self) -> Vec<MetricFamily> {
        self.0.gather()
    }

    /// The whole registry in the Prometheus text format 0.0.4.
    pub fn encode_text(&self) -> String {
        encode_text(&self.gather())
    }
}

/// Writes families in the Prometheus text format 0.0.4, with numbers
/// formatted as the Go client formats them (the crate's own encoder writes
/// `1e-8` as `0.00000001`, which would change the `le` label of every
/// work-queue bucket).
pub fn encode_text(families: &[MetricFamily]) -> String {
    let mut out = String::new();
    for family in families {
        let name = family.name();
        let kind = match family.get_field_type() {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            MetricType::HISTOGRAM => "histogram",
            MetricType::SUMMARY => "summary",
            MetricType::UNTYPED => "untyped",
        };
        let help = family.help().replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for m in family.get_metric() {
            match family.get_field_type() {
                MetricType::COUNTER => sample(&mut out, name, m, None, m.get_counter().get_value()),
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    let series = format!("{name}_bucket");
                    for b in h.get_bucket() {
                        let le = format_float(b.upper_bound());
                        sample(&mut out, &series, m, Some(&le), b.cumulative_count() as f64);
                    }
                    if !h
                        .get_bucket()
                        .last()
                        .is_some_and(|b| b.upper_bound() == f64::INFINITY)
                    {
                        sample(
                            &mut out,
                            &series,
                            m,
                            Some("+Inf"),
                            h.get_sample_count() as f64,
                        );
                    }
                    sample(
                        &mut out,
                        &format!("{name}_sum"),
                        m,
                        None,
                        h.get_sample_sum(),
                    );
                    let count = h.get_sample_count() as f64;
                    sample(&mut out, &format!("{name}_count"), m, None, count);
                }
                // Gauges; the sidecar has no summaries or untyped families.
                _ => sample(&mut out, name, m, None, m.get_gauge().get_value()),
            }
        }
    }
    out
}

/// One sample line: `series{labels[,le]} value`.
fn sample(out: &mut String, series: &str, m: &Metric, le: Option<&str>, value: f64) {
    out.push_str(series);
    let labels = m.get_label().iter().map(|l| (l.name(), l.value()));
    let mut labels = labels.chain(le.map(|v| ("le", v))).peekable();
    if labels.peek().is_some() {
        out.push('{');
        for (i, (k, v)) in labels.enumerate() {
            if i > 0 {
                out.push(',');
            }
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(out, "{k}=\"{v}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", format_float(value));
}

/// Formats a value the way the Go client does (`strconv` `'g'`, shortest):
/// plain decimal for decimal exponents in -4..6, exponent form (`1e-08`,
/// `2.1479424e+07`) otherwise, and `+Inf`, `-Inf`, `NaN` for the special
/// values.
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if v == 0.0 {
        return "0".to_string();
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    // Go's 'g' with the shortest precision switches to exponent form below
    // 1e-4 and from 1e6 on.
    if (-4..6).contains(&exp) {
        format!("{v}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// Name of the CSI call histogram (spec E.1).
pub const CSI_OPERATIONS_METRIC: &str = "csi_sidecar_operations_seconds";
/// Help of the CSI call histogram, without the `[ALPHA] ` prefix.
pub const CSI_OPERATIONS_HELP: &str =
    "Container Storage Interface operation duration with gRPC error code status total";
/// Buckets of the CSI call histogram in seconds (spec E.1).
pub const CSI_OPERATIONS_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 25.0, 50.0, 120.0, 300.0, 600.0,
];
/// Label names of the CSI call histogram, in csi-lib-utils' order (the
/// exposition sorts them by name, as the Go client does).
const CSI_OPERATIONS_LABELS: [&str; 3] = ["driver_name", "method_name", "grpc_status_code"];
/// `driver_name` label value until the driver name is known.
pub const UNKNOWN_DRIVER: &str = "unknown-driver";
/// `grpc_status_code` label value of an error that is not a gRPC status.
pub const UNKNOWN_NON_GRPC: &str = "unknown-non-grpc";

/// The `csi_sidecar_operations_seconds` histogram: one observation per CSI
/// RPC, labelled `driver_name`, `method_name`, `grpc_status_code`.
#[derive(Clone)]
pub struct CsiOperationMetrics {
    /// `None` only if the crate refused the family, which its constant
    /// definition rules out; observations are then dropped.
    histogram: Option<HistogramVec>,
    driver_name: Arc<RwLock<String>>,
}

impl std::fmt::Debug for CsiOperationMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsiOperationMetrics")
            .field("driver_name", &self.driver_name())
            .finish()
    }
}

impl CsiOperationMetrics {
    /// Registers the histogram in `registry`. The driver name starts as
    /// `unknown-driver`.
    pub fn register(registry: &Registry) -> Result<Self, MetricsError> {
        let histogram = registry.histogram_vec(
            Stability::Alpha.opts(CSI_OPERATIONS_METRIC, CSI_OPERATIONS_HELP),
            &CSI_OPERATIONS_LABELS,
            CSI_OPERATIONS_BUCKETS,
        )?;
        Ok(CsiOperationMetrics::with(Some(histogram)))
    }

    /// The histogram registered in [`Registry::global`] (created on first
    /// use).
    pub fn global() -> &'static CsiOperationMetrics {
        static GLOBAL: OnceLock<CsiOperationMetrics> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            CsiOperationMetrics::register(Registry::global()).unwrap_or_else(|e| {
                // Only a foreign family of the same name gets here; keep
                // recording, unexposed, rather than fail the CSI calls.
                tracing::warn!(error = %e, "CSI operations histogram not exposed");
                let opts = Stability::Alpha.opts(CSI_OPERATIONS_METRIC, CSI_OPERATIONS_HELP);
                let opts = HistogramOpts::from(opts).buckets(CSI_OPERATIONS_BUCKETS.to_vec());
                CsiOperationMetrics::with(HistogramVec::new(opts, &CSI_OPERATIONS_LABELS).ok())
            })
        })
    }

    fn with(histogram: Option<HistogramVec>) -> Self {
        CsiOperationMetrics {
            histogram,
            driver_name: Arc::new(RwLock::new(UNKNOWN_DRIVER.to_string())),
        }
    }

    /// Sets the `driver_name` label used by later observations.
    pub fn set_driver_name(&self, name: &str) {
        *self
            .driver_name
            .write()
            .unwrap_or_else(PoisonError::into_inner) = name.to_string();
    }

    /// The current `driver_name` label value.
    pub fn driver_name(&self) -> String {
        self.driver_name
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records one RPC: `method` is the full gRPC path
    /// (`/csi.v1.Identity/Probe`), `status` the Go code name (`OK`,
    /// `DeadlineExceeded`, …) or `unknown-non-grpc`.
    pub fn observe(&self, method: &str, status: &str, elapsed: Duration) {
        if let Some(h) = &self.histogram {
            let driver = self.driver_name();
            h.with_label_values(&[driver.as_str(), method, status])
                .observe(elapsed.as_secs_f64());
        }
    }
}

/// Name of client-go's request counter.
pub const REST_CLIENT_REQUESTS_METRIC: &str = "rest_client_requests_total";
/// client-go's help of the request counter, without the `[ALPHA] ` prefix.
pub const REST_CLIENT_REQUESTS_HELP: &str =
    "Number of HTTP requests, partitioned by status code, method, and host.";
/// client-go's label names of the request counter, in its order.
const REST_CLIENT_REQUESTS_LABELS: [&str; 3] = ["code", "method", "host"];
/// `code` label value of a request that got no response (client-go's).
pub const NO_RESPONSE_CODE: &str = "<error>";

/// client-go's `rest_client_requests_total`: one count per HTTP request to
/// the API server, labelled `code` (the HTTP status, or `<error>` when no
/// response came), `method` (`GET`, `POST`, …; lists and watches are
/// `GET`) and `host` (`host:port` of the server).
#[derive(Clone, Debug)]
pub struct RestClientMetrics {
    requests: CounterVec,
}

impl RestClientMetrics {
    /// Registers the counter in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, MetricsError> {
        let requests = registry.counter_vec(
            Stability::Alpha.opts(REST_CLIENT_REQUESTS_METRIC, REST_CLIENT_REQUESTS_HELP),
            &REST_CLIENT_REQUESTS_LABELS,
        )?;
        Ok(RestClientMetrics { requests })
    }

    /// The counter registered in [`Registry::global`] (created on first
    /// use); `None` if a foreign family of that name was there first.
    pub fn global() -> Option<&'static RestClientMetrics> {
        static GLOBAL: OnceLock<Option<RestClientMetrics>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                RestClientMetrics::register(Registry::global())
                    .inspect_err(|e| tracing::warn!(error = %e, "API request counter not exposed"))
                    .ok()
            })
            .as_ref()
    }

    /// Counts one request.
    pub fn inc(&self, code: &str, method: &str, host: &str) {
        self.requests.with_label_values(&[code, method, host]).inc();
    }

    /// The count so far for these label values.
    pub fn get(&self, code: &str, method: &str, host: &str) -> f64 {
        self.requests.with_label_values(&[code, method, host]).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_gauge_text_escapes_help_and_label_values() {
        let r = Registry::new();
        let c = r
            .counter_vec(
                Stability::Beta.opts("workqueue_adds_total", "Total adds"),
                &["name"],
            )
            .unwrap();
        let g = r
            .gauge_vec(Stability::None.opts("up", "Up.\nline"), &[])
            .unwrap();
        c.with_label_values(&["b"]).inc();
        c.with_label_values(&["a\"x\\\n"]).inc_by(2.0);
        g.with_label_values::<&str>(&[]).set(3.5);
        assert_eq!(
            r.encode_text(),
            "# HELP up Up.\\nline\n# TYPE up gauge\nup 3.5\n\
             # HELP workqueue_adds_total [BETA] Total adds\n# TYPE workqueue_adds_total counter\n\
             workqueue_adds_total{name=\"a\\\"x\\\\\\n\"} 2\nworkqueue_adds_total{name=\"b\"} 1\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_inf() {
        let r = Registry::new();
        let h = r
            .histogram_vec(Stability::Alpha.opts("h", "H"), &["l"], &[1e-8, 2.0])
            .unwrap();
        let x = h.with_label_values(&["v"]);
        for v in [1e-9, 1.0, 1.5, 3.0] {
            x.observe(v);
        }
        let text = r.encode_text();
        assert!(text.contains("# HELP h [ALPHA] H\n# TYPE h histogram\n"));
        assert!(
            text.contains("h_bucket{l=\"v\",le=\"1e-08\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("h_bucket{l=\"v\",le=\"2\"} 3\n"), "{text}");
        assert!(text.contains("h_bucket{l=\"v\",le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("h_sum{l=\"v\"} 5.500000001\n"), "{text}");
        assert!(text.contains("h_count{l=\"v\"} 4\n"), "{text}");
    }

    #[test]
    fn empty_labelled_family_is_not_exposed() {
        let r = Registry::new();
        r.counter_vec(Stability::None.opts("c", "C"), &["x"])
            .unwrap();
        assert_eq!(r.encode_text(), "");
    }

    #[test]
    fn a_family_is_registered_once() {
        let r = Registry::new();
        r.gauge_vec(Stability::None.opts("g", "G"), &[]).unwrap();
        assert!(r.gauge_vec(Stability::None.opts("g", "G"), &[]).is_err());
        assert!(CsiOperationMetrics::register(&r).is_ok());
        assert!(CsiOperationMetrics::register(&r).is_err());
    }

    #[test]
    fn go_float_format() {
        assert_eq!(format_float(1e-8), "1e-08");
        assert_eq!(format_float(0.0001), "0.0001");
        assert_eq!(format_float(0.25), "0.25");
        assert_eq!(format_float(600.0), "600");
        assert_eq!(format_float(123456.0), "123456");
        assert_eq!(format_float(21479424.0), "2.1479424e+07");
        assert_eq!(format_float(1e21), "1e+21");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_float(-2.5), "-2.5");
    }

    #[test]
    fn csi_histogram_driver_name() {
        let r = Registry::new();
        let m = CsiOperationMetrics::register(&r).unwrap();
        m.observe(
            "/csi.v1.Identity/GetPluginInfo",
            "OK",
            Duration::from_millis(50),
        );
        m.set_driver_name("d.example.com");
        m.observe(
            "/csi.v1.Identity/Probe",
            "DeadlineExceeded",
            Duration::from_secs(2),
        );
        let text = r.encode_text();
        assert!(text.contains(
            "csi_sidecar_operations_seconds_bucket{driver_name=\"unknown-driver\",grpc_status_code=\"OK\",method_name=\"/csi.v1.Identity/GetPluginInfo\",le=\"0.1\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "csi_sidecar_operations_seconds_bucket{driver_name=\"d.example.com\",grpc_status_code=\"DeadlineExceeded\",method_name=\"/csi.v1.Identity/Probe\",le=\"1\"} 0\n"
        ), "{text}");
        assert!(text.contains(
            "csi_sidecar_operations_seconds_bucket{driver_name=\"d.example.com\",grpc_status_code=\"DeadlineExceeded\",method_name=\"/csi.v1.Identity/Probe\",le=\"2.5\"} 1\n"
        ), "{text}");
        assert!(text.contains("# HELP csi_sidecar_operations_seconds [ALPHA] Container Storage Interface operation duration with gRPC error code status total\n"));
    }

    #[test]
    fn rest_client_counter_has_client_go_name_help_and_labels() {
        let r = Registry::new();
        let m = RestClientMetrics::register(&r).unwrap();
        m.inc("200", "GET", "127.0.0.1:6443");
        m.inc("200", "GET", "127.0.0.1:6443");
        m.inc(NO_RESPONSE_CODE, "PATCH", "127.0.0.1:6443");
        assert_eq!(m.get("200", "GET", "127.0.0.1:6443"), 2.0);
        assert_eq!(
            r.encode_text(),
            "# HELP rest_client_requests_total [ALPHA] Number of HTTP requests, partitioned by status code, method, and host.\n\
             # TYPE rest_client_requests_total counter\n\
             rest_client_requests_total{code=\"200\",host=\"127.0.0.1:6443\",method=\"GET\"} 2\n\
             rest_client_requests_total{code=\"<error>\",host=\"127.0.0.1:6443\",method=\"PATCH\"} 1\n"
        );
    }
}
