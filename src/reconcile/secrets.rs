//! Which secret to fetch: from the deletion-secret annotations (spec C.3) or
//! from class-parameter templates (spec C.12, H.22). Fetching is the
//! executor's job; this module only names the secret.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::k8s::keys;
use crate::k8s::types::annotation;

/// A secret to GET (`secrets/<namespace>/<name>`).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// Secret name.
    pub name: String,
    /// Secret namespace.
    pub namespace: String,
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why no secret reference could be formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretRefError {
    /// Both annotations present, one of them empty (spec C.3).
    #[error(
        "cannot retrieve secrets for {kind} content \"{content}\", err: secret name or namespace not specified"
    )]
    EmptyAnnotation {
        /// `snapshot` or `group snapshot`.
        kind: &'static str,
        /// Content name.
        content: String,
    },
    /// Exactly one of the two class parameters is present.
    #[error("either name and namespace for {kind} secrets specified, both must be specified")]
    HalfSpecified {
        /// Which secret (e.g. `snapshotter-list`).
        kind: &'static str,
    },
    /// Both parameters present, one of them empty.
    #[error("{0} is empty")]
    EmptyTemplate(String),
    /// A `${…}` reference that is not available here.
    #[error("{template} contains invalid tokens: {}", quote_list(.tokens))]
    InvalidTokens {
        /// The template as written.
        template: String,
        /// The unknown reference names.
        tokens: Vec<String>,
    },
    /// The expansion is not a DNS-1123 label.
    #[error("{template} resolved to \"{value}\" which is not a valid namespace name")]
    InvalidNamespace {
        /// The template as written.
        template: String,
        /// The expanded value.
        value: String,
    },
    /// The expansion is not a DNS-1123 subdomain.
    #[error("{template} resolved to \"{value}\" which is not a valid secret name")]
    InvalidName {
        /// The template as written.
        template: String,
        /// The expanded value.
        value: String,
    },
}

fn quote_list(tokens: &[String]) -> String {
    let inner: Vec<String> = tokens.iter().map(|t| format!("\"{t}\"")).collect();
    format!("[{}]", inner.join(" "))
}

/// Which annotation pair to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnotationSecret {
    /// `snapshot.storage.kubernetes.io/deletion-secret-*` on a VSC.
    Snapshot,
    /// `groupsnapshot.storage.kubernetes.io/deletion-secret-*` on a VGSC.
    Group,
}

/// The secret named by the deletion-secret annotations (create, delete and
/// member polls). Both absent (or only one present, as upstream): no secret.
/// Both present and one empty: an error.
pub fn from_annotations(
    meta: &ObjectMeta,
    which: AnnotationSecret,
) -> Result<Option<SecretRef>, SecretRefError> {
    let (name_key, ns_key, kind) = match which {
        AnnotationSecret::Snapshot => (
            keys::ANN_DELETION_SECRET_NAME,
            keys::ANN_DELETION_SECRET_NAMESPACE,
            "snapshot",
        ),
        AnnotationSecret::Group => (
            keys::ANN_GROUP_DELETION_SECRET_NAME,
            keys::ANN_GROUP_DELETION_SECRET_NAMESPACE,
            "group snapshot",
        ),
    };
    match (annotation(meta, name_key), annotation(meta, ns_key)) {
        (Some(name), Some(namespace)) => {
            if name.is_empty() || namespace.is_empty() {
                Err(SecretRefError::EmptyAnnotation {
                    kind,
                    content: meta.name.clone().unwrap_or_default(),
                })
            } else {
                Ok(Some(SecretRef {
                    name: name.to_owned(),
                    namespace: namespace.to_owned(),
                }))
            }
        }
        _ => Ok(None),
    }
}

/// Which class-parameter secret the sidecar resolves itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassSecret {
    /// VSClass `snapshotter-list-secret-*` (ListSnapshots).
    SnapshotList,
    /// VGSClass `group-snapshotter-get-secret-*` (GetVolumeGroupSnapshot).
    GroupGet,
}

impl ClassSecret {
    fn keys(self) -> (&'static str, &'static str, &'static str) {
        match self {
            ClassSecret::SnapshotList => (
                keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAME,
                keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAMESPACE,
                "snapshotter-list",
            ),
            ClassSecret::GroupGet => (
                keys::PARAM_GROUP_SNAPSHOTTER_GET_SECRET_NAME,
                keys::PARAM_GROUP_SNAPSHOTTER_GET_SECRET_NAMESPACE,
                "group-snapshotter-get",
            ),
        }
    }
    /// The only template variable available when the sidecar resolves it.
    fn content_variable(self) -> &'static str {
        match self {
            ClassSecret::SnapshotList => "volumesnapshotcontent.name",
            ClassSecret::GroupGet => "volumegroupsnapshotcontent.name",
        }
    }
}

