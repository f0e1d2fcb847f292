//! Accounts: register, verify, login, logout, me, API tokens; bad inputs; limits.

use crate::common::{TestApp, test_config};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test(migrations = "../migrations")]
async fn register_verify_login_me_logout(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (status, body) = app
        .post(
            "/v1/accounts/register",
            None,
            json!({"email": "  Alice@Example.COM ", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(body["message"].as_str().unwrap().contains("mail"), "{body}");
    let (verified, role): (bool, String) =
        sqlx::query_as("SELECT email_verified, role FROM users WHERE email = 'alice@example.com'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((verified, role.as_str()), (false, "user"));

    // The password is stored as an argon2id hash, never in clear.
    let stored: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE email = 'alice@example.com'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert!(!stored.contains("correct horse"));

    // Only the hash of the verification code is stored.
    let code = app.verification_code("alice@example.com").await;
    let stored_hashes: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM email_verifications")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored_hashes.len(), 1);
    assert_ne!(hex::encode(&stored_hashes[0]), code);

    let (status, body) = app.post("/v1/accounts/verify", None, json!({"token": code})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["email_verified"], true);
    // A code works once.
    let (status, body) = app.post("/v1/accounts/verify", None, json!({"token": code})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let (status, body) = app
        .post(
            "/v1/accounts/login",
            None,
            json!({"email": "alice@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("pps_") && token.len() == 68, "{token}");
    let session_hashes: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM sessions")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(session_hashes.len(), 1);
    assert_eq!(session_hashes[0].len(), 32, "SHA-256, not the token");

    let (status, body) = app.get("/v1/accounts/me", &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["email"], "alice@example.com");

    let (status, _) = app.call(Method::POST, "/v1/accounts/logout", Some(&token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.get("/v1/accounts/me", &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn bad_registrations_name_the_field(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let cases = [
        (
            json!({"email": "not-an-email", "password": "correct horse battery"}),
            "email",
        ),
        (json!({"email": "a@b", "password": "correct horse battery"}), "email"),
        (json!({"email": "bob@example.com", "password": "short"}), "password"),
        (json!({"email": "bob@example.com"}), "password"),
        (json!({"password": "correct horse battery"}), "email"),
        (json!({"email": 5, "password": "correct horse battery"}), "email"),
        (
            json!({"email": "bob@example.com", "password": "correct horse battery", "admin": true}),
            "admin",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = app.post("/v1/accounts/register", None, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        assert_eq!(answer["error"]["field"], field, "{body} → {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(field), "{answer}");
    }
    // Not JSON at all, and the wrong content type.
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/accounts/register")
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let (status, answer) = app.send(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["code"], "invalid_json");
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/accounts/register")
        .body(Body::from("email=x"))
        .unwrap();
    let (status, answer) = app.send(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["code"], "unsupported_media_type");
    // A body over the limit.
    let huge = "x".repeat(app.config.http.body_limit_bytes + 1);
    let (status, answer) = app
        .post(
            "/v1/accounts/register",
            None,
            json!({"email": "bob@example.com", "password": huge}),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    // Nothing was created by any of these.
    let n_users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n_users, 0);
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_taken_address_answers_like_a_new_one_and_wrong_passwords_are_refused(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (status, fresh) = app
        .post(
            "/v1/accounts/register",
            None,
            json!({"email": "fresh@example.com", "password": "another password"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{fresh}");
    app.user("carol@example.com").await;
    let (status, body) = app
        .post(
            "/v1/accounts/register",
            None,
            json!({"email": "CAROL@example.com", "password": "another password"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, fresh, "the answer does not tell which addresses have accounts");
    // No second user; the owner gets a mail saying what happened.
    let n_users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE email = 'carol@example.com'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n_users, 1);
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM email_outbox WHERE recipient = 'carol@example.com' ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(kinds, ["verification", "account_exists"]);
    let notice: String = sqlx::query_scalar("SELECT body FROM email_outbox WHERE kind = 'account_exists'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(notice.contains("already has one"), "{notice}");
    // The password typed for the taken address did not replace the owner's.
    let (status, _) = app
        .post(
            "/v1/accounts/login",
            None,
            json!({"email": "carol@example.com", "password": "another password"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    for (email, password) in [
        ("carol@example.com", "wrong password!"),
        ("nobody@example.com", "correct horse battery"),
        ("nul\u{0}@example.com", "correct horse battery"),
    ] {
        let (status, body) = app
            .post(
                "/v1/accounts/login",
                None,
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["code"], "invalid_credentials");
    }
    for header in [
        "Bearer nonsense",
        "Basic abc",
        "Bearer pps_0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let request = Request::builder()
            .uri("/v1/accounts/me")
            .header("authorization", header)
            .body(Body::empty())
            .unwrap();
        let (status, _) = app.send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{header}");
    }
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn api_tokens_authenticate_and_are_stored_hashed(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (session, _) = app.user("dave@example.com").await;
    let (status, body) = app
        .post("/v1/accounts/tokens", Some(&session), json!({"name": "ci"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("ppt_"));
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_hash FROM api_tokens")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, payperplay_prod::auth::token_hash(&token));
    let (status, body) = app.get("/v1/accounts/me", &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["email"], "dave@example.com");
    let (status, body) = app
        .post("/v1/accounts/tokens", Some(&session), json!({"name": ""}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "name");
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn login_and_register_are_rate_limited(pool: PgPool) {
    let mut config = test_config();
    config.auth.login_per_minute = 3;
    config.auth.register_per_minute = 2;
    let app = TestApp::start_with(pool, config).await;
    let login = json!({"email": "eve@example.com", "password": "whatever password"});
    for _ in 0..3 {
        let (status, _) = app.post("/v1/accounts/login", None, login.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = app.post("/v1/accounts/login", None, login).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    for n in 0..2 {
        let (status, _) = app
            .post(
                "/v1/accounts/register",
                None,
                json!({"email": format!("r{n}@example.com"), "password": "correct horse battery"}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let (status, _) = app
        .post(
            "/v1/accounts/register",
            None,
            json!({"email": "r9@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn unknown_routes_and_methods_answer_json(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (status, body) = app.call(Method::GET, "/v1/nope", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = app.call(Method::PUT, "/v1/accounts/login", None, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"]["code"], "method_not_allowed");
    app.stop().await;
}
