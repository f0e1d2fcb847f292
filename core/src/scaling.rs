//! Scaling policies: they look at the fleet, the queue and the clock, and say which
//! cloud nodes to add or remove. The core applies the decision: it registers every
//! node it orders as a `Provisioning` placeholder *before* the provider is asked, so
//! the capacity already on its way is visible to the next evaluation and the same
//! demand is never provisioned twice.

use serde::{Deserialize, Serialize};

use crate::config::Catalog;
use crate::model::Node;
pub use crate::policy::fallback::FallbackConfig;
use crate::policy::predictive::DemandProfile;
pub use crate::policy::predictive::PredictiveConfig;
pub use crate::policy::scheduled::{ScheduleWindow, ScheduledConfig, Weekday};
use crate::types::{LocationIdx, MS_PER_HOUR, MS_PER_MINUTE, MS_PER_SECOND, NodeId, ServerTypeIdx, Timestamp};

/// The scaling configuration: bounds and choices shared by every policy, plus one
/// optional table per policy component. No component table means no autoscaling (a
/// static fleet). Several tables compose (see `CompositePolicy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// The periodic evaluation interval.
    #[serde(rename = "evaluate_every", with = "crate::units::duration_ms")]
    pub evaluate_every_ms: u64,
    /// Preferred server type (by name); a larger one is chosen when a queued request
    /// does not fit it. `None`: the cheapest type that fits.
    pub server_type: Option<String>,
    /// Location to order in; `None`: the first of `locations`, else the catalog's first.
    pub location: Option<String>,
    /// Fallback order of locations (names from the catalog); empty: the catalog's order.
    pub locations: Vec<String>,
    pub min_cloud_nodes: u32,
    pub max_cloud_nodes: u32,
    /// At most this many nodes ordered per evaluation.
    pub max_provision_per_eval: u32,
    /// Reactive thresholds; `None`: the reactive policy is off.
    pub reactive: Option<ReactiveConfig>,
    /// Spare pool (Agones buffer); `None`: off.
    pub spare: Option<SpareConfig>,
    /// Hour-of-week forecast; `None`: off.
    pub predictive: Option<PredictiveConfig>,
    /// Minimum capacity in time windows; `None`: off.
    pub scheduled: Option<ScheduledConfig>,
    /// Which scale-down rule applies; `None`: `empty_after` with the reactive table's
    /// `scale_down_empty_after` and `scale_down_cooldown` (10 min each by default).
    pub scale_down: Option<ScaleDownConfig>,
    /// Provider back-off and fallback (always on).
    pub fallback: FallbackConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            evaluate_every_ms: 30 * MS_PER_SECOND,
            server_type: None,
            location: None,
            locations: Vec::new(),
            min_cloud_nodes: 0,
            max_cloud_nodes: 50,
            max_provision_per_eval: 10,
            reactive: None,
            spare: None,
            predictive: None,
            scheduled: None,
            scale_down: None,
            fallback: FallbackConfig::default(),
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
            || self.spare.is_some()
            || self.predictive.is_some()
            || self.scheduled.is_some()
            || self.scale_down.is_some()
    }

    pub fn evaluate_every_ms(&self) -> Option<u64> {
        self.autoscales().then_some(self.evaluate_every_ms)
    }

    pub fn build(&self, catalog: &Catalog) -> Box<dyn ScalingPolicy> {
        if self.autoscales() {
            Box::new(CompositePolicy::new(self, catalog))
        } else {
            Box::new(StaticPolicy)
        }
    }

    fn location_idx(catalog: &Catalog, name: &str) -> LocationIdx {
        let idx = catalog
            .locations
            .iter()
            .position(|l| l == name)
            .unwrap_or_else(|| panic!("location {name:?} is not in the catalog"));
        LocationIdx(idx as u16)
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
        let location = match (&self.location, self.locations.first()) {
            (Some(name), _) | (None, Some(name)) => Self::location_idx(catalog, name),
            (None, None) => LocationIdx(0),
        };
        (preferred, location)
    }

    /// The fallback order of locations: `locations`, else the catalog's order.
    pub fn location_order(&self, catalog: &Catalog) -> Vec<LocationIdx> {
        if self.locations.is_empty() {
            (0..catalog.locations.len()).map(|i| LocationIdx(i as u16)).collect()
        } else {
            self.locations.iter().map(|n| Self::location_idx(catalog, n)).collect()
        }
    }

    /// Check the policy against the catalog. The error names the field.
    pub fn validate(&self, catalog: &Catalog) -> Result<(), crate::config::ConfigError> {
        let err = |field: &str, message: String| {
            Err(crate::config::ConfigError::new(format!("core.policy.{field}"), message))
        };
        for (i, name) in self.locations.iter().enumerate() {
            if !catalog.locations.contains(name) {
                return err(
                    &format!("locations.{i}"),
                    format!("{name:?} is not in core.catalog.locations"),
                );
            }
        }
        if let Some(spare) = &self.spare {
            if spare.buffer_pct >= 100 {
                return err("spare.buffer_pct", "must be below 100".into());
            }
            if spare.min_mib > spare.max_mib {
                return err("spare.min_gb", "must not exceed max_gb".into());
            }
        }
        if let Some(scale_down) = &self.scale_down
            && scale_down.utilization_below_pct > 100
        {
            return err("scale_down.utilization_below_pct", "must be at most 100".into());
        }
        if let Some(scheduled) = &self.scheduled {
            scheduled.validate()?;
        }
        Ok(())
    }
}

