//! The world around the core: what users do (the workload's events), the modelled
//! servers (container start, boot and stop timings) and the provider model carrying out
//! the core's commands after their modelled latencies.
//!
//! Every input the simulator hands the core either succeeds or is rejected for a reason
//! the call site names; any other rejection is a bug and stops the run with its seed
//! ([`Simulation::unexpected_rejection`]).

use payperplay_core::{
    Command, CommandKind, Email, Input, LedgerKind, NodeId, RejectReason, Rejection, ServerState, Timestamp, VmTypeIdx,
};

use super::Simulation;
use super::ids::{server_id, server_idx, user_id};
use super::queue::{Lane, NO_BOOT, SimEvent};
use crate::provider::OrderError;
use crate::workload::WorkEvent;

/// The sim's view of one server: who is playing or waiting to play.
///
/// The core also counts a running server's players, but only as last reported to it:
/// it zeroes the count when the server stops (before the sim sees the stop, when it
/// needs the count of interrupted sessions) and is not told of sessions ending while the
/// server stops. The sim counts the sessions themselves.
#[derive(Debug, Clone, Default)]
pub(super) struct SimServer {
    pub(super) players: u32,
    /// Sessions waiting for the server to run: (players, session length, arrival).
    pub(super) waiting: Vec<(u32, u64, Timestamp)>,
    /// The owner plays at a regular time (join waits are reported separately).
    pub(super) regular: bool,
    /// The start in progress is the core's pre-warm, not a user's request: it is left
    /// out of the start-wait figures (the players' side is in the join waits).
    pub(super) prewarm: bool,
    /// Bumped when players are kicked, so their session ends are ignored.
    pub(super) epoch: u32,
    pub(super) start_command: Option<payperplay_core::CommandId>,
}

/// A cloud VM the provider bills.
pub(super) struct Vm {
    pub(super) server_type: VmTypeIdx,
    pub(super) location: u16,
    /// When creation completes (the order plus its provisioning delay): billing starts.
    pub(super) created_at: Timestamp,
    pub(super) ready: bool,
}

/// A refused provider API call answers after this round trip.
const REFUSAL_ROUND_TRIP_MS: u64 = 500;

impl Simulation {
    /// Run one scheduled event of the world.
    #[inline]
    pub(super) fn process(&mut self, event: SimEvent) {
        match event {
            SimEvent::VmLost { node_id } => {
                if self.vms.get(&node_id).is_some_and(|vm| vm.ready) {
                    if self.measuring() {
                        self.recorder.vm_losses += 1;
                    }
                    // The sim knows the VM (it is forgotten at `NodeRemoved`), so the core
                    // does too, in whatever state: a loss is never refused.
                    if let Err(rejection) = self.input(Input::NodeLost { node_id }) {
                        self.unexpected_rejection("NodeLost", &rejection);
                    }
                }
            }
            SimEvent::SessionEnd {
                server_idx,
                players,
                epoch,
            } => {
                let server = &mut self.servers[server_idx as usize];
                if server.epoch != epoch {
                    return;
                }
                server.players -= players;
                let players = server.players;
                let server_id = server_id(server_idx as usize);
                if self
                    .core
                    .server(server_id)
                    .is_some_and(|s| s.state == ServerState::Running)
                {
                    self.report_players(server_id, players);
                }
            }
            SimEvent::CommandDone {
                command_id,
                failure,
                then_boot,
            } => {
                let input = match failure {
                    None => Input::CommandSucceeded { command_id },
                    Some(error) => crate::provider::failure_input(command_id, error),
                };
                // The core acknowledges results of commands it no longer waits for, so
                // a result is never refused.
                if let Err(rejection) = self.input(input) {
                    self.unexpected_rejection("a command result", &rejection);
                }
                if let (None, Some(server_idx)) = (failure, (then_boot != NO_BOOT).then_some(then_boot)) {
                    let boot_ms = self.scenario.servers.boot_seconds.seconds_as_ms(&mut self.rng_timing);
                    self.schedule(
                        self.now.plus_ms(boot_ms),
                        SimEvent::Booted {
                            server_idx,
                            start_command: command_id,
                        },
                    );
                }
            }
            SimEvent::Booted {
                server_idx,
                start_command,
            } => {
                let server = &self.servers[server_idx as usize];
                if server.start_command == Some(start_command) {
                    let server_id = server_id(server_idx as usize);
                    // Players who waited for the boot are in as it finishes, so the
                    // server never looks idle at the moment it comes up.
                    let players = server.players + server.waiting.iter().map(|&(p, _, _)| p).sum::<u32>();
                    if players > 0 {
                        self.report_players(server_id, players);
                    }
                    // The container of this start is still the server's (a stop forgets
                    // it), so the core has the server starting: a boot is never refused.
                    if let Err(rejection) = self.input(Input::ServerBooted { server_id }) {
                        self.unexpected_rejection("ServerBooted", &rejection);
                    }
                }
            }
            SimEvent::PatienceEnd { server_idx, arrived } => self.patience_ends(server_idx as usize, arrived),
            SimEvent::TopUp { user_id } => {
                let amount_micros = self.scenario.workload.topup_micros;
                // Scheduled only for a positive amount, for a user the core warned.
                if let Err(rejection) = self.input(Input::TopUp { user_id, amount_micros }) {
                    self.unexpected_rejection("a low-balance TopUp", &rejection);
                }
            }
        }
    }

