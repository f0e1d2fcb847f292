//! Retention: deletes finished records older than their configured age (succeeded
//! commands, sent or failed mail, expired or used sessions and verification codes,
//! answers to idempotency keys), and journal rows covered by a snapshot older than
//! `journal_keep_ms` (with the quarantine rows and older snapshots they leave behind;
//! the runtime starts, a few rows, stay).

use payperplay_core::Timestamp;

use super::{Store, StoreResult};
use crate::clock::to_db;
use crate::config::RetentionConfig;

/// Rows deleted by one pruning pass, per kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub commands: u64,
    pub outbox: u64,
    pub sessions: u64,
    pub verifications: u64,
    pub idempotency_keys: u64,
    /// Request outcomes (`GET /v1/requests/{id}`), kept as long as idempotency keys.
    pub requests: u64,
    pub journal_rows: u64,
    pub snapshots: u64,
}

impl Store {
    /// One pruning pass at `now`. A keep time of 0 keeps that kind forever.
    pub async fn prune(&self, config: &RetentionConfig, now: Timestamp) -> StoreResult<Pruned> {
        let before = |keep_ms: u64| to_db(now).saturating_sub(i64::try_from(keep_ms).unwrap_or(i64::MAX));
        let mut pruned = Pruned::default();
        if config.commands_keep_ms > 0 {
            // The newest command stays: replay compares against the largest id recorded.
            pruned.commands = sqlx::query(
                "DELETE FROM commands WHERE status = 'succeeded' AND finished_at_ms < $1
                   AND id < (SELECT MAX(id) FROM commands)",
            )
            .bind(before(config.commands_keep_ms))
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        if config.outbox_keep_ms > 0 {
            pruned.outbox = sqlx::query("DELETE FROM email_outbox WHERE status <> 'pending' AND created_at_ms < $1")
                .bind(before(config.outbox_keep_ms))
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        if config.sessions_keep_ms > 0 {
            let cutoff = before(config.sessions_keep_ms);
            pruned.sessions = sqlx::query("DELETE FROM sessions WHERE expires_at_ms < $1 OR revoked_at_ms < $1")
                .bind(cutoff)
                .execute(&self.pool)
                .await?
                .rows_affected();
            pruned.verifications =
                sqlx::query("DELETE FROM email_verifications WHERE expires_at_ms < $1 OR used_at_ms < $1")
                    .bind(cutoff)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
        }
        if config.idempotency_keys_keep_ms > 0 {
            pruned.idempotency_keys = sqlx::query("DELETE FROM idempotency_keys WHERE claimed_at_ms < $1")
                .bind(before(config.idempotency_keys_keep_ms))
                .execute(&self.pool)
                .await?
                .rows_affected();
            pruned.requests = sqlx::query("DELETE FROM requests WHERE created_at_ms < $1")
                .bind(before(config.idempotency_keys_keep_ms))
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        if config.journal_keep_ms > 0 {
            (pruned.journal_rows, pruned.snapshots) = self.prune_journal(before(config.journal_keep_ms)).await?;
        }
        Ok(pruned)
    }

    /// Deletes the journal before the newest snapshot taken before `taken_before_ms`
    /// (one this core can restore), and the snapshots before it: recovery starts from
    /// that snapshot or a newer one. The journal's last row always stays: it marks
    /// where the journal ends (the next sequence number). Returns (journal rows,
    /// snapshots) deleted.
    async fn prune_journal(&self, taken_before_ms: i64) -> StoreResult<(u64, u64)> {
        let formats: Vec<i32> = payperplay_core::snapshot::SNAPSHOT_FORMATS_READ
            .iter()
            .map(|&format| format as i32)
            .collect();
        let mut tx = self.pool.begin().await?;
        let cut: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(seq) FROM core_snapshots WHERE taken_at_ms < $1 AND format_version = ANY($2)",
        )
        .bind(taken_before_ms)
        .bind(&formats)
        .fetch_one(&mut *tx)
        .await?;
        let Some(snapshot_seq) = cut else { return Ok((0, 0)) };
        let journal_seq_max: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM journal")
            .fetch_one(&mut *tx)
            .await?;
        let cut = snapshot_seq.min(journal_seq_max.unwrap_or(0));
        sqlx::query("DELETE FROM quarantine WHERE seq < $1")
            .bind(cut)
            .execute(&mut *tx)
            .await?;
        let journal_rows = sqlx::query("DELETE FROM journal WHERE seq < $1")
            .bind(cut)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let snapshots = sqlx::query("DELETE FROM core_snapshots WHERE seq < $1")
            .bind(snapshot_seq)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok((journal_rows, snapshots))
    }
}

/// The pruner task: one pass every `interval_ms` until shutdown (supervised).
pub async fn run_pruner(
    store: Store,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
    config: RetentionConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> StoreResult<()> {
    let interval_ms = config.interval_ms.max(1_000);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = tokio::time::sleep(std::time::Duration::from_millis(interval_ms)) => {}
        }
        if *shutdown.borrow() {
            return Ok(());
        }
        let pruned = store.prune(&config, clock.now()).await?;
        tracing::info!(?pruned, "pruned finished records");
        metrics::counter!("payperplay_pruned_rows_total").increment(
            pruned.commands
                + pruned.outbox
                + pruned.sessions
                + pruned.verifications
                + pruned.idempotency_keys
                + pruned.requests
                + pruned.journal_rows
                + pruned.snapshots,
        );
    }
}
