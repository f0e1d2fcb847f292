//! Pre-warm: per-server habits (`prewarm::Habit`) and the start the core issues on
//! its own ahead of a usual play time; who pays until the first player comes.

use super::*;

impl Core {
    /// Whether the server's current start or run is a pre-warm nobody has claimed yet.
    pub(super) fn is_prewarm(&self, server_id: ServerId) -> bool {
        let server = &self.servers[&server_id];
        server.prewarm_hold || server.start.is_some_and(|s| s.prewarm)
    }

    /// Remember a demand for the server (first of the day counts) and arm its pre-warm.
    pub(super) fn record_habit(&mut self, server_id: ServerId) {
        if !self.config.prewarm.enabled {
            return;
        }
        let now = self.now;
        if !self.habits.contains_key(&server_id) {
            self.habits.insert(server_id, HabitState::default());
        }
        let state = self.habits.get_mut(&server_id).expect("inserted");
        // A later demand the same day changes nothing the habit depends on.
        if state.habit.record(now) || state.armed_timer.is_none() {
            self.arm_prewarm(server_id);
        }
    }

    pub(super) fn arm_prewarm(&mut self, server_id: ServerId) {
        let state = &self.habits[&server_id];
        let at = state.habit.next_prewarm(&self.config.prewarm, self.now);
        let slot = state.armed_timer;
        let new = self.arm_timer(slot, at, Timer::Prewarm(server_id));
        self.habits.get_mut(&server_id).expect("exists").armed_timer = new;
    }

    /// The usual time is near: start the server if it rests and its owner can pay.
    pub(super) fn fire_prewarm(&mut self, server_id: ServerId) {
        let server = &self.servers[&server_id];
        let (owner, ram_mib, state) = (server.owner, server.ram_mib, server.state);
        let rests = matches!(
            state,
            ServerState::Stopped | ServerState::Sleeping | ServerState::Archived
        );
        if rests
            && self.users[&owner].balance_micros > 0
            && self.tier_placeable(ram_mib)
            && self.queue.len() < self.config.queue.max_len as usize
        {
            self.stats.starts_requested += 1;
            self.stats.prewarm_starts += 1;
            self.events.push_back(Event::PrewarmStarted {
                server_id,
                platform_pays: self.config.prewarm.billed_to == BilledTo::Platform,
            });
            let mut request = StartRequest::new(self.now);
            request.prewarm = true;
            self.begin_start(server_id, request);
        }
        self.arm_prewarm(server_id);
    }

    /// A pre-warmed server got its first player or its owner's start request: from
    /// now on it is the owner's, billed to the owner, under the ordinary idle timer.
    pub(super) fn claim_prewarm(&mut self, server_id: ServerId) {
        self.stats.prewarm_claimed += 1;
        let server = self.servers.get_mut(&server_id).expect("exists");
        server.prewarm_hold = false;
        if let Some(start) = server.start.as_mut() {
            start.prewarm = false;
        }
        if server.accrual.kind == Some(AccrualKind::Warm) {
            self.settle(server_id);
            let now = self.now;
            let server = self.servers.get_mut(&server_id).expect("exists");
            let (owner, mib) = (server.owner, server.accrual.mib);
            server.accrual.kind = Some(AccrualKind::Ram);
            server.accrual.since = now;
            self.owner_holds_ram(owner, server_id, mib);
            self.arm_user_timer(owner);
        }
        self.events.push_back(Event::PrewarmClaimed { server_id });
        self.arm_idle_timer(server_id);
    }
}
