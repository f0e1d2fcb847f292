//! Restart recovery: the runtime is stopped while starts are queued and restarted on
//! the same database; the journal replay restores queue, servers and balances.

use crate::common::{TestApp, eventually};
use axum::http::{Method, StatusCode};
use sqlx::PgPool;

#[sqlx::test(migrations = "../migrations")]
async fn queue_servers_and_balances_survive_a_restart(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("persistent@example.com").await;
    let (other, other_id) = app.user("second@example.com").await;
    app.credit(&admin, user_id, 50_000_000).await;
    app.credit(&admin, other_id, 7_000_000).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(app.create_server(&token, &format!("s{n}"), 4096).await);
    }
    let other_server = app.create_server(&other, "other", 2048).await;
    for id in &ids {
        let (status, _) = app
            .call(Method::POST, &format!("/v1/servers/{id}/start"), Some(&token), None)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    for id in &ids[..3] {
        eventually("first three running", || async {
            app.state_of(&token, *id).await == "running"
        })
        .await;
    }
    let (_, before_queue) = app.get("/v1/admin/queue", &admin).await;
    assert_eq!(before_queue.as_array().unwrap().len(), 2);
    let (_, before_servers) = app.get("/v1/servers", &token).await;
    let (_, before_balance) = app.get("/v1/billing/balance", &token).await;
    let (_, before_other_balance) = app.get("/v1/billing/balance", &other).await;
    let journal_len_before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM journal")
        .fetch_one(&app.pool)
        .await
        .unwrap();

    let app = app.restart().await;

    let (status, after_queue) = app.get("/v1/admin/queue", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after_queue, before_queue, "queue intact");
    let (_, after_servers) = app.get("/v1/servers", &token).await;
    assert_eq!(after_servers, before_servers, "servers intact");
    let (_, after_balance) = app.get("/v1/billing/balance", &token).await;
    assert_eq!(after_balance, before_balance, "balance intact");
    let (_, after_other_balance) = app.get("/v1/billing/balance", &other).await;
    assert_eq!(after_other_balance, before_other_balance);
    assert_eq!(app.state_of(&other, other_server).await, "stopped");
    // Replay handled nothing new (no dedicated node added twice, no duplicate users).
    let journal_len_after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM journal")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(journal_len_after, journal_len_before, "replay re-journals nothing");
    let (_, nodes) = app.get("/v1/admin/nodes", &admin).await;
    assert_eq!(nodes.as_array().unwrap().len(), 1);

    // The restarted runtime goes on: freeing capacity starts the head of the queue.
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/v1/servers/{}/stop", ids[1]),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually("queued head runs after restart", || async {
        app.state_of(&token, ids[3]).await == "running"
    })
    .await;
    // No ledger entry was posted twice across the restart.
    let duplicates: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT command_id FROM ledger_entries WHERE command_id IS NOT NULL GROUP BY command_id HAVING COUNT(*) > 1) d",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(duplicates, 0);
    assert_eq!(
        app.store.balance(user_id).await.unwrap(),
        app.store.ledger_sum(user_id).await.unwrap()
    );
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn commands_unfinished_at_a_stop_are_carried_out_after_restart(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("unfinished@example.com").await;
    app.credit(&admin, user_id, 9_000_000).await;
    let id = app.create_server(&token, "s", 2048).await;
    let (status, _) = app
        .call(Method::POST, &format!("/v1/servers/{id}/start"), Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually("running", || async { app.state_of(&token, id).await == "running" }).await;
    // Simulate a crash after a top-up was journaled but before its ledger entry was
    // posted: remove the entry and mark its command pending again.
    let command_id: i64 = sqlx::query_scalar("SELECT command_id FROM ledger_entries WHERE kind = 'top_up'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM ledger_entries WHERE command_id = $1")
        .bind(command_id)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE users SET balance_micros = balance_micros - 9000000 WHERE id = $1")
        .bind(user_id)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE commands SET status = 'pending' WHERE id = $1")
        .bind(command_id)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(app.store.balance(user_id).await.unwrap(), 0);

    let app = app.restart().await;
    eventually("top-up posted again after restart", || async {
        app.store.balance(user_id).await.unwrap() == 9_000_000
    })
    .await;
    // The running server is still running in the rebuilt core.
    assert_eq!(app.state_of(&token, id).await, "running");
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_second_runtime_on_the_same_database_stands_by(pool: PgPool) {
    let mut config = crate::common::test_config();
    config.runtime.journal_lock_wait_ms = 300;
    let app = TestApp::start_with(pool.clone(), config.clone()).await;
    let clock: std::sync::Arc<dyn payperplay_prod::clock::Clock> = std::sync::Arc::new(app.clock.clone());
    let second = payperplay_prod::Services::start(
        &config,
        payperplay_prod::store::Store::new(pool),
        clock,
        crate::common::real_drivers(&config, &app.pool).await,
    )
    .await
    .expect("a second runtime starts as a standby");
    assert!(!second.handle.is_ready(), "the standby does not lead");
    assert_eq!(
        second.handle.recovery().phase,
        payperplay_prod::runtime::RecoveryPhase::Standby
    );
    // The first one still works; the standby stops on shutdown while it waits.
    let (_, _) = app.user("still@example.com").await;
    tokio::time::timeout(std::time::Duration::from_secs(10), second.stop())
        .await
        .expect("a standby stops at once");
    let app = app.restart().await;
    let (status, _) = app
        .post(
            "/v1/accounts/login",
            None,
            serde_json::json!({"email": "still@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn the_exported_journal_replays_to_the_same_commands(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("replayed@example.com").await;
    app.credit(&admin, user_id, 20_000_000).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(app.create_server(&token, &format!("r{n}"), 4096).await);
    }
    for id in &ids {
        app.call(Method::POST, &format!("/v1/servers/{id}/start"), Some(&token), None)
            .await;
    }
    eventually("three running", || async {
        app.state_of(&token, ids[2]).await == "running"
    })
    .await;
    app.clock.advance_ms(3_600_000);
    app.call(
        Method::POST,
        &format!("/v1/servers/{}/stop", ids[0]),
        Some(&token),
        None,
    )
    .await;
    eventually("queued head placed", || async {
        app.state_of(&token, ids[3]).await != "queued"
    })
    .await;
    let core_config = app.config.core.clone();
    app.stop().await;

    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let url = format!("{}/{database}", base.rsplit_once('/').unwrap().0);
    let journal = export(&url, "export-journal").await;
    let mut core = payperplay_core::Core::new(core_config);
    let mut replayed = Vec::new();
    let mut n_lines = 0;
    let (mut n_users, mut n_servers, mut n_starts) = (0, 0, 0);
    for line in journal.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let input: payperplay_core::Input = serde_json::from_value(row["input"].clone()).unwrap();
        match input {
            payperplay_core::Input::RegisterUser { .. } => n_users += 1,
            payperplay_core::Input::CreateServer { .. } => n_servers += 1,
            payperplay_core::Input::StartServer { .. } => n_starts += 1,
            _ => {}
        }
        let _ = core.handle(payperplay_core::Timestamp(row["at_ms"].as_u64().unwrap()), input);
        while let Some(command) = core.poll_command() {
            replayed.push(serde_json::to_value(&command).unwrap());
        }
        while core.poll_event().is_some() {}
        n_lines += 1;
    }
    let journal_len: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM journal")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n_lines, journal_len);
    let recorded: Vec<serde_json::Value> = sqlx::query_scalar("SELECT command FROM commands ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    // How many commands there are by the stop depends on how fast the real engine stops
    // containers; what matters is that the replay gives exactly the same ones.
    assert!(recorded.len() > 5, "{recorded:?}");
    assert_eq!(
        replayed, recorded,
        "the journal replays to exactly the commands production issued"
    );

    // The same journal as a workload trace, which the simulator's own reader takes.
    let text = export(&url, "export-trace").await;
    let trace = payperplay_sim::trace::Trace::read(text.as_bytes(), std::path::Path::new("exported.jsonl"))
        .unwrap_or_else(|error| panic!("{error}\n{text}"));
    assert_eq!((trace.n_users, trace.n_servers), (n_users, n_servers));
    assert!(
        n_servers >= 5 && n_starts >= 5,
        "{n_servers} servers, {n_starts} starts"
    );
    let lines_of = |event: &str| {
        text.lines()
            .filter(|l| l.contains(&format!("\"event\":\"{event}\"")))
            .count()
    };
    assert_eq!(lines_of("start_requested"), n_starts as usize);
    assert_eq!(lines_of("stop_requested"), 1);
}

/// Run `payperplay <subcommand>` against the database at `url`; its standard output.
async fn export(url: &str, subcommand: &str) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_payperplay"))
        .arg(subcommand)
        .env("PAYPERPLAY_DATABASE_URL", url)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}
