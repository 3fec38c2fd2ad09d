//! CRD schema checks of the embedded API server against the upstream
//! snapshot CRDs: OpenAPI keywords, `x-kubernetes-validations` rules with
//! their CRD messages, the 422 wording, and pruning.
//!
//! The CRDs are read from `../shared/crds` next to the repository (or
//! `$SNAPSHOT_CRDS_DIR`); without them the tests skip.

use csi_snapshotter::testing::apiserver::schema::{
    FieldError, FieldErrorKind, Schemas, invalid_status, invalid_status_message,
};
use serde_json::{Value, json};
use std::path::PathBuf;

const SNAP: &str = "snapshot.storage.k8s.io";
const GROUP: &str = "groupsnapshot.storage.k8s.io";

fn crds_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("SNAPSHOT_CRDS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/crds"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping: no CRD directory at {}", dir.display());
        None
    }
}

fn schemas() -> Option<Schemas> {
    crds_dir().map(|d| Schemas::load_dir(&d).expect("CRDs load"))
}

fn vsc() -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": "snapcontent-1"},
        "spec": {
            "deletionPolicy": "Delete",
            "driver": "mock.csi.k8s.io",
            "source": {"volumeHandle": "vol-1"},
            "sourceVolumeMode": "Filesystem",
            "volumeSnapshotClassName": "csi-class",
            "volumeSnapshotRef": {"name": "snap-1", "namespace": "default", "uid": "1234"}
        },
        "status": {
            "creationTime": 1_700_000_000_000_000_000_i64,
            "readyToUse": true,
            "restoreSize": 1_073_741_824,
            "snapshotHandle": "snap-handle-1",
            "error": {"message": "boom", "time": "2024-05-01T10:00:00Z"}
        }
    })
}

fn vs() -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": "snap-1", "namespace": "default"},
        "spec": {
            "source": {"persistentVolumeClaimName": "pvc-1"},
            "volumeSnapshotClassName": "csi-class"
        },
        "status": {
            "boundVolumeSnapshotContentName": "snapcontent-1",
            "creationTime": "2024-05-01T10:00:00Z",
            "readyToUse": true,
            "restoreSize": "1Gi"
        }
    })
}

fn vsclass() -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotClass",
        "metadata": {"name": "csi-class"},
        "driver": "mock.csi.k8s.io",
        "deletionPolicy": "Retain",
        "parameters": {"csi.storage.k8s.io/snapshotter-secret-name": "secret"}
    })
}

fn vgs() -> Value {
    json!({
        "apiVersion": "groupsnapshot.storage.k8s.io/v1",
        "kind": "VolumeGroupSnapshot",
        "metadata": {"name": "group-1", "namespace": "default"},
        "spec": {
            "source": {"selector": {"matchLabels": {"app": "db"}}},
            "volumeGroupSnapshotClassName": "group-class"
        },
        "status": {
            "boundVolumeGroupSnapshotContentName": "groupcontent-1",
            "creationTime": "2024-05-01T10:00:00Z",
            "readyToUse": false
        }
    })
}

fn vgsc() -> Value {
    json!({
        "apiVersion": "groupsnapshot.storage.k8s.io/v1",
        "kind": "VolumeGroupSnapshotContent",
        "metadata": {"name": "groupcontent-1"},
        "spec": {
            "deletionPolicy": "Delete",
            "driver": "mock.csi.k8s.io",
            "source": {"volumeHandles": ["vol-1", "vol-2"]},
            "volumeGroupSnapshotClassName": "group-class",
            "volumeGroupSnapshotRef": {"name": "group-1", "namespace": "default", "uid": "u-1"}
        },
        "status": {
            "creationTime": "2024-05-01T10:00:00.123456Z",
            "readyToUse": true,
            "volumeGroupSnapshotHandle": "group-handle-1",
            "volumeSnapshotInfoList": [
                {"volumeHandle": "vol-1", "snapshotHandle": "s-1", "creationTime": 1, "readyToUse": true, "restoreSize": 10}
            ]
        }
    })
}

fn vgsclass() -> Value {
    json!({
        "apiVersion": "groupsnapshot.storage.k8s.io/v1",
        "kind": "VolumeGroupSnapshotClass",
        "metadata": {"name": "group-class"},
        "driver": "mock.csi.k8s.io",
        "deletionPolicy": "Delete",
        "parameters": {"a": "b"}
    })
}

/// Sets the value at a JSON pointer; the parent object must exist.
fn set(mut obj: Value, ptr: &str, v: Value) -> Value {
    let (parent, key) = ptr.rsplit_once('/').expect("pointer with a key");
    obj.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent object")
        .insert(key.to_string(), v);
    obj
}

