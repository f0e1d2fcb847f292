//! PayPerPlay's digital twin: a deterministic discrete-event simulator that drives the
//! same core as production with generated workloads and modelled cloud latencies.
//!
//! Same seed + same scenario + same commit → the same output bytes: no clock reads,
//! no unseeded randomness, no `HashMap` iteration.

pub mod check;
pub mod compare;
pub mod dist;
pub mod outcome;
pub mod parallel;
pub mod provider;
pub mod report;
pub mod run;
pub mod scenario;
pub mod sweep;
pub mod timeline;
pub mod trace;
pub mod workload;

pub use outcome::Outcome;
pub use run::{IssuedCommand, RunResult, Simulation};
pub use scenario::{Scenario, ScenarioError};

/// Run a scenario to completion.
pub fn simulate(scenario: Scenario) -> Outcome {
    Simulation::new(scenario).run()
}
