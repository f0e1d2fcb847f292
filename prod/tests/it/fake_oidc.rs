//! A fake OAuth 2.0 / OIDC-style provider on loopback (a small axum app): `/authorize`
//! redirects back with a code (or an error), `/token` checks the client's credentials,
//! the code (single use), the redirect URI and the PKCE verifier (S256), `/userinfo`
//! answers the configured profile for an access token it issued.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const CLIENT_ID: &str = "payperplay-test";
pub const CLIENT_SECRET: &str = "fake-client-secret";

#[derive(Default)]
struct Provider {
    /// What `/userinfo` answers.
    profile: Value,
    /// `/authorize` answers `error=access_denied`.
    deny: bool,
    /// Codes not yet exchanged: code → (PKCE challenge, redirect URI).
    codes: BTreeMap<String, (String, String)>,
    /// Access and refresh tokens issued, in order.
    pub issued: Vec<(String, String)>,
    n_issued: u64,
}

#[derive(Clone)]
pub struct FakeOidc {
    pub base_url: String,
    provider: Arc<Mutex<Provider>>,
}

impl FakeOidc {
    pub async fn start(profile: Value) -> FakeOidc {
        let provider = Arc::new(Mutex::new(Provider {
            profile,
            ..Provider::default()
        }));
        let app = Router::new()
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .with_state(provider.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback port");
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake provider serves");
        });
        FakeOidc {
            base_url: format!("http://{address}"),
            provider,
        }
    }

    pub fn set_profile(&self, profile: Value) {
        self.provider.lock().unwrap().profile = profile;
    }

    pub fn set_deny(&self, deny: bool) {
        self.provider.lock().unwrap().deny = deny;
    }

    /// The last (access token, refresh token) issued.
    pub fn last_issued(&self) -> (String, String) {
        self.provider
            .lock()
            .unwrap()
            .issued
            .last()
            .cloned()
            .expect("a token was issued")
    }
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    response_type: String,
    client_id: String,
    redirect_uri: String,
    state: String,
    code_challenge: String,
    code_challenge_method: String,
}

async fn authorize(State(provider): State<Arc<Mutex<Provider>>>, Query(query): Query<AuthorizeQuery>) -> Response {
    assert_eq!(query.response_type, "code");
    assert_eq!(query.client_id, CLIENT_ID);
    assert_eq!(query.code_challenge_method, "S256", "PKCE with S256");
    let mut provider = provider.lock().unwrap();
    let location = if provider.deny {
        format!(
            "{}?error=access_denied&error_description=the+user+said+no&state={}",
            query.redirect_uri, query.state
        )
    } else {
        let code = format!("code-{}", provider.codes.len() + provider.issued.len() + 1);
        provider
            .codes
            .insert(code.clone(), (query.code_challenge, query.redirect_uri.clone()));
        format!("{}?code={code}&state={}", query.redirect_uri, query.state)
    };
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
    code: String,
    redirect_uri: String,
    code_verifier: String,
}

fn token_error(error: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": error}))).into_response()
}

async fn token(
    State(provider): State<Arc<Mutex<Provider>>>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let expected = format!(
        "Basic {}",
        base64(format!("{CLIENT_ID}:{CLIENT_SECRET}").as_bytes(), false)
    );
    if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_client"}))).into_response();
    }
    if form.grant_type != "authorization_code" {
        return token_error("unsupported_grant_type");
    }
    let mut provider = provider.lock().unwrap();
    // A code works once, whatever the outcome.
    let Some((challenge, redirect_uri)) = provider.codes.remove(&form.code) else {
        return token_error("invalid_grant");
    };
    let computed = base64(&Sha256::digest(form.code_verifier.as_bytes()), true);
    if computed != challenge || redirect_uri != form.redirect_uri {
        return token_error("invalid_grant");
    }
    provider.n_issued += 1;
    let n = provider.n_issued;
    let access = format!(
        "fake-access-token-{n}-{}",
        hex::encode(Sha256::digest(form.code.as_bytes()))
    );
    let refresh = format!("fake-refresh-token-{n}");
    provider.issued.push((access.clone(), refresh.clone()));
    Json(json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": 3600,
        "refresh_token": refresh,
    }))
    .into_response()
}

async fn userinfo(State(provider): State<Arc<Mutex<Provider>>>, headers: HeaderMap) -> Response {
    let provider = provider.lock().unwrap();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|token| provider.issued.iter().any(|(access, _)| access == token)) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_token"}))).into_response();
    }
    Json(provider.profile.clone()).into_response()
}

/// Base64 (RFC 4648), standard with padding or URL-safe without.
fn base64(bytes: &[u8], url_safe: bool) -> String {
    let alphabet: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        if !url_safe {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_matches_rfc_4648_vectors() {
    assert_eq!(base64(b"foobar", false), "Zm9vYmFy");
    assert_eq!(base64(b"fo", false), "Zm8=");
    assert_eq!(base64(b"f", false), "Zg==");
    assert_eq!(base64(&[0xfb, 0xff], true), "-_8");
}
