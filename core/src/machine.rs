//! The state machine: `handle(now, input)`, `poll_command()`, `poll_event()`,
//! `poll_timeout()`. No I/O, no clock, no randomness.

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
use crate::prewarm::{BilledTo, Habit};
use crate::queue::{QueueEntry, StartQueue};
use crate::scaling::{FleetTotals, FleetView, QUEUE_VIEW_MAX, ScalingDecision, ScalingPolicy, Trigger};
use crate::timerq::TimerQueue;
use crate::types::{
    CommandId, LocationIdx, MIB_PER_GIB, MS_PER_HOUR, MS_PER_MONTH, NodeId, ServerId, ServerTypeIdx, Timestamp, UserId,
    ram_time_numerator,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Provision(NodeId),
    DeleteNode(NodeId),
    StartContainer(ServerId),
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
#[derive(Debug, Clone, Default)]
struct HabitState {
    habit: Habit,
    timer_at: Option<TimerSlot>,
}

/// Answer to "where is my start?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueStatus {
    pub position: u32,
    pub queue_len: u32,
    /// `None` when no capacity is on its way and none can be ordered.
    pub estimated_wait_ms: Option<u64>,
}

pub struct Core {
    config: CoreConfig,
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
    queue_view: Vec<(u32, u32)>,
    /// Usable RAM of a new node of each catalog type (catalog and reserve are fixed).
    type_usable_mib: Vec<u32>,
    /// Usable RAM of every node still provisioning.
    provisioning: BTreeMap<NodeId, u32>,
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
        let type_usable_mib = crate::scaling::type_usable_mib(&config.catalog, &config.reserve);
        let largest_placeable_mib = type_usable_mib.iter().copied().max().unwrap_or(0);
        // Timers armed these fixed delays ahead get FIFO lanes (see `timerq`).
        let timers = TimerQueue::new([
            config.lifecycle.archive_after_ms,
            config.lifecycle.reservation_timeout_ms,
            config.lifecycle.idle_sleep_after_ms,
            config.lifecycle.provision_timeout_ms,
            config.policy.evaluate_every_ms().unwrap_or(0),
        ]);
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

    // ------------------------------------------------------------------ inputs

