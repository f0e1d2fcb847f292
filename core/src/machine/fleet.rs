//! The fleet: node states (provisioning, ready, draining, deleting, lost), ordering
//! and deleting VMs, evaluating the scaling policy and applying its decision.
//!
//! Pending commands are a window of slots indexed by command id (`PendingMap`); an
//! entry that outlives 65,536 newer commands moves to an ordered map, so memory
//! stays bounded.

use super::*;

impl Core {
    pub(super) fn handle_add_dedicated(
        &mut self,
        name: String,
        capacity_mib: u32,
        monthly_cost_micros: u64,
        is_system: bool,
    ) {
        let node_id = self.alloc_node_id();
        let reserve_mib = self.config.reserve.reserve_mib(capacity_mib, is_system);
        let kind = NodeKind::Dedicated {
            name,
            monthly_cost_micros,
        };
        let node = Node::new(node_id, kind, is_system, capacity_mib, reserve_mib, self.now);
        self.register_provisioning(node);
        self.node_became_ready(node_id);
        self.update_largest_dedicated();
    }

    /// A new node joins as a `Provisioning` placeholder: its usable RAM counts as
    /// capacity on its way.
    fn register_provisioning(&mut self, node: Node) {
        let (node_id, usable_mib) = (node.id, node.usable_mib());
        self.nodes.insert(node_id, node);
        self.totals.provisioning_usable_mib += usable_mib as u64;
        self.provisioning.insert(node_id, usable_mib);
    }

    pub(super) fn update_largest_dedicated(&mut self) {
        self.largest_dedicated_usable_mib = self
            .nodes
            .values()
            .filter(|n| !n.is_cloud() && n.state == NodeState::Ready)
            .map(|n| n.usable_mib())
            .max()
            .unwrap_or(0);
    }

    pub(super) fn handle_node_lost(&mut self, node_id: NodeId) -> Result<(), RejectReason> {
        let node = self.nodes.get(&node_id).ok_or(RejectReason::UnknownNode)?;
        match node.state {
            NodeState::Lost => return Ok(()),
            NodeState::Provisioning => {
                // Not holding servers: a failed provision.
                self.abandon_provisioning(node_id);
                self.remove_node(node_id, NodeRemoval::ProvisionFailed);
                self.request_demand_evaluation();
                return Ok(());
            }
            NodeState::Deleting => {
                // Gone before the delete was confirmed: as good as deleted.
                self.pending.forget(node.pending_command);
                self.remove_node(node_id, NodeRemoval::Deleted);
                return Ok(());
            }
            NodeState::Ready | NodeState::Draining => {}
        }
        self.stats.nodes_lost += 1;
        // Out of placement first, so nothing released below lands here again.
        self.unindex_node(node_id);
        self.nodes.get_mut(&node_id).expect("exists").state = NodeState::Lost;
        self.update_largest_dedicated();
        let on_node: Vec<ServerId> = self
            .servers
            .iter()
            .filter(|(_, s)| s.node == Some(node_id))
            .map(|(id, _)| id)
            .collect();
        for server_id in on_node {
            let server = &self.servers[&server_id];
            match server.state {
                ServerState::Starting => self.retry_start(server_id),
                ServerState::Running if server.prewarm_hold => {
                    // Pre-warmed and nobody came yet: not worth a restart elsewhere.
                    self.release_ram(server_id);
                    self.finish_stopped(server_id, StopReason::NodeLost);
                }
                ServerState::Running => {
                    // The world restarts elsewhere: a fresh start at the head of the queue.
                    self.release_ram(server_id);
                    self.finish_stopped(server_id, StopReason::NodeLost);
                    let server = self.servers.get_mut(&server_id).expect("exists");
                    server.start_after_stop = None;
                    self.stats.starts_requested += 1;
                    let request = StartRequest::new(self.now);
                    self.enqueue(server_id, request, true);
                }
                ServerState::Stopping { reason } => {
                    self.release_ram(server_id);
                    self.finish_stopped(server_id, reason);
                }
                _ => unreachable!("only RAM-holding servers sit on a node"),
            }
        }
        let node = self.nodes.get_mut(&node_id).expect("exists");
        assert_eq!(node.allocated_mib, 0, "lost node still holds RAM");
        if node.is_cloud() {
            // The provider may still bill the VM: delete it.
            self.totals.n_cloud_nodes -= 1;
            self.issue_delete_node(node_id);
        } else {
            self.events.push_back(Event::NodeRemoved {
                node_id,
                reason: NodeRemoval::Lost,
            });
        }
        self.dispatch();
        self.request_demand_evaluation();
        Ok(())
    }

