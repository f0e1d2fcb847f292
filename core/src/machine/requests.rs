//! User requests: register, top up, create, re-tier, start, stop, cancel, delete.
//! Each checks what it may and answers with a `RejectReason`; the transitions they
//! cause live in `lifecycle`.

use super::*;

impl Core {
    pub(super) fn handle_input(&mut self, input: Input) -> Result<(), RejectReason> {
        match input {
            Input::RegisterUser { user_id } => self.handle_register_user(user_id),
            Input::TopUp { user_id, amount_micros } => self.handle_top_up(user_id, amount_micros),
            Input::CreateServer {
                server_id,
                owner,
                ram_mib,
            } => self.handle_create_server(server_id, owner, ram_mib),
            Input::UpdateServerTier { server_id, ram_mib } => self.handle_update_tier(server_id, ram_mib),
            Input::StartServer { server_id } => self.handle_start(server_id),
            Input::StopServer { server_id } => self.handle_stop(server_id),
            Input::CancelStart { server_id } => self.handle_cancel(server_id),
            Input::DeleteServer { server_id } => self.handle_delete(server_id),
            Input::AddDedicatedNode {
                name,
                capacity_mib,
                monthly_cost_micros,
                is_system,
            } => {
                self.handle_add_dedicated(name, capacity_mib, monthly_cost_micros, is_system);
                Ok(())
            }
            Input::ServerBooted { server_id } => self.handle_server_booted(server_id),
            Input::PlayerCount { server_id, players } => self.handle_player_count(server_id, players),
            Input::ContainerExited { server_id } => self.handle_container_exited(server_id),
            Input::NodeLost { node_id } => self.handle_node_lost(node_id),
            Input::NodeAnswered { node_id } => self.handle_node_answered(node_id),
            Input::CommandSucceeded { command_id } => self.handle_command_result(command_id, None),
            Input::CommandFailed { command_id, kind, .. } => self.handle_command_result(command_id, Some(kind)),
            Input::Timeout => Ok(()),
        }
    }

    pub(super) fn handle_register_user(&mut self, user_id: UserId) -> Result<(), RejectReason> {
        if self.users.contains_key(&user_id) {
            return Err(RejectReason::DuplicateId);
        }
        self.users.insert(
            user_id,
            User {
                balance_micros: 0,
                ram_mib_held: 0,
                holding: IdSet::new(),
                unsettled_ram_numerator: 0,
                unsettled_since: self.now,
                servers: IdSet::new(),
                low_balance_warned: false,
                armed_timer: None,
            },
        );
        Ok(())
    }

    pub(super) fn handle_top_up(&mut self, user_id: UserId, amount_micros: i64) -> Result<(), RejectReason> {
        if amount_micros <= 0 {
            return Err(RejectReason::InvalidAmount);
        }
        let user = self.users.get_mut(&user_id).ok_or(RejectReason::UnknownUser)?;
        user.balance_micros += amount_micros;
        let entry = LedgerEntry {
            user_id,
            server_id: None,
            amount_micros,
            kind: LedgerKind::TopUp,
            from: self.now,
            to: self.now,
        };
        self.push_command(CommandKind::PostLedgerEntry { entry });
        if self.projected_balance_micros(user_id) > self.config.billing.low_balance_threshold_micros {
            self.users.get_mut(&user_id).expect("user exists").low_balance_warned = false;
        }
        self.arm_user_timer(user_id);
        Ok(())
    }

    pub(super) fn handle_create_server(
        &mut self,
        server_id: ServerId,
        owner: UserId,
        ram_mib: u32,
    ) -> Result<(), RejectReason> {
        if !self.users.contains_key(&owner) {
            return Err(RejectReason::UnknownUser);
        }
        if self.servers.contains_key(&server_id) {
            return Err(RejectReason::DuplicateId);
        }
        self.check_tier(ram_mib)?;
        self.servers.insert(
            server_id,
            Server {
                owner,
                ram_mib,
                state: ServerState::Stopped,
                node: None,
                start: None,
                start_after_stop: None,
                players: 0,
                running_since: None,
                idle_since: None,
                has_world: false,
                world_archived: false,
                delete_after_stop: false,
                accrual: Accrual::default(),
                pending_command: None,
                stop_attempts: 0,
                armed_timer: None,
                queue_seq: None,
                prewarm_hold: false,
            },
        );
        self.users
            .get_mut(&owner)
            .expect("owner exists")
            .servers
            .insert(server_id);
        Ok(())
    }

    pub(super) fn check_tier(&self, ram_mib: u32) -> Result<(), RejectReason> {
        if self.config.tiers_mib.contains(&ram_mib) {
            Ok(())
        } else {
            Err(RejectReason::InvalidTier { ram_mib })
        }
    }

