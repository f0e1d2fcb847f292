//! Snapshots of the core's state and the rules recorded with each runtime start: what
//! recovery restores and under which configuration and core version each stretch of
//! the journal is replayed.

use payperplay_core::{SnapshotHeader, Timestamp};

use super::{Store, StoreResult};
use crate::clock::to_db;

/// A stored snapshot without its state (choosing one needs no parsing).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SnapshotInfo {
    /// The first journal sequence number not in the snapshot: replay resumes here.
    pub seq: i64,
    pub taken_at_ms: i64,
    pub format_version: i32,
    pub core_version: i32,
    pub crate_version: String,
}

/// A runtime start: from `first_seq` on, the journal was handled under `core_config`
/// by core version `core_version` (until the next start).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RuntimeStart {
    pub first_seq: i64,
    pub started_at_ms: i64,
    pub core_config: serde_json::Value,
    pub core_version: i32,
    pub crate_version: String,
}

impl Store {
    /// Stores a snapshot of the core at `seq` (the first sequence number not in it),
    /// fenced. A snapshot at the same `seq` again changes nothing (it holds the same state).
    pub async fn save_snapshot(
        &self,
        seq: i64,
        header: &SnapshotHeader,
        state: &[u8],
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        self.check_fence(&mut tx).await?;
        sqlx::query(
            "INSERT INTO core_snapshots (seq, taken_at_ms, format_version, core_version, crate_version, state, epoch)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (seq) DO NOTHING",
        )
        .bind(seq)
        .bind(to_db(now))
        .bind(header.format_version as i32)
        .bind(header.core_version as i32)
        .bind(&header.crate_version)
        .bind(state)
        .bind(self.fence.as_ref().map(|fence| fence.epoch))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every stored snapshot, newest first.
    pub async fn snapshots(&self) -> StoreResult<Vec<SnapshotInfo>> {
        Ok(sqlx::query_as(
            "SELECT seq, taken_at_ms, format_version, core_version, crate_version
             FROM core_snapshots ORDER BY seq DESC",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The state of the snapshot at `seq` (the envelope's JSON).
    pub async fn snapshot_state(&self, seq: i64) -> StoreResult<Vec<u8>> {
        Ok(sqlx::query_scalar("SELECT state FROM core_snapshots WHERE seq = $1")
            .bind(seq)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Every runtime start, in journal order.
    pub async fn runtime_starts(&self) -> StoreResult<Vec<RuntimeStart>> {
        Ok(sqlx::query_as(
            "SELECT first_seq, started_at_ms, core_config, core_version, crate_version
             FROM runtime_starts ORDER BY first_seq, id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The journal's first sequence number (rows before it were pruned; 0 when it is
    /// empty).
    pub async fn journal_seq_min(&self) -> StoreResult<i64> {
        let seq_min: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM journal")
            .fetch_one(&self.pool)
            .await?;
        Ok(seq_min.unwrap_or(0))
    }
}
