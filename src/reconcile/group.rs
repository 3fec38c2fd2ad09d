//! `decide_group` for VolumeGroupSnapshotContents (spec D.2–D.5), in the
//! same style as [`super::content`].

use std::collections::BTreeMap;

use super::filter::{is_group_driver_match, should_delete_group};
use super::messages::{self, Attempt, DeleteStage, Failure};
use super::params::MetadataKind;
use super::patch::JsonPatch;
use super::secrets::{self, AnnotationSecret, ClassSecret, SecretRef};
use super::{
    CreateErrorOutcome, CreateKind, Decision, DeletePlanOf, ReconcileConfig, create_inputs,
    delete_step, mark_in_flight, when_ready,
};
use crate::csi::error::CsiError;
use crate::k8s::keys;
use crate::k8s::types::{VolumeGroupSnapshotClass, VolumeGroupSnapshotContent};

/// What to do with one VGSC now. At most one CSI call; never
/// [`Decision::WaitForMember`].
pub type GroupStep = Decision<GroupCreatePlan, GroupPollPlan, GroupCsiDelete>;

/// Everything a CreateVolumeGroupSnapshot needs.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupCreatePlan {
    /// First attempt or re-create: picks the failure reason.
    pub attempt: Attempt,
    /// `<prefix>-<VGS UID>`.
    pub name: String,
    /// `spec.source.volumeHandles`, in order.
    pub source_volume_ids: Vec<String>,
    /// Stripped class parameters plus extra metadata.
    pub parameters: BTreeMap<String, String>,
    /// Secret to GET first; `None`: no secrets.
    pub secret_ref: Option<SecretRef>,
    /// Patch adding the group being-created annotation, when absent.
    pub mark_in_flight: Option<JsonPatch>,
}

/// A GetVolumeGroupSnapshot poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPollPlan {
    /// Group handle to ask about (status handle, else spec handle).
    pub group_snapshot_id: String,
    /// Member handles from `spec.source.groupSnapshotHandles`.
    pub snapshot_ids: Vec<String>,
    /// The handle recorded in status: the spec handle.
    pub status_handle: String,
    /// Secret to GET first; `None`: no secrets.
    pub secret_ref: Option<SecretRef>,
}

/// The group delete path.
pub type GroupDeletePlan = DeletePlanOf<GroupCsiDelete>;

/// One DeleteVolumeGroupSnapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCsiDelete {
    /// Group handle.
    pub group_snapshot_id: String,
    /// Member handles.
    pub snapshot_ids: Vec<String>,
    /// Secret to GET first; `None`: no secrets.
    pub secret_ref: Option<SecretRef>,
}

/// Errors of the handler-level checks (H.33, H.40, H.41).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupInputError {
    /// `spec.volumeGroupSnapshotRef.uid` is empty.
    #[error(
        "cannot create group snapshot. Group snapshot content {0} not bound to a group snapshot"
    )]
    NotBound(String),
    /// `spec.source.volumeHandles` is empty.
    #[error("cannot create group snapshot. No volumes found to snapshot for content {0}")]
    NoVolumes(String),
    /// No member snapshot IDs.
    #[error("no snapshots found in group snapshot content {0}")]
    NoSnapshots(String),
    /// Neither status nor spec has a group handle.
    #[error("group snapshot handle is missing for content {0}")]
    MissingHandle(String),
}

/// Decides the next step for a VGSC (spec D.2). `class` is the cache lookup
/// of `spec.volumeGroupSnapshotClassName` (`None`: unset or not found).
pub fn decide_group(
    content: &VolumeGroupSnapshotContent,
    class: Option<&VolumeGroupSnapshotClass>,
    cfg: &ReconcileConfig,
) -> GroupStep {
    if !is_group_driver_match(content, class, &cfg.driver_name) {
        return GroupStep::Ignore;
    }
    if should_delete_group(content) {
        return decide_group_delete(content);
    }
    let has_volumes = content
        .spec
        .source
        .volume_handles
        .as_ref()
        .is_some_and(|v| !v.is_empty());
    if has_volumes && content.status.is_none() {
        return plan_group_create(content, class, cfg, Attempt::First);
    }
    if content.is_ready() {
        return when_ready(&content.metadata, keys::ANN_VGS_BEING_CREATED);
    }
    if content.spec.source.group_snapshot_handles.is_some() {
        plan_group_poll(content, class)
    } else {
        plan_group_create(content, class, cfg, Attempt::Recheck)
    }
}

