//! The API side: Kubernetes types, reads, writes, events and watches. No gRPC
//! types in here.

pub mod keys;
pub mod types;