fn remove(mut obj: Value, ptr: &str) -> Value {
    let (parent, key) = ptr.rsplit_once('/').expect("pointer with a key");
    obj.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent object")
        .remove(key);
    obj
}

fn errors_of(r: Result<(), Vec<FieldError>>) -> Vec<String> {
    r.err()
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn loads_every_served_version_and_discovery_facts() {
    let Some(s) = schemas() else { return };
    assert_eq!(s.crds().len(), 6);
    for (group, version, plural) in [
        (SNAP, "v1", "volumesnapshots"),
        (SNAP, "v1", "volumesnapshotcontents"),
        (SNAP, "v1", "volumesnapshotclasses"),
        (GROUP, "v1", "volumegroupsnapshots"),
        (GROUP, "v1beta1", "volumegroupsnapshotcontents"),
        (GROUP, "v1beta2", "volumegroupsnapshotclasses"),
    ] {
        assert!(s.has(group, version, plural), "{group}/{version} {plural}");
    }
    // v1beta1 of the snapshot group is declared but not served.
    assert!(!s.has(SNAP, "v1beta1", "volumesnapshotcontents"));
    let vsc = s.crd(SNAP, "volumesnapshotcontents").expect("VSC CRD");
    assert_eq!(vsc.kind, "VolumeSnapshotContent");
    assert!(!vsc.namespaced);
    assert!(
        vsc.versions
            .iter()
            .any(|v| v.name == "v1" && v.storage && v.status_subresource)
    );
    assert!(s.crd(SNAP, "volumesnapshots").expect("VS CRD").namespaced);
    // Every rule in these CRDs is inside the supported subset.
    assert_eq!(s.ignored_rules(), &[]);
}

#[test]
fn valid_objects_of_each_kind_pass() {
    let Some(s) = schemas() else { return };
    for (group, plural, obj) in [
        (SNAP, "volumesnapshotcontents", vsc()),
        (SNAP, "volumesnapshots", vs()),
        (SNAP, "volumesnapshotclasses", vsclass()),
        (GROUP, "volumegroupsnapshots", vgs()),
        (GROUP, "volumegroupsnapshotcontents", vgsc()),
        (GROUP, "volumegroupsnapshotclasses", vgsclass()),
    ] {
        assert_eq!(s.validate(group, "v1", plural, &obj), Ok(()), "{plural}");
        assert_eq!(
            s.validate_update(group, "v1", plural, &obj, &obj),
            Ok(()),
            "{plural}"
        );
    }
    // A pre-provisioned content names a snapshot handle instead.
    let pre = set(vsc(), "/spec/source", json!({"snapshotHandle": "h"}));
    assert_eq!(
        s.validate(SNAP, "v1", "volumesnapshotcontents", &pre),
        Ok(())
    );
    // restoreSize on a VolumeSnapshot is int-or-string.
    let int_size = set(vs(), "/status/restoreSize", json!(1024));
    assert_eq!(s.validate(SNAP, "v1", "volumesnapshots", &int_size), Ok(()));
}

#[test]
fn vsc_with_both_handles_fails_with_the_crd_message() {
    let Some(s) = schemas() else { return };
    let both = set(vsc(), "/spec/source/snapshotHandle", json!("h"));
    let errs = s
        .validate(SNAP, "v1", "volumesnapshotcontents", &both)
        .expect_err("both handles");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].kind, FieldErrorKind::Invalid);
    assert_eq!(errs[0].field, "spec.source");
    assert_eq!(
        errs[0].to_string(),
        r#"spec.source: Invalid value: "object": exactly one of volumeHandle and snapshotHandle must be set"#
    );
    let neither = set(vsc(), "/spec/source", json!({}));
    assert_eq!(
        errors_of(s.validate(SNAP, "v1", "volumesnapshotcontents", &neither)),
        [
            r#"spec.source: Invalid value: "object": exactly one of volumeHandle and snapshotHandle must be set"#
        ]
    );
}

#[test]
fn wrong_enum_is_not_supported() {
    let Some(s) = schemas() else { return };
    let bad = set(vsc(), "/spec/deletionPolicy", json!("Foo"));
    let errs = s
        .validate(SNAP, "v1", "volumesnapshotcontents", &bad)
        .expect_err("enum");
    assert_eq!(errs[0].kind, FieldErrorKind::NotSupported);
    assert_eq!(
        errs[0].to_string(),
        r#"spec.deletionPolicy: Unsupported value: "Foo": supported values: "Delete", "Retain""#
    );
    let bad = set(vsclass(), "/deletionPolicy", json!("delete"));
    let errs = s
        .validate(SNAP, "v1", "volumesnapshotclasses", &bad)
        .expect_err("enum");
    assert_eq!(errs[0].kind, FieldErrorKind::NotSupported);
    assert_eq!(errs[0].field, "deletionPolicy");
}

