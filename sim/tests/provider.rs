//! The provider model: Hetzner's billing (checked against an independent oracle),
//! faults (sold out, rate limit, lost VMs) and what the run reports about them.

use std::path::Path;

use payperplay_core::{MS_PER_DAY, MS_PER_HOUR};
use payperplay_sim::{Scenario, Simulation, simulate};

const BASE: &str = r#"
name = "provider"
duration = "3days"
start_date = "2026-03-30"
slo_start_wait = "10m"
[core.policy]
evaluate_every = "30s"
min_cloud_nodes = 0
max_cloud_nodes = 40
[core.policy.reactive]
scale_down_empty_after = "5m"
scale_down_cooldown = "5m"
[core.catalog]
locations = ["fsn1", "nbg1"]
[[core.catalog.server_types]]
name = "small"
ram_gb = 8
vcpu = 2
hourly_eur = 0.0224
monthly_eur = 13.99
[[core.catalog.server_types]]
name = "big"
ram_gb = 16
vcpu = 4
hourly_eur = 0.04
monthly_eur = 24.99
[workload]
kind = "generator"
users = 200
initial_balance_eur = 100
sessions_per_hour = 30
daily_profile = [0.3, 0.2, 0.2, 0.2, 0.2, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.7, 1.9, 2.2, 2.4, 2.4, 2.0, 1.4, 0.8]
session_minutes = { kind = "weibull", shape = 0.5, scale = 40 }
tiers = [{ gb = 2, weight = 50 }, { gb = 4, weight = 50 }]
"#;

/// The base scenario with `cloud` lines added to its `[fleet.cloud]` table and `extra`
/// tables appended.
fn scenario_with(cloud: &str, extra: &str) -> Scenario {
    let text = format!(
        "{BASE}\n[fleet.cloud]\nprovisioning_seconds = {{ kind = \"lognormal\", median = 60, sigma = 0.3 }}\n{cloud}\n{extra}"
    );
    Scenario::parse(&text, Path::new("provider.toml")).expect("valid scenario")
}

fn scenario(extra: &str) -> Scenario {
    scenario_with("", extra)
}

/// Hetzner's rule written out independently: the price in effect (for the VM's type
/// and location) when its creation completed, every started hour (at least one), each
/// hour in the calendar month in which it starts, never more than the monthly cap per
/// calendar month; plus the primary IPv4 (0.0008 EUR an hour, 0.50 EUR a month) by the
/// same rule. Months are found by walking month lengths from 1970, hour by hour.
fn oracle_micros(prices: &[(u64, u64, u64)], created_ms: u64, until_ms: u64) -> u64 {
    let (_, hourly, monthly) = *prices.iter().rev().find(|(from, _, _)| *from <= created_ms).unwrap();
    if until_ms < created_ms {
        return 0;
    }
    let hours = ((until_ms - created_ms) as f64 / MS_PER_HOUR as f64).ceil().max(1.0) as u64;
    let mut per_month: std::collections::BTreeMap<(u64, u64), u64> = Default::default();
    for k in 0..hours {
        *per_month.entry(year_month(created_ms + k * MS_PER_HOUR)).or_default() += 1;
    }
    per_month
        .values()
        .map(|&n| (n * hourly).min(monthly) + (n * 800).min(500_000))
        .sum()
}

/// (year, month) of a UTC millisecond, by counting days through month lengths.
fn year_month(ms: u64) -> (u64, u64) {
    let mut days = ms / MS_PER_DAY;
    let mut year = 1970;
    loop {
        for month in 1..=12 {
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            let len = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month as usize - 1];
            if days < len {
                return (year, month);
            }
            days -= len;
        }
        year += 1;
    }
}

#[test]
fn the_oracle_finds_calendar_months() {
    assert_eq!(year_month(0), (1970, 1));
    let leap_day = payperplay_sim::scenario::parse_date("2028-02-29").unwrap() as u64 * MS_PER_DAY;
    assert_eq!(year_month(leap_day), (2028, 2));
    assert_eq!(year_month(leap_day + MS_PER_DAY), (2028, 3));
}

