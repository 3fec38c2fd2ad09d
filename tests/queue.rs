//! Work queue semantics (spec B.8): dedup, per-key exclusivity, re-processing
//! of keys added while in flight, per-key exponential backoff, shutdown.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use csi_snapshotter::controller::queue::{Backoff, WorkQueue};
use tokio::time::timeout;

fn queue() -> WorkQueue<String> {
    WorkQueue::new(
        "test",
        Backoff {
            start: Duration::from_secs(1),
            max: Duration::from_secs(10),
        },
    )
}

/// Whether a key is handed out within `d` (virtual time under `start_paused`).
async fn next_within(q: &WorkQueue<String>, d: Duration) -> Option<String> {
    match timeout(d, q.get()).await {
        Ok(Some(c)) => {
            let k = c.key().clone();
            c.done();
            Some(k)
        }
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn waiting_keys_are_deduplicated() {
    let q = queue();
    q.add("a".into());
    q.add("a".into());
    q.add("b".into());
    q.add("a".into());
    assert_eq!(q.len(), 2);
    assert_eq!(next_within(&q, Duration::ZERO).await.as_deref(), Some("a"));
    assert_eq!(next_within(&q, Duration::ZERO).await.as_deref(), Some("b"));
    assert_eq!(next_within(&q, Duration::from_secs(60)).await, None);
    assert_eq!(q.stats().adds_total, 2);
}

#[tokio::test(start_paused = true)]
async fn a_key_in_flight_is_not_handed_out_again_until_done() {
    let q = queue();
    q.add("a".into());
    let first = q.get().await.expect("a");
    q.add("a".into());
    q.add("b".into());
    // Only b is available while a is in flight.
    assert_eq!(
        next_within(&q, Duration::from_secs(1)).await.as_deref(),
        Some("b")
    );
    assert_eq!(next_within(&q, Duration::from_secs(60)).await, None);
    drop(first);
    assert_eq!(next_within(&q, Duration::ZERO).await.as_deref(), Some("a"));
}

#[tokio::test(start_paused = true)]
async fn a_key_added_while_processing_is_processed_exactly_once_more() {
    let q = queue();
    q.add("a".into());
    let first = q.get().await.expect("a");
    q.add("a".into());
    q.add("a".into());
    q.add("a".into());
    first.done();
    assert_eq!(next_within(&q, Duration::ZERO).await.as_deref(), Some("a"));
    assert_eq!(next_within(&q, Duration::from_secs(60)).await, None);
}

#[tokio::test(start_paused = true)]
async fn a_key_not_added_while_processing_is_not_processed_again() {
    let q = queue();
    q.add("a".into());
    q.get().await.expect("a").done();
    assert_eq!(next_within(&q, Duration::from_secs(60)).await, None);
}

#[tokio::test(start_paused = true)]
async fn rate_limited_adds_back_off_exponentially_and_cap() {
    let q = queue();
    for expected in [1u64, 2, 4, 8, 10, 10] {
        q.add_rate_limited("a".into());
        let d = Duration::from_secs(expected);
        assert_eq!(
            next_within(&q, d - Duration::from_millis(1)).await,
            None,
            "too early at k for {expected}s"
        );
        assert_eq!(
            next_within(&q, Duration::from_millis(2)).await.as_deref(),
            Some("a")
        );
    }
    assert_eq!(q.num_requeues(&"a".to_string()), 6);
    assert_eq!(q.stats().retries_total, 6);
}

#[tokio::test(start_paused = true)]
async fn forget_resets_the_backoff_of_one_key_only() {
    let q = queue();
    for _ in 0..3 {
        q.add_rate_limited("a".into());
        q.add_rate_limited("b".into());
        next_within(&q, Duration::from_secs(20))
            .await
            .expect("first");
        next_within(&q, Duration::from_secs(20))
            .await
            .expect("second");
    }
    q.forget(&"a".to_string());
    assert_eq!(q.num_requeues(&"a".to_string()), 0);
    assert_eq!(q.num_requeues(&"b".to_string()), 3);
    q.add_rate_limited("a".into());
    q.add_rate_limited("b".into());
    // a is back to the start delay (1 s); b waits 8 s.
    assert_eq!(
        next_within(&q, Duration::from_millis(1001))
            .await
            .as_deref(),
        Some("a")
    );
    assert_eq!(next_within(&q, Duration::from_secs(6)).await, None);
    assert_eq!(
        next_within(&q, Duration::from_millis(1001))
            .await
            .as_deref(),
        Some("b")
    );
}

#[tokio::test(start_paused = true)]
async fn plain_add_is_immediate_and_keeps_the_counter() {
    let q = queue();
    q.add_rate_limited("a".into());
    q.add_rate_limited("a".into());
    q.add("a".into());
    assert_eq!(next_within(&q, Duration::ZERO).await.as_deref(), Some("a"));
    assert_eq!(q.num_requeues(&"a".to_string()), 2);
    // The delayed copy still arrives: the informer add did not cancel it.
    assert_eq!(
        next_within(&q, Duration::from_millis(1001))
            .await
            .as_deref(),
        Some("a")
    );
}

#[tokio::test(start_paused = true)]
async fn add_after_waits_and_an_earlier_time_wins() {
    let q = queue();
    q.add_after("a".into(), Duration::from_secs(30));
    q.add_after("a".into(), Duration::from_secs(5));
    q.add_after("a".into(), Duration::from_secs(20));
    assert_eq!(q.delayed_len(), 1);
    assert_eq!(next_within(&q, Duration::from_millis(4999)).await, None);
    assert_eq!(
        next_within(&q, Duration::from_millis(2)).await.as_deref(),
        Some("a")
    );
    assert_eq!(next_within(&q, Duration::from_secs(60)).await, None);
}

#[tokio::test(start_paused = true)]
async fn a_sleeping_worker_wakes_for_a_new_earlier_delay() {
    let q = queue();
    q.add_after("late".into(), Duration::from_secs(100));
    let worker = {
        let q = q.clone();
        tokio::spawn(async move { q.get().await.map(|c| c.key().clone()) })
    };
    tokio::task::yield_now().await;
    q.add_after("soon".into(), Duration::from_secs(1));
    let got = timeout(Duration::from_secs(2), worker)
        .await
        .expect("woken")
        .expect("join");
    assert_eq!(got.as_deref(), Some("soon"));
}

#[tokio::test(start_paused = true)]
async fn shutdown_wakes_workers_and_lets_in_flight_items_finish() {
    let q = queue();
    q.add("busy".into());
    let claimed = q.get().await.expect("busy");
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move { q.get().await.is_none() })
        })
        .collect();
    tokio::task::yield_now().await;
    q.add("queued".into());
    let drained = {
        let q = q.clone();
        tokio::spawn(async move { q.shutdown_with_drain().await })
    };
    // One waiter may have taken "queued" before the shutdown; the rest see None.
    let mut nones = 0;
    for w in waiters {
        if timeout(Duration::from_secs(1), w)
            .await
            .expect("woken")
            .expect("join")
        {
            nones += 1;
        }
    }
    assert!(nones >= 2);
    assert!(
        !drained.is_finished(),
        "drain must wait for the in-flight key"
    );
    q.add("after".into());
    assert!(q.get().await.is_none(), "no work after shutdown");
    drop(claimed);
    timeout(Duration::from_secs(1), drained)
        .await
        .expect("drained")
        .expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_workers_never_process_one_key_concurrently() {
    const KEYS: usize = 16;
    const WORKERS: usize = 24;
    const ROUNDS: usize = 200;
    let q: WorkQueue<usize> = WorkQueue::new("concurrency", Backoff::default());
    let in_flight = Arc::new(Mutex::new(HashSet::new()));
    let violations = Arc::new(AtomicUsize::new(0));
    let processed = Arc::new(AtomicUsize::new(0));
    // Per key: the round of the last add, and the highest round seen as
    // processed after that add.
    let last_add = Arc::new(Mutex::new(vec![0usize; KEYS]));
    let seen_after = Arc::new(Mutex::new(vec![0usize; KEYS]));

    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (q, in_flight, violations, processed) = (
                q.clone(),
                in_flight.clone(),
                violations.clone(),
                processed.clone(),
            );
            let (last_add, seen_after) = (last_add.clone(), seen_after.clone());
            tokio::spawn(async move {
                while let Some(c) = q.get().await {
                    let k = *c.key();
                    if !in_flight.lock().unwrap().insert(k) {
                        violations.fetch_add(1, Ordering::SeqCst);
                    }
                    let round = last_add.lock().unwrap()[k];
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_micros(50)).await;
                    seen_after.lock().unwrap()[k] = round;
                    in_flight.lock().unwrap().remove(&k);
                    processed.fetch_add(1, Ordering::SeqCst);
                    c.done();
                }
            })
        })
        .collect();

    let producers: Vec<_> = (0..4)
        .map(|p| {
            let (q, last_add) = (q.clone(), last_add.clone());
            tokio::spawn(async move {
                for round in 1..=ROUNDS {
                    for k in (p..KEYS).step_by(4) {
                        last_add.lock().unwrap()[k] = round;
                        q.add(k);
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for p in producers {
        p.await.unwrap();
    }
    // Every key's final add must be followed by a processing that saw it.
    timeout(Duration::from_secs(30), async {
        loop {
            if *seen_after.lock().unwrap() == vec![ROUNDS; KEYS] && q.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("all keys processed after their last add");
    q.shutdown_with_drain().await;
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        violations.load(Ordering::SeqCst),
        0,
        "a key was processed by two workers at once"
    );
    assert!(processed.load(Ordering::SeqCst) >= KEYS);
    assert!(processed.load(Ordering::SeqCst) <= KEYS * ROUNDS);
}

#[tokio::test(start_paused = true)]
async fn stats_track_depth_adds_retries_and_durations() {
    let q = queue();
    q.add("a".into());
    q.add("b".into());
    q.add_after("c".into(), Duration::from_secs(1));
    let s = q.stats();
    assert_eq!(
        (s.name.as_str(), s.depth, s.adds_total, s.retries_total),
        ("test", 2, 2, 1)
    );

    tokio::time::advance(Duration::from_millis(20)).await;
    let a = q.get().await.expect("a");
    tokio::time::advance(Duration::from_secs(3)).await;
    let s = q.stats();
    // b waiting, c promoted after its delay.
    assert_eq!(s.depth, 2);
    assert_eq!(s.adds_total, 3);
    assert_eq!(s.queue_duration.count, 1);
    // a waited 20 ms: inside the 0.1 bucket, not the 0.01 one.
    assert_eq!(s.queue_duration.cumulative[6], 0);
    assert_eq!(s.queue_duration.cumulative[7], 1);
    assert!((s.longest_running_processor_seconds - 3.0).abs() < 1e-6);
    assert!((s.unfinished_work_seconds - 3.0).abs() < 1e-6);
    a.done();
    let s = q.stats();
    assert_eq!(s.work_duration.count, 1);
    assert_eq!(s.work_duration.cumulative[8], 0);
    assert_eq!(s.work_duration.cumulative[9], 1);
    assert_eq!(s.unfinished_work_seconds, 0.0);
}

#[tokio::test(start_paused = true)]
async fn workqueue_families_are_exposed_per_queue_name() {
    use csi_snapshotter::controller::queue_metrics::WorkQueueMetrics;
    use csi_snapshotter::metrics::Registry;
    let registry = Registry::new();
    let collector = WorkQueueMetrics::register(&registry);
    let content: WorkQueue<String> = WorkQueue::new("csi-snapshotter-content", Backoff::default());
    let group: WorkQueue<String> =
        WorkQueue::new("csi-snapshotter-groupsnapshotcontent", Backoff::default());
    collector.watch(&content);
    collector.watch(&group);
    content.add("a".into());
    content.add("b".into());
    group.add_rate_limited("g".into());
    let text = registry.encode_text();
    for family in [
        "workqueue_depth",
        "workqueue_adds_total",
        "workqueue_queue_duration_seconds",
        "workqueue_work_duration_seconds",
        "workqueue_unfinished_work_seconds",
        "workqueue_longest_running_processor_seconds",
        "workqueue_retries_total",
    ] {
        assert_eq!(
            text.matches(&format!("# TYPE {family} ")).count(),
            1,
            "{family} once in\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP {family} [BETA] ")),
            "{family} beta help"
        );
    }
    assert!(
        text.contains("workqueue_depth{name=\"csi-snapshotter-content\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("workqueue_adds_total{name=\"csi-snapshotter-content\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("workqueue_retries_total{name=\"csi-snapshotter-groupsnapshotcontent\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("workqueue_work_duration_seconds_bucket{name=\"csi-snapshotter-content\",le=\"1e-08\"} 0\n"),
        "{text}"
    );
}
