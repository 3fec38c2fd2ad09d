//! A real cluster as the benchmark's peer: any API server (a kubeconfig)
//! and a CSI driver on a local socket. The benchmark refuses to race a
//! sidecar that serves the driver already, labels what it creates
//! (source volume aside, which it names), and removes all of it again.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tonic::transport::Channel;

use super::sidecar::{Sidecar, SidecarSpec};
use super::workload::{self, Tracker, Workload, Writer};
use crate::csi::address::parse_address;
use crate::csi::proto::v1 as pb;
use crate::leader::lease_name;

/// Label on everything the benchmark creates in a cluster.
pub const CREATED_BY: &str = "app.kubernetes.io/created-by";
/// Value of [`CREATED_BY`].
pub const CREATED_BY_VALUE: &str = "csi-snapshotter-bench";
/// Label naming the benchmark invocation an object belongs to.
pub const RUN_LABEL: &str = "csi-snapshotter-bench/run";
/// Size of the source volume: the hostpath driver copies the volume into
/// every snapshot, so it is kept small.
const VOLUME_BYTES: i64 = 1 << 20;
/// A Lease renewed within this long (or within its own duration, if
/// longer) is held: client-go's default lease duration.
const LEASE_HELD_FOR: Duration = Duration::from_secs(15);
/// How often cleanup checks whether the contents are gone.
const CLEANUP_POLL: Duration = Duration::from_millis(200);

/// The cluster and driver the benchmark runs against.
pub struct Cluster {
    /// The benchmark's own client (the kubeconfig's identity).
    pub client: kube::Client,
    /// The API server URL.
    pub server: String,
    /// The kubeconfig the sidecar gets.
    pub sidecar_kubeconfig: PathBuf,
    /// The driver's address as given (passed to the sidecar as is).
    pub csi_address: String,
    /// The driver's name (GetPluginInfo).
    pub driver: String,
    /// This invocation's id, in names and in [`RUN_LABEL`].
    pub id: String,
    channel: Channel,
    /// Volume handle snapshotted by every content.
    volume: Mutex<Option<String>>,
    /// Whether the benchmark created that volume (and deletes it).
    created_volume: Mutex<bool>,
    /// Whether the class was created.
    created_class: Mutex<bool>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("server", &self.server)
            .field("driver", &self.driver)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// The benchmark's kubeconfig.
    pub kubeconfig: PathBuf,
    /// The sidecar's kubeconfig (default: the benchmark's).
    pub sidecar_kubeconfig: Option<PathBuf>,
    /// The driver's socket.
    pub csi_address: String,
    /// Snapshot this volume instead of creating one.
    pub volume_handle: Option<String>,
    /// Run even while the driver's leader-election Lease is held.
    pub force: bool,
}

impl Cluster {
    /// Connects to the API server and the driver and checks that no other
    /// sidecar serves the driver (unless `target.force`).
    pub async fn connect(target: &Target) -> io::Result<Cluster> {
        let client = client(&target.kubeconfig).await?;
        let server = kube::Config::from_custom_kubeconfig(
            read_kubeconfig(&target.kubeconfig)?,
            &KubeConfigOptions::default(),
        )
        .await
        .map_err(io::Error::other)?
        .cluster_url
        .to_string();
        let socket = parse_address(&target.csi_address)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let channel = crate::testing::mock_driver::connect(&socket)
            .await
            .map_err(|e| io::Error::other(format!("{}: {e}", target.csi_address)))?;
        let info = pb::identity_client::IdentityClient::new(channel.clone())
            .get_plugin_info(pb::GetPluginInfoRequest::default())
            .await
            .map_err(|e| io::Error::other(format!("GetPluginInfo: {}", e.message())))?
            .into_inner();
        let cluster = Cluster {
            client,
            server,
            sidecar_kubeconfig: target
                .sidecar_kubeconfig
                .clone()
                .unwrap_or_else(|| target.kubeconfig.clone()),
            csi_address: target.csi_address.clone(),
            driver: info.name,
            id: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
            channel,
            volume: Mutex::new(target.volume_handle.clone()),
            created_volume: Mutex::new(false),
            created_class: Mutex::new(false),
        };
        match cluster.lease_holder().await? {
            Some(holder) if target.force => {
                eprintln!("bench: warning: {holder}; running anyway (--force)");
            }
            Some(holder) => {
                return Err(io::Error::other(format!(
                    "{holder}: a second sidecar would race it; stop it, or pass --force"
                )));
            }
            None => {}
        }
        cluster.warn_leftovers().await;
        Ok(cluster)
    }

