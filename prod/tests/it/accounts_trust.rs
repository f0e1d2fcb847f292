//! Accounts people can trust (issue 18): admin only by grant, codes never kept in
//! clear, recovery by mail, tokens that end, limits that hold. Each test here failed
//! on main b390634 (or its route did not exist).

use std::net::SocketAddr;

use crate::common::{TestApp, code_in, eventually, test_config};
use crate::mail::{SmtpSink, free_port};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use payperplay_prod::api::accounts::change_admin_role;
use payperplay_prod::auth::PrincipalCache;
use payperplay_prod::clock::Clock;
use payperplay_prod::config::{Argon2Config, Config, SmtpTls};
use payperplay_prod::store::{AdminChange, SCRUBBED_BODY};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery";

/// Sends `request` from `peer` (as `serve` records the socket's peer) and returns the
/// headers too.
async fn send_from(app: &TestApp, peer: &str, mut request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let peer: SocketAddr = peer.parse().expect("a socket address");
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = app.router.clone().oneshot(request).await.expect("router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, value)
}

fn json_request(path: &str, body: Value, extra_header: Option<(&str, &str)>) -> Request<Body> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("content-type", "application/json");
    if let Some((name, value)) = extra_header {
        request = request.header(name, value);
    }
    request.body(Body::from(body.to_string())).expect("request builds")
}

