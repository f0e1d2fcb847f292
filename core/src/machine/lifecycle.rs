//! Server lifecycle transitions: a start begins (placed or queued), the container
//! boots, players come and go, it stops, exits or fails, it is retried or rejected,
//! and command results move the state on.

use super::*;

impl Core {
    /// Place a start at once when nothing waits and a node fits, else queue it.
    pub(super) fn begin_start(&mut self, server_id: ServerId, request: StartRequest) {
        let ram_mib = self.servers[&server_id].ram_mib;
        // Nobody waiting and a node fits: place at once, without a queue round trip.
        if self.queue.is_empty()
            && let Some(node_id) = self.choose_node(ram_mib, None)
        {
            self.settle(server_id);
            self.servers.get_mut(&server_id).expect("exists").start = Some(request);
            self.place(server_id, node_id);
            return;
        }
        self.enqueue(server_id, request, false);
        self.dispatch_newcomer(server_id);
        self.request_demand_evaluation();
    }

    pub(super) fn handle_server_booted(&mut self, server_id: ServerId) -> Result<(), RejectReason> {
        let server = self.servers.get_mut(&server_id).ok_or(RejectReason::UnknownServer)?;
        if server.state != ServerState::Starting {
            return Err(RejectReason::wrong_state(server.state));
        }
        let now = self.now;
        let start = server.start.take().expect("a starting server has a start request");
        server.state = ServerState::Running;
        server.running_since = Some(now);
        server.idle_since = (server.players == 0).then_some(now);
        // Minecraft answering proves the container runs: the reservation is confirmed.
        self.pending.forget(server.pending_command.take());
        self.events.push_back(Event::ServerRunning {
            server_id,
            requested_at: start.requested_at,
            placed_at: start.placed_at.expect("placed"),
        });
        self.end_start_event(server_id, start.requested_at, StartOutcome::Running);
        self.arm_idle_timer(server_id);
        Ok(())
    }

    pub(super) fn handle_player_count(&mut self, server_id: ServerId, players: u32) -> Result<(), RejectReason> {
        let server = self.servers.get(&server_id).ok_or(RejectReason::UnknownServer)?;
        if players > 0
            && matches!(server.state, ServerState::Starting | ServerState::Running)
            && self.is_prewarm(server_id)
        {
            self.record_habit(server_id);
            self.claim_prewarm(server_id);
        }
        let server = self.servers.get_mut(&server_id).expect("exists");
        let was_idle = server.players == 0;
        server.players = players;
        if server.state == ServerState::Running {
            if players == 0 && !was_idle {
                server.idle_since = Some(self.now);
            } else if players > 0 {
                server.idle_since = None;
            }
            self.arm_idle_timer(server_id);
        }
        Ok(())
    }

    pub(super) fn handle_container_exited(&mut self, server_id: ServerId) -> Result<(), RejectReason> {
        let server = self.servers.get(&server_id).ok_or(RejectReason::UnknownServer)?;
        match server.state {
            ServerState::Starting => {
                self.retry_start(server_id);
                Ok(())
            }
            ServerState::Running => {
                self.release_ram(server_id);
                self.finish_stopped(server_id, StopReason::Crashed);
                Ok(())
            }
            ServerState::Stopping { reason } => {
                self.release_ram(server_id);
                self.finish_stopped(server_id, reason);
                Ok(())
            }
            state => Err(RejectReason::wrong_state(state)),
        }
    }

