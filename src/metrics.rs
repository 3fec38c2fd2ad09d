//! A small Prometheus registry: counters, gauges and histograms with label
//! sets, Kubernetes stability prefixes on help text, and the text exposition
//! format 0.0.4.
//!
//! One [`Registry`] serves the whole process. [`Registry::global`] is the
//! shared instance; tests build their own with [`Registry::new`] and inject
//! it. Families are registered once and return cheap-to-clone handles;
//! `with(&[label values])` returns a child handle that callers may keep to
//! skip the lookup on hot paths.
//!
//! Values computed at scrape time (process metrics and the like) are added
//! with [`Registry::register_collector`].
//!
//! The CSI call histogram of spec E.1 is [`CsiOperationMetrics`].

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

/// `Content-Type` of the text exposition format produced by
/// [`Registry::encode_text`].
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Kubernetes metric stability level; decides the help-text prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stability {
    /// No prefix (metrics outside the Kubernetes stability framework,
    /// such as `process_*`).
    None,
    /// `[ALPHA] `.
    Alpha,
    /// `[BETA] `.
    Beta,
    /// `[STABLE] `.
    Stable,
}

impl Stability {
    fn prefix(self) -> &'static str {
        match self {
            Stability::None => "",
            Stability::Alpha => "[ALPHA] ",
            Stability::Beta => "[BETA] ",
            Stability::Stable => "[STABLE] ",
        }
    }
}

/// Name, help and stability of a metric family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opts {
    /// Family name, e.g. `workqueue_depth`.
    pub name: String,
    /// Help text without the stability prefix.
    pub help: String,
    /// Stability level (adds `[ALPHA] ` etc. to the help text).
    pub stability: Stability,
}

impl Opts {
    /// Options with [`Stability::None`].
    pub fn new(name: impl Into<String>, help: impl Into<String>) -> Self {
        Opts {
            name: name.into(),
            help: help.into(),
            stability: Stability::None,
        }
    }

    /// Options of an alpha metric (`[ALPHA] ` help prefix).
    pub fn alpha(name: impl Into<String>, help: impl Into<String>) -> Self {
        Opts::new(name, help).with_stability(Stability::Alpha)
    }

    /// Options of a beta metric (`[BETA] ` help prefix).
    pub fn beta(name: impl Into<String>, help: impl Into<String>) -> Self {
        Opts::new(name, help).with_stability(Stability::Beta)
    }

    /// Sets the stability level.
    pub fn with_stability(mut self, stability: Stability) -> Self {
        self.stability = stability;
        self
    }

    fn full_help(&self) -> String {
        format!("{}{}", self.stability.prefix(), self.help)
    }
}

/// Errors of family registration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    /// A family with this name is already registered.
    #[error("metric family {0:?} is already registered")]
    Duplicate(String),
    /// The metric or label name is not a valid Prometheus name.
    #[error("invalid metric or label name {0:?}")]
    InvalidName(String),
    /// Histogram buckets must be finite and strictly increasing.
    #[error("histogram {0:?}: buckets must be finite and strictly increasing")]
    InvalidBuckets(String),
}

/// The type of a metric family, as written on the `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram`.
    Histogram,
}

impl MetricKind {
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One family as read at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilySnapshot {
    /// Family name.
    pub name: String,
    /// Help text including the stability prefix.
    pub help: String,
    /// Family type.
    pub kind: MetricKind,
    /// One entry per label set.
    pub samples: Vec<SampleSnapshot>,
}

/// One labelled metric of a family as read at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleSnapshot {
    /// `(label name, label value)` pairs, in the family's label order.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: SampleValue,
}

/// Value of a sample.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleValue {
    /// Counter or gauge value.
    Scalar(f64),
    /// Histogram state.
    Histogram {
        /// `(upper bound, cumulative count)` for each configured bucket;
        /// the `+Inf` bucket is `count`.
        buckets: Vec<(f64, u64)>,
        /// Sum of observations.
        sum: f64,
        /// Number of observations.
        count: u64,
    },
}

