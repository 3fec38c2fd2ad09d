//! The effectful layer: runs the steps that `reconcile` decides, fed by the
//! watch caches through per-kind work queues.

pub mod common;
pub mod content;
pub mod group;
pub mod intake;
pub mod pipeline;
pub mod queue;
pub mod queue_metrics;
