//! Benchmark of the embedded API server: write throughput over HTTP with
//! watch fan-out running at the same time.
//!
//! Run it with `cargo run --release -- embedded-apiserver --bench`.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{ApiServer, ApiServerOptions};

/// Benchmark parameters.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// VolumeSnapshotContents created; each is then status-patched once,
    /// so the run makes twice as many writes.
    pub objects: usize,
    /// Concurrent writer connections.
    pub writers: usize,
    /// Concurrent watch streams on the written resource.
    pub watchers: usize,
    /// CRD directory for schema validation during the run (as in tests).
    pub crd_schemas: Option<PathBuf>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            objects: 20_000,
            writers: 16,
            watchers: 8,
            crd_schemas: None,
        }
    }
}

/// Benchmark results.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Options used.
    pub options: BenchOptions,
    /// Writes made (creates + status patches).
    pub writes: usize,
    /// Time the writes took.
    pub write_time: Duration,
    /// Watch events each watcher had to receive.
    pub events_per_watcher: usize,
    /// Time until the slowest watcher had every event (from the first write).
    pub fanout_time: Duration,
    /// How long after the last write the slowest watcher caught up.
    pub fanout_lag: Duration,
}

impl BenchReport {
    /// Writes per second.
    pub fn writes_per_sec(&self) -> f64 {
        self.writes as f64 / self.write_time.as_secs_f64().max(1e-9)
    }

    /// Watch events delivered per second, all watchers together.
    pub fn events_per_sec(&self) -> f64 {
        (self.events_per_watcher * self.options.watchers) as f64
            / self.fanout_time.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "writes: {} ({} creates + {} status patches) over {} connections{}",
            self.writes,
            self.options.objects,
            self.options.objects,
            self.options.writers,
            if self.options.crd_schemas.is_some() {
                ", schema validation against the given CRDs"
            } else {
                ", built-in schema validation"
            }
        )?;
        writeln!(
            f,
            "write throughput: {:.0} writes/s ({:.2} s)",
            self.writes_per_sec(),
            self.write_time.as_secs_f64()
        )?;
        write!(
            f,
            "watch fan-out: {} watchers x {} events, all delivered in {:.2} s ({:.0} events/s), last watcher caught up {:.1} ms after the last write",
            self.options.watchers,
            self.events_per_watcher,
            self.fanout_time.as_secs_f64(),
            self.events_per_sec(),
            self.fanout_lag.as_secs_f64() * 1000.0
        )
    }
}

async fn connect(addr: SocketAddr) -> io::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: http::Method,
    path: String,
    content_type: &'static str,
    body: String,
) -> io::Result<()> {
    sender.ready().await.map_err(io::Error::other)?;
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "127.0.0.1")
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .map_err(io::Error::other)?;
    let resp = sender.send_request(req).await.map_err(io::Error::other)?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(io::Error::other)?
        .to_bytes();
    if !status.is_success() {
        return Err(io::Error::other(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body)
        )));
    }
    Ok(())
}

const BASE: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents";

fn content(i: usize) -> String {
    format!(
        r#"{{"apiVersion":"snapshot.storage.k8s.io/v1","kind":"VolumeSnapshotContent","metadata":{{"name":"bench-{i}","finalizers":["snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection"]}},"spec":{{"deletionPolicy":"Delete","driver":"bench.csi.k8s.io","source":{{"volumeHandle":"vol-{i}"}},"volumeSnapshotClassName":"bench","volumeSnapshotRef":{{"apiVersion":"snapshot.storage.k8s.io/v1","kind":"VolumeSnapshot","name":"snap-{i}","namespace":"default","uid":"00000000-0000-0000-0000-{i:012}"}}}}}}"#
    )
}

fn status_patch(i: usize) -> String {
    format!(
        r#"[{{"op":"replace","path":"/status","value":{{"creationTime":1700000000000000000,"readyToUse":true,"restoreSize":1073741824,"snapshotHandle":"snap-handle-{i}"}}}}]"#
    )
}

/// Runs the benchmark against a fresh in-process server.
pub async fn run_bench(opts: BenchOptions) -> io::Result<BenchReport> {
    let server = ApiServer::start(ApiServerOptions {
        crd_schemas: opts.crd_schemas.clone(),
        ..Default::default()
    })
    .await?;
    let addr = server.addr();
    let expected = opts.objects * 2;
    let start_rv = server.resource_version();

    let mut watchers = Vec::new();
    for _ in 0..opts.watchers {
        let mut sender = connect(addr).await?;
        let req = http::Request::builder()
            .uri(format!(
                "{BASE}?watch=true&resourceVersion={start_rv}&allowWatchBookmarks=true"
            ))
            .header(http::header::HOST, "127.0.0.1")
            .body(Full::new(Bytes::new()))
            .map_err(io::Error::other)?;
        let resp = sender.send_request(req).await.map_err(io::Error::other)?;
        let mut body = resp.into_body();
        watchers.push(tokio::spawn(async move {
            let mut seen = 0usize;
            while seen < expected {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            seen += data.iter().filter(|b| **b == b'\n').count();
                        }
                    }
                    _ => break,
                }
            }
            (seen, Instant::now())
        }));
    }

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..opts.writers {
        let mut sender = connect(addr).await?;
        let next = next.clone();
        let objects = opts.objects;
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= objects {
                    return Ok::<_, io::Error>(());
                }
                send(
                    &mut sender,
                    http::Method::POST,
                    BASE.to_string(),
                    "application/json",
                    content(i),
                )
                .await?;
                send(
                    &mut sender,
                    http::Method::PATCH,
                    format!("{BASE}/bench-{i}/status"),
                    "application/json-patch+json",
                    status_patch(i),
                )
                .await?;
            }
        }));
    }
    for w in writers {
        w.await.map_err(io::Error::other)??;
    }
    let write_time = started.elapsed();
    let writes_done = Instant::now();
    let mut last = writes_done;
    for w in watchers {
        let (seen, at) = w.await.map_err(io::Error::other)?;
        if seen < expected {
            return Err(io::Error::other(format!(
                "a watcher saw {seen} of {expected} events"
            )));
        }
        last = last.max(at);
    }
    server.shutdown().await;
    Ok(BenchReport {
        options: opts,
        writes: expected,
        write_time,
        events_per_watcher: expected,
        fanout_time: last.duration_since(started),
        fanout_lag: last.saturating_duration_since(writes_done),
    })
}
