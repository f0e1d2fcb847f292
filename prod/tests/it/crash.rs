//! Crash safety with VMs (issue 15): the real `payperplay serve` is killed with SIGKILL
//! at seeded random points during bursts of starts that need new VMs (the fake Hetzner
//! API on loopback, VMs in front of the test sshd and the real test engine), started
//! again, and after each round and a reconcile interval the fleet must be whole: no two
//! VMs with one name, no VM the fleet does not know, no node counted whose VM is gone,
//! every start ended (running or queued; a refused one said why), no server stuck
//! starting or stopping, every balance the sum of its ledger. Each round waits until
//! the previous round's VMs are on their way out (empty VMs go after 1 s), so every
//! round orders new VMs, and the kill may also land in their deletion. Rounds:
//! `PAYPERPLAY_CRASH_ROUNDS` (default 20); seed: `PAYPERPLAY_CRASH_SEED` (printed on
//! failure). Prints how many rounds ordered VMs and the time from kill -9 to a
//! reconciled fleet. A container of the platform that dies with a non-zero code has
//! its last log lines in the failure message.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use serde_json::Value;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cloud::{HETZNER_TOKEN, fake_client, sshd_endpoint, start_fake_hetzner};
use crate::common::{TestApp, test_config, test_ssh_port};
use payperplay_core::Timestamp;
use payperplay_prod::clock::ManualClock;

const SSH_PUBLIC_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm0d1sVsDc3Yv4l5ZB8s2o5d0mD7m3XvWq8sE4rY1ab payperplay";
/// Servers started per round (each needs a VM of its own: 2 GiB on a 4 GiB VM).
const STARTS_PER_ROUND: usize = 2;
/// Longest wait for a reconciled fleet after a restart.
const RECONCILED_WAIT_MS_MAX: u64 = 45_000;

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: source scripts/start-services.sh"))
}

/// Containers of the platform that died with a non-zero exit code, with their last log
/// lines, from the test engine's event stream (`docker events`, ended on drop).
struct FailedContainers {
    events: std::process::Child,
    failures: Arc<Mutex<Vec<String>>>,
}

impl FailedContainers {
    fn watch(platform: &str) -> Self {
        let socket = format!("unix://{}", required("PAYPERPLAY_TEST_DOCKER_SOCKET"));
        let mut events = std::process::Command::new("docker")
            .args([
                "-H",
                &socket,
                "events",
                "--filter",
                "type=container",
                "--filter",
                "event=die",
            ])
            .arg("--filter")
            .arg(format!("label=payperplay.platform={platform}"))
            .args(["--format", "{{.ID}} {{index .Actor.Attributes \"exitCode\"}}"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker events runs");
        let stdout = events.stdout.take().expect("piped");
        let failures = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&failures);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let Some((id, code)) = line.split_once(' ') else {
                    continue;
                };
                if code == "0" {
                    continue;
                }
                let logs = std::process::Command::new("docker")
                    .args(["-H", &socket, "logs", "--tail", "3", id])
                    .output()
                    .map(|output| {
                        format!(
                            "{}{}",
                            String::from_utf8_lossy(&output.stdout),
                            String::from_utf8_lossy(&output.stderr)
                        )
                    })
                    .unwrap_or_default();
                seen.lock()
                    .unwrap()
                    .push(format!("container {id} exited with {code}: {}", logs.trim()));
            }
        });
        Self { events, failures }
    }

    fn report(&self) -> String {
        let failures = self.failures.lock().unwrap();
        if failures.is_empty() {
            return "no container of the platform exited with a non-zero code".to_string();
        }
        failures.join("\n")
    }
}

impl Drop for FailedContainers {
    fn drop(&mut self) {
        let _ = self.events.kill();
        let _ = self.events.wait();
    }
}

/// The cloud nodes the core still places on or orders (provisioning, ready or
/// draining), by id.
async fn live_cloud_nodes(port: u16, admin: &str) -> Option<Vec<i64>> {
    let (200, nodes) = http(port, "GET", "/v1/admin/nodes", Some(admin), None).await? else {
        return None;
    };
    Some(
        nodes
            .as_array()?
            .iter()
            .filter(|node| {
                node["kind"] == "cloud" && matches!(node["state"].as_str(), Some("provisioning" | "ready" | "draining"))
            })
            .filter_map(|node| node["id"].as_i64())
            .collect(),
    )
}

async fn vm_orders(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM commands WHERE kind = 'provision_node'")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// splitmix64: the test's seeded randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Prints the seed when the test fails (a panic unwinds through it).
struct SeedOnFailure(u64);

impl Drop for SeedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("crash-safety test failed: rerun with PAYPERPLAY_CRASH_SEED={}", self.0);
        }
    }
}

