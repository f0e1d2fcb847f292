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
//! deterministic simulation, and results are collected by configuration index.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use plotters::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use toml_edit::{DocumentMut, InlineTable, Item, Table, TableLike, Value};

use crate::outcome::Outcome;
use crate::run::Simulation;
use crate::scenario::{Scenario, ScenarioError};

/// The objectives of the Pareto front, all minimized.
pub const OBJECTIVES: [&str; 3] = ["cost_total_eur", "start_wait_p95_s", "slo_misses"];

/// Metrics written to results.csv and printed, after the parameters.
pub const CSV_METRICS: [&str; 13] = [
    "cost_total_eur",
    "cost_cloud_eur",
    "start_wait_p95_s",
    "start_wait_mean_s",
    "capacity_wait_p95_s",
    "slo_misses",
    "slo_miss_pct",
    "starts_rejected",
    "sessions_lost",
    "revenue_total_eur",
    "margin_eur",
    "nodes_cloud_peak",
    "utilization_mean_pct",
];

/// More configurations than this need `--random`.
pub const GRID_MAX: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("--param {param:?}: {message}")]
    Param { param: String, message: String },
    #[error("the base scenario: {error}")]
    Base { error: ScenarioError },
    #[error("configuration {index} ({assignments}): {message}")]
    Apply {
        index: usize,
        assignments: String,
        message: String,
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

/// One parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
}

impl ParamValue {
    /// `true`/`false`, an integer, a float, or else the text itself.
    pub fn parse_literal(text: &str) -> ParamValue {
        let text = text.trim();
        match text {
            "true" => return ParamValue::Bool(true),
            "false" => return ParamValue::Bool(false),
            _ => {}
        }
        if let Ok(i) = text.parse::<i64>() {
            return ParamValue::Int(i);
        }
        if text.chars().any(|c| c.is_ascii_digit())
            && let Ok(f) = text.parse::<f64>()
            && f.is_finite()
        {
            return ParamValue::Float(f);
        }
        ParamValue::Str(text.to_string())
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Int(i) => Some(*i as f64),
            ParamValue::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ParamValue::Int(i) => serde_json::Value::from(*i),
            ParamValue::Float(f) => serde_json::Value::from(*f),
            ParamValue::Bool(b) => serde_json::Value::from(*b),
            ParamValue::Str(s) => serde_json::Value::from(s.as_str()),
        }
    }

    /// The TOML value to write where the file has `old` (or nothing): keeps the file's
    /// type when the value converts without loss.
    fn to_toml(&self, old: Option<&Value>) -> Value {
        match (self, old) {
            (ParamValue::Float(f), Some(Value::Integer(_))) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                Value::from(*f as i64)
            }
            (ParamValue::Int(i), Some(Value::Float(_))) => Value::from(*i as f64),
            (ParamValue::Int(_) | ParamValue::Float(_) | ParamValue::Bool(_), Some(Value::String(_))) => {
                Value::from(self.to_string())
            }
            (ParamValue::Int(i), _) => Value::from(*i),
            (ParamValue::Float(f), _) => Value::from(*f),
            (ParamValue::Bool(b), _) => Value::from(*b),
            (ParamValue::Str(s), _) => Value::from(s.as_str()),
        }
    }
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) if x.fract() == 0.0 && x.abs() < 1e15 => write!(f, "{x:.1}"),
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Str(s) => write!(f, "{s}"),
        }
    }
}

/// The values a parameter takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Listed, or a range with a step.
    List(Vec<ParamValue>),
    /// `lo..hi` without a step: random search draws uniformly (integers if both are).
    Span { lo: ParamValue, hi: ParamValue },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// As given on the command line (left of `=`).
    pub given: String,
    /// The full dotted path in the scenario file.
    pub path: String,
    pub values: Values,
}

