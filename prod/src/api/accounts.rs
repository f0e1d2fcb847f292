//! Accounts: register, verify (and resend), log in, log out (here or everywhere),
//! me, password change and reset by mail, API tokens (scoped, expiring; create, list,
//! revoke).
//!
//! Policy: registration answers the same whether the address has an account or not
//! (the mail says what happened). An unverified account may log in (to see its state
//! and ask for another code) but cannot create servers, API tokens or use admin
//! routes; it is purged after `auth.unverified_purge_after_ms`. Nobody becomes admin
//! by registering: `payperplay admin grant EMAIL`.

use std::net::IpAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::request::Parts;
use payperplay_core::{Input, Timestamp, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{Json, Path};
use crate::auth::{self, API_TOKEN_PREFIX, Authenticated, ClientAddress, SESSION_PREFIX, limit_key};
use crate::error::{ApiError, ErrorBody};
use crate::runtime::RuntimeError;
use crate::store::{AccountMail, ApiTokenRow, OneTimeCode, Role, Scope, Scopes, UserRow};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(verify))
        .routes(routes!(resend_verification))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(logout_everywhere))
        .routes(routes!(me))
        .routes(routes!(change_password))
        .routes(routes!(forgot_password))
        .routes(routes!(reset_password))
        .routes(routes!(create_api_token, list_api_tokens))
        .routes(routes!(revoke_api_token))
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
    check_password_field("password", password)
}

fn check_password_field(field: &str, password: &str) -> Result<(), ApiError> {
    let n_chars = password.chars().count();
    if !(PASSWORD_LEN_MIN..=PASSWORD_LEN_MAX).contains(&n_chars) {
        return Err(ApiError::invalid_field(
            field,
            format!("must be {PASSWORD_LEN_MIN} to {PASSWORD_LEN_MAX} characters"),
        ));
    }
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedView {
    /// What happens next (the same text whether the address has an account or not).
    pub message: String,
}

fn accepted(message: &str) -> (StatusCode, axum::Json<AcceptedView>) {
    (
        StatusCode::ACCEPTED,
        axum::Json(AcceptedView {
            message: message.to_string(),
        }),
    )
}

const REGISTER_ACCEPTED: &str = "a mail is on its way to this address: a verification code for a new account, \
                                 or a note if the address already has one";

/// The limit every account mail shares: `account_mails_per_day` per user.
fn account_mail<'a>(
    state: &AppState,
    user: &'a UserRow,
    kind: &'static str,
    (subject, body): (&'a str, &'a str),
    code: Option<OneTimeCode<'a>>,
    now: Timestamp,
) -> AccountMail<'a> {
    AccountMail {
        user_id: user.id,
        recipient: &user.email,
        kind,
        subject,
        body,
        code,
        since: Timestamp(now.0.saturating_sub(24 * 3_600_000)),
        n_max: i64::from(state.auth.account_mails_per_day),
    }
}

/// Which one-time code an account mail carries.
#[derive(Debug, Clone, Copy)]
enum CodeMail {
    Verification,
    PasswordReset,
}

/// Queues a fresh one-time code of `which` for `user` (within the account mail limit).
async fn send_code_mail(state: &AppState, user: &UserRow, which: CodeMail, now: Timestamp) -> Result<(), ApiError> {
    let (code, code_hash) = auth::new_token("");
    let base_url = &state.public_base_url;
    let (kind, (subject, body), one_time_code) = match which {
        CodeMail::Verification => (
            "verification",
            crate::email::verification_mail(base_url, &code),
            OneTimeCode::Verification {
                token_hash: &code_hash,
                expires_at: now.plus_ms(state.auth.verification_ttl_ms),
            },
        ),
        CodeMail::PasswordReset => (
            "password_reset",
            crate::email::password_reset_mail(base_url, &code, state.auth.password_reset_ttl_ms),
            OneTimeCode::PasswordReset {
                token_hash: &code_hash,
                expires_at: now.plus_ms(state.auth.password_reset_ttl_ms),
            },
        ),
    };
    let mail = account_mail(state, user, kind, (&subject, &body), Some(one_time_code), now);
    if state.store.send_account_mail(mail, now).await? {
        state.mail_wakeup.notify_one();
    } else {
        tracing::info!(
            user_id = user.id,
            kind,
            "account mail not sent: account mail limit reached"
        );
    }
    Ok(())
}

/// The account a mail-me request names, after the per-address limit (`None` when the
/// address has no account: the answer is the same either way).
async fn account_to_mail(
    state: &AppState,
    client: IpAddr,
    request: &EmailRequest,
) -> Result<Option<UserRow>, ApiError> {
    state.accounts.register_by_address.check(&limit_key(client))?;
    let email = normalize_email(&request.email)?;
    Ok(state.store.user_by_email(&email).await?)
}

