//! What a policy sees (`FleetView`, `FleetTotals`), why it is asked (`Trigger`) and
//! what it answers (`ScalingDecision`).

use serde::{Deserialize, Serialize};

use crate::config::Catalog;
use crate::types::{LocationIdx, NodeId, Timestamp, VmTypeIdx};

/// Why the policy is being asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The periodic evaluation.
    Tick,
    /// Queued demand some catalog type could hold exceeds the capacity on its way.
    Demand,
}

/// Fleet-wide totals the core maintains incrementally (O(1) to read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetTotals {
    /// Usable RAM (capacity minus reserve) on ready nodes.
    pub ready_usable_mib: u64,
    /// RAM reserved or held by servers on ready and draining nodes.
    pub allocated_mib: u64,
    /// Usable RAM on nodes still provisioning.
    pub provisioning_usable_mib: u64,
    /// Usable RAM on draining (cordoned) nodes; included in `ready_usable_mib`.
    pub draining_usable_mib: u64,
    pub n_cloud_draining: u32,
    /// Cloud nodes that exist or are on their way (provisioning, ready, draining).
    pub n_cloud_nodes: u32,
    pub n_cloud_provisioning: u32,
    pub n_ready_nodes: u32,
    pub queued_count: u32,
    pub queued_demand_mib: u64,
    pub servers_holding_ram: u32,
}

/// What a policy sees. Borrowed from the core: building it costs nothing.
pub struct FleetView<'a> {
    pub now: Timestamp,
    pub trigger: Trigger,
    pub totals: FleetTotals,
    pub nodes: &'a crate::model::NodeMap,
    /// The first `QUEUE_VIEW_MAX` queued requests as `(RAM, how many)`, ascending by
    /// RAM, every count at least 1. (First-fit decreasing needs the sizes, not the
    /// order; while the queue is no longer than that, this is the queue's own tally.)
    pub queued_by_size: &'a [(u32, u32)],
    /// Usable RAM of each node still provisioning (capacity on its way), by id.
    pub provisioning_usable_mib: &'a std::collections::BTreeMap<NodeId, u32>,
    /// Ready cloud nodes that hold no server, by id.
    pub empty_cloud_nodes: &'a std::collections::BTreeSet<NodeId>,
    /// Cloud nodes cordoned by the policy (draining), by id.
    pub draining_cloud_nodes: &'a std::collections::BTreeSet<NodeId>,
    pub catalog: &'a Catalog,
    /// Usable RAM of a new node of each catalog type (`usable_mib`), indexed by
    /// `VmTypeIdx`: computed once, the catalog and the reserve being fixed.
    pub type_usable_mib: &'a [u32],
    pub last_scale_up_at: Option<Timestamp>,
    /// Queued requests a new VM of some catalog type could hold: how many, and their
    /// RAM. The rest (larger than every type after reserve) wait for dedicated
    /// capacity: the cloud policy neither scales for them nor keeps nodes for them.
    pub queued_for_cloud_count: u32,
    pub queued_for_cloud_mib: u64,
}

/// Usable RAM of every node still provisioning, by id, recomputed from the nodes
/// (the core keeps it incrementally for `FleetView::provisioning_usable_mib`).
pub fn provisioning_usable_mib(nodes: &crate::model::NodeMap) -> std::collections::BTreeMap<NodeId, u32> {
    nodes
        .values()
        .filter(|n| n.state == crate::model::NodeState::Provisioning)
        .map(|n| (n.id, n.usable_mib()))
        .collect()
}

pub const QUEUE_VIEW_MAX: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScalingDecision {
    pub provision: Vec<(VmTypeIdx, LocationIdx)>,
    /// Empty cloud nodes to delete. The core ignores any that are not empty, ready
    /// cloud nodes.
    pub delete: Vec<NodeId>,
    /// Ready cloud nodes to cordon: no new servers; deleted once empty. Servers on
    /// them run until they stop on their own (never interrupted).
    pub drain: Vec<NodeId>,
    /// Draining nodes to take back into service (cheaper than a new VM).
    pub uncordon: Vec<NodeId>,
}

pub trait ScalingPolicy: Send {
    fn evaluate(&mut self, view: &FleetView<'_>) -> ScalingDecision;

    /// What the policy has learned from what it saw (kept in snapshots and across a
    /// reconfiguration); the default: nothing.
    fn state(&self) -> PolicyState {
        PolicyState::default()
    }

    /// Takes back what `state` returned (from a snapshot, or from the policy this one
    /// replaces); parts it has no use for are dropped.
    fn set_state(&mut self, _state: PolicyState) {}
}

/// What a policy has learned: the underutilized rule's clocks and the forecast's
/// demand profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyState {
    /// Since when each ready cloud node has been under the underutilized threshold.
    pub under_since: Vec<(NodeId, Timestamp)>,
    pub demand: Option<super::predictive::DemandProfile>,
}

/// Stands in for the policy while a snapshot is read back: holds its state until
/// `Core::restore` builds the configured policy and hands it over.
pub(crate) struct RestoredPolicyState(pub PolicyState);

impl ScalingPolicy for RestoredPolicyState {
    fn evaluate(&mut self, _view: &FleetView<'_>) -> ScalingDecision {
        unreachable!("Core::restore replaces the restored state with the configured policy")
    }

    fn state(&self) -> PolicyState {
        self.0.clone()
    }
}

pub struct StaticPolicy;

impl ScalingPolicy for StaticPolicy {
    fn evaluate(&mut self, _view: &FleetView<'_>) -> ScalingDecision {
        ScalingDecision::default()
    }
}
