//! The `workqueue_*` families (spec E.2), read from the queues at scrape time.
//!
//! One collector serves every queue, so each family appears once with one
//! sample per queue (label `name`). The queues keep their own counts (see
//! [`QueueStats`]); this collector only turns them into the families
//! client-go registers, at beta stability.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, Metric, MetricFamily, MetricType};

use crate::controller::queue::{HistogramSnapshot, QueueStats, WorkQueue};
use crate::metrics::{Registry, Stability};

type StatsFn = Box<dyn Fn() -> QueueStats + Send + Sync>;

/// What one family shows of a queue's stats.
enum Value {
    Gauge(fn(&QueueStats) -> f64),
    Counter(fn(&QueueStats) -> f64),
    Histogram(fn(&QueueStats) -> &HistogramSnapshot),
}

/// The families: name, help without the `[BETA] ` prefix, value.
const FAMILIES: [(&str, &str, Value); 7] = [
    (
        "workqueue_depth",
        "Current depth of workqueue",
        Value::Gauge(|s| s.depth as f64),
    ),
    (
        "workqueue_adds_total",
        "Total number of adds handled by workqueue",
        Value::Counter(|s| s.adds_total as f64),
    ),
    (
        "workqueue_queue_duration_seconds",
        "How long in seconds an item stays in workqueue before being requested.",
        Value::Histogram(|s| &s.queue_duration),
    ),
    (
        "workqueue_work_duration_seconds",
        "How long in seconds processing an item from workqueue takes.",
        Value::Histogram(|s| &s.work_duration),
    ),
    (
        "workqueue_unfinished_work_seconds",
        "How many seconds of work has done that is in progress and hasn't been observed by work_duration. \
         Large values indicate stuck threads. One can deduce the number of stuck threads by observing the \
         rate at which this increases.",
        Value::Gauge(|s| s.unfinished_work_seconds),
    ),
    (
        "workqueue_longest_running_processor_seconds",
        "How many seconds has the longest running processor for workqueue been running.",
        Value::Gauge(|s| s.longest_running_processor_seconds),
    ),
    (
        "workqueue_retries_total",
        "Total number of retries handled by workqueue",
        Value::Counter(|s| s.retries_total as f64),
    ),
];

/// The one label of every family.
const LABEL: &str = "name";

/// Collector of the `workqueue_*` families for any number of queues.
pub struct WorkQueueMetrics {
    queues: Mutex<Vec<StatsFn>>,
    descs: Vec<Desc>,
}

impl std::fmt::Debug for WorkQueueMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkQueueMetrics").finish_non_exhaustive()
    }
}

impl Default for WorkQueueMetrics {
    fn default() -> Self {
        let descs = FAMILIES
            .iter()
            .filter_map(|(name, help, _)| {
                let help = Stability::Beta.help(help);
                Desc::new(name.to_string(), help, vec![LABEL.into()], HashMap::new()).ok()
            })
            .collect();
        WorkQueueMetrics {
            queues: Mutex::default(),
            descs,
        }
    }
}

impl WorkQueueMetrics {
    /// A collector registered in `registry`; add queues with [`Self::watch`].
    /// If the registry already serves these families (a second sidecar in
    /// one process), the first collector keeps serving them and this one
    /// counts unexposed.
    pub fn register(registry: &Registry) -> Arc<WorkQueueMetrics> {
        let me = Arc::new(WorkQueueMetrics::default());
        if let Err(e) = registry.register(Shared(me.clone())) {
            tracing::debug!(error = %e, "Work queue metrics already registered");
        }
        me
    }

    /// Reports `queue` from now on.
    pub fn watch<K>(&self, queue: &WorkQueue<K>)
    where
        K: Clone + Eq + Hash + Send + 'static,
    {
        let q = queue.clone();
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(move || q.stats()));
    }

    fn families(&self) -> Vec<MetricFamily> {
        let stats: Vec<QueueStats> = self
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|f| f())
            .collect();
        self.descs
            .iter()
            .zip(&FAMILIES)
            .map(|(desc, (_, _, value))| {
                let mut family = MetricFamily::default();
                family.set_name(desc.fq_name.clone());
                family.set_help(desc.help.clone());
                family.set_field_type(match value {
                    Value::Gauge(_) => MetricType::GAUGE,
                    Value::Counter(_) => MetricType::COUNTER,
                    Value::Histogram(_) => MetricType::HISTOGRAM,
                });
                family.set_metric(stats.iter().map(|s| metric(s, value)).collect());
                family
            })
            .collect()
    }
}

/// One queue's sample of one family.
fn metric(stats: &QueueStats, value: &Value) -> Metric {
    let mut label = LabelPair::default();
    label.set_name(LABEL.to_string());
    label.set_value(stats.name.clone());
    let mut m = Metric::from_label(vec![label]);
    match value {
        Value::Gauge(f) => {
            let mut g = proto::Gauge::default();
            g.set_value(f(stats));
            m.set_gauge(g);
        }
        Value::Counter(f) => {
            let mut c = proto::Counter::default();
            c.set_value(f(stats));
            m.set_counter(c);
        }
        Value::Histogram(f) => {
            let snapshot = f(stats);
            let mut h = proto::Histogram::default();
            h.set_sample_count(snapshot.count);
            h.set_sample_sum(snapshot.sum);
            let buckets = snapshot.bounds.iter().zip(&snapshot.cumulative);
            h.set_bucket(
                buckets
                    .map(|(le, n)| {
                        let mut b = proto::Bucket::default();
                        b.set_upper_bound(*le);
                        b.set_cumulative_count(*n);
                        b
                    })
                    .collect(),
            );
            m.set_histogram(h);
        }
    }
    m
}

/// The registered handle: the registry owns a box, callers keep the `Arc`.
struct Shared(Arc<WorkQueueMetrics>);

impl Collector for Shared {
    fn desc(&self) -> Vec<&Desc> {
        self.0.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.families()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_a_descriptor() {
        assert_eq!(WorkQueueMetrics::default().descs.len(), FAMILIES.len());
    }
}
