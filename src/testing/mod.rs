//! Test peers: an embedded Kubernetes API server and a mock CSI driver.
//! Built only with the `testing` feature (on by default, off in the image).

pub mod apiserver;
pub mod bench;
pub mod demo;
pub mod groups;
pub mod mock_driver;