#[test]
fn mistyped_fields_are_type_invalid() {
    let Some(s) = schemas() else { return };
    let bad = set(vsc(), "/status/restoreSize", json!("1Gi"));
    let errs = s
        .validate(SNAP, "v1", "volumesnapshotcontents", &bad)
        .expect_err("type");
    assert_eq!(errs[0].kind, FieldErrorKind::TypeInvalid);
    assert_eq!(
        errs[0].to_string(),
        r#"status.restoreSize: Invalid value: "string": status.restoreSize in body must be of type integer: "string""#
    );
    let bad = set(vsc(), "/status/creationTime", json!("2024-05-01T10:00:00Z"));
    let errs = s
        .validate(SNAP, "v1", "volumesnapshotcontents", &bad)
        .expect_err("type");
    assert_eq!(errs[0].kind, FieldErrorKind::TypeInvalid);
    assert_eq!(errs[0].field, "status.creationTime");
    let bad = set(vsc(), "/status/readyToUse", json!("true"));
    let errs = s
        .validate(SNAP, "v1", "volumesnapshotcontents", &bad)
        .expect_err("type");
    assert_eq!(
        errs[0].to_string(),
        r#"status.readyToUse: Invalid value: "string": status.readyToUse in body must be of type boolean: "string""#
    );
    let bad = set(vs(), "/status/restoreSize", json!(true));
    let errs = s
        .validate(SNAP, "v1", "volumesnapshots", &bad)
        .expect_err("int-or-string");
    assert_eq!(errs[0].kind, FieldErrorKind::TypeInvalid);
    assert!(
        errs[0].detail.contains("must be of type integer,string"),
        "{}",
        errs[0]
    );
}

#[test]
fn missing_driver_is_required() {
    let Some(s) = schemas() else { return };
    let bad = remove(vsc(), "/spec/driver");
    let errs = s
        .validate(SNAP, "v1", "volumesnapshotcontents", &bad)
        .expect_err("required");
    assert_eq!(errs[0].kind, FieldErrorKind::Required);
    assert_eq!(errs[0].to_string(), "spec.driver: Required value");
    let bad = remove(vgsclass(), "/driver");
    let errs = s
        .validate(GROUP, "v1", "volumegroupsnapshotclasses", &bad)
        .expect_err("required");
    assert_eq!(errs[0].to_string(), "driver: Required value");
    let bad = remove(vs(), "/spec");
    let errs = s
        .validate(SNAP, "v1", "volumesnapshots", &bad)
        .expect_err("required");
    assert_eq!(errs[0].to_string(), "spec: Required value");
}

#[test]
fn blocking_schema_errors_skip_the_rules_with_the_apiserver_note() {
    let Some(s) = schemas() else { return };
    let bad = remove(vsc(), "/spec/driver");
    let bad = set(bad, "/spec/source/snapshotHandle", json!("h"));
    let errs = s
        .validate(SNAP, "v1", "volumesnapshotcontents", &bad)
        .expect_err("invalid");
    let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(
        msgs,
        [
            "spec.driver: Required value",
            "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
        ]
    );
}

#[test]
fn vgsc_creation_time_must_be_a_date_time_string() {
    let Some(s) = schemas() else { return };
    let bad = set(vgsc(), "/status/creationTime", json!(1_700_000_000));
    let errs = s
        .validate(GROUP, "v1", "volumegroupsnapshotcontents", &bad)
        .expect_err("type");
    assert_eq!(errs[0].kind, FieldErrorKind::TypeInvalid);
    assert_eq!(
        errs[0].to_string(),
        r#"status.creationTime: Invalid value: "integer": status.creationTime in body must be of type string: "integer""#
    );
    let bad = set(vgsc(), "/status/creationTime", json!("yesterday"));
    let errs = s
        .validate(GROUP, "v1", "volumegroupsnapshotcontents", &bad)
        .expect_err("format");
    assert_eq!(errs[0].kind, FieldErrorKind::TypeInvalid);
    assert_eq!(
        errs[0].to_string(),
        r#"status.creationTime: Invalid value: "yesterday": status.creationTime in body must be of type date-time: "yesterday""#
    );
    // Items of the snapshot info list are typed too.
    let bad = set(
        vgsc(),
        "/status/volumeSnapshotInfoList",
        json!([{"volumeHandle": "v", "restoreSize": "10"}]),
    );
    let errs = s
        .validate(GROUP, "v1", "volumegroupsnapshotcontents", &bad)
        .expect_err("type");
    assert_eq!(
        errs[0].field,
        "status.volumeSnapshotInfoList[0].restoreSize"
    );
}