/// Parse `path=values`. The path is completed against the scenario later
/// ([`Param::path`] is the given path until then).
pub fn parse_param(text: &str) -> Result<Param, SweepError> {
    let bad = |message: String| SweepError::Param {
        param: text.to_string(),
        message,
    };
    let (path, spec) = text.split_once('=').ok_or_else(|| {
        bad("expected PATH=VALUES, e.g. core.policy.reactive.scale_up_free_mib_below=4096..16384:4096".into())
    })?;
    let path = path.trim();
    if path.is_empty() || path.split('.').any(|s| s.trim().is_empty()) {
        return Err(bad(format!("{path:?} is not a dotted path")));
    }
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(bad("no values".into()));
    }
    let values = if let Some((lo, rest)) = spec.split_once("..")
        && !spec.contains(',')
    {
        let (hi, step) = match rest.split_once(':') {
            Some((hi, step)) => (hi, Some(step)),
            None => (rest, None),
        };
        let number = |what: &str, s: &str| match ParamValue::parse_literal(s) {
            v @ (ParamValue::Int(_) | ParamValue::Float(_)) => Ok(v),
            _ => Err(bad(format!("the range's {what} {s:?} is not a number"))),
        };
        let (lo, hi) = (number("start", lo)?, number("end", hi)?);
        if lo.as_f64() > hi.as_f64() {
            return Err(bad(format!("the range's start {lo} is above its end {hi}")));
        }
        match step {
            None => Values::Span { lo, hi },
            Some(step) => Values::List(range(&lo, &hi, &number("step", step)?).map_err(bad)?),
        }
    } else {
        Values::List(spec.split(',').map(ParamValue::parse_literal).collect())
    };
    if let Values::List(list) = &values
        && list.iter().any(|v| matches!(v, ParamValue::Str(s) if s.is_empty()))
    {
        return Err(bad("an empty value in the list".into()));
    }
    Ok(Param {
        given: path.to_string(),
        path: path.to_string(),
        values,
    })
}

