//! Fault injection and request accounting.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Normalizes a verb to the names used by the counters and faults
/// (`GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH`, `DELETE`); Kubernetes
/// verb names (`create`, `update`, …) are accepted too.
pub(crate) fn normalize_verb(verb: &str) -> String {
    match verb.to_ascii_lowercase().as_str() {
        "create" | "post" => "POST".into(),
        "update" | "put" => "PUT".into(),
        other => other.to_ascii_uppercase(),
    }
}

#[derive(Debug)]
struct FailRule {
    verb: String,
    resource: String,
    subresource: String,
    code: u16,
    remaining: u32,
}

#[derive(Debug)]
struct DelayRule {
    verb: String,
    resource: String,
    delay: Duration,
}

fn matches(pattern: &str, value: &str) -> bool {
    pattern == "*" || pattern == value
}

/// Faults to inject into the embedded API server's answers. Obtained from
/// [`super::ApiServer::faults`]; every method takes effect at once.
///
/// Patterns: a verb (`GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH`, `DELETE`, or a Kubernetes verb such as `create`), a resource plural, a
/// subresource (`""` = the main resource, `"status"`); `"*"` matches
/// anything.
#[derive(Debug)]
pub struct Faults {
    fails: Mutex<Vec<FailRule>>,
    delays: Mutex<Vec<DelayRule>>,
    gone: AtomicU32,
    close: watch::Sender<u64>,
    expire: watch::Sender<u64>,
    /// Resource patterns whose WATCH requests wait (see
    /// [`Faults::hold_watches`]).
    held: watch::Sender<Vec<String>>,
    /// WATCH requests waiting for a release.
    waiting: AtomicUsize,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            fails: Mutex::new(Vec::new()),
            delays: Mutex::new(Vec::new()),
            gone: AtomicU32::new(0),
            close: watch::channel(0).0,
            expire: watch::channel(0).0,
            held: watch::channel(Vec::new()).0,
            waiting: AtomicUsize::new(0),
        }
    }
}

impl Faults {
    /// Fails the next `n` requests matching (verb, resource, subresource)
    /// with `code` and a `Status` body whose reason matches the code.
    pub fn fail_next(&self, verb: &str, resource: &str, subresource: &str, code: u16, n: u32) {
        let mut f = self.fails.lock().unwrap_or_else(|e| e.into_inner());
        f.push(FailRule {
            verb: if verb == "*" {
                "*".into()
            } else {
                normalize_verb(verb)
            },
            resource: resource.into(),
            subresource: subresource.into(),
            code,
            remaining: n,
        });
    }

    /// Delays every response by `d` (`Duration::ZERO` removes the delay).
    pub fn delay(&self, d: Duration) {
        self.delay_matching("*", "*", d);
    }

    /// Delays responses to (verb, resource) by `d`; `Duration::ZERO`
    /// removes the rule.
    pub fn delay_matching(&self, verb: &str, resource: &str, d: Duration) {
        let verb = if verb == "*" {
            "*".into()
        } else {
            normalize_verb(verb)
        };
        let mut rules = self.delays.lock().unwrap_or_else(|e| e.into_inner());
        rules.retain(|r| !(r.verb == verb && r.resource == resource));
        if !d.is_zero() {
            rules.push(DelayRule {
                verb,
                resource: resource.into(),
                delay: d,
            });
        }
    }

    /// Ends every open watch stream (clients see the stream close cleanly,
    /// as when a real server restarts or times a watch out).
    pub fn close_watches(&self) {
        self.close.send_modify(|v| *v += 1);
    }

    /// Ends every open watch stream with one ERROR event carrying a 410
    /// Expired status, as a real server ends a watch whose history was
    /// compacted away; the clients must list again.
    pub fn expire_watches(&self) {
        self.expire.send_modify(|v| *v += 1);
    }

    /// Answers the next watch request with a single ERROR event carrying a
    /// 410 Expired status, the way a real server reports a too-old version.
    pub fn next_watch_gone(&self) {
        self.gone.fetch_add(1, Ordering::SeqCst);
    }

    /// Holds every new WATCH request of `resource` (a plural, or `*`):
    /// it is counted, then waits without an answer until
    /// [`Faults::release_watches`], as when a client is cut off from the
    /// server for a while. Open streams are not affected (end them with
    /// [`Faults::close_watches`] to cut a watcher off).
    pub fn hold_watches(&self, resource: &str) {
        self.held.send_modify(|h| {
            if !h.iter().any(|r| r == resource) {
                h.push(resource.to_string());
            }
        });
    }

    /// Lets the WATCH requests held by [`Faults::hold_watches`] for
    /// `resource` go on, and new ones through.
    pub fn release_watches(&self, resource: &str) {
        self.held.send_modify(|h| h.retain(|r| r != resource));
    }