    /// A lost dedicated node answers again: it rejoins as a ready, empty node (its
    /// servers were released when it was lost) and the queue is dispatched onto it. A
    /// cloud node is not taken back: its lost VM is deleted. A ready node answering
    /// changes nothing.
    pub(super) fn handle_node_answered(&mut self, node_id: NodeId) -> Result<(), RejectReason> {
        let node = self.nodes.get(&node_id).ok_or(RejectReason::UnknownNode)?;
        match node.state {
            NodeState::Lost if !node.is_cloud() => {}
            NodeState::Ready | NodeState::Draining => return Ok(()),
            state => {
                return Err(RejectReason::WrongState {
                    state: format!("{state:?}").to_lowercase(),
                });
            }
        }
        assert_eq!(node.allocated_mib, 0, "a lost node holds no RAM");
        let usable_mib = node.usable_mib();
        self.nodes.get_mut(&node_id).expect("exists").state = NodeState::Provisioning;
        self.totals.provisioning_usable_mib += usable_mib as u64;
        self.provisioning.insert(node_id, usable_mib);
        self.node_became_ready(node_id);
        self.update_largest_dedicated();
        self.request_demand_evaluation();
        Ok(())
    }

    pub(super) fn fire_provision_timeout(&mut self, node_id: NodeId) {
        let node = &self.nodes[&node_id];
        if node.state != NodeState::Provisioning {
            return;
        }
        self.abandon_provisioning(node_id);
        self.stats.provision_timeouts += 1;
        // The VM may exist and bill: delete it. `NodeRemoved` follows the delete.
        self.nodes.get_mut(&node_id).expect("exists").state = NodeState::Deleting;
        self.issue_delete_node(node_id);
        self.request_demand_evaluation();
    }

    /// A provisioning placeholder will not become ready: drop it from the totals and
    /// its timeout. The caller decides whether the VM must still be deleted.
    pub(super) fn abandon_provisioning(&mut self, node_id: NodeId) {
        let node = self.nodes.get_mut(&node_id).expect("exists");
        assert_eq!(node.state, NodeState::Provisioning);
        self.pending.forget(node.pending_command.take());
        let usable = node.usable_mib() as u64;
        self.timer_died();
        self.totals.provisioning_usable_mib -= usable;
        self.provisioning.remove(&node_id);
        self.totals.n_cloud_nodes -= 1;
        self.totals.n_cloud_provisioning -= 1;
    }

    pub(super) fn alloc_node_id(&mut self) -> NodeId {
        let id = NodeId(self.next_node_id);
        self.next_node_id += 1;
        id
    }

    pub(super) fn node_became_ready(&mut self, node_id: NodeId) {
        let now = self.now;
        let node = self.nodes.get_mut(&node_id).expect("exists");
        assert_eq!(node.state, NodeState::Provisioning);
        node.state = NodeState::Ready;
        node.ready_at = Some(now);
        node.empty_since = Some(now);
        let usable = node.usable_mib();
        let is_cloud = node.is_cloud();
        self.totals.provisioning_usable_mib -= usable as u64;
        self.provisioning.remove(&node_id);
        self.totals.ready_usable_mib += usable as u64;
        self.totals.n_ready_nodes += 1;
        if is_cloud {
            self.totals.n_cloud_provisioning -= 1;
        }
        self.index_for(is_cloud).insert(node_id, usable);
        if is_cloud {
            self.empty_cloud.insert(node_id);
        }
        self.events.push_back(Event::NodeReady { node_id });
        self.dispatch();
    }

