//! Sign-in with OAuth 2.0 providers (the `oauth2` crate): authorization code with
//! PKCE (S256), the state kept server-side (single use, expiring), the provider's user
//! info read with its access token. A known identity signs its user in; a new one is
//! linked to the signed-in account (`/link`), or to the account with the same address
//! when both that account and the provider have verified it, or gets a new user (user
//! and identity in one transaction). Provider tokens are sealed at rest
//! (AES-256-GCM, the identity's row id as associated data).
//!
//! The provider redirects the browser to `{public_base_url}/v1/oauth/{name}/callback`,
//! which answers a session as JSON.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::extract::State;
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, TokenResponse, TokenUrl,
};
use payperplay_nodes::SecretBox;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::accounts::{SessionView, new_session, normalize_email, register_in_core};
use super::extract::{Path, Query};
use crate::auth::{self, Authenticated, ClientAddress, limit_key};
use crate::config::{Config, OAuthProvider};
use crate::error::{ApiError, ErrorBody};
use crate::store::{OAuthProfile, OAuthSignIn, SealError};

/// Largest user info answer read from a provider.
const USERINFO_BYTES_MAX: usize = 64 * 1024;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_providers))
        .routes(routes!(start))
        .routes(routes!(link))
        .routes(routes!(callback))
}

/// The configured providers, their HTTP client and the key box sealing their tokens.
pub struct OAuthProviders {
    providers: Vec<OAuthProvider>,
    secrets: Option<SecretBox>,
    client: reqwest::Client,
    public_base_url: String,
    state_ttl_ms: u64,
}

impl OAuthProviders {
    /// From a validated configuration (providers resolve, a key exists if any
    /// provider is configured).
    pub fn new(config: &Config) -> OAuthProviders {
        let client = reqwest::Client::builder()
            // Following redirects would open the token request to SSRF.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(config.oauth.request_timeout_ms))
            .build()
            .expect("the HTTP client builds (rustls with aws-lc-rs)");
        OAuthProviders {
            providers: config
                .oauth
                .providers
                .iter()
                .filter_map(|provider| provider.resolve().ok())
                .collect(),
            secrets: crate::drivers::docker::secret_box(&config.secrets).ok().flatten(),
            client,
            public_base_url: config.http.public_base_url.trim_end_matches('/').to_string(),
            state_ttl_ms: config.oauth.state_ttl_ms,
        }
    }

    fn provider(&self, name: &str) -> Result<&OAuthProvider, ApiError> {
        self.providers
            .iter()
            .find(|provider| provider.name == name)
            .ok_or(ApiError::NotFound { what: "oauth provider" })
    }

    fn redirect_url(&self, provider: &OAuthProvider) -> String {
        format!("{}/v1/oauth/{}/callback", self.public_base_url, provider.name)
    }

    /// The provider's authorization URL for this state and PKCE challenge.
    fn authorize_url(
        &self,
        provider: &OAuthProvider,
        state: &str,
        challenge: PkceCodeChallenge,
    ) -> Result<String, ApiError> {
        let client = BasicClient::new(ClientId::new(provider.client_id.clone()))
            .set_auth_uri(AuthUrl::new(provider.auth_url.clone()).map_err(internal)?)
            .set_redirect_uri(RedirectUrl::new(self.redirect_url(provider)).map_err(internal)?);
        let state = state.to_string();
        let (url, _) = client
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(provider.scopes.iter().cloned().map(oauth2::Scope::new))
            .set_pkce_challenge(challenge)
            .url();
        Ok(url.to_string())
    }

