//! A rate-limited work queue with the semantics of client-go's workqueue.
//!
//! - A key waiting in the queue is stored once, however often it is added.
//! - A key handed to a worker is never handed to a second worker until the
//!   first one is done with it.
//! - A key added while it is being processed is queued again when the worker
//!   is done, so the latest state is always processed once more.
//! - Every key has its own failure counter: the k-th consecutive
//!   [`WorkQueue::add_rate_limited`] waits `start × 2^k`, capped at `max`.
//!   [`WorkQueue::forget`] resets it; a plain [`WorkQueue::add`] does not.
//! - [`WorkQueue::shutdown`] makes every waiting and future
//!   [`WorkQueue::get`] return `None`; keys already handed out may finish.
//!
//! The queue keeps the numbers behind the `workqueue_*` metric families
//! (see [`QueueStats`]); the HTTP layer reads them at scrape time.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Notify;

/// Upper bounds of the `workqueue_queue_duration_seconds` and
/// `workqueue_work_duration_seconds` histograms: `1e-8 × 10^i`, i = 0…9,
/// the buckets client-go registers.
pub const DURATION_BUCKETS: [f64; 10] = [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0];

/// Per-key exponential backoff: `start × 2^k` for the k-th consecutive
/// failure, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay of the first retry (`--retry-interval-start`).
    pub start: Duration,
    /// Upper limit of the delay (`--retry-interval-max`).
    pub max: Duration,
}

impl Backoff {
    /// The delay after `failures` earlier consecutive failures.
    pub fn delay(&self, failures: u32) -> Duration {
        // 2^31 × any non-zero start already exceeds every sane max; clamping
        // the exponent keeps the multiplication from overflowing.
        let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
        self.start
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }
}

impl Default for Backoff {
    /// The sidecar's flag defaults: 1 s, capped at 5 min.
    fn default() -> Self {
        Backoff {
            start: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

/// A cumulative histogram with fixed upper bounds (Prometheus semantics).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds, ascending; `+Inf` is implied.
    pub bounds: Vec<f64>,
    /// Cumulative counts per bound (same length as `bounds`).
    pub cumulative: Vec<u64>,
    /// Number of observations (the `+Inf` bucket).
    pub count: u64,
    /// Sum of all observations.
    pub sum: f64,
}

#[derive(Debug, Clone)]
struct Histogram {
    counts: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: [0; DURATION_BUCKETS.len()],
            count: 0,
            sum: 0.0,
        }
    }

    fn observe(&mut self, d: Duration) {
        let v = d.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += v;
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0;
        let cumulative = self
            .counts
            .iter()
            .map(|c| {
                acc += c;
                acc
            })
            .collect();
        HistogramSnapshot {
            bounds: DURATION_BUCKETS.to_vec(),
            cumulative,
            count: self.count,
            sum: self.sum,
        }
    }
}

/// The numbers behind the `workqueue_*` families for one queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueStats {
    /// The queue's name (label `name`).
    pub name: String,
    /// `workqueue_depth`: keys waiting to be handed out.
    pub depth: u64,
    /// `workqueue_adds_total`: keys that entered the queue (duplicates of a
    /// waiting key are not counted).
    pub adds_total: u64,
    /// `workqueue_retries_total`: delayed and rate-limited adds.
    pub retries_total: u64,
    /// `workqueue_queue_duration_seconds`: time from add to hand-out.
    pub queue_duration: HistogramSnapshot,
    /// `workqueue_work_duration_seconds`: time from hand-out to done.
    pub work_duration: HistogramSnapshot,
    /// `workqueue_unfinished_work_seconds`: summed age of the keys being
    /// processed now.
    pub unfinished_work_seconds: f64,
    /// `workqueue_longest_running_processor_seconds`: age of the oldest key
    /// being processed now.
    pub longest_running_processor_seconds: f64,
}