    /// Take a ready or draining node out of placement and the ready totals.
    pub(super) fn unindex_node(&mut self, node_id: NodeId) {
        let node = &self.nodes[&node_id];
        let (usable, free, is_cloud, state) = (node.usable_mib(), node.free_mib(), node.is_cloud(), node.state);
        if state == NodeState::Ready {
            self.index_for(is_cloud).remove(node_id, free);
            self.empty_cloud.remove(&node_id);
        }
        if matches!(state, NodeState::Ready | NodeState::Draining) {
            self.totals.ready_usable_mib -= usable as u64;
            self.totals.n_ready_nodes -= 1;
        }
        if state == NodeState::Draining {
            self.totals.draining_usable_mib -= usable as u64;
            self.totals.n_cloud_draining -= 1;
            self.draining.remove(&node_id);
        }
    }

    pub(super) fn remove_node(&mut self, node_id: NodeId, reason: NodeRemoval) {
        let node = self.nodes.remove(&node_id).expect("exists");
        assert_eq!(node.allocated_mib, 0, "removing a node that holds RAM");
        if reason == NodeRemoval::Deleted {
            self.stats.nodes_deleted += 1;
        }
        self.events.push_back(Event::NodeRemoved { node_id, reason });
    }

    /// Take a ready or draining cloud node out of service and delete its VM
    /// (`NodeRemoved` follows the delete's success).
    pub(super) fn delete_cloud_node(&mut self, node_id: NodeId) {
        self.unindex_node(node_id);
        self.nodes.get_mut(&node_id).expect("exists").state = NodeState::Deleting;
        self.totals.n_cloud_nodes -= 1;
        self.issue_delete_node(node_id);
    }

    pub(super) fn issue_delete_node(&mut self, node_id: NodeId) {
        let command_id = self.push_awaited(CommandKind::DeleteNode { node_id }, Pending::DeleteNode(node_id));
        self.nodes.get_mut(&node_id).expect("exists").pending_command = Some(command_id);
    }

