//! Faults that a CreateSnapshot request asks for through its parameters, so
//! that a test driving the mock from outside (the end-to-end suite, whose
//! only handle on the driver is the VolumeSnapshotClass) can still make one
//! snapshot fail, succeed only with secrets, fail once or take long.
//!
//! The keys live under the mock's own prefix and are ignored by any other
//! driver; a request without them is served normally.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tonic::Status;

/// Any value: CreateSnapshot fails with `INVALID_ARGUMENT` (a final error).
pub const REJECT: &str = "mock.csi.k8s.io/reject";
/// Any value: CreateSnapshot fails with `UNAUTHENTICATED` (final) unless the
/// request carries at least one secret.
pub const REQUIRE_SECRETS: &str = "mock.csi.k8s.io/require-secrets";
/// Any value: the first CreateSnapshot of each snapshot name fails with
/// `UNAVAILABLE` (non-final); later ones are served.
pub const FAIL_ONCE: &str = "mock.csi.k8s.io/fail-once";
/// A duration (`10s`, `500ms`): CreateSnapshot answers only after it.
pub const SLOW: &str = "mock.csi.k8s.io/slow";

/// Longest delay [`SLOW`] accepts: a typo such as `10000s` must not hang a
/// test run for hours.
const MAX_SLOW: Duration = Duration::from_secs(600);

/// What a request's parameters ask of the mock.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Asked {
    /// Wait this long before answering.
    pub delay: Option<Duration>,
}

/// Remembers which names already had their one failure.
#[derive(Debug, Default)]
pub(crate) struct ParamFaults {
    failed_once: Mutex<HashSet<String>>,
}

impl ParamFaults {
    /// Checks the parameters of a CreateSnapshot for `name`: the error to
    /// answer with, or what else to do.
    pub(crate) fn check(
        &self,
        name: &str,
        parameters: &HashMap<String, String>,
        has_secrets: bool,
    ) -> Result<Asked, Status> {
        if parameters.contains_key(REJECT) {
            return Err(Status::invalid_argument(format!(
                "mock driver: snapshot {name} rejected by parameter {REJECT}"
            )));
        }
        if parameters.contains_key(REQUIRE_SECRETS) && !has_secrets {
            return Err(Status::unauthenticated(format!(
                "mock driver: snapshot {name} needs secrets ({REQUIRE_SECRETS})"
            )));
        }
        if parameters.contains_key(FAIL_ONCE) {
            let mut failed = self
                .failed_once
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if failed.insert(name.to_string()) {
                return Err(Status::unavailable(format!(
                    "mock driver: first attempt at snapshot {name} fails ({FAIL_ONCE})"
                )));
            }
        }
        let delay = match parameters.get(SLOW) {
            None => None,
            Some(v) => Some(parse_delay(v).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "mock driver: {SLOW}={v:?} is not a duration of at most {}s",
                    MAX_SLOW.as_secs()
                ))
            })?),
        };
        Ok(Asked { delay })
    }
}

/// Parses `<number><unit>` with unit `ms`, `s` or `m`.
fn parse_delay(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| *d <= MAX_SLOW)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_fault_parameters_is_a_normal_request() {
        let f = ParamFaults::default();
        assert_eq!(
            f.check("s", &params(&[("type", "fast")]), false).unwrap(),
            Asked::default()
        );
    }

    #[test]
    fn reject_is_final_and_names_the_key() {
        let f = ParamFaults::default();
        let e = f.check("s", &params(&[(REJECT, "yes")]), true).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(REJECT), "{}", e.message());
    }

    #[test]
    fn require_secrets_passes_only_with_secrets() {
        let f = ParamFaults::default();
        let p = params(&[(REQUIRE_SECRETS, "true")]);
        assert_eq!(
            f.check("s", &p, false).unwrap_err().code(),
            Code::Unauthenticated
        );
        assert!(f.check("s", &p, true).is_ok());
    }

    #[test]
    fn fail_once_fails_the_first_attempt_of_each_name() {
        let f = ParamFaults::default();
        let p = params(&[(FAIL_ONCE, "")]);
        assert_eq!(
            f.check("a", &p, false).unwrap_err().code(),
            Code::Unavailable
        );
        assert!(f.check("a", &p, false).is_ok());
        assert!(f.check("a", &p, false).is_ok());
        assert_eq!(
            f.check("b", &p, false).unwrap_err().code(),
            Code::Unavailable
        );
    }

    #[test]
    fn slow_parses_durations_and_refuses_nonsense() {
        let f = ParamFaults::default();
        let delay = |v: &str| f.check("s", &params(&[(SLOW, v)]), false);
        assert_eq!(delay("10s").unwrap().delay, Some(Duration::from_secs(10)));
        assert_eq!(
            delay("250ms").unwrap().delay,
            Some(Duration::from_millis(250))
        );
        assert_eq!(delay("1.5m").unwrap().delay, Some(Duration::from_secs(90)));
        for bad in ["", "10", "ten s", "10h", "10000s", "-1s"] {
            assert_eq!(
                delay(bad).unwrap_err().code(),
                Code::InvalidArgument,
                "{bad:?}"
            );
        }
    }
}
