//! Leader election on a `coordination.k8s.io/v1` Lease (spec B.7), with
//! client-go's algorithm and timing:
//!
//! - **Acquire:** every retry period (plus up to 1.2× jitter) try to take the
//!   Lease. A Lease held by someone else counts as held until lease duration
//!   has passed since this replica last saw its record *change* (local
//!   clock; the other replica's timestamps are never compared to ours).
//! - **Renew:** as leader, renew every retry period. A renewal round keeps
//!   trying every retry period; if no attempt succeeds within the renew
//!   deadline, leadership is lost.
//! - A renewal first tries an optimistic update of the last seen Lease; when
//!   that fails it reads the Lease again (the "slow path", counted in
//!   `leader_election_slowpath_total`).
//! - Leader changes are recorded as `Normal` `LeaderElection` events on the
//!   Lease ("<identity> became leader", "<identity> stopped leading").
//! - **Release:** on a graceful exit the holder is cleared and the duration
//!   set to 1 s, so another replica can take over at once.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use prometheus::{CounterVec, GaugeVec};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::k8s::event::{EventRecorder, object_ref};
use crate::metrics::{MetricsError, Registry, Stability};

/// Prefix of the Lease name; the driver name follows.
pub const LEASE_NAME_PREFIX: &str = "external-snapshotter-leader-";
/// Event reason of leader changes.
pub const EVENT_REASON: &str = "LeaderElection";
/// How long past the lease duration a leader may go without renewing before
/// `/healthz/leader-election` reports it unhealthy (client-go's adaptor).
pub const HEALTH_TOLERANCE: Duration = Duration::from_secs(20);
/// Where the in-cluster service account's namespace is mounted.
const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
/// Jitter factor of the acquire loop (client-go's `JitterFactor`).
const ACQUIRE_JITTER: f64 = 1.2;

/// Replaces every character outside `[A-Za-z0-9-]` with `-` and appends
/// `X` when the result ends with `-`.
pub fn sanitize_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.ends_with('-') {
        out.push('X');
    }
    out
}

/// The Lease name for `driver`: `external-snapshotter-leader-<driver>`
/// with `/` and every other character outside `[A-Za-z0-9-]` as `-`.
pub fn lease_name(driver: &str) -> String {
    sanitize_name(&format!("{LEASE_NAME_PREFIX}{}", driver.replace('/', "-")))
}

/// The Lease namespace: the flag, else `$POD_NAMESPACE`, else the
/// service-account namespace file, else `default`.
pub fn resolve_namespace(flag: &str) -> String {
    resolve_namespace_from(
        flag,
        std::env::var("POD_NAMESPACE").ok(),
        Path::new(SERVICE_ACCOUNT_NAMESPACE_FILE),
    )
}

fn resolve_namespace_from(flag: &str, env: Option<String>, sa_file: &Path) -> String {
    if !flag.is_empty() {
        return flag.to_string();
    }
    if let Some(ns) = env.filter(|s| !s.is_empty()) {
        return ns;
    }
    if let Ok(ns) = std::fs::read_to_string(sa_file) {
        let ns = ns.trim();
        if !ns.is_empty() {
            return ns.to_string();
        }
    }
    "default".to_string()
}

/// This replica's identity: the sanitised host name.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string());
    sanitize_name(&host)
}

/// Invalid election timing (upstream panics on these).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaderConfigError {
    /// The timing does not satisfy lease > renew > 1.2 × retry > 0.
    #[error(
        "leader election timing must satisfy lease duration ({lease:?}) > renew deadline ({renew:?}) > 1.2 × retry period ({retry:?}) > 0"
    )]
    Timing {
        /// Lease duration.
        lease: Duration,
        /// Renew deadline.
        renew: Duration,
        /// Retry period.
        retry: Duration,
    },
    /// Empty Lease name or identity.
    #[error("leader election needs a lease name and an identity")]
    Empty,
}

