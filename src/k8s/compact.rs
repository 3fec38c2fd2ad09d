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
//!
//! UUIDs in their canonical text form (36 lowercase characters: object
//! UIDs, the names derived from them, many drivers' snapshot handles) are
//! kept as their 16 bytes behind the byte 0x00, which compact JSON never
//! holds either.

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
    pack_into(json, &mut out);
    out
}

/// [`pack`], appending to `out`.
pub fn pack_into(json: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < json.len() {
        let rest = &json[i..];
        if let Some(bytes) = uuid_at(rest) {
            out.push(UUID);
            out.extend_from_slice(&bytes);
            i += UUID_TEXT;
            continue;
        }
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
}

/// The code that precedes the 16 bytes of a packed UUID.
const UUID: u8 = 0;
/// Length of a UUID's canonical text form.
const UUID_TEXT: usize = 36;
/// Offsets of the dashes in that form.
const UUID_DASHES: [usize; 4] = [8, 13, 18, 23];
const HEX: &[u8; 16] = b"0123456789abcdef";

/// The 16 bytes of the canonical lowercase UUID that `rest` starts with.
/// Upper-case digits do not match: they would not come back the same.
fn uuid_at(rest: &[u8]) -> Option<[u8; 16]> {
    let text = rest.get(..UUID_TEXT)?;
    let mut bytes = [0u8; 16];
    let mut nibble = 0;
    for (i, &c) in text.iter().enumerate() {
        if UUID_DASHES.contains(&i) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        bytes[nibble / 2] |= if nibble % 2 == 0 { v << 4 } else { v };
        nibble += 1;
    }
    Some(bytes)
}

/// Expands the codes of [`pack`] back into the original bytes.
pub fn unpack(packed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(packed.len() * 2);
    let mut i = 0;
    while i < packed.len() {
        let b = packed[i];
        i += 1;
        if b == UUID
            && let Some(bytes) = packed.get(i..i + 16)
        {
            for (n, byte) in bytes.iter().enumerate() {
                if matches!(n, 4 | 6 | 8 | 10) {
                    // The dashes at text offsets 8, 13, 18 and 23.
                    out.push(b'-');
                }
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0xf)]);
            }
            i += 16;
            continue;
        }
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
    fn uuids_are_kept_as_bytes_and_come_back_the_same() {
        let uid = "8c1f5a2e-5f3b-4f43-9d7e-0e7f3c2a1b9e";
        let json = serde_json::to_vec(&json!({
            "uid": uid, "name": format!("snapcontent-{uid}"), "handle": format!("{uid}x"),
        }))
        .unwrap();
        let packed = pack(&json);
        assert_eq!(unpack(&packed), json);
        // Three UUIDs of 36 characters, each kept in 17 bytes.
        // The same text with upper-case digits is not packed as a UUID.
        let upper = String::from_utf8(json.clone())
            .unwrap()
            .replace(uid, &uid.to_uppercase());
        assert_eq!(packed.len() + 3 * (36 - 17), pack(upper.as_bytes()).len());
        for text in [
            "8C1F5A2E-5F3B-4F43-9D7E-0E7F3C2A1B9E",
            "8c1f5a2e-5f3b-4f43-9d7e-0e7f3c2a1b9",
            "8c1f5a2e5f3b-4f43-9d7e-0e7f3c2a1b9e0",
            "8c1f5a2g-5f3b-4f43-9d7e-0e7f3c2a1b9e",
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "8c1f5a2e-5f3b-4f43-9d7e-0e7f3c2a1b9e8c1f5a2e-5f3b-4f43-9d7e-0e7f3c2a1b9e",
        ] {
            let json = serde_json::to_vec(&json!({ "v": text })).unwrap();
            assert_eq!(unpack(&pack(&json)), json, "{text}");
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
