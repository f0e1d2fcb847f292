//! Servers: every route's happy path and bad inputs, tenancy isolation, the queue.

use crate::common::{TestApp, eventually};
use axum::http::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test(migrations = "../migrations")]
async fn server_lifecycle_through_the_api(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("owner@example.com").await;

    let (status, body) = app
        .post(
            "/v1/servers",
            Some(&token),
            json!({"name": "survival", "ram_mib": 4096}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_i64().unwrap();
    assert_eq!(body["name"], "survival");
    assert_eq!(body["ram_mib"], 4096);
    assert_eq!(body["status"]["state"], "stopped");
    let owner: i64 = sqlx::query_scalar("SELECT owner_id FROM servers WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(owner, user_id);

    let (status, body) = app.get("/v1/servers", &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_array().unwrap().len(), 1);

    // Starting needs a positive balance.
    let (status, body) = app
        .call(Method::POST, &format!("/v1/servers/{id}/start"), Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_balance");

    app.credit(&admin, user_id, 5_000_000).await;
    let (status, body) = app
        .call(Method::POST, &format!("/v1/servers/{id}/start"), Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"]["state"], "starting");
    // The fake container runtime reports the boot; the server then runs.
    eventually("server running", || async {
        app.state_of(&token, id).await == "running"
    })
    .await;

    // Tier changes only while stopped; renames any time.
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/servers/{id}"),
            Some(&token),
            Some(json!({"ram_mib": 8192})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "wrong_state");
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/servers/{id}"),
            Some(&token),
            Some(json!({"name": "creative"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "creative");

    // An hour of running is billed when it stops.
    app.clock.advance_ms(3_600_000);
    let (status, body) = app
        .call(Method::POST, &format!("/v1/servers/{id}/stop"), Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    eventually("server stopped", || async {
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
    assert_eq!(body["ram_mib"], 8192);

    eventually("usage billed", || async {
        let (_, usage) = app.get("/v1/billing/usage", &token).await;
        usage[0]["ram_ms"].as_i64().unwrap_or(0) >= 3_600_000
    })
    .await;
    let (_, usage) = app.get("/v1/billing/usage", &token).await;
    assert_eq!(usage[0]["server_id"], id);
    assert!(usage[0]["charged_micros"].as_i64().unwrap() > 0, "{usage}");
    let (_, balance) = app.get("/v1/billing/balance", &token).await;
    let balance_micros = balance["balance_micros"].as_i64().unwrap();
    assert!(balance_micros < 5_000_000, "{balance}");
    assert_eq!(
        balance_micros,
        app.store.ledger_sum(user_id).await.unwrap(),
        "balance = sum of ledger"
    );
    let (status, ledger) = app.get("/v1/billing/ledger?limit=10", &token).await;
    assert_eq!(status, StatusCode::OK);
    let kinds: Vec<&str> = ledger
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"top_up") && kinds.contains(&"ram_time"), "{kinds:?}");

    let (status, _) = app
        .call(Method::DELETE, &format!("/v1/servers/{id}"), Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = app.get("/v1/servers", &token).await;
    assert_eq!(list.as_array().unwrap().len(), 0, "deleted servers are not listed");
    let (status, _) = app.get(&format!("/v1/servers/{id}"), &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .call(Method::DELETE, &format!("/v1/servers/{id}"), Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn bad_server_inputs_name_the_field(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (token, _) = app.user("picky@example.com").await;
    let cases = [
        (json!({"name": "", "ram_mib": 4096}), "name"),
        (json!({"name": "x".repeat(65), "ram_mib": 4096}), "name"),
        (json!({"name": "bad/name", "ram_mib": 4096}), "name"),
        (json!({"name": "ok", "ram_mib": 3000}), "ram_mib"),
        (json!({"name": "ok", "ram_mib": -1}), "ram_mib"),
        (json!({"name": "ok"}), "ram_mib"),
        (json!({"ram_mib": 4096}), "name"),
    ];
    for (body, field) in cases {
        let (status, answer) = app.post("/v1/servers", Some(&token), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        assert_eq!(answer["error"]["field"], field, "{body} → {answer}");
    }
    let id = app.create_server(&token, "one", 2048).await;
    let (status, answer) = app
        .post("/v1/servers", Some(&token), json!({"name": "one", "ram_mib": 2048}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(answer["error"]["code"], "name_taken");
    let (status, answer) = app.get("/v1/servers/abc", &token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["field"], "id");
    let (status, _) = app.get("/v1/servers/999999", &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, answer) = app
        .call(
            Method::PATCH,
            &format!("/v1/servers/{id}"),
            Some(&token),
            Some(json!({"ram_mib": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["field"], "ram_mib");
    // Without a token every server route is 401.
    for (method, path) in [
        (Method::GET, "/v1/servers".to_string()),
        (Method::GET, format!("/v1/servers/{id}")),
        (Method::POST, format!("/v1/servers/{id}/start")),
        (Method::DELETE, format!("/v1/servers/{id}")),
    ] {
        let (status, _) = app.call(method, &path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn unverified_users_cannot_create_servers(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (status, _) = app
        .post(
            "/v1/accounts/register",
            None,
            json!({"email": "new@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, session) = app
        .post(
            "/v1/accounts/login",
            None,
            json!({"email": "new@example.com", "password": "correct horse battery"}),
        )
        .await;
    let token = session["token"].as_str().unwrap();
    let (status, body) = app
        .post("/v1/servers", Some(token), json!({"name": "x", "ram_mib": 2048}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "email_not_verified");
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn another_users_server_is_a_404_on_every_route(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (alice, _) = app.user("alice@example.com").await;
    let (mallory, _) = app.user("mallory@example.com").await;
    let id = app.create_server(&alice, "private", 2048).await;
    let path = format!("/v1/servers/{id}");
    let attempts = [
        (Method::GET, path.clone(), None),
        (Method::PATCH, path.clone(), Some(json!({"name": "pwned"}))),
        (Method::DELETE, path.clone(), None),
        (Method::POST, format!("{path}/start"), None),
        (Method::POST, format!("{path}/stop"), None),
        (Method::GET, format!("{path}/status"), None),
    ];
    for (method, path, body) in attempts {
        let (status, answer) = app.call(method.clone(), &path, Some(&mallory), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], "not_found");
    }
    let (_, list) = app.get("/v1/servers", &mallory).await;
    assert_eq!(list.as_array().unwrap().len(), 0);
    let (_, usage) = app.get("/v1/billing/usage", &mallory).await;
    assert_eq!(usage.as_array().unwrap().len(), 0);
    // Alice's server is untouched.
    let (status, body) = app.get(&path, &alice).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["name"], "private");
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_full_fleet_queues_starts_with_position(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user("busy@example.com").await;
    app.credit(&admin, user_id, 100_000_000).await;
    // 16 GiB node, 1 GiB reserve: three 4 GiB servers fit, the fourth and fifth queue.
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(app.create_server(&token, &format!("s{n}"), 4096).await);
    }
    for id in &ids {
        let (status, body) = app
            .call(Method::POST, &format!("/v1/servers/{id}/start"), Some(&token), None)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let (_, status3) = app.get(&format!("/v1/servers/{}/status", ids[3]), &token).await;
    assert_eq!(status3["state"], "queued", "{status3}");
    assert_eq!(status3["queue"]["position"], 1);
    assert_eq!(status3["queue"]["queue_len"], 2);
    let (_, status4) = app.get(&format!("/v1/servers/{}", ids[4]), &token).await;
    assert_eq!(status4["status"]["queue"]["position"], 2);

    let (status, queue) = app.get("/v1/admin/queue", &admin).await;
    assert_eq!(status, StatusCode::OK);
    let queued: Vec<i64> = queue
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["server_id"].as_i64().unwrap())
        .collect();
    assert_eq!(queued, vec![ids[3], ids[4]]);

    // Stopping a running server lets the head of the queue start.
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/v1/servers/{}/stop", ids[0]),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually("head of the queue placed", || async {
        matches!(app.state_of(&token, ids[3]).await.as_str(), "starting" | "running")
    })
    .await;
    // (How positions move up as the head is placed is the core's queue arithmetic,
    // tested in core/tests/lifecycle.rs.) Stopping a queued server cancels its start;
    // the API answers 202 with the server stopped.
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/v1/servers/{}/stop", ids[4]),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body["status"]["state"], "stopped",
        "the answer is the state right after the stop"
    );
    assert_eq!(app.state_of(&token, ids[4]).await, "stopped");
    app.stop().await;
}
