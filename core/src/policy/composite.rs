//! The composite policy: every enabled component states the capacity it wants, the
//! largest target wins; `evaluate` runs the scale-up steps, then scale-down.

use super::predictive::DemandProfile;
use super::{
    FleetView, PolicyConfig, PredictiveConfig, ReactiveConfig, ScaleDownConfig, ScaleDownRule, ScalingDecision,
    ScalingPolicy, ScheduledConfig, SpareConfig, Trigger, bins_needed, choose_type,
};
use crate::config::Catalog;
use crate::types::{LocationIdx, NodeId, Timestamp, VmTypeIdx};

/// Every policy component in one: see `scenarios/POLICIES.md` for the rule.
///
/// - Demand is RAM held plus RAM queued by requests some VM type could hold; larger
///   requests wait for dedicated capacity and count for nothing here.
/// - Scale-up: (1) the queue: queued requests are packed (first-fit decreasing) into
///   the capacity on its way, then into new nodes of the chosen type; (2) the
///   reactive headroom (`scale_up_free_mib_below`, one node per cooldown); (3) the
///   capacity target, the maximum of the spare pool's target, the forecast and the
///   scheduled minimum: cordoned nodes are taken back first, then nodes ordered;
///   (4) the node minimum, the larger of `min_cloud_nodes` and the scheduled
///   `min_nodes`.
/// - Scale-down, on the periodic tick only, with nothing queued that a VM type could
///   hold and nothing ordered in this evaluation, and not within the cooldown after a scale-up: a cloud node
///   goes only if the active rule allows it, and the capacity without it still meets
///   the capacity target, the demand plus the reactive headroom, and the node minimum.
pub struct CompositePolicy {
    pub(super) reactive: Option<ReactiveConfig>,
    pub(super) spare: Option<SpareConfig>,
    pub(super) predictive: Option<(PredictiveConfig, DemandProfile)>,
    pub(super) scheduled: Option<ScheduledConfig>,
    pub(super) scale_down: ScaleDownConfig,
    pub(super) min_cloud_nodes: u32,
    pub(super) max_cloud_nodes: u32,
    pub(super) max_provision_per_eval: u32,
    pub(super) preferred: Option<VmTypeIdx>,
    pub(super) location: LocationIdx,
    /// Underutilized rule: since when each ready cloud node has been under the
    /// threshold, ordered by node id; and a spare buffer to rebuild it into.
    pub(super) under_since: Vec<(NodeId, Timestamp)>,
    pub(super) under_buffer: Vec<(NodeId, Timestamp)>,
    /// Scratch bins for `bins_needed` (no allocation per evaluation).
    pub(super) bins_buffer: Vec<u32>,
}

/// The reactive policy is the composite policy with only `[core.policy.reactive]`.
pub type ReactivePolicy = CompositePolicy;

impl CompositePolicy {
    pub fn new(policy: &PolicyConfig, catalog: &Catalog) -> Self {
        let (preferred, location) = policy.resolve(catalog);
        let scale_down = policy.scale_down.clone().unwrap_or_else(|| {
            let reactive = policy.reactive.clone().unwrap_or_default();
            ScaleDownConfig {
                rule: ScaleDownRule::EmptyAfter,
                empty_after_ms: reactive.scale_down_empty_after_ms,
                cooldown_ms: reactive.scale_down_cooldown_ms,
                ..ScaleDownConfig::default()
            }
        });
        CompositePolicy {
            reactive: policy.reactive.clone(),
            spare: policy.spare.clone(),
            predictive: policy.predictive.clone().map(|c| {
                let profile = DemandProfile::new(&c);
                (c, profile)
            }),
            scheduled: policy.scheduled.clone(),
            scale_down,
            min_cloud_nodes: policy.min_cloud_nodes,
            max_cloud_nodes: policy.max_cloud_nodes,
            max_provision_per_eval: policy.max_provision_per_eval,
            preferred,
            location,
            under_since: Vec::new(),
            under_buffer: Vec::new(),
            bins_buffer: Vec::new(),
        }
    }

