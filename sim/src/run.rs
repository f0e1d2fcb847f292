//! The discrete-event engine and the twin around the core: the workload drives
//! requests, a provider model answers the core's commands after modelled latencies, and
//! a recorder turns what happens into outcomes.
//!
//! Events are ordered by (time, insertion sequence), so ties break the same way on
//! every run. Each source of randomness has its own ChaCha stream derived from the
//! master seed, so changing one model does not shift the draws of another.

use std::collections::{BTreeMap, VecDeque};

use payperplay_core::{
    Command, CommandId, CommandKind, Core, CoreConfig, Email, Event, Input, LedgerKind, MICROS_PER_EUR, MS_PER_HOUR,
    MS_PER_MONTH, NodeId, ServerId, ServerState, ServerTypeIdx, StartOutcome, Timestamp, UserId,
};
use rand_chacha::ChaCha8Rng;

use crate::outcome::{self, LatencyRecorder, Outcome};
use crate::provider::{OrderError, Provider};
use crate::scenario::Scenario;
use crate::timeline::{Sample, Timeline, TimelineRecorder};
pub use crate::workload::rng_for;
use crate::workload::{Generator, Source, Stream, WorkEvent, stream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SimEvent {
    SessionEnd {
        server_idx: u32,
        players: u32,
        epoch: u32,
    },
    /// A command's result arrives; a started container then boots Minecraft.
    CommandDone {
        command_id: CommandId,
        failure: Option<OrderError>,
        /// The server to boot, or `NO_BOOT` (a plain `u32` keeps the event at 16 bytes).
        then_boot: u32,
    },
    /// A ready VM dies.
    VmLost {
        node_id: NodeId,
    },
    Booted {
        server_idx: u32,
        start_command: CommandId,
    },
    TopUp {
        user_id: UserId,
    },
}

/// `then_boot` of a command that boots nothing.
const NO_BOOT: u32 = u32::MAX;

// Queue entries move on every push and pop: keep them at 32 bytes (key 16, event 16).
const _: () = assert!(std::mem::size_of::<SimEvent>() == 16 && std::mem::size_of::<Scheduled>() == 32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scheduled {
    /// `at << 64 | seq`: (time, insertion sequence) compared as one integer.
    key: u128,
    event: SimEvent,
}

#[inline]
fn event_key(at: Timestamp, seq: u64) -> u128 {
    (at.ms() as u128) << 64 | seq as u128
}

#[inline]
fn key_at(key: u128) -> Timestamp {
    Timestamp((key >> 64) as u64)
}

/// The scheduled events, popped smallest key first (keys are unique, so in exactly one
/// order): a heap, beside FIFO lanes for events that tend to come in time order.
///
/// An event that follows its cause after a constant delay (a container start or stop,
/// with the default timings) is scheduled no earlier than the one before it of its kind.
/// Such an event goes to the back of its kind's lane when that keeps the lane sorted, and
/// into the heap otherwise: a lane's front is always its smallest key, and a pop takes
/// the smallest of the heap's top and the lanes' fronts. A lane costs a compare where
/// the heap costs a sift.
struct EventQueue {
    heap: Heap,
    lanes: [VecDeque<Scheduled>; LANES],
}

/// The kinds of events with lanes of their own.
#[derive(Debug, Clone, Copy)]
enum Lane {
    /// A container start finishing.
    ContainerStarted,
    /// A container stop finishing.
    ContainerStopped,
}

const LANES: usize = 2;

impl EventQueue {
    fn new() -> EventQueue {
        EventQueue {
            heap: Heap { entries: Vec::new() },
            lanes: Default::default(),
        }
    }

    /// Push an event; one of `lane`'s kind goes to the lane's back when that keeps the
    /// lane sorted, everything else to the heap.
    #[inline]
    fn push(&mut self, lane: Option<Lane>, entry: Scheduled) {
        if let Some(lane) = lane {
            let lane = &mut self.lanes[lane as usize];
            if lane.back().is_none_or(|back| back.key < entry.key) {
                lane.push_back(entry);
                return;
            }
        }
        self.heap.push(entry);
    }

    /// Where the smallest key is: found once per event, then taken with [`Self::take`]
    /// if it is the event to run.
    #[inline]
    fn head(&self) -> Option<Head> {
        let mut head = self.heap.entries.first().map(|e| Head { key: e.key, lane: None });
        for (i, lane) in self.lanes.iter().enumerate() {
            if let Some(front) = lane.front()
                && head.is_none_or(|head| front.key < head.key)
            {
                head = Some(Head {
                    key: front.key,
                    lane: Some(i),
                });
            }
        }
        head
    }

    /// Take the entry `head` (just returned by [`Self::head`]) points at.
    #[inline]
    fn take(&mut self, head: Head) -> Scheduled {
        let entry = match head.lane {
            None => self.heap.pop(),
            Some(lane) => self.lanes[lane].pop_front(),
        };
        entry.expect("the head of an unchanged queue")
    }
}

/// The smallest key of an [`EventQueue`] and where it is.
#[derive(Debug, Clone, Copy)]
struct Head {
    key: u128,
    /// The lane it is the front of; `None`: the heap's top.
    lane: Option<usize>,
}

/// A min-heap with four children per node.
///
/// A pop moves the last entry down from the root through the smallest child of each
/// level: with four children there are half the levels of a binary heap, at three
/// compares a level instead of one. The pending session ends keep the heap about a
/// thousand entries large, so the number of levels (each with a 32-byte move) is what a
/// pop costs (measured: about 40% fewer instructions per pop than std's binary heap).
struct Heap {
    entries: Vec<Scheduled>,
}

/// Children per node.
const ARITY: usize = 4;

impl Heap {
    #[inline]
    fn push(&mut self, entry: Scheduled) {
        self.entries.push(entry);
        let entries = self.entries.as_mut_slice();
        let mut i = entries.len() - 1;
        // Parents with larger keys move down into the hole until the entry fits.
        while i > 0 {
            let parent = (i - 1) / ARITY;
            if entries[parent].key < entry.key {
                break;
            }
            entries[i] = entries[parent];
            i = parent;
        }
        entries[i] = entry;
    }

    /// Take the entry with the smallest key.
    fn pop(&mut self) -> Option<Scheduled> {
        let last = self.entries.pop()?;
        let Some(&top) = self.entries.first() else {
            return Some(last);
        };
        let n = self.entries.len();
        let mut i = 0;
        loop {
            let first = ARITY * i + 1;
            let child = if let Some(children) = self.entries.get(first..first + ARITY) {
                // A full set of children: the smaller of each pair, then of the two.
                let a = if children[1].key < children[0].key { 1 } else { 0 };
                let b = if children[3].key < children[2].key { 3 } else { 2 };
                first + if children[b].key < children[a].key { b } else { a }
            } else if first < n {
                (first + 1..n).fold(first, |min, j| {
                    if self.entries[j].key < self.entries[min].key {
                        j
                    } else {
                        min
                    }
                })
            } else {
                break;
            };
            if last.key < self.entries[child].key {
                break;
            }
            self.entries[i] = self.entries[child];
            i = child;
        }
        self.entries[i] = last;
        Some(top)
    }
}

/// The sim's view of one server: who is playing or waiting to play.
#[derive(Debug, Clone, Default)]
struct SimServer {
    players: u32,
    /// Sessions waiting for the server to run: (players, session length, arrival).
    waiting: Vec<(u32, u64, Timestamp)>,
    /// The owner plays at a regular time (join waits are reported separately).
    regular: bool,
    /// The start in progress is the core's pre-warm, not a user's request: it is left
    /// out of the start-wait figures (the players' side is in the join waits).
    prewarm: bool,
    /// Bumped when players are kicked, so their session ends are ignored.
    epoch: u32,
    start_command: Option<CommandId>,
}

struct Vm {
    server_type: ServerTypeIdx,
    created_at: Timestamp,
    ready: bool,
}

struct Recorder {
    measure_from: Timestamp,
    slo_ms: u64,
    start_wait: LatencyRecorder,
    capacity_wait: LatencyRecorder,
    boot_wait: LatencyRecorder,
    queue_wait: LatencyRecorder,
    join_wait: LatencyRecorder,
    regular_join_wait: LatencyRecorder,
    slo_misses: u64,
    vm_losses: u64,
    servers_restarted: u64,
    sessions_interrupted: u64,
    fallbacks: u64,
    prewarm_starts: u64,
    sessions: u64,
    sessions_lost: u64,
    starts_requested: u64,
    starts_rejected: u64,
    starts_cancelled: u64,
    queue_len_max: u64,
    utilization_peak: f64,
    /// (allocated, usable) MiB of the last ratio taken into `utilization_peak`.
    utilization_seen: (u64, u64),
    cloud_peak: u64,
    revenue_ram_micros: i64,
    revenue_storage_micros: i64,
    cloud_cost_micros: u64,
    nodes_provisioned: u64,
    nodes_deleted: u64,
    nodes_lost: u64,
    cloud_node_ms: u128,
    /// Cloud cost by server type index.
    cloud_cost_by_type: Vec<u64>,
    /// The time series, and through its exact sums the run-wide time-weighted means.
    timeline: TimelineRecorder,
    /// The fleet's look since `held.from`, not yet added to the timeline: consecutive
    /// spans that look the same are added as one (most events change nothing these sums
    /// see). Integer sums, so the totals are exactly the same.
    held: Option<Held>,
}

/// A span of time over which the sums' inputs did not change.
struct Held {
    from: Timestamp,
    to: Timestamp,
    sample: Sample,
    /// What the sample was made of, as last seen: while it stays the same, so does the
    /// sample (and it is cheaper to compare than a sample is to make).
    look: Look,
}

/// The core's totals a [`Sample`] is made of, and the cloud VMs the provider bills
/// (deleting ones included). All `u64`, in order, so comparing two is a memory compare.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Look {
    allocated_mib: u64,
    queued_demand_mib: u64,
    ready_usable_mib: u64,
    provisioning_usable_mib: u64,
    queued_count: u64,
    servers_holding_ram: u64,
    n_cloud_provisioning: u64,
    n_ready_nodes: u64,
    n_cloud_nodes: u64,
    vms: u64,
}

impl Recorder {
    /// Add the held span to the timeline.
    fn flush_held(&mut self) {
        let Some(held) = self.held.take() else { return };
        self.timeline.record(held.from, held.to, &held.sample);
    }

    /// The fleet looked like `look` from `from` to `to`, and the held span does not
    /// (or ends earlier): its sample decides. The same sample grows the held span, else
    /// the held span goes to the timeline and this one is held. Kept out of line: most
    /// events leave the look alone.
    #[inline(never)]
    fn hold(&mut self, from: Timestamp, to: Timestamp, look: Look, n_dedicated: u64) {
        let ready_cloud = look.n_ready_nodes.saturating_sub(n_dedicated);
        let sample = Sample {
            demand_mib: look.allocated_mib + look.queued_demand_mib,
            allocated_mib: look.allocated_mib,
            capacity_mib: look.ready_usable_mib,
            provisioning_mib: look.provisioning_usable_mib,
            queue_len: look.queued_count,
            servers_holding_ram: look.servers_holding_ram,
            nodes_provisioning: look.n_cloud_provisioning,
            nodes_ready: look.n_ready_nodes,
            nodes_draining: look
                .n_cloud_nodes
                .saturating_sub(look.n_cloud_provisioning + ready_cloud),
            nodes_deleting: look.vms.saturating_sub(look.n_cloud_nodes),
        };
        match &mut self.held {
            // The sample is all the timeline sees: equal samples merge, whatever else moved.
            Some(held) if held.to == from && held.sample == sample => {
                held.to = to;
                held.look = look;
            }
            // Overwritten in place (taking it out and putting a new one in costs copies).
            Some(held) => {
                self.timeline.record(held.from, held.to, &held.sample);
                held.from = from;
                held.to = to;
                held.sample = sample;
                held.look = look;
            }
            None => self.held = Some(Held { from, to, sample, look }),
        }
    }
}

/// Everything a run produced: the outcome plus what the plots need.
pub struct RunResult {
    pub outcome: Outcome,
    pub timeline: Timeline,
    /// The start-wait distribution as (seconds, fraction of starts at or below).
    pub start_wait_cdf: Vec<(f64, f64)>,
    /// Every cloud VM's life, when asked for with [`Simulation::record_vms`].
    pub vms: Vec<VmLife>,
}

/// One cloud VM as the provider billed it.
#[derive(Debug, Clone, PartialEq)]
pub struct VmLife {
    pub server_type: String,
    pub created_at: Timestamp,
    /// Deletion confirmed (or the end of the run).
    pub until: Timestamp,
    pub cost_micros: u64,
}

/// A simulation in progress. `Simulation::new(..).run()` is the whole job.
pub struct Simulation {
    scenario: Scenario,
    core: Core,
    queue: EventQueue,
    seq: u64,
    now: Timestamp,
    end: Timestamp,
    servers: Vec<SimServer>,
    vms: BTreeMap<NodeId, Vm>,
    source: Source,
    /// The workload's next event with its time and sequence number: an event like the
    /// queue's, ordered with them by (time, sequence), but kept out of the queue (there is
    /// only ever one, and it saves a push and a pop per workload event).
    pending_work: Option<(Timestamp, u64, WorkEvent)>,
    provider: Provider,
    rng_provider: ChaCha8Rng,
    rng_timing: ChaCha8Rng,
    rng_faults: ChaCha8Rng,
    recorder: Recorder,
    events_processed: u64,
    n_dedicated: u64,
    core_inputs: u64,
    progress: Option<Box<dyn FnMut(Timestamp, Timestamp)>>,
    vm_log: Option<Vec<VmLife>>,
    /// The core's counters when measuring began (outcomes count what came after).
    stats_at_warmup: Option<payperplay_core::CoreStats>,
}

/// The core events the simulator does nothing with, as one pattern: `drain` does not
/// hand them to `observe` (the call costs more than the test), and `observe` lists
/// them as its no-op arm, so its match stays exhaustive and the two cannot drift apart.
macro_rules! unobserved_events {
    () => {
        Event::StartQueued { .. }
            | Event::StartPlaced { .. }
            | Event::RamReleased { .. }
            | Event::ServerArchived { .. }
            | Event::NodeRequested { .. }
            | Event::NodeDraining { .. }
            | Event::PrewarmClaimed { .. }
            | Event::StartEnded {
                outcome: StartOutcome::Running,
                ..
            }
    };
}

const FIRST_SERVER_ID: u64 = 1;

/// Core ids of the workload's dense indices.
fn server_id(server_idx: usize) -> ServerId {
    ServerId(server_idx as u64 + FIRST_SERVER_ID)
}

/// The workload's dense index of a core server id.
fn server_idx(server_id: ServerId) -> usize {
    (server_id.0 - FIRST_SERVER_ID) as usize
}

fn user_id(user: u32) -> UserId {
    UserId(user as u64 + 1)
}

impl Simulation {
    pub fn new(scenario: Scenario) -> Simulation {
        let seed = scenario.seed;
        let start = scenario.start();
        let end = start.plus_ms(scenario.duration_ms);
        let core_config: CoreConfig = scenario.core.clone();
        let mut core = Core::new(core_config);

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
        let (setup, source, n_servers) = match &scenario.trace {
            Some(trace) => (
                trace.setup.clone(),
                Source::Trace {
                    events: trace.clone(),
                    next: 0,
                },
                trace.n_servers as usize,
            ),
            None => {
                let (setup, generator) = Generator::new(&scenario);
                let n = generator.n_servers() as usize;
                (setup, Source::Generator(Box::new(generator)), n)
            }
        };
        let mut sim = Simulation {
            recorder: Recorder {
                measure_from: start.plus_ms(scenario.warmup_ms),
                slo_ms: scenario.slo_start_wait_ms,
                start_wait: LatencyRecorder::default(),
                capacity_wait: LatencyRecorder::default(),
                boot_wait: LatencyRecorder::default(),
                queue_wait: LatencyRecorder::default(),
                join_wait: LatencyRecorder::default(),
                regular_join_wait: LatencyRecorder::default(),
                slo_misses: 0,
                vm_losses: 0,
                servers_restarted: 0,
                sessions_interrupted: 0,
                fallbacks: 0,
                prewarm_starts: 0,
                sessions: 0,
                sessions_lost: 0,
                starts_requested: 0,
                starts_rejected: 0,
                starts_cancelled: 0,
                queue_len_max: 0,
                utilization_peak: 0.0,
                utilization_seen: (0, 0),
                cloud_peak: 0,
                revenue_ram_micros: 0,
                revenue_storage_micros: 0,
                cloud_cost_micros: 0,
                nodes_provisioned: 0,
                nodes_deleted: 0,
                nodes_lost: 0,
                cloud_node_ms: 0,
                cloud_cost_by_type: vec![0; scenario.core.catalog.server_types.len()],
                held: None,
                timeline: TimelineRecorder::new(
                    start.plus_ms(scenario.warmup_ms),
                    scenario.duration_ms.saturating_sub(scenario.warmup_ms),
                ),
            },
            rng_provider: stream(seed, Stream::Provider),
            rng_timing: stream(seed, Stream::ServerTiming),
            rng_faults: stream(seed, Stream::Faults),
            provider: Provider::new(&scenario),
            source,
            pending_work: None,
            scenario,
            core: {
                core.settle_all(start);
                core
            },
            queue: EventQueue::new(),
            seq: 0,
            now: start,
            end,
            servers: vec![SimServer::default(); n_servers],
            vms: BTreeMap::new(),
            events_processed: 0,
            n_dedicated: 0,
            core_inputs: 0,
            progress: None,
            vm_log: None,
            stats_at_warmup: None,
        };
        sim.n_dedicated = sim.scenario.fleet.dedicated.iter().map(|d| d.count as u64).sum();
        for input in inputs {
            sim.input(input).expect("set-up inputs are valid");
        }
        for event in setup {
            sim.work(event);
        }
        sim.schedule_next_work();
        sim
    }

    /// Called now and then with (now, end) while running.
    pub fn on_progress(&mut self, f: impl FnMut(Timestamp, Timestamp) + 'static) {
        self.progress = Some(Box::new(f));
    }

    /// Keep a record of every VM's life for [`RunResult::vms`].
    pub fn record_vms(&mut self) {
        self.vm_log = Some(Vec::new());
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    pub fn run(self) -> Outcome {
        self.run_full().outcome
    }

    /// Run to the end; return the outcome with its time series and distributions.
    pub fn run_full(mut self) -> RunResult {
        loop {
            // The core's own next deadline is an event too, taken straight from the
            // core rather than copied into the queue; on a tie it goes first.
            let queue_head = self.queue.head();
            let queue_key = queue_head.map(|head| head.key);
            let work_key = self.pending_work.as_ref().map(|&(at, seq, _)| event_key(at, seq));
            // The earlier of the queue's head and the workload's next event.
            let (event_at, from_work) = match (queue_key, work_key) {
                (Some(h), Some(w)) if w < h => (Some(key_at(w)), true),
                (Some(h), _) => (Some(key_at(h)), false),
                (None, Some(w)) => (Some(key_at(w)), true),
                (None, None) => (None, false),
            };
            let (at, core_due) = match (event_at, self.core.poll_timeout()) {
                (None, None) => break,
                (Some(h), Some(w)) if w <= h => (w, true),
                (None, Some(w)) => (w, true),
                (Some(h), _) => (h, false),
            };
            if at > self.end {
                break;
            }
            self.advance(at);
            self.events_processed += 1;
            if core_due {
                let _ = self.input(Input::Timeout);
            } else if from_work {
                let (_, _, event) = self.pending_work.take().expect("peeked");
                self.work(event);
                self.schedule_next_work();
            } else {
                let next = self.queue.take(queue_head.expect("peeked"));
                self.process(next.event);
            }
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
        self.schedule_in(None, at, event);
    }

    /// Schedule an event, in `lane` if it is of a kind with a lane of its own (the order
    /// is the same either way).
    fn schedule_in(&mut self, lane: Option<Lane>, at: Timestamp, event: SimEvent) {
        self.seq += 1;
        self.queue.push(
            lane,
            Scheduled {
                key: event_key(at, self.seq),
                event,
            },
        );
    }

    /// Move the clock to `to`: the fleet looked as it does now since the last event.
    ///
    /// Inlined for the common case, the fleet looking as it did: the held span then only
    /// grows. A new look goes through [`Recorder::hold`].
    #[inline(always)]
    fn advance(&mut self, to: Timestamp) {
        if self.stats_at_warmup.is_none() && to >= self.recorder.measure_from {
            self.stats_at_warmup = Some(self.core.stats());
        }
        let rec = &mut self.recorder;
        let from = self.now.max(rec.measure_from);
        if to > from {
            let totals = self.core.totals();
            let look = Look {
                allocated_mib: totals.allocated_mib,
                queued_demand_mib: totals.queued_demand_mib,
                ready_usable_mib: totals.ready_usable_mib,
                provisioning_usable_mib: totals.provisioning_usable_mib,
                queued_count: totals.queued_count as u64,
                servers_holding_ram: totals.servers_holding_ram as u64,
                n_cloud_provisioning: totals.n_cloud_provisioning as u64,
                n_ready_nodes: totals.n_ready_nodes as u64,
                n_cloud_nodes: totals.n_cloud_nodes as u64,
                vms: self.vms.len() as u64,
            };
            match &mut rec.held {
                Some(held) if held.to == from && held.look == look => held.to = to,
                _ => rec.hold(from, to, look, self.n_dedicated),
            }
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

    /// Carry out the core's commands, then observe its events. Neither `execute` nor
    /// `observe` calls the core, so nothing new is queued while draining: one pass over
    /// each queue takes everything, every command before any event.
    fn drain(&mut self) {
        while let Some(command) = self.core.poll_command() {
            self.execute(command);
        }
        while let Some(event) = self.core.poll_event() {
            // Most events are of kinds `observe` has nothing to do with: they are not
            // handed to it (a call there costs more than this test).
            if !matches!(event, unobserved_events!()) {
                self.observe(event);
            }
        }
        let totals = self.core.totals();
        if self.measuring() {
            let rec = &mut self.recorder;
            rec.queue_len_max = rec.queue_len_max.max(totals.queued_count as u64);
            // Most inputs leave the RAM figures alone: a ratio already measured cannot
            // raise the peak again, so it is not divided out again.
            let ram = (totals.allocated_mib, totals.ready_usable_mib);
            if ram != rec.utilization_seen {
                rec.utilization_seen = ram;
                if totals.ready_usable_mib > 0 {
                    let u = totals.allocated_mib as f64 / totals.ready_usable_mib as f64;
                    rec.utilization_peak = rec.utilization_peak.max(u);
                }
            }
            rec.cloud_peak = rec.cloud_peak.max(self.vms.len() as u64);
        }
    }

    fn process(&mut self, event: SimEvent) {
        match event {
            SimEvent::VmLost { node_id } => {
                if self.vms.get(&node_id).is_some_and(|vm| vm.ready) {
                    if self.measuring() {
                        self.recorder.vm_losses += 1;
                    }
                    let _ = self.input(Input::NodeLost { node_id });
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
                    let _ = self.input(Input::PlayerCount { server_id, players });
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
                let _ = self.input(input);
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
                        let _ = self.input(Input::PlayerCount { server_id, players });
                    }
                    let _ = self.input(Input::ServerBooted { server_id });
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

    /// Pull the workload's next event and schedule it.
    fn schedule_next_work(&mut self) {
        if let Some((at, event)) = self.source.next_event()
            && at <= self.end
        {
            // Numbered like a scheduled event, so ties break exactly as in the queue.
            self.seq += 1;
            self.pending_work = Some((at.max(self.now), self.seq, event));
        }
    }

    /// What users do.
    fn work(&mut self, event: WorkEvent) {
        match event {
            WorkEvent::RegisterUser { user } => {
                let _ = self.input(Input::RegisterUser { user_id: user_id(user) });
            }
            WorkEvent::TopUp { user, amount_micros } => {
                let _ = self.input(Input::TopUp {
                    user_id: user_id(user),
                    amount_micros,
                });
            }
            WorkEvent::CreateServer {
                server,
                owner,
                ram_mib,
                regular,
            } => {
                self.servers[server as usize].regular = regular;
                self.input(Input::CreateServer {
                    server_id: server_id(server as usize),
                    owner: user_id(owner),
                    ram_mib,
                })
                .expect("trace servers are validated against the tiers");
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
                if matches!(
                    state,
                    ServerState::Stopped | ServerState::Sleeping | ServerState::Archived | ServerState::Stopping { .. }
                ) {
                    self.request_start(server_idx);
                }
            }
            WorkEvent::StopRequested { server } => {
                let _ = self.input(Input::StopServer {
                    server_id: server_id(server as usize),
                });
            }
        }
    }

    fn request_start(&mut self, server_idx: usize) {
        if self.measuring() {
            self.recorder.starts_requested += 1;
        }
        if self
            .input(Input::StartServer {
                server_id: server_id(server_idx),
            })
            .is_err()
        {
            self.drop_waiting(server_idx);
            if self.measuring() {
                self.recorder.starts_rejected += 1;
            }
        }
    }

    fn arrival(&mut self, server_idx: usize, players: u32, length_ms: u64) {
        let measuring = self.measuring();
        if measuring {
            self.recorder.sessions += 1;
        }
        let server_id = server_id(server_idx);
        let state = self.core.server(server_id).expect("sim servers exist").state;
        match state {
            ServerState::Running => {
                let server = &mut self.servers[server_idx];
                server.players += players;
                let (total, epoch, regular) = (server.players, server.epoch, server.regular);
                if measuring {
                    self.recorder.join_wait.record(0);
                    if regular {
                        self.recorder.regular_join_wait.record(0);
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
                let _ = self.input(Input::PlayerCount {
                    server_id,
                    players: total,
                });
            }
            ServerState::Queued | ServerState::Starting => {
                self.servers[server_idx].waiting.push((players, length_ms, self.now));
            }
            ServerState::Stopped | ServerState::Sleeping | ServerState::Archived | ServerState::Stopping { .. } => {
                self.servers[server_idx].waiting.push((players, length_ms, self.now));
                self.request_start(server_idx);
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

    /// Carry out a core command after its modelled latency. Not inlined: `drain` runs
    /// once per core input and stays a small loop (inlined, its set-up cost every call).
    #[inline(never)]
    fn execute(&mut self, command: Command) {
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
        // A refused API call answers after a round trip.
        let refused = |sim: &mut Simulation, error: OrderError| {
            sim.schedule(
                sim.now.plus_ms(500),
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
                            created_at: self.now,
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

    /// The provider stops billing a VM: add its cost, Hetzner style: every started
    /// hour at the hourly price, capped at the monthly price per 730-hour month.
    fn vm_deleted(&mut self, node_id: NodeId) {
        if let Some(vm) = self.vms.remove(&node_id) {
            self.account_vm(&vm, self.now);
        }
    }

    fn account_vm(&mut self, vm: &Vm, until: Timestamp) {
        let cost = self.provider.vm_cost_micros(vm.server_type.0, vm.created_at, until);
        if let Some(log) = &mut self.vm_log {
            log.push(VmLife {
                server_type: self.scenario.core.catalog.server_types[vm.server_type.0 as usize]
                    .name
                    .clone(),
                created_at: vm.created_at,
                until,
                cost_micros: cost,
            });
        }
        // Costs of VMs that lived across the warm-up boundary count in proportion.
        let from = vm.created_at.max(self.recorder.measure_from);
        let lifetime = until.since(vm.created_at).max(1);
        let measured = until.since(from);
        let measured_cost = (cost as u128 * measured as u128 / lifetime as u128) as u64;
        self.recorder.cloud_cost_micros += measured_cost;
        self.recorder.cloud_cost_by_type[vm.server_type.0 as usize] += measured_cost;
        self.recorder.cloud_node_ms += measured as u128;
    }

    /// What the sim makes of one core event. [`Self::drain`] hands over only the kinds
    /// that do something here (the no-op arms below are for completeness).
    #[inline(never)]
    fn observe(&mut self, event: Event) {
        let measuring = self.measuring();
        match event {
            unobserved_events!() => {}
            Event::ServerRunning {
                server_id,
                requested_at,
                placed_at,
            } => {
                let server_idx = server_idx(server_id);
                let server = &mut self.servers[server_idx];
                // Taken and given back emptied: its capacity stays for the next start.
                let mut waiting = std::mem::take(&mut server.waiting);
                let (epoch, regular) = (server.epoch, server.regular);
                let prewarm = std::mem::take(&mut server.prewarm);
                let mut total = server.players;
                for &(players, length_ms, arrived) in &waiting {
                    total += players;
                    if measuring && arrived >= self.recorder.measure_from {
                        let wait = self.now.since(arrived);
                        self.recorder.join_wait.record(wait);
                        if regular {
                            self.recorder.regular_join_wait.record(wait);
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
                waiting.clear();
                let server = &mut self.servers[server_idx];
                server.players = total;
                server.waiting = waiting;
                if measuring && !prewarm && requested_at >= self.recorder.measure_from {
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
                // A start that ended without running (one that ran is unobserved).
                let server_idx = server_idx(server_id);
                self.drop_waiting(server_idx);
                if measuring && !std::mem::take(&mut self.servers[server_idx].prewarm) {
                    match outcome {
                        StartOutcome::Rejected { .. } => self.recorder.starts_rejected += 1,
                        _ => self.recorder.starts_cancelled += 1,
                    }
                }
            }
            Event::ServerStopped { server_id, reason } => {
                let server_idx = server_idx(server_id);
                let server = &mut self.servers[server_idx];
                if reason == payperplay_core::StopReason::NodeLost && measuring {
                    // The core queued it to start elsewhere: a start request of its own.
                    self.recorder.starts_requested += 1;
                    self.recorder.servers_restarted += 1;
                    self.recorder.sessions_interrupted += u64::from(server.players > 0);
                }
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
            Event::NodeReady { node_id } => {
                if let Some(vm) = self.vms.get_mut(&node_id) {
                    vm.ready = true;
                }
            }
            Event::ProvisionFallback { .. } => self.recorder.fallbacks += u64::from(measuring),
            Event::PrewarmStarted { server_id, .. } => {
                self.servers[server_idx(server_id)].prewarm = true;
                self.recorder.prewarm_starts += u64::from(measuring);
            }
        }
    }

    fn finish(mut self) -> RunResult {
        let end = self.end;
        self.recorder.flush_held();
        self.core.settle_all(end);
        self.drain();
        let vms: Vec<Vm> = std::mem::take(&mut self.vms).into_values().collect();
        for vm in &vms {
            self.account_vm(vm, end);
        }
        let rec = &self.recorder;
        let i = rec.timeline.integrals();
        let measured_ms = i.ms.max(1);
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
        let mut by_type = BTreeMap::new();
        for d in &self.scenario.fleet.dedicated {
            let micros = d.monthly_cost_micros as u128 * d.count as u128 * measured_ms as u128 / MS_PER_MONTH as u128;
            *by_type.entry(format!("dedicated {}", d.name)).or_insert(0.0) += eur(micros as i64);
        }
        for (t, &micros) in rec.cloud_cost_by_type.iter().enumerate() {
            if micros > 0 {
                let name = &self.scenario.core.catalog.server_types[t].name;
                by_type.insert(format!("cloud {name}"), eur(micros as i64));
            }
        }
        let start_wait_cdf = rec.start_wait.cdf(200);
        let stats = self.core.stats();
        let before = self.stats_at_warmup.unwrap_or_default();
        let outcome = Outcome {
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
            join_wait: rec.join_wait.percentiles(),
            regular_join_wait: rec.regular_join_wait.percentiles(),
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
                by_type,
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
                mean_pct: outcome::round3(if i.capacity_mib_ms == 0 {
                    0.0
                } else {
                    100.0 * i.allocated_mib_ms as f64 / i.capacity_mib_ms as f64
                }),
                peak_pct: outcome::round3(100.0 * rec.utilization_peak),
            },
            servers: outcome::Servers {
                total: self.servers.len() as u64,
                holding_ram_mean: outcome::round6(i.servers_holding_ram_ms as f64 / measured_ms as f64),
            },
            provider: outcome::ProviderCalls {
                orders: self.provider.stats.orders,
                sold_out: self.provider.stats.sold_out,
                rate_limited: self.provider.stats.rate_limited,
                failed: self.provider.stats.failed,
                requests: self.provider.stats.requests,
                fallbacks: rec.fallbacks,
            },
            prewarm: outcome::Prewarm {
                starts: rec.prewarm_starts,
                claimed: stats.prewarm_claimed - before.prewarm_claimed,
                platform_paid_eur: outcome::round6(
                    (stats.prewarm_platform_mib_ms - before.prewarm_platform_mib_ms) as f64
                        * self.scenario.core.billing.ram_price_micros_per_gib_hour as f64
                        / (1024.0 * MS_PER_HOUR as f64)
                        / MICROS_PER_EUR as f64,
                ),
            },
            incidents: outcome::Incidents {
                vm_losses: rec.vm_losses,
                servers_restarted: rec.servers_restarted,
                sessions_interrupted: rec.sessions_interrupted,
            },
            sim: outcome::SimCounters {
                events: self.events_processed,
                core_inputs: self.core_inputs,
            },
        };
        let timeline = std::mem::replace(&mut self.recorder.timeline, TimelineRecorder::new(end, 0)).finish();
        RunResult {
            outcome,
            timeline,
            start_wait_cdf,
            vms: self.vm_log.take().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    use rand::{Rng, SeedableRng};

    use super::*;

    /// Pushes to the heap and to both lanes (mostly at constant delays, sometimes out of
    /// order, sometimes tied in time), checked pop by pop against std's binary heap.
    #[test]
    fn the_event_queue_pops_in_key_order() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut queue = EventQueue::new();
        let mut reference = BinaryHeap::new();
        let (mut now, mut seq) = (0u64, 0u64);
        for step in 0..200_000 {
            let draining = step >= 190_000;
            if !draining && rng.random_bool(0.52) {
                seq += 1;
                let kind = rng.random_range(0..3);
                let delay = match (kind, rng.random_range(0..10)) {
                    (_, 0) => 0,
                    (0, 1) | (1, 1) | (2, _) => rng.random_range(0..60_000),
                    (0, _) => 2_000,
                    _ => 10_000,
                };
                let entry = Scheduled {
                    key: event_key(Timestamp(now + delay), seq),
                    event: SimEvent::TopUp { user_id: UserId(seq) },
                };
                reference.push(Reverse(entry.key));
                match kind {
                    0 => queue.push(Some(Lane::ContainerStarted), entry),
                    1 => queue.push(Some(Lane::ContainerStopped), entry),
                    _ => queue.push(None, entry),
                }
            } else {
                let expected = reference.pop().map(|Reverse(key)| key);
                let head = queue.head();
                assert_eq!(head.map(|head| head.key), expected);
                let popped = head.map(|head| queue.take(head));
                assert_eq!(popped.map(|e| e.key), expected);
                if let Some(entry) = popped {
                    assert_eq!(
                        entry.event,
                        SimEvent::TopUp {
                            user_id: UserId(entry.key as u64)
                        }
                    );
                    now = key_at(entry.key).ms();
                }
            }
        }
        assert!(reference.is_empty() && queue.head().is_none());
    }
}
