//! What goes into the core (`Input`), what comes out as decisions (`Command`) and as
//! facts for observers (`Event`), and how a request is refused (`Rejection`).

use serde::{Deserialize, Serialize};

use crate::model::ServerState;
use crate::types::{CommandId, LocationIdx, NodeId, ServerId, Timestamp, UserId, VmTypeIdx};

/// Everything that happens reaches the core as an input. The production shell
/// journals each one before handling it; the simulator replays them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Input {
    // --- user requests ---
    RegisterUser {
        user_id: UserId,
    },
    TopUp {
        user_id: UserId,
        amount_micros: i64,
    },
    CreateServer {
        server_id: ServerId,
        owner: UserId,
        ram_mib: u32,
    },
    /// Change the RAM tier of a server that holds no RAM.
    UpdateServerTier {
        server_id: ServerId,
        ram_mib: u32,
    },
    StartServer {
        server_id: ServerId,
    },
    StopServer {
        server_id: ServerId,
    },
    /// Withdraw a start that is still queued.
    CancelStart {
        server_id: ServerId,
    },
    DeleteServer {
        server_id: ServerId,
    },
    // --- fleet administration ---
    AddDedicatedNode {
        name: String,
        capacity_mib: u32,
        monthly_cost_micros: u64,
        is_system: bool,
    },
    // --- observations ---
    /// The Minecraft server inside a started container accepts players.
    ServerBooted {
        server_id: ServerId,
    },
    PlayerCount {
        server_id: ServerId,
        players: u32,
    },
    /// A container stopped without being asked to (crash, OOM kill).
    ContainerExited {
        server_id: ServerId,
    },
    NodeLost {
        node_id: NodeId,
    },
    /// A dedicated node the core holds lost answers its health checks again: it takes
    /// placements again (a ready node answering changes nothing).
    NodeAnswered {
        node_id: NodeId,
    },
    // --- results of commands ---
    CommandSucceeded {
        command_id: CommandId,
    },
    CommandFailed {
        command_id: CommandId,
        reason: String,
        /// What kind of failure, when the shell can tell (provider error codes).
        #[serde(default)]
        kind: FailureKind,
    },
    /// The time returned by `poll_timeout` has come.
    Timeout,
}

/// Why a command failed, as far as the shell can tell. It matters for `ProvisionNode`:
/// Hetzner answers 412 `resource_unavailable` when a type is sold out in a location and
/// 429 `rate_limit_exceeded` when the API budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Anything else (timeouts, 5xx, a VM that never came up).
    #[default]
    Other,
    /// The VM type is sold out in that location.
    ResourceUnavailable,
    /// The provider's API rate limit was hit.
    RateLimited,
    /// Retrying cannot help on any node (an unknown image, a configuration the engine
    /// refuses): a start ends rejected (`RejectReason::StartFailed`) instead of retried.
    Permanent,
}

/// A decision, for the shell to carry out. `id` is the idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub id: CommandId,
    pub kind: CommandKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CommandKind {
    /// Order a cloud VM. Success means the VM is ready to take containers.
    ProvisionNode {
        node_id: NodeId,
        server_type: VmTypeIdx,
        location: LocationIdx,
    },
    /// Delete a cloud VM (it is empty). Success means the provider stopped billing.
    DeleteNode {
        node_id: NodeId,
    },
    /// Start a server's container with `ram_mib` on `node_id`, restoring its world
    /// from the archive first when `restore_world` is set. Success means the container
    /// runs; `Input::ServerBooted` follows when Minecraft accepts players.
    StartContainer {
        server_id: ServerId,
        node_id: NodeId,
        ram_mib: u32,
        restore_world: bool,
    },
    /// Stop a server's container cleanly (world saved). Success means it has exited.
    StopContainer {
        server_id: ServerId,
        node_id: NodeId,
        reason: StopReason,
    },
    ArchiveWorld {
        server_id: ServerId,
    },
    DeleteWorld {
        server_id: ServerId,
    },
    /// Persist a ledger entry. The core has already applied it to its balance.
    PostLedgerEntry {
        entry: LedgerEntry,
    },
    SendEmail {
        user_id: UserId,
        email: Email,
    },
}

impl CommandKind {
    /// Whether the core waits for this command's result (`CommandSucceeded` or
    /// `CommandFailed`). The others are fire-and-forget for the core; a shell still
    /// carries them out exactly once by id. Shells ask this instead of keeping a list.
    pub fn awaits_result(&self) -> bool {
        matches!(
            self,
            CommandKind::ProvisionNode { .. }
                | CommandKind::DeleteNode { .. }
                | CommandKind::StartContainer { .. }
                | CommandKind::StopContainer { .. }
        )
    }

