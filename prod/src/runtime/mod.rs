//! The runtime: one task owns the core. Inputs from the API (requests) and from
//! drivers (observations, command results) arrive over channels; each is appended to
//! the journal in Postgres, then handled; the commands the core issues are recorded
//! in the command log and carried out by drivers in their own tasks, whose results
//! come back as inputs. On start the core is rebuilt by replaying the journal.
//!
//! - `handle.rs`: [`RuntimeHandle`] (`submit`, `query`) and the channels.
//! - `recovery.rs`: [`Runtime::recover`]: journal lock, replay, re-issue of unfinished
//!   commands, reconciliation with the database and the configured fleet.
//! - `run.rs`: the loop: journal → handle → record and dispatch commands → observe
//!   events (metrics, the nodes table); timeouts.
//! - `executor.rs`: carries out one command against the drivers, with retries.

mod executor;
mod handle;
mod recovery;
mod run;

use std::sync::Arc;

use payperplay_core::{Core, CoreConfig, Rejection};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::{FleetConfig, RuntimeConfig};
use crate::drivers::Drivers;
use crate::store::{JournalLock, Store, StoreError};

pub use handle::{Inbox, RuntimeHandle, channel};
pub use run::node_record;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("rejected: {0}")]
    Rejected(Rejection),
    #[error("runtime input queue is full")]
    Busy,
    #[error("runtime is not running")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the runtime needs from the outside, passed in explicitly.
#[derive(Clone)]
pub struct RuntimeDeps {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub drivers: Drivers,
    pub mail_wakeup: Arc<Notify>,
    pub core_config: CoreConfig,
    pub runtime_config: RuntimeConfig,
    pub fleet: FleetConfig,
    pub public_base_url: String,
}

/// The task that owns the core. It keeps no copy of the core's state: what the core
/// knows (which commands it waits for, which states accept a start) is asked of it.
pub struct Runtime {
    core: Core,
    deps: RuntimeDeps,
    handle: RuntimeHandle,
    next_seq: i64,
    /// Held while the runtime lives: one owner of the core per database.
    _journal_lock: JournalLock,
}