/// `lo, lo + step, ...` up to and including `hi`; integers when all three are.
fn range(lo: &ParamValue, hi: &ParamValue, step: &ParamValue) -> Result<Vec<ParamValue>, String> {
    if let (ParamValue::Int(lo), ParamValue::Int(hi), ParamValue::Int(step)) = (lo, hi, step) {
        if *step <= 0 {
            return Err(format!("the step must be positive, not {step}"));
        }
        let n = (hi - lo) / step + 1;
        if n as usize > GRID_MAX {
            return Err(format!("{n} values are too many"));
        }
        return Ok((0..n).map(|i| ParamValue::Int(lo + i * step)).collect());
    }
    let (lo, hi, step) = (
        lo.as_f64().expect("number"),
        hi.as_f64().expect("number"),
        step.as_f64().expect("number"),
    );
    if step.is_nan() || step <= 0.0 {
        return Err(format!("the step must be positive, not {step}"));
    }
    let n = ((hi - lo) / step + 1e-9).floor() as usize + 1;
    if n > GRID_MAX {
        return Err(format!("{n} values are too many"));
    }
    // Rounded to 9 decimals so 0.1 steps give 0.3, not 0.30000000000000004.
    Ok((0..n)
        .map(|i| ParamValue::Float(((lo + i as f64 * step) * 1e9).round() / 1e9))
        .collect())
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

fn label(assignments: &[(String, ParamValue)]) -> String {
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
            set_path(&mut doc, path, value).map_err(|message| SweepError::Apply {
                index,
                assignments: label(&assignments),
                message,
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

fn list_of(param: &Param) -> Result<&[ParamValue], SweepError> {
    match &param.values {
        Values::List(list) => Ok(list),
        Values::Span { lo, hi } => Err(SweepError::Param {
            param: param.given.clone(),
            message: format!("{lo}..{hi} has no step: give {lo}..{hi}:STEP for a grid, or use --random N"),
        }),
    }
}

/// The cartesian product, first parameter slowest.
fn grid(params: &[Param]) -> Result<Vec<Vec<ParamValue>>, SweepError> {
    let lists = params.iter().map(list_of).collect::<Result<Vec<_>, _>>()?;
    let total = lists
        .iter()
        .try_fold(1usize, |acc, l| acc.checked_mul(l.len()))
        .filter(|&n| n <= GRID_MAX)
        .ok_or_else(|| {
            SweepError::Usage(format!(
                "the grid has more than {GRID_MAX} configurations; sample it with --random N"
            ))
        })?;
    Ok((0..total).map(|k| decode(k, &lists)).collect())
}

/// Grid point number `k` (mixed radix, the last parameter fastest).
fn decode(mut k: usize, lists: &[&[ParamValue]]) -> Vec<ParamValue> {
    let mut point = vec![ParamValue::Bool(false); lists.len()];
    for (slot, list) in point.iter_mut().zip(lists).rev() {
        *slot = list[k % list.len()].clone();
        k /= list.len();
    }
    point
}

/// `n` points drawn from a ChaCha stream: distinct grid points when every parameter is
/// a list (the whole grid, in grid order, when it has no more than `n`), else
/// independent uniform draws.
fn random_points(params: &[Param], n: usize, seed: u64) -> Vec<Vec<ParamValue>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let lists: Option<Vec<&[ParamValue]>> = params
        .iter()
        .map(|p| match &p.values {
            Values::List(list) => Some(list.as_slice()),
            Values::Span { .. } => None,
        })
        .collect();
    if let Some(lists) = lists {
        let total = lists.iter().try_fold(1usize, |acc, l| acc.checked_mul(l.len()));
        if let Some(total) = total
            && total <= n
        {
            return (0..total).map(|k| decode(k, &lists)).collect();
        }
        let mut seen = BTreeSet::new();
        let mut points = Vec::with_capacity(n);
        while points.len() < n {
            let picks: Vec<usize> = lists.iter().map(|l| rng.random_range(0..l.len())).collect();
            if seen.insert(picks.clone()) {
                points.push(picks.iter().zip(&lists).map(|(&i, l)| l[i].clone()).collect());
            }
        }
        return points;
    }
    (0..n)
        .map(|_| {
            params
                .iter()
                .map(|p| match &p.values {
                    Values::List(list) => list[rng.random_range(0..list.len())].clone(),
                    Values::Span { lo, hi } => match (lo, hi) {
                        (ParamValue::Int(lo), ParamValue::Int(hi)) => ParamValue::Int(rng.random_range(*lo..=*hi)),
                        _ => {
                            let (lo, hi) = (lo.as_f64().expect("number"), hi.as_f64().expect("number"));
                            let x = if lo == hi { lo } else { rng.random_range(lo..hi) };
                            ParamValue::Float((x * 1e9).round() / 1e9)
                        }
                    },
                })
                .collect()
        })
        .collect()
}

/// Write `value` at a dotted path (array elements by index), creating missing tables.
pub fn set_path(doc: &mut DocumentMut, path: &str, value: &ParamValue) -> Result<(), String> {
    let segments: Vec<&str> = path.split('.').collect();
    set_in(doc.as_table_mut(), false, &segments, 0, value)
}

fn set_in(
    table: &mut dyn TableLike,
    inline: bool,
    segments: &[&str],
    depth: usize,
    value: &ParamValue,
) -> Result<(), String> {
    let key = segments[depth];
    let here = || segments[..=depth].join(".");
    if depth + 1 == segments.len() {
        return match table.get_mut(key) {
            None | Some(Item::None) => {
                table.insert(key, Item::Value(value.to_toml(None)));
                Ok(())
            }
            Some(Item::Value(old)) => replace(old, value, &here()),
            Some(_) => Err(format!("{} is a table; give a field inside it", here())),
        };
    }
    if table.get(key).is_none_or(|item| item.is_none()) {
        let item = if inline {
            Item::Value(Value::InlineTable(InlineTable::new()))
        } else {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        };
        table.insert(key, item);
    }
    let item = table.get_mut(key).expect("present");
    match item {
        Item::Table(t) => set_in(t, false, segments, depth + 1, value),
        Item::Value(Value::InlineTable(t)) => set_in(t, true, segments, depth + 1, value),
        Item::ArrayOfTables(array) => {
            let len = array.len();
            let t = segments[depth + 1]
                .parse::<usize>()
                .ok()
                .and_then(|i| array.get_mut(i))
                .ok_or_else(|| format!("{} has {len} entries; index them from 0", here()))?;
            if depth + 2 == segments.len() {
                return Err(format!(
                    "{}.{} is a table; give a field inside it",
                    here(),
                    segments[depth + 1]
                ));
            }
            set_in(t, false, segments, depth + 2, value)
        }
        Item::Value(Value::Array(array)) => {
            let len = array.len();
            let element = segments[depth + 1]
                .parse::<usize>()
                .ok()
                .and_then(|i| array.get_mut(i))
                .ok_or_else(|| format!("{} has {len} elements; index them from 0", here()))?;
            let path = format!("{}.{}", here(), segments[depth + 1]);
            match element {
                _ if depth + 2 == segments.len() => replace(element, value, &path),
                Value::InlineTable(t) => set_in(t, true, segments, depth + 2, value),
                _ => Err(format!("{path} is not a table")),
            }
        }
        Item::Value(other) => Err(format!("{} is a {}, not a table", here(), other.type_name())),
        Item::None => unreachable!("inserted above"),
    }
}

fn replace(old: &mut Value, value: &ParamValue, path: &str) -> Result<(), String> {
    if matches!(old, Value::Array(_) | Value::InlineTable(_)) {
        return Err(format!(
            "{path} is a {}; give a field or index inside it",
            old.type_name()
        ));
    }
    let decor = old.decor().clone();
    *old = value.to_toml(Some(old));
    *old.decor_mut() = decor;
    Ok(())
}

/// Run every configuration on `jobs` threads; outcomes in configuration order.
/// `done` is called after each run (from the worker threads).
pub fn run_all(configs: &[Configuration], jobs: usize, done: &(dyn Fn(usize) + Sync)) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Outcome>>> = configs.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, configs.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(config) = configs.get(i) else { break };
                    let outcome = Simulation::new(config.scenario.clone()).run();
                    *slots[i].lock().expect("no panics while holding") = Some(outcome);
                    done(i);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .expect("no panics while holding")
                .expect("every configuration ran")
        })
        .collect()
}

