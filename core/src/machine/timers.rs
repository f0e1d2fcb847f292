//! Timers.
//!
//! All timers are one queue ordered by (deadline, sequence) (`TimerQueue`): timers
//! armed a fixed delay ahead of the core's clock (archive, reservation timeout, idle
//! sleep, provisioning timeout, scale tick) sit in a FIFO lane per delay, which stays
//! sorted because the clock never goes backwards; all other timers sit in a binary
//! heap; the earliest head is cached, so `poll_timeout` is O(1).
//!
//! Cancelling is lazy: an entry counts only while its owner still records that
//! (deadline, sequence) (`timer_is_live`); dead entries are skipped when they surface
//! and purged when they outnumber live ones. A head found live is not looked up again
//! until some timer dies.

use super::*;

impl Core {
    pub(super) fn fire_due_timers(&mut self) {
        while let Some((at, seq, timer)) = self.timers.peek() {
            if at > self.now {
                break;
            }
            self.timers.pop();
            if !self.timer_is_live(at, seq, timer) {
                continue;
            }
            // A node's timeout stops counting as live in `abandon_provisioning`.
            if !matches!(timer, Timer::Node(_)) {
                self.timer_died();
            }
            match timer {
                Timer::Server(server_id) => {
                    self.servers
                        .get_mut(&server_id)
                        .expect("timer's server exists")
                        .armed_timer = None;
                    self.fire_server_timer(server_id);
                }
                Timer::User(user_id) => {
                    self.users.get_mut(&user_id).expect("timer's user exists").armed_timer = None;
                    self.fire_balance_timer(user_id);
                }
                Timer::Node(node_id) => self.fire_provision_timeout(node_id),
                Timer::Prewarm(server_id) => {
                    self.habits
                        .get_mut(&server_id)
                        .expect("timer's habit exists")
                        .armed_timer = None;
                    self.fire_prewarm(server_id);
                }
                Timer::ScaleTick => {
                    self.scale_tick_at = None;
                    self.evaluate_scaling(Trigger::Tick);
                    self.retry_failed_deletes();
                    self.ensure_scale_tick();
                }
            }
        }
    }

    pub(super) fn timer_is_live(&self, at: Timestamp, seq: u64, timer: Timer) -> bool {
        let slot = Some(TimerSlot { at, seq });
        match timer {
            Timer::Server(id) => self.servers.get(&id).is_some_and(|s| s.armed_timer == slot),
            Timer::User(id) => self.users.get(&id).is_some_and(|u| u.armed_timer == slot),
            Timer::Node(id) => self.nodes.get(&id).is_some_and(|n| {
                n.state == NodeState::Provisioning
                    && n.created_at.plus_ms(self.config.lifecycle.provision_timeout_ms) == at
            }),
            Timer::ScaleTick => self.scale_tick_at == Some(at),
            Timer::Prewarm(id) => self.habits.get(&id).is_some_and(|h| h.armed_timer == slot),
        }
    }

    pub(super) fn push_timer(&mut self, at: Timestamp, timer: Timer) -> TimerSlot {
        let seq = self.next_timer_seq;
        self.next_timer_seq += 1;
        self.timers.push(self.now, at, seq, timer);
        self.timers_live += 1;
        TimerSlot { at, seq }
    }

    /// A live timer fired, was re-armed or lost its owner's interest.
    pub(super) fn timer_died(&mut self) {
        self.timers_live -= 1;
        self.head_checked = None;
    }

    /// Drop dead timers from the head (so `poll_timeout` names a live one) and purge
    /// them all when they outnumber the live ones.
    pub(super) fn tidy_timers(&mut self) {
        while let Some((at, seq, timer)) = self.timers.peek() {
            if self.head_checked == Some(seq) || self.timer_is_live(at, seq, timer) {
                self.head_checked = Some(seq);
                break;
            }
            self.timers.pop();
        }
        if self.timers.len() > 2 * self.timers_live + 1024 {
            let mut timers = std::mem::replace(&mut self.timers, TimerQueue::new([]));
            timers.retain(|at, seq, timer| self.timer_is_live(at, seq, timer));
            self.timers = timers;
        }
    }

    pub(super) fn fire_server_timer(&mut self, server_id: ServerId) {
        let server = &self.servers[&server_id];
        match server.state {
            ServerState::Starting => {
                // Reservation not confirmed in time: release it. The container may still
                // come up late, so make sure it is stopped.
                let node_id = server.node.expect("starting server has a node");
                self.pending.forget(server.pending_command);
                self.push_command(CommandKind::StopContainer {
                    server_id,
                    node_id,
                    reason: StopReason::Requested,
                });
                self.retry_start(server_id);
            }
            ServerState::Running if server.players == 0 => self.begin_stop(server_id, StopReason::Idle),
            ServerState::Sleeping => {
                self.settle(server_id);
                let server = self.servers.get_mut(&server_id).expect("exists");
                server.state = ServerState::Archived;
                server.world_archived = true;
                server.accrual.kind = Some(AccrualKind::Archive);
                self.push_command(CommandKind::ArchiveWorld { server_id });
                self.events.push_back(Event::ServerArchived { server_id });
            }
            _ => {}
        }
    }

    pub(super) fn arm_timer(
        &mut self,
        slot: Option<TimerSlot>,
        new_at: Option<Timestamp>,
        timer: Timer,
    ) -> Option<TimerSlot> {
        if slot.map(|s| s.at) == new_at {
            return slot;
        }
        if slot.is_some() {
            self.timer_died();
        }
        new_at.map(|at| self.push_timer(at, timer))
    }

    pub(super) fn arm_server_timer(&mut self, server_id: ServerId, at: Option<Timestamp>) {
        let slot = self.servers[&server_id].armed_timer;
        let new = self.arm_timer(slot, at, Timer::Server(server_id));
        self.servers.get_mut(&server_id).expect("exists").armed_timer = new;
    }

    pub(super) fn arm_idle_timer(&mut self, server_id: ServerId) {
        let server = &self.servers[&server_id];
        let at = match (server.state, server.idle_since) {
            (ServerState::Running, Some(idle_since)) => {
                let lifecycle = &self.config.lifecycle;
                let running_since = server.running_since.expect("running");
                let hold_ms = if server.prewarm_hold {
                    self.config.prewarm.hold_ms
                } else {
                    0
                };
                Some(
                    idle_since
                        .plus_ms(lifecycle.idle_sleep_after_ms)
                        .max(running_since.plus_ms(lifecycle.min_run_ms))
                        .max(running_since.plus_ms(hold_ms)),
                )
            }
            _ => None,
        };
        self.arm_server_timer(server_id, at);
    }

    pub(super) fn ensure_scale_tick(&mut self) {
        if self.scale_tick_at.is_some() {
            return;
        }
        if let Some(every_ms) = self.config.policy.evaluate_every_ms() {
            let at = self.now.plus_ms(every_ms);
            self.scale_tick_at = Some(at);
            self.push_timer(at, Timer::ScaleTick);
        }
    }
}
