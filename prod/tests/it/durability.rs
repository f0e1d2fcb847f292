//! Durability (issue 17): fenced writes, a standby `serve` taking over from a killed
//! leader, colliding command ids, quarantine of an input that panics the core, money
//! commands retried until they succeed, the balance check, bounded waits.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use payperplay_core::{Command, CommandId, CommandKind, Input, LedgerEntry, LedgerKind, ServerId, Timestamp, UserId};
use payperplay_prod::clock::Clock;
use payperplay_prod::runtime::InputHook;
use payperplay_prod::store::{LockWait, StoreError};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{TestApp, eventually, test_config};

pub(crate) async fn epoch(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT epoch FROM leadership")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn journal_len(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM journal")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_runtime_whose_epoch_was_taken_cannot_write_and_stops_leading(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    let (token, _) = app.user("fenced@example.com").await;
    let leading_epoch = epoch(&pool).await;
    assert!(leading_epoch >= 1, "the runtime took an epoch");
    // A fenced store of a stale epoch cannot write the journal.
    let stale = app.store.fenced(leading_epoch - 1);
    let error = stale
        .append_journal(1_000_000, Timestamp(1), &json!("timeout"))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Fenced { .. }), "{error}");
    assert!(stale.is_deposed());

    // Another runtime takes the epoch (as one that got the lock after ours was lost
    // would): this runtime's next write fails, nothing is journaled, it stops leading.
    sqlx::query("UPDATE leadership SET epoch = epoch + 1")
        .execute(&pool)
        .await
        .unwrap();
    let taken_epoch = leading_epoch + 1;
    let before = journal_len(&pool).await;
    let (status, body) = app
        .post("/v1/servers", Some(&token), json!({"name": "fenced", "ram_mib": 2048}))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(journal_len(&pool).await, before, "a fenced runtime journals nothing");
    let n_servers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM servers WHERE name = 'fenced'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n_servers, 0);
    // Its supervisor starts it again: it takes the lock and a newer epoch, replays and
    // leads (the "other runtime" here holds no lock).
    let handle = app.services.as_ref().unwrap().handle.clone();
    eventually("leading again under a new epoch", || async {
        handle.is_ready() && epoch(&pool).await > taken_epoch
    })
    .await;
    let id = app.create_server(&token, "after", 2048).await;
    assert_eq!(app.state_of(&token, id).await, "stopped");
    let epochs: Vec<Option<i64>> = sqlx::query_scalar("SELECT DISTINCT epoch FROM journal ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        !epochs.contains(&Some(taken_epoch)),
        "nothing was written under the epoch this runtime did not hold: {epochs:?}"
    );
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_second_runtime_waits_for_the_lock_and_fences_the_first(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    let store = app.store.clone();
    let first_epoch = epoch(&pool).await;
    // While the first holds the lock a bounded wait gives up...
    let error = store
        .lock_journal(LockWait::UpToMs(200), "second", Timestamp(1))
        .await
        .err()
        .expect("the lock is held");
    assert!(matches!(error, StoreError::JournalLocked), "{error}");
    // ...and a standby waits until it is free.
    let waiting = tokio::spawn({
        let store = store.clone();
        async move { store.lock_journal(LockWait::Forever, "standby", Timestamp(2)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the standby waits while the leader holds the lock"
    );
    app.stop().await;
    let lock = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the standby takes the lock once the leader stopped")
        .unwrap()
        .unwrap();
    assert_eq!(lock.epoch, first_epoch + 1);
    // The first runtime's store is fenced out now.
    let first = store.fenced(first_epoch);
    let command = Command {
        id: CommandId(77),
        kind: CommandKind::DeleteWorld { server_id: ServerId(1) },
    };
    assert!(matches!(
        first.record_command(&command, None, Timestamp(3)).await,
        Err(StoreError::Fenced { .. })
    ));
    let ours = store.fenced(lock.epoch);
    ours.record_command(&command, None, Timestamp(3)).await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn colliding_command_ids_are_an_error_not_silently_dropped(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    let (_, user_id) = app.user("collide@example.com").await;
    let store = app.store.clone();
    let command = Command {
        id: CommandId(900_001),
        kind: CommandKind::ArchiveWorld { server_id: ServerId(5) },
    };
    store.record_command(&command, None, Timestamp(1)).await.unwrap();
    // The same command again (recovery re-records what it re-issues): no change.
    store.record_command(&command, None, Timestamp(2)).await.unwrap();
    let other = Command {
        id: CommandId(900_001),
        kind: CommandKind::DeleteWorld { server_id: ServerId(5) },
    };
    let error = store.record_command(&other, None, Timestamp(3)).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::CommandIdCollision {
                command_id: 900_001,
                ..
            }
        ),
        "{error}"
    );

    let entry = LedgerEntry {
        user_id: UserId(user_id as u64),
        server_id: None,
        amount_micros: 5_000_000,
        kind: LedgerKind::TopUp,
        from: Timestamp(10),
        to: Timestamp(10),
    };
    assert!(
        store
            .post_ledger_entry(Some(900_002), &entry, Timestamp(10))
            .await
            .unwrap()
    );
    assert!(
        !store
            .post_ledger_entry(Some(900_002), &entry, Timestamp(11))
            .await
            .unwrap()
    );
    let different = LedgerEntry {
        amount_micros: 6_000_000,
        ..entry.clone()
    };
    let error = store
        .post_ledger_entry(Some(900_002), &different, Timestamp(12))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::CommandIdCollision {
                command_id: 900_002,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(store.balance(user_id).await.unwrap(), 5_000_000);
    app.stop().await;
}

/// A top-up of this amount makes the test hook panic, as a core bug would.
const POISON_MICROS: i64 = 13_131_313;

fn poisoned_config() -> payperplay_prod::config::Config {
    let mut config = test_config();
    config.runtime.input_hook = Some(InputHook(Arc::new(|input: &Input| {
        if let Input::TopUp {
            amount_micros: POISON_MICROS,
            ..
        } = input
        {
            panic!("poisoned top-up");
        }
    })));
    config
}

#[sqlx::test(migrations = "../migrations")]
async fn an_input_that_panics_the_core_is_quarantined_and_the_service_comes_up(pool: PgPool) {
    let app = TestApp::start_with(pool.clone(), poisoned_config()).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("poisoned@example.com").await;
    app.credit(&admin, user_id, 1_000_000).await;
    let (status, body) = app
        .post(
            &format!("/v1/admin/users/{user_id}/credit"),
            Some(&admin),
            json!({ "amount_micros": POISON_MICROS }),
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    // Recorded with its error; the runtime restarts, skips it, and serves.
    let handle = app.services.as_ref().unwrap().handle.clone();
    eventually("ready again after the panic", || async { handle.is_ready() }).await;
    let (status, quarantined) = app.get("/v1/admin/quarantine", &admin).await;
    assert_eq!(status, StatusCode::OK);
    let quarantined = quarantined.as_array().unwrap().clone();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert!(quarantined[0]["error"].as_str().unwrap().contains("poisoned top-up"));
    assert_eq!(quarantined[0]["input"]["amount_micros"], POISON_MICROS);
    let (_, alarms) = app.get("/v1/admin/alarms", &admin).await;
    assert!(
        alarms
            .as_array()
            .unwrap()
            .iter()
            .any(|alarm| alarm["kind"] == "quarantined_input"),
        "{alarms}"
    );
    let (_, balance) = app.get("/v1/billing/balance", &token).await;
    assert_eq!(balance["balance_micros"], 1_000_000, "the poisoned credit did nothing");
    // Later inputs go on; a restart skips the quarantined input again.
    app.credit(&admin, user_id, 2_000_000).await;
    let app = app.restart().await;
    let (_, balance) = app.get("/v1/billing/balance", &token).await;
    assert_eq!(balance["balance_micros"], 3_000_000);
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_poisoned_journal_row_does_not_brick_the_start(pool: PgPool) {
    // A journal written by an earlier version holds an input that panics this one.
    let app = TestApp::start(pool.clone()).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("replayed@example.com").await;
    app.credit(&admin, user_id, POISON_MICROS).await;
    app.credit(&admin, user_id, 1_000_000).await;
    let mut app = app;
    app.services.take().unwrap().stop().await;
    // The graceful stop stored a snapshot, which would cross the old row: without it
    // the journal is replayed from its start.
    sqlx::query("DELETE FROM core_snapshots").execute(&pool).await.unwrap();
    let app = TestApp::start_full(
        pool.clone(),
        poisoned_config(),
        app.clock.clone(),
        crate::common::real_drivers(&app.config, &pool).await,
    )
    .await;
    let (status, quarantined) = app.get("/v1/admin/quarantine", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(quarantined.as_array().unwrap().len(), 1, "{quarantined}");
    // The core skipped the credit; the ledger still has it: the balance check says so,
    // naming the user.
    let (_, alarms) = app.get("/v1/admin/alarms", &admin).await;
    let alarms = alarms.as_array().unwrap().clone();
    assert!(
        alarms
            .iter()
            .any(|alarm| alarm["kind"] == "balance_mismatch" && alarm["subject"] == format!("user {user_id}")),
        "{alarms:?}"
    );
    let (status, _) = app.get("/v1/servers", &token).await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_balance_that_disagrees_with_its_ledger_is_an_alarm_naming_the_user(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    let (admin, _) = app.admin().await;
    let (_, user_id) = app.user("mismatch@example.com").await;
    let (_, honest_id) = app.user("honest@example.com").await;
    app.credit(&admin, user_id, 4_000_000).await;
    app.credit(&admin, honest_id, 4_000_000).await;
    sqlx::query("UPDATE users SET balance_micros = balance_micros + 1 WHERE id = $1")
        .bind(user_id)
        .execute(&pool)
        .await
        .unwrap();
    let app = app.restart().await;
    let (_, alarms) = app.get("/v1/admin/alarms", &admin).await;
    let mismatches: Vec<&Value> = alarms
        .as_array()
        .unwrap()
        .iter()
        .filter(|alarm| alarm["kind"] == "balance_mismatch")
        .collect();
    assert_eq!(mismatches.len(), 1, "{alarms}");
    assert_eq!(mismatches[0]["subject"], format!("user {user_id}"));
    assert!(
        mismatches[0]["message"].as_str().unwrap().contains("4000001"),
        "{alarms}"
    );
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn failed_ledger_commands_are_retried_until_they_succeed_also_after_a_restart(pool: PgPool) {
    let mut config = test_config();
    config.runtime.command_attempts_max = 2;
    let app = TestApp::start_with(pool.clone(), config).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("retried@example.com").await;
    // The ledger refuses writes for a while (as a full disk or a bad migration would).
    sqlx::query("ALTER TABLE ledger_entries ADD CONSTRAINT ledger_refuses CHECK (amount_micros <> 2500000) NOT VALID")
        .execute(&pool)
        .await
        .unwrap();
    let (status, body) = app
        .post(
            &format!("/v1/admin/users/{user_id}/credit"),
            Some(&admin),
            json!({ "amount_micros": 2_500_000 }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // Past its attempts it is still retried, with an alarm.
    eventually("command retrying alarm", || async {
        let (_, alarms) = app.get("/v1/admin/alarms", &admin).await;
        alarms
            .as_array()
            .unwrap()
            .iter()
            .any(|alarm| alarm["kind"] == "command_retrying")
    })
    .await;
    // Marked failed by an older runtime, then restarted: still carried out.
    sqlx::query("UPDATE commands SET status = 'failed' WHERE kind = 'post_ledger_entry'")
        .execute(&pool)
        .await
        .unwrap();
    let app = app.restart().await;
    sqlx::query("ALTER TABLE ledger_entries DROP CONSTRAINT ledger_refuses")
        .execute(&pool)
        .await
        .unwrap();
    eventually("credit posted after all", || async {
        app.store.balance(user_id).await.unwrap() == 2_500_000
    })
    .await;
    let (_, balance) = app.get("/v1/billing/balance", &token).await;
    assert_eq!(balance["balance_micros"], 2_500_000);
    assert_eq!(app.store.ledger_sum(user_id).await.unwrap(), 2_500_000);
    app.stop().await;
}

/// The journal's advisory lock key (`JOURNAL_LOCK_KEY` in prod/src/store/journal.rs).
const JOURNAL_LOCK_KEY: i64 = 0x0050_5050_4a52_4e4c;

#[sqlx::test(migrations = "../migrations")]
async fn while_not_leading_requests_get_503_with_retry_after_and_readiness_says_why(pool: PgPool) {
    use sqlx::Connection;
    let app = TestApp::start(pool.clone()).await;
    let (token, _) = app.user("waiting@example.com").await;
    let handle = app.services.as_ref().unwrap().handle.clone();
    // Another session queues for the journal lock, and the epoch moves on (as when
    // another runtime took over): the runtime is fenced out, lets the lock go, and the
    // queued session gets it first, so the runtime's successor stands by.
    let base = std::env::var("DATABASE_URL").unwrap();
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let url = format!("{}/{database}", base.rsplit_once('/').unwrap().0);
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    let queued = tokio::spawn(async move {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(JOURNAL_LOCK_KEY)
            .execute(&mut other)
            .await
            .unwrap();
        other
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    sqlx::query("UPDATE leadership SET epoch = epoch + 100")
        .execute(&pool)
        .await
        .unwrap();
    let other = tokio::time::timeout(Duration::from_secs(10), queued)
        .await
        .expect("the deposed runtime lets the lock go")
        .unwrap();
    eventually("the runtime stands by", || async {
        !handle.is_ready() && handle.recovery().phase == payperplay_prod::runtime::RecoveryPhase::Standby
    })
    .await;
    let (status, retry_after, body) = oneshot(
        &app.router,
        Method::POST,
        "/v1/servers",
        &token,
        json!({"name": "y", "ram_mib": 2048}),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"), "Retry-After");
    let (status, retry_after, ready) = oneshot(&app.router, Method::GET, "/v1/health/ready", &token, Value::Null).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(ready["recovery"]["phase"], "standby", "{ready}");
    assert_eq!(ready["error"]["code"], "recovering", "{ready}");
    other.close().await.unwrap();
    eventually("leading again once the lock is free", || async { handle.is_ready() }).await;
    let id = app.create_server(&token, "z", 2048).await;
    assert_eq!(app.state_of(&token, id).await, "stopped");
    app.stop().await;
}

/// Sends one request through the router: status, `Retry-After`, JSON body.
async fn oneshot(
    router: &axum::Router,
    method: Method,
    path: &str,
    token: &str,
    body: Value,
) -> (StatusCode, Option<String>, Value) {
    let (status, headers, body) = oneshot_with(router, method, path, token, &[], body).await;
    (
        status,
        headers
            .get("retry-after")
            .map(|value| value.to_str().unwrap().to_string()),
        body,
    )
}

/// Sends one request with extra headers: status, response headers, JSON body.
async fn oneshot_with(
    router: &axum::Router,
    method: Method,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut request = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = if body.is_null() {
        request.body(axum::body::Body::empty())
    } else {
        request.body(axum::body::Body::from(body.to_string()))
    }
    .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[sqlx::test(migrations = "../migrations")]
async fn an_idempotency_key_answers_a_repeat_with_the_first_answer_and_refuses_another_body(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("idempotent@example.com").await;
    let credit_path = format!("/v1/admin/users/{user_id}/credit");
    let credit = json!({"amount_micros": 3_000_000});
    let key = [("idempotency-key", "credit-0001")];
    let (status, headers, first) =
        oneshot_with(&app.router, Method::POST, &credit_path, &admin, &key, credit.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert!(headers.get("idempotent-replayed").is_none());
    // A retried admin credit (the answer was lost) is not applied twice.
    let (status, headers, again) =
        oneshot_with(&app.router, Method::POST, &credit_path, &admin, &key, credit.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(again, first);
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    // The same key with another body is refused.
    let (status, _, refused) = oneshot_with(
        &app.router,
        Method::POST,
        &credit_path,
        &admin,
        &key,
        json!({"amount_micros": 4_000_000}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["code"], "idempotency_key_reused");
    eventually("credited once", || async {
        app.store.balance(user_id).await.unwrap() == 3_000_000
    })
    .await;
    // Another client's same key is its own.
    let server = json!({"name": "once", "ram_mib": 2048});
    let (status, _, created) =
        oneshot_with(&app.router, Method::POST, "/v1/servers", &token, &key, server.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, _, repeated) = oneshot_with(&app.router, Method::POST, "/v1/servers", &token, &key, server).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(repeated["id"], created["id"]);
    let n_servers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM servers WHERE name = 'once'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n_servers, 1);
    // Across a restart too: the answers are in Postgres.
    let app = app.restart().await;
    let (status, headers, after) = oneshot_with(&app.router, Method::POST, &credit_path, &admin, &key, credit).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(after, first);
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(app.store.balance(user_id).await.unwrap(), 3_000_000);
    app.stop().await;
}

// ---- two real `payperplay serve` processes ----

/// One HTTP/1.1 request on loopback: status and JSON body (None when nothing answers).
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Option<(u16, Value)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_string(&mut response))
        .await
        .ok()?
        .ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let json = response
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    Some((status, json))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_serve(url: &str, config_path: &std::path::Path, port: u16) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_payperplay"))
        .arg("serve")
        .arg("--config")
        .arg(config_path)
        .env("PAYPERPLAY_DATABASE_URL", url)
        .env("PAYPERPLAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("PAYPERPLAY_ROUTER_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("PAYPERPLAY_SMTP_PORT", "1")
        .env("PAYPERPLAY_ADMIN_EMAILS", "admin@example.com")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("payperplay starts")
}

/// The standby's takeover bound, from the leader's kill -9 to the standby answering
/// ready: Postgres drops the dead leader's session (and its advisory lock) as soon as
/// its socket closes, the standby tries the lock every 100 ms, then replays a short
/// journal.
const TAKEOVER_MS_MAX: u128 = 5_000;

/// Polls `path` on `port` until it answers `status`, for up to 30 s.
pub async fn until_status(port: u16, path: &str, status: u16) -> Value {
    for _ in 0..300 {
        if let Some((got, body)) = http(port, "GET", path, None, None).await
            && got == status
        {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} on port {port} never answered {status}");
}

pub async fn verified_session(port: u16, pool: &PgPool, email: &str) -> (String, i64) {
    let credentials = json!({"email": email, "password": "correct horse battery"});
    let (status, body) = http(port, "POST", "/v1/accounts/register", None, Some(&credentials))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let mail: String = sqlx::query_scalar(
        "SELECT body FROM email_outbox WHERE recipient = $1 AND kind = 'verification' ORDER BY id DESC LIMIT 1",
    )
    .bind(email)
    .fetch_one(pool)
    .await
    .unwrap();
    let code = crate::common::code_in(&mail).unwrap();
    let (status, body) = http(port, "POST", "/v1/accounts/verify", None, Some(&json!({"token": code})))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    if email.starts_with("admin@") {
        // Nobody is admin by registering: grant the role as `payperplay admin grant` does.
        payperplay_prod::api::accounts::change_admin_role(
            &payperplay_prod::store::Store::new(pool.clone()),
            email,
            payperplay_prod::store::AdminChange::Grant,
            "test",
            payperplay_core::Timestamp(1),
        )
        .await
        .expect("admin granted");
    }
    let (status, body) = http(port, "POST", "/v1/accounts/login", None, Some(&credentials))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    (
        body["token"].as_str().unwrap().to_string(),
        body["user"]["id"].as_i64().unwrap(),
    )
}

#[sqlx::test(migrations = "../migrations")]
async fn a_standby_serve_takes_over_when_the_leader_is_killed(pool: PgPool) {
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL (source scripts/start-services.sh)");
    let url = format!("{}/{database}", base.rsplit_once('/').unwrap().0);
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("payperplay.toml");
    std::fs::write(
        &config_path,
        "[runtime]\njournal_lock_wait_ms = 200\n\n[auth]\nlogin_per_account_per_minute = 100000\nmutations_per_user_per_minute = 1000000\nservers_per_user_max = 100000\n\n[auth.argon2]\nmemory_kib = 256\niterations = 1\nparallelism = 1\n",
    )
    .unwrap();
    let (leader_port, standby_port) = (free_port(), free_port());
    let mut leader = spawn_serve(&url, &config_path, leader_port);
    until_status(leader_port, "/v1/health/ready", 200).await;
    let mut standby = spawn_serve(&url, &config_path, standby_port);
    let waiting = until_status(standby_port, "/v1/health/ready", 503).await;
    assert_eq!(waiting["recovery"]["phase"], "standby", "{waiting}");

    // Work through the leader: an admin credits a user, the user creates servers.
    let (admin, _) = verified_session(leader_port, &pool, "admin@example.com").await;
    let (token, user_id) = verified_session(leader_port, &pool, "player@example.com").await;
    let credit = json!({"amount_micros": 9_000_000});
    let (status, body) = http(
        leader_port,
        "POST",
        &format!("/v1/admin/users/{user_id}/credit"),
        Some(&admin),
        Some(&credit),
    )
    .await
    .unwrap();
    assert_eq!(status, 202, "{body}");
    for name in ["one", "two"] {
        let (status, body) = http(
            leader_port,
            "POST",
            "/v1/servers",
            Some(&token),
            Some(&json!({"name": name, "ram_mib": 2048})),
        )
        .await
        .unwrap();
        assert_eq!(status, 201, "{body}");
    }
    let (_, servers_before) = http(leader_port, "GET", "/v1/servers", Some(&token), None)
        .await
        .unwrap();
    let journal_before = journal_len(&pool).await;
    let epoch_before = epoch(&pool).await;
    // The standby still stands by, and refuses requests with a 503.
    let (status, _) = http(standby_port, "GET", "/v1/servers", Some(&token), None)
        .await
        .unwrap();
    assert_eq!(status, 503);

    let pid = leader.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let _ = leader.wait().await;
    let killed_at = payperplay_prod::clock::Stopwatch::start();
    until_status(standby_port, "/v1/health/ready", 200).await;
    let takeover_ms = killed_at.elapsed().as_millis();
    assert!(takeover_ms < TAKEOVER_MS_MAX, "takeover took {takeover_ms} ms");
    eprintln!("standby took over {takeover_ms} ms after the leader's kill -9");

    // Nothing lost: the same servers, the credit, a newer epoch, the journal intact.
    assert!(epoch(&pool).await > epoch_before);
    assert!(journal_len(&pool).await >= journal_before);
    let (status, servers_after) = http(standby_port, "GET", "/v1/servers", Some(&token), None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    // The same servers (the address names each process's own router port).
    let without_address = |servers: &Value| -> Vec<Value> {
        let mut servers = servers.as_array().unwrap().clone();
        for server in &mut servers {
            server.as_object_mut().unwrap().remove("address");
        }
        servers
    };
    assert_eq!(without_address(&servers_after), without_address(&servers_before));
    assert_eq!(servers_after.as_array().unwrap().len(), 2);
    let mut balance_ok = false;
    for _ in 0..100 {
        let (_, balance) = http(standby_port, "GET", "/v1/billing/balance", Some(&token), None)
            .await
            .unwrap();
        if balance["balance_micros"] == 9_000_000 {
            balance_ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(balance_ok, "the credit survived the takeover");
    let ledger: Option<i64> =
        sqlx::query_scalar("SELECT SUM(amount_micros)::BIGINT FROM ledger_entries WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(ledger, Some(9_000_000));
    // The new leader takes writes.
    let (status, body) = http(
        standby_port,
        "POST",
        "/v1/servers",
        Some(&token),
        Some(&json!({"name": "three", "ram_mib": 2048})),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let _ = standby.kill().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_usage_row_carries_the_ram_billed_even_when_posted_after_a_tier_change(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("tiered@example.com").await;
    app.credit(&admin, user_id, 50_000_000).await;
    let id = app.create_server(&token, "tiered", 4096).await;
    let (status, _) = app
        .call(Method::POST, &format!("/v1/servers/{id}/start"), Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually("running", || async { app.state_of(&token, id).await == "running" }).await;
    // The RAM-time entry is held back until after the tier changed.
    sqlx::query("ALTER TABLE ledger_entries ADD CONSTRAINT ram_time_held CHECK (kind <> 'ram_time') NOT VALID")
        .execute(&pool)
        .await
        .unwrap();
    app.clock.advance_ms(3_600_000);
    let (status, body) = app
        .call(Method::POST, &format!("/v1/servers/{id}/stop"), Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    eventually("stopped", || async {
        matches!(app.state_of(&token, id).await.as_str(), "stopped" | "sleeping")
    })
    .await;
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/servers/{id}"),
            Some(&token),
            Some(json!({"ram_mib": 8192})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    sqlx::query("ALTER TABLE ledger_entries DROP CONSTRAINT ram_time_held")
        .execute(&pool)
        .await
        .unwrap();
    let pool_ref = &pool;
    eventually("RAM time posted", || async move {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage WHERE kind = 'ram_time' AND server_id = $1")
            .bind(id)
            .fetch_one(pool_ref)
            .await
            .unwrap();
        n > 0
    })
    .await;
    let billed: Vec<i32> = sqlx::query_scalar("SELECT ram_mib FROM usage WHERE kind = 'ram_time' AND server_id = $1")
        .bind(id)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(billed.iter().all(|ram_mib| *ram_mib == 4096), "{billed:?}");
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn pruning_deletes_finished_records_past_their_age_and_keeps_what_is_still_needed(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    let (admin, _) = app.admin().await;
    let (_, user_id) = app.user("pruned@example.com").await;
    for _ in 0..3 {
        app.credit(&admin, user_id, 1_000_000).await;
    }
    eventually("credit commands finished", || async {
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM commands WHERE status <> 'succeeded'")
            .fetch_one(&pool)
            .await
            .unwrap();
        pending == 0
    })
    .await;
    sqlx::query("UPDATE email_outbox SET status = 'sent'")
        .execute(&pool)
        .await
        .unwrap();
    let count = |table: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let n_commands = count("commands").await;
    assert!(n_commands >= 3);
    let journal_before = count("journal").await;
    let n_requests = count("requests").await;
    assert!(n_requests >= 1, "mutating requests leave their outcomes");
    // Nothing is old enough yet.
    let config = payperplay_prod::config::RetentionConfig::default();
    let now = app.clock.now();
    assert_eq!(app.store.prune(&config, now).await.unwrap(), Default::default());
    // A year later everything finished is old enough, but the newest command stays, and
    // the journal is whole.
    let later = now.plus_ms(365 * 24 * 3_600_000);
    let pruned = app.store.prune(&config, later).await.unwrap();
    assert_eq!(pruned.commands as i64, n_commands - 1, "{pruned:?}");
    assert!(
        pruned.outbox >= 2 && pruned.sessions >= 2 && pruned.verifications >= 2,
        "{pruned:?}"
    );
    assert_eq!(count("commands").await, 1);
    assert_eq!(count("email_outbox").await, 0);
    assert_eq!(count("sessions").await, 0);
    assert_eq!(pruned.requests as i64, n_requests, "{pruned:?}");
    assert_eq!(count("requests").await, 0);
    assert_eq!(count("journal").await, journal_before);
    // With keep times of 0 nothing is pruned.
    let keep_all = payperplay_prod::config::RetentionConfig {
        commands_keep_ms: 0,
        outbox_keep_ms: 0,
        sessions_keep_ms: 0,
        idempotency_keys_keep_ms: 0,
        ..config
    };
    assert_eq!(app.store.prune(&keep_all, later).await.unwrap(), Default::default());
    // The runtime still restarts and replays after the pruning.
    let app = app.restart().await;
    assert_eq!(app.store.balance(user_id).await.unwrap(), 3_000_000);
    app.stop().await;
}
