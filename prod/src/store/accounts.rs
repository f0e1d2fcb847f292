//! Users, email verification, password resets, sessions, API tokens (with expiry and
//! scopes), admin grants and their audit.

use payperplay_core::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::outbox::{NewEmail, enqueue_email_tx};
use super::{Store, StoreError, StoreResult};
use crate::clock::to_db;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Role {
        match text {
            "admin" => Role::Admin,
            "user" => Role::User,
            other => panic!("users.role has a CHECK constraint, found {other:?}"),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserRow {
    pub id: i64,
    pub email: String,
    pub email_verified: bool,
    pub role: Role,
    pub balance_micros: i64,
    pub created_at_ms: i64,
    #[serde(skip)]
    #[schema(ignore)]
    pub password_hash: String,
}

impl sqlx::FromRow<'_, sqlx::postgres::PgRow> for UserRow {
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(UserRow {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            email_verified: row.try_get("email_verified")?,
            role: Role::parse(row.try_get::<&str, _>("role")?),
            balance_micros: row.try_get("balance_micros")?,
            created_at_ms: row.try_get("created_at_ms")?,
            password_hash: row.try_get("password_hash")?,
        })
    }
}

/// What an API token may do. Sessions may do everything their user may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read anything the user may read (GET routes).
    Read,
    /// Create, start, stop and delete servers.
    Servers,
    /// Change anything under billing.
    Billing,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Servers, Scope::Billing];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Servers => "servers",
            Scope::Billing => "billing",
        }
    }

    fn parse(text: &str) -> Scope {
        match text {
            "read" => Scope::Read,
            "servers" => Scope::Servers,
            "billing" => Scope::Billing,
            other => panic!("api_tokens.scopes has a CHECK constraint, found {other:?}"),
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of scopes (a bit set, so a principal stays `Copy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub fn of(scopes: &[Scope]) -> Scopes {
        Scopes(scopes.iter().fold(0, |bits, scope| bits | scope.bit()))
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn to_vec(self) -> Vec<Scope> {
        Scope::ALL.into_iter().filter(|scope| self.contains(*scope)).collect()
    }

    fn to_db(self) -> Vec<String> {
        self.to_vec()
            .into_iter()
            .map(|scope| scope.as_str().to_string())
            .collect()
    }

    fn from_db(texts: &[String]) -> Scopes {
        Scopes::of(&texts.iter().map(|text| Scope::parse(text)).collect::<Vec<_>>())
    }
}

/// Who a bearer token belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Principal {
    pub user_id: i64,
    pub role: Role,
    pub email_verified: bool,
    /// `None` for a session (a person signed in); an API token's scopes otherwise.
    pub scopes: Option<Scopes>,
}

/// An API token as its owner sees it (never the token itself).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiTokenRow {
    pub id: i64,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// The one-time code an account mail carries, stored only as its hash.
#[derive(Debug, Clone, Copy)]
pub enum OneTimeCode<'a> {
    Verification {
        token_hash: &'a [u8],
        expires_at: Timestamp,
    },
    PasswordReset {
        token_hash: &'a [u8],
        expires_at: Timestamp,
    },
}

impl<'a> OneTimeCode<'a> {
    /// The table the code's hash is kept in, the hash and when it expires.
    fn parts(self) -> (&'static str, &'a [u8], Timestamp) {
        match self {
            OneTimeCode::Verification { token_hash, expires_at } => ("email_verifications", token_hash, expires_at),
            OneTimeCode::PasswordReset { token_hash, expires_at } => ("password_resets", token_hash, expires_at),
        }
    }
}

/// A mail about the account itself (verification, reset, "you already have an
/// account"). At most `n_max` of them per user since `since`, so nobody can flood an
/// address through our forms.
#[derive(Debug, Clone, Copy)]
pub struct AccountMail<'a> {
    pub user_id: i64,
    pub recipient: &'a str,
    pub kind: &'static str,
    pub subject: &'a str,
    pub body: &'a str,
    pub code: Option<OneTimeCode<'a>>,
    pub since: Timestamp,
    pub n_max: i64,
}

/// Mail kinds that count against the per-user account mail limit; their bodies hold
/// one-time codes or say whether an address has an account, so they are scrubbed
/// from the outbox once sent.
pub const ACCOUNT_MAIL_KINDS: [&str; 3] = ["verification", "password_reset", "account_exists"];

/// What a sent account mail's body is replaced with in the outbox.
pub const SCRUBBED_BODY: &str = "[removed after sending: this mail held a one-time code or account notice]";

/// Whether an admin grant or a revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminChange {
    Grant,
    Revoke,
}

impl Store {
    /// Creates the user, their verification token and the verification mail in one
    /// transaction: either all exist or none. `None` when the address already has an
    /// account. An unverified account with this address made before
    /// `unverified_created_before` is purged first (nobody squats an address).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_user(
        &self,
        email: &str,
        password_hash: &str,
        verification_token_hash: &[u8],
        verification_expires_at: Timestamp,
        mail_for: impl FnOnce(i64) -> (String, String),
        unverified_created_before: Timestamp,
        now: Timestamp,
    ) -> StoreResult<Option<UserRow>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!("DELETE FROM users u WHERE u.email = $1 AND {PURGEABLE}"))
            .bind(email)
            .bind(to_db(unverified_created_before))
            .execute(&mut *tx)
            .await?;
        let user: Option<UserRow> = sqlx::query_as(
            "INSERT INTO users (email, email_verified, password_hash, role, balance_micros, created_at_ms)
             VALUES ($1, FALSE, $2, 'user', 0, $3) ON CONFLICT (email) DO NOTHING RETURNING *",
        )
        .bind(email)
        .bind(password_hash)
        .bind(to_db(now))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(user) = user else {
            return Ok(None);
        };
        sqlx::query(
            "INSERT INTO email_verifications (token_hash, user_id, created_at_ms, expires_at_ms)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(verification_token_hash)
        .bind(user.id)
        .bind(to_db(now))
        .bind(to_db(verification_expires_at))
        .execute(&mut *tx)
        .await?;
        let (subject, body) = mail_for(user.id);
        enqueue_email_tx(
            &mut tx,
            &NewEmail {
                user_id: user.id,
                command_id: None,
                kind: "verification",
                recipient: email,
                subject: &subject,
                body: &body,
            },
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(user))
    }

    /// Queues an account mail (and stores its code's hash) unless the user already
    /// had `mail.n_max` account mails since `mail.since`. Returns whether it was
    /// queued.
    pub async fn send_account_mail(&self, mail: AccountMail<'_>, now: Timestamp) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        // One writer per user at a time, so two requests cannot both pass the limit.
        sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
            .bind(mail.user_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound("user"))?;
        let n_recent: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM email_outbox WHERE user_id = $1 AND kind = ANY($2) AND created_at_ms >= $3",
        )
        .bind(mail.user_id)
        .bind(ACCOUNT_MAIL_KINDS.map(str::to_string).to_vec())
        .bind(to_db(mail.since))
        .fetch_one(&mut *tx)
        .await?;
        if n_recent >= mail.n_max {
            return Ok(false);
        }
        if let Some(code) = mail.code {
            let (table, token_hash, expires_at) = code.parts();
            sqlx::query(&format!(
                "INSERT INTO {table} (token_hash, user_id, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4)"
            ))
            .bind(token_hash)
            .bind(mail.user_id)
            .bind(to_db(now))
            .bind(to_db(expires_at))
            .execute(&mut *tx)
            .await?;
        }
        enqueue_email_tx(
            &mut tx,
            &NewEmail {
                user_id: mail.user_id,
                command_id: None,
                kind: mail.kind,
                recipient: mail.recipient,
                subject: mail.subject,
                body: mail.body,
            },
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Replaces the body of a sent (or given up) account mail, so its one-time code
    /// does not stay in the database in clear. Other mail kinds are left alone.
    pub async fn scrub_account_mail(&self, mail_id: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE email_outbox SET body = $3
             WHERE id = $1 AND kind = ANY($2) AND status IN ('sent', 'failed')",
        )
        .bind(mail_id)
        .bind(ACCOUNT_MAIL_KINDS.map(str::to_string).to_vec())
        .bind(SCRUBBED_BODY)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes unverified accounts made before `created_before` that never held a
    /// server or money (their sessions, tokens, codes and mail go with them).
    pub async fn purge_unverified(&self, created_before: Timestamp) -> StoreResult<u64> {
        let result = sqlx::query(&format!(
            "DELETE FROM users u WHERE u.id IN (SELECT u.id FROM users u WHERE {PURGEABLE} LIMIT 1000)"
        ))
        .bind(Option::<String>::None)
        .bind(to_db(created_before))
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRow>> {
        Ok(sqlx::query_as("SELECT * FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn user_by_id(&self, user_id: i64) -> StoreResult<UserRow> {
        sqlx::query_as("SELECT * FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("user"))
    }

    /// The user's servers that are not deleted (for the per-user quota).
    pub async fn count_live_servers(&self, user_id: i64) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM servers WHERE owner_id = $1 AND deleted_at_ms IS NULL")
                .bind(user_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub async fn all_user_ids(&self) -> StoreResult<Vec<i64>> {
        Ok(sqlx::query_scalar("SELECT id FROM users ORDER BY id")
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn list_users(&self, limit: i64, after_id: i64) -> StoreResult<Vec<UserRow>> {
        Ok(sqlx::query_as("SELECT * FROM users WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Marks the token used and the user verified. `NotFound` for unknown, used or
    /// expired tokens (one answer for all three).
    pub async fn verify_email(&self, token_hash: &[u8], now: Timestamp) -> StoreResult<i64> {
        let mut tx = self.pool.begin().await?;
        let user_id: Option<i64> = sqlx::query_scalar(
            "UPDATE email_verifications SET used_at_ms = $2
             WHERE token_hash = $1 AND used_at_ms IS NULL AND expires_at_ms > $2
             RETURNING user_id",
        )
        .bind(token_hash)
        .bind(to_db(now))
        .fetch_optional(&mut *tx)
        .await?;
        let user_id = user_id.ok_or(StoreError::NotFound("verification token"))?;
        sqlx::query("UPDATE users SET email_verified = TRUE WHERE id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(user_id)
    }

    /// Grants or revokes the admin role of the account with this address and writes
    /// the audit row, in one transaction.
    pub async fn change_admin(
        &self,
        email: &str,
        change: AdminChange,
        actor: &str,
        now: Timestamp,
    ) -> StoreResult<UserRow> {
        let (role, action) = match change {
            AdminChange::Grant => (Role::Admin, "grant_admin"),
            AdminChange::Revoke => (Role::User, "revoke_admin"),
        };
        let mut tx = self.pool.begin().await?;
        let user: UserRow = sqlx::query_as("UPDATE users SET role = $2 WHERE email = $1 RETURNING *")
            .bind(email)
            .bind(role.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound("user with this email"))?;
        sqlx::query("INSERT INTO admin_audit (at_ms, actor, action, user_id, email) VALUES ($1, $2, $3, $4, $5)")
            .bind(to_db(now))
            .bind(actor)
            .bind(action)
            .bind(user.id)
            .bind(email)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(user)
    }

    pub async fn create_session(
        &self,
        user_id: i64,
        token_hash: &[u8],
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, created_at_ms, expires_at_ms)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(to_db(now))
        .bind(to_db(expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Creates an API token unless the user already has `n_max` live ones (`None`).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_api_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &[u8],
        scopes: Scopes,
        expires_at: Timestamp,
        n_max: u32,
        now: Timestamp,
    ) -> StoreResult<Option<ApiTokenRow>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound("user"))?;
        let n_live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM api_tokens WHERE user_id = $1 AND revoked_at_ms IS NULL AND expires_at_ms > $2",
        )
        .bind(user_id)
        .bind(to_db(now))
        .fetch_one(&mut *tx)
        .await?;
        if n_live >= i64::from(n_max) {
            return Ok(None);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO api_tokens (user_id, name, token_hash, created_at_ms, expires_at_ms, scopes)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(user_id)
        .bind(name)
        .bind(token_hash)
        .bind(to_db(now))
        .bind(to_db(expires_at))
        .bind(scopes.to_db())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(ApiTokenRow {
            id,
            name: name.to_string(),
            scopes: scopes.to_vec(),
            created_at_ms: to_db(now),
            expires_at_ms: to_db(expires_at),
        }))
    }

    /// The user's live (unrevoked, unexpired) API tokens, by id.
    pub async fn list_api_tokens(&self, user_id: i64, now: Timestamp) -> StoreResult<Vec<ApiTokenRow>> {
        let rows: Vec<(i64, String, Vec<String>, i64, i64)> = sqlx::query_as(
            "SELECT id, name, scopes, created_at_ms, expires_at_ms FROM api_tokens
             WHERE user_id = $1 AND revoked_at_ms IS NULL AND expires_at_ms > $2 ORDER BY id",
        )
        .bind(user_id)
        .bind(to_db(now))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, scopes, created_at_ms, expires_at_ms)| ApiTokenRow {
                id,
                name,
                scopes: Scopes::from_db(&scopes).to_vec(),
                created_at_ms,
                expires_at_ms,
            })
            .collect())
    }

    /// Revokes one of the user's live API tokens; `NotFound` for another user's,
    /// revoked or unknown ones. Returns the token's hash (to evict caches).
    pub async fn revoke_api_token(&self, user_id: i64, token_id: i64, now: Timestamp) -> StoreResult<Vec<u8>> {
        sqlx::query_scalar(
            "UPDATE api_tokens SET revoked_at_ms = $3
             WHERE id = $1 AND user_id = $2 AND revoked_at_ms IS NULL RETURNING token_hash",
        )
        .bind(token_id)
        .bind(user_id)
        .bind(to_db(now))
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("api token"))
    }

    /// Revokes every session of the user and, with `api_tokens_too`, every API token.
    pub async fn revoke_all(&self, user_id: i64, api_tokens_too: bool, now: Timestamp) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let mut n_revoked = revoke_all_tx(&mut tx, "sessions", user_id, now).await?;
        if api_tokens_too {
            n_revoked += revoke_all_tx(&mut tx, "api_tokens", user_id, now).await?;
        }
        tx.commit().await?;
        Ok(n_revoked)
    }

    /// Sets a new password hash and revokes every session of the user.
    pub async fn change_password(&self, user_id: i64, password_hash: &str, now: Timestamp) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
            .bind(user_id)
            .bind(password_hash)
            .execute(&mut *tx)
            .await?;
        revoke_all_tx(&mut tx, "sessions", user_id, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Uses a password reset token: sets the new password, marks the address verified
    /// (the mail reached it) and revokes every session and API token. `NotFound` for
    /// unknown, used or expired tokens.
    pub async fn reset_password(&self, token_hash: &[u8], password_hash: &str, now: Timestamp) -> StoreResult<i64> {
        let mut tx = self.pool.begin().await?;
        let user_id: i64 = sqlx::query_scalar(
            "UPDATE password_resets SET used_at_ms = $2
             WHERE token_hash = $1 AND used_at_ms IS NULL AND expires_at_ms > $2
             RETURNING user_id",
        )
        .bind(token_hash)
        .bind(to_db(now))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("password reset token"))?;
        sqlx::query("UPDATE users SET password_hash = $2, email_verified = TRUE WHERE id = $1")
            .bind(user_id)
            .bind(password_hash)
            .execute(&mut *tx)
            .await?;
        revoke_all_tx(&mut tx, "sessions", user_id, now).await?;
        revoke_all_tx(&mut tx, "api_tokens", user_id, now).await?;
        tx.commit().await?;
        Ok(user_id)
    }

    /// The principal of a live session or API token with this hash.
    pub async fn principal(&self, token_hash: &[u8], now: Timestamp) -> StoreResult<Option<Principal>> {
        let row: Option<(i64, String, bool, Option<Vec<String>>)> = sqlx::query_as(
            "SELECT u.id, u.role, u.email_verified, NULL::TEXT[] AS scopes
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1 AND s.revoked_at_ms IS NULL AND s.expires_at_ms > $2
             UNION ALL
             SELECT u.id, u.role, u.email_verified, t.scopes FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = $1 AND t.revoked_at_ms IS NULL AND t.expires_at_ms > $2
             LIMIT 1",
        )
        .bind(token_hash)
        .bind(to_db(now))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(user_id, role, email_verified, scopes)| Principal {
            user_id,
            role: Role::parse(&role),
            email_verified,
            scopes: scopes.as_deref().map(Scopes::from_db),
        }))
    }

    /// Revokes the session or API token with this hash.
    pub async fn revoke_token(&self, token_hash: &[u8], now: Timestamp) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE sessions SET revoked_at_ms = $2 WHERE token_hash = $1 AND revoked_at_ms IS NULL")
            .bind(token_hash)
            .bind(to_db(now))
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE api_tokens SET revoked_at_ms = $2 WHERE token_hash = $1 AND revoked_at_ms IS NULL")
            .bind(token_hash)
            .bind(to_db(now))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// An account that may be purged: unverified, an ordinary user, made before `$2`,
/// never owned a server or a ledger entry. `$1` is an address or NULL (any).
const PURGEABLE: &str = "NOT u.email_verified AND u.role = 'user' AND u.created_at_ms < $2
     AND ($1::TEXT IS NULL OR u.email = $1)
     AND NOT EXISTS (SELECT 1 FROM servers s WHERE s.owner_id = u.id)
     AND NOT EXISTS (SELECT 1 FROM ledger_entries l WHERE l.user_id = u.id)";

async fn revoke_all_tx(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    table: &'static str,
    user_id: i64,
    now: Timestamp,
) -> StoreResult<u64> {
    let result = sqlx::query(&format!(
        "UPDATE {table} SET revoked_at_ms = $2 WHERE user_id = $1 AND revoked_at_ms IS NULL"
    ))
    .bind(user_id)
    .bind(to_db(now))
    .execute(&mut **tx)
    .await?;
    Ok(result.rows_affected())
}