    /// Tell the core a server's player count (never refused for a known server).
    #[inline]
    fn report_players(&mut self, server_id: payperplay_core::ServerId, players: u32) {
        if let Err(rejection) = self.input(Input::PlayerCount { server_id, players }) {
            self.unexpected_rejection("PlayerCount", &rejection);
        }
    }

    /// Pull the workload's next event and hold it beside the queue.
    pub(super) fn schedule_next_work(&mut self) {
        if let Some((at, event)) = self.source.next_event()
            && at <= self.end
        {
            // Numbered like a scheduled event, so ties break exactly as in the queue.
            self.seq += 1;
            self.pending_work = Some((at.max(self.now), self.seq, event));
        }
    }

    /// What users do.
    pub(super) fn work(&mut self, event: WorkEvent) {
        match event {
            WorkEvent::RegisterUser { user } => {
                // The generator numbers users once; a trace registering one twice is
                // refused when it is read.
                if let Err(rejection) = self.input(Input::RegisterUser { user_id: user_id(user) }) {
                    self.unexpected_rejection("RegisterUser", &rejection);
                }
            }
            WorkEvent::TopUp { user, amount_micros } => {
                // Amounts are positive (generator and trace reader both check).
                let input = Input::TopUp {
                    user_id: user_id(user),
                    amount_micros,
                };
                if let Err(rejection) = self.input(input) {
                    self.unexpected_rejection("a workload TopUp", &rejection);
                }
            }
            WorkEvent::CreateServer {
                server,
                owner,
                ram_mib,
                regular,
            } => {
                self.servers[server as usize].regular = regular;
                // Tiers are validated when the scenario or trace is read.
                let input = Input::CreateServer {
                    server_id: server_id(server as usize),
                    owner: user_id(owner),
                    ram_mib,
                };
                if let Err(rejection) = self.input(input) {
                    self.unexpected_rejection("CreateServer", &rejection);
                }
            }
            WorkEvent::Session {
                server,
                players,
                length_ms,
            } => self.arrival(server as usize, players, length_ms),
            WorkEvent::StartRequested { server } => {
                let server_idx = server as usize;
                let state = self
                    .core
                    .server(server_id(server_idx))
                    .expect("sim servers exist")
                    .state;
                if state.accepts_start() {
                    self.request_start(server_idx);
                }
            }
            WorkEvent::StopRequested { server } => {
                // A stop is accepted in every state (a no-op at rest).
                let server_id = server_id(server as usize);
                if let Err(rejection) = self.input(Input::StopServer { server_id }) {
                    self.unexpected_rejection("StopServer", &rejection);
                }
            }
        }
    }

    /// Ask the core to start a server in a state that accepts a start.
    fn request_start(&mut self, server_idx: usize) {
        if self.measuring() {
            self.recorder.starts_requested += 1;
            let ram_mib = self
                .core
                .server(server_id(server_idx))
                .expect("sim servers exist")
                .ram_mib;
            if self.largest_cloud_usable_mib > 0 && ram_mib > self.largest_cloud_usable_mib {
                self.recorder.starts_unservable_by_cloud += 1;
            }
        }
        match self.input(Input::StartServer {
            server_id: server_id(server_idx),
        }) {
            Ok(()) => {}
            // What a user's start meets on a busy or broke platform: counted as a
            // rejected start, its waiting players as lost sessions.
            Err(Rejection {
                reason:
                    RejectReason::InsufficientBalance | RejectReason::QueueFull | RejectReason::NoCapacityForTier { .. },
            }) => {
                self.drop_waiting(server_idx);
                if self.measuring() {
                    self.recorder.starts_rejected += 1;
                }
            }
            Err(rejection) => self.unexpected_rejection("StartServer", &rejection),
        }
    }

