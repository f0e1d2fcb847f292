//! The recorder: what the simulator makes of the core's events (start and join waits,
//! queueing, churn, incidents, money) and, at the end, the outcome.
//!
//! Core events the recorder has nothing to do with are not handed to
//! [`Simulation::observe`] at all (`unobserved_events!` is the one list: the loop's
//! filter and `observe`'s no-op arm). Zero waits, most of them, are counted aside by
//! [`LatencyRecorder`] and added to their histogram when it is read.

use std::collections::BTreeMap;

use payperplay_core::{
    Event, MICROS_PER_EUR, MS_PER_HOUR, MS_PER_MONTH, NodeRemoval, ServerState, StartOutcome, StopReason, Timestamp,
};

use super::Simulation;
use super::compress::CompressedTimeline;
use super::ids::server_idx;
use super::world::Vm;
use crate::outcome::{self, LatencyRecorder, Outcome};
use crate::scenario::Scenario;
use crate::timeline::{Integrals, Timeline};

/// Points of the start-wait CDF handed to the plots.
const START_WAIT_CDF_POINTS: u32 = 200;

/// Everything a run produced: the outcome plus what the plots need.
pub struct RunResult {
    pub outcome: Outcome,
    pub timeline: Timeline,
    /// The start-wait distribution as (seconds, fraction of starts at or below).
    pub start_wait_cdf: Vec<(f64, f64)>,
    /// Every cloud VM's life, when asked for with [`Simulation::record_vms`].
    pub vms: Vec<VmLife>,
    /// Every command the core issued, in issue order, when asked for with
    /// [`Simulation::record_commands`].
    pub commands: Vec<IssuedCommand>,
}

/// One command as the core issued it, and when (simulated time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCommand {
    pub at: Timestamp,
    pub command: payperplay_core::Command,
}

/// One cloud VM as the provider billed it.
#[derive(Debug, Clone, PartialEq)]
pub struct VmLife {
    pub server_type: String,
    pub location: String,
    /// When its creation completed (billing starts).
    pub created_at: Timestamp,
    /// Deletion confirmed (or the end of the run).
    pub until: Timestamp,
    pub cost_micros: u64,
}

/// The counters and distributions of the measured period (after the warm-up).
pub(super) struct Recorder {
    pub(super) measure_from: Timestamp,
    pub(super) slo_ms: u64,
    pub(super) start_wait: LatencyRecorder,
    pub(super) capacity_wait: LatencyRecorder,
    pub(super) boot_wait: LatencyRecorder,
    pub(super) queue_wait: LatencyRecorder,
    pub(super) join_wait: LatencyRecorder,
    pub(super) regular_join_wait: LatencyRecorder,
    pub(super) slo_misses: u64,
    pub(super) vm_losses: u64,
    pub(super) servers_restarted: u64,
    pub(super) sessions_interrupted: u64,
    pub(super) fallbacks: u64,
    pub(super) prewarm_starts: u64,
    pub(super) sessions: u64,
    pub(super) sessions_lost: u64,
    pub(super) sessions_abandoned: u64,
    pub(super) abandoned_revenue_micros: u64,
    pub(super) starts_requested: u64,
    pub(super) starts_rejected: u64,
    pub(super) starts_cancelled: u64,
    /// Starts whose wait entered the distributions unfinished (see `record_unfinished_start`).
    pub(super) starts_censored: u64,
    pub(super) starts_unservable_by_cloud: u64,
    pub(super) queue_len_max: u64,
    pub(super) utilization_peak: f64,
    /// (allocated, usable) MiB of the last ratio taken into `utilization_peak`.
    pub(super) utilization_seen: (u64, u64),
    pub(super) cloud_peak: u64,
    pub(super) revenue_ram_micros: i64,
    pub(super) revenue_storage_micros: i64,
    pub(super) cloud_cost_micros: u64,
    pub(super) nodes_provisioned: u64,
    pub(super) nodes_deleted: u64,
    pub(super) nodes_lost: u64,
    pub(super) cloud_node_ms: u128,
    /// Cloud cost by VM type index.
    pub(super) cloud_cost_by_type: Vec<u64>,
    /// The time series of the measured period.
    pub(super) timeline: CompressedTimeline,
    /// Per tier, indexed like `core.tiers_mib`.
    pub(super) by_tier: Vec<TierRecorder>,
}

