//! Redaction of credential fields before a CSI message is logged.
//!
//! Which fields are secret is decided by the `csi_secret` option in
//! `proto/csi.proto`; `build.rs` reads it and implements [`Redact`] for every
//! generated message.

use std::borrow::Cow;
use std::collections::HashMap;

/// Text that replaces every secret value in logs.
pub const STRIPPED: &str = "***stripped***";

/// A message that can produce a copy of itself safe to log.
pub trait Redact: Clone + std::fmt::Debug {
    /// The message with every `csi_secret` field's values replaced by
    /// [`STRIPPED`]. Messages without secret fields are returned as they are.
    fn redacted(&self) -> Cow<'_, Self> {
        Cow::Borrowed(self)
    }
}

/// Replaces each value of a secret map, keeping the keys so that logs still
/// show which credentials were passed.
pub fn blank_values(map: &mut HashMap<String, String>) {
    for v in map.values_mut() {
        *v = STRIPPED.to_string();
    }
}