    /// Trades the code for tokens (with the PKCE verifier), then reads the user info.
    async fn exchange(&self, provider: &OAuthProvider, code: &str, verifier: String) -> Result<OAuthProfile, ApiError> {
        let client = BasicClient::new(ClientId::new(provider.client_id.clone()))
            .set_client_secret(ClientSecret::new(provider.client_secret.expose_secret().to_string()))
            .set_auth_uri(AuthUrl::new(provider.auth_url.clone()).map_err(internal)?)
            .set_token_uri(TokenUrl::new(provider.token_url.clone()).map_err(internal)?)
            .set_redirect_uri(RedirectUrl::new(self.redirect_url(provider)).map_err(internal)?);
        let http = OAuthHttp(self.client.clone());
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier))
            .request_async(&http)
            .await
            .map_err(|error| match error {
                RequestTokenError::ServerResponse(response) => ApiError::BadRequest {
                    code: "oauth_exchange_refused",
                    field: None,
                    message: format!("{} refused the authorization code: {}", provider.name, response.error()),
                },
                other => {
                    tracing::warn!(provider = %provider.name, error = %other, "oauth token exchange failed");
                    ApiError::Unavailable(format!("oauth provider {}: token exchange failed", provider.name))
                }
            })?;
        let access_token = token.access_token().secret().to_string();
        let info = self.userinfo(provider, &access_token).await?;
        let field = |name: &str| info.get(name).filter(|value| !value.is_null());
        let subject = match field(&provider.subject_field) {
            Some(serde_json::Value::String(text)) if !text.is_empty() => text.clone(),
            Some(serde_json::Value::Number(number)) => number.to_string(),
            _ => return Err(incomplete(provider, &provider.subject_field)),
        };
        let email = field(&provider.email_field)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| incomplete(provider, &provider.email_field))?;
        let email = normalize_email(email).map_err(|_| incomplete(provider, &provider.email_field))?;
        let email_verified = field(&provider.email_verified_field)
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        Ok(OAuthProfile {
            provider: provider.name.clone(),
            subject,
            email,
            email_verified,
            access_token: SecretString::from(access_token),
            refresh_token: token
                .refresh_token()
                .map(|refresh| SecretString::from(refresh.secret().to_string())),
        })
    }

    async fn userinfo(
        &self,
        provider: &OAuthProvider,
        access_token: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
        let unavailable = |what: String| {
            tracing::warn!(provider = %provider.name, %what, "oauth user info failed");
            ApiError::Unavailable(format!("oauth provider {}: user info failed", provider.name))
        };
        let response = self
            .client
            .get(&provider.userinfo_url)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|error| unavailable(error.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("status {}", response.status())));
        }
        let body = response.bytes().await.map_err(|error| unavailable(error.to_string()))?;
        if body.len() > USERINFO_BYTES_MAX {
            return Err(unavailable(format!("{} bytes", body.len())));
        }
        serde_json::from_slice(&body).map_err(|error| unavailable(format!("not a JSON object: {error}")))
    }
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(error.to_string())
}

