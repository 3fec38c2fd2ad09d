//! The driver side: CSI over gRPC on a Unix socket. No Kubernetes types here.

pub mod address;
pub mod call;
pub mod client;
pub mod connection;
pub mod driver;
pub mod error;
pub mod proto;
pub mod redact;
pub mod socket_access;