/// True when `a` is at least as good as `b` everywhere and better somewhere (minimizing).
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x <= y) && a.iter().zip(b).any(|(x, y)| x < y)
}

/// Indices (ascending) of the points no other point dominates. Equal points are all kept.
pub fn pareto_front(points: &[Vec<f64>]) -> Vec<usize> {
    (0..points.len())
        .filter(|&i| !points.iter().any(|other| dominates(other, &points[i])))
        .collect()
}

/// What a sweep found.
#[derive(Debug, Clone)]
pub struct SweepResult {
    pub configurations: Vec<Configuration>,
    pub outcomes: Vec<Outcome>,
    pub metrics: Vec<BTreeMap<String, f64>>,
    /// Failed `[expect]` bounds per configuration, as text.
    pub failures: Vec<Vec<String>>,
    pub front: Vec<usize>,
    pub recommended: Option<usize>,
}

impl SweepResult {
    pub fn new(configurations: Vec<Configuration>, outcomes: Vec<Outcome>) -> SweepResult {
        let metrics: Vec<BTreeMap<String, f64>> = outcomes.iter().map(Outcome::metrics).collect();
        let failures: Vec<Vec<String>> = configurations
            .iter()
            .zip(&outcomes)
            .map(|(c, o)| o.check(&c.scenario.expect).iter().map(|f| f.to_string()).collect())
            .collect();
        let points: Vec<Vec<f64>> = metrics.iter().map(objectives).collect();
        let front = pareto_front(&points);
        let recommended = front
            .iter()
            .copied()
            .filter(|&i| failures[i].is_empty())
            .min_by(|&a, &b| {
                points[a]
                    .iter()
                    .zip(&points[b])
                    .map(|(x, y)| x.total_cmp(y))
                    .find(|o| o.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(a.cmp(&b))
            });
        SweepResult {
            configurations,
            outcomes,
            metrics,
            failures,
            front,
            recommended,
        }
    }

    fn on_front(&self, i: usize) -> bool {
        self.front.binary_search(&i).is_ok()
    }

    /// The front, cheapest first.
    fn front_by_cost(&self) -> Vec<usize> {
        let mut front = self.front.clone();
        front.sort_by(|&a, &b| {
            let (pa, pb) = (objectives(&self.metrics[a]), objectives(&self.metrics[b]));
            pa.iter()
                .zip(&pb)
                .map(|(x, y)| x.total_cmp(y))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(&b))
        });
        front
    }

