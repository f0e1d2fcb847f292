//! The player router wired to the platform (`payperplay_prod::router::PlatformBackend`):
//! a login through the router to a sleeping server wakes it (`Input::StartServer`), the
//! player is held while a real test game server boots and then joins, the core counts
//! the player until they leave; without balance a clear disconnect and no start.
//!
//! The first tests run each server's "container" as a `payperplay-testgame` process on
//! a free loopback port (a test driver that reports the boot when its status ping
//! answers); the rest use the real container driver on the test engine: a sleeping
//! server woken by a login and put to sleep again after its player leaves, custom
//! hostnames set through the API and routed, and `payperplay router` as its own process
//! in front of a `serve` process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{START, TestApp, eventually, real_drivers, remove_test_containers, test_config};
use crate::containers::{database_url, http, serve_config_text, wait_until};
use axum::http::{Method, StatusCode};
use payperplay_core::{CommandId, Input, ServerId};
use payperplay_mcproto::frame::{PACKET_BYTES_MAX, read_frame};
use payperplay_mcproto::packets::{Handshake, LoginStart, NextState, ids, login_disconnect_reason};
use payperplay_prod::clock::ManualClock;
use payperplay_prod::drivers::{BoxFuture, ContainerDriver, DriverError, Drivers, NoCloud, NodeRef, ObservationSink};
use payperplay_prod::router::PlatformBackend;
use payperplay_router::{RouterConfig, RouterHandle};
use payperplay_testgame::test_support::{free_port, testgame_binary};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const DOMAIN: &str = "play.test";
/// The test game server "boots" this long (a JVM takes longer): the player is held.
const BOOT_DELAY_MS: &str = "1000";

/// Runs each server's container as a test game server process.
struct ProcessContainers {
    games: Mutex<BTreeMap<ServerId, (Child, SocketAddr)>>,
    data_dir: tempfile::TempDir,
}

impl ProcessContainers {
    fn new() -> Self {
        ProcessContainers {
            games: Mutex::new(BTreeMap::new()),
            data_dir: tempfile::tempdir().unwrap(),
        }
    }

    fn running(&self) -> usize {
        self.games.lock().unwrap().len()
    }
}

impl Drop for ProcessContainers {
    fn drop(&mut self) {
        for (_, (mut child, _)) in std::mem::take(&mut *self.games.lock().unwrap()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl ContainerDriver for ProcessContainers {
    fn start_container(
        &self,
        _command_id: CommandId,
        server_id: ServerId,
        _node: NodeRef,
        _ram_mib: u32,
        _restore_world: bool,
        sink: ObservationSink,
    ) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async move {
            let port = free_port();
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            let child = Command::new(testgame_binary())
                .env_clear()
                .env("EULA", "TRUE")
                .env("SERVER_IP", "127.0.0.1")
                .env("SERVER_PORT", port.to_string())
                .env("ENABLE_RCON", "false")
                .env("MOTD", format!("server {server_id}"))
                .env("TESTGAME_BOOT_DELAY_MS", BOOT_DELAY_MS)
                .env("TESTGAME_DATA_DIR", self.data_dir.path().join(server_id.0.to_string()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|error| DriverError::Permanent(format!("cannot run the test game server: {error}")))?;
            self.games.lock().unwrap().insert(server_id, (child, address));
            // The readiness observer: booted once the game port answers a status ping.
            tokio::spawn(async move {
                while payperplay_mcproto::status_ping(address, "ready", Duration::from_secs(1))
                    .await
                    .is_err()
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                sink.observe(Input::ServerBooted { server_id }).await;
            });
            Ok(())
        })
    }

    fn stop_container(
        &self,
        _command_id: CommandId,
        server_id: ServerId,
        _node: NodeRef,
    ) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async move {
            if let Some((mut child, _)) = self.games.lock().unwrap().remove(&server_id) {
                let _ = child.kill();
                let _ = child.wait();
            }
            Ok(())
        })
    }

    fn archive_world(&self, _command_id: CommandId, _server_id: ServerId) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async { Ok(()) })
    }

    fn delete_world(&self, _command_id: CommandId, _server_id: ServerId) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async { Ok(()) })
    }

    fn game_address(&self, server_id: ServerId) -> Option<SocketAddr> {
        self.games.lock().unwrap().get(&server_id).map(|(_, address)| *address)
    }
}

