//! CRD schema checks for the embedded API server: each create, update and
//! patch of a custom resource is pruned and validated against the CRD's
//! `openAPIV3Schema` and its `x-kubernetes-validations` rules, and refused
//! with the apiserver's 422 `Invalid` wording when it breaks them.
//!
//! The rules are evaluated by a small evaluator for the CEL subset the
//! snapshot CRDs use; a rule outside it is listed by
//! [`Schemas::ignored_rules`] and logged at debug level.
//!
//! The server carries the schemas of the kinds it serves
//! ([`Schemas::builtin`]); [`Schemas::load_dir`] reads CRD files instead.

mod builtin;
mod cel;
mod error;
mod node;
mod prune;
mod validate;

pub use error::{FieldError, FieldErrorKind, invalid_status, invalid_status_message};
pub use node::IgnoredRule;

use node::Node;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Why a directory of CRDs could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The directory or a file in it could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is not valid YAML.
    #[error("parsing {path}: {message}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A CustomResourceDefinition lacks a field the server needs.
    #[error("{path}: CustomResourceDefinition has no {field}")]
    Incomplete {
        /// The file.
        path: PathBuf,
        /// The missing field, e.g. `spec.group`.
        field: &'static str,
    },
    /// The directory holds no CustomResourceDefinition.
    #[error("no CustomResourceDefinition found in {0}")]
    Empty(PathBuf),
}

/// One version of a CRD as the server serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdVersion {
    /// Version name, e.g. `v1`.
    pub name: String,
    /// Whether the version is served.
    pub served: bool,
    /// Whether this is the storage version.
    pub storage: bool,
    /// Whether the version is marked deprecated.
    pub deprecated: bool,
    /// Whether the `status` subresource is enabled.
    pub status_subresource: bool,
}

/// What a loaded CRD declares about its resource (for discovery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdInfo {
    /// API group, e.g. `snapshot.storage.k8s.io`.
    pub group: String,
    /// Kind, e.g. `VolumeSnapshotContent`.
    pub kind: String,
    /// List kind, e.g. `VolumeSnapshotContentList`.
    pub list_kind: String,
    /// Plural resource name, e.g. `volumesnapshotcontents`.
    pub plural: String,
    /// Singular name, e.g. `volumesnapshotcontent`.
    pub singular: String,
    /// Short names, e.g. `vsc`.
    pub short_names: Vec<String>,
    /// Whether the resource is namespaced (`scope: Namespaced`).
    pub namespaced: bool,
    /// All declared versions, served or not.
    pub versions: Vec<CrdVersion>,
}

/// The schemas of every served version of the CRDs in a directory, keyed
/// by (group, version, plural).
#[derive(Debug, Default)]
pub struct Schemas {
    roots: HashMap<(String, String, String), Node>,
    /// The `openAPIV3Schema` documents the roots were built from.
    documents: HashMap<(String, String, String), Value>,
    crds: Vec<CrdInfo>,
    ignored: Vec<IgnoredRule>,
}

impl Schemas {
    /// The schemas built into the server for every custom kind it serves
    /// (`snapshot.storage.k8s.io/v1` and `groupsnapshot.storage.k8s.io/v1`).
    pub fn builtin() -> Schemas {
        let mut schemas = Schemas::default();
        for (info, schema) in builtin::definitions() {
            for v in &info.versions {
                schemas.add_root(&info.group, &v.name, &info.plural, schema.clone());
            }
            schemas.crds.push(info);
        }
        schemas
    }

    fn add_root(&mut self, group: &str, version: &str, plural: &str, schema: Value) {
        let key = (group.to_string(), version.to_string(), plural.to_string());
        let root = Node::parse(&schema, "", &mut self.ignored);
        self.roots.insert(key.clone(), root);
        self.documents.insert(key, schema);
    }

