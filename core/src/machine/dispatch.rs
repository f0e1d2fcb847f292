//! Dispatch: the start queue's rules, placement, and giving RAM back.
//!
//! Hot-path data structures: free-RAM indexes (`FreeIndex`) are sorted vectors of
//! `free_mib << 32 | node_id`, so pack (best fit) and spread (most free) are one range
//! query each; nodes are found by index (`IdMap`), not by a B-tree search; the start
//! queue is a deque sorted by sequence number, with a tally by size for the policy's
//! view and the demand trigger.

use super::*;

impl Core {
    pub(super) fn enqueue(&mut self, server_id: ServerId, request: StartRequest, front: bool) {
        self.settle(server_id);
        let server = self.servers.get_mut(&server_id).expect("exists");
        let entry = QueueEntry {
            server_id,
            ram_mib: server.ram_mib,
            requested_at: request.requested_at,
        };
        let seq = if front {
            self.queue.push_front(entry)
        } else {
            self.queue.push_back(entry)
        };
        server.state = ServerState::Queued;
        server.start = Some(request);
        server.queue_seq = Some(seq);
        server.accrual.kind = None;
        self.totals.queued_count += 1;
        self.totals.queued_demand_mib += server.ram_mib as u64;
        let position = self.queue.position(seq) as u32;
        self.events.push_back(Event::StartQueued { server_id, position });
    }

    pub(super) fn dequeue(&mut self, server_id: ServerId) {
        let server = self.servers.get_mut(&server_id).expect("exists");
        let seq = server.queue_seq.take().expect("queued");
        let entry = self.queue.remove(seq);
        self.totals.queued_count -= 1;
        self.totals.queued_demand_mib -= entry.ram_mib as u64;
    }

    /// Start what fits, in queue order (at most `scan_max` placement attempts per pass).
    ///
    /// The window: the head, then the first `scan_max` requests whose size could fit
    /// the largest free space of any ready node. Requests that cannot fit anywhere now
    /// are stepped over without counting (their sizes are known from the queue's size
    /// tally, so the walk stops once every request that could fit has been seen): a
    /// queue front full of requests for a tier only one machine holds never hides the
    /// smaller starts behind it. `scan_max` bounds the work of a pass, not who can be
    /// placed.
    ///
    /// Starvation: smaller requests may overtake a head that does not fit (backfill)
    /// until the head has waited `head_bypass_ms_max`. From then on the head holds a
    /// *claim* on one node, the ready node with the most free RAM that could hold it:
    /// nothing else is placed there, so the node only empties until the head fits.
    /// Backfill goes on elsewhere. When no ready node could ever hold the head, nothing
    /// overtakes it at all until one appears (the policy orders it).
    pub(super) fn dispatch(&mut self) {
        let max_free = self.free_dedicated.max_free_mib().max(self.free_cloud.max_free_mib());
        if self.queue.smallest_mib().is_none_or(|smallest| smallest > max_free) {
            // Nothing queued, or nothing queued fits anywhere.
            return;
        }
        let scan_max = self.config.queue.scan_max as usize;
        let head_bypass_ms_max = self.config.queue.head_bypass_ms_max;
        let mut candidates = std::mem::take(&mut self.dispatch_buffer);
        candidates.clear();
        let n_could_fit = self.queue.count_up_to(max_free).min(scan_max);
        let mut n_seen = 0;
        for (position, (_, entry)) in self.queue.iter().enumerate() {
            if n_seen == n_could_fit {
                break;
            }
            let could_fit = entry.ram_mib <= max_free;
            if could_fit || position == 0 {
                candidates.push(*entry);
            }
            n_seen += could_fit as usize;
        }
        let mut claimed: Option<NodeId> = None;
        let mut head_seen = false;
        for entry in &candidates {
            let max_free = self.free_dedicated.max_free_mib().max(self.free_cloud.max_free_mib());
            if entry.ram_mib <= max_free
                && let Some(node_id) = self.choose_node(entry.ram_mib, claimed)
            {
                self.dequeue(entry.server_id);
                self.place(entry.server_id, node_id);
                continue;
            }
            if !head_seen {
                head_seen = true;
                if self.now.since(entry.requested_at) >= head_bypass_ms_max {
                    claimed = self.claim_node_for(entry.ram_mib);
                    if claimed.is_none() {
                        break;
                    }
                }
            }
        }
        self.dispatch_buffer = candidates;
    }