    /// How many WATCH requests are waiting for a release now.
    pub fn held_watch_requests(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Waits while WATCH requests of `resource` are held.
    pub(crate) async fn wait_watch_release(&self, resource: &str) {
        let held = |h: &Vec<String>| h.iter().any(|r| matches(r, resource));
        let mut rx = self.held.subscribe();
        if !held(&rx.borrow()) {
            return;
        }
        let _waiting = Waiting::new(&self.waiting);
        // The sender lives as long as `self`, so this only ends on release
        // (or when the request is dropped with its connection).
        let _ = rx.wait_for(|h| !held(h)).await;
    }

    /// Removes all pending failures and delays.
    pub fn clear(&self) {
        self.fails.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.delays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.gone.store(0, Ordering::SeqCst);
        self.held.send_modify(Vec::clear);
    }

    /// The code to fail this request with, consuming one use of the rule.
    pub(crate) fn take_failure(
        &self,
        verb: &str,
        resource: &str,
        subresource: &str,
    ) -> Option<u16> {
        let mut f = self.fails.lock().unwrap_or_else(|e| e.into_inner());
        let i = f.iter().position(|r| {
            r.remaining > 0
                && matches(&r.verb, verb)
                && matches(&r.resource, resource)
                && matches(&r.subresource, subresource)
        })?;
        f[i].remaining -= 1;
        let code = f[i].code;
        if f[i].remaining == 0 {
            f.remove(i);
        }
        Some(code)
    }

    /// The delay for this request, if any.
    pub(crate) fn delay_for(&self, verb: &str, resource: &str) -> Option<Duration> {
        let rules = self.delays.lock().unwrap_or_else(|e| e.into_inner());
        rules
            .iter()
            .filter(|r| matches(&r.verb, verb) && matches(&r.resource, resource))
            .map(|r| r.delay)
            .max()
    }

    /// Whether this watch must be answered 410 (consumes the request).
    pub(crate) fn take_gone(&self) -> bool {
        self.gone
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// A receiver that changes whenever watches must end with 410.
    pub(crate) fn expire_signal(&self) -> watch::Receiver<u64> {
        self.expire.subscribe()
    }

    /// A receiver that changes whenever watches must close.
    pub(crate) fn close_signal(&self) -> watch::Receiver<u64> {
        self.close.subscribe()
    }
}

/// Counts one held WATCH request while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One request counter: requests served for (verb, resource, subresource).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct RequestCount {
    /// `GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH`, `DELETE`.
    pub verb: String,
    /// Resource plural (`discovery` for discovery documents).
    pub resource: String,
    /// Subresource (`status`), or empty for the resource itself.
    pub subresource: String,
    /// Requests served.
    pub count: u64,
}

/// Request counters by (verb, resource, subresource), and watches ended
/// with 410 Expired by resource.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: Mutex<HashMap<(String, String, String), u64>>,
    expired: Mutex<HashMap<String, u64>>,
}

impl Counters {
    /// Counts one watch of `resource` answered or ended with 410 Expired.
    pub fn expired(&self, resource: &str) {
        let mut m = self.expired.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(resource.to_string()).or_default() += 1;
    }

    /// Watches of `resource` (`*` for all) answered or ended with 410.
    pub fn expired_count(&self, resource: &str) -> u64 {
        let m = self.expired.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .filter(|(r, _)| matches(resource, r))
            .map(|(_, n)| *n)
            .sum()
    }

    /// Counts one request.
    pub fn hit(&self, verb: &str, resource: &str, subresource: &str) {
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((
            verb.to_string(),
            resource.to_string(),
            subresource.to_string(),
        ))
        .or_default() += 1;
    }

    /// Requests matching `verb` (or `*`) and `resource` (`plural` counts all
    /// its subresources too, `plural/status` only the subresource, `*` all).
    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        let verb = if verb == "*" {
            "*".to_string()
        } else {
            normalize_verb(verb)
        };
        let (res, sub) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (resource, None),
        };
        let m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .filter(|((v, r, s), _)| {
                matches(&verb, v) && matches(res, r) && sub.is_none_or(|want| want == s)
            })
            .map(|(_, n)| *n)
            .sum()
    }

    /// Every counter, sorted.
    pub fn all(&self) -> Vec<RequestCount> {
        let m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<RequestCount> = m
            .iter()
            .map(|((verb, resource, subresource), n)| RequestCount {
                verb: verb.clone(),
                resource: resource.clone(),
                subresource: subresource.clone(),
                count: *n,
            })
            .collect();
        v.sort();
        v
    }
}
