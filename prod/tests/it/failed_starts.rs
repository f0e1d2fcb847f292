//! A start that cannot succeed (an unknown image, an engine that refuses, a node short
//! of disk) ends with its failure in the server view, through `serve` and the real test
//! engine; nothing is lost: no container, no charge (issue 14).

use axum::http::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

use crate::common::{TestApp, test_config};
use crate::containers::{start, wait_until};

async fn balance_micros(app: &TestApp, user_id: i64) -> i64 {
    sqlx::query_scalar("SELECT balance_micros FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn journaled_start_failures(app: &TestApp, kind: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM journal WHERE input->>'type' = 'command_failed' AND input->>'kind' = $1")
        .bind(kind)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Starts a server under `config` whose start cannot succeed; returns the server view
/// once the start ended, after checking that nothing was lost: no container, no charge.
async fn failed_start_view(pool: PgPool, config: payperplay_prod::config::Config, email: &str) -> (TestApp, Value) {
    let app = TestApp::start_with(pool, config).await;
    let (admin, _) = app.admin().await;
    let (token, user_id) = app.user(email).await;
    app.credit(&admin, user_id, 100_000_000).await;
    wait_until("the node's engine answers its probe", 10_000, || async {
        let (_, nodes) = app.get("/v1/admin/nodes", &admin).await;
        nodes[0]["engine_ready"] == true
    })
    .await;
    let id = app.create_server(&token, "doomed", 2048).await;
    start(&app, &token, id).await;
    wait_until("the start ended with its failure shown", 30_000, || async {
        let (_, server) = app.get(&format!("/v1/servers/{id}"), &token).await;
        server["status"]["state"] == "stopped" && server["last_start_failure"].is_object()
    })
    .await;
    let (status, server) = app.get(&format!("/v1/servers/{id}"), &token).await;
    assert_eq!(status, StatusCode::OK, "{server}");
    assert!(app.container_of(id).await.is_none(), "no container is left");
    assert_eq!(balance_micros(&app, user_id).await, 100_000_000, "nothing charged");
    let failure = &server["last_start_failure"];
    assert_eq!(failure["node"], "dedi-test", "{server}");
    assert!(
        failure["message"].as_str().unwrap().contains("dedi-test"),
        "the message names the node: {server}"
    );
    assert!(failure["failed_at_ms"].as_i64().unwrap() > 0, "{server}");
    (app, server)
}

#[sqlx::test(migrations = "../migrations")]
async fn a_start_with_an_unknown_image_is_rejected_at_once_and_the_server_view_says_why(pool: PgPool) {
    let mut config = test_config();
    config.containers.image = "payperplay/no-such-image:never-built".to_string();
    let (app, server) = failed_start_view(pool, config, "image@example.com").await;
    let failure = &server["last_start_failure"];
    assert_eq!(failure["kind"], "unknown_image", "{server}");
    assert!(
        failure["message"]
            .as_str()
            .unwrap()
            .contains("payperplay/no-such-image:never-built"),
        "the message names the image: {server}"
    );
    // Permanent: one attempt, not retried, the start rejected by the core.
    assert_eq!(journaled_start_failures(&app, "permanent").await, 1);
    assert_eq!(journaled_start_failures(&app, "other").await, 0);
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_start_the_engine_refuses_is_rejected_at_once_and_the_server_view_says_why(pool: PgPool) {
    let mut config = test_config();
    // Not a valid image reference: the engine answers 400.
    config.containers.image = "Not/A//Valid:Reference".to_string();
    let (app, server) = failed_start_view(pool, config, "refused@example.com").await;
    let failure = &server["last_start_failure"];
    assert_eq!(failure["kind"], "engine_refused", "{server}");
    assert!(failure["message"].as_str().unwrap().contains("refused"), "{server}");
    assert_eq!(journaled_start_failures(&app, "permanent").await, 1);
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_start_on_a_node_short_of_disk_is_retried_then_rejected_and_the_server_view_says_why(pool: PgPool) {
    let mut config = test_config();
    // More free disk than any test machine has: the node counts as full.
    config.containers.disk_free_mib_min = 1 << 40;
    let attempts_max = config.core.lifecycle.start_attempts_max;
    let (app, server) = failed_start_view(pool, config, "disk@example.com").await;
    let failure = &server["last_start_failure"];
    assert_eq!(failure["kind"], "disk_full", "{server}");
    assert!(failure["message"].as_str().unwrap().contains("disk free"), "{server}");
    // Node-bound, so retried (as another node might take it), then rejected.
    assert_eq!(journaled_start_failures(&app, "other").await, i64::from(attempts_max));
    assert_eq!(journaled_start_failures(&app, "permanent").await, 0);
    app.stop().await;
}
