//! `payperplay-sim compare`: several scenarios (policies, fleets) on the identical
//! workload: one seed for all, so scenarios with the same `[workload]` section see the
//! same arrivals. Writes a side-by-side table (`compare.md`), overlaid plots and each
//! run's own report in a subfolder.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use crate::report::plot::{BarChart, LineChart, Series};
use crate::report::{self, Plot};
use crate::run::RunResult;
use crate::scenario::Scenario;

/// The rows of the side-by-side table: (label, flattened metric name, decimals).
pub const ROWS: &[(&str, &str, usize)] = &[
    ("simulated hours (after warm-up)", "simulated_hours", 1),
    ("cost total (EUR)", "cost_total_eur", 2),
    ("cost cloud (EUR)", "cost_cloud_eur", 2),
    ("cost dedicated (EUR)", "cost_dedicated_eur", 2),
    ("revenue (EUR)", "revenue_total_eur", 2),
    ("margin (EUR)", "margin_eur", 2),
    ("start wait p50 (s)", "start_wait_p50_s", 1),
    ("start wait p95 (s)", "start_wait_p95_s", 1),
    ("start wait p99 (s)", "start_wait_p99_s", 1),
    ("capacity wait p50 (s)", "capacity_wait_p50_s", 1),
    ("capacity wait p95 (s)", "capacity_wait_p95_s", 1),
    ("capacity wait p99 (s)", "capacity_wait_p99_s", 1),
    ("join to playable p95 (s)", "join_wait_p95_s", 1),
    ("join to playable p95, regular owners (s)", "regular_join_wait_p95_s", 1),
    ("SLO misses", "slo_misses", 0),
    ("SLO misses (%)", "slo_miss_pct", 2),
    ("starts requested", "starts_requested", 0),
    ("starts rejected", "starts_rejected", 0),
    ("sessions lost", "sessions_lost", 0),
    ("sessions abandoned (%)", "sessions_abandoned_pct", 2),
    ("revenue lost to abandonment (EUR)", "sessions_abandoned_revenue_eur", 2),
    ("starts pending at end", "starts_pending_at_end", 0),
    ("requests queued", "queue_requests_queued", 0),
    ("queue length mean", "queue_length_mean", 3),
    ("queue length max", "queue_length_max", 0),
    ("cloud node-hours", "nodes_cloud_node_hours", 1),
    ("dedicated node-hours", "nodes_dedicated_node_hours", 1),
    ("utilization mean (%)", "utilization_mean_pct", 1),
    ("utilization peak (%)", "utilization_peak_pct", 1),
    ("cloud nodes provisioned", "nodes_provisioned", 0),
    ("cloud nodes lost", "nodes_lost", 0),
    ("cloud nodes peak", "nodes_cloud_peak", 0),
    ("provider orders", "provider_orders", 0),
    ("orders sold out", "provider_sold_out", 0),
    ("fallbacks to another type or location", "provider_fallbacks", 0),
    ("VMs lost", "incidents_vm_losses", 0),
    ("sessions interrupted by a lost VM", "incidents_sessions_interrupted", 0),
    ("pre-warm starts", "prewarm_starts", 0),
    ("pre-warm paid by the platform (EUR)", "prewarm_platform_paid_eur", 2),
];

/// Several runs of one seed, side by side.
pub struct Comparison {
    pub seed: u64,
    /// Column names: the scenario names, made unique.
    pub names: Vec<String>,
    pub results: Vec<RunResult>,
    /// Scenarios whose `[workload]` differs from the first one's.
    pub different_workload: Vec<String>,
}

/// Runs `scenarios` on `seed` (default: the first scenario's seed).
pub fn compare(mut scenarios: Vec<Scenario>, seed: Option<u64>, jobs: usize) -> Comparison {
    let seed = seed.or_else(|| scenarios.first().map(|s| s.seed)).unwrap_or(1);
    let mut names: Vec<String> = Vec::new();
    for scenario in &mut scenarios {
        scenario.seed = seed;
        let mut name = scenario.name.clone();
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{} ({n})", scenario.name);
            n += 1;
        }
        names.push(name);
    }
    let different_workload = match scenarios.first() {
        Some(first) => scenarios
            .iter()
            .zip(&names)
            .skip(1)
            .filter(|(s, _)| s.workload != first.workload)
            .map(|(_, name)| name.clone())
            .collect(),
        None => Vec::new(),
    };
    let results = crate::parallel::run_scenarios(&scenarios, jobs);
    Comparison {
        seed,
        names,
        results,
        different_workload,
    }
}