    /// Labels of this invocation's objects.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (CREATED_BY.to_string(), CREATED_BY_VALUE.to_string()),
            (RUN_LABEL.to_string(), self.id.clone()),
        ])
    }

    /// Label selector of this invocation's objects.
    pub fn selector(&self) -> String {
        format!("{RUN_LABEL}={}", self.id)
    }

    /// Name of this invocation's class.
    fn class_name(&self) -> String {
        format!("csi-snapshotter-bench-{}", self.id)
    }

    /// The objects of the `k`-th sidecar run.
    pub fn workload(&self, k: usize) -> Workload {
        Workload {
            driver: self.driver.clone(),
            class: self.class_name(),
            run: format!("bench-{}-{k}", self.id),
            run_id: u32::from_str_radix(&self.id, 16).unwrap_or_default(),
            volume: self
                .volume
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            labels: self.labels(),
        }
    }

    /// Creates the source volume (unless one was given) and the class.
    pub async fn prepare(&self) -> io::Result<()> {
        if self.volume().is_none() {
            let handle = self.create_volume().await?;
            eprintln!("bench: created volume {handle}");
            *self
                .created_volume
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = true;
            *self.volume.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        }
        Writer::Client(&self.client)
            .create_class(&self.workload(0).class())
            .await?;
        *self
            .created_class
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        Ok(())
    }

    fn volume(&self) -> Option<String> {
        self.volume
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn create_volume(&self) -> io::Result<String> {
        use pb::volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode};
        let req = pb::CreateVolumeRequest {
            name: format!("csi-snapshotter-bench-{}", self.id),
            capacity_range: Some(pb::CapacityRange {
                required_bytes: VOLUME_BYTES,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![pb::VolumeCapability {
                access_type: Some(AccessType::Mount(MountVolume::default())),
                access_mode: Some(AccessMode {
                    mode: Mode::SingleNodeWriter as i32,
                }),
            }],
            ..Default::default()
        };
        let reply = pb::controller_client::ControllerClient::new(self.channel.clone())
            .create_volume(req)
            .await
            .map_err(|e| io::Error::other(format!("CreateVolume: {}", e.message())))?
            .into_inner();
        reply
            .volume
            .map(|v| v.volume_id)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| io::Error::other("CreateVolume: the reply has no volume"))
    }

    /// Who holds the driver's leader-election Lease (in any namespace),
    /// if it was renewed recently.
    async fn lease_holder(&self) -> io::Result<Option<String>> {
        let name = lease_name(&self.driver);
        let leases: Api<Lease> = Api::all(self.client.clone());
        let list = match leases
            .list(&ListParams::default().fields(&format!("metadata.name={name}")))
            .await
        {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "bench: warning: cannot list Leases ({e}); whether another sidecar serves {} is unknown",
                    self.driver
                );
                return Ok(None);
            }
        };
        let now = jiff::Timestamp::now();
        for lease in list.items {
            let spec = lease.spec.unwrap_or_default();
            let (Some(holder), Some(renewed)) = (spec.holder_identity, spec.renew_time) else {
                continue;
            };
            if holder.is_empty() {
                continue;
            }
            let held_for = Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
            )
            .max(LEASE_HELD_FOR);
            let ago = now.duration_since(renewed.0).unsigned_abs();
            if ago < held_for {
                return Ok(Some(format!(
                    "Lease {}/{name} is held by {holder} (renewed {:.0} s ago)",
                    lease.metadata.namespace.unwrap_or_default(),
                    ago.as_secs_f64()
                )));
            }
        }
        Ok(None)
    }

    /// Mentions contents an earlier, interrupted benchmark left.
    async fn warn_leftovers(&self) {
        let selector = format!("{CREATED_BY}={CREATED_BY_VALUE}");
        if let Ok(list) = workload::contents(&self.client)
            .list_metadata(&ListParams::default().labels(&selector))
            .await
            && !list.items.is_empty()
        {
            eprintln!(
                "bench: warning: {} VolumeSnapshotContents of earlier runs are left (-l {selector})",
                list.items.len()
            );
        }
    }

    /// Removes what this invocation created: its contents (deleted as the
    /// snapshot-controller would, with a sidecar started for the purpose
    /// so that their backend snapshots are deleted too), the class and the
    /// volume. A content that does not go within `timeout` is left in
    /// place and named, rather than forced out (that would leak its
    /// backend snapshot).
    pub async fn cleanup(&self, spec: &SidecarSpec, dir: &Path, timeout: Duration) {
        if let Err(e) = self.remove_contents(spec, dir, timeout).await {
            eprintln!("bench: cleanup: {e}");
        }
        if *self
            .created_class
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            let classes: Api<DynamicObject> =
                Api::all_with(self.client.clone(), &workload::class_resource());
            if let Err(e) = classes
                .delete(&self.class_name(), &DeleteParams::default())
                .await
            {
                eprintln!("bench: cleanup: class {}: {e}", self.class_name());
            }
        }
        let created = *self
            .created_volume
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let (true, Some(volume)) = (created, self.volume()) {
            let req = pb::DeleteVolumeRequest {
                volume_id: volume.clone(),
                ..Default::default()
            };
            match pb::controller_client::ControllerClient::new(self.channel.clone())
                .delete_volume(req)
                .await
            {
                Ok(_) => eprintln!("bench: deleted volume {volume}"),
                Err(e) => eprintln!("bench: cleanup: DeleteVolume {volume}: {}", e.message()),
            }
        }
    }

    async fn remove_contents(
        &self,
        spec: &SidecarSpec,
        dir: &Path,
        timeout: Duration,
    ) -> io::Result<()> {
        let api = workload::contents(&self.client);
        let selector = self.selector();
        let names = |list: kube::core::ObjectList<kube::core::PartialObjectMeta<DynamicObject>>| {
            list.items
                .into_iter()
                .filter_map(|o| o.metadata.name)
                .collect::<Vec<_>>()
        };
        let left = names(
            api.list_metadata(&ListParams::default().labels(&selector))
                .await
                .map_err(io::Error::other)?,
        );
        if left.is_empty() {
            return Ok(());
        }
        eprintln!(
            "bench: cleanup: deleting {} contents through a sidecar",
            left.len()
        );
        let tracker = Tracker::start(self.client.clone(), Some(&selector)).await?;
        let mut sidecar = Sidecar::start(
            spec,
            &self.sidecar_kubeconfig,
            &self.csi_address,
            &dir.join("cleanup.log"),
        )?;
        let writer = Writer::Client(&self.client);
        let mut result = Ok(());
        for name in &left {
            if let Err(e) = writer.delete_content(name).await {
                result = Err(e);
                break;
            }
        }
        let start = Instant::now();
        while result.is_ok()
            && tracker.count(&left, |s| s.gone.is_some()) < left.len()
            && start.elapsed() < timeout
        {
            if let Err(e) = sidecar.check_alive() {
                result = Err(e);
            }
            tokio::time::sleep(CLEANUP_POLL).await;
        }
        sidecar.stop().await;
        result?;
        let stuck = names(
            api.list_metadata(&ListParams::default().labels(&selector))
                .await
                .map_err(io::Error::other)?,
        );
        if !stuck.is_empty() {
            return Err(io::Error::other(format!(
                "{} contents did not go within {timeout:?} and are left in place (-l {selector}), e.g. {}",
                stuck.len(),
                stuck[0]
            )));
        }
        Ok(())
    }
}

fn read_kubeconfig(path: &Path) -> io::Result<Kubeconfig> {
    Kubeconfig::read_from(path).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: {e}", path.display()),
        )
    })
}

/// A client from a kubeconfig file (its current context).
pub async fn client(path: &Path) -> io::Result<kube::Client> {
    let config =
        kube::Config::from_custom_kubeconfig(read_kubeconfig(path)?, &KubeConfigOptions::default())
            .await
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
    kube::Client::try_from(config).map_err(io::Error::other)
}
