//! End to end through the REST API against the real Docker engine, sshd and test image
//! of `scripts/start-services.sh`: a server is running only once its game port answers,
//! real players keep it awake, it sleeps after they leave, a stop saves the world, a
//! delete removes container and volume; a node reached only through SSH takes
//! placements alike; a crash and a lost node reach the core; a `serve` killed during a
//! boot finds the server running after its restart, with one container.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{TestApp, local_engine, remove_test_containers, ssh_engine, test_config, test_node, test_ssh_port};
use axum::http::{Method, StatusCode};
use payperplay_core::ServerId;
use payperplay_mcproto::frame::{PACKET_BYTES_MAX, read_frame};
use payperplay_mcproto::packets::{Handshake, LoginStart, NextState};
use payperplay_prod::clock::Stopwatch;
use serde_json::Value;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Polls `condition` every 20 ms for up to `timeout_ms`.
pub(crate) async fn wait_until<F, Fut>(what: &str, timeout_ms: u64, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let watch = Stopwatch::start();
    while watch.elapsed() < Duration::from_millis(timeout_ms) {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {timeout_ms} ms waiting for: {what}");
}

/// A player logged in with mcproto's packets (protocol 340, offline mode); connected
/// until the stream is dropped.
async fn join(address: SocketAddr, name: &str) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("game port open");
    let handshake = Handshake {
        protocol_version: 340,
        server_address: "localhost".into(),
        server_port: address.port(),
        next_state: NextState::Login,
    };
    let mut bytes = handshake.to_packet().encode();
    bytes.extend(LoginStart { name: name.into() }.to_packet().encode());
    stream.write_all(&bytes).await.unwrap();
    let success = read_frame(&mut stream, PACKET_BYTES_MAX).await.expect("login answered");
    assert_eq!(success.id, 0x02, "Login Success");
    stream
}

async fn players_seen_by_core(app: &TestApp, server_id: i64) -> u32 {
    app.services
        .as_ref()
        .unwrap()
        .handle
        .query(move |core| {
            core.server(ServerId(server_id as u64))
                .map_or(0, |server| server.players)
        })
        .await
        .unwrap()
}

async fn game_address(app: &TestApp, server_id: i64) -> SocketAddr {
    let container = app.container_of(server_id).await.expect("a container");
    SocketAddr::from(([127, 0, 0, 1], container.ports.expect("ports labelled").game))
}

/// The world file (`world/level.dat`, JSON) in the server's volume, read through the
/// engine's mount point.
async fn world_file(app: &TestApp, server_id: i64) -> Option<Value> {
    let fleet = app.services.as_ref()?.fleet.clone()?;
    world_file_on(&fleet, server_id).await
}

async fn world_file_on(fleet: &payperplay_prod::drivers::NodeFleet, server_id: i64) -> Option<Value> {
    let driver = fleet.driver(&fleet.node_names()[0])?;
    let docker = driver.engine().await.ok()?;
    let volume = docker
        .inspect_volume(&payperplay_nodes::spec::volume_name(server_id as u64))
        .await
        .ok()?;
    let text = std::fs::read_to_string(format!("{}/world/level.dat", volume.mountpoint)).ok()?;
    serde_json::from_str(&text).ok()
}

async fn volume_exists(app: &TestApp, server_id: i64) -> bool {
    let fleet = app.services.as_ref().unwrap().fleet.clone().unwrap();
    let driver = fleet.driver(&fleet.node_names()[0]).unwrap();
    let docker = driver.engine().await.unwrap();
    docker
        .inspect_volume(&payperplay_nodes::spec::volume_name(server_id as u64))
        .await
        .is_ok()
}

