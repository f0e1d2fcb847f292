//! Shared test setup: a real Postgres database per test (`#[sqlx::test]` creates and
//! migrates it from DATABASE_URL, which `scripts/start-services.sh` exports), the
//! runtime with the real container driver on the test Docker engine (the test image,
//! its boot delay through `[containers] extra_env`), no cloud unless a test configures
//! `[cloud]` (the fake Hetzner API), and the router
//! called without a socket.
//!
//! Tests run in parallel on one engine with host networking, so each test gets its own
//! platform label (reconciliation and port allocation see only its containers), its
//! own slice of game ports, and server ids from its own range (container names are
//! derived from server ids).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use payperplay_core::{PolicyConfig, Timestamp};
use payperplay_prod::api::{self, AppState};
use payperplay_prod::clock::{Clock, ManualClock};
use payperplay_prod::config::{
    Argon2Config, Config, DedicatedNodeConfig, EngineConfig, PortRange, SecretKeyConfig, SshNodeConfig,
};
use payperplay_prod::drivers::Drivers;
use payperplay_prod::store::Store;
use payperplay_prod::{Services, drivers_from_config};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt;

pub const START: Timestamp = Timestamp(1_790_000_000_000);

/// Game ports per test (a slice of [`GAME_PORTS_FIRST`]..).
pub const GAME_PORTS_PER_TEST: u16 = 16;
/// Below Linux's ephemeral range (32768-60999), so no outgoing connection takes one.
pub const GAME_PORTS_FIRST: u16 = 20_000;
/// Slices handed out before they are used again.
const PORT_SLICES: u32 = 48;
/// RCON port = game port + this.
pub const RCON_PORT_OFFSET: u16 = 1_000;
/// The test image's boot delay (`TESTGAME_BOOT_DELAY_MS`).
pub const TEST_BOOT_DELAY_MS: u64 = 50;

static NEXT_SLICE: AtomicU32 = AtomicU32::new(0);

/// Platform labels of these tests: `ppp-test-<pid>-<n>`.
const PLATFORM_PREFIX: &str = "ppp-test-";

/// Removes containers and volumes that earlier runs of these tests left on the test
/// engine (a failed test skips its clean-up): they would hold game ports. Once per run.
fn remove_leftovers_of_earlier_runs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let socket = format!("unix://{}", required("PAYPERPLAY_TEST_DOCKER_SOCKET"));
        let ours = format!("{PLATFORM_PREFIX}{}-", std::process::id());
        let list = |args: &[&str]| -> Vec<String> {
            let output = std::process::Command::new("docker")
                .arg("-H")
                .arg(&socket)
                .args(args)
                .output()
                .expect("the docker CLI runs");
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| {
                    let (id, platform) = line.split_once(' ')?;
                    (platform.starts_with(PLATFORM_PREFIX) && !platform.starts_with(&ours)).then(|| id.to_string())
                })
                .collect()
        };
        let containers = list(&["ps", "-a", "--format", "{{.ID}} {{.Label \"payperplay.platform\"}}"]);
        if !containers.is_empty() {
            let _ = std::process::Command::new("docker")
                .arg("-H")
                .arg(&socket)
                .args(["rm", "-f"])
                .args(&containers)
                .output();
        }
        let volumes = list(&[
            "volume",
            "ls",
            "--format",
            "{{.Name}} {{.Label \"payperplay.platform\"}}",
        ]);
        if !volumes.is_empty() {
            let _ = std::process::Command::new("docker")
                .arg("-H")
                .arg(&socket)
                .args(["volume", "rm", "-f"])
                .args(&volumes)
                .output();
        }
    });
}

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: prod's tests need the Docker engine, sshd and test image of scripts/start-services.sh"
        )
    })
}

/// A number no other test of this run (or a recent one) uses.
fn unique_number() -> u64 {
    #[allow(clippy::disallowed_methods)]
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as u64;
    nanos / 1_000 % 1_000_000_000 + u64::from(NEXT_SLICE.load(Ordering::SeqCst))
}

/// A dedicated node on the test engine, with the next slice of game ports.
pub fn test_node(name: &str, capacity_mib: u32, engine: EngineConfig) -> DedicatedNodeConfig {
    let slice = NEXT_SLICE.fetch_add(1, Ordering::SeqCst) % PORT_SLICES;
    let first = GAME_PORTS_FIRST + slice as u16 * GAME_PORTS_PER_TEST;
    DedicatedNodeConfig {
        name: name.to_string(),
        capacity_mib,
        monthly_cost_micros: 0,
        is_system: false,
        engine: Some(engine),
        bind_address: std::net::Ipv4Addr::LOCALHOST.into(),
        game_ports: PortRange {
            first,
            last: first + GAME_PORTS_PER_TEST - 1,
        },
        rcon_ports_first: first + RCON_PORT_OFFSET,
        data_path: "/".to_string(),
    }
}

/// The test engine's local socket.
pub fn local_engine() -> EngineConfig {
    EngineConfig {
        socket_path: required("PAYPERPLAY_TEST_DOCKER_SOCKET"),
        ssh: None,
    }
}