impl Comparison {
    /// The side-by-side table, one column per scenario.
    pub fn table(&self) -> String {
        let mut md = String::new();
        let w = &mut md;
        let _ = write!(w, "| metric |");
        for name in &self.names {
            let _ = write!(w, " {name} |");
        }
        let _ = write!(w, "\n|---|");
        for _ in &self.names {
            let _ = write!(w, "---:|");
        }
        let _ = writeln!(w);
        let metrics: Vec<BTreeMap<String, f64>> = self.results.iter().map(|r| r.outcome.metrics()).collect();
        for &(label, metric, decimals) in ROWS {
            let _ = write!(w, "| {label} |");
            for m in &metrics {
                match m.get(metric) {
                    Some(v) => {
                        let _ = write!(w, " {v:.decimals$} |");
                    }
                    None => {
                        let _ = write!(w, " – |");
                    }
                }
            }
            let _ = writeln!(w);
        }
        md
    }

    /// The overlaid plots: capacity and demand over time, start-wait CDFs, cost by node
    /// type per scenario.
    pub fn plots(&self) -> Vec<Plot> {
        let mut capacity = Vec::new();
        for (i, (name, result)) in self.names.iter().zip(&self.results).enumerate() {
            capacity.push(Series::new(format!("capacity: {name}"), report::capacity_points(&result.timeline)).color(i));
            capacity.push(
                Series::new(format!("demand: {name}"), report::demand_points(&result.timeline))
                    .secondary()
                    .color(i),
            );
        }
        let capacity = LineChart {
            title: "Ready capacity (solid) and demand (pale) per scenario (GB of RAM)".to_string(),
            x_label: report::TIME_AXIS.to_string(),
            y_label: "RAM (GB)".to_string(),
            series: capacity,
            log_x: false,
            y_from_zero: true,
        };
        let cdf = report::cdf_chart(
            "Start wait per scenario: request to running (CDF)",
            self.names
                .iter()
                .zip(&self.results)
                .map(|(name, r)| Series::new(name.clone(), r.start_wait_cdf.clone()))
                .collect(),
        );
        let types: BTreeSet<&String> = self
            .results
            .iter()
            .flat_map(|r| r.outcome.cost.by_type.keys())
            .collect();
        let cost = BarChart {
            title: "Cost per scenario, by node type (EUR)".to_string(),
            x_label: "scenario".to_string(),
            y_label: "cost (EUR)".to_string(),
            categories: self.names.clone(),
            series: types
                .into_iter()
                .map(|t| {
                    let values = self
                        .results
                        .iter()
                        .map(|r| r.outcome.cost.by_type.get(t).copied().unwrap_or(0.0))
                        .collect();
                    (t.clone(), values)
                })
                .collect(),
        };
        vec![
            Plot::line("capacity.svg", &capacity),
            Plot::line("start_wait_cdf.svg", &cdf),
            Plot::bars("cost.svg", &cost),
        ]
    }

    /// `compare.md`: the table, the plots and links to each run's report.
    pub fn markdown(&self, plots: &[Plot]) -> String {
        let mut md = String::new();
        let w = &mut md;
        let _ = writeln!(
            w,
            "# Comparison of {} scenarios (seed {})\n",
            self.names.len(),
            self.seed
        );
        let _ = writeln!(
            w,
            "Every scenario ran on seed {}: scenarios with the same `[workload]` section see the same arrivals.\n",
            self.seed
        );
        if !self.different_workload.is_empty() {
            let _ = writeln!(
                w,
                "**Warning:** the `[workload]` of {} differs from that of `{}`: those runs do not see the same arrivals.\n",
                self.different_workload
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.names[0]
            );
        }
        md.push_str(&self.table());
        let w = &mut md;
        let _ = writeln!(w, "\n## Plots\n");
        for plot in plots {
            let _ = writeln!(w, "### {}\n\n![{}]({})\n", plot.title, plot.title, plot.file);
        }
        let _ = writeln!(w, "## Each run\n");
        for name in &self.names {
            let stem = report::file_stem(name);
            let _ = writeln!(w, "- [{name}]({stem}/report.md)");
        }
        md
    }

    /// Writes `compare.md`, the overlaid plots and one folder per scenario with its own
    /// outcome, summary and report.
    pub fn write(
        &self,
        dir: &Path,
        expects: &[&BTreeMap<String, crate::scenario::Bound>],
    ) -> Result<(), report::ReportError> {
        report::create_dir(dir)?;
        let plots = self.plots();
        for plot in &plots {
            let path = dir.join(&plot.file);
            report::write_file(&path, &plot.svg)?;
        }
        let path = dir.join("compare.md");
        report::write_file(&path, self.markdown(&plots))?;
        let no_bounds = BTreeMap::new();
        for (i, (name, result)) in self.names.iter().zip(&self.results).enumerate() {
            let expect = expects.get(i).copied().unwrap_or(&no_bounds);
            report::write_run(&dir.join(report::file_stem(name)), result, expect)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_an_outcome_metric() {
        let names = crate::outcome::Outcome::metric_names();
        for (label, metric, _) in ROWS {
            assert!(names.contains(*metric), "{label}: `{metric}` is not an outcome metric");
        }
    }
}