#[test]
fn negative_restore_size_breaks_the_minimum() {
    let Some(s) = schemas() else { return };
    let bad = set(vsc(), "/status/restoreSize", json!(-1));
    assert_eq!(
        errors_of(s.validate(SNAP, "v1", "volumesnapshotcontents", &bad)),
        [
            "status.restoreSize: Invalid value: -1: status.restoreSize in body should be greater than or equal to 0"
        ]
    );
}

#[test]
fn ref_needs_name_and_namespace() {
    let Some(s) = schemas() else { return };
    let bad = remove(vsc(), "/spec/volumeSnapshotRef/namespace");
    assert_eq!(
        errors_of(s.validate(SNAP, "v1", "volumesnapshotcontents", &bad)),
        [
            r#"spec.volumeSnapshotRef: Invalid value: "object": both spec.volumeSnapshotRef.name and spec.volumeSnapshotRef.namespace must be set"#
        ]
    );
    let bad = remove(vgsc(), "/spec/volumeGroupSnapshotRef/name");
    assert_eq!(
        errors_of(s.validate(GROUP, "v1", "volumegroupsnapshotcontents", &bad)),
        [
            r#"spec.volumeGroupSnapshotRef: Invalid value: "object": both volumeGroupSnapshotRef.name and volumeGroupSnapshotRef.namespace must be set"#
        ]
    );
}

#[test]
fn exactly_one_source_on_vs_vgs_and_vgsc() {
    let Some(s) = schemas() else { return };
    let both = set(vs(), "/spec/source/volumeSnapshotContentName", json!("c"));
    assert_eq!(
        errors_of(s.validate(SNAP, "v1", "volumesnapshots", &both)),
        [
            r#"spec.source: Invalid value: "object": exactly one of volumeSnapshotContentName and persistentVolumeClaimName must be set"#
        ]
    );
    let both = set(
        vgs(),
        "/spec/source/volumeGroupSnapshotContentName",
        json!("c"),
    );
    assert_eq!(
        errors_of(s.validate(GROUP, "v1", "volumegroupsnapshots", &both)),
        [
            r#"spec.source: Invalid value: "object": exactly one of selector and volumeGroupSnapshotContentName must be set"#
        ]
    );
    let both = set(
        vgsc(),
        "/spec/source/groupSnapshotHandles",
        json!({"volumeGroupSnapshotHandle": "g", "volumeSnapshotHandles": ["s"]}),
    );
    assert_eq!(
        errors_of(s.validate(GROUP, "v1", "volumegroupsnapshotcontents", &both)),
        [
            r#"spec.source: Invalid value: "object": exactly one of volumeHandles and groupSnapshotHandles must be set"#
        ]
    );
    let pre = set(
        vgsc(),
        "/spec/source",
        json!({"groupSnapshotHandles": {"volumeGroupSnapshotHandle": "g", "volumeSnapshotHandles": ["s"]}}),
    );
    assert_eq!(
        s.validate(GROUP, "v1", "volumegroupsnapshotcontents", &pre),
        Ok(())
    );
}

#[test]
fn class_names_must_not_be_empty() {
    let Some(s) = schemas() else { return };
    let bad = set(vs(), "/spec/volumeSnapshotClassName", json!(""));
    assert_eq!(
        errors_of(s.validate(SNAP, "v1", "volumesnapshots", &bad)),
        [
            r#"spec.volumeSnapshotClassName: Invalid value: "string": volumeSnapshotClassName must not be the empty string when set"#
        ]
    );
    let bad = set(vgs(), "/spec/volumeGroupSnapshotClassName", json!(""));
    assert_eq!(
        errors_of(s.validate(GROUP, "v1", "volumegroupsnapshots", &bad)),
        [
            r#"spec.volumeGroupSnapshotClassName: Invalid value: "string": volumeGroupSnapshotClassName must not be the empty string when set"#
        ]
    );
}

fn gsh(handle: &str) -> Value {
    json!({"groupSnapshotHandles": {"volumeGroupSnapshotHandle": handle, "volumeSnapshotHandles": ["s"]}})
}

