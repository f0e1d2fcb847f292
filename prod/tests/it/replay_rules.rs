//! Replay under the recorded rules, snapshots and journal pruning, against a real
//! runtime on Postgres: a configuration change between two runs takes effect at the
//! journaled point and never rewrites history; a restart from a snapshot gives the
//! state a full replay gives; a journal stretch of another core version is crossed
//! only by a snapshot; the pruner deletes what a snapshot covers once it is old enough.

use axum::http::{Method, StatusCode};
use payperplay_prod::clock::Clock;
use payperplay_prod::config::RetentionConfig;
use serde_json::Value;
use sqlx::PgPool;

use crate::common::{TestApp, eventually, real_drivers, test_config};

const PRICE_A: u64 = 1_000_000;
const PRICE_B: u64 = 3_000_000;
const MINUTE_MS: u64 = 60_000;

/// Runs `server_id` for `ms` of the test clock, then stops it and waits until it is
/// stopped and its RAM-time is posted.
async fn run_for(app: &TestApp, token: &str, server_id: i64, ms: u64) {
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/v1/servers/{server_id}/start"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    eventually("running", || async {
        app.state_of(token, server_id).await == "running"
    })
    .await;
    app.clock.advance_ms(ms);
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/v1/servers/{server_id}/stop"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    eventually("stopped", || async {
        app.state_of(token, server_id).await == "stopped"
    })
    .await;
}

