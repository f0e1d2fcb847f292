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

/// How long `lock_journal` waits for another runtime to let the lock go.
#[derive(Debug, Clone, Copy)]
pub enum LockWait {
    /// Up to this many milliseconds, then `JournalLocked`.
    UpToMs(u64),
    /// As a standby: until the lock is free.
    Forever,
}

/// The journal's advisory lock, held on a connection of its own (not returned to the
/// pool) while this value lives, and the leadership epoch taken with it: one owner of
/// the core per database, across processes. Dropping it closes the connection, which
/// releases the lock; the epoch fences the writes of a runtime that lost it.
pub struct JournalLock {
    connection: sqlx::PgConnection,
    pub epoch: i64,
}

impl JournalLock {
    /// `Ok` while this runtime still holds the lock (its connection answers) and its
    /// epoch is the current one; `Fenced` or a database error otherwise.
    pub async fn check(&mut self) -> StoreResult<()> {
        let current: i64 = sqlx::query_scalar("SELECT epoch FROM leadership WHERE singleton")
            .fetch_one(&mut self.connection)
            .await?;
        if current != self.epoch {
            return Err(StoreError::Fenced { ours: self.epoch });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct QuarantineRow {
    /// The journal sequence number of the input.
    pub seq: i64,
    pub at_ms: i64,
    pub input: serde_json::Value,
    /// The panic's message.
    pub error: String,
    pub quarantined_at_ms: i64,
}

impl Store {
    /// Takes the journal lock (waiting as `wait` says) and a new leadership epoch,
    /// which fences out every earlier holder's writes. `holder` names this process in
    /// the leadership row.
    pub async fn lock_journal(&self, wait: LockWait, holder: &str, now: Timestamp) -> StoreResult<JournalLock> {
        let mut connection = self.pool.acquire().await?.detach();
        let mut waited_ms = 0;
        let mut announced = false;
        loop {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(JOURNAL_LOCK_KEY)
                .fetch_one(&mut connection)
                .await?;
            if locked {
                break;
            }
            match wait {
                LockWait::UpToMs(wait_ms_max) if waited_ms >= wait_ms_max => return Err(StoreError::JournalLocked),
                LockWait::UpToMs(_) => {}
                LockWait::Forever if !announced => {
                    tracing::info!("another runtime holds the journal lock: standing by");
                    announced = true;
                }
                LockWait::Forever => {}
            }
            tokio::time::sleep(Duration::from_millis(JOURNAL_LOCK_RETRY_MS)).await;
            waited_ms += JOURNAL_LOCK_RETRY_MS;
        }
        let epoch: i64 = sqlx::query_scalar(
            "UPDATE leadership SET epoch = epoch + 1, holder = $1, taken_at_ms = $2 WHERE singleton RETURNING epoch",
        )
        .bind(holder)
        .bind(to_db(now))
        .fetch_one(&mut connection)
        .await?;
        metrics::gauge!("payperplay_leadership_epoch").set(epoch as f64);
        tracing::info!(epoch, "journal lock taken: leading");
        Ok(JournalLock { connection, epoch })
    }

    /// Appends one input (fenced: fails with `Fenced` once another runtime leads).
    pub async fn append_journal(&self, seq: i64, at: Timestamp, input: &serde_json::Value) -> StoreResult<()> {
        self.append_journal_with(seq, at, input, None).await
    }

    /// `append_journal`, recording in the same transaction that the input came from
    /// `request` (so "journaled" and "the request's row names the input" are one fact).
    pub async fn append_journal_with(
        &self,
        seq: i64,
        at: Timestamp,
        input: &serde_json::Value,
        request: Option<super::RequestTag>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        self.check_fence(&mut tx).await?;
        let result = sqlx::query("INSERT INTO journal (seq, at_ms, input, epoch) VALUES ($1, $2, $3, $4)")
            .bind(seq)
            .bind(to_db(at))
            .bind(input)
            .bind(self.fence.as_ref().map(|fence| fence.epoch))
            .execute(&mut *tx)
            .await;
        match result {
            Ok(_) => {}
            Err(sqlx::Error::Database(db)) if db.constraint() == Some("journal_pkey") => {
                return Err(StoreError::JournalConflict(seq));
            }
            Err(error) => return Err(error.into()),
        }
        if let Some(request) = request {
            Store::record_journaled_request(&mut tx, request, seq, at).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records that the input at `seq` made the core panic, with the panic's message;
    /// replay skips it from now on. Recording it again keeps the first message.
    pub async fn quarantine(&self, seq: i64, error: &str, now: Timestamp) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        self.check_fence(&mut tx).await?;
        sqlx::query(
            "INSERT INTO quarantine (seq, error, quarantined_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (seq) DO NOTHING",
        )
        .bind(seq)
        .bind(error)
        .bind(to_db(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The quarantined inputs, by sequence number.
    pub async fn quarantined(&self) -> StoreResult<Vec<QuarantineRow>> {
        Ok(sqlx::query_as(
            "SELECT q.seq, j.at_ms, j.input, q.error, q.quarantined_at_ms
             FROM quarantine q JOIN journal j ON j.seq = q.seq ORDER BY q.seq",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every journal row, oldest first, read `page_rows` at a time and handed to `each`
    /// (the journal and trace exports).
    pub async fn for_each_journal_row<E: From<StoreError>>(
        &self,
        page_rows: i64,
        each: impl FnMut(JournalRow) -> Result<(), E>,
    ) -> Result<(), E> {
        self.for_each_journal_row_from(1, page_rows, each).await
    }

    /// The journal rows from `first_seq` on, oldest first (replay from a snapshot).
    pub async fn for_each_journal_row_from<E: From<StoreError>>(
        &self,
        first_seq: i64,
        page_rows: i64,
        mut each: impl FnMut(JournalRow) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut last_seq = first_seq - 1;
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

    /// Records that from `first_seq` on the journal is handled under `core_config` by
    /// this core version (the rules a replay of that stretch must use).
    pub async fn record_runtime_start(
        &self,
        first_seq: i64,
        core_config: &serde_json::Value,
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        self.check_fence(&mut tx).await?;
        sqlx::query(
            "INSERT INTO runtime_starts (started_at_ms, first_seq, core_config, core_version, crate_version)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(to_db(now))
        .bind(first_seq)
        .bind(core_config)
        .bind(payperplay_core::CORE_VERSION as i32)
        .bind(payperplay_core::CRATE_VERSION)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a command the core issued as pending, with the RAM a ledger command
    /// bills. Recording the same command again changes nothing; another command under
    /// a recorded id is `CommandIdCollision`.
    pub async fn record_command(
        &self,
        command: &Command,
        ram_mib_billed: Option<u32>,
        now: Timestamp,
    ) -> StoreResult<()> {
        let json = serde_json::to_value(command)?;
        let mut tx = self.pool.begin().await?;
        self.check_fence(&mut tx).await?;
        let inserted = sqlx::query(
            "INSERT INTO commands (id, kind, command, status, attempts, issued_at_ms, ram_mib_billed)
             VALUES ($1, $2, $3, 'pending', 0, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(command.id.0 as i64)
        .bind(command.kind.name())
        .bind(&json)
        .bind(to_db(now))
        .bind(ram_mib_billed.map(|ram_mib| ram_mib as i32))
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            let recorded: serde_json::Value = sqlx::query_scalar("SELECT command FROM commands WHERE id = $1")
                .bind(command.id.0 as i64)
                .fetch_one(&mut *tx)
                .await?;
            if recorded != json {
                return Err(StoreError::CommandIdCollision {
                    command_id: command.id.0 as i64,
                    what: "command",
                });
            }
        }
        tx.commit().await?;
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
        let mut tx = self.pool.begin().await?;
        self.check_fence(&mut tx).await?;
        sqlx::query(
            "UPDATE commands SET status = $2, attempts = $3, error = $4, finished_at_ms = $5
             WHERE id = $1",
        )
        .bind(command_id)
        .bind(if succeeded { "succeeded" } else { "failed" })
        .bind(attempts as i32)
        .bind(error)
        .bind(to_db(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The journal's last sequence number (0 when it is empty).
    pub async fn journal_seq_max(&self) -> StoreResult<i64> {
        let seq_max: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM journal")
            .fetch_one(&self.pool)
            .await?;
        Ok(seq_max.unwrap_or(0))
    }

    /// The largest command id in the command log (0 when it is empty).
    pub async fn command_id_max(&self) -> StoreResult<u64> {
        let id_max: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM commands")
            .fetch_one(&self.pool)
            .await?;
        Ok(id_max.unwrap_or(0) as u64)
    }

    /// The commands to carry out again at start, by id: those recorded as pending (not
    /// finished before a stop), and ledger, mail and world commands that failed (they
    /// are retried until they succeed: money and worlds are never given up on).
    pub async fn pending_commands(&self) -> StoreResult<Vec<(Command, Option<u32>)>> {
        let rows: Vec<(serde_json::Value, Option<i32>)> = sqlx::query_as(
            "SELECT command, ram_mib_billed FROM commands
             WHERE status = 'pending'
                OR (status = 'failed'
                    AND kind IN ('post_ledger_entry', 'send_email', 'archive_world', 'delete_world'))
             ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(command, ram_mib_billed)| {
                let command = serde_json::from_value(command).map_err(StoreError::from)?;
                Ok((command, ram_mib_billed.map(|ram_mib| ram_mib as u32)))
            })
            .collect()
    }
}
