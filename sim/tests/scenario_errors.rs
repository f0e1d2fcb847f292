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

/// A small autoscaled scenario: one dedicated machine, one 16 GB VM type, tiers up
/// to 8 GB. `policy` lines go into `[core.policy]`, `extra` tables are appended.
fn cloud_scenario(policy: &str, extra: &str) -> String {
    format!(
        r#"name = "cloud"
duration = "1day"
[core]
tiers_gb = [2, 4, 8]
[core.policy]
evaluate_every = "30s"
{policy}
[core.policy.reactive]
scale_up_free_mib_below = 0
[core.catalog]
locations = ["fsn1"]
[[core.catalog.server_types]]
name = "cpx42"
ram_gb = 16
vcpu = 8
hourly_eur = 0.04
monthly_eur = 24.99
[[fleet.dedicated]]
name = "ax"
ram_gb = 64
monthly_eur = 40
[workload]
users = 20
sessions_per_hour = 5
tiers = [{{ gb = 4, weight = 1 }}]
{extra}
"#
    )
}

fn warnings_of(text: &str) -> Vec<String> {
    parse(text)
        .unwrap_or_else(|e| panic!("{e}"))
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_clean_scenario_has_no_warnings() {
    assert_eq!(warnings_of(&cloud_scenario("", "")), Vec::<String>::new());
    assert_eq!(warnings_of(GOOD), Vec::<String>::new());
}

#[test]
fn a_billing_margin_below_the_evaluation_interval_is_a_warning_naming_the_field() {
    let text = cloud_scenario(
        "",
        "[core.policy.scale_down]\nrule = \"billing_hour\"\nbilling_margin = \"10s\"\n",
    );
    let warnings = warnings_of(&text);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let line = line_of(&text, "billing_margin");
    assert!(
        warnings[0].starts_with(&format!(
            "bad.toml:{line}: core.policy.scale_down.billing_margin: 10 s is shorter"
        )),
        "{warnings:?}"
    );
    let fine = cloud_scenario(
        "",
        "[core.policy.scale_down]\nrule = \"billing_hour\"\nbilling_margin = \"2m\"\n",
    );
    assert!(warnings_of(&fine).is_empty());
}

#[test]
fn min_cloud_nodes_above_max_provision_per_eval_is_a_warning() {
    let text = cloud_scenario("min_cloud_nodes = 12\nmax_provision_per_eval = 5", "");
    let warnings = warnings_of(&text);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("core.policy.min_cloud_nodes: 12 is more than max_provision_per_eval (5)"),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("over 3 evaluations"), "{warnings:?}");
}

#[test]
fn a_tier_no_vm_type_holds_warns_when_a_dedicated_machine_does_and_is_an_error_when_nothing_does() {
    // cpx42 has 16 GB, 15 GiB usable after the 1 GiB reserve: a 16 GB tier does not fit.
    let text = cloud_scenario("", "")
        .replace("tiers_gb = [2, 4, 8]", "tiers_gb = [2, 4, 16]")
        .replace(
            "tiers = [{ gb = 4, weight = 1 }]",
            "tiers = [{ gb = 4, weight = 1 }, { gb = 16, weight = 1 }]",
        );
    let warnings = warnings_of(&text);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("core.tiers_gb.2: 16 GB fits no VM type of core.catalog"),
        "{warnings:?}"
    );
    let nothing_holds = text.replace("ram_gb = 64", "ram_gb = 8");
    let error = parse(&nothing_holds).unwrap_err();
    assert_eq!(error.field(), Some("core.tiers_gb.2"), "{error}");
    assert!(
        error
            .to_string()
            .contains("16 GB (a tier of workload.tiers) fits no node"),
        "{error}"
    );
    // Offered but not in the workload's mix: nothing to say.
    let unused = cloud_scenario("", "").replace("tiers_gb = [2, 4, 8]", "tiers_gb = [2, 4, 16]");
    assert!(warnings_of(&unused).is_empty());
}

#[test]
fn a_policy_table_without_a_policy_is_a_warning_in_the_file_that_writes_it() {
    let text = cloud_scenario("", "").replace("[core.policy.reactive]\nscale_up_free_mib_below = 0\n", "");
    let warnings = warnings_of(&text);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let line = line_of(&text, "[core.policy]");
    assert!(
        warnings[0].starts_with(&format!("bad.toml:{line}: core.policy: sets no policy table")),
        "{warnings:?}"
    );
    // A static scenario that inherits a parent's [core.policy] says nothing of its own.
    let child = "extends = \"parent.toml\"\nname = \"static\"\n";
    let s = load_chain(&[("static-child.toml", child), ("parent.toml", &text)]).expect("valid");
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
}

#[test]
fn warnings_reach_the_outcome_and_its_json() {
    let text = cloud_scenario("min_cloud_nodes = 2\nmax_provision_per_eval = 1", "")
        .replace("duration = \"1day\"", "duration = \"2h\"");
    let outcome = payperplay_sim::simulate(parse(&text).expect("valid"));
    assert_eq!(outcome.warnings.len(), 1, "{:?}", outcome.warnings);
    assert!(outcome.warnings[0].contains("core.policy.min_cloud_nodes"));
    let json: serde_json::Value = serde_json::from_str(&outcome.to_json()).expect("json");
    assert_eq!(json["warnings"][0].as_str(), Some(outcome.warnings[0].as_str()));
    assert!(outcome.to_markdown(&Default::default()).contains("## Warnings"));
    // A scenario without warnings keeps its JSON as before (no empty list).
    let quiet = payperplay_sim::simulate(
        parse(&cloud_scenario("", "").replace("duration = \"1day\"", "duration = \"2h\"")).expect("valid"),
    );
    assert!(!quiet.to_json().contains("\"warnings\""));
}

#[test]
fn predictive_history_lengths_are_checked() {
    let text = cloud_scenario("", "[core.policy.predictive]\nhistory_weeks = 0\n");
    let error = parse(&text).unwrap_err();
    assert_eq!(error.field(), Some("core.policy.predictive.history_weeks"), "{error}");
}
