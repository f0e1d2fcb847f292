//! Soak (issue 17): mixed API load against a real `payperplay serve` on loopback, with
//! kill -9 of `serve` and database restarts at seeded random points. A "database
//! restart" terminates every session of the soak's database (what a Postgres restart
//! does to the service, without stopping the Postgres the other tests share); with
//! `PAYPERPLAY_SOAK_PG_RESTART=1` it restarts the whole Postgres with `pg_ctl` (run the
//! soak alone then). Afterwards every start request has ended, every balance equals
//! its ledger, and the core agrees (no balance alarm after a last restart).
//!
//! Length: `PAYPERPLAY_SOAK_S` (default 40 s, what CI runs); restarts of each kind:
//! `PAYPERPLAY_SOAK_RESTARTS` (default 2); seed: `PAYPERPLAY_SOAK_SEED` (printed, and
//! named in every failure); `PAYPERPLAY_SOAK_BIN`: the `payperplay` binary to run
//! (default: the one cargo built; a copy keeps a long soak on one version while the
//! worktree is rebuilt). The issue's long run, alone on its own services:
//! `PAYPERPLAY_SOAK_S=1800 PAYPERPLAY_SOAK_RESTARTS=3 PAYPERPLAY_SOAK_PG_RESTART=1`.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::common::{GAME_PORTS_PER_TEST, RCON_PORT_OFFSET, TEST_BOOT_DELAY_MS};
use crate::durability::{free_port, http, until_status, verified_session};

/// SplitMix64: the soak's one seeded source of randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillServe,
    RestartDatabase,
}

struct Serve {
    child: tokio::process::Child,
}

fn spawn(url: &str, config_path: &std::path::Path, port: u16, router_port: u16) -> Serve {
    let binary = std::env::var("PAYPERPLAY_SOAK_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_payperplay").to_string());
    let child = tokio::process::Command::new(binary)
        .arg("serve")
        .arg("--config")
        .arg(config_path)
        .env("PAYPERPLAY_DATABASE_URL", url)
        .env("PAYPERPLAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("PAYPERPLAY_ROUTER_LISTEN", format!("127.0.0.1:{router_port}"))
        .env("PAYPERPLAY_SMTP_PORT", "1")
        .env("PAYPERPLAY_ADMIN_EMAILS", "admin@example.com")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("payperplay starts");
    Serve { child }
}

async fn kill_9(serve: &mut Serve) {
    let pid = serve.child.id().expect("running").to_string();
    let _ = tokio::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .await;
    let _ = serve.child.wait().await;
}

