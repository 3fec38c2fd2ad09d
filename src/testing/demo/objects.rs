//! The objects the demo creates, shaped as the snapshot-controller creates
//! them (spec G.1, D.7): a Secret, VolumeSnapshotClasses, bound dynamic and
//! pre-provisioned VolumeSnapshotContents, and the member contents of a
//! group snapshot.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ring::digest::{SHA256, digest};

use crate::k8s::keys;
use crate::k8s::types::{
    SNAPSHOT_GROUP, VERSION_V1, VolumeSnapshotClass, VolumeSnapshotContent,
    VolumeSnapshotContentSource, VolumeSnapshotContentSpec, VolumeSnapshotContentStatus,
    VolumeSnapshotInfo,
};

/// Namespace of the VolumeSnapshots the contents are bound to, and of the
/// Secret.
pub const NAMESPACE: &str = "default";
/// The Secret holding the snapshotter credentials.
pub const SECRET_NAME: &str = "demo-snapshotter-secret";
/// A class with an ordinary parameter and a secret reference.
pub const CLASS: &str = "demo-snapclass";
/// A class carrying an unknown reserved parameter (the error case).
pub const BAD_CLASS: &str = "demo-snapclass-invalid";
/// The ordinary, driver-specific class parameter.
pub const CLASS_PARAMETER: (&str, &str) = ("type", "fast");
/// The unknown key under the reserved `csi.storage.k8s.io/` prefix.
pub const BAD_PARAMETER: (&str, &str) = ("csi.storage.k8s.io/snapshotter-typo", "oops");

/// Keys of the Secret (values are made up and never printed).
pub const SECRET_KEYS: [&str; 2] = ["password", "username"];

/// The Secret the class refers to.
pub fn secret() -> Secret {
    let data = SECRET_KEYS
        .iter()
        .map(|k| (k.to_string(), ByteString(format!("demo-{k}").into_bytes())))
        .collect::<BTreeMap<_, _>>();
    Secret {
        metadata: ObjectMeta {
            name: Some(SECRET_NAME.to_string()),
            namespace: Some(NAMESPACE.to_string()),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..Secret::default()
    }
}

/// The good class: one driver parameter plus the snapshotter secret
/// reference (which the sidecar strips before calling the driver).
pub fn class(driver: &str) -> VolumeSnapshotClass {
    let parameters = [
        CLASS_PARAMETER,
        (keys::PARAM_SNAPSHOTTER_SECRET_NAME, SECRET_NAME),
        (keys::PARAM_SNAPSHOTTER_SECRET_NAMESPACE, NAMESPACE),
    ];
    class_with(driver, CLASS, &parameters)
}

/// The class whose reserved key is unknown.
pub fn bad_class(driver: &str) -> VolumeSnapshotClass {
    class_with(driver, BAD_CLASS, &[CLASS_PARAMETER, BAD_PARAMETER])
}

fn class_with(driver: &str, name: &str, parameters: &[(&str, &str)]) -> VolumeSnapshotClass {
    VolumeSnapshotClass {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        driver: driver.to_string(),
        deletion_policy: Some(keys::DELETION_POLICY_DELETE.to_string()),
        parameters: Some(
            parameters
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
    }
}

/// A VolumeSnapshot the content is bound to.
#[derive(Debug, Clone)]
pub struct SnapshotRef {
    /// VolumeSnapshot name.
    pub name: String,
    /// VolumeSnapshot UID.
    pub uid: String,
}

impl SnapshotRef {
    /// A fresh VolumeSnapshot `name` with a new UID.
    pub fn new(name: &str) -> Self {
        SnapshotRef {
            name: name.to_string(),
            uid: uuid::Uuid::new_v4().to_string(),
        }
    }

    fn object_reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some(format!("{SNAPSHOT_GROUP}/{VERSION_V1}")),
            kind: Some("VolumeSnapshot".to_string()),
            name: Some(self.name.clone()),
            namespace: Some(NAMESPACE.to_string()),
            uid: Some(self.uid.clone()),
            ..ObjectReference::default()
        }
    }
}

/// A dynamic content `snapcontent-<VS UID>` for `volume_handle`, with the
/// bound-protection finalizer and, when `with_secret`, the deletion-secret
/// annotations the controller copies from the class.
pub fn dynamic_content(
    driver: &str,
    vs: &SnapshotRef,
    class: &str,
    volume_handle: &str,
    deletion_policy: &str,
    with_secret: bool,
) -> VolumeSnapshotContent {
    let annotations = with_secret.then(|| {
        BTreeMap::from([
            (
                keys::ANN_DELETION_SECRET_NAME.to_string(),
                SECRET_NAME.to_string(),
            ),
            (
                keys::ANN_DELETION_SECRET_NAMESPACE.to_string(),
                NAMESPACE.to_string(),
            ),
        ])
    });
    content(
        format!("snapcontent-{}", vs.uid),
        annotations,
        VolumeSnapshotContentSpec {
            deletion_policy: Some(deletion_policy.to_string()),
            driver: driver.to_string(),
            source: VolumeSnapshotContentSource {
                volume_handle: Some(volume_handle.to_string()),
                snapshot_handle: None,
            },
            source_volume_mode: None,
            volume_snapshot_class_name: Some(class.to_string()),
            volume_snapshot_ref: vs.object_reference(),
        },
    )
}