/// What a VGSC create reads.
const GROUP_CREATE: CreateKind = CreateKind {
    secret: AnnotationSecret::Group,
    metadata: MetadataKind::Group,
    class_resource: "volumegroupsnapshotclass.groupsnapshot.storage.k8s.io",
    class_kind: "VolumeGroupSnapshotClass",
    noun: "group snapshot",
    input_error: messages::group_create_input_error,
};

fn plan_group_create(
    content: &VolumeGroupSnapshotContent,
    class: Option<&VolumeGroupSnapshotClass>,
    cfg: &ReconcileConfig,
    attempt: Attempt,
) -> GroupStep {
    let fail = |inner: String| GroupStep::Fail(Failure::group(attempt, inner));
    let (secret_ref, parameters) = match create_inputs(
        &GROUP_CREATE,
        &content.metadata,
        content.spec.volume_group_snapshot_class_name.as_deref(),
        class.map(|c| c.parameters.as_ref()),
        &content.spec.volume_group_snapshot_ref,
        cfg,
    ) {
        Ok(inputs) => inputs,
        Err(inner) => return fail(inner),
    };
    let volumes = content
        .spec
        .source
        .volume_handles
        .clone()
        .unwrap_or_default();
    let group_name = match group_create_name(content, cfg) {
        Ok(n) => n,
        Err(e) => return fail(messages::take_group_snapshot_error(&volumes, e)),
    };
    GroupStep::Create(GroupCreatePlan {
        attempt,
        name: group_name,
        source_volume_ids: volumes,
        parameters,
        secret_ref,
        mark_in_flight: mark_in_flight(&content.metadata, keys::ANN_VGS_BEING_CREATED),
    })
}

/// The pre-RPC checks of a group create (H.40): bound, has volumes, and a
/// name can be built.
pub fn group_create_name(
    content: &VolumeGroupSnapshotContent,
    cfg: &ReconcileConfig,
) -> Result<String, String> {
    let name = content.name();
    let Some(uid) = content.group_snapshot_uid() else {
        return Err(GroupInputError::NotBound(name.into()).to_string());
    };
    if content
        .spec
        .source
        .volume_handles
        .as_ref()
        .is_none_or(Vec::is_empty)
    {
        return Err(GroupInputError::NoVolumes(name.into()).to_string());
    }
    cfg.group_snapshot_naming
        .name_for(uid)
        .map_err(|e| e.to_string())
}