/// The per-tier counters (see `outcome::TierOutcome`).
#[derive(Default)]
pub(super) struct TierRecorder {
    pub(super) servers: u64,
    pub(super) starts_requested: u64,
    pub(super) starts_censored: u64,
    pub(super) start_wait: LatencyRecorder,
    pub(super) sessions: u64,
    pub(super) sessions_abandoned: u64,
    pub(super) revenue_ram_micros: i64,
}

impl Recorder {
    /// A start that did not run: still queued or starting at the end of the run, or
    /// withdrawn because its players gave up. Its wait enters the start-wait figures
    /// censored, with its age when it was last seen (a lower bound: the true wait is at
    /// least this long), and counts as an SLO miss when that age already exceeds the
    /// SLO. Dropping such starts would let a run that strands starts look faster.
    pub(super) fn record_unfinished_start(
        &mut self,
        tier: usize,
        requested_at: Timestamp,
        placed_at: Option<Timestamp>,
        now: Timestamp,
    ) {
        if requested_at < self.measure_from {
            return;
        }
        let wait = now.since(requested_at);
        let capacity = placed_at.unwrap_or(now).since(requested_at);
        self.start_wait.record(wait);
        let by_tier = &mut self.by_tier[tier];
        by_tier.start_wait.record(wait);
        by_tier.starts_censored += 1;
        self.capacity_wait.record(capacity);
        if let Some(placed_at) = placed_at {
            self.boot_wait.record(now.since(placed_at));
        }
        if capacity > 0 {
            self.queue_wait.record(capacity);
        }
        if wait > self.slo_ms {
            self.slo_misses += 1;
        }
        self.starts_censored += 1;
    }

    pub(super) fn new(scenario: &Scenario) -> Recorder {
        let measure_from = scenario.start().plus_ms(scenario.warmup_ms);
        Recorder {
            measure_from,
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
            sessions_abandoned: 0,
            abandoned_revenue_micros: 0,
            starts_requested: 0,
            starts_rejected: 0,
            starts_cancelled: 0,
            starts_censored: 0,
            starts_unservable_by_cloud: 0,
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
            timeline: CompressedTimeline::new(measure_from, scenario.duration_ms.saturating_sub(scenario.warmup_ms)),
            by_tier: scenario
                .core
                .tiers_mib
                .iter()
                .map(|_| TierRecorder::default())
                .collect(),
        }
    }
}

/// Whole-run figures the outcome's sections share.
struct Measured {
    /// The exact time-weighted sums of the measured period.
    integrals: Integrals,
    /// The measured period (at least 1 ms, as a divisor).
    ms: u64,
    hours: f64,
}

/// Micro-EUR as EUR, rounded to the micro.
fn eur(micros: i64) -> f64 {
    outcome::round6(micros as f64 / MICROS_PER_EUR as f64)
}

impl Simulation {
    /// Add a VM's cost up to `until`: Hetzner style (see [`crate::provider`]), from
    /// creation completion, VM plus IPv4 plus volume; the part of a VM's life
    /// before the warm-up ended does not count.
    pub(super) fn account_vm(&mut self, vm: &Vm, until: Timestamp) {
        let cost = self
            .provider
            .vm_cost_micros(vm.server_type.0, vm.location, vm.created_at, until);
        if let Some(log) = &mut self.vm_log {
            log.push(VmLife {
                server_type: self.scenario.core.catalog.server_types[vm.server_type.0 as usize]
                    .name
                    .clone(),
                location: self.scenario.core.catalog.locations[vm.location as usize].clone(),
                created_at: vm.created_at,
                until,
                cost_micros: cost,
            });
        }
        // Costs of VMs that lived across the warm-up boundary count in proportion.
        let from = vm.created_at.max(self.recorder.measure_from);
        let until = until.max(from);
        let lifetime = until.since(vm.created_at).max(1);
        let measured = until.since(from);
        let measured_cost = (cost as u128 * measured as u128 / lifetime as u128) as u64;
        self.recorder.cloud_cost_micros += measured_cost;
        self.recorder.cloud_cost_by_type[vm.server_type.0 as usize] += measured_cost;
        self.recorder.cloud_node_ms += measured as u128;
    }

