//! Driver traits: how the runtime's executor carries out the core's commands against
//! the world. [`CloudProvider`] orders and deletes VMs, [`ContainerDriver`] runs
//! servers' containers on nodes. [`docker`] is the real container driver (Docker
//! engines reached locally or over SSH, through `payperplay_nodes`); [`hetzner`] is the
//! cloud (Hetzner Cloud), [`cloud`] how its VMs become nodes and are reconciled by
//! label. Every driver call
//! is idempotent by the command's id (deterministic names and labels), because a
//! command may be carried out again after a restart.

pub mod cloud;
pub mod docker;
pub mod hetzner;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use payperplay_core::{Catalog, CommandId, FailureKind, Input, LocationIdx, NodeId, ServerId, VmTypeIdx};

pub use docker::{DockerContainers, EngineStatus, NodeFleet};
pub use hetzner::{HetznerCloud, NoCloud};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum DriverError {
    /// Worth retrying (network, rate limit, 5xx).
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying will not help (invalid input, a bad token).
    #[error("permanent: {0}")]
    Permanent(String),
    /// The VM type is sold out in that location: the core falls back to another type
    /// or location, so the executor does not retry.
    #[error("sold out: {0}")]
    SoldOut(String),
    /// The provider's API budget is spent (after the client's own bounded back-off):
    /// the core backs off, so the executor does not retry.
    #[error("rate limited: {0}")]
    RateLimited(String),
    /// A server's container did not start on a node, for a reason its owner is shown
    /// (the server view's `last_start_failure`).
    #[error("{0}")]
    Start(StartFailure),
}

impl DriverError {
    /// What the core learns about a failed command.
    pub fn failure_kind(&self) -> FailureKind {
        match self {
            DriverError::SoldOut(_) => FailureKind::ResourceUnavailable,
            DriverError::RateLimited(_) => FailureKind::RateLimited,
            DriverError::Start(failure) if failure.kind.fails_on_every_node() => FailureKind::Permanent,
            DriverError::Transient(_) | DriverError::Permanent(_) | DriverError::Start(_) => FailureKind::Other,
        }
    }

    /// Whether the executor tries the command again itself (a dropped connection, an
    /// engine 5xx, a node that does not answer right now).
    pub fn is_retried(&self) -> bool {
        match self {
            DriverError::Transient(_) => true,
            DriverError::Start(failure) => matches!(
                failure.kind,
                StartFailureKind::EngineError | StartFailureKind::NodeUnreachable
            ),
            DriverError::Permanent(_) | DriverError::SoldOut(_) | DriverError::RateLimited(_) => false,
        }
    }
}

/// Why a server's container did not start, as its owner is shown it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartFailureKind {
    /// The image is not on the node's engine.
    UnknownImage,
    /// The engine refused the container's configuration (HTTP 4xx).
    EngineRefused,
    /// The node's disk is full, or its free space is below `containers.disk_free_mib_min`.
    DiskFull,
    /// No game port of the node's range is free.
    NoFreePort,
    /// The node's SSH or engine did not answer.
    NodeUnreachable,
    /// The engine failed or timed out (HTTP 5xx); retried.
    EngineError,
    /// Anything else (the node's configuration, the platform's own keys or store).
    Other,
}

impl StartFailureKind {
    /// Its name as stored and shown (`unknown_image`, ...).
    pub fn name(self) -> &'static str {
        match self {
            StartFailureKind::UnknownImage => "unknown_image",
            StartFailureKind::EngineRefused => "engine_refused",
            StartFailureKind::DiskFull => "disk_full",
            StartFailureKind::NoFreePort => "no_free_port",
            StartFailureKind::NodeUnreachable => "node_unreachable",
            StartFailureKind::EngineError => "engine_error",
            StartFailureKind::Other => "other",
        }
    }

    /// The image or the container's configuration is wrong: every node refuses it the
    /// same, so the core ends the start instead of retrying it.
    pub fn fails_on_every_node(self) -> bool {
        matches!(self, StartFailureKind::UnknownImage | StartFailureKind::EngineRefused)
    }
}

/// A failed start: what kind, on which node, the message naming node and cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StartFailure {
    pub kind: StartFailureKind,
    pub node: String,
    pub message: String,
}

impl StartFailure {
    /// Any failed start command as its owner is shown it (`node`: the command's node).
    pub fn of(error: &DriverError, node: &str) -> StartFailure {
        match error {
            DriverError::Start(failure) => failure.clone(),
            other => StartFailure {
                kind: if matches!(other, DriverError::Transient(_)) {
                    StartFailureKind::EngineError
                } else {
                    StartFailureKind::Other
                },
                node: node.to_string(),
                message: other.to_string(),
            },
        }
    }
}

