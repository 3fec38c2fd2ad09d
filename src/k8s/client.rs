//! Building the Kubernetes client: configuration from `--kubeconfig` or the
//! in-cluster service account, and the client-side request rate limit of
//! `--kube-api-qps` / `--kube-api-burst` (spec A.2, B.4).
//!
//! - Only the `--kubeconfig` path is read; the `KUBECONFIG` environment
//!   variable and `~/.kube/config` are deliberately ignored (spec A).
//! - Every HTTP request passes one token bucket per client. A watch is one
//!   request, so it takes one token when it starts. Each call to
//!   [`build_client`] gets its own bucket, like upstream's separate
//!   clientsets (core, snapshot, leader election).
//! - No per-call deadline is set (no read timeout on the connection).
//! - Every request carries a User-Agent shaped like client-go's default
//!   ([`user_agent`]), so the API server records the sidecar's writes in
//!   `managedFields` under the manager `csi-snapshotter`, as upstream's.
//! - Every HTTP request is counted in client-go's `rest_client_requests_total`
//!   ([`RestClientMetrics`]): by status code, HTTP method and server
//!   `host:port`, watches and requests without a response (`<error>`)
//!   included. Retries that kube makes inside its stack (429, 503, 504) are
//!   not seen from here: such a request counts once, with its last status.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use crate::metrics::{NO_RESPONSE_CODE, RestClientMetrics};

/// client-go's default QPS, used when `--kube-api-qps` is 0.
pub const DEFAULT_QPS: f64 = 5.0;
/// client-go's default burst, used when `--kube-api-burst` is 0.
pub const DEFAULT_BURST: u32 = 10;

/// Why a client could not be built (startup exits 1 on any of these).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file could not be read or parsed.
    #[error("failed to read kubeconfig {path}: {source}")]
    ReadKubeconfig {
        /// The `--kubeconfig` path.
        path: PathBuf,
        /// The reader's error.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The kubeconfig was read but does not describe a usable cluster.
    #[error("invalid kubeconfig {path}: {source}")]
    InvalidKubeconfig {
        /// The `--kubeconfig` path.
        path: PathBuf,
        /// The loader's error.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No kubeconfig was given and the in-cluster configuration is missing.
    #[error("failed to load in-cluster configuration: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    /// The HTTP client could not be constructed (TLS material etc.).
    #[error("failed to build the Kubernetes client: {0}")]
    Build(#[source] kube::Error),
}

/// The client-side request rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateLimit {
    /// No limit (benchmarks).
    Unlimited,
    /// A token bucket: `qps` tokens per second, at most `burst` stored.
    TokenBucket {
        /// Sustained requests per second.
        qps: f64,
        /// Requests that may be sent at once after an idle period.
        burst: u32,
    },
}

impl RateLimit {
    /// The limit for `--kube-api-qps` / `--kube-api-burst`, with client-go's
    /// rules: 0 means the default (5 QPS, burst 10), a negative QPS disables
    /// the limit.
    pub fn from_flags(qps: f64, burst: i64) -> RateLimit {
        if qps < 0.0 || qps.is_nan() {
            return RateLimit::Unlimited;
        }
        let qps = if qps == 0.0 { DEFAULT_QPS } else { qps };
        let burst = match burst {
            b if b <= 0 => DEFAULT_BURST,
            b => u32::try_from(b).unwrap_or(u32::MAX),
        };
        RateLimit::TokenBucket { qps, burst }
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit::TokenBucket {
            qps: DEFAULT_QPS,
            burst: DEFAULT_BURST,
        }
    }
}

/// The program name when `argv[0]` has none (client-go says `unknown`;
/// this binary knows its name).
const PROGRAM: &str = "csi-snapshotter";

/// The User-Agent of every request, in client-go's default shape
/// `<program>/<version> (<os>/<arch>) kubernetes/<commit>`: the base name
/// of `argv[0]`, the version up to its first `-`, Go's names for the
/// operating system and architecture, and no client-go commit. The API
/// server takes the part before the first `/` as the field manager.
pub fn user_agent() -> String {
    let program = std::env::args_os()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| PROGRAM.to_string());
    user_agent_for(&program, crate::config::VERSION)
}

/// [`user_agent`] for a given program name and version.
fn user_agent_for(program: &str, version: &str) -> String {
    let version = version.split('-').next().unwrap_or(version);
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    // Go's GOARCH names for the architectures Rust names differently.
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    };
    format!("{program}/{version} ({os}/{arch}) kubernetes/unknown")
}