/// Resolves a class secret (spec C.12): only the content-name variable is
/// defined, so any VS/VGS token is an error.
pub fn from_class_parameters(
    params: Option<&BTreeMap<String, String>>,
    which: ClassSecret,
    content_name: &str,
) -> Result<Option<SecretRef>, SecretRefError> {
    let (name_key, ns_key, kind) = which.keys();
    let empty = BTreeMap::new();
    let params = params.unwrap_or(&empty);
    let (name_t, ns_t) = match (params.get(name_key), params.get(ns_key)) {
        (None, None) => return Ok(None),
        (Some(n), Some(ns)) => (n, ns),
        _ => return Err(SecretRefError::HalfSpecified { kind }),
    };
    if name_t.is_empty() {
        return Err(SecretRefError::EmptyTemplate(name_key.into()));
    }
    if ns_t.is_empty() {
        return Err(SecretRefError::EmptyTemplate(ns_key.into()));
    }
    let vars = BTreeMap::from([(which.content_variable(), content_name)]);
    let namespace = expand(ns_t, &vars)?;
    if !is_dns1123_label(&namespace) {
        return Err(SecretRefError::InvalidNamespace {
            template: ns_t.clone(),
            value: namespace,
        });
    }
    let name = expand(name_t, &vars)?;
    if !is_dns1123_subdomain(&name) {
        return Err(SecretRefError::InvalidName {
            template: name_t.clone(),
            value: name,
        });
    }
    Ok(Some(SecretRef { name, namespace }))
}

/// Shell-like `$name` / `${name}` expansion with the reference rules of Go's
/// `os.Expand`; unknown names are collected and reported together.
pub fn expand(template: &str, vars: &BTreeMap<&str, &str>) -> Result<String, SecretRefError> {
    let bytes = template.as_bytes();
    let mut out = String::with_capacity(template.len());
    let mut invalid = Vec::new();
    let mut i = 0;
    let mut literal_start = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            out.push_str(&template[literal_start..i]);
            let (name, width) = shell_name(&template[i + 1..]);
            match name {
                Some(name) => match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => invalid.push(name.to_owned()),
                },
                // `$` not followed by a name stays as it is.
                None if width == 0 => out.push('$'),
                // Bad syntax such as `${}`: the characters are dropped.
                None => {}
            }
            i += 1 + width;
            literal_start = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&template[literal_start..]);
    if invalid.is_empty() {
        Ok(out)
    } else {
        Err(SecretRefError::InvalidTokens {
            template: template.to_owned(),
            tokens: invalid,
        })
    }
}

fn is_special(b: u8) -> bool {
    matches!(
        b,
        b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9'
    )
}

/// The reference after a `$`: the name (if any) and how many bytes it spans.
fn shell_name(s: &str) -> (Option<&str>, usize) {
    let b = s.as_bytes();
    if b[0] == b'{' {
        if b.len() > 2 && is_special(b[1]) && b[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        return match s[1..].find('}') {
            Some(0) => (None, 2),
            Some(end) => (Some(&s[1..1 + end]), end + 2),
            None => (None, 1),
        };
    }
    if is_special(b[0]) {
        return (Some(&s[..1]), 1);
    }
    let end = b
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
        .unwrap_or(b.len());
    if end == 0 {
        (None, 0)
    } else {
        (Some(&s[..end]), end)
    }
}

/// DNS-1123 label: at most 63 characters of `[a-z0-9-]`, alphanumeric at
/// both ends.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && alnum_ends(s)
}

/// DNS-1123 subdomain: at most 253 characters of `[a-z0-9.-]`, made of
/// labels that start and end with an alphanumeric.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && alnum_ends(part)
        })
}

