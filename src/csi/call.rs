//! The one path every CSI RPC takes: a deadline, TRACE logging of the
//! redacted request and of the reply, and one observation in
//! `csi_sidecar_operations_seconds` labelled with the full method path.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Channel;

use super::error::{CsiError, go_code_name};
use super::redact::Redact;
use crate::metrics::{CsiOperationMetrics, UNKNOWN_NON_GRPC};

/// Full gRPC method paths of the RPCs the sidecar makes.
pub mod methods {
    /// `Identity.GetPluginInfo`.
    pub const GET_PLUGIN_INFO: &str = "/csi.v1.Identity/GetPluginInfo";
    /// `Identity.Probe`.
    pub const PROBE: &str = "/csi.v1.Identity/Probe";
    /// `Controller.ControllerGetCapabilities`.
    pub const CONTROLLER_GET_CAPABILITIES: &str = "/csi.v1.Controller/ControllerGetCapabilities";
    /// `Controller.CreateSnapshot`.
    pub const CREATE_SNAPSHOT: &str = "/csi.v1.Controller/CreateSnapshot";
    /// `Controller.DeleteSnapshot`.
    pub const DELETE_SNAPSHOT: &str = "/csi.v1.Controller/DeleteSnapshot";
    /// `Controller.ListSnapshots`.
    pub const LIST_SNAPSHOTS: &str = "/csi.v1.Controller/ListSnapshots";
    /// `Controller.GetSnapshot` (alpha).
    pub const GET_SNAPSHOT: &str = "/csi.v1.Controller/GetSnapshot";
    /// `GroupController.GroupControllerGetCapabilities`.
    pub const GROUP_CONTROLLER_GET_CAPABILITIES: &str =
        "/csi.v1.GroupController/GroupControllerGetCapabilities";
    /// `GroupController.CreateVolumeGroupSnapshot`.
    pub const CREATE_VOLUME_GROUP_SNAPSHOT: &str =
        "/csi.v1.GroupController/CreateVolumeGroupSnapshot";
    /// `GroupController.GetVolumeGroupSnapshot`.
    pub const GET_VOLUME_GROUP_SNAPSHOT: &str = "/csi.v1.GroupController/GetVolumeGroupSnapshot";
    /// `GroupController.DeleteVolumeGroupSnapshot`.
    pub const DELETE_VOLUME_GROUP_SNAPSHOT: &str =
        "/csi.v1.GroupController/DeleteVolumeGroupSnapshot";
}

/// Status message of a call cut off by its deadline (Go's wording).
const DEADLINE_MESSAGE: &str = "context deadline exceeded";

/// The channel plus the metric every call is recorded in.
#[derive(Clone)]
pub(crate) struct Caller {
    pub(crate) channel: Channel,
    pub(crate) metrics: CsiOperationMetrics,
}

impl Caller {
    /// Runs one unary RPC `method` (full path) with `request`, cut off at
    /// `deadline`. `send` issues the RPC on a clone of the channel.
    pub(crate) async fn unary<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        request: Req,
        deadline: Instant,
        send: F,
    ) -> Result<Resp, CsiError>
    where
        Req: Redact,
        Resp: Redact,
        F: FnOnce(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        tracing::trace!(method, request = ?request.redacted(), "GRPC call");
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut req = tonic::Request::new(request);
        // Tell the driver the deadline too (grpc-timeout), as Go clients do.
        req.set_timeout(remaining.max(Duration::from_millis(1)));
        let start = Instant::now();
        let result = match tokio::time::timeout(remaining, send(self.channel.clone(), req)).await {
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            // As with a Go context, a call that ends at or after its
            // deadline failed because of it, whatever the server said (a
            // tonic server answers an expired grpc-timeout with Cancelled).
            Ok(Err(_)) if Instant::now() >= deadline => Err(CsiError::status(
                tonic::Code::DeadlineExceeded,
                DEADLINE_MESSAGE,
            )),
            Ok(Err(status)) => Err(CsiError::from(status)),
            Err(_) => Err(CsiError::status(
                tonic::Code::DeadlineExceeded,
                DEADLINE_MESSAGE,
            )),
        };
        let elapsed = start.elapsed();
        let label = match &result {
            Ok(_) => "OK",
            Err(CsiError::Status { code, .. }) => go_code_name(*code),
            Err(_) => UNKNOWN_NON_GRPC,
        };
        self.metrics.observe(method, label, elapsed);
        match &result {
            Ok(reply) => tracing::trace!(method, response = ?reply.redacted(), "GRPC response"),
            Err(e) => tracing::debug!(method, code = label, error = %e, "GRPC error"),
        }
        result
    }
}
