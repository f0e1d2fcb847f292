//! Accounts: register, verify email, log in, log out, me, API tokens.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::request::Parts;
use payperplay_core::{Input, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::Json;
use super::{AppState, ClientIp};
use crate::auth::{self, API_TOKEN_PREFIX, Authenticated, SESSION_PREFIX};
use crate::error::{ApiError, ErrorBody};
use crate::runtime::RuntimeError;
use crate::store::{Role, UserRow};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(verify))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(create_api_token))
}

const PASSWORD_LEN_MIN: usize = 10;
const PASSWORD_LEN_MAX: usize = 256;
const EMAIL_LEN_MAX: usize = 254;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// An email address; a verification code is mailed to it.
    #[schema(example = "player@example.com")]
    pub email: String,
    /// 10 to 256 characters.
    #[schema(min_length = 10, max_length = 256)]
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: i64,
    pub email: String,
    pub email_verified: bool,
    pub role: Role,
    /// Balance as posted to the ledger, in micro-euros.
    pub balance_micros: i64,
    pub created_at_ms: i64,
}

impl From<UserRow> for UserView {
    fn from(user: UserRow) -> Self {
        UserView {
            id: user.id,
            email: user.email,
            email_verified: user.email_verified,
            role: user.role,
            balance_micros: user.balance_micros,
            created_at_ms: user.created_at_ms,
        }
    }
}

/// Normalizes and checks an address: trimmed, lower-cased, one `@`, no spaces.
pub fn normalize_email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= EMAIL_LEN_MAX
        && email.parse::<lettre::Address>().is_ok()
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if !valid {
        return Err(ApiError::invalid_field("email", "not a valid email address"));
    }
    Ok(email)
}

fn check_password(password: &str) -> Result<(), ApiError> {
    let n_chars = password.chars().count();
    if !(PASSWORD_LEN_MIN..=PASSWORD_LEN_MAX).contains(&n_chars) {
        return Err(ApiError::invalid_field(
            "password",
            format!("must be {PASSWORD_LEN_MIN} to {PASSWORD_LEN_MAX} characters"),
        ));
    }
    Ok(())
}

/// Register an account. Sends a verification mail.
#[utoipa::path(
    post, path = "/v1/accounts/register", tag = "accounts",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = UserView),
        (status = 409, description = "Email already registered", body = ErrorBody),
    )
)]
async fn register(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    Json(request): Json<RegisterRequest>,
) -> Result<(StatusCode, axum::Json<UserView>), ApiError> {
    if state.limits.register.check_key(&client_ip).is_err() {
        return Err(ApiError::RateLimited);
    }
    let email = normalize_email(&request.email)?;
    check_password(&request.password)?;
    let argon2 = state.auth.argon2;
    let password = request.password;
    let password_hash = tokio::task::spawn_blocking(move || auth::hash_password(&password, argon2))
        .await
        .map_err(|_| ApiError::Internal("password hashing task failed".to_string()))?
        .map_err(|error| ApiError::Internal(error.to_string()))?;
    let role = if state.auth.admin_emails.contains(&email) {
        Role::Admin
    } else {
        Role::User
    };
    let (token, token_hash) = auth::new_token("");
    let now = state.clock.now();
    let expires_at = now.plus_ms(state.auth.verification_ttl_ms);
    let base_url = state.public_base_url.clone();
    let user = state
        .store
        .create_user(
            &email,
            &password_hash,
            role,
            &token_hash,
            expires_at,
            |_| crate::email::verification_mail(&base_url, &token),
            now,
        )
        .await?;
    state.mail_wakeup.notify_one();
    match state
        .runtime
        .submit(
            Input::RegisterUser {
                user_id: UserId(user.id as u64),
            },
            |_| (),
        )
        .await
    {
        Ok(()) => {}
        // Reconciled when the runtime (re)starts: users in the database that the core
        // does not know are registered then.
        Err(RuntimeError::Busy | RuntimeError::Stopped) => {
            tracing::warn!(user_id = user.id, "user registered while the runtime was unavailable");
        }
        Err(error) => return Err(error.into()),
    }
    tracing::info!(user_id = user.id, "user registered");
    Ok((StatusCode::CREATED, axum::Json(user.into())))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The code from the verification mail.
    pub token: String,
}