/// `[core.policy.spare]`: keep free capacity (a buffer) on top of the demand (RAM
/// held plus RAM queued). The buffer is `buffer_gb`, or `buffer_pct` percent of the
/// capacity (`capacity = ceil(demand × 100 / (100 − pct))`), whichever is larger,
/// then clamped to `[min_gb, max_gb]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpareConfig {
    #[serde(rename = "buffer_gb", with = "crate::units::gb_mib")]
    pub buffer_mib: u32,
    pub buffer_pct: u32,
    #[serde(rename = "min_gb", with = "crate::units::gb_mib")]
    pub min_mib: u32,
    #[serde(rename = "max_gb", with = "crate::units::gb_mib")]
    pub max_mib: u32,
}

impl Default for SpareConfig {
    fn default() -> Self {
        SpareConfig {
            buffer_mib: 0,
            buffer_pct: 0,
            min_mib: 0,
            max_mib: 1024 * 1024,
        }
    }
}

impl SpareConfig {
    /// The capacity the spare pool asks for, given the demand.
    pub fn target_mib(&self, demand_mib: u64) -> u64 {
        let pct = self.buffer_pct.min(99) as u64;
        let by_pct = (demand_mib * 100).div_ceil(100 - pct) - demand_mib;
        let buffer = by_pct
            .max(self.buffer_mib as u64)
            .clamp(self.min_mib as u64, self.max_mib as u64);
        demand_mib + buffer
    }
}

/// Which rule lets an empty (or under-used) cloud node go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleDownRule {
    /// Delete a cloud node that has been empty for `empty_after`.
    EmptyAfter,
    /// Delete an empty cloud node only in the last `billing_margin` of the hour it has
    /// already paid for (hours are counted from the order); otherwise keep it.
    BillingHour,
    /// Cluster-Autoscaler-like: a node whose allocated RAM stays below
    /// `utilization_below_pct` percent for `unneeded_for` is cordoned (no new servers)
    /// and deleted once empty.
    Underutilized,
}

/// `[core.policy.scale_down]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScaleDownConfig {
    pub rule: ScaleDownRule,
    #[serde(rename = "empty_after", with = "crate::units::duration_ms")]
    pub empty_after_ms: u64,
    #[serde(rename = "billing_margin", with = "crate::units::duration_ms")]
    pub billing_margin_ms: u64,
    pub utilization_below_pct: u32,
    #[serde(rename = "unneeded_for", with = "crate::units::duration_ms")]
    pub unneeded_for_ms: u64,
    /// No scale-down for this long after a scale-up.
    #[serde(rename = "cooldown", with = "crate::units::duration_ms")]
    pub cooldown_ms: u64,
}

