//! The one place `diagnose` calls the sidecar's decision code
//! ([`crate::reconcile`]): it asks what the sidecar would do with a content
//! now and turns the answer into the few facts a verdict needs. Keeping every
//! call here means a change of the decision API is followed in one file.

use crate::csi::driver::DriverCapabilities;
use crate::csi::error::{go_code_name, is_final_code};
use crate::k8s::types::{
    VolumeGroupSnapshotClass, VolumeGroupSnapshotContent, VolumeSnapshotClass,
    VolumeSnapshotContent,
};
use crate::reconcile::ReconcileConfig;
use crate::reconcile::content::{self, Step};
use crate::reconcile::filter;
use crate::reconcile::group::{self, GroupStep};
use crate::reconcile::params::create_parameters;
use crate::reconcile::secrets::{self, ClassSecret, SecretRef};

/// What the sidecar would do with a content now, reduced to what matters to
/// a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The sidecar of the content's driver does not act on it.
    NotHandled,
    /// Ready, nothing left to do.
    Settled,
    /// A group member waiting for its group to fill in its status.
    WaitForGroup,
    /// An input error the sidecar reports without calling the driver.
    InputError {
        /// Which input.
        kind: InputError,
        /// The `status.error.message` the sidecar writes.
        message: String,
    },
    /// Deletion is waiting for the snapshot-controller or a create
    /// (`should_delete` is false while a deletion timestamp is set).
    DeleteWaiting,
    /// The delete path cannot name its credentials.
    DeleteCredentials(String),
    /// The delete path runs: a driver call (with this secret) or only the
    /// finalizer removal.
    Delete {
        /// Whether DeleteSnapshot/DeleteVolumeGroupSnapshot is called.
        calls_driver: bool,
        /// The secret read before the call.
        secret: Option<SecretRef>,
    },
    /// A create or status poll: one driver call with this secret.
    DriverCall {
        /// The secret read before the call.
        secret: Option<SecretRef>,
    },
}

/// Which input the sidecar refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputError {
    /// The named class is not there.
    ClassNotFound,
    /// A class parameter is refused.
    ClassParameter,
    /// Anything else about the content itself.
    Content,
}

/// Capabilities assumed for the decision: those of a driver that can poll,
/// which only picks the poll method and never a different outcome.
fn assumed_caps() -> DriverCapabilities {
    DriverCapabilities {
        create_delete_snapshot: true,
        list_snapshots: true,
        get_snapshot: false,
        group_snapshots: true,
    }
}

/// The decision for a VSC as the sidecar of its own driver would take it.
pub fn content(vsc: &VolumeSnapshotContent, class: Option<&VolumeSnapshotClass>) -> Decision {
    let cfg = ReconcileConfig::new(vsc.spec.driver.clone());
    if vsc.metadata.deletion_timestamp.is_some() && !filter::should_delete(vsc) {
        return Decision::DeleteWaiting;
    }
    match content::decide(vsc, class, &assumed_caps(), &cfg) {
        Step::Ignore => Decision::NotHandled,
        Step::Done | Step::RemoveBeingCreated { .. } => Decision::Settled,
        Step::WaitForMember => Decision::WaitForGroup,
        Step::Fail(failure) => Decision::InputError {
            kind: classify(
                vsc.spec.volume_snapshot_class_name.is_some(),
                class.map(|c| c.parameters.as_ref()),
                vsc.spec.source.snapshot_handle.is_some(),
                ClassSecret::SnapshotList,
                vsc.name(),
            ),
            message: failure.message,
        },
        Step::DeleteFailed(warning) => Decision::DeleteCredentials(warning.message),
        Step::Delete(plan) => Decision::Delete {
            calls_driver: plan.csi_delete.is_some(),
            secret: plan.csi_delete.and_then(|d| d.secret_ref),
        },
        Step::Create(plan) => Decision::DriverCall {
            secret: plan.secret_ref,
        },
        Step::Poll(plan) => Decision::DriverCall {
            secret: plan.secret_ref,
        },
    }
}

/// The decision for a VGSC as the sidecar of its own driver would take it.
pub fn group_content(
    vgsc: &VolumeGroupSnapshotContent,
    class: Option<&VolumeGroupSnapshotClass>,
) -> Decision {
    let cfg = ReconcileConfig::new(vgsc.spec.driver.clone());
    if vgsc.metadata.deletion_timestamp.is_some() && !filter::should_delete_group(vgsc) {
        return Decision::DeleteWaiting;
    }
    match group::decide_group(vgsc, class, &cfg) {
        GroupStep::Ignore => Decision::NotHandled,
        GroupStep::Done | GroupStep::RemoveBeingCreated { .. } => Decision::Settled,
        // Only VSC members wait for their group; `decide_group` never says so.
        GroupStep::WaitForMember => Decision::WaitForGroup,
        GroupStep::Fail(failure) => Decision::InputError {
            kind: classify(
                vgsc.spec.volume_group_snapshot_class_name.is_some(),
                class.map(|c| c.parameters.as_ref()),
                vgsc.spec.source.group_snapshot_handles.is_some(),
                ClassSecret::GroupGet,
                vgsc.name(),
            ),
            message: failure.message,
        },
        GroupStep::DeleteFailed(warning) => Decision::DeleteCredentials(warning.message),
        GroupStep::Delete(plan) => Decision::Delete {
            calls_driver: plan.csi_delete.is_some(),
            secret: plan.csi_delete.and_then(|d| d.secret_ref),
        },
        GroupStep::Create(plan) => Decision::DriverCall {
            secret: plan.secret_ref,
        },
        GroupStep::Poll(plan) => Decision::DriverCall {
            secret: plan.secret_ref,
        },
    }
}

/// Tells which input a `Fail` step refused, with the same checks the
/// decision makes: the class lookup, then the class parameters (create) or
/// the class's secret templates (pre-provisioned poll).
fn classify(
    class_named: bool,
    class_params: Option<Option<&std::collections::BTreeMap<String, String>>>,
    pre_provisioned: bool,
    poll_secret: ClassSecret,
    content_name: &str,
) -> InputError {
    let Some(params) = class_params else {
        return if class_named {
            InputError::ClassNotFound
        } else {
            InputError::Content
        };
    };
    let refused = if pre_provisioned {
        secrets::from_class_parameters(params, poll_secret, content_name).is_err()
    } else {
        create_parameters(params, None).is_err()
    };
    if refused {
        InputError::ClassParameter
    } else {
        InputError::Content
    }
}

/// The gRPC code named in a sidecar error text (`rpc error: code = X desc
/// = …`) and whether the sidecar treats it as final, when the text has one.
pub fn grpc_code_in(message: &str) -> Option<(&'static str, bool)> {
    let rest = message.split("rpc error: code = ").nth(1)?;
    let word = rest.split_whitespace().next()?;
    (0..=16)
        .map(tonic::Code::from_i32)
        .find(|c| go_code_name(*c) == word)
        .map(|c| (go_code_name(c), is_final_code(c)))
}
