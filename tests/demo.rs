//! `csi-snapshotter demo` (README's main command): the built binary runs
//! the sidecar against the embedded API server and the mock driver, and its
//! narrative reports what the sidecar did. The API server checks every
//! object against its schemas: the upstream CRDs when `../shared/crds` is
//! present, its built-in ones otherwise.

#[path = "support/crds.rs"]
mod crds;

use std::collections::BTreeMap;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_csi-snapshotter");

/// `NAME=n` pairs of the summary line starting with `prefix`.
fn counts(out: &str, prefix: &str) -> BTreeMap<String, u64> {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}"));
    line.split_whitespace()
        .filter_map(|item| item.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// The value after `key=` on the line starting with `[label] `.
fn field<'a>(out: &'a str, label: &str, key: &str) -> &'a str {
    let line = out
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(&format!("[{label}] {key}=")))
        .unwrap_or_else(|| panic!("no [{label}] {key}= line in:\n{out}"));
    line.split_whitespace()
        .find_map(|item| item.strip_prefix(&format!("{key}=")))
        .unwrap_or_default()
}

#[test]
fn demo_shows_snapshots_a_group_and_their_deletion() {
    let mut cmd = Command::new(BIN);
    cmd.args(["demo", "--timeout", "90s"]);
    if let Some(crds) = crds::crd_dir() {
        cmd.arg("--crd-schemas").arg(&crds);
    }
    let output = cmd.output().expect("run csi-snapshotter demo");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed ({}):\n{out}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(out.trim_end().ends_with("demo: OK"), "{out}");
    assert!(out.contains("(CRD schema checks on, "), "{out}");

    // Each content got a distinct backend handle; the pre-provisioned one
    // kept the handle of the snapshot that existed before.
    let handles: Vec<&str> = ["dynamic-delete", "dynamic-retain", "pre-provisioned"]
        .iter()
        .map(|l| field(&out, l, "handle"))
        .collect();
    assert!(handles.iter().all(|h| !h.is_empty() && *h != "-"), "{out}");
    assert_ne!(handles[0], handles[1]);
    assert!(
        out.contains(&format!("holds snapshot {} of volume", handles[2])),
        "{out}"
    );
    assert!(!field(&out, "group", "groupHandle").is_empty(), "{out}");
    for volume in ["vol-db-data", "vol-db-log"] {
        assert!(
            out.contains(&format!("[member {volume}] readyToUse=true")),
            "member {volume} never became ready:\n{out}"
        );
    }

    // The invalid class produced an error status and a Warning event.
    assert!(
        out.contains("[invalid-class] Warning SnapshotCreationFailed"),
        "{out}"
    );
    assert!(out.contains("unknown parameter key \"csi.storage.k8s.io/snapshotter-typo\""));
    // The driver saw the class parameter, not the reserved keys, and the
    // secret's keys but the narrative never shows their values.
    assert!(out.contains("parameters: type=fast (reserved"), "{out}");
    assert!(!out.contains("demo-password") && !out.contains("demo-username"));

    // Deletion: Delete removes, Retain keeps, members wait for the group.
    assert!(out.contains(&format!("backend snapshot {} deleted (Delete)", handles[0])));
    assert!(out.contains(&format!("backend snapshot {} kept (Retain)", handles[1])));
    assert!(out.contains(&format!("backend snapshot {} deleted (Delete)", handles[2])));
    assert!(out.contains("deleted with its 2 member snapshots"), "{out}");

    let csi = counts(&out, "CSI calls");
    let n = |k: &str| csi.get(k).copied().unwrap_or(0);
    // Two dynamic contents were cut (the invalid one never reached the
    // driver); only the two Delete-policy contents were deleted one by one,
    // the group in one call.
    assert!(n("CreateSnapshot") >= 2, "{csi:?}");
    assert_eq!(n("DeleteSnapshot"), 2, "{csi:?}");
    assert!(n("CreateVolumeGroupSnapshot") >= 1, "{csi:?}");
    assert_eq!(n("DeleteVolumeGroupSnapshot"), 1, "{csi:?}");
    assert!(n("ListSnapshots") >= 1, "{csi:?}");
    assert_eq!(
        n("total"),
        csi.iter()
            .filter(|(k, _)| *k != "total")
            .map(|(_, v)| v)
            .sum::<u64>()
    );
    let api = counts(&out, "API requests");
    assert!(api.get("POST").copied().unwrap_or(0) >= 10, "{api:?}");
    assert!(
        out.contains("sidecar stopped as on SIGTERM, exit status 0"),
        "{out}"
    );
}