    /// `failure`: `None` when the command succeeded.
    pub(super) fn handle_command_result(
        &mut self,
        command_id: CommandId,
        failure: Option<FailureKind>,
    ) -> Result<(), RejectReason> {
        let succeeded = failure.is_none();
        // Results of commands the core no longer waits for (superseded, or fire-and-forget
        // such as ledger entries and mail) are acknowledged and ignored.
        let Some(pending) = self.pending.remove(&command_id) else {
            return Ok(());
        };
        match pending {
            Pending::Provision(node_id) => {
                let NodeKind::Cloud { server_type, location } = self.nodes[&node_id].kind else {
                    unreachable!("only cloud nodes are provisioned")
                };
                match failure {
                    None => self.provider.on_success((server_type, location)),
                    Some(kind) => {
                        match kind {
                            FailureKind::ResourceUnavailable => self.stats.provision_sold_out += 1,
                            FailureKind::RateLimited => self.stats.provision_rate_limited += 1,
                            FailureKind::Other | FailureKind::Permanent => {}
                        }
                        let fallback = &self.config.policy.fallback;
                        self.provider
                            .on_failure(fallback, kind, (server_type, location), self.now);
                    }
                }
                if succeeded {
                    let node = self.nodes.get_mut(&node_id).expect("pending node exists");
                    node.pending_command = None;
                    self.timer_died();
                    self.node_became_ready(node_id);
                } else {
                    self.abandon_provisioning(node_id);
                    self.remove_node(node_id, NodeRemoval::ProvisionFailed);
                    self.request_demand_evaluation();
                }
            }
            Pending::DeleteNode(node_id) => {
                self.nodes
                    .get_mut(&node_id)
                    .expect("pending node exists")
                    .pending_command = None;
                if succeeded {
                    let reason = if self.nodes[&node_id].state == NodeState::Lost {
                        NodeRemoval::Lost
                    } else {
                        NodeRemoval::Deleted
                    };
                    self.remove_node(node_id, reason);
                } else {
                    // Retried on the next scale tick; the node takes nothing meanwhile.
                    self.n_deletes_to_retry += 1;
                    self.ensure_scale_tick();
                }
            }
            Pending::StartContainer { server_id, .. } => {
                let server = self.servers.get_mut(&server_id).expect("pending server exists");
                server.pending_command = None;
                match failure {
                    None => self.arm_server_timer(server_id, None),
                    Some(FailureKind::Permanent) => self.reject_start(server_id, RejectReason::StartFailed),
                    Some(_) => self.retry_start(server_id),
                }
            }
            Pending::StopContainer(server_id) => {
                let server = self.servers.get_mut(&server_id).expect("pending server exists");
                server.pending_command = None;
                let ServerState::Stopping { reason } = server.state else {
                    unreachable!("a stop is pending only while stopping")
                };
                if !succeeded && server.stop_attempts < self.config.lifecycle.start_attempts_max {
                    server.stop_attempts += 1;
                    let node_id = server.node.expect("stopping server has a node");
                    self.issue_stop_container(server_id, node_id, reason);
                } else {
                    // After the last attempt the shell has killed the container.
                    self.release_ram(server_id);
                    self.finish_stopped(server_id, reason);
                }
            }
        }
        Ok(())
    }

    /// A start attempt failed: give the RAM back and queue again at the front, or
    /// reject after too many attempts.
    pub(super) fn retry_start(&mut self, server_id: ServerId) {
        self.release_ram(server_id);
        let server = self.servers.get_mut(&server_id).expect("exists");
        let mut request = server.start.take().expect("a starting server has a start request");
        request.attempts += 1;
        request.placed_at = None;
        if request.attempts >= self.config.lifecycle.start_attempts_max {
            server.state = ServerState::Stopped;
            self.arm_server_timer(server_id, None);
            self.begin_storage_accrual(server_id);
            self.end_start_event(
                server_id,
                request.requested_at,
                StartOutcome::Rejected {
                    reason: RejectReason::TooManyAttempts,
                },
            );
        } else {
            self.stats.starts_requeued += 1;
            self.arm_server_timer(server_id, None);
            self.enqueue(server_id, request, true);
        }
        self.dispatch();
    }

    /// A start attempt failed and the start ends here: the RAM goes back, the server
    /// rests stopped, the start is rejected with `reason`.
    pub(super) fn reject_start(&mut self, server_id: ServerId, reason: RejectReason) {
        self.release_ram(server_id);
        let server = self.servers.get_mut(&server_id).expect("exists");
        let request = server.start.take().expect("a starting server has a start request");
        server.state = ServerState::Stopped;
        self.arm_server_timer(server_id, None);
        self.begin_storage_accrual(server_id);
        self.end_start_event(server_id, request.requested_at, StartOutcome::Rejected { reason });
        self.dispatch();
    }

    pub(super) fn end_queued_start(&mut self, server_id: ServerId, outcome: StartOutcome) {
        self.dequeue(server_id);
        let server = self.servers.get_mut(&server_id).expect("exists");
        let request = server.start.take().expect("queued server has a request");
        server.state = if server.world_archived {
            ServerState::Archived
        } else {
            ServerState::Stopped
        };
        self.begin_storage_accrual(server_id);
        self.end_start_event(server_id, request.requested_at, outcome);
        self.dispatch();
    }