/// Each transition rule: breaking it on update fails with the CRD message,
/// while the same object passes as a create (no old object).
#[test]
fn immutability_rules_apply_on_update_only() {
    let Some(s) = schemas() else { return };
    let vsc_src = |src: Value| set(vsc(), "/spec/source", src);
    let vs_src = |src: Value| set(vs(), "/spec/source", src);
    let vgs_src = |src: Value| set(vgs(), "/spec/source", src);
    let vgsc_src = |src: Value| set(vgsc(), "/spec/source", src);
    let cases: Vec<(&str, &str, Value, Value, &str)> = vec![
        (
            SNAP,
            "volumesnapshotcontents",
            vsc(),
            set(vsc(), "/spec/source/volumeHandle", json!("vol-2")),
            r#"spec.source.volumeHandle: Invalid value: "string": volumeHandle is immutable"#,
        ),
        (
            SNAP,
            "volumesnapshotcontents",
            vsc_src(json!({"snapshotHandle": "a"})),
            vsc_src(json!({"snapshotHandle": "b"})),
            r#"spec.source.snapshotHandle: Invalid value: "string": snapshotHandle is immutable"#,
        ),
        (
            SNAP,
            "volumesnapshotcontents",
            vsc(),
            vsc_src(json!({"snapshotHandle": "b"})),
            r#"spec.source: Invalid value: "object": volumeHandle is required once set"#,
        ),
        (
            SNAP,
            "volumesnapshotcontents",
            vsc_src(json!({"snapshotHandle": "b"})),
            vsc(),
            r#"spec.source: Invalid value: "object": snapshotHandle is required once set"#,
        ),
        (
            SNAP,
            "volumesnapshotcontents",
            vsc(),
            set(vsc(), "/spec/sourceVolumeMode", json!("Block")),
            r#"spec.sourceVolumeMode: Invalid value: "string": sourceVolumeMode is immutable"#,
        ),
        (
            SNAP,
            "volumesnapshotcontents",
            vsc(),
            remove(vsc(), "/spec/sourceVolumeMode"),
            r#"spec: Invalid value: "object": sourceVolumeMode is required once set"#,
        ),
        (
            SNAP,
            "volumesnapshots",
            vs(),
            set(
                vs(),
                "/spec/source/persistentVolumeClaimName",
                json!("pvc-2"),
            ),
            r#"spec.source.persistentVolumeClaimName: Invalid value: "string": persistentVolumeClaimName is immutable"#,
        ),
        (
            SNAP,
            "volumesnapshots",
            vs(),
            vs_src(json!({"volumeSnapshotContentName": "c"})),
            r#"spec.source: Invalid value: "object": persistentVolumeClaimName is required once set"#,
        ),
        (
            SNAP,
            "volumesnapshots",
            vs_src(json!({"volumeSnapshotContentName": "c"})),
            vs(),
            r#"spec.source: Invalid value: "object": volumeSnapshotContentName is required once set"#,
        ),
        (
            SNAP,
            "volumesnapshots",
            vs_src(json!({"volumeSnapshotContentName": "c"})),
            vs_src(json!({"volumeSnapshotContentName": "d"})),
            r#"spec.source.volumeSnapshotContentName: Invalid value: "string": volumeSnapshotContentName is immutable"#,
        ),
        (
            GROUP,
            "volumegroupsnapshotclasses",
            vgsclass(),
            set(vgsclass(), "/driver", json!("other")),
            r#"driver: Invalid value: "string": driver is immutable once set"#,
        ),
        (
            GROUP,
            "volumegroupsnapshotclasses",
            vgsclass(),
            set(vgsclass(), "/deletionPolicy", json!("Retain")),
            r#"deletionPolicy: Invalid value: "string": deletionPolicy is immutable once set"#,
        ),
        (
            GROUP,
            "volumegroupsnapshotclasses",
            vgsclass(),
            set(vgsclass(), "/parameters", json!({"a": "c"})),
            r#"parameters: Invalid value: "object": parameters are immutable once set"#,
        ),
        (
            GROUP,
            "volumegroupsnapshotcontents",
            vgsc(),
            set(vgsc(), "/spec/driver", json!("other")),
            r#"spec.driver: Invalid value: "string": driver is immutable once set"#,
        ),
        (
            GROUP,
            "volumegroupsnapshotcontents",
            vgsc(),
            set(vgsc(), "/spec/source/volumeHandles", json!(["vol-1"])),
            r#"spec.source.volumeHandles: Invalid value: "array": volumeHandles is immutable"#,
        ),
        (
            GROUP,
            "volumegroupsnapshotcontents",
            vgsc(),
            vgsc_src(gsh("g")),
            r#"spec.source: Invalid value: "object": volumeHandles is required once set"#,
        ),
        (
            GROUP,
            "volumegroupsnapshotcontents",
            vgsc_src(gsh("g")),
            vgsc_src(gsh("h")),
            r#"spec.source.groupSnapshotHandles: Invalid value: "object": groupSnapshotHandles is immutable"#,
        ),
        (
            GROUP,
            "volumegroupsnapshotcontents",
            vgsc_src(gsh("g")),
            vgsc(),
            r#"spec.source: Invalid value: "object": groupSnapshotHandles is required once set"#,
        ),
        (
            GROUP,
            "volumegroupsnapshotcontents",
            vgsc(),
            set(vgsc(), "/spec/volumeGroupSnapshotClassName", json!("x")),
            r#"spec.volumeGroupSnapshotClassName: Invalid value: "string": volumeGroupSnapshotClassName is immutable once set"#,
        ),
        (
            GROUP,
            "volumegroupsnapshotcontents",
            vgsc(),
            set(
                vgsc(),
                "/spec/volumeGroupSnapshotRef/namespace",
                json!("other"),
            ),
            r#"spec.volumeGroupSnapshotRef: Invalid value: "object": volumeGroupSnapshotRef.name and volumeGroupSnapshotRef.namespace are immutable"#,
        ),
        (
            GROUP,
            "volumegroupsnapshotcontents",
            vgsc(),
            remove(vgsc(), "/spec/volumeGroupSnapshotRef/uid"),
            r#"spec.volumeGroupSnapshotRef: Invalid value: "object": volumeGroupSnapshotRef.uid is immutable once set"#,
        ),
        (
            GROUP,
            "volumegroupsnapshotcontents",
            vgsc(),
            set(vgsc(), "/status/volumeGroupSnapshotHandle", json!("h2")),
            r#"status.volumeGroupSnapshotHandle: Invalid value: "string": volumeGroupSnapshotHandle is immutable once set"#,
        ),
        (
            GROUP,
            "volumegroupsnapshots",
            vgs(),
            set(
                vgs(),
                "/spec/source/selector",
                json!({"matchLabels": {"app": "web"}}),
            ),
            r#"spec.source.selector: Invalid value: "object": selector is immutable"#,
        ),
        (
            GROUP,
            "volumegroupsnapshots",
            vgs(),
            vgs_src(json!({"volumeGroupSnapshotContentName": "c"})),
            r#"spec.source: Invalid value: "object": selector is required once set"#,
        ),
        (
            GROUP,
            "volumegroupsnapshots",
            vgs_src(json!({"volumeGroupSnapshotContentName": "c"})),
            vgs_src(json!({"volumeGroupSnapshotContentName": "d"})),
            r#"spec.source.volumeGroupSnapshotContentName: Invalid value: "string": volumeGroupSnapshotContentName is immutable"#,
        ),
        (
            GROUP,
            "volumegroupsnapshots",
            vgs_src(json!({"volumeGroupSnapshotContentName": "c"})),
            vgs(),
            r#"spec.source: Invalid value: "object": volumeGroupSnapshotContentName is required once set"#,
        ),
        (
            GROUP,
            "volumegroupsnapshots",
            vgs(),
            set(
                vgs(),
                "/status/boundVolumeGroupSnapshotContentName",
                json!("x"),
            ),
            r#"status.boundVolumeGroupSnapshotContentName: Invalid value: "string": boundVolumeGroupSnapshotContentName is immutable once set"#,
        ),
    ];
    for (group, plural, old, new, want) in cases {
        assert_eq!(
            s.validate(group, "v1", plural, &new),
            Ok(()),
            "create of {want}"
        );
        let got = errors_of(s.validate_update(group, "v1", plural, &new, &old));
        assert!(got.iter().any(|g| g == want), "want {want}\n got {got:?}");
    }
}

