//! The `workqueue_*` families (spec E.2), read from the queues at scrape time.
//!
//! One collector serves every queue, so each family appears once with one
//! sample per queue (label `name`).

use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use crate::controller::queue::{HistogramSnapshot, QueueStats, WorkQueue};
use crate::metrics::{
    Collector, FamilySnapshot, MetricKind, Registry, SampleSnapshot, SampleValue,
};

type StatsFn = Box<dyn Fn() -> QueueStats + Send + Sync>;

/// Collector of the `workqueue_*` families for any number of queues.
#[derive(Default)]
pub struct WorkQueueMetrics {
    queues: Mutex<Vec<StatsFn>>,
}

impl std::fmt::Debug for WorkQueueMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkQueueMetrics").finish_non_exhaustive()
    }
}

impl WorkQueueMetrics {
    /// A collector registered in `registry`; add queues with [`Self::watch`].
    pub fn register(registry: &Registry) -> Arc<WorkQueueMetrics> {
        let me = Arc::new(WorkQueueMetrics::default());
        registry.register_collector(me.clone());
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
}

fn family(
    name: &str,
    help: &str,
    kind: MetricKind,
    samples: Vec<SampleSnapshot>,
) -> FamilySnapshot {
    FamilySnapshot {
        name: name.to_string(),
        // client-go registers these families as beta.
        help: format!("[BETA] {help}"),
        kind,
        samples,
    }
}

fn scalar(stats: &[QueueStats], f: impl Fn(&QueueStats) -> f64) -> Vec<SampleSnapshot> {
    stats
        .iter()
        .map(|s| SampleSnapshot {
            labels: vec![("name".into(), s.name.clone())],
            value: SampleValue::Scalar(f(s)),
        })
        .collect()
}

fn histogram(
    stats: &[QueueStats],
    f: impl Fn(&QueueStats) -> &HistogramSnapshot,
) -> Vec<SampleSnapshot> {
    stats
        .iter()
        .map(|s| {
            let h = f(s);
            SampleSnapshot {
                labels: vec![("name".into(), s.name.clone())],
                value: SampleValue::Histogram {
                    buckets: h
                        .bounds
                        .iter()
                        .copied()
                        .zip(h.cumulative.iter().copied())
                        .collect(),
                    sum: h.sum,
                    count: h.count,
                },
            }
        })
        .collect()
}

impl Collector for WorkQueueMetrics {
    fn collect(&self) -> Vec<FamilySnapshot> {
        let stats: Vec<QueueStats> = self
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|f| f())
            .collect();
        vec![
            family(
                "workqueue_depth",
                "Current depth of workqueue",
                MetricKind::Gauge,
                scalar(&stats, |s| s.depth as f64),
            ),
            family(
                "workqueue_adds_total",
                "Total number of adds handled by workqueue",
                MetricKind::Counter,
                scalar(&stats, |s| s.adds_total as f64),
            ),
            family(
                "workqueue_queue_duration_seconds",
                "How long in seconds an item stays in workqueue before being requested.",
                MetricKind::Histogram,
                histogram(&stats, |s| &s.queue_duration),
            ),
            family(
                "workqueue_work_duration_seconds",
                "How long in seconds processing an item from workqueue takes.",
                MetricKind::Histogram,
                histogram(&stats, |s| &s.work_duration),
            ),
            family(
                "workqueue_unfinished_work_seconds",
                "How many seconds of work has done that is in progress and hasn't been observed by work_duration. \
                 Large values indicate stuck threads. One can deduce the number of stuck threads by observing the \
                 rate at which this increases.",
                MetricKind::Gauge,
                scalar(&stats, |s| s.unfinished_work_seconds),
            ),
            family(
                "workqueue_longest_running_processor_seconds",
                "How many seconds has the longest running processor for workqueue been running.",
                MetricKind::Gauge,
                scalar(&stats, |s| s.longest_running_processor_seconds),
            ),
            family(
                "workqueue_retries_total",
                "Total number of retries handled by workqueue",
                MetricKind::Counter,
                scalar(&stats, |s| s.retries_total as f64),
            ),
        ]
    }
}