/// One HTTP/1.1 request to serve on loopback; (status, JSON body or Null).
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let body = body.map(|body| body.to_string()).unwrap_or_default();
    let mut headers = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    if !body.is_empty() {
        headers.push_str("Content-Type: application/json\r\n");
    }
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let response = String::from_utf8_lossy(&response);
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let json = response
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    Some((status, json))
}

pub struct Serve {
    pub child: tokio::process::Child,
    pub port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn spawn_serve(config_path: &std::path::Path, database_url: &str, secret_key: &str) -> Serve {
    let port = free_port();
    let log_path = config_path.with_extension(format!("{port}.log"));
    let log = std::fs::File::create(&log_path).expect("serve log file");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_payperplay"))
        .arg("serve")
        .env("PAYPERPLAY_CONFIG", config_path)
        .env("PAYPERPLAY_DATABASE_URL", database_url)
        .env("PAYPERPLAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("PAYPERPLAY_ROUTER_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("PAYPERPLAY_SMTP_PORT", "1")
        .env("PAYPERPLAY_HETZNER_TOKEN", HETZNER_TOKEN)
        .env("PAYPERPLAY_SECRET_KEY", secret_key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("payperplay starts");
    let started = Instant::now();
    loop {
        if let Some((200, _)) = http(port, "GET", "/v1/health/ready", None, None).await {
            return Serve { child, port };
        }
        if started.elapsed() > Duration::from_secs(60) {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: String = log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
            panic!("serve not ready within 60 s; its log, last lines first:\n{tail}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The crash test's fleet: one 4 GiB VM type in two locations, VMs deleted 1 s after
/// they empty.
const CRASH_CORE: &str = r#"
[core.catalog]
locations = ["fsn1", "nbg1"]
expected_provision = "5s"

[[core.catalog.server_types]]
name = "cpx22"
ram_gb = 4
vcpu = 2
hourly_eur = 0.0128
monthly_eur = 7.99

[core.policy]
evaluate_every = "1s"

[core.policy.reactive]
scale_up_cooldown = "1s"
scale_down_empty_after = "1s"
scale_down_cooldown = "500ms"
"#;

fn config_toml(api: &str, platform: &str) -> String {
    serve_config_toml(api, platform, CRASH_CORE)
}

/// serve's configuration against the fake at `api`, VMs in front of the test sshd and
/// engine; `core` holds the `[core.*]` tables (catalog and policy).
pub fn serve_config_toml(api: &str, platform: &str, core: &str) -> String {
    let q = |text: &str| format!("{text:?}");
    format!(
        r#"
[auth]
admin_emails = ["admin@example.com"]
login_per_minute = 100000
register_per_minute = 100000
login_per_account_per_minute = 100000
mutations_per_user_per_minute = 1000000
servers_per_user_max = 100000

[auth.argon2]
memory_kib = 256
iterations = 1
parallelism = 1

[runtime]
command_retry_backoff_ms = 10

[containers]
platform = {platform}
image = {image}
boot_timeout_ms = 20000
player_poll_interval_ms = 500
probe_interval_ms = 300
probe_misses_max = 5
reconcile_interval_ms = 500
unknown_grace_ms = 1000
stop_timeout_s = 5

[containers.extra_env]
TESTGAME_BOOT_DELAY_MS = "50"

[cloud]
api_endpoint = {api}
platform = {platform}
ssh_public_key = {ssh_public_key}
ssh_key_file = {ssh_key_file}
ssh_host_keys = [{host_key}]
engine_socket_path = {socket}
rcon_port_offset = 1000
data_path = "/"
ready_wait_ms_max = 30000
rate_limit_wait_ms_max = 10000
request_timeout_ms = 5000
reconcile_interval_ms = 300
reconcile_grace_ms = 600
{core}"#,
        platform = q(platform),
        image = q(&required("PAYPERPLAY_TEST_IMAGE")),
        api = q(api),
        ssh_public_key = q(SSH_PUBLIC_KEY),
        ssh_key_file = q(&required("PAYPERPLAY_TEST_SSH_KEY")),
        host_key = q(&required("PAYPERPLAY_TEST_SSH_HOST_KEY")),
        socket = q(&required("PAYPERPLAY_TEST_DOCKER_SOCKET")),
    )
}

/// What is wrong with the fleet now (empty: reconciled).
async fn fleet_problems(
    port: u16,
    admin: &str,
    user: &str,
    started: &[i64],
    all: &[i64],
    client: &payperplay_hetzner::HetznerClient,
    pool: &PgPool,
) -> Vec<String> {
    let mut problems = Vec::new();
    let Ok(vms) = client.list_platform_vms().await else {
        return vec!["the fake Hetzner API did not answer".to_string()];
    };
    let Some((200, nodes)) = http(port, "GET", "/v1/admin/nodes", Some(admin), None).await else {
        return vec!["serve did not answer /v1/admin/nodes".to_string()];
    };
    let mut names = BTreeSet::new();
    for vm in &vms {
        if !names.insert(vm.name.clone()) {
            problems.push(format!("two VMs named {}", vm.name));
        }
    }
    let nodes = nodes.as_array().cloned().unwrap_or_default();
    let node_state = |id: &str| {
        nodes
            .iter()
            .find(|node| node["id"].as_i64().is_some() && node["id"].as_i64() == id.parse::<i64>().ok())
            .and_then(|node| node["state"].as_str().map(str::to_string))
    };
    let vm_nodes: BTreeSet<String> = vms
        .iter()
        .filter_map(|vm| vm.labels.get(payperplay_hetzner::client::LABEL_NODE).cloned())
        .collect();
    for vm in &vms {
        let node = vm
            .labels
            .get(payperplay_hetzner::client::LABEL_NODE)
            .cloned()
            .unwrap_or_default();
        match node_state(&node).as_deref() {
            Some("provisioning" | "ready" | "draining" | "deleting") => {}
            other => problems.push(format!(
                "VM {} of node {node} the fleet does not know ({other:?})",
                vm.name
            )),
        }
    }
    for node in &nodes {
        let counted = matches!(node["state"].as_str(), Some("ready" | "draining"));
        if node["kind"] == "cloud" && counted && !vm_nodes.contains(&node["id"].to_string()) {
            problems.push(format!("node {} counted but its VM is gone", node["id"]));
        }
    }
    for id in started {
        match http(port, "GET", &format!("/v1/servers/{id}/status"), Some(user), None).await {
            Some((200, status)) => match status["state"].as_str() {
                Some("running" | "queued") => {}
                other => problems.push(format!("server {id} is {other:?}, not running or queued")),
            },
            other => problems.push(format!("server {id}: status answer {other:?}")),
        }
    }
    for id in all.iter().filter(|id| !started.contains(id)) {
        if let Some((200, status)) = http(port, "GET", &format!("/v1/servers/{id}/status"), Some(user), None).await
            && matches!(status["state"].as_str(), Some("starting" | "stopping"))
        {
            problems.push(format!("server {id} still {}", status["state"]));
        }
    }
    let unbalanced: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM users u WHERE u.balance_micros <> \
         (SELECT COALESCE(SUM(amount_micros), 0) FROM ledger_entries l WHERE l.user_id = u.id)::BIGINT",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    if unbalanced > 0 {
        problems.push(format!("{unbalanced} balances differ from their ledger sums"));
    }
    problems
}

#[sqlx::test(migrations = "../migrations")]
async fn serve_killed_at_random_points_during_vm_orders_recovers_a_whole_fleet(pool: PgPool) {
    let rounds: usize = std::env::var("PAYPERPLAY_CRASH_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(20);
    #[allow(clippy::disallowed_methods)]
    let seed: u64 = std::env::var("PAYPERPLAY_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let _seed_on_failure = SeedOnFailure(seed);
    eprintln!("crash-safety test: seed {seed}, {rounds} rounds");
    let mut rng = Rng(seed);

    // Users and servers through the in-process app (no cloud, no nodes), then serve.
    let mut config = test_config();
    config.fleet.dedicated_nodes.clear();
    config.auth.servers_per_user_max = u32::try_from(rounds * STARTS_PER_ROUND).unwrap().max(1);
    let platform = config.containers.platform.clone();
    let secret_key = format!("1:{}", {
        use secrecy::ExposeSecret;
        config.secrets.keys[0].key_hex.expose_secret().to_string()
    });
    let drivers = crate::common::real_drivers(&config, &pool).await;
    // Today's time: serve runs on the system clock, and sessions made now must still
    // be valid then.
    #[allow(clippy::disallowed_methods)]
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let app = TestApp::start_full(pool.clone(), config, ManualClock::new(Timestamp(now_ms)), drivers).await;
    let (admin, _) = app.admin().await;
    let (user, user_id) = app.user("crash@example.com").await;
    app.credit(&admin, user_id, 1_000_000_000).await;
    let mut servers = Vec::new();
    for n in 0..rounds * STARTS_PER_ROUND {
        servers.push(app.create_server(&user, &format!("crash-{n}"), 2048).await);
    }
    app.stop().await;

    let endpoints = (0..8).map(|_| sshd_endpoint(test_ssh_port())).collect();
    let api = start_fake_hetzner(endpoints, |_| {}).await;
    let client = fake_client(&api, &platform);
    let dir = std::env::temp_dir().join(format!("{platform}-crash"));
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("payperplay.toml");
    std::fs::write(&config_path, config_toml(&api, &platform)).unwrap();
    let checked = tokio::process::Command::new(env!("CARGO_BIN_EXE_payperplay"))
        .arg("check-config")
        .env("PAYPERPLAY_CONFIG", &config_path)
        .env("PAYPERPLAY_HETZNER_TOKEN", HETZNER_TOKEN)
        .env("PAYPERPLAY_SECRET_KEY", &secret_key)
        .output()
        .await
        .unwrap();
    assert!(
        checked.status.success(),
        "check-config: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let base = required("DATABASE_URL");
    let database_url = format!("{}/{database}", base.rsplit_once('/').unwrap().0);

    let failed_containers = FailedContainers::watch(&platform);
    let mut serve = spawn_serve(&config_path, &database_url, &secret_key).await;
    let mut reconciled_ms = Vec::new();
    let mut rounds_with_orders = 0;
    let mut accepted = 0;
    let mut ran = BTreeSet::new();
    for (round, batch) in servers.chunks(STARTS_PER_ROUND).enumerate() {
        let orders_before = vm_orders(&pool).await;
        let mut started = Vec::new();
        for id in batch {
            let answer = http(
                serve.port,
                "POST",
                &format!("/v1/servers/{id}/start"),
                Some(&user),
                None,
            )
            .await;
            match answer {
                Some((202, _)) => {
                    accepted += 1;
                    started.push(*id);
                }
                Some((status, body)) => assert!(
                    body["error"]["message"]
                        .as_str()
                        .is_some_and(|reason| !reason.is_empty()),
                    "round {round}: start of {id} refused ({status}) without a reason: {body}"
                ),
                None => panic!("round {round}: serve did not answer the start of {id}"),
            }
        }
        // Kill at a random point of the burst: before, during or after the VM orders.
        tokio::time::sleep(Duration::from_millis(rng.below(2_500))).await;
        serve.child.start_kill().expect("SIGKILL");
        serve.child.wait().await.expect("killed");
        let killed_at = Instant::now();
        serve = spawn_serve(&config_path, &database_url, &secret_key).await;
        let mut problems;
        loop {
            problems = fleet_problems(serve.port, &admin, &user, &started, &servers, &client, &pool).await;
            if problems.is_empty() || killed_at.elapsed() > Duration::from_millis(RECONCILED_WAIT_MS_MAX) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            problems.is_empty(),
            "round {round} (seed {seed}): {problems:#?}\n{}",
            failed_containers.report()
        );
        reconciled_ms.push(killed_at.elapsed().as_millis() as u64);
        // Every start of the round runs (on a new VM) before the next round.
        let round_started = Instant::now();
        for id in &started {
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
                    ran.insert(*id);
                    break;
                }
                assert!(
                    round_started.elapsed() < Duration::from_millis(RECONCILED_WAIT_MS_MAX),
                    "round {round} (seed {seed}): server {id} never ran ({state:?})\n{}",
                    failed_containers.report()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if vm_orders(&pool).await > orders_before {
            rounds_with_orders += 1;
        }
        // Stopped again, so their VMs empty out; the next round starts once none is
        // left to place on (they may still be deleting), so it orders VMs of its own.
        for id in &started {
            let _ = http(serve.port, "POST", &format!("/v1/servers/{id}/stop"), Some(&user), None).await;
        }
        let emptying = Instant::now();
        loop {
            let live = live_cloud_nodes(serve.port, &admin).await;
            if live.as_ref().is_some_and(Vec::is_empty) {
                break;
            }
            assert!(
                emptying.elapsed() < Duration::from_millis(RECONCILED_WAIT_MS_MAX),
                "round {round} (seed {seed}): empty cloud nodes not deleted: {live:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    serve.child.start_kill().expect("SIGKILL");
    let _ = serve.child.wait().await;
    // The bursts needed VMs: every accepted start ran, on VMs ordered for it.
    assert!(accepted >= rounds, "only {accepted} starts accepted in {rounds} rounds");
    assert_eq!(ran.len(), accepted, "every accepted start ran");
    let vms_ordered: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM commands WHERE kind = 'provision_node' AND status = 'succeeded'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(vms_ordered >= 1, "no VM was ordered");
    eprintln!(
        "{accepted} starts accepted and run, {vms_ordered} VM orders succeeded, {rounds_with_orders} of {rounds} \
         rounds ordered VMs"
    );
    assert_eq!(
        rounds_with_orders, rounds,
        "every round found no VM to reuse and ordered its own"
    );
    reconciled_ms.sort_unstable();
    eprintln!(
        "kill -9 to a reconciled fleet over {} rounds: median {} ms, max {} ms",
        reconciled_ms.len(),
        reconciled_ms[reconciled_ms.len() / 2],
        reconciled_ms.last().unwrap()
    );
    crate::cloud::remove_platform_containers(&platform);
}