/// Where drivers report what they observe later (a server booted, a container died).
/// Passed per call, so no driver holds a reference back into the runtime.
#[derive(Clone)]
pub struct ObservationSink {
    tx: tokio::sync::mpsc::Sender<Input>,
}

impl ObservationSink {
    pub fn new(tx: tokio::sync::mpsc::Sender<Input>) -> Self {
        ObservationSink { tx }
    }

    /// Waits while the runtime is busy; drops the observation if it is gone.
    pub async fn observe(&self, input: Input) {
        if self.tx.send(input).await.is_err() {
            tracing::warn!("runtime gone, observation dropped");
        }
    }
}

/// What the cloud provider must be able to do (Hetzner Cloud later).
pub trait CloudProvider: Send + Sync + 'static {
    /// Creates the VM for `node_id` (deterministic name, labels) and returns when it is
    /// ready to take containers. "Already exists" counts as success.
    fn create_node<'a>(
        &'a self,
        command_id: CommandId,
        node_id: NodeId,
        vm_type: &'a str,
        location: &'a str,
    ) -> BoxFuture<'a, Result<String, DriverError>>;

    /// Deletes the VM of `node_id`. "Already deleted" counts as success.
    fn delete_node(&self, command_id: CommandId, node_id: NodeId) -> BoxFuture<'_, Result<(), DriverError>>;

    /// How often [`CloudProvider::reconcile`] runs (first at start); `None`: never.
    fn reconcile_interval_ms(&self) -> Option<u64> {
        None
    }

    /// Compares the provider's VMs with the core's nodes (see [`cloud`]).
    fn reconcile<'a>(&'a self, handle: &'a crate::runtime::RuntimeHandle) -> BoxFuture<'a, Result<(), DriverError>> {
        let _ = handle;
        Box::pin(async { Ok(()) })
    }
}

/// A node as a command names it: the core's id and the name the fleet knows it by
/// (the runtime resolves the name from the core when it dispatches the command).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    pub id: NodeId,
    pub name: String,
}

/// What a container engine on a node must be able to do.
pub trait ContainerDriver: Send + Sync + 'static {
    /// Starts the server's container; returns once it runs. Reports
    /// `Input::ServerBooted` through `sink` when Minecraft accepts players.
    fn start_container(
        &self,
        command_id: CommandId,
        server_id: ServerId,
        node: NodeRef,
        ram_mib: u32,
        restore_world: bool,
        sink: ObservationSink,
    ) -> BoxFuture<'_, Result<(), DriverError>>;

    /// Stops the container with the world saved; returns once it has exited.
    fn stop_container(
        &self,
        command_id: CommandId,
        server_id: ServerId,
        node: NodeRef,
    ) -> BoxFuture<'_, Result<(), DriverError>>;

    fn archive_world(&self, command_id: CommandId, server_id: ServerId) -> BoxFuture<'_, Result<(), DriverError>>;

    fn delete_world(&self, command_id: CommandId, server_id: ServerId) -> BoxFuture<'_, Result<(), DriverError>>;

    /// Where the server's game port answers while its container runs (the player
    /// router connects players there); `None` when unknown (the in-process fake has none).
    fn game_address(&self, server_id: ServerId) -> Option<std::net::SocketAddr> {
        let _ = server_id;
        None
    }
}

#[derive(Clone)]
pub struct Drivers {
    pub cloud: Arc<dyn CloudProvider>,
    pub containers: Arc<dyn ContainerDriver>,
    /// The nodes' engines, when containers run on real ones: `Services` starts an
    /// observer per node (readiness, players, exits, health, reconciliation).
    pub fleet: Option<Arc<NodeFleet>>,
}

/// The name of a VM type of the catalog by its index (the core calls VM types
/// "server types" in `Catalog::server_types`).
pub fn vm_type_name(catalog: &Catalog, vm_type: VmTypeIdx) -> Option<&str> {
    catalog.server_types.get(vm_type.0 as usize).map(|t| t.name.as_str())
}

pub fn location_name(catalog: &Catalog, location: LocationIdx) -> Option<&str> {
    catalog.locations.get(location.0 as usize).map(String::as_str)
}

/// The name of a cloud node's VM: derived from its node id, so a repeated order finds
/// the VM instead of making a second one, and operators can read its type and place.
pub fn cloud_node_name(catalog: &Catalog, node_id: NodeId, vm_type: VmTypeIdx, location: LocationIdx) -> String {
    cloud_node_name_of(
        node_id,
        vm_type_name(catalog, vm_type).unwrap_or("unknown"),
        location_name(catalog, location).unwrap_or("unknown"),
    )
}

/// [`cloud_node_name`] from the VM type's and location's names.
pub fn cloud_node_name_of(node_id: NodeId, vm_type: &str, location: &str) -> String {
    format!("ppp-node-{node_id}-{vm_type}-{location}")
}
