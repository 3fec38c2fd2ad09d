//! A lossless packing of compact JSON for the watch caches: frequent
//! fragments of snapshot objects (keys, API groups, the finalizer) are
//! replaced by one byte each.
//!
//! Compact JSON as `serde_json` writes it never contains the raw bytes
//! 0x01–0x1F (control characters inside strings are escaped and no
//! whitespace is written), so those bytes are free to stand for dictionary
//! entries and unpacking is unambiguous. Packing is a byte-level
//! substitution: it round-trips any input that has no raw bytes in that
//! range, whatever its structure.

/// The fragments, most specific first (the first match at a position wins).
/// Code `i + 1` stands for `DICT[i]`; at most 31 entries.
const DICT: [&[u8]; 31] = [
    b"\"apiVersion\":\"groupsnapshot.storage.k8s.io/v1\"",
    b"\"apiVersion\":\"snapshot.storage.k8s.io/v1\"",
    b"\"kind\":\"VolumeGroupSnapshotContent\"",
    b"\"kind\":\"VolumeSnapshotContent\"",
    b"\"kind\":\"VolumeGroupSnapshot\"",
    b"\"kind\":\"VolumeSnapshot\"",
    b"\"snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection\"",
    b"\"groupsnapshot.storage.kubernetes.io/",
    b"\"snapshot.storage.kubernetes.io/",
    b"\"metadata\":{",
    b"\"name\":\"",
    b"\"namespace\":\"",
    b"\"uid\":\"",
    b"\"resourceVersion\":\"",
    b"\"creationTimestamp\":\"",
    b"\"generation\":",
    b"\"annotations\":{",
    b"\"finalizers\":[",
    b"\"spec\":{",
    b"\"driver\":\"",
    b"\"deletionPolicy\":\"Delete\"",
    b"\"source\":{\"volumeHandle\":\"",
    b"\"source\":{\"snapshotHandle\":\"",
    b"\"volumeSnapshotClassName\":\"",
    b"\"volumeSnapshotRef\":{",
    b"\"status\":{",
    b"\"readyToUse\":true",
    b"\"snapshotHandle\":\"",
    b"\"creationTime\":",
    b"\"restoreSize\":",
    b"\"labels\":{",
];

/// Replaces dictionary fragments in `json` by their codes.
pub fn pack(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() / 2);
    let mut i = 0;
    while i < json.len() {
        let rest = &json[i..];
        // Every fragment starts with a quote: only quotes can begin a match.
        let hit = if rest[0] == b'"' {
            DICT.iter().position(|frag| rest.starts_with(frag))
        } else {
            None
        };
        match hit {
            Some(code) => {
                // `code < 31`, so the byte is 1..=31.
                out.push(code as u8 + 1);
                i += DICT[code].len();
            }
            None => {
                out.push(rest[0]);
                i += 1;
            }
        }
    }
    out
}

/// Expands the codes of [`pack`] back into the original bytes.
pub fn unpack(packed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(packed.len() * 2);
    for &b in packed {
        match DICT.get(usize::from(b).wrapping_sub(1)) {
            Some(frag) if b != 0 => out.extend_from_slice(frag),
            _ => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": "snapcontent-8c1f5a2e", "uid": "8c1f5a2e-5f3b-4f43-9d7e-0e7f3c2a1b9e",
                "resourceVersion": "123456", "generation": 1, "creationTimestamp": "2026-11-22T22:00:00Z",
                "finalizers": ["snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection"],
                "annotations": {"snapshot.storage.kubernetes.io/deletion-secret-name": "s",
                                "snapshot.storage.kubernetes.io/deletion-secret-namespace": "default"}},
            "spec": {"driver": "hostpath.csi.k8s.io", "deletionPolicy": "Delete",
                "source": {"volumeHandle": "vol-1"}, "volumeSnapshotClassName": "csi-hostpath-snapclass",
                "volumeSnapshotRef": {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                    "name": "snap-1", "namespace": "default", "uid": "8c1f5a2e-5f3b-4f43-9d7e-0e7f3c2a1b9d",
                    "resourceVersion": "12345"}},
            "status": {"readyToUse": true, "snapshotHandle": "handle-1", "creationTime": 1763848800000000000i64,
                "restoreSize": 1073741824}
        }))
        .unwrap()
    }

    #[test]
    fn round_trips_and_shrinks_a_content() {
        let json = sample();
        let packed = pack(&json);
        assert_eq!(unpack(&packed), json);
        assert!(
            packed.len() * 10 < json.len() * 6,
            "{} of {} bytes",
            packed.len(),
            json.len()
        );
    }

    #[test]
    fn round_trips_tricky_strings() {
        for v in [
            json!({"a": "\"name\":\"x\"", "b": "\u{1}\u{1f}\n\t", "c": "\\\"spec\":{"}),
            json!([
                "\"metadata\":{",
                "snapshot.storage.kubernetes.io/",
                "",
                "\u{0}"
            ]),
            json!({"\"status\":{": {"\"readyToUse\":true": true}}),
        ] {
            let json = serde_json::to_vec(&v).unwrap();
            assert!(
                json.iter().all(|b| !(1..=31).contains(b)),
                "precondition: no raw control bytes"
            );
            assert_eq!(unpack(&pack(&json)), json, "{v}");
        }
    }

    #[test]
    fn no_fragment_is_shadowed_by_an_earlier_prefix() {
        for (i, later) in DICT.iter().enumerate() {
            for earlier in &DICT[..i] {
                assert!(
                    !later.starts_with(earlier),
                    "{:?} shadows {:?}",
                    earlier,
                    later
                );
            }
            assert_eq!(later[0], b'"');
        }
    }
}