/// Register an account. A mail goes to the address either way: a verification code
/// for a new account, a note for an address that has one (the answer is the same).
#[utoipa::path(
    post, path = "/v1/accounts/register", tag = "accounts",
    request_body = RegisterRequest,
    responses(
        (status = 202, description = "A mail is on its way", body = AcceptedView),
    )
)]
async fn register(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    Json(request): Json<RegisterRequest>,
) -> Result<(StatusCode, axum::Json<AcceptedView>), ApiError> {
    state.accounts.register_by_address.check(&limit_key(client))?;
    let email = normalize_email(&request.email)?;
    check_password(&request.password)?;
    // Hashed whether or not the address is taken, so timing does not tell.
    let password_hash = state.accounts.hash_password(request.password).await?;
    let (code, code_hash) = auth::new_token("");
    let now = state.clock.now();
    let expires_at = now.plus_ms(state.auth.verification_ttl_ms);
    let base_url = state.public_base_url.clone();
    let created = state
        .store
        .create_user(
            &email,
            &password_hash,
            &code_hash,
            expires_at,
            |_| crate::email::verification_mail(&base_url, &code),
            Timestamp(now.0.saturating_sub(state.auth.unverified_purge_after_ms)),
            now,
        )
        .await?;
    let Some(user) = created else {
        if let Some(existing) = state.store.user_by_email(&email).await? {
            if existing.email_verified {
                let (subject, body) = crate::email::account_exists_mail(&state.public_base_url);
                let mail = account_mail(&state, &existing, "account_exists", (&subject, &body), None, now);
                if state.store.send_account_mail(mail, now).await? {
                    state.mail_wakeup.notify_one();
                }
            } else {
                send_code_mail(&state, &existing, CodeMail::Verification, now).await?;
            }
        }
        return Ok(accepted(REGISTER_ACCEPTED));
    };
    state.mail_wakeup.notify_one();
    register_in_core(&state, user.id).await?;
    tracing::info!(user_id = user.id, "user registered");
    Ok(accepted(REGISTER_ACCEPTED))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The code from the verification mail.
    pub token: String,
}

fn check_code(field: &str, code: &str) -> Result<(), ApiError> {
    if code.len() != 64 || !code.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::invalid_field(
            field,
            "must be the 64-digit code from the mail",
        ));
    }
    Ok(())
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
    check_code("token", token)?;
    let user_id = state
        .store
        .verify_email(&auth::token_hash(token), state.clock.now())
        .await?;
    Ok(axum::Json(state.store.user_by_id(user_id).await?.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailRequest {
    #[schema(example = "player@example.com")]
    pub email: String,
}

/// Mail a new verification code to an unverified account (limited per day). Answers
/// the same for any address.
#[utoipa::path(
    post, path = "/v1/accounts/verify/resend", tag = "accounts",
    request_body = EmailRequest,
    responses((status = 202, description = "A mail is on its way if the address awaits verification", body = AcceptedView))
)]
async fn resend_verification(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    Json(request): Json<EmailRequest>,
) -> Result<(StatusCode, axum::Json<AcceptedView>), ApiError> {
    if let Some(user) = account_to_mail(&state, client, &request).await?
        && !user.email_verified
    {
        send_code_mail(&state, &user, CodeMail::Verification, state.clock.now()).await?;
    }
    Ok(accepted(
        "if this address awaits verification, a new code is on its way",
    ))
}

/// Ask for a password reset code by mail (limited per day). Answers the same for any
/// address.
#[utoipa::path(
    post, path = "/v1/accounts/password/forgot", tag = "accounts",
    request_body = EmailRequest,
    responses((status = 202, description = "A mail is on its way if the address has an account", body = AcceptedView))
)]
async fn forgot_password(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    Json(request): Json<EmailRequest>,
) -> Result<(StatusCode, axum::Json<AcceptedView>), ApiError> {
    if let Some(user) = account_to_mail(&state, client, &request).await? {
        send_code_mail(&state, &user, CodeMail::PasswordReset, state.clock.now()).await?;
    }
    Ok(accepted("if this address has an account, a reset code is on its way"))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    /// The code from the reset mail.
    pub token: String,
    /// 10 to 256 characters.
    #[schema(min_length = 10, max_length = 256)]
    pub new_password: String,
}