/// Something that produces families at scrape time, e.g. process metrics.
pub trait Collector: Send + Sync + 'static {
    /// The current families. Names must not clash with registered families;
    /// on a clash the first one registered is served.
    fn collect(&self) -> Vec<FamilySnapshot>;
}

/// The process-wide metric registry. Cloning is cheap and shares state.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<RegistryInner>>,
}

#[derive(Default)]
struct RegistryInner {
    families: Vec<Arc<dyn Collector>>,
    names: Vec<String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Registry")
            .field("families", &inner.names)
            .finish()
    }
}

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

    /// Registers a counter family with the given label names.
    pub fn counter_vec(&self, opts: Opts, labels: &[&str]) -> Result<CounterVec, MetricsError> {
        let family = Family::new(opts, MetricKind::Counter, labels, Vec::new())?;
        self.add(family.clone())?;
        Ok(CounterVec(family))
    }

    /// Registers a gauge family with the given label names.
    pub fn gauge_vec(&self, opts: Opts, labels: &[&str]) -> Result<GaugeVec, MetricsError> {
        let family = Family::new(opts, MetricKind::Gauge, labels, Vec::new())?;
        self.add(family.clone())?;
        Ok(GaugeVec(family))
    }

    /// Registers a histogram family with the given label names and bucket
    /// upper bounds (finite, strictly increasing; `+Inf` is implicit).
    pub fn histogram_vec(
        &self,
        opts: Opts,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<HistogramVec, MetricsError> {
        if buckets.iter().any(|b| !b.is_finite()) || buckets.windows(2).any(|w| w[0] >= w[1]) {
            return Err(MetricsError::InvalidBuckets(opts.name));
        }
        if labels.contains(&"le") {
            return Err(MetricsError::InvalidName("le".to_string()));
        }
        let family = Family::new(opts, MetricKind::Histogram, labels, buckets.to_vec())?;
        self.add(family.clone())?;
        Ok(HistogramVec(family))
    }

    /// Adds a collector whose families are read at every scrape.
    pub fn register_collector(&self, collector: Arc<dyn Collector>) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.families.push(collector);
    }

    fn add(&self, family: Arc<Family>) -> Result<(), MetricsError> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.names.iter().any(|n| *n == family.name) {
            return Err(MetricsError::Duplicate(family.name.clone()));
        }
        inner.names.push(family.name.clone());
        inner.families.push(family);
        Ok(())
    }

    /// Reads every family, sorted by name. Families without samples are left
    /// out; on a name clash the first registered is kept.
    pub fn gather(&self) -> Vec<FamilySnapshot> {
        let collectors = {
            let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            inner.families.clone()
        };
        let mut out: Vec<FamilySnapshot> = Vec::new();
        for c in collectors {
            for fam in c.collect() {
                if fam.samples.is_empty() || out.iter().any(|f| f.name == fam.name) {
                    continue;
                }
                out.push(fam);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The whole registry in the Prometheus text format 0.0.4.
    pub fn encode_text(&self) -> String {
        encode_text(&self.gather())
    }
}

/// Writes families in the Prometheus text format 0.0.4.
pub fn encode_text(families: &[FamilySnapshot]) -> String {
    let mut out = String::new();
    for fam in families {
        let _ = writeln!(out, "# HELP {} {}", fam.name, escape_help(&fam.help));
        let _ = writeln!(out, "# TYPE {} {}", fam.name, fam.kind.as_str());
        for sample in &fam.samples {
            match &sample.value {
                SampleValue::Scalar(v) => {
                    write_sample(&mut out, &fam.name, "", &sample.labels, None, *v);
                }
                SampleValue::Histogram {
                    buckets,
                    sum,
                    count,
                } => {
                    for (le, n) in buckets {
                        write_sample(
                            &mut out,
                            &fam.name,
                            "_bucket",
                            &sample.labels,
                            Some(&format_float(*le)),
                            *n as f64,
                        );
                    }
                    write_sample(
                        &mut out,
                        &fam.name,
                        "_bucket",
                        &sample.labels,
                        Some("+Inf"),
                        *count as f64,
                    );
                    write_sample(&mut out, &fam.name, "_sum", &sample.labels, None, *sum);
                    write_sample(
                        &mut out,
                        &fam.name,
                        "_count",
                        &sample.labels,
                        None,
                        *count as f64,
                    );
                }
            }
        }
    }
    out
}

fn write_sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(String, String)],
    le: Option<&str>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        let extra = le.map(|v| ("le", v));
        for (k, v) in labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra)
        {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(k);
            out.push_str("=\"");
            escape_label_value(out, v);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&format_float(value));
    out.push('\n');
}