/// The same engine reached only through the test sshd on `ssh_port`.
pub fn ssh_engine(ssh_port: u16) -> EngineConfig {
    EngineConfig {
        socket_path: required("PAYPERPLAY_TEST_DOCKER_SOCKET"),
        ssh: Some(SshNodeConfig {
            host: "127.0.0.1".to_string(),
            port: ssh_port,
            user: "root".to_string(),
            key_file: required("PAYPERPLAY_TEST_SSH_KEY"),
            host_keys: vec![required("PAYPERPLAY_TEST_SSH_HOST_KEY")],
            learn_host_key_on_first_use: false,
        }),
    }
}

pub fn test_ssh_port() -> u16 {
    required("PAYPERPLAY_TEST_SSH_PORT").parse().expect("a port number")
}

/// Cheap argon2 (tests hash many passwords in debug builds), generous rate limits,
/// a static fleet of one 16 GiB dedicated node on the test engine (three 4 GiB servers
/// fit, a fourth queues) running the test image, which boots in 50 ms.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.auth.argon2 = Argon2Config {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
    };
    config.auth.login_per_minute = 10_000;
    config.auth.register_per_minute = 10_000;
    config.auth.login_per_account_per_minute = 10_000;
    config.auth.mutations_per_user_per_minute = 100_000;
    config.auth.servers_per_user_max = 100_000;
    config.core.policy = PolicyConfig::default();
    config.fleet.dedicated_nodes = vec![test_node("dedi-test", 16 * 1024, local_engine())];
    remove_leftovers_of_earlier_runs();
    config.containers.platform = format!("{PLATFORM_PREFIX}{}-{}", std::process::id(), unique_number());
    config.containers.image = required("PAYPERPLAY_TEST_IMAGE");
    config
        .containers
        .extra_env
        .insert("TESTGAME_BOOT_DELAY_MS".to_string(), TEST_BOOT_DELAY_MS.to_string());
    config.containers.boot_timeout_ms = 20_000;
    config.containers.player_poll_interval_ms = 200;
    config.containers.probe_interval_ms = 200;
    config.containers.probe_misses_max = 3;
    config.containers.reconcile_interval_ms = 500;
    config.containers.unknown_grace_ms = 1_000;
    config.containers.stop_timeout_s = 10;
    config.secrets.keys = vec![SecretKeyConfig {
        id: 1,
        key_hex: SecretString::from(payperplay_nodes::SecretBox::generate_key_hex().expect("random key")),
    }];
    config.runtime.command_retry_backoff_ms = 10;
    config.smtp.port = 1; // nothing listens: mail stays queued unless a test sets a sink
    config.smtp.retry_backoff_ms = 50;
    config.smtp.poll_interval_ms = 100;
    config
}

pub struct TestApp {
    pub config: Config,
    pub pool: PgPool,
    pub store: Store,
    pub clock: ManualClock,
    pub services: Option<Services>,
    pub router: Router,
}

impl TestApp {
    pub async fn start(pool: PgPool) -> TestApp {
        TestApp::start_with(pool, test_config()).await
    }

    pub async fn start_with(pool: PgPool, config: Config) -> TestApp {
        let drivers = real_drivers(&config, &pool).await;
        TestApp::start_full(pool, config, ManualClock::new(START), drivers).await
    }

    pub async fn start_full(pool: PgPool, config: Config, clock: ManualClock, drivers: Drivers) -> TestApp {
        if std::env::var_os("RUST_LOG").is_some() {
            static LOGGING: std::sync::Once = std::sync::Once::new();
            LOGGING.call_once(payperplay_prod::telemetry::init_logging);
        }
        // Server ids from a range of this test's own (container names derive from them);
        // a restart on the same database keeps the sequence where it is.
        let n_servers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM servers")
            .fetch_one(&pool)
            .await
            .expect("servers counted");
        if n_servers == 0 {
            let first_id = unique_number() as i64 * 1_000 + 1;
            sqlx::query(&format!("ALTER SEQUENCE servers_id_seq RESTART WITH {first_id}"))
                .execute(&pool)
                .await
                .expect("server ids moved to this test's range");
        }
        let store = Store::new(pool.clone());
        let shared_clock: Arc<dyn Clock> = Arc::new(clock.clone());
        let services = Services::start(&config, store.clone(), shared_clock.clone(), drivers.clone())
            .await
            .expect("services start");
        let mut state = AppState::new(
            &config,
            store.clone(),
            services.handle.clone(),
            shared_clock,
            services.mail_wakeup.clone(),
        );
        if let Some(fleet) = &services.fleet {
            state = state.with_fleet(fleet.clone());
        }
        let router = api::app(state, config.http.body_limit_bytes);
        TestApp {
            config,
            pool,
            store,
            clock,
            services: Some(services),
            router,
        }
    }

    /// Stops the runtime and starts a new one on the same database (journal replay).
    pub async fn restart(mut self) -> TestApp {
        self.services.take().expect("running").stop().await;
        let drivers = real_drivers(&self.config, &self.pool).await;
        TestApp::start_full(self.pool.clone(), self.config.clone(), self.clock.clone(), drivers).await
    }

