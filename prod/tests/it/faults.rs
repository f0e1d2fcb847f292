//! Faults: a driver that panics, and the real process stopping on SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::common::{START, TestApp, eventually, test_config};
use axum::http::{Method, StatusCode};
use payperplay_core::{CommandId, ServerId};
use payperplay_prod::clock::ManualClock;
use payperplay_prod::drivers::{BoxFuture, ContainerDriver, DriverError, Drivers, NodeRef, ObservationSink};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Panics on the first start, then behaves like the real driver it wraps.
struct PanicsOnce {
    inner: Arc<dyn ContainerDriver>,
    starts: AtomicU32,
}

impl ContainerDriver for PanicsOnce {
    fn start_container(
        &self,
        command_id: CommandId,
        server_id: ServerId,
        node: NodeRef,
        ram_mib: u32,
        restore_world: bool,
        sink: ObservationSink,
    ) -> BoxFuture<'_, Result<(), DriverError>> {
        if self.starts.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("driver bug on first start");
        }
        self.inner
            .start_container(command_id, server_id, node, ram_mib, restore_world, sink)
    }

    fn stop_container(&self, c: CommandId, s: ServerId, n: NodeRef) -> BoxFuture<'_, Result<(), DriverError>> {
        self.inner.stop_container(c, s, n)
    }

    fn archive_world(&self, c: CommandId, s: ServerId) -> BoxFuture<'_, Result<(), DriverError>> {
        self.inner.archive_world(c, s)
    }

    fn delete_world(&self, c: CommandId, s: ServerId) -> BoxFuture<'_, Result<(), DriverError>> {
        self.inner.delete_world(c, s)
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_panicking_driver_is_retried_not_lost(pool: PgPool) {
    let config = test_config();
    let real = crate::common::real_drivers(&config, &pool).await;
    let drivers = Drivers {
        containers: Arc::new(PanicsOnce {
            inner: real.containers.clone(),
            starts: AtomicU32::new(0),
        }),
        ..real
    };
    let app = TestApp::start_full(pool, config, ManualClock::new(START), drivers).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("unlucky@example.com").await;
    app.credit(&admin, user_id, 1_000_000).await;
    let id = app.create_server(&token, "s", 2048).await;
    let (status, _) = app
        .call(Method::POST, &format!("/v1/servers/{id}/start"), Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually("running despite the panic", || async {
        app.state_of(&token, id).await == "running"
    })
    .await;
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM commands WHERE kind = 'start_container'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(status, "succeeded");
    assert_eq!(attempts, 2);
    app.stop().await;
}

async fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

#[sqlx::test(migrations = "../migrations")]
async fn serve_answers_ready_and_stops_cleanly_on_sigterm(pool: PgPool) {
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL (source scripts/start-services.sh)");
    let url = format!("{}/{database}", base.rsplit_once('/').unwrap().0);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let router_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_payperplay"))
        .arg("serve")
        .env("PAYPERPLAY_DATABASE_URL", &url)
        .env("PAYPERPLAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("PAYPERPLAY_ROUTER_LISTEN", format!("127.0.0.1:{router_port}"))
        .env("PAYPERPLAY_SMTP_PORT", "1")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("payperplay starts");
    eventually("ready", || async {
        http_get_status(port, "/v1/health/ready").await == Some(200)
    })
    .await;
    assert_eq!(http_get_status(port, "/v1/health/live").await, Some(200));
    assert_eq!(http_get_status(port, "/v1/openapi.json").await, Some(200));
    assert_eq!(http_get_status(port, "/metrics").await, Some(200));
    // The player router runs inside serve.
    let unknown = payperplay_mcproto::status_ping(
        std::net::SocketAddr::from(([127, 0, 0, 1], router_port)),
        "nobody.play.localhost",
        Duration::from_secs(10),
    )
    .await
    .expect("the player router answers");
    assert_eq!(unknown.motd, "No server at nobody.play.localhost: check the address");
    let pid = child.id().expect("running").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("stops within 15 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
    assert!(
        stderr.contains("shutdown signal received") && stderr.contains("stopped"),
        "{stderr}"
    );
    // The database URL (with any password) never shows in the log.
    assert!(!stderr.contains(&url), "{stderr}");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_runtime_is_restarted_after_a_database_failure(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    let (token, _) = app.user("resilient@example.com").await;
    // The journal becomes unwritable: the request fails with 503 (not a hang, not a
    // 500), nothing is left half-created, and the runtime task ends with an error.
    sqlx::query("ALTER TABLE journal RENAME TO journal_away")
        .execute(&pool)
        .await
        .unwrap();
    let (status, body) = app
        .post(
            "/v1/servers",
            Some(&token),
            serde_json::json!({"name": "lost", "ram_mib": 2048}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let n_servers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM servers")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n_servers, 0);
    let handle = app.services.as_ref().unwrap().handle.clone();
    eventually("runtime down", || async { !handle.is_ready() }).await;
    // The supervisor keeps restarting it; once the database is back it recovers.
    sqlx::query("ALTER TABLE journal_away RENAME TO journal")
        .execute(&pool)
        .await
        .unwrap();
    eventually("runtime ready again", || async { handle.is_ready() }).await;
    let id = app.create_server(&token, "back", 2048).await;
    assert_eq!(app.state_of(&token, id).await, "stopped");
    app.stop().await;
}