/// What to elect on and how.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderConfig {
    /// Lease name (see [`lease_name`]).
    pub lease_name: String,
    /// Lease namespace (see [`resolve_namespace`]).
    pub namespace: String,
    /// This replica's identity (see [`default_identity`]).
    pub identity: String,
    /// `--leader-election-lease-duration`.
    pub lease_duration: Duration,
    /// `--leader-election-renew-deadline`.
    pub renew_deadline: Duration,
    /// `--leader-election-retry-period`.
    pub retry_period: Duration,
    /// `--leader-election-labels`, written onto the Lease by the leader.
    pub labels: BTreeMap<String, String>,
}

impl LeaderConfig {
    /// A configuration with the flag defaults (15 s / 10 s / 5 s).
    pub fn new(
        lease_name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        LeaderConfig {
            lease_name: lease_name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(5),
            labels: BTreeMap::new(),
        }
    }

    /// Checks lease > renew > 1.2 × retry > 0 and non-empty names.
    pub fn validate(&self) -> Result<(), LeaderConfigError> {
        if self.lease_name.is_empty() || self.identity.is_empty() {
            return Err(LeaderConfigError::Empty);
        }
        let ok = self.lease_duration > self.renew_deadline
            && self.renew_deadline.as_secs_f64() > ACQUIRE_JITTER * self.retry_period.as_secs_f64()
            && !self.retry_period.is_zero();
        if ok {
            Ok(())
        } else {
            Err(LeaderConfigError::Timing {
                lease: self.lease_duration,
                renew: self.renew_deadline,
                retry: self.retry_period,
            })
        }
    }
}

/// The `leader_election_*` families (spec E.2; label `name` is empty as
/// upstream's election is unnamed).
#[derive(Clone)]
pub struct LeaderMetrics {
    master: GaugeVec,
    slowpath: CounterVec,
}

impl std::fmt::Debug for LeaderMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderMetrics").finish_non_exhaustive()
    }
}

impl LeaderMetrics {
    /// Registers both families in `registry`.
    pub fn register(registry: &Registry) -> Result<LeaderMetrics, MetricsError> {
        let master = registry.gauge_vec(
            Stability::Alpha.opts(
                "leader_election_master_status",
                "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates \
                 master. 'name' is the string used to identify the lease. Please make sure to group by name.",
            ),
            &["name"],
        )?;
        let slowpath = registry.counter_vec(
            Stability::Alpha.opts(
                "leader_election_slowpath_total",
                "Total number of slow path exercised in renewing leader leases. 'name' is the string used to \
                 identify the lease. Please make sure to group by name.",
            ),
            &["name"],
        )?;
        let m = LeaderMetrics { master, slowpath };
        m.set_leader(false);
        m.slowpath.with_label_values(&[""]);
        Ok(m)
    }

    fn set_leader(&self, leader: bool) {
        self.master
            .with_label_values(&[""])
            .set(if leader { 1.0 } else { 0.0 });
    }

    fn slowpath(&self) {
        self.slowpath.with_label_values(&[""]).inc();
    }
}

#[derive(Debug, Default)]
struct Observed {
    /// The Lease as last read or written (carries the resourceVersion).
    lease: Option<Lease>,
    /// When the record was last seen to change (or was written by us).
    time: Option<Instant>,
}

impl Observed {
    fn spec(&self) -> Option<&LeaseSpec> {
        self.lease.as_ref().and_then(|l| l.spec.as_ref())
    }

    fn holder(&self) -> Option<&str> {
        self.spec()
            .and_then(|s| s.holder_identity.as_deref())
            .filter(|h| !h.is_empty())
    }
}

/// Shared view of the election for the health check.
#[derive(Clone, Debug)]
pub struct LeaderHealth {
    inner: Arc<Mutex<Observed>>,
    identity: String,
    lease_name: String,
    lease_duration: Duration,
}