fn alnum_ends(s: &str) -> bool {
    let ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = s.as_bytes();
    ok(b[0]) && ok(b[b.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::string_map as params;

    fn meta(pairs: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some("snapcontent-1".into()),
            annotations: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn h04_empty_deletion_secret_annotations_are_an_error() {
        for (name, ns) in [("", "ns"), ("n", ""), ("", "")] {
            let m = meta(&[
                (keys::ANN_DELETION_SECRET_NAME, name),
                (keys::ANN_DELETION_SECRET_NAMESPACE, ns),
            ]);
            let err = from_annotations(&m, AnnotationSecret::Snapshot).unwrap_err();
            assert!(
                err.to_string()
                    .contains("secret name or namespace not specified"),
                "{err}"
            );
        }
    }

    #[test]
    fn h36_annotation_credentials() {
        // none → no credentials
        assert_eq!(
            from_annotations(&meta(&[]), AnnotationSecret::Group),
            Ok(None)
        );
        // empty name → error
        let m = meta(&[
            (keys::ANN_GROUP_DELETION_SECRET_NAME, ""),
            (keys::ANN_GROUP_DELETION_SECRET_NAMESPACE, "ns"),
        ]);
        assert!(from_annotations(&m, AnnotationSecret::Group).is_err());
        // valid pair → that secret
        let m = meta(&[
            (keys::ANN_GROUP_DELETION_SECRET_NAME, "sec"),
            (keys::ANN_GROUP_DELETION_SECRET_NAMESPACE, "ns"),
        ]);
        assert_eq!(
            from_annotations(&m, AnnotationSecret::Group),
            Ok(Some(SecretRef {
                name: "sec".into(),
                namespace: "ns".into()
            }))
        );
        // the snapshot pair is not read for groups
        let m = meta(&[
            (keys::ANN_DELETION_SECRET_NAME, "sec"),
            (keys::ANN_DELETION_SECRET_NAMESPACE, "ns"),
        ]);
        assert_eq!(from_annotations(&m, AnnotationSecret::Group), Ok(None));
    }

    #[test]
    fn h22_get_secret_reference() {
        let list = |p: &[(&str, &str)]| {
            from_class_parameters(Some(&params(p)), ClassSecret::SnapshotList, "snapcontent-1")
        };
        // no parameters → no secret
        assert_eq!(
            from_class_parameters(None, ClassSecret::SnapshotList, "c"),
            Ok(None)
        );
        assert_eq!(list(&[]), Ok(None));
        // only a namespace → error
        assert!(matches!(
            list(&[(keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAMESPACE, "ns")]),
            Err(SecretRefError::HalfSpecified { .. })
        ));
        // plain values are returned as they are
        assert_eq!(
            list(&[
                (keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAME, "name"),
                (keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAMESPACE, "ns"),
            ]),
            Ok(Some(SecretRef {
                name: "name".into(),
                namespace: "ns".into()
            }))
        );
        // a space in the name → error
        assert!(matches!(
            list(&[
                (keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAME, "bad name"),
                (keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAMESPACE, "ns"),
            ]),
            Err(SecretRefError::InvalidName { .. })
        ));
        // an unsupported token → error
        let err = list(&[
            (
                keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAME,
                "${volumesnapshot.annotations['akey']}",
            ),
            (keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAMESPACE, "ns"),
        ])
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("invalid tokens: [\"volumesnapshot.annotations['akey']\"]"),
            "{err}"
        );
    }

    #[test]
    fn content_name_is_the_only_variable() {
        let p = params(&[
            (
                keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAME,
                "sec-${volumesnapshotcontent.name}",
            ),
            (
                keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAMESPACE,
                "${volumesnapshotcontent.name}",
            ),
        ]);
        assert_eq!(
            from_class_parameters(Some(&p), ClassSecret::SnapshotList, "c1"),
            Ok(Some(SecretRef {
                name: "sec-c1".into(),
                namespace: "c1".into()
            }))
        );
        for token in ["${volumesnapshot.name}", "${volumesnapshot.namespace}"] {
            let p = params(&[
                (keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAME, "n"),
                (keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAMESPACE, token),
            ]);
            assert!(matches!(
                from_class_parameters(Some(&p), ClassSecret::SnapshotList, "c1"),
                Err(SecretRefError::InvalidTokens { .. })
            ));
        }
        let p = params(&[
            (
                keys::PARAM_GROUP_SNAPSHOTTER_GET_SECRET_NAME,
                "${volumegroupsnapshotcontent.name}",
            ),
            (keys::PARAM_GROUP_SNAPSHOTTER_GET_SECRET_NAMESPACE, "ns"),
        ]);
        assert_eq!(
            from_class_parameters(Some(&p), ClassSecret::GroupGet, "g1"),
            Ok(Some(SecretRef {
                name: "g1".into(),
                namespace: "ns".into()
            }))
        );
    }

    #[test]
    fn empty_template_values_are_errors() {
        let p = params(&[
            (keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAME, ""),
            (keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAMESPACE, "ns"),
        ]);
        assert!(matches!(
            from_class_parameters(Some(&p), ClassSecret::SnapshotList, "c"),
            Err(SecretRefError::EmptyTemplate(_))
        ));
    }

    #[test]
    fn expansion_follows_shell_reference_rules() {
        let vars = BTreeMap::from([("a", "X"), ("a.b", "Y")]);
        let table = [
            ("plain", Ok("plain".to_string())),
            ("$a-${a.b}", Ok("X-Y".to_string())),
            ("trailing$", Ok("trailing$".to_string())),
            ("x$.y", Ok("x$.y".to_string())),
            ("x${}y", Ok("xy".to_string())),
        ];
        for (t, want) in table {
            assert_eq!(expand(t, &vars), want, "{t}");
        }
        assert!(expand("$zzz", &vars).is_err());
        assert!(expand("${a.c}", &vars).is_err());
    }

    #[test]
    fn dns_validation() {
        assert!(is_dns1123_label("ns-1"));
        assert!(!is_dns1123_label("Ns"));
        assert!(!is_dns1123_label("-ns"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_subdomain("bad name"));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
    }
}
