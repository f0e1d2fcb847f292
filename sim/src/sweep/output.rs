//! A sweep's output: results.json, results.csv, pareto.md, the pareto.svg plot,
//! recommended.toml, and the table printed on the terminal.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use toml_edit::DocumentMut;

use super::{OBJECTIVES, ParamValue, SweepError, SweepResult, label, set_path};

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

impl SweepResult {
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

    pub(super) fn paths(&self) -> Vec<&str> {
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

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