#[test]
fn cloud_cost_matches_the_billing_oracle_across_a_price_change() {
    // Prices rise on the second day; VMs created before keep the old price.
    let s = scenario(
        r#"
[[fleet.cloud.prices]]
from = "2026-03-31"
server_type = "small"
hourly_eur = 0.0296
monthly_eur = 18.49
"#,
    );
    let start_ms = s.start().ms();
    let change_ms = start_ms + MS_PER_DAY;
    let mut sim = Simulation::new(s);
    sim.record_vms();
    let result = sim.run_full();
    let vms = &result.vms;
    let small_before = vms
        .iter()
        .filter(|v| v.server_type == "small" && v.created_at.ms() < change_ms)
        .count();
    let small_after = vms
        .iter()
        .filter(|v| v.server_type == "small" && v.created_at.ms() >= change_ms)
        .count();
    assert!(small_before > 3 && small_after > 3, "{small_before} / {small_after}");
    let mut total = 0u64;
    for vm in vms {
        let prices: Vec<(u64, u64, u64)> = if vm.server_type == "small" {
            vec![(0, 22_400, 13_990_000), (change_ms, 29_600, 18_490_000)]
        } else {
            vec![(0, 40_000, 24_990_000)]
        };
        let expected = oracle_micros(&prices, vm.created_at.ms(), vm.until.ms());
        assert_eq!(vm.cost_micros, expected, "{vm:?}");
        total += expected;
    }
    assert!(
        vms.iter()
            .any(|v| (v.until.ms() - v.created_at.ms()) % MS_PER_HOUR != 0)
    );
    assert_eq!(result.outcome.cost.cloud_eur, total as f64 / 1e6);
}

#[test]
fn a_location_price_applies_only_to_vms_in_that_location() {
    let mut s = scenario(
        r#"
[[fleet.cloud.prices]]
from = "2026-01-01"
server_type = "small"
location = "fsn1"
hourly_eur = 0.05
monthly_eur = 30
"#,
    );
    s.core.policy.server_type = Some("small".into());
    let mut sim = Simulation::new(s);
    sim.record_vms();
    let result = sim.run_full();
    assert!(result.vms.iter().any(|v| v.location == "fsn1"));
    for vm in &result.vms {
        let prices = match (vm.server_type.as_str(), vm.location.as_str()) {
            ("small", "fsn1") => vec![(0, 50_000, 30_000_000)],
            ("small", _) => vec![(0, 22_400, 13_990_000)],
            _ => vec![(0, 40_000, 24_990_000)],
        };
        assert_eq!(
            vm.cost_micros,
            oracle_micros(&prices, vm.created_at.ms(), vm.until.ms()),
            "{vm:?}"
        );
    }
}

#[test]
fn a_vm_kept_across_calendar_months_bills_one_cap_per_month() {
    let mut s = scenario("");
    s.core.policy.min_cloud_nodes = 1;
    // Nothing is ever scaled down: the first VM lives the whole run (30 March to 2 May).
    s.core.policy.reactive.as_mut().unwrap().scale_down_empty_after_ms = 60 * MS_PER_DAY;
    s.duration_ms = 33 * MS_PER_DAY;
    s.workload.sessions_per_hour = 0.5;
    let mut sim = Simulation::new(s);
    sim.record_vms();
    let result = sim.run_full();
    let long: Vec<_> = result
        .vms
        .iter()
        .filter(|v| v.until.ms() - v.created_at.ms() > 30 * MS_PER_DAY)
        .collect();
    assert!(!long.is_empty());
    for vm in long {
        let prices = if vm.server_type == "small" {
            [(0, 22_400, 13_990_000)]
        } else {
            [(0, 40_000, 24_990_000)]
        };
        let expected = oracle_micros(&prices, vm.created_at.ms(), vm.until.ms());
        assert_eq!(vm.cost_micros, expected, "{vm:?}");
        // March's two days, April capped, May's two days: more than one 730-hour cap.
        assert!(expected > prices[0].2 + 500_000, "{expected}");
    }
}

