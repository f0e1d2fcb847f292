//! Email is real: mail goes over SMTP to an aiosmtpd server on loopback that each
//! test starts itself (Python from PAYPERPLAY_PYTHON, which
//! `scripts/start-services.sh` exports), and is read back from its Maildir.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{TestApp, code_in, eventually, test_config};
use axum::http::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

pub(crate) struct SmtpSink {
    child: Child,
    maildir: PathBuf,
    pub(crate) port: u16,
}

fn python() -> String {
    std::env::var("PAYPERPLAY_PYTHON").unwrap_or_else(|_| {
        let venv = format!(
            "{}/.cache/payperplay-venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        );
        assert!(
            std::path::Path::new(&venv).exists(),
            "no Python with aiosmtpd: run `source scripts/start-services.sh` (it sets PAYPERPLAY_PYTHON)"
        );
        venv
    })
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl SmtpSink {
    pub(crate) fn start(port: u16) -> SmtpSink {
        let maildir = std::env::temp_dir().join(format!("payperplay-mail-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&maildir);
        let mut child = Command::new(python())
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd starts (pip install aiosmtpd, see prod/tests/py/requirements.txt)");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return SmtpSink { child, maildir, port };
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("aiosmtpd did not listen on {port}");
    }

    /// Every received message, as text.
    fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
            .collect()
    }

    pub(crate) fn messages_to(&self, address: &str) -> Vec<String> {
        self.messages()
            .into_iter()
            .filter(|m| m.contains(&format!("To: {address}")))
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.maildir);
    }
}

/// A running `serve` whose mail goes to a fresh SMTP sink.
async fn app_with_sink(pool: PgPool) -> (SmtpSink, TestApp) {
    let sink = SmtpSink::start(free_port());
    let mut config = test_config();
    config.smtp.port = sink.port;
    (sink, TestApp::start_with(pool, config).await)
}

/// A user `email` with 0.03 EUR and a 2 GiB server asked to start: the user's token and
/// id, and the server's id.
async fn start_with_three_cents(app: &TestApp, email: &str) -> (String, i64, i64) {
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user(email).await;
    app.credit(&admin, user_id, 30_000).await;
    let id = app.create_server(&token, "cheap", 2048).await;
    let (status, _) = app
        .call(Method::POST, &format!("/v1/servers/{id}/start"), Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    (token, user_id, id)
}

#[sqlx::test(migrations = "../migrations")]
async fn verification_mail_arrives_and_its_code_verifies(pool: PgPool) {
    let (sink, app) = app_with_sink(pool).await;
    let (status, _) = app
        .post(
            "/v1/accounts/register",
            None,
            json!({"email": "mailme@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually("verification mail received", || async {
        !sink.messages_to("mailme@example.com").is_empty()
    })
    .await;
    let mail = sink.messages_to("mailme@example.com").remove(0);
    assert!(mail.contains("Subject: Confirm your PayPerPlay address"), "{mail}");
    let code = code_in(&mail).expect("code in mail");
    let (status, body) = app.post("/v1/accounts/verify", None, json!({"token": code})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually("outbox row marked sent", || async {
        let status: String = sqlx::query_scalar("SELECT status FROM email_outbox")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        status == "sent"
    })
    .await;
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn mail_is_retried_until_the_smtp_server_is_back(pool: PgPool) {
    let port = free_port();
    let mut config = test_config();
    config.smtp.port = port;
    config.smtp.timeout_ms = 1_000;
    let app = TestApp::start_with(pool, config).await;
    let (status, _) = app
        .post(
            "/v1/accounts/register",
            None,
            json!({"email": "later@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually("a failed attempt is recorded", || async {
        let (attempts, status): (i32, String) = sqlx::query_as("SELECT attempts, status FROM email_outbox")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        attempts >= 1 && status == "pending"
    })
    .await;
    let sink = SmtpSink::start(port);
    // The retry is due after the backoff on the shell's clock.
    app.clock.advance_ms(60_000);
    app.services.as_ref().unwrap().mail_wakeup.notify_one();
    eventually("mail delivered on retry", || async {
        !sink.messages_to("later@example.com").is_empty()
    })
    .await;
    eventually("outbox row marked sent", || async {
        let status: String = sqlx::query_scalar("SELECT status FROM email_outbox")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        status == "sent"
    })
    .await;
    let (attempts, status): (i32, String) = sqlx::query_as("SELECT attempts, status FROM email_outbox")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "sent");
    assert!(attempts >= 2, "{attempts}");
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn low_balance_mail_from_the_core_arrives(pool: PgPool) {
    let (sink, app) = app_with_sink(pool).await;
    // 0.03 EUR is below the 1 EUR warning threshold: starting a server (which makes
    // the balance burn) makes the core send the low-balance warning.
    start_with_three_cents(&app, "poor@example.com").await;
    eventually("low-balance mail received", || async {
        sink.messages_to("poor@example.com")
            .iter()
            .any(|m| m.contains("Subject: Your PayPerPlay balance is running low"))
    })
    .await;
    let mail = sink
        .messages_to("poor@example.com")
        .into_iter()
        .find(|m| m.contains("running low"))
        .unwrap();
    assert!(mail.contains("0.03 EUR"), "{mail}");
    // The mail command is idempotent: one outbox row per command.
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM email_outbox WHERE kind = 'low_balance'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn zero_balance_stop_mail_arrives(pool: PgPool) {
    let (sink, app) = app_with_sink(pool).await;
    // 2 GiB at 0.01 EUR per GiB-hour costs 0.02 EUR an hour: 0.03 EUR lasts 1.5 hours.
    let (token, user_id, id) = start_with_three_cents(&app, "broke@example.com").await;
    eventually("running", || async { app.state_of(&token, id).await == "running" }).await;
    // Players keep it from going idle (the player router reports them later).
    app.services
        .as_ref()
        .unwrap()
        .handle
        .submit(
            payperplay_core::Input::PlayerCount {
                server_id: payperplay_core::ServerId(id as u64),
                players: 3,
            },
            |_| (),
        )
        .await
        .unwrap();
    app.clock.advance_ms(2 * 3_600_000);
    eventually("stopped for zero balance", || async {
        matches!(app.state_of(&token, id).await.as_str(), "stopped" | "sleeping")
    })
    .await;
    eventually("stop mail received", || async {
        sink.messages_to("broke@example.com")
            .iter()
            .any(|m| m.contains("Subject: Your PayPerPlay servers were stopped"))
    })
    .await;
    let mail = sink
        .messages_to("broke@example.com")
        .into_iter()
        .find(|m| m.contains("servers were stopped"))
        .unwrap();
    assert!(mail.contains(&format!("stopped: {id}")), "{mail}");
    eventually("ledger and balance agree", || async {
        app.store.balance(user_id).await.unwrap() == app.store.ledger_sum(user_id).await.unwrap()
            && app.store.balance(user_id).await.unwrap() < 30_000
    })
    .await;
    app.stop().await;
}