    /// Place a request just added to the tail, if the rules let it start now.
    ///
    /// Every pass of `dispatch` ends with no request in its window placeable, and
    /// free RAM only grows through paths that call `dispatch` again; so when a request
    /// joins the queue only the newcomer needs a look, not the whole window. The
    /// newcomer is in the window when no more than `scan_max` queued requests could fit
    /// the largest free space.
    pub(super) fn dispatch_newcomer(&mut self, server_id: ServerId) {
        let scan_max = self.config.queue.scan_max as usize;
        let max_free = self.free_dedicated.max_free_mib().max(self.free_cloud.max_free_mib());
        if self.queue.count_up_to(max_free) > scan_max {
            return;
        }
        let Some((_, head)) = self.queue.iter().next() else {
            return;
        };
        let (head_server, head_ram_mib, head_requested_at) = (head.server_id, head.ram_mib, head.requested_at);
        let ram_mib = self.servers[&server_id].ram_mib;
        let claimed = if head_server == server_id {
            None
        } else if self.now.since(head_requested_at) >= self.config.queue.head_bypass_ms_max {
            match self.claim_node_for(head_ram_mib) {
                Some(node_id) => Some(node_id),
                None => return,
            }
        } else {
            None
        };
        if let Some(node_id) = self.choose_node(ram_mib, claimed) {
            self.dequeue(server_id);
            self.place(server_id, node_id);
        }
    }

    /// Paid-for dedicated capacity first, then cloud (by `[core.placement]`: spread and
    /// pack by default), never `claimed`.
    pub(super) fn choose_node(&self, need_mib: u32, claimed: Option<NodeId>) -> Option<NodeId> {
        let placement = &self.config.placement;
        self.free_dedicated
            .choose_excluding(need_mib, placement.dedicated, claimed)
            .or_else(|| self.free_cloud.choose_excluding(need_mib, placement.cloud, claimed))
    }

    /// The ready node with the most free RAM among those large enough for `need_mib`.
    pub(super) fn claim_node_for(&self, need_mib: u32) -> Option<NodeId> {
        // The fullest-free node of each index, if large enough; the larger of the two.
        let eligible = |most_free: Option<(u32, NodeId)>| {
            most_free.filter(|&(_, node_id)| self.nodes[&node_id].usable_mib() >= need_mib)
        };
        let fast = eligible(self.free_dedicated.max_free_node()).max(eligible(self.free_cloud.max_free_node()));
        if let Some((_, node_id)) = fast {
            return Some(node_id);
        }
        self.nodes
            .values()
            .filter(|n| n.state == NodeState::Ready && n.usable_mib() >= need_mib)
            .max_by_key(|n| (n.free_mib(), std::cmp::Reverse(n.id)))
            .map(|n| n.id)
    }

