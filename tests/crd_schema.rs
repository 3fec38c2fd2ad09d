//! CRD schema checks of the embedded API server: OpenAPI keywords,
//! `x-kubernetes-validations` rules with their CRD messages, the 422
//! wording, and pruning, for the built-in schemas and, when `../shared/crds`
//! is next to the repository, the upstream CRDs, which the built-in schemas
//! must match field for field and verdict for verdict.

#[path = "support/crds.rs"]
mod crds;

use csi_snapshotter::testing::apiserver::schema::{
    FieldError, FieldErrorKind, Schemas, invalid_status, invalid_status_message,
};
use serde_json::{Value, json};

const SNAP: &str = "snapshot.storage.k8s.io";
const GROUP: &str = "groupsnapshot.storage.k8s.io";

/// The upstream CRDs, when they are beside the checkout.
fn upstream() -> Option<Schemas> {
    crds::crd_dir().map(|d| Schemas::load_dir(&d).expect("CRDs load"))
}

/// The built-in schemas, and the upstream CRDs when present: every check
/// of the `v1` kinds holds for both.
fn every_schema_set() -> Vec<(&'static str, Schemas)> {
    let mut sets = vec![("built-in", Schemas::builtin())];
    sets.extend(upstream().map(|s| ("upstream", s)));
    sets
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
    let Some(s) = upstream() else { return };
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
    for (source, s) in every_schema_set() {
        eprintln!("checking the {source} schemas");
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
}

#[test]
fn vsc_with_both_handles_fails_with_the_crd_message() {
    for (source, s) in every_schema_set() {
        eprintln!("checking the {source} schemas");
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
}

#[test]
fn wrong_enum_is_not_supported() {
    for (source, s) in every_schema_set() {
        eprintln!("checking the {source} schemas");
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
}

#[test]
fn mistyped_fields_are_type_invalid() {
    for (source, s) in every_schema_set() {
        eprintln!("checking the {source} schemas");
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
}

#[test]
fn missing_driver_is_required() {
    for (source, s) in every_schema_set() {
        eprintln!("checking the {source} schemas");
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
}

#[test]
fn blocking_schema_errors_skip_the_rules_with_the_apiserver_note() {
    for (source, s) in every_schema_set() {
        eprintln!("checking the {source} schemas");
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
}

#[test]
fn vgsc_creation_time_must_be_a_date_time_string() {
    for (source, s) in every_schema_set() {
        eprintln!("checking the {source} schemas");
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
}

#[test]
fn negative_restore_size_breaks_the_minimum() {
    for (source, s) in every_schema_set() {
        eprintln!("checking the {source} schemas");
        let bad = set(vsc(), "/status/restoreSize", json!(-1));
        assert_eq!(
            errors_of(s.validate(SNAP, "v1", "volumesnapshotcontents", &bad)),
            [
                "status.restoreSize: Invalid value: -1: status.restoreSize in body should be greater than or equal to 0"
            ]
        );
    }
}

#[test]
fn ref_needs_name_and_namespace() {
    for (source, s) in every_schema_set() {
        eprintln!("checking the {source} schemas");
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
}

#[test]
fn exactly_one_source_on_vs_vgs_and_vgsc() {
    for (source, s) in every_schema_set() {
        eprintln!("checking the {source} schemas");
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
}

#[test]
fn class_names_must_not_be_empty() {
    for (source, s) in every_schema_set() {
        eprintln!("checking the {source} schemas");
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
}

fn gsh(handle: &str) -> Value {
    json!({"groupSnapshotHandles": {"volumeGroupSnapshotHandle": handle, "volumeSnapshotHandles": ["s"]}})
}

/// Each transition rule: breaking it on update fails with the CRD message,
/// while the same object passes as a create (no old object).
#[test]
fn immutability_rules_apply_on_update_only() {
    for (source, s) in every_schema_set() {
        eprintln!("checking the {source} schemas");
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
}

#[test]
fn setting_an_unset_field_is_allowed_on_update() {
    for (source, s) in every_schema_set() {
        eprintln!("checking the {source} schemas");
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
}

#[test]
fn beta_versions_carry_their_own_rules() {
    let Some(s) = upstream() else { return };
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
    for (source, s) in every_schema_set() {
        eprintln!("checking the {source} schemas");
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
}

#[test]
fn pruning_drops_unknown_fields_silently() {
    for (source, s) in every_schema_set() {
        eprintln!("checking the {source} schemas");
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

/// One object checked against both schema sets: created (`old` = None) or
/// updated from `old`, and whether the apiserver accepts it.
struct Case {
    what: &'static str,
    group: &'static str,
    plural: &'static str,
    new: Value,
    old: Option<Value>,
    accepted: bool,
}

fn create(what: &'static str, plural: &'static str, new: Value, accepted: bool) -> Case {
    let group = if plural.contains("group") {
        GROUP
    } else {
        SNAP
    };
    Case {
        what,
        group,
        plural,
        new,
        old: None,
        accepted,
    }
}

fn update(
    what: &'static str,
    plural: &'static str,
    old: Value,
    new: Value,
    accepted: bool,
) -> Case {
    Case {
        old: Some(old),
        ..create(what, plural, new, accepted)
    }
}

/// Valid and invalid objects of every kind: each rule, enum, type,
/// format, minimum and required field of the `v1` schemas at least once.
fn parity_cases() -> Vec<Case> {
    let vsc_p = "volumesnapshotcontents";
    let vs_p = "volumesnapshots";
    let vscl_p = "volumesnapshotclasses";
    let vgs_p = "volumegroupsnapshots";
    let vgsc_p = "volumegroupsnapshotcontents";
    let vgscl_p = "volumegroupsnapshotclasses";
    let snap_handle = remove(
        set(vsc(), "/spec/source/snapshotHandle", json!("h")),
        "/spec/source/volumeHandle",
    );
    let by_content = remove(
        set(vs(), "/spec/source/volumeSnapshotContentName", json!("c")),
        "/spec/source/persistentVolumeClaimName",
    );
    let by_group_content = remove(
        set(
            vgs(),
            "/spec/source/volumeGroupSnapshotContentName",
            json!("gc"),
        ),
        "/spec/source/selector",
    );
    let pre_provisioned_group = set(
        remove(vgsc(), "/spec/source/volumeHandles"),
        "/spec/source/groupSnapshotHandles",
        gsh("g")["groupSnapshotHandles"].clone(),
    );
    vec![
        create("valid VSC", vsc_p, vsc(), true),
        create(
            "VSC from a snapshot handle",
            vsc_p,
            snap_handle.clone(),
            true,
        ),
        create("valid VS", vs_p, vs(), true),
        create("VS from a content", vs_p, by_content.clone(), true),
        create("valid VS class", vscl_p, vsclass(), true),
        create("valid VGS", vgs_p, vgs(), true),
        create("VGS from a content", vgs_p, by_group_content.clone(), true),
        create("valid VGSC", vgsc_p, vgsc(), true),
        create(
            "pre-provisioned VGSC",
            vgsc_p,
            pre_provisioned_group.clone(),
            true,
        ),
        create("valid VGS class", vgscl_p, vgsclass(), true),
        create(
            "VS restore size as a number",
            vs_p,
            set(vs(), "/status/restoreSize", json!(5)),
            true,
        ),
        create(
            "VS restore size not a quantity",
            vs_p,
            set(vs(), "/status/restoreSize", json!("lots")),
            false,
        ),
        create(
            "VSC both handles",
            vsc_p,
            set(vsc(), "/spec/source/snapshotHandle", json!("h")),
            false,
        ),
        create(
            "VSC no handle",
            vsc_p,
            set(vsc(), "/spec/source", json!({})),
            false,
        ),
        create(
            "VSC policy enum",
            vsc_p,
            set(vsc(), "/spec/deletionPolicy", json!("Keep")),
            false,
        ),
        create("VSC without spec", vsc_p, remove(vsc(), "/spec"), false),
        create(
            "VSC without driver",
            vsc_p,
            remove(vsc(), "/spec/driver"),
            false,
        ),
        create(
            "VSC without ref",
            vsc_p,
            remove(vsc(), "/spec/volumeSnapshotRef"),
            false,
        ),
        create(
            "VSC ref without namespace",
            vsc_p,
            remove(vsc(), "/spec/volumeSnapshotRef/namespace"),
            false,
        ),
        create(
            "VSC negative restore size",
            vsc_p,
            set(vsc(), "/status/restoreSize", json!(-1)),
            false,
        ),
        create(
            "VSC creation time as a string",
            vsc_p,
            set(vsc(), "/status/creationTime", json!("2024-05-01T10:00:00Z")),
            false,
        ),
        create(
            "VSC error time not a date",
            vsc_p,
            set(vsc(), "/status/error/time", json!("yesterday")),
            false,
        ),
        create(
            "VSC ready as a string",
            vsc_p,
            set(vsc(), "/status/readyToUse", json!("yes")),
            false,
        ),
        create(
            "VSC driver as a number",
            vsc_p,
            set(vsc(), "/spec/driver", json!(7)),
            false,
        ),
        create(
            "VS both sources",
            vs_p,
            set(vs(), "/spec/source/volumeSnapshotContentName", json!("c")),
            false,
        ),
        create(
            "VS empty class name",
            vs_p,
            set(vs(), "/spec/volumeSnapshotClassName", json!("")),
            false,
        ),
        create(
            "VS without source",
            vs_p,
            remove(vs(), "/spec/source"),
            false,
        ),
        create(
            "VS creation time not a date",
            vs_p,
            set(vs(), "/status/creationTime", json!(12)),
            false,
        ),
        create(
            "VS class without driver",
            vscl_p,
            remove(vsclass(), "/driver"),
            false,
        ),
        create(
            "VS class policy enum",
            vscl_p,
            set(vsclass(), "/deletionPolicy", json!("delete")),
            false,
        ),
        create(
            "VS class parameter not a string",
            vscl_p,
            set(vsclass(), "/parameters/n", json!(1)),
            false,
        ),
        create(
            "VGS both sources",
            vgs_p,
            set(
                vgs(),
                "/spec/source/volumeGroupSnapshotContentName",
                json!("gc"),
            ),
            false,
        ),
        create(
            "VGS empty class name",
            vgs_p,
            set(vgs(), "/spec/volumeGroupSnapshotClassName", json!("")),
            false,
        ),
        create(
            "VGS expression without operator",
            vgs_p,
            set(
                vgs(),
                "/spec/source/selector/matchExpressions",
                json!([{"key": "app"}]),
            ),
            false,
        ),
        create(
            "VGS label value not a string",
            vgs_p,
            set(vgs(), "/spec/source/selector/matchLabels/app", json!(true)),
            false,
        ),
        create(
            "VGSC both sources",
            vgsc_p,
            set(
                vgsc(),
                "/spec/source/groupSnapshotHandles",
                gsh("g")["groupSnapshotHandles"].clone(),
            ),
            false,
        ),
        create(
            "VGSC group handles without snapshot handles",
            vgsc_p,
            remove(
                pre_provisioned_group.clone(),
                "/spec/source/groupSnapshotHandles/volumeSnapshotHandles",
            ),
            false,
        ),
        create(
            "VGSC ref without name",
            vgsc_p,
            remove(vgsc(), "/spec/volumeGroupSnapshotRef/name"),
            false,
        ),
        create(
            "VGSC creation time as a number",
            vgsc_p,
            set(vgsc(), "/status/creationTime", json!(1)),
            false,
        ),
        create(
            "VGSC snapshot info restore size as a string",
            vgsc_p,
            set(
                vgsc(),
                "/status/volumeSnapshotInfoList",
                json!([{"restoreSize": "10"}]),
            ),
            false,
        ),
        create(
            "VGS class without policy",
            vgscl_p,
            remove(vgsclass(), "/deletionPolicy"),
            false,
        ),
        update("VSC unchanged", vsc_p, vsc(), vsc(), true),
        update(
            "VSC status change",
            vsc_p,
            vsc(),
            set(vsc(), "/status/readyToUse", json!(false)),
            true,
        ),
        update(
            "VSC volume handle changed",
            vsc_p,
            vsc(),
            set(vsc(), "/spec/source/volumeHandle", json!("other")),
            false,
        ),
        update(
            "VSC snapshot handle changed",
            vsc_p,
            snap_handle.clone(),
            set(
                snap_handle.clone(),
                "/spec/source/snapshotHandle",
                json!("x"),
            ),
            false,
        ),
        update("VSC source switched", vsc_p, vsc(), snap_handle, false),
        update(
            "VSC volume mode changed",
            vsc_p,
            vsc(),
            set(vsc(), "/spec/sourceVolumeMode", json!("Block")),
            false,
        ),
        update(
            "VSC volume mode removed",
            vsc_p,
            vsc(),
            remove(vsc(), "/spec/sourceVolumeMode"),
            false,
        ),
        update(
            "VSC volume mode set later",
            vsc_p,
            remove(vsc(), "/spec/sourceVolumeMode"),
            vsc(),
            true,
        ),
        update(
            "VS claim changed",
            vs_p,
            vs(),
            set(vs(), "/spec/source/persistentVolumeClaimName", json!("p2")),
            false,
        ),
        update(
            "VS content changed",
            vs_p,
            by_content.clone(),
            set(
                by_content.clone(),
                "/spec/source/volumeSnapshotContentName",
                json!("c2"),
            ),
            false,
        ),
        update("VS source switched", vs_p, vs(), by_content, false),
        update(
            "VS class changed",
            vs_p,
            vs(),
            set(vs(), "/spec/volumeSnapshotClassName", json!("other")),
            true,
        ),
        update(
            "VS class policy changed",
            vscl_p,
            vsclass(),
            set(vsclass(), "/deletionPolicy", json!("Delete")),
            true,
        ),
        update(
            "VGS class policy changed",
            vgscl_p,
            vgsclass(),
            set(vgsclass(), "/deletionPolicy", json!("Retain")),
            false,
        ),
        update(
            "VGS class driver changed",
            vgscl_p,
            vgsclass(),
            set(vgsclass(), "/driver", json!("other")),
            false,
        ),
        update(
            "VGS class parameters changed",
            vgscl_p,
            vgsclass(),
            set(vgsclass(), "/parameters/a", json!("c")),
            false,
        ),
        update(
            "VGS selector changed",
            vgs_p,
            vgs(),
            set(vgs(), "/spec/source/selector/matchLabels/app", json!("web")),
            false,
        ),
        update(
            "VGS content changed",
            vgs_p,
            by_group_content.clone(),
            set(
                by_group_content.clone(),
                "/spec/source/volumeGroupSnapshotContentName",
                json!("gc2"),
            ),
            false,
        ),
        update("VGS source switched", vgs_p, by_group_content, vgs(), false),
        update(
            "VGS bound content changed",
            vgs_p,
            vgs(),
            set(
                vgs(),
                "/status/boundVolumeGroupSnapshotContentName",
                json!("x"),
            ),
            false,
        ),
        update(
            "VGSC driver changed",
            vgsc_p,
            vgsc(),
            set(vgsc(), "/spec/driver", json!("other")),
            false,
        ),
        update(
            "VGSC policy changed",
            vgsc_p,
            vgsc(),
            set(vgsc(), "/spec/deletionPolicy", json!("Retain")),
            true,
        ),
        update(
            "VGSC class changed",
            vgsc_p,
            vgsc(),
            set(vgsc(), "/spec/volumeGroupSnapshotClassName", json!("x")),
            false,
        ),
        update(
            "VGSC volume handles changed",
            vgsc_p,
            vgsc(),
            set(vgsc(), "/spec/source/volumeHandles", json!(["vol-1"])),
            false,
        ),
        update(
            "VGSC group handles changed",
            vgsc_p,
            pre_provisioned_group.clone(),
            set(
                pre_provisioned_group.clone(),
                "/spec/source/groupSnapshotHandles/volumeGroupSnapshotHandle",
                json!("g2"),
            ),
            false,
        ),
        update(
            "VGSC source switched",
            vgsc_p,
            vgsc(),
            pre_provisioned_group,
            false,
        ),
        update(
            "VGSC ref renamed",
            vgsc_p,
            vgsc(),
            set(vgsc(), "/spec/volumeGroupSnapshotRef/name", json!("g2")),
            false,
        ),
        update(
            "VGSC ref uid dropped",
            vgsc_p,
            vgsc(),
            remove(vgsc(), "/spec/volumeGroupSnapshotRef/uid"),
            false,
        ),
        update(
            "VGSC ref uid set later",
            vgsc_p,
            remove(vgsc(), "/spec/volumeGroupSnapshotRef/uid"),
            vgsc(),
            true,
        ),
        update(
            "VGSC group handle changed",
            vgsc_p,
            vgsc(),
            set(vgsc(), "/status/volumeGroupSnapshotHandle", json!("x")),
            false,
        ),
    ]
}

fn outcome(s: &Schemas, c: &Case) -> Vec<String> {
    let r = match &c.old {
        Some(old) => s.validate_update(c.group, "v1", c.plural, &c.new, old),
        None => s.validate(c.group, "v1", c.plural, &c.new),
    };
    errors_of(r)
}

/// The built-in schemas accept and refuse the table as the apiserver does
/// (checked everywhere), with the very errors the upstream CRDs give
/// (checked when they are beside the checkout).
#[test]
fn builtin_schemas_accept_and_refuse_what_the_upstream_crds_do() {
    let builtin = Schemas::builtin();
    let upstream = upstream();
    for c in parity_cases() {
        let ours = outcome(&builtin, &c);
        assert_eq!(ours.is_empty(), c.accepted, "{}: {ours:?}", c.what);
        if let Some(up) = &upstream {
            assert_eq!(ours, outcome(up, &c), "{}", c.what);
        }
    }
}

/// Pruning removes the same unknown fields with either schema set.
#[test]
fn builtin_schemas_prune_what_the_upstream_crds_prune() {
    let Some(up) = upstream() else { return };
    let builtin = Schemas::builtin();
    for c in parity_cases() {
        let mut obj = set(c.new.clone(), "/spec", json!({"unknown": 1}));
        obj["status"] = json!({"extra": {"x": 1}});
        obj["extra"] = json!(true);
        let mut theirs = obj.clone();
        let removed = builtin.prune(c.group, "v1", c.plural, &mut obj);
        assert!(!removed.is_empty(), "{}", c.what);
        assert_eq!(
            removed,
            up.prune(c.group, "v1", c.plural, &mut theirs),
            "{}",
            c.what
        );
        assert_eq!(obj, theirs, "{}", c.what);
    }
}

/// Drops what does not change validation: descriptions.
fn without_descriptions(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "description")
                .map(|(k, v)| (k.clone(), without_descriptions(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_descriptions).collect()),
        other => other.clone(),
    }
}

/// Field by field, the built-in `v1` schemas are the upstream ones: every
/// property, type, format, enum, bound, list/map type and rule.
#[test]
fn builtin_schemas_declare_every_upstream_field_and_rule() {
    let builtin = Schemas::builtin();
    assert_eq!(builtin.crds().len(), 6);
    assert_eq!(builtin.ignored_rules(), &[]);
    let Some(up) = upstream() else { return };
    for crd in up.crds() {
        let ours = builtin
            .crd(&crd.group, &crd.plural)
            .unwrap_or_else(|| panic!("{} not built in", crd.plural));
        assert_eq!(
            (
                &ours.kind,
                &ours.list_kind,
                &ours.singular,
                &ours.short_names
            ),
            (&crd.kind, &crd.list_kind, &crd.singular, &crd.short_names)
        );
        assert_eq!(ours.namespaced, crd.namespaced, "{}", crd.plural);
        let v1 = |c: &csi_snapshotter::testing::apiserver::schema::CrdInfo| {
            c.versions
                .iter()
                .find(|v| v.name == "v1")
                .map(|v| v.status_subresource)
        };
        assert_eq!(v1(ours), v1(crd), "{}", crd.plural);
        let theirs = up
            .document(&crd.group, "v1", &crd.plural)
            .expect("upstream v1");
        let mine = builtin
            .document(&crd.group, "v1", &crd.plural)
            .expect("built-in v1");
        assert_eq!(mine, &without_descriptions(theirs), "{}", crd.plural);
    }
}
