//! `payperplay-sim check`: the CI regression gate. Runs scenarios, checks their
//! `[expect]` bounds and compares their key metrics with committed baselines
//! (`reports/baselines/<scenario name>.json`) within tolerances.
//!
//! **Above the noise.** Each scenario runs over `--seeds N` seeds (the scenario's seed,
//! then seed+1, ...), and the baseline keeps every seed's figure. When the baseline
//! ran the same seeds, the comparison is *paired* on common random numbers: for each
//! seed, how much worse the metric is now than the baseline's run of that seed; else
//! (the scenario's seed changed) it is *unpaired* (Welch: the difference of the means,
//! with both spreads). A metric fails only when the lower end of the one-sided 95%
//! confidence interval of its worsening, `mean − t₀.₉₅ × standard error`, exceeds the
//! tolerance `rel × |baseline mean| + abs` (see [`TOLERANCES`]): the change must be
//! both outside what seed noise explains and larger than what matters. Improvements
//! and changes within that are reported and pass. Money is gated as margin only, so a
//! price change is no "improvement" by itself. A missing baseline or a metric the
//! outcome no longer has is an error: rerun with `--update-baselines` when the change
//! is meant. `[expect]` bounds are checked on the scenario's own seed.

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
/// `reports/README.md`; keep the two in step. Money is gated as margin only (cost and
/// revenue alone would let a price change pass as an improvement). A figure that is
/// the same in every committed baseline gates nothing and is left out (a test says
/// so): must-be-zero counts such as `starts_rejected` are `[expect]` bounds instead.
pub const TOLERANCES: &[Tolerance] = &[
    tol("margin_eur", Better::Higher, 0.05, 1.0),
    tol("start_wait_p50_s", Better::Lower, 0.05, 1.0),
    tol("start_wait_p95_s", Better::Lower, 0.05, 1.0),
    tol("start_wait_p99_s", Better::Lower, 0.05, 1.0),
    tol("capacity_wait_p95_s", Better::Lower, 0.05, 1.0),
    tol("capacity_wait_p99_s", Better::Lower, 0.05, 1.0),
    tol("join_wait_p95_s", Better::Lower, 0.05, 1.0),
    tol("regular_join_wait_p95_s", Better::Lower, 0.05, 1.0),
    tol("slo_misses", Better::Lower, 0.05, 2.0),
    tol("incidents_sessions_interrupted", Better::Lower, 0.0, 0.0),
    tol("queue_length_max", Better::Lower, 0.10, 1.0),
    tol("nodes_cloud_node_hours", Better::Lower, 0.02, 0.1),
    tol("utilization_mean_pct", Better::Higher, 0.0, 1.0),
    // Players who gave up waiting, and starts still waiting at the horizon (censored).
    tol("sessions_abandoned_pct", Better::Lower, 0.10, 0.2),
    tol("starts_pending_at_end", Better::Lower, 0.0, 2.0),
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

/// Seeds `check` runs each scenario with when not told (`--seeds`): enough for a
/// standard error, few enough that `check scenarios/` stays under a minute on two
/// cores (`reports/README.md` has the measurement).
pub const SEEDS_DEFAULT: usize = 5;

/// The seeds of a run over `n` seeds: the scenario's own, then the next ones.
pub fn seeds(first: u64, n: usize) -> Vec<u64> {
    (0..n.max(1) as u64).map(|k| first.wrapping_add(k)).collect()
}

/// A committed baseline: the key metrics of one scenario over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    pub scenario: String,
    /// The scenario's own seed (the first of `seeds`).
    pub seed: u64,
    pub seeds: Vec<u64>,
    /// The mean over the seeds.
    pub metrics: BTreeMap<String, f64>,
    /// Every seed's figure, in `seeds` order.
    pub per_seed: BTreeMap<String, Vec<f64>>,
}