pub(crate) async fn start(app: &TestApp, token: &str, server_id: i64) {
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/v1/servers/{server_id}/start"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_server_runs_once_it_answers_players_keep_it_awake_and_it_sleeps_after_they_leave(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("player@example.com").await;
    app.credit(&admin, user_id, 100_000_000).await;
    let id = app.create_server(&token, "world", 2048).await;
    start(&app, &token, id).await;
    wait_until("running", 20_000, || async {
        app.state_of(&token, id).await == "running"
    })
    .await;
    // Running means the game port answers a status ping.
    let address = game_address(&app, id).await;
    let report = payperplay_nodes::ready::status(address)
        .await
        .expect("answers when running");
    assert_eq!(report.players_online, 0);
    let container = app.container_of(id).await.unwrap();
    assert!(container.running, "{container:?}");

    // A player joins: the core sees it within a poll interval or so.
    let poll_ms = app.config.containers.player_poll_interval_ms;
    let watch = Stopwatch::start();
    let player = join(address, "Alex").await;
    wait_until("the core sees the player", 10_000, || async {
        players_seen_by_core(&app, id).await == 1
    })
    .await;
    eprintln!(
        "figure: player join seen by the core after {} ms (poll interval {poll_ms} ms)",
        watch.elapsed().as_millis()
    );

    // Past idle_sleep_after with a player on: still running.
    let idle_ms = app.config.core.lifecycle.idle_sleep_after_ms;
    app.clock.advance_ms(idle_ms + 60_000);
    tokio::time::sleep(Duration::from_millis(3 * poll_ms)).await;
    assert_eq!(app.state_of(&token, id).await, "running");

    // The player leaves: the count drops, and idle sleep follows.
    drop(player);
    wait_until("the core sees the player leave", 10_000, || async {
        players_seen_by_core(&app, id).await == 0
    })
    .await;
    app.clock.advance_ms(idle_ms + 60_000);
    wait_until("sleeping", 20_000, || async {
        app.state_of(&token, id).await == "sleeping"
    })
    .await;
    assert!(app.container_of(id).await.is_none(), "the container is removed");
    let world = world_file(&app, id).await.expect("the world is in the volume");
    let saves_after_sleep = world["save_count"].as_u64().unwrap();
    assert!(saves_after_sleep >= 1, "{world}");

    // Again: start, stop saves the world once more.
    start(&app, &token, id).await;
    wait_until("running again", 20_000, || async {
        app.state_of(&token, id).await == "running"
    })
    .await;
    let (status, body) = app
        .call(Method::POST, &format!("/v1/servers/{id}/stop"), Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    wait_until("stopped", 20_000, || async {
        app.state_of(&token, id).await == "stopped"
    })
    .await;
    let world = world_file(&app, id).await.expect("the world is in the volume");
    assert!(world["save_count"].as_u64().unwrap() > saves_after_sleep, "{world}");
    assert!(app.container_of(id).await.is_none());

    // Delete removes container and volume.
    let (status, body) = app
        .call(Method::DELETE, &format!("/v1/servers/{id}"), Some(&token), None)
        .await;
    assert!(status.is_success(), "{status} {body}");
    wait_until("volume removed", 10_000, || async { !volume_exists(&app, id).await }).await;
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_node_reached_only_through_ssh_takes_placements_the_same(pool: PgPool) {
    let mut config = test_config();
    config.fleet.dedicated_nodes = vec![test_node("remote-test", 16 * 1024, ssh_engine(test_ssh_port()))];
    let app = TestApp::start_with(pool, config).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("remote@example.com").await;
    app.credit(&admin, user_id, 100_000_000).await;
    let id = app.create_server(&token, "far", 2048).await;
    start(&app, &token, id).await;
    wait_until("running on the SSH node", 30_000, || async {
        app.state_of(&token, id).await == "running"
    })
    .await;
    let container = app.container_of(id).await.expect("container through SSH");
    assert!(container.running);
    let (_, nodes) = app.get("/v1/admin/nodes", &admin).await;
    assert_eq!(nodes[0]["name"], "remote-test");
    assert_eq!(nodes[0]["engine_ready"], true, "{nodes}");
    let (status, _) = app
        .call(Method::POST, &format!("/v1/servers/{id}/stop"), Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_until("stopped", 20_000, || async {
        app.state_of(&token, id).await == "stopped"
    })
    .await;
    assert!(app.container_of(id).await.is_none());
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_crashing_server_is_seen_by_the_core(pool: PgPool) {
    let mut config = test_config();
    config
        .containers
        .extra_env
        .insert("TESTGAME_CRASH_AFTER_MS".to_string(), "1500".to_string());
    let app = TestApp::start_with(pool, config).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("crash@example.com").await;
    app.credit(&admin, user_id, 100_000_000).await;
    let id = app.create_server(&token, "fragile", 2048).await;
    start(&app, &token, id).await;
    wait_until("running", 20_000, || async {
        app.state_of(&token, id).await == "running"
    })
    .await;
    wait_until("the crash stops it", 20_000, || async {
        app.state_of(&token, id).await == "stopped"
    })
    .await;
    let exits: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM journal WHERE input->>'type' = 'container_exited'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(exits, 1, "one exit observed and journaled");
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_boot_that_never_answers_is_killed_and_the_start_given_up(pool: PgPool) {
    let mut config = test_config();
    config
        .containers
        .extra_env
        .insert("TESTGAME_BOOT_DELAY_MS".to_string(), "600000".to_string());
    config.containers.boot_timeout_ms = 500;
    config.core.lifecycle.start_attempts_max = 2;
    let app = TestApp::start_with(pool, config).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("slow@example.com").await;
    app.credit(&admin, user_id, 100_000_000).await;
    let id = app.create_server(&token, "slow", 2048).await;
    start(&app, &token, id).await;
    wait_until("start given up", 30_000, || async {
        app.state_of(&token, id).await == "stopped"
    })
    .await;
    let booted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM journal WHERE input->>'type' = 'server_booted'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(booted, 0);
    let exits: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM journal WHERE input->>'type' = 'container_exited'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(exits, 2, "each unanswered boot is one failed attempt");
    // The engine's container list may trail its die event by a moment.
    wait_until("no container of the server runs", 5_000, || async {
        app.container_of(id).await.is_none_or(|container| !container.running)
    })
    .await;
    app.stop().await;
}

/// An sshd of this test's own in front of the test engine (the test setup's host key
/// and authorized key), which the test can end with every connection it serves.
struct PrivateSshd {
    child: tokio::process::Child,
    port: u16,
    config_path: std::path::PathBuf,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl PrivateSshd {
    async fn start() -> PrivateSshd {
        let services = std::env::var("PAYPERPLAY_SERVICES_DIR").expect("PAYPERPLAY_SERVICES_DIR (start-services.sh)");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("ppp-sshd-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "ListenAddress 127.0.0.1:{port}\nHostKey {services}/sshd/host_ed25519\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {services}/sshd/authorized_keys\nPermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             StrictModes no\nAllowStreamLocalForwarding yes\nMaxSessions 64\nMaxStartups 64:30:128\n\
             SetEnv HOME={dir}\n",
            dir = dir.display()
        );
        let config_path = dir.join("sshd_config");
        std::fs::write(&config_path, config).unwrap();
        let child = PrivateSshd::spawn(&config_path, port).await;
        PrivateSshd {
            child,
            port,
            config_path,
            _dir: TempDir(dir),
        }
    }

    async fn spawn(config_path: &std::path::Path, port: u16) -> tokio::process::Child {
        let child = tokio::process::Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(config_path)
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("sshd starts");
        wait_until("private sshd listens", 10_000, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        child
    }

    /// Starts it again on the same port, after `kill`.
    async fn restart(&mut self) {
        self.child = PrivateSshd::spawn(&self.config_path, self.port).await;
    }

    /// SIGKILL to sshd and every process it forked (its sessions leave its process
    /// group with setsid, so they are found by parent id).
    async fn kill(&mut self) {
        let pid = self.child.id().expect("running");
        let mut pids = descendants(pid);
        pids.push(pid);
        let status = tokio::process::Command::new("kill")
            .arg("-KILL")
            .args(pids.iter().map(u32::to_string))
            .status()
            .await
            .unwrap();
        assert!(status.success());
        let _ = self.child.wait().await;
    }
}

/// Every process below `pid`, from /proc (parent ids).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents = std::collections::BTreeMap::<u32, Vec<u32>>::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The parent id is the second field after the command name in parentheses.
        let Some((_, after_name)) = stat.rsplit_once(')') else {
            continue;
        };
        if let Some(parent) = after_name.split_whitespace().nth(1).and_then(|text| text.parse().ok()) {
            parents.entry(parent).or_default().push(child);
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(next) = frontier.pop() {
        for &child in parents.get(&next).map(Vec::as_slice).unwrap_or(&[]) {
            found.push(child);
            frontier.push(child);
        }
    }
    found
}

#[sqlx::test(migrations = "../migrations")]
async fn a_node_whose_sshd_stops_is_lost_and_its_server_runs_elsewhere(pool: PgPool) {
    let mut sshd = PrivateSshd::start().await;
    let mut config = test_config();
    // The remote node has more room, so spread placement puts the server there first.
    config.fleet.dedicated_nodes = vec![
        test_node("remote-private", 12 * 1024, ssh_engine(sshd.port)),
        test_node("local-backup", 8 * 1024, local_engine()),
    ];
    let app = TestApp::start_with(pool, config).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("lost@example.com").await;
    app.credit(&admin, user_id, 100_000_000).await;
    wait_until("both engines answer", 10_000, || async {
        let (_, nodes) = app.get("/v1/admin/nodes", &admin).await;
        nodes
            .as_array()
            .unwrap()
            .iter()
            .all(|node| node["engine_ready"] == true)
    })
    .await;
    let id = app.create_server(&token, "wanderer", 2048).await;
    start(&app, &token, id).await;
    wait_until("running", 30_000, || async {
        app.state_of(&token, id).await == "running"
    })
    .await;
    let (_, server) = app.get(&format!("/v1/servers/{id}"), &token).await;
    let (_, nodes) = app.get("/v1/admin/nodes", &admin).await;
    let remote_id = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["name"] == "remote-private")
        .unwrap()["id"]
        .clone();
    assert_eq!(server["status"]["node_id"], remote_id, "{server} {nodes}");

    sshd.kill().await;
    wait_until(
        "the node is lost and the server runs on the other one",
        30_000,
        || async {
            let (_, server) = app.get(&format!("/v1/servers/{id}"), &token).await;
            server["status"]["state"] == "running" && server["status"]["node_id"] != remote_id
        },
    )
    .await;
    let (_, nodes) = app.get("/v1/admin/nodes", &admin).await;
    let remote = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["name"] == "remote-private")
        .unwrap()
        .clone();
    assert_eq!(remote["state"], "lost", "{nodes}");
    assert_eq!(remote["engine_ready"], false, "{nodes}");
    assert!(
        remote["engine_reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("remote-private")),
        "the reason names the node: {nodes}"
    );
    let lost: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM journal WHERE input->>'type' = 'node_lost'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(lost, 1);

    // sshd answers again: the core takes the node back, and placement there works.
    sshd.restart().await;
    wait_until("the node is ready again", 30_000, || async {
        let (_, nodes) = app.get("/v1/admin/nodes", &admin).await;
        nodes
            .as_array()
            .unwrap()
            .iter()
            .any(|node| node["name"] == "remote-private" && node["state"] == "ready" && node["engine_ready"] == true)
    })
    .await;
    let answered: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM journal WHERE input->>'type' = 'node_answered'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(answered, 1);
    // It has the most free RAM again, so spread placement picks it.
    let second = app.create_server(&token, "homecoming", 2048).await;
    start(&app, &token, second).await;
    wait_until("the second server runs", 30_000, || async {
        app.state_of(&token, second).await == "running"
    })
    .await;
    let (_, server) = app.get(&format!("/v1/servers/{second}"), &token).await;
    assert_eq!(server["status"]["node_id"], remote_id, "{server}");
    let container = app.container_of(second).await.expect("its container");
    assert!(container.running, "{container:?}");
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn serve_starts_and_answers_while_a_node_engine_is_unreachable(pool: PgPool) {
    let mut config = test_config();
    config.fleet.dedicated_nodes = vec![test_node(
        "nowhere",
        8 * 1024,
        payperplay_prod::config::EngineConfig {
            socket_path: "/nonexistent/docker.sock".to_string(),
            ssh: None,
        },
    )];
    let app = TestApp::start_with(pool, config).await;
    let (admin, _) = app.admin().await;
    wait_until("the probe's reason is shown", 10_000, || async {
        let (_, nodes) = app.get("/v1/admin/nodes", &admin).await;
        nodes[0]["engine_ready"] == false
            && nodes[0]["engine_reason"]
                .as_str()
                .is_some_and(|reason| reason.contains("nowhere") && reason.contains("/nonexistent/docker.sock"))
    })
    .await;
    app.stop().await;
}

// --- the real binary, killed during a boot ---

pub(crate) async fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Option<(u16, Value)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let body_text = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if body.is_some() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body_text}", body_text.len()));
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or("");
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// The database URL of the test's own database (`#[sqlx::test]` made it), for the
/// real binary.
pub(crate) async fn database_url(pool: &PgPool) -> (String, String) {
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    (format!("{}/{database}", base.rsplit_once('/').unwrap().0), database)
}

/// A configuration file for the real binary: the test engine's node and image of
/// `config`, the test game server booting in `boot_delay_ms` and saving on stop in
/// `save_delay_ms`, then `extra` TOML.
pub(crate) fn serve_config_text(
    config: &payperplay_prod::config::Config,
    boot_delay_ms: u64,
    save_delay_ms: u64,
    extra: &str,
) -> String {
    let node = &config.fleet.dedicated_nodes[0];
    format!(
        r#"
[containers]
platform = "{platform}"
image = "{image}"
boot_timeout_ms = 60000
player_poll_interval_ms = 200
probe_interval_ms = 200
reconcile_interval_ms = 500
unknown_grace_ms = 1000
stop_timeout_s = 10
[containers.extra_env]
TESTGAME_BOOT_DELAY_MS = "{boot_delay_ms}"
TESTGAME_SAVE_DELAY_MS = "{save_delay_ms}"

[[fleet.dedicated_nodes]]
name = "{name}"
capacity_mib = 16384
is_system = false
bind_address = "127.0.0.1"
game_ports = "{first}-{last}"
rcon_ports_first = {rcon}
data_path = "/"
[fleet.dedicated_nodes.engine]
socket_path = "{socket}"
{extra}
"#,
        platform = config.containers.platform,
        image = config.containers.image,
        name = node.name,
        first = node.game_ports.first,
        last = node.game_ports.last,
        rcon = node.rcon_ports_first,
        socket = local_engine().socket_path,
    )
}

pub(crate) fn spawn_serve(
    config_path: &std::path::Path,
    url: &str,
    port: u16,
    secret_key: &str,
) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_payperplay"))
        .arg("serve")
        .arg("--config")
        .arg(config_path)
        .env("PAYPERPLAY_DATABASE_URL", url)
        .env("PAYPERPLAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("PAYPERPLAY_SECRET_KEY", format!("1:{secret_key}"))
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("payperplay starts")
}

#[sqlx::test(migrations = "../migrations")]
async fn serve_killed_during_a_boot_finds_the_server_running_after_restart(pool: PgPool) {
    // Set up an account and a server through the in-process app, then hand the
    // database to the real binary.
    // The binary's clock is the wall clock: the session must not have expired by then.
    let config = test_config();
    #[allow(clippy::disallowed_methods)]
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let clock = payperplay_prod::clock::ManualClock::new(payperplay_core::Timestamp(now_ms));
    let drivers = crate::common::real_drivers(&config, &pool).await;
    let app = TestApp::start_full(pool.clone(), config.clone(), clock, drivers).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("restart@example.com").await;
    app.credit(&admin, user_id, 100_000_000).await;
    let id = app.create_server(&token, "phoenix", 2048).await;
    let fleet = app.services.as_ref().unwrap().fleet.clone().unwrap();
    app.stop().await;

    let (url, database) = database_url(&pool).await;
    let node = &config.fleet.dedicated_nodes[0];
    let secret_key = payperplay_nodes::SecretBox::generate_key_hex().unwrap();
    // No player router in this process (it would listen on :25565).
    let config_text = serve_config_text(&config, 4_000, 0, "[router]\nenabled = false\n");
    let config_path = std::env::temp_dir().join(format!("{database}-serve.toml"));
    std::fs::write(&config_path, config_text).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let state = |token: String| async move {
        http(port, "GET", &format!("/v1/servers/{id}/status"), Some(&token), None)
            .await
            .and_then(|(_, body)| body["state"].as_str().map(str::to_string))
    };

    let mut serve = spawn_serve(&config_path, &url, port, &secret_key);
    wait_until("serve ready", 30_000, || async {
        http(port, "GET", "/v1/health/ready", None, None).await.map(|(s, _)| s) == Some(200)
    })
    .await;
    let (status, body) = http(port, "POST", &format!("/v1/servers/{id}/start"), Some(&token), None)
        .await
        .expect("answers");
    assert_eq!(status, 202, "{body}");
    let driver = fleet.driver(&node.name).unwrap();
    wait_until("the container runs, the server boots", 20_000, || async {
        driver
            .inspect(id as u64)
            .await
            .unwrap()
            .is_some_and(|container| container.running)
    })
    .await;
    assert_eq!(state(token.clone()).await.as_deref(), Some("starting"));
    let pid = serve.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let _ = serve.wait().await;

    let mut serve = spawn_serve(&config_path, &url, port, &secret_key);
    wait_until("running after the restart", 30_000, || async {
        state(token.clone()).await.as_deref() == Some("running")
    })
    .await;
    // One container for the server, running; none the core does not know.
    let containers = driver.list().await.unwrap();
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(containers[0].server_id, Some(id as u64));
    assert!(containers[0].running);
    serve.kill().await.unwrap();
    let _ = std::fs::remove_file(&config_path);
    remove_test_containers(&fleet).await;
}

/// Wall-clock now (the real binary's clock), for an in-process app whose sessions the
/// binary must still accept.
fn wall_clock() -> payperplay_prod::clock::ManualClock {
    #[allow(clippy::disallowed_methods)]
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    payperplay_prod::clock::ManualClock::new(payperplay_core::Timestamp(now_ms))
}

async fn kill_9(child: &mut tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let _ = child.wait().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn serve_killed_during_a_stop_while_the_world_saves_finds_the_server_stopped_and_saved_after_restart(
    pool: PgPool,
) {
    let config = test_config();
    let drivers = crate::common::real_drivers(&config, &pool).await;
    let app = TestApp::start_full(pool.clone(), config.clone(), wall_clock(), drivers).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("saver@example.com").await;
    app.credit(&admin, user_id, 100_000_000).await;
    let id = app.create_server(&token, "slow-saver", 2048).await;
    let fleet = app.services.as_ref().unwrap().fleet.clone().unwrap();
    app.stop().await;

    let (url, database) = database_url(&pool).await;
    let node = &config.fleet.dedicated_nodes[0];
    let secret_key = payperplay_nodes::SecretBox::generate_key_hex().unwrap();
    // The save on stop takes 6 s: serve is killed in the middle of it.
    let config_text = serve_config_text(&config, 200, 6_000, "[router]\nenabled = false\n");
    let config_path = std::env::temp_dir().join(format!("{database}-serve.toml"));
    std::fs::write(&config_path, config_text).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let state = |token: String| async move {
        http(port, "GET", &format!("/v1/servers/{id}/status"), Some(&token), None)
            .await
            .and_then(|(_, body)| body["state"].as_str().map(str::to_string))
    };

    let mut serve = spawn_serve(&config_path, &url, port, &secret_key);
    wait_until("serve ready", 30_000, || async {
        http(port, "GET", "/v1/health/ready", None, None).await.map(|(s, _)| s) == Some(200)
    })
    .await;
    let (status, body) = http(port, "POST", &format!("/v1/servers/{id}/start"), Some(&token), None)
        .await
        .expect("answers");
    assert_eq!(status, 202, "{body}");
    wait_until("running", 30_000, || async {
        state(token.clone()).await.as_deref() == Some("running")
    })
    .await;
    let saves_before = world_file_on(&fleet, id).await.expect("the world exists")["save_count"]
        .as_u64()
        .unwrap();
    let (status, body) = http(port, "POST", &format!("/v1/servers/{id}/stop"), Some(&token), None)
        .await
        .expect("answers");
    assert_eq!(status, 202, "{body}");
    // The container got its stop and is saving (6 s): serve dies now.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(state(token.clone()).await.as_deref(), Some("stopping"));
    let driver = fleet.driver(&node.name).unwrap();
    assert!(
        driver.inspect(id as u64).await.unwrap().is_some(),
        "the container is still there, saving"
    );
    kill_9(&mut serve).await;

    let mut serve = spawn_serve(&config_path, &url, port, &secret_key);
    wait_until("stopped after the restart", 40_000, || async {
        state(token.clone()).await.as_deref() == Some("stopped")
    })
    .await;
    // The save finished (nothing lost), and no container is left.
    let world = world_file_on(&fleet, id).await.expect("the world is in the volume");
    assert!(world["save_count"].as_u64().unwrap() > saves_before, "{world}");
    wait_until("no container left", 10_000, || async {
        driver.list().await.unwrap().is_empty()
    })
    .await;

    // And it starts again from that world, once.
    let (status, body) = http(port, "POST", &format!("/v1/servers/{id}/start"), Some(&token), None)
        .await
        .expect("answers");
    assert_eq!(status, 202, "{body}");
    wait_until("running again", 30_000, || async {
        state(token.clone()).await.as_deref() == Some("running")
    })
    .await;
    let containers = driver.list().await.unwrap();
    assert_eq!(containers.len(), 1, "{containers:?}");
    serve.kill().await.unwrap();
    let _ = std::fs::remove_file(&config_path);
    remove_test_containers(&fleet).await;
}

// --- bad input: a node whose SSH host key is not the pinned one ---

#[sqlx::test(migrations = "../migrations")]
async fn a_node_whose_host_key_is_not_the_pinned_one_is_not_ready_and_says_why(pool: PgPool) {
    // A genuine ed25519 key, but not sshd's.
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("other");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key_path)
        .status()
        .expect("ssh-keygen runs");
    assert!(made.success());
    let other_key = std::fs::read_to_string(key_path.with_extension("pub")).unwrap();
    let mut engine = ssh_engine(test_ssh_port());
    engine.ssh.as_mut().unwrap().host_keys = vec![other_key.trim().to_string()];
    let mut config = test_config();
    config.fleet.dedicated_nodes = vec![test_node("impostor-check", 16 * 1024, engine)];
    let app = TestApp::start_with(pool, config).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("pinned@example.com").await;
    app.credit(&admin, user_id, 100_000_000).await;
    let id = app.create_server(&token, "guarded", 2048).await;

    wait_until("the node's reason names it and the host key", 15_000, || async {
        let (_, nodes) = app.get("/v1/admin/nodes", &admin).await;
        nodes[0]["engine_ready"] == false
            && nodes[0]["engine_reason"].as_str().is_some_and(|reason| {
                reason.contains("impostor-check") && reason.contains("host key") && reason.contains("not a pinned one")
            })
    })
    .await;
    // Nothing runs there, nothing is lost: the server waits, its start not dropped.
    let (status, body) = app
        .call(Method::POST, &format!("/v1/servers/{id}/start"), Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let state = app.state_of(&token, id).await;
    assert_ne!(
        state, "running",
        "no container can run on a node that fails its host key"
    );
    let (status, _) = app.get(&format!("/v1/servers/{id}"), &token).await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

// --- player counts by RCON `list` ---

#[sqlx::test(migrations = "../migrations")]
async fn player_counts_read_by_rcon_list_keep_a_server_awake_that_hides_its_players_from_status_pings(pool: PgPool) {
    let mut config = test_config();
    config.containers.player_count_source = payperplay_prod::config::PlayerCountSource::Rcon;
    config
        .containers
        .extra_env
        .insert("HIDE_ONLINE_PLAYERS".to_string(), "true".to_string());
    let app = TestApp::start_with(pool, config).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("rcon@example.com").await;
    app.credit(&admin, user_id, 100_000_000).await;
    let id = app.create_server(&token, "hidden", 2048).await;
    start(&app, &token, id).await;
    wait_until("running", 20_000, || async {
        app.state_of(&token, id).await == "running"
    })
    .await;
    let address = game_address(&app, id).await;
    let poll_ms = app.config.containers.player_poll_interval_ms;
    let watch = Stopwatch::start();
    let player = join(address, "Hidden").await;
    wait_until("the core sees the player through RCON", 10_000, || async {
        players_seen_by_core(&app, id).await == 1
    })
    .await;
    eprintln!(
        "figure: player join seen by the core through RCON list after {} ms (poll interval {poll_ms} ms)",
        watch.elapsed().as_millis()
    );
    // Status pings cannot see them: the count came from RCON.
    let report = payperplay_nodes::ready::status(address).await.expect("answers");
    assert_eq!(report.players_online, 0, "status pings hide the players");

    let idle_ms = app.config.core.lifecycle.idle_sleep_after_ms;
    app.clock.advance_ms(idle_ms + 60_000);
    tokio::time::sleep(Duration::from_millis(3 * poll_ms)).await;
    assert_eq!(app.state_of(&token, id).await, "running", "a player is on");
    assert_eq!(players_seen_by_core(&app, id).await, 1);

    drop(player);
    wait_until("the core sees the player leave", 10_000, || async {
        players_seen_by_core(&app, id).await == 0
    })
    .await;
    app.clock.advance_ms(idle_ms + 60_000);
    wait_until("sleeping", 20_000, || async {
        app.state_of(&token, id).await == "sleeping"
    })
    .await;
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_node_lost_before_serve_restarted_is_taken_back_when_it_answers_again(pool: PgPool) {
    let mut sshd = PrivateSshd::start().await;
    let mut config = test_config();
    config.fleet.dedicated_nodes = vec![
        test_node("remote-again", 12 * 1024, ssh_engine(sshd.port)),
        test_node("local-stay", 8 * 1024, local_engine()),
    ];
    let app = TestApp::start_with(pool, config).await;
    let (admin, _) = app.admin().await;
    let node_state = |nodes: &Value, name: &str| -> (Value, Value) {
        let node = nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|node| node["name"] == name)
            .cloned()
            .unwrap_or(Value::Null);
        (node["state"].clone(), node["engine_ready"].clone())
    };
    wait_until("both engines answer", 10_000, || async {
        let (_, nodes) = app.get("/v1/admin/nodes", &admin).await;
        node_state(&nodes, "remote-again").1 == true && node_state(&nodes, "local-stay").1 == true
    })
    .await;
    sshd.kill().await;
    wait_until("the node is lost", 30_000, || async {
        let (_, nodes) = app.get("/v1/admin/nodes", &admin).await;
        node_state(&nodes, "remote-again").0 == "lost"
    })
    .await;
    // serve restarts while the node is lost; the node answers again after that.
    let app = app.restart().await;
    let (_, nodes) = app.get("/v1/admin/nodes", &admin).await;
    assert_eq!(node_state(&nodes, "remote-again").0, "lost", "{nodes}");
    sshd.restart().await;
    wait_until("the node is ready again", 30_000, || async {
        let (_, nodes) = app.get("/v1/admin/nodes", &admin).await;
        node_state(&nodes, "remote-again") == (Value::from("ready"), Value::from(true))
    })
    .await;
    app.stop().await;
}
