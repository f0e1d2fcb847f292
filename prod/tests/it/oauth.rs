//! OAuth sign-in through the REST API against a fake provider on loopback: the whole
//! flow, a replayed or expired state, a wrong PKCE verifier, a provider error,
//! linking; provider tokens sealed at rest (not in clear, right key and row only) and
//! re-sealed by key rotation.

use axum::http::{Method, StatusCode};
use payperplay_nodes::SecretBox;
use payperplay_prod::config::{Config, OAuthProviderConfig};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::common::{TestApp, test_config};
use crate::fake_oidc::{CLIENT_ID, CLIENT_SECRET, FakeOidc};

fn config_with(fake: &FakeOidc) -> Config {
    let mut config = test_config();
    config.oauth.providers = vec![OAuthProviderConfig {
        name: "fake".to_string(),
        preset: None,
        issuer: Some(fake.base_url.clone()),
        auth_url: None,
        token_url: None,
        userinfo_url: None,
        client_id: CLIENT_ID.to_string(),
        client_secret: SecretString::from(CLIENT_SECRET),
        scopes: None,
        subject_field: None,
        email_field: None,
        email_verified_field: None,
    }];
    config.validate().expect("the test provider configuration is valid");
    config
}

fn profile(subject: &str, email: &str, verified: bool) -> Value {
    json!({"sub": subject, "email": email, "email_verified": verified, "name": "Someone"})
}

