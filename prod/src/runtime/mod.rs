//! The runtime: one task owns the core. Inputs from the API (requests) and from
//! drivers (observations, command results) arrive over channels; each is appended to
//! the journal in Postgres, then handled; the commands the core issues are recorded
//! in the command log and carried out by drivers in their own tasks, whose results
//! come back as inputs. On start the core is rebuilt by replaying the journal.
//!
//! - `handle.rs`: [`RuntimeHandle`] (`submit`, `query`, bounded waits), the channels
//!   and recovery progress.
//! - `recovery.rs`: [`Runtime::recover`]: journal lock and leadership epoch (a standby
//!   waits for it), replay (skipping quarantined inputs), re-issue of unfinished
//!   commands, reconciliation with the database and the configured fleet, the balance
//!   check.
//! - `run.rs`: the loop: journal → handle (a panic quarantines the input) → record and
//!   dispatch commands → observe events (metrics, the nodes table); timeouts; the
//!   lock and balance checks.
//! - `executor.rs`: carries out one command against the drivers, with retries (ledger,
//!   mail and world commands until they succeed).
//! - `alarms.rs`: what an operator must look at.
//! - `requests.rs`: request outcomes (for `GET /v1/requests/{id}`) and the servers
//!   table's tiers, which follow the core's.
//! - `snapshots.rs`: snapshots of the core (cadence, on shutdown); recovery starts
//!   from the newest usable one.

mod alarms;
mod executor;
mod handle;
mod recovery;
mod requests;
mod run;
mod snapshots;

use std::sync::Arc;

use payperplay_core::{Core, CoreConfig, Input, Rejection};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::{FleetConfig, RuntimeConfig};
use crate::drivers::Drivers;
use crate::store::{JournalLock, Store, StoreError};

/// Handles `input` with a panic guard: a panic in the core (or in the test hook) is
/// caught and returned as its message. After a panic the core must be thrown away.
pub(crate) fn handle_guarded(
    core: &mut Core,
    hook: Option<&InputHook>,
    now: payperplay_core::Timestamp,
    input: Input,
) -> Result<Result<(), Rejection>, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if let Some(hook) = hook {
            (hook.0)(&input);
        }
        core.handle(now, input)
    }))
    .map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|message| message.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic without a message".to_string())
    })
}

pub use alarms::{Alarm, AlarmKind, Alarms};
pub use handle::{Inbox, RecoveryPhase, RecoveryView, RequestScope, RuntimeHandle, channel};
pub use run::node_record;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("rejected: {0}")]
    Rejected(Rejection),
    #[error("runtime input queue is full")]
    Busy,
    #[error("runtime is not running")]
    Stopped,
    #[error("runtime is recovering (or standing by for another's journal lock)")]
    Recovering,
    #[error("request expired in the runtime's queue, not handled")]
    Expired,
    #[error("outcome unknown: the input {} was taken up, then: {reason}", seq.map_or("".to_string(), |seq| format!("(journal {seq})")))]
    OutcomeUnknown { seq: Option<i64>, reason: String },
    #[error("input {seq} made the core panic and is quarantined: {message}")]
    Quarantined { seq: i64, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
}

/// Why the journal cannot be replayed under the rules it was recorded under.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(
        "journal inputs {from_seq} to {to_seq} were recorded under core version {recorded} (crate {recorded_crate}), \
         this is core version {ours} (crate {ours_crate}): a journal stretch of another core version can only be \
         crossed by a snapshot taken at or after it (seq {next_seq}), and there is none"
    )]
    CoreVersion {
        from_seq: i64,
        to_seq: i64,
        recorded: i32,
        recorded_crate: String,
        ours: u32,
        ours_crate: &'static str,
        next_seq: i64,
    },
    #[error("the journal was pruned before seq {first_seq} and no usable snapshot covers it")]
    JournalPruned { first_seq: i64 },
    #[error("the configuration recorded at journal seq {seq} does not decode: {reason}")]
    RecordedConfig { seq: i64, reason: String },
    #[error("the configuration cannot take effect at journal seq {seq}: {error}")]
    Reconfigure {
        seq: i64,
        error: payperplay_core::ConfigError,
    },
}

/// Called with each input before the core handles it, inside the runtime's panic
/// guard: tests inject a panic with it (a poisoned input). `None` in production.
#[derive(Clone)]
pub struct InputHook(pub Arc<dyn Fn(&Input) + Send + Sync>);

impl std::fmt::Debug for InputHook {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("InputHook")
    }
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
    /// Held while the runtime lives: one owner of the core per database. Checked
    /// periodically; its epoch fences the store's writes.
    journal_lock: JournalLock,
    /// The API request the next journaled input comes from (see `requests.rs`).
    pending_request: Option<crate::store::RequestTag>,
    snapshot_due: snapshots::SnapshotDue,
}
