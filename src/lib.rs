//! A csi-snapshotter sidecar: watches VolumeSnapshotContent and
//! VolumeGroupSnapshotContent objects of one CSI driver and drives the
//! driver's snapshot RPCs over its Unix socket.
//!
//! Layout (each boundary is one-way):
//! - [`reconcile`] decides what to do next from what was observed; pure.
//! - [`csi`] speaks gRPC to the driver and knows nothing of Kubernetes.
//! - [`k8s`] speaks to the API server and knows nothing of gRPC.
//! - [`controller`] is the only place where both meet: it runs the steps.
//! - `testing` holds the embedded API server and the mock driver; product
//!   code never imports it.
//!
//! One pipeline runs both content kinds ([`controller::pipeline`]); a kind
//! ([`controller::content`], [`controller::group`]) supplies its types, its
//! decision and its RPCs:
//!
//! ```text
//! watch ──▶ intake ──▶ queue ──▶ decide ──▶ step ──▶ write
//!   │         │          │         │          │        │
//!   │         │          │         │          │        └ k8s/write.rs (PATCH/PUT)
//!   │         │          │         │          └ controller/pipeline.rs, the
//!   │         │          │         │            kind's RPCs in controller/
//!   │         │          │         │            {content,group}.rs → csi/client.rs
//!   │         │          │         └ reconcile/{content,group}.rs (pure)
//!   │         │          └ controller/queue.rs (dedup, backoff), workers
//!   │         │            and version store in controller/pipeline.rs
//!   │         └ controller/intake.rs with the kind's update filter
//!   └ k8s/watch.rs (list/watch into a cache)
//! ```
#![forbid(unsafe_code)]

pub mod config;
pub mod controller;
pub mod csi;
pub mod diagnose;
pub mod http;
pub mod k8s;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod process_metrics;
pub mod reconcile;
pub mod run;
pub mod shutdown;

#[cfg(feature = "testing")]
pub mod testing;