    /// The usable capacity (dedicated included) the components ask for now.
    fn capacity_target_mib(&self, view: &FleetView<'_>, demand_mib: u64) -> u64 {
        let spare = self.spare.as_ref().map_or(0, |s| s.target_mib(demand_mib));
        let forecast = self.predictive.as_ref().map_or(0, |(config, profile)| {
            let lead = view.catalog.expected_provision_ms + config.margin_ms;
            let peak = profile.forecast_peak_mib(view.now, lead);
            peak * (100 + config.headroom_pct as u64) / 100
        });
        let scheduled = self.scheduled.as_ref().map_or(0, |s| s.minimum(view.now).0);
        spare.max(forecast).max(scheduled)
    }

    fn min_nodes(&self, now: Timestamp) -> u32 {
        let scheduled = self.scheduled.as_ref().map_or(0, |s| s.minimum(now).1);
        self.min_cloud_nodes.max(scheduled)
    }
}

impl ScalingPolicy for CompositePolicy {
    fn state(&self) -> super::PolicyState {
        super::PolicyState {
            under_since: self.under_since.clone(),
            demand: self.predictive.as_ref().map(|(_, profile)| profile.clone()),
        }
    }

    fn set_state(&mut self, state: super::PolicyState) {
        self.under_since = state.under_since;
        if let (Some((config, profile)), Some(demand)) = (&mut self.predictive, state.demand) {
            *profile = demand.with_history_of(config);
        }
    }

    fn evaluate(&mut self, view: &FleetView<'_>) -> ScalingDecision {
        let totals = view.totals;
        // Requests no VM type can hold wait for dedicated capacity: they are not cloud
        // demand, and must not keep cloud nodes alive or block scale-down.
        let demand_mib = totals.allocated_mib + view.queued_for_cloud_mib;
        self.observe(view, demand_mib);
        let mut decision = ScalingDecision::default();
        let room = self.max_cloud_nodes.saturating_sub(totals.n_cloud_nodes);
        let uncordoned_mib = self.scale_up_for_queue(view, room, &mut decision);
        let capacity_mib = totals.ready_usable_mib - totals.draining_usable_mib + totals.provisioning_usable_mib;
        let free_below = self.reactive.as_ref().map_or(0, |r| r.scale_up_free_mib_below);
        let min_nodes = self.min_nodes(view.now);
        self.scale_up_for_headroom(view, room, capacity_mib.saturating_sub(demand_mib), &mut decision);
        let target_mib = self.capacity_target_mib(view, demand_mib);
        let capacity_after = capacity_mib + uncordoned_mib;
        self.scale_up_to_target(view, room, min_nodes, target_mib, capacity_after, &mut decision);
        let quiet = view
            .last_scale_up_at
            .is_none_or(|at| view.now.since(at) >= self.scale_down.cooldown_ms);
        if view.trigger == Trigger::Tick
            && decision.provision.is_empty()
            && decision.uncordon.is_empty()
            && view.queued_for_cloud_count == 0
            && quiet
        {
            let keep_mib = target_mib.max(demand_mib + free_below);
            self.scale_down(view, min_nodes, keep_mib, capacity_mib, &mut decision);
        }
        decision
    }
}

impl CompositePolicy {
    /// Feed the forecast the current demand, and (on the tick) the utilization
    /// tracking of the `underutilized` rule.
    fn observe(&mut self, view: &FleetView<'_>, demand_mib: u64) {
        if let Some((_, profile)) = &mut self.predictive {
            profile.observe(view.now, demand_mib);
        }
        if view.trigger == Trigger::Tick {
            self.track_utilization(view);
        }
    }

