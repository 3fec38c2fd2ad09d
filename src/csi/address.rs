//! The `--csi-address` value: a Unix socket path, bare or as a `unix://` URL.

use std::path::PathBuf;

/// The `--csi-address` value is not a Unix socket address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid CSI address {address:?}: {reason}; expected an absolute socket path or unix://<path>"
)]
pub struct AddressError {
    /// The rejected value.
    pub address: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

/// Scheme prefix of a Unix socket URL.
const UNIX_SCHEME: &str = "unix://";

/// Parses `--csi-address`: `/path` and `unix:///path` (or `unix://rel/path`)
/// name a Unix socket; anything else (TCP addresses, other schemes, an
/// empty path) is rejected.
pub fn parse_address(address: &str) -> Result<PathBuf, AddressError> {
    let err = |reason| AddressError {
        address: address.to_string(),
        reason,
    };
    if let Some(path) = address.strip_prefix(UNIX_SCHEME) {
        if path.is_empty() {
            return Err(err("the socket path is empty"));
        }
        return Ok(PathBuf::from(path));
    }
    if address.starts_with('/') {
        return Ok(PathBuf::from(address));
    }
    if address.is_empty() {
        return Err(err("the address is empty"));
    }
    if address.contains("://") {
        return Err(err("only the unix:// scheme is supported"));
    }
    Err(err("not a Unix socket path"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        assert_eq!(
            parse_address("/csi/csi.sock").unwrap(),
            PathBuf::from("/csi/csi.sock")
        );
        assert_eq!(
            parse_address("unix:///csi/csi.sock").unwrap(),
            PathBuf::from("/csi/csi.sock")
        );
        assert_eq!(
            parse_address("unix://run/csi.sock").unwrap(),
            PathBuf::from("run/csi.sock")
        );
    }

    #[test]
    fn rejected_forms() {
        for bad in [
            "",
            "unix://",
            "tcp://127.0.0.1:10000",
            "127.0.0.1:10000",
            "csi.sock",
            "dns:///x",
        ] {
            let e = parse_address(bad).unwrap_err();
            assert_eq!(e.address, bad);
            assert!(e.to_string().contains("invalid CSI address"), "{e}");
        }
    }
}