async fn register(app: &TestApp, email: &str) {
    let (status, body) = app
        .post(
            "/v1/accounts/register",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

async fn login(app: &TestApp, email: &str, password: &str) -> (StatusCode, Value) {
    app.post(
        "/v1/accounts/login",
        None,
        json!({"email": email, "password": password}),
    )
    .await
}

async fn session(app: &TestApp, email: &str) -> String {
    let (status, body) = login(app, email, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["token"].as_str().unwrap().to_string()
}

async fn token(app: &TestApp, session: &str, body: Value) -> (i64, String) {
    let (status, answer) = app.post("/v1/accounts/tokens", Some(session), body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    (
        answer["id"].as_i64().unwrap(),
        answer["token"].as_str().unwrap().to_string(),
    )
}

/// Lets cached principals expire (the cache keeps verified principals a few seconds).
fn past_principal_cache(app: &TestApp) {
    app.clock.advance_ms(PrincipalCache::TTL_MS + 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn registering_the_configured_admin_address_gives_no_admin_role(pool: PgPool) {
    let mut config = test_config();
    // Older configurations list admin addresses; they grant nothing any more.
    config.auth.admin_emails = vec!["boss@example.com".to_string()];
    let app = TestApp::start_with(pool, config).await;
    register(&app, "boss@example.com").await;
    // An unverified account may log in (to see its state, ask for another code)...
    let squatter = session(&app, "boss@example.com").await;
    let (status, me) = app.get("/v1/accounts/me", &squatter).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(
        (me["role"].as_str(), me["email_verified"].as_bool()),
        (Some("user"), Some(false))
    );
    // ...but the escalation of the issue fails: no admin route answers.
    let (status, body) = app.get("/v1/admin/users", &squatter).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "admin_only");
    // Even granted, an unverified address does not reach admin routes.
    change_admin_role(
        &app.store,
        "boss@example.com",
        AdminChange::Grant,
        "cli:ops",
        app.clock.now(),
    )
    .await
    .unwrap();
    let (status, body) = app.get("/v1/admin/users", &squatter).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "email_not_verified");
    let code = app.verification_code("boss@example.com").await;
    let (status, _) = app.post("/v1/accounts/verify", None, json!({"token": code})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.get("/v1/admin/users", &squatter).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Revoking takes the role away (within the principal cache's lifetime).
    change_admin_role(
        &app.store,
        "boss@example.com",
        AdminChange::Revoke,
        "cli:ops",
        app.clock.now(),
    )
    .await
    .unwrap();
    past_principal_cache(&app);
    let (status, _) = app.get("/v1/admin/users", &squatter).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Both changes are audited, naming who made them.
    let audit: Vec<(String, String, String)> =
        sqlx::query_as("SELECT actor, action, email FROM admin_audit ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        audit,
        [
            (
                "cli:ops".to_string(),
                "grant_admin".to_string(),
                "boss@example.com".to_string()
            ),
            (
                "cli:ops".to_string(),
                "revoke_admin".to_string(),
                "boss@example.com".to_string()
            ),
        ]
    );
    // Granting an address without an account is an error naming it, and audits nothing.
    let error = change_admin_role(
        &app.store,
        "ghost@example.com",
        AdminChange::Grant,
        "cli:ops",
        app.clock.now(),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("user with this email"), "{error}");
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn an_api_token_never_acts_as_admin(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (admin, _) = app.admin().await;
    let (_, all_scopes) = token(
        &app,
        &admin,
        json!({"name": "everything", "scopes": ["read", "servers", "billing"]}),
    )
    .await;
    let (status, body) = app.get("/v1/admin/users", &all_scopes).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "session_required");
    let (status, _) = app.get("/v1/admin/users", &admin).await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn verification_codes_leave_the_outbox_once_sent(pool: PgPool) {
    let sink = SmtpSink::start(free_port());
    let mut config = test_config();
    config.smtp.port = sink.port;
    let app = TestApp::start_with(pool, config).await;
    register(&app, "scrub@example.com").await;
    eventually("verification mail received", || async {
        !sink.messages_to("scrub@example.com").is_empty()
    })
    .await;
    let mail = sink.messages_to("scrub@example.com").remove(0);
    let code = code_in(&mail).expect("code in mail");
    eventually("the sent mail's body is scrubbed", || async {
        let body: String = sqlx::query_scalar("SELECT body FROM email_outbox WHERE recipient = 'scrub@example.com'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        body == SCRUBBED_BODY
    })
    .await;
    // Nowhere in the database in clear: not the outbox, not the verification table.
    let dump: String = sqlx::query_scalar("SELECT string_agg(t::TEXT, ' ') FROM (SELECT * FROM email_outbox) t")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!dump.contains(&code), "{dump}");
    let n_clear: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM email_verifications WHERE encode(token_hash, 'hex') = $1")
            .bind(&code)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(n_clear, 0);
    // The code still works from the mail.
    let (status, body) = app.post("/v1/accounts/verify", None, json!({"token": code})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn resending_a_code_works_within_a_daily_limit(pool: PgPool) {
    let mut config = test_config();
    config.auth.account_mails_per_day = 3;
    let app = TestApp::start_with(pool, config).await;
    register(&app, "late@example.com").await;
    let first_code = app.verification_code("late@example.com").await;
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM email_outbox WHERE recipient = 'late@example.com'")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    let mut answers = Vec::new();
    for _ in 0..4 {
        let (status, body) = app
            .post("/v1/accounts/verify/resend", None, json!({"email": "late@example.com"}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        answers.push(body);
    }
    assert_eq!(
        count().await,
        3,
        "the registration mail and two resends, then the limit"
    );
    // An unknown address answers the same and mails nobody.
    let (status, body) = app
        .post(
            "/v1/accounts/verify/resend",
            None,
            json!({"email": "nobody@example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body, answers[0]);
    // A day later the limit is back.
    app.clock.advance_ms(24 * 3_600_000 + 1);
    app.post("/v1/accounts/verify/resend", None, json!({"email": "late@example.com"}))
        .await;
    assert_eq!(count().await, 4);
    let newest = app.verification_code("late@example.com").await;
    assert_ne!(newest, first_code);
    let (status, body) = app.post("/v1/accounts/verify", None, json!({"token": newest})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn unverified_accounts_are_purged_and_their_address_freed(pool: PgPool) {
    let app = TestApp::start(pool).await;
    register(&app, "squat@example.com").await;
    let squatter_code = app.verification_code("squat@example.com").await;
    let (_, kept_id) = app.user("kept@example.com").await;
    let old_id: i64 = sqlx::query_scalar("SELECT id FROM users WHERE email = 'squat@example.com'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    // Before the purge age, registering again only mails a new code.
    register(&app, "squat@example.com").await;
    let n_users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE email = 'squat@example.com'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n_users, 1);
    // After it, the rightful owner can register the address.
    app.clock.advance_ms(app.config.auth.unverified_purge_after_ms + 1);
    register(&app, "squat@example.com").await;
    let new_id: i64 = sqlx::query_scalar("SELECT id FROM users WHERE email = 'squat@example.com'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_ne!(new_id, old_id, "a new account, not the squatter's");
    let (status, _) = app
        .post("/v1/accounts/verify", None, json!({"token": squatter_code}))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the squatter's code died with the account"
    );
    // The periodic purge deletes old unverified accounts and nothing else.
    register(&app, "idle@example.com").await;
    app.clock.advance_ms(app.config.auth.unverified_purge_after_ms + 1);
    let cutoff = payperplay_core::Timestamp(app.clock.now().0 - app.config.auth.unverified_purge_after_ms);
    let n_purged = app.store.purge_unverified(cutoff).await.unwrap();
    assert_eq!(n_purged, 2, "idle@ and the re-registered squat@");
    assert!(app.store.user_by_id(kept_id).await.is_ok(), "verified accounts stay");
    app.stop().await;
}

async fn reset_code(app: &TestApp, email: &str) -> String {
    let body: String = sqlx::query_scalar(
        "SELECT body FROM email_outbox WHERE recipient = $1 AND kind = 'password_reset' ORDER BY id DESC LIMIT 1",
    )
    .bind(email)
    .fetch_one(&app.pool)
    .await
    .expect("reset mail queued");
    code_in(&body).expect("mail has a code")
}

#[sqlx::test(migrations = "../migrations")]
async fn a_password_reset_by_mail_is_single_use_expires_and_ends_every_session(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (old_session, _) = app.user("forgetful@example.com").await;
    let (_, api_token) = token(&app, &old_session, json!({"name": "script"})).await;
    let (status, known) = app
        .post(
            "/v1/accounts/password/forgot",
            None,
            json!({"email": "forgetful@example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, unknown) = app
        .post(
            "/v1/accounts/password/forgot",
            None,
            json!({"email": "stranger@example.com"}),
        )
        .await;
    assert_eq!(
        (status, &unknown),
        (StatusCode::ACCEPTED, &known),
        "same answer for any address"
    );
    let n_stranger_mails: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM email_outbox WHERE recipient = 'stranger@example.com'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(n_stranger_mails, 0);
    let code = reset_code(&app, "forgetful@example.com").await;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_hash FROM password_resets")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        stored,
        payperplay_prod::auth::token_hash(&code),
        "only the hash is stored"
    );
    let reset = json!({"token": code, "new_password": "a brand new password"});
    let (status, body) = app.post("/v1/accounts/password/reset", None, reset.clone()).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    past_principal_cache(&app);
    for old in [&old_session, &api_token] {
        let (status, _) = app.get("/v1/accounts/me", old).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "every session and token ended");
    }
    let (status, _) = login(&app, "forgetful@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = login(&app, "forgetful@example.com", "a brand new password").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.post("/v1/accounts/password/reset", None, reset).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a code works once");
    // A code past its lifetime does nothing.
    app.post(
        "/v1/accounts/password/forgot",
        None,
        json!({"email": "forgetful@example.com"}),
    )
    .await;
    let late_code = reset_code(&app, "forgetful@example.com").await;
    app.clock.advance_ms(app.config.auth.password_reset_ttl_ms + 1);
    let (status, _) = app
        .post(
            "/v1/accounts/password/reset",
            None,
            json!({"token": late_code, "new_password": "yet another password"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn api_tokens_are_scoped_expire_are_listed_revoked_and_counted(pool: PgPool) {
    let mut config = test_config();
    config.auth.api_tokens_per_user_max = 3;
    let app = TestApp::start_with(pool, config).await;
    let (session, _) = app.user("scripter@example.com").await;
    let (read_id, read_only) = token(&app, &session, json!({"name": "dashboard"})).await;
    let (_, servers) = token(
        &app,
        &session,
        json!({"name": "deploy", "scopes": ["servers"], "expires_in_days": 1}),
    )
    .await;
    // Scopes: reading needs `read`, changing servers needs `servers`; tokens never
    // make tokens.
    let (status, _) = app.get("/v1/servers", &read_only).await;
    assert_eq!(status, StatusCode::OK);
    let create = json!({"name": "scoped", "ram_mib": 2048});
    let (status, body) = app.post("/v1/servers", Some(&read_only), create.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "token_scope");
    let (status, body) = app.post("/v1/servers", Some(&servers), create).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = app.get("/v1/servers", &servers).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no read scope");
    let (status, body) = app
        .post("/v1/accounts/tokens", Some(&servers), json!({"name": "child"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "session_required");
    // Listed without the tokens themselves.
    let (status, list) = app.get("/v1/accounts/tokens", &session).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dashboard", "deploy"]);
    assert_eq!(list[0]["scopes"], json!(["read"]));
    assert!(!list.to_string().contains("ppt_"), "{list}");
    // A quota per user.
    token(&app, &session, json!({"name": "third"})).await;
    let (status, body) = app
        .post("/v1/accounts/tokens", Some(&session), json!({"name": "fourth"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "quota_exceeded");
    // Revoke: gone at once; twice or another user's is a 404.
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/accounts/tokens/{read_id}"),
            Some(&session),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get("/v1/accounts/me", &read_only).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/accounts/tokens/{read_id}"),
            Some(&session),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (other, _) = app.user("other@example.com").await;
    let (other_id, _) = token(&app, &other, json!({"name": "theirs"})).await;
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/accounts/tokens/{other_id}"),
            Some(&session),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Expiry: the one-day token ends after a day.
    app.clock.advance_ms(24 * 3_600_000 + 1);
    let (status, _) = app.get("/v1/servers", &servers).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = app
        .post(
            "/v1/accounts/tokens",
            Some(&session),
            json!({"name": "forever", "expires_in_days": 100000}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "expires_in_days");
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn password_change_and_logout_everywhere_end_sessions(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (first, _) = app.user("mover@example.com").await;
    let second = session(&app, "mover@example.com").await;
    let (_, api_token) = token(&app, &first, json!({"name": "kept"})).await;
    let (status, body) = app
        .post(
            "/v1/accounts/password",
            Some(&first),
            json!({"current_password": "not my password", "new_password": "a brand new password"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "current_password");
    let (status, body) = app
        .post(
            "/v1/accounts/password",
            Some(&first),
            json!({"current_password": PASSWORD, "new_password": "a brand new password"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fresh = body["token"].as_str().unwrap().to_string();
    for old in [&first, &second] {
        let (status, _) = app.get("/v1/accounts/me", old).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "sessions end on a password change");
    }
    for live in [&fresh, &api_token] {
        let (status, _) = app.get("/v1/accounts/me", live).await;
        assert_eq!(status, StatusCode::OK, "the new session and API tokens stay");
    }
    let (status, _) = app
        .call(Method::POST, "/v1/accounts/logout-everywhere", Some(&fresh), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for ended in [&fresh, &api_token] {
        let (status, _) = app.get("/v1/accounts/me", ended).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "logged out everywhere");
    }
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn limits_follow_the_client_behind_a_trusted_proxy_its_64_and_the_account(pool: PgPool) {
    let mut config = test_config();
    config.auth.login_per_minute = 2;
    config.auth.login_per_account_per_minute = 3;
    config.auth.trusted_proxies = vec!["10.9.0.0/16".to_string()];
    let app = TestApp::start_with(pool, config).await;
    let attempt = |n: u32| json!({"email": format!("victim{n}@example.com"), "password": "guess guess guess"});
    let from_proxy = |client: &'static str, n: u32| {
        json_request("/v1/accounts/login", attempt(n), Some(("x-forwarded-for", client)))
    };
    // Behind the proxy, each client has its own budget: one attacker does not lock
    // everyone out.
    for n in 0..2 {
        let (status, _, _) = send_from(&app, "10.9.0.1:4000", from_proxy("198.51.100.1", n)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, headers, body) = send_from(&app, "10.9.0.1:4000", from_proxy("198.51.100.1", 2)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let (status, _, _) = send_from(&app, "10.9.0.1:4000", from_proxy("198.51.100.2", 3)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "another client behind the proxy is not limited"
    );
    // A peer that is not a configured proxy cannot pick its address with the header.
    for n in 10..12 {
        let request = json_request(
            "/v1/accounts/login",
            attempt(n),
            Some(("x-forwarded-for", "203.0.113.9")),
        );
        let (status, _, _) = send_from(&app, "192.0.2.50:4000", request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let request = json_request(
        "/v1/accounts/login",
        attempt(12),
        Some(("x-forwarded-for", "203.0.113.10")),
    );
    let (status, _, _) = send_from(&app, "192.0.2.50:4000", request).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the header of an untrusted peer is ignored"
    );
    // IPv6: a /64 is one client; rotating addresses inside it does not help.
    for (n, peer) in [(20, "[2001:db8:1:2::1]:4000"), (21, "[2001:db8:1:2::2]:4000")] {
        let (status, _, _) = send_from(&app, peer, json_request("/v1/accounts/login", attempt(n), None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _, _) = send_from(
        &app,
        "[2001:db8:1:2:ffff::9]:4000",
        json_request("/v1/accounts/login", attempt(22), None),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _, _) = send_from(
        &app,
        "[2001:db8:1:3::1]:4000",
        json_request("/v1/accounts/login", attempt(23), None),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the next /64 is another client");
    // Per account: guesses at one account from many addresses are limited too.
    let guess = json!({"email": "target@example.com", "password": "guess guess guess"});
    for n in 0..3 {
        let peer = format!("192.0.2.{}:4000", 100 + n);
        let (status, _, _) = send_from(&app, &peer, json_request("/v1/accounts/login", guess.clone(), None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, headers, _) = send_from(
        &app,
        "192.0.2.200:4000",
        json_request("/v1/accounts/login", guess, None),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.contains_key("retry-after"));
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn authenticated_mutations_are_limited_per_user(pool: PgPool) {
    let mut config = test_config();
    config.auth.mutations_per_user_per_minute = 2;
    let app = TestApp::start_with(pool, config).await;
    let (session, _) = app.user("busy@example.com").await;
    for n in 0..2 {
        token(&app, &session, json!({"name": format!("t{n}")})).await;
    }
    let (status, body) = app
        .post("/v1/accounts/tokens", Some(&session), json!({"name": "t2"}))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // Reading is not a mutation.
    let (status, _) = app.get("/v1/accounts/tokens", &session).await;
    assert_eq!(status, StatusCode::OK);
    // Another user is not affected.
    let (other, _) = app.user("calm@example.com").await;
    token(&app, &other, json!({"name": "mine"})).await;
    app.stop().await;
}

#[test]
fn configuration_that_would_weaken_accounts_is_refused_at_load() {
    let mut config = Config::default();
    config.smtp.host = "smtp.example.com".to_string();
    config.smtp.tls = SmtpTls::None;
    config.smtp.username = Some("mailer".to_string());
    config.smtp.password = Some(SecretString::from("hunter2"));
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("smtp") && error.contains("smtp.example.com"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
    config.smtp.tls = SmtpTls::StartTls;
    config.validate().expect("credentials over TLS are fine");
    config.smtp.tls = SmtpTls::None;
    config.smtp.host = "127.0.0.1".to_string();
    config.validate().expect("credentials to a loopback relay are fine");

    let mut config = Config::default();
    config.auth.argon2 = Argon2Config {
        memory_kib: 1,
        iterations: 0,
        parallelism: 1,
    };
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("auth.argon2"), "{error}");

    let mut config = Config::default();
    config.auth.trusted_proxies = vec!["10.0.0.0/99".to_string()];
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("trusted_proxies"), "{error}");
}

#[sqlx::test(migrations = "../migrations")]
async fn servers_per_user_are_capped_by_configuration(pool: PgPool) {
    let mut config = test_config();
    config.auth.servers_per_user_max = 2;
    let app = TestApp::start_with(pool, config).await;
    let (session, _) = app.user("builder@example.com").await;
    let first = app.create_server(&session, "one", 2048).await;
    app.create_server(&session, "two", 2048).await;
    let (status, body) = app
        .post("/v1/servers", Some(&session), json!({"name": "three", "ram_mib": 2048}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "quota_exceeded");
    // A deleted server no longer counts.
    let (status, body) = app
        .call(Method::DELETE, &format!("/v1/servers/{first}"), Some(&session), None)
        .await;
    assert!(status.is_success(), "{status} {body}");
    app.create_server(&session, "three", 2048).await;
    // Another user has a quota of their own.
    let (other, _) = app.user("neighbour@example.com").await;
    app.create_server(&other, "one", 2048).await;
    app.stop().await;
}