struct State<K> {
    /// Keys ready to be handed out, in order.
    queue: VecDeque<K>,
    /// Keys that need processing: those in `queue` plus those added while
    /// being processed, with the time each was first added (for the
    /// queue-duration metric). One table, so a key is held twice at most
    /// (here and in `queue`), which is what 10,000 keys of an initial list
    /// cost at the peak.
    dirty: HashMap<K, Instant>,
    /// Keys handed out and not done yet, with the time they were handed out.
    processing: HashMap<K, Instant>,
    /// Delayed keys by due time; the sequence number keeps entries unique.
    delayed: BTreeMap<(Instant, u64), K>,
    /// The due-time entry of each delayed key, so a key waits only once.
    delayed_index: HashMap<K, (Instant, u64)>,
    next_seq: u64,
    /// Consecutive rate-limited adds per key.
    failures: HashMap<K, u32>,
    shutting_down: bool,
    adds_total: u64,
    retries_total: u64,
    queue_duration: Histogram,
    work_duration: Histogram,
}

struct Inner<K> {
    name: String,
    backoff: Backoff,
    state: Mutex<State<K>>,
    /// Wakes workers waiting in `get` (new key, earlier deadline, shutdown).
    wake: Notify,
    /// Wakes `wait_idle` callers when a key is done.
    idle: Notify,
}

/// An object name as a queue key. (A shared `Arc<str>`, one allocation
/// for the queue's order and its dirty table, measured about 1.5 MiB more
/// resident memory with 100,000 idle contents: the allocator keeps the
/// freed keys' chunks less well.)
pub type Key = String;

