//! The report of a run: SVG plots of what happened (demand against capacity, the queue,
//! the start-wait CDF, cost by node type, nodes by state) and `report.md`, which embeds
//! them next to the summary tables. Same run, same bytes: nothing in a report depends on
//! the clock or the machine.

pub mod plot;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::run::RunResult;
use crate::scenario::Bound;
use crate::timeline::Timeline;
use plot::{BarChart, LineChart, Series};

/// X axis label of every time series.
pub const TIME_AXIS: &str = "simulated time (hours since the end of warm-up)";

/// One SVG file of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    /// File name, e.g. `demand.svg`.
    pub file: String,
    pub title: String,
    pub svg: String,
}

impl Plot {
    pub fn line(file: &str, chart: &LineChart) -> Plot {
        Plot {
            file: file.to_string(),
            title: chart.title.clone(),
            svg: chart.to_svg(),
        }
    }

    pub fn bars(file: &str, chart: &BarChart) -> Plot {
        Plot {
            file: file.to_string(),
            title: chart.title.clone(),
            svg: chart.to_svg(),
        }
    }
}

/// A report: plots plus the markdown page that embeds them.
/// Writing a run's (or a comparison's) files failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("creating {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("writing {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// Create `dir` and its parents.
pub(crate) fn create_dir(dir: &Path) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })
}

/// Write `contents` to `path`.
pub(crate) fn write_file(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), ReportError> {
    std::fs::write(path, contents).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub plots: Vec<Plot>,
    /// `report.md`.
    pub markdown: String,
}

impl Report {
    /// Writes the plots and `report.md` into `dir` (created if missing); returns the
    /// paths written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
        create_dir(dir)?;
        let mut written = Vec::new();
        for plot in &self.plots {
            let path = dir.join(&plot.file);
            write_file(&path, &plot.svg)?;
            written.push(path);
        }
        let path = dir.join("report.md");
        write_file(&path, &self.markdown)?;
        written.push(path);
        Ok(written)
    }
}

/// The report of one run.
pub fn build(result: &RunResult, expect: &BTreeMap<String, Bound>) -> Report {
    let outcome = &result.outcome;
    let timeline = &result.timeline;
    let plots = vec![
        Plot::line("demand.svg", &demand_chart(timeline)),
        Plot::line("queue.svg", &queue_chart(timeline)),
        Plot::line(
            "start_wait_cdf.svg",
            &cdf_chart(
                "Start wait: request to running (CDF)",
                vec![Series::new("start wait", result.start_wait_cdf.clone())],
            ),
        ),
        Plot::bars("cost_by_type.svg", &cost_by_type_chart(&outcome.cost.by_type)),
        Plot::line("nodes.svg", &nodes_chart(timeline)),
    ];

    let mut md = outcome.to_markdown(expect);
    let w = &mut md;
    let _ = writeln!(w, "\n## Cost by node type\n");
    let _ = writeln!(w, "| node type | EUR |\n|---|---:|");
    for (node_type, eur) in &outcome.cost.by_type {
        let _ = writeln!(w, "| {node_type} | {eur:.2} |");
    }
    let _ = writeln!(w, "| **total** | **{:.2}** |", outcome.cost.total_eur);
    let _ = writeln!(w, "\n## Plots\n");
    let _ = writeln!(
        w,
        "Time series are time-weighted means over buckets of {} simulated minutes.\n",
        timeline.bucket_minutes
    );
    for plot in &plots {
        let _ = writeln!(w, "### {}\n\n![{}]({})\n", plot.title, plot.title, plot.file);
    }
    Report { plots, markdown: md }
}

fn column(timeline: &Timeline, f: impl Fn(&crate::timeline::Bucket) -> f64) -> Vec<(f64, f64)> {
    timeline.buckets.iter().map(|b| (b.hour, f(b))).collect()
}

