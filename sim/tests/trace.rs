//! Traces: generating a workload as a trace and replaying it gives the same bytes as
//! running the generator; bad traces name the line and what is wrong.

use std::path::Path;

use payperplay_sim::trace::{self, Trace};
use payperplay_sim::{Scenario, simulate};

mod common;

fn scenario(name: &str) -> Scenario {
    Scenario::load(&common::scenario_path(name)).expect("scenario loads")
}

fn round_trip(mut scenario: Scenario) {
    let direct = simulate(scenario.clone()).to_json();
    let mut bytes = Vec::new();
    let lines = trace::generate(&scenario, &mut bytes).expect("generate");
    assert!(lines > 100, "a real workload, got {lines} lines");
    let trace = Trace::read(&bytes[..], Path::new("generated.jsonl")).expect("the generated trace reads back");
    scenario = scenario.with_trace(trace.into()).expect("trace fits the scenario");
    let replayed = simulate(scenario).to_json();
    assert_eq!(direct, replayed, "replaying the generated trace changed the outcome");
}

#[test]
fn a_generated_trace_replays_to_the_same_bytes() {
    round_trip(scenario("small-dedicated.toml"));
    let mut burst = scenario("weekday-cloud-burst.toml");
    burst.duration_ms = 2 * 86_400_000;
    round_trip(burst);
}

#[test]
fn habits_survive_the_round_trip() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/small-dedicated.toml"))
        .unwrap()
        .replace(
            "[expect]",
            "[workload.habits]\nservers_pct = 30\ndays_pct = 90\nfrom = \"18:00\"\nto = \"20:00\"\njitter = \"15m\"\n\n[expect]",
        );
    let s = Scenario::parse(&text, Path::new("habits.toml")).expect("parses");
    let outcome = simulate(s.clone());
    assert!(outcome.regular_join_wait.count > 50, "{:?}", outcome.regular_join_wait);
    round_trip(s);
}

#[test]
fn the_recorded_trace_in_scenarios_replays() {
    let s = scenario("recorded-weekend.toml");
    assert!(s.trace.is_some());
    let outcome = simulate(s);
    assert!(outcome.sessions.total > 0);
    assert_eq!(outcome.starts.rejected, 0);
}

fn read(text: &str) -> Result<Trace, trace::TraceError> {
    Trace::read(text.as_bytes(), Path::new("bad.jsonl"))
}

const HEADER: &str = r#"{"format":"payperplay-trace","version":1,"start_ms":1000}"#;

#[test]
fn bad_traces_name_the_line_and_the_problem() {
    let cases = [
        (
            format!(
                "{HEADER}\n{{\"event\":\"user_registered\",\"at_ms\":2000,\"user\":1}}\n{{\"event\":\"user_registered\",\"at_ms\":1500,\"user\":2}}\n"
            ),
            "bad.jsonl:3: at_ms",
        ),
        (
            format!(
                "{HEADER}\n{{\"event\":\"player_joined\",\"at_ms\":2000,\"server\":9,\"session\":1,\"players\":1}}\n"
            ),
            "bad.jsonl:2: server: server 9 is not created",
        ),
        (
            format!("{HEADER}\n{{\"event\":\"user_registered\",\"at_ms\":2000,\"user\":1,\"colour\":\"red\"}}\n"),
            "bad.jsonl:2: unknown field `colour`",
        ),
        (
            format!("{HEADER}\n{{\"event\":\"teleported\",\"at_ms\":2000}}\n"),
            "bad.jsonl:2: unknown variant `teleported`",
        ),
        (
            r#"{"format":"payperplay-trace","version":2,"start_ms":0}"#.to_string(),
            "bad.jsonl:1: header.version",
        ),
        (
            format!(
                "{HEADER}\n{{\"event\":\"user_registered\",\"at_ms\":2000,\"user\":1}}\n{{\"event\":\"server_created\",\"at_ms\":2000,\"server\":1,\"owner\":1,\"ram_gb\":4}}\n{{\"event\":\"player_left\",\"at_ms\":3000,\"server\":1,\"session\":5}}\n"
            ),
            "bad.jsonl:4: session: session 5 never joined",
        ),
        (String::new(), "bad.jsonl:1: empty trace"),
    ];
    for (text, expected) in cases {
        let error = read(&text).expect_err(expected).to_string();
        assert!(error.starts_with(expected), "expected {expected:?}, got {error:?}");
    }
}