/// The RAM-time usage rows of a server, oldest first: (RAM, duration, amount).
async fn ram_usage(pool: &PgPool, server_id: i64) -> Vec<(i32, i64, i64)> {
    sqlx::query_as(
        "SELECT ram_mib, duration_ms, amount_micros FROM usage
         WHERE server_id = $1 AND kind = 'ram_time' ORDER BY ledger_entry_id",
    )
    .bind(server_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// What the RAM-time of `ram_mib` for `duration_ms` costs at `price` a GiB-hour, in
/// micros (floored; the core carries the remainder, so a row may be 1 more).
fn charge(ram_mib: i32, duration_ms: i64, price: u64) -> i64 {
    (ram_mib as u128 * duration_ms as u128 * price as u128 / (1024 * 3_600_000)) as i64
}

fn assert_priced(rows: &[(i32, i64, i64)], price: u64) {
    assert!(!rows.is_empty(), "no RAM-time billed");
    for &(ram_mib, duration_ms, amount_micros) in rows {
        let expected = charge(ram_mib, duration_ms, price);
        assert!(
            (-amount_micros - expected).abs() <= 1,
            "{ram_mib} MiB for {duration_ms} ms billed {} micros, at {price} a GiB-hour it is {expected}",
            -amount_micros
        );
    }
}

/// Every balance as stored, as booked in the core, and the ledger's sum agree, and no
/// alarm is raised.
async fn assert_balances_agree(app: &TestApp, admin: &str, token: &str, user_id: i64) {
    eventually("every ledger entry posted", || async {
        let (_, balance) = app.get("/v1/billing/balance", token).await;
        balance["balance_micros"] == balance["booked_balance_micros"]
    })
    .await;
    assert_eq!(
        app.store.balance(user_id).await.unwrap(),
        app.store.ledger_sum(user_id).await.unwrap()
    );
    let (_, alarms) = app.get("/v1/admin/alarms", admin).await;
    assert_eq!(alarms, serde_json::json!([]), "no alarm after the restart");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_price_change_between_runs_bills_history_at_the_old_price_and_new_usage_at_the_new(pool: PgPool) {
    let mut config = test_config();
    config.core.billing.ram_price_micros_per_gib_hour = PRICE_A;
    let app = TestApp::start_with(pool.clone(), config).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("prices@example.com").await;
    app.credit(&admin, user_id, 50_000_000).await;
    let server_id = app.create_server(&token, "priced", 4096).await;
    run_for(&app, &token, server_id, 5 * MINUTE_MS).await;
    assert_balances_agree(&app, &admin, &token, user_id).await;
    let history = ram_usage(&pool, server_id).await;
    assert_priced(&history, PRICE_A);
    let (_, balance_before) = app.get("/v1/billing/balance", &token).await;

    let mut app = app;
    app.config.core.billing.ram_price_micros_per_gib_hour = PRICE_B;
    let app = app.restart().await;

    // History replayed under price A: the core's balances are the ledger's.
    let (_, balance_after) = app.get("/v1/billing/balance", &token).await;
    assert_eq!(balance_after, balance_before);
    assert_balances_agree(&app, &admin, &token, user_id).await;
    // New usage at price B.
    run_for(&app, &token, server_id, 5 * MINUTE_MS).await;
    assert_balances_agree(&app, &admin, &token, user_id).await;
    let rows = ram_usage(&pool, server_id).await;
    assert_eq!(&rows[..history.len()], &history[..], "history unchanged");
    assert_priced(&rows[history.len()..], PRICE_B);
    // The change is recorded at the journal's end, with the core version.
    let starts: Vec<(i64, Value, i32)> =
        sqlx::query_as("SELECT first_seq, core_config, core_version FROM runtime_starts ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(starts.len(), 2);
    assert!(starts[1].0 > starts[0].0);
    assert_eq!(starts[1].2, payperplay_core::CORE_VERSION as i32);
    assert_ne!(starts[0].1, starts[1].1);
    app.stop().await;
}

/// What a user sees and an admin sees: servers, balance, nodes, queue.
async fn observed(app: &TestApp, admin: &str, token: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    for (path, who) in [
        ("/v1/servers", token),
        ("/v1/billing/balance", token),
        ("/v1/admin/nodes", admin),
        ("/v1/admin/queue", admin),
    ] {
        let (status, mut body) = app.get(path, who).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        // What the engine probe says is live, not the core's state.
        for node in body.as_array_mut().into_iter().flatten() {
            if let Some(node) = node.as_object_mut() {
                node.remove("engine_ready");
                node.remove("engine_reason");
            }
        }
        seen.push(body);
    }
    seen
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A user with five 4 GiB servers on the 16 GiB test node: one ran and stopped, three
/// run, one queues.
async fn busy_app(pool: &PgPool) -> (TestApp, String, String) {
    let app = TestApp::start(pool.clone()).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("snapshots@example.com").await;
    app.credit(&admin, user_id, 80_000_000).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(app.create_server(&token, &format!("s{n}"), 4096).await);
    }
    run_for(&app, &token, ids[4], 3 * MINUTE_MS).await;
    for id in &ids {
        let (status, _) = app
            .call(Method::POST, &format!("/v1/servers/{id}/start"), Some(&token), None)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    for id in &ids[..3] {
        eventually("three running", || async {
            app.state_of(&token, *id).await == "running"
        })
        .await;
    }
    app.clock.advance_ms(2 * MINUTE_MS);
    // The runtime notices the clock within a second: let due timers fire first.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    (app, admin, token)
}

#[sqlx::test(migrations = "../migrations")]
async fn a_restart_from_a_snapshot_gives_the_state_a_full_replay_gives(pool: PgPool) {
    let (app, admin, token) = busy_app(&pool).await;
    let before = observed(&app, &admin, &token).await;
    assert_eq!(count(&pool, "core_snapshots").await, 0, "none taken yet");
    let journal_len = count(&pool, "journal").await;

    // A graceful stop takes a snapshot at the journal's end.
    let app = app.restart().await;
    let snapshot_seq: i64 = sqlx::query_scalar("SELECT MAX(seq) FROM core_snapshots")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(snapshot_seq > journal_len, "taken at the end of the journal");
    let from_snapshot = observed(&app, &admin, &token).await;
    assert_eq!(from_snapshot, before);

    // Without the snapshot the whole journal is replayed: the same state.
    let mut app = app;
    app.services.take().unwrap().stop().await;
    sqlx::query("DELETE FROM core_snapshots").execute(&pool).await.unwrap();
    let drivers = real_drivers(&app.config, &pool).await;
    let app = TestApp::start_full(pool.clone(), app.config.clone(), app.clock.clone(), drivers).await;
    let full_replay = observed(&app, &admin, &token).await;
    assert_eq!(full_replay, before);
    let (_, alarms) = app.get("/v1/admin/alarms", &admin).await;
    assert_eq!(alarms, serde_json::json!([]));
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_stretch_of_another_core_version_is_crossed_only_by_a_snapshot_taken_after_it(pool: PgPool) {
    let (app, admin, token) = busy_app(&pool).await;
    let before = observed(&app, &admin, &token).await;
    let mut app = app;
    app.services.take().unwrap().stop().await; // a snapshot at the journal's end
    // Pretend everything so far was recorded by an older core.
    sqlx::query("UPDATE runtime_starts SET core_version = 0, crate_version = '0.0.1'")
        .execute(&pool)
        .await
        .unwrap();
    // With the snapshot taken after that stretch, this core starts from it.
    let drivers = real_drivers(&app.config, &pool).await;
    let app = TestApp::start_full(pool.clone(), app.config.clone(), app.clock.clone(), drivers).await;
    assert_eq!(observed(&app, &admin, &token).await, before);
    let mut app = app;
    app.services.take().unwrap().stop().await;

    // Without a snapshot the old stretch would be replayed by this core: refused,
    // naming both versions.
    sqlx::query("DELETE FROM core_snapshots").execute(&pool).await.unwrap();
    let clock: std::sync::Arc<dyn Clock> = std::sync::Arc::new(app.clock.clone());
    let drivers = real_drivers(&app.config, &pool).await;
    let refused = payperplay_prod::Services::start(&app.config, app.store.clone(), clock, drivers).await;
    let error = refused
        .err()
        .expect("a replay across another core version is refused")
        .to_string();
    assert!(
        error.contains("core version 0 (crate 0.0.1)")
            && error.contains(&format!("this is core version {}", payperplay_core::CORE_VERSION)),
        "{error}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn the_pruner_deletes_the_journal_a_snapshot_covers_once_it_is_old_enough(pool: PgPool) {
    let (app, admin, token) = busy_app(&pool).await;
    let app = app.restart().await; // a snapshot at the journal's end
    let before = observed(&app, &admin, &token).await;
    let snapshot_seq: i64 = sqlx::query_scalar("SELECT MAX(seq) FROM core_snapshots")
        .fetch_one(&pool)
        .await
        .unwrap();
    let journal_len = count(&pool, "journal").await;
    let config = RetentionConfig {
        journal_keep_ms: 30 * 24 * 3_600_000,
        ..RetentionConfig::default()
    };
    let now = app.clock.now();
    // Too young: the journal is kept whole (for export-trace).
    let pruned = app.store.prune(&config, now.plus_ms(24 * 3_600_000)).await.unwrap();
    assert_eq!((pruned.journal_rows, pruned.snapshots), (0, 0));
    let mut buffer = Vec::new();
    let stats = payperplay_prod::trace_export::export_store(&app.store, app.config.core.clone(), &mut buffer, 100)
        .await
        .expect("a whole journal exports");
    assert_eq!(stats.inputs as i64, journal_len);

    // Old enough: the journal before the snapshot goes, but for its last row (where
    // it ends).
    let pruned = app
        .store
        .prune(&config, now.plus_ms(31 * 24 * 3_600_000))
        .await
        .unwrap();
    let cut = snapshot_seq.min(journal_len);
    assert!(cut > 1, "a journal to prune");
    assert_eq!(pruned.journal_rows as i64, cut - 1, "{pruned:?}");
    assert_eq!(count(&pool, "journal").await, journal_len - (cut - 1));
    let first_seq: i64 = sqlx::query_scalar("SELECT MIN(seq) FROM journal")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(first_seq, cut);
    // export-trace over the pruned range says so.
    let error = payperplay_prod::trace_export::export_store(&app.store, app.config.core.clone(), Vec::new(), 100)
        .await
        .expect_err("the journal's start is gone");
    assert!(
        error.to_string().contains(&format!("pruned before seq {cut}")),
        "{error}"
    );
    // The runtime restarts from the snapshot, with the same state.
    let app = app.restart().await;
    assert_eq!(observed(&app, &admin, &token).await, before);
    // Without the snapshot, a pruned journal cannot be replayed: said so.
    let mut app = app;
    app.services.take().unwrap().stop().await;
    sqlx::query("DELETE FROM core_snapshots").execute(&pool).await.unwrap();
    let clock: std::sync::Arc<dyn Clock> = std::sync::Arc::new(app.clock.clone());
    let drivers = real_drivers(&app.config, &pool).await;
    let refused = payperplay_prod::Services::start(&app.config, app.store.clone(), clock, drivers).await;
    let error = refused
        .err()
        .expect("a pruned journal without a snapshot is refused")
        .to_string();
    assert!(error.contains("pruned before seq"), "{error}");
}
