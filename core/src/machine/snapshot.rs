//! Snapshots: the core's whole state out (`snapshot`) and back (`restore`). The
//! envelope, its versions and the serde helpers are in `crate::snapshot`.

use super::*;
use crate::snapshot::{Snapshot, SnapshotError, SnapshotHeader, SnapshotRef};

impl Core {
    /// The core's state as a snapshot to serialize (with this core's header). Take it
    /// between inputs, once the outputs are drained: what it holds is restored as is.
    pub fn snapshot(&self) -> SnapshotRef<'_> {
        SnapshotRef {
            header: SnapshotHeader::current(),
            state: self,
        }
    }

    /// The core a snapshot holds: its format checked, the configured policy rebuilt
    /// with what the snapshot's had learned, every invariant checked.
    pub fn restore(snapshot: Snapshot) -> Result<Core, SnapshotError> {
        snapshot.header.check()?;
        let mut core = snapshot.state;
        core.config
            .validate()
            .map_err(|error| SnapshotError::Malformed(format!("its configuration: {error}")))?;
        let learned = core.policy.state();
        core.policy = core.config.policy.build(&core.config.catalog);
        core.policy.set_state(learned);
        core.check_invariants().map_err(SnapshotError::Malformed)?;
        Ok(core)
    }
}

/// serde for the policy: what it learned (`ScalingPolicy::state`). Read back, it is a
/// stand-in holding that state until `Core::restore` builds the configured policy.
pub(super) mod policy_state {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::policy::view::RestoredPolicyState;
    use crate::policy::{PolicyState, ScalingPolicy};

    // serde's `with` passes the field itself by reference: a `&Box`.
    #[allow(clippy::borrowed_box)]
    pub fn serialize<S: Serializer>(policy: &Box<dyn ScalingPolicy>, serializer: S) -> Result<S::Ok, S::Error> {
        policy.state().serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Box<dyn ScalingPolicy>, D::Error> {
        Ok(Box::new(RestoredPolicyState(PolicyState::deserialize(deserializer)?)))
    }
}