/// Help text escaping of format 0.0.4: backslash and newline.
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Label value escaping of format 0.0.4: backslash, double quote, newline.
fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Formats a value the way the Go client does (`strconv` `'g'`, shortest):
/// plain decimal for decimal exponents in -4..6, exponent form (`1e-08`,
/// `2.1479424e+07`) otherwise,
/// and `+Inf`, `-Inf`, `NaN` for the special values.
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

/// Shared state of one registered family.
struct Family {
    name: String,
    help: String,
    kind: MetricKind,
    label_names: Vec<String>,
    buckets: Vec<f64>,
    /// Children by a hash of their label values; collisions share a slot.
    children: RwLock<HashMap<u64, Vec<Arc<Child>>>>,
}

struct Child {
    label_values: Vec<String>,
    /// Counter/gauge value, or histogram sum, as `f64` bits.
    value: AtomicU64,
    /// Histogram only: non-cumulative count per bucket, then the `+Inf` one.
    bucket_counts: Vec<AtomicU64>,
    /// Histogram only: number of observations.
    count: AtomicU64,
}

impl Child {
    fn new(label_values: Vec<String>, buckets: usize, histogram: bool) -> Self {
        let n = if histogram { buckets + 1 } else { 0 };
        Child {
            label_values,
            value: AtomicU64::new(0f64.to_bits()),
            bucket_counts: (0..n).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
        }
    }

    fn add(&self, delta: f64) {
        let mut cur = self.value.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(cur) + delta).to_bits();
            match self
                .value
                .compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    fn get(&self) -> f64 {
        f64::from_bits(self.value.load(Ordering::Relaxed))
    }
}

fn valid_name(name: &str, allow_colon: bool) -> bool {
    let mut chars = name.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (allow_colon && c == ':');
    match chars.next() {
        Some(c) if ok_first(c) => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (allow_colon && c == ':'))
}

fn hash_values<S: AsRef<str>>(values: &[S]) -> u64 {
    let mut h = DefaultHasher::new();
    for v in values {
        v.as_ref().hash(&mut h);
    }
    h.finish()
}

impl Family {
    fn new(
        opts: Opts,
        kind: MetricKind,
        labels: &[&str],
        buckets: Vec<f64>,
    ) -> Result<Arc<Family>, MetricsError> {
        if !valid_name(&opts.name, true) {
            return Err(MetricsError::InvalidName(opts.name));
        }
        for l in labels {
            if !valid_name(l, false) || l.starts_with("__") {
                return Err(MetricsError::InvalidName((*l).to_string()));
            }
        }
        let family = Arc::new(Family {
            help: opts.full_help(),
            name: opts.name,
            kind,
            label_names: labels.iter().map(|s| (*s).to_string()).collect(),
            buckets,
            children: RwLock::new(HashMap::new()),
        });
        // A family without labels has exactly one child; expose it from the
        // start, as the Go client does.
        if labels.is_empty() {
            family.child(&[]);
        }
        Ok(family)
    }

