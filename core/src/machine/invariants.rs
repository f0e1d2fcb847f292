//! Invariants, recomputed from scratch (`check_invariants`, O(fleet)), and the
//! cheap ones checked after every input in release builds (`assert_totals`).

use super::*;

impl Core {
    /// The invariants asserted after every input in every build, chosen to cost a
    /// handful of instructions (the large scenario allows about 1,600 per engine
    /// event): the queue's size agrees with the totals the policy reads, and no RAM
    /// is placed beyond the ready capacity. (`place` asserts the per-node bound when
    /// it reserves.) The full check is O(fleet) per input: debug builds and the tests
    /// run it (see ARCHITECTURE.md, Invariants).
    #[inline]
    pub(super) fn assert_totals(&self) {
        let totals = &self.totals;
        assert!(
            totals.queued_count as usize == self.queue.len(),
            "queue totals disagree with the queue"
        );
        assert!(
            totals.allocated_mib <= totals.ready_usable_mib,
            "more RAM placed than the ready nodes offer"
        );
    }

    /// Check every invariant by recomputing it from scratch (O(fleet)). Tests call it
    /// after every input; debug builds assert it inside `handle`. Not release builds:
    /// on the large scenario it costs about 3.1 million instructions per engine event,
    /// against 1,620 for everything else.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut allocated: BTreeMap<NodeId, (u32, u32)> = BTreeMap::new();
        for (server_id, server) in self.servers.iter() {
            if server.state.holds_ram() {
                let node_id = server
                    .node
                    .ok_or(format!("server {server_id} holds RAM without a node"))?;
                let slot = allocated.entry(node_id).or_default();
                slot.0 += server.ram_mib;
                slot.1 += 1;
                let billed_to_owner = self.users[&server.owner].holding.contains(&server_id);
                match server.accrual.kind {
                    Some(AccrualKind::Ram) if billed_to_owner => {}
                    Some(AccrualKind::Warm) if !billed_to_owner => {}
                    _ => return Err(format!("server {server_id} holds RAM but does not accrue RAM-time")),
                }
            } else if matches!(server.accrual.kind, Some(AccrualKind::Ram | AccrualKind::Warm)) {
                return Err(format!("server {server_id} accrues RAM-time without holding RAM"));
            }
            if (server.state == ServerState::Queued) != server.queue_seq.is_some() {
                return Err(format!("server {server_id} queue membership disagrees with its state"));
            }
        }
        for (node_id, node) in self.nodes.iter() {
            let (mib, n) = allocated.get(&node_id).copied().unwrap_or_default();
            if node.allocated_mib != mib || node.n_servers != n {
                return Err(format!(
                    "node {node_id} books {} MiB / {} servers, servers hold {mib} / {n}",
                    node.allocated_mib, node.n_servers
                ));
            }
            if node.allocated_mib > node.usable_mib() {
                return Err(format!(
                    "node {node_id} overcommitted: {} > {}",
                    node.allocated_mib,
                    node.usable_mib()
                ));
            }
        }
        let price = self.config.billing.ram_price_micros_per_gib_hour;
        for (user_id, user) in self.users.iter() {
            let mut sum: u128 = 0;
            for id in &user.holding {
                let accrual = &self.servers[id].accrual;
                sum += ram_time_numerator(accrual.mib as u64, user.unsettled_since.since(accrual.since), price);
            }
            if sum != user.unsettled_ram_numerator {
                return Err(format!(
                    "user {user_id}: unsettled RAM-time {} != its servers' {sum}",
                    user.unsettled_ram_numerator
                ));
            }
        }
        let empty_cloud: BTreeSet<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.is_cloud() && n.state == NodeState::Ready && n.n_servers == 0)
            .map(|n| n.id)
            .collect();
        if empty_cloud != self.empty_cloud {
            return Err("empty cloud node set disagrees with the nodes".to_string());
        }
        let draining: BTreeSet<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.state == NodeState::Draining)
            .map(|n| n.id)
            .collect();
        let draining_mib: u64 = draining.iter().map(|id| self.nodes[id].usable_mib() as u64).sum();
        if draining != self.draining
            || draining_mib != self.totals.draining_usable_mib
            || draining.len() as u32 != self.totals.n_cloud_draining
        {
            return Err("draining node set disagrees with the nodes".to_string());
        }
        if self.queue.len() != self.totals.queued_count as usize
            || self.queue.demand_mib() != self.totals.queued_demand_mib
        {
            return Err("queue totals disagree with the queue".to_string());
        }
        if crate::policy::view::provisioning_usable_mib(&self.nodes) != self.provisioning {
            return Err("provisioning set disagrees with the nodes".to_string());
        }
        let held: u64 = self.nodes.values().map(|n| n.allocated_mib as u64).sum();
        if held != self.totals.allocated_mib {
            return Err(format!(
                "allocated total {} != sum over nodes {held}",
                self.totals.allocated_mib
            ));
        }
        Ok(())
    }
}
