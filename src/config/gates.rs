//! `--feature-gates`: the sidecar's own gates plus the names Go's shared
//! feature-gate registry also accepts.

use std::collections::BTreeMap;

/// Gate that turns VolumeGroupSnapshotContent handling on (GA, default true).
pub const CSI_VOLUME_GROUP_SNAPSHOT: &str = "CSIVolumeGroupSnapshot";
/// Gate that releases the Lease on shutdown (alpha, default false).
pub const RELEASE_LEADER_ELECTION_ON_EXIT: &str = "ReleaseLeaderElectionOnExit";

/// Names upstream accepts because they share one registry with it; setting
/// them has no effect on this sidecar. `AllAlpha`/`AllBeta` are the registry's
/// meta gates, `ComponentFlagz`/`ComponentStatusz` the component-base z-pages
/// gates, and the rest the generic `k8s.io/apiserver` gates.
const ACCEPTED_WITHOUT_EFFECT: &[&str] = &[
    "AllAlpha",
    "AllBeta",
    "ComponentFlagz",
    "ComponentStatusz",
    "APIResponseCompression",
    "APIServerIdentity",
    "APIServerTracing",
    "APIServingWithRoutine",
    "AggregatedDiscoveryRemoveBetaType",
    "AllowParsingUserUIDFromCertAuth",
    "AllowUnsafeMalformedObjectDeletion",
    "AnonymousAuthConfigurableEndpoints",
    "AuthorizeWithSelectors",
    "BtreeWatchCache",
    "CBORServingAndStorage",
    "ConcurrentWatchObjectDecode",
    "ConsistentListFromCache",
    "ConstrainedImpersonation",
    "CoordinatedLeaderElection",
    "DeclarativeValidation",
    "DeclarativeValidationTakeover",
    "DetectCacheInconsistency",
    "KMSv1",
    "ListFromCacheSnapshot",
    "MutatingAdmissionPolicy",
    "OpenAPIEnums",
    "RemoteRequestHeaderUID",
    "ResilientWatchCacheInitialization",
    "RetryGenerateName",
    "SeparateCacheWatchRPC",
    "SizeBasedListCostEstimate",
    "StorageVersionAPI",
    "StorageVersionHash",
    "StreamingCollectionEncodingToJSON",
    "StreamingCollectionEncodingToProtobuf",
    "StructuredAuthenticationConfiguration",
    "StructuredAuthenticationConfigurationEgressSelector",
    "StructuredAuthenticationConfigurationJWKSMetrics",
    "StructuredAuthorizationConfiguration",
    "TokenRequestServiceAccountUIDValidation",
    "UnauthenticatedHTTP2DOSMitigation",
    "UnknownVersionInteroperabilityProxy",
    "WatchCacheInitializationPostStartHook",
    "WatchFromStorageWithoutResourceVersion",
    "WatchList",
];

/// The resolved feature gates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureGates {
    /// `CSIVolumeGroupSnapshot`: handle VolumeGroupSnapshotContents (subject
    /// to the startup CRD probe).
    pub csi_volume_group_snapshot: bool,
    /// `ReleaseLeaderElectionOnExit`: SIGTERM/SIGINT start a graceful
    /// shutdown that releases the Lease.
    pub release_leader_election_on_exit: bool,
    /// Every gate given on the command line, last value wins.
    pub explicit: BTreeMap<String, bool>,
}

impl Default for FeatureGates {
    fn default() -> Self {
        FeatureGates {
            csi_volume_group_snapshot: true,
            release_leader_election_on_exit: false,
            explicit: BTreeMap::new(),
        }
    }
}

impl FeatureGates {
    /// Applies the accumulated `--feature-gates` pairs. An unknown name is the
    /// error (upstream treats it as fatal, exit 255).
    pub fn from_pairs(pairs: &[(String, bool)]) -> Result<FeatureGates, String> {
        let mut gates = FeatureGates::default();
        for (name, enabled) in pairs {
            match name.as_str() {
                CSI_VOLUME_GROUP_SNAPSHOT => gates.csi_volume_group_snapshot = *enabled,
                RELEASE_LEADER_ELECTION_ON_EXIT => gates.release_leader_election_on_exit = *enabled,
                other if ACCEPTED_WITHOUT_EFFECT.contains(&other) => {}
                other => return Err(format!("unrecognized feature gate: {other}")),
            }
            gates.explicit.insert(name.clone(), *enabled);
        }
        Ok(gates)
    }

    /// Warnings to log at startup: setting a GA gate to false is allowed but
    /// the gate will go away.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.explicit.get(CSI_VOLUME_GROUP_SNAPSHOT) == Some(&false) {
            out.push(format!(
                "Setting GA feature gate {CSI_VOLUME_GROUP_SNAPSHOT}=false. It will be removed in a future release."
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, bool)]) -> Vec<(String, bool)> {
        v.iter().map(|(n, b)| (n.to_string(), *b)).collect()
    }

    #[test]
    fn defaults_are_group_on_release_off() {
        let g = FeatureGates::from_pairs(&[]).unwrap();
        assert!(g.csi_volume_group_snapshot);
        assert!(!g.release_leader_election_on_exit);
        assert!(g.warnings().is_empty());
    }

    #[test]
    fn known_gates_apply_and_last_value_wins() {
        let g = FeatureGates::from_pairs(&pairs(&[
            (RELEASE_LEADER_ELECTION_ON_EXIT, true),
            (CSI_VOLUME_GROUP_SNAPSHOT, true),
            (CSI_VOLUME_GROUP_SNAPSHOT, false),
        ]))
        .unwrap();
        assert!(g.release_leader_election_on_exit);
        assert!(!g.csi_volume_group_snapshot);
        assert_eq!(g.warnings().len(), 1);
        assert!(g.warnings()[0].contains("CSIVolumeGroupSnapshot=false"));
    }

    #[test]
    fn shared_registry_gates_are_accepted_without_effect() {
        let g = FeatureGates::from_pairs(&pairs(&[
            ("AllAlpha", true),
            ("AllBeta", false),
            ("ComponentFlagz", true),
            ("WatchList", true),
        ]))
        .unwrap();
        assert!(g.csi_volume_group_snapshot);
        assert!(!g.release_leader_election_on_exit);
    }

    #[test]
    fn unknown_gates_are_rejected() {
        let err = FeatureGates::from_pairs(&pairs(&[("NoSuchGate", true)])).unwrap_err();
        assert_eq!(err, "unrecognized feature gate: NoSuchGate");
        assert!(FeatureGates::from_pairs(&pairs(&[("csivolumegroupsnapshot", true)])).is_err());
    }
}