/// A cheap-to-clone handle to one work queue.
pub struct WorkQueue<K = Key> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        WorkQueue {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K> Debug for WorkQueue<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkQueue")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl<K> WorkQueue<K>
where
    K: Clone + Eq + Hash + Send + 'static,
{
    /// A new queue named `name` (the metrics label) with per-key `backoff`.
    pub fn new(name: impl Into<String>, backoff: Backoff) -> Self {
        WorkQueue {
            inner: Arc::new(Inner {
                name: name.into(),
                backoff,
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    dirty: HashMap::new(),
                    processing: HashMap::new(),
                    delayed: BTreeMap::new(),
                    delayed_index: HashMap::new(),
                    next_seq: 0,
                    failures: HashMap::new(),
                    shutting_down: false,
                    adds_total: 0,
                    retries_total: 0,
                    queue_duration: Histogram::new(),
                    work_duration: Histogram::new(),
                }),
                wake: Notify::new(),
                idle: Notify::new(),
            }),
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn lock(&self) -> MutexGuard<'_, State<K>> {
        // A panic while holding the lock leaves the state consistent (every
        // mutation is a single step), so a poisoned lock is still usable.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `key` now. A key already waiting is not added twice; a key being
    /// processed is queued again once it is done. Does not touch the key's
    /// backoff counter. Ignored after shutdown.
    pub fn add(&self, key: K) {
        let mut st = self.lock();
        let now = Instant::now();
        promote_due(&mut st, now);
        if insert(&mut st, key, now) {
            drop(st);
            self.inner.wake.notify_one();
        }
    }

    /// Adds `key` once `delay` has passed. A key already waiting for a later
    /// time is moved to the earlier one. Counted as a retry.
    pub fn add_after(&self, key: K, delay: Duration) {
        let mut st = self.lock();
        if st.shutting_down {
            return;
        }
        st.retries_total += 1;
        let now = Instant::now();
        if delay.is_zero() {
            promote_due(&mut st, now);
            if insert(&mut st, key, now) {
                drop(st);
                self.inner.wake.notify_one();
            }
            return;
        }
        let due = now + delay;
        if let Some(&(old_due, seq)) = st.delayed_index.get(&key) {
            if old_due <= due {
                return;
            }
            st.delayed.remove(&(old_due, seq));
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.delayed.insert((due, seq), key.clone());
        st.delayed_index.insert(key, (due, seq));
        let earliest = st
            .delayed
            .keys()
            .next()
            .is_some_and(|(d, s)| *d == due && *s == seq);
        drop(st);
        if earliest {
            // Idle workers sleep until the old earliest deadline (or forever):
            // all of them recompute.
            self.inner.wake.notify_waiters();
        }
    }

    /// Adds `key` after its backoff delay and counts one more failure.
    pub fn add_rate_limited(&self, key: K) {
        let delay = {
            let mut st = self.lock();
            if st.shutting_down {
                return;
            }
            let n = st.failures.entry(key.clone()).or_insert(0);
            let delay = self.inner.backoff.delay(*n);
            *n = n.saturating_add(1);
            delay
        };
        self.add_after(key, delay);
    }

    /// Resets the backoff counter of `key`.
    pub fn forget(&self, key: &K) {
        self.lock().failures.remove(key);
    }

    /// How many consecutive rate-limited adds `key` has had since the last
    /// [`forget`](Self::forget).
    pub fn num_requeues(&self, key: &K) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// Waits for the next key. `None` once the queue is shut down. The key
    /// stays claimed by the caller until the returned guard is dropped (or
    /// [`Claimed::done`] is called).
    pub async fn get(&self) -> Option<Claimed<K>> {
        loop {
            let notified = self.inner.wake.notified();
            tokio::pin!(notified);
            // Registered before looking at the state, so a wake-up sent
            // between the check and the wait is not lost.
            notified.as_mut().enable();
            let next_due = {
                let mut st = self.lock();
                if st.shutting_down {
                    return None;
                }
                let now = Instant::now();
                promote_due(&mut st, now);
                if let Some(key) = st.queue.pop_front() {
                    if let Some(t) = st.dirty.remove(&key) {
                        st.queue_duration.observe(now.saturating_duration_since(t));
                    }
                    st.processing.insert(key.clone(), now);
                    let more = !st.queue.is_empty();
                    drop(st);
                    if more {
                        // Pass the baton: several keys may have become due at once.
                        self.inner.wake.notify_one();
                    }
                    return Some(Claimed {
                        queue: self.clone(),
                        key: Some(key),
                    });
                }
                st.delayed.keys().next().map(|(d, _)| *d)
            };
            match next_due {
                Some(due) => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks `key` as no longer being processed; if it was added meanwhile,
    /// it is queued again.
    fn done(&self, key: K) {
        let mut st = self.lock();
        let now = Instant::now();
        if let Some(started) = st.processing.remove(&key) {
            st.work_duration
                .observe(now.saturating_duration_since(started));
        }
        let requeued = st.dirty.contains_key(&key) && !st.shutting_down;
        if requeued {
            st.queue.push_back(key);
        }
        let idle = st.processing.is_empty();
        if idle && st.queue.is_empty() {
            shrink_when_drained(&mut st);
        }
        drop(st);
        if requeued {
            self.inner.wake.notify_one();
        }
        if idle {
            self.inner.idle.notify_waiters();
        }
    }

    /// Stops the queue: waiting and future [`get`](Self::get) calls return
    /// `None`, adds are ignored, keys being processed may finish.
    pub fn shutdown(&self) {
        self.lock().shutting_down = true;
        self.inner.wake.notify_waiters();
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.lock().shutting_down
    }

    /// Resolves when no key is being processed.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().processing.is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Shuts the queue down and waits until the keys being processed are done.
    pub async fn shutdown_with_drain(&self) {
        self.shutdown();
        self.wait_idle().await;
    }

    /// Keys waiting to be handed out (delayed keys not counted).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether no key is waiting to be handed out.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys waiting for their delay to pass.
    pub fn delayed_len(&self) -> usize {
        self.lock().delayed.len()
    }

    /// The current metric values.
    pub fn stats(&self) -> QueueStats {
        let mut st = self.lock();
        let now = Instant::now();
        promote_due(&mut st, now);
        let mut unfinished = 0.0;
        let mut longest = 0.0f64;
        for started in st.processing.values() {
            let age = now.saturating_duration_since(*started).as_secs_f64();
            unfinished += age;
            longest = longest.max(age);
        }
        QueueStats {
            name: self.inner.name.clone(),
            depth: st.dirty.len() as u64,
            adds_total: st.adds_total,
            retries_total: st.retries_total,
            queue_duration: st.queue_duration.snapshot(),
            work_duration: st.work_duration.snapshot(),
            unfinished_work_seconds: unfinished,
            longest_running_processor_seconds: longest,
        }
    }
}

/// Marks `key` dirty and queues it unless it is waiting or being processed.
/// Returns whether a worker should be woken.
fn insert<K: Clone + Eq + Hash>(st: &mut State<K>, key: K, now: Instant) -> bool {
    if st.shutting_down || st.dirty.contains_key(&key) {
        return false;
    }
    st.adds_total += 1;
    st.dirty.insert(key.clone(), now);
    if st.processing.contains_key(&key) {
        return false;
    }
    st.queue.push_back(key);
    true
}

/// Capacity below which the drained queue's tables are left as they are.
const SHRINK_ABOVE: usize = 1024;

/// After a burst (the initial list of 10,000 objects) the tables keep their
/// peak capacity; give it back once nothing waits or runs.
fn shrink_when_drained<K: Eq + Hash>(st: &mut State<K>) {
    if st.queue.capacity() > SHRINK_ABOVE {
        st.queue.shrink_to_fit();
    }
    if st.dirty.capacity() > SHRINK_ABOVE {
        st.dirty.shrink_to_fit();
    }
    if st.processing.capacity() > SHRINK_ABOVE {
        st.processing.shrink_to_fit();
    }
}

/// Moves delayed keys whose time has come into the queue.
fn promote_due<K: Clone + Eq + Hash>(st: &mut State<K>, now: Instant) {
    while let Some(entry) = st.delayed.first_entry() {
        if entry.key().0 > now {
            break;
        }
        let key = entry.remove();
        st.delayed_index.remove(&key);
        insert(st, key, now);
    }
}

/// A key handed out by [`WorkQueue::get`]. While it lives, no other worker
/// gets the same key; dropping it marks the key done.
pub struct Claimed<K: Clone + Eq + Hash + Send + 'static> {
    queue: WorkQueue<K>,
    key: Option<K>,
}

impl<K: Clone + Eq + Hash + Send + 'static> Claimed<K> {
    /// The claimed key.
    pub fn key(&self) -> &K {
        // Only `Drop`/`done` take the key out, after which `self` is gone.
        self.key.as_ref().expect("claimed key present until done")
    }

    /// Marks the key done (same as dropping the guard).
    pub fn done(self) {}
}

impl<K: Clone + Eq + Hash + Send + 'static> Drop for Claimed<K> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.queue.done(key);
        }
    }
}

impl<K: Clone + Eq + Hash + Send + Debug + 'static> Debug for Claimed<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Claimed").field(&self.key).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff {
            start: Duration::from_secs(1),
            max: Duration::from_secs(300),
        };
        let delays: Vec<u64> = (0..11).map(|k| b.delay(k).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(300));
        let tiny = Backoff {
            start: Duration::from_millis(5),
            max: Duration::from_millis(12),
        };
        assert_eq!(tiny.delay(0), Duration::from_millis(5));
        assert_eq!(tiny.delay(1), Duration::from_millis(10));
        assert_eq!(tiny.delay(2), Duration::from_millis(12));
    }

    #[test]
    fn histogram_is_cumulative() {
        let mut h = Histogram::new();
        h.observe(Duration::from_nanos(5));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(100));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.cumulative[0], 1); // ≤ 1e-8
        assert_eq!(s.cumulative[5], 1); // ≤ 1e-3
        assert_eq!(s.cumulative[6], 2); // ≤ 1e-2
        assert_eq!(s.cumulative[9], 2); // ≤ 10, the 100 s sample only in +Inf
    }
}
