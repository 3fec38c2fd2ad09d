//! Log output in the shape Kubernetes components use: one line per event on
//! stderr, either klog-style text or one JSON object, with structured fields
//! kept as `key=value` pairs rather than formatted into the message.
//!
//! Verbosity (`--v`): 0–1 → INFO, 2–4 → DEBUG, ≥ 5 → TRACE for this crate.
//! Dependencies (kube, hyper, tonic, …) are quieter: WARN at 0–1, INFO at
//! 2–5, DEBUG at 6–7, TRACE from 8, like client-go's request logging that
//! starts at 6. `--vmodule=pattern=N` overrides the level per source file.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Target prefixes of this project's own code; everything else is a dependency.
const OWN_TARGETS: &[&str] = &["csi_snapshotter", "csi_mock_driver"];

/// Output format (`--logging-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// klog-style text: `I1122 22:09:21.123456    4242 run.rs:42] "msg" key="value"`.
    Text,
    /// One JSON object per line: `ts`, `caller`, `level`, `v`, `msg`, fields.
    Json,
}

/// One `--vmodule` item: source files matching `pattern` log at `verbosity`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VModuleRule {
    /// Glob (`*`, `?`) on the file name without extension, or on the path
    /// without extension when it contains `/`.
    pub pattern: String,
    /// The `--v` value for matching files.
    pub verbosity: u32,
}

/// The validated logging flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggingConfig {
    /// `--v`.
    pub verbosity: u32,
    /// `--vmodule`.
    pub vmodule: Vec<VModuleRule>,
    /// `--logging-format`.
    pub format: LogFormat,
    /// `--log-flush-frequency`; accepted for compatibility. Lines are written
    /// unbuffered, so nothing waits for a flush.
    pub flush_frequency: Duration,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            verbosity: 0,
            vmodule: Vec::new(),
            format: LogFormat::Text,
            flush_frequency: Duration::from_secs(5),
        }
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// Another global subscriber was installed first.
    #[error("a global log subscriber is already installed: {0}")]
    AlreadyInitialized(String),
}

/// Parses `--vmodule`: comma-separated `pattern=N` items (empty items are
/// skipped); a missing `=`, empty pattern or non-numeric N is an error.
pub fn parse_vmodule(text: &str) -> Result<Vec<VModuleRule>, String> {
    text.split(',')
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (pattern, n) = item
                .split_once('=')
                .filter(|(p, _)| !p.is_empty())
                .ok_or_else(|| {
                    format!("expect comma-separated list of filename=N, got {item:?}")
                })?;
            let verbosity = n
                .parse::<u32>()
                .map_err(|_| format!("invalid verbosity {n:?} in vmodule item {item:?}"))?;
            Ok(VModuleRule {
                pattern: pattern.to_string(),
                verbosity,
            })
        })
        .collect()
}

