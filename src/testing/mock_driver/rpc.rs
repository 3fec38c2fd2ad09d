//! Per-RPC bookkeeping of the mock: call counters, the last request, the
//! secrets received, injected latency, injected errors and malformed replies.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tonic::{Code, Status};

/// Every RPC the mock serves, by its gRPC method name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rpc {
    GetPluginInfo,
    GetPluginCapabilities,
    Probe,
    CreateVolume,
    DeleteVolume,
    ControllerGetCapabilities,
    CreateSnapshot,
    DeleteSnapshot,
    ListSnapshots,
    GetSnapshot,
    GroupControllerGetCapabilities,
    CreateVolumeGroupSnapshot,
    DeleteVolumeGroupSnapshot,
    GetVolumeGroupSnapshot,
}

impl Rpc {
    /// All RPCs, in table order.
    pub(crate) const ALL: [Rpc; 14] = [
        Rpc::GetPluginInfo,
        Rpc::GetPluginCapabilities,
        Rpc::Probe,
        Rpc::CreateVolume,
        Rpc::DeleteVolume,
        Rpc::ControllerGetCapabilities,
        Rpc::CreateSnapshot,
        Rpc::DeleteSnapshot,
        Rpc::ListSnapshots,
        Rpc::GetSnapshot,
        Rpc::GroupControllerGetCapabilities,
        Rpc::CreateVolumeGroupSnapshot,
        Rpc::DeleteVolumeGroupSnapshot,
        Rpc::GetVolumeGroupSnapshot,
    ];

