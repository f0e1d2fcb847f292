//! The discrete-event engine and the twin around the core: the workload drives
//! requests, a provider model answers the core's commands after modelled latencies, and
//! a recorder turns what happens into outcomes.
//!
//! This file is the loop: [`Simulation::run_full`] takes the earliest of the event
//! queue's head ([`queue`]), the workload's next event and the core's next deadline,
//! advances the clock (feeding the timeline through [`compress`]), and hands the event
//! to the world ([`world`]: users, servers, the provider) or the core. After every core
//! input the core's commands go to the world and its events to the recorder
//! ([`recorder`]), which at the end produces the outcome.
//!
//! Events are ordered by (time, insertion sequence), so ties break the same way on
//! every run. Each source of randomness has its own ChaCha stream derived from the
//! master seed, so changing one model does not shift the draws of another.

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

mod compress;
mod ids;
mod queue;
mod recorder;
mod world;

use std::collections::BTreeMap;

use payperplay_core::{Core, CoreConfig, Event, Input, NodeId, Rejection, StartOutcome, Timestamp};
use rand_chacha::ChaCha8Rng;

use self::compress::FleetFigures;
use self::queue::{EventQueue, Lane, Scheduled, SimEvent, event_key, key_at};
use self::recorder::Recorder;
pub use self::recorder::{IssuedCommand, RunResult, VmLife};
use self::world::{SimServer, Vm};
use crate::outcome::Outcome;
use crate::provider::Provider;
use crate::scenario::Scenario;
pub use crate::workload::rng_for;
use crate::workload::{Generator, Source, Stream, WorkEvent, stream};

/// How often (in events) the progress callback is called, as a mask.
const PROGRESS_EVERY_EVENTS_MASK: u64 = 0xFFFF;

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
    rng_patience: ChaCha8Rng,
    /// Starts of a tier larger than this are ones no cloud VM type can hold (0: the
    /// fleet does not autoscale, nothing is counted).
    largest_cloud_usable_mib: u32,
    recorder: Recorder,
    events_processed: u64,
    n_dedicated: u64,
    core_inputs: u64,
    progress: Option<Box<dyn FnMut(Timestamp, Timestamp)>>,
    vm_log: Option<Vec<VmLife>>,
    /// Every command the core issued, when asked for ([`Self::record_commands`]).
    command_log: Option<Vec<IssuedCommand>>,
    /// The core's counters when measuring began (outcomes count what came after).
    stats_at_warmup: Option<payperplay_core::CoreStats>,
}

impl Simulation {
    pub fn new(scenario: Scenario) -> Simulation {
        let seed = scenario.seed;
        let start = scenario.start();
        let end = start.plus_ms(scenario.duration_ms);
        let core_config: CoreConfig = scenario.core.clone();
        let mut core = Core::new(core_config);
        core.settle_all(start);

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
            recorder: Recorder::new(&scenario),
            rng_provider: stream(seed, Stream::Provider),
            rng_timing: stream(seed, Stream::ServerTiming),
            rng_faults: stream(seed, Stream::Faults),
            rng_patience: stream(seed, Stream::Patience),
            largest_cloud_usable_mib: if scenario.core.policy.autoscales() {
                payperplay_core::policy::type_usable_mib(&scenario.core.catalog, &scenario.core.reserve)
                    .into_iter()
                    .max()
                    .unwrap_or(0)
            } else {
                0
            },
            provider: Provider::new(&scenario),
            source,
            pending_work: None,
            n_dedicated: scenario.fleet.dedicated.iter().map(|d| d.count as u64).sum(),
            scenario,
            core,
            queue: EventQueue::new(),
            seq: 0,
            now: start,
            end,
            servers: vec![SimServer::default(); n_servers],
            vms: BTreeMap::new(),
            events_processed: 0,
            core_inputs: 0,
            progress: None,
            vm_log: None,
            command_log: None,
            stats_at_warmup: None,
        };
        for input in inputs {
            // Adding a dedicated node is never refused.
            if let Err(rejection) = sim.input(input) {
                sim.unexpected_rejection("AddDedicatedNode", &rejection);
            }
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

    /// Keep every command the core issues, with its time, for [`RunResult::commands`]
    /// (to compare a run's decisions with production's). Recording changes nothing in
    /// the run: the same outcome, byte for byte.
    pub fn record_commands(&mut self) {
        self.command_log = Some(Vec::new());
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
                // A timeout is never refused.
                if let Err(rejection) = self.input(Input::Timeout) {
                    self.unexpected_rejection("Timeout", &rejection);
                }
            } else if from_work {
                let (_, _, event) = self.pending_work.take().expect("peeked");
                self.work(event);
                self.schedule_next_work();
            } else {
                let next = self.queue.take(queue_head.expect("peeked"));
                self.process(next.event);
            }
            if self.events_processed & PROGRESS_EVERY_EVENTS_MASK == 0
                && let Some(progress) = self.progress.as_mut()
            {
                progress(self.now, self.end);
            }
        }
        self.advance(self.end);
        self.finish()
    }

    #[inline]
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
    #[inline(always)]
    fn advance(&mut self, to: Timestamp) {
        if self.stats_at_warmup.is_none() && to >= self.recorder.measure_from {
            self.stats_at_warmup = Some(self.core.stats());
        }
        let from = self.now.max(self.recorder.measure_from);
        if to > from {
            let totals = self.core.totals();
            let figures = FleetFigures {
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
            self.recorder.timeline.record(from, to, figures, self.n_dedicated);
        }
        self.now = to;
    }

    #[inline]
    fn measuring(&self) -> bool {
        self.now >= self.recorder.measure_from
    }

    /// Hand one input to the core, then drain its commands and events. Every caller
    /// matches the rejections it expects by name and hands any other to
    /// [`Self::unexpected_rejection`].
    #[inline]
    fn input(&mut self, input: Input) -> Result<(), Rejection> {
        self.core_inputs += 1;
        let result = self.core.handle(self.now, input);
        self.drain();
        result
    }

    /// A rejection no call site expects: the simulator and the core disagree about the
    /// world, so every figure after it would be suspect. It is a bug, and a run is
    /// deterministic: stop, naming the seed that reproduces it (also in release builds,
    /// where scenarios and checks run; it costs nothing until it happens).
    #[cold]
    #[inline(never)]
    fn unexpected_rejection(&self, input: &str, rejection: &Rejection) -> ! {
        panic!(
            "the core refused {input} at {} ms in scenario {:?} (seed {}): {rejection}; the simulator \
             expects no such rejection, a bug: rerun with --seed {} to reproduce",
            self.now.ms(),
            self.scenario.name,
            self.scenario.seed,
            self.scenario.seed,
        )
    }

    /// Carry out the core's commands, then observe its events. Neither `execute` nor
    /// `observe` calls the core, so nothing new is queued while draining: one pass over
    /// each queue takes everything, every command before any event.
    fn drain(&mut self) {
        while let Some(command) = self.core.poll_command() {
            if let Some(log) = &mut self.command_log {
                log.push(IssuedCommand {
                    at: self.now,
                    command: command.clone(),
                });
            }
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
}