#[test]
fn sessions_pair_joins_with_leaves_and_open_ones_end_with_the_trace() {
    let text = format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n",
        r#"{"format":"payperplay-trace","version":1,"start_ms":1000,"end_ms":100000}"#,
        r#"{"event":"user_registered","at_ms":1000,"user":7}"#,
        r#"{"event":"server_created","at_ms":1000,"server":70,"owner":7,"ram_gb":2}"#,
        r#"{"event":"player_joined","at_ms":5000,"server":70,"session":1,"players":2}"#,
        r#"{"event":"player_joined","at_ms":6000,"server":70,"session":2,"players":1}"#,
        r#"{"event":"player_left","at_ms":65000,"server":70,"session":1}"#,
    );
    let trace = read(&text).expect("valid");
    assert_eq!(trace.setup.len(), 2);
    assert_eq!((trace.n_users, trace.n_servers), (1, 1));
    let lengths: Vec<u64> = trace
        .events
        .iter()
        .map(|(_, e)| match e {
            payperplay_sim::workload::WorkEvent::Session { length_ms, .. } => *length_ms,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(lengths, vec![60_000, 94_000]);
}

#[test]
fn observed_provisioning_latencies_drive_the_provider_model() {
    let dir = std::env::temp_dir().join(format!("ppp-trace-obs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n",
        r#"{"format":"payperplay-trace","version":1,"start_ms":1767571200000}"#,
        r#"{"event":"user_registered","at_ms":1767571200000,"user":1}"#,
        r#"{"event":"balance_topped_up","at_ms":1767571200000,"user":1,"amount_eur":10}"#,
        r#"{"event":"server_created","at_ms":1767571200000,"server":1,"owner":1,"ram_gb":4}"#,
        r#"{"event":"provisioning_observed","at_ms":1767571200000,"server_type":"cx","location":"fsn1","seconds":400}"#,
        r#"{"event":"player_joined","at_ms":1767571800000,"server":1,"session":1,"players":1}"#,
    );
    std::fs::write(dir.join("obs.jsonl"), trace).unwrap();
    let scenario_text = r#"
name = "observed"
duration = "2h"
[core.policy]
max_cloud_nodes = 2
[core.policy.reactive]
[core.catalog]
locations = ["fsn1"]
[[core.catalog.server_types]]
name = "cx"
ram_gb = 8
vcpu = 2
hourly_eur = 0.01
monthly_eur = 5
[fleet.cloud]
provisioning_seconds = { kind = "const", value = 30 }
[servers]
boot_seconds = { kind = "const", value = 40 }
[workload]
kind = "trace"
path = "obs.jsonl"
"#;
    std::fs::write(dir.join("observed.toml"), scenario_text).unwrap();
    let s = Scenario::load(&dir.join("observed.toml")).expect("loads");
    let outcome = simulate(s.clone());
    assert_eq!(outcome.starts.running, 1);
    // 400 s observed, not the 30 s of the distribution; then 2 s container + 40 s boot.
    assert!(
        (outcome.start_wait.max_s - 442.0).abs() < 1.5,
        "{:?}",
        outcome.start_wait
    );
    let mut off = s;
    off.fleet.cloud.use_trace_latencies = false;
    let outcome = simulate(off);
    assert!(
        (outcome.start_wait.max_s - 72.0).abs() < 1.5,
        "{:?}",
        outcome.start_wait
    );
    std::fs::remove_dir_all(&dir).ok();
}