/// Verify an email address with the code from the verification mail.
#[utoipa::path(
    post, path = "/v1/accounts/verify", tag = "accounts",
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "Address verified", body = UserView),
        (status = 404, description = "Unknown, used or expired code", body = ErrorBody),
    )
)]
async fn verify(
    State(state): State<AppState>,
    Json(request): Json<VerifyRequest>,
) -> Result<axum::Json<UserView>, ApiError> {
    let token = request.token.trim();
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::invalid_field(
            "token",
            "must be the 64-digit code from the mail",
        ));
    }
    let user_id = state
        .store
        .verify_email(&auth::token_hash(token), state.clock.now())
        .await?;
    Ok(axum::Json(state.store.user_by_id(user_id).await?.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// Bearer token (256 random bits); shown once, stored only as a hash.
    pub token: String,
    pub expires_at_ms: i64,
    pub user: UserView,
}

/// Log in with email and password; returns a session token.
#[utoipa::path(
    post, path = "/v1/accounts/login", tag = "accounts",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = SessionView),
        (status = 401, description = "Wrong email or password", body = ErrorBody),
    )
)]
async fn login(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    Json(request): Json<LoginRequest>,
) -> Result<axum::Json<SessionView>, ApiError> {
    if state.limits.login.check_key(&client_ip).is_err() {
        return Err(ApiError::RateLimited);
    }
    let email = request.email.trim().to_lowercase();
    // Postgres text cannot hold NUL, and no stored address has control characters.
    if email.len() > EMAIL_LEN_MAX
        || email.chars().any(char::is_control)
        || request.password.len() > PASSWORD_LEN_MAX * 4
    {
        return Err(ApiError::InvalidCredentials);
    }
    let user = state.store.user_by_email(&email).await?;
    // Verify against a dummy hash when the user does not exist, so timing does not
    // tell which addresses have accounts.
    let stored_hash = user
        .as_ref()
        .map_or_else(|| dummy_hash(state.auth.argon2), |user| user.password_hash.clone());
    let password = request.password;
    let password_ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &stored_hash))
        .await
        .map_err(|_| ApiError::Internal("password check task failed".to_string()))?;
    let Some(user) = user.filter(|_| password_ok) else {
        return Err(ApiError::InvalidCredentials);
    };
    let (token, token_hash) = auth::new_token(SESSION_PREFIX);
    let now = state.clock.now();
    let expires_at = now.plus_ms(state.auth.session_ttl_ms);
    state
        .store
        .create_session(user.id, &token_hash, expires_at, now)
        .await?;
    Ok(axum::Json(SessionView {
        token,
        expires_at_ms: crate::clock::to_db(expires_at),
        user: user.into(),
    }))
}

fn dummy_hash(config: crate::config::Argon2Config) -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| auth::hash_password("dummy password for timing", config).unwrap_or_default())
        .clone()
}

/// Log out: revokes the bearer token used for this request.
#[utoipa::path(
    post, path = "/v1/accounts/logout", tag = "accounts",
    security(("bearer" = [])),
    responses((status = 204, description = "Token revoked"))
)]
async fn logout(State(state): State<AppState>, _user: Authenticated, parts: Parts) -> Result<StatusCode, ApiError> {
    let token = auth::bearer_token(&parts).ok_or(ApiError::Unauthorized)?;
    let hash = auth::token_hash(token);
    state.principals.evict(&hash);
    state.store.revoke_token(&hash, state.clock.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user.
#[utoipa::path(
    get, path = "/v1/accounts/me", tag = "accounts",
    security(("bearer" = [])),
    responses((status = 200, description = "The signed-in user", body = UserView))
)]
async fn me(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<axum::Json<UserView>, ApiError> {
    Ok(axum::Json(state.store.user_by_id(principal.user_id).await?.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenRequest {
    /// A label for the token, 1 to 64 characters.
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiTokenView {
    pub id: i64,
    pub name: String,
    /// Bearer token; shown once, stored only as a hash.
    pub token: String,
}

/// Create a long-lived API token for scripts.
#[utoipa::path(
    post, path = "/v1/accounts/tokens", tag = "accounts",
    security(("bearer" = [])),
    request_body = ApiTokenRequest,
    responses((status = 201, description = "Token created", body = ApiTokenView))
)]
async fn create_api_token(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Json(request): Json<ApiTokenRequest>,
) -> Result<(StatusCode, axum::Json<ApiTokenView>), ApiError> {
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field("name", "must be 1 to 64 printable characters"));
    }
    let (token, token_hash) = auth::new_token(API_TOKEN_PREFIX);
    let id = state
        .store
        .create_api_token(principal.user_id, name, &token_hash, state.clock.now())
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(ApiTokenView {
            id,
            name: name.to_string(),
            token,
        }),
    ))
}
