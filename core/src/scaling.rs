//! Scaling policies: they look at the fleet, the queue and the clock, and say which
//! cloud nodes to add or remove. The core applies the decision: it registers every
//! node it orders as a `Provisioning` placeholder *before* the provider is asked, so
//! the capacity already on its way is visible to the next evaluation and the same
//! demand is never provisioned twice.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Catalog;
use crate::model::Node;
use crate::types::{LocationIdx, MS_PER_MINUTE, MS_PER_SECOND, NodeId, ServerTypeIdx, Timestamp};

/// The scaling configuration: bounds and choices shared by every policy, plus one
/// optional table per policy. No policy table means no autoscaling (a static fleet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// The periodic evaluation interval.
    #[serde(rename = "evaluate_every", with = "crate::units::duration_ms")]
    pub evaluate_every_ms: u64,
    /// Preferred server type (by name); a larger one is chosen when a queued request
    /// does not fit it. `None`: the cheapest type that fits.
    pub server_type: Option<String>,
    /// Location to order in; `None`: the catalog's first.
    pub location: Option<String>,
    pub min_cloud_nodes: u32,
    pub max_cloud_nodes: u32,
    /// At most this many nodes ordered per evaluation.
    pub max_provision_per_eval: u32,
    /// Reactive thresholds; `None`: the reactive policy is off.
    pub reactive: Option<ReactiveConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            evaluate_every_ms: 30 * MS_PER_SECOND,
            server_type: None,
            location: None,
            min_cloud_nodes: 0,
            max_cloud_nodes: 50,
            max_provision_per_eval: 10,
            reactive: None,
        }
    }
}

impl PolicyConfig {
    /// A reactive policy with default thresholds.
    pub fn reactive() -> PolicyConfig {
        PolicyConfig {
            reactive: Some(ReactiveConfig::default()),
            ..PolicyConfig::default()
        }
    }

    /// Whether any policy is on.
    pub fn autoscales(&self) -> bool {
        self.reactive.is_some()
    }

    pub fn evaluate_every_ms(&self) -> Option<u64> {
        self.autoscales().then_some(self.evaluate_every_ms)
    }

    pub fn build(&self, catalog: &Catalog) -> Box<dyn ScalingPolicy> {
        match &self.reactive {
            None => Box::new(StaticPolicy),
            Some(reactive) => Box::new(ReactivePolicy::new(self, reactive.clone(), catalog)),
        }
    }

    /// The preferred server type and the location, resolved against the catalog.
    pub fn resolve(&self, catalog: &Catalog) -> (Option<ServerTypeIdx>, LocationIdx) {
        let preferred = self.server_type.as_ref().map(|name| {
            let idx = catalog
                .server_types
                .iter()
                .position(|t| &t.name == name)
                .unwrap_or_else(|| panic!("server type {name:?} is not in the catalog"));
            ServerTypeIdx(idx as u16)
        });
        let location = self.location.as_ref().map_or(LocationIdx(0), |name| {
            let idx = catalog
                .locations
                .iter()
                .position(|l| l == name)
                .unwrap_or_else(|| panic!("location {name:?} is not in the catalog"));
            LocationIdx(idx as u16)
        });
        (preferred, location)
    }
}

/// Reactive thresholds: scale up on a queue or on low free RAM, scale down cloud
/// nodes that stayed empty, with cooldowns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReactiveConfig {
    /// Order a node when free RAM on ready plus provisioning nodes falls below this.
    pub scale_up_free_mib_below: u64,
    /// After a scale-up, wait this long before a free-RAM-triggered scale-up.
    /// Queue-triggered scale-ups are not delayed: they count capacity on its way.
    #[serde(rename = "scale_up_cooldown", with = "crate::units::duration_ms")]
    pub scale_up_cooldown_ms: u64,
    /// A cloud node empty for this long is deleted.
    #[serde(rename = "scale_down_empty_after", with = "crate::units::duration_ms")]
    pub scale_down_empty_after_ms: u64,
    /// No scale-down for this long after a scale-up.
    #[serde(rename = "scale_down_cooldown", with = "crate::units::duration_ms")]
    pub scale_down_cooldown_ms: u64,
}

