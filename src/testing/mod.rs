//! Test peers: an embedded Kubernetes API server and a mock CSI driver.
//! Built only with the `testing` feature (on by default, off in the image).

pub mod apiserver;
pub mod bench;
pub mod demo;
pub mod groups;
pub mod mock_driver;

/// Parses a non-negative Go duration (`4.5ms`, `1m30s`) for a command-line
/// flag of the test peers.
pub(crate) fn flag_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::config::values::parse_go_duration(text)?
        .to_std()
        .ok_or_else(|| format!("{text}: must not be negative"))
}
