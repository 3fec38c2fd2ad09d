//! A minimal raw HTTP client for tests that need the wire: exact status
//! codes, bodies and watch lines, without a kube client in between.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream to the server: plain TCP or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where the server listens and how to reach it: over TLS trusting the
/// server's CA, or plain TCP when the server was started without HTTPS.
#[derive(Clone)]
pub struct Endpoint {
    /// The listen address.
    pub addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Endpoint {
    /// An endpoint at `addr`, over TLS when `tls` is given.
    pub(crate) fn new(addr: SocketAddr, tls: Option<Arc<rustls::ClientConfig>>) -> Endpoint {
        Endpoint { addr, tls }
    }

    /// Opens a connection (with the TLS handshake done, when TLS is on).
    pub async fn connect(&self) -> io::Result<Box<dyn Io>> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Box::new(stream)),
            Some(config) => {
                let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, stream)
                    .await?;
                Ok(Box::new(tls))
            }
        }
    }
}

/// A response: status code, content type and body (JSON if it parses,
/// else a string).
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// HTTP status code.
    pub code: u16,
    /// `Content-Type` header.
    pub content_type: String,
    /// Body parsed as JSON, or `Value::String` of the raw text.
    pub body: Value,
}

/// Sends one request on a fresh connection.
pub async fn request(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<&[u8]>,
) -> io::Result<RawResponse> {
    let resp = send(endpoint, method, path, content_type, body).await?;
    let code = resp.status().as_u16();
    let ct = content_type_of(resp.headers());
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(io::Error::other)?
        .to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok(RawResponse {
        code,
        content_type: ct,
        body,
    })
}

fn content_type_of(h: &http::HeaderMap) -> String {
    h.get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn send(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<&[u8]>,
) -> io::Result<http::Response<Incoming>> {
    let stream = endpoint.connect().await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, endpoint.addr.to_string())
        .header(http::header::ACCEPT, "application/json");
    if let Some(ct) = content_type {
        req = req.header(http::header::CONTENT_TYPE, ct);
    }
    let req = req
        .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
        .map_err(io::Error::other)?;
    sender.send_request(req).await.map_err(io::Error::other)
}

/// An open watch stream read line by line.
#[derive(Debug)]
pub struct RawWatch {
    /// HTTP status code of the watch response.
    pub code: u16,
    /// `Transfer-Encoding` header of the response.
    pub transfer_encoding: String,
    /// `Content-Type` header.
    pub content_type: String,
    body: Incoming,
    buf: BytesMut,
    done: bool,
}

impl RawWatch {
    /// Opens a watch (`path` must include `watch=true`).
    pub async fn open(endpoint: &Endpoint, path: &str) -> io::Result<RawWatch> {
        let resp = send(endpoint, "GET", path, None, None).await?;
        let te = resp
            .headers()
            .get(http::header::TRANSFER_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        Ok(RawWatch {
            code: resp.status().as_u16(),
            transfer_encoding: te,
            content_type: content_type_of(resp.headers()),
            body: resp.into_body(),
            buf: BytesMut::new(),
            done: false,
        })
    }

    /// The next event as `{"type":…,"object":…}`; `Ok(None)` when the
    /// stream ended; an error of kind `TimedOut` if none came within `wait`.
    pub async fn next(&mut self, wait: Duration) -> io::Result<Option<Value>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                let v: Value = serde_json::from_slice(&line[..pos]).map_err(io::Error::other)?;
                return Ok(Some(v));
            }
            if self.done {
                return Ok(None);
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no watch event in time"))?;
            match frame {
                Some(Ok(f)) => {
                    if let Ok(mut data) = f.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk().to_vec();
                            data.advance(chunk.len());
                            self.buf.extend_from_slice(&chunk);
                        }
                    }
                }
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => self.done = true,
            }
        }
    }

    /// Events until one satisfies `pred` (returned) — skipping bookmarks
    /// and anything else before it.
    pub async fn next_matching(
        &mut self,
        wait: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> io::Result<Option<Value>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Some(ev) if pred(&ev) => return Ok(Some(ev)),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }
}