fn incomplete(provider: &OAuthProvider, field: &str) -> ApiError {
    ApiError::BadRequest {
        code: "oauth_profile_incomplete",
        field: None,
        message: format!(
            "{} did not give a usable `{field}` (grant the email scope and verify the address there)",
            provider.name
        ),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OAuthHttpError {
    #[error("request to the provider failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("the provider's answer could not be read: {0}")]
    Response(String),
}

/// The `oauth2` crate's HTTP client: our reqwest client (rustls with aws-lc-rs, no
/// redirects followed). A type of its own (not a closure) so the handler's future is
/// `Send`.
struct OAuthHttp(reqwest::Client);

impl<'c> oauth2::AsyncHttpClient<'c> for OAuthHttp {
    type Error = OAuthHttpError;
    type Future = Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, OAuthHttpError>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(send(&self.0, request))
    }
}

async fn send(client: &reqwest::Client, request: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, OAuthHttpError> {
    let (parts, body) = request.into_parts();
    let response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    let mut builder = axum::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let body = response.bytes().await?;
    builder
        .body(body.to_vec())
        .map_err(|error| OAuthHttpError::Response(error.to_string()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthProviderView {
    pub name: String,
}

/// The configured sign-in providers.
#[utoipa::path(
    get, path = "/v1/oauth/providers", tag = "oauth",
    responses((status = 200, description = "Providers", body = [OAuthProviderView]))
)]
async fn list_providers(State(state): State<AppState>) -> axum::Json<Vec<OAuthProviderView>> {
    axum::Json(
        state
            .oauth
            .providers
            .iter()
            .map(|provider| OAuthProviderView {
                name: provider.name.clone(),
            })
            .collect(),
    )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizeView {
    /// Send the browser here; the provider comes back to the callback.
    pub authorize_url: String,
    pub expires_at_ms: i64,
}

async fn begin(state: &AppState, provider_name: &str, link_user_id: Option<i64>) -> Result<AuthorizeView, ApiError> {
    let provider = state.oauth.provider(provider_name)?;
    let (state_token, state_hash) = auth::new_token("");
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let authorize_url = state.oauth.authorize_url(provider, &state_token, challenge)?;
    let now = state.clock.now();
    let expires_at = now.plus_ms(state.oauth.state_ttl_ms);
    state
        .store
        .create_oauth_state(
            &state_hash,
            &provider.name,
            verifier.secret(),
            link_user_id,
            expires_at,
            now,
        )
        .await?;
    Ok(AuthorizeView {
        authorize_url,
        expires_at_ms: crate::clock::to_db(expires_at),
    })
}

/// Start signing in with a provider.
#[utoipa::path(
    post, path = "/v1/oauth/{provider}/start", tag = "oauth",
    params(("provider" = String, Path, description = "Provider name")),
    responses(
        (status = 200, description = "Where to send the browser", body = AuthorizeView),
        (status = 404, description = "No such provider", body = ErrorBody),
    )
)]
async fn start(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    Path(provider): Path<String>,
) -> Result<axum::Json<AuthorizeView>, ApiError> {
    state.accounts.register_by_address.check(&limit_key(client))?;
    Ok(axum::Json(begin(&state, &provider, None).await?))
}

/// Start linking a provider to the signed-in account (a session with a verified
/// address).
#[utoipa::path(
    post, path = "/v1/oauth/{provider}/link", tag = "oauth",
    security(("bearer" = [])),
    params(("provider" = String, Path, description = "Provider name")),
    responses(
        (status = 200, description = "Where to send the browser", body = AuthorizeView),
        (status = 404, description = "No such provider", body = ErrorBody),
    )
)]
async fn link(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(provider): Path<String>,
) -> Result<axum::Json<AuthorizeView>, ApiError> {
    if !principal.email_verified {
        return Err(ApiError::Forbidden {
            code: "email_not_verified",
            message: "verify your address before linking a provider".to_string(),
        });
    }
    Ok(axum::Json(begin(&state, &provider, Some(principal.user_id)).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    /// Set by the provider when the person refused or the request was bad.
    pub error: Option<String>,
    pub error_description: Option<String>,
}

fn state_invalid() -> ApiError {
    ApiError::BadRequest {
        code: "oauth_state_invalid",
        field: Some("state".to_string()),
        message: "state: unknown, already used or expired: start signing in again".to_string(),
    }
}

/// Where the provider sends the browser back: finishes the sign-in (or the link) and
/// answers a session.
#[utoipa::path(
    get, path = "/v1/oauth/{provider}/callback", tag = "oauth",
    params(("provider" = String, Path, description = "Provider name"), CallbackQuery),
    responses(
        (status = 200, description = "Signed in", body = SessionView),
        (status = 404, description = "No such provider", body = ErrorBody),
        (status = 409, description = "The identity cannot be linked to this account", body = ErrorBody),
    )
)]
async fn callback(
    State(state): State<AppState>,
    Path(provider_name): Path<String>,
    Query(query): Query<CallbackQuery>,
) -> Result<axum::Json<SessionView>, ApiError> {
    let provider = state.oauth.provider(&provider_name)?;
    let state_token = query.state.as_deref().ok_or_else(state_invalid)?;
    if state_token.len() != 64 {
        return Err(state_invalid());
    }
    // Taken first, whatever the provider said: a state works once.
    let pending = state
        .store
        .take_oauth_state(&auth::token_hash(state_token))
        .await?
        .ok_or_else(state_invalid)?;
    let now = state.clock.now();
    if pending.provider != provider.name || pending.expires_at_ms <= crate::clock::to_db(now) {
        return Err(state_invalid());
    }
    if let Some(error) = &query.error {
        let detail = query.error_description.as_deref().unwrap_or("");
        return Err(ApiError::BadRequest {
            code: "oauth_denied",
            field: None,
            message: format!("{} answered {error:?} {detail}", provider.name)
                .chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect(),
        });
    }
    let code = query
        .code
        .as_deref()
        .filter(|code| !code.is_empty())
        .ok_or_else(|| ApiError::invalid_field("code", "the provider sent no authorization code"))?;
    let profile = state.oauth.exchange(provider, code, pending.pkce_verifier).await?;
    let secrets = state
        .oauth
        .secrets
        .as_ref()
        .ok_or_else(|| ApiError::Internal("oauth configured without a secret key".to_string()))?;
    let outcome = state
        .store
        .oauth_sign_in(&profile, pending.link_user_id, secrets, now)
        .await
        .map_err(|error| match error {
            SealError::Store(error) => ApiError::from(error),
            SealError::Secret(error) => ApiError::Internal(error.to_string()),
        })?;
    let user = match outcome {
        OAuthSignIn::Known(user) | OAuthSignIn::Linked(user) => user,
        OAuthSignIn::Created(user) => {
            register_in_core(&state, user.id).await?;
            tracing::info!(user_id = user.id, provider = %provider.name, "user registered through oauth");
            user
        }
        OAuthSignIn::Refused(reason) => {
            return Err(ApiError::Conflict {
                code: "oauth_link_refused",
                field: None,
                message: reason.to_string(),
            });
        }
    };
    Ok(axum::Json(new_session(&state, user).await?))
}
