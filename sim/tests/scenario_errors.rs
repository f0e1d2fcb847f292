//! Bad scenario files are refused with the file, line and field named.

use std::path::Path;

use payperplay_sim::{Scenario, ScenarioError};

const GOOD: &str = include_str!("../../scenarios/small-dedicated.toml");

fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    Scenario::parse(text, Path::new("bad.toml"))
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect("needle in text") + 1
}

#[test]
fn the_shipped_scenarios_parse() {
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    assert!(parse(GOOD).is_ok());
}

#[test]
fn an_unknown_field_names_its_line_and_path() {
    let text = GOOD.replace("users = 60", "users = 60\nusres = 61");
    let error = parse(&text).unwrap_err();
    let message = error.to_string();
    assert_eq!(error.line(), Some(line_of(&text, "usres")), "{message}");
    assert!(message.starts_with("bad.toml:"), "{message}");
    assert!(message.contains("unknown field `usres`"), "{message}");
    assert!(error.field().unwrap().starts_with("workload"), "{message}");
}

#[test]
fn a_wrong_type_names_the_field() {
    let text = GOOD.replace("sessions_per_hour = 6", "sessions_per_hour = \"six\"");
    let error = parse(&text).unwrap_err();
    assert_eq!(error.line(), Some(line_of(&text, "sessions_per_hour")), "{error}");
    assert_eq!(error.field(), Some("workload.sessions_per_hour"), "{error}");
}

#[test]
fn a_bad_duration_is_explained() {
    let text = GOOD.replace("duration = \"7days\"", "duration = \"a week\"");
    let error = parse(&text).unwrap_err();
    assert_eq!(error.line(), Some(line_of(&text, "duration =")), "{error}");
    assert!(error.to_string().contains("invalid duration"), "{error}");
}

#[test]
fn semantic_errors_point_at_the_offending_entry() {
    let text = GOOD.replace(
        "weekly_profile = [0.9, 0.9, 0.9, 0.95, 1.05, 1.2, 1.1]",
        "weekly_profile = [1.0, 1.0]",
    );
    let error = parse(&text).unwrap_err();
    assert_eq!(error.field(), Some("workload.weekly_profile"));
    assert_eq!(error.line(), Some(line_of(&text, "weekly_profile")));
    assert!(error.to_string().contains("needs 7 values"), "{error}");

    let text = GOOD.replace("{ gb = 16, weight = 5 }", "{ gb = 12, weight = 5 }");
    let error = parse(&text).unwrap_err();
    assert_eq!(error.field(), Some("workload.tiers.3.gb"), "{error}");
    assert_eq!(error.line(), Some(line_of(&text, "gb = 12")), "{error}");

    let text = GOOD.replace(
        "boot_seconds = { kind = \"uniform\", min = 30, max = 60 }",
        "boot_seconds = { kind = \"uniform\", min = 60, max = 30 }",
    );
    let error = parse(&text).unwrap_err();
    assert_eq!(error.field(), Some("servers.boot_seconds"), "{error}");
    assert!(error.to_string().contains("min <= max"), "{error}");
}

#[test]
fn an_unknown_expectation_lists_the_known_metrics() {
    let text = GOOD.replace("starts_rejected = { max = 0 }", "start_rejects = { max = 0 }");
    let error = parse(&text).unwrap_err();
    assert_eq!(error.field(), Some("expect.start_rejects"));
    assert_eq!(error.line(), Some(line_of(&text, "start_rejects")));
    assert!(error.to_string().contains("start_wait_p95_s"), "{error}");
}

#[test]
fn an_unknown_policy_field_is_refused() {
    let text = GOOD.replacen(
        "[[fleet.dedicated]]",
        "[core.policy.reactive]\nscale_up_free_mb = 3\n\n[[fleet.dedicated]]",
        1,
    );
    let error = parse(&text).unwrap_err();
    assert!(
        error.to_string().contains("unknown field `scale_up_free_mb`"),
        "{error}"
    );
    assert_eq!(error.line(), Some(line_of(&text, "scale_up_free_mb")), "{error}");
    assert_eq!(error.field(), Some("core.policy.reactive.scale_up_free_mb"), "{error}");
}

/// Writes `files` into a fresh folder and loads the first.
fn load_chain(files: &[(&str, &str)]) -> Result<Scenario, ScenarioError> {
    let dir = std::env::temp_dir().join(format!("ppp-extends-{}-{}", std::process::id(), files[0].0));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let result = Scenario::load(&dir.join(files[0].0));
    std::fs::remove_dir_all(&dir).ok();
    result
}

const PARENT: &str = r#"name = "parent"
duration = "1day"
[workload]
kind = "generator"
users = 10
sessions_per_hour = 5
tiers = [{ gb = 4, weight = 1 }]
[[fleet.dedicated]]
name = "a"
ram_gb = 64
monthly_eur = 40
[expect]
sessions_lost = { max = 0 }
"#;

#[test]
fn a_scenario_extends_another_and_overrides_key_by_key() {
    let child = "extends = \"parent.toml\"\nname = \"child\"\n[workload]\nsessions_per_hour = 7.5\n";
    let s = load_chain(&[("child.toml", child), ("parent.toml", PARENT)]).expect("valid chain");
    assert_eq!(s.name, "child");
    assert_eq!(s.workload.sessions_per_hour, 7.5);
    assert_eq!(s.workload.users, 10, "inherited");
    assert_eq!(s.fleet.dedicated.len(), 1, "inherited");
    assert!(s.expect.is_empty(), "[expect] is not inherited");
}

#[test]
fn errors_in_an_extended_scenario_name_the_file_that_sets_the_field() {
    let child = "extends = \"parent.toml\"\nname = \"child\"\n\n[workload]\nsessions_per_hour = \"many\"\n";
    let error = load_chain(&[("typed.toml", child), ("parent.toml", PARENT)])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("typed.toml:5:1: workload.sessions_per_hour: invalid type"),
        "{error}"
    );

    let broken_parent = PARENT.replace("users = 10", "users = 0");
    let child = "extends = \"parent.toml\"\nname = \"child\"\n";
    let error = load_chain(&[("semantic.toml", child), ("parent.toml", &broken_parent)])
        .unwrap_err()
        .to_string();
    assert!(error.contains("parent.toml:5:1: workload.users"), "{error}");

    let child = "extends = \"parent.toml\"\nname = \"c\"\n[[fleet.dedicated]]\nname = \"b\"\nram_gb = 64\nmonthly_eur = 1\ncolour = \"red\"\n";
    let error = load_chain(&[("unknown.toml", child), ("parent.toml", PARENT)])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("unknown.toml:7:1: fleet.dedicated.0.colour: unknown field"),
        "{error}"
    );

    let error = load_chain(&[("loop.toml", "extends = \"loop.toml\"\nname = \"l\"\n")])
        .unwrap_err()
        .to_string();
    assert!(error.contains("extends itself"), "{error}");
}
