//! Scaling policies: they look at the fleet, the queue and the clock, and say which
//! cloud nodes to add or remove. The core applies the decision: it registers every
//! node it orders as a `Provisioning` placeholder *before* the provider is asked, so
//! the capacity already on its way is visible to the next evaluation and the same
//! demand is never provisioned twice.
//!
//! - `config` — `PolicyConfig` (`[core.policy]`) and the reactive thresholds;
//! - `view` — what a policy sees and answers (`FleetView`, `ScalingDecision`);
//! - `composite` — `CompositePolicy`, every enabled component in one;
//! - `spare`, `scale_down`, `predictive`, `scheduled` — the components;
//! - `fallback` — back-off per (VM type, location) after refused orders;
//! - `catalog` — usable RAM per VM type, the type to order, bin counting.

pub mod catalog;
pub mod composite;
pub mod config;
pub mod fallback;
pub mod predictive;
pub mod scale_down;
pub mod scheduled;
pub mod spare;
pub mod view;

pub use catalog::{bins_needed, choose_type, type_usable_mib, usable_mib};
pub use composite::{CompositePolicy, ReactivePolicy};
pub use config::{PolicyConfig, ReactiveConfig};
pub use fallback::FallbackConfig;
pub use predictive::PredictiveConfig;
pub use scale_down::{ScaleDownConfig, ScaleDownRule, billing_hour_left_ms};
pub use scheduled::{ScheduleWindow, ScheduledConfig, Weekday};
pub use spare::SpareConfig;
pub use view::{
    FleetTotals, FleetView, PolicyState, QUEUE_VIEW_MAX, ScalingDecision, ScalingPolicy, StaticPolicy, Trigger,
};

#[cfg(test)]
mod tests;
