//! Admin routes (refused to users), billing, and atomic balance changes.

use crate::common::{TestApp, eventually};
use axum::http::{Method, StatusCode};
use payperplay_core::{LedgerEntry, LedgerKind, Timestamp, UserId};
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test(migrations = "../migrations")]
async fn admin_routes_are_refused_to_users(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (user, user_id) = app.user("user@example.com").await;
    let requests = [
        (Method::GET, "/v1/admin/users".to_string(), None),
        (
            Method::POST,
            format!("/v1/admin/users/{user_id}/credit"),
            Some(json!({"amount_micros": 1})),
        ),
        (Method::GET, "/v1/admin/nodes".to_string(), None),
        (Method::GET, "/v1/admin/queue".to_string(), None),
        (Method::GET, "/v1/admin/scaling".to_string(), None),
    ];
    for (method, path, body) in requests {
        let (status, answer) = app.call(method.clone(), &path, Some(&user), body.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], "admin_only");
        let (status, _) = app.call(method.clone(), &path, None, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    // The refused credit changed nothing.
    assert_eq!(app.store.balance(user_id).await.unwrap(), 0);
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn admin_routes_work_for_admins(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (admin, admin_id) = app.admin().await;
    let (_, user_id) = app.user("paying@example.com").await;

    let (status, users) = app.get("/v1/admin/users?limit=10", &admin).await;
    assert_eq!(status, StatusCode::OK);
    let emails: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, vec!["admin@example.com", "paying@example.com"]);
    assert_eq!(users[0]["id"], admin_id);
    assert_eq!(users[0]["role"], "admin");
    let (status, page) = app.get(&format!("/v1/admin/users?after_id={admin_id}"), &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.as_array().unwrap().len(), 1);
    let (status, body) = app.get("/v1/admin/users?limit=0", &admin).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "limit");

    app.credit(&admin, user_id, 2_500_000).await;
    let (status, body) = app
        .post(
            &format!("/v1/admin/users/{user_id}/credit"),
            Some(&admin),
            json!({"amount_micros": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "amount_micros");
    let (status, _) = app
        .post(
            "/v1/admin/users/999999/credit",
            Some(&admin),
            json!({"amount_micros": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, users) = app.get("/v1/admin/users", &admin).await;
    assert_eq!(users[1]["balance_micros"], 2_500_000);

    let (status, nodes) = app.get("/v1/admin/nodes", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes}");
    assert_eq!(nodes[0]["name"], "dedi-test");
    assert_eq!(nodes[0]["kind"], "dedicated");
    assert_eq!(nodes[0]["is_system"], false);
    assert_eq!(nodes[0]["state"], "ready");
    assert_eq!(nodes[0]["capacity_mib"], 16384);
    // The node is also in the database with its explicit is_system flag.
    let (is_system, kind): (bool, String) = sqlx::query_as("SELECT is_system, kind FROM nodes")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!is_system);
    assert_eq!(kind, "dedicated");

    let (status, queue) = app.get("/v1/admin/queue", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(queue.as_array().unwrap().len(), 0);
    let (status, scaling) = app.get("/v1/admin/scaling", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert!(scaling["policy"]["reactive"].is_null(), "static fleet: {scaling}");
    assert_eq!(scaling["tiers_mib"], json!([2048, 4096, 8192, 16384, 32768]));
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn hundred_concurrent_debits_lose_nothing(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (_, user_id) = app.user("concurrent@example.com").await;
    let store = app.store.clone();
    let credit = LedgerEntry {
        user_id: UserId(user_id as u64),
        server_id: None,
        amount_micros: 10_000_000,
        kind: LedgerKind::TopUp,
        from: Timestamp(0),
        to: Timestamp(0),
    };
    assert!(
        store
            .post_ledger_entry(Some(1_000_000), &credit, Timestamp(1))
            .await
            .unwrap()
    );
    let mut tasks = Vec::new();
    for n in 0..100i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let debit = LedgerEntry {
                user_id: UserId(user_id as u64),
                server_id: None,
                amount_micros: -12_345,
                kind: LedgerKind::RamTime,
                from: Timestamp(n as u64),
                to: Timestamp(n as u64 + 1),
            };
            store
                .post_ledger_entry(Some(2_000_000 + n), &debit, Timestamp(2))
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap());
    }
    let expected = 10_000_000 - 100 * 12_345;
    assert_eq!(store.balance(user_id).await.unwrap(), expected);
    assert_eq!(store.ledger_sum(user_id).await.unwrap(), expected);
    // Posting the same command again is a no-op (idempotency by command id).
    let replayed = LedgerEntry {
        user_id: UserId(user_id as u64),
        server_id: None,
        amount_micros: -12_345,
        kind: LedgerKind::RamTime,
        from: Timestamp(0),
        to: Timestamp(1),
    };
    assert!(
        !store
            .post_ledger_entry(Some(2_000_000), &replayed, Timestamp(3))
            .await
            .unwrap()
    );
    assert_eq!(store.balance(user_id).await.unwrap(), expected);
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn billing_routes_validate_and_scope(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("billed@example.com").await;
    app.credit(&admin, user_id, 1_000_000).await;
    app.credit(&admin, user_id, 2_000_000).await;
    let (status, balance) = app.get("/v1/billing/balance", &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(balance["balance_micros"], 3_000_000);
    assert_eq!(balance["booked_balance_micros"], 3_000_000);
    let (_, ledger) = app.get("/v1/billing/ledger?limit=1", &token).await;
    assert_eq!(ledger.as_array().unwrap().len(), 1);
    assert_eq!(ledger[0]["amount_micros"], 2_000_000, "newest first");
    let before = ledger[0]["id"].as_i64().unwrap();
    let (_, older) = app.get(&format!("/v1/billing/ledger?before_id={before}"), &token).await;
    assert_eq!(older.as_array().unwrap().len(), 1);
    assert_eq!(older[0]["amount_micros"], 1_000_000);
    for query in ["limit=0", "limit=501", "limit=abc", "before_id=x"] {
        let (status, body) = app.get(&format!("/v1/billing/ledger?{query}"), &token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
    // The admin sees none of this user's ledger in their own.
    let (_, admin_ledger) = app.get("/v1/billing/ledger", &admin).await;
    assert_eq!(admin_ledger.as_array().unwrap().len(), 0);
    eventually("ledger sum equals balance", || async {
        app.store.ledger_sum(user_id).await.unwrap() == app.store.balance(user_id).await.unwrap()
    })
    .await;
    app.stop().await;
}
