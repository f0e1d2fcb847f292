//! A sold-out window, production against the simulator (issue 15): the real
//! `payperplay serve` runs a burst of starts against the fake Hetzner API, where the
//! preferred VM type and the next one are sold out in the first location, with VMs in
//! front of the test sshd and the real test engine; then the simulator replays the
//! same workload (serve's journal exported as a trace, with serve's core configuration
//! and the same sold-out window) and the two must have ordered the same VMs.
//!
//! What is compared: the sequence of `ProvisionNode` commands, in issue order, as
//! (VM type, location) names: production's from its `commands` table, the simulator's
//! from `RunResult::commands`. Also: the orders production saw refused are exactly the
//! ones in the sold-out window, and the simulator counted as many sold-out refusals.
//! Not compared: times (production's refusal comes back in milliseconds, the model's
//! after 500 ms; VM boot times are drawn from production's observed ones), node and
//! command ids. So that the difference in refusal time cannot change what is ordered,
//! each start is sent once the previous one runs (its orders settled).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use payperplay_core::{Command, CommandKind, CoreConfig, Timestamp};
use payperplay_hetzner::fake::SoldOutWindow;
use payperplay_prod::clock::ManualClock;
use payperplay_prod::config::Config;
use payperplay_prod::store::Store;
use payperplay_prod::trace_export::TraceExport;
use payperplay_sim::trace::Trace;
use payperplay_sim::{Scenario, Simulation};
use sqlx::PgPool;
use tokio::time::Instant;

use crate::cloud::{sshd_endpoint, start_fake_hetzner};
use crate::common::{TestApp, test_config, test_ssh_port};
use crate::crash::{http, serve_config_toml, spawn_serve};

/// Servers started, one after another; each needs a VM of its own (2 GiB on 4 GiB).
const STARTS: usize = 3;
const RUNNING_WAIT_MS_MAX: u64 = 45_000;

/// Two VM types, two locations; no VM is deleted during the test (scale-down after an
/// hour), so every order is for the burst.
const CORE: &str = r#"
[core.catalog]
locations = ["fsn1", "nbg1"]
expected_provision = "5s"

[[core.catalog.server_types]]
name = "cpx22"
ram_gb = 4
vcpu = 2
hourly_eur = 0.0128
monthly_eur = 7.99

[[core.catalog.server_types]]
name = "cpx32"
ram_gb = 8
vcpu = 4
hourly_eur = 0.0224
monthly_eur = 13.99

[core.policy]
evaluate_every = "1s"

[core.policy.reactive]
scale_up_cooldown = "1s"
scale_down_empty_after = "1h"
scale_down_cooldown = "1h"
"#;

/// The sold-out window, for the fake and for the model: both types in fsn1, for the
/// whole run.
const SOLD_OUT: [(&str, &str); 2] = [("cpx22", "fsn1"), ("cpx32", "fsn1")];

/// The simulator's side of the world, with serve's `[core.*]` tables; the workload is
/// production's journal, and the core configuration is set to the one serve parsed.
fn scenario_text() -> String {
    // Top-level keys first: serve's tables end in `[core.policy.reactive]`.
    let mut text = String::from(
        r#"
name = "sold-out-against-production"
duration = "1h"
slo_start_wait = "1m"
[servers]
container_start_seconds = { kind = "const", value = 0.5 }
boot_seconds = { kind = "const", value = 1 }
stop_seconds = { kind = "const", value = 1 }
[fleet.cloud]
use_trace_latencies = true
provisioning_seconds = { kind = "const", value = 2 }
# A placeholder: the workload is replaced by production's trace.
[workload]
users = 1
sessions_per_hour = 1
tiers = [{ gb = 2, weight = 1 }]
"#,
    );
    text.push_str(CORE);
    for (server_type, location) in SOLD_OUT {
        text.push_str(&format!(
            "[[fleet.cloud.sold_out]]\nserver_type = {server_type:?}\nlocation = {location:?}\nafter = \"0s\"\n\
             duration = \"1day\"\n"
        ));
    }
    text
}

