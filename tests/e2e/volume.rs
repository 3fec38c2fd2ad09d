//! A source volume made with the driver's own CreateVolume
//! (`E2E_CREATE_VOLUME`), for a cluster without a provisioner for the
//! driver whose driver snapshots only volumes it has (the hostpath driver
//! does). Every pre-created PersistentVolume of the run uses its handle; it
//! is deleted again at the end.

use std::path::PathBuf;

use csi_snapshotter::csi::proto::v1 as pb;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

use crate::say;

/// Small: the hostpath driver copies the volume into every snapshot.
const VOLUME_BYTES: i64 = 1 << 20;

/// The volume, deleted with [`SourceVolume::delete`].
pub struct SourceVolume {
    channel: Channel,
    pub handle: String,
}

/// The socket path of `unix:///path` or `/path`.
fn socket(address: &str) -> PathBuf {
    PathBuf::from(address.strip_prefix("unix://").unwrap_or(address))
}

impl SourceVolume {
    pub async fn create(address: &str) -> Result<SourceVolume, String> {
        let path = socket(address);
        // The URI is required but unused: the connector dials the socket.
        let channel =
            Endpoint::from_static("http://[::1]:50051")
                .connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .map_err(|e| format!("{address}: {e}"))?;
        use pb::volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode};
        let name = format!(
            "e2e-source-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        );
        let req = pb::CreateVolumeRequest {
            name,
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
        let handle = pb::controller_client::ControllerClient::new(channel.clone())
            .create_volume(req)
            .await
            .map_err(|e| format!("CreateVolume: {}", e.message()))?
            .into_inner()
            .volume
            .map(|v| v.volume_id)
            .ok_or("CreateVolume: the reply has no volume")?;
        say(&format!(
            "e2e: created source volume {handle} (E2E_CREATE_VOLUME)"
        ));
        Ok(SourceVolume { channel, handle })
    }

    pub async fn delete(self) {
        let req = pb::DeleteVolumeRequest {
            volume_id: self.handle.clone(),
            ..Default::default()
        };
        match pb::controller_client::ControllerClient::new(self.channel)
            .delete_volume(req)
            .await
        {
            Ok(_) => say(&format!("e2e: deleted source volume {}", self.handle)),
            Err(e) => say(&format!(
                "e2e: DeleteVolume {}: {} (left on the backend)",
                self.handle,
                e.message()
            )),
        }
    }
}
