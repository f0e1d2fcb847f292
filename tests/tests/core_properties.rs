//! Property tests of the core: random input sequences never overcommit a node, never
//! lose a start request, and conserve money. Each property is checked against a model
//! the test keeps itself from the core's commands and events, not against the core's
//! own bookkeeping.

use std::collections::{BTreeMap, BTreeSet};

use payperplay_core::prewarm::{BilledTo, PrewarmConfig};
use payperplay_core::testkit::cloud_catalog;
use payperplay_core::{
    Command, CommandKind, Core, CoreConfig, Event, Input, LedgerKind, MIB_PER_GIB, MS_PER_HOUR, MS_PER_MINUTE, NodeId,
    Outputs, PolicyConfig, PredictiveConfig, ReactiveConfig, ScaleDownConfig, ScaleDownRule, ScheduleWindow,
    ScheduledConfig, ServerId, ServerState, SpareConfig, StartOutcome, Timestamp, UserId, Weekday,
};
use payperplay_tests::ops::{FAILURE_KINDS, N_SERVERS, N_USERS, Op, TIERS, op, pick_node};
use proptest::prelude::*;

const RAM_PRICE: u64 = 12_345;

/// The core under test: variant 0 the reactive policy, 1 Cluster-Autoscaler-like
/// scale-down with a spare pool and a forecast, 2 billing-aware scale-down with a
/// scheduled minimum. Pre-warm is on (platform-paid) in all of them.
fn config(variant: usize) -> CoreConfig {
    let base = PolicyConfig {
        max_cloud_nodes: 2,
        ..PolicyConfig::default()
    };
    let policy = match variant {
        0 => PolicyConfig {
            reactive: Some(ReactiveConfig::default()),
            ..base
        },
        1 => PolicyConfig {
            spare: Some(SpareConfig {
                buffer_mib: 4096,
                ..SpareConfig::default()
            }),
            predictive: Some(PredictiveConfig::default()),
            scale_down: Some(ScaleDownConfig {
                rule: ScaleDownRule::Underutilized,
                ..ScaleDownConfig::default()
            }),
            ..base
        },
        _ => PolicyConfig {
            scheduled: Some(ScheduledConfig {
                windows: vec![ScheduleWindow {
                    days: Weekday::ALL.to_vec(),
                    from: 18 * 60,
                    to: 22 * 60,
                    min_mib: 16384,
                    min_nodes: 0,
                }],
            }),
            scale_down: Some(ScaleDownConfig {
                rule: ScaleDownRule::BillingHour,
                ..ScaleDownConfig::default()
            }),
            ..base
        },
    };
    let mut config = CoreConfig {
        catalog: cloud_catalog(),
        policy,
        prewarm: PrewarmConfig {
            enabled: true,
            history_days: 2,
            min_days: 1,
            billed_to: BilledTo::Platform,
            ..PrewarmConfig::default()
        },
        ..CoreConfig::default()
    };
    config.billing.ram_price_micros_per_gib_hour = RAM_PRICE;
    config.billing.low_balance_threshold_micros = 500_000;
    config.lifecycle.idle_sleep_after_ms = 5 * MS_PER_MINUTE;
    config.lifecycle.min_run_ms = MS_PER_MINUTE;
    config
}

/// The test's own model of what the core did.
struct Harness {
    core: Core,
    now: Timestamp,
    /// The core's outputs, drained after every input (buffers reused).
    outputs: Outputs,
    /// Commands waiting for a result.
    pending: Vec<Command>,
    ledger: BTreeMap<UserId, i64>,
    ram_ledger: BTreeMap<ServerId, i64>,
    tier: BTreeMap<ServerId, u32>,
    /// RAM held per node, from StartPlaced and RamReleased events.
    held_by_node: BTreeMap<NodeId, u64>,
    /// Since when each server holds RAM, and the RAM-time numerator held so far.
    holding_since: BTreeMap<ServerId, Timestamp>,
    held_numerator: BTreeMap<ServerId, u128>,
    /// Pre-warm: (a platform-paid pre-warm start is pending, the RAM now held is
    /// platform-paid), and the platform-paid RAM-time so far in MiB × ms.
    warm: BTreeMap<ServerId, (bool, bool)>,
    platform_mib_ms: u64,
    /// Start requests that have not ended yet.
    open_starts: BTreeSet<ServerId>,
    starts_opened: u64,
    starts_ended: u64,
}