async fn start(pool: PgPool) -> (TestApp, Arc<ProcessContainers>, RouterHandle) {
    let mut config = test_config();
    config.router.domain = DOMAIN.to_string();
    let containers = Arc::new(ProcessContainers::new());
    let drivers = Drivers {
        cloud: Arc::new(NoCloud),
        containers: containers.clone(),
        fleet: None,
    };
    let app = TestApp::start_full(pool, config, ManualClock::new(START), drivers).await;
    let backend = PlatformBackend::new(
        app.services.as_ref().unwrap().handle.clone(),
        app.store.clone(),
        containers.clone(),
    );
    let router_config = RouterConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..app.config.router.clone()
    };
    let router = payperplay_router::start(router_config, backend).await.unwrap();
    (app, containers, router)
}

/// Sends a 1.12.2 login for `player` naming `hostname` through the router.
async fn login(router: &RouterHandle, hostname: &str, player: &str) -> BufReader<TcpStream> {
    login_at(router.local_addr(), hostname, player).await
}

/// Sends a 1.12.2 login for `player` naming `hostname` to the router at `address`.
async fn login_at(address: SocketAddr, hostname: &str, player: &str) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let mut bytes = Handshake {
        protocol_version: 340,
        server_address: hostname.to_string(),
        server_port: 25565,
        next_state: NextState::Login,
    }
    .to_packet()
    .encode();
    bytes.extend(
        LoginStart {
            name: player.to_string(),
        }
        .to_packet()
        .encode(),
    );
    stream.write_all(&bytes).await.unwrap();
    BufReader::new(stream)
}