impl Default for ReactiveConfig {
    fn default() -> Self {
        ReactiveConfig {
            scale_up_free_mib_below: 0,
            scale_up_cooldown_ms: 60 * MS_PER_SECOND,
            scale_down_empty_after_ms: 10 * MS_PER_MINUTE,
            scale_down_cooldown_ms: 10 * MS_PER_MINUTE,
        }
    }
}

/// Why the policy is being asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The periodic evaluation.
    Tick,
    /// Queued demand exceeds the capacity on its way.
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
    pub nodes: &'a BTreeMap<NodeId, Node>,
    /// RAM of queued requests in queue order (at most `QUEUE_VIEW_MAX`).
    pub queued_ram_mib: &'a [u32],
    /// Usable RAM of each node still provisioning (capacity on its way).
    pub provisioning_usable_mib: &'a [u32],
    /// Ready cloud nodes that hold no server, by id.
    pub empty_cloud_nodes: &'a std::collections::BTreeSet<NodeId>,
    pub catalog: &'a Catalog,
    pub last_scale_up_at: Option<Timestamp>,
    pub reserve: &'a crate::config::ReserveConfig,
}

pub const QUEUE_VIEW_MAX: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScalingDecision {
    pub provision: Vec<(ServerTypeIdx, LocationIdx)>,
    /// Empty cloud nodes to delete. The core ignores any that are not empty, ready
    /// cloud nodes.
    pub delete: Vec<NodeId>,
}

