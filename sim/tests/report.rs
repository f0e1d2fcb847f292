//! Run reports: which plots, their structure (titles, axes, legends, how many lines and
//! bars), report.md, and byte-for-byte determinism.

use std::path::Path;
use std::process::Command;

use payperplay_sim::report::{self, plot};
use payperplay_sim::{RunResult, Scenario, Simulation};

mod common;
use common::{scenario_path, temp_dir};

fn small() -> (Scenario, RunResult) {
    let scenario = Scenario::load(&scenario_path("small-dedicated.toml")).unwrap();
    let result = Simulation::new(scenario.clone()).run_full();
    (scenario, result)
}

/// True for tick labels: numbers, which move whenever the model does.
fn is_number(text: &str) -> bool {
    text.parse::<f64>().is_ok()
}

/// Numbers replaced by `#`, so the snapshot holds the page's structure, not the
/// model's current numbers (digits inside names such as `p95` or `ax41` stay).
fn digits_masked(text: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    let mut prev = ' ';
    for c in text.chars() {
        let starts = c.is_ascii_digit() && !prev.is_ascii_alphanumeric() && prev != '_';
        if in_number && (c.is_ascii_digit() || c == '.') {
            // still the same number
        } else if starts {
            out.push('#');
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
        prev = c;
    }
    out
}

/// Per SVG: title, the non-numeric texts (axis labels, legend, categories), and how
/// many lines and rectangles it draws.
fn structure(plots: &[report::Plot]) -> String {
    let mut out = String::new();
    for p in plots {
        let s = plot::svg_structure(&p.svg);
        let labels: Vec<&str> = s.texts.iter().map(String::as_str).filter(|t| !is_number(t)).collect();
        out.push_str(&format!(
            "{}\n  title: {}\n  series lines: {}\n  rects: {}\n  labels: {:?}\n",
            p.file, s.title, s.series_lines, s.rects, labels
        ));
    }
    out
}

#[test]
fn the_report_has_five_plots_with_titles_axes_and_one_line_per_series() {
    let (scenario, result) = small();
    let report = report::build(&result, &scenario.expect);
    let files: Vec<&str> = report.plots.iter().map(|p| p.file.as_str()).collect();
    assert_eq!(
        files,
        [
            "demand.svg",
            "queue.svg",
            "start_wait_cdf.svg",
            "cost_by_type.svg",
            "nodes.svg"
        ]
    );
    for p in &report.plots {
        let s = plot::svg_structure(&p.svg);
        assert_eq!(s.title, p.title, "{}: the first text is the title", p.file);
        assert!(p.svg.starts_with("<svg"), "{}", p.file);
    }
    // Each line series is drawn once in the plot and once in its legend.
    let lines =
        |file: &str| plot::svg_structure(&report.plots.iter().find(|p| p.file == file).unwrap().svg).series_lines;
    assert_eq!(lines("demand.svg"), 2 * 4);
    assert_eq!(lines("queue.svg"), 2 * 2);
    assert_eq!(lines("start_wait_cdf.svg"), 2);
    assert_eq!(lines("nodes.svg"), 2 * 4);
    insta::assert_snapshot!("report_structure", structure(&report.plots));
}

#[test]
fn report_md_embeds_every_plot_next_to_the_summary() {
    let (scenario, result) = small();
    let report = report::build(&result, &scenario.expect);
    for p in &report.plots {
        assert!(
            report.markdown.contains(&format!("]({})", p.file)),
            "{} not embedded",
            p.file
        );
    }
    // The summary (outcome.rs owns it) comes first, unchanged; the snapshot holds what
    // the report adds after it.
    let summary = result.outcome.to_markdown(&scenario.expect);
    let added = report
        .markdown
        .strip_prefix(&summary)
        .expect("report.md starts with the summary");
    assert!(added.contains("| dedicated ax41 |"));
    insta::assert_snapshot!("report_md", digits_masked(added));
}

#[test]
fn cost_bars_are_one_per_node_type_with_their_names() {
    let (_, result) = small();
    let chart = report::cost_by_type_chart(&result.outcome.cost.by_type);
    let s = plot::svg_structure(&chart.to_svg());
    // The background, the bars, nothing else (no legend for one series).
    assert_eq!(s.rects, 1 + result.outcome.cost.by_type.len());
    for name in result.outcome.cost.by_type.keys() {
        assert!(s.texts.contains(name), "{name} missing from {:?}", s.texts);
    }
}

fn read_dir_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn run_writes_the_report_and_the_same_seed_gives_the_same_bytes() {
    let (a, b) = (temp_dir("det-a"), temp_dir("det-b"));
    for dir in [&a, &b] {
        let output = Command::new(env!("CARGO_BIN_EXE_payperplay-sim"))
            .args(["run", "--quiet", "--out"])
            .arg(dir)
            .arg(scenario_path("small-dedicated.toml"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    let files = read_dir_bytes(&a);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "cost_by_type.svg",
            "demand.svg",
            "nodes.svg",
            "outcome.json",
            "queue.svg",
            "report.md",
            "start_wait_cdf.svg",
            "summary.md"
        ]
    );
    assert!(
        files == read_dir_bytes(&b),
        "two runs of the same seed wrote different bytes"
    );
}

#[test]
fn charts_without_data_still_draw() {
    let empty = plot::LineChart {
        title: "empty".to_string(),
        x_label: "x".to_string(),
        y_label: "y".to_string(),
        series: vec![plot::Series::new("nothing", Vec::new())],
        log_x: true,
        y_from_zero: true,
    };
    assert_eq!(plot::svg_structure(&empty.to_svg()).title, "empty");
    let bars = report::cost_by_type_chart(&Default::default());
    assert_eq!(plot::svg_structure(&bars.to_svg()).title, "Cost by node type (EUR)");
}