async fn status_field(app: &TestApp, token: &str, server_id: i64, field: &str) -> serde_json::Value {
    let (_, body) = app.get(&format!("/v1/servers/{server_id}"), token).await;
    body["status"][field].clone()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_login_through_the_router_wakes_a_stopped_server_and_the_core_counts_the_player(pool: PgPool) {
    let (app, containers, router) = start(pool).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("owner@example.com").await;
    app.credit(&admin, user_id, 5_000_000).await;
    let id = app.create_server(&token, "My Survival", 4096).await;

    // The API shows the address players type.
    let (_, view) = app.get(&format!("/v1/servers/{id}"), &token).await;
    let hostname = format!("my-survival-{id}.{DOMAIN}");
    assert_eq!(view["address"], hostname.as_str());
    assert_eq!(view["status"]["state"], "stopped");
    let asleep = payperplay_mcproto::status_ping(router.local_addr(), &hostname, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(asleep.motd, "stopped: join to start");

    let mut player = login(&router, &hostname, "Alex").await;
    eventually("the login to start the server", || async {
        status_field(&app, &token, id, "state").await != "stopped"
    })
    .await;
    // Held while the game server boots, then the server's Login Success arrives.
    let success = tokio::time::timeout(Duration::from_secs(30), read_frame(&mut player, PACKET_BYTES_MAX))
        .await
        .expect("the held player reached the server")
        .unwrap();
    assert_eq!(success.id, ids::LOGIN_SUCCESS);
    assert_eq!(status_field(&app, &token, id, "state").await, "running");
    assert_eq!(containers.running(), 1);
    eventually("the core to count the player", || async {
        status_field(&app, &token, id, "players").await == 1
    })
    .await;
    // A status ping through the router now reaches the server itself.
    let running = payperplay_mcproto::status_ping(router.local_addr(), &hostname, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        (running.motd.as_str(), running.players_online),
        (format!("server {id}").as_str(), 1)
    );

    drop(player);
    eventually("the core to see the player leave", || async {
        status_field(&app, &token, id, "players").await == 0
    })
    .await;
    router.stop().await;
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_login_to_a_server_whose_owner_has_no_balance_is_refused_and_starts_nothing(pool: PgPool) {
    let (app, containers, router) = start(pool).await;
    let (token, _) = app.user("broke@example.com").await;
    let id = app.create_server(&token, "broke", 4096).await;
    let hostname = format!("broke-{id}.{DOMAIN}");

    let mut player = login(&router, &hostname, "Alex").await;
    let refusal = tokio::time::timeout(Duration::from_secs(30), read_frame(&mut player, PACKET_BYTES_MAX))
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(
        login_disconnect_reason(&refusal).unwrap(),
        "This server is asleep and its owner's balance is too low to start it. Ask the owner to top up."
    );
    assert_eq!(status_field(&app, &token, id, "state").await, "stopped");
    assert_eq!(containers.running(), 0);

    // A hostname with another server's id, or a name that is not the server's, is unknown.
    let wrong_name = payperplay_mcproto::status_ping(
        router.local_addr(),
        &format!("other-{id}.{DOMAIN}"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(
        wrong_name.motd,
        format!("No server at other-{id}.{DOMAIN}: check the address")
    );
    router.stop().await;
    app.stop().await;
}

// --- the real container driver behind the router ---

/// The app on the test engine (real containers, the test game server booting in
/// `boot_delay_ms`), and the router in front of it.
async fn start_on_engine(pool: PgPool, boot_delay_ms: u64) -> (TestApp, RouterHandle) {
    let mut config = test_config();
    config.router.domain = DOMAIN.to_string();
    config
        .containers
        .extra_env
        .insert("TESTGAME_BOOT_DELAY_MS".to_string(), boot_delay_ms.to_string());
    let drivers = real_drivers(&config, &pool).await;
    let containers = drivers.containers.clone();
    let app = TestApp::start_full(pool, config, ManualClock::new(START), drivers).await;
    let backend = PlatformBackend::new(
        app.services.as_ref().unwrap().handle.clone(),
        app.store.clone(),
        containers,
    );
    let router_config = RouterConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..app.config.router.clone()
    };
    let router = payperplay_router::start(router_config, backend).await.unwrap();
    (app, router)
}

#[sqlx::test(migrations = "../migrations")]
async fn a_login_wakes_a_sleeping_container_the_core_counts_the_player_and_it_sleeps_after_they_leave(pool: PgPool) {
    let (app, router) = start_on_engine(pool, 1_500).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("sleeper@example.com").await;
    app.credit(&admin, user_id, 100_000_000).await;
    let id = app.create_server(&token, "Dozy", 2048).await;
    let hostname = format!("dozy-{id}.{DOMAIN}");
    let idle_ms = app.config.core.lifecycle.idle_sleep_after_ms;

    // Started once, then idle: it goes to sleep and its container is removed.
    let (status, body) = app
        .call(Method::POST, &format!("/v1/servers/{id}/start"), Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    wait_until("running", 30_000, || async {
        app.state_of(&token, id).await == "running"
    })
    .await;
    app.clock.advance_ms(idle_ms + 60_000);
    wait_until("asleep", 30_000, || async {
        app.state_of(&token, id).await == "sleeping"
    })
    .await;
    assert!(
        app.container_of(id).await.is_none(),
        "a sleeping server has no container"
    );
    let asleep = payperplay_mcproto::status_ping(router.local_addr(), &hostname, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(asleep.motd, "sleeping: join to start");

    // A login through the router: held while a new container boots, then connected.
    let mut player = login(&router, &hostname, "Alex").await;
    wait_until("the login to wake the server", 10_000, || async {
        app.state_of(&token, id).await != "sleeping"
    })
    .await;
    let success = tokio::time::timeout(Duration::from_secs(30), read_frame(&mut player, PACKET_BYTES_MAX))
        .await
        .expect("the held player reached the server")
        .unwrap();
    assert_eq!(success.id, ids::LOGIN_SUCCESS);
    assert_eq!(app.state_of(&token, id).await, "running");
    assert!(app.container_of(id).await.is_some_and(|container| container.running));
    wait_until("the core to count the player", 10_000, || async {
        status_field(&app, &token, id, "players").await == 1
    })
    .await;

    // Past idle_sleep_after with the player on: still running.
    app.clock.advance_ms(idle_ms + 60_000);
    tokio::time::sleep(Duration::from_millis(3 * app.config.containers.player_poll_interval_ms)).await;
    assert_eq!(app.state_of(&token, id).await, "running");
    assert_eq!(status_field(&app, &token, id, "players").await, 1);

    // The player leaves: 0 at once, and the server sleeps after idle_sleep_after.
    drop(player);
    wait_until("the core to see the player leave", 10_000, || async {
        status_field(&app, &token, id, "players").await == 0
    })
    .await;
    app.clock.advance_ms(idle_ms + 60_000);
    wait_until("asleep again", 30_000, || async {
        app.state_of(&token, id).await == "sleeping"
    })
    .await;
    assert!(app.container_of(id).await.is_none());
    router.stop().await;
    app.stop().await;
}

// --- custom hostnames ---

/// What the router answers for a stopped server whose owner has no balance (these
/// owners were never credited): proof enough that the hostname led to the server.
const NO_BALANCE_MOTD: &str = "asleep: the owner's balance is too low to start it";

#[sqlx::test(migrations = "../migrations")]
async fn a_custom_hostname_is_validated_unique_shown_and_routed_whatever_its_case(pool: PgPool) {
    let (app, _containers, router) = start(pool).await;
    let (token, _) = app.user("custom@example.com").await;
    let (other_token, _) = app.user("rival@example.com").await;
    let (status, body) = app
        .post(
            "/v1/servers",
            Some(&token),
            json!({"name": "alpha", "ram_mib": 4096, "hostname": "MC.Example.ORG."}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["hostname"], "mc.example.org");
    let alpha = body["id"].as_i64().unwrap();

    // Unique across servers, whoever owns them: 409 naming the field.
    let (status, body) = app
        .post(
            "/v1/servers",
            Some(&other_token),
            json!({"name": "beta", "ram_mib": 4096, "hostname": "mc.example.org"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "hostname_taken");
    assert_eq!(body["error"]["field"], "hostname");
    let beta = app.create_server(&other_token, "beta", 4096).await;
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/servers/{beta}"),
            Some(&other_token),
            Some(json!({"hostname": "mc.EXAMPLE.org"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["field"], "hostname");

    // Not a hostname, or one under the platform's domain: 400 naming the field.
    for bad in ["mc_1.example.org", "localhost", "10.0.0.1", "x.play.test"] {
        let (status, body) = app
            .call(
                Method::PATCH,
                &format!("/v1/servers/{beta}"),
                Some(&other_token),
                Some(json!({ "hostname": bad })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["field"], "hostname", "{bad}");
        assert!(
            body["error"]["message"].as_str().unwrap().starts_with("hostname: "),
            "{body}"
        );
    }

    // Routed: case-insensitive, with or without a trailing dot; the label still works.
    for typed in ["mc.example.org", "MC.Example.Org.", "mc.example.org\0FML2\0"] {
        let answer = payperplay_mcproto::status_ping(router.local_addr(), typed, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(answer.motd, NO_BALANCE_MOTD, "{typed:?}");
    }
    let unknown = payperplay_mcproto::status_ping(router.local_addr(), "mc.example.net", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(unknown.motd, "No server at mc.example.net: check the address");

    // Cleared with "", and free again once its server is deleted.
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/servers/{beta}"),
            Some(&other_token),
            Some(json!({"hostname": "beta.example.org"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["hostname"], "beta.example.org");
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/servers/{beta}"),
            Some(&other_token),
            Some(json!({"hostname": ""})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["hostname"], Value::Null);
    let (status, body) = app
        .call(Method::DELETE, &format!("/v1/servers/{alpha}"), Some(&token), None)
        .await;
    assert!(status.is_success(), "{body}");
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/servers/{beta}"),
            Some(&other_token),
            Some(json!({"hostname": "mc.example.org"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer = payperplay_mcproto::status_ping(router.local_addr(), "mc.example.org", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(answer.motd, NO_BALANCE_MOTD);
    let (_, view) = app.get(&format!("/v1/servers/{beta}"), &other_token).await;
    assert_eq!(view["hostname"], "mc.example.org");

    // The OpenAPI document has the field, and no internal route.
    let document = serde_json::to_value(payperplay_prod::api::openapi_document()).unwrap();
    let schemas = &document["components"]["schemas"];
    for schema in ["ServerView", "CreateServerRequest", "UpdateServerRequest"] {
        assert!(schemas[schema]["properties"]["hostname"].is_object(), "{schema}");
    }
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.keys().all(|path| !path.starts_with("/internal")));
    router.stop().await;
    app.stop().await;
}

// --- the router as its own process ---

fn spawn_payperplay(subcommand: &str, config_path: &Path, envs: &[(&str, String)]) -> tokio::process::Child {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_payperplay"));
    command
        .arg(subcommand)
        .arg("--config")
        .arg(config_path)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (name, value) in envs {
        command.env(name, value);
    }
    command.spawn().expect("payperplay starts")
}

#[sqlx::test(migrations = "../migrations")]
async fn a_router_process_in_front_of_serve_answers_pings_and_wakes_a_server_on_login(pool: PgPool) {
    // An account and a server made in process, then the database handed to the binary
    // (whose clock is the wall clock: the session must still be valid).
    let mut config = test_config();
    config.router.domain = DOMAIN.to_string();
    #[allow(clippy::disallowed_methods)]
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let clock = ManualClock::new(payperplay_core::Timestamp(now_ms));
    let drivers = real_drivers(&config, &pool).await;
    let app = TestApp::start_full(pool.clone(), config.clone(), clock, drivers).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("remote@example.com").await;
    app.credit(&admin, user_id, 100_000_000).await;
    let id = app.create_server(&token, "Far Away", 2048).await;
    let fleet = app.services.as_ref().unwrap().fleet.clone().unwrap();
    app.stop().await;

    let (url, database) = database_url(&pool).await;
    let api_port = free_port();
    let router_port = free_port();
    let router_token = hex::encode(rand_bytes());
    let serve_config = std::env::temp_dir().join(format!("{database}-serve.toml"));
    std::fs::write(
        &serve_config,
        serve_config_text(
            &config,
            1_500,
            0,
            &format!("[router]\nenabled = false\ndomain = \"{DOMAIN}\"\nlisten = \"127.0.0.1:{router_port}\"\n"),
        ),
    )
    .unwrap();
    let router_config = std::env::temp_dir().join(format!("{database}-router.toml"));
    std::fs::write(
        &router_config,
        format!(
            "[router]\ndomain = \"{DOMAIN}\"\nlisten = \"127.0.0.1:{router_port}\"\n[router_link]\napi_url = \"http://127.0.0.1:{api_port}\"\n"
        ),
    )
    .unwrap();
    let secret_key = payperplay_nodes::SecretBox::generate_key_hex().unwrap();
    let mut serve = spawn_payperplay(
        "serve",
        &serve_config,
        &[
            ("PAYPERPLAY_DATABASE_URL", url.clone()),
            ("PAYPERPLAY_LISTEN", format!("127.0.0.1:{api_port}")),
            ("PAYPERPLAY_SECRET_KEY", format!("1:{secret_key}")),
            ("PAYPERPLAY_ROUTER_TOKEN", router_token.clone()),
        ],
    );
    wait_until("serve ready", 30_000, || async {
        http(api_port, "GET", "/v1/health/ready", None, None)
            .await
            .map(|(s, _)| s)
            == Some(200)
    })
    .await;
    let mut router_process = spawn_payperplay(
        "router",
        &router_config,
        &[("PAYPERPLAY_ROUTER_TOKEN", router_token.clone())],
    );
    let router_address = SocketAddr::from(([127, 0, 0, 1], router_port));

    // The internal routes want the router token; the public document does not list them.
    let resolve = json!({"host": {"name": format!("far-away-{id}")}});
    let (status, _) = http(api_port, "POST", "/internal/router/resolve", None, Some(&resolve))
        .await
        .unwrap();
    assert_eq!(status, 401);
    let (status, _) = http(
        api_port,
        "POST",
        "/internal/router/resolve",
        Some("wrong"),
        Some(&resolve),
    )
    .await
    .unwrap();
    assert_eq!(status, 401);
    let (status, body) = http(
        api_port,
        "POST",
        "/internal/router/resolve",
        Some(&router_token),
        Some(&resolve),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["route"]["server_id"], id);
    let (_, document) = http(api_port, "GET", "/v1/openapi.json", None, None).await.unwrap();
    assert!(
        document["paths"]
            .as_object()
            .unwrap()
            .keys()
            .all(|path| !path.starts_with("/internal"))
    );

    // A custom hostname set through serve's API routes through the router process.
    let (status, body) = http(
        api_port,
        "PATCH",
        &format!("/v1/servers/{id}"),
        Some(&token),
        Some(&json!({"hostname": "far.example.org"})),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let hostname = format!("far-away-{id}.{DOMAIN}");
    wait_until("the router process answers", 30_000, || async {
        payperplay_mcproto::status_ping(router_address, &hostname, Duration::from_secs(2))
            .await
            .is_ok_and(|answer| answer.motd == "stopped: join to start")
    })
    .await;
    let custom = payperplay_mcproto::status_ping(router_address, "Far.Example.org", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(custom.motd, "stopped: join to start");

    // A login through the router process wakes the server in serve and is connected.
    let mut player = login_at(router_address, &hostname, "Alex").await;
    let success = tokio::time::timeout(Duration::from_secs(30), read_frame(&mut player, PACKET_BYTES_MAX))
        .await
        .expect("the held player reached the server")
        .unwrap();
    assert_eq!(success.id, ids::LOGIN_SUCCESS);
    let view = |token: String| async move {
        http(api_port, "GET", &format!("/v1/servers/{id}"), Some(&token), None)
            .await
            .map(|(_, body)| body)
            .unwrap_or(Value::Null)
    };
    assert_eq!(view(token.clone()).await["status"]["state"], "running");
    wait_until("serve counts the player", 10_000, || async {
        view(token.clone()).await["status"]["players"] == 1
    })
    .await;
    drop(player);
    wait_until("serve sees the player leave", 10_000, || async {
        view(token.clone()).await["status"]["players"] == 0
    })
    .await;

    router_process.kill().await.unwrap();
    serve.kill().await.unwrap();
    let _ = std::fs::remove_file(&serve_config);
    let _ = std::fs::remove_file(&router_config);
    remove_test_containers(&fleet).await;
}

/// 32 random bytes (the router token).
fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0; 32];
    getrandom::fill(&mut bytes).expect("random bytes");
    bytes
}
