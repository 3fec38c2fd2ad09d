//! The sidecar's own counters, read from a scrape of its `/metrics`: API
//! requests from `rest_client_requests_total` (client-go's name and
//! labels), CSI calls from `csi_sidecar_operations_seconds_count` and
//! reconcile passes from `workqueue_adds_total`. On a
//! real cluster these are the only per-object request counts there are:
//! the API server is not the benchmark's to instrument.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// client-go's request counter.
const REQUESTS: &str = "rest_client_requests_total";
/// The CSI operation histogram's count series.
const CSI_OPERATIONS: &str = "csi_sidecar_operations_seconds_count";
/// client-go's work queue counter: one per key queued that was not already
/// waiting, so about one per reconcile pass.
const QUEUE_ADDS: &str = "workqueue_adds_total";

/// What one scrape said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// Requests by HTTP method; `None` when the sidecar does not export
    /// `rest_client_requests_total`.
    pub requests: Option<BTreeMap<String, u64>>,
    /// CSI calls by RPC name (`CreateSnapshot`, ...).
    pub csi_calls: BTreeMap<String, u64>,
    /// Keys queued, summed over the work queues; `None` when the sidecar
    /// does not export `workqueue_adds_total`.
    pub queue_adds: Option<u64>,
}

impl Scrape {
    /// Parses the Prometheus text format, keeping the two series.
    pub fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((name, labels, value)) = sample(line) else {
                continue;
            };
            if name == REQUESTS {
                // client-go labels the verb `method`; accept `verb` too.
                let verb = label(labels, "method").or_else(|| label(labels, "verb"));
                let requests = scrape.requests.get_or_insert_with(BTreeMap::new);
                if let Some(verb) = verb {
                    *requests.entry(verb.to_ascii_uppercase()).or_default() += value;
                }
            } else if name == CSI_OPERATIONS
                && let Some(method) = label(labels, "method_name")
            {
                let rpc = method.rsplit('/').next().unwrap_or(method);
                *scrape.csi_calls.entry(rpc.to_string()).or_default() += value;
            } else if name == QUEUE_ADDS {
                *scrape.queue_adds.get_or_insert(0) += value;
            }
        }
        scrape
    }
}

/// `name{labels} value` of one sample line; counters are whole numbers
/// (a float value such as `3e+02` is read as a float and truncated).
fn sample(line: &str) -> Option<(&str, &str, u64)> {
    let (series, value) = line.trim().rsplit_once(' ')?;
    let (name, labels) = match series.split_once('{') {
        Some((n, rest)) => (n, rest.strip_suffix('}')?),
        None => (series, ""),
    };
    let value = value
        .parse::<u64>()
        .ok()
        .or_else(|| value.parse::<f64>().ok().map(|f| f as u64))?;
    Some((name, labels, value))
}

/// The value of label `key` in `a="x",b="y"` (values hold no quotes here).
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

/// Reads the sidecar's `/metrics`.
pub async fn scrape(addr: SocketAddr) -> io::Result<Scrape> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("/metrics")
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<bytes::Bytes>::new())
        .map_err(io::Error::other)?;
    let resp = sender.send_request(req).await.map_err(io::Error::other)?;
    if !resp.status().is_success() {
        return Err(io::Error::other(format!(
            "/metrics answered {}",
            resp.status()
        )));
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(io::Error::other)?
        .to_bytes();
    Ok(Scrape::parse(&String::from_utf8_lossy(&body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP rest_client_requests_total Number of HTTP requests
# TYPE rest_client_requests_total counter
rest_client_requests_total{code=\"200\",host=\"127.0.0.1:6443\",method=\"GET\"} 4
rest_client_requests_total{code=\"200\",host=\"127.0.0.1:6443\",method=\"PATCH\"} 30
rest_client_requests_total{code=\"409\",host=\"127.0.0.1:6443\",method=\"PATCH\"} 2
csi_sidecar_operations_seconds_bucket{driver_name=\"d\",method_name=\"/csi.v1.Controller/CreateSnapshot\",grpc_status_code=\"OK\",le=\"0.1\"} 9
csi_sidecar_operations_seconds_count{driver_name=\"d\",method_name=\"/csi.v1.Controller/CreateSnapshot\",grpc_status_code=\"OK\"} 10
csi_sidecar_operations_seconds_count{driver_name=\"d\",method_name=\"/csi.v1.Controller/CreateSnapshot\",grpc_status_code=\"Aborted\"} 1
csi_sidecar_operations_seconds_count{driver_name=\"d\",method_name=\"/csi.v1.Identity/Probe\",grpc_status_code=\"OK\"} 1
workqueue_adds_total{name=\"csi-snapshotter-content\"} 12
workqueue_adds_total{name=\"csi-snapshotter-groupsnapshotcontent\"} 3
process_resident_memory_bytes 1.2e+07
";

    #[test]
    fn sums_requests_by_method_and_csi_calls_by_rpc() {
        let s = Scrape::parse(TEXT);
        let r = s.requests.as_ref().unwrap();
        assert_eq!((r["GET"], r["PATCH"]), (4, 32));
        assert_eq!(s.csi_calls["CreateSnapshot"], 11);
        assert_eq!(s.csi_calls["Probe"], 1);
        assert_eq!(s.queue_adds, Some(15));
    }

    #[test]
    fn a_sidecar_without_the_request_counter_has_none() {
        let s = Scrape::parse("csi_sidecar_operations_seconds_count{method_name=\"/x/Probe\"} 2\n");
        assert_eq!(s.requests, None);
        assert_eq!(s.queue_adds, None);
        assert_eq!(s.csi_calls["Probe"], 2);
    }

    #[test]
    fn bad_lines_are_ignored() {
        let s = Scrape::parse("garbage\nrest_client_requests_total{method=\"GET\" 4\nx{} y\n");
        assert_eq!(s, Scrape::default());
    }
}