impl LeaderHealth {
    /// Whether this replica holds the Lease as last observed.
    pub fn is_leader(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .holder()
            == Some(self.identity.as_str())
    }

    /// `Err(reason)` when this replica is the leader and has not renewed for
    /// more than lease duration + 20 s; `Ok` otherwise.
    pub fn check(&self) -> Result<(), String> {
        let obs = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if obs.holder() != Some(self.identity.as_str()) {
            return Ok(());
        }
        match obs.time {
            Some(t) if Instant::now() > t + self.lease_duration + HEALTH_TOLERANCE => Err(format!(
                "failed election to renew leadership on lease {}",
                self.lease_name
            )),
            _ => Ok(()),
        }
    }
}

/// How holding the lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    /// The lease could not be renewed within the renew deadline.
    Lost,
    /// Cancelled by shutdown while still leading.
    Cancelled,
}

/// Runs the election for one replica.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaderConfig,
    observed: Arc<Mutex<Observed>>,
    recorder: Option<EventRecorder>,
    metrics: Option<LeaderMetrics>,
}

impl LeaderElector {
    /// An elector using `client` (give it its own rate-limit bucket, as
    /// upstream uses a separate clientset). Events go through `recorder`
    /// when given (component `<lease name>/<identity>`).
    pub fn new(
        client: Client,
        cfg: LeaderConfig,
        recorder: Option<EventRecorder>,
        metrics: Option<LeaderMetrics>,
    ) -> Result<LeaderElector, LeaderConfigError> {
        cfg.validate()?;
        Ok(LeaderElector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: Arc::default(),
            recorder,
            metrics,
        })
    }

    /// The health view for `/healthz/leader-election`.
    pub fn health(&self) -> LeaderHealth {
        LeaderHealth {
            inner: self.observed.clone(),
            identity: self.cfg.identity.clone(),
            lease_name: self.cfg.lease_name.clone(),
            lease_duration: self.cfg.lease_duration,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LeaderConfig {
        &self.cfg
    }

    fn observed(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.observed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this replica holds the Lease as last observed.
    pub fn is_leader(&self) -> bool {
        self.observed().holder() == Some(self.cfg.identity.as_str())
    }

    /// Tries until this replica holds the Lease. Returns `false` when
    /// cancelled first.
    pub async fn acquire(&self, cancel: &CancellationToken) -> bool {
        tracing::info!(lease = %format!("{}/{}", self.cfg.namespace, self.cfg.lease_name), identity = self.cfg.identity, "Attempting to acquire leader lease");
        loop {
            if cancel.is_cancelled() {
                return false;
            }
            let deadline = Instant::now() + self.cfg.renew_deadline;
            if self.try_acquire_or_renew(deadline).await {
                tracing::info!(
                    lease = self.cfg.lease_name,
                    identity = self.cfg.identity,
                    "Successfully acquired lease"
                );
                self.event("became leader");
                if let Some(m) = &self.metrics {
                    m.set_leader(true);
                }
                return true;
            }
            let wait = jittered(self.cfg.retry_period, ACQUIRE_JITTER);
            tokio::select! {
                () = cancel.cancelled() => return false,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Renews the Lease until a renewal round fails (→ [`Leadership::Lost`])
    /// or `cancel` fires (→ [`Leadership::Cancelled`]).
    pub async fn hold(&self, cancel: &CancellationToken) -> Leadership {
        let outcome = loop {
            let round_deadline = Instant::now() + self.cfg.renew_deadline;
            let renewed = loop {
                if self.try_acquire_or_renew(round_deadline).await {
                    break true;
                }
                let next = Instant::now() + self.cfg.retry_period;
                if next >= round_deadline {
                    break false;
                }
                tokio::select! {
                    () = cancel.cancelled() => break true,
                    () = tokio::time::sleep_until(next) => {}
                }
            };
            if cancel.is_cancelled() {
                break Leadership::Cancelled;
            }
            if !renewed {
                tracing::error!(
                    lease = self.cfg.lease_name,
                    "Failed to renew lease: timed out"
                );
                break Leadership::Lost;
            }
            tokio::select! {
                () = cancel.cancelled() => break Leadership::Cancelled,
                () = tokio::time::sleep(self.cfg.retry_period) => {}
            }
        };
        if outcome == Leadership::Lost {
            if let Some(m) = &self.metrics {
                m.set_leader(false);
            }
            self.event("stopped leading");
            tracing::info!(
                lease = self.cfg.lease_name,
                identity = self.cfg.identity,
                "Stopped leading"
            );
        }
        outcome
    }

    /// Holds the Lease while `work` runs (call after [`acquire`](Self::acquire)).
    ///
    /// `work` gets a token that fires on `shutdown` (or when the Lease is
    /// lost). After a shutdown the Lease keeps being renewed until `work`
    /// returns, so no other replica starts while this one finishes the calls
    /// and writes in flight; then renewing stops and
    /// [`Leadership::Cancelled`] is returned. If a renewal round fails,
    /// [`Leadership::Lost`] is returned at once (the work token fires and
    /// `work` is not awaited: another replica may take over soon).
    pub async fn lead_while<F, Fut>(&self, shutdown: &CancellationToken, work: F) -> Leadership
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        let work_stop = shutdown.child_token();
        let hold_stop = CancellationToken::new();
        let working = work(work_stop.clone());
        let holding = self.hold(&hold_stop);
        tokio::pin!(working, holding);
        tokio::select! {
            outcome = &mut holding => {
                work_stop.cancel();
                outcome
            }
            () = &mut working => {
                hold_stop.cancel();
                holding.await
            }
        }
    }

    /// Gives the Lease up if this replica holds it: clears the holder and
    /// sets a 1 s duration.
    pub async fn release(&self) -> bool {
        let lease = {
            let obs = self.observed();
            if obs.holder() != Some(self.cfg.identity.as_str()) {
                return true;
            }
            obs.lease.clone()
        };
        let Some(mut lease) = lease else { return true };
        let now = MicroTime(jiff::Timestamp::now());
        let transitions = lease.spec.as_ref().and_then(|s| s.lease_transitions);
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: transitions,
            ..LeaseSpec::default()
        });
        let deadline = self.cfg.renew_deadline;
        match tokio::time::timeout(
            deadline,
            self.api
                .replace(&self.cfg.lease_name, &PostParams::default(), &lease),
        )
        .await
        {
            Ok(Ok(updated)) => {
                let mut obs = self.observed();
                obs.lease = Some(updated);
                obs.time = Some(Instant::now());
                drop(obs);
                if let Some(m) = &self.metrics {
                    m.set_leader(false);
                }
                tracing::info!(lease = self.cfg.lease_name, "Released leader lease");
                true
            }
            Ok(Err(e)) => {
                tracing::error!(lease = self.cfg.lease_name, error = %e, "Failed to release lease");
                false
            }
            Err(_) => {
                tracing::error!(
                    lease = self.cfg.lease_name,
                    "Failed to release lease: timed out"
                );
                false
            }
        }
    }

    fn event(&self, what: &str) {
        let Some(rec) = &self.recorder else { return };
        let lease = self.observed().lease.clone();
        let obj = match lease {
            Some(l) => object_ref(&l),
            None => object_ref(&Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.lease_name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: None,
            }),
        };
        rec.normal(&obj, EVENT_REASON, &format!("{} {what}", self.cfg.identity));
    }

    /// The record this replica writes now.
    fn record(&self, now: jiff::Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }
    }

    fn with_labels(&self, mut lease: Lease) -> Lease {
        if !self.cfg.labels.is_empty() {
            let labels = lease.metadata.labels.get_or_insert_with(BTreeMap::new);
            labels.extend(self.cfg.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        lease
    }

    /// One attempt (client-go `tryAcquireOrRenew`); every request is cut off
    /// at `deadline`.
    async fn try_acquire_or_renew(&self, deadline: Instant) -> bool {
        let now = jiff::Timestamp::now();
        let mut record = self.record(now);

        // Fast path: the leader updates the Lease it saw last, without a read.
        let fast = {
            let obs = self.observed();
            let valid = obs
                .time
                .is_some_and(|t| t + self.cfg.lease_duration > Instant::now());
            if obs.holder() == Some(self.cfg.identity.as_str()) && valid {
                obs.lease.clone()
            } else {
                None
            }
        };
        if let Some(mut lease) = fast {
            if let Some(old) = lease.spec.as_ref() {
                record.acquire_time = old.acquire_time.clone();
                record.lease_transitions = old.lease_transitions;
            }
            lease.spec = Some(record.clone());
            let lease = self.with_labels(lease);
            match with_deadline(
                deadline,
                self.api
                    .replace(&self.cfg.lease_name, &PostParams::default(), &lease),
            )
            .await
            {
                Ok(updated) => {
                    self.store(updated);
                    return true;
                }
                Err(e) => {
                    tracing::warn!(lease = self.cfg.lease_name, error = %e, "Failed to update lease optimistically, falling back to slow path");
                    if let Some(m) = &self.metrics {
                        m.slowpath();
                    }
                }
            }
        }

        // Slow path: read (or create) the Lease.
        let current = match with_deadline(deadline, self.api.get_opt(&self.cfg.lease_name)).await {
            Ok(Some(l)) => l,
            Ok(None) => {
                let lease = self.with_labels(Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.lease_name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(record),
                });
                return match with_deadline(
                    deadline,
                    self.api.create(&PostParams::default(), &lease),
                )
                .await
                {
                    Ok(created) => {
                        self.store(created);
                        true
                    }
                    Err(e) => {
                        tracing::debug!(lease = self.cfg.lease_name, error = %e, "Failed to create lease");
                        false
                    }
                };
            }
            Err(e) => {
                tracing::warn!(lease = self.cfg.lease_name, error = %e, "Error retrieving lease");
                return false;
            }
        };

        let i_lead = {
            let mut obs = self.observed();
            let changed = obs.spec() != current.spec.as_ref();
            if changed || obs.time.is_none() {
                obs.time = Some(Instant::now());
            }
            obs.lease = Some(current.clone());
            let holder = obs.holder().map(str::to_string);
            let still_valid = obs
                .time
                .is_some_and(|t| t + self.observed_duration(&current) > Instant::now());
            let i_lead = holder.as_deref() == Some(self.cfg.identity.as_str());
            if holder.is_some() && still_valid && !i_lead {
                tracing::trace!(
                    lease = self.cfg.lease_name,
                    holder,
                    "Lease is held by another replica and has not expired"
                );
                return false;
            }
            i_lead
        };

        let old = current.spec.clone().unwrap_or_default();
        if i_lead {
            record.acquire_time = old.acquire_time;
            record.lease_transitions = old.lease_transitions;
        } else {
            record.lease_transitions = Some(old.lease_transitions.unwrap_or(0) + 1);
        }
        let mut lease = current;
        lease.spec = Some(record);
        let lease = self.with_labels(lease);
        match with_deadline(
            deadline,
            self.api
                .replace(&self.cfg.lease_name, &PostParams::default(), &lease),
        )
        .await
        {
            Ok(updated) => {
                self.store(updated);
                true
            }
            Err(e) => {
                tracing::debug!(lease = self.cfg.lease_name, error = %e, "Failed to update lease");
                false
            }
        }
    }

    /// The duration the observed holder claims (ours when absent).
    fn observed_duration(&self, lease: &Lease) -> Duration {
        lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.cfg.lease_duration, Duration::from_secs)
    }

    fn store(&self, lease: Lease) {
        let mut obs = self.observed();
        obs.lease = Some(lease);
        obs.time = Some(Instant::now());
    }
}