    /// Loads every `*.yaml`/`*.yml` file in `dir` (multi-document files
    /// allowed) and keeps the CustomResourceDefinitions among them.
    pub fn load_dir(dir: &Path) -> Result<Schemas, SchemaError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SchemaError::Io { path, source }
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e == "yaml" || e == "yml")
            })
            .collect();
        files.sort();
        let mut schemas = Schemas::default();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(io_err(&file))?;
            for doc in serde_norway::Deserializer::from_str(&text) {
                let value = Value::deserialize(doc).map_err(|e| SchemaError::Yaml {
                    path: file.clone(),
                    message: e.to_string(),
                })?;
                if value.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition") {
                    schemas.add_crd(&file, &value)?;
                }
            }
        }
        if schemas.crds.is_empty() {
            return Err(SchemaError::Empty(dir.to_path_buf()));
        }
        Ok(schemas)
    }

    fn add_crd(&mut self, file: &Path, crd: &Value) -> Result<(), SchemaError> {
        let missing = |field| SchemaError::Incomplete {
            path: file.to_path_buf(),
            field,
        };
        let text =
            |v: &Value, ptr: &str| v.pointer(ptr).and_then(Value::as_str).map(str::to_string);
        let group = text(crd, "/spec/group").ok_or_else(|| missing("spec.group"))?;
        let plural = text(crd, "/spec/names/plural").ok_or_else(|| missing("spec.names.plural"))?;
        let kind = text(crd, "/spec/names/kind").ok_or_else(|| missing("spec.names.kind"))?;
        let versions = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .ok_or_else(|| missing("spec.versions"))?;
        let mut info = CrdInfo {
            group: group.clone(),
            list_kind: text(crd, "/spec/names/listKind").unwrap_or_else(|| format!("{kind}List")),
            singular: text(crd, "/spec/names/singular").unwrap_or_else(|| kind.to_lowercase()),
            short_names: crd
                .pointer("/spec/names/shortNames")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            namespaced: text(crd, "/spec/scope").as_deref() != Some("Cluster"),
            kind,
            plural: plural.clone(),
            versions: Vec::new(),
        };
        for v in versions {
            let name = text(v, "/name").ok_or_else(|| missing("spec.versions[].name"))?;
            let flag = |ptr: &str| v.pointer(ptr).and_then(Value::as_bool).unwrap_or(false);
            let served = flag("/served");
            info.versions.push(CrdVersion {
                name: name.clone(),
                served,
                storage: flag("/storage"),
                deprecated: flag("/deprecated"),
                status_subresource: v.pointer("/subresources/status").is_some(),
            });
            if let Some(schema) = v.pointer("/schema/openAPIV3Schema").filter(|_| served) {
                self.add_root(&group, &name, &plural, schema.clone());
            }
        }
        self.crds.push(info);
        Ok(())
    }

    /// The loaded CRDs, in file order.
    pub fn crds(&self) -> &[CrdInfo] {
        &self.crds
    }

    /// The CRD serving `group`/`plural`, if any.
    pub fn crd(&self, group: &str, plural: &str) -> Option<&CrdInfo> {
        self.crds
            .iter()
            .find(|c| c.group == group && c.plural == plural)
    }

    /// Whether a schema is known for this served (group, version, plural).
    pub fn has(&self, group: &str, version: &str, plural: &str) -> bool {
        self.root(group, version, plural).is_some()
    }

    /// The `openAPIV3Schema` of a served (group, version, plural), as
    /// written in the CRD or built in.
    pub fn document(&self, group: &str, version: &str, plural: &str) -> Option<&Value> {
        self.documents
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
    }

    /// Rules and patterns that are not checked, with the reason.
    pub fn ignored_rules(&self) -> &[IgnoredRule] {
        &self.ignored
    }

    fn root(&self, group: &str, version: &str, plural: &str) -> Option<&Node> {
        self.roots
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
    }

    /// Validates an object being created. Transition rules (those using
    /// `oldSelf`) are not evaluated. An unknown resource passes.
    pub fn validate(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        obj: &Value,
    ) -> Result<(), Vec<FieldError>> {
        self.check(group, version, plural, obj, None)
    }

    /// Validates an update of `old` to `new` (PUT, PATCH, and the status
    /// subresource): every rule including transition rules; subtrees equal
    /// to their old value are not re-checked, as the apiserver ratchets.
    pub fn validate_update(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        new: &Value,
        old: &Value,
    ) -> Result<(), Vec<FieldError>> {
        self.check(group, version, plural, new, Some(old))
    }

    fn check(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        new: &Value,
        old: Option<&Value>,
    ) -> Result<(), Vec<FieldError>> {
        let Some(root) = self.root(group, version, plural) else {
            return Ok(());
        };
        let errs = validate::validate(root, new, old);
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// Removes the fields the schema does not declare (except under
    /// `x-kubernetes-preserve-unknown-fields`, and `apiVersion`, `kind`
    /// and `metadata` at the root), as the apiserver does silently before
    /// validating. Returns the removed paths (for `unknown field` warnings
    /// or strict field validation).
    pub fn prune(&self, group: &str, version: &str, plural: &str, obj: &mut Value) -> Vec<String> {
        match self.root(group, version, plural) {
            Some(root) => prune::prune(root, obj),
            None => Vec::new(),
        }
    }
}
