//! Every annotation, finalizer, label and class-parameter key the sidecar
//! reads or writes (spec §0). The values are part of the wire contract with
//! the snapshot-controller, so they must match upstream byte for byte.

/// Set by the sidecar on a VSC while a CreateSnapshot may still be running on
/// the storage side; blocks deletion so the backend snapshot cannot leak.
pub const ANN_VS_BEING_CREATED: &str =
    "snapshot.storage.kubernetes.io/volumesnapshot-being-created";
/// Set by the controller on a VSC when its VolumeSnapshot is being deleted.
pub const ANN_VS_BEING_DELETED: &str =
    "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted";
/// Name of the secret used for create/delete/list of a VSC.
pub const ANN_DELETION_SECRET_NAME: &str = "snapshot.storage.kubernetes.io/deletion-secret-name";
/// Namespace of the secret used for create/delete/list of a VSC.
pub const ANN_DELETION_SECRET_NAMESPACE: &str =
    "snapshot.storage.kubernetes.io/deletion-secret-namespace";
/// Marks a VSC as a member of a group snapshot; only its presence matters.
/// Note the `.k8s.io` domain and the camelCase spelling (upstream's choice).
pub const ANN_VGS_HANDLE_MEMBER: &str = "groupsnapshot.storage.k8s.io/volumeGroupSnapshotHandle";
/// Set by the sidecar on a VGSC while a CreateVolumeGroupSnapshot may still run.
pub const ANN_VGS_BEING_CREATED: &str =
    "groupsnapshot.storage.kubernetes.io/volumegroupsnapshot-being-created";
/// Set by the controller on a VGSC when its VolumeGroupSnapshot is being deleted.
pub const ANN_VGS_BEING_DELETED: &str =
    "groupsnapshot.storage.kubernetes.io/volumegroupsnapshot-being-deleted";
/// Name of the secret used for create/delete of a VGSC.
pub const ANN_GROUP_DELETION_SECRET_NAME: &str =
    "groupsnapshot.storage.kubernetes.io/deletion-secret-name";
/// Namespace of the secret used for create/delete of a VGSC.
pub const ANN_GROUP_DELETION_SECRET_NAMESPACE: &str =
    "groupsnapshot.storage.kubernetes.io/deletion-secret-namespace";

/// Finalizer the controller puts on VSCs; the sidecar only removes it.
pub const FINALIZER_VSC: &str =
    "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";
/// Finalizer the controller puts on VGSCs; the sidecar only removes it.
pub const FINALIZER_VGSC: &str =
    "groupsnapshot.storage.kubernetes.io/volumegroupsnapshotcontent-bound-protection";

/// Node ownership label used as the watch selector with `--node-deployment`.
pub const LABEL_MANAGED_BY: &str = "snapshot.storage.kubernetes.io/managed-by";

/// The annotation value the sidecar writes for its being-created markers.
pub const ANN_VALUE_YES: &str = "yes";

/// Class parameters under this prefix are reserved for the sidecar and the
/// controller and are never passed to the driver.
pub const RESERVED_PARAM_PREFIX: &str = "csi.storage.k8s.io/";

/// VSClass: secret for CreateSnapshot/DeleteSnapshot (resolved by the controller).
pub const PARAM_SNAPSHOTTER_SECRET_NAME: &str = "csi.storage.k8s.io/snapshotter-secret-name";
/// VSClass: namespace of the create/delete secret.
pub const PARAM_SNAPSHOTTER_SECRET_NAMESPACE: &str =
    "csi.storage.k8s.io/snapshotter-secret-namespace";
/// VSClass: secret for ListSnapshots (resolved by the sidecar).
pub const PARAM_SNAPSHOTTER_LIST_SECRET_NAME: &str =
    "csi.storage.k8s.io/snapshotter-list-secret-name";
/// VSClass: namespace of the list secret.
pub const PARAM_SNAPSHOTTER_LIST_SECRET_NAMESPACE: &str =
    "csi.storage.k8s.io/snapshotter-list-secret-namespace";
/// VGSClass: secret for group create/delete (resolved by the controller).
pub const PARAM_GROUP_SNAPSHOTTER_SECRET_NAME: &str =
    "csi.storage.k8s.io/group-snapshotter-secret-name";
/// VGSClass: namespace of the group create/delete secret.
pub const PARAM_GROUP_SNAPSHOTTER_SECRET_NAMESPACE: &str =
    "csi.storage.k8s.io/group-snapshotter-secret-namespace";
/// VGSClass: secret for GetVolumeGroupSnapshot (resolved by the sidecar).
pub const PARAM_GROUP_SNAPSHOTTER_GET_SECRET_NAME: &str =
    "csi.storage.k8s.io/group-snapshotter-get-secret-name";
/// VGSClass: namespace of the group get secret.
pub const PARAM_GROUP_SNAPSHOTTER_GET_SECRET_NAMESPACE: &str =
    "csi.storage.k8s.io/group-snapshotter-get-secret-namespace";

/// The only keys allowed under [`RESERVED_PARAM_PREFIX`]; any other key with
/// that prefix is an error (spec C.3 step 3).
pub const RESERVED_SECRET_PARAMS: [&str; 8] = [
    PARAM_SNAPSHOTTER_SECRET_NAME,
    PARAM_SNAPSHOTTER_SECRET_NAMESPACE,
    PARAM_SNAPSHOTTER_LIST_SECRET_NAME,
    PARAM_SNAPSHOTTER_LIST_SECRET_NAMESPACE,
    PARAM_GROUP_SNAPSHOTTER_SECRET_NAME,
    PARAM_GROUP_SNAPSHOTTER_SECRET_NAMESPACE,
    PARAM_GROUP_SNAPSHOTTER_GET_SECRET_NAME,
    PARAM_GROUP_SNAPSHOTTER_GET_SECRET_NAMESPACE,
];

/// `--extra-create-metadata`: name of the VolumeSnapshot.
pub const PARAM_VS_NAME: &str = "csi.storage.k8s.io/volumesnapshot/name";
/// `--extra-create-metadata`: namespace of the VolumeSnapshot.
pub const PARAM_VS_NAMESPACE: &str = "csi.storage.k8s.io/volumesnapshot/namespace";
/// `--extra-create-metadata`: name of the VolumeSnapshotContent.
pub const PARAM_VSC_NAME: &str = "csi.storage.k8s.io/volumesnapshotcontent/name";
/// `--extra-create-metadata`: name of the VolumeGroupSnapshot.
pub const PARAM_VGS_NAME: &str = "csi.storage.k8s.io/volumegroupsnapshot/name";
/// `--extra-create-metadata`: namespace of the VolumeGroupSnapshot.
pub const PARAM_VGS_NAMESPACE: &str = "csi.storage.k8s.io/volumegroupsnapshot/namespace";
/// `--extra-create-metadata`: name of the VolumeGroupSnapshotContent.
pub const PARAM_VGSC_NAME: &str = "csi.storage.k8s.io/volumegroupsnapshotcontent/name";

/// Deletion policy value that makes the sidecar delete the backend snapshot.
pub const DELETION_POLICY_DELETE: &str = "Delete";
/// Deletion policy value that keeps the backend snapshot.
pub const DELETION_POLICY_RETAIN: &str = "Retain";
