//! An embedded Kubernetes API server for tests and the demo.

pub mod schema;