#[test]
fn billing_starts_when_creation_completes_not_at_the_order() {
    // One VM is ordered at once but takes two days to create: the one-day run pays
    // nothing for it.
    let mut s = scenario_with("", "");
    s.fleet.cloud.provisioning_seconds = payperplay_sim::dist::Dist::Const { value: 2.0 * 86_400.0 };
    s.core.policy.min_cloud_nodes = 1;
    s.duration_ms = MS_PER_DAY;
    let outcome = simulate(s);
    assert!(outcome.nodes.provisioned >= 1, "{:?}", outcome.nodes);
    assert_eq!(outcome.cost.cloud_eur, 0.0);
}

#[test]
fn ipv4_and_volumes_count_in_the_cloud_cost_and_the_margin() {
    let plain = simulate(scenario(""));
    let mut s = scenario_with("volume_gb = 100\nipv4_hourly_eur = 0.01\nipv4_monthly_eur = 5", "");
    s.fleet.cloud.volume_micros_per_gb_month = 44_000;
    let with_extras = simulate(s);
    assert!(
        with_extras.cost.cloud_eur > plain.cost.cloud_eur + 1.0,
        "{} vs {}",
        with_extras.cost.cloud_eur,
        plain.cost.cloud_eur
    );
    assert!(with_extras.margin_eur < plain.margin_eur - 1.0);
}

fn every_start_ends(o: &payperplay_sim::Outcome) {
    assert_eq!(
        o.starts.requested,
        o.starts.running + o.starts.rejected + o.starts.cancelled + o.starts.pending_at_end,
        "{:?}",
        o.starts
    );
}

#[test]
fn lost_vms_lose_no_server() {
    let outcome = simulate(scenario_with("vm_loss_pct_per_day = 40", ""));
    assert!(outcome.incidents.vm_losses >= 3, "{:?}", outcome.incidents);
    assert!(outcome.incidents.servers_restarted >= 1, "{:?}", outcome.incidents);
    assert_eq!(outcome.nodes.lost, outcome.incidents.vm_losses);
    assert_eq!(outcome.starts.rejected, 0);
    assert_eq!(outcome.sessions.lost, 0);
    every_start_ends(&outcome);
}

#[test]
fn the_rate_limit_delays_orders_but_loses_nothing() {
    let outcome = simulate(scenario(
        "[fleet.cloud.rate_limit]\nrequests_per_hour = 30\nrefill_seconds = 120\npoll_seconds = 5\n",
    ));
    assert!(outcome.provider.rate_limited > 0, "{:?}", outcome.provider);
    assert_eq!(outcome.starts.rejected, 0);
    every_start_ends(&outcome);
    assert!(outcome.nodes.provisioned > 0);
    let free = simulate(scenario(""));
    assert_eq!(free.provider.rate_limited, 0);
}

#[test]
fn failed_orders_are_counted_and_retried() {
    let outcome = simulate(scenario_with("create_failure_pct = 30", ""));
    assert!(outcome.provider.failed > 0);
    assert_eq!(outcome.starts.rejected, 0);
    every_start_ends(&outcome);
}

#[test]
fn a_sold_out_type_forces_a_fallback_and_the_run_says_so() {
    let mut s = scenario_with(
        r#"[[fleet.cloud.sold_out]]
server_type = "small"
after = "0s"
duration = "3days"
"#,
        "",
    );
    s.core.policy.server_type = Some("small".into());
    let mut sim = Simulation::new(s);
    sim.record_vms();
    let result = sim.run_full();
    let o = &result.outcome;
    assert!(o.provider.sold_out >= 1, "{:?}", o.provider);
    assert!(o.provider.fallbacks >= 1, "{:?}", o.provider);
    assert!(!result.vms.is_empty());
    assert!(
        result.vms.iter().all(|v| v.server_type == "big"),
        "only the other type can be ordered"
    );
    assert_eq!(o.starts.rejected, 0);
    every_start_ends(o);
    let md = o.to_markdown(&Default::default());
    assert!(md.contains("fallbacks"), "{md}");
}

