//! The input journal, the runtime starts, the command log, and the advisory lock that
//! makes one runtime the journal's only writer.

use std::time::Duration;

use payperplay_core::{Command, Timestamp};

use super::{Store, StoreError, StoreResult};
use crate::clock::to_db;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JournalRow {
    pub seq: i64,
    pub at_ms: i64,
    pub input: serde_json::Value,
}

/// Advisory lock key of the journal (any fixed number; "PPPJRNL" in ASCII).
const JOURNAL_LOCK_KEY: i64 = 0x0050_5050_4a52_4e4c;
/// How long a starting runtime waits between two tries of the journal lock.
const JOURNAL_LOCK_RETRY_MS: u64 = 100;

/// The journal's advisory lock, held on a connection of its own (not returned to the
/// pool) while this value lives: one owner of the core per database, across
/// processes. Dropping it closes the connection, which releases the lock.
pub struct JournalLock {
    _connection: sqlx::PgConnection,
}

impl Store {
    /// Takes the journal lock, waiting up to `wait_ms_max` for another runtime to let
    /// it go; `JournalLocked` when it does not.
    pub async fn lock_journal(&self, wait_ms_max: u64) -> StoreResult<JournalLock> {
        let mut connection = self.pool.acquire().await?.detach();
        let mut waited_ms = 0;
        loop {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(JOURNAL_LOCK_KEY)
                .fetch_one(&mut connection)
                .await?;
            if locked {
                return Ok(JournalLock {
                    _connection: connection,
                });
            }
            if waited_ms >= wait_ms_max {
                return Err(StoreError::JournalLocked);
            }
            tokio::time::sleep(Duration::from_millis(JOURNAL_LOCK_RETRY_MS)).await;
            waited_ms += JOURNAL_LOCK_RETRY_MS;
        }
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

    /// Records a command the core issued as pending; recording it again changes nothing.
    pub async fn record_command(&self, command: &Command, now: Timestamp) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO commands (id, kind, command, status, attempts, issued_at_ms)
             VALUES ($1, $2, $3, 'pending', 0, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(command.id.0 as i64)
        .bind(command.kind.name())
        .bind(serde_json::to_value(command)?)
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

    /// The largest command id in the command log (0 when it is empty).
    pub async fn command_id_max(&self) -> StoreResult<u64> {
        let id_max: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM commands")
            .fetch_one(&self.pool)
            .await?;
        Ok(id_max.unwrap_or(0) as u64)
    }

    /// The commands recorded as pending (not finished before a stop), by id.
    pub async fn pending_commands(&self) -> StoreResult<Vec<Command>> {
        let rows: Vec<serde_json::Value> =
            sqlx::query_scalar("SELECT command FROM commands WHERE status = 'pending' ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|row| serde_json::from_value(row).map_err(StoreError::from))
            .collect()
    }
}
