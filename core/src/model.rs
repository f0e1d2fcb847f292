//! The domain: nodes (machines), servers (Minecraft servers) and users (balances).

use serde::{Deserialize, Serialize};

use crate::io::StopReason;
use crate::types::{CommandId, LocationIdx, NodeId, Timestamp, UserId, VmTypeIdx};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Ordered from the provider; a placeholder that counts as capacity on its way.
    Provisioning,
    /// Takes containers.
    Ready,
    /// Takes no new containers; deleted (cloud) once empty.
    Draining,
    /// Delete ordered; takes nothing.
    Deleting,
    /// Disappeared without being asked to; its servers were moved back to the queue.
    Lost,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeKind {
    Dedicated {
        name: String,
        monthly_cost_micros: u64,
    },
    Cloud {
        server_type: VmTypeIdx,
        location: LocationIdx,
    },
}

/// The core's nodes by id. Paged slots: every cloud VM gets a new id, so a flat slot
/// vector would grow with every VM ever ordered (see `idmap`).
pub type NodeMap = crate::idmap::IdMap<NodeId, Node, crate::idmap::Paged<Node>>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub kind: NodeKind,
    /// Set explicitly for machines that also run the platform itself; never inferred.
    pub is_system: bool,
    pub state: NodeState,
    pub capacity_mib: u32,
    pub reserve_mib: u32,
    /// RAM reserved or held by servers placed here.
    pub allocated_mib: u32,
    pub n_servers: u32,
    pub created_at: Timestamp,
    pub ready_at: Option<Timestamp>,
    /// Since when the node has held no server (for scale-down).
    pub empty_since: Option<Timestamp>,
    /// The provision or delete command in flight.
    pub pending_command: Option<CommandId>,
}

impl Node {
    /// A node as it enters the fleet: provisioning, empty.
    pub fn new(
        id: NodeId,
        kind: NodeKind,
        is_system: bool,
        capacity_mib: u32,
        reserve_mib: u32,
        now: Timestamp,
    ) -> Node {
        Node {
            id,
            kind,
            is_system,
            state: NodeState::Provisioning,
            capacity_mib,
            reserve_mib,
            allocated_mib: 0,
            n_servers: 0,
            created_at: now,
            ready_at: None,
            empty_since: None,
            pending_command: None,
        }
    }

    pub fn usable_mib(&self) -> u32 {
        self.capacity_mib - self.reserve_mib
    }

    pub fn free_mib(&self) -> u32 {
        self.usable_mib() - self.allocated_mib
    }

    pub fn is_cloud(&self) -> bool {
        matches!(self.kind, NodeKind::Cloud { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ServerState {
    Stopped,
    Queued,
    /// RAM is reserved on a node; the container is starting or Minecraft is booting.
    Starting,
    Running,
    Stopping {
        reason: StopReason,
    },
    Sleeping,
    Archived,
}

impl ServerState {
    pub fn name(&self) -> &'static str {
        match self {
            ServerState::Stopped => "stopped",
            ServerState::Queued => "queued",
            ServerState::Starting => "starting",
            ServerState::Running => "running",
            ServerState::Stopping { .. } => "stopping",
            ServerState::Sleeping => "sleeping",
            ServerState::Archived => "archived",
        }
    }

    /// A start request in this state begins a new start: from rest, or (while
    /// `Stopping`) once the stop in progress is done. In `Queued`, `Starting` and
    /// `Running` a start is already under way and a request only confirms it.
    pub fn accepts_start(&self) -> bool {
        matches!(
            self,
            ServerState::Stopped | ServerState::Sleeping | ServerState::Archived | ServerState::Stopping { .. }
        )
    }

    pub fn holds_ram(&self) -> bool {
        matches!(
            self,
            ServerState::Starting | ServerState::Running | ServerState::Stopping { .. }
        )
    }
}

/// A start request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    pub requested_at: Timestamp,
    pub attempts: u32,
    pub placed_at: Option<Timestamp>,
    /// Issued by the core ahead of a usual play time (pre-warm), not by the owner.
    pub prewarm: bool,
}

impl StartRequest {
    /// A fresh request: no attempt made yet, not placed.
    pub fn new(requested_at: Timestamp) -> StartRequest {
        StartRequest {
            requested_at,
            attempts: 0,
            placed_at: None,
            prewarm: false,
        }
    }
}

/// What a server currently accrues, and the fractions of a micro carried over. A carry
/// is the remainder of a division by `MIB_PER_GIB × period`, so it fits a `u64` (a
/// `u128` here would double the size of every `Server`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Accrual {
    pub kind: Option<AccrualKind>,
    pub since: Timestamp,
    pub mib: u32,
    pub carry_ram: u64,
    pub carry_storage: u64,
    pub carry_archive: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccrualKind {
    Ram,
    /// RAM held by a pre-warmed server before its first player, paid by the platform.
    Warm,
    Storage,
    Archive,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    pub owner: UserId,
    pub ram_mib: u32,
    pub state: ServerState,
    pub node: Option<super::types::NodeId>,
    pub start: Option<StartRequest>,
    /// A start asked for while the server was stopping: it is queued once stopped.
    pub start_after_stop: Option<Timestamp>,
    pub players: u32,
    pub running_since: Option<Timestamp>,
    /// When players last dropped to zero (or the server came up empty).
    pub idle_since: Option<Timestamp>,
    pub has_world: bool,
    pub world_archived: bool,
    pub delete_after_stop: bool,
    pub accrual: Accrual,
    /// The start or stop command in flight.
    pub pending_command: Option<CommandId>,
    pub stop_attempts: u32,
    /// The timer this server has armed, if any (idle, archive or reservation).
    pub armed_timer: Option<TimerSlot>,
    pub queue_seq: Option<i64>,
    /// Started by pre-warm and no player yet: the idle timer waits at least `hold`.
    pub prewarm_hold: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub balance_micros: i64,
    pub ram_mib_held: u64,
    /// The user's servers that hold RAM (starting, running, stopping).
    pub holding: crate::idmap::IdSet<super::types::ServerId>,
    /// RAM-time accrued by `holding` servers but not yet settled, as a numerator over
    /// `MIB_PER_GIB × MS_PER_HOUR` (carries excluded), up to `unsettled_since`. Lets the
    /// balance be projected in O(1) whatever the number of servers.
    pub unsettled_ram_numerator: u128,
    pub unsettled_since: Timestamp,
    pub servers: crate::idmap::IdSet<super::types::ServerId>,
    pub low_balance_warned: bool,
    pub armed_timer: Option<TimerSlot>,
}

/// An armed timer: its deadline and the sequence number that tells it apart from
/// earlier entries for the same owner and deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerSlot {
    pub at: Timestamp,
    pub seq: u64,
}
