//! The state machine: `handle(now, input)`, `poll_command()`, `poll_event()`,
//! `poll_timeout()`. No I/O, no clock, no randomness.

mod billing;
mod dispatch;
mod fleet;
mod invariants;
mod lifecycle;
mod prewarm;
mod reconfigure;
mod requests;
mod snapshot;
mod timers;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::config::CoreConfig;
use crate::idmap::{IdMap, IdSet};
use crate::io::{
    Command, CommandKind, Email, Event, FailureKind, Input, LedgerEntry, LedgerKind, NodeRemoval, RejectReason,
    Rejection, StartOutcome, StopReason,
};
use crate::model::{
    Accrual, AccrualKind, Node, NodeKind, NodeMap, NodeState, Server, ServerState, StartRequest, TimerSlot, User,
};
use crate::pending::PendingMap;
use crate::placement::FreeIndex;
use crate::policy::fallback::ProviderHealth;
use crate::policy::{FleetTotals, FleetView, QUEUE_VIEW_MAX, ScalingDecision, ScalingPolicy, Trigger};
use crate::prewarm::{BilledTo, Habit};
use crate::queue::{QueueEntry, StartQueue};
use crate::timerq::TimerQueue;
use crate::types::{
    CommandId, LocationIdx, MIB_PER_GIB, MS_PER_HOUR, MS_PER_MONTH, NodeId, ServerId, Timestamp, UserId, VmTypeIdx,
    ram_time_numerator,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
enum Timer {
    /// Per state: reservation timeout (starting), idle stop (running), archive (sleeping).
    Server(ServerId),
    /// Low-balance warning or zero-balance stop.
    User(UserId),
    /// Provisioning timeout.
    Node(NodeId),
    ScaleTick,
    /// A habitual server's pre-warm start.
    Prewarm(ServerId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Pending {
    Provision(NodeId),
    DeleteNode(NodeId),
    /// `restore_world`: what the command said, so `awaited_commands` can repeat it.
    StartContainer {
        server_id: ServerId,
        restore_world: bool,
    },
    StopContainer(ServerId),
}

/// Counters for observers; they never influence decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CoreStats {
    pub starts_requested: u64,
    pub starts_running: u64,
    pub starts_rejected: u64,
    pub starts_cancelled: u64,
    pub starts_requeued: u64,
    pub nodes_requested: u64,
    pub nodes_deleted: u64,
    pub nodes_lost: u64,
    pub provision_timeouts: u64,
    pub scale_evaluations: u64,
    /// Orders placed elsewhere than the policy wanted (sold out, backed off).
    pub provision_fallbacks: u64,
    /// Provision failures by kind.
    pub provision_sold_out: u64,
    pub provision_rate_limited: u64,
    /// Orders the policy wanted but the core held back (rate limit, nothing available).
    pub provisions_held_back: u64,
    /// Cloud nodes cordoned by the policy, and cordons lifted.
    pub nodes_drained: u64,
    pub nodes_uncordoned: u64,
    /// Starts the core issued on its own ahead of a usual play time.
    pub prewarm_starts: u64,
    /// Pre-warmed servers that got their first player (or their owner's start).
    pub prewarm_claimed: u64,
    /// RAM-time of pre-warmed servers paid by the platform (`billed_to = "platform"`),
    /// in MiB × ms; the owner is not charged for it.
    pub prewarm_platform_mib_ms: u64,
}

/// A server's learned habit and its armed pre-warm timer.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct HabitState {
    habit: Habit,
    armed_timer: Option<TimerSlot>,
}

/// Reusable buffers for `Core::drain_into` and `Core::handle_into`. The caller empties
/// them (or `clear`s them) when it has carried the outputs out.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    pub commands: Vec<Command>,
    pub events: Vec<Event>,
}

impl Outputs {
    pub fn clear(&mut self) {
        self.commands.clear();
        self.events.clear();
    }
}

