//! ObjectMeta validation as kube-apiserver applies it to every object:
//! names, labels, annotations and finalizers.

use serde_json::Value;

use super::resources::NameRule;
use super::status::Cause;

const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_ERR: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
/// Upstream's limit on the total size of all annotations.
const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain.
pub(crate) fn is_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !p.starts_with('-')
                && !p.ends_with('-')
        })
}

fn is_name_part(s: &str) -> bool {
    let alnum = |c: Option<u8>| c.is_some_and(|b| b.is_ascii_alphanumeric());
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && alnum(s.bytes().next())
        && alnum(s.bytes().last())
}

fn invalid(field: String, value: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {}: {}", Value::String(value.into()), detail),
        field,
    }
}

/// Checks a qualified name (`prefix/name` or `name`) as used for label and
/// annotation keys and finalizers.
fn check_qualified(field: String, key: &str, out: &mut Vec<Cause>) {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty() || !is_subdomain(p))
    {
        out.push(invalid(
            field.clone(),
            key,
            &format!("prefix part {DNS1123_SUBDOMAIN_ERR}"),
        ));
    }
    if name.len() > 63 {
        out.push(invalid(
            field,
            key,
            "name part must be no more than 63 bytes",
        ));
    } else if !is_name_part(name) {
        out.push(invalid(field, key, QUALIFIED_NAME_ERR));
    }
}

/// Why a label selector's key or value is refused, if it is: keys are
/// qualified names, values label values (empty, or a name part).
pub(crate) fn selector_term_error(key: &str, values: &[String]) -> Option<String> {
    let mut causes = Vec::new();
    check_qualified("key".into(), key, &mut causes);
    if let Some(c) = causes.first() {
        return Some(format!("key: {}", c.message));
    }
    values
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_empty() && !is_name_part(v))
        .map(|(i, v)| {
            format!(
                "values[{i}][{key}]: Invalid value: {}: {LABEL_VALUE_ERR}",
                Value::String(v.clone())
            )
        })
}

/// Validates a name against the resource's rule.
pub(crate) fn check_name(name: &str, rule: NameRule, out: &mut Vec<Cause>) {
    let ok = match rule {
        NameRule::Subdomain => is_subdomain(name),
        NameRule::Label => is_label(name),
    };
    if !ok {
        let detail = match rule {
            NameRule::Subdomain => DNS1123_SUBDOMAIN_ERR,
            NameRule::Label => DNS1123_LABEL_ERR,
        };
        out.push(invalid("metadata.name".into(), name, detail));
    }
}

/// Validates labels, annotations and finalizers of `meta`.
pub(crate) fn check_meta(meta: &Value, out: &mut Vec<Cause>) {
    if let Some(labels) = meta.get("labels") {
        match labels.as_object() {
            Some(m) => {
                for (k, v) in m {
                    check_qualified("metadata.labels".into(), k, out);
                    match v.as_str() {
                        Some(s) if s.is_empty() || is_name_part(s) => {}
                        Some(s) if s.len() > 63 => out.push(invalid(
                            "metadata.labels".into(),
                            s,
                            "must be no more than 63 characters",
                        )),
                        Some(s) => out.push(invalid("metadata.labels".into(), s, LABEL_VALUE_ERR)),
                        None => out.push(type_invalid("metadata.labels", "string")),
                    }
                }
            }
            None if labels.is_null() => {}
            None => out.push(type_invalid("metadata.labels", "object")),
        }
    }
    if let Some(ann) = meta.get("annotations") {
        match ann.as_object() {
            Some(m) => {
                let mut total = 0;
                for (k, v) in m {
                    check_qualified("metadata.annotations".into(), &k.to_ascii_lowercase(), out);
                    match v.as_str() {
                        Some(s) => total += k.len() + s.len(),
                        None => out.push(type_invalid("metadata.annotations", "string")),
                    }
                }
                if total > TOTAL_ANNOTATION_SIZE {
                    out.push(Cause {
                        reason: "FieldValueTooLong".into(),
                        message: format!(
                            "Too long: may not be more than {TOTAL_ANNOTATION_SIZE} bytes"
                        ),
                        field: "metadata.annotations".into(),
                    });
                }
            }
            None if ann.is_null() => {}
            None => out.push(type_invalid("metadata.annotations", "object")),
        }
    }
    if let Some(f) = meta.get("finalizers") {
        match f.as_array() {
            Some(a) => {
                for (i, v) in a.iter().enumerate() {
                    match v.as_str() {
                        Some(s) => check_qualified(format!("metadata.finalizers[{i}]"), s, out),
                        None => out.push(type_invalid("metadata.finalizers", "string")),
                    }
                }
            }
            None if f.is_null() => {}
            None => out.push(type_invalid("metadata.finalizers", "array")),
        }
    }
}

fn type_invalid(field: &str, want: &str) -> Cause {
    Cause {
        reason: "FieldValueTypeInvalid".into(),
        message: format!("Invalid value: \"\": must be of type {want}"),
        field: field.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(is_subdomain("a.b-c.d"));
        assert!(!is_subdomain("A"));
        assert!(!is_subdomain("a..b"));
        assert!(!is_subdomain("-a"));
        assert!(is_label("ns-1"));
        assert!(!is_label("a.b"));
    }

    #[test]
    fn meta_checks() {
        let mut out = Vec::new();
        check_meta(
            &json!({"labels": {"ok/x": "v", "bad key": "v", "k": "bad value!"}, "finalizers": ["a.io/f", "-x"]}),
            &mut out,
        );
        let fields: Vec<&str> = out.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metadata.labels",
                "metadata.labels",
                "metadata.finalizers[1]"
            ]
        );
    }
}