/// Ready capacity over time (GB), for one run.
pub fn capacity_points(timeline: &Timeline) -> Vec<(f64, f64)> {
    column(timeline, |b| b.capacity_gb)
}

/// Demand (allocated plus queued RAM) over time (GB), for one run.
pub fn demand_points(timeline: &Timeline) -> Vec<(f64, f64)> {
    column(timeline, |b| b.demand_gb)
}

pub fn demand_chart(timeline: &Timeline) -> LineChart {
    LineChart {
        title: "Demand against capacity (GB of RAM)".to_string(),
        x_label: TIME_AXIS.to_string(),
        y_label: "RAM (GB)".to_string(),
        series: vec![
            Series::new(
                "capacity incl. provisioning nodes",
                column(timeline, |b| b.capacity_gb + b.provisioning_gb),
            )
            .secondary()
            .color(2),
            Series::new("capacity (ready nodes)", capacity_points(timeline)).color(2),
            Series::new("allocated", column(timeline, |b| b.allocated_gb))
                .secondary()
                .color(1),
            Series::new("demand (allocated + queued)", demand_points(timeline)).color(0),
        ],
        log_x: false,
        y_from_zero: true,
    }
}

pub fn queue_chart(timeline: &Timeline) -> LineChart {
    LineChart {
        title: "Start queue length (requests waiting for RAM)".to_string(),
        x_label: TIME_AXIS.to_string(),
        y_label: "queued start requests".to_string(),
        series: vec![
            Series::new("mean", column(timeline, |b| b.queue_len)),
            Series::new("max", column(timeline, |b| b.queue_len_max as f64)).secondary(),
        ],
        log_x: false,
        y_from_zero: true,
    }
}

/// A CDF chart of start waits (seconds, log x axis).
pub fn cdf_chart(title: &str, series: Vec<Series>) -> LineChart {
    LineChart {
        title: title.to_string(),
        x_label: "start wait (s, log scale)".to_string(),
        y_label: "fraction of starts at or below".to_string(),
        series,
        log_x: true,
        y_from_zero: true,
    }
}

pub fn cost_by_type_chart(by_type: &BTreeMap<String, f64>) -> BarChart {
    BarChart {
        title: "Cost by node type (EUR)".to_string(),
        x_label: "node type".to_string(),
        y_label: "cost (EUR)".to_string(),
        categories: by_type.keys().cloned().collect(),
        series: vec![("cost".to_string(), by_type.values().copied().collect())],
    }
}

pub fn nodes_chart(timeline: &Timeline) -> LineChart {
    LineChart {
        title: "Nodes by state (count)".to_string(),
        x_label: TIME_AXIS.to_string(),
        y_label: "nodes".to_string(),
        series: vec![
            Series::new("ready", column(timeline, |b| b.nodes_ready)),
            Series::new("provisioning", column(timeline, |b| b.nodes_provisioning)),
            Series::new("draining", column(timeline, |b| b.nodes_draining)),
            Series::new("deleting", column(timeline, |b| b.nodes_deleting)),
        ],
        log_x: false,
        y_from_zero: true,
    }
}

/// Writes everything a run produces into `dir`: outcome.json, summary.md, report.md and
/// the plots. Returns the report.
pub fn write_run(dir: &Path, result: &RunResult, expect: &BTreeMap<String, Bound>) -> Result<Report, ReportError> {
    create_dir(dir)?;
    write_file(&dir.join("outcome.json"), result.outcome.to_json())?;
    write_file(&dir.join("summary.md"), result.outcome.to_markdown(expect))?;
    let report = build(result, expect);
    report.write(dir)?;
    Ok(report)
}

/// A file or directory name made of the scenario name: letters, digits, `-`, `_` and `.`
/// are kept, anything else becomes `_`.
pub fn file_stem(name: &str) -> String {
    let stem: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() || stem.starts_with('.') {
        format!("_{stem}")
    } else {
        stem
    }
}
