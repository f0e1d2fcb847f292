//! PayPerPlay's scheduling and billing core.
//!
//! A sans-IO state machine (after quinn-proto, str0m and Firezone's connlib): the
//! driver passes every input with the current time to [`Core::handle`], then drains
//! [`Core::poll_command`] (decisions to carry out) and [`Core::poll_event`] (facts for
//! observers) until both return `None`, and wakes the core at [`Core::poll_timeout`].
//! The core never reads a clock, never does I/O and draws no random numbers; the
//! simulator and the production shell drive the very same code.

pub mod config;
pub mod idmap;
pub mod io;
mod machine;
pub mod model;
mod pending;
pub mod placement;
pub mod policy;
pub mod prewarm;
pub mod queue;
pub mod snapshot;
#[cfg(test)]
mod test_rng;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
mod timerq;
pub mod types;
pub mod units;

pub use config::{
    BillingConfig, Catalog, ConfigError, CoreConfig, LifecycleConfig, PlacementConfig, QueueConfig, ReserveConfig,
    VmType,
};
pub use io::{
    Command, CommandKind, Email, Event, FailureKind, Input, LedgerEntry, LedgerKind, NodeRemoval, RejectReason,
    Rejection, StartOutcome, StopReason,
};
pub use machine::{Core, CoreStats, Outputs, QueueStatus};
pub use model::{Node, NodeKind, NodeState, Server, ServerState, User};
pub use policy::{
    CompositePolicy, FallbackConfig, FleetTotals, FleetView, PolicyConfig, PredictiveConfig, ReactiveConfig,
    ScaleDownConfig, ScaleDownRule, ScalingDecision, ScalingPolicy, ScheduleWindow, ScheduledConfig, SpareConfig,
    Trigger, Weekday,
};
pub use snapshot::{CORE_VERSION, CRATE_VERSION, SNAPSHOT_FORMAT_VERSION, Snapshot, SnapshotError, SnapshotHeader};
pub use types::*;