/// Starts a sign-in (or a link, with a session) and follows the provider's redirect:
/// returns the callback's path and query on our API.
async fn authorize(app: &TestApp, session: Option<&str>) -> String {
    let path = if session.is_some() {
        "/v1/oauth/fake/link"
    } else {
        "/v1/oauth/fake/start"
    };
    let (status, body) = app.call(Method::POST, path, session, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let authorize_url = body["authorize_url"].as_str().unwrap();
    assert!(authorize_url.contains("code_challenge_method=S256"), "{authorize_url}");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client.get(authorize_url).send().await.expect("fake provider answers");
    assert_eq!(response.status(), reqwest::StatusCode::FOUND);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let callback = format!("{}/v1/oauth/fake/callback", app.config.http.public_base_url);
    let query = location
        .strip_prefix(&callback)
        .unwrap_or_else(|| panic!("redirected to {location}, not to {callback}"));
    format!("/v1/oauth/fake/callback{query}")
}

async fn callback(app: &TestApp, path: &str) -> (StatusCode, Value) {
    app.call(Method::GET, path, None, None).await
}

fn secret_box(app: &TestApp) -> SecretBox {
    let key = &app.config.secrets.keys[0];
    SecretBox::from_hex_keys(key.id, [(key.id, key.key_hex.expose_secret())]).unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn signing_in_creates_one_user_and_identity_with_the_tokens_sealed(pool: PgPool) {
    let fake = FakeOidc::start(profile("subject-1", "Player@Example.com", true)).await;
    let app = TestApp::start_with(pool, config_with(&fake)).await;
    let (status, providers) = app.call(Method::GET, "/v1/oauth/providers", None, None).await;
    assert_eq!((status, providers), (StatusCode::OK, json!([{"name": "fake"}])));
    let path = authorize(&app, None).await;
    let (status, session) = callback(&app, &path).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(session["user"]["email"], "player@example.com");
    assert_eq!(session["user"]["email_verified"], true);
    let token = session["token"].as_str().unwrap();
    let (status, me) = app.get("/v1/accounts/me", token).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    let user_id = me["id"].as_i64().unwrap();

    // The provider's tokens are sealed: not in clear, open with the key for this row
    // only.
    let (access, refresh) = fake.last_issued();
    let (identity_id, sealed_access, sealed_refresh, key_id): (i64, String, Option<String>, i64) = sqlx::query_as(
        "SELECT id, access_token_sealed, refresh_token_sealed, key_id FROM oauth_identities WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let row_text: String = sqlx::query_scalar("SELECT t::TEXT FROM oauth_identities t")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        !row_text.contains(&access) && !row_text.contains(&refresh),
        "{row_text}"
    );
    assert_eq!(key_id, i64::from(app.config.secrets.keys[0].id));
    let secrets = secret_box(&app);
    assert_eq!(
        secrets.decrypt(identity_id, &sealed_access).unwrap().expose_secret(),
        access
    );
    assert_eq!(
        secrets
            .decrypt(identity_id, sealed_refresh.as_deref().unwrap())
            .unwrap()
            .expose_secret(),
        refresh
    );
    let error = secrets.decrypt(identity_id + 1, &sealed_access).unwrap_err();
    assert!(
        error.to_string().contains("does not decrypt"),
        "wrong associated data: {error}"
    );

    // The user has no password: a password login cannot guess one.
    let (status, _) = app
        .post(
            "/v1/accounts/login",
            None,
            json!({"email": "player@example.com", "password": ""}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Signing in again finds the same user and identity.
    let path = authorize(&app, None).await;
    let (status, again) = callback(&app, &path).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["user"]["id"].as_i64(), Some(user_id));
    let counts: (i64, i64) =
        sqlx::query_as("SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM oauth_identities)")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(counts, (1, 1));
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_state_works_once_and_not_after_it_expires(pool: PgPool) {
    let fake = FakeOidc::start(profile("subject-2", "replay@example.com", true)).await;
    let app = TestApp::start_with(pool, config_with(&fake)).await;
    let path = authorize(&app, None).await;
    let (status, body) = callback(&app, &path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = callback(&app, &path).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "oauth_state_invalid");
    // A state nobody issued.
    let forged = format!("/v1/oauth/fake/callback?code=code-1&state={}", "ab".repeat(32));
    let (status, body) = callback(&app, &forged).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("oauth_state_invalid"))
    );
    // Too late.
    let path = authorize(&app, None).await;
    app.clock.advance_ms(app.config.oauth.state_ttl_ms + 1);
    let (status, body) = callback(&app, &path).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "oauth_state_invalid");
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_wrong_pkce_verifier_is_refused_and_creates_nobody(pool: PgPool) {
    let fake = FakeOidc::start(profile("subject-3", "pkce@example.com", true)).await;
    let app = TestApp::start_with(pool, config_with(&fake)).await;
    let path = authorize(&app, None).await;
    // As if an attacker had swapped the code into another person's flow: the verifier
    // kept for this state does not match the challenge the provider saw.
    sqlx::query("UPDATE oauth_states SET pkce_verifier = $1")
        .bind("x".repeat(64))
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, body) = callback(&app, &path).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "oauth_exchange_refused");
    let n_users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n_users, 0);
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_provider_error_ends_the_sign_in(pool: PgPool) {
    let fake = FakeOidc::start(profile("subject-4", "denied@example.com", true)).await;
    let app = TestApp::start_with(pool, config_with(&fake)).await;
    fake.set_deny(true);
    let path = authorize(&app, None).await;
    assert!(path.contains("error=access_denied"), "{path}");
    let (status, body) = callback(&app, &path).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "oauth_denied");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("access_denied"),
        "{body}"
    );
    let (status, body) = callback(&app, &path).await;
    assert_eq!(body["error"]["code"], "oauth_state_invalid", "{status} {body}");
    // An unknown provider is a 404.
    let (status, _) = app.call(Method::POST, "/v1/oauth/nope/start", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn identities_link_only_to_verified_addresses(pool: PgPool) {
    let fake = FakeOidc::start(profile("subject-5", "alice@example.com", true)).await;
    let app = TestApp::start_with(pool, config_with(&fake)).await;
    // Same verified address on both sides: linked to the existing account.
    let (_, alice_id) = app.user("alice@example.com").await;
    let path = authorize(&app, None).await;
    let (status, body) = callback(&app, &path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["id"].as_i64(), Some(alice_id));

    // An unverified account with the address: no link (whoever registered it first
    // does not get the provider's identity).
    let (status, _) = app
        .post(
            "/v1/accounts/register",
            None,
            json!({"email": "unproven@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    fake.set_profile(profile("subject-6", "unproven@example.com", true));
    let path = authorize(&app, None).await;
    let (status, body) = callback(&app, &path).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "oauth_link_refused");

    // The provider has not verified the address: no link either.
    app.user("bob@example.com").await;
    fake.set_profile(profile("subject-7", "bob@example.com", false));
    let path = authorize(&app, None).await;
    let (status, body) = callback(&app, &path).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Linking explicitly from a signed-in, verified account works for any address.
    let (carol, carol_id) = app.user("carol@example.com").await;
    fake.set_profile(profile("subject-8", "carol.elsewhere@example.com", false));
    let path = authorize(&app, Some(&carol)).await;
    let (status, body) = callback(&app, &path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["id"].as_i64(), Some(carol_id));
    // That identity now signs carol in.
    let path = authorize(&app, None).await;
    let (status, body) = callback(&app, &path).await;
    assert_eq!((status, body["user"]["id"].as_i64()), (StatusCode::OK, Some(carol_id)));
    // An API token cannot start a link.
    let (status, token) = app
        .post(
            "/v1/accounts/tokens",
            Some(&carol),
            json!({"name": "t", "scopes": ["read", "servers"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/oauth/fake/link",
            Some(token["token"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let n_identities: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM oauth_identities")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n_identities, 2, "alice's and carol's");
    app.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn rotation_reseals_provider_tokens_under_the_new_key(pool: PgPool) {
    let fake = FakeOidc::start(profile("subject-9", "rotate@example.com", true)).await;
    let app = TestApp::start_with(pool, config_with(&fake)).await;
    let path = authorize(&app, None).await;
    let (status, body) = callback(&app, &path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (access, _) = fake.last_issued();
    let old = &app.config.secrets.keys[0];
    let new_key = SecretBox::generate_key_hex().unwrap();
    let new_id = old.id + 1;
    let rotating = SecretBox::from_hex_keys(
        new_id,
        [(new_id, new_key.as_str()), (old.id, old.key_hex.expose_secret())],
    )
    .unwrap();
    let counts = app.store.reseal_secrets(&rotating).await.unwrap();
    assert_eq!(counts.oauth_identities, 1);
    let (id, sealed, key_id): (i64, String, i64) =
        sqlx::query_as("SELECT id, access_token_sealed, key_id FROM oauth_identities")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(key_id, i64::from(new_id));
    assert!(sealed.starts_with(&format!("v1:{new_id}:")), "{sealed}");
    let only_new = SecretBox::from_hex_keys(new_id, [(new_id, new_key.as_str())]).unwrap();
    assert_eq!(only_new.decrypt(id, &sealed).unwrap().expose_secret(), access);
    assert!(
        secret_box(&app).decrypt(id, &sealed).is_err(),
        "the old key no longer opens it"
    );
    // Running it again finds nothing left to do.
    assert_eq!(app.store.reseal_secrets(&rotating).await.unwrap().oauth_identities, 0);
    app.stop().await;
}