impl Baseline {
    /// The baseline of one outcome per seed (the first is the scenario's own seed).
    pub fn from_outcomes(outcomes: &[&Outcome]) -> Baseline {
        let all: Vec<BTreeMap<String, f64>> = outcomes.iter().map(|o| o.metrics()).collect();
        let mut per_seed = BTreeMap::new();
        let mut metrics = BTreeMap::new();
        for t in TOLERANCES {
            let Some(values) = all
                .iter()
                .map(|m| m.get(t.metric).map(|v| round6(*v)))
                .collect::<Option<Vec<f64>>>()
            else {
                continue;
            };
            metrics.insert(t.metric.to_string(), round6(mean(&values)));
            per_seed.insert(t.metric.to_string(), values);
        }
        Baseline {
            scenario: outcomes[0].scenario.clone(),
            seed: outcomes[0].seed,
            seeds: outcomes.iter().map(|o| o.seed).collect(),
            metrics,
            per_seed,
        }
    }

    pub fn from_outcome(outcome: &Outcome) -> Baseline {
        Baseline::from_outcomes(&[outcome])
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
    /// Means over the seeds.
    pub baseline: f64,
    pub now: f64,
    /// Half-width of the one-sided 95% confidence interval of the worsening (0 with
    /// one seed): what seed noise explains.
    pub noise: f64,
    pub tolerance: Tolerance,
    pub verdict: Verdict,
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// The sample variance (0 for fewer than two values).
fn variance(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let m = mean(values);
    values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (values.len() - 1) as f64
}

/// Student's t, one-sided 95%, for `df` degrees of freedom (beyond the table: 1.645).
pub fn t95(df: usize) -> f64 {
    const TABLE: [f64; 10] = [6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812];
    match df {
        0 => 0.0,
        1..=10 => TABLE[df - 1],
        11..=20 => 1.75,
        21..=40 => 1.70,
        _ => 1.645,
    }
}

/// How much worse the runs `now` (one figure per seed of `now_seeds`) are than the
/// baseline's, and what seed noise explains of it: paired per seed when both ran the
/// same seeds, Welch's unpaired comparison otherwise.
fn worsening(t: &Tolerance, base: &[f64], base_seeds: &[u64], now: &[f64], now_seeds: &[u64]) -> (f64, f64) {
    if base_seeds == now_seeds && base.len() == now.len() {
        let d: Vec<f64> = base.iter().zip(now).map(|(b, n)| t.worse_by(*b, *n)).collect();
        let se = (variance(&d) / d.len() as f64).sqrt();
        (mean(&d), t95(d.len() - 1) * se)
    } else {
        let se = (variance(base) / base.len() as f64 + variance(now) / now.len() as f64).sqrt();
        let df = base.len().min(now.len()).saturating_sub(1);
        (t.worse_by(mean(base), mean(now)), t95(df) * se)
    }
}

/// Compares the outcomes of one scenario (one per seed) with its baseline: the
/// metrics that moved (in [`TOLERANCES`] order) and the errors (metrics the outcome
/// lacks).
pub fn diff(baseline: &Baseline, outcomes: &[&Outcome]) -> (Vec<Change>, Vec<CheckError>) {
    let all: Vec<BTreeMap<String, f64>> = outcomes.iter().map(|o| o.metrics()).collect();
    let now_seeds: Vec<u64> = outcomes.iter().map(|o| o.seed).collect();
    let mut changes = Vec::new();
    let mut errors = Vec::new();
    for t in TOLERANCES {
        let Some(&base_mean) = baseline.metrics.get(t.metric) else {
            continue;
        };
        let Some(now) = all
            .iter()
            .map(|m| m.get(t.metric).map(|v| round6(*v)))
            .collect::<Option<Vec<f64>>>()
        else {
            errors.push(CheckError::MetricMissing {
                metric: t.metric.to_string(),
            });
            continue;
        };
        let (base, base_seeds) = match baseline.per_seed.get(t.metric) {
            Some(values) if values.len() == baseline.seeds.len() && !values.is_empty() => {
                (values.clone(), baseline.seeds.clone())
            }
            _ => (vec![base_mean], vec![baseline.seed]),
        };
        let (worse, noise) = worsening(t, &base, &base_seeds, &now, &now_seeds);
        let verdict = if worse - noise > t.allowed(base_mean) + 1e-9 {
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
            baseline: base_mean,
            now: round6(mean(&now)),
            noise: round6(noise),
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
    pub n_seeds: usize,
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
            let _ = writeln!(
                w,
                "== {} (seed {}, {} seed(s), {}): {verdict}",
                s.name,
                s.seed,
                s.n_seeds,
                s.file.display()
            );
            for error in &s.errors {
                let _ = writeln!(w, "  error: {error}");
            }
            for failure in &s.expect_failures {
                let _ = writeln!(w, "  expectation failed: {failure}");
            }
            if !s.changes.is_empty() {
                let _ = writeln!(w);
                let _ = writeln!(
                    w,
                    "  | metric | baseline | now | change | seed noise (95%) | tolerance | |"
                );
                let _ = writeln!(w, "  |---|---:|---:|---:|---:|---|---|");
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
                        "  | {} | {} | {} | {} | ±{} | {} | {mark} |",
                        c.metric,
                        num(c.baseline),
                        num(c.now),
                        change(c.baseline, c.now),
                        num(c.noise),
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

/// How `check` runs.
#[derive(Debug, Clone, Copy)]
pub struct CheckConfig {
    /// Rewrite the baselines instead of comparing (bounds are still checked).
    pub update: bool,
    /// Threads (0: one per core).
    pub jobs: usize,
    /// Seeds per scenario (at least 1).
    pub n_seeds: usize,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            update: false,
            jobs: 0,
            n_seeds: SEEDS_DEFAULT,
        }
    }
}

/// Runs and checks every scenario of `path` against `baselines`, each over
/// `config.n_seeds` seeds. With `out`, writes the run of each scenario's own seed
/// (outcome and report) into `out/<scenario name>/`.
pub fn check(path: &Path, baselines: &Path, config: CheckConfig, out: Option<&Path>) -> CheckReport {
    let CheckConfig { update, jobs, n_seeds } = config;
    let n_seeds = n_seeds.max(1);
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
    // Every (scenario, seed) is one job: the parallel runner spreads them all.
    let runs: Vec<Scenario> = scenarios
        .iter()
        .flat_map(|scenario| {
            seeds(scenario.seed, n_seeds).into_iter().map(|seed| {
                let mut run = scenario.clone();
                run.seed = seed;
                run
            })
        })
        .collect();
    let mut results = crate::parallel::run_scenarios(&runs, jobs).into_iter();
    for (scenario, file) in scenarios.iter().zip(loaded_files) {
        let per_seed: Vec<crate::RunResult> = results.by_ref().take(n_seeds).collect();
        let outcomes: Vec<&Outcome> = per_seed.iter().map(|r| &r.outcome).collect();
        let result = &per_seed[0];
        let outcome = &result.outcome;
        let mut s = ScenarioCheck {
            name: scenario.name.clone(),
            file,
            seed: scenario.seed,
            n_seeds,
            expect_failures: outcome.check(&scenario.expect),
            changes: Vec::new(),
            errors: Vec::new(),
            notes: Vec::new(),
        };
        if let Some(out) = out {
            let dir = out.join(crate::report::file_stem(&scenario.name));
            if let Err(error) = crate::report::write_run(&dir, result, &scenario.expect) {
                s.errors.push(error.into());
            }
        }
        let baseline_path = Baseline::path(baselines, &scenario.name);
        let old = baseline_path.exists().then(|| Baseline::load(&baseline_path));
        if update {
            if let Some(Ok(old)) = &old {
                s.changes = diff(old, &outcomes).0;
                for c in &mut s.changes {
                    if c.verdict == Verdict::Regression {
                        c.verdict = Verdict::Worse;
                    }
                }
            }
            let written = std::fs::create_dir_all(baselines)
                .and_then(|()| std::fs::write(&baseline_path, Baseline::from_outcomes(&outcomes).to_json()));
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
                Some(Ok(baseline)) => {
                    let now_seeds = seeds(scenario.seed, n_seeds);
                    if baseline.seeds != now_seeds {
                        s.notes.push(format!(
                            "the baseline ran seeds {:?}, this run {:?}: compared unpaired (means and spreads)",
                            baseline.seeds, now_seeds
                        ));
                    }
                    let (changes, errors) = diff(&baseline, &outcomes);
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
        outcome.margin_eur = 100.0;
        outcome.start_wait.p95_s = 60.0;
        outcome.queue.length_max = 1;
        let mut baseline = Baseline::from_outcome(&outcome);
        let (changes, errors) = diff(&baseline, &[&outcome]);
        assert!(changes.is_empty() && errors.is_empty());
        baseline.per_seed.clear(); // one seed: the means are compared
        baseline.metrics.insert("margin_eur".to_string(), 102.0); // -2%: within 5% + 1
        baseline.metrics.insert("start_wait_p95_s".to_string(), 50.0); // +10 s: beyond 5% + 1 s
        baseline.metrics.insert("queue_length_max".to_string(), 2.0); // shorter: better
        let (changes, errors) = diff(&baseline, &[&outcome]);
        assert!(errors.is_empty());
        let verdicts: Vec<(&str, Verdict)> = changes.iter().map(|c| (c.metric.as_str(), c.verdict)).collect();
        assert_eq!(
            verdicts,
            [
                ("margin_eur", Verdict::Worse),
                ("start_wait_p95_s", Verdict::Regression),
                ("queue_length_max", Verdict::Improved),
            ]
        );
    }

    fn outcome_with(seed: u64, p95_s: f64) -> Outcome {
        let mut outcome = Outcome {
            scenario: "s".to_string(),
            seed,
            ..Outcome::default()
        };
        outcome.start_wait.p95_s = p95_s;
        outcome
    }

    fn verdict_of(baseline: &Baseline, outcomes: &[Outcome]) -> Option<Verdict> {
        let refs: Vec<&Outcome> = outcomes.iter().collect();
        let (changes, _) = diff(baseline, &refs);
        changes
            .iter()
            .find(|c| c.metric == "start_wait_p95_s")
            .map(|c| c.verdict)
    }

    #[test]
    fn a_shift_inside_the_seed_noise_passes_and_a_consistent_one_fails() {
        // Baseline p95 over three seeds: 100, 130, 160 s (noisy).
        let base: Vec<Outcome> = [(1, 100.0), (2, 130.0), (3, 160.0)]
            .map(|(s, v)| outcome_with(s, v))
            .into();
        let baseline = Baseline::from_outcomes(&base.iter().collect::<Vec<_>>());
        assert_eq!(baseline.per_seed["start_wait_p95_s"], [100.0, 130.0, 160.0]);
        // Same seeds, +12 s on one seed only: the mean rises 4 s, within 5% + 1 s of 130.
        let noisy = [(1, 100.0), (2, 142.0), (3, 160.0)].map(|(s, v)| outcome_with(s, v));
        assert_eq!(verdict_of(&baseline, &noisy), Some(Verdict::Worse));
        // A seed change alone: other seeds, other figures, same spread: unpaired, passes.
        let reseeded = [(7, 160.0), (8, 100.0), (9, 150.0)].map(|(s, v)| outcome_with(s, v));
        assert_ne!(verdict_of(&baseline, &reseeded), Some(Verdict::Regression));
        // +20 s on every seed (paired, no spread): a regression beyond 5% + 1 s.
        let worse = [(1, 120.0), (2, 150.0), (3, 180.0)].map(|(s, v)| outcome_with(s, v));
        assert_eq!(verdict_of(&baseline, &worse), Some(Verdict::Regression));
        // +20 s on the mean but only on one seed (60 s there): noise explains it.
        let one_seed = [(1, 100.0), (2, 190.0), (3, 160.0)].map(|(s, v)| outcome_with(s, v));
        assert_eq!(verdict_of(&baseline, &one_seed), Some(Verdict::Worse));
        assert_eq!(t95(2), 2.920);
    }

    #[test]
    fn a_baseline_metric_the_outcome_lacks_is_an_error() {
        let outcome = Outcome::default();
        let mut baseline = Baseline::from_outcome(&outcome);
        baseline.metrics.clear();
        baseline.metrics.insert("no_such_metric".to_string(), 1.0);
        // Only metrics in TOLERANCES are compared; an unknown one is ignored ...
        let (changes, errors) = diff(&baseline, &[&outcome]);
        assert!(changes.is_empty() && errors.is_empty());
        // ... and every TOLERANCES metric exists in an outcome.
        let names = Outcome::metric_names();
        for t in TOLERANCES {
            assert!(names.contains(t.metric), "{} is not an outcome metric", t.metric);
        }
    }
}