    /// The label of configuration `i` without the parameters every configuration shares.
    fn varying_label(&self, i: usize) -> String {
        let varying: Vec<(String, ParamValue)> = self.configurations[i]
            .assignments
            .iter()
            .enumerate()
            .filter(|(k, (_, value))| self.configurations.iter().any(|c| &c.assignments[*k].1 != value))
            .map(|(_, a)| a.clone())
            .collect();
        label(&varying)
    }

    fn paths(&self) -> Vec<&str> {
        self.configurations
            .first()
            .map(|c| c.assignments.iter().map(|(p, _)| p.as_str()).collect())
            .unwrap_or_default()
    }

    pub fn to_json(&self, base: &Path, random: Option<usize>, seed: u64) -> String {
        let results: Vec<serde_json::Value> = self
            .configurations
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let params: serde_json::Map<String, serde_json::Value> =
                    c.assignments.iter().map(|(p, v)| (p.clone(), v.to_json())).collect();
                serde_json::json!({
                    "index": i,
                    "params": params,
                    "pareto": self.on_front(i),
                    "meets_expect": self.failures[i].is_empty(),
                    "expect_failures": self.failures[i],
                    "metrics": self.metrics[i],
                })
            })
            .collect();
        let value = serde_json::json!({
            "scenario": self.configurations.first().map(|c| c.scenario.name.clone()),
            "base": base.display().to_string(),
            "params": self.paths(),
            "random": random,
            "seed": seed,
            "objectives": OBJECTIVES,
            "pareto_front": self.front_by_cost(),
            "recommended": self.recommended,
            "results": results,
        });
        let mut text = serde_json::to_string_pretty(&value).expect("serializes");
        text.push('\n');
        text
    }

    pub fn to_csv(&self) -> String {
        let mut csv = String::from("index");
        for path in self.paths() {
            csv.push(',');
            csv.push_str(&csv_field(path));
        }
        for metric in CSV_METRICS {
            csv.push(',');
            csv.push_str(metric);
        }
        csv.push_str(",meets_expect,pareto\n");
        for (i, c) in self.configurations.iter().enumerate() {
            csv.push_str(&i.to_string());
            for (_, value) in &c.assignments {
                csv.push(',');
                csv.push_str(&csv_field(&value.to_string()));
            }
            for metric in CSV_METRICS {
                csv.push(',');
                if let Some(v) = self.metrics[i].get(metric) {
                    csv.push_str(&v.to_string());
                }
            }
            let _ = writeln!(csv, ",{},{}", self.failures[i].is_empty(), self.on_front(i));
        }
        csv
    }

    pub fn to_pareto_markdown(&self, base: &Path) -> String {
        let mut md = String::new();
        let w = &mut md;
        let name = self.configurations.first().map_or("", |c| c.scenario.name.as_str());
        let _ = writeln!(w, "# Sweep of `{name}`: the Pareto front\n");
        let _ = writeln!(
            w,
            "{} configurations of `{}` over {}. Objectives, all minimized: total cost \
             (`cost_total_eur`), p95 start wait (`start_wait_p95_s`) and SLO misses (`slo_misses`). \
             A configuration is on the front when no other is at least as good in all three and \
             better in one. {} of {} are on it.\n",
            self.configurations.len(),
            base.display(),
            self.paths()
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", "),
            self.front.len(),
            self.configurations.len(),
        );
        let _ = write!(w, "| # |");
        for path in self.paths() {
            let _ = write!(w, " `{path}` |");
        }
        let _ = writeln!(
            w,
            " cost (EUR) | p95 start wait (s) | SLO misses | p95 capacity wait (s) | meets [expect] |"
        );
        let _ = write!(w, "|---:|");
        for _ in self.paths() {
            let _ = write!(w, "---:|");
        }
        let _ = writeln!(w, "---:|---:|---:|---:|---|");
        for i in self.front_by_cost() {
            let m = &self.metrics[i];
            let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
            let marker = if Some(i) == self.recommended {
                " **(recommended)**"
            } else {
                ""
            };
            let _ = write!(w, "| {i}{marker} |");
            for (_, value) in &self.configurations[i].assignments {
                let _ = write!(w, " {value} |");
            }
            let _ = writeln!(
                w,
                " {:.2} | {:.1} | {} | {:.1} | {} |",
                get("cost_total_eur"),
                get("start_wait_p95_s"),
                get("slo_misses"),
                get("capacity_wait_p95_s"),
                if self.failures[i].is_empty() {
                    "yes".to_string()
                } else {
                    format!("no: {}", self.failures[i].join("; "))
                }
            );
        }
        let _ = writeln!(w);
        let _ = writeln!(w, "Recommended: {RULE}");
        match self.recommended {
            Some(i) => {
                let _ = writeln!(w, "That is configuration {i}: {}.", self.configurations[i].label());
            }
            None => {
                let _ = writeln!(w, "No configuration on the front meets every bound.");
            }
        }
        md
    }

    /// The recommended configuration as a scenario snippet.
    pub fn to_recommended_toml(&self, base: &Path) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "# Recommended by `payperplay-sim sweep` over {} ({} configurations).",
            base.display(),
            self.configurations.len()
        );
        let _ = writeln!(text, "# Rule: {RULE}");
        let Some(i) = self.recommended else {
            let _ = writeln!(
                text,
                "# No configuration on the front meets every bound: nothing to recommend."
            );
            return text;
        };
        let m = &self.metrics[i];
        let _ = writeln!(
            text,
            "# Configuration {i}: cost_total_eur = {}, start_wait_p95_s = {}, slo_misses = {}, capacity_wait_p95_s = {}.",
            m.get("cost_total_eur").copied().unwrap_or(f64::NAN),
            m.get("start_wait_p95_s").copied().unwrap_or(f64::NAN),
            m.get("slo_misses").copied().unwrap_or(f64::NAN),
            m.get("capacity_wait_p95_s").copied().unwrap_or(f64::NAN),
        );
        let mut doc = DocumentMut::new();
        let mut indexed = Vec::new();
        for (path, value) in &self.configurations[i].assignments {
            // Array elements cannot be merged as a snippet: say them in a comment.
            if path.split('.').any(|s| s.parse::<usize>().is_ok()) {
                indexed.push(format!("# {path} = {value}"));
            } else {
                set_path(&mut doc, path, value).expect("a fresh document takes any path");
            }
        }
        for line in indexed {
            let _ = writeln!(text, "{line}");
        }
        text.push_str(&doc.to_string());
        text
    }

    /// All points (cost against p95 start wait), the front highlighted.
    pub fn to_svg(&self) -> String {
        let points: Vec<(f64, f64)> = self
            .metrics
            .iter()
            .map(|m| {
                (
                    m.get("cost_total_eur").copied().unwrap_or(0.0),
                    m.get("start_wait_p95_s").copied().unwrap_or(0.0),
                )
            })
            .collect();
        let span = |values: &mut dyn Iterator<Item = f64>| {
            let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
            if !lo.is_finite() {
                return (0.0, 1.0);
            }
            let pad = if hi > lo {
                (hi - lo) * 0.08
            } else {
                lo.abs().max(1.0) * 0.1
            };
            (lo - pad, hi + pad)
        };
        let (x0, x1) = span(&mut points.iter().map(|p| p.0));
        let (y0, y1) = span(&mut points.iter().map(|p| p.1));
        let front: Vec<(f64, f64)> = {
            let mut f: Vec<(f64, f64)> = self.front.iter().map(|&i| points[i]).collect();
            f.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            f
        };
        let name = self.configurations.first().map_or("", |c| c.scenario.name.as_str());
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (900, 600)).into_drawing_area();
            let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
                root.fill(&WHITE)?;
                let mut chart = ChartBuilder::on(&root)
                    .caption(format!("{name}: cost against p95 start wait"), ("sans-serif", 22))
                    .margin(20)
                    .x_label_area_size(50)
                    .y_label_area_size(70)
                    .build_cartesian_2d(x0..x1, y0..y1)?;
                chart
                    .configure_mesh()
                    .x_desc("total cost (EUR)")
                    .y_desc("p95 start wait (s)")
                    .draw()?;
                let grey = RGBColor(150, 150, 150);
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 4, grey.filled())))?
                    .label("configuration")
                    .legend(move |(x, y)| Circle::new((x, y), 4, grey.filled()));
                chart.draw_series(LineSeries::new(front.iter().copied(), RED.stroke_width(1)))?;
                chart
                    .draw_series(front.iter().map(|&p| Circle::new(p, 6, RED.filled())))?
                    .label("Pareto front (cost, p95 wait, SLO misses)")
                    .legend(|(x, y)| Circle::new((x, y), 6, RED.filled()));
                if let Some(i) = self.recommended {
                    chart
                        .draw_series(std::iter::once(Circle::new(points[i], 10, BLUE.stroke_width(2))))?
                        .label("recommended")
                        .legend(|(x, y)| Circle::new((x, y), 8, BLUE.stroke_width(2)));
                }
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.9))
                    .border_style(BLACK)
                    .draw()?;
                root.present()?;
                Ok(())
            };
            draw().expect("drawing into a string cannot fail");
        }
        svg
    }

    /// A short table for the terminal: the front, cheapest first.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} configurations, {} on the Pareto front (cost, p95 start wait, SLO misses):",
            self.configurations.len(),
            self.front.len()
        );
        let _ = writeln!(
            out,
            "{:>5} {:>11} {:>10} {:>8} {:>7}  params",
            "#", "cost EUR", "p95 wait", "SLO miss", "expect"
        );
        for i in self.front_by_cost() {
            let m = &self.metrics[i];
            let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
            let _ = writeln!(
                out,
                "{:>5} {:>11.2} {:>9.1}s {:>8} {:>7}  {}{}",
                i,
                get("cost_total_eur"),
                get("start_wait_p95_s"),
                get("slo_misses"),
                if self.failures[i].is_empty() { "ok" } else { "FAILED" },
                self.varying_label(i),
                if Some(i) == self.recommended {
                    "  <- recommended"
                } else {
                    ""
                }
            );
        }
        if self.recommended.is_none() {
            let _ = writeln!(out, "no configuration on the front meets every [expect] bound");
        }
        out
    }

    /// Write results.json, results.csv, pareto.md, pareto.svg and recommended.toml.
    pub fn write(&self, dir: &Path, base: &Path, random: Option<usize>, seed: u64) -> Result<(), SweepError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| SweepError::Io { path, error }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let files = [
            ("results.json", self.to_json(base, random, seed)),
            ("results.csv", self.to_csv()),
            ("pareto.md", self.to_pareto_markdown(base)),
            ("pareto.svg", self.to_svg()),
            ("recommended.toml", self.to_recommended_toml(base)),
        ];
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(io(&path))?;
        }
        Ok(())
    }
}

