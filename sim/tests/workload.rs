//! Planner knobs of the generated workload: popularity skew, growth over months, and
//! the per-tier outcomes.

use std::path::Path;

use payperplay_core::MS_PER_DAY;
use payperplay_sim::workload::{Generator, WorkEvent};
use payperplay_sim::{Scenario, simulate};

const BASE: &str = r#"
name = "knobs"
duration = "60days"
seed = 5
[[fleet.dedicated]]
name = "ax"
count = 4
ram_gb = 128
monthly_eur = 99
[workload]
users = 400
initial_balance_eur = 1000
sessions_per_hour = 20
session_minutes = { kind = "exponential", mean = 30 }
tiers = [{ gb = 2, weight = 40 }, { gb = 4, weight = 40 }, { gb = 8, weight = 15 }, { gb = 16, weight = 5 }]
"#;

/// The base with `workload` lines in `[workload]`; a `[workload.growth]` table in
/// them goes to the end of the file.
fn scenario(workload: &str) -> Scenario {
    let (fields, tables) = workload.split_at(workload.find('[').unwrap_or(workload.len()));
    let text = BASE.replace("[workload]\n", &format!("[workload]\n{fields}\n")) + "\n" + tables;
    Scenario::parse(&text, Path::new("knobs.toml")).unwrap_or_else(|e| panic!("{e}"))
}

/// Every generated event after the set-up, with its day.
fn events(scenario: &Scenario) -> (Vec<WorkEvent>, Vec<(u64, WorkEvent)>) {
    let (setup, mut generator) = Generator::new(scenario);
    let start = scenario.start();
    let mut stream = Vec::new();
    while let Some((at, event)) = generator.next_event() {
        stream.push((at.since(start) / MS_PER_DAY, event));
    }
    (setup, stream)
}

fn sessions_per_server(stream: &[(u64, WorkEvent)], n_servers: usize) -> Vec<u64> {
    let mut counts = vec![0u64; n_servers];
    for (_, event) in stream {
        if let WorkEvent::Session { server, .. } = event {
            counts[*server as usize] += 1;
        }
    }
    counts
}

#[test]
fn zipf_popularity_concentrates_sessions_on_the_first_servers() {
    let uniform = scenario("");
    let (_, stream) = events(&uniform);
    let flat = sessions_per_server(&stream, 400);
    let total: u64 = flat.iter().sum();
    assert!(
        flat[0] < total / 100,
        "uniform: no server has 1% ({} of {total})",
        flat[0]
    );

    let skewed = scenario("popularity_zipf = 1.0");
    let (_, stream) = events(&skewed);
    let counts = sessions_per_server(&stream, 400);
    let total: u64 = counts.iter().sum();
    // 1 / H(400) = 15.2% for the first, half of it for the second.
    let harmonic: f64 = (1..=400).map(|k| 1.0 / k as f64).sum();
    let share = counts[0] as f64 / total as f64;
    assert!((share - 1.0 / harmonic).abs() < 0.01, "first server's share {share}");
    let second = counts[1] as f64 / total as f64;
    assert!((second - 0.5 / harmonic).abs() < 0.01, "second server's share {second}");
    assert!(counts[399] < counts[0] / 50);
}

#[test]
fn growth_adds_users_and_servers_over_the_run_and_the_rate_follows() {
    // 200 new users a month on 400: after 60 days 800 users, twice the servers.
    let s = scenario("[workload.growth]\nusers_per_month = 200");
    let (setup, stream) = events(&s);
    let initial_servers = setup
        .iter()
        .filter(|e| matches!(e, WorkEvent::CreateServer { .. }))
        .count();
    assert_eq!(initial_servers, 400);
    let created: Vec<(u64, u32)> = stream
        .iter()
        .filter_map(|(day, e)| match e {
            WorkEvent::CreateServer { server, .. } => Some((*day, *server)),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 400, "200 users a month for two months");
    assert!(
        created.iter().all(|&(_, server)| server >= 400),
        "new ids after the first"
    );
    assert!(created.iter().filter(|&&(day, _)| day < 30).count().abs_diff(200) <= 1);
    // No session goes to a server before it exists.
    let mut exists = vec![false; 800];
    (0..400).for_each(|i| exists[i] = true);
    for (_, event) in &stream {
        match event {
            WorkEvent::CreateServer { server, .. } => exists[*server as usize] = true,
            WorkEvent::Session { server, .. } => assert!(exists[*server as usize], "server {server}"),
            _ => {}
        }
    }
    // The rate grows with the servers: the last week about 1.9x the first.
    let in_days = |from: u64, to: u64| {
        stream
            .iter()
            .filter(|(day, e)| (from..to).contains(day) && matches!(e, WorkEvent::Session { .. }))
            .count() as f64
    };
    let ratio = in_days(53, 60) / in_days(0, 7);
    assert!((1.75..2.05).contains(&ratio), "last week / first week {ratio}");
    // The simulator runs it: servers created mid-run start and bill.
    let outcome = simulate(s);
    assert_eq!(outcome.by_tier.iter().map(|t| t.servers).sum::<u64>(), 800);
    assert_eq!(outcome.starts.rejected, 0);
}

#[test]
fn without_the_knobs_the_workload_is_drawn_as_before() {
    // popularity_zipf = 0 and no growth take the old code path: the same draws.
    let a = events(&scenario(""));
    let b = events(&scenario("popularity_zipf = 0\n[workload.growth]\nusers_per_month = 0"));
    assert_eq!(a, b);
}

#[test]
fn per_tier_outcomes_add_up_to_the_totals() {
    let outcome = simulate(scenario(""));
    let tiers = &outcome.by_tier;
    assert_eq!(tiers.iter().map(|t| t.gb).collect::<Vec<_>>(), [2, 4, 8, 16, 32]);
    assert_eq!(tiers.iter().map(|t| t.servers).sum::<u64>(), 400);
    assert_eq!(tiers[4].servers, 0, "no 32 GB servers in the mix");
    let sum = |f: fn(&payperplay_sim::outcome::TierOutcome) -> u64| tiers.iter().map(f).sum::<u64>();
    assert_eq!(sum(|t| t.starts_requested), outcome.starts.requested);
    assert_eq!(sum(|t| t.sessions), outcome.sessions.total);
    assert_eq!(sum(|t| t.sessions_abandoned), outcome.sessions.abandoned);
    assert_eq!(sum(|t| t.start_wait.count), outcome.start_wait.count);
    assert_eq!(sum(|t| t.starts_censored), outcome.starts.censored);
    let revenue: f64 = tiers.iter().map(|t| t.revenue_ram_eur).sum();
    assert!(
        (revenue - outcome.revenue.ram_eur).abs() < 1e-3,
        "{revenue} vs {}",
        outcome.revenue.ram_eur
    );
    // Bigger tiers earn more per server (same sessions per server on average).
    let per_server = |t: &payperplay_sim::outcome::TierOutcome| t.revenue_ram_eur / t.servers as f64;
    assert!(per_server(&tiers[3]) > per_server(&tiers[0]));
    let md = outcome.to_markdown(&Default::default());
    assert!(md.contains("## By tier") && md.contains("| 16 GB |"), "{md}");
}