/// The most verbose level this crate logs at verbosity `v`.
pub fn level_for(v: u32) -> LevelFilter {
    match v {
        0..=1 => LevelFilter::INFO,
        2..=4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// The most verbose level a dependency logs at verbosity `v`.
fn dependency_level_for(v: u32) -> LevelFilter {
    match v {
        0..=1 => LevelFilter::WARN,
        2..=5 => LevelFilter::INFO,
        6..=7 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// Installs the global subscriber for `config`.
pub fn init(config: &LoggingConfig) -> Result<(), LoggingError> {
    let filter = VerbosityFilter {
        verbosity: config.verbosity,
        vmodule: config.vmodule.clone(),
    };
    tracing_subscriber::registry()
        .with(LineLayer::new(config.format, Sink::Stderr).with_filter(filter))
        .try_init()
        .map_err(|e| LoggingError::AlreadyInitialized(e.to_string()))
}

/// Decides per call site from `--v` and `--vmodule`.
#[derive(Clone, Debug)]
struct VerbosityFilter {
    verbosity: u32,
    vmodule: Vec<VModuleRule>,
}

impl VerbosityFilter {
    fn max_level(&self, target: &str, file: Option<&str>) -> LevelFilter {
        let own = OWN_TARGETS.iter().any(|t| target.starts_with(t));
        let v = file
            .and_then(|file| {
                self.vmodule
                    .iter()
                    .find(|rule| vmodule_matches(&rule.pattern, file))
            })
            .map_or(self.verbosity, |rule| rule.verbosity);
        if own {
            level_for(v)
        } else {
            dependency_level_for(v)
        }
    }

    fn allows(&self, meta: &Metadata<'_>) -> bool {
        *meta.level() <= self.max_level(meta.target(), meta.file())
    }
}

impl<S> Filter<S> for VerbosityFilter {
    fn enabled(&self, meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        self.allows(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.allows(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        let top = self
            .vmodule
            .iter()
            .map(|r| r.verbosity)
            .chain([self.verbosity])
            .max()
            .unwrap_or(0);
        Some(level_for(top).max(dependency_level_for(top)))
    }
}

/// klog's vmodule match: the pattern is a glob on the file name without its
/// extension, or on the whole path without extension if it contains `/`.
fn vmodule_matches(pattern: &str, file: &str) -> bool {
    let without_ext = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
    let subject = if pattern.contains('/') {
        without_ext
    } else {
        without_ext.rsplit('/').next().unwrap_or(without_ext)
    };
    glob_match(pattern.as_bytes(), subject.as_bytes())
}

/// `*` (any run) and `?` (one character) glob matching.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((bp, bt)) => {
                    p = bp + 1;
                    t = bt + 1;
                    backtrack = Some((bp, bt + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// A recorded field value, kept typed so both formats can render it.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

/// Fields collected from an event or span, in recording order.
#[derive(Default, Debug)]
struct Fields {
    message: Option<String>,
    pairs: Vec<(&'static str, Value)>,
}

impl Fields {
    fn push(&mut self, field: &Field, value: Value) {
        if field.name() == "message"
            && let Value::Str(s) = value
        {
            self.message = Some(s);
            return;
        }
        self.pairs.push((field.name(), value));
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, Value::F64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Value::U64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, Value::Str(value.to_string()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, Value::Str(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.push(field, Value::Str(format!("{value:?}")));
    }
}

/// The fields of a span, stored in its extensions.
struct SpanFields(Vec<(&'static str, Value)>);

/// Where lines go: stderr in the product, a buffer in tests.
#[derive(Clone)]
enum Sink {
    Stderr,
    #[cfg(test)]
    Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>),
}

impl Sink {
    fn write_line(&self, line: &str) {
        match self {
            // One write per line so concurrent lines do not interleave; a
            // failed write to stderr has nowhere to be reported.
            Sink::Stderr => {
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            #[cfg(test)]
            Sink::Buffer(buf) => {
                if let Ok(mut b) = buf.lock() {
                    b.extend_from_slice(line.as_bytes());
                }
            }
        }
    }
}

/// The layer that renders one line per event.
struct LineLayer {
    format: LogFormat,
    sink: Sink,
    pid: u32,
}

impl LineLayer {
    fn new(format: LogFormat, sink: Sink) -> Self {
        LineLayer {
            format,
            sink,
            pid: std::process::id(),
        }
    }
}

impl<S> Layer<S> for LineLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields.pairs));
        }
    }

    fn on_record(&self, id: &tracing::span::Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            match ext.get_mut::<SpanFields>() {
                Some(existing) => existing.0.extend(fields.pairs),
                None => ext.insert(SpanFields(fields.pairs)),
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut pairs = Vec::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(sf) = span.extensions().get::<SpanFields>() {
                    pairs.extend(sf.0.iter().cloned());
                }
            }
        }
        pairs.extend(fields.pairs);
        let meta = event.metadata();
        let msg = fields.message.unwrap_or_default();
        let line = match self.format {
            LogFormat::Text => text_line(Timestamp::now(), self.pid, meta, &msg, &pairs),
            LogFormat::Json => json_line(Timestamp::now(), meta, &msg, &pairs),
        };
        self.sink.write_line(&line);
    }
}

/// `file.rs:42`, or the target when the event carries no location.
fn caller(meta: &Metadata<'_>) -> String {
    match (meta.file(), meta.line()) {
        (Some(file), Some(line)) => {
            format!("{}:{line}", file.rsplit('/').next().unwrap_or(file))
        }
        _ => meta.target().to_string(),
    }
}

/// klog's severity letter.
fn severity(level: &Level) -> char {
    match *level {
        Level::ERROR => 'E',
        Level::WARN => 'W',
        _ => 'I',
    }
}

/// One klog-style text line (header in UTC).
fn text_line(
    now: Timestamp,
    pid: u32,
    meta: &Metadata<'_>,
    msg: &str,
    pairs: &[(&'static str, Value)],
) -> String {
    let zoned = now.to_zoned(TimeZone::UTC);
    let mut line = format!(
        "{}{}.{:06} {pid:>7} {}] {msg:?}",
        severity(meta.level()),
        zoned.strftime("%m%d %H:%M:%S"),
        zoned.subsec_nanosecond() / 1_000,
        caller(meta),
    );
    for (key, value) in pairs {
        let _ = match value {
            Value::Str(s) => write!(line, " {key}={s:?}"),
            Value::I64(n) => write!(line, " {key}={n}"),
            Value::U64(n) => write!(line, " {key}={n}"),
            Value::F64(n) => write!(line, " {key}={n}"),
            Value::Bool(b) => write!(line, " {key}={b}"),
        };
    }
    line.push('\n');
    line
}

/// The `v` shown for a level: the lowest `--v` at which it is logged.
fn verbosity_of(level: &Level) -> u32 {
    match *level {
        Level::TRACE => 5,
        Level::DEBUG => 2,
        _ => 0,
    }
}

/// One JSON object line; keys in the order component-base writes them
/// (`ts`, `caller`, `msg`, `v`), then the fields in recording order.
fn json_line(
    now: Timestamp,
    meta: &Metadata<'_>,
    msg: &str,
    pairs: &[(&'static str, Value)],
) -> String {
    let level = match *meta.level() {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    };
    let ts = serde_json::Value::from(now.as_nanosecond() as f64 / 1e9);
    let mut line = format!(
        "{{\"ts\":{ts},\"caller\":{},\"level\":\"{level}\",\"msg\":{}",
        serde_json::Value::from(caller(meta)),
        serde_json::Value::from(msg),
    );
    if *meta.level() > Level::WARN {
        let _ = write!(line, ",\"v\":{}", verbosity_of(meta.level()));
    }
    for (key, value) in pairs {
        let v = match value {
            Value::Str(s) => serde_json::Value::from(s.as_str()),
            Value::I64(n) => (*n).into(),
            Value::U64(n) => (*n).into(),
            Value::F64(n) => serde_json::Number::from_f64(*n)
                .map_or_else(|| n.to_string().into(), serde_json::Value::Number),
            Value::Bool(b) => (*b).into(),
        };
        let _ = write!(line, ",{}:{v}", serde_json::Value::from(*key));
    }
    line.push_str("}\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn capture(format: LogFormat, verbosity: u32, vmodule: &str, f: impl FnOnce()) -> String {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let filter = VerbosityFilter {
            verbosity,
            vmodule: parse_vmodule(vmodule).unwrap(),
        };
        let subscriber = tracing_subscriber::registry()
            .with(LineLayer::new(format, Sink::Buffer(buf.clone())).with_filter(filter));
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn verbosity_maps_to_levels() {
        assert_eq!(level_for(0), LevelFilter::INFO);
        assert_eq!(level_for(1), LevelFilter::INFO);
        assert_eq!(level_for(2), LevelFilter::DEBUG);
        assert_eq!(level_for(4), LevelFilter::DEBUG);
        assert_eq!(level_for(5), LevelFilter::TRACE);
        assert_eq!(level_for(9), LevelFilter::TRACE);
    }

    #[test]
    fn text_lines_are_klog_shaped_with_structured_fields() {
        let out = capture(LogFormat::Text, 0, "", || {
            let span = tracing::info_span!("sync", content = "snapcontent-1");
            let _g = span.enter();
            tracing::info!(
                driver = "hostpath.csi.k8s.io",
                attempts = 3u64,
                "Created snapshot"
            );
            tracing::warn!(ready = false, "not \"ready\"");
            tracing::debug!("hidden at v=0");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].starts_with('I'), "{}", lines[0]);
        assert!(
            lines[0].ends_with(
                "] \"Created snapshot\" content=\"snapcontent-1\" driver=\"hostpath.csi.k8s.io\" attempts=3"
            ),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains(" logging.rs:"), "{}", lines[0]);
        assert!(lines[1].starts_with('W'));
        assert!(
            lines[1].ends_with("] \"not \\\"ready\\\"\" content=\"snapcontent-1\" ready=false"),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn json_lines_carry_ts_level_msg_and_fields() {
        let out = capture(LogFormat::Json, 2, "", || {
            tracing::debug!(handle = "h-1", size = 42i64, "Polled snapshot");
            tracing::error!(error = "boom", "Create failed");
        });
        let objs: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(objs.len(), 2, "{out}");
        assert!(objs[0]["ts"].as_f64().unwrap() > 1.6e9);
        assert_eq!(objs[0]["msg"], "Polled snapshot");
        assert_eq!(objs[0]["level"], "debug");
        assert_eq!(objs[0]["v"], 2);
        assert_eq!(objs[0]["handle"], "h-1");
        assert_eq!(objs[0]["size"], 42);
        assert_eq!(objs[1]["level"], "error");
        assert_eq!(objs[1]["error"], "boom");
        assert!(objs[1].get("v").is_none());
    }

    #[test]
    fn vmodule_raises_verbosity_for_matching_files_only() {
        let out = capture(LogFormat::Text, 0, "log*=5", || {
            tracing::trace!("trace from logging.rs");
        });
        assert_eq!(out.lines().count(), 1, "{out}");
        let out = capture(LogFormat::Text, 0, "other=5", || {
            tracing::trace!("trace from logging.rs");
        });
        assert_eq!(out, "");
    }

    #[test]
    fn vmodule_parsing() {
        assert_eq!(
            parse_vmodule("controller*=5,src/run=2,").unwrap(),
            vec![
                VModuleRule {
                    pattern: "controller*".into(),
                    verbosity: 5
                },
                VModuleRule {
                    pattern: "src/run".into(),
                    verbosity: 2
                },
            ]
        );
        assert!(parse_vmodule("").unwrap().is_empty());
        for bad in ["foo", "=3", "foo=x", "foo=-1"] {
            assert!(parse_vmodule(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn vmodule_globs() {
        assert!(vmodule_matches("content", "src/controller/content.rs"));
        assert!(vmodule_matches("con*", "src/controller/content.rs"));
        assert!(vmodule_matches("c?ntent", "src/controller/content.rs"));
        assert!(!vmodule_matches("controller", "src/controller/content.rs"));
        assert!(vmodule_matches(
            "*/controller/*",
            "src/controller/content.rs"
        ));
        assert!(!vmodule_matches("content", "src/controller/contents.rs"));
    }

    #[test]
    fn dependencies_are_quieter_than_own_code() {
        // (verbosity, target, level)
        let cases = [
            (0, "hyper::proto", LevelFilter::WARN),
            (0, "csi_snapshotter::run", LevelFilter::INFO),
            (6, "kube_client", LevelFilter::DEBUG),
            (6, "csi_mock_driver", LevelFilter::TRACE),
        ];
        for (verbosity, target, level) in cases {
            let filter = VerbosityFilter {
                verbosity,
                vmodule: Vec::new(),
            };
            assert_eq!(
                filter.max_level(target, None),
                level,
                "{target} at {verbosity}"
            );
        }
    }
}
