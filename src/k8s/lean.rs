//! Decoding that leaves out what the sidecar never reads, while it decodes
//! rather than after: `metadata.managedFields` (often larger than the rest
//! of a snapshot object put together, and on a real API server present on
//! every object, in every watch event and in every write's reply) is
//! skipped unparsed, so its entries and their `fieldsV1` trees are never
//! built.
//!
//! - [`meta`] decodes [`ObjectMeta`] like its own `Deserialize` does (the
//!   same fields, the last of duplicate keys wins, unknown keys ignored),
//!   except that `managed_fields` is always `None`.
//! - [`LeanValue`] decodes any JSON like `serde_json::Value` does, except
//!   that an object's `metadata.managedFields` is left out.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Number, Value};

/// The metadata key that is skipped.
const MANAGED_FIELDS: &str = "managedFields";

/// The metadata fields, for deserializers that need the list up front.
const META_FIELDS: &[&str] = &[
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    MANAGED_FIELDS,
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];

/// Decodes object metadata without its `managedFields` (use as
/// `#[serde(deserialize_with = "lean::meta")]`).
pub fn meta<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ObjectMeta, D::Error> {
    deserializer.deserialize_struct("ObjectMeta", META_FIELDS, MetaVisitor)
}

/// Decodes object metadata held in a `Value`, without its `managedFields`.
pub fn meta_from_value(value: &Value) -> Result<ObjectMeta, serde_json::Error> {
    meta(value)
}

/// One metadata key.
enum MetaField {
    Annotations,
    CreationTimestamp,
    DeletionGracePeriodSeconds,
    DeletionTimestamp,
    Finalizers,
    GenerateName,
    Generation,
    Labels,
    Name,
    Namespace,
    OwnerReferences,
    ResourceVersion,
    SelfLink,
    Uid,
    /// `managedFields` and unknown keys: skipped.
    Skipped,
}

impl<'de> Deserialize<'de> for MetaField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = MetaField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("field identifier")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<MetaField, E> {
                Ok(match key {
                    "annotations" => MetaField::Annotations,
                    "creationTimestamp" => MetaField::CreationTimestamp,
                    "deletionGracePeriodSeconds" => MetaField::DeletionGracePeriodSeconds,
                    "deletionTimestamp" => MetaField::DeletionTimestamp,
                    "finalizers" => MetaField::Finalizers,
                    "generateName" => MetaField::GenerateName,
                    "generation" => MetaField::Generation,
                    "labels" => MetaField::Labels,
                    "name" => MetaField::Name,
                    "namespace" => MetaField::Namespace,
                    "ownerReferences" => MetaField::OwnerReferences,
                    "resourceVersion" => MetaField::ResourceVersion,
                    "selfLink" => MetaField::SelfLink,
                    "uid" => MetaField::Uid,
                    _ => MetaField::Skipped,
                })
            }
        }
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

struct MetaVisitor;

impl<'de> Visitor<'de> for MetaVisitor {
    type Value = ObjectMeta;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ObjectMeta")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ObjectMeta, A::Error> {
        let mut m = ObjectMeta::default();
        while let Some(key) = map.next_key::<MetaField>()? {
            match key {
                MetaField::Annotations => {
                    m.annotations = map.next_value::<Option<BTreeMap<String, String>>>()?
                }
                MetaField::CreationTimestamp => {
                    m.creation_timestamp = map.next_value::<Option<Time>>()?
                }
                MetaField::DeletionGracePeriodSeconds => {
                    m.deletion_grace_period_seconds = map.next_value()?
                }
                MetaField::DeletionTimestamp => {
                    m.deletion_timestamp = map.next_value::<Option<Time>>()?
                }
                MetaField::Finalizers => m.finalizers = map.next_value()?,
                MetaField::GenerateName => m.generate_name = map.next_value()?,
                MetaField::Generation => m.generation = map.next_value()?,
                MetaField::Labels => m.labels = map.next_value()?,
                MetaField::Name => m.name = map.next_value()?,
                MetaField::Namespace => m.namespace = map.next_value()?,
                MetaField::OwnerReferences => {
                    m.owner_references = map.next_value::<Option<Vec<OwnerReference>>>()?
                }
                MetaField::ResourceVersion => m.resource_version = map.next_value()?,
                MetaField::SelfLink => m.self_link = map.next_value()?,
                MetaField::Uid => m.uid = map.next_value()?,
                MetaField::Skipped => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(m)
    }
}

/// Any JSON as a `Value`, with the `managedFields` of a top-level object's
/// `metadata` left out.
#[derive(Debug, Clone, PartialEq)]
pub struct LeanValue(pub Value);

impl<'de> Deserialize<'de> for LeanValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(LeanVisitor(Level::Object))
            .map(LeanValue)
    }
}

/// Where in the object the visitor is.
#[derive(Clone, Copy, PartialEq)]
enum Level {
    /// The object itself: its `metadata` is decoded at [`Level::Metadata`].
    Object,
    /// The object's metadata: `managedFields` is skipped.
    Metadata,
}

