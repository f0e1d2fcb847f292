//! `payperplay-sim sweep`: thread-count independence, the Pareto front and the
//! recommendation, errors naming the parameter, and a small real sweep.

use std::path::Path;

use payperplay_sim::Outcome;
use payperplay_sim::sweep::{self, ParamValue, SweepResult};

mod common;
use common::{bin, scenario_path as scenario, temp_dir};

const FILES: [&str; 5] = [
    "results.json",
    "results.csv",
    "pareto.md",
    "pareto.svg",
    "recommended.toml",
];

/// A short cloud sweep: 2 days of the weekday scenario, a 3 x 2 grid.
fn sweep_cli(out: &Path, jobs: &str) -> std::process::Output {
    bin()
        .args([
            "sweep",
            "--quiet",
            "--jobs",
            jobs,
            "--param",
            "duration=2days",
            "--param",
            "policy.reactive.scale_up_free_mib_below=0..16384:8192",
            "--param",
            "core.lifecycle.idle_sleep_after=5m,20m",
            "--out",
        ])
        .arg(out)
        .arg(scenario("weekday-cloud-burst.toml"))
        .output()
        .unwrap()
}

#[test]
fn one_and_two_threads_write_identical_bytes() {
    let (a, b) = (temp_dir("jobs1"), temp_dir("jobs2"));
    for (dir, jobs) in [(&a, "1"), (&b, "2")] {
        let output = sweep_cli(dir, jobs);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    for file in FILES {
        let (x, y) = (
            std::fs::read(a.join(file)).unwrap(),
            std::fs::read(b.join(file)).unwrap(),
        );
        assert!(!x.is_empty(), "{file} is empty");
        assert!(x == y, "{file} differs between 1 and 2 threads");
    }
}

#[test]
fn a_small_real_sweep_writes_every_file() {
    let out = temp_dir("real");
    let output = sweep_cli(&out, "2");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("6 configurations"), "{stdout}");
    assert!(stdout.contains("recommended"), "{stdout}");

    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    // The grid, first parameter slowest; `policy.` completed to `core.policy.`.
    let key = "core.policy.reactive.scale_up_free_mib_below";
    let grid: Vec<(i64, String)> = results
        .iter()
        .map(|r| {
            (
                r["params"][key].as_i64().unwrap(),
                r["params"]["core.lifecycle.idle_sleep_after"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(grid[0], (0, "5m".to_string()));
    assert_eq!(grid[1], (0, "20m".to_string()));
    assert_eq!(grid[5], (16384, "20m".to_string()));
    for r in results {
        assert!((r["metrics"]["simulated_hours"].as_f64().unwrap() - 48.0).abs() < 1e-9);
        assert!(r["metrics"]["cost_total_eur"].as_f64().unwrap() > 0.0);
    }
    // Sleeping sooner holds less RAM: the parameters reach the simulation.
    let held = |i: usize| results[i]["metrics"]["servers_holding_ram_mean"].as_f64().unwrap();
    assert!(held(0) < held(1), "{} vs {}", held(0), held(1));

    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 7);
    assert!(lines[0].starts_with("index,duration,core.policy.reactive.scale_up_free_mib_below,"));
    assert!(lines[0].contains("cost_total_eur") && lines[0].contains("start_wait_p95_s"));
    assert!(lines[0].contains("capacity_wait_p95_s") && lines[0].contains("slo_misses"));
    assert!(lines[1].starts_with("0,2days,0,5m,"), "{}", lines[1]);

    let front: Vec<u64> = json["pareto_front"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(!front.is_empty());
    let md = std::fs::read_to_string(out.join("pareto.md")).unwrap();
    assert!(md.contains("Pareto front"));
    assert_eq!(
        md.lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| #"))
            .count(),
        front.len()
    );

    let recommended = json["recommended"].as_u64().expect("a configuration meets [expect]") as usize;
    assert!(front.contains(&(recommended as u64)));
    let snippet = std::fs::read_to_string(out.join("recommended.toml")).unwrap();
    assert!(
        snippet.contains("# Rule: the cheapest configuration on the Pareto front"),
        "{snippet}"
    );
    let parsed: toml::Table = toml::from_str(&snippet).unwrap();
    assert_eq!(
        parsed["core"]["policy"]["reactive"]["scale_up_free_mib_below"].as_integer(),
        results[recommended]["params"][key].as_i64()
    );
    assert_eq!(parsed["duration"].as_str(), Some("2days"));

    let svg = std::fs::read_to_string(out.join("pareto.svg")).unwrap();
    assert!(svg.starts_with("<svg"));
    assert!(svg.contains("total cost (EUR)") && svg.contains("p95 start wait (s)"));
    assert!(svg.matches("<circle").count() >= results.len() + front.len());
}

#[test]
fn a_bad_param_names_its_path() {
    let cases = [
        (
            "core.policy.reactive.scale_up_free_mib_belwo=1,2",
            "scale_up_free_mib_belwo",
        ),
        ("workload.users=many", "workload.users"),
        ("duration.days=3", "duration is a string"),
        ("fleet.dedicated.5.count=2", "fleet.dedicated has 2 entries"),
        ("policy.reactive.scale_up_cooldown=1..5", "has no step"),
        ("workload.users", "expected PATH=VALUES"),
    ];
    for (param, expected) in cases {
        let output = bin()
            .args(["sweep", "--quiet", "--out"])
            .arg(temp_dir("bad"))
            .args(["--param", param])
            .arg(scenario("small-dedicated.toml"))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{param}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{param}: {stderr}");
    }
    // A scenario error says which configuration and carries the field.
    let text = std::fs::read_to_string(scenario("small-dedicated.toml")).unwrap();
    let params = [sweep::parse_param("workload.users=10,0").unwrap()];
    let error = sweep::configurations(&text, Path::new("small.toml"), &params, None, 0).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("configuration 1 (workload.users=0): small.toml:"),
        "{message}"
    );
    assert!(message.contains("workload.users"), "{message}");
}

#[test]
fn values_keep_their_types_and_random_search_is_seeded() {
    let text = std::fs::read_to_string(scenario("weekday-cloud-burst.toml")).unwrap();
    let params = [
        sweep::parse_param("core.policy.reactive.scale_up_free_mib_below=1024..8192:1024").unwrap(),
        sweep::parse_param("policy.reactive.scale_down_empty_after=5m,10m,20m").unwrap(),
        sweep::parse_param("slo_start_wait=1m,2m").unwrap(),
    ];
    let path = Path::new("weekday.toml");
    let all = sweep::configurations(&text, path, &params, None, 0).unwrap();
    assert_eq!(all.len(), 8 * 3 * 2);
    let a = sweep::configurations(&text, path, &params, Some(10), 3).unwrap();
    let b = sweep::configurations(&text, path, &params, Some(10), 3).unwrap();
    let labels = |c: &[sweep::Configuration]| c.iter().map(|c| c.label()).collect::<Vec<_>>();
    assert_eq!(a.len(), 10);
    assert_eq!(labels(&a), labels(&b));
    assert_ne!(
        labels(&a),
        labels(&sweep::configurations(&text, path, &params, Some(10), 4).unwrap())
    );
    let c = &a[0];
    let reactive = c.scenario.core.policy.reactive.as_ref().unwrap();
    let ParamValue::Int(free) = c.assignments[0].1 else {
        panic!("an integer range stays integer")
    };
    assert_eq!(reactive.scale_up_free_mib_below as i64, free);
    let ParamValue::Str(slo) = &c.assignments[2].1 else {
        panic!()
    };
    assert_eq!(c.scenario.slo_start_wait_ms, if slo == "1m" { 60_000 } else { 120_000 });
}

/// An outcome with the three objectives set.
fn outcome(cost: f64, p95: f64, misses: u64) -> Outcome {
    let mut o = Outcome::default();
    o.cost.total_eur = cost;
    o.start_wait.p95_s = p95;
    o.slo.misses = misses;
    o
}

#[test]
fn the_front_is_the_undominated_set_and_the_recommendation_meets_expect() {
    let points = vec![
        vec![10.0, 50.0, 0.0], // 0: cheap, slow
        vec![20.0, 20.0, 0.0], // 1: middle
        vec![30.0, 10.0, 0.0], // 2: dear, fast
        vec![25.0, 25.0, 0.0], // 3: dominated by 1
        vec![20.0, 20.0, 5.0], // 4: dominated by 1 (more misses)
        vec![40.0, 60.0, 9.0], // 5: dominated by everything
        vec![35.0, 30.0, 0.0], // 6: dominated by 1 and 2
        vec![20.0, 20.0, 0.0], // 7: equal to 1: kept
        vec![5.0, 90.0, 3.0],  // 8: the cheapest: kept despite its misses
        vec![30.0, 10.0, 1.0], // 9: dominated by 2 in misses only
    ];
    assert_eq!(sweep::pareto_front(&points), vec![0, 1, 2, 7, 8]);
    assert!(sweep::dominates(&points[1], &points[3]));
    assert!(!sweep::dominates(&points[1], &points[7]));
    assert!(!sweep::dominates(&points[0], &points[8]) && !sweep::dominates(&points[8], &points[0]));
    assert!(sweep::pareto_front(&[]).is_empty());

    // Same set through SweepResult, with [expect] start_wait_p95_s <= 30: the cheapest
    // front points (8, 0) fail it, so 1 (equal to 7, lower index) is recommended.
    let text = std::fs::read_to_string(scenario("small-dedicated.toml"))
        .unwrap()
        .replace("start_wait_p95_s = { max = 65 }", "start_wait_p95_s = { max = 30 }")
        .replace("margin_eur = { min = -100 }", "");
    let configs = ten_seeds(&text);
    let outcomes = points.iter().map(|p| outcome(p[0], p[1], p[2] as u64)).collect();
    let result = SweepResult::new(configs, outcomes);
    assert_eq!(result.front, vec![0, 1, 2, 7, 8]);
    assert_eq!(result.recommended, Some(1));
    assert!(result.failures[0][0].contains("start_wait_p95_s"));
    let snippet = result.to_recommended_toml(Path::new("small.toml"));
    assert!(snippet.contains("seed = 1\n"), "{snippet}");
    let md = result.to_pareto_markdown(Path::new("small.toml"));
    assert!(md.contains("| 1 **(recommended)** |"), "{md}");
    // The front in the markdown is cheapest first.
    let order: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| #"))
        .map(|l| l.split('|').nth(1).unwrap().trim())
        .collect();
    assert_eq!(order, vec!["8", "0", "1 **(recommended)**", "7", "2"]);

    // Nothing meets the bounds: no recommendation, and the snippet says so.
    let strict = text.replace("start_wait_p95_s = { max = 30 }", "start_wait_p95_s = { max = 1 }");
    let configs = ten_seeds(&strict);
    let outcomes = points.iter().map(|p| outcome(p[0], p[1], p[2] as u64)).collect();
    let result = SweepResult::new(configs, outcomes);
    assert_eq!(result.recommended, None);
    assert!(
        result
            .to_recommended_toml(Path::new("small.toml"))
            .contains("nothing to recommend")
    );
}

/// The configurations of scenario text `text` with seeds 0 to 9.
fn ten_seeds(text: &str) -> Vec<sweep::Configuration> {
    sweep::configurations(
        text,
        Path::new("small.toml"),
        &[sweep::parse_param("seed=0..9:1").unwrap()],
        None,
        0,
    )
    .unwrap()
}