/// A pre-provisioned content for an existing backend snapshot, already
/// bound to `vs`.
pub fn preprovisioned_content(
    driver: &str,
    name: &str,
    vs: &SnapshotRef,
    snapshot_handle: &str,
    deletion_policy: &str,
) -> VolumeSnapshotContent {
    content(
        name.to_string(),
        None,
        VolumeSnapshotContentSpec {
            deletion_policy: Some(deletion_policy.to_string()),
            driver: driver.to_string(),
            source: VolumeSnapshotContentSource {
                volume_handle: None,
                snapshot_handle: Some(snapshot_handle.to_string()),
            },
            source_volume_mode: None,
            volume_snapshot_class_name: None,
            volume_snapshot_ref: vs.object_reference(),
        },
    )
}

/// `snapcontent-<hex sha256(VGS UID + volume handle)>`: the name the
/// controller gives a member content (and `snapshot-<same>` its
/// VolumeSnapshot).
pub fn member_hash(group_uid: &str, volume_handle: &str) -> String {
    digest(&SHA256, format!("{group_uid}{volume_handle}").as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A member content for one entry of a ready group's
/// `volumeSnapshotInfoList`, and the status the controller writes for it.
pub fn member_content(
    driver: &str,
    group_uid: &str,
    group_handle: &str,
    deletion_policy: &str,
    info: &VolumeSnapshotInfo,
) -> (VolumeSnapshotContent, VolumeSnapshotContentStatus) {
    let volume_handle = info.volume_handle.clone().unwrap_or_default();
    let hash = member_hash(group_uid, &volume_handle);
    let vs = SnapshotRef::new(&format!("snapshot-{hash}"));
    let annotations = BTreeMap::from([(
        keys::ANN_VGS_HANDLE_MEMBER.to_string(),
        group_handle.to_string(),
    )]);
    let object = content(
        format!("snapcontent-{hash}"),
        Some(annotations),
        VolumeSnapshotContentSpec {
            deletion_policy: Some(deletion_policy.to_string()),
            driver: driver.to_string(),
            source: VolumeSnapshotContentSource {
                volume_handle: Some(volume_handle),
                snapshot_handle: None,
            },
            source_volume_mode: None,
            volume_snapshot_class_name: None,
            volume_snapshot_ref: vs.object_reference(),
        },
    );
    let status = VolumeSnapshotContentStatus {
        creation_time: info.creation_time,
        error: None,
        ready_to_use: info.ready_to_use,
        restore_size: info.restore_size,
        snapshot_handle: info.snapshot_handle.clone(),
        volume_group_snapshot_handle: Some(group_handle.to_string()),
    };
    (object, status)
}

fn content(
    name: String,
    annotations: Option<BTreeMap<String, String>>,
    spec: VolumeSnapshotContentSpec,
) -> VolumeSnapshotContent {
    VolumeSnapshotContent {
        metadata: ObjectMeta {
            name: Some(name),
            annotations,
            finalizers: Some(vec![keys::FINALIZER_VSC.to_string()]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_hash_the_group_uid_and_volume() {
        // sha256("ab") — a fixed vector, so the hex encoding is checked.
        assert_eq!(
            member_hash("a", "b"),
            "fb8e20fc2e4c3f248c60c39bd652f3c1347298bb977b8b4d5903b85055620603"
        );
        assert_ne!(member_hash("g", "vol-1"), member_hash("g", "vol-2"));
    }

    #[test]
    fn dynamic_content_is_bound_and_protected() {
        let vs = SnapshotRef::new("snap");
        let c = dynamic_content("d", &vs, CLASS, "vol", "Retain", true);
        assert_eq!(
            c.metadata.name.as_deref(),
            Some(&*format!("snapcontent-{}", vs.uid))
        );
        assert_eq!(c.snapshot_uid(), Some(vs.uid.as_str()));
        assert_eq!(
            c.annotation(keys::ANN_DELETION_SECRET_NAME),
            Some(SECRET_NAME)
        );
        assert_eq!(
            c.metadata.finalizers,
            Some(vec![keys::FINALIZER_VSC.to_string()])
        );
    }
}