#[test]
fn setting_an_unset_field_is_allowed_on_update() {
    let Some(s) = schemas() else { return };
    // "immutable once set": an old object without the field may gain it.
    let old = remove(vgsc(), "/status/volumeGroupSnapshotHandle");
    assert_eq!(
        s.validate_update(GROUP, "v1", "volumegroupsnapshotcontents", &vgsc(), &old),
        Ok(())
    );
    let old = remove(vgsc(), "/spec/volumeGroupSnapshotRef/uid");
    assert_eq!(
        s.validate_update(GROUP, "v1", "volumegroupsnapshotcontents", &vgsc(), &old),
        Ok(())
    );
    // The sidecar's own status updates change only status fields.
    let new = set(vsc(), "/status/readyToUse", json!(false));
    assert_eq!(
        s.validate_update(SNAP, "v1", "volumesnapshotcontents", &new, &vsc()),
        Ok(())
    );
}

#[test]
fn beta_versions_carry_their_own_rules() {
    let Some(s) = schemas() else { return };
    let mut obj = vgsc();
    obj["apiVersion"] = json!("groupsnapshot.storage.k8s.io/v1beta1");
    let both = set(
        obj,
        "/spec/source/groupSnapshotHandles",
        gsh("g")["groupSnapshotHandles"].clone(),
    );
    let errs = s
        .validate(GROUP, "v1beta1", "volumegroupsnapshotcontents", &both)
        .expect_err("rule");
    assert!(
        errs[0].detail.starts_with("exactly one of volumeHandles"),
        "{}",
        errs[0]
    );
}