/// Set a new password with the code from the reset mail. Ends every session and API
/// token of the account; the address counts as verified (the mail reached it).
#[utoipa::path(
    post, path = "/v1/accounts/password/reset", tag = "accounts",
    request_body = ResetPasswordRequest,
    responses(
        (status = 204, description = "Password set; log in again"),
        (status = 404, description = "Unknown, used or expired code", body = ErrorBody),
    )
)]
async fn reset_password(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    Json(request): Json<ResetPasswordRequest>,
) -> Result<StatusCode, ApiError> {
    state.accounts.login_by_address.check(&limit_key(client))?;
    let token = request.token.trim().to_string();
    check_code("token", &token)?;
    check_password_field("new_password", &request.new_password)?;
    let password_hash = state.accounts.hash_password(request.new_password).await?;
    let user_id = state
        .store
        .reset_password(&auth::token_hash(&token), &password_hash, state.clock.now())
        .await?;
    state.principals.evict_user(user_id);
    tracing::info!(user_id, "password reset by mail");
    Ok(StatusCode::NO_CONTENT)
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

/// Log in with email and password; returns a session token. Limited per client
/// address and per account. An unverified account may log in (see the module doc).
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
    ClientAddress(client): ClientAddress,
    Json(request): Json<LoginRequest>,
) -> Result<axum::Json<SessionView>, ApiError> {
    state.accounts.login_by_address.check(&limit_key(client))?;
    let email = request.email.trim().to_lowercase();
    // Postgres text cannot hold NUL, and no stored address has control characters.
    if email.len() > EMAIL_LEN_MAX
        || email.chars().any(char::is_control)
        || request.password.len() > PASSWORD_LEN_MAX * 4
    {
        return Err(ApiError::InvalidCredentials);
    }
    let account_key: [u8; 32] = auth::token_hash(&email).try_into().expect("SHA-256 is 32 bytes");
    state.accounts.login_by_account.check(&account_key)?;
    let user = state.store.user_by_email(&email).await?;
    let stored_hash = user.as_ref().map(|user| user.password_hash.clone());
    let password_ok = state.accounts.verify_password(request.password, stored_hash).await?;
    let Some(user) = user.filter(|_| password_ok) else {
        return Err(ApiError::InvalidCredentials);
    };
    let session = new_session(&state, user).await?;
    Ok(axum::Json(session))
}