impl Harness {
    fn new(balances: &[i64], variant: usize) -> Harness {
        let mut h = Harness {
            core: Core::new(config(variant)),
            now: Timestamp(1_700_000_000_000),
            outputs: Outputs::default(),
            pending: Vec::new(),
            ledger: BTreeMap::new(),
            ram_ledger: BTreeMap::new(),
            tier: BTreeMap::new(),
            held_by_node: BTreeMap::new(),
            holding_since: BTreeMap::new(),
            held_numerator: BTreeMap::new(),
            warm: BTreeMap::new(),
            platform_mib_ms: 0,
            open_starts: BTreeSet::new(),
            starts_opened: 0,
            starts_ended: 0,
        };
        for (name, gb, system) in [("small", 8, true), ("large", 16, false)] {
            h.input(Input::AddDedicatedNode {
                name: name.into(),
                capacity_mib: gb * 1024,
                monthly_cost_micros: 1,
                is_system: system,
            });
        }
        for u in 1..=N_USERS {
            h.input(Input::RegisterUser { user_id: UserId(u) });
            h.input(Input::TopUp {
                user_id: UserId(u),
                amount_micros: balances[(u - 1) as usize],
            });
        }
        for s in 1..=N_SERVERS {
            let ram_mib = TIERS[(s as usize) % TIERS.len()];
            h.tier.insert(ServerId(s), ram_mib);
            h.input(Input::CreateServer {
                server_id: ServerId(s),
                owner: UserId(1 + s % N_USERS),
                ram_mib,
            });
        }
        h
    }

    fn input(&mut self, input: Input) -> bool {
        let start_of = match &input {
            Input::StartServer { server_id } => Some(*server_id),
            _ => None,
        };
        let state_before = start_of.and_then(|id| self.core.server(id).map(|s| s.state));
        let ok = self.core.handle(self.now, input).is_ok();
        if let (Some(id), true, Some(state)) = (start_of, ok, state_before) {
            let opens = match state {
                ServerState::Stopped | ServerState::Sleeping | ServerState::Archived => true,
                ServerState::Stopping { .. } => !self.open_starts.contains(&id),
                _ => false,
            };
            if opens {
                self.open(id);
            }
        }
        self.drain();
        self.check();
        ok
    }

    fn open(&mut self, id: ServerId) {
        assert!(self.open_starts.insert(id), "server {id} has two open start requests");
        self.starts_opened += 1;
    }

