//! `payperplay-sim check`: the CI regression gate. Runs scenarios, checks their
//! `[expect]` bounds and compares their key metrics with committed baselines
//! (`reports/baselines/<scenario name>.json`) within tolerances.
//!
//! A metric got worse *beyond tolerance* when it moved in its bad direction by more
//! than `rel × |baseline| + abs` (see [`TOLERANCES`]). Improvements and changes within
//! tolerance are reported and pass. A missing baseline, a baseline recorded with another
//! seed, or a metric the outcome no longer has is an error: rerun with
//! `--update-baselines` when the change is meant.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::outcome::{ExpectFailure, Outcome, round6};
use crate::report::ReportError;
use crate::scenario::{Scenario, ScenarioError};

/// What kept `check` from comparing a scenario (or from running at all).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("reading {}: {source}", path.display())]
    ReadFolder { path: PathBuf, source: std::io::Error },
    #[error("no *.toml scenario files in {}", path.display())]
    NoScenarios { path: PathBuf },
    #[error("{}: no such scenario file or folder", path.display())]
    NoSuchPath { path: PathBuf },
    #[error("{} and {} have the same scenario name `{name}`: baselines are named after it", first.display(), second.display())]
    SameName {
        first: PathBuf,
        second: PathBuf,
        name: String,
    },
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("reading {}: {source}", path.display())]
    ReadBaseline { path: PathBuf, source: std::io::Error },
    #[error("{}: not a baseline: {source}", path.display())]
    NotABaseline { path: PathBuf, source: serde_json::Error },
    #[error("writing {}: {source}", path.display())]
    WriteBaseline { path: PathBuf, source: std::io::Error },
    #[error(
        "no baseline {}: run `payperplay-sim check {} --baselines {} --update-baselines` to record one",
        path.display(),
        scenarios.display(),
        baselines.display()
    )]
    NoBaseline {
        path: PathBuf,
        scenarios: PathBuf,
        baselines: PathBuf,
    },
    #[error(
        "{} was recorded with seed {baseline_seed}, the scenario has seed {scenario_seed}: run with --update-baselines",
        path.display()
    )]
    SeedChanged {
        path: PathBuf,
        baseline_seed: u64,
        scenario_seed: u64,
    },
    #[error("the baseline has `{metric}`, the outcome does not")]
    MetricMissing { metric: String },
}

/// Which direction of a metric is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
}

/// How far a metric may move in its bad direction before `check` fails:
/// `rel × |baseline| + abs`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub metric: &'static str,
    pub better: Better,
    pub rel: f64,
    pub abs: f64,
}

const fn tol(metric: &'static str, better: Better, rel: f64, abs: f64) -> Tolerance {
    Tolerance {
        metric,
        better,
        rel,
        abs,
    }
}

/// The key metrics a baseline records and how much each may get worse. Documented in
/// `reports/README.md`; keep the two in step.
pub const TOLERANCES: &[Tolerance] = &[
    tol("cost_total_eur", Better::Lower, 0.02, 0.01),
    tol("revenue_total_eur", Better::Higher, 0.02, 0.01),
    tol("margin_eur", Better::Higher, 0.05, 1.0),
    tol("start_wait_p50_s", Better::Lower, 0.05, 1.0),
    tol("start_wait_p95_s", Better::Lower, 0.05, 1.0),
    tol("start_wait_p99_s", Better::Lower, 0.05, 1.0),
    tol("capacity_wait_p95_s", Better::Lower, 0.05, 1.0),
    tol("capacity_wait_p99_s", Better::Lower, 0.05, 1.0),
    tol("join_wait_p95_s", Better::Lower, 0.05, 1.0),
    tol("regular_join_wait_p95_s", Better::Lower, 0.05, 1.0),
    tol("slo_misses", Better::Lower, 0.05, 2.0),
    tol("starts_rejected", Better::Lower, 0.0, 0.0),
    tol("sessions_lost", Better::Lower, 0.0, 0.0),
    tol("incidents_sessions_interrupted", Better::Lower, 0.0, 0.0),
    tol("queue_length_max", Better::Lower, 0.10, 1.0),
    tol("nodes_cloud_node_hours", Better::Lower, 0.02, 0.1),
    tol("utilization_mean_pct", Better::Higher, 0.0, 1.0),
];

impl Tolerance {
    /// The most the metric may get worse from `baseline`.
    pub fn allowed(&self, baseline: f64) -> f64 {
        self.rel * baseline.abs() + self.abs
    }

    /// How much worse `now` is than `baseline` (negative: better).
    pub fn worse_by(&self, baseline: f64, now: f64) -> f64 {
        match self.better {
            Better::Lower => now - baseline,
            Better::Higher => baseline - now,
        }
    }