#[test]
fn status_message_and_causes_have_the_apiserver_shape() {
    let Some(s) = schemas() else { return };
    let bad = set(vsc(), "/spec/deletionPolicy", json!("Foo"));
    let errs = s
        .validate(SNAP, "v1", "volumesnapshotcontents", &bad)
        .expect_err("enum");
    assert_eq!(
        invalid_status_message("VolumeSnapshotContent", SNAP, "snapcontent-1", &errs),
        r#"VolumeSnapshotContent.snapshot.storage.k8s.io "snapcontent-1" is invalid: [spec.deletionPolicy: Unsupported value: "Foo": supported values: "Delete", "Retain", <nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation]"#
    );
    let status = invalid_status("VolumeSnapshotContent", SNAP, "snapcontent-1", &errs);
    assert_eq!(status["code"], 422);
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["details"]["kind"], "VolumeSnapshotContent");
    assert_eq!(
        status["details"]["causes"][0],
        json!({
            "reason": "FieldValueNotSupported",
            "message": r#"Unsupported value: "Foo": supported values: "Delete", "Retain""#,
            "field": "spec.deletionPolicy"
        })
    );
    let bad = set(vsc(), "/status/restoreSize", json!("x"));
    let errs = s
        .validate(SNAP, "v1", "volumesnapshotcontents", &bad)
        .expect_err("type");
    let status = invalid_status("VolumeSnapshotContent", SNAP, "snapcontent-1", &errs);
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueTypeInvalid"
    );
    let bad = remove(vsc(), "/spec/driver");
    let errs = s
        .validate(SNAP, "v1", "volumesnapshotcontents", &bad)
        .expect_err("required");
    let status = invalid_status("VolumeSnapshotContent", SNAP, "snapcontent-1", &errs);
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueRequired"
    );
    let bad = set(vsc(), "/spec/source/snapshotHandle", json!("h"));
    let errs = s
        .validate(SNAP, "v1", "volumesnapshotcontents", &bad)
        .expect_err("rule");
    assert_eq!(
        invalid_status_message("VolumeSnapshotContent", SNAP, "snapcontent-1", &errs),
        r#"VolumeSnapshotContent.snapshot.storage.k8s.io "snapcontent-1" is invalid: spec.source: Invalid value: "object": exactly one of volumeHandle and snapshotHandle must be set"#
    );
    let status = invalid_status("VolumeSnapshotContent", SNAP, "snapcontent-1", &errs);
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueInvalid"
    );
}

#[test]
fn pruning_drops_unknown_fields_silently() {
    let Some(s) = schemas() else { return };
    let mut obj = vsc();
    obj["spec"]["drvier"] = json!("typo");
    obj["spec"]["source"]["volumeHandel"] = json!("typo");
    obj["status"]["extra"] = json!({"a": 1});
    obj["topLevel"] = json!(1);
    obj["metadata"]["labels"] = json!({"keep": "me"});
    // A null for a non-nullable field is dropped too, without being "unknown".
    obj["status"]["error"] = Value::Null;
    let mut pruned = s.prune(SNAP, "v1", "volumesnapshotcontents", &mut obj);
    let want = remove(vsc(), "/status/error");
    assert_eq!(obj, set(want, "/metadata/labels", json!({"keep": "me"})));
    pruned.sort();
    assert_eq!(
        pruned,
        [
            "spec.drvier",
            "spec.source.volumeHandel",
            "status.extra",
            "topLevel"
        ]
    );
    // Map values (class parameters) are kept; unknown fields inside list items go.
    let mut class = vsclass();
    assert!(
        s.prune(SNAP, "v1", "volumesnapshotclasses", &mut class)
            .is_empty()
    );
    assert_eq!(class, vsclass());
    let mut content = vgsc();
    content["status"]["volumeSnapshotInfoList"][0]["bogus"] = json!(true);
    let pruned = s.prune(GROUP, "v1", "volumegroupsnapshotcontents", &mut content);
    assert_eq!(pruned, ["status.volumeSnapshotInfoList[0].bogus"]);
    assert_eq!(content, vgsc());
}

/// A small CRD exercising the keywords the snapshot CRDs do not use.
const SYNTHETIC: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: not-a-crd
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              name: {type: string, minLength: 2, maxLength: 5}
              tags: {type: array, maxItems: 2, minItems: 1, items: {type: string}, x-kubernetes-list-type: set}
              note: {type: string, nullable: true}
              size: {type: string, pattern: '^[0-9]+$'}
              free:
                type: object
                x-kubernetes-preserve-unknown-fields: true
                properties:
                  inner:
                    type: object
                    properties:
                      known: {type: string}
              count: {x-kubernetes-int-or-string: true, anyOf: [{type: integer}, {type: string}]}
              limit: {type: integer, maximum: 10}
              flag: {type: boolean, x-kubernetes-validations: [{rule: "self.all(x, x)"}]}
              guarded:
                type: string
                x-kubernetes-validations:
                - rule: "self != 'forbidden'"
"#;

