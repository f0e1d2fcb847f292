//! The player router wired to the platform (`payperplay_prod::router::PlatformBackend`):
//! a login through the router to a sleeping server wakes it (`Input::StartServer`), the
//! player is held while a real test game server boots and then joins, the core counts
//! the player until they leave; without balance a clear disconnect and no start.
//!
//! The container side here is a test driver that runs each server's "container" as a
//! `payperplay-testgame` process on a free loopback port and reports the boot when its
//! status ping answers (prod's own container driver is still the in-process fake, which
//! has no game port).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{START, TestApp, eventually, test_config};
use payperplay_core::{CommandId, Input, ServerId};
use payperplay_mcproto::frame::{PACKET_BYTES_MAX, read_frame};
use payperplay_mcproto::packets::{Handshake, LoginStart, NextState, ids, login_disconnect_reason};
use payperplay_prod::clock::ManualClock;
use payperplay_prod::drivers::{BoxFuture, ContainerDriver, DriverError, Drivers, NoCloud, NodeRef, ObservationSink};
use payperplay_prod::router::PlatformBackend;
use payperplay_router::{RouterConfig, RouterHandle};
use sqlx::PgPool;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const DOMAIN: &str = "play.test";
/// The test game server "boots" this long (a JVM takes longer): the player is held.
const BOOT_DELAY_MS: &str = "1000";

fn testgame_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PAYPERPLAY_TESTGAME_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().and_then(Path::parent).unwrap().join("payperplay-testgame");
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build --release -p payperplay-testgame` (cargo test --workspace does)",
        binary.display()
    );
    binary
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
    let mut stream = TcpStream::connect(router.local_addr()).await.unwrap();
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
