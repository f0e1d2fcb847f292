//! The building blocks of the scaling policies (`crate::scaling` composes them):
//! the hour-of-week demand profile of the predictive policy, the time windows of the
//! scheduled minimum, and the provider back-off that drives fallback.

pub mod fallback;
pub mod predictive;
pub mod scheduled;
