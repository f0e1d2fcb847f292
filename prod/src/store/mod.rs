//! The Postgres store: every SQL query of the shell lives under this module, one file
//! per concern (accounts, servers, ledger, journal and command log, nodes, mail
//! outbox). Callers pass the shell's clock reading for every business timestamp.
//! Constraint names map to domain errors in [`StoreError`].

mod accounts;
mod journal;
mod ledger;
mod nodes;
mod outbox;
mod servers;

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use accounts::{Principal, Role, UserRow};
pub use journal::{JournalLock, JournalRow};
pub use ledger::{LedgerRow, UsageRow};
pub use nodes::{NodeRecord, NodeRecordState};
pub use outbox::{NewEmail, OutboxRow};
pub use servers::{HostnameChange, ServerRow};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("email already registered")]
    EmailTaken,
    #[error("server name already used by this owner")]
    ServerNameTaken,
    #[error("hostname already claimed by another server")]
    HostnameTaken,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("journal sequence {0} already taken: another runtime is writing this journal")]
    JournalConflict(i64),
    #[error("another runtime holds the journal lock")]
    JournalLocked,
    #[error("database schema is not at migration {latest} (found {applied:?}): run `payperplay migrate`")]
    NotMigrated { latest: i64, applied: Option<i64> },
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
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
                Some("servers_hostname_key") => StoreError::HostnameTaken,
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

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Store { pool }
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Applies the migrations the database does not have yet.
    pub async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// `NotMigrated` unless every migration of this build has been applied.
    pub async fn check_migrated(&self) -> StoreResult<()> {
        let latest = MIGRATOR.iter().map(|migration| migration.version).max().unwrap_or(0);
        let applied: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.pool)
            .await
            .ok()
            .flatten();
        if applied != Some(latest) {
            return Err(StoreError::NotMigrated { latest, applied });
        }
        Ok(())
    }
}