/// Answer to "where is my start?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueStatus {
    pub position: u32,
    pub queue_len: u32,
    /// `None` when no capacity is on its way and none can be ordered.
    pub estimated_wait_ms: Option<u64>,
}

/// The whole state is serde data (`Core::snapshot`, `Core::restore`; the format in
/// `crate::snapshot`): every field but scratch buffers, the policy as what it learned.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Core {
    config: CoreConfig,
    #[serde(with = "snapshot::policy_state")]
    policy: Box<dyn ScalingPolicy>,
    now: Timestamp,
    users: IdMap<UserId, User>,
    servers: IdMap<ServerId, Server>,
    nodes: NodeMap,
    free_dedicated: FreeIndex,
    free_cloud: FreeIndex,
    queue: StartQueue,
    /// Armed timers, earliest first. Cancelling is lazy: an entry is live only while
    /// its owner still records that deadline (`timer_is_live`); dead entries are
    /// skipped when they surface and purged when they outnumber the live ones.
    timers: TimerQueue<Timer>,
    next_timer_seq: u64,
    timers_live: usize,
    /// The head entry's `seq` once `tidy_timers` found it live; forgotten whenever a
    /// timer dies, so the head's owner is not looked up again after every input. (A
    /// death missed here would only surface as a spare `Input::Timeout`: firing
    /// always checks.)
    head_checked: Option<u64>,
    pending: PendingMap<Pending>,
    commands: VecDeque<Command>,
    events: VecDeque<Event>,
    next_command_id: u64,
    next_node_id: u64,
    totals: FleetTotals,
    last_scale_up_at: Option<Timestamp>,
    scale_tick_at: Option<Timestamp>,
    /// Largest usable RAM a new VM of any catalog type offers.
    largest_placeable_mib: u32,
    /// Largest usable RAM of a ready dedicated node.
    largest_dedicated_usable_mib: u32,
    /// Scratch for the policy's view of a queue longer than `QUEUE_VIEW_MAX`.
    #[serde(skip)]
    queue_view: Vec<(u32, u32)>,
    /// Usable RAM of a new node of each catalog type (catalog and reserve are fixed).
    type_usable_mib: Vec<u32>,
    /// Usable RAM of every node still provisioning.
    provisioning: BTreeMap<NodeId, u32>,
    #[serde(skip)]
    dispatch_buffer: Vec<QueueEntry>,
    /// Ready cloud nodes that hold no server (scale-down candidates).
    empty_cloud: BTreeSet<NodeId>,
    /// Cloud nodes cordoned by the policy.
    draining: BTreeSet<NodeId>,
    provider: ProviderHealth,
    /// The fallback order of locations.
    location_order: Vec<crate::types::LocationIdx>,
    /// Per-server start habits and pre-warm timers (only when pre-warm is enabled).
    habits: IdMap<ServerId, HabitState>,
    n_deletes_to_retry: u32,
    stats: CoreStats,
}

impl Core {
    pub fn new(config: CoreConfig) -> Core {
        assert!(!config.tiers_mib.is_empty(), "at least one RAM tier");
        let policy = config.policy.build(&config.catalog);
        let location_order = config.policy.location_order(&config.catalog);
        let type_usable_mib = crate::policy::type_usable_mib(&config.catalog, &config.reserve);
        let largest_placeable_mib = type_usable_mib.iter().copied().max().unwrap_or(0);
        // Timers armed these fixed delays ahead get FIFO lanes (see `timerq`).
        let timers = TimerQueue::new(reconfigure::timer_lanes(&config));
        Core {
            config,
            policy,
            now: Timestamp::ZERO,
            users: IdMap::new(),
            servers: IdMap::new(),
            nodes: IdMap::new(),
            free_dedicated: FreeIndex::default(),
            free_cloud: FreeIndex::default(),
            queue: StartQueue::default(),
            timers,
            next_timer_seq: 0,
            timers_live: 0,
            head_checked: None,
            pending: PendingMap::default(),
            commands: VecDeque::new(),
            events: VecDeque::new(),
            next_command_id: 1,
            next_node_id: 1,
            totals: FleetTotals::default(),
            last_scale_up_at: None,
            scale_tick_at: None,
            largest_placeable_mib,
            largest_dedicated_usable_mib: 0,
            queue_view: Vec::new(),
            type_usable_mib,
            dispatch_buffer: Vec::new(),
            empty_cloud: BTreeSet::new(),
            draining: BTreeSet::new(),
            provider: ProviderHealth::default(),
            location_order,
            habits: IdMap::new(),
            n_deletes_to_retry: 0,
            provisioning: BTreeMap::new(),
            stats: CoreStats::default(),
        }
    }