    fn drain(&mut self) {
        let mut outputs = std::mem::take(&mut self.outputs);
        self.core.drain_into(&mut outputs);
        for command in outputs.commands.drain(..) {
            match &command.kind {
                CommandKind::PostLedgerEntry { entry } => {
                    *self.ledger.entry(entry.user_id).or_default() += entry.amount_micros;
                    if entry.kind == LedgerKind::RamTime {
                        *self
                            .ram_ledger
                            .entry(entry.server_id.expect("RAM-time names its server"))
                            .or_default() += entry.amount_micros;
                    }
                }
                CommandKind::ProvisionNode { .. }
                | CommandKind::DeleteNode { .. }
                | CommandKind::StartContainer { .. }
                | CommandKind::StopContainer { .. } => self.pending.push(command),
                CommandKind::ArchiveWorld { .. } | CommandKind::DeleteWorld { .. } | CommandKind::SendEmail { .. } => {}
            }
        }
        for event in outputs.events.drain(..) {
            match event {
                Event::PrewarmStarted {
                    server_id,
                    platform_pays,
                } => {
                    self.open(server_id);
                    self.warm.entry(server_id).or_default().0 = platform_pays;
                }
                Event::PrewarmClaimed { server_id } => {
                    let warm = self.warm.entry(server_id).or_default();
                    warm.0 = false;
                    if std::mem::take(&mut warm.1) {
                        let since = self.holding_since.insert(server_id, self.now).expect("held");
                        self.platform_mib_ms += self.tier[&server_id] as u64 * self.now.since(since);
                    }
                }
                Event::ServerStopped { server_id, .. } => {
                    self.warm.entry(server_id).or_default().0 = false;
                }
                Event::StartPlaced { server_id, node_id, .. } => {
                    let warm = self.warm.entry(server_id).or_default();
                    warm.1 = warm.0;
                    *self.held_by_node.entry(node_id).or_default() += self.tier[&server_id] as u64;
                    assert!(
                        self.holding_since.insert(server_id, self.now).is_none(),
                        "{server_id} placed twice"
                    );
                }
                Event::RamReleased {
                    server_id,
                    node_id,
                    ram_mib,
                } => {
                    assert_eq!(ram_mib, self.tier[&server_id]);
                    let held = self.held_by_node.get_mut(&node_id).expect("released where placed");
                    *held -= ram_mib as u64;
                    let since = self.holding_since.remove(&server_id).expect("released what was held");
                    if std::mem::take(&mut self.warm.entry(server_id).or_default().1) {
                        self.platform_mib_ms += ram_mib as u64 * self.now.since(since);
                    } else {
                        *self.held_numerator.entry(server_id).or_default() +=
                            ram_mib as u128 * self.now.since(since) as u128 * RAM_PRICE as u128;
                    }
                }
                // A running server whose node was lost is queued again: a new request.
                Event::StartQueued { server_id, .. } if !self.open_starts.contains(&server_id) => self.open(server_id),
                Event::StartEnded { server_id, outcome, .. } => {
                    if outcome != StartOutcome::Running {
                        self.warm.entry(server_id).or_default().0 = false;
                    }
                    assert!(
                        self.open_starts.remove(&server_id),
                        "a start of {server_id} ended twice"
                    );
                    self.starts_ended += 1;
                }
                _ => {}
            }
        }
        self.outputs = outputs;
    }

    fn check(&self) {
        self.core.check_invariants().unwrap();
        // What the core still awaits was issued exactly so, and not answered yet.
        for awaited in self.core.awaited_commands() {
            assert!(
                self.pending.contains(&awaited),
                "the core awaits {awaited:?}, which is not outstanding as issued"
            );
        }
        for (&node_id, &held) in &self.held_by_node {
            if let Some(node) = self.core.node(node_id) {
                assert!(
                    held <= node.usable_mib() as u64,
                    "node {node_id} holds {held} MiB of {}",
                    node.usable_mib()
                );
                assert_eq!(held, node.allocated_mib as u64);
            } else {
                assert_eq!(held, 0, "a removed node held RAM");
            }
        }
        for u in 1..=N_USERS {
            let user = UserId(u);
            let Some(balance) = self.core.balance_micros(user) else {
                continue;
            };
            assert_eq!(
                balance,
                self.ledger.get(&user).copied().unwrap_or(0),
                "balance of {user} differs from its ledger"
            );
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Start(s) => _ = self.input(Input::StartServer { server_id: ServerId(s) }),
            Op::Stop(s) => _ = self.input(Input::StopServer { server_id: ServerId(s) }),
            Op::Cancel(s) => _ = self.input(Input::CancelStart { server_id: ServerId(s) }),
            Op::Delete(s) => _ = self.input(Input::DeleteServer { server_id: ServerId(s) }),
            Op::TopUp(u, amount) => {
                _ = self.input(Input::TopUp {
                    user_id: UserId(u),
                    amount_micros: amount,
                })
            }
            Op::Players(s, n) => {
                _ = self.input(Input::PlayerCount {
                    server_id: ServerId(s),
                    players: n,
                })
            }
            Op::Advance(ms) => self.advance(ms),
            Op::Complete(i, ok, kind) => {
                if !self.pending.is_empty() {
                    let command = self.pending.remove(i % self.pending.len());
                    let kind = FAILURE_KINDS[kind as usize];
                    let input = if ok {
                        Input::CommandSucceeded { command_id: command.id }
                    } else {
                        Input::CommandFailed {
                            command_id: command.id,
                            reason: "test".into(),
                            kind,
                        }
                    };
                    self.input(input);
                }
            }
            Op::Boot(s) => _ = self.input(Input::ServerBooted { server_id: ServerId(s) }),
            Op::LoseNode(i) => {
                let nodes: Vec<NodeId> = self.core.nodes().map(|n| n.id).collect();
                if let Some(node_id) = pick_node(&nodes, i) {
                    self.input(Input::NodeLost { node_id });
                }
            }
            Op::AnswerNode(i) => {
                let nodes: Vec<NodeId> = self.core.nodes().map(|n| n.id).collect();
                if let Some(node_id) = pick_node(&nodes, i) {
                    self.input(Input::NodeAnswered { node_id });
                }
            }
            Op::Exited(s) => _ = self.input(Input::ContainerExited { server_id: ServerId(s) }),
        }
    }