    pub(super) fn handle_update_tier(&mut self, server_id: ServerId, ram_mib: u32) -> Result<(), RejectReason> {
        self.check_tier(ram_mib)?;
        let server = self.servers.get(&server_id).ok_or(RejectReason::UnknownServer)?;
        match server.state {
            ServerState::Stopped | ServerState::Sleeping | ServerState::Archived => {
                self.servers.get_mut(&server_id).expect("exists").ram_mib = ram_mib;
                Ok(())
            }
            state => Err(RejectReason::wrong_state(state)),
        }
    }

    pub(super) fn handle_start(&mut self, server_id: ServerId) -> Result<(), RejectReason> {
        let server = self.servers.get(&server_id).ok_or(RejectReason::UnknownServer)?;
        let (owner, ram_mib, state) = (server.owner, server.ram_mib, server.state);
        match state {
            ServerState::Queued | ServerState::Starting | ServerState::Running => {
                if self.is_prewarm(server_id) {
                    self.record_habit(server_id);
                    self.claim_prewarm(server_id);
                }
                return Ok(());
            }
            ServerState::Stopping { .. } if server.delete_after_stop => {
                return Err(RejectReason::ServerDeleted);
            }
            ServerState::Stopping { .. } if server.start_after_stop.is_some() => return Ok(()),
            _ => {}
        }
        if self.users[&owner].balance_micros <= 0 {
            return Err(RejectReason::InsufficientBalance);
        }
        if !self.tier_placeable(ram_mib) {
            return Err(RejectReason::NoCapacityForTier { ram_mib });
        }
        if self.queue.len() >= self.config.queue.max_len as usize {
            return Err(RejectReason::QueueFull);
        }
        self.stats.starts_requested += 1;
        let now = self.now;
        self.record_habit(server_id);
        if let ServerState::Stopping { .. } = state {
            self.servers.get_mut(&server_id).expect("exists").start_after_stop = Some(now);
            return Ok(());
        }
        self.begin_start(server_id, StartRequest::new(now));
        Ok(())
    }

    pub(super) fn handle_stop(&mut self, server_id: ServerId) -> Result<(), RejectReason> {
        let server = self.servers.get_mut(&server_id).ok_or(RejectReason::UnknownServer)?;
        match server.state {
            ServerState::Queued => {
                self.end_queued_start(server_id, StartOutcome::Cancelled);
                Ok(())
            }
            ServerState::Starting | ServerState::Running => {
                self.begin_stop(server_id, StopReason::Requested);
                Ok(())
            }
            ServerState::Stopping { .. } => {
                if let Some(requested_at) = server.start_after_stop.take() {
                    self.end_start_event(server_id, requested_at, StartOutcome::Cancelled);
                }
                Ok(())
            }
            ServerState::Stopped | ServerState::Sleeping | ServerState::Archived => Ok(()),
        }
    }

    pub(super) fn handle_cancel(&mut self, server_id: ServerId) -> Result<(), RejectReason> {
        let server = self.servers.get(&server_id).ok_or(RejectReason::UnknownServer)?;
        match server.state {
            ServerState::Queued => {
                self.end_queued_start(server_id, StartOutcome::Cancelled);
                Ok(())
            }
            ServerState::Stopping { .. } if server.start_after_stop.is_some() => self.handle_stop(server_id),
            state => Err(RejectReason::wrong_state(state)),
        }
    }

    pub(super) fn handle_delete(&mut self, server_id: ServerId) -> Result<(), RejectReason> {
        let server = self.servers.get(&server_id).ok_or(RejectReason::UnknownServer)?;
        match server.state {
            ServerState::Starting | ServerState::Running => {
                self.begin_stop(server_id, StopReason::Deleted);
                self.servers.get_mut(&server_id).expect("exists").delete_after_stop = true;
            }
            ServerState::Stopping { .. } => {
                let server = self.servers.get_mut(&server_id).expect("exists");
                server.delete_after_stop = true;
                if let Some(requested_at) = server.start_after_stop.take() {
                    self.end_start_event(
                        server_id,
                        requested_at,
                        StartOutcome::Rejected {
                            reason: RejectReason::ServerDeleted,
                        },
                    );
                }
            }
            ServerState::Queued => {
                self.end_queued_start(
                    server_id,
                    StartOutcome::Rejected {
                        reason: RejectReason::ServerDeleted,
                    },
                );
                self.remove_server(server_id);
            }
            ServerState::Stopped | ServerState::Sleeping | ServerState::Archived => self.remove_server(server_id),
        }
        Ok(())
    }
}