    /// The child for these label values, created on first use. A count
    /// mismatch is a programming error: missing values are taken as empty
    /// and extra ones are ignored.
    fn child(&self, values: &[&str]) -> Arc<Child> {
        debug_assert_eq!(
            values.len(),
            self.label_names.len(),
            "label value count for {}",
            self.name
        );
        let n = self.label_names.len();
        let values: Vec<&str> = (0..n)
            .map(|i| values.get(i).copied().unwrap_or(""))
            .collect();
        let key = hash_values(&values);
        let matches = |c: &&Arc<Child>| {
            c.label_values
                .iter()
                .map(String::as_str)
                .eq(values.iter().copied())
        };
        {
            let map = self.children.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(found) = map.get(&key).and_then(|slot| slot.iter().find(matches)) {
                return found.clone();
            }
        }
        let mut map = self
            .children
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let slot = map.entry(key).or_default();
        if let Some(found) = slot.iter().find(matches) {
            return found.clone();
        }
        let child = Arc::new(Child::new(
            values.iter().map(|s| (*s).to_string()).collect(),
            self.buckets.len(),
            self.kind == MetricKind::Histogram,
        ));
        slot.push(child.clone());
        child
    }

    fn snapshot(&self) -> FamilySnapshot {
        let children: Vec<Arc<Child>> = {
            let map = self.children.read().unwrap_or_else(PoisonError::into_inner);
            map.values().flatten().cloned().collect()
        };
        let mut samples: Vec<SampleSnapshot> = children
            .iter()
            .map(|c| SampleSnapshot {
                labels: self
                    .label_names
                    .iter()
                    .cloned()
                    .zip(c.label_values.iter().cloned())
                    .collect(),
                value: match self.kind {
                    MetricKind::Histogram => {
                        let mut cumulative = 0u64;
                        let buckets = self
                            .buckets
                            .iter()
                            .zip(&c.bucket_counts)
                            .map(|(le, n)| {
                                cumulative += n.load(Ordering::Relaxed);
                                (*le, cumulative)
                            })
                            .collect();
                        SampleValue::Histogram {
                            buckets,
                            sum: c.get(),
                            count: c.count.load(Ordering::Relaxed),
                        }
                    }
                    _ => SampleValue::Scalar(c.get()),
                },
            })
            .collect();
        samples.sort_by(|a, b| a.labels.cmp(&b.labels));
        FamilySnapshot {
            name: self.name.clone(),
            help: self.help.clone(),
            kind: self.kind,
            samples,
        }
    }
}

impl Collector for Family {
    fn collect(&self) -> Vec<FamilySnapshot> {
        vec![self.snapshot()]
    }
}

/// A registered counter family.
#[derive(Clone)]
pub struct CounterVec(Arc<Family>);

/// One counter (a family member with fixed label values).
#[derive(Clone)]
pub struct Counter(Arc<Child>);

impl CounterVec {
    /// The counter for these label values (in registration order).
    pub fn with(&self, label_values: &[&str]) -> Counter {
        Counter(self.0.child(label_values))
    }
}

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.add(1.0);
    }
    /// Adds `delta`; negative or NaN deltas are ignored (counters only go up).
    pub fn inc_by(&self, delta: f64) {
        if delta >= 0.0 {
            self.0.add(delta);
        }
    }
    /// The current value.
    pub fn get(&self) -> f64 {
        self.0.get()
    }
}

/// A registered gauge family.
#[derive(Clone)]
pub struct GaugeVec(Arc<Family>);

/// One gauge.
#[derive(Clone)]
pub struct Gauge(Arc<Child>);

impl GaugeVec {
    /// The gauge for these label values (in registration order).
    pub fn with(&self, label_values: &[&str]) -> Gauge {
        Gauge(self.0.child(label_values))
    }
}

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: f64) {
        self.0.value.store(v.to_bits(), Ordering::Relaxed);
    }
    /// Adds `delta` (may be negative).
    pub fn add(&self, delta: f64) {
        self.0.add(delta);
    }
    /// Adds one.
    pub fn inc(&self) {
        self.0.add(1.0);
    }
    /// Subtracts one.
    pub fn dec(&self) {
        self.0.add(-1.0);
    }
    /// The current value.
    pub fn get(&self) -> f64 {
        self.0.get()
    }
}