    /// Replace the scaling policy (for policies built outside `PolicyConfig`).
    pub fn set_policy(&mut self, policy: Box<dyn ScalingPolicy>) {
        self.policy = policy;
    }

    // ------------------------------------------------------------------ contract

    /// Handle one input at `now`. Due timers are processed first, so a late driver
    /// still sees timers fire in order. Time never goes backwards: an earlier `now`
    /// is treated as the last one seen.
    pub fn handle(&mut self, now: Timestamp, input: Input) -> Result<(), Rejection> {
        self.now = self.now.max(now);
        self.fire_due_timers();
        self.ensure_scale_tick();
        let result = self.handle_input(input);
        self.tidy_timers();
        self.assert_totals();
        debug_assert!(self.check_invariants().is_ok(), "{:?}", self.check_invariants());
        result.map_err(|reason| Rejection { reason })
    }

    #[inline]
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    #[inline]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    #[inline]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.peek().map(|(at, _, _)| at)
    }

    /// Drain both output queues: every command to `on_command`, then every event to
    /// `on_event`, in the order the core issued them. What a driver does after each
    /// `handle`, written once. (A driver that needs `&mut` of a struct holding the
    /// core inside the callbacks uses `drain_into` and walks the buffers instead.)
    #[inline]
    pub fn drain(&mut self, mut on_command: impl FnMut(Command), mut on_event: impl FnMut(Event)) {
        while let Some(command) = self.commands.pop_front() {
            on_command(command);
        }
        while let Some(event) = self.events.pop_front() {
            on_event(event);
        }
    }

    /// Move both output queues to the end of `outputs`' buffers (kept by the caller,
    /// so their allocations are reused from one input to the next).
    #[inline]
    pub fn drain_into(&mut self, outputs: &mut Outputs) {
        outputs.commands.extend(self.commands.drain(..));
        outputs.events.extend(self.events.drain(..));
    }

    /// `handle`, then `drain_into`: the whole driver step for one input.
    #[inline]
    pub fn handle_into(&mut self, now: Timestamp, input: Input, outputs: &mut Outputs) -> Result<(), Rejection> {
        let result = self.handle(now, input);
        self.drain_into(outputs);
        result
    }

    /// The commands whose result the core still waits for (`CommandKind::awaits_result`),
    /// by id, as issued: what a shell must see finished, and what it carries out again
    /// after a restart. O(pending commands); rebuilt from the core's pending state.
    pub fn awaited_commands(&self) -> Vec<Command> {
        let mut awaited: Vec<Command> = self
            .pending
            .iter()
            .map(|(id, pending)| Command {
                id,
                kind: self.awaited_kind(*pending),
            })
            .collect();
        awaited.sort_unstable_by_key(|c| c.id);
        awaited
    }

    fn awaited_kind(&self, pending: Pending) -> CommandKind {
        match pending {
            Pending::Provision(node_id) => {
                let NodeKind::Cloud { server_type, location } = self.nodes[&node_id].kind else {
                    unreachable!("only cloud nodes are provisioned")
                };
                CommandKind::ProvisionNode {
                    node_id,
                    server_type,
                    location,
                }
            }
            Pending::DeleteNode(node_id) => CommandKind::DeleteNode { node_id },
            Pending::StartContainer {
                server_id,
                restore_world,
            } => {
                let server = &self.servers[&server_id];
                CommandKind::StartContainer {
                    server_id,
                    node_id: server.node.expect("a starting server has a node"),
                    ram_mib: server.ram_mib,
                    restore_world,
                }
            }
            Pending::StopContainer(server_id) => {
                let server = &self.servers[&server_id];
                let ServerState::Stopping { reason } = server.state else {
                    unreachable!("a stop is pending only while stopping")
                };
                CommandKind::StopContainer {
                    server_id,
                    node_id: server.node.expect("a stopping server has a node"),
                    reason,
                }
            }
        }
    }

    // ------------------------------------------------------------------ queries

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    pub fn now(&self) -> Timestamp {
        self.now
    }

    #[inline]
    pub fn server(&self, server_id: ServerId) -> Option<&Server> {
        self.servers.get(&server_id)
    }

    pub fn servers(&self) -> impl Iterator<Item = (ServerId, &Server)> {
        self.servers.iter()
    }

    pub fn node(&self, node_id: NodeId) -> Option<&Node> {
        self.nodes.get(&node_id)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    pub fn user(&self, user_id: UserId) -> Option<&User> {
        self.users.get(&user_id)
    }

    pub fn users(&self) -> impl Iterator<Item = (UserId, &User)> {
        self.users.iter()
    }

    /// The balance as booked: accruals not yet settled are not included.
    pub fn balance_micros(&self, user_id: UserId) -> Option<i64> {
        self.users.get(&user_id).map(|u| u.balance_micros)
    }

    #[inline]
    pub fn totals(&self) -> FleetTotals {
        self.totals
    }

    pub fn stats(&self) -> CoreStats {
        self.stats
    }

    #[inline]
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub fn queue_status(&self, server_id: ServerId) -> Option<QueueStatus> {
        let server = self.servers.get(&server_id)?;
        let seq = server.queue_seq?;
        let position = self.queue.position(seq) as u32;
        let expected = self.config.catalog.expected_provision_ms;
        let incoming_ready_at = self
            .nodes
            .values()
            .filter(|n| n.state == NodeState::Provisioning)
            .map(|n| n.created_at.plus_ms(expected))
            .min();
        let can_order = self.config.policy.autoscales();
        let estimated_wait_ms = match incoming_ready_at {
            Some(at) => Some(at.since(self.now)),
            None if can_order => Some(expected),
            None => None,
        };
        Some(QueueStatus {
            position,
            queue_len: self.queue.len() as u32,
            estimated_wait_ms,
        })
    }

    /// Settle every open accrual up to now, so balances reflect all usage. Drivers
    /// call it at the end of a simulation or before an invoice.
    pub fn settle_all(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
        let ids: Vec<ServerId> = self.servers.keys().collect();
        for id in ids {
            self.settle(id);
        }
    }

    /// Ids up to `id_max` are taken (a shell that skipped a quarantined input on replay
    /// has commands recorded under ids this core did not issue): the next command gets
    /// a larger id. Never moves the counter back.
    pub fn reserve_command_ids_through(&mut self, id_max: CommandId) {
        self.next_command_id = self.next_command_id.max(id_max.0 + 1);
    }

    fn push_command(&mut self, kind: CommandKind) -> CommandId {
        let id = CommandId(self.next_command_id);
        self.next_command_id += 1;
        self.commands.push_back(Command { id, kind });
        id
    }

    /// Issue a command whose result the core waits for, remembering what it awaits.
    fn push_awaited(&mut self, kind: CommandKind, awaited: Pending) -> CommandId {
        debug_assert!(kind.awaits_result());
        let id = self.push_command(kind);
        self.pending.insert(id, awaited);
        id
    }
}
