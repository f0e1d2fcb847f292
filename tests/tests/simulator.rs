//! The simulator end to end: determinism, the markdown snapshot, and the queueing
//! theory it must reproduce.

use std::path::Path;

use payperplay_sim::{Scenario, simulate};
use payperplay_tests::scenario_path;

fn load(name: &str) -> Scenario {
    Scenario::load(&scenario_path(name)).expect("scenario loads")
}

#[test]
fn the_same_seed_gives_the_same_bytes_and_another_seed_does_not() {
    let scenario = load("weekday-cloud-burst.toml");
    let first = simulate(scenario.clone());
    let second = simulate(scenario.clone());
    assert_eq!(first.to_json(), second.to_json());
    assert_eq!(
        first.to_markdown(&scenario.expect),
        second.to_markdown(&scenario.expect)
    );
    let mut other = scenario.clone();
    other.seed += 1;
    let third = simulate(other);
    assert_ne!(first.to_json(), third.to_json());
    assert_ne!(first.start_wait, third.start_wait);
}

#[test]
fn the_small_scenario_summary_matches_its_snapshot() {
    let scenario = load("small-dedicated.toml");
    let outcome = simulate(scenario.clone());
    assert!(
        outcome.check(&scenario.expect).is_empty(),
        "{:?}",
        outcome.check(&scenario.expect)
    );
    insta::assert_snapshot!("small_dedicated_summary", outcome.to_markdown(&scenario.expect));
}

/// A fleet of `slots` dedicated nodes of 4 GiB each (no reserve), one 4 GiB tier, no
/// boot, stop or idle delay: each slot is one server of an M/·/c queue.
fn queue_scenario(slots: u32, sessions_per_hour: f64, session_minutes: &str, days: u32, seed: u64) -> Scenario {
    queue_scenario_with_patience(
        slots,
        sessions_per_hour,
        session_minutes,
        "patience = false",
        days,
        seed,
    )
}

/// The same queue with players' patience given by `patience` (TOML of `[workload]`).
fn queue_scenario_with_patience(
    slots: u32,
    sessions_per_hour: f64,
    session_minutes: &str,
    patience: &str,
    days: u32,
    seed: u64,
) -> Scenario {
    let text = format!(
        r#"
name = "queueing"
seed = {seed}
duration = "{days}days"
warmup = "200h"
slo_start_wait = "1h"

[core]
tiers_gb = [4]

[core.reserve]
small_node_max_mib = 0
small_fixed_mib = 0
medium_node_max_mib = 0
medium_pct = 0
large_pct = 0
system_extra_mib = 0

[core.lifecycle]
idle_sleep_after = "0s"
min_run = "0s"

[[fleet.dedicated]]
name = "slot"
count = {slots}
ram_gb = 4
monthly_eur = 1.0

[servers]
container_start_seconds = {{ kind = "const", value = 0 }}
boot_seconds = {{ kind = "const", value = 0 }}
stop_seconds = {{ kind = "const", value = 0 }}

[workload]
kind = "generator"
users = 1000
servers_per_user = 100
initial_balance_eur = 1000000.0
sessions_per_hour = {sessions_per_hour}
session_minutes = {session_minutes}
tiers = [{{ gb = 4, weight = 1 }}]
{patience}
"#
    );
    Scenario::parse(&text, Path::new("queueing.toml")).expect("queueing scenario is valid")
}

/// Erlang C: the probability that an arrival waits in M/M/c with offered load `a`.
fn erlang_c(c: u32, a: f64) -> f64 {
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 1..c {
        term *= a / k as f64;
        sum += term;
    }
    let last = term * a / c as f64 * c as f64 / (c as f64 - a);
    last / (sum + last)
}

#[test]
fn an_mmc_fleet_reproduces_erlang_c() {
    // c = 10 slots, λ = 7.5 per hour, mean service 1 hour: ρ = 0.75.
    let (c, lambda, mu) = (10, 7.5, 1.0);
    let outcome = simulate(queue_scenario(
        c,
        lambda,
        r#"{ kind = "exponential", mean = 60 }"#,
        5600,
        11,
    ));
    let p_wait = erlang_c(c, lambda / mu);
    let w_q_s = p_wait / (c as f64 * mu - lambda) * 3600.0;
    let n = outcome.start_wait.count as f64;
    assert!(n > 900_000.0, "{n} starts: too few for a 3% comparison");
    let p_wait_sim = outcome.queue.requests_queued as f64 / n;
    let w_q_sim = outcome.capacity_wait.mean_s;
    println!("P(wait): theory {p_wait:.5}, simulated {p_wait_sim:.5}");
    println!("W_q: theory {w_q_s:.1} s, simulated {w_q_sim:.1} s");
    assert!(
        (p_wait_sim - p_wait).abs() / p_wait < 0.03,
        "P(wait) {p_wait_sim} vs Erlang C {p_wait}"
    );
    assert!((w_q_sim - w_q_s).abs() / w_q_s < 0.03, "W_q {w_q_sim} s vs {w_q_s} s");
    assert_eq!(outcome.starts.rejected, 0);
}

#[test]
fn an_mginf_fleet_has_a_poisson_mean_of_busy_servers() {
    // Capacity never binds: the number of running servers is Poisson with mean λ·E[S],
    // whatever the session-length law (here a lognormal, median 30 min, σ = 1).
    let lambda_per_hour = 50.0;
    let mean_s_hours = 30.0 * (0.5f64).exp() / 60.0;
    let outcome = simulate(queue_scenario(
        400,
        lambda_per_hour,
        r#"{ kind = "lognormal", median = 30, sigma = 1.0 }"#,
        180,
        5,
    ));
    let expected = lambda_per_hour * mean_s_hours;
    let simulated = outcome.servers.holding_ram_mean;
    println!("mean busy servers: theory {expected:.3}, simulated {simulated:.3}");
    assert!(
        (simulated - expected).abs() / expected < 0.02,
        "{simulated} vs λ·E[S] = {expected}"
    );
    assert_eq!(outcome.queue.requests_queued, 0, "M/G/∞ never queues");
}