/// A `ProvisionNode` as (VM type, location) names.
fn order_of(command: &Command, config: &CoreConfig) -> Option<(String, String)> {
    match &command.kind {
        CommandKind::ProvisionNode {
            server_type, location, ..
        } => Some((
            config.catalog.server_types[server_type.0 as usize].name.clone(),
            config.catalog.locations[location.0 as usize].clone(),
        )),
        _ => None,
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_sold_out_window_makes_production_fall_back_as_the_simulator_does(pool: PgPool) {
    // Users and servers through the in-process app (no nodes), then serve.
    let mut config = test_config();
    config.fleet.dedicated_nodes.clear();
    let platform = config.containers.platform.clone();
    let secret_key = format!("1:{}", {
        use secrecy::ExposeSecret;
        config.secrets.keys[0].key_hex.expose_secret().to_string()
    });
    let drivers = crate::common::real_drivers(&config, &pool).await;
    #[allow(clippy::disallowed_methods)]
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let app = TestApp::start_full(pool.clone(), config, ManualClock::new(Timestamp(now_ms)), drivers).await;
    let (admin, _) = app.admin().await;
    let (user, user_id) = app.user("soldout@example.com").await;
    app.credit(&admin, user_id, 1_000_000_000).await;
    let mut servers = Vec::new();
    for n in 0..STARTS {
        servers.push(app.create_server(&user, &format!("sold-out-{n}"), 2048).await);
    }
    app.stop().await;

    let endpoints = (0..STARTS).map(|_| sshd_endpoint(test_ssh_port())).collect();
    let api = start_fake_hetzner(endpoints, |fake| {
        fake.sold_out = SOLD_OUT
            .iter()
            .map(|(server_type, location)| SoldOutWindow {
                server_type: server_type.to_string(),
                location: location.to_string(),
                from_s: 0,
                until_s: None,
            })
            .collect();
    })
    .await;
    let dir = std::env::temp_dir().join(format!("{platform}-sold-out"));
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("payperplay.toml");
    let serve_toml = serve_config_toml(&api, &platform, CORE);
    std::fs::write(&config_path, &serve_toml).unwrap();
    let core_config = Config::from_toml(&serve_toml).expect("serve's configuration").core;
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL: source scripts/start-services.sh");
    let database_url = format!("{}/{database}", base.rsplit_once('/').unwrap().0);

    let mut serve = spawn_serve(&config_path, &database_url, &secret_key).await;
    for id in &servers {
        let answer = http(
            serve.port,
            "POST",
            &format!("/v1/servers/{id}/start"),
            Some(&user),
            None,
        )
        .await;
        assert!(matches!(answer, Some((202, _))), "start of {id}: {answer:?}");
        let started = Instant::now();
        loop {
            let state = http(
                serve.port,
                "GET",
                &format!("/v1/servers/{id}/status"),
                Some(&user),
                None,
            )
            .await
            .map(|(_, status)| status["state"].as_str().unwrap_or_default().to_string());
            if state.as_deref() == Some("running") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_millis(RUNNING_WAIT_MS_MAX),
                "server {id} never ran ({state:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    serve.child.start_kill().expect("SIGKILL");
    let _ = serve.child.wait().await;

    // Production's orders, in issue order, with what became of them.
    let rows: Vec<(serde_json::Value, String, Option<String>)> =
        sqlx::query_as("SELECT command, status, error FROM commands WHERE kind = 'provision_node' ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut production = Vec::new();
    for (command, status, error) in rows {
        let command: Command = serde_json::from_value(command).expect("a stored command");
        let order = order_of(&command, &core_config).expect("a provision_node row");
        let sold_out = SOLD_OUT.contains(&(order.0.as_str(), order.1.as_str()));
        if sold_out {
            let error = error.unwrap_or_default();
            assert_eq!(status, "failed", "{order:?} is sold out: {error}");
            assert!(
                error.contains("sold out"),
                "{order:?} refused for another reason: {error}"
            );
        } else {
            assert_eq!(status, "succeeded", "{order:?}: {error:?}");
        }
        production.push(order);
    }
    let expected: Vec<(String, String)> = [
        ("cpx22", "fsn1"),
        ("cpx32", "fsn1"),
        ("cpx22", "nbg1"),
        ("cpx22", "nbg1"),
        ("cpx22", "nbg1"),
    ]
    .iter()
    .map(|(t, l)| (t.to_string(), l.to_string()))
    .collect();
    assert_eq!(
        production, expected,
        "production: the preferred type, the same location's next type, then the next location"
    );

    // The same workload through the simulator: serve's journal as a trace.
    let mut trace = Vec::new();
    let mut export = TraceExport::new(&mut trace, core_config.clone());
    Store::new(pool.clone())
        .for_each_journal_row(500, |row| -> anyhow::Result<()> {
            let input: payperplay_core::Input = serde_json::from_value(row.input)?;
            export.push(u64::try_from(row.at_ms).unwrap_or(0), input)?;
            Ok(())
        })
        .await
        .unwrap();
    let stats = export.finish().unwrap();
    assert_eq!(
        stats.provisioning_observed, STARTS as u64,
        "each VM's order to ready observed"
    );
    let trace = Trace::read(trace.as_slice(), Path::new("serve-journal.jsonl")).expect("the exported trace reads");
    let mut scenario = Scenario::parse(&scenario_text(), Path::new("sold-out.toml")).expect("scenario");
    scenario.core = core_config.clone();
    let scenario = scenario
        .with_trace(Arc::new(trace))
        .expect("the trace fits the scenario");
    let mut sim = Simulation::new(scenario);
    sim.record_commands();
    let result = sim.run_full();
    let simulated: Vec<(String, String)> = result
        .commands
        .iter()
        .filter_map(|issued| order_of(&issued.command, &core_config))
        .collect();
    assert_eq!(
        simulated, production,
        "the simulator and production ordered different VMs"
    );
    let refused = production
        .iter()
        .filter(|(t, l)| SOLD_OUT.contains(&(t.as_str(), l.as_str())))
        .count() as u64;
    assert_eq!(
        result.outcome.provider.sold_out, refused,
        "{:?}",
        result.outcome.provider
    );
    assert_eq!(result.outcome.starts.rejected, 0);
    crate::cloud::remove_platform_containers(&platform);
}