impl Level {
    /// Whether the entry `key` is left out at this level.
    fn skips(self, key: &str) -> bool {
        self == Level::Metadata && key == MANAGED_FIELDS
    }
}

/// Builds a `Value` like `Value`'s own visitor, but at the two levels of
/// [`Level`] it handles map entries itself.
struct LeanVisitor(Level);

impl<'de> DeserializeSeed<'de> for LeanVisitor {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LeanVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let level = self.0;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if level.skips(&key) {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let value = if level == Level::Object && key == "metadata" {
                map.next_value_seed(LeanVisitor(Level::Metadata))?
            } else {
                map.next_value::<Value>()?
            };
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with_managed_fields() -> Value {
        json!({
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent",
            "metadata": {
                "name": "c1", "uid": "u1", "resourceVersion": "7", "generation": 2,
                "creationTimestamp": "2026-11-22T22:00:00Z",
                "deletionTimestamp": "2026-11-22T23:00:00Z",
                "deletionGracePeriodSeconds": 0,
                "finalizers": ["f"], "labels": {"l": "1"}, "annotations": {"a": "1"},
                "generateName": "c", "namespace": "", "selfLink": "/x",
                "ownerReferences": [{"apiVersion": "v1", "kind": "K", "name": "o", "uid": "ou"}],
                "managedFields": [{"manager": "m", "operation": "Update",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:driver": {}}}}],
                "futureField": {"x": 1}
            },
            "spec": {"managedFields": "kept: not metadata"},
            "status": null
        })
    }

    #[test]
    fn meta_equals_the_full_decode_without_managed_fields() {
        let v = with_managed_fields();
        let lean = meta_from_value(&v["metadata"]).unwrap();
        let mut full: ObjectMeta = serde_json::from_value(v["metadata"].clone()).unwrap();
        assert!(full.managed_fields.is_some());
        full.managed_fields = None;
        assert_eq!(lean, full);
    }

    #[test]
    fn meta_refuses_what_the_full_decode_refuses() {
        for bad in [
            json!({"name": 1}),
            json!({"finalizers": "x"}),
            json!({"creationTimestamp": "yesterday"}),
            json!("metadata"),
            json!([]),
        ] {
            assert!(serde_json::from_value::<ObjectMeta>(bad.clone()).is_err());
            assert!(meta_from_value(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn meta_ignores_malformed_managed_fields_and_keeps_the_last_duplicate() {
        let text = r#"{"name":"a","managedFields":"not a list","name":"b"}"#;
        let m = meta(&mut serde_json::Deserializer::from_str(text)).unwrap();
        assert_eq!(m.name.as_deref(), Some("b"));
        assert!(m.managed_fields.is_none());
    }

    #[test]
    fn lean_value_drops_only_metadata_managed_fields() {
        let v = with_managed_fields();
        let LeanValue(lean) = serde_json::from_str(&v.to_string()).unwrap();
        let mut expected = v.clone();
        expected["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        assert_eq!(lean, expected);
    }

    #[test]
    fn snapshot_types_decode_without_managed_fields() {
        use crate::k8s::types::{Lenient, VolumeSnapshotContent};
        let mut v = with_managed_fields();
        v["spec"] = json!({"driver": "d", "deletionPolicy": "Delete",
            "source": {"volumeHandle": "v"},
            "volumeSnapshotRef": {"name": "s", "namespace": "n"}});
        let text = v.to_string();
        let strict: VolumeSnapshotContent = serde_json::from_str(&text).unwrap();
        assert_eq!(strict.metadata.name.as_deref(), Some("c1"));
        assert!(strict.metadata.managed_fields.is_none());
        let lenient: Lenient<VolumeSnapshotContent> = serde_json::from_str(&text).unwrap();
        assert_eq!(lenient.as_ok(), Some(&strict));
        v["spec"]["deletionPolicy"] = json!(7);
        match serde_json::from_str::<Lenient<VolumeSnapshotContent>>(&v.to_string()).unwrap() {
            Lenient::Malformed { metadata, .. } => {
                assert_eq!(metadata.name.as_deref(), Some("c1"));
                assert!(metadata.managed_fields.is_none());
            }
            Lenient::Ok(_) => panic!("decoded a malformed content"),
        }
    }

    #[test]
    fn lean_value_reads_any_json_like_value() {
        for text in [
            "null",
            "true",
            "-3",
            "18446744073709551615",
            "1.5",
            "\"s\"",
            "[1,{\"metadata\":{\"managedFields\":[]}}]",
            "{\"metadata\":null}",
            "{\"metadata\":[{\"managedFields\":1}]}",
        ] {
            let LeanValue(lean) = serde_json::from_str(text).unwrap();
            let plain: Value = serde_json::from_str(text).unwrap();
            assert_eq!(lean, plain, "{text}");
        }
    }
}