/// A registered histogram family.
#[derive(Clone)]
pub struct HistogramVec(Arc<Family>);

/// One histogram.
#[derive(Clone)]
pub struct Histogram {
    child: Arc<Child>,
    family: Arc<Family>,
}

impl HistogramVec {
    /// The histogram for these label values (in registration order).
    pub fn with(&self, label_values: &[&str]) -> Histogram {
        Histogram {
            child: self.0.child(label_values),
            family: self.0.clone(),
        }
    }
}

impl Histogram {
    /// Records one observation. NaN is ignored.
    pub fn observe(&self, v: f64) {
        if v.is_nan() {
            return;
        }
        let idx = self.family.buckets.partition_point(|le| *le < v);
        self.child.bucket_counts[idx].fetch_add(1, Ordering::Relaxed);
        self.child.add(v);
        self.child.count.fetch_add(1, Ordering::Relaxed);
    }
    /// Records a duration in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }
    /// Number of observations so far.
    pub fn count(&self) -> u64 {
        self.child.count.load(Ordering::Relaxed)
    }
    /// Sum of observations so far.
    pub fn sum(&self) -> f64 {
        self.child.get()
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
/// `driver_name` label value until the driver name is known.
pub const UNKNOWN_DRIVER: &str = "unknown-driver";
/// `grpc_status_code` label value of an error that is not a gRPC status.
pub const UNKNOWN_NON_GRPC: &str = "unknown-non-grpc";

/// The `csi_sidecar_operations_seconds` histogram: one observation per CSI
/// RPC, labelled `driver_name`, `method_name`, `grpc_status_code`.
#[derive(Clone)]
pub struct CsiOperationMetrics {
    histogram: HistogramVec,
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
            Opts::alpha(CSI_OPERATIONS_METRIC, CSI_OPERATIONS_HELP),
            &["driver_name", "method_name", "grpc_status_code"],
            CSI_OPERATIONS_BUCKETS,
        )?;
        Ok(CsiOperationMetrics {
            histogram,
            driver_name: Arc::new(RwLock::new(UNKNOWN_DRIVER.to_string())),
        })
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
                CsiOperationMetrics::detached()
            })
        })
    }

    /// A histogram in no registry (never fails: the family is valid).
    fn detached() -> Self {
        let opts = Opts::alpha(CSI_OPERATIONS_METRIC, CSI_OPERATIONS_HELP);
        let family = Family {
            help: opts.full_help(),
            name: opts.name,
            kind: MetricKind::Histogram,
            label_names: ["driver_name", "method_name", "grpc_status_code"]
                .map(String::from)
                .to_vec(),
            buckets: CSI_OPERATIONS_BUCKETS.to_vec(),
            children: RwLock::new(HashMap::new()),
        };
        CsiOperationMetrics {
            histogram: HistogramVec(Arc::new(family)),
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
        let driver = self.driver_name();
        self.histogram
            .with(&[&driver, method, status])
            .observe_duration(elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_gauge_text() {
        let r = Registry::new();
        let c = r
            .counter_vec(Opts::beta("workqueue_adds_total", "Total adds"), &["name"])
            .unwrap();
        let g = r.gauge_vec(Opts::new("up", "Up.\nline"), &[]).unwrap();
        c.with(&["b"]).inc();
        c.with(&["a\"x\\\n"]).inc_by(2.0);
        c.with(&["a\"x\\\n"]).inc_by(-5.0);
        g.with(&[]).set(3.5);
        let text = r.encode_text();
        assert_eq!(
            text,
            "# HELP up Up.\\nline\n# TYPE up gauge\nup 3.5\n\
             # HELP workqueue_adds_total [BETA] Total adds\n# TYPE workqueue_adds_total counter\n\
             workqueue_adds_total{name=\"a\\\"x\\\\\\n\"} 2\nworkqueue_adds_total{name=\"b\"} 1\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let r = Registry::new();
        let h = r
            .histogram_vec(Opts::alpha("h", "H"), &["l"], &[1.0, 2.0])
            .unwrap();
        let x = h.with(&["v"]);
        for v in [0.5, 1.0, 1.5, 3.0] {
            x.observe(v);
        }
        let text = r.encode_text();
        assert!(text.contains("# HELP h [ALPHA] H\n# TYPE h histogram\n"));
        assert!(text.contains("h_bucket{l=\"v\",le=\"1\"} 2\n"));
        assert!(text.contains("h_bucket{l=\"v\",le=\"2\"} 3\n"));
        assert!(text.contains("h_bucket{l=\"v\",le=\"+Inf\"} 4\n"));
        assert!(text.contains("h_sum{l=\"v\"} 6\n"));
        assert!(text.contains("h_count{l=\"v\"} 4\n"));
    }

    #[test]
    fn empty_labelled_family_is_not_exposed() {
        let r = Registry::new();
        r.counter_vec(Opts::new("c", "C"), &["x"]).unwrap();
        assert_eq!(r.encode_text(), "");
    }

    #[test]
    fn registration_errors() {
        let r = Registry::new();
        r.gauge_vec(Opts::new("g", "G"), &[]).unwrap();
        assert_eq!(
            r.gauge_vec(Opts::new("g", "G"), &[]).err(),
            Some(MetricsError::Duplicate("g".into()))
        );
        assert!(matches!(
            r.gauge_vec(Opts::new("1g", "G"), &[]),
            Err(MetricsError::InvalidName(_))
        ));
        assert!(matches!(
            r.gauge_vec(Opts::new("g2", "G"), &["a-b"]),
            Err(MetricsError::InvalidName(_))
        ));
        assert!(matches!(
            r.histogram_vec(Opts::new("h", "H"), &[], &[2.0, 1.0]),
            Err(MetricsError::InvalidBuckets(_))
        ));
        assert!(matches!(
            r.histogram_vec(Opts::new("h", "H"), &["le"], &[1.0]),
            Err(MetricsError::InvalidName(_))
        ));
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

    struct Fixed;
    impl Collector for Fixed {
        fn collect(&self) -> Vec<FamilySnapshot> {
            vec![FamilySnapshot {
                name: "g".into(),
                help: "other".into(),
                kind: MetricKind::Gauge,
                samples: vec![SampleSnapshot {
                    labels: vec![],
                    value: SampleValue::Scalar(9.0),
                }],
            }]
        }
    }

    #[test]
    fn collectors_are_merged_first_name_wins() {
        let r = Registry::new();
        r.gauge_vec(Opts::new("g", "mine"), &[])
            .unwrap()
            .with(&[])
            .set(1.0);
        r.register_collector(Arc::new(Fixed));
        assert_eq!(r.encode_text(), "# HELP g mine\n# TYPE g gauge\ng 1\n");
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
            "csi_sidecar_operations_seconds_bucket{driver_name=\"unknown-driver\",method_name=\"/csi.v1.Identity/GetPluginInfo\",grpc_status_code=\"OK\",le=\"0.1\"} 1\n"
        ));
        assert!(text.contains(
            "csi_sidecar_operations_seconds_bucket{driver_name=\"d.example.com\",method_name=\"/csi.v1.Identity/Probe\",grpc_status_code=\"DeadlineExceeded\",le=\"1\"} 0\n"
        ));
        assert!(text.contains(
            "csi_sidecar_operations_seconds_bucket{driver_name=\"d.example.com\",method_name=\"/csi.v1.Identity/Probe\",grpc_status_code=\"DeadlineExceeded\",le=\"2.5\"} 1\n"
        ));
        assert!(text.contains("# HELP csi_sidecar_operations_seconds [ALPHA] Container Storage Interface operation duration with gRPC error code status total\n"));
    }
}
