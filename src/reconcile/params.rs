//! Class parameters → CSI parameters (spec C.3 step 3, D.3 step 3, H.21).

use std::collections::BTreeMap;

use crate::k8s::keys;

/// A key under the reserved `csi.storage.k8s.io/` prefix that is not one of
/// the eight known secret keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "found unknown parameter key \"{0}\" with reserved namespace {prefix}",
    prefix = keys::RESERVED_PARAM_PREFIX
)]
pub struct UnknownReservedKey(pub String);

/// Removes the reserved keys. Keys without that exact prefix pass through
/// unchanged; an unknown key with the prefix is an error.
pub fn remove_prefixed_parameters(
    params: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, UnknownReservedKey> {
    let mut out = BTreeMap::new();
    for (k, v) in params {
        if k.starts_with(keys::RESERVED_PARAM_PREFIX) {
            if !keys::RESERVED_SECRET_PARAMS.contains(&k.as_str()) {
                return Err(UnknownReservedKey(k.clone()));
            }
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    Ok(out)
}

/// The object names `--extra-create-metadata` adds to a create request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraMetadata<'a> {
    /// VS or VGS name.
    pub snapshot_name: &'a str,
    /// VS or VGS namespace.
    pub snapshot_namespace: &'a str,
    /// VSC or VGSC name.
    pub content_name: &'a str,
}

/// Which of the two key sets to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataKind {
    /// `csi.storage.k8s.io/volumesnapshot…` keys.
    Snapshot,
    /// `csi.storage.k8s.io/volumegroupsnapshot…` keys.
    Group,
}

/// The parameters of a create request: stripped class parameters plus, when
/// asked for, the extra metadata keys.
pub fn create_parameters(
    class_params: Option<&BTreeMap<String, String>>,
    extra: Option<(MetadataKind, ExtraMetadata<'_>)>,
) -> Result<BTreeMap<String, String>, UnknownReservedKey> {
    let mut out = match class_params {
        Some(p) => remove_prefixed_parameters(p)?,
        None => BTreeMap::new(),
    };
    if let Some((kind, meta)) = extra {
        let (name, ns, content) = match kind {
            MetadataKind::Snapshot => (
                keys::PARAM_VS_NAME,
                keys::PARAM_VS_NAMESPACE,
                keys::PARAM_VSC_NAME,
            ),
            MetadataKind::Group => (
                keys::PARAM_VGS_NAME,
                keys::PARAM_VGS_NAMESPACE,
                keys::PARAM_VGSC_NAME,
            ),
        };
        out.insert(name.into(), meta.snapshot_name.into());
        out.insert(ns.into(), meta.snapshot_namespace.into());
        out.insert(content.into(), meta.content_name.into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::string_map as map;

    #[test]
    fn h21_remove_prefixed_parameters() {
        let ok: [(BTreeMap<String, String>, BTreeMap<String, String>); 4] = [
            (
                map(&[("csiFoo", "bar"), ("bim", "baz")]),
                map(&[("csiFoo", "bar"), ("bim", "baz")]),
            ),
            (
                map(&[(keys::PARAM_SNAPSHOTTER_SECRET_NAME, "s"), ("bim", "baz")]),
                map(&[("bim", "baz")]),
            ),
            (
                map(&[
                    (keys::PARAM_SNAPSHOTTER_SECRET_NAME, "a"),
                    (keys::PARAM_SNAPSHOTTER_SECRET_NAMESPACE, "b"),
                    (keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAME, "c"),
                    (keys::PARAM_SNAPSHOTTER_LIST_SECRET_NAMESPACE, "d"),
                ]),
                map(&[]),
            ),
            (map(&[]), map(&[])),
        ];
        for (input, want) in ok {
            assert_eq!(remove_prefixed_parameters(&input).unwrap(), want);
        }
        let err =
            remove_prefixed_parameters(&map(&[("csi.storage.k8s.io/bim", "baz")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "found unknown parameter key \"csi.storage.k8s.io/bim\" with reserved namespace csi.storage.k8s.io/"
        );
    }

    #[test]
    fn group_secret_keys_are_known_reserved_keys() {
        let input = map(&[
            (keys::PARAM_GROUP_SNAPSHOTTER_SECRET_NAME, "a"),
            (keys::PARAM_GROUP_SNAPSHOTTER_SECRET_NAMESPACE, "b"),
            (keys::PARAM_GROUP_SNAPSHOTTER_GET_SECRET_NAME, "c"),
            (keys::PARAM_GROUP_SNAPSHOTTER_GET_SECRET_NAMESPACE, "d"),
        ]);
        assert!(remove_prefixed_parameters(&input).unwrap().is_empty());
    }

    #[test]
    fn h06_non_reserved_lookalike_keys_pass_through() {
        let input = map(&[
            (keys::ANN_DELETION_SECRET_NAME, "x"),
            ("csi.storage.k8s.iox/a", "y"),
        ]);
        assert_eq!(remove_prefixed_parameters(&input).unwrap(), input);
    }

    /// H.1 for both kinds: each kind's extra metadata keys, which replace
    /// the stripped secret keys of the class (none for the group case).
    #[test]
    fn h01_extra_metadata_replaces_stripped_secret_keys() {
        let class = map(&[
            (keys::PARAM_SNAPSHOTTER_SECRET_NAME, "s"),
            (keys::PARAM_SNAPSHOTTER_SECRET_NAMESPACE, "ns"),
        ]);
        let cases = [
            (
                Some(&class),
                MetadataKind::Snapshot,
                [
                    keys::PARAM_VS_NAME,
                    keys::PARAM_VS_NAMESPACE,
                    keys::PARAM_VSC_NAME,
                ],
            ),
            (
                None,
                MetadataKind::Group,
                [
                    keys::PARAM_VGS_NAME,
                    keys::PARAM_VGS_NAMESPACE,
                    keys::PARAM_VGSC_NAME,
                ],
            ),
        ];
        for (class, kind, [name, namespace, content]) in cases {
            let extra = ExtraMetadata {
                snapshot_name: "vs",
                snapshot_namespace: "default",
                content_name: "snapcontent-1",
            };
            let got = create_parameters(class, Some((kind, extra))).unwrap();
            let want = [
                (name, "vs"),
                (namespace, "default"),
                (content, "snapcontent-1"),
            ];
            assert_eq!(got, map(&want), "{kind:?}");
        }
    }
}