    /// The kind's name in snake case, as it is serialized (logs, metrics, SQL).
    pub fn name(&self) -> &'static str {
        match self {
            CommandKind::ProvisionNode { .. } => "provision_node",
            CommandKind::DeleteNode { .. } => "delete_node",
            CommandKind::StartContainer { .. } => "start_container",
            CommandKind::StopContainer { .. } => "stop_container",
            CommandKind::ArchiveWorld { .. } => "archive_world",
            CommandKind::DeleteWorld { .. } => "delete_world",
            CommandKind::PostLedgerEntry { .. } => "post_ledger_entry",
            CommandKind::SendEmail { .. } => "send_email",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Requested,
    Idle,
    OutOfBalance,
    Deleted,
    /// The container exited on its own (crash, OOM kill).
    Crashed,
    /// Its node was lost; the server was queued to start elsewhere.
    NodeLost,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub user_id: UserId,
    pub server_id: Option<ServerId>,
    /// Positive credits the balance, negative debits it.
    pub amount_micros: i64,
    pub kind: LedgerKind,
    /// Start and end of the accrual period this entry settles (equal for top-ups).
    pub from: Timestamp,
    pub to: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    TopUp,
    RamTime,
    Storage,
    ArchiveStorage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Email {
    LowBalance { balance_micros: i64 },
    StoppedForZeroBalance { server_ids: Vec<ServerId> },
}

/// A fact for observers (metrics, the simulator's outcome recorder, the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    StartQueued {
        server_id: ServerId,
        position: u32,
    },
    StartPlaced {
        server_id: ServerId,
        node_id: NodeId,
        requested_at: Timestamp,
    },
    ServerRunning {
        server_id: ServerId,
        requested_at: Timestamp,
        placed_at: Timestamp,
    },
    StartEnded {
        server_id: ServerId,
        requested_at: Timestamp,
        outcome: StartOutcome,
    },
    /// A server's RAM went back to its node (stopped, failed, or its node was lost).
    RamReleased {
        server_id: ServerId,
        node_id: NodeId,
        ram_mib: u32,
    },
    ServerStopped {
        server_id: ServerId,
        reason: StopReason,
    },
    ServerArchived {
        server_id: ServerId,
    },
    NodeRequested {
        node_id: NodeId,
        server_type: VmTypeIdx,
        location: LocationIdx,
    },
    NodeReady {
        node_id: NodeId,
    },
    NodeRemoved {
        node_id: NodeId,
        reason: NodeRemoval,
    },
    /// A node was cordoned (`draining: true`: it takes no new servers and is deleted
    /// once empty) or taken back into service (`draining: false`).
    NodeDraining {
        node_id: NodeId,
        draining: bool,
    },
    /// The wanted (type, location) was sold out, backed off or failing: the core
    /// ordered `chosen` instead.
    ProvisionFallback {
        wanted: (VmTypeIdx, LocationIdx),
        chosen: (VmTypeIdx, LocationIdx),
    },
    /// The core started a server on its own, ahead of its owner's usual play time.
    /// `platform_pays`: its RAM-time is not charged to the owner until the first
    /// player joins (or the owner asks for the start), see `PrewarmClaimed`.
    PrewarmStarted {
        server_id: ServerId,
        platform_pays: bool,
    },
    /// A pre-warmed server got its first player (or its owner's start request): from
    /// now on it is an ordinary server, billed to its owner.
    PrewarmClaimed {
        server_id: ServerId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StartOutcome {
    Running,
    Rejected { reason: RejectReason },
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRemoval {
    Deleted,
    ProvisionFailed,
    Lost,
}

/// Why a request was refused. Rejections are values, never panics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum RejectReason {
    UnknownUser,
    UnknownServer,
    UnknownNode,
    UnknownCommand,
    DuplicateId,
    InvalidTier {
        ram_mib: u32,
    },
    InvalidAmount,
    WrongState {
        state: String,
    },
    InsufficientBalance,
    QueueFull,
    /// No node type in the catalog (nor any dedicated node) could ever hold the tier.
    NoCapacityForTier {
        ram_mib: u32,
    },
    /// The start was retried `start_attempts_max` times and failed each time.
    TooManyAttempts,
    /// The container could not be started, and retrying cannot help (the shell keeps
    /// the failure's message: the server view shows it).
    StartFailed,
    ServerDeleted,
    OutOfBalance,
}

impl RejectReason {
    /// The request is not allowed while the server is in `state`.
    pub fn wrong_state(state: ServerState) -> RejectReason {
        RejectReason::WrongState {
            state: state.name().to_string(),
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectReason::UnknownUser => write!(f, "unknown user"),
            RejectReason::UnknownServer => write!(f, "unknown server"),
            RejectReason::UnknownNode => write!(f, "unknown node"),
            RejectReason::UnknownCommand => write!(f, "unknown command id"),
            RejectReason::DuplicateId => write!(f, "id already in use"),
            RejectReason::InvalidTier { ram_mib } => write!(f, "{ram_mib} MiB is not a RAM tier"),
            RejectReason::InvalidAmount => write!(f, "amount must be positive"),
            RejectReason::WrongState { state } => write!(f, "not allowed while the server is {state}"),
            RejectReason::InsufficientBalance => write!(f, "balance is not positive"),
            RejectReason::QueueFull => write!(f, "start queue is full"),
            RejectReason::NoCapacityForTier { ram_mib } => {
                write!(f, "no node type can hold {ram_mib} MiB")
            }
            RejectReason::TooManyAttempts => write!(f, "start failed too many times"),
            RejectReason::StartFailed => write!(f, "the container could not be started"),
            RejectReason::ServerDeleted => write!(f, "server was deleted"),
            RejectReason::OutOfBalance => write!(f, "balance ran out"),
        }
    }
}

/// Returned by `Core::handle` when an input is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub reason: RejectReason,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.reason.fmt(f)
    }
}

impl std::error::Error for Rejection {}
