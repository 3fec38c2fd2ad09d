//! Reading the cluster: every object a verdict may need, with list, get and
//! nothing else. Secrets are read as metadata only (a Secret's data never
//! reaches this process from a real API server).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use super::objects::{VolumeGroupSnapshot, VolumeSnapshot};
use crate::k8s::types::{
    VolumeGroupSnapshotClass, VolumeGroupSnapshotContent, VolumeSnapshotClass,
    VolumeSnapshotContent,
};
use crate::leader::LEASE_NAME_PREFIX;

/// Objects per list page: large enough for few round trips, small enough
/// for an API server under load.
const PAGE_SIZE: u32 = 500;

/// What `diagnose` may GET of a secret: whether it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretAccess {
    /// It exists and this user may read it.
    Exists,
    /// 404.
    Missing,
    /// 403 for this user.
    Forbidden,
    /// Any other failure, with its text.
    Unknown(String),
}

/// Everything read from the cluster, at one moment.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// VolumeSnapshots.
    pub snapshots: Vec<VolumeSnapshot>,
    /// VolumeSnapshotContents.
    pub contents: Vec<VolumeSnapshotContent>,
    /// VolumeGroupSnapshots.
    pub group_snapshots: Vec<VolumeGroupSnapshot>,
    /// VolumeGroupSnapshotContents.
    pub group_contents: Vec<VolumeGroupSnapshotContent>,
    /// VolumeSnapshotClasses by name.
    pub snapshot_classes: BTreeMap<String, VolumeSnapshotClass>,
    /// VolumeGroupSnapshotClasses by name.
    pub group_classes: BTreeMap<String, VolumeGroupSnapshotClass>,
    /// Core events of the namespaces read.
    pub events: Vec<Event>,
    /// The sidecars' leader-election Leases.
    pub leases: Vec<Lease>,
    /// Secrets the sidecar would read, by (namespace, name).
    pub secrets: BTreeMap<(String, String), SecretAccess>,
    /// Things that could not be read (printed as warnings).
    pub notes: Vec<String>,
}

/// Which namespaces to read events from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    /// Every namespace.
    All,
    /// This one (events of cluster-scoped objects are in `default`, read too).
    One(String),
}

/// A failure that stops the command (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// A list that every verdict needs failed.
    #[error("cannot list {what}: {source}")]
    List {
        /// The resource.
        what: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

/// Reads every kind; the secrets are read afterwards with [`read_secrets`].
pub async fn read_cluster(client: &Client, ns: &Namespaces) -> Result<Cluster, ObserveError> {
    let mut c = Cluster::default();
    let snapshot_ns = match ns {
        Namespaces::All => None,
        Namespaces::One(n) => Some(n.as_str()),
    };
    c.contents = list_required(client, None, &mut c.notes).await?;
    c.snapshots = list_required(client, snapshot_ns, &mut c.notes).await?;
    c.snapshot_classes = by_name(list_required(client, None, &mut c.notes).await?, |x| {
        &x.metadata
    });
    c.group_contents = list_optional(client, None, &mut c.notes).await;
    c.group_snapshots = list_optional(client, snapshot_ns, &mut c.notes).await;
    c.group_classes = by_name(list_optional(client, None, &mut c.notes).await, |x| {
        &x.metadata
    });
    c.events = match ns {
        Namespaces::All => list_optional(client, None, &mut c.notes).await,
        Namespaces::One(n) => {
            let mut events: Vec<Event> = list_optional(client, Some(n), &mut c.notes).await;
            if n != "default" {
                events.extend(list_optional::<Event>(client, Some("default"), &mut c.notes).await);
            }
            events
        }
    };
    c.leases = list_optional::<Lease>(client, None, &mut c.notes)
        .await
        .into_iter()
        .filter(|l| {
            l.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(LEASE_NAME_PREFIX))
        })
        .collect();
    Ok(c)
}

/// Asks for the metadata of each secret in `wanted` (never its data).
pub async fn read_secrets(
    client: &Client,
    wanted: BTreeSet<(String, String)>,
) -> BTreeMap<(String, String), SecretAccess> {
    let mut out = BTreeMap::new();
    for (ns, name) in wanted {
        let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let access = match api.get_metadata(&name).await {
            Ok(_) => SecretAccess::Exists,
            Err(kube::Error::Api(e)) if e.code == 404 => SecretAccess::Missing,
            Err(kube::Error::Api(e)) if e.code == 403 => SecretAccess::Forbidden,
            Err(e) => SecretAccess::Unknown(e.to_string()),
        };
        out.insert((ns, name), access);
    }
    out
}

fn by_name<T>(
    items: Vec<T>,
    meta: impl Fn(&T) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> BTreeMap<String, T> {
    items
        .into_iter()
        .filter_map(|x| meta(&x).name.clone().map(|n| (n, x)))
        .collect()
}

/// Lists a kind whose absence makes the answer meaningless.
async fn list_required<K>(
    client: &Client,
    ns: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<Vec<K>, ObserveError>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    list::<K>(client, ns, notes)
        .await
        .map_err(|source| ObserveError::List {
            what: K::plural(&()).into_owned(),
            source,
        })
}

/// Lists a kind that may be absent (group CRDs not installed) or not
/// readable: a note instead of a failure.
async fn list_optional<K>(client: &Client, ns: Option<&str>, notes: &mut Vec<String>) -> Vec<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    match list::<K>(client, ns, notes).await {
        Ok(items) => items,
        Err(kube::Error::Api(e)) if e.code == 404 => {
            notes.push(format!(
                "{} are not served (CRD not installed)",
                K::plural(&())
            ));
            Vec::new()
        }
        Err(e) => {
            notes.push(format!("cannot list {}: {e}", K::plural(&())));
            Vec::new()
        }
    }
}

/// Lists every page; an object that does not decode becomes a note rather
/// than failing the whole list.
async fn list<K>(
    client: &Client,
    ns: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<Vec<K>, kube::Error>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    let ar = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match ns {
        Some(n) => Api::namespaced_with(client.clone(), n, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(PAGE_SIZE);
    loop {
        let page = api.list(&params).await?;
        for obj in page.items {
            let name = obj.metadata.name.clone().unwrap_or_default();
            let decoded = serde_json::to_value(&obj)
                .map_err(|e| e.to_string())
                .and_then(|v| serde_json::from_value::<K>(v).map_err(|e| e.to_string()));
            match decoded {
                Ok(k) => out.push(k),
                Err(e) => notes.push(format!("{} {name} does not decode: {e}", ar.kind)),
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}
