//! Requests whose outcome a client did not learn: a tier change is one fact with its
//! core input, and `GET /v1/requests/{id}` tells the outcome later (issue 17).

use axum::http::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use crate::common::{TestApp, eventually};
use crate::durability::epoch;

async fn ram_mib_in_table(pool: &PgPool, server_id: i64) -> i32 {
    sqlx::query_scalar("SELECT ram_mib FROM servers WHERE id = $1")
        .bind(server_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_tier_change_that_fails_after_the_core_took_it_converges_and_can_be_asked_about(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    let (token, _) = app.user("tier-fault@example.com").await;
    let (other, _) = app.user("someone-else@example.com").await;
    let id = app.create_server(&token, "tiered", 4096).await;
    // The fault, between the core taking the change and the servers table: no row may
    // be set to 8192 MiB.
    sqlx::query("ALTER TABLE servers ADD CONSTRAINT tier_held CHECK (ram_mib <> 8192) NOT VALID")
        .execute(&pool)
        .await
        .unwrap();
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/servers/{id}"),
            Some(&token),
            Some(json!({"ram_mib": 8192})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "outcome_unknown", "{body}");
    let request_id = body["error"]["request_id"]
        .as_i64()
        .expect("the answer names the request");
    // The client asks later: the core carried the change out.
    let request_path = format!("/v1/requests/{request_id}");
    eventually("the request's outcome is recorded", || async {
        app.get(&request_path, &token).await.1["state"] == "carried_out"
    })
    .await;
    let (status, request) = app.get(&request_path, &token).await;
    assert_eq!(status, StatusCode::OK);
    assert!(request["journal_seq"].as_i64().unwrap() > 0, "{request}");
    // Nobody else may ask.
    assert_eq!(app.get(&request_path, &other).await.0, StatusCode::NOT_FOUND);
    // The fault goes away: the restarted runtime makes the table equal to the core.
    sqlx::query("ALTER TABLE servers DROP CONSTRAINT tier_held")
        .execute(&pool)
        .await
        .unwrap();
    let handle = app.services.as_ref().unwrap().handle.clone();
    let pool_ref = &pool;
    eventually("the table follows the core", || async move {
        ram_mib_in_table(pool_ref, id).await == 8192
    })
    .await;
    eventually("ready again", || async { handle.is_ready() }).await;
    let (_, server) = app.get(&format!("/v1/servers/{id}"), &token).await;
    assert_eq!(server["ram_mib"], 8192, "{server}");

    // A crash between the journal append and the table write (the table still has the
    // old tier): the next start converges too.
    let mut app = app;
    app.services.take().unwrap().stop().await;
    sqlx::query("UPDATE servers SET ram_mib = 4096 WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let app = TestApp::start_full(
        pool.clone(),
        app.config.clone(),
        app.clock.clone(),
        crate::common::real_drivers(&app.config, &pool).await,
    )
    .await;
    eventually("converged at start", || async move {
        ram_mib_in_table(pool_ref, id).await == 8192
    })
    .await;
    // And a tier change that works answers at once, table and core agreeing.
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/servers/{id}"),
            Some(&token),
            Some(json!({"ram_mib": 2048})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ram_mib"], 2048);
    assert_eq!(ram_mib_in_table(&pool, id).await, 2048);
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_request_whose_answer_timed_out_can_be_asked_about_later(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    let (admin, _) = app.admin().await;
    let (_, user_id) = app.user("slow-credit@example.com").await;
    // The runtime journals and handles the credit, then waits on the command log
    // longer than the API waits for its answer.
    let mut held = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE commands IN EXCLUSIVE MODE")
        .execute(&mut *held)
        .await
        .unwrap();
    let (status, body) = app
        .post(
            &format!("/v1/admin/users/{user_id}/credit"),
            Some(&admin),
            json!({"amount_micros": 7_000_000}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "outcome_unknown", "{body}");
    let request_id = body["error"]["request_id"]
        .as_i64()
        .expect("the answer names the request");
    let (status, request) = app.get(&format!("/v1/requests/{request_id}"), &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(request["state"], "carried_out", "{request}");
    held.rollback().await.unwrap();
    eventually("credited once", || async {
        app.store.balance(user_id).await.unwrap() == 7_000_000
    })
    .await;
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_request_that_never_reached_the_journal_says_so_and_never_will(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    let (admin, _) = app.admin().await;
    let (_, user_id) = app.user("stuck-credit@example.com").await;
    let epoch_before = epoch(&pool).await;
    // The journal append hangs longer than the API waits.
    let mut held = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE journal IN EXCLUSIVE MODE")
        .execute(&mut *held)
        .await
        .unwrap();
    let (status, body) = app
        .post(
            &format!("/v1/admin/users/{user_id}/credit"),
            Some(&admin),
            json!({"amount_micros": 5_000_000}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "outcome_unknown", "{body}");
    let request_path = format!("/v1/requests/{}", body["error"]["request_id"].as_i64().unwrap());
    let (status, request) = app.get(&request_path, &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(request["state"], "not_journaled", "{request}");
    // The append goes on once the journal is free, and fails: the answer stays true.
    held.rollback().await.unwrap();
    let handle = app.services.as_ref().unwrap().handle.clone();
    let pool_ref = &pool;
    eventually("the runtime whose append failed restarted", || async {
        epoch(pool_ref).await > epoch_before && handle.is_ready()
    })
    .await;
    app.credit(&admin, user_id, 1_000_000).await;
    let (_, request) = app.get(&request_path, &admin).await;
    assert_eq!(request["state"], "not_journaled", "{request}");
    assert_eq!(app.store.balance(user_id).await.unwrap(), 1_000_000);
    app.stop().await;
}