impl Default for ScaleDownConfig {
    fn default() -> Self {
        ScaleDownConfig {
            rule: ScaleDownRule::EmptyAfter,
            empty_after_ms: 10 * MS_PER_MINUTE,
            billing_margin_ms: 5 * MS_PER_MINUTE,
            utilization_below_pct: 50,
            unneeded_for_ms: 10 * MS_PER_MINUTE,
            cooldown_ms: 10 * MS_PER_MINUTE,
        }
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
    /// `ServerTypeIdx`: computed once, the catalog and the reserve being fixed.
    pub type_usable_mib: &'a [u32],
    pub last_scale_up_at: Option<Timestamp>,
}

pub const QUEUE_VIEW_MAX: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScalingDecision {
    pub provision: Vec<(ServerTypeIdx, LocationIdx)>,
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
}

pub struct StaticPolicy;

impl ScalingPolicy for StaticPolicy {
    fn evaluate(&mut self, _view: &FleetView<'_>) -> ScalingDecision {
        ScalingDecision::default()
    }
}

/// Every policy component in one: see `scenarios/POLICIES.md` for the rule.
///
/// - Scale-up: (1) the queue: queued requests are packed (first-fit decreasing) into
///   the capacity on its way, then into new nodes of the chosen type; (2) the
///   reactive headroom (`scale_up_free_mib_below`, one node per cooldown); (3) the
///   capacity target, the maximum of the spare pool's target, the forecast and the
///   scheduled minimum: cordoned nodes are taken back first, then nodes ordered;
///   (4) the node minimum, the larger of `min_cloud_nodes` and the scheduled
///   `min_nodes`.
/// - Scale-down, on the periodic tick only, with nothing queued and nothing ordered
///   in this evaluation, and not within the cooldown after a scale-up: a cloud node
///   goes only if the active rule allows it, and the capacity without it still meets
///   the capacity target, the demand plus the reactive headroom, and the node minimum.
pub struct CompositePolicy {
    reactive: Option<ReactiveConfig>,
    spare: Option<SpareConfig>,
    predictive: Option<(PredictiveConfig, DemandProfile)>,
    scheduled: Option<ScheduledConfig>,
    scale_down: ScaleDownConfig,
    min_cloud_nodes: u32,
    max_cloud_nodes: u32,
    max_provision_per_eval: u32,
    preferred: Option<ServerTypeIdx>,
    location: LocationIdx,
    /// Underutilized rule: since when each ready cloud node has been under the
    /// threshold, ordered by node id; and a spare buffer to rebuild it into.
    under_since: Vec<(NodeId, Timestamp)>,
    under_buffer: Vec<(NodeId, Timestamp)>,
    /// Scratch bins for `bins_needed` (no allocation per evaluation).
    bins_buffer: Vec<u32>,
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

    /// Whether the scale-down rule lets `node` go now (the capacity check is separate).
    fn rule_allows(&self, node: &Node, now: Timestamp) -> bool {
        let config = &self.scale_down;
        match config.rule {
            ScaleDownRule::EmptyAfter => node
                .empty_since
                .is_some_and(|since| now.since(since) >= config.empty_after_ms),
            ScaleDownRule::BillingHour => {
                node.n_servers == 0 && billing_hour_left_ms(node.created_at, now) <= config.billing_margin_ms
            }
            ScaleDownRule::Underutilized => self
                .under_since(node.id)
                .is_some_and(|since| now.since(since) >= config.unneeded_for_ms),
        }
    }

    /// Refresh `under_since` from the fleet: one merge walk over two id-ordered
    /// sequences, O(nodes), no allocation once the buffers have grown.
    fn track_utilization(&mut self, view: &FleetView<'_>) {
        if self.scale_down.rule != ScaleDownRule::Underutilized {
            return;
        }
        let below = self.scale_down.utilization_below_pct as u64;
        let mut next = std::mem::take(&mut self.under_buffer);
        next.clear();
        let mut old = self.under_since.iter().peekable();
        for node in view.nodes.values() {
            let under = node.is_cloud()
                && node.state == crate::model::NodeState::Ready
                && (node.allocated_mib as u64) * 100 < below * node.usable_mib() as u64;
            while old.next_if(|&&(id, _)| id < node.id).is_some() {}
            let since = old.next_if(|&&(id, _)| id == node.id).map(|&(_, since)| since);
            if under {
                next.push((node.id, since.unwrap_or(view.now)));
            }
        }
        self.under_buffer = std::mem::replace(&mut self.under_since, next);
    }