/// Loads the REST configuration: the kubeconfig at `kubeconfig` (its current
/// context) when given, else the in-cluster service account; requests made
/// with it carry [`user_agent`].
pub async fn load_config(kubeconfig: Option<&Path>) -> Result<Config, ClientError> {
    let mut config = read_config(kubeconfig).await?;
    // A User-Agent built from a file name may hold bytes a header cannot;
    // the request then goes without one, as before.
    if let Ok(ua) = http::HeaderValue::from_str(&user_agent()) {
        config.headers.push((http::header::USER_AGENT, ua));
    }
    Ok(config)
}

async fn read_config(kubeconfig: Option<&Path>) -> Result<Config, ClientError> {
    match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|source| ClientError::ReadKubeconfig {
                path: path.to_path_buf(),
                source,
            })?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| ClientError::InvalidKubeconfig {
                    path: path.to_path_buf(),
                    source,
                })
        }
        None => Config::incluster().map_err(ClientError::InCluster),
    }
}

/// A client for `config` whose every request passes its own `limit` bucket
/// and is counted in the process-wide [`RestClientMetrics::global`].
pub fn client_from_config(config: Config, limit: RateLimit) -> Result<Client, ClientError> {
    client_with_metrics(config, limit, RestClientMetrics::global())
}

/// [`client_from_config`] counting requests in `metrics` (none: uncounted).
pub fn client_with_metrics(
    config: Config,
    limit: RateLimit,
    metrics: Option<&RestClientMetrics>,
) -> Result<Client, ClientError> {
    let counting = CountRequestsLayer::new(metrics.cloned(), &config);
    let builder = kube::client::ClientBuilder::try_from(config)
        .map_err(ClientError::Build)?
        .with_layer(&counting);
    Ok(match limit {
        RateLimit::Unlimited => builder.build(),
        RateLimit::TokenBucket { qps, burst } => builder
            .with_layer(&RateLimitLayer::new(TokenBucket::new(qps, burst)))
            .build(),
    })
}

/// A client for `config` whose requests draw from `bucket` (which callers
/// may share between clients or inspect), counted like
/// [`client_from_config`]'s.
pub fn client_with_bucket(config: Config, bucket: Arc<TokenBucket>) -> Result<Client, ClientError> {
    let counting = CountRequestsLayer::new(RestClientMetrics::global().cloned(), &config);
    let builder = kube::client::ClientBuilder::try_from(config).map_err(ClientError::Build)?;
    Ok(builder
        .with_layer(&counting)
        .with_layer(&RateLimitLayer::new(bucket))
        .build())
}

/// [`load_config`] then [`client_from_config`].
pub async fn build_client(
    kubeconfig: Option<&Path>,
    limit: RateLimit,
) -> Result<Client, ClientError> {
    client_from_config(load_config(kubeconfig).await?, limit)
}

/// A token bucket shared by all requests of one client. Tokens may go
/// negative: a caller reserves its token at once and sleeps for the debt, so
/// waiting callers are served in order.
#[derive(Debug)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `qps` per second. A burst
    /// of 0 is treated as 1, so requests can still pass.
    pub fn new(qps: f64, burst: u32) -> Arc<TokenBucket> {
        let burst = f64::from(burst.max(1));
        Arc::new(TokenBucket {
            qps,
            burst,
            state: Mutex::new(BucketState {
                tokens: burst,
                last: Instant::now(),
            }),
        })
    }

    /// Tokens available now (negative while callers wait for a debt).
    pub fn available(&self) -> f64 {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = Instant::now()
            .saturating_duration_since(st.last)
            .as_secs_f64();
        (st.tokens + elapsed * self.qps).min(self.burst)
    }

    /// Takes one token; returns how long the caller must wait before using it.
    pub fn reserve(&self) -> Duration {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(st.last).as_secs_f64();
        st.last = now;
        st.tokens = (st.tokens + elapsed * self.qps).min(self.burst) - 1.0;
        if st.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-st.tokens / self.qps)
        }
    }
}

/// Tower layer that makes every request wait for a token of a [`TokenBucket`].
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    bucket: Arc<TokenBucket>,
}