fn plan_group_poll(
    content: &VolumeGroupSnapshotContent,
    class: Option<&VolumeGroupSnapshotClass>,
) -> GroupStep {
    let name = content.name();
    let fail = |inner: String| {
        GroupStep::Fail(Failure::group(
            Attempt::Recheck,
            messages::get_group_snapshot_error(name, inner),
        ))
    };
    let secret_ref = match (&content.spec.volume_group_snapshot_class_name, class) {
        (Some(class_name), None) => {
            return fail(format!(
                "failed to get group snapshot class {class_name}: volumegroupsnapshotclass.groupsnapshot.storage.k8s.io \"{class_name}\" not found"
            ));
        }
        (Some(_), Some(c)) => {
            secrets::from_class_parameters(c.parameters.as_ref(), ClassSecret::GroupGet, name)
        }
        (None, _) => Ok(None),
    };
    let secret_ref = match secret_ref {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    match group_poll_target(content) {
        Ok((group_snapshot_id, snapshot_ids, status_handle)) => GroupStep::Poll(GroupPollPlan {
            group_snapshot_id,
            snapshot_ids,
            status_handle,
            secret_ref,
        }),
        Err(e) => fail(e.to_string()),
    }
}

fn spec_group_handle(content: &VolumeGroupSnapshotContent) -> Option<&str> {
    content
        .spec
        .source
        .group_snapshot_handles
        .as_ref()
        .map(|h| h.volume_group_snapshot_handle.as_str())
        .filter(|h| !h.is_empty())
}

/// Handle, member IDs and recorded handle of a pre-provisioned poll (D.4,
/// H.41): the IDs come from the spec (empty is an error, no RPC); the handle
/// from status, else spec.
pub fn group_poll_target(
    content: &VolumeGroupSnapshotContent,
) -> Result<(String, Vec<String>, String), GroupInputError> {
    let name = content.name();
    let ids = content
        .spec
        .source
        .group_snapshot_handles
        .as_ref()
        .map(|h| h.volume_snapshot_handles.clone())
        .unwrap_or_default();
    if ids.is_empty() {
        return Err(GroupInputError::NoSnapshots(name.into()));
    }
    let spec = spec_group_handle(content);
    let Some(handle) = content.status_handle().or(spec) else {
        return Err(GroupInputError::MissingHandle(name.into()));
    };
    let record = spec.unwrap_or(handle);
    Ok((handle.to_owned(), ids, record.to_owned()))
}

/// Handle and member IDs of a group delete (D.5 steps 2–4, H.33, H.41).
pub fn group_delete_target(
    content: &VolumeGroupSnapshotContent,
) -> Result<(String, Vec<String>), GroupInputError> {
    let name = content.name();
    let from_status: Vec<String> = content
        .status
        .as_ref()
        .and_then(|s| s.volume_snapshot_info_list.as_ref())
        .map(|l| l.iter().filter_map(|i| i.snapshot_handle.clone()).collect())
        .unwrap_or_default();
    let ids = if !from_status.is_empty() {
        from_status
    } else {
        content
            .spec
            .source
            .group_snapshot_handles
            .as_ref()
            .map(|h| h.volume_snapshot_handles.clone())
            .unwrap_or_default()
    };
    if ids.is_empty() {
        return Err(GroupInputError::NoSnapshots(name.into()));
    }
    let Some(handle) = content.status_handle().or(spec_group_handle(content)) else {
        return Err(GroupInputError::MissingHandle(name.into()));
    };
    Ok((handle.to_owned(), ids))
}

fn decide_group_delete(content: &VolumeGroupSnapshotContent) -> GroupStep {
    let csi_delete = if content.is_delete_policy() && content.status_handle().is_some() {
        let secret_ref = match secrets::from_annotations(&content.metadata, AnnotationSecret::Group)
        {
            Ok(r) => r,
            Err(_) => {
                return GroupStep::DeleteFailed(messages::group_delete_warning(
                    DeleteStage::Credentials,
                ));
            }
        };
        match group_delete_target(content) {
            Ok((group_snapshot_id, snapshot_ids)) => Some(GroupCsiDelete {
                group_snapshot_id,
                snapshot_ids,
                secret_ref,
            }),
            Err(_) => {
                return GroupStep::DeleteFailed(messages::group_delete_warning(DeleteStage::Rpc));
            }
        }
    } else {
        None
    };
    delete_step(&content.metadata, keys::FINALIZER_VGSC, csi_delete)
}

/// Classifies a CreateVolumeGroupSnapshot error (D.3 step 7; C.8 applies
/// unchanged).
pub fn on_group_create_error(plan: &GroupCreatePlan, err: &CsiError) -> CreateErrorOutcome {
    CreateErrorOutcome::new(
        err,
        keys::ANN_VGS_BEING_CREATED,
        Failure::group(
            plan.attempt,
            messages::take_group_snapshot_error(&plan.source_volume_ids, err),
        ),
    )
}

/// The failure for a pre-provisioned group poll error.
pub fn group_poll_failure(
    content: &VolumeGroupSnapshotContent,
    inner: impl std::fmt::Display,
) -> Failure {
    Failure::group(
        Attempt::Recheck,
        messages::get_group_snapshot_error(content.name(), inner),
    )
}