    pub(super) fn retry_failed_deletes(&mut self) {
        if self.n_deletes_to_retry == 0 {
            return;
        }
        self.n_deletes_to_retry = 0;
        let stuck: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| {
                matches!(n.state, NodeState::Deleting | NodeState::Lost) && n.is_cloud() && n.pending_command.is_none()
            })
            .map(|n| n.id)
            .collect();
        for node_id in stuck {
            self.issue_delete_node(node_id);
        }
    }

    /// Ask the policy now when queued demand exceeds the capacity on its way. Only
    /// requests a new VM could hold count: one larger than every catalog type waits for
    /// a dedicated machine, and asking the policy again on every input while it waits
    /// would change nothing it orders for the queue (the periodic tick still runs).
    pub(super) fn request_demand_evaluation(&mut self) {
        if self.queue.demand_mib_up_to(self.largest_placeable_mib) <= self.totals.provisioning_usable_mib {
            return;
        }
        self.evaluate_scaling(Trigger::Demand);
    }

    pub(super) fn evaluate_scaling(&mut self, trigger: Trigger) {
        if !self.config.policy.autoscales() {
            return;
        }
        self.stats.scale_evaluations += 1;
        let view = FleetView {
            provisioning_usable_mib: &self.provisioning,
            empty_cloud_nodes: &self.empty_cloud,
            draining_cloud_nodes: &self.draining,
            now: self.now,
            trigger,
            totals: self.totals,
            queued_for_cloud_count: self.queue.count_up_to(self.largest_placeable_mib) as u32,
            queued_for_cloud_mib: self.queue.demand_mib_up_to(self.largest_placeable_mib),
            nodes: &self.nodes,
            queued_by_size: self.queue.head_by_size(QUEUE_VIEW_MAX, &mut self.queue_view),
            catalog: &self.config.catalog,
            type_usable_mib: &self.type_usable_mib,
            last_scale_up_at: self.last_scale_up_at,
        };
        let decision = self.policy.evaluate(&view);
        self.apply_decision(decision);
    }

    pub(super) fn apply_decision(&mut self, decision: ScalingDecision) {
        for node_id in decision.uncordon {
            self.uncordon_node(node_id);
        }
        let mut ordered = false;
        for (server_type, location) in decision.provision {
            if self.provider.rate_limited(self.now) {
                self.stats.provisions_held_back += 1;
                continue;
            }
            let wanted = (server_type, location);
            let chosen = self.provider.choose(
                &self.config.catalog,
                &self.config.reserve,
                &self.location_order,
                wanted,
                self.now,
            );
            let Some(chosen) = chosen else {
                self.stats.provisions_held_back += 1;
                continue;
            };
            if chosen != wanted {
                self.stats.provision_fallbacks += 1;
                self.events.push_back(Event::ProvisionFallback { wanted, chosen });
            }
            self.provision_node(chosen.0, chosen.1);
            ordered = true;
        }
        if ordered {
            self.last_scale_up_at = Some(self.now);
        }
        for node_id in decision.delete {
            let Some(node) = self.nodes.get(&node_id) else { continue };
            if !(node.is_cloud() && node.state == NodeState::Ready && node.n_servers == 0) {
                continue;
            }
            self.delete_cloud_node(node_id);
        }
        for node_id in decision.drain {
            self.drain_node(node_id);
        }
    }

    /// Cordon a ready cloud node: no new servers; deleted once its servers are gone.
    pub(super) fn drain_node(&mut self, node_id: NodeId) {
        let Some(node) = self.nodes.get(&node_id) else { return };
        if !(node.is_cloud() && node.state == NodeState::Ready) {
            return;
        }
        if node.n_servers == 0 {
            self.delete_cloud_node(node_id);
            return;
        }
        let usable = node.usable_mib() as u64;
        self.unindex_node(node_id);
        // Still counted as ready capacity (its servers run), but not placeable.
        self.nodes.get_mut(&node_id).expect("exists").state = NodeState::Draining;
        self.totals.ready_usable_mib += usable;
        self.totals.n_ready_nodes += 1;
        self.totals.draining_usable_mib += usable;
        self.totals.n_cloud_draining += 1;
        self.draining.insert(node_id);
        self.stats.nodes_drained += 1;
        self.events.push_back(Event::NodeDraining {
            node_id,
            draining: true,
        });
    }

    /// Take a cordoned node back into service.
    pub(super) fn uncordon_node(&mut self, node_id: NodeId) {
        let Some(node) = self.nodes.get(&node_id) else { return };
        if node.state != NodeState::Draining {
            return;
        }
        let (usable, free, empty) = (node.usable_mib() as u64, node.free_mib(), node.n_servers == 0);
        self.nodes.get_mut(&node_id).expect("exists").state = NodeState::Ready;
        self.totals.draining_usable_mib -= usable;
        self.totals.n_cloud_draining -= 1;
        self.draining.remove(&node_id);
        self.free_cloud.insert(node_id, free);
        if empty {
            self.empty_cloud.insert(node_id);
        }
        self.stats.nodes_uncordoned += 1;
        self.events.push_back(Event::NodeDraining {
            node_id,
            draining: false,
        });
        self.dispatch();
    }

    pub(super) fn provision_node(&mut self, server_type: VmTypeIdx, location: LocationIdx) {
        let catalog_type = &self.config.catalog.server_types[server_type.0 as usize];
        let capacity_mib = catalog_type.ram_mib;
        let reserve_mib = self.config.reserve.reserve_mib(capacity_mib, false);
        let node_id = self.alloc_node_id();
        let command_id = self.push_awaited(
            CommandKind::ProvisionNode {
                node_id,
                server_type,
                location,
            },
            Pending::Provision(node_id),
        );
        let kind = NodeKind::Cloud { server_type, location };
        let mut node = Node::new(node_id, kind, false, capacity_mib, reserve_mib, self.now);
        node.pending_command = Some(command_id);
        self.register_provisioning(node);
        self.totals.n_cloud_nodes += 1;
        self.totals.n_cloud_provisioning += 1;
        self.stats.nodes_requested += 1;
        let timeout_at = self.now.plus_ms(self.config.lifecycle.provision_timeout_ms);
        self.push_timer(timeout_at, Timer::Node(node_id));
        self.events.push_back(Event::NodeRequested {
            node_id,
            server_type,
            location,
        });
    }
}