fn synthetic() -> Schemas {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("widgets.yaml"), SYNTHETIC).expect("write");
    std::fs::write(dir.path().join("README.md"), "not yaml: [").expect("write");
    Schemas::load_dir(dir.path()).expect("load")
}

fn widget(spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec})
}

#[test]
fn lengths_items_patterns_and_nullable() {
    let s = synthetic();
    // The note about skipped rules (this CRD has rules) is checked once
    // below and left out of the other comparisons.
    let check = |spec: Value| {
        let mut errs = errors_of(s.validate("example.com", "v1", "widgets", &widget(spec)));
        errs.retain(|e| !e.starts_with("<nil>: "));
        errs
    };
    let all = errors_of(s.validate(
        "example.com",
        "v1",
        "widgets",
        &widget(json!({"name": "abcdef"})),
    ));
    assert!(
        all.last()
            .is_some_and(|e| e.contains("some validation rules were not checked")),
        "{all:?}"
    );
    let ok =
        json!({"name": "abc", "tags": ["a"], "note": null, "size": "12", "count": 3, "limit": 10});
    assert_eq!(check(ok), Vec::<String>::new());
    assert_eq!(check(json!({"count": "3"})), Vec::<String>::new());
    assert_eq!(
        check(json!({"name": "abcdef"})),
        ["spec.name: Too long: may not be more than 5 bytes"]
    );
    assert_eq!(
        check(json!({"name": "a"})),
        [r#"spec.name: Invalid value: "a": spec.name in body should be at least 2 chars long"#]
    );
    assert_eq!(
        check(json!({"tags": ["a", "b", "c"]}))[0],
        "spec.tags: Too many: 3: must have at most 2 items"
    );
    assert_eq!(
        check(json!({"tags": []})),
        ["spec.tags: Invalid value: []: spec.tags in body should have at least 1 items"]
    );
    assert_eq!(
        check(json!({"tags": ["a", "a"]})),
        [r#"spec.tags[1]: Duplicate value: "a""#]
    );
    assert_eq!(
        check(json!({"name": null})),
        [r#"spec.name: Invalid value: "null": spec.name in body must be of type string: "null""#]
    );
    assert_eq!(
        check(json!({"size": "1Gi"})),
        [r#"spec.size: Invalid value: "1Gi": spec.size in body should match '^[0-9]+$'"#]
    );
    assert_eq!(
        check(json!({"limit": 11})),
        ["spec.limit: Invalid value: 11: spec.limit in body should be less than or equal to 10"]
    );
    let count = check(json!({"count": 1.5}));
    assert!(
        count
            .iter()
            .any(|e| e.contains("must be of type integer,string")),
        "{count:?}"
    );
}

#[test]
fn rules_without_message_and_unsupported_rules() {
    let s = synthetic();
    let ignored = s.ignored_rules();
    assert_eq!(ignored.len(), 1);
    assert_eq!(ignored[0].field, "spec.flag");
    assert_eq!(ignored[0].rule, "self.all(x, x)");
    let obj = widget(json!({"guarded": "forbidden", "flag": true}));
    assert_eq!(
        errors_of(s.validate("example.com", "v1", "widgets", &obj)),
        [r#"spec.guarded: Invalid value: "string": failed rule: self != 'forbidden'"#]
    );
    assert!(
        s.crd("example.com", "widgets")
            .is_some_and(|c| c.namespaced)
    );
    assert_eq!(s.crds().len(), 1);
}

#[test]
fn pruning_keeps_preserve_unknown_fields() {
    let s = synthetic();
    let mut obj = widget(json!({
        "name": "ab",
        "free": {"anything": {"goes": [1, 2]}, "inner": {"known": "k", "unknown": "u"}},
        "bogus": 1
    }));
    obj["spec"]["note"] = Value::Null;
    obj["spec"]["free"]["loose"] = Value::Null;
    let pruned = s.prune("example.com", "v1", "widgets", &mut obj);
    assert_eq!(pruned, ["spec.bogus", "spec.free.inner.unknown"]);
    // Nulls stay where the schema allows them (nullable, or unknown but preserved).
    assert_eq!(
        obj["spec"],
        json!({"name": "ab", "note": null, "free": {"anything": {"goes": [1, 2]}, "loose": null, "inner": {"known": "k"}}})
    );
}

#[test]
fn loading_reports_bad_directories() {
    let empty = tempfile::tempdir().expect("tempdir");
    assert!(Schemas::load_dir(empty.path()).is_err());
    assert!(Schemas::load_dir(&empty.path().join("missing")).is_err());
    std::fs::write(empty.path().join("bad.yaml"), "a: [unclosed").expect("write");
    let err = Schemas::load_dir(empty.path()).expect_err("bad yaml");
    assert!(err.to_string().contains("bad.yaml"), "{err}");
}