/// Errors of one election request.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("request timed out at the renew deadline")]
    Deadline,
}

async fn with_deadline<T>(
    deadline: Instant,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, RequestError> {
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(r) => r.map_err(RequestError::from),
        Err(_) => Err(RequestError::Deadline),
    }
}

/// `d` plus a random share of up to `factor × d` (client-go `wait.Jitter`).
fn jittered(d: Duration, factor: f64) -> Duration {
    // A fresh RandomState is randomly seeded: enough randomness for jitter
    // without a dependency.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    let r = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    d + d.mul_f64(factor * r)
}

/// The Lease as a `Resource` reference for events.
pub fn lease_ref(namespace: &str, name: &str) -> k8s_openapi::api::core::v1::ObjectReference {
    object_ref(&Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        spec: None,
    })
}

/// The `source.component` of election events: `<lease name>/<identity>`,
/// with the lease name before sanitising.
pub fn event_component(driver: &str, identity: &str) -> String {
    format!("{LEASE_NAME_PREFIX}{driver}/{identity}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names() {
        assert_eq!(
            lease_name("hostpath.csi.k8s.io"),
            "external-snapshotter-leader-hostpath-csi-k8s-io"
        );
        assert_eq!(
            lease_name("vendor/driver_x"),
            "external-snapshotter-leader-vendor-driver-x"
        );
        assert_eq!(
            lease_name("driver."),
            "external-snapshotter-leader-driver-X"
        );
        assert_eq!(sanitize_name("node_1.example"), "node-1-example");
    }

    #[test]
    fn namespace_resolution_order() {
        let dir = tempfile::tempdir().unwrap();
        let sa = dir.path().join("namespace");
        assert_eq!(
            resolve_namespace_from("flag", Some("env".into()), &sa),
            "flag"
        );
        assert_eq!(resolve_namespace_from("", Some("env".into()), &sa), "env");
        assert_eq!(resolve_namespace_from("", None, &sa), "default");
        std::fs::write(&sa, "from-sa\n").unwrap();
        assert_eq!(resolve_namespace_from("", None, &sa), "from-sa");
        assert_eq!(
            resolve_namespace_from("", Some(String::new()), &sa),
            "from-sa"
        );
    }

    #[test]
    fn timing_validation() {
        let mut c = LeaderConfig::new("l", "ns", "me");
        assert!(c.validate().is_ok());
        c.renew_deadline = Duration::from_secs(6);
        assert!(c.validate().is_err(), "6 s is not > 1.2 × 5 s");
        c.renew_deadline = Duration::from_secs(15);
        assert!(c.validate().is_err(), "renew must be < lease");
        c.renew_deadline = Duration::from_secs(10);
        c.retry_period = Duration::ZERO;
        assert!(c.validate().is_err());
    }

    fn health_of(holder: &str) -> LeaderHealth {
        let lease = Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                ..LeaseSpec::default()
            }),
        };
        LeaderHealth {
            inner: Arc::new(Mutex::new(Observed {
                lease: Some(lease),
                time: Some(Instant::now()),
            })),
            identity: "me".into(),
            lease_name: "the-lease".into(),
            lease_duration: Duration::from_secs(15),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn health_fails_only_for_a_leader_past_lease_plus_tolerance() {
        let leader = health_of("me");
        let follower = health_of("other");
        assert!(leader.is_leader() && !follower.is_leader());
        tokio::time::advance(Duration::from_secs(35)).await;
        assert!(leader.check().is_ok(), "exactly lease + 20 s is still fine");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            leader.check(),
            Err("failed election to renew leadership on lease the-lease".to_string())
        );
        assert!(follower.check().is_ok(), "a follower is always healthy");
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let j = jittered(Duration::from_secs(5), 1.2);
            assert!(j >= Duration::from_secs(5) && j <= Duration::from_secs(11));
        }
    }
}
