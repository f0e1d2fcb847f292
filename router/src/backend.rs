//! What the router asks of the platform: the [`Backend`] trait and its vocabulary. The
//! production shell implements it on its runtime handle (a query of the core and the
//! store); the tests implement it with a table.

use std::future::Future;
use std::net::SocketAddr;

/// The address a player typed, normalised (see [`crate::hostname`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RequestedHost {
    /// `<name>.<domain>` under the configured domain: the server's name.
    Name(String),
    /// Any other hostname: a server's custom hostname, if one claims it.
    Custom(String),
}

impl std::fmt::Display for RequestedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestedHost::Name(name) => write!(f, "name {name:?}"),
            RequestedHost::Custom(hostname) => write!(f, "hostname {hostname:?}"),
        }
    }
}

/// A server a hostname leads to, as the router needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub server_id: u64,
    pub state: ServerState,
    /// Shown in status answers the router gives itself (the server's own when it runs).
    pub players_max: u32,
    /// `data:image/png;base64,...`, shown in status answers the router gives itself.
    pub favicon: Option<String>,
    /// Whether the owner's balance allows a start. When it does not, a login gets a
    /// clear disconnect and the server is not woken.
    pub balance_allows_start: bool,
    /// Send a PROXY protocol v2 header to this server; `None` follows the router's
    /// configuration.
    pub proxy_protocol: Option<bool>,
}

/// Where a server is in its life, from a player's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerState {
    /// Its game port answers: connect players to `address`.
    Running { address: SocketAddr },
    /// Idle-stopped; a login wakes it.
    Sleeping,
    /// Stopped by its owner (or archived); a login starts it.
    Stopped,
    /// A start is under way (a container is booting).
    Starting,
    /// A start waits for capacity: `position` in the queue (1 = next), `eta_s` an estimate.
    Queued { position: u32, eta_s: u32 },
    /// Being stopped; a login starts it again once it has stopped.
    Stopping,
}

impl ServerState {
    /// Sleeping or stopped: a login wakes it.
    pub fn is_asleep(&self) -> bool {
        matches!(self, ServerState::Sleeping | ServerState::Stopped)
    }
}

/// The answer to [`Backend::wake`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WakeOutcome {
    /// The start was accepted and a container is booting (or already running).
    Starting,
    /// The start waits for capacity.
    Queued { position: u32, eta_s: u32 },
    /// The start was refused.
    Refused(WakeRefusal),
}

/// Why a start was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WakeRefusal {
    /// The owner's balance does not cover a start.
    InsufficientBalance,
    /// Anything else, in words a player may read (the core's rejection reason).
    Other(String),
}

/// The platform could not answer (the runtime is down, the database unreachable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the platform could not answer: {0}")]
pub struct BackendError(pub String);

/// The platform behind the router. Every method is called from connection tasks
/// concurrently; none of them should block for long (a player is waiting).
pub trait Backend: Send + Sync + 'static {
    /// The server `host` leads to, or `None` when no server claims it.
    fn resolve(&self, host: &RequestedHost) -> impl Future<Output = Result<Option<Route>, BackendError>> + Send;

    /// Starts a sleeping or stopped server (a core input).
    fn wake(&self, server_id: u64) -> impl Future<Output = Result<WakeOutcome, BackendError>> + Send;

    /// A player's connection was handed to the running server.
    fn player_joined(&self, server_id: u64, player: &str) -> impl Future<Output = ()> + Send;

    /// That connection ended.
    fn player_left(&self, server_id: u64, player: &str) -> impl Future<Output = ()> + Send;
}