impl RateLimitLayer {
    /// A layer drawing from `bucket`.
    pub fn new(bucket: Arc<TokenBucket>) -> Self {
        RateLimitLayer { bucket }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;
    fn layer(&self, inner: S) -> RateLimited<S> {
        RateLimited {
            inner,
            bucket: self.bucket.clone(),
            permit: Permit::None,
        }
    }
}

/// The service produced by [`RateLimitLayer`]: readiness waits for a token.
pub struct RateLimited<S> {
    inner: S,
    bucket: Arc<TokenBucket>,
    permit: Permit,
}

enum Permit {
    None,
    Waiting(Pin<Box<Sleep>>),
    Ready,
}

impl<S, Req> Service<Req> for RateLimited<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        loop {
            match &mut self.permit {
                Permit::None => {
                    let wait = self.bucket.reserve();
                    self.permit = if wait.is_zero() {
                        Permit::Ready
                    } else {
                        Permit::Waiting(Box::pin(tokio::time::sleep(wait)))
                    };
                }
                Permit::Waiting(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    self.permit = Permit::Ready;
                }
                Permit::Ready => return self.inner.poll_ready(cx),
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The token is spent by this request; the next one reserves anew.
        self.permit = Permit::None;
        self.inner.call(req)
    }
}

/// Tower layer that counts every request in `rest_client_requests_total`,
/// labelled with the `host` of the client's server URL (client-go's
/// `host:port` of the request URL).
#[derive(Debug, Clone)]
pub struct CountRequestsLayer {
    metrics: Option<RestClientMetrics>,
    host: Arc<str>,
}

impl CountRequestsLayer {
    /// A layer counting into `metrics` (none: a pass-through) the requests
    /// of a client for `config`.
    pub fn new(metrics: Option<RestClientMetrics>, config: &Config) -> Self {
        let host = config
            .cluster_url
            .authority()
            .map(|a| a.as_str())
            .unwrap_or_default();
        CountRequestsLayer {
            metrics,
            host: host.into(),
        }
    }
}

impl<S> Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;
    fn layer(&self, inner: S) -> CountRequests<S> {
        CountRequests {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service produced by [`CountRequestsLayer`].
pub struct CountRequests<S> {
    inner: S,
    layer: CountRequestsLayer,
}

impl<S, B, R> Service<http::Request<B>> for CountRequests<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Unpin,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let pending = self.layer.metrics.clone().map(|metrics| Pending {
            metrics,
            method: req.method().clone(),
            host: self.layer.host.clone(),
        });
        Counted {
            inner: self.inner.call(req),
            pending,
        }
    }
}

/// A request not counted yet.
struct Pending {
    metrics: RestClientMetrics,
    method: http::Method,
    host: Arc<str>,
}

impl Pending {
    fn count(self, code: &str) {
        self.metrics.inc(code, self.method.as_str(), &self.host);
    }
}

/// The response future of [`CountRequests`]: counts the request once, when
/// the response head arrives (a watch counts when it opens), the request
/// fails, or the caller gives up on it (`<error>`, like client-go's
/// cancelled requests).
pub struct Counted<F> {
    inner: F,
    pending: Option<Pending>,
}

impl<F, R, E> Future for Counted<F>
where
    F: Future<Output = Result<http::Response<R>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let result = ready!(Pin::new(&mut self.inner).poll(cx));
        if let Some(pending) = self.pending.take() {
            match &result {
                Ok(resp) => pending.count(resp.status().as_str()),
                Err(_) => pending.count(NO_RESPONSE_CODE),
            }
        }
        Poll::Ready(result)
    }
}

impl<F> Drop for Counted<F> {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.count(NO_RESPONSE_CODE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_has_client_go_shape_and_names_the_manager() {
        let ua = user_agent_for("csi-snapshotter", "v8.6.0-rc.1+dirty");
        let arch = ua
            .split_once(" (")
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(platform, _)| platform.to_string())
            .unwrap();
        assert_eq!(
            ua,
            format!("csi-snapshotter/v8.6.0 ({arch}) kubernetes/unknown")
        );
        assert!(
            !arch.contains("x86_64") && !arch.contains("aarch64"),
            "{arch}"
        );
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert_eq!(arch, "linux/amd64");
        }
        assert_eq!(ua.split('/').next(), Some("csi-snapshotter"));
    }

    #[test]
    fn flags_follow_client_go_defaults() {
        assert_eq!(
            RateLimit::from_flags(5.0, 10),
            RateLimit::TokenBucket {
                qps: 5.0,
                burst: 10
            }
        );
        assert_eq!(
            RateLimit::from_flags(0.0, 0),
            RateLimit::TokenBucket {
                qps: 5.0,
                burst: 10
            }
        );
        assert_eq!(RateLimit::from_flags(-1.0, 10), RateLimit::Unlimited);
        assert_eq!(
            RateLimit::from_flags(100.0, -3),
            RateLimit::TokenBucket {
                qps: 100.0,
                burst: 10
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_burst_then_paces_at_qps() {
        let b = TokenBucket::new(2.0, 3);
        assert_eq!(b.reserve(), Duration::ZERO);
        assert_eq!(b.reserve(), Duration::ZERO);
        assert_eq!(b.reserve(), Duration::ZERO);
        // Bucket empty: the next callers queue up half a second apart.
        assert_eq!(b.reserve(), Duration::from_millis(500));
        assert_eq!(b.reserve(), Duration::from_millis(1000));
        tokio::time::advance(Duration::from_secs(10)).await;
        // Refilled, but never beyond the burst.
        for _ in 0..3 {
            assert_eq!(b.reserve(), Duration::ZERO);
        }
        assert!(b.reserve() > Duration::ZERO);
    }
}