    /// E.g. `may rise 2% + 0.01`.
    pub fn describe(&self) -> String {
        let verb = match self.better {
            Better::Lower => "may rise",
            Better::Higher => "may fall",
        };
        match (self.rel > 0.0, self.abs > 0.0) {
            (true, true) => format!("{verb} {}% + {}", num(self.rel * 100.0), num(self.abs)),
            (true, false) => format!("{verb} {}%", num(self.rel * 100.0)),
            (false, true) => format!("{verb} {}", num(self.abs)),
            (false, false) => "may not get worse".to_string(),
        }
    }
}

/// A committed baseline: the key metrics of one scenario at one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    pub scenario: String,
    pub seed: u64,
    pub metrics: BTreeMap<String, f64>,
}

impl Baseline {
    pub fn from_outcome(outcome: &Outcome) -> Baseline {
        let all = outcome.metrics();
        Baseline {
            scenario: outcome.scenario.clone(),
            seed: outcome.seed,
            metrics: TOLERANCES
                .iter()
                .filter_map(|t| Some((t.metric.to_string(), round6(*all.get(t.metric)?))))
                .collect(),
        }
    }

    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("baseline serializes");
        text.push('\n');
        text
    }

    pub fn load(path: &Path) -> Result<Baseline, CheckError> {
        let text = std::fs::read_to_string(path).map_err(|source| CheckError::ReadBaseline {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| CheckError::NotABaseline {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The baseline file of scenario `name` in `dir`.
    pub fn path(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{}.json", crate::report::file_stem(name)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Worse beyond tolerance: fails the check.
    Regression,
    /// Worse, within tolerance.
    Worse,
    Improved,
}

/// A metric that moved.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub metric: String,
    pub baseline: f64,
    pub now: f64,
    pub tolerance: Tolerance,
    pub verdict: Verdict,
}

/// Compares an outcome with its baseline: the metrics that moved (in [`TOLERANCES`]
/// order) and the errors (metrics the outcome lacks).
pub fn diff(baseline: &Baseline, outcome: &Outcome) -> (Vec<Change>, Vec<CheckError>) {
    let metrics = outcome.metrics();
    let mut changes = Vec::new();
    let mut errors = Vec::new();
    for t in TOLERANCES {
        let Some(&base) = baseline.metrics.get(t.metric) else {
            continue;
        };
        let Some(&now) = metrics.get(t.metric) else {
            errors.push(CheckError::MetricMissing {
                metric: t.metric.to_string(),
            });
            continue;
        };
        let now = round6(now);
        let worse = t.worse_by(base, now);
        let verdict = if worse > t.allowed(base) + 1e-9 {
            Verdict::Regression
        } else if worse > 1e-9 {
            Verdict::Worse
        } else if worse < -1e-9 {
            Verdict::Improved
        } else {
            continue;
        };
        changes.push(Change {
            metric: t.metric.to_string(),
            baseline: base,
            now,
            tolerance: *t,
            verdict,
        });
    }
    (changes, errors)
}

/// The result of checking one scenario.
#[derive(Debug)]
pub struct ScenarioCheck {
    pub name: String,
    pub file: PathBuf,
    pub seed: u64,
    pub expect_failures: Vec<ExpectFailure>,
    pub changes: Vec<Change>,
    pub errors: Vec<CheckError>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Pass,
    Fail,
    Error,
}

impl ScenarioCheck {
    pub fn regressions(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.verdict == Verdict::Regression)
    }

    pub fn status(&self) -> Status {
        if !self.errors.is_empty() {
            Status::Error
        } else if !self.expect_failures.is_empty() || self.regressions().next().is_some() {
            Status::Fail
        } else {
            Status::Pass
        }
    }
}

/// Everything `check` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub scenarios: Vec<ScenarioCheck>,
    /// Problems before any scenario ran: unreadable files, duplicate names.
    pub errors: Vec<CheckError>,
    pub updated: Vec<PathBuf>,
}

impl CheckReport {
    pub fn status(&self) -> Status {
        let worst = self
            .scenarios
            .iter()
            .map(ScenarioCheck::status)
            .max()
            .unwrap_or(Status::Pass);
        if self.errors.is_empty() { worst } else { Status::Error }
    }

    /// 0 when everything passed, 1 when something got worse beyond tolerance or an
    /// expectation failed, 2 on errors.
    pub fn exit_code(&self) -> u8 {
        match self.status() {
            Status::Pass => 0,
            Status::Fail => 1,
            Status::Error => 2,
        }
    }

    /// The readable report: per scenario its verdict, failed bounds and a diff table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        for error in &self.errors {
            let _ = writeln!(w, "error: {error}");
        }
        for s in &self.scenarios {
            let verdict = match s.status() {
                Status::Pass => "ok",
                Status::Fail => "FAILED",
                Status::Error => "ERROR",
            };
            let _ = writeln!(w, "== {} (seed {}, {}): {verdict}", s.name, s.seed, s.file.display());
            for error in &s.errors {
                let _ = writeln!(w, "  error: {error}");
            }
            for failure in &s.expect_failures {
                let _ = writeln!(w, "  expectation failed: {failure}");
            }
            if !s.changes.is_empty() {
                let _ = writeln!(w);
                let _ = writeln!(w, "  | metric | baseline | now | change | tolerance | |");
                let _ = writeln!(w, "  |---|---:|---:|---:|---|---|");
                let mut changes: Vec<&Change> = s.changes.iter().collect();
                changes.sort_by_key(|c| c.verdict);
                for c in changes {
                    let mark = match c.verdict {
                        Verdict::Regression => "**WORSE beyond tolerance**",
                        Verdict::Worse => "worse, within tolerance",
                        Verdict::Improved => "improved",
                    };
                    let _ = writeln!(
                        w,
                        "  | {} | {} | {} | {} | {} | {mark} |",
                        c.metric,
                        num(c.baseline),
                        num(c.now),
                        change(c.baseline, c.now),
                        c.tolerance.describe()
                    );
                }
                let _ = writeln!(w);
            }
            for note in &s.notes {
                let _ = writeln!(w, "  note: {note}");
            }
        }
        for path in &self.updated {
            let _ = writeln!(w, "wrote {}", path.display());
        }
        let count = |status| self.scenarios.iter().filter(|s| s.status() == status).count();
        let _ = writeln!(
            w,
            "check: {} scenario(s): {} ok, {} failed, {} with errors{}",
            self.scenarios.len(),
            count(Status::Pass),
            count(Status::Fail),
            count(Status::Error),
            if self.errors.is_empty() {
                String::new()
            } else {
                format!("; {} error(s) before running", self.errors.len())
            }
        );
        out
    }
}

