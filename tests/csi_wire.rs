//! Pins the CSI v1 field numbers and types (csi-wire.md §4) by decoding
//! hand-encoded protobuf bytes, and the list of `csi_secret` fields (§5).

use csi_snapshotter::csi::proto::v1::{
    self, ControllerServiceCapability, CreateSnapshotRequest, CreateVolumeGroupSnapshotRequest,
    ProbeResponse, SECRET_FIELDS, Snapshot, controller_service_capability,
};
use prost::Message;

/// Length-delimited field: key byte for (field, wire type 2), length, bytes.
fn ld(field: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128, "single-byte lengths only");
    let mut out = vec![(field << 3) | 2, body.len() as u8];
    out.extend_from_slice(body);
    out
}

/// Varint field (wire type 0) with a value below 128.
fn varint(field: u8, value: u8) -> Vec<u8> {
    assert!(value < 128);
    vec![field << 3, value]
}

/// A `map<string,string>` entry: key is field 1, value is field 2.
fn map_entry(field: u8, key: &str, value: &str) -> Vec<u8> {
    let mut entry = ld(1, key.as_bytes());
    entry.extend(ld(2, value.as_bytes()));
    ld(field, &entry)
}

#[test]
fn create_snapshot_request_fields() {
    let mut bytes = Vec::new();
    bytes.extend(ld(1, b"vol-1"));
    bytes.extend(ld(2, b"snapshot-abc"));
    bytes.extend(map_entry(3, "user", "s3cr3t"));
    bytes.extend(map_entry(4, "tier", "gold"));
    let req = CreateSnapshotRequest::decode(bytes.as_slice()).unwrap();
    assert_eq!(req.source_volume_id, "vol-1");
    assert_eq!(req.name, "snapshot-abc");
    assert_eq!(req.secrets.get("user").map(String::as_str), Some("s3cr3t"));
    assert_eq!(req.parameters.get("tier").map(String::as_str), Some("gold"));
    assert_eq!(req.secrets.len(), 1);
    assert_eq!(req.parameters.len(), 1);
}

#[test]
fn snapshot_fields_with_timestamp() {
    // Timestamp: seconds (1) = 1_700_000_000 as varint, nanos (2) = 5.
    let mut ts = vec![0x08];
    let mut secs: u64 = 1_700_000_000;
    while secs >= 0x80 {
        ts.push((secs as u8 & 0x7f) | 0x80);
        secs >>= 7;
    }
    ts.push(secs as u8);
    ts.extend(varint(2, 5));

    let mut bytes = Vec::new();
    bytes.extend(varint(1, 100));
    bytes.extend(ld(2, b"snap-1"));
    bytes.extend(ld(3, b"vol-1"));
    bytes.extend(ld(4, &ts));
    bytes.extend(varint(5, 1));
    bytes.extend(ld(6, b"group-1"));
    let snap = Snapshot::decode(bytes.as_slice()).unwrap();
    assert_eq!(snap.size_bytes, 100);
    assert_eq!(snap.snapshot_id, "snap-1");
    assert_eq!(snap.source_volume_id, "vol-1");
    let t = snap.creation_time.unwrap();
    assert_eq!((t.seconds, t.nanos), (1_700_000_000, 5));
    assert!(snap.ready_to_use);
    assert_eq!(snap.group_snapshot_id, "group-1");
}

#[test]
fn probe_response_ready_is_a_bool_wrapper() {
    // Absent: the caller assumes ready.
    assert_eq!(ProbeResponse::decode(&[][..]).unwrap().ready, None);
    // Present with value false (field 1 of BoolValue).
    let not_ready = ld(1, &varint(1, 0));
    assert_eq!(
        ProbeResponse::decode(not_ready.as_slice()).unwrap().ready,
        Some(false)
    );
    // Present but empty: a BoolValue with its default, false.
    assert_eq!(
        ProbeResponse::decode(ld(1, &[]).as_slice()).unwrap().ready,
        Some(false)
    );
    let ready = ld(1, &varint(1, 1));
    assert_eq!(
        ProbeResponse::decode(ready.as_slice()).unwrap().ready,
        Some(true)
    );
}

#[test]
fn controller_capability_rpc_types() {
    use controller_service_capability::rpc::Type;
    for (value, expected) in [(5, Type::CreateDeleteSnapshot), (6, Type::ListSnapshots)] {
        let bytes = ld(1, &varint(1, value));
        let cap = ControllerServiceCapability::decode(bytes.as_slice()).unwrap();
        let Some(controller_service_capability::Type::Rpc(rpc)) = cap.r#type else {
            panic!("rpc oneof member missing");
        };
        assert_eq!(rpc.r#type(), expected);
        assert_eq!(rpc.r#type, value as i32);
    }
    assert_eq!(Type::GetSnapshot as i32, 15);
}

#[test]
fn create_volume_group_snapshot_request_fields() {
    let mut bytes = Vec::new();
    bytes.extend(ld(1, b"groupsnapshot-1"));
    bytes.extend(ld(2, b"vol-a"));
    bytes.extend(ld(2, b"vol-b"));
    bytes.extend(map_entry(3, "token", "t0ken"));
    bytes.extend(map_entry(4, "k", "v"));
    let req = CreateVolumeGroupSnapshotRequest::decode(bytes.as_slice()).unwrap();
    assert_eq!(req.name, "groupsnapshot-1");
    assert_eq!(req.source_volume_ids, vec!["vol-a", "vol-b"]);
    assert_eq!(req.secrets.get("token").map(String::as_str), Some("t0ken"));
    assert_eq!(req.parameters.get("k").map(String::as_str), Some("v"));
}

#[test]
fn group_controller_capability_value() {
    use v1::group_controller_service_capability::rpc::Type;
    let bytes = ld(1, &varint(1, 1));
    let cap = v1::GroupControllerServiceCapability::decode(bytes.as_slice()).unwrap();
    let Some(v1::group_controller_service_capability::Type::Rpc(rpc)) = cap.r#type else {
        panic!("rpc oneof member missing");
    };
    assert_eq!(rpc.r#type(), Type::CreateDeleteGetVolumeGroupSnapshot);
}

#[test]
fn secret_fields_are_the_nine_of_the_schema() {
    let mut got: Vec<(&str, &str)> = SECRET_FIELDS.to_vec();
    got.sort_unstable();
    let mut want = vec![
        ("csi.v1.CreateVolumeRequest", "secrets"),
        ("csi.v1.DeleteVolumeRequest", "secrets"),
        ("csi.v1.CreateSnapshotRequest", "secrets"),
        ("csi.v1.DeleteSnapshotRequest", "secrets"),
        ("csi.v1.ListSnapshotsRequest", "secrets"),
        ("csi.v1.GetSnapshotRequest", "secrets"),
        ("csi.v1.CreateVolumeGroupSnapshotRequest", "secrets"),
        ("csi.v1.DeleteVolumeGroupSnapshotRequest", "secrets"),
        ("csi.v1.GetVolumeGroupSnapshotRequest", "secrets"),
    ];
    want.sort_unstable();
    assert_eq!(got, want);
}
