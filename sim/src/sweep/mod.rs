//! `payperplay-sim sweep`: run one scenario over a grid (or a seeded random sample) of
//! parameter values, in parallel, and find the Pareto front of cost against p95 start
//! wait and SLO misses.
//!
//! A parameter is a dotted TOML path into the scenario (`core.policy.reactive.
//! scale_up_free_mib_below`; `core.` may be left out) and its values: `lo..hi:step`
//! (numbers, `hi` included), `lo..hi` (random search only: drawn uniformly), or a comma
//! list (`5m,10m,20m`, `true,false`, any strings). Values are written into the scenario
//! text with toml_edit, keeping the type the file already has there (an integer field
//! stays an integer, a float a float, a string a string), and every configuration is
//! parsed with [`Scenario::parse`] before anything runs, so a bad path or value is
//! refused with the scenario's own error naming the field.
//!
//! Results do not depend on the number of threads: each configuration is a
//! deterministic simulation, run by [`crate::parallel`], which collects results by
//! configuration index.
//!
//! Files: [`params`] (parsing `--param`, the grid, random points), [`toml_path`] (writing
//! a value into the scenario text), [`pareto`] (the front and the recommendation),
//! [`output`] (results.json, results.csv, pareto.md, pareto.svg, recommended.toml, the
//! terminal table).

mod output;
mod params;
mod pareto;
mod toml_path;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use toml_edit::DocumentMut;

pub use self::output::CSV_METRICS;
pub use self::params::{GRID_MAX, Param, ParamValue, Values, parse_param};
use self::params::{grid, random_points};
pub use self::pareto::{OBJECTIVES, SweepResult, dominates, pareto_front};
pub use self::toml_path::{TomlPathError, set_path};
use crate::outcome::Outcome;
use crate::run::Simulation;
use crate::scenario::{Scenario, ScenarioError};

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("--param {param:?}: {message}")]
    Param { param: String, message: String },
    #[error("the base scenario: {error}")]
    Base { error: ScenarioError },
    #[error("configuration {index} ({assignments}): {error}")]
    Apply {
        index: usize,
        assignments: String,
        error: TomlPathError,
    },
    #[error("configuration {index} ({assignments}): {error}")]
    Scenario {
        index: usize,
        assignments: String,
        error: ScenarioError,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
}

/// One point of the sweep: its values and the scenario they make.
#[derive(Debug, Clone)]
pub struct Configuration {
    pub index: usize,
    /// (full path, value), in the order the parameters were given.
    pub assignments: Vec<(String, ParamValue)>,
    pub scenario: Scenario,
}

impl Configuration {
    pub fn label(&self) -> String {
        label(&self.assignments)
    }
}

pub(super) fn label(assignments: &[(String, ParamValue)]) -> String {
    assignments
        .iter()
        .map(|(path, value)| format!("{path}={value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Complete a path given without the leading `core.`: a first segment that is not a
/// top-level field of the scenario but is one of `core` gets the prefix.
fn complete_path(path: &str, base: &Scenario) -> String {
    let json = serde_json::to_value(base).expect("scenarios serialize");
    let first = path.split('.').next().unwrap_or_default();
    let top = json.as_object().is_some_and(|o| o.contains_key(first));
    let in_core = json
        .get("core")
        .and_then(|c| c.as_object())
        .is_some_and(|o| o.contains_key(first));
    if !top && in_core {
        format!("core.{path}")
    } else {
        path.to_string()
    }
}

/// Every configuration of the sweep, parsed and validated (nothing has run yet).
/// `random`: that many points drawn with a ChaCha stream seeded by `seed` instead of
/// the whole grid.
pub fn configurations(
    base_text: &str,
    base_path: &Path,
    params: &[Param],
    random: Option<usize>,
    seed: u64,
) -> Result<Vec<Configuration>, SweepError> {
    if params.is_empty() {
        return Err(SweepError::Usage("give at least one --param".into()));
    }
    let base = Scenario::parse(base_text, base_path).map_err(|error| SweepError::Base { error })?;
    let mut params = params.to_vec();
    let mut seen = BTreeSet::new();
    for param in &mut params {
        param.path = complete_path(&param.given, &base);
        if !seen.insert(param.path.clone()) {
            return Err(SweepError::Param {
                param: param.given.clone(),
                message: format!("{} is swept twice", param.path),
            });
        }
    }
    let points = match random {
        Some(0) => return Err(SweepError::Usage("--random needs at least 1".into())),
        None => grid(&params)?,
        Some(n) => random_points(&params, n, seed),
    };
    let doc: DocumentMut = base_text
        .parse()
        .map_err(|e: toml_edit::TomlError| SweepError::Usage(e.to_string()))?;
    let mut out = Vec::with_capacity(points.len());
    for (index, point) in points.into_iter().enumerate() {
        let assignments: Vec<(String, ParamValue)> = params.iter().map(|p| p.path.clone()).zip(point).collect();
        let mut doc = doc.clone();
        for (path, value) in &assignments {
            set_path(&mut doc, path, value).map_err(|error| SweepError::Apply {
                index,
                assignments: label(&assignments),
                error,
            })?;
        }
        let scenario = Scenario::parse(&doc.to_string(), base_path).map_err(|error| SweepError::Scenario {
            index,
            assignments: label(&assignments),
            error,
        })?;
        out.push(Configuration {
            index,
            assignments,
            scenario,
        });
    }
    Ok(out)
}

/// Run every configuration on `jobs` threads (0: one per core); outcomes in
/// configuration order, whatever the thread count. `done` is called after each run
/// (from the worker threads).
pub fn run_all(configs: &[Configuration], jobs: usize, done: &(dyn Fn(usize) + Sync)) -> Vec<Outcome> {
    crate::parallel::map(
        configs,
        jobs,
        |config| Simulation::new(config.scenario.clone()).run(),
        done,
    )
}
