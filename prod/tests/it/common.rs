//! Shared test setup: a real Postgres database per test (`#[sqlx::test]` creates and
//! migrates it from DATABASE_URL, which `scripts/start-services.sh` exports), the
//! runtime with fake drivers, and the router called without a socket.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use payperplay_core::{PolicyConfig, Timestamp};
use payperplay_prod::api::{self, AppState};
use payperplay_prod::clock::{Clock, ManualClock};
use payperplay_prod::config::{Argon2Config, Config, DedicatedNodeConfig};
use payperplay_prod::drivers::{Drivers, FakeCloud, FakeContainers};
use payperplay_prod::store::Store;
use payperplay_prod::{Services, fake_drivers};
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt;

pub const START: Timestamp = Timestamp(1_790_000_000_000);

/// Cheap argon2 (tests hash many passwords in debug builds), generous rate limits,
/// a static fleet of one 16 GiB dedicated node (three 4 GiB servers fit, a fourth
/// queues), fake drivers that boot in 50 ms.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.auth.argon2 = Argon2Config {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
    };
    config.auth.login_per_minute = 10_000;
    config.auth.register_per_minute = 10_000;
    config.auth.admin_emails = vec!["admin@example.com".to_string()];
    config.core.policy = PolicyConfig::default();
    config.fleet.dedicated_nodes = vec![DedicatedNodeConfig {
        name: "dedi-test".to_string(),
        capacity_mib: 16 * 1024,
        monthly_cost_micros: 0,
        is_system: false,
    }];
    config.drivers.fake_boot_ms = 50;
    config.drivers.fake_provision_ms = 100;
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
        let drivers = fake_drivers(&config);
        TestApp::start_full(pool, config, ManualClock::new(START), drivers).await
    }

    pub async fn start_full(pool: PgPool, config: Config, clock: ManualClock, drivers: Drivers) -> TestApp {
        let store = Store::new(pool.clone());
        let shared_clock: Arc<dyn Clock> = Arc::new(clock.clone());
        let services = Services::start(&config, store.clone(), shared_clock.clone(), drivers.clone())
            .await
            .expect("services start");
        let state = AppState::new(
            &config,
            store.clone(),
            services.handle.clone(),
            shared_clock,
            services.mail_wakeup.clone(),
        );
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
        let drivers = Drivers {
            cloud: Arc::new(FakeCloud::new(self.config.drivers.fake_provision_ms)),
            containers: Arc::new(FakeContainers::new(self.config.drivers.fake_boot_ms)),
        };
        TestApp::start_full(self.pool.clone(), self.config.clone(), self.clock.clone(), drivers).await
    }

    pub async fn stop(mut self) {
        if let Some(services) = self.services.take() {
            services.stop().await;
        }
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
        assert_eq!(status, StatusCode::CREATED, "{body}");
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

    /// An admin (admin@example.com is in the test config's admin list).
    pub async fn admin(&self) -> (String, i64) {
        self.user("admin@example.com").await
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