    /// Players arrive at a server: they join it if it runs, else wait for its start.
    fn arrival(&mut self, server_idx: usize, players: u32, length_ms: u64) {
        let measuring = self.measuring();
        if measuring {
            self.recorder.sessions += 1;
        }
        let server_id = server_id(server_idx);
        let state = self.core.server(server_id).expect("sim servers exist").state;
        if state == ServerState::Running {
            let server = &mut self.servers[server_idx];
            server.players += players;
            let (total, epoch, regular) = (server.players, server.epoch, server.regular);
            self.begin_session(server_idx, players, length_ms, epoch, regular, measuring.then_some(0));
            self.report_players(server_id, total);
        } else {
            // Queued or starting: they wait for the start under way; else they ask for one.
            self.servers[server_idx].waiting.push((players, length_ms, self.now));
            if self.scenario.workload.patience {
                let patience_ms = self
                    .scenario
                    .workload
                    .patience_seconds
                    .seconds_as_ms(&mut self.rng_patience);
                self.schedule(
                    self.now.plus_ms(patience_ms),
                    SimEvent::PatienceEnd {
                        server_idx: server_idx as u32,
                        arrived: self.now,
                    },
                );
            }
            if state.accepts_start() {
                self.request_start(server_idx);
            }
        }
    }

    /// Players join a running server: their join wait is recorded (when measured) and
    /// their session's end scheduled.
    #[inline]
    pub(super) fn begin_session(
        &mut self,
        server_idx: usize,
        players: u32,
        length_ms: u64,
        epoch: u32,
        regular: bool,
        measured_wait_ms: Option<u64>,
    ) {
        if let Some(wait_ms) = measured_wait_ms {
            self.recorder.join_wait.record(wait_ms);
            if regular {
                self.recorder.regular_join_wait.record(wait_ms);
            }
        }
        self.schedule(
            self.now.plus_ms(length_ms),
            SimEvent::SessionEnd {
                server_idx: server_idx as u32,
                players,
                epoch,
            },
        );
    }

    /// A waiting session gives up, if it is still waiting (it is gone once the server
    /// runs or its start ended). It is counted as abandoned, with the revenue it would
    /// have brought: its server's RAM for the session's length at the RAM price (an
    /// upper bound when sessions on one server overlap). When nobody waits any more
    /// for a start that is still queued, the start is withdrawn (as a user closing the
    /// page would): a queued start nobody wants must not hold capacity or orders.
    fn patience_ends(&mut self, server_idx: usize, arrived: Timestamp) {
        let waiting = &mut self.servers[server_idx].waiting;
        let Some(i) = waiting.iter().position(|&(_, _, at)| at == arrived) else {
            return;
        };
        let (_, length_ms, _) = waiting.remove(i);
        let nobody_waits = waiting.is_empty();
        let server_id = server_id(server_idx);
        let server = self.core.server(server_id).expect("sim servers exist");
        let (state, ram_mib) = (server.state, server.ram_mib);
        if self.measuring() && arrived >= self.recorder.measure_from {
            let price = self.scenario.core.billing.ram_price_micros_per_gib_hour as u128;
            let micros = ram_mib as u128 * length_ms as u128 * price / (1024 * payperplay_core::MS_PER_HOUR as u128);
            self.recorder.sessions_abandoned += 1;
            self.recorder.abandoned_revenue_micros += micros as u64;
        }
        if nobody_waits && state == ServerState::Queued && !self.servers[server_idx].prewarm {
            if self.measuring()
                && let Some(start) = server.start.as_ref()
            {
                let (requested_at, placed_at) = (start.requested_at, start.placed_at);
                self.recorder.record_unfinished_start(requested_at, placed_at, self.now);
            }
            // A stop is accepted in every state; from the queue it withdraws the start.
            if let Err(rejection) = self.input(Input::StopServer { server_id }) {
                self.unexpected_rejection("StopServer", &rejection);
            }
        }
    }