async fn restart_database(pool: &PgPool, database: &str) {
    if std::env::var("PAYPERPLAY_SOAK_PG_RESTART").as_deref() == Ok("1") {
        let pg_ctl = std::env::var("PAYPERPLAY_PG_CTL").expect("PAYPERPLAY_PG_CTL");
        let data = std::env::var("PAYPERPLAY_PG_DATA").expect("PAYPERPLAY_PG_DATA");
        let status = tokio::process::Command::new("runuser")
            .args([
                "-u", "postgres", "--", &pg_ctl, "-D", &data, "-w", "-m", "fast", "restart",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .unwrap();
        assert!(status.success(), "pg_ctl restart");
    } else {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(database)
        .execute(pool)
        .await
        .unwrap();
    }
}

/// Removes the soak's containers and world volumes from the test engine.
fn remove_containers(platform: &str) {
    let socket = format!("unix://{}", std::env::var("PAYPERPLAY_TEST_DOCKER_SOCKET").unwrap());
    let filter = format!("label=payperplay.platform={platform}");
    for (list, remove) in [
        (vec!["ps", "-aq", "--filter", &filter], vec!["rm", "-f"]),
        (
            vec!["volume", "ls", "-q", "--filter", &filter],
            vec!["volume", "rm", "-f"],
        ),
    ] {
        let output = std::process::Command::new("docker")
            .arg("-H")
            .arg(&socket)
            .args(&list)
            .output()
            .expect("docker runs");
        let ids: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .arg("-H")
                .arg(&socket)
                .args(&remove)
                .args(&ids)
                .output();
        }
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn soak_mixed_load_with_kills_and_database_restarts_loses_no_money_and_ends_every_start(pool: PgPool) {
    #[allow(clippy::disallowed_methods)]
    let clock_seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let seed = env_u64("PAYPERPLAY_SOAK_SEED", clock_seed);
    let soak_s = env_u64("PAYPERPLAY_SOAK_S", 40);
    let restarts = env_u64("PAYPERPLAY_SOAK_RESTARTS", 2);
    eprintln!(
        "soak: seed {seed} (PAYPERPLAY_SOAK_SEED={seed} repeats it), {soak_s} s, {restarts} restarts of each kind"
    );
    let mut rng = Rng(seed);

    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL (source scripts/start-services.sh)");
    let url = format!("{}/{database}", base.rsplit_once('/').unwrap().0);
    let platform = format!("ppp-soak-{}-{seed}", std::process::id());
    // Game ports far from the other tests' slices.
    let first_port =
        crate::common::GAME_PORTS_FIRST + 48 * GAME_PORTS_PER_TEST + (seed % 8) as u16 * GAME_PORTS_PER_TEST;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("soak.toml");
    let config = format!(
        r#"[runtime]
journal_lock_wait_ms = 15000
command_retry_backoff_ms = 50

[auth]
login_per_minute = 100000
register_per_minute = 100000
login_per_account_per_minute = 100000
mutations_per_user_per_minute = 1000000
servers_per_user_max = 100000
api_tokens_per_user_max = 100000

[auth.argon2]
memory_kib = 256
iterations = 1
parallelism = 1

[containers]
platform = "{platform}"
image = "{image}"
boot_timeout_ms = 20000
player_poll_interval_ms = 500
probe_interval_ms = 500
probe_misses_max = 20
reconcile_interval_ms = 1000
unknown_grace_ms = 5000
stop_timeout_s = 5

[containers.extra_env]
TESTGAME_BOOT_DELAY_MS = "{TEST_BOOT_DELAY_MS}"

[[fleet.dedicated_nodes]]
name = "soak"
capacity_mib = 16384
is_system = false
bind_address = "127.0.0.1"
game_ports = "{first_port}-{last_port}"
rcon_ports_first = {rcon_first}
data_path = "/"

[fleet.dedicated_nodes.engine]
socket_path = "{socket}"
"#,
        image = std::env::var("PAYPERPLAY_TEST_IMAGE").expect("PAYPERPLAY_TEST_IMAGE"),
        last_port = first_port + GAME_PORTS_PER_TEST - 1,
        rcon_first = first_port + RCON_PORT_OFFSET,
        socket = std::env::var("PAYPERPLAY_TEST_DOCKER_SOCKET").expect("PAYPERPLAY_TEST_DOCKER_SOCKET"),
    );
    std::fs::write(&config_path, config).unwrap();
    let (port, router_port) = (free_port(), free_port());
    let mut serve = spawn(&url, &config_path, port, router_port);
    until_status(port, "/v1/health/ready", 200).await;

    let (admin, _) = verified_session(port, &pool, "admin@example.com").await;
    let mut users = Vec::new();
    for n in 0..4 {
        users.push(verified_session(port, &pool, &format!("soak{n}@example.com")).await);
    }
    // Faults at seeded points in the run, in order.
    let mut faults: Vec<(u64, Fault)> = Vec::new();
    for _ in 0..restarts {
        faults.push((rng.below(soak_s * 1000), Fault::KillServe));
        faults.push((rng.below(soak_s * 1000), Fault::RestartDatabase));
    }
    faults.sort();
    let mut faults = faults.into_iter().peekable();
    let mut servers: Vec<(usize, i64)> = Vec::new();
    let mut tier_events: std::collections::BTreeMap<i64, Vec<TierEvent>> = Default::default();
    let mut n_outcome_unknown = 0u64;
    let mut n_requests = 0u64;
    let mut n_answered = 0u64;
    let started = payperplay_prod::clock::Stopwatch::start();
    while started.elapsed() < Duration::from_secs(soak_s) {
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if let Some(&(at_ms, fault)) = faults.peek()
            && at_ms <= elapsed_ms
        {
            faults.next();
            eprintln!("soak (seed {seed}): {fault:?} at {elapsed_ms} ms");
            match fault {
                Fault::KillServe => {
                    kill_9(&mut serve).await;
                    serve = spawn(&url, &config_path, port, router_port);
                }
                Fault::RestartDatabase => restart_database(&pool, &database).await,
            }
            continue;
        }
        let user_idx = rng.below(users.len() as u64) as usize;
        let (token, user_id) = users[user_idx].clone();
        let action = rng.below(100);
        let (method, path, body, token) = match action {
            0..=14 => (
                "POST",
                format!("/v1/admin/users/{user_id}/credit"),
                Some(json!({"amount_micros": 1_000_000 + rng.below(1_000) as i64})),
                admin.clone(),
            ),
            15..=24 if servers.len() < 12 => (
                "POST",
                "/v1/servers".to_string(),
                Some(json!({"name": format!("s{}", rng.next() % 1_000_000), "ram_mib": 2048})),
                token,
            ),
            25..=49 if !servers.is_empty() => {
                let (owner, id) = servers[rng.below(servers.len() as u64) as usize];
                ("POST", format!("/v1/servers/{id}/start"), None, users[owner].0.clone())
            }
            50..=64 if !servers.is_empty() => {
                let (owner, id) = servers[rng.below(servers.len() as u64) as usize];
                ("POST", format!("/v1/servers/{id}/stop"), None, users[owner].0.clone())
            }
            65..=69 if !servers.is_empty() => {
                let (owner, id) = servers[rng.below(servers.len() as u64) as usize];
                let ram_mib = [2048, 4096][rng.below(2) as usize];
                (
                    "PATCH",
                    format!("/v1/servers/{id}"),
                    Some(json!({ "ram_mib": ram_mib })),
                    users[owner].0.clone(),
                )
            }
            65..=84 => ("GET", "/v1/billing/balance".to_string(), None, token),
            _ => ("GET", "/v1/servers".to_string(), None, token),
        };
        n_requests += 1;
        let response = http(port, method, &path, Some(&token), body.as_ref()).await;
        if method == "PATCH" {
            let server_id: i64 = path.rsplit('/').next().unwrap().parse().unwrap();
            let ram_mib = body.as_ref().unwrap()["ram_mib"].as_u64().unwrap();
            let event = match &response {
                Some((200, _)) => TierEvent::Set(ram_mib),
                Some((503, answer)) if answer["error"]["code"] == "outcome_unknown" => {
                    n_outcome_unknown += 1;
                    match answer["error"]["request_id"].as_i64() {
                        Some(request_id) => TierEvent::Ask { request_id, ram_mib },
                        None => TierEvent::Lost,
                    }
                }
                // Refused, or not taken up (503 other than outcome_unknown, 429).
                Some((400..=499 | 503, _)) => TierEvent::Unchanged,
                _ => TierEvent::Lost,
            };
            tier_events.entry(server_id).or_default().push(event);
        }
        if let Some((status, answer)) = response {
            n_answered += 1;
            assert!(status != 500, "seed {seed}: {method} {path} answered 500: {answer}");
            if path == "/v1/servers" && method == "POST" && status == 201 {
                servers.push((user_idx, answer["id"].as_i64().unwrap()));
            }
        }
        tokio::time::sleep(Duration::from_millis(5 + rng.below(20))).await;
    }
    eprintln!(
        "soak (seed {seed}): {n_requests} requests, {n_answered} answered, \
         {n_outcome_unknown} tier changes answered outcome_unknown"
    );

    // Settle: a last clean restart (the start-up balance check runs), then every start
    // request ends and every server is stopped.
    kill_9(&mut serve).await;
    serve = spawn(&url, &config_path, port, router_port);
    until_status(port, "/v1/health/ready", 200).await;
    for (owner, id) in &servers {
        let token = &users[*owner].0;
        let mut ended = false;
        for _ in 0..600 {
            let (status, body) = http(port, "GET", &format!("/v1/servers/{id}/status"), Some(token), None)
                .await
                .unwrap_or((0, Value::Null));
            let state = body["state"].as_str().unwrap_or("");
            if status == 200 && matches!(state, "running" | "stopped" | "sleeping" | "archived") {
                ended = true;
                if state == "running" {
                    let _ = http(port, "POST", &format!("/v1/servers/{id}/stop"), Some(token), None).await;
                }
                break;
            }
            if status == 200 && state == "queued" {
                // A queued start ends when it is stopped (cancelled).
                let _ = http(port, "POST", &format!("/v1/servers/{id}/stop"), Some(token), None).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ended, "seed {seed}: the start of server {id} never ended");
    }
    let balances_settled = async {
        for _ in 0..300 {
            let unposted: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM commands c WHERE c.kind = 'post_ledger_entry'
                   AND NOT EXISTS (SELECT 1 FROM ledger_entries l WHERE l.command_id = c.id)",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if unposted == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(balances_settled.await, "seed {seed}: ledger commands never posted");
    let mismatched: Vec<(i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT u.id, u.balance_micros, (SELECT SUM(amount_micros)::BIGINT FROM ledger_entries l WHERE l.user_id = u.id)
         FROM users u
         WHERE u.balance_micros <> COALESCE((SELECT SUM(amount_micros) FROM ledger_entries l WHERE l.user_id = u.id), 0)",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        mismatched.is_empty(),
        "seed {seed}: balances differ from ledgers: {mismatched:?}"
    );
    // The core agrees with the ledger after the last restart's check.
    let (_, alarms) = http(port, "GET", "/v1/admin/alarms", Some(&admin), None).await.unwrap();
    let money_alarms: Vec<&Value> = alarms
        .as_array()
        .unwrap()
        .iter()
        .filter(|alarm| alarm["kind"] == "balance_mismatch" || alarm["kind"] == "quarantined_input")
        .collect();
    assert!(money_alarms.is_empty(), "seed {seed}: {money_alarms:?}");
    let duplicates: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT command_id FROM ledger_entries WHERE command_id IS NOT NULL
                               GROUP BY command_id HAVING COUNT(*) > 1) d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(duplicates, 0, "seed {seed}");
    // Every server's tier in the table is the one its tier changes left, asking
    // `GET /v1/requests/{id}` about those answered `outcome_unknown`.
    let mut n_tiers_checked = 0;
    for (owner, id) in &servers {
        let token = &users[*owner].0;
        let mut expected = Some(2048);
        for event in tier_events.get(id).map(Vec::as_slice).unwrap_or_default() {
            match *event {
                TierEvent::Set(ram_mib) => expected = Some(ram_mib),
                TierEvent::Unchanged => {}
                TierEvent::Lost => expected = None,
                TierEvent::Ask { request_id, ram_mib } => {
                    let (status, request) = http(port, "GET", &format!("/v1/requests/{request_id}"), Some(token), None)
                        .await
                        .unwrap();
                    match (status, request["state"].as_str()) {
                        (200, Some("carried_out")) => expected = Some(ram_mib),
                        (200, Some("rejected" | "not_journaled" | "quarantined")) | (404, _) => {}
                        _ => expected = None,
                    }
                }
            }
        }
        if let Some(expected) = expected {
            let (_, server) = http(port, "GET", &format!("/v1/servers/{id}"), Some(token), None)
                .await
                .unwrap();
            assert_eq!(
                server["ram_mib"].as_u64(),
                Some(expected),
                "seed {seed}: server {id}'s tier after {:?}",
                tier_events.get(id)
            );
            n_tiers_checked += 1;
        }
    }
    eprintln!(
        "soak (seed {seed}): tiers of {n_tiers_checked} of {} servers checked",
        servers.len()
    );
    kill_9(&mut serve).await;
    remove_containers(&platform);
}

/// What a tier change the soak sent did, as far as its answer tells.
#[derive(Debug, Clone, Copy)]
enum TierEvent {
    /// 200: the tier is this now.
    Set(u64),
    /// Refused or not taken up: no effect.
    Unchanged,
    /// `outcome_unknown`: ask about the request later.
    Ask { request_id: i64, ram_mib: u64 },
    /// No answer: unknown for good.
    Lost,
}
