//! Code generated from `proto/csi.proto` (package `csi.v1`).

/// Messages, clients and servers of the `csi.v1` package.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    use crate::csi::redact::{Redact, blank_values};

    tonic::include_proto!("csi.v1");
    include!(concat!(env!("OUT_DIR"), "/csi_redact.rs"));
}