    fn under_since(&self, node_id: NodeId) -> Option<Timestamp> {
        self.under_since
            .binary_search_by_key(&node_id, |&(id, _)| id)
            .ok()
            .map(|i| self.under_since[i].1)
    }
}

/// Time left in the hour a VM ordered at `created_at` has already paid for (Hetzner
/// bills every started hour). At an exact boundary a new hour has just begun.
pub fn billing_hour_left_ms(created_at: Timestamp, now: Timestamp) -> u64 {
    MS_PER_HOUR - now.since(created_at) % MS_PER_HOUR
}

/// Usable RAM of a new node of this type.
pub fn usable_mib(catalog: &Catalog, reserve: &crate::config::ReserveConfig, t: ServerTypeIdx) -> u32 {
    let ram_mib = catalog.server_types[t.0 as usize].ram_mib;
    ram_mib - reserve.reserve_mib(ram_mib, false)
}

/// `usable_mib` of every catalog type, indexed by `ServerTypeIdx` (see
/// `FleetView::type_usable_mib`).
pub fn type_usable_mib(catalog: &Catalog, reserve: &crate::config::ReserveConfig) -> Vec<u32> {
    (0..catalog.server_types.len())
        .map(|i| usable_mib(catalog, reserve, ServerTypeIdx(i as u16)))
        .collect()
}

/// The preferred type when it holds `need_mib`, else the cheapest type that does.
/// `type_usable_mib` is `type_usable_mib(catalog, reserve)`.
pub fn choose_type(
    catalog: &Catalog,
    type_usable_mib: &[u32],
    preferred: Option<ServerTypeIdx>,
    need_mib: u32,
) -> Option<ServerTypeIdx> {
    if let Some(t) = preferred
        && type_usable_mib[t.0 as usize] >= need_mib
    {
        return Some(t);
    }
    (0..catalog.server_types.len())
        .map(|i| ServerTypeIdx(i as u16))
        .filter(|&t| type_usable_mib[t.0 as usize] >= need_mib)
        .min_by_key(|&t| (catalog.server_types[t.0 as usize].price_micros_per_hour, t))
}

/// How many new bins of `bin_mib` first-fit-decreasing needs for `decreasing` (the
/// demands, largest first) once the `existing_free` bins are used up. `bins` is scratch
/// space (cleared first; it keeps its allocation for the next call).
pub fn bins_needed(
    decreasing: impl IntoIterator<Item = u32>,
    existing_free: impl IntoIterator<Item = u32>,
    bin_mib: u32,
    bins: &mut Vec<u32>,
) -> u32 {
    bins.clear();
    bins.extend(existing_free);
    let n_existing = bins.len();
    for need in decreasing {
        match bins.iter_mut().find(|free| **free >= need) {
            Some(free) => *free -= need,
            None if need <= bin_mib => bins.push(bin_mib - need),
            None => {}
        }
    }
    (bins.len() - n_existing) as u32
}

impl ScalingPolicy for CompositePolicy {
    fn evaluate(&mut self, view: &FleetView<'_>) -> ScalingDecision {
        let totals = view.totals;
        let demand_mib = totals.allocated_mib + totals.queued_demand_mib;
        if let Some((_, profile)) = &mut self.predictive {
            profile.observe(view.now, demand_mib);
        }
        if view.trigger == Trigger::Tick {
            self.track_utilization(view);
        }
        let mut decision = ScalingDecision::default();
        let room = self.max_cloud_nodes.saturating_sub(totals.n_cloud_nodes);
        let mut draining = view.draining_cloud_nodes.iter().copied();
        let mut uncordoned_mib = 0u64;

        // Scale up for the queue: pack the queued requests into the capacity on its way,
        // then into new nodes; cordoned nodes are taken back before new ones are ordered.
        if totals.queued_count > 0 && (room > 0 || totals.n_cloud_draining > 0) {
            // Requests no catalog type can hold wait for dedicated capacity instead.
            let largest_type_mib = view.type_usable_mib.iter().copied().max().unwrap_or(0);
            let largest = view
                .queued_by_size
                .iter()
                .rev()
                .map(|&(m, _)| m)
                .find(|&m| m <= largest_type_mib);
            if let Some(t) = largest.and_then(|m| choose_type(view.catalog, view.type_usable_mib, self.preferred, m)) {
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
                while n_new > 0
                    && let Some(node_id) = draining.next()
                {
                    decision.uncordon.push(node_id);
                    uncordoned_mib += view.nodes[&node_id].usable_mib() as u64;
                    n_new -= 1;
                }
                let n_new = n_new.min(room).min(self.max_provision_per_eval);
                decision.provision.extend((0..n_new).map(|_| (t, self.location)));
            }
        }

        // Scale up for the reactive headroom.
        let capacity_mib = totals.ready_usable_mib - totals.draining_usable_mib + totals.provisioning_usable_mib;
        let free_mib = capacity_mib.saturating_sub(demand_mib);
        let free_below = self.reactive.as_ref().map_or(0, |r| r.scale_up_free_mib_below);
        let min_nodes = self.min_nodes(view.now);
        if let Some(reactive) = &self.reactive {
            let cooled_down = view
                .last_scale_up_at
                .is_none_or(|at| view.now.since(at) >= reactive.scale_up_cooldown_ms);
            let n_cloud_after = totals.n_cloud_nodes + decision.provision.len() as u32;
            let headroom_low = decision.provision.is_empty() && cooled_down && free_mib < free_below && room > 0;
            if (headroom_low || n_cloud_after < self.min_cloud_nodes)
                && let Some(t) = choose_type(view.catalog, view.type_usable_mib, self.preferred, 0)
            {
                let n_new = self.min_cloud_nodes.saturating_sub(n_cloud_after).max(1).min(room);
                decision.provision.extend((0..n_new).map(|_| (t, self.location)));
            }
        }

        // Scale up to the capacity target and the node minimum.
        let target_mib = self.capacity_target_mib(view, demand_mib);
        let ordered_mib = |d: &ScalingDecision| -> u64 {
            d.provision
                .iter()
                .map(|&(t, _)| view.type_usable_mib[t.0 as usize] as u64)
                .sum()
        };
        let mut capacity_after = capacity_mib + uncordoned_mib + ordered_mib(&decision);
        while capacity_after < target_mib
            && let Some(node_id) = draining.next()
        {
            decision.uncordon.push(node_id);
            capacity_after += view.nodes[&node_id].usable_mib() as u64;
        }
        if let Some(t) = choose_type(view.catalog, view.type_usable_mib, self.preferred, 0) {
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

        // Scale down, on the periodic tick only.
        let quiet = view
            .last_scale_up_at
            .is_none_or(|at| view.now.since(at) >= self.scale_down.cooldown_ms);
        if view.trigger == Trigger::Tick
            && decision.provision.is_empty()
            && decision.uncordon.is_empty()
            && totals.queued_count == 0
            && quiet
        {
            let keep_mib = target_mib.max(demand_mib + free_below);
            let mut n_active = totals.n_cloud_nodes - totals.n_cloud_draining;
            let mut capacity = capacity_mib;
            let mut consider = |node: &Node, decision: &mut ScalingDecision| -> bool {
                if n_active <= min_nodes {
                    return false;
                }
                let usable = node.usable_mib() as u64;
                if self.rule_allows(node, view.now) && capacity.saturating_sub(usable) >= keep_mib {
                    if node.n_servers == 0 {
                        decision.delete.push(node.id);
                    } else {
                        decision.drain.push(node.id);
                    }
                    n_active -= 1;
                    capacity -= usable;
                }
                true
            };
            if self.scale_down.rule == ScaleDownRule::Underutilized {
                // Empty nodes first (deleted at once), then under-used ones (cordoned).
                let under = || self.under_since.iter().map(|(id, _)| &view.nodes[id]);
                let empty_first = under()
                    .filter(|n| n.n_servers == 0)
                    .chain(under().filter(|n| n.n_servers > 0));
                for node in empty_first {
                    if !consider(node, &mut decision) {
                        break;
                    }
                }
            } else {
                for node_id in view.empty_cloud_nodes {
                    if !consider(&view.nodes[node_id], &mut decision) {
                        break;
                    }
                }
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::config::{ReserveConfig, ServerType};
    use crate::model::{NodeKind, NodeState};

    #[test]
    fn first_fit_decreasing_counts_new_bins() {
        let mut bins = vec![1, 2, 3];
        assert_eq!(bins_needed([4096, 4096, 2048], [], 7168, &mut bins), 2);
        assert_eq!(bins, [1024, 3072], "scratch cleared, then two new bins");
        assert_eq!(bins_needed([4096, 2048], [7168], 7168, &mut bins), 0);
        assert_eq!(bins_needed([], [], 7168, &mut bins), 0);
        // A request larger than a bin is left for a larger type, not counted here.
        assert_eq!(bins_needed([16384], [], 7168, &mut bins), 0);
    }

    const GB: u64 = 1024;
    /// A Monday, 00:00 UTC.
    const T0: Timestamp = Timestamp(4 * crate::types::MS_PER_DAY + 52 * 7 * crate::types::MS_PER_DAY);

    /// A fleet of 16 GB cloud VMs (15 GB usable) for the policy to look at.
    struct Fleet {
        nodes: crate::model::NodeMap,
        catalog: Catalog,
        reserve: ReserveConfig,
        queued: Vec<u32>,
        last_scale_up_at: Option<Timestamp>,
    }

    impl Fleet {
        fn new() -> Fleet {
            Fleet {
                nodes: crate::idmap::IdMap::new(),
                catalog: Catalog {
                    server_types: vec![ServerType {
                        name: "cpx42".into(),
                        ram_mib: 16384,
                        vcpu: 8,
                        price_micros_per_hour: 40_000,
                        monthly_cap_micros: 25_000_000,
                    }],
                    locations: vec!["fsn1".into()],
                    expected_provision_ms: 2 * MS_PER_MINUTE,
                },
                reserve: ReserveConfig::default(),
                queued: Vec::new(),
                last_scale_up_at: None,
            }
        }

        /// A ready cloud VM ordered at `created_at` holding `allocated_gb`.
        fn vm(&mut self, created_at: Timestamp, allocated_gb: u32, state: NodeState) -> NodeId {
            let id = NodeId(self.nodes.len() as u64 + 1);
            let kind = NodeKind::Cloud {
                server_type: ServerTypeIdx(0),
                location: LocationIdx(0),
            };
            let mut node = Node::new(id, kind, false, 16384, 1024, created_at);
            node.state = state;
            node.allocated_mib = allocated_gb * 1024;
            node.n_servers = allocated_gb.div_ceil(2);
            node.empty_since = (allocated_gb == 0).then_some(created_at);
            self.nodes.insert(id, node);
            id
        }

        fn evaluate(&self, policy: &mut dyn ScalingPolicy, now: Timestamp, trigger: Trigger) -> ScalingDecision {
            let mut totals = FleetTotals::default();
            let (mut empty, mut draining) = (BTreeSet::new(), BTreeSet::new());
            for node in self.nodes.values() {
                let usable = node.usable_mib() as u64;
                totals.n_cloud_nodes += 1;
                match node.state {
                    NodeState::Provisioning => totals.provisioning_usable_mib += usable,
                    NodeState::Ready | NodeState::Draining => {
                        totals.ready_usable_mib += usable;
                        totals.allocated_mib += node.allocated_mib as u64;
                    }
                    _ => {}
                }
                if node.state == NodeState::Draining {
                    totals.draining_usable_mib += usable;
                    totals.n_cloud_draining += 1;
                    draining.insert(node.id);
                }
                if node.state == NodeState::Ready && node.n_servers == 0 {
                    empty.insert(node.id);
                }
            }
            totals.queued_count = self.queued.len() as u32;
            totals.queued_demand_mib = self.queued.iter().map(|&m| m as u64).sum();
            let provisioning: BTreeMap<NodeId, u32> = self
                .nodes
                .values()
                .filter(|n| n.state == NodeState::Provisioning)
                .map(|n| (n.id, n.usable_mib()))
                .collect();
            let mut by_size: BTreeMap<u32, u32> = BTreeMap::new();
            for &m in self.queued.iter().take(QUEUE_VIEW_MAX) {
                *by_size.entry(m).or_insert(0) += 1;
            }
            let by_size: Vec<(u32, u32)> = by_size.into_iter().collect();
            let type_usable = type_usable_mib(&self.catalog, &self.reserve);
            let view = FleetView {
                now,
                trigger,
                totals,
                nodes: &self.nodes,
                queued_by_size: &by_size,
                provisioning_usable_mib: &provisioning,
                empty_cloud_nodes: &empty,
                draining_cloud_nodes: &draining,
                catalog: &self.catalog,
                type_usable_mib: &type_usable,
                last_scale_up_at: self.last_scale_up_at,
            };
            policy.evaluate(&view)
        }
    }

    fn policy(config: PolicyConfig, fleet: &Fleet) -> CompositePolicy {
        CompositePolicy::new(&config, &fleet.catalog)
    }

    #[test]
    fn spare_pool_keeps_a_buffer_in_gb_or_percent_clamped() {
        let spare = SpareConfig {
            buffer_mib: 0,
            buffer_pct: 20,
            min_mib: 4096,
            max_mib: 64 * 1024,
        };
        assert_eq!(
            spare.target_mib(80 * GB),
            100 * GB,
            "80 GB used at 20% headroom: 100 GB"
        );
        assert_eq!(spare.target_mib(0), 4 * GB, "at least min_gb");
        assert_eq!(spare.target_mib(1000 * GB), 1064 * GB, "at most max_gb");
        let absolute = SpareConfig {
            buffer_mib: 16 * 1024,
            ..SpareConfig::default()
        };
        assert_eq!(absolute.target_mib(10 * GB), 26 * GB);

        // With nothing running, a 16 GB buffer needs two 15 GB VMs; one more holds it.
        let mut fleet = Fleet::new();
        let config = PolicyConfig {
            spare: Some(absolute),
            ..PolicyConfig::default()
        };
        let mut p = policy(config.clone(), &fleet);
        assert_eq!(fleet.evaluate(&mut p, T0, Trigger::Tick).provision.len(), 2);
        fleet.vm(T0, 0, NodeState::Ready);
        fleet.vm(T0, 0, NodeState::Provisioning);
        let decision = fleet.evaluate(&mut p, T0.plus_ms(MS_PER_HOUR), Trigger::Tick);
        assert_eq!(
            decision,
            ScalingDecision::default(),
            "two VMs hold the buffer, none may go"
        );
        // Three empty VMs: one is surplus and goes after empty_after.
        fleet.vm(T0, 0, NodeState::Ready);
        let decision = fleet.evaluate(&mut p, T0.plus_ms(MS_PER_HOUR), Trigger::Tick);
        assert_eq!(decision.delete.len(), 1);
        assert!(decision.provision.is_empty());
    }

    #[test]
    fn predictive_provisions_ahead_and_never_scales_in_on_a_forecast_alone() {
        let mut fleet = Fleet::new();
        let config = PolicyConfig {
            predictive: Some(PredictiveConfig::default()),
            ..PolicyConfig::default()
        };
        let mut p = policy(config, &fleet);
        // Day 0: 40 GB used from 20:00 to 21:00 on three VMs, little otherwise.
        let ids: Vec<NodeId> = (0..3).map(|_| fleet.vm(T0, 1, NodeState::Ready)).collect();
        for minute in (0..24 * 60).step_by(10) {
            let gb = if (20 * 60..21 * 60).contains(&minute) { 14 } else { 1 };
            for id in &ids {
                fleet.nodes.get_mut(id).expect("exists").allocated_mib = gb * 1024;
            }
            p.evaluate_as(&fleet, T0.plus_ms(minute * MS_PER_MINUTE));
        }
        // Day 1, 19:56: demand is low, but the peak is within the look-ahead (2 m + 3 m).
        for id in &ids {
            fleet.nodes.get_mut(id).expect("exists").allocated_mib = 1024;
        }
        let day1 = T0.plus_ms(crate::types::MS_PER_DAY);
        let early = fleet.evaluate(
            &mut p,
            day1.plus_ms(19 * MS_PER_HOUR + 50 * MS_PER_MINUTE),
            Trigger::Tick,
        );
        assert!(early.provision.is_empty(), "20:00 is beyond the look-ahead at 19:50");
        let decision = fleet.evaluate(
            &mut p,
            day1.plus_ms(19 * MS_PER_HOUR + 56 * MS_PER_MINUTE),
            Trigger::Tick,
        );
        assert!(
            decision.provision.is_empty(),
            "three VMs (45 GB) already cover the 42 GB forecast"
        );
        // An empty fourth VM is not needed by the forecast: it may go. A third one is.
        let spare_vm = fleet.vm(T0, 0, NodeState::Ready);
        let decision = fleet.evaluate(
            &mut p,
            day1.plus_ms(19 * MS_PER_HOUR + 57 * MS_PER_MINUTE),
            Trigger::Tick,
        );
        assert_eq!(decision.delete, vec![spare_vm]);
        fleet.nodes.remove(&spare_vm);
        for id in &ids[1..] {
            let node = fleet.nodes.get_mut(id).expect("exists");
            node.allocated_mib = 0;
            node.n_servers = 0;
            node.empty_since = Some(T0);
        }
        let decision = fleet.evaluate(
            &mut p,
            day1.plus_ms(19 * MS_PER_HOUR + 58 * MS_PER_MINUTE),
            Trigger::Tick,
        );
        assert!(
            decision.delete.is_empty(),
            "the forecast keeps VMs it says will be needed"
        );
        // Removing two VMs' demand entirely: the forecast orders nothing extra either.
        assert!(decision.provision.is_empty());
        // With less capacity than the forecast, it orders ahead.
        fleet.nodes.remove(&ids[2]);
        let decision = fleet.evaluate(
            &mut p,
            day1.plus_ms(19 * MS_PER_HOUR + 58 * MS_PER_MINUTE),
            Trigger::Tick,
        );
        assert_eq!(decision.provision.len(), 1, "42 GB forecast, 30 GB there: one more VM");
    }

    impl CompositePolicy {
        fn evaluate_as(&mut self, fleet: &Fleet, now: Timestamp) {
            fleet.evaluate(self, now, Trigger::Tick);
        }
    }

    #[test]
    fn scheduled_windows_set_a_minimum() {
        let mut fleet = Fleet::new();
        let window = |from: &str, to: &str, gb: u32, nodes: u32| ScheduleWindow {
            days: vec![Weekday::Mon],
            from: crate::policy::scheduled::hh_mm::parse(from).expect("time"),
            to: crate::policy::scheduled::hh_mm::parse(to).expect("time"),
            min_mib: gb * 1024,
            min_nodes: nodes,
        };
        let config = PolicyConfig {
            scheduled: Some(ScheduledConfig {
                windows: vec![window("18:00", "22:00", 40, 0), window("12:00", "13:00", 0, 4)],
            }),
            ..PolicyConfig::default()
        };
        let mut p = policy(config, &fleet);
        let at = |h: u64| T0.plus_ms(h * MS_PER_HOUR);
        assert!(fleet.evaluate(&mut p, at(10), Trigger::Tick).provision.is_empty());
        assert_eq!(fleet.evaluate(&mut p, at(12), Trigger::Tick).provision.len(), 4);
        assert_eq!(
            fleet.evaluate(&mut p, at(19), Trigger::Tick).provision.len(),
            3,
            "40 GB: 3 × 15 GB"
        );
        for _ in 0..3 {
            fleet.vm(at(18), 0, NodeState::Ready);
        }
        let decision = fleet.evaluate(&mut p, at(21), Trigger::Tick);
        assert!(decision.delete.is_empty() && decision.provision.is_empty());
        let decision = fleet.evaluate(&mut p, at(23), Trigger::Tick);
        assert_eq!(decision.delete.len(), 3, "after the window the empty VMs go");
    }

    #[test]
    fn billing_aware_scale_down_waits_for_the_end_of_the_paid_hour() {
        let mut fleet = Fleet::new();
        let config = PolicyConfig {
            scale_down: Some(ScaleDownConfig {
                rule: ScaleDownRule::BillingHour,
                billing_margin_ms: 5 * MS_PER_MINUTE,
                ..ScaleDownConfig::default()
            }),
            ..PolicyConfig::default()
        };
        let mut p = policy(config, &fleet);
        let vm = fleet.vm(T0, 0, NodeState::Ready);
        assert_eq!(
            billing_hour_left_ms(T0, T0.plus_ms(70 * MS_PER_MINUTE)),
            50 * MS_PER_MINUTE
        );
        for minutes in [1, 30, 54, 61, 100] {
            let decision = fleet.evaluate(&mut p, T0.plus_ms(minutes * MS_PER_MINUTE), Trigger::Tick);
            assert!(decision.delete.is_empty(), "kept at minute {minutes}");
        }
        for minutes in [55, 59, 116] {
            let decision = fleet.evaluate(&mut p, T0.plus_ms(minutes * MS_PER_MINUTE), Trigger::Tick);
            assert_eq!(decision.delete, vec![vm], "deleted at minute {minutes}");
        }
        // Not within the cooldown after a scale-up, and never on a demand trigger.
        fleet.last_scale_up_at = Some(T0.plus_ms(50 * MS_PER_MINUTE));
        assert!(
            fleet
                .evaluate(&mut p, T0.plus_ms(57 * MS_PER_MINUTE), Trigger::Tick)
                .delete
                .is_empty()
        );
        fleet.last_scale_up_at = None;
        assert!(
            fleet
                .evaluate(&mut p, T0.plus_ms(57 * MS_PER_MINUTE), Trigger::Demand)
                .delete
                .is_empty()
        );
    }

    #[test]
    fn cluster_autoscaler_like_cordons_underused_nodes_after_unneeded_for() {
        let mut fleet = Fleet::new();
        let config = PolicyConfig {
            scale_down: Some(ScaleDownConfig {
                rule: ScaleDownRule::Underutilized,
                ..ScaleDownConfig::default()
            }),
            ..PolicyConfig::default()
        };
        let mut p = policy(config, &fleet);
        let busy = fleet.vm(T0, 12, NodeState::Ready);
        let light = fleet.vm(T0, 2, NodeState::Ready);
        let empty = fleet.vm(T0, 0, NodeState::Ready);
        let at = |m: u64| T0.plus_ms(m * MS_PER_MINUTE);
        assert_eq!(fleet.evaluate(&mut p, at(0), Trigger::Tick), ScalingDecision::default());
        assert_eq!(fleet.evaluate(&mut p, at(9), Trigger::Tick), ScalingDecision::default());
        let decision = fleet.evaluate(&mut p, at(10), Trigger::Tick);
        assert_eq!(decision.delete, vec![empty]);
        assert_eq!(
            decision.drain,
            vec![light],
            "2 of 15 GB used: cordoned, its servers keep running"
        );
        assert!(!decision.drain.contains(&busy));
        // Demand comes back: the cordoned node is taken back before anything is ordered.
        fleet.nodes.remove(&empty);
        fleet.nodes.get_mut(&light).expect("exists").state = NodeState::Draining;
        fleet.queued = vec![4096, 4096];
        let decision = fleet.evaluate(&mut p, at(11), Trigger::Demand);
        assert_eq!(decision.uncordon, vec![light]);
        assert!(decision.provision.is_empty());
    }

    #[test]
    fn reactive_alone_behaves_as_before() {
        let mut fleet = Fleet::new();
        let config = PolicyConfig {
            reactive: Some(ReactiveConfig {
                scale_up_free_mib_below: 8192,
                ..ReactiveConfig::default()
            }),
            ..PolicyConfig::default()
        };
        let mut p = policy(config, &fleet);
        // Low headroom: one VM; the queue: packed into new VMs.
        assert_eq!(fleet.evaluate(&mut p, T0, Trigger::Tick).provision.len(), 1);
        fleet.queued = vec![8192, 8192, 4096];
        assert_eq!(fleet.evaluate(&mut p, T0, Trigger::Demand).provision.len(), 2);
        fleet.queued.clear();
        let a = fleet.vm(T0, 0, NodeState::Ready);
        let _b = fleet.vm(T0, 0, NodeState::Ready);
        // Two empty VMs (30 GB free): one goes after 10 minutes, one stays for the 8 GB headroom.
        assert!(
            fleet
                .evaluate(&mut p, T0.plus_ms(9 * MS_PER_MINUTE), Trigger::Tick)
                .delete
                .is_empty()
        );
        assert_eq!(
            fleet
                .evaluate(&mut p, T0.plus_ms(10 * MS_PER_MINUTE), Trigger::Tick)
                .delete,
            vec![a]
        );
    }
}
