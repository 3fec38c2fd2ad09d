//! Decisions that are the same for VolumeSnapshotContents and
//! VolumeGroupSnapshotContents (spec C.2 and D.2), checked by one table run
//! over both kinds. What differs between the kinds stays in
//! `reconcile_content.rs` and `reconcile_group.rs`.

use csi_snapshotter::k8s::keys;
use csi_snapshotter::k8s::types::{
    VolumeGroupSnapshotClass, VolumeGroupSnapshotContent, VolumeSnapshotClass,
    VolumeSnapshotContent,
};
use csi_snapshotter::reconcile::content::decide;
use csi_snapshotter::reconcile::group::decide_group;
use csi_snapshotter::reconcile::messages::Attempt;
use csi_snapshotter::reconcile::{CreateMark, Decision, patch, requeue_after_success};

use serde_json::{Value, json};

mod reconcile_support;

use reconcile_support::{DRIVER, caps, cfg, dynamic_vgsc, dynamic_vsc};

/// A decision reduced to what both kinds share.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ignore,
    Done,
    RemoveBeingCreated {
        annotation: String,
        requeue: bool,
    },
    Delete {
        csi_delete: bool,
        remove_finalizer: Option<Value>,
    },
    Create {
        attempt: Attempt,
        marks_in_flight: bool,
    },
    Other(&'static str),
}

fn outcome<C: CreateMark, P, X>(d: &Decision<C, P, X>) -> Outcome {
    match d {
        Decision::Ignore => Outcome::Ignore,
        Decision::Done => Outcome::Done,
        Decision::RemoveBeingCreated { patch: p, requeue } => Outcome::RemoveBeingCreated {
            annotation: annotation_of(p.to_value()),
            requeue: *requeue,
        },
        Decision::Delete(plan) => Outcome::Delete {
            csi_delete: plan.csi_delete.is_some(),
            remove_finalizer: plan.remove_finalizer.as_ref().map(|p| p.to_value()),
        },
        Decision::Create(plan) => Outcome::Create {
            attempt: plan.attempt(),
            marks_in_flight: plan.mark_in_flight().is_some(),
        },
        other => Outcome::Other(other.name()),
    }
}

/// The annotation key a `remove_annotation` patch removes, checked against
/// the patch the product builds for that key.
fn annotation_of(value: Value) -> String {
    for key in [keys::ANN_VS_BEING_CREATED, keys::ANN_VGS_BEING_CREATED] {
        if patch::remove_annotation(key).to_value() == value {
            return key.to_string();
        }
    }
    panic!("not an annotation removal: {value}");
}

/// One content kind: its JSON fixtures, keys and decision function.
struct Kind {
    name: &'static str,
    /// A dynamic content as the snapshot-controller creates it.
    dynamic: fn() -> Value,
    /// A status of a ready snapshot of this kind.
    ready_status: fn() -> Value,
    being_created: &'static str,
    being_deleted: &'static str,
    finalizer: &'static str,
    /// The class name its dynamic content names.
    class_name: &'static str,
    /// `decide` of the kind, on JSON content and an optional JSON class.
    decide: fn(&Value, Option<&Value>) -> Outcome,
    /// `requeue_after_success` of the kind, on JSON content.
    requeue: fn(&Value) -> bool,
}

const KINDS: [Kind; 2] = [
    Kind {
        name: "VolumeSnapshotContent",
        dynamic: dynamic_vsc,
        ready_status: || json!({"snapshotHandle": "snap-1", "readyToUse": true}),
        being_created: keys::ANN_VS_BEING_CREATED,
        being_deleted: keys::ANN_VS_BEING_DELETED,
        finalizer: keys::FINALIZER_VSC,
        class_name: "default-class",
        requeue: |content| {
            let content: VolumeSnapshotContent = serde_json::from_value(content.clone()).unwrap();
            requeue_after_success(&content)
        },
        decide: |content, class| {
            let content: VolumeSnapshotContent = serde_json::from_value(content.clone()).unwrap();
            let class: Option<VolumeSnapshotClass> =
                class.map(|c| serde_json::from_value(c.clone()).unwrap());
            outcome(&decide(&content, class.as_ref(), &caps(), &cfg()))
        },
    },
    Kind {
        name: "VolumeGroupSnapshotContent",
        dynamic: dynamic_vgsc,
        ready_status: || {
            json!({
                "volumeGroupSnapshotHandle": "group-1",
                "readyToUse": true,
                "volumeSnapshotInfoList": [{"snapshotHandle": "s1"}, {"snapshotHandle": "s2"}]
            })
        },
        being_created: keys::ANN_VGS_BEING_CREATED,
        being_deleted: keys::ANN_VGS_BEING_DELETED,
        finalizer: keys::FINALIZER_VGSC,
        class_name: "group-class",
        requeue: |content| {
            let content: VolumeGroupSnapshotContent =
                serde_json::from_value(content.clone()).unwrap();
            requeue_after_success(&content)
        },
        decide: |content, class| {
            let content: VolumeGroupSnapshotContent =
                serde_json::from_value(content.clone()).unwrap();
            let class: Option<VolumeGroupSnapshotClass> =
                class.map(|c| serde_json::from_value(c.clone()).unwrap());
            outcome(&decide_group(&content, class.as_ref(), &cfg()))
        },
    },
];