    fn handle_input(&mut self, input: Input) -> Result<(), RejectReason> {
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
            Input::CommandSucceeded { command_id } => self.handle_command_result(command_id, None),
            Input::CommandFailed { command_id, kind, .. } => self.handle_command_result(command_id, Some(kind)),
            Input::Timeout => Ok(()),
        }
    }

    fn handle_register_user(&mut self, user_id: UserId) -> Result<(), RejectReason> {
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
                timer_at: None,
            },
        );
        Ok(())
    }

    fn handle_top_up(&mut self, user_id: UserId, amount_micros: i64) -> Result<(), RejectReason> {
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

    fn handle_create_server(&mut self, server_id: ServerId, owner: UserId, ram_mib: u32) -> Result<(), RejectReason> {
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
                timer_at: None,
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

    fn check_tier(&self, ram_mib: u32) -> Result<(), RejectReason> {
        if self.config.tiers_mib.contains(&ram_mib) {
            Ok(())
        } else {
            Err(RejectReason::InvalidTier { ram_mib })
        }
    }

    fn handle_update_tier(&mut self, server_id: ServerId, ram_mib: u32) -> Result<(), RejectReason> {
        self.check_tier(ram_mib)?;
        let server = self.servers.get(&server_id).ok_or(RejectReason::UnknownServer)?;
        match server.state {
            ServerState::Stopped | ServerState::Sleeping | ServerState::Archived => {
                self.servers.get_mut(&server_id).expect("exists").ram_mib = ram_mib;
                Ok(())
            }
            state => Err(RejectReason::WrongState {
                state: state.name().to_string(),
            }),
        }
    }

    fn handle_start(&mut self, server_id: ServerId) -> Result<(), RejectReason> {
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

    /// Place a start at once when nothing waits and a node fits, else queue it.
    fn begin_start(&mut self, server_id: ServerId, request: StartRequest) {
        let ram_mib = self.servers[&server_id].ram_mib;
        // Nobody waiting and a node fits: place at once, without a queue round trip.
        if self.queue.is_empty()
            && let Some(node_id) = self.choose_node(ram_mib, None)
        {
            self.settle(server_id);
            self.servers.get_mut(&server_id).expect("exists").start = Some(request);
            self.place(server_id, node_id);
            return;
        }
        self.enqueue(server_id, request, false);
        self.dispatch_newcomer(server_id);
        self.request_demand_evaluation();
    }

    fn tier_placeable(&self, ram_mib: u32) -> bool {
        ram_mib <= self.largest_placeable_mib || ram_mib <= self.largest_dedicated_usable_mib
    }

    fn update_largest_dedicated(&mut self) {
        self.largest_dedicated_usable_mib = self
            .nodes
            .values()
            .filter(|n| !n.is_cloud() && n.state == NodeState::Ready)
            .map(|n| n.usable_mib())
            .max()
            .unwrap_or(0);
    }

    fn handle_stop(&mut self, server_id: ServerId) -> Result<(), RejectReason> {
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
                    self.stats.starts_cancelled += 1;
                    self.events.push_back(Event::StartEnded {
                        server_id,
                        requested_at,
                        outcome: StartOutcome::Cancelled,
                    });
                }
                Ok(())
            }
            ServerState::Stopped | ServerState::Sleeping | ServerState::Archived => Ok(()),
        }
    }

    fn handle_cancel(&mut self, server_id: ServerId) -> Result<(), RejectReason> {
        let server = self.servers.get(&server_id).ok_or(RejectReason::UnknownServer)?;
        match server.state {
            ServerState::Queued => {
                self.end_queued_start(server_id, StartOutcome::Cancelled);
                Ok(())
            }
            ServerState::Stopping { .. } if server.start_after_stop.is_some() => self.handle_stop(server_id),
            state => Err(RejectReason::WrongState {
                state: state.name().to_string(),
            }),
        }
    }

    fn handle_delete(&mut self, server_id: ServerId) -> Result<(), RejectReason> {
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

    fn handle_add_dedicated(&mut self, name: String, capacity_mib: u32, monthly_cost_micros: u64, is_system: bool) {
        let node_id = self.alloc_node_id();
        let reserve_mib = self.config.reserve.reserve_mib(capacity_mib, is_system);
        let kind = NodeKind::Dedicated {
            name,
            monthly_cost_micros,
        };
        let node = Node::new(node_id, kind, is_system, capacity_mib, reserve_mib, self.now);
        self.nodes.insert(node_id, node);
        self.totals.provisioning_usable_mib += (capacity_mib - reserve_mib) as u64;
        self.provisioning.insert(node_id, capacity_mib - reserve_mib);
        self.node_became_ready(node_id);
        self.update_largest_dedicated();
    }

    fn handle_server_booted(&mut self, server_id: ServerId) -> Result<(), RejectReason> {
        let server = self.servers.get_mut(&server_id).ok_or(RejectReason::UnknownServer)?;
        if server.state != ServerState::Starting {
            return Err(RejectReason::WrongState {
                state: server.state.name().to_string(),
            });
        }
        let now = self.now;
        let start = server.start.take().expect("a starting server has a start request");
        server.state = ServerState::Running;
        server.running_since = Some(now);
        server.idle_since = (server.players == 0).then_some(now);
        if let Some(command_id) = server.pending_command.take() {
            // Minecraft answering proves the container runs: the reservation is confirmed.
            self.pending.remove(&command_id);
        }
        self.stats.starts_running += 1;
        self.events.push_back(Event::ServerRunning {
            server_id,
            requested_at: start.requested_at,
            placed_at: start.placed_at.expect("placed"),
        });
        self.events.push_back(Event::StartEnded {
            server_id,
            requested_at: start.requested_at,
            outcome: StartOutcome::Running,
        });
        self.arm_idle_timer(server_id);
        Ok(())
    }

    fn handle_player_count(&mut self, server_id: ServerId, players: u32) -> Result<(), RejectReason> {
        let server = self.servers.get(&server_id).ok_or(RejectReason::UnknownServer)?;
        if players > 0
            && matches!(server.state, ServerState::Starting | ServerState::Running)
            && self.is_prewarm(server_id)
        {
            self.record_habit(server_id);
            self.claim_prewarm(server_id);
        }
        let server = self.servers.get_mut(&server_id).expect("exists");
        let was_idle = server.players == 0;
        server.players = players;
        if server.state == ServerState::Running {
            if players == 0 && !was_idle {
                server.idle_since = Some(self.now);
            } else if players > 0 {
                server.idle_since = None;
            }
            self.arm_idle_timer(server_id);
        }
        Ok(())
    }

    fn handle_container_exited(&mut self, server_id: ServerId) -> Result<(), RejectReason> {
        let server = self.servers.get(&server_id).ok_or(RejectReason::UnknownServer)?;
        match server.state {
            ServerState::Starting => {
                self.retry_start(server_id);
                Ok(())
            }
            ServerState::Running => {
                self.release_ram(server_id);
                self.finish_stopped(server_id, StopReason::Crashed);
                Ok(())
            }
            ServerState::Stopping { reason } => {
                self.release_ram(server_id);
                self.finish_stopped(server_id, reason);
                Ok(())
            }
            state => Err(RejectReason::WrongState {
                state: state.name().to_string(),
            }),
        }
    }

    fn handle_node_lost(&mut self, node_id: NodeId) -> Result<(), RejectReason> {
        let node = self.nodes.get(&node_id).ok_or(RejectReason::UnknownNode)?;
        match node.state {
            NodeState::Lost => return Ok(()),
            NodeState::Provisioning => {
                // Not holding servers: a failed provision.
                self.abandon_provisioning(node_id);
                self.remove_node(node_id, NodeRemoval::ProvisionFailed);
                self.request_demand_evaluation();
                return Ok(());
            }
            NodeState::Deleting => {
                // Gone before the delete was confirmed: as good as deleted.
                if let Some(command_id) = node.pending_command {
                    self.pending.remove(&command_id);
                }
                self.remove_node(node_id, NodeRemoval::Deleted);
                return Ok(());
            }
            NodeState::Ready | NodeState::Draining => {}
        }
        self.stats.nodes_lost += 1;
        // Out of placement first, so nothing released below lands here again.
        self.unindex_node(node_id);
        self.nodes.get_mut(&node_id).expect("exists").state = NodeState::Lost;
        self.update_largest_dedicated();
        let on_node: Vec<ServerId> = self
            .servers
            .iter()
            .filter(|(_, s)| s.node == Some(node_id))
            .map(|(id, _)| id)
            .collect();
        for server_id in on_node {
            let server = &self.servers[&server_id];
            match server.state {
                ServerState::Starting => self.retry_start(server_id),
                ServerState::Running if server.prewarm_hold => {
                    // Pre-warmed and nobody came yet: not worth a restart elsewhere.
                    self.release_ram(server_id);
                    self.finish_stopped(server_id, StopReason::NodeLost);
                }
                ServerState::Running => {
                    // The world restarts elsewhere: a fresh start at the head of the queue.
                    self.release_ram(server_id);
                    self.finish_stopped(server_id, StopReason::NodeLost);
                    let server = self.servers.get_mut(&server_id).expect("exists");
                    server.start_after_stop = None;
                    self.stats.starts_requested += 1;
                    let request = StartRequest::new(self.now);
                    self.enqueue(server_id, request, true);
                }
                ServerState::Stopping { reason } => {
                    self.release_ram(server_id);
                    self.finish_stopped(server_id, reason);
                }
                _ => unreachable!("only RAM-holding servers sit on a node"),
            }
        }
        let node = self.nodes.get_mut(&node_id).expect("exists");
        assert_eq!(node.allocated_mib, 0, "lost node still holds RAM");
        if node.is_cloud() {
            // The provider may still bill the VM: delete it.
            self.totals.n_cloud_nodes -= 1;
            self.issue_delete_node(node_id);
        } else {
            self.events.push_back(Event::NodeRemoved {
                node_id,
                reason: NodeRemoval::Lost,
            });
        }
        self.dispatch();
        self.request_demand_evaluation();
        Ok(())
    }

    /// `failure`: `None` when the command succeeded.
    fn handle_command_result(
        &mut self,
        command_id: CommandId,
        failure: Option<FailureKind>,
    ) -> Result<(), RejectReason> {
        let succeeded = failure.is_none();
        // Results of commands the core no longer waits for (superseded, or fire-and-forget
        // such as ledger entries and mail) are acknowledged and ignored.
        let Some(pending) = self.pending.remove(&command_id) else {
            return Ok(());
        };
        match pending {
            Pending::Provision(node_id) => {
                let NodeKind::Cloud { server_type, location } = self.nodes[&node_id].kind else {
                    unreachable!("only cloud nodes are provisioned")
                };
                match failure {
                    None => self.provider.on_success((server_type, location)),
                    Some(kind) => {
                        match kind {
                            FailureKind::ResourceUnavailable => self.stats.provision_sold_out += 1,
                            FailureKind::RateLimited => self.stats.provision_rate_limited += 1,
                            FailureKind::Other => {}
                        }
                        let fallback = &self.config.policy.fallback;
                        self.provider
                            .on_failure(fallback, kind, (server_type, location), self.now);
                    }
                }
                if succeeded {
                    let node = self.nodes.get_mut(&node_id).expect("pending node exists");
                    node.pending_command = None;
                    self.timer_died();
                    self.node_became_ready(node_id);
                } else {
                    self.abandon_provisioning(node_id);
                    self.remove_node(node_id, NodeRemoval::ProvisionFailed);
                    self.request_demand_evaluation();
                }
            }
            Pending::DeleteNode(node_id) => {
                self.nodes
                    .get_mut(&node_id)
                    .expect("pending node exists")
                    .pending_command = None;
                if succeeded {
                    let reason = if self.nodes[&node_id].state == NodeState::Lost {
                        NodeRemoval::Lost
                    } else {
                        NodeRemoval::Deleted
                    };
                    self.remove_node(node_id, reason);
                } else {
                    // Retried on the next scale tick; the node takes nothing meanwhile.
                    self.n_deletes_to_retry += 1;
                    self.ensure_scale_tick();
                }
            }
            Pending::StartContainer(server_id) => {
                let server = self.servers.get_mut(&server_id).expect("pending server exists");
                server.pending_command = None;
                if succeeded {
                    self.arm_server_timer(server_id, None);
                } else {
                    self.retry_start(server_id);
                }
            }
            Pending::StopContainer(server_id) => {
                let server = self.servers.get_mut(&server_id).expect("pending server exists");
                server.pending_command = None;
                let ServerState::Stopping { reason } = server.state else {
                    unreachable!("a stop is pending only while stopping")
                };
                if !succeeded && server.stop_attempts < self.config.lifecycle.start_attempts_max {
                    server.stop_attempts += 1;
                    let node_id = server.node.expect("stopping server has a node");
                    self.issue_stop_container(server_id, node_id, reason);
                } else {
                    // After the last attempt the shell has killed the container.
                    self.release_ram(server_id);
                    self.finish_stopped(server_id, reason);
                }
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------ timers

    fn fire_due_timers(&mut self) {
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
                        .timer_at = None;
                    self.fire_server_timer(server_id);
                }
                Timer::User(user_id) => {
                    self.users.get_mut(&user_id).expect("timer's user exists").timer_at = None;
                    self.fire_balance_timer(user_id);
                }
                Timer::Node(node_id) => self.fire_provision_timeout(node_id),
                Timer::Prewarm(server_id) => {
                    self.habits.get_mut(&server_id).expect("timer's habit exists").timer_at = None;
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

    fn timer_is_live(&self, at: Timestamp, seq: u64, timer: Timer) -> bool {
        let slot = Some(TimerSlot { at, seq });
        match timer {
            Timer::Server(id) => self.servers.get(&id).is_some_and(|s| s.timer_at == slot),
            Timer::User(id) => self.users.get(&id).is_some_and(|u| u.timer_at == slot),
            Timer::Node(id) => self.nodes.get(&id).is_some_and(|n| {
                n.state == NodeState::Provisioning
                    && n.created_at.plus_ms(self.config.lifecycle.provision_timeout_ms) == at
            }),
            Timer::ScaleTick => self.scale_tick_at == Some(at),
            Timer::Prewarm(id) => self.habits.get(&id).is_some_and(|h| h.timer_at == slot),
        }
    }

    fn push_timer(&mut self, at: Timestamp, timer: Timer) -> TimerSlot {
        let seq = self.next_timer_seq;
        self.next_timer_seq += 1;
        self.timers.push(self.now, at, seq, timer);
        self.timers_live += 1;
        TimerSlot { at, seq }
    }

    /// A live timer fired, was re-armed or lost its owner's interest.
    fn timer_died(&mut self) {
        self.timers_live -= 1;
        self.head_checked = None;
    }

    /// Drop dead timers from the head (so `poll_timeout` names a live one) and purge
    /// them all when they outnumber the live ones.
    fn tidy_timers(&mut self) {
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

    fn fire_server_timer(&mut self, server_id: ServerId) {
        let server = &self.servers[&server_id];
        match server.state {
            ServerState::Starting => {
                // Reservation not confirmed in time: release it. The container may still
                // come up late, so make sure it is stopped.
                let node_id = server.node.expect("starting server has a node");
                if let Some(command_id) = server.pending_command {
                    self.pending.remove(&command_id);
                }
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

    fn fire_provision_timeout(&mut self, node_id: NodeId) {
        let node = &self.nodes[&node_id];
        if node.state != NodeState::Provisioning {
            return;
        }
        self.abandon_provisioning(node_id);
        self.stats.provision_timeouts += 1;
        // The VM may exist and bill: delete it. `NodeRemoved` follows the delete.
        self.nodes.get_mut(&node_id).expect("exists").state = NodeState::Deleting;
        self.issue_delete_node(node_id);
        self.request_demand_evaluation();
    }

    fn arm_timer(&mut self, slot: Option<TimerSlot>, new_at: Option<Timestamp>, timer: Timer) -> Option<TimerSlot> {
        if slot.map(|s| s.at) == new_at {
            return slot;
        }
        if slot.is_some() {
            self.timer_died();
        }
        new_at.map(|at| self.push_timer(at, timer))
    }

    /// A provisioning placeholder will not become ready: drop it from the totals and
    /// its timeout. The caller decides whether the VM must still be deleted.
    fn abandon_provisioning(&mut self, node_id: NodeId) {
        let node = self.nodes.get_mut(&node_id).expect("exists");
        assert_eq!(node.state, NodeState::Provisioning);
        if let Some(command_id) = node.pending_command.take() {
            self.pending.remove(&command_id);
        }
        let usable = node.usable_mib() as u64;
        self.timer_died();
        self.totals.provisioning_usable_mib -= usable;
        self.provisioning.remove(&node_id);
        self.totals.n_cloud_nodes -= 1;
        self.totals.n_cloud_provisioning -= 1;
    }

    fn arm_server_timer(&mut self, server_id: ServerId, at: Option<Timestamp>) {
        let slot = self.servers[&server_id].timer_at;
        let new = self.arm_timer(slot, at, Timer::Server(server_id));
        self.servers.get_mut(&server_id).expect("exists").timer_at = new;
    }

    fn arm_idle_timer(&mut self, server_id: ServerId) {
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

    fn ensure_scale_tick(&mut self) {
        if self.scale_tick_at.is_some() {
            return;
        }
        if let Some(every_ms) = self.config.policy.evaluate_every_ms() {
            let at = self.now.plus_ms(every_ms);
            self.scale_tick_at = Some(at);
            self.push_timer(at, Timer::ScaleTick);
        }
    }

    // ------------------------------------------------------------------ queue and placement

    fn enqueue(&mut self, server_id: ServerId, request: StartRequest, front: bool) {
        self.settle(server_id);
        let server = self.servers.get_mut(&server_id).expect("exists");
        let entry = QueueEntry {
            server_id,
            ram_mib: server.ram_mib,
            requested_at: request.requested_at,
        };
        let seq = if front {
            self.queue.push_front(entry)
        } else {
            self.queue.push_back(entry)
        };
        server.state = ServerState::Queued;
        server.start = Some(request);
        server.queue_seq = Some(seq);
        server.accrual.kind = None;
        self.totals.queued_count += 1;
        self.totals.queued_demand_mib += server.ram_mib as u64;
        let position = self.queue.position(seq) as u32;
        self.events.push_back(Event::StartQueued { server_id, position });
    }

    fn dequeue(&mut self, server_id: ServerId) {
        let server = self.servers.get_mut(&server_id).expect("exists");
        let seq = server.queue_seq.take().expect("queued");
        let entry = self.queue.remove(seq);
        self.totals.queued_count -= 1;
        self.totals.queued_demand_mib -= entry.ram_mib as u64;
    }

    /// Start what fits, in queue order (at most `scan_max` entries per pass).
    ///
    /// Starvation: smaller requests may overtake a head that does not fit (backfill)
    /// until the head has waited `head_bypass_ms_max`. From then on the head holds a
    /// *claim* on one node, the ready node with the most free RAM that could hold it:
    /// nothing else is placed there, so the node only empties until the head fits.
    /// Backfill goes on elsewhere. When no ready node could ever hold the head, nothing
    /// overtakes it at all until one appears (the policy orders it).
    fn dispatch(&mut self) {
        let max_free = self.free_dedicated.max_free_mib().max(self.free_cloud.max_free_mib());
        if self.queue.smallest_mib().is_none_or(|smallest| smallest > max_free) {
            // Nothing queued, or nothing queued fits anywhere.
            return;
        }
        let scan_max = self.config.queue.scan_max as usize;
        let head_bypass_ms_max = self.config.queue.head_bypass_ms_max;
        let mut candidates = std::mem::take(&mut self.dispatch_buffer);
        candidates.clear();
        candidates.extend(self.queue.iter().take(scan_max).map(|(_, entry)| *entry));
        let mut claimed: Option<NodeId> = None;
        let mut head_seen = false;
        for entry in &candidates {
            let max_free = self.free_dedicated.max_free_mib().max(self.free_cloud.max_free_mib());
            if entry.ram_mib <= max_free
                && let Some(node_id) = self.choose_node(entry.ram_mib, claimed)
            {
                self.dequeue(entry.server_id);
                self.place(entry.server_id, node_id);
                continue;
            }
            if !head_seen {
                head_seen = true;
                if self.now.since(entry.requested_at) >= head_bypass_ms_max {
                    claimed = self.claim_node_for(entry.ram_mib);
                    if claimed.is_none() {
                        break;
                    }
                }
            }
        }
        self.dispatch_buffer = candidates;
    }

    /// Place a request just added to the tail, if the rules let it start now.
    ///
    /// Every pass of `dispatch` ends with no request in its window placeable, and
    /// free RAM only grows through paths that call `dispatch` again; so when a request
    /// joins the queue only the newcomer needs a look, not the whole window.
    fn dispatch_newcomer(&mut self, server_id: ServerId) {
        let scan_max = self.config.queue.scan_max as usize;
        if self.queue.len() > scan_max {
            return;
        }
        let Some((_, head)) = self.queue.iter().next() else {
            return;
        };
        let (head_server, head_ram_mib, head_requested_at) = (head.server_id, head.ram_mib, head.requested_at);
        let ram_mib = self.servers[&server_id].ram_mib;
        let claimed = if head_server == server_id {
            None
        } else if self.now.since(head_requested_at) >= self.config.queue.head_bypass_ms_max {
            match self.claim_node_for(head_ram_mib) {
                Some(node_id) => Some(node_id),
                None => return,
            }
        } else {
            None
        };
        if let Some(node_id) = self.choose_node(ram_mib, claimed) {
            self.dequeue(server_id);
            self.place(server_id, node_id);
        }
    }

    /// Paid-for dedicated capacity first, then cloud (by `[core.placement]`: spread and
    /// pack by default), never `claimed`.
    fn choose_node(&self, need_mib: u32, claimed: Option<NodeId>) -> Option<NodeId> {
        let placement = &self.config.placement;
        self.free_dedicated
            .choose_excluding(need_mib, placement.dedicated, claimed)
            .or_else(|| self.free_cloud.choose_excluding(need_mib, placement.cloud, claimed))
    }

    /// The ready node with the most free RAM among those large enough for `need_mib`.
    fn claim_node_for(&self, need_mib: u32) -> Option<NodeId> {
        let eligible = |node_id: NodeId| self.nodes[&node_id].usable_mib() >= need_mib;
        let fast = [self.free_dedicated.max_free_node(), self.free_cloud.max_free_node()]
            .into_iter()
            .flatten()
            .filter(|&(_, id)| eligible(id))
            .max();
        if let Some((_, node_id)) = fast {
            return Some(node_id);
        }
        self.nodes
            .values()
            .filter(|n| n.state == NodeState::Ready && n.usable_mib() >= need_mib)
            .max_by_key(|n| (n.free_mib(), std::cmp::Reverse(n.id)))
            .map(|n| n.id)
    }

    /// Reserve RAM for a server on a node, atomically with the decision.
    fn place(&mut self, server_id: ServerId, node_id: NodeId) {
        let ram_mib = self.servers[&server_id].ram_mib;
        let node = self.nodes.get_mut(&node_id).expect("placement node exists");
        assert_eq!(node.state, NodeState::Ready, "placing on a node that is not ready");
        let free_old = node.free_mib();
        assert!(ram_mib <= free_old, "placement would overcommit node {node_id}");
        node.allocated_mib += ram_mib;
        node.n_servers += 1;
        node.empty_since = None;
        let free_new = node.free_mib();
        let is_cloud = node.is_cloud();
        if node.n_servers == 1 && is_cloud {
            self.empty_cloud.remove(&node_id);
        }
        self.index_for(is_cloud).update(node_id, free_old, free_new);
        self.totals.allocated_mib += ram_mib as u64;
        self.totals.servers_holding_ram += 1;

        let now = self.now;
        let server = self.servers.get_mut(&server_id).expect("exists");
        let owner = server.owner;
        server.state = ServerState::Starting;
        server.node = Some(node_id);
        server.players = 0;
        server.stop_attempts = 0;
        let start = server.start.as_mut().expect("placing a start request");
        start.placed_at = Some(now);
        let requested_at = start.requested_at;
        let prewarm = start.prewarm;
        server.prewarm_hold = prewarm;
        let platform_pays = prewarm && self.config.prewarm.billed_to == BilledTo::Platform;
        let restore_world = server.world_archived;
        server.world_archived = false;
        server.has_world = true;
        server.accrual.since = now;
        server.accrual.mib = ram_mib;
        if platform_pays {
            server.accrual.kind = Some(AccrualKind::Warm);
        } else {
            server.accrual.kind = Some(AccrualKind::Ram);
            self.accrue_user(owner);
            let user = self.users.get_mut(&owner).expect("owner");
            user.ram_mib_held += ram_mib as u64;
            user.holding.insert(server_id);
        }

        let command_id = self.push_command(CommandKind::StartContainer {
            server_id,
            node_id,
            ram_mib,
            restore_world,
        });
        self.pending.insert(command_id, Pending::StartContainer(server_id));
        self.servers.get_mut(&server_id).expect("exists").pending_command = Some(command_id);
        self.arm_server_timer(
            server_id,
            Some(now.plus_ms(self.config.lifecycle.reservation_timeout_ms)),
        );
        self.events.push_back(Event::StartPlaced {
            server_id,
            node_id,
            requested_at,
        });
        self.arm_user_timer(owner);
    }

    fn index_for(&mut self, is_cloud: bool) -> &mut FreeIndex {
        if is_cloud {
            &mut self.free_cloud
        } else {
            &mut self.free_dedicated
        }
    }

    /// Give back a server's RAM and close its RAM accrual.
    fn release_ram(&mut self, server_id: ServerId) {
        self.settle(server_id);
        let server = self.servers.get_mut(&server_id).expect("exists");
        let node_id = server.node.take().expect("holding RAM on a node");
        let ram_mib = server.accrual.mib;
        let owner = server.owner;
        let owner_pays = server.accrual.kind == Some(AccrualKind::Ram);
        server.accrual.kind = None;
        if let Some(command_id) = server.pending_command.take() {
            self.pending.remove(&command_id);
        }
        let now = self.now;
        let node = self.nodes.get_mut(&node_id).expect("node exists");
        let free_old = node.free_mib();
        node.allocated_mib -= ram_mib;
        node.n_servers -= 1;
        if node.n_servers == 0 {
            node.empty_since = Some(now);
        }
        let free_new = node.free_mib();
        let (is_cloud, indexed) = (node.is_cloud(), node.state == NodeState::Ready);
        let delete_now = node.state == NodeState::Draining && node.n_servers == 0 && is_cloud;
        if indexed {
            self.index_for(is_cloud).update(node_id, free_old, free_new);
            if is_cloud && free_new == self.nodes[&node_id].usable_mib() {
                self.empty_cloud.insert(node_id);
            }
        }
        self.totals.allocated_mib -= ram_mib as u64;
        self.totals.servers_holding_ram -= 1;
        if owner_pays {
            self.accrue_user(owner);
            let user = self.users.get_mut(&owner).expect("owner");
            user.ram_mib_held -= ram_mib as u64;
            user.holding.remove(&server_id);
        }
        self.events.push_back(Event::RamReleased {
            server_id,
            node_id,
            ram_mib,
        });
        if delete_now {
            self.unindex_node(node_id);
            self.nodes.get_mut(&node_id).expect("exists").state = NodeState::Deleting;
            self.totals.n_cloud_nodes -= 1;
            self.issue_delete_node(node_id);
        }
        self.arm_user_timer(owner);
    }

    /// A start attempt failed: give the RAM back and queue again at the front, or
    /// reject after too many attempts.
    fn retry_start(&mut self, server_id: ServerId) {
        self.release_ram(server_id);
        let server = self.servers.get_mut(&server_id).expect("exists");
        let mut request = server.start.take().expect("a starting server has a start request");
        request.attempts += 1;
        request.placed_at = None;
        if request.attempts >= self.config.lifecycle.start_attempts_max {
            server.state = ServerState::Stopped;
            self.arm_server_timer(server_id, None);
            self.begin_storage_accrual(server_id);
            self.end_start_event(
                server_id,
                request.requested_at,
                StartOutcome::Rejected {
                    reason: RejectReason::TooManyAttempts,
                },
            );
        } else {
            self.stats.starts_requeued += 1;
            self.arm_server_timer(server_id, None);
            self.enqueue(server_id, request, true);
        }
        self.dispatch();
    }

    fn end_queued_start(&mut self, server_id: ServerId, outcome: StartOutcome) {
        self.dequeue(server_id);
        let server = self.servers.get_mut(&server_id).expect("exists");
        let request = server.start.take().expect("queued server has a request");
        server.state = if server.world_archived {
            ServerState::Archived
        } else {
            ServerState::Stopped
        };
        self.begin_storage_accrual(server_id);
        self.end_start_event(server_id, request.requested_at, outcome);
        self.dispatch();
    }

    fn end_start_event(&mut self, server_id: ServerId, requested_at: Timestamp, outcome: StartOutcome) {
        match outcome {
            StartOutcome::Running => self.stats.starts_running += 1,
            StartOutcome::Rejected { .. } => self.stats.starts_rejected += 1,
            StartOutcome::Cancelled => self.stats.starts_cancelled += 1,
        }
        self.events.push_back(Event::StartEnded {
            server_id,
            requested_at,
            outcome,
        });
    }

    // ------------------------------------------------------------------ stopping

    fn begin_stop(&mut self, server_id: ServerId, reason: StopReason) {
        let server = self.servers.get_mut(&server_id).expect("exists");
        let node_id = server.node.expect("a server holding RAM has a node");
        if let Some(request) = server.start.take() {
            // Stopped while starting: that start ends here.
            let outcome = match reason {
                StopReason::OutOfBalance => StartOutcome::Rejected {
                    reason: RejectReason::OutOfBalance,
                },
                StopReason::Deleted => StartOutcome::Rejected {
                    reason: RejectReason::ServerDeleted,
                },
                _ => StartOutcome::Cancelled,
            };
            self.end_start_event(server_id, request.requested_at, outcome);
        }
        let server = self.servers.get_mut(&server_id).expect("exists");
        if let Some(command_id) = server.pending_command.take() {
            self.pending.remove(&command_id);
        }
        server.state = ServerState::Stopping { reason };
        server.stop_attempts = 0;
        self.arm_server_timer(server_id, None);
        self.issue_stop_container(server_id, node_id, reason);
    }

    fn issue_stop_container(&mut self, server_id: ServerId, node_id: NodeId, reason: StopReason) {
        let command_id = self.push_command(CommandKind::StopContainer {
            server_id,
            node_id,
            reason,
        });
        self.pending.insert(command_id, Pending::StopContainer(server_id));
        self.servers.get_mut(&server_id).expect("exists").pending_command = Some(command_id);
    }

    /// The container is gone and its RAM released: settle into the resting state.
    fn finish_stopped(&mut self, server_id: ServerId, reason: StopReason) {
        let server = self.servers.get_mut(&server_id).expect("exists");
        server.prewarm_hold = false;
        server.running_since = None;
        server.idle_since = None;
        server.players = 0;
        if server.delete_after_stop {
            self.remove_server(server_id);
            self.dispatch();
            return;
        }
        server.state = match reason {
            StopReason::Idle => ServerState::Sleeping,
            _ => ServerState::Stopped,
        };
        let start_after_stop = server.start_after_stop.take();
        self.begin_storage_accrual(server_id);
        self.events.push_back(Event::ServerStopped { server_id, reason });
        if self.servers[&server_id].state == ServerState::Sleeping {
            let at = self.now.plus_ms(self.config.lifecycle.archive_after_ms);
            self.arm_server_timer(server_id, Some(at));
        } else {
            self.arm_server_timer(server_id, None);
        }
        if let Some(requested_at) = start_after_stop {
            let owner = self.servers[&server_id].owner;
            if self.users[&owner].balance_micros > 0 {
                let request = StartRequest::new(requested_at);
                self.enqueue(server_id, request, false);
                self.dispatch();
                self.request_demand_evaluation();
                return;
            } else {
                self.end_start_event(
                    server_id,
                    requested_at,
                    StartOutcome::Rejected {
                        reason: RejectReason::InsufficientBalance,
                    },
                );
            }
        }
        self.dispatch();
    }

    fn remove_server(&mut self, server_id: ServerId) {
        self.settle(server_id);
        self.arm_server_timer(server_id, None);
        if let Some(habit) = self.habits.get(&server_id) {
            let slot = habit.timer_at;
            self.arm_timer(slot, None, Timer::Prewarm(server_id));
            self.habits.remove(&server_id);
        }
        let server = self.servers.remove(&server_id).expect("exists");
        assert!(
            !server.state.holds_ram() || server.node.is_none(),
            "removing a server that holds RAM"
        );
        if server.has_world {
            self.push_command(CommandKind::DeleteWorld { server_id });
        }
        self.users
            .get_mut(&server.owner)
            .expect("owner")
            .servers
            .remove(&server_id);
    }

    // ------------------------------------------------------------------ billing

    fn begin_storage_accrual(&mut self, server_id: ServerId) {
        let now = self.now;
        let world_size_mib = self.config.billing.world_size_mib;
        let server = self.servers.get_mut(&server_id).expect("exists");
        if !server.has_world {
            server.accrual.kind = None;
            return;
        }
        server.accrual.kind = Some(if server.world_archived {
            AccrualKind::Archive
        } else {
            AccrualKind::Storage
        });
        server.accrual.since = now;
        server.accrual.mib = world_size_mib;
    }

    /// Charge what a server accrued since its last settlement and post the entry.
    fn settle(&mut self, server_id: ServerId) {
        let now = self.now;
        let billing = &self.config.billing;
        let server = self.servers.get_mut(&server_id).expect("exists");
        let accrual = &mut server.accrual;
        let Some(kind) = accrual.kind else { return };
        let elapsed_ms = now.since(accrual.since);
        if elapsed_ms == 0 {
            return;
        }
        if kind == AccrualKind::Warm {
            // Paid by the platform: counted, not charged to the owner.
            self.stats.prewarm_platform_mib_ms += accrual.mib as u64 * elapsed_ms;
            accrual.since = now;
            return;
        }
        let (price, period_ms, carry, ledger_kind) = match kind {
            AccrualKind::Ram => (
                billing.ram_price_micros_per_gib_hour,
                MS_PER_HOUR,
                &mut accrual.carry_ram,
                LedgerKind::RamTime,
            ),
            AccrualKind::Storage => (
                billing.storage_price_micros_per_gib_month,
                MS_PER_MONTH,
                &mut accrual.carry_storage,
                LedgerKind::Storage,
            ),
            AccrualKind::Archive => (
                billing.archive_price_micros_per_gib_month,
                MS_PER_MONTH,
                &mut accrual.carry_archive,
                LedgerKind::ArchiveStorage,
            ),
            AccrualKind::Warm => unreachable!("settled above"),
        };
        let denominator = MIB_PER_GIB * period_ms;
        let accrued = ram_time_numerator(accrual.mib as u64, elapsed_ms, price);
        let numerator = *carry as u128 + accrued;
        // A 128-bit division is a library call; nearly every numerator fits 64 bits.
        let (charge, remainder) = match u64::try_from(numerator) {
            Ok(n) => ((n / denominator) as i64, n % denominator),
            Err(_) => (
                (numerator / denominator as u128) as i64,
                (numerator % denominator as u128) as u64,
            ),
        };
        *carry = remainder;
        let from = accrual.since;
        accrual.since = now;
        let owner = server.owner;
        if kind == AccrualKind::Ram {
            self.accrue_user(owner);
            let user = self.users.get_mut(&owner).expect("owner");
            user.unsettled_ram_numerator -= accrued;
        }
        if charge == 0 {
            return;
        }
        self.users.get_mut(&owner).expect("owner").balance_micros -= charge;
        let entry = LedgerEntry {
            user_id: owner,
            server_id: Some(server_id),
            amount_micros: -charge,
            kind: ledger_kind,
            from,
            to: now,
        };
        self.push_command(CommandKind::PostLedgerEntry { entry });
    }

    /// Settle every RAM accrual of a user, so the booked balance is current.
    fn settle_user_ram(&mut self, user_id: UserId) {
        if self.users[&user_id].ram_mib_held == 0 {
            return;
        }
        let mut next = ServerId(0);
        while let Some(server_id) = self.users[&user_id].holding.first_from(next) {
            self.settle(server_id);
            next = ServerId(server_id.0 + 1);
        }
    }

    /// Bring a user's unsettled RAM-time up to now.
    fn accrue_user(&mut self, user_id: UserId) {
        let now = self.now;
        let price = self.config.billing.ram_price_micros_per_gib_hour;
        let user = self.users.get_mut(&user_id).expect("user exists");
        user.unsettled_ram_numerator += ram_time_numerator(user.ram_mib_held, now.since(user.unsettled_since), price);
        user.unsettled_since = now;
    }

    /// The booked balance minus RAM-time accrued but not settled yet (rounded up).
    pub fn projected_balance_micros(&self, user_id: UserId) -> i64 {
        let user = &self.users[&user_id];
        let price = self.config.billing.ram_price_micros_per_gib_hour;
        let unsettled = user.unsettled_ram_numerator
            + ram_time_numerator(user.ram_mib_held, self.now.since(user.unsettled_since), price);
        let denominator = MIB_PER_GIB as u128 * MS_PER_HOUR as u128;
        user.balance_micros - unsettled.div_ceil(denominator) as i64
    }

    /// When the user's balance reaches its next mark at the current burn rate: the
    /// low-balance threshold before the warning, zero after it; `None` while nothing
    /// accrues. O(1): the projection uses the user's aggregate unsettled RAM-time, not
    /// its servers. Brings that RAM-time up to now (no ledger entry).
    fn balance_deadline(&mut self, user_id: UserId) -> Option<Timestamp> {
        self.accrue_user(user_id);
        let user = &self.users[&user_id];
        let rate = user.ram_mib_held as i128 * self.config.billing.ram_price_micros_per_gib_hour as i128;
        if rate == 0 {
            return None;
        }
        let target = if user.low_balance_warned {
            0
        } else {
            self.config.billing.low_balance_threshold_micros
        };
        let denominator = MIB_PER_GIB as i128 * MS_PER_HOUR as i128;
        let headroom = (user.balance_micros - target) as i128 * denominator - user.unsettled_ram_numerator as i128;
        if headroom > 0 {
            // A 128-bit division is a library call; most operands fit 64 bits.
            let ms = match (u64::try_from(headroom), u64::try_from(rate)) {
                (Ok(h), Ok(r)) => h.div_ceil(r),
                _ => u64::try_from((headroom + rate - 1) / rate).unwrap_or(u64::MAX / 2),
            };
            Some(self.now.plus_ms(ms))
        } else if target > 0 {
            Some(self.now)
        } else {
            // Out of money: stop what still starts or runs, now; stopping servers finish.
            let running = user
                .holding
                .iter()
                .any(|id| matches!(self.servers[id].state, ServerState::Starting | ServerState::Running));
            running.then_some(self.now)
        }
    }

    /// Arm the user's balance timer for `balance_deadline`. The timer may be early, never
    /// late: an armed entry at or before the new deadline is kept, and when it fires
    /// early it only re-arms (`fire_balance_timer`). Every start and stop moves the
    /// deadline, so re-arming on each would leave a dead entry behind per change.
    fn arm_user_timer(&mut self, user_id: UserId) {
        let at = self.balance_deadline(user_id);
        let slot = self.users[&user_id].timer_at;
        if let Some(armed) = slot
            && at.is_none_or(|at| armed.at <= at)
        {
            return;
        }
        let new = self.arm_timer(slot, at, Timer::User(user_id));
        self.users.get_mut(&user_id).expect("exists").timer_at = new;
    }

    fn fire_balance_timer(&mut self, user_id: UserId) {
        // An early entry (see `arm_user_timer`): nothing is due yet, just re-arm.
        if self.balance_deadline(user_id).is_none_or(|at| at > self.now) {
            self.arm_user_timer(user_id);
            return;
        }
        self.settle_user_ram(user_id);
        let threshold = self.config.billing.low_balance_threshold_micros;
        let user = self.users.get_mut(&user_id).expect("exists");
        let balance_micros = user.balance_micros;
        if balance_micros <= threshold && !user.low_balance_warned {
            user.low_balance_warned = true;
            self.push_command(CommandKind::SendEmail {
                user_id,
                email: Email::LowBalance { balance_micros },
            });
        }
        if balance_micros <= 0 {
            let running: Vec<ServerId> = self.users[&user_id]
                .servers
                .iter()
                .copied()
                .filter(|id| matches!(self.servers[id].state, ServerState::Starting | ServerState::Running))
                .collect();
            for &server_id in &running {
                self.begin_stop(server_id, StopReason::OutOfBalance);
            }
            if !running.is_empty() {
                self.push_command(CommandKind::SendEmail {
                    user_id,
                    email: Email::StoppedForZeroBalance { server_ids: running },
                });
            }
        }
        self.arm_user_timer(user_id);
    }

    // ------------------------------------------------------------------ pre-warm

    /// Whether the server's current start or run is a pre-warm nobody has claimed yet.
    fn is_prewarm(&self, server_id: ServerId) -> bool {
        let server = &self.servers[&server_id];
        server.prewarm_hold || server.start.is_some_and(|s| s.prewarm)
    }

    /// Remember a demand for the server (first of the day counts) and arm its pre-warm.
    fn record_habit(&mut self, server_id: ServerId) {
        if !self.config.prewarm.enabled {
            return;
        }
        let now = self.now;
        if !self.habits.contains_key(&server_id) {
            self.habits.insert(server_id, HabitState::default());
        }
        let state = self.habits.get_mut(&server_id).expect("inserted");
        // A later demand the same day changes nothing the habit depends on.
        if state.habit.record(now) || state.timer_at.is_none() {
            self.arm_prewarm(server_id);
        }
    }

    fn arm_prewarm(&mut self, server_id: ServerId) {
        let state = &self.habits[&server_id];
        let at = state.habit.next_prewarm(&self.config.prewarm, self.now);
        let slot = state.timer_at;
        let new = self.arm_timer(slot, at, Timer::Prewarm(server_id));
        self.habits.get_mut(&server_id).expect("exists").timer_at = new;
    }

    /// The usual time is near: start the server if it rests and its owner can pay.
    fn fire_prewarm(&mut self, server_id: ServerId) {
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
    fn claim_prewarm(&mut self, server_id: ServerId) {
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
            self.accrue_user(owner);
            let user = self.users.get_mut(&owner).expect("owner");
            user.ram_mib_held += mib as u64;
            user.holding.insert(server_id);
            self.arm_user_timer(owner);
        }
        self.events.push_back(Event::PrewarmClaimed { server_id });
        self.arm_idle_timer(server_id);
    }

    // ------------------------------------------------------------------ nodes and scaling

    fn alloc_node_id(&mut self) -> NodeId {
        let id = NodeId(self.next_node_id);
        self.next_node_id += 1;
        id
    }

    fn push_command(&mut self, kind: CommandKind) -> CommandId {
        let id = CommandId(self.next_command_id);
        self.next_command_id += 1;
        self.commands.push_back(Command { id, kind });
        id
    }

    fn node_became_ready(&mut self, node_id: NodeId) {
        let now = self.now;
        let node = self.nodes.get_mut(&node_id).expect("exists");
        assert_eq!(node.state, NodeState::Provisioning);
        node.state = NodeState::Ready;
        node.ready_at = Some(now);
        node.empty_since = Some(now);
        let usable = node.usable_mib();
        let is_cloud = node.is_cloud();
        self.totals.provisioning_usable_mib -= usable as u64;
        self.provisioning.remove(&node_id);
        self.totals.ready_usable_mib += usable as u64;
        self.totals.n_ready_nodes += 1;
        if is_cloud {
            self.totals.n_cloud_provisioning -= 1;
        }
        self.index_for(is_cloud).insert(node_id, usable);
        if is_cloud {
            self.empty_cloud.insert(node_id);
        }
        self.events.push_back(Event::NodeReady { node_id });
        self.dispatch();
    }

    /// Take a ready or draining node out of placement and the ready totals.
    fn unindex_node(&mut self, node_id: NodeId) {
        let node = &self.nodes[&node_id];
        let (usable, free, is_cloud, state) = (node.usable_mib(), node.free_mib(), node.is_cloud(), node.state);
        if state == NodeState::Ready {
            self.index_for(is_cloud).remove(node_id, free);
            self.empty_cloud.remove(&node_id);
        }
        if matches!(state, NodeState::Ready | NodeState::Draining) {
            self.totals.ready_usable_mib -= usable as u64;
            self.totals.n_ready_nodes -= 1;
        }
        if state == NodeState::Draining {
            self.totals.draining_usable_mib -= usable as u64;
            self.totals.n_cloud_draining -= 1;
            self.draining.remove(&node_id);
        }
    }

    fn remove_node(&mut self, node_id: NodeId, reason: NodeRemoval) {
        let node = self.nodes.remove(&node_id).expect("exists");
        assert_eq!(node.allocated_mib, 0, "removing a node that holds RAM");
        if reason == NodeRemoval::Deleted {
            self.stats.nodes_deleted += 1;
        }
        self.events.push_back(Event::NodeRemoved { node_id, reason });
    }

    fn issue_delete_node(&mut self, node_id: NodeId) {
        let command_id = self.push_command(CommandKind::DeleteNode { node_id });
        self.pending.insert(command_id, Pending::DeleteNode(node_id));
        self.nodes.get_mut(&node_id).expect("exists").pending_command = Some(command_id);
    }

    fn retry_failed_deletes(&mut self) {
        if self.n_deletes_to_retry == 0 {
            return;
        }
        self.n_deletes_to_retry = 0;
        let stuck: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| {
                matches!(n.state, NodeState::Deleting | NodeState::Lost) && n.is_cloud() && n.pending_command.is_none()
            })
            .map(|n| n.id)
            .collect();
        for node_id in stuck {
            self.issue_delete_node(node_id);
        }
    }

    /// Ask the policy now when queued demand exceeds the capacity on its way. Only
    /// requests a new VM could hold count: one larger than every catalog type waits for
    /// a dedicated machine, and asking the policy again on every input while it waits
    /// would change nothing it orders for the queue (the periodic tick still runs).
    fn request_demand_evaluation(&mut self) {
        if self.queue.demand_mib_up_to(self.largest_placeable_mib) <= self.totals.provisioning_usable_mib {
            return;
        }
        self.evaluate_scaling(Trigger::Demand);
    }

    fn evaluate_scaling(&mut self, trigger: Trigger) {
        if !self.config.policy.autoscales() {
            return;
        }
        self.stats.scale_evaluations += 1;
        let view = FleetView {
            provisioning_usable_mib: &self.provisioning,
            empty_cloud_nodes: &self.empty_cloud,
            draining_cloud_nodes: &self.draining,
            now: self.now,
            trigger,
            totals: self.totals,
            nodes: &self.nodes,
            queued_by_size: self.queue.head_by_size(QUEUE_VIEW_MAX, &mut self.queue_view),
            catalog: &self.config.catalog,
            type_usable_mib: &self.type_usable_mib,
            last_scale_up_at: self.last_scale_up_at,
        };
        let decision = self.policy.evaluate(&view);
        self.apply_decision(decision);
    }

    fn apply_decision(&mut self, decision: ScalingDecision) {
        for node_id in decision.uncordon {
            self.uncordon_node(node_id);
        }
        let mut ordered = false;
        for (server_type, location) in decision.provision {
            if self.provider.rate_limited(self.now) {
                self.stats.provisions_held_back += 1;
                continue;
            }
            let wanted = (server_type, location);
            let chosen = self.provider.choose(
                &self.config.catalog,
                &self.config.reserve,
                &self.location_order,
                wanted,
                self.now,
            );
            let Some(chosen) = chosen else {
                self.stats.provisions_held_back += 1;
                continue;
            };
            if chosen != wanted {
                self.stats.provision_fallbacks += 1;
                self.events.push_back(Event::ProvisionFallback { wanted, chosen });
            }
            self.provision_node(chosen.0, chosen.1);
            ordered = true;
        }
        if ordered {
            self.last_scale_up_at = Some(self.now);
        }
        for node_id in decision.delete {
            let Some(node) = self.nodes.get(&node_id) else { continue };
            if !(node.is_cloud() && node.state == NodeState::Ready && node.n_servers == 0) {
                continue;
            }
            self.unindex_node(node_id);
            self.nodes.get_mut(&node_id).expect("exists").state = NodeState::Deleting;
            self.totals.n_cloud_nodes -= 1;
            self.issue_delete_node(node_id);
        }
        for node_id in decision.drain {
            self.drain_node(node_id);
        }
    }

    /// Cordon a ready cloud node: no new servers; deleted once its servers are gone.
    fn drain_node(&mut self, node_id: NodeId) {
        let Some(node) = self.nodes.get(&node_id) else { return };
        if !(node.is_cloud() && node.state == NodeState::Ready) {
            return;
        }
        let (usable, empty) = (node.usable_mib() as u64, node.n_servers == 0);
        self.unindex_node(node_id);
        if empty {
            self.nodes.get_mut(&node_id).expect("exists").state = NodeState::Deleting;
            self.totals.n_cloud_nodes -= 1;
            self.issue_delete_node(node_id);
            return;
        }
        // Still counted as ready capacity (its servers run), but not placeable.
        self.nodes.get_mut(&node_id).expect("exists").state = NodeState::Draining;
        self.totals.ready_usable_mib += usable;
        self.totals.n_ready_nodes += 1;
        self.totals.draining_usable_mib += usable;
        self.totals.n_cloud_draining += 1;
        self.draining.insert(node_id);
        self.stats.nodes_drained += 1;
        self.events.push_back(Event::NodeDraining {
            node_id,
            draining: true,
        });
    }

    /// Take a cordoned node back into service.
    fn uncordon_node(&mut self, node_id: NodeId) {
        let Some(node) = self.nodes.get(&node_id) else { return };
        if node.state != NodeState::Draining {
            return;
        }
        let (usable, free, empty) = (node.usable_mib() as u64, node.free_mib(), node.n_servers == 0);
        self.nodes.get_mut(&node_id).expect("exists").state = NodeState::Ready;
        self.totals.draining_usable_mib -= usable;
        self.totals.n_cloud_draining -= 1;
        self.draining.remove(&node_id);
        self.free_cloud.insert(node_id, free);
        if empty {
            self.empty_cloud.insert(node_id);
        }
        self.stats.nodes_uncordoned += 1;
        self.events.push_back(Event::NodeDraining {
            node_id,
            draining: false,
        });
        self.dispatch();
    }

    fn provision_node(&mut self, server_type: ServerTypeIdx, location: LocationIdx) {
        let catalog_type = &self.config.catalog.server_types[server_type.0 as usize];
        let capacity_mib = catalog_type.ram_mib;
        let reserve_mib = self.config.reserve.reserve_mib(capacity_mib, false);
        let node_id = self.alloc_node_id();
        let command_id = self.push_command(CommandKind::ProvisionNode {
            node_id,
            server_type,
            location,
        });
        self.pending.insert(command_id, Pending::Provision(node_id));
        let kind = NodeKind::Cloud { server_type, location };
        let mut node = Node::new(node_id, kind, false, capacity_mib, reserve_mib, self.now);
        node.pending_command = Some(command_id);
        self.nodes.insert(node_id, node);
        self.totals.provisioning_usable_mib += (capacity_mib - reserve_mib) as u64;
        self.provisioning.insert(node_id, capacity_mib - reserve_mib);
        self.totals.n_cloud_nodes += 1;
        self.totals.n_cloud_provisioning += 1;
        self.stats.nodes_requested += 1;
        let timeout_at = self.now.plus_ms(self.config.lifecycle.provision_timeout_ms);
        self.push_timer(timeout_at, Timer::Node(node_id));
        self.events.push_back(Event::NodeRequested {
            node_id,
            server_type,
            location,
        });
    }

    // ------------------------------------------------------------------ invariants

    /// Check every invariant by recomputing it from scratch (O(fleet)). Tests call it
    /// after every input; debug builds assert it inside `handle`.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut allocated: BTreeMap<NodeId, (u32, u32)> = BTreeMap::new();
        for (server_id, server) in self.servers.iter() {
            if server.state.holds_ram() {
                let node_id = server
                    .node
                    .ok_or(format!("server {server_id} holds RAM without a node"))?;
                let slot = allocated.entry(node_id).or_default();
                slot.0 += server.ram_mib;
                slot.1 += 1;
                let billed_to_owner = self.users[&server.owner].holding.contains(&server_id);
                match server.accrual.kind {
                    Some(AccrualKind::Ram) if billed_to_owner => {}
                    Some(AccrualKind::Warm) if !billed_to_owner => {}
                    _ => return Err(format!("server {server_id} holds RAM but does not accrue RAM-time")),
                }
            } else if matches!(server.accrual.kind, Some(AccrualKind::Ram | AccrualKind::Warm)) {
                return Err(format!("server {server_id} accrues RAM-time without holding RAM"));
            }
            if (server.state == ServerState::Queued) != server.queue_seq.is_some() {
                return Err(format!("server {server_id} queue membership disagrees with its state"));
            }
        }
        for (node_id, node) in self.nodes.iter() {
            let (mib, n) = allocated.get(&node_id).copied().unwrap_or_default();
            if node.allocated_mib != mib || node.n_servers != n {
                return Err(format!(
                    "node {node_id} books {} MiB / {} servers, servers hold {mib} / {n}",
                    node.allocated_mib, node.n_servers
                ));
            }
            if node.allocated_mib > node.usable_mib() {
                return Err(format!(
                    "node {node_id} overcommitted: {} > {}",
                    node.allocated_mib,
                    node.usable_mib()
                ));
            }
        }
        let price = self.config.billing.ram_price_micros_per_gib_hour;
        for (user_id, user) in self.users.iter() {
            let mut sum: u128 = 0;
            for id in &user.holding {
                let accrual = &self.servers[id].accrual;
                sum += ram_time_numerator(accrual.mib as u64, user.unsettled_since.since(accrual.since), price);
            }
            if sum != user.unsettled_ram_numerator {
                return Err(format!(
                    "user {user_id}: unsettled RAM-time {} != its servers' {sum}",
                    user.unsettled_ram_numerator
                ));
            }
        }
        let empty_cloud: BTreeSet<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.is_cloud() && n.state == NodeState::Ready && n.n_servers == 0)
            .map(|n| n.id)
            .collect();
        if empty_cloud != self.empty_cloud {
            return Err("empty cloud node set disagrees with the nodes".to_string());
        }
        let draining: BTreeSet<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.state == NodeState::Draining)
            .map(|n| n.id)
            .collect();
        let draining_mib: u64 = draining.iter().map(|id| self.nodes[id].usable_mib() as u64).sum();
        if draining != self.draining
            || draining_mib != self.totals.draining_usable_mib
            || draining.len() as u32 != self.totals.n_cloud_draining
        {
            return Err("draining node set disagrees with the nodes".to_string());
        }
        if self.queue.len() != self.totals.queued_count as usize
            || self.queue.demand_mib() != self.totals.queued_demand_mib
        {
            return Err("queue totals disagree with the queue".to_string());
        }
        let provisioning: BTreeMap<NodeId, u32> = self
            .nodes
            .values()
            .filter(|n| n.state == NodeState::Provisioning)
            .map(|n| (n.id, n.usable_mib()))
            .collect();
        if provisioning != self.provisioning {
            return Err("provisioning set disagrees with the nodes".to_string());
        }
        let held: u64 = self.nodes.values().map(|n| n.allocated_mib as u64).sum();
        if held != self.totals.allocated_mib {
            return Err(format!(
                "allocated total {} != sum over nodes {held}",
                self.totals.allocated_mib
            ));
        }
        Ok(())
    }
}