    /// Step 1, the queue: pack the queued requests into the capacity on its way, then
    /// into new nodes; cordoned nodes are taken back before new ones are ordered.
    /// Returns the usable RAM of the nodes taken back.
    fn scale_up_for_queue(&mut self, view: &FleetView<'_>, room: u32, decision: &mut ScalingDecision) -> u64 {
        let totals = view.totals;
        let mut uncordoned_mib = 0u64;
        if totals.queued_count == 0 || (room == 0 && totals.n_cloud_draining == 0) {
            return uncordoned_mib;
        }
        // Requests no catalog type can hold wait for dedicated capacity instead.
        let largest_type_mib = view.type_usable_mib.iter().copied().max().unwrap_or(0);
        let largest = view
            .queued_by_size
            .iter()
            .rev()
            .map(|&(m, _)| m)
            .find(|&m| m <= largest_type_mib);
        let Some(t) = largest.and_then(|m| choose_type(view.catalog, view.type_usable_mib, self.preferred, m)) else {
            return uncordoned_mib;
        };
        let decreasing = view
            .queued_by_size
            .iter()
            .rev()
            .flat_map(|&(m, n)| std::iter::repeat_n(m, n as usize));
        let mut n_new = bins_needed(
            decreasing,
            view.provisioning_usable_mib.values().copied(),
            view.type_usable_mib[t.0 as usize],
            &mut self.bins_buffer,
        );
        let mut draining = view.draining_cloud_nodes.iter().copied();
        while n_new > 0
            && let Some(node_id) = draining.next()
        {
            decision.uncordon.push(node_id);
            uncordoned_mib += view.nodes[&node_id].usable_mib() as u64;
            n_new -= 1;
        }
        let n_new = n_new.min(room).min(self.max_provision_per_eval);
        decision.provision.extend((0..n_new).map(|_| (t, self.location)));
        uncordoned_mib
    }

    /// Step 2, the reactive headroom (`scale_up_free_mib_below`, one node per
    /// cooldown) and `min_cloud_nodes`.
    fn scale_up_for_headroom(&self, view: &FleetView<'_>, room: u32, free_mib: u64, decision: &mut ScalingDecision) {
        let Some(reactive) = &self.reactive else { return };
        let cooled_down = view
            .last_scale_up_at
            .is_none_or(|at| view.now.since(at) >= reactive.scale_up_cooldown_ms);
        let n_cloud_after = view.totals.n_cloud_nodes + decision.provision.len() as u32;
        let headroom_low =
            decision.provision.is_empty() && cooled_down && free_mib < reactive.scale_up_free_mib_below && room > 0;
        if (headroom_low || n_cloud_after < self.min_cloud_nodes)
            && let Some(t) = choose_type(view.catalog, view.type_usable_mib, self.preferred, 0)
        {
            // The minimum is reached over several evaluations when it exceeds the
            // per-evaluation bound, like every other order.
            let budget = self
                .max_provision_per_eval
                .saturating_sub(decision.provision.len() as u32);
            let n_new = self
                .min_cloud_nodes
                .saturating_sub(n_cloud_after)
                .max(1)
                .min(room.saturating_sub(decision.provision.len() as u32))
                .min(budget);
            decision.provision.extend((0..n_new).map(|_| (t, self.location)));
        }
    }

    /// Step 3, the capacity target (spare pool, forecast, schedule) and the node
    /// minimum: cordoned nodes are taken back first, then nodes ordered.
    fn scale_up_to_target(
        &self,
        view: &FleetView<'_>,
        room: u32,
        min_nodes: u32,
        target_mib: u64,
        capacity_mib: u64,
        decision: &mut ScalingDecision,
    ) {
        let totals = view.totals;
        let ordered_mib: u64 = decision
            .provision
            .iter()
            .map(|&(t, _)| view.type_usable_mib[t.0 as usize] as u64)
            .sum();
        let mut capacity_after = capacity_mib + ordered_mib;
        // Step 1 took back a prefix of the cordoned nodes; go on after it.
        let mut draining = view.draining_cloud_nodes.iter().copied().skip(decision.uncordon.len());
        while capacity_after < target_mib
            && let Some(node_id) = draining.next()
        {
            decision.uncordon.push(node_id);
            capacity_after += view.nodes[&node_id].usable_mib() as u64;
        }
        let Some(t) = choose_type(view.catalog, view.type_usable_mib, self.preferred, 0) else {
            return;
        };
        let per_node = view.type_usable_mib[t.0 as usize] as u64;
        let active_after = totals.n_cloud_nodes - totals.n_cloud_draining
            + decision.uncordon.len() as u32
            + decision.provision.len() as u32;
        let for_capacity = target_mib.saturating_sub(capacity_after).div_ceil(per_node.max(1)) as u32;
        let for_nodes = min_nodes.saturating_sub(active_after);
        let budget = room.saturating_sub(decision.provision.len() as u32).min(
            self.max_provision_per_eval
                .saturating_sub(decision.provision.len() as u32),
        );
        let n_new = for_capacity.max(for_nodes).min(budget);
        decision.provision.extend((0..n_new).map(|_| (t, self.location)));
    }
}