const RULE: &str = "the cheapest configuration on the Pareto front (cost_total_eur, then start_wait_p95_s, \
                    slo_misses) that meets every [expect] bound of its scenario.";

fn objectives(metrics: &BTreeMap<String, f64>) -> Vec<f64> {
    OBJECTIVES
        .iter()
        .map(|k| metrics.get(*k).copied().unwrap_or(f64::INFINITY))
        .collect()
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// `payperplay-sim sweep` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    /// The base scenario file (TOML).
    pub scenario: PathBuf,
    /// A parameter and its values: PATH=LO..HI:STEP, PATH=LO..HI (--random only) or
    /// PATH=A,B,C. PATH is a dotted path into the scenario (`core.` may be left out).
    /// Repeat for a grid over several parameters.
    #[arg(long = "param", value_name = "PATH=VALUES", required = true)]
    pub params: Vec<String>,
    /// Run N configurations drawn at random from the grid and ranges instead of all.
    #[arg(long, value_name = "N")]
    pub random: Option<usize>,
    /// Seed of the random draw. Simulations keep the scenario's seed (sweep that with
    /// --param seed=1,2,3).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads (default: all cores). Results do not depend on it.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Where to write results.json, results.csv, pareto.md, pareto.svg, recommended.toml.
    #[arg(long, default_value = "sweep-out")]
    pub out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// The whole `sweep` command: prepare, run, write, print the table.
pub fn cli(args: &SweepArgs) -> Result<SweepResult, SweepError> {
    let params = args
        .params
        .iter()
        .map(|p| parse_param(p))
        .collect::<Result<Vec<_>, _>>()?;
    let text = std::fs::read_to_string(&args.scenario).map_err(|error| SweepError::Io {
        path: args.scenario.clone(),
        error,
    })?;
    let configs = configurations(&text, &args.scenario, &params, args.random, args.seed)?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    eprintln!(
        "sweeping {} over {} configurations on {} thread(s)",
        args.scenario.display(),
        configs.len(),
        jobs.clamp(1, configs.len().max(1))
    );
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(configs.len() as u64)
    };
    let outcomes = run_all(&configs, jobs, &|_| bar.inc(1));
    bar.finish_and_clear();
    let result = SweepResult::new(configs, outcomes);
    result.write(&args.out, &args.scenario, args.random, args.seed)?;
    print!("{}", result.table());
    println!(
        "wrote results.json, results.csv, pareto.md, pareto.svg and recommended.toml to {}",
        args.out.display()
    );
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_include_their_end_and_keep_integers() {
        let p = parse_param("policy.spare.buffer_gb=0..64:8").unwrap();
        assert_eq!(p.given, "policy.spare.buffer_gb");
        let Values::List(list) = p.values else { panic!() };
        assert_eq!(list.len(), 9);
        assert_eq!(list[8], ParamValue::Int(64));
        let Values::List(list) = parse_param("x=0.1..0.3:0.1").unwrap().values else {
            panic!()
        };
        assert_eq!(
            list,
            vec![ParamValue::Float(0.1), ParamValue::Float(0.2), ParamValue::Float(0.3)]
        );
        let Values::List(list) = parse_param("x=5m,10m,true,3").unwrap().values else {
            panic!()
        };
        assert_eq!(
            list,
            vec![
                ParamValue::Str("5m".into()),
                ParamValue::Str("10m".into()),
                ParamValue::Bool(true),
                ParamValue::Int(3)
            ]
        );
        assert!(parse_param("x=5..1:1").is_err());
        assert!(parse_param("x=1..5:0").is_err());
        assert!(parse_param("x=a..b:1").is_err());
        assert!(parse_param("novalue").is_err());
        assert_eq!(
            parse_param("x=1..5").unwrap().values,
            Values::Span {
                lo: ParamValue::Int(1),
                hi: ParamValue::Int(5)
            }
        );
    }

    #[test]
    fn values_keep_the_type_the_file_has() {
        let mut doc: DocumentMut = "a = 1\nb = 2.5\nc = \"10m\" # note\n[t]\nx = { y = 1 }\n"
            .parse()
            .unwrap();
        set_path(&mut doc, "a", &ParamValue::Float(3.0)).unwrap();
        set_path(&mut doc, "b", &ParamValue::Int(4)).unwrap();
        set_path(&mut doc, "c", &ParamValue::Str("20m".into())).unwrap();
        set_path(&mut doc, "t.x.y", &ParamValue::Int(7)).unwrap();
        set_path(&mut doc, "t.new.z", &ParamValue::Bool(true)).unwrap();
        let text = doc.to_string();
        assert!(text.contains("a = 3\n"), "{text}");
        assert!(text.contains("b = 4.0\n"), "{text}");
        assert!(text.contains("c = \"20m\" # note"), "{text}");
        assert!(text.contains("x = { y = 7 }"), "{text}");
        assert!(text.contains("[t.new]\nz = true"), "{text}");
        assert!(
            set_path(&mut doc, "a.b", &ParamValue::Int(1))
                .unwrap_err()
                .contains("a is a integer")
        );
        assert!(
            set_path(&mut doc, "t", &ParamValue::Int(1))
                .unwrap_err()
                .contains("t is a table")
        );
    }

    #[test]
    fn random_draws_are_distinct_grid_points_and_repeatable() {
        let params = vec![parse_param("a=1..8:1").unwrap(), parse_param("b=1..8:1").unwrap()];
        let a = random_points(&params, 20, 7);
        assert_eq!(a, random_points(&params, 20, 7));
        assert_ne!(a, random_points(&params, 20, 8));
        let distinct: BTreeSet<String> = a.iter().map(|p| format!("{p:?}")).collect();
        assert_eq!(distinct.len(), 20);
        assert_eq!(
            random_points(&params, 100, 7).len(),
            64,
            "the whole grid when it is small"
        );
        let span = vec![parse_param("a=0.5..1.5").unwrap()];
        for point in random_points(&span, 50, 1) {
            let ParamValue::Float(x) = point[0] else { panic!() };
            assert!((0.5..1.5).contains(&x));
        }
    }
}
