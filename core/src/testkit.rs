//! The core's test kit: a driver that records what the core says and checks every
//! invariant after each input, the fixtures the tests share (a reserve-free config,
//! small catalogs), and a fake fleet to evaluate a policy on without a core. Built
//! for the crate's own tests and, with the `testkit` feature, for other crates'
//! tests and benches.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Catalog, CoreConfig, ReserveConfig, VmType};
use crate::io::{Command, CommandKind, Event, FailureKind, Input, RejectReason};
use crate::machine::Core;
use crate::model::{Node, NodeKind, NodeState, ServerState};
use crate::policy::{
    FleetTotals, FleetView, PolicyConfig, QUEUE_VIEW_MAX, ScalingDecision, ScalingPolicy, Trigger, type_usable_mib,
};
use crate::types::{LocationIdx, MS_PER_MINUTE, NodeId, ServerId, Timestamp, UserId, VmTypeIdx};

/// Where `Driver::new` starts the clock.
pub const DRIVER_START: Timestamp = Timestamp(1_000_000);

/// A test driver: feeds inputs at its own clock, checks every invariant after each
/// one, and records every command and event the core emits.
pub struct Driver {
    pub core: Core,
    pub now: Timestamp,
    pub commands: Vec<Command>,
    pub events: Vec<Event>,
}

impl Driver {
    pub fn new(config: CoreConfig) -> Driver {
        Driver::at(config, DRIVER_START)
    }