/// The core's commands of a run, exposed for comparison with production: a sold-out
/// type's refused order is followed by an order of the fallback type, and recording the
/// commands changes nothing in the run (the same outcome bytes).
#[test]
fn recorded_commands_show_the_fallback_order_and_change_nothing() {
    let sold_out = r#"[[fleet.cloud.sold_out]]
server_type = "small"
location = "fsn1"
after = "0s"
duration = "3days"
"#;
    let make = || {
        let mut s = scenario_with(sold_out, "");
        s.core.policy.server_type = Some("small".into());
        s
    };
    let plain = Simulation::new(make()).run_full();
    let mut sim = Simulation::new(make());
    sim.record_commands();
    let recorded = sim.run_full();
    assert_eq!(
        plain.outcome.to_json(),
        recorded.outcome.to_json(),
        "recording changed the run"
    );
    assert!(plain.commands.is_empty(), "commands are kept only when asked for");

    let scenario = make();
    let type_names: Vec<String> = scenario
        .core
        .catalog
        .server_types
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let catalog = (type_names, scenario.core.catalog.locations.clone());
    let orders: Vec<(u64, String, String)> = recorded
        .commands
        .iter()
        .filter_map(|issued| match &issued.command.kind {
            payperplay_core::CommandKind::ProvisionNode {
                server_type, location, ..
            } => Some((
                issued.at.ms(),
                catalog.0[server_type.0 as usize].clone(),
                catalog.1[location.0 as usize].clone(),
            )),
            _ => None,
        })
        .collect();
    assert!(orders.len() >= 2, "{orders:?}");
    assert_eq!(
        (orders[0].1.as_str(), orders[0].2.as_str()),
        ("small", "fsn1"),
        "{orders:?}"
    );
    // Refused as sold out: the next order is the fallback, the same location's
    // cheapest larger type, and the sold-out pair is not ordered again while it is
    // backed off.
    assert_eq!(
        (orders[1].1.as_str(), orders[1].2.as_str()),
        ("big", "fsn1"),
        "{orders:?}"
    );
    let backoff_ms = 30 * 60 * 1000;
    assert!(
        orders
            .iter()
            .skip(1)
            .all(|(at, t, l)| !(t == "small" && l == "fsn1") || *at >= orders[0].0 + backoff_ms),
        "{orders:?}"
    );
    let times: Vec<u64> = recorded.commands.iter().map(|issued| issued.at.ms()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "commands in issue order");
    let ids: Vec<u64> = recorded.commands.iter().map(|issued| issued.command.id.0).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "command ids ascend");
}

#[test]
fn requests_per_hour_alone_sets_the_sustained_rate() {
    // 30 requests an hour and nothing else: the bucket refills one request every
    // 120 s (it used to refill one a second whatever requests_per_hour said).
    let s = scenario("[fleet.cloud.rate_limit]\nrequests_per_hour = 30\npoll_seconds = 5\n");
    assert_eq!(s.fleet.cloud.rate_limit.refill_seconds(), 120.0);
    let outcome = simulate(s);
    assert!(outcome.provider.rate_limited > 0, "{:?}", outcome.provider);
    assert_eq!(outcome.starts.rejected, 0);
    every_start_ends(&outcome);
    // An explicit refill still wins.
    let fast = scenario("[fleet.cloud.rate_limit]\nrequests_per_hour = 30\nrefill_seconds = 1\n");
    assert_eq!(fast.fleet.cloud.rate_limit.refill_seconds(), 1.0);
}