    /// The players waiting for a server's start give up: their sessions are lost.
    pub(super) fn drop_waiting(&mut self, server_idx: usize) {
        let n = self.servers[server_idx].waiting.len() as u64;
        self.servers[server_idx].waiting.clear();
        if self.measuring() {
            self.recorder.sessions_lost += n;
        }
    }

    /// Carry out a core command after its modelled latency. Not inlined: `drain` runs
    /// once per core input and stays a small loop (inlined, its set-up cost every call).
    #[inline(never)]
    pub(super) fn execute(&mut self, command: Command) {
        let id = command.id;
        let done = |sim: &mut Simulation, lane: Option<Lane>, delay_ms: u64, then_boot: u32| {
            sim.schedule_in(
                lane,
                sim.now.plus_ms(delay_ms),
                SimEvent::CommandDone {
                    command_id: id,
                    failure: None,
                    then_boot,
                },
            );
        };
        let refused = |sim: &mut Simulation, error: OrderError| {
            sim.schedule(
                sim.now.plus_ms(REFUSAL_ROUND_TRIP_MS),
                SimEvent::CommandDone {
                    command_id: id,
                    failure: Some(error),
                    then_boot: NO_BOOT,
                },
            );
        };
        match command.kind {
            CommandKind::ProvisionNode {
                node_id,
                server_type,
                location,
            } => match self
                .provider
                .order(self.now, server_type.0, location.0, &mut self.rng_provider)
            {
                Ok(delay) => {
                    self.vms.insert(
                        node_id,
                        Vm {
                            server_type,
                            location: location.0,
                            created_at: self.now.plus_ms(delay),
                            ready: false,
                        },
                    );
                    self.recorder.nodes_provisioned += u64::from(self.measuring());
                    if let Some(life) = self.provider.loss_after(&mut self.rng_faults) {
                        let at = self.now.plus_ms(delay).plus_ms(life);
                        if at <= self.end {
                            self.schedule(at, SimEvent::VmLost { node_id });
                        }
                    }
                    done(self, None, delay, NO_BOOT);
                }
                Err(error) => refused(self, error),
            },
            CommandKind::DeleteNode { .. } => match self.provider.delete(self.now, &mut self.rng_provider) {
                Ok(delay) => done(self, None, delay, NO_BOOT),
                Err(error) => refused(self, error),
            },
            CommandKind::StartContainer { server_id, .. } => {
                let server_idx = server_idx(server_id) as u32;
                self.servers[server_idx as usize].start_command = Some(id);
                let delay = self
                    .scenario
                    .servers
                    .container_start_seconds
                    .seconds_as_ms(&mut self.rng_timing);
                done(self, Some(Lane::ContainerStarted), delay, server_idx);
            }
            CommandKind::StopContainer { server_id, .. } => {
                let server_idx = server_idx(server_id);
                self.servers[server_idx].start_command = None;
                let delay = self.scenario.servers.stop_seconds.seconds_as_ms(&mut self.rng_timing);
                done(self, Some(Lane::ContainerStopped), delay, NO_BOOT);
            }
            CommandKind::ArchiveWorld { .. } | CommandKind::DeleteWorld { .. } => {}
            CommandKind::PostLedgerEntry { entry } => {
                if self.measuring() {
                    match entry.kind {
                        LedgerKind::RamTime => self.recorder.revenue_ram_micros -= entry.amount_micros,
                        LedgerKind::Storage | LedgerKind::ArchiveStorage => {
                            self.recorder.revenue_storage_micros -= entry.amount_micros
                        }
                        LedgerKind::TopUp => {}
                    }
                }
            }
            CommandKind::SendEmail { user_id, email } => {
                let topup = self.scenario.workload.topup_micros;
                if let Email::LowBalance { .. } = email
                    && topup > 0
                {
                    let at = self.now.plus_ms(self.scenario.workload.topup_delay_ms);
                    self.schedule(at, SimEvent::TopUp { user_id });
                }
            }
        }
    }

    /// The provider stops billing a VM: its cost goes to the recorder.
    pub(super) fn vm_deleted(&mut self, node_id: NodeId) {
        if let Some(vm) = self.vms.remove(&node_id) {
            self.account_vm(&vm, self.now);
        }
    }
}