/// A number for people: integers as such, others with up to 3 decimals.
fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn change(baseline: f64, now: f64) -> String {
    let delta = now - baseline;
    let sign = if delta >= 0.0 { "+" } else { "-" };
    if baseline.abs() > 1e-12 {
        format!(
            "{sign}{} ({sign}{:.1}%)",
            num(delta.abs()),
            (delta / baseline).abs() * 100.0
        )
    } else {
        format!("{sign}{}", num(delta.abs()))
    }
}

/// The scenario files of `path`: the file itself, or `*.toml` in the folder sorted by
/// name.
pub fn scenario_files(path: &Path) -> Result<Vec<PathBuf>, CheckError> {
    let unreadable = |source| CheckError::ReadFolder {
        path: path.to_path_buf(),
        source,
    };
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(unreadable)?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(unreadable)?;
            let file = entry.path();
            if file.extension().is_some_and(|e| e == "toml") && file.is_file() {
                files.push(file);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(CheckError::NoScenarios {
                path: path.to_path_buf(),
            });
        }
        Ok(files)
    } else if path.is_file() {
        Ok(vec![path.to_path_buf()])
    } else {
        Err(CheckError::NoSuchPath {
            path: path.to_path_buf(),
        })
    }
}

/// Runs and checks every scenario of `path` against `baselines`; with `update`,
/// rewrites the baselines instead of comparing (bounds are still checked). With `out`,
/// writes each run's outcome and report into `out/<scenario name>/`.
pub fn check(path: &Path, baselines: &Path, update: bool, jobs: usize, out: Option<&Path>) -> CheckReport {
    let mut report = CheckReport::default();
    let files = match scenario_files(path) {
        Ok(files) => files,
        Err(error) => {
            report.errors.push(error);
            return report;
        }
    };
    let mut scenarios = Vec::new();
    let mut loaded_files = Vec::new();
    let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
    for file in files {
        match Scenario::load(&file) {
            Ok(scenario) => {
                let stem = crate::report::file_stem(&scenario.name);
                if let Some(other) = names.insert(stem, file.clone()) {
                    report.errors.push(CheckError::SameName {
                        first: other,
                        second: file.clone(),
                        name: scenario.name.clone(),
                    });
                    continue;
                }
                scenarios.push(scenario);
                loaded_files.push(file);
            }
            Err(error) => report.errors.push(error.into()),
        }
    }
    let results = crate::parallel::run_scenarios(&scenarios, jobs);
    for ((scenario, file), result) in scenarios.iter().zip(loaded_files).zip(results) {
        let outcome = &result.outcome;
        let mut s = ScenarioCheck {
            name: scenario.name.clone(),
            file,
            seed: scenario.seed,
            expect_failures: outcome.check(&scenario.expect),
            changes: Vec::new(),
            errors: Vec::new(),
            notes: Vec::new(),
        };
        if let Some(out) = out {
            let dir = out.join(crate::report::file_stem(&scenario.name));
            if let Err(error) = crate::report::write_run(&dir, &result, &scenario.expect) {
                s.errors.push(error.into());
            }
        }
        let baseline_path = Baseline::path(baselines, &scenario.name);
        let old = baseline_path.exists().then(|| Baseline::load(&baseline_path));
        if update {
            if let Some(Ok(old)) = &old
                && old.seed == scenario.seed
            {
                s.changes = diff(old, outcome).0;
                for c in &mut s.changes {
                    if c.verdict == Verdict::Regression {
                        c.verdict = Verdict::Worse;
                    }
                }
            }
            let written = std::fs::create_dir_all(baselines)
                .and_then(|()| std::fs::write(&baseline_path, Baseline::from_outcome(outcome).to_json()));
            match written {
                Ok(()) => report.updated.push(baseline_path),
                Err(source) => s.errors.push(CheckError::WriteBaseline {
                    path: baseline_path,
                    source,
                }),
            }
        } else {
            match old {
                None => s.errors.push(CheckError::NoBaseline {
                    path: baseline_path,
                    scenarios: path.to_path_buf(),
                    baselines: baselines.to_path_buf(),
                }),
                Some(Err(error)) => s.errors.push(error),
                Some(Ok(baseline)) if baseline.seed != scenario.seed => s.errors.push(CheckError::SeedChanged {
                    path: baseline_path,
                    baseline_seed: baseline.seed,
                    scenario_seed: scenario.seed,
                }),
                Some(Ok(baseline)) => {
                    let (changes, errors) = diff(&baseline, outcome);
                    s.changes = changes;
                    s.errors.extend(errors);
                    let missing: Vec<&str> = TOLERANCES
                        .iter()
                        .map(|t| t.metric)
                        .filter(|m| !baseline.metrics.contains_key(*m))
                        .collect();
                    if !missing.is_empty() {
                        s.notes.push(format!(
                            "not in the baseline, not compared: {} (run --update-baselines to add them)",
                            missing.join(", ")
                        ));
                    }
                }
            }
        }
        report.scenarios.push(s);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_is_relative_plus_absolute_in_the_bad_direction() {
        let p95 = tol("start_wait_p95_s", Better::Lower, 0.05, 1.0);
        assert_eq!(p95.allowed(60.0), 4.0);
        assert_eq!(p95.worse_by(60.0, 63.0), 3.0);
        let margin = tol("margin_eur", Better::Higher, 0.05, 1.0);
        assert_eq!(margin.worse_by(100.0, 90.0), 10.0);
        assert!(margin.worse_by(100.0, 110.0) < 0.0);
        assert_eq!(p95.describe(), "may rise 5% + 1");
        assert_eq!(tol("x", Better::Lower, 0.0, 0.0).describe(), "may not get worse");
    }

    #[test]
    fn diff_sorts_changes_into_regressions_worse_and_improved() {
        let mut outcome = Outcome {
            scenario: "s".to_string(),
            seed: 1,
            ..Outcome::default()
        };
        outcome.cost.total_eur = 100.0;
        outcome.start_wait.p95_s = 60.0;
        outcome.sessions.lost = 1;
        let mut baseline = Baseline::from_outcome(&outcome);
        let (changes, errors) = diff(&baseline, &outcome);
        assert!(changes.is_empty() && errors.is_empty());
        baseline.metrics.insert("cost_total_eur".to_string(), 99.0); // +1.0%: within 2%
        baseline.metrics.insert("start_wait_p95_s".to_string(), 50.0); // +10 s: beyond 5% + 1 s
        baseline.metrics.insert("sessions_lost".to_string(), 2.0); // fewer lost: better
        let (changes, errors) = diff(&baseline, &outcome);
        assert!(errors.is_empty());
        let verdicts: Vec<(&str, Verdict)> = changes.iter().map(|c| (c.metric.as_str(), c.verdict)).collect();
        assert_eq!(
            verdicts,
            [
                ("cost_total_eur", Verdict::Worse),
                ("start_wait_p95_s", Verdict::Regression),
                ("sessions_lost", Verdict::Improved),
            ]
        );
    }

    #[test]
    fn a_baseline_metric_the_outcome_lacks_is_an_error() {
        let outcome = Outcome::default();
        let mut baseline = Baseline::from_outcome(&outcome);
        baseline.metrics.clear();
        baseline.metrics.insert("no_such_metric".to_string(), 1.0);
        // Only metrics in TOLERANCES are compared; an unknown one is ignored ...
        let (changes, errors) = diff(&baseline, &outcome);
        assert!(changes.is_empty() && errors.is_empty());
        // ... and every TOLERANCES metric exists in an outcome.
        let names = Outcome::metric_names();
        for t in TOLERANCES {
            assert!(names.contains(t.metric), "{} is not an outcome metric", t.metric);
        }
    }
}