pub trait ScalingPolicy: Send {
    fn evaluate(&mut self, view: &FleetView<'_>) -> ScalingDecision;
}

pub struct StaticPolicy;

impl ScalingPolicy for StaticPolicy {
    fn evaluate(&mut self, _view: &FleetView<'_>) -> ScalingDecision {
        ScalingDecision::default()
    }
}

pub struct ReactivePolicy {
    config: ReactiveConfig,
    min_cloud_nodes: u32,
    max_cloud_nodes: u32,
    max_provision_per_eval: u32,
    preferred: Option<ServerTypeIdx>,
    location: LocationIdx,
}

impl ReactivePolicy {
    pub fn new(policy: &PolicyConfig, config: ReactiveConfig, catalog: &Catalog) -> Self {
        let (preferred, location) = policy.resolve(catalog);
        ReactivePolicy {
            config,
            min_cloud_nodes: policy.min_cloud_nodes,
            max_cloud_nodes: policy.max_cloud_nodes,
            max_provision_per_eval: policy.max_provision_per_eval,
            preferred,
            location,
        }
    }
}

/// Usable RAM of a new node of this type.
pub fn usable_mib(catalog: &Catalog, reserve: &crate::config::ReserveConfig, t: ServerTypeIdx) -> u32 {
    let ram_mib = catalog.server_types[t.0 as usize].ram_mib;
    ram_mib - reserve.reserve_mib(ram_mib, false)
}

/// The preferred type when it holds `need_mib`, else the cheapest type that does.
pub fn choose_type(
    catalog: &Catalog,
    reserve: &crate::config::ReserveConfig,
    preferred: Option<ServerTypeIdx>,
    need_mib: u32,
) -> Option<ServerTypeIdx> {
    if let Some(t) = preferred
        && usable_mib(catalog, reserve, t) >= need_mib
    {
        return Some(t);
    }
    (0..catalog.server_types.len())
        .map(|i| ServerTypeIdx(i as u16))
        .filter(|&t| usable_mib(catalog, reserve, t) >= need_mib)
        .min_by_key(|&t| (catalog.server_types[t.0 as usize].price_micros_per_hour, t))
}

/// How many new bins of `bin_mib` first-fit-decreasing needs for `demands` once the
/// `existing_free` bins are used up.
pub fn bins_needed(demands: &[u32], existing_free: &[u32], bin_mib: u32) -> u32 {
    let mut sorted: Vec<u32> = demands.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let mut bins: Vec<u32> = existing_free.to_vec();
    let n_existing = bins.len();
    for need in sorted {
        match bins.iter_mut().find(|free| **free >= need) {
            Some(free) => *free -= need,
            None if need <= bin_mib => bins.push(bin_mib - need),
            None => {}
        }
    }
    (bins.len() - n_existing) as u32
}

impl ScalingPolicy for ReactivePolicy {
    fn evaluate(&mut self, view: &FleetView<'_>) -> ScalingDecision {
        let config = &self.config;
        let totals = view.totals;
        let mut decision = ScalingDecision::default();
        let room = self.max_cloud_nodes.saturating_sub(totals.n_cloud_nodes);

        // Scale up for the queue: pack the queued requests into the capacity on its way,
        // then into new nodes.
        if totals.queued_count > 0 && room > 0 {
            // Requests no catalog type can hold wait for dedicated capacity instead.
            let largest_type_mib = (0..view.catalog.server_types.len())
                .map(|i| usable_mib(view.catalog, view.reserve, ServerTypeIdx(i as u16)))
                .max()
                .unwrap_or(0);
            let largest = view
                .queued_ram_mib
                .iter()
                .copied()
                .filter(|&m| m <= largest_type_mib)
                .max();
            if let Some(t) = largest.and_then(|m| choose_type(view.catalog, view.reserve, self.preferred, m)) {
                let n_new = bins_needed(
                    view.queued_ram_mib,
                    view.provisioning_usable_mib,
                    usable_mib(view.catalog, view.reserve, t),
                );
                let n_new = n_new.min(room).min(self.max_provision_per_eval);
                decision.provision.extend((0..n_new).map(|_| (t, self.location)));
            }
        }

        // Scale up for headroom.
        let free_mib = (totals.ready_usable_mib + totals.provisioning_usable_mib)
            .saturating_sub(totals.allocated_mib + totals.queued_demand_mib);
        let cooled_down = view
            .last_scale_up_at
            .is_none_or(|at| view.now.since(at) >= config.scale_up_cooldown_ms);
        let n_cloud_after = totals.n_cloud_nodes + decision.provision.len() as u32;
        let headroom_low =
            decision.provision.is_empty() && cooled_down && free_mib < config.scale_up_free_mib_below && room > 0;
        if (headroom_low || n_cloud_after < self.min_cloud_nodes)
            && let Some(t) = choose_type(view.catalog, view.reserve, self.preferred, 0)
        {
            let n_new = self.min_cloud_nodes.saturating_sub(n_cloud_after).max(1).min(room);
            decision.provision.extend((0..n_new).map(|_| (t, self.location)));
        }

        // Scale down empty cloud nodes, on the periodic tick only.
        let scale_up_quiet = view
            .last_scale_up_at
            .is_none_or(|at| view.now.since(at) >= config.scale_down_cooldown_ms);
        if view.trigger == Trigger::Tick && decision.provision.is_empty() && totals.queued_count == 0 && scale_up_quiet
        {
            let mut n_cloud = totals.n_cloud_nodes;
            let mut free_after = free_mib;
            for node_id in view.empty_cloud_nodes {
                if n_cloud <= self.min_cloud_nodes {
                    break;
                }
                let node = &view.nodes[node_id];
                let removable = node
                    .empty_since
                    .is_some_and(|since| view.now.since(since) >= config.scale_down_empty_after_ms);
                let usable = node.usable_mib() as u64;
                if removable && free_after.saturating_sub(usable) >= config.scale_up_free_mib_below {
                    decision.delete.push(node.id);
                    n_cloud -= 1;
                    free_after -= usable.min(free_after);
                }
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_decreasing_counts_new_bins() {
        assert_eq!(bins_needed(&[4096, 4096, 2048], &[], 7168), 2);
        assert_eq!(bins_needed(&[4096, 2048], &[7168], 7168), 0);
        assert_eq!(bins_needed(&[], &[], 7168), 0);
        // A request larger than a bin is left for a larger type, not counted here.
        assert_eq!(bins_needed(&[16384], &[], 7168), 0);
    }
}