/// Tells the core about a new user.
pub(crate) async fn register_in_core(state: &AppState, user_id: i64) -> Result<(), ApiError> {
    match state
        .runtime
        .submit(
            Input::RegisterUser {
                user_id: UserId(user_id as u64),
            },
            |_| (),
        )
        .await
    {
        Ok(()) => Ok(()),
        // Reconciled when the runtime (re)starts: users in the database that the core
        // does not know are registered then.
        Err(RuntimeError::Busy | RuntimeError::Stopped) => {
            tracing::warn!(user_id, "user registered while the runtime was unavailable");
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

pub(crate) async fn new_session(state: &AppState, user: UserRow) -> Result<SessionView, ApiError> {
    let (token, token_hash) = auth::new_token(SESSION_PREFIX);
    let now = state.clock.now();
    let expires_at = now.plus_ms(state.auth.session_ttl_ms);
    state
        .store
        .create_session(user.id, &token_hash, expires_at, now)
        .await?;
    Ok(SessionView {
        token,
        expires_at_ms: crate::clock::to_db(expires_at),
        user: user.into(),
    })
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

/// Log out everywhere: revokes every session and API token of the user.
#[utoipa::path(
    post, path = "/v1/accounts/logout-everywhere", tag = "accounts",
    security(("bearer" = [])),
    responses((status = 204, description = "Every session and API token revoked"))
)]
async fn logout_everywhere(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<StatusCode, ApiError> {
    let n_revoked = state
        .store
        .revoke_all(principal.user_id, true, state.clock.now())
        .await?;
    state.principals.evict_user(principal.user_id);
    tracing::info!(user_id = principal.user_id, n_revoked, "logged out everywhere");
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
pub struct ChangePasswordRequest {
    pub current_password: String,
    /// 10 to 256 characters.
    #[schema(min_length = 10, max_length = 256)]
    pub new_password: String,
}

/// Change the password (a session only). Ends every session of the user, this one
/// too, and answers a new session; API tokens stay.
#[utoipa::path(
    post, path = "/v1/accounts/password", tag = "accounts",
    security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses((status = 200, description = "Password changed; the new session", body = SessionView))
)]
async fn change_password(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Json(request): Json<ChangePasswordRequest>,
) -> Result<axum::Json<SessionView>, ApiError> {
    check_password_field("new_password", &request.new_password)?;
    let user = state.store.user_by_id(principal.user_id).await?;
    let current_ok = request.current_password.len() <= PASSWORD_LEN_MAX * 4
        && state
            .accounts
            .verify_password(request.current_password, Some(user.password_hash.clone()))
            .await?;
    if !current_ok {
        return Err(ApiError::invalid_field(
            "current_password",
            "is not the account's password",
        ));
    }
    let password_hash = state.accounts.hash_password(request.new_password).await?;
    state
        .store
        .change_password(user.id, &password_hash, state.clock.now())
        .await?;
    state.principals.evict_user(user.id);
    tracing::info!(user_id = user.id, "password changed, sessions revoked");
    Ok(axum::Json(new_session(&state, user).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenRequest {
    /// A label for the token, 1 to 64 characters.
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    /// What the token may do (default: read only).
    #[serde(default)]
    pub scopes: Option<Vec<Scope>>,
    /// Lifetime in days, 1 to the configured maximum (default: the configured
    /// default, 90 days unless changed).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub expires_in_days: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiTokenView {
    pub id: i64,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub expires_at_ms: i64,
    /// Bearer token; shown once, stored only as a hash.
    pub token: String,
}

/// Create an API token for scripts: named, scoped, expiring (a verified session only;
/// at most `auth.api_tokens_per_user_max` live tokens).
#[utoipa::path(
    post, path = "/v1/accounts/tokens", tag = "accounts",
    security(("bearer" = [])),
    request_body = ApiTokenRequest,
    responses(
        (status = 201, description = "Token created", body = ApiTokenView),
        (status = 409, description = "Token quota reached", body = ErrorBody),
    )
)]
async fn create_api_token(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Json(request): Json<ApiTokenRequest>,
) -> Result<(StatusCode, axum::Json<ApiTokenView>), ApiError> {
    if !principal.email_verified {
        return Err(ApiError::Forbidden {
            code: "email_not_verified",
            message: "verify your email address first".to_string(),
        });
    }
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field("name", "must be 1 to 64 printable characters"));
    }
    let scopes = Scopes::of(request.scopes.as_deref().unwrap_or(&[Scope::Read]));
    if scopes.to_vec().is_empty() {
        return Err(ApiError::invalid_field("scopes", "name at least one scope"));
    }
    let days_max = state.auth.api_token_ttl_ms_max / 86_400_000;
    let ttl_ms = match request.expires_in_days {
        None => state.auth.api_token_ttl_ms_default,
        Some(days) if (1..=days_max).contains(&u64::from(days)) => u64::from(days) * 86_400_000,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "expires_in_days",
                format!("must be 1 to {days_max}"),
            ));
        }
    };
    let (token, token_hash) = auth::new_token(API_TOKEN_PREFIX);
    let now = state.clock.now();
    let row = state
        .store
        .create_api_token(
            principal.user_id,
            name,
            &token_hash,
            scopes,
            now.plus_ms(ttl_ms),
            state.auth.api_tokens_per_user_max,
            now,
        )
        .await?
        .ok_or_else(|| ApiError::Conflict {
            code: "quota_exceeded",
            field: None,
            message: format!(
                "you have {} live API tokens, the most allowed: revoke one first",
                state.auth.api_tokens_per_user_max
            ),
        })?;
    Ok((
        StatusCode::CREATED,
        axum::Json(ApiTokenView {
            id: row.id,
            name: row.name,
            scopes: row.scopes,
            expires_at_ms: row.expires_at_ms,
            token,
        }),
    ))
}

/// The user's live API tokens (never the tokens themselves).
#[utoipa::path(
    get, path = "/v1/accounts/tokens", tag = "accounts",
    security(("bearer" = [])),
    responses((status = 200, description = "Live API tokens", body = [ApiTokenRow]))
)]
async fn list_api_tokens(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<axum::Json<Vec<ApiTokenRow>>, ApiError> {
    Ok(axum::Json(
        state
            .store
            .list_api_tokens(principal.user_id, state.clock.now())
            .await?,
    ))
}

/// Revoke one of the user's API tokens.
#[utoipa::path(
    delete, path = "/v1/accounts/tokens/{id}", tag = "accounts",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "API token id")),
    responses(
        (status = 204, description = "Token revoked"),
        (status = 404, description = "No such live token of this user", body = ErrorBody),
    )
)]
async fn revoke_api_token(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let hash = state
        .store
        .revoke_api_token(principal.user_id, id, state.clock.now())
        .await?;
    state.principals.evict(&hash);
    Ok(StatusCode::NO_CONTENT)
}

/// `payperplay admin grant|revoke EMAIL`: the only way to the admin role.
pub async fn change_admin_role(
    store: &crate::store::Store,
    email: &str,
    change: crate::store::AdminChange,
    actor: &str,
    now: Timestamp,
) -> Result<UserRow, ApiError> {
    let email = normalize_email(email)?;
    let user = store.change_admin(&email, change, actor, now).await?;
    debug_assert!(matches!(
        (change, user.role),
        (crate::store::AdminChange::Grant, Role::Admin) | (crate::store::AdminChange::Revoke, Role::User)
    ));
    Ok(user)
}
