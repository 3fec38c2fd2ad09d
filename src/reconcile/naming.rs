//! Deterministic snapshot names: `<prefix>-<uid>` (spec A.1, C.3 step 5).
//! Being a function of the VolumeSnapshot UID is what makes a re-sent
//! CreateSnapshot idempotent.

/// How names are built from a UID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamingRule {
    /// `--snapshot-name-prefix` / `--groupsnapshot-name-prefix` (non-empty).
    pub prefix: String,
    /// `None` (flag value -1): the whole UID, dashes included. `Some(n)`: the
    /// UID without dashes, cut to its first `n` characters.
    pub uuid_length: Option<usize>,
}

impl NamingRule {
    /// The default rule for snapshots (`snapshot`, whole UID).
    pub fn snapshot_default() -> Self {
        NamingRule {
            prefix: "snapshot".into(),
            uuid_length: None,
        }
    }
    /// The default rule for group snapshots (`groupsnapshot`, whole UID).
    pub fn group_default() -> Self {
        NamingRule {
            prefix: "groupsnapshot".into(),
            uuid_length: None,
        }
    }

    /// Converts the flag value (`-1` or `N ≥ 0`); any other negative value is
    /// rejected so it can fail at startup instead of at the first create.
    pub fn uuid_length_from_flag(value: i64) -> Result<Option<usize>, NameError> {
        match value {
            -1 => Ok(None),
            n if n >= 0 => Ok(Some(n as usize)),
            n => Err(NameError::InvalidUuidLength(n)),
        }
    }

    /// Builds the name for one UID.
    pub fn name_for(&self, uid: &str) -> Result<String, NameError> {
        if uid.is_empty() {
            return Err(NameError::EmptyUid);
        }
        let part = match self.uuid_length {
            None => uid.to_owned(),
            Some(n) => {
                let stripped: String = uid.chars().filter(|c| *c != '-').collect();
                let available = stripped.chars().count();
                if n > available {
                    return Err(NameError::UidTooShort {
                        wanted: n,
                        available,
                    });
                }
                stripped.chars().take(n).collect()
            }
        };
        Ok(format!("{}-{}", self.prefix, part))
    }
}

/// Why a name could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The object is not bound: its reference has no UID.
    #[error("corresponding snapshot UID is empty")]
    EmptyUid,
    /// `--*-uuid-length` asks for more characters than the UID has.
    #[error("uuid length {wanted} is larger than the {available} characters of the UID")]
    UidTooShort {
        /// Requested length.
        wanted: usize,
        /// Characters left after removing dashes.
        available: usize,
    },
    /// A negative flag value other than -1.
    #[error("invalid uuid length {0}: must be -1 or a non-negative number")]
    InvalidUuidLength(i64),
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1c0d2a3b-4e5f-6071-8293-a4b5c6d7e8f9";

    #[test]
    fn whole_uid_with_dashes_by_default() {
        let r = NamingRule::snapshot_default();
        assert_eq!(r.name_for(UID).unwrap(), format!("snapshot-{UID}"));
    }

    #[test]
    fn h40_uuid_length_minus_one_keeps_full_uid_with_dashes() {
        let r = NamingRule {
            prefix: "groupsnapshot".into(),
            uuid_length: NamingRule::uuid_length_from_flag(-1).unwrap(),
        };
        assert_eq!(r.name_for(UID).unwrap(), format!("groupsnapshot-{UID}"));
    }

    #[test]
    fn length_n_strips_dashes_then_truncates() {
        let table = [
            (0, "snapshot-"),
            (8, "snapshot-1c0d2a3b"),
            (12, "snapshot-1c0d2a3b4e5f"),
            (32, "snapshot-1c0d2a3b4e5f60718293a4b5c6d7e8f9"),
        ];
        for (n, want) in table {
            let r = NamingRule {
                prefix: "snapshot".into(),
                uuid_length: Some(n),
            };
            assert_eq!(r.name_for(UID).unwrap(), want, "n={n}");
        }
    }

    #[test]
    fn too_long_or_negative_lengths_are_errors_not_panics() {
        let r = NamingRule {
            prefix: "p".into(),
            uuid_length: Some(33),
        };
        assert_eq!(
            r.name_for(UID),
            Err(NameError::UidTooShort {
                wanted: 33,
                available: 32
            })
        );
        assert_eq!(
            NamingRule::uuid_length_from_flag(-2),
            Err(NameError::InvalidUuidLength(-2))
        );
    }

    #[test]
    fn empty_uid_is_an_error() {
        assert_eq!(
            NamingRule::snapshot_default().name_for(""),
            Err(NameError::EmptyUid)
        );
    }
}