    /// What the sim makes of one core event. [`Simulation::drain`] hands over only the
    /// kinds that do something here (the no-op arm is for completeness).
    #[inline(never)]
    pub(super) fn observe(&mut self, event: Event) {
        let measuring = self.measuring();
        match event {
            unobserved_events!() => {}
            Event::ServerRunning {
                server_id,
                requested_at,
                placed_at,
            } => self.server_running(server_idx(server_id), requested_at, placed_at, measuring),
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
                if reason == StopReason::NodeLost && measuring {
                    // The core queued it to start elsewhere: a start request of its own.
                    self.recorder.starts_requested += 1;
                    self.recorder.by_tier[server.tier as usize].starts_requested += 1;
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
                            NodeRemoval::Lost => self.recorder.nodes_lost += 1,
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

    /// A server came up: the players who waited join (their sessions start now) and the
    /// start's waits are recorded (a pre-warm's only through its players' join waits).
    #[inline]
    fn server_running(&mut self, server_idx: usize, requested_at: Timestamp, placed_at: Timestamp, measuring: bool) {
        let server = &mut self.servers[server_idx];
        // Taken and given back emptied: its capacity stays for the next start.
        let mut waiting = std::mem::take(&mut server.waiting);
        let (epoch, regular) = (server.epoch, server.regular);
        let prewarm = std::mem::take(&mut server.prewarm);
        let mut total = server.players;
        for &(players, length_ms, arrived) in &waiting {
            total += players;
            let measured_wait = (measuring && arrived >= self.recorder.measure_from).then(|| self.now.since(arrived));
            self.begin_session(server_idx, players, length_ms, epoch, regular, measured_wait);
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
            rec.by_tier[server.tier as usize].start_wait.record(wait);
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

    /// The end of the run: close the books, then read the outcome off the recorder.
    pub(super) fn finish(mut self) -> RunResult {
        self.censor_unfinished_starts();
        self.close_books();
        let integrals = self.recorder.timeline.integrals();
        let ms = integrals.ms.max(1);
        let measured = Measured {
            integrals,
            ms,
            hours: ms as f64 / MS_PER_HOUR as f64,
        };
        let outcome = self.outcome(&measured);
        let start_wait_cdf = self.recorder.start_wait.cdf(START_WAIT_CDF_POINTS);
        let vms = self.vm_log.take().unwrap_or_default();
        let commands = self.command_log.take().unwrap_or_default();
        RunResult {
            outcome,
            timeline: self.recorder.timeline.finish(),
            start_wait_cdf,
            vms,
            commands,
        }
    }

    /// Every user's start still queued or starting at the horizon enters the waits
    /// censored at the end of the run.
    fn censor_unfinished_starts(&mut self) {
        let end = self.end;
        let unfinished: Vec<(usize, Timestamp, Option<Timestamp>)> = self
            .core
            .servers()
            .filter(|(_, s)| matches!(s.state, ServerState::Queued | ServerState::Starting))
            .filter_map(|(id, s)| Some((id, s.start.as_ref()?)))
            .filter(|(_, start)| !start.prewarm)
            .map(|(id, start)| {
                (
                    self.servers[server_idx(id)].tier as usize,
                    start.requested_at,
                    start.placed_at,
                )
            })
            .collect();
        for (tier, requested_at, placed_at) in unfinished {
            self.recorder
                .record_unfinished_start(tier, requested_at, placed_at, end);
        }
    }

    /// The held span goes to the timeline, every account is settled (ledger entries
    /// posted, so revenue counted), and the VMs still running are billed to the end.
    fn close_books(&mut self) {
        let end = self.end;
        self.recorder.timeline.flush();
        self.core.settle_all(end);
        self.drain();
        let vms: Vec<Vm> = std::mem::take(&mut self.vms).into_values().collect();
        for vm in &vms {
            self.account_vm(vm, end);
        }
    }

    fn outcome(&self, measured: &Measured) -> Outcome {
        let rec = &self.recorder;
        let i = &measured.integrals;
        let starts_running = rec.start_wait.count() - rec.starts_censored;
        let cost = self.cost(measured);
        let revenue = outcome::Revenue {
            ram_eur: eur(rec.revenue_ram_micros),
            storage_eur: eur(rec.revenue_storage_micros),
            total_eur: outcome::round6(eur(rec.revenue_ram_micros) + eur(rec.revenue_storage_micros)),
        };
        Outcome {
            scenario: self.scenario.name.clone(),
            seed: self.scenario.seed,
            simulated_hours: outcome::round3(measured.hours),
            sessions: outcome::Sessions {
                total: rec.sessions,
                lost: rec.sessions_lost,
                abandoned: rec.sessions_abandoned,
                abandoned_pct: outcome::round3(100.0 * rec.sessions_abandoned as f64 / rec.sessions.max(1) as f64),
                abandoned_revenue_eur: outcome::round6(eur(rec.abandoned_revenue_micros as i64)),
            },
            starts: outcome::Starts {
                requested: rec.starts_requested,
                running: starts_running,
                rejected: rec.starts_rejected,
                cancelled: rec.starts_cancelled,
                censored: rec.starts_censored,
                unservable_by_cloud: rec.starts_unservable_by_cloud,
                pending_at_end: self.starts_pending(),
            },
            start_wait: rec.start_wait.percentiles(),
            capacity_wait: rec.capacity_wait.percentiles(),
            boot_wait: rec.boot_wait.percentiles(),
            queue_wait: rec.queue_wait.percentiles(),
            join_wait: rec.join_wait.percentiles(),
            regular_join_wait: rec.regular_join_wait.percentiles(),
            queue: outcome::Queue {
                requests_queued: rec.queue_wait.count(),
                queued_pct: outcome::round3(
                    100.0 * rec.queue_wait.count() as f64 / rec.start_wait.count().max(1) as f64,
                ),
                length_mean: outcome::round6(i.queue_len_ms as f64 / measured.ms as f64),
                length_max: rec.queue_len_max,
            },
            slo: outcome::Slo {
                threshold_s: rec.slo_ms as f64 / 1000.0,
                misses: rec.slo_misses,
                miss_pct: outcome::round3(100.0 * rec.slo_misses as f64 / rec.start_wait.count().max(1) as f64),
            },
            margin_eur: outcome::round6(revenue.ram_eur + revenue.storage_eur - cost.dedicated_eur - cost.cloud_eur),
            cost,
            revenue,
            nodes: outcome::Nodes {
                provisioned: rec.nodes_provisioned,
                deleted: rec.nodes_deleted,
                lost: rec.nodes_lost,
                cloud_peak: rec.cloud_peak,
                cloud_node_hours: outcome::round3(rec.cloud_node_ms as f64 / MS_PER_HOUR as f64),
                dedicated_node_hours: outcome::round3(self.n_dedicated as f64 * measured.hours),
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
                holding_ram_mean: outcome::round6(i.servers_holding_ram_ms as f64 / measured.ms as f64),
            },
            provider: outcome::ProviderCalls {
                orders: self.provider.stats.orders,
                sold_out: self.provider.stats.sold_out,
                rate_limited: self.provider.stats.rate_limited,
                failed: self.provider.stats.failed,
                requests: self.provider.stats.requests,
                fallbacks: rec.fallbacks,
            },
            prewarm: self.prewarm(),
            incidents: outcome::Incidents {
                vm_losses: rec.vm_losses,
                servers_restarted: rec.servers_restarted,
                sessions_interrupted: rec.sessions_interrupted,
            },
            sim: outcome::SimCounters {
                events: self.events_processed,
                core_inputs: self.core_inputs,
            },
            by_tier: self.by_tier_outcomes(),
            warnings: self.scenario.warnings.iter().map(ToString::to_string).collect(),
        }
    }

    fn by_tier_outcomes(&self) -> Vec<outcome::TierOutcome> {
        let eur = |micros: i64| micros as f64 / MICROS_PER_EUR as f64;
        self.scenario
            .core
            .tiers_mib
            .iter()
            .zip(&self.recorder.by_tier)
            .map(|(&ram_mib, t)| outcome::TierOutcome {
                gb: ram_mib / 1024,
                servers: t.servers,
                starts_requested: t.starts_requested,
                starts_censored: t.starts_censored,
                start_wait: t.start_wait.percentiles(),
                sessions: t.sessions,
                sessions_abandoned: t.sessions_abandoned,
                sessions_abandoned_pct: outcome::round3(100.0 * t.sessions_abandoned as f64 / t.sessions.max(1) as f64),
                revenue_ram_eur: outcome::round6(eur(t.revenue_ram_micros)),
            })
            .collect()
    }

    /// Starts still queued or starting when the run ended.
    fn starts_pending(&self) -> u64 {
        self.core.queue_len() as u64
            + self
                .core
                .servers()
                .filter(|(_, s)| s.state == ServerState::Starting)
                .count() as u64
    }

    /// The dedicated machines (monthly price, in proportion to the measured period)
    /// and the cloud VMs (as the provider billed them), in total and by type.
    fn cost(&self, measured: &Measured) -> outcome::Cost {
        let dedicated_micros = |d: &crate::scenario::DedicatedSpec| {
            d.monthly_cost_micros as u128 * d.count as u128 * measured.ms as u128 / MS_PER_MONTH as u128
        };
        let dedicated = &self.scenario.fleet.dedicated;
        let dedicated_eur = eur(dedicated.iter().map(dedicated_micros).sum::<u128>() as i64);
        let cloud_eur = eur(self.recorder.cloud_cost_micros as i64);
        let mut by_type = BTreeMap::new();
        for d in dedicated {
            *by_type.entry(format!("dedicated {}", d.name)).or_insert(0.0) += eur(dedicated_micros(d) as i64);
        }
        for (t, &micros) in self.recorder.cloud_cost_by_type.iter().enumerate() {
            if micros > 0 {
                let name = &self.scenario.core.catalog.server_types[t].name;
                by_type.insert(format!("cloud {name}"), eur(micros as i64));
            }
        }
        outcome::Cost {
            dedicated_eur,
            cloud_eur,
            total_eur: outcome::round6(dedicated_eur + cloud_eur),
            by_type,
        }
    }

    /// Pre-warm starts, the ones a player claimed, and the warm RAM-time the platform
    /// paid for (counted by the core since the warm-up ended).
    fn prewarm(&self) -> outcome::Prewarm {
        let stats = self.core.stats();
        let before = self.stats_at_warmup.unwrap_or_default();
        outcome::Prewarm {
            starts: self.recorder.prewarm_starts,
            claimed: stats.prewarm_claimed - before.prewarm_claimed,
            platform_paid_eur: outcome::round6(
                (stats.prewarm_platform_mib_ms - before.prewarm_platform_mib_ms) as f64
                    * self.scenario.core.billing.ram_price_micros_per_gib_hour as f64
                    / (1024.0 * MS_PER_HOUR as f64)
                    / MICROS_PER_EUR as f64,
            ),
        }
    }
}