    pub(super) fn end_start_event(&mut self, server_id: ServerId, requested_at: Timestamp, outcome: StartOutcome) {
        match outcome {
            StartOutcome::Running => self.stats.starts_running += 1,
            StartOutcome::Rejected { .. } => self.stats.starts_rejected += 1,
            StartOutcome::Cancelled => self.stats.starts_cancelled += 1,
        }
        self.events.push_back(Event::StartEnded {
            server_id,
            requested_at,
            outcome,
        });
    }

    pub(super) fn begin_stop(&mut self, server_id: ServerId, reason: StopReason) {
        let server = self.servers.get_mut(&server_id).expect("exists");
        let node_id = server.node.expect("a server holding RAM has a node");
        if let Some(request) = server.start.take() {
            // Stopped while starting: that start ends here.
            let outcome = match reason {
                StopReason::OutOfBalance => StartOutcome::Rejected {
                    reason: RejectReason::OutOfBalance,
                },
                StopReason::Deleted => StartOutcome::Rejected {
                    reason: RejectReason::ServerDeleted,
                },
                _ => StartOutcome::Cancelled,
            };
            self.end_start_event(server_id, request.requested_at, outcome);
        }
        let server = self.servers.get_mut(&server_id).expect("exists");
        self.pending.forget(server.pending_command.take());
        server.state = ServerState::Stopping { reason };
        server.stop_attempts = 0;
        self.arm_server_timer(server_id, None);
        self.issue_stop_container(server_id, node_id, reason);
    }

    pub(super) fn issue_stop_container(&mut self, server_id: ServerId, node_id: NodeId, reason: StopReason) {
        let command_id = self.push_awaited(
            CommandKind::StopContainer {
                server_id,
                node_id,
                reason,
            },
            Pending::StopContainer(server_id),
        );
        self.servers.get_mut(&server_id).expect("exists").pending_command = Some(command_id);
    }

    /// The container is gone and its RAM released: settle into the resting state.
    pub(super) fn finish_stopped(&mut self, server_id: ServerId, reason: StopReason) {
        let server = self.servers.get_mut(&server_id).expect("exists");
        server.prewarm_hold = false;
        server.running_since = None;
        server.idle_since = None;
        server.players = 0;
        if server.delete_after_stop {
            self.remove_server(server_id);
            self.dispatch();
            return;
        }
        server.state = match reason {
            StopReason::Idle => ServerState::Sleeping,
            _ => ServerState::Stopped,
        };
        let start_after_stop = server.start_after_stop.take();
        self.begin_storage_accrual(server_id);
        self.events.push_back(Event::ServerStopped { server_id, reason });
        if self.servers[&server_id].state == ServerState::Sleeping {
            let at = self.now.plus_ms(self.config.lifecycle.archive_after_ms);
            self.arm_server_timer(server_id, Some(at));
        } else {
            self.arm_server_timer(server_id, None);
        }
        if let Some(requested_at) = start_after_stop {
            let owner = self.servers[&server_id].owner;
            if self.users[&owner].balance_micros > 0 {
                let request = StartRequest::new(requested_at);
                self.enqueue(server_id, request, false);
                self.dispatch();
                self.request_demand_evaluation();
                return;
            } else {
                self.end_start_event(
                    server_id,
                    requested_at,
                    StartOutcome::Rejected {
                        reason: RejectReason::InsufficientBalance,
                    },
                );
            }
        }
        self.dispatch();
    }

    pub(super) fn remove_server(&mut self, server_id: ServerId) {
        self.settle(server_id);
        self.arm_server_timer(server_id, None);
        if let Some(habit) = self.habits.get(&server_id) {
            let slot = habit.armed_timer;
            self.arm_timer(slot, None, Timer::Prewarm(server_id));
            self.habits.remove(&server_id);
        }
        let server = self.servers.remove(&server_id).expect("exists");
        assert!(
            !server.state.holds_ram() || server.node.is_none(),
            "removing a server that holds RAM"
        );
        if server.has_world {
            self.push_command(CommandKind::DeleteWorld { server_id });
        }
        self.users
            .get_mut(&server.owner)
            .expect("owner")
            .servers
            .remove(&server_id);
    }
}