impl Kind {
    fn ready(&self) -> Value {
        let mut c = (self.dynamic)();
        c["status"] = (self.ready_status)();
        c
    }

    fn annotate(&self, mut c: Value, key: &str) -> Value {
        c["metadata"]["annotations"][key] = json!("yes");
        c
    }

    /// As the snapshot-controller leaves a content whose deletion it
    /// requested.
    fn being_deleted(&self, c: Value) -> Value {
        let mut c = self.annotate(c, self.being_deleted);
        c["metadata"]["deletionTimestamp"] = json!("2027-01-15T08:00:00Z");
        c
    }

    fn class_of_driver(&self, driver: &str) -> Value {
        json!({"metadata": {"name": self.class_name}, "driver": driver, "deletionPolicy": "Delete"})
    }

    fn decide(&self, content: &Value, class: Option<&Value>) -> Outcome {
        (self.decide)(content, class)
    }
}

#[test]
fn retain_removes_only_the_finalizer() {
    for k in &KINDS {
        let mut c = k.being_deleted(k.ready());
        c["spec"]["deletionPolicy"] = json!("Retain");
        assert_eq!(
            k.decide(&c, None),
            Outcome::Delete {
                csi_delete: false,
                remove_finalizer: Some(json!([
                    {"op": "test", "path": "/metadata/finalizers/0", "value": k.finalizer},
                    {"op": "remove", "path": "/metadata/finalizers/0"}
                ])),
            },
            "{}",
            k.name
        );
    }
}

#[test]
fn a_delete_policy_content_being_deleted_is_deleted_on_the_backend_first() {
    for k in &KINDS {
        let c = k.being_deleted(k.ready());
        let Outcome::Delete {
            csi_delete,
            remove_finalizer,
        } = k.decide(&c, None)
        else {
            panic!("{}: expected a delete", k.name);
        };
        assert!(csi_delete, "{}", k.name);
        assert!(remove_finalizer.is_some(), "{}", k.name);
    }
}

#[test]
fn ready_with_a_leftover_being_created_annotation_removes_it_without_requeue() {
    for k in &KINDS {
        let c = k.annotate(k.ready(), k.being_created);
        assert_eq!(
            k.decide(&c, None),
            Outcome::RemoveBeingCreated {
                annotation: k.being_created.to_string(),
                requeue: false
            },
            "{}",
            k.name
        );
        assert_eq!(k.decide(&k.ready(), None), Outcome::Done, "{}", k.name);
    }
}

#[test]
fn other_drivers_are_ignored() {
    for k in &KINDS {
        let mut c = k.ready();
        c["spec"]["driver"] = json!("other");
        assert_eq!(k.decide(&c, None), Outcome::Ignore, "{}", k.name);
        let other_class = k.class_of_driver("other");
        assert_eq!(
            k.decide(&(k.dynamic)(), Some(&other_class)),
            Outcome::Ignore,
            "{}: a class of another driver",
            k.name
        );
        assert_eq!(
            k.decide(&json!({}), None),
            Outcome::Ignore,
            "{}: an object without a driver",
            k.name
        );
        // The same content with this driver is acted on.
        assert_ne!(
            k.decide(&(k.dynamic)(), None),
            Outcome::Ignore,
            "{}",
            k.name
        );
    }
}

#[test]
fn a_dynamic_content_not_ready_yet_is_created_again_and_requeued_until_ready() {
    for k in &KINDS {
        let class = k.class_of_driver(DRIVER);
        // The first attempt marks the content as being created.
        assert_eq!(
            k.decide(&(k.dynamic)(), Some(&class)),
            Outcome::Create {
                attempt: Attempt::First,
                marks_in_flight: true
            },
            "{}",
            k.name
        );
        let mut not_ready = k.annotate(k.ready(), k.being_created);
        not_ready["status"]["readyToUse"] = json!(false);
        assert_eq!(
            k.decide(&not_ready, Some(&class)),
            Outcome::Create {
                attempt: Attempt::Recheck,
                marks_in_flight: false
            },
            "{}",
            k.name
        );
        assert!((k.requeue)(&not_ready), "{}: not ready yet", k.name);
        assert!(!(k.requeue)(&k.ready()), "{}: ready", k.name);
        assert!(
            (k.requeue)(&k.being_deleted(k.ready())),
            "{}: ready, but a deletion waits",
            k.name
        );
    }
}