    fn advance(&mut self, ms: u64) {
        let target = self.now.plus_ms(ms);
        while let Some(at) = self.core.poll_timeout() {
            if at > target {
                break;
            }
            self.now = self.now.max(at);
            self.input(Input::Timeout);
        }
        self.now = target;
    }

    /// Let everything settle: every command succeeds, every container boots, and
    /// what still waits is cancelled. Afterwards no start request may be open.
    /// Cancelling can let another start through (a large request at the head of the
    /// queue holds back smaller ones behind it), so settling repeats after it.
    fn quiesce(&mut self) {
        for _ in 0..10 {
            self.settle();
            let waiting: Vec<ServerId> = self
                .core
                .servers()
                .filter(|(_, s)| s.state == ServerState::Queued || s.start_after_stop.is_some())
                .map(|(id, _)| id)
                .collect();
            if waiting.is_empty() {
                return;
            }
            for id in waiting {
                self.input(Input::CancelStart { server_id: id });
            }
        }
    }

    /// Complete every command and boot every starting server until nothing is pending
    /// and nothing is queued (or 50 rounds of 10 minutes have passed).
    fn settle(&mut self) {
        for _ in 0..50 {
            while let Some(command) = self.pending.pop() {
                self.input(Input::CommandSucceeded { command_id: command.id });
            }
            let starting: Vec<ServerId> = self
                .core
                .servers()
                .filter(|(_, s)| s.state == ServerState::Starting)
                .map(|(id, _)| id)
                .collect();
            for id in starting {
                self.input(Input::ServerBooted { server_id: id });
            }
            self.advance(10 * MS_PER_MINUTE);
            if self.pending.is_empty() && self.core.queue_len() == 0 {
                break;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_inputs_keep_every_invariant(
        balances in prop::collection::vec(1i64..3_000_000, N_USERS as usize),
        ops in prop::collection::vec(op(), 1..80),
        variant in 0usize..3,
    ) {
        let mut h = Harness::new(&balances, variant);
        for op in &ops {
            h.apply(op);
        }
        h.quiesce();
        // Every start request ended: running, rejected with a reason, or cancelled.
        prop_assert!(h.open_starts.is_empty(), "open start requests left: {:?}", h.open_starts);
        prop_assert_eq!(h.starts_opened, h.starts_ended);
        // Billed RAM-time equals RAM-time held, to the micro (fractions carry over).
        let end = h.now;
        for (&id, &since) in &h.holding_since {
            if h.warm.get(&id).is_some_and(|w| w.1) {
                h.platform_mib_ms += h.tier[&id] as u64 * end.since(since);
            } else {
                *h.held_numerator.entry(id).or_default() +=
                    h.tier[&id] as u128 * end.since(since) as u128 * RAM_PRICE as u128;
            }
        }
        h.core.settle_all(end);
        h.drain();
        h.check();
        let denominator = MIB_PER_GIB as u128 * MS_PER_HOUR as u128;
        for (id, numerator) in &h.held_numerator {
            let billed = -h.ram_ledger.get(id).copied().unwrap_or(0);
            prop_assert_eq!(billed as u128, numerator / denominator, "RAM-time of server {}", id);
        }
        // Warm minutes paid by the platform are counted, never charged to an owner.
        prop_assert_eq!(h.core.stats().prewarm_platform_mib_ms, h.platform_mib_ms);
        for (id, billed) in &h.ram_ledger {
            prop_assert!(h.held_numerator.contains_key(id) || *billed == 0, "{} billed without holding RAM", id);
        }
    }
}

/// A queue front full of requests for a tier only one machine holds, smaller requests
/// behind it, and a scan window of 4: whatever the order of tiers and stops, once the
/// queue settles no queued request fits the free RAM of a ready node that the head
/// has not claimed (no claim happens here: the clock stands still, below the head's
/// bypass limit).
fn no_start_is_stranded_behind_huge_requests(tiers_gb: &[u32], stops: &[usize]) -> Result<(), TestCaseError> {
    use payperplay_core::NodeState;
    use payperplay_core::testkit::{Driver, static_config};
    let mut config = static_config();
    config.tiers_mib = vec![2048, 4096, 49_152];
    config.queue.scan_max = 4;
    let mut d = Driver::new(config);
    for (name, gb) in [("big", 64), ("small-1", 8), ("small-2", 8), ("small-3", 8)] {
        d.accept(Input::AddDedicatedNode {
            name: name.into(),
            capacity_mib: gb * 1024,
            monthly_cost_micros: 1,
            is_system: false,
        });
    }
    d.user(1_000_000_000_000);
    let settled = |d: &Driver| -> Result<(), TestCaseError> {
        let max_free = d
            .core
            .nodes()
            .filter(|n| n.state == NodeState::Ready)
            .map(|n| n.free_mib())
            .max()
            .unwrap_or(0);
        for (id, server) in d.core.servers() {
            if server.state == ServerState::Queued {
                prop_assert!(
                    server.ram_mib > max_free,
                    "{id} ({} MiB) is queued while a node has {max_free} MiB free",
                    server.ram_mib
                );
            }
        }
        Ok(())
    };
    for (i, &gb) in tiers_gb.iter().enumerate() {
        d.create(i as u64 + 1, gb);
        d.start(i as u64 + 1);
        settled(&d)?;
    }
    d.boot_all();
    for &stop in stops {
        let running: Vec<u64> = d
            .core
            .servers()
            .filter(|(_, s)| s.state == ServerState::Running)
            .map(|(id, _)| id.0)
            .collect();
        if running.is_empty() {
            break;
        }
        d.stop(running[stop % running.len()]);
        d.boot_all();
        settled(&d)?;
    }
    if !stops.is_empty() {
        d.advance(0);
    }
    Ok(())
}

proptest! {
    #[test]
    fn no_start_is_stranded_behind_requests_that_cannot_be_placed_now(
        tiers_gb in prop::collection::vec(prop_oneof![3 => Just(48u32), 2 => Just(2u32), 2 => Just(4u32)], 1..40),
        stops in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        no_start_is_stranded_behind_huge_requests(&tiers_gb, &stops)?;
    }
}

/// The property's shrunk failure (seed in `core_properties.proptest-regressions`).
const STOP_CASE_TIERS_GB: [u32; 18] = [4, 4, 4, 4, 48, 2, 2, 4, 2, 4, 4, 4, 2, 2, 4, 4, 4, 2];
const STOP_CASE_STOPS: [usize; 1] = [358_911_688_851_820_802];

/// The shrunk case of the property above that a stop used to leave stranded: the
/// pass after the stop placed requests from a window full of ones that fit the freed
/// space, and a 2 GB start behind that window was not looked at again although a node
/// still had 2 GB free.
#[test]
fn a_small_start_beyond_the_window_is_placed_after_a_stop_frees_ram() {
    no_start_is_stranded_behind_huge_requests(&STOP_CASE_TIERS_GB, &STOP_CASE_STOPS).expect("placed");
}

/// The case from the issue, fixed: five 48 GB requests ahead of a 2 GB one.
#[test]
fn a_small_start_behind_a_window_of_huge_ones_is_placed() {
    no_start_is_stranded_behind_huge_requests(&[48, 48, 48, 48, 48, 48, 2], &[]).expect("placed");
}
