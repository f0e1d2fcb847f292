//! The discrete-event engine and the twin around the core: the workload drives
//! requests, a provider model answers the core's commands after modelled latencies, and
//! a recorder turns what happens into outcomes.
//!
//! Events are ordered by (time, insertion sequence), so ties break the same way on
//! every run. Each source of randomness has its own ChaCha stream derived from the
//! master seed, so changing one model does not shift the draws of another.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use payperplay_core::{
    Command, CommandId, CommandKind, Core, CoreConfig, Email, Event, Input, LedgerKind, MICROS_PER_EUR, MS_PER_HOUR,
    MS_PER_MINUTE, MS_PER_MONTH, NodeId, ServerId, ServerState, ServerTypeIdx, StartOutcome, Timestamp, UserId,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::outcome::{self, LatencyRecorder, Outcome};
use crate::scenario::{Scenario, Workload};

/// Independent random streams, each derived from the master seed.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
enum Stream {
    Arrivals = 1,
    ServerChoice = 2,
    SessionLength = 3,
    Players = 4,
    Tiers = 5,
    Provider = 6,
    ServerTiming = 7,
}

pub fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

fn stream(seed: u64, s: Stream) -> ChaCha8Rng {
    rng_for(seed, s as u64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SimEvent {
    NextArrival,
    SessionEnd {
        server_idx: u32,
        players: u32,
        epoch: u32,
    },
    /// A command's result arrives; a started container then boots Minecraft.
    CommandDone {
        command_id: CommandId,
        ok: bool,
        then_boot: Option<u32>,
    },
    Booted {
        server_idx: u32,
        start_command: CommandId,
    },
    CoreWake,
    TopUp {
        user_id: UserId,
    },
}

#[derive(Debug, PartialEq, Eq)]
struct Scheduled {
    at: Timestamp,
    seq: u64,
    event: SimEvent,
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The sim's view of one server: who is playing or waiting to play.
#[derive(Debug, Clone, Default)]
struct SimServer {
    players: u32,
    /// Sessions waiting for the server to run: (players, session length).
    waiting: Vec<(u32, u64)>,
    /// Bumped when players are kicked, so their session ends are ignored.
    epoch: u32,
    start_command: Option<CommandId>,
}

struct Vm {
    server_type: ServerTypeIdx,
    created_at: Timestamp,
}

/// Running sums of time-weighted quantities.
#[derive(Default)]
struct Integrals {
    queue_len_ms: u128,
    allocated_mib_ms: u128,
    usable_mib_ms: u128,
    holding_ms: u128,
    cloud_nodes_ms: u128,
    measured_ms: u64,
}

struct Recorder {
    measure_from: Timestamp,
    slo_ms: u64,
    start_wait: LatencyRecorder,
    capacity_wait: LatencyRecorder,
    boot_wait: LatencyRecorder,
    queue_wait: LatencyRecorder,
    slo_misses: u64,
    sessions: u64,
    sessions_lost: u64,
    starts_requested: u64,
    starts_rejected: u64,
    starts_cancelled: u64,
    queue_len_max: u64,
    utilization_peak: f64,
    cloud_peak: u64,
    revenue_ram_micros: i64,
    revenue_storage_micros: i64,
    cloud_cost_micros: u64,
    nodes_provisioned: u64,
    nodes_deleted: u64,
    nodes_lost: u64,
    cloud_node_ms: u128,
    integrals: Integrals,
}

/// A simulation in progress. `Simulation::new(..).run()` is the whole job.
pub struct Simulation {
    scenario: Scenario,
    core: Core,
    heap: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    now: Timestamp,
    end: Timestamp,
    wake_at: Option<Timestamp>,
    servers: Vec<SimServer>,
    vms: BTreeMap<NodeId, Vm>,
    rng_arrivals: ChaCha8Rng,
    rng_choice: ChaCha8Rng,
    rng_length: ChaCha8Rng,
    rng_players: ChaCha8Rng,
    rng_provider: ChaCha8Rng,
    rng_timing: ChaCha8Rng,
    arrival_rate_max_per_ms: f64,
    recorder: Recorder,
    events_processed: u64,
    core_inputs: u64,
    progress: Option<Box<dyn FnMut(Timestamp, Timestamp)>>,
}

fn first_server_id() -> u64 {
    1
}

impl Simulation {
    pub fn new(scenario: Scenario) -> Simulation {
        let seed = scenario.seed;
        let start = scenario.start();
        let end = start.plus_ms(scenario.duration_ms);
        let core_config: CoreConfig = scenario.core.clone();
        let mut core = Core::new(core_config);
        let g = &scenario.workload;

        let mut inputs = Vec::new();
        for spec in &scenario.fleet.dedicated {
            for i in 0..spec.count {
                let name = if spec.count == 1 {
                    spec.name.clone()
                } else {
                    format!("{}-{}", spec.name, i + 1)
                };
                inputs.push(Input::AddDedicatedNode {
                    name,
                    capacity_mib: spec.ram_mib,
                    monthly_cost_micros: spec.monthly_cost_micros,
                    is_system: spec.is_system,
                });
            }
        }
        let mut rng_tiers = stream(seed, Stream::Tiers);
        let total_weight: f64 = g.tiers.iter().map(|t| t.weight).sum();
        let mut n_servers_created = 0usize;
        for u in 0..g.users {
            let user_id = UserId(u as u64 + 1);
            inputs.push(Input::RegisterUser { user_id });
            if g.initial_balance_micros > 0 {
                inputs.push(Input::TopUp {
                    user_id,
                    amount_micros: g.initial_balance_micros,
                });
            }
            for _ in 0..g.servers_per_user {
                let mut pick = rng_tiers.random::<f64>() * total_weight;
                let tier = g
                    .tiers
                    .iter()
                    .find(|t| {
                        pick -= t.weight;
                        pick < 0.0
                    })
                    .unwrap_or(g.tiers.last().expect("validated: tiers not empty"));
                let server_id = ServerId(first_server_id() + n_servers_created as u64);
                n_servers_created += 1;
                inputs.push(Input::CreateServer {
                    server_id,
                    owner: user_id,
                    ram_mib: tier.gb * 1024,
                });
            }
        }
        let arrival_rate_max_per_ms = g.sessions_per_hour
            * g.daily_profile.iter().cloned().fold(0.0, f64::max)
            * g.weekly_profile.iter().cloned().fold(0.0, f64::max)
            / MS_PER_HOUR as f64;
        let n_servers = n_servers_created;
        let mut sim = Simulation {
            recorder: Recorder {
                measure_from: start.plus_ms(scenario.warmup_ms),
                slo_ms: scenario.slo_start_wait_ms,
                start_wait: LatencyRecorder::default(),
                capacity_wait: LatencyRecorder::default(),
                boot_wait: LatencyRecorder::default(),
                queue_wait: LatencyRecorder::default(),
                slo_misses: 0,
                sessions: 0,
                sessions_lost: 0,
                starts_requested: 0,
                starts_rejected: 0,
                starts_cancelled: 0,
                queue_len_max: 0,
                utilization_peak: 0.0,
                cloud_peak: 0,
                revenue_ram_micros: 0,
                revenue_storage_micros: 0,
                cloud_cost_micros: 0,
                nodes_provisioned: 0,
                nodes_deleted: 0,
                nodes_lost: 0,
                cloud_node_ms: 0,
                integrals: Integrals::default(),
            },
            rng_arrivals: stream(seed, Stream::Arrivals),
            rng_choice: stream(seed, Stream::ServerChoice),
            rng_length: stream(seed, Stream::SessionLength),
            rng_players: stream(seed, Stream::Players),
            rng_provider: stream(seed, Stream::Provider),
            rng_timing: stream(seed, Stream::ServerTiming),
            scenario,
            core: {
                core.settle_all(start);
                core
            },
            heap: BinaryHeap::new(),
            seq: 0,
            now: start,
            end,
            wake_at: None,
            servers: vec![SimServer::default(); n_servers],
            vms: BTreeMap::new(),
            arrival_rate_max_per_ms,
            events_processed: 0,
            core_inputs: 0,
            progress: None,
        };
        for input in inputs {
            sim.input(input).expect("set-up inputs are valid");
        }
        sim.schedule_next_arrival();
        sim
    }

    /// Called now and then with (now, end) while running.
    pub fn on_progress(&mut self, f: impl FnMut(Timestamp, Timestamp) + 'static) {
        self.progress = Some(Box::new(f));
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    pub fn run(mut self) -> Outcome {
        while let Some(Reverse(next)) = self.heap.pop() {
            if next.at > self.end {
                break;
            }
            self.advance(next.at);
            self.events_processed += 1;
            self.process(next.event);
            if self.events_processed & 0xFFFF == 0
                && let Some(progress) = self.progress.as_mut()
            {
                progress(self.now, self.end);
            }
        }
        self.advance(self.end);
        self.finish()
    }

    // ------------------------------------------------------------------ engine

    fn schedule(&mut self, at: Timestamp, event: SimEvent) {
        self.seq += 1;
        self.heap.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            event,
        }));
    }

    fn advance(&mut self, to: Timestamp) {
        let rec = &mut self.recorder;
        let from = self.now.max(rec.measure_from);
        if to > from {
            let dt = to.since(from) as u128;
            let totals = self.core.totals();
            let i = &mut rec.integrals;
            i.queue_len_ms += totals.queued_count as u128 * dt;
            i.allocated_mib_ms += totals.allocated_mib as u128 * dt;
            i.usable_mib_ms += totals.ready_usable_mib as u128 * dt;
            i.holding_ms += totals.servers_holding_ram as u128 * dt;
            i.cloud_nodes_ms += self.vms.len() as u128 * dt;
            i.measured_ms += dt as u64;
        }
        self.now = to;
    }

    fn measuring(&self) -> bool {
        self.now >= self.recorder.measure_from
    }

    /// Hand one input to the core, then drain its commands and events.
    fn input(&mut self, input: Input) -> Result<(), payperplay_core::Rejection> {
        self.core_inputs += 1;
        let result = self.core.handle(self.now, input);
        self.drain();
        result
    }

    fn drain(&mut self) {
        loop {
            if let Some(command) = self.core.poll_command() {
                self.execute(command);
                continue;
            }
            if let Some(event) = self.core.poll_event() {
                self.observe(event);
                continue;
            }
            break;
        }
        let totals = self.core.totals();
        if self.measuring() {
            let rec = &mut self.recorder;
            rec.queue_len_max = rec.queue_len_max.max(totals.queued_count as u64);
            if totals.ready_usable_mib > 0 {
                let u = totals.allocated_mib as f64 / totals.ready_usable_mib as f64;
                rec.utilization_peak = rec.utilization_peak.max(u);
            }
            rec.cloud_peak = rec.cloud_peak.max(self.vms.len() as u64);
        }
        if let Some(at) = self.core.poll_timeout()
            && self.wake_at.is_none_or(|w| at < w)
        {
            self.wake_at = Some(at);
            self.schedule(at, SimEvent::CoreWake);
        }
    }

    fn process(&mut self, event: SimEvent) {
        match event {
            SimEvent::NextArrival => {
                self.arrival();
                self.schedule_next_arrival();
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
                let server_id = ServerId(server_idx as u64 + first_server_id());
                if self
                    .core
                    .server(server_id)
                    .is_some_and(|s| s.state == ServerState::Running)
                {
                    let _ = self.input(Input::PlayerCount { server_id, players });
                }
            }
            SimEvent::CommandDone {
                command_id,
                ok,
                then_boot,
            } => {
                let input = if ok {
                    Input::CommandSucceeded { command_id }
                } else {
                    Input::CommandFailed {
                        command_id,
                        reason: "simulated failure".to_string(),
                        kind: payperplay_core::FailureKind::Other,
                    }
                };
                let _ = self.input(input);
                if let (true, Some(server_idx)) = (ok, then_boot) {
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
                    let server_id = ServerId(server_idx as u64 + first_server_id());
                    // Players who waited for the boot are in as it finishes, so the
                    // server never looks idle at the moment it comes up.
                    let players = server.players + server.waiting.iter().map(|&(p, _)| p).sum::<u32>();
                    if players > 0 {
                        let _ = self.input(Input::PlayerCount { server_id, players });
                    }
                    let _ = self.input(Input::ServerBooted { server_id });
                }
            }
            SimEvent::CoreWake => {
                if self.wake_at == Some(self.now) {
                    self.wake_at = None;
                    let _ = self.input(Input::Timeout);
                }
            }
            SimEvent::TopUp { user_id } => {
                let g = &self.scenario.workload;
                let amount_micros = g.topup_micros;
                let _ = self.input(Input::TopUp { user_id, amount_micros });
            }
        }
    }

    // ------------------------------------------------------------------ workload

    fn generator(&self) -> &Workload {
        &self.scenario.workload
    }

    /// Non-homogeneous Poisson arrivals by thinning against the profile's peak rate.
    fn schedule_next_arrival(&mut self) {
        let mut t = self.now;
        loop {
            let u: f64 = self.rng_arrivals.random();
            let gap_ms = (-(1.0 - u).ln() / self.arrival_rate_max_per_ms).max(0.0);
            t = t.plus_ms(gap_ms.round() as u64);
            if t > self.end {
                return;
            }
            let accept: f64 = self.rng_arrivals.random();
            if accept * self.arrival_rate_max_per_ms <= self.rate_at(t) {
                self.schedule(t, SimEvent::NextArrival);
                return;
            }
        }
    }

    fn rate_at(&self, t: Timestamp) -> f64 {
        let g = self.generator();
        let hour = (t.ms() / MS_PER_HOUR) % 24;
        // 1970-01-01 was a Thursday: day 0 is index 3 (Monday first).
        let weekday = (t.ms() / (24 * MS_PER_HOUR) + 3) % 7;
        g.sessions_per_hour * g.daily_profile[hour as usize] * g.weekly_profile[weekday as usize] / MS_PER_HOUR as f64
    }

    fn arrival(&mut self) {
        let n = self.servers.len();
        let server_idx = self.rng_choice.random_range(0..n);
        let g = self.generator();
        let (length_dist, players_dist) = (g.session_minutes.clone(), g.players.clone());
        let length_ms = length_dist.sample_ms(&mut self.rng_length, MS_PER_MINUTE as f64);
        let players = (players_dist.sample(&mut self.rng_players).round() as u32).max(1);
        if self.measuring() {
            self.recorder.sessions += 1;
        }
        let server_id = ServerId(server_idx as u64 + first_server_id());
        let state = self.core.server(server_id).expect("sim servers exist").state;
        match state {
            ServerState::Running => {
                let server = &mut self.servers[server_idx];
                server.players += players;
                let (total, epoch) = (server.players, server.epoch);
                self.schedule(
                    self.now.plus_ms(length_ms),
                    SimEvent::SessionEnd {
                        server_idx: server_idx as u32,
                        players,
                        epoch,
                    },
                );
                let _ = self.input(Input::PlayerCount {
                    server_id,
                    players: total,
                });
            }
            ServerState::Queued | ServerState::Starting => {
                self.servers[server_idx].waiting.push((players, length_ms));
            }
            ServerState::Stopped | ServerState::Sleeping | ServerState::Archived | ServerState::Stopping { .. } => {
                self.servers[server_idx].waiting.push((players, length_ms));
                if self.measuring() {
                    self.recorder.starts_requested += 1;
                }
                if self.input(Input::StartServer { server_id }).is_err() {
                    self.drop_waiting(server_idx);
                    if self.measuring() {
                        self.recorder.starts_rejected += 1;
                    }
                }
            }
        }
    }

    fn drop_waiting(&mut self, server_idx: usize) {
        let n = self.servers[server_idx].waiting.len() as u64;
        self.servers[server_idx].waiting.clear();
        if self.measuring() {
            self.recorder.sessions_lost += n;
        }
    }

    // ------------------------------------------------------------------ provider and servers

    /// Carry out a core command after its modelled latency.
    fn execute(&mut self, command: Command) {
        let id = command.id;
        let done = |sim: &mut Simulation, delay_ms: u64, then_boot: Option<u32>| {
            sim.schedule(
                sim.now.plus_ms(delay_ms),
                SimEvent::CommandDone {
                    command_id: id,
                    ok: true,
                    then_boot,
                },
            );
        };
        match command.kind {
            CommandKind::ProvisionNode {
                node_id, server_type, ..
            } => {
                self.vms.insert(
                    node_id,
                    Vm {
                        server_type,
                        created_at: self.now,
                    },
                );
                self.recorder.nodes_provisioned += u64::from(self.measuring());
                let delay = self
                    .scenario
                    .fleet
                    .cloud
                    .provisioning_seconds
                    .seconds_as_ms(&mut self.rng_provider);
                done(self, delay, None);
            }
            CommandKind::DeleteNode { .. } => {
                let delay = self
                    .scenario
                    .fleet
                    .cloud
                    .deletion_seconds
                    .seconds_as_ms(&mut self.rng_provider);
                done(self, delay, None);
            }
            CommandKind::StartContainer { server_id, .. } => {
                let server_idx = (server_id.0 - first_server_id()) as u32;
                self.servers[server_idx as usize].start_command = Some(id);
                let delay = self
                    .scenario
                    .servers
                    .container_start_seconds
                    .seconds_as_ms(&mut self.rng_timing);
                done(self, delay, Some(server_idx));
            }
            CommandKind::StopContainer { server_id, .. } => {
                let server_idx = (server_id.0 - first_server_id()) as usize;
                self.servers[server_idx].start_command = None;
                let delay = self.scenario.servers.stop_seconds.seconds_as_ms(&mut self.rng_timing);
                done(self, delay, None);
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
                let topup = self.generator().topup_micros;
                if let Email::LowBalance { .. } = email
                    && topup > 0
                {
                    let at = self.now.plus_ms(self.generator().topup_delay_ms);
                    self.schedule(at, SimEvent::TopUp { user_id });
                }
            }
        }
    }

    /// The provider stops billing a VM: add its cost, Hetzner style: every started
    /// hour at the hourly price, capped at the monthly price per 730-hour month.
    fn vm_deleted(&mut self, node_id: NodeId) {
        if let Some(vm) = self.vms.remove(&node_id) {
            self.account_vm(&vm, self.now);
        }
    }

    fn account_vm(&mut self, vm: &Vm, until: Timestamp) {
        let server_type = &self.scenario.core.catalog.server_types[vm.server_type.0 as usize];
        let cost = vm_cost_micros(
            server_type.price_micros_per_hour,
            server_type.monthly_cap_micros,
            until.since(vm.created_at),
        );
        // Costs of VMs that lived across the warm-up boundary count in proportion.
        let from = vm.created_at.max(self.recorder.measure_from);
        let lifetime = until.since(vm.created_at).max(1);
        let measured = until.since(from);
        self.recorder.cloud_cost_micros += (cost as u128 * measured as u128 / lifetime as u128) as u64;
        self.recorder.cloud_node_ms += measured as u128;
    }

    fn observe(&mut self, event: Event) {
        let measuring = self.measuring();
        match event {
            Event::ServerRunning {
                server_id,
                requested_at,
                placed_at,
            } => {
                let server_idx = (server_id.0 - first_server_id()) as usize;
                let server = &mut self.servers[server_idx];
                let waiting = std::mem::take(&mut server.waiting);
                let epoch = server.epoch;
                let mut total = server.players;
                for &(players, length_ms) in &waiting {
                    total += players;
                    self.schedule(
                        self.now.plus_ms(length_ms),
                        SimEvent::SessionEnd {
                            server_idx: server_idx as u32,
                            players,
                            epoch,
                        },
                    );
                }
                self.servers[server_idx].players = total;
                if measuring && requested_at >= self.recorder.measure_from {
                    let rec = &mut self.recorder;
                    let wait = self.now.since(requested_at);
                    let capacity = placed_at.since(requested_at);
                    rec.start_wait.record(wait);
                    rec.capacity_wait.record(capacity);
                    rec.boot_wait.record(self.now.since(placed_at));
                    if capacity > 0 {
                        rec.queue_wait.record(capacity);
                    }
                    if wait > rec.slo_ms {
                        rec.slo_misses += 1;
                    }
                }
            }
            Event::StartEnded { server_id, outcome, .. } => {
                if !matches!(outcome, StartOutcome::Running) {
                    let server_idx = (server_id.0 - first_server_id()) as usize;
                    self.drop_waiting(server_idx);
                    if measuring {
                        match outcome {
                            StartOutcome::Rejected { .. } => self.recorder.starts_rejected += 1,
                            _ => self.recorder.starts_cancelled += 1,
                        }
                    }
                }
            }
            Event::ServerStopped { server_id, .. } => {
                let server_idx = (server_id.0 - first_server_id()) as usize;
                let server = &mut self.servers[server_idx];
                server.epoch = server.epoch.wrapping_add(1);
                server.players = 0;
            }
            Event::NodeRemoved { node_id, reason } => {
                if self.vms.contains_key(&node_id) {
                    self.vm_deleted(node_id);
                    if measuring {
                        match reason {
                            payperplay_core::NodeRemoval::Lost => self.recorder.nodes_lost += 1,
                            _ => self.recorder.nodes_deleted += 1,
                        }
                    }
                }
            }
            Event::StartQueued { .. }
            | Event::StartPlaced { .. }
            | Event::RamReleased { .. }
            | Event::ServerArchived { .. }
            | Event::NodeRequested { .. }
            | Event::NodeReady { .. }
            | Event::NodeDraining { .. }
            | Event::ProvisionFallback { .. }
            | Event::PrewarmStarted { .. }
            | Event::PrewarmClaimed { .. } => {}
        }
    }

    fn finish(mut self) -> Outcome {
        let end = self.end;
        self.core.settle_all(end);
        self.drain();
        let vms: Vec<Vm> = std::mem::take(&mut self.vms).into_values().collect();
        for vm in &vms {
            self.account_vm(vm, end);
        }
        let rec = &self.recorder;
        let measured_ms = rec.integrals.measured_ms.max(1);
        let hours = measured_ms as f64 / MS_PER_HOUR as f64;
        let eur = |micros: i64| outcome::round6(micros as f64 / MICROS_PER_EUR as f64);
        let dedicated_micros: u128 = self
            .scenario
            .fleet
            .dedicated
            .iter()
            .map(|d| d.monthly_cost_micros as u128 * d.count as u128 * measured_ms as u128 / MS_PER_MONTH as u128)
            .sum();
        let n_dedicated: u64 = self.scenario.fleet.dedicated.iter().map(|d| d.count as u64).sum();
        let cost_dedicated = eur(dedicated_micros as i64);
        let cost_cloud = eur(rec.cloud_cost_micros as i64);
        let revenue_ram = eur(rec.revenue_ram_micros);
        let revenue_storage = eur(rec.revenue_storage_micros);
        let pending_at_end = self.core.queue_len() as u64
            + self
                .core
                .servers()
                .filter(|(_, s)| s.state == ServerState::Starting)
                .count() as u64;
        let starts_running = rec.start_wait.count();
        let i = &rec.integrals;
        Outcome {
            scenario: self.scenario.name.clone(),
            seed: self.scenario.seed,
            simulated_hours: outcome::round3(hours),
            sessions: outcome::Sessions {
                total: rec.sessions,
                lost: rec.sessions_lost,
            },
            starts: outcome::Starts {
                requested: rec.starts_requested,
                running: starts_running,
                rejected: rec.starts_rejected,
                cancelled: rec.starts_cancelled,
                pending_at_end,
            },
            start_wait: rec.start_wait.percentiles(),
            capacity_wait: rec.capacity_wait.percentiles(),
            boot_wait: rec.boot_wait.percentiles(),
            queue_wait: rec.queue_wait.percentiles(),
            queue: outcome::Queue {
                requests_queued: rec.queue_wait.count(),
                queued_pct: outcome::round3(100.0 * rec.queue_wait.count() as f64 / starts_running.max(1) as f64),
                length_mean: outcome::round6(i.queue_len_ms as f64 / measured_ms as f64),
                length_max: rec.queue_len_max,
            },
            slo: outcome::Slo {
                threshold_s: rec.slo_ms as f64 / 1000.0,
                misses: rec.slo_misses,
                miss_pct: outcome::round3(100.0 * rec.slo_misses as f64 / starts_running.max(1) as f64),
            },
            cost: outcome::Cost {
                dedicated_eur: cost_dedicated,
                cloud_eur: cost_cloud,
                total_eur: outcome::round6(cost_dedicated + cost_cloud),
            },
            revenue: outcome::Revenue {
                ram_eur: revenue_ram,
                storage_eur: revenue_storage,
                total_eur: outcome::round6(revenue_ram + revenue_storage),
            },
            margin_eur: outcome::round6(revenue_ram + revenue_storage - cost_dedicated - cost_cloud),
            nodes: outcome::Nodes {
                provisioned: rec.nodes_provisioned,
                deleted: rec.nodes_deleted,
                lost: rec.nodes_lost,
                cloud_peak: rec.cloud_peak,
                cloud_node_hours: outcome::round3(rec.cloud_node_ms as f64 / MS_PER_HOUR as f64),
                dedicated_node_hours: outcome::round3(n_dedicated as f64 * hours),
            },
            utilization: outcome::Utilization {
                mean_pct: outcome::round3(if i.usable_mib_ms == 0 {
                    0.0
                } else {
                    100.0 * i.allocated_mib_ms as f64 / i.usable_mib_ms as f64
                }),
                peak_pct: outcome::round3(100.0 * rec.utilization_peak),
            },
            servers: outcome::Servers {
                total: self.servers.len() as u64,
                holding_ram_mean: outcome::round6(i.holding_ms as f64 / measured_ms as f64),
            },
            sim: outcome::SimCounters {
                events: self.events_processed,
                core_inputs: self.core_inputs,
            },
        }
    }
}

/// Hetzner's rule: every started hour at the hourly price, at most the monthly cap per
/// 730-hour month.
pub fn vm_cost_micros(price_micros_per_hour: u64, monthly_cap_micros: u64, lifetime_ms: u64) -> u64 {
    let full_months = lifetime_ms / MS_PER_MONTH;
    let rest_ms = lifetime_ms % MS_PER_MONTH;
    let started_hours = rest_ms.div_ceil(MS_PER_HOUR);
    let rest = (started_hours * price_micros_per_hour).min(monthly_cap_micros);
    let rest = if lifetime_ms == 0 {
        price_micros_per_hour.min(monthly_cap_micros)
    } else {
        rest
    };
    full_months * monthly_cap_micros + rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vms_bill_every_started_hour_up_to_the_monthly_cap() {
        let (hourly, cap) = (20_000, 12_000_000);
        assert_eq!(vm_cost_micros(hourly, cap, 1), 20_000);
        assert_eq!(vm_cost_micros(hourly, cap, MS_PER_HOUR), 20_000);
        assert_eq!(vm_cost_micros(hourly, cap, MS_PER_HOUR + 1), 40_000);
        assert_eq!(vm_cost_micros(hourly, cap, 700 * MS_PER_HOUR), 12_000_000);
        assert_eq!(vm_cost_micros(hourly, cap, MS_PER_MONTH + MS_PER_HOUR), 12_020_000);
    }
}
