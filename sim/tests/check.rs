//! `payperplay-sim compare` and `payperplay-sim check`: tables, baselines, exit codes.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{bin, scenario_path};

/// A fresh, existing temp folder.
fn temp_dir(name: &str) -> PathBuf {
    let dir = common::temp_dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A folder with two small scenarios: small-dedicated and a copy with a third machine.
fn scenario_folder(name: &str) -> PathBuf {
    let dir = temp_dir(name).join("scenarios");
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(scenario_path("small-dedicated.toml")).unwrap();
    std::fs::write(dir.join("a-small.toml"), &text).unwrap();
    let bigger = text
        .replace("name = \"small-dedicated\"", "name = \"small-dedicated-3\"")
        .replace(
            "[servers]",
            "[[fleet.dedicated]]\nname = \"ax41-extra\"\nram_gb = 64\nmonthly_eur = 44.0\n\n[servers]",
        );
    std::fs::write(dir.join("b-bigger.toml"), bigger).unwrap();
    dir
}

fn check(folder: &Path, baselines: &Path, extra: &[&str]) -> Output {
    bin()
        .arg("check")
        .arg(folder)
        .arg("--baselines")
        .arg(baselines)
        .args(extra)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn compare_writes_a_table_with_both_scenarios_and_overlaid_plots() {
    let folder = scenario_folder("compare");
    let out = folder.parent().unwrap().join("out");
    let output = bin()
        .args(["compare", "--seed", "5", "--out"])
        .arg(&out)
        .arg(folder.join("a-small.toml"))
        .arg(folder.join("b-bigger.toml"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
    assert!(md.contains("| metric | small-dedicated | small-dedicated-3 |"), "{md}");
    assert!(md.contains("(seed 5)"), "{md}");
    assert!(!md.contains("Warning"), "same workload, no warning: {md}");
    for row in [
        "| cost total (EUR) |",
        "| start wait p95 (s) |",
        "| SLO misses |",
        "| margin (EUR) |",
    ] {
        assert!(md.contains(row), "{row} missing: {md}");
    }
    for file in ["capacity.svg", "start_wait_cdf.svg", "cost.svg"] {
        let svg = std::fs::read_to_string(out.join(file)).unwrap();
        let s = payperplay_sim::report::plot::svg_structure(&svg);
        assert!(
            s.texts.iter().any(|t| t.contains("small-dedicated-3")),
            "{file}: {:?}",
            s.texts
        );
    }
    // Same seed, same workload: the same sessions arrive in both runs; the third
    // machine costs more.
    let outcome = |dir: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(out.join(dir).join("outcome.json")).unwrap()).unwrap()
    };
    let (a, b) = (outcome("small-dedicated"), outcome("small-dedicated-3"));
    assert_eq!(a["seed"], 5);
    assert_eq!(a["sessions"]["total"], b["sessions"]["total"]);
    assert!(b["cost"]["total_eur"].as_f64().unwrap() > a["cost"]["total_eur"].as_f64().unwrap());
}

#[test]
fn check_passes_on_a_fresh_baseline_and_results_do_not_depend_on_threads() {
    let folder = scenario_folder("fresh");
    let (one, two) = (folder.with_file_name("one"), folder.with_file_name("two"));
    let output = check(&folder, &one, &["--update-baselines", "--jobs", "1"]);
    assert!(output.status.success(), "{}", text(&output));
    // `--threads`, the old name, still works.
    let output = check(&folder, &two, &["--update-baselines", "--threads", "2"]);
    assert!(output.status.success(), "{}", text(&output));
    for name in ["small-dedicated.json", "small-dedicated-3.json"] {
        assert_eq!(
            std::fs::read(one.join(name)).unwrap(),
            std::fs::read(two.join(name)).unwrap(),
            "{name}"
        );
    }
    let out = folder.with_file_name("out");
    let output = check(&folder, &one, &["--out", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("2 scenario(s): 2 ok"), "{}", text(&output));
    assert!(out.join("small-dedicated-3/report.md").is_file());
}

#[test]
fn check_fails_and_names_the_metric_when_the_baseline_is_better_than_reality() {
    let folder = scenario_folder("worse");
    let baselines = folder.with_file_name("baselines");
    assert!(check(&folder, &baselines, &["--update-baselines"]).status.success());
    let path = baselines.join("small-dedicated.json");
    let mut baseline: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let cost = baseline["metrics"]["cost_total_eur"].as_f64().unwrap();
    baseline["metrics"]["cost_total_eur"] = (cost * 0.9).into();
    std::fs::write(&path, serde_json::to_string_pretty(&baseline).unwrap()).unwrap();

    let output = check(&folder, &baselines, &[]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("== small-dedicated (seed 42"), "{out}");
    assert!(out.contains("FAILED"), "{out}");
    let row = out
        .lines()
        .find(|l| l.contains("| cost_total_eur |"))
        .unwrap_or_else(|| panic!("no cost row: {out}"));
    assert!(row.contains("WORSE beyond tolerance"), "{row}");
    assert!(row.contains("+11.1%"), "{row}");
    assert!(row.contains("may rise 2% + 0.01"), "{row}");
    // The other scenario still passes.
    assert!(out.contains("1 ok, 1 failed"), "{out}");

    // Slightly better than reality, within the 2% tolerance: passes, reported as worse.
    baseline["metrics"]["cost_total_eur"] = (cost * 0.99).into();
    std::fs::write(&path, serde_json::to_string_pretty(&baseline).unwrap()).unwrap();
    let output = check(&folder, &baselines, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("worse, within tolerance"), "{}", text(&output));
}

#[test]
fn an_improvement_passes_and_is_reported() {
    let folder = scenario_folder("better");
    let baselines = folder.with_file_name("baselines");
    assert!(check(&folder, &baselines, &["--update-baselines"]).status.success());
    let path = baselines.join("small-dedicated.json");
    let mut baseline: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let p95 = baseline["metrics"]["start_wait_p95_s"].as_f64().unwrap();
    baseline["metrics"]["start_wait_p95_s"] = (p95 * 2.0).into();
    std::fs::write(&path, serde_json::to_string_pretty(&baseline).unwrap()).unwrap();
    let output = check(&folder, &baselines, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let out = text(&output);
    let row = out.lines().find(|l| l.contains("| start_wait_p95_s |")).unwrap();
    assert!(row.contains("improved"), "{row}");
}

#[test]
fn a_missing_baseline_is_an_error_that_says_how_to_record_one() {
    let folder = scenario_folder("missing");
    let baselines = folder.with_file_name("baselines");
    assert!(check(&folder, &baselines, &["--update-baselines"]).status.success());
    std::fs::remove_file(baselines.join("small-dedicated-3.json")).unwrap();
    let output = check(&folder, &baselines, &[]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(2), "{out}");
    assert!(out.contains("no baseline"), "{out}");
    assert!(out.contains("small-dedicated-3.json"), "{out}");
    assert!(out.contains("--update-baselines"), "{out}");
}

#[test]
fn a_failed_expectation_fails_check_even_with_a_matching_baseline() {
    let folder = scenario_folder("expect");
    let baselines = folder.with_file_name("baselines");
    let path = folder.join("a-small.toml");
    let strict = std::fs::read_to_string(&path)
        .unwrap()
        .replace("start_wait_p95_s = { max = 65 }", "start_wait_p95_s = { max = 5 }");
    std::fs::write(&path, strict).unwrap();
    let output = check(&folder, &baselines, &["--update-baselines"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let output = check(&folder, &baselines, &[]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("expectation failed: start_wait_p95_s"), "{out}");
}

#[test]
fn a_baseline_of_another_seed_is_an_error() {
    let folder = scenario_folder("seed");
    let baselines = folder.with_file_name("baselines");
    assert!(check(&folder, &baselines, &["--update-baselines"]).status.success());
    let path = folder.join("a-small.toml");
    let text_ = std::fs::read_to_string(&path)
        .unwrap()
        .replace("seed = 42", "seed = 43");
    std::fs::write(&path, text_).unwrap();
    let output = check(&folder, &baselines, &[]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(2), "{out}");
    assert!(out.contains("recorded with seed 42, the scenario has seed 43"), "{out}");
}
