//! Users, email verification, sessions and API tokens.

use payperplay_core::Timestamp;
use serde::Serialize;
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

/// Who a bearer token belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Principal {
    pub user_id: i64,
    pub role: Role,
    pub email_verified: bool,
}

impl Store {
    /// Creates the user, their verification token and the verification mail in one
    /// transaction: either all exist or none.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_user(
        &self,
        email: &str,
        password_hash: &str,
        role: Role,
        verification_token_hash: &[u8],
        verification_expires_at: Timestamp,
        mail_for: impl FnOnce(i64) -> (String, String),
        now: Timestamp,
    ) -> StoreResult<UserRow> {
        let mut tx = self.pool.begin().await?;
        let user: UserRow = sqlx::query_as(
            "INSERT INTO users (email, email_verified, password_hash, role, balance_micros, created_at_ms)
             VALUES ($1, FALSE, $2, $3, 0, $4) RETURNING *",
        )
        .bind(email)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(to_db(now))
        .fetch_one(&mut *tx)
        .await?;
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
        Ok(user)
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

    pub async fn create_api_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &[u8],
        now: Timestamp,
    ) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO api_tokens (user_id, name, token_hash, created_at_ms)
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(user_id)
        .bind(name)
        .bind(token_hash)
        .bind(to_db(now))
        .fetch_one(&self.pool)
        .await?)
    }

    /// The principal of a live session or API token with this hash.
    pub async fn principal(&self, token_hash: &[u8], now: Timestamp) -> StoreResult<Option<Principal>> {
        let row: Option<(i64, String, bool)> = sqlx::query_as(
            "SELECT u.id, u.role, u.email_verified FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1 AND s.revoked_at_ms IS NULL AND s.expires_at_ms > $2
             UNION ALL
             SELECT u.id, u.role, u.email_verified FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = $1 AND t.revoked_at_ms IS NULL
             LIMIT 1",
        )
        .bind(token_hash)
        .bind(to_db(now))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(user_id, role, email_verified)| Principal {
            user_id,
            role: Role::parse(&role),
            email_verified,
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
