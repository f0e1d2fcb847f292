//! The Postgres store: every SQL query of the shell lives under this module, one file
//! per concern (accounts, servers, ledger, journal and command log, nodes, mail
//! outbox). Callers pass the shell's clock reading for every business timestamp.
//! Constraint names map to domain errors in [`StoreError`].

mod accounts;
mod idempotency;
mod journal;
mod ledger;
mod nodes;
mod oauth;
mod outbox;
mod requests;
mod retention;
mod servers;
mod snapshots;

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use accounts::{
    ACCOUNT_MAIL_KINDS, AccountMail, AdminChange, ApiTokenRow, OneTimeCode, Principal, Role, SCRUBBED_BODY, Scope,
    Scopes, UserRow,
};
pub use idempotency::IdempotencyClaim;
pub use journal::{JournalLock, JournalRow, LockWait, QuarantineRow};
pub use ledger::{BalanceAudit, LedgerRow, UsageRow};
pub use nodes::{NodeRecord, NodeRecordState};
pub use oauth::{OAuthProfile, OAuthSignIn, OAuthState, ResealCounts, SealError};
pub use outbox::{NewEmail, OutboxRow};
pub use requests::{RequestOutcome, RequestRow, RequestTag};
pub use retention::{Pruned, run_pruner};
pub use servers::{HostnameChange, LastStartFailure, ServerRow};
pub use snapshots::{RuntimeStart, SnapshotInfo};

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
    #[error("fenced out: leadership epoch {ours} is no longer current (another runtime took the journal lock)")]
    Fenced { ours: i64 },
    #[error("command id {command_id} already recorded with other content: {what}")]
    CommandIdCollision { command_id: i64, what: &'static str },
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
                // The server went (class 57: shut down, terminated; 08: connection
                // exception): a pooled connection found dead on use.
                _ if db
                    .code()
                    .is_some_and(|code| code.starts_with("57P") || code.starts_with("08")) =>
                {
                    StoreError::Unavailable(error.to_string())
                }
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

/// A pooled connection idle this long is pinged before it is used.
const IDLE_PING_MS: u64 = 1_000;

/// Connects without logging the URL (it may hold a password).
pub async fn connect(url: &str, max_connections: u32) -> StoreResult<PgPool> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|_| StoreError::Unavailable("database url does not parse".to_string()))?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // sqlx pings every connection when it goes back to the pool; pinging it again
        // when it is taken doubles a query's round trips (API latency, issue 17). Only
        // a connection idle for a while (the database may have gone since) is pinged.
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= Duration::from_millis(IDLE_PING_MS) {
                    sqlx::Connection::ping(connection).await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await?;
    Ok(pool)
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// Set on the runtime's store: its journal, command, ledger and outbox writes
    /// check this leadership epoch in their own transaction.
    fence: Option<Fence>,
}

/// The leadership epoch a runtime took with the journal lock, and whether a write
/// already found it stale (the runtime is deposed: its executors stop).
#[derive(Clone, Debug)]
pub struct Fence {
    pub epoch: i64,
    deposed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Store { pool, fence: None }
    }

    /// This store, with every journal, command, ledger and outbox write fenced by
    /// `epoch`: once another runtime has taken a newer epoch they fail with `Fenced`.
    pub fn fenced(&self, epoch: i64) -> Store {
        Store {
            pool: self.pool.clone(),
            fence: Some(Fence {
                epoch,
                deposed: Default::default(),
            }),
        }
    }

    /// True once a fenced write of this store found its epoch stale.
    pub fn is_deposed(&self) -> bool {
        self.fence
            .as_ref()
            .is_some_and(|fence| fence.deposed.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Checks, inside `tx`, that this store's epoch is still current, and holds a share
    /// lock on the leadership row until `tx` ends (a runtime taking over waits for the
    /// transaction, then every later one fails). No-op on an unfenced store.
    pub(crate) async fn check_fence(&self, tx: &mut sqlx::PgConnection) -> StoreResult<()> {
        let Some(fence) = &self.fence else { return Ok(()) };
        let current: i64 = sqlx::query_scalar("SELECT epoch FROM leadership WHERE singleton FOR SHARE")
            .fetch_one(&mut *tx)
            .await?;
        if current != fence.epoch {
            fence.deposed.store(true, std::sync::atomic::Ordering::SeqCst);
            metrics::counter!("payperplay_fenced_writes_total").increment(1);
            return Err(StoreError::Fenced { ours: fence.epoch });
        }
        Ok(())
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
