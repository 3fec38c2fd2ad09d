//! The API side: Kubernetes types, reads, writes, events and watches. No gRPC
//! types in here.

pub mod client;
pub mod compact;
pub mod event;
pub mod keys;
pub mod lean;
pub mod types;
pub mod watch;
pub mod write;