    /// Reserve RAM for a server on a node, atomically with the decision.
    pub(super) fn place(&mut self, server_id: ServerId, node_id: NodeId) {
        let ram_mib = self.servers[&server_id].ram_mib;
        let node = self.nodes.get_mut(&node_id).expect("placement node exists");
        assert_eq!(node.state, NodeState::Ready, "placing on a node that is not ready");
        let free_old = node.free_mib();
        assert!(ram_mib <= free_old, "placement would overcommit node {node_id}");
        node.allocated_mib += ram_mib;
        node.n_servers += 1;
        node.empty_since = None;
        let free_new = node.free_mib();
        let is_cloud = node.is_cloud();
        if node.n_servers == 1 && is_cloud {
            self.empty_cloud.remove(&node_id);
        }
        self.index_for(is_cloud).update(node_id, free_old, free_new);
        self.totals.allocated_mib += ram_mib as u64;
        self.totals.servers_holding_ram += 1;

        let now = self.now;
        let server = self.servers.get_mut(&server_id).expect("exists");
        let owner = server.owner;
        server.state = ServerState::Starting;
        server.node = Some(node_id);
        server.players = 0;
        server.stop_attempts = 0;
        let start = server.start.as_mut().expect("placing a start request");
        start.placed_at = Some(now);
        let requested_at = start.requested_at;
        let prewarm = start.prewarm;
        server.prewarm_hold = prewarm;
        let platform_pays = prewarm && self.config.prewarm.billed_to == BilledTo::Platform;
        let restore_world = server.world_archived;
        server.world_archived = false;
        server.has_world = true;
        server.accrual.since = now;
        server.accrual.mib = ram_mib;
        if platform_pays {
            server.accrual.kind = Some(AccrualKind::Warm);
        } else {
            server.accrual.kind = Some(AccrualKind::Ram);
            self.owner_holds_ram(owner, server_id, ram_mib);
        }

        let command_id = self.push_awaited(
            CommandKind::StartContainer {
                server_id,
                node_id,
                ram_mib,
                restore_world,
            },
            Pending::StartContainer {
                server_id,
                restore_world,
            },
        );
        self.servers.get_mut(&server_id).expect("exists").pending_command = Some(command_id);
        self.arm_server_timer(
            server_id,
            Some(now.plus_ms(self.config.lifecycle.reservation_timeout_ms)),
        );
        self.events.push_back(Event::StartPlaced {
            server_id,
            node_id,
            requested_at,
        });
        self.arm_user_timer(owner);
    }

    pub(super) fn index_for(&mut self, is_cloud: bool) -> &mut FreeIndex {
        if is_cloud {
            &mut self.free_cloud
        } else {
            &mut self.free_dedicated
        }
    }

    /// Give back a server's RAM and close its RAM accrual.
    pub(super) fn release_ram(&mut self, server_id: ServerId) {
        self.settle(server_id);
        let server = self.servers.get_mut(&server_id).expect("exists");
        let node_id = server.node.take().expect("holding RAM on a node");
        let ram_mib = server.accrual.mib;
        let owner = server.owner;
        let owner_pays = server.accrual.kind == Some(AccrualKind::Ram);
        server.accrual.kind = None;
        self.pending.forget(server.pending_command.take());
        let now = self.now;
        let node = self.nodes.get_mut(&node_id).expect("node exists");
        let free_old = node.free_mib();
        node.allocated_mib -= ram_mib;
        node.n_servers -= 1;
        if node.n_servers == 0 {
            node.empty_since = Some(now);
        }
        let free_new = node.free_mib();
        let (is_cloud, indexed) = (node.is_cloud(), node.state == NodeState::Ready);
        let delete_now = node.state == NodeState::Draining && node.n_servers == 0 && is_cloud;
        if indexed {
            self.index_for(is_cloud).update(node_id, free_old, free_new);
            if is_cloud && free_new == self.nodes[&node_id].usable_mib() {
                self.empty_cloud.insert(node_id);
            }
        }
        self.totals.allocated_mib -= ram_mib as u64;
        self.totals.servers_holding_ram -= 1;
        if owner_pays {
            self.owner_releases_ram(owner, server_id, ram_mib);
        }
        self.events.push_back(Event::RamReleased {
            server_id,
            node_id,
            ram_mib,
        });
        if delete_now {
            self.delete_cloud_node(node_id);
        }
        self.arm_user_timer(owner);
    }

    pub(super) fn tier_placeable(&self, ram_mib: u32) -> bool {
        ram_mib <= self.largest_placeable_mib || ram_mib <= self.largest_dedicated_usable_mib
    }
}