    /// The gRPC method name, e.g. `CreateSnapshot`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Rpc::GetPluginInfo => "GetPluginInfo",
            Rpc::GetPluginCapabilities => "GetPluginCapabilities",
            Rpc::Probe => "Probe",
            Rpc::CreateVolume => "CreateVolume",
            Rpc::DeleteVolume => "DeleteVolume",
            Rpc::ControllerGetCapabilities => "ControllerGetCapabilities",
            Rpc::CreateSnapshot => "CreateSnapshot",
            Rpc::DeleteSnapshot => "DeleteSnapshot",
            Rpc::ListSnapshots => "ListSnapshots",
            Rpc::GetSnapshot => "GetSnapshot",
            Rpc::GroupControllerGetCapabilities => "GroupControllerGetCapabilities",
            Rpc::CreateVolumeGroupSnapshot => "CreateVolumeGroupSnapshot",
            Rpc::DeleteVolumeGroupSnapshot => "DeleteVolumeGroupSnapshot",
            Rpc::GetVolumeGroupSnapshot => "GetVolumeGroupSnapshot",
        }
    }

    /// Looks an RPC up by method name.
    pub(crate) fn parse(name: &str) -> Option<Rpc> {
        Rpc::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Like [`Rpc::parse`], for handle methods where a wrong name is a bug in
    /// the calling test.
    pub(crate) fn expect(name: &str) -> Rpc {
        match Rpc::parse(name) {
            Some(r) => r,
            None => panic!(
                "mock driver: unknown RPC {name:?}; expected one of {:?}",
                Rpc::ALL.map(Rpc::name)
            ),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A way to answer OK with a reply a correct driver would never send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// OK without the `snapshot` / `group_snapshot` message.
    MissingMessage,
    /// The snapshot (or group) lacks `creation_time`.
    MissingCreationTime,
    /// An empty `snapshot_id` (or `group_snapshot_id`).
    EmptyId,
    /// A negative `size_bytes` (on every snapshot of the reply).
    NegativeSize,
}

/// When an injected error is returned relative to the backend change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailWhen {
    /// Before the backend is touched: the call has no effect.
    Before,
    /// After the backend applied the call: the effect happened but the
    /// caller sees an error, as when a reply is lost.
    After,
}

#[derive(Debug, Clone, Copy)]
struct Injection {
    code: Code,
    /// `None` means every call until cleared.
    remaining: Option<u32>,
}

impl Injection {
    /// Consumes one use; returns the status to answer with.
    fn take(slot: &mut Option<Injection>, rpc: Rpc) -> Option<Status> {
        let inj = slot.as_mut()?;
        let code = inj.code;
        match &mut inj.remaining {
            None => {}
            Some(0) => {
                *slot = None;
                return None;
            }
            Some(n) => {
                *n -= 1;
                if *n == 0 {
                    *slot = None;
                }
            }
        }
        Some(Status::new(
            code,
            format!("mock driver: injected {code:?} for {}", rpc.name()),
        ))
    }
}

#[derive(Default)]
struct SlotState {
    last_request: Option<Vec<u8>>,
    last_secrets: Option<HashMap<String, String>>,
    before: Option<Injection>,
    after: Option<Injection>,
    malformed: Option<Malformed>,
}

#[derive(Default)]
struct Slot {
    calls: AtomicU64,
    latency_ns: AtomicU64,
    state: Mutex<SlotState>,
}

/// The per-RPC table. Not `Debug`: it holds the secrets of the last requests.
#[derive(Default)]
pub(crate) struct RpcTable {
    slots: [Slot; Rpc::ALL.len()],
}

impl RpcTable {
    fn slot(&self, rpc: Rpc) -> &Slot {
        &self.slots[rpc.index()]
    }

    fn lock(&self, rpc: Rpc) -> std::sync::MutexGuard<'_, SlotState> {
        // A panic while holding this short lock cannot leave the slot in a
        // state worse than the test that panicked; keep serving.
        self.slot(rpc)
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts the call, records the request, waits the injected latency and
    /// returns an injected "before" error, if any.
    pub(crate) async fn enter<M: prost::Message>(
        &self,
        rpc: Rpc,
        req: &M,
        secrets: Option<&HashMap<String, String>>,
    ) -> Result<(), Status> {
        let slot = self.slot(rpc);
        slot.calls.fetch_add(1, Ordering::Relaxed);
        let injected = {
            let mut st = self.lock(rpc);
            st.last_request = Some(req.encode_to_vec());
            if let Some(s) = secrets {
                st.last_secrets = Some(s.clone());
            }
            Injection::take(&mut st.before, rpc)
        };
        let latency = slot.latency_ns.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_nanos(latency)).await;
        }
        match injected {
            Some(status) => Err(status),
            None => Ok(()),
        }
    }

    /// An injected "after" error, if any, and the malformation to apply.
    pub(crate) fn leave(&self, rpc: Rpc) -> Result<Option<Malformed>, Status> {
        let mut st = self.lock(rpc);
        match Injection::take(&mut st.after, rpc) {
            Some(status) => Err(status),
            None => Ok(st.malformed),
        }
    }

    pub(crate) fn calls(&self, rpc: Rpc) -> u64 {
        self.slot(rpc).calls.load(Ordering::Relaxed)
    }

    pub(crate) fn reset_calls(&self) {
        for s in &self.slots {
            s.calls.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn last_request(&self, rpc: Rpc) -> Option<Vec<u8>> {
        self.lock(rpc).last_request.clone()
    }

    pub(crate) fn last_secrets(&self, rpc: Rpc) -> Option<HashMap<String, String>> {
        self.lock(rpc).last_secrets.clone()
    }

    pub(crate) fn set_latency(&self, rpc: Rpc, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.slot(rpc).latency_ns.store(ns, Ordering::Relaxed);
    }

    pub(crate) fn inject(&self, rpc: Rpc, when: FailWhen, code: Code, times: Option<u32>) {
        let mut st = self.lock(rpc);
        let inj = Some(Injection {
            code,
            remaining: times,
        });
        match when {
            FailWhen::Before => st.before = inj,
            FailWhen::After => st.after = inj,
        }
    }

    pub(crate) fn clear_failures(&self, rpc: Rpc) {
        let mut st = self.lock(rpc);
        st.before = None;
        st.after = None;
    }

    pub(crate) fn set_malformed(&self, rpc: Rpc, m: Option<Malformed>) {
        self.lock(rpc).malformed = m;
    }
}