    /// Stops the services and removes every container and world volume this test's
    /// nodes hold (the engine is shared by all tests).
    pub async fn stop(mut self) {
        if let Some(services) = self.services.take() {
            let fleet = services.fleet.clone();
            services.stop().await;
            if let Some(fleet) = fleet {
                remove_test_containers(&fleet).await;
            }
        }
    }

    /// The container of `server_id` on the test engine, if any.
    pub async fn container_of(&self, server_id: i64) -> Option<payperplay_nodes::ContainerInfo> {
        let fleet = self.services.as_ref()?.fleet.clone()?;
        for name in fleet.node_names() {
            let driver = fleet.driver(&name)?;
            if let Some(found) = driver.inspect(server_id as u64).await.expect("engine answers") {
                return Some(found);
            }
        }
        None
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .expect("request builds");
        self.send(request).await
    }

    pub async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.router.clone().oneshot(request).await.expect("router answers");
        let status = response.status();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if status.is_client_error() || status.is_server_error() {
            assert_error_shape(status, &value);
        }
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// The verification code mailed to `email` (read from the outbox).
    pub async fn verification_code(&self, email: &str) -> String {
        let body: String = sqlx::query_scalar(
            "SELECT body FROM email_outbox WHERE recipient = $1 AND kind = 'verification' ORDER BY id DESC LIMIT 1",
        )
        .bind(email)
        .fetch_one(&self.pool)
        .await
        .expect("verification mail queued");
        code_in(&body).expect("mail has a code")
    }

    /// Registers, verifies and logs in; returns (token, user id).
    pub async fn user(&self, email: &str) -> (String, i64) {
        let (status, body) = self
            .post(
                "/v1/accounts/register",
                None,
                json!({"email": email, "password": "correct horse battery"}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let code = self.verification_code(email).await;
        let (status, body) = self.post("/v1/accounts/verify", None, json!({"token": code})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = self
            .post(
                "/v1/accounts/login",
                None,
                json!({"email": email, "password": "correct horse battery"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (
            body["token"].as_str().unwrap().to_string(),
            body["user"]["id"].as_i64().unwrap(),
        )
    }

    /// An admin: admin@example.com, registered, verified and granted the role as
    /// `payperplay admin grant` does.
    pub async fn admin(&self) -> (String, i64) {
        let (token, user_id) = self.user("admin@example.com").await;
        payperplay_prod::api::accounts::change_admin_role(
            &self.store,
            "admin@example.com",
            payperplay_prod::store::AdminChange::Grant,
            "test",
            self.clock.now(),
        )
        .await
        .expect("admin granted");
        (token, user_id)
    }

    /// Credits `user_id` through the admin API and waits until the ledger has it.
    pub async fn credit(&self, admin_token: &str, user_id: i64, amount_micros: i64) {
        let before = self.store.balance(user_id).await.unwrap();
        let (status, body) = self
            .post(
                &format!("/v1/admin/users/{user_id}/credit"),
                Some(admin_token),
                json!({ "amount_micros": amount_micros }),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        eventually("credit posted to the ledger", || async {
            self.store.balance(user_id).await.unwrap() == before + amount_micros
        })
        .await;
    }

    pub async fn create_server(&self, token: &str, name: &str, ram_mib: u32) -> i64 {
        let (status, body) = self
            .post("/v1/servers", Some(token), json!({"name": name, "ram_mib": ram_mib}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_i64().unwrap()
    }

    pub async fn state_of(&self, token: &str, server_id: i64) -> String {
        let (status, body) = self.get(&format!("/v1/servers/{server_id}/status"), token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["state"].as_str().unwrap().to_string()
    }
}

/// The drivers `serve` would make from `config`: containers on the test engine.
pub async fn real_drivers(config: &Config, pool: &PgPool) -> Drivers {
    drivers_from_config(config, Store::new(pool.clone()))
        .await
        .expect("drivers from the test config")
}

/// Removes every container and world volume of the fleet's nodes (this test's label).
pub async fn remove_test_containers(fleet: &payperplay_prod::drivers::NodeFleet) {
    for name in fleet.node_names() {
        let Some(driver) = fleet.driver(&name) else { continue };
        let Ok(containers) = driver.list().await else { continue };
        for container in containers {
            if let Some(server_id) = container.server_id {
                let _ = driver.remove(server_id).await;
                let _ = driver.remove_world(server_id).await;
            }
        }
    }
}

/// A 64-hex-digit code on a line of its own.
pub fn code_in(body: &str) -> Option<String> {
    body.split_whitespace()
        .find(|word| word.len() == 64 && word.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
}

/// Every 4xx/5xx body is `{"error": {"code", "message"}}`.
pub fn assert_error_shape(status: StatusCode, body: &Value) {
    let error = &body["error"];
    assert!(
        error["code"].as_str().is_some_and(|code| !code.is_empty()),
        "{status}: error body without code: {body}"
    );
    assert!(
        error["message"].as_str().is_some_and(|message| !message.is_empty()),
        "{status}: error body without message: {body}"
    );
}

/// Polls `condition` for up to 10 s.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}
