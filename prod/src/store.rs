//! The Postgres store. Every query lives here; callers pass the shell's clock reading
//! for every business timestamp. Constraint names map to domain errors.

use payperplay_core::{LedgerEntry, LedgerKind, Timestamp};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::time::Duration;
use utoipa::ToSchema;

use crate::clock::to_db;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("email already registered")]
    EmailTaken,
    #[error("server name already used by this owner")]
    ServerNameTaken,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("journal sequence {0} already taken: another runtime is writing this journal")]
    JournalConflict(i64),
    #[error("another runtime holds the journal lock")]
    JournalLocked,
    #[error("stored JSON does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) => match db.constraint() {
                Some("users_email_key") => StoreError::EmailTaken,
                Some("servers_owner_name_key") => StoreError::ServerNameTaken,
                _ => StoreError::Database(error),
            },
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(error.to_string())
            }
            _ => StoreError::Database(error),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Connects without logging the URL (it may hold a password).
pub async fn connect(url: &str, max_connections: u32) -> StoreResult<PgPool> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|_| StoreError::Unavailable("database url does not parse".to_string()))?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?;
    Ok(pool)
}

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

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

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct ServerRow {
    pub id: i64,
    pub owner_id: i64,
    pub name: String,
    pub ram_mib: i32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct LedgerRow {
    pub id: i64,
    pub server_id: Option<i64>,
    /// `top_up`, `ram_time`, `storage` or `archive_storage`.
    pub kind: String,
    /// Positive credits the balance, negative debits it.
    pub amount_micros: i64,
    pub from_at_ms: i64,
    pub to_at_ms: i64,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct UsageRow {
    pub server_id: i64,
    pub server_name: String,
    /// Milliseconds the server held RAM, billed.
    pub ram_ms: i64,
    /// RAM-time in MiB·hours (rounded to the nearest).
    pub ram_mib_hours: i64,
    /// Total charged for RAM time, storage and archive storage (positive).
    pub charged_micros: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JournalRow {
    pub seq: i64,
    pub at_ms: i64,
    pub input: serde_json::Value,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub attempts: i32,
}

pub struct NewEmail<'a> {
    pub user_id: i64,
    pub command_id: Option<i64>,
    pub kind: &'a str,
    pub recipient: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
}

#[derive(Clone)]
pub struct Store {
    pub pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Store { pool }
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ---- users, verification, sessions ----

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

    // ---- servers ----

    pub async fn insert_server(
        &self,
        owner_id: i64,
        name: &str,
        ram_mib: u32,
        now: Timestamp,
    ) -> StoreResult<ServerRow> {
        Ok(sqlx::query_as(
            "INSERT INTO servers (owner_id, name, ram_mib, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $4)
             RETURNING id, owner_id, name, ram_mib, created_at_ms, updated_at_ms",
        )
        .bind(owner_id)
        .bind(name)
        .bind(ram_mib as i32)
        .bind(to_db(now))
        .fetch_one(&self.pool)
        .await?)
    }

    /// Removes a server row the core refused to create (nothing refers to it yet).
    pub async fn remove_uncreated_server(&self, server_id: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM servers WHERE id = $1")
            .bind(server_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The owner's live server; `NotFound` for other owners' and deleted servers.
    pub async fn server(&self, owner_id: i64, server_id: i64) -> StoreResult<ServerRow> {
        sqlx::query_as(
            "SELECT id, owner_id, name, ram_mib, created_at_ms, updated_at_ms FROM servers
             WHERE id = $1 AND owner_id = $2 AND deleted_at_ms IS NULL",
        )
        .bind(server_id)
        .bind(owner_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("server"))
    }

    pub async fn servers_of(&self, owner_id: i64) -> StoreResult<Vec<ServerRow>> {
        Ok(sqlx::query_as(
            "SELECT id, owner_id, name, ram_mib, created_at_ms, updated_at_ms FROM servers
             WHERE owner_id = $1 AND deleted_at_ms IS NULL ORDER BY id",
        )
        .bind(owner_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every live server (for reconciling with the core at start-up).
    pub async fn all_live_servers(&self) -> StoreResult<Vec<ServerRow>> {
        Ok(sqlx::query_as(
            "SELECT id, owner_id, name, ram_mib, created_at_ms, updated_at_ms FROM servers
             WHERE deleted_at_ms IS NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn update_server(
        &self,
        owner_id: i64,
        server_id: i64,
        name: Option<&str>,
        ram_mib: Option<u32>,
        now: Timestamp,
    ) -> StoreResult<ServerRow> {
        sqlx::query_as(
            "UPDATE servers SET name = COALESCE($3, name), ram_mib = COALESCE($4, ram_mib),
                 updated_at_ms = $5
             WHERE id = $1 AND owner_id = $2 AND deleted_at_ms IS NULL
             RETURNING id, owner_id, name, ram_mib, created_at_ms, updated_at_ms",
        )
        .bind(server_id)
        .bind(owner_id)
        .bind(name)
        .bind(ram_mib.map(|mib| mib as i32))
        .bind(to_db(now))
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("server"))
    }

    pub async fn mark_server_deleted(&self, owner_id: i64, server_id: i64, now: Timestamp) -> StoreResult<()> {
        let result = sqlx::query(
            "UPDATE servers SET deleted_at_ms = $3, updated_at_ms = $3
             WHERE id = $1 AND owner_id = $2 AND deleted_at_ms IS NULL",
        )
        .bind(server_id)
        .bind(owner_id)
        .bind(to_db(now))
        .execute(&self.pool)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound("server"));
        }
        Ok(())
    }

    // ---- ledger and usage ----

    /// Posts one ledger entry and moves the balance by its amount, atomically.
    /// With a `command_id` the post is idempotent: a second post of the same command
    /// changes nothing and returns `false`.
    pub async fn post_ledger_entry(
        &self,
        command_id: Option<i64>,
        entry: &LedgerEntry,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let entry_id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO ledger_entries
                 (user_id, server_id, command_id, kind, amount_micros, from_at_ms, to_at_ms, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (command_id) DO NOTHING
             RETURNING id",
        )
        .bind(entry.user_id.0 as i64)
        .bind(entry.server_id.map(|id| id.0 as i64))
        .bind(command_id)
        .bind(ledger_kind(entry.kind))
        .bind(entry.amount_micros)
        .bind(to_db(entry.from))
        .bind(to_db(entry.to))
        .bind(to_db(now))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(entry_id) = entry_id else {
            return Ok(false);
        };
        let updated = sqlx::query("UPDATE users SET balance_micros = balance_micros + $2 WHERE id = $1")
            .bind(entry.user_id.0 as i64)
            .bind(entry.amount_micros)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::NotFound("user"));
        }
        if let Some(server_id) = entry.server_id {
            sqlx::query(
                "INSERT INTO usage (ledger_entry_id, server_id, user_id, kind, ram_mib, duration_ms,
                                    amount_micros, from_at_ms, to_at_ms)
                 SELECT $1, s.id, $3, $4, s.ram_mib, $5, $6, $7, $8 FROM servers s WHERE s.id = $2",
            )
            .bind(entry_id)
            .bind(server_id.0 as i64)
            .bind(entry.user_id.0 as i64)
            .bind(ledger_kind(entry.kind))
            .bind(to_db(entry.to) - to_db(entry.from))
            .bind(entry.amount_micros)
            .bind(to_db(entry.from))
            .bind(to_db(entry.to))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn balance(&self, user_id: i64) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT balance_micros FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("user"))
    }

    pub async fn ledger_sum(&self, user_id: i64) -> StoreResult<i64> {
        let sum: Option<i64> =
            sqlx::query_scalar("SELECT SUM(amount_micros)::BIGINT FROM ledger_entries WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(sum.unwrap_or(0))
    }

    /// Newest first; `before_id` pages backwards.
    pub async fn ledger(&self, user_id: i64, limit: i64, before_id: Option<i64>) -> StoreResult<Vec<LedgerRow>> {
        Ok(sqlx::query_as(
            "SELECT id, server_id, kind, amount_micros, from_at_ms, to_at_ms, created_at_ms
             FROM ledger_entries WHERE user_id = $1 AND id < COALESCE($2, 9223372036854775807)
             ORDER BY id DESC LIMIT $3",
        )
        .bind(user_id)
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Usage per live server of the user.
    pub async fn usage(&self, user_id: i64) -> StoreResult<Vec<UsageRow>> {
        Ok(sqlx::query_as(
            "SELECT s.id AS server_id, s.name AS server_name,
                    COALESCE(SUM(u.duration_ms) FILTER (WHERE u.kind = 'ram_time'), 0)::BIGINT AS ram_ms,
                    COALESCE(SUM(u.duration_ms::NUMERIC * u.ram_mib / 3600000) FILTER (WHERE u.kind = 'ram_time'), 0)::BIGINT AS ram_mib_hours,
                    COALESCE(-SUM(u.amount_micros), 0)::BIGINT AS charged_micros
             FROM servers s LEFT JOIN usage u ON u.server_id = s.id
             WHERE s.owner_id = $1 AND s.deleted_at_ms IS NULL
             GROUP BY s.id, s.name ORDER BY s.id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    // ---- journal and commands ----

    pub async fn last_journal_seq(&self) -> StoreResult<i64> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM journal")
            .fetch_one(&self.pool)
            .await?;
        Ok(seq.unwrap_or(0))
    }

    pub async fn append_journal(&self, seq: i64, at: Timestamp, input: &serde_json::Value) -> StoreResult<()> {
        let result = sqlx::query("INSERT INTO journal (seq, at_ms, input) VALUES ($1, $2, $3)")
            .bind(seq)
            .bind(to_db(at))
            .bind(input)
            .execute(&self.pool)
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(db)) if db.constraint() == Some("journal_pkey") => {
                Err(StoreError::JournalConflict(seq))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Every journal row, oldest first, read `page_rows` at a time and handed to `each`
    /// (replay on start, the journal and trace exports).
    pub async fn for_each_journal_row<E: From<StoreError>>(
        &self,
        page_rows: i64,
        mut each: impl FnMut(JournalRow) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut last_seq = 0;
        loop {
            let page = self.journal_page(last_seq, page_rows).await?;
            let Some(last) = page.last() else { return Ok(()) };
            last_seq = last.seq;
            for row in page {
                each(row)?;
            }
        }
    }

    /// Journal rows with `seq > after_seq`, in order, at most `limit`.
    async fn journal_page(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<JournalRow>> {
        Ok(
            sqlx::query_as("SELECT seq, at_ms, input FROM journal WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after_seq)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn record_runtime_start(
        &self,
        first_seq: i64,
        core_config: &serde_json::Value,
        now: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO runtime_starts (started_at_ms, first_seq, core_config) VALUES ($1, $2, $3)")
            .bind(to_db(now))
            .bind(first_seq)
            .bind(core_config)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn record_command(
        &self,
        command_id: i64,
        kind: &str,
        command: &serde_json::Value,
        now: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO commands (id, kind, command, status, attempts, issued_at_ms)
             VALUES ($1, $2, $3, 'pending', 0, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(command_id)
        .bind(kind)
        .bind(command)
        .bind(to_db(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn finish_command(
        &self,
        command_id: i64,
        succeeded: bool,
        attempts: u32,
        error: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE commands SET status = $2, attempts = $3, error = $4, finished_at_ms = $5
             WHERE id = $1",
        )
        .bind(command_id)
        .bind(if succeeded { "succeeded" } else { "failed" })
        .bind(attempts as i32)
        .bind(error)
        .bind(to_db(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn command_status(&self, command_id: i64) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar("SELECT status FROM commands WHERE id = $1")
            .bind(command_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    // ---- nodes ----

    #[allow(clippy::too_many_arguments)]
    pub async fn upsert_node(
        &self,
        node_id: i64,
        kind: &str,
        name: &str,
        is_system: bool,
        provider_ref: Option<&str>,
        state: &str,
        now: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO nodes (id, kind, name, is_system, provider_ref, state, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
             ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state,
                 provider_ref = COALESCE(EXCLUDED.provider_ref, nodes.provider_ref),
                 updated_at_ms = EXCLUDED.updated_at_ms",
        )
        .bind(node_id)
        .bind(kind)
        .bind(name)
        .bind(is_system)
        .bind(provider_ref)
        .bind(state)
        .bind(to_db(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_node_state(&self, node_id: i64, state: &str, now: Timestamp) -> StoreResult<()> {
        sqlx::query("UPDATE nodes SET state = $2, updated_at_ms = $3 WHERE id = $1")
            .bind(node_id)
            .bind(state)
            .bind(to_db(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- email outbox ----

    /// Queues a mail. With a `command_id`, queuing the same command twice queues once.
    pub async fn enqueue_email(&self, email: &NewEmail<'_>, now: Timestamp) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        enqueue_email_tx(&mut tx, email, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn due_emails(&self, now: Timestamp, limit: i64) -> StoreResult<Vec<OutboxRow>> {
        Ok(sqlx::query_as(
            "SELECT id, recipient, subject, body, attempts FROM email_outbox
             WHERE status = 'pending' AND next_attempt_at_ms <= $1
             ORDER BY next_attempt_at_ms, id LIMIT $2",
        )
        .bind(to_db(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn mark_email_sent(&self, id: i64, now: Timestamp) -> StoreResult<()> {
        sqlx::query(
            "UPDATE email_outbox SET status = 'sent', attempts = attempts + 1, sent_at_ms = $2,
                 last_error = NULL
             WHERE id = $1",
        )
        .bind(id)
        .bind(to_db(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed attempt: retried at `next_attempt_at`, or marked failed.
    pub async fn mark_email_failed(&self, id: i64, error: &str, next_attempt_at: Option<Timestamp>) -> StoreResult<()> {
        sqlx::query(
            "UPDATE email_outbox SET attempts = attempts + 1, last_error = $2,
                 status = CASE WHEN $3::BIGINT IS NULL THEN 'failed' ELSE 'pending' END,
                 next_attempt_at_ms = COALESCE($3, next_attempt_at_ms)
             WHERE id = $1",
        )
        .bind(id)
        .bind(error)
        .bind(next_attempt_at.map(to_db))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

async fn enqueue_email_tx(tx: &mut Transaction<'_, Postgres>, email: &NewEmail<'_>, now: Timestamp) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO email_outbox (user_id, command_id, kind, recipient, subject, body, status,
                                   attempts, next_attempt_at_ms, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7)
         ON CONFLICT (command_id) DO NOTHING",
    )
    .bind(email.user_id)
    .bind(email.command_id)
    .bind(email.kind)
    .bind(email.recipient)
    .bind(email.subject)
    .bind(email.body)
    .bind(to_db(now))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub fn ledger_kind(kind: LedgerKind) -> &'static str {
    match kind {
        LedgerKind::TopUp => "top_up",
        LedgerKind::RamTime => "ram_time",
        LedgerKind::Storage => "storage",
        LedgerKind::ArchiveStorage => "archive_storage",
    }
}