/// Erlang A (M/M/c+M): the probability that an arrival abandons, from the
/// birth-death chain with birth rate `lambda` and death rate `min(n, c)·mu +
/// max(n - c, 0)·theta` in state `n` (truncated where the terms vanish).
fn erlang_a_abandonment(c: u32, lambda: f64, mu: f64, theta: f64) -> f64 {
    let (mut term, mut sum, mut abandon_rate) = (1.0f64, 1.0f64, 0.0f64);
    for n in 1..2_000u32 {
        let death = n.min(c) as f64 * mu + n.saturating_sub(c) as f64 * theta;
        term *= lambda / death;
        sum += term;
        abandon_rate += n.saturating_sub(c) as f64 * theta * term;
    }
    abandon_rate / sum / lambda
}

#[test]
fn an_mmc_fleet_with_impatient_players_reproduces_erlang_a() {
    // c = 10 slots, λ = 9 per hour, mean service 1 hour, exponential patience of mean
    // 30 min (θ = 2 per hour): about one arrival in ten gives up.
    let (c, lambda, mu, theta) = (10, 9.0, 1.0, 2.0);
    let outcome = simulate(queue_scenario_with_patience(
        c,
        lambda,
        r#"{ kind = "exponential", mean = 60 }"#,
        r#"patience_seconds = { kind = "exponential", mean = 1800 }"#,
        2400,
        7,
    ));
    let theory = erlang_a_abandonment(c, lambda, mu, theta);
    let n = outcome.sessions.total as f64;
    assert!(n > 400_000.0, "{n} sessions: too few for a 3% comparison");
    let simulated = outcome.sessions.abandoned as f64 / n;
    println!("P(abandon): theory {theory:.5}, simulated {simulated:.5}");
    assert!(
        (simulated - theory).abs() / theory < 0.03,
        "P(abandon) {simulated} vs Erlang A {theory}"
    );
    // Every abandoned session withdrew its queued start (but for a few around the
    // warm-up's edge); those waits are counted.
    assert!(outcome.starts.cancelled.abs_diff(outcome.sessions.abandoned) <= 10);
    assert!(outcome.starts.censored + 10 >= outcome.sessions.abandoned);
}

#[test]
fn erlang_a_without_abandonment_is_erlang_c() {
    // θ = μ: the chain is M/M/∞'s, so abandonment is the excess over c of a Poisson
    // (a = 2, c = 1: E[(N - 1)+] = a - 1 + e^-a).
    let a: f64 = 2.0;
    let expected = (a - 1.0 + (-a).exp()) / a;
    assert!((erlang_a_abandonment(1, a, 1.0, 1.0) - expected).abs() < 1e-12);
}

/// Players who wait hours give up: a fleet that makes them wait loses their sessions
/// and their revenue, so three dedicated machines no longer beat an autoscaled fleet on
/// margin (before patience they did, with a median start wait of 1.9 h).
#[test]
fn an_undersized_dedicated_fleet_loses_impatient_players_and_its_margin() {
    let dedicated = load("dedicated-only.toml");
    let mut autoscaled = load("weekday-tuned.toml");
    autoscaled.duration_ms = dedicated.duration_ms;
    autoscaled.seed = dedicated.seed;
    let dedicated = simulate(dedicated);
    let autoscaled = simulate(autoscaled);
    assert_eq!(dedicated.sessions.total, autoscaled.sessions.total, "the same workload");
    assert!(
        dedicated.margin_eur < autoscaled.margin_eur,
        "dedicated-only margin {} vs autoscaled {}",
        dedicated.margin_eur,
        autoscaled.margin_eur
    );
    assert!(dedicated.sessions.abandoned_pct > 10.0 * autoscaled.sessions.abandoned_pct.max(0.1));
    assert!(dedicated.sessions.abandoned_revenue_eur > 50.0);
    assert!(
        dedicated.start_wait.p50_s < 600.0,
        "nobody waits hours: {}",
        dedicated.start_wait.p50_s
    );
}

#[test]
fn erlang_c_matches_a_textbook_value() {
    // c = 2, a = 1: C = 1/3.
    assert!((erlang_c(2, 1.0) - 1.0 / 3.0).abs() < 1e-12);
}

const MINIMAL_SCENARIO: &str = r#"
name = "minimal"
duration = "1h"

[[fleet.dedicated]]
name = "box"
ram_gb = 16
monthly_eur = 1.0

[workload]
users = 1
initial_balance_eur = 1.0
sessions_per_hour = 1
session_minutes = { kind = "const", value = 1 }
tiers = [{ gb = 4, weight = 1 }]
"#;

#[test]
fn the_workload_kind_defaults_to_the_generator_as_documented() {
    let scenario = Scenario::parse(MINIMAL_SCENARIO, Path::new("minimal.toml")).expect("kind may be left out");
    assert_eq!(
        scenario.workload.kind,
        payperplay_sim::scenario::WorkloadKind::Generator
    );
}

#[test]
fn a_start_date_the_month_does_not_have_is_an_error_naming_the_field() {
    let text = format!("start_date = \"2026-02-31\"\n{MINIMAL_SCENARIO}");
    let error = Scenario::parse(&text, Path::new("minimal.toml")).expect_err("31 February is no date");
    assert!(error.to_string().contains("start_date"), "{error}");
}