    pub fn at(config: CoreConfig, now: Timestamp) -> Driver {
        Driver {
            core: Core::new(config),
            now,
            commands: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Handle one input now, check the invariants, record the outputs.
    pub fn input(&mut self, input: Input) -> Result<(), RejectReason> {
        let result = self.core.handle(self.now, input).map_err(|r| r.reason);
        if let Err(broken) = self.core.check_invariants() {
            panic!("invariant broken: {broken}");
        }
        self.core
            .drain(|command| self.commands.push(command), |event| self.events.push(event));
        result
    }

    /// `input`, which the core must accept.
    pub fn accept(&mut self, input: Input) {
        let described = format!("{input:?}");
        if let Err(reason) = self.input(input) {
            panic!("{described} rejected: {reason}");
        }
    }

    /// Advance the clock to `target`, firing every timer due on the way.
    pub fn advance_to(&mut self, target: Timestamp) {
        while let Some(at) = self.core.poll_timeout() {
            if at > target {
                break;
            }
            self.now = at.max(self.now);
            self.accept(Input::Timeout);
        }
        self.now = self.now.max(target);
    }

    /// Advance the clock by `ms`, firing every timer due on the way.
    pub fn advance(&mut self, ms: u64) {
        self.advance_to(self.now.plus_ms(ms));
    }

    /// Register user 1 with a balance.
    pub fn user(&mut self, balance_micros: i64) {
        self.accept(Input::RegisterUser { user_id: UserId(1) });
        self.accept(Input::TopUp {
            user_id: UserId(1),
            amount_micros: balance_micros,
        });
    }

    /// Create server `id` of `gb` GB for user 1.
    pub fn create(&mut self, id: u64, gb: u32) {
        self.accept(Input::CreateServer {
            server_id: ServerId(id),
            owner: UserId(1),
            ram_mib: gb * 1024,
        });
    }

    pub fn start(&mut self, id: u64) {
        self.accept(Input::StartServer {
            server_id: ServerId(id),
        });
    }

    /// Stop server `id` and confirm every container stop issued so far.
    pub fn stop(&mut self, id: u64) {
        self.accept(Input::StopServer {
            server_id: ServerId(id),
        });
        self.succeed_all(|k| matches!(k, CommandKind::StopContainer { .. }));
    }

    /// Confirm every container start and boot every starting server with one player.
    pub fn boot_all(&mut self) {
        self.succeed_all(|k| matches!(k, CommandKind::StartContainer { .. }));
        let starting: Vec<ServerId> = self
            .core
            .servers()
            .filter(|(_, s)| s.state == ServerState::Starting)
            .map(|(id, _)| id)
            .collect();
        for server_id in starting {
            self.accept(Input::PlayerCount { server_id, players: 1 });
            self.accept(Input::ServerBooted { server_id });
        }
    }

    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// Take the recorded commands of one kind.
    pub fn take(&mut self, f: impl Fn(&CommandKind) -> bool) -> Vec<Command> {
        let (taken, kept) = std::mem::take(&mut self.commands).into_iter().partition(|c| f(&c.kind));
        self.commands = kept;
        taken
    }

    /// Take the recorded VM orders.
    pub fn provisions(&mut self) -> Vec<Command> {
        self.take(|k| matches!(k, CommandKind::ProvisionNode { .. }))
    }

    /// The first recorded command of a kind, left in place.
    pub fn find(&self, f: impl Fn(&CommandKind) -> bool) -> Option<Command> {
        self.commands.iter().find(|c| f(&c.kind)).cloned()
    }

    pub fn succeed(&mut self, command: &Command) {
        self.accept(Input::CommandSucceeded { command_id: command.id });
    }

    /// Take the recorded commands of one kind and report each succeeded.
    pub fn succeed_all(&mut self, f: impl Fn(&CommandKind) -> bool) {
        for command in self.take(f) {
            self.succeed(&command);
        }
    }

    pub fn fail(&mut self, command: &Command, kind: FailureKind) {
        self.accept(Input::CommandFailed {
            command_id: command.id,
            reason: format!("{kind:?}"),
            kind,
        });
    }

    pub fn state(&self, id: u64) -> ServerState {
        self.core.server(ServerId(id)).expect("server exists").state
    }
}

/// No system reserve on any node: usable RAM is the capacity.
pub fn no_reserve() -> ReserveConfig {
    ReserveConfig {
        small_node_max_mib: 0,
        small_fixed_mib: 0,
        medium_node_max_mib: 0,
        medium_pct: 0,
        large_pct: 0,
        system_extra_mib: 0,
    }
}

/// A static fleet (no autoscaling) without reserve.
pub fn static_config() -> CoreConfig {
    CoreConfig {
        reserve: no_reserve(),
        policy: PolicyConfig::default(),
        ..CoreConfig::default()
    }
}

/// A VM type of `gb` GB, 4 vCPU, capped at 600 hours a month.
pub fn vm_type(name: &str, gb: u32, price_micros_per_hour: u64) -> VmType {
    VmType {
        name: name.into(),
        ram_mib: gb * 1024,
        vcpu: 4,
        price_micros_per_hour,
        monthly_cap_micros: price_micros_per_hour * 600,
    }
}

/// Two VM types, cpx42 (16 GB) and cpx62 (32 GB), in fsn1 and nbg1; ready two
/// minutes after the order, as expected.
pub fn cloud_catalog() -> Catalog {
    Catalog {
        server_types: vec![vm_type("cpx42", 16, 40_000), vm_type("cpx62", 32, 75_000)],
        locations: vec!["fsn1".into(), "nbg1".into()],
        expected_provision_ms: 2 * MS_PER_MINUTE,
    }
}

/// One VM type, cpx42 (16 GB, 8 vCPU), in fsn1; ready two minutes after the order.
pub fn one_vm_type_catalog() -> Catalog {
    Catalog {
        server_types: vec![VmType {
            name: "cpx42".into(),
            ram_mib: 16384,
            vcpu: 8,
            price_micros_per_hour: 40_000,
            monthly_cap_micros: 25_000_000,
        }],
        locations: vec!["fsn1".into()],
        expected_provision_ms: 2 * MS_PER_MINUTE,
    }
}

/// `cloud_catalog` without reserve, cpx42 preferred, at most 10 VMs, under `policy`.
pub fn cloud_config(policy: PolicyConfig) -> CoreConfig {
    CoreConfig {
        reserve: no_reserve(),
        catalog: cloud_catalog(),
        policy: PolicyConfig {
            server_type: Some("cpx42".into()),
            max_cloud_nodes: 10,
            ..policy
        },
        ..CoreConfig::default()
    }
}

/// A fleet of 16 GB cloud VMs (15 GB usable) for a policy to look at, without a
/// core: the view is built from the nodes each time.
pub struct FakeFleet {
    pub nodes: crate::model::NodeMap,
    pub catalog: Catalog,
    pub reserve: ReserveConfig,
    pub queued: Vec<u32>,
    pub last_scale_up_at: Option<Timestamp>,
}

impl Default for FakeFleet {
    fn default() -> Self {
        FakeFleet::new()
    }
}

impl FakeFleet {
    pub fn new() -> FakeFleet {
        FakeFleet {
            nodes: crate::idmap::IdMap::new(),
            catalog: one_vm_type_catalog(),
            reserve: ReserveConfig::default(),
            queued: Vec::new(),
            last_scale_up_at: None,
        }
    }

    /// A ready cloud VM ordered at `created_at` holding `allocated_gb`.
    pub fn vm(&mut self, created_at: Timestamp, allocated_gb: u32, state: NodeState) -> NodeId {
        let id = NodeId(self.nodes.len() as u64 + 1);
        let kind = NodeKind::Cloud {
            server_type: VmTypeIdx(0),
            location: LocationIdx(0),
        };
        let mut node = Node::new(id, kind, false, 16384, 1024, created_at);
        node.state = state;
        node.allocated_mib = allocated_gb * 1024;
        node.n_servers = allocated_gb.div_ceil(2);
        node.empty_since = (allocated_gb == 0).then_some(created_at);
        self.nodes.insert(id, node);
        id
    }

    pub fn evaluate(&self, policy: &mut dyn ScalingPolicy, now: Timestamp, trigger: Trigger) -> ScalingDecision {
        let mut totals = FleetTotals::default();
        let (mut empty, mut draining) = (BTreeSet::new(), BTreeSet::new());
        for node in self.nodes.values() {
            let usable = node.usable_mib() as u64;
            totals.n_cloud_nodes += 1;
            match node.state {
                NodeState::Provisioning => totals.provisioning_usable_mib += usable,
                NodeState::Ready | NodeState::Draining => {
                    totals.ready_usable_mib += usable;
                    totals.allocated_mib += node.allocated_mib as u64;
                }
                _ => {}
            }
            if node.state == NodeState::Draining {
                totals.draining_usable_mib += usable;
                totals.n_cloud_draining += 1;
                draining.insert(node.id);
            }
            if node.state == NodeState::Ready && node.n_servers == 0 {
                empty.insert(node.id);
            }
        }
        totals.queued_count = self.queued.len() as u32;
        totals.queued_demand_mib = self.queued.iter().map(|&m| m as u64).sum();
        let provisioning = crate::policy::view::provisioning_usable_mib(&self.nodes);
        let mut by_size: BTreeMap<u32, u32> = BTreeMap::new();
        for &m in self.queued.iter().take(QUEUE_VIEW_MAX) {
            *by_size.entry(m).or_insert(0) += 1;
        }
        let by_size: Vec<(u32, u32)> = by_size.into_iter().collect();
        let type_usable = type_usable_mib(&self.catalog, &self.reserve);
        let largest_type_mib = type_usable.iter().copied().max().unwrap_or(0);
        let view = FleetView {
            now,
            trigger,
            totals,
            nodes: &self.nodes,
            queued_by_size: &by_size,
            provisioning_usable_mib: &provisioning,
            empty_cloud_nodes: &empty,
            draining_cloud_nodes: &draining,
            catalog: &self.catalog,
            type_usable_mib: &type_usable,
            last_scale_up_at: self.last_scale_up_at,
            queued_for_cloud_count: self.queued.iter().filter(|&&m| m <= largest_type_mib).count() as u32,
            queued_for_cloud_mib: self
                .queued
                .iter()
                .filter(|&&m| m <= largest_type_mib)
                .map(|&m| m as u64)
                .sum(),
        };
        policy.evaluate(&view)
    }
}
