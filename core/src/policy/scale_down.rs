//! Scale-down: which rule lets an empty or under-used cloud node go (`empty_after`,
//! `billing_hour`, `underutilized`), and the composite policy's scale-down step.

use serde::{Deserialize, Serialize};

use super::{CompositePolicy, FleetView, ScalingDecision};
use crate::model::Node;
use crate::types::{MS_PER_HOUR, MS_PER_MINUTE, NodeId, Timestamp};

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

/// Time left in the hour a VM ordered at `created_at` has already paid for (Hetzner
/// bills every started hour). At an exact boundary a new hour has just begun.
pub fn billing_hour_left_ms(created_at: Timestamp, now: Timestamp) -> u64 {
    MS_PER_HOUR - now.since(created_at) % MS_PER_HOUR
}

impl CompositePolicy {
    /// Whether the scale-down rule lets `node` go now (the capacity check is separate).
    pub(super) fn rule_allows(&self, node: &Node, now: Timestamp) -> bool {
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
    pub(super) fn track_utilization(&mut self, view: &FleetView<'_>) {
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

impl CompositePolicy {
    /// Step 4, on the periodic tick only, with nothing queued and nothing ordered: a
    /// cloud node goes only if the active rule allows it and the capacity without it
    /// still meets `keep_mib` and the node minimum. Empty nodes are deleted, under-used
    /// ones cordoned (never drained by force).
    pub(super) fn scale_down(
        &self,
        view: &FleetView<'_>,
        min_nodes: u32,
        keep_mib: u64,
        capacity_mib: u64,
        decision: &mut ScalingDecision,
    ) {
        let totals = view.totals;
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
                if !consider(node, decision) {
                    break;
                }
            }
        } else {
            for node_id in view.empty_cloud_nodes {
                if !consider(&view.nodes[node_id], decision) {
                    break;
                }
            }
        }
    }
}
