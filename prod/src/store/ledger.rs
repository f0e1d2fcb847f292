//! The ledger (every change of a balance, with the balance in the same transaction)
//! and usage per server.

use payperplay_core::{LedgerEntry, LedgerKind, Timestamp};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Store, StoreError, StoreResult};
use crate::clock::to_db;

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

/// One user's balance as stored, the sum of their ledger entries, and the sum of the
/// ledger commands the core issued for them that are not posted yet (read in one
/// snapshot).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BalanceAudit {
    pub user_id: i64,
    pub balance_micros: i64,
    pub ledger_micros: i64,
    pub unposted_micros: i64,
}

impl Store {
    /// Every user's [`BalanceAudit`], by id, in one statement (one snapshot).
    pub async fn balance_audit(&self) -> StoreResult<Vec<BalanceAudit>> {
        Ok(sqlx::query_as(
            "WITH posted AS (
                 SELECT user_id, SUM(amount_micros) AS micros FROM ledger_entries GROUP BY user_id
             ), unposted AS (
                 SELECT (c.command #>> '{kind,entry,user_id}')::BIGINT AS user_id,
                        SUM((c.command #>> '{kind,entry,amount_micros}')::BIGINT) AS micros
                 FROM commands c
                 WHERE c.kind = 'post_ledger_entry'
                   AND NOT EXISTS (SELECT 1 FROM ledger_entries l WHERE l.command_id = c.id)
                 GROUP BY 1
             )
             SELECT u.id AS user_id, u.balance_micros,
                    COALESCE(p.micros, 0)::BIGINT AS ledger_micros,
                    COALESCE(q.micros, 0)::BIGINT AS unposted_micros
             FROM users u
             LEFT JOIN posted p ON p.user_id = u.id
             LEFT JOIN unposted q ON q.user_id = u.id
             ORDER BY u.id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Posts one ledger entry and moves the balance by its amount, atomically (and
    /// fenced on the runtime's store). With a `command_id` the post is idempotent: a
    /// second post of the same entry changes nothing and returns `false`; another entry
    /// under the same command id is `CommandIdCollision`.
    pub async fn post_ledger_entry(
        &self,
        command_id: Option<i64>,
        entry: &LedgerEntry,
        now: Timestamp,
    ) -> StoreResult<bool> {
        self.post_ledger_entry_billed(command_id, entry, None, now).await
    }

    /// `post_ledger_entry` with the RAM the entry bills for its usage row (`None`:
    /// the server's RAM now).
    pub async fn post_ledger_entry_billed(
        &self,
        command_id: Option<i64>,
        entry: &LedgerEntry,
        ram_mib_billed: Option<u32>,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        self.check_fence(&mut tx).await?;
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
            let same: bool = sqlx::query_scalar(
                "SELECT user_id = $2 AND server_id IS NOT DISTINCT FROM $3 AND kind = $4 AND amount_micros = $5
                        AND from_at_ms = $6 AND to_at_ms = $7
                 FROM ledger_entries WHERE command_id = $1",
            )
            .bind(command_id)
            .bind(entry.user_id.0 as i64)
            .bind(entry.server_id.map(|id| id.0 as i64))
            .bind(ledger_kind(entry.kind))
            .bind(entry.amount_micros)
            .bind(to_db(entry.from))
            .bind(to_db(entry.to))
            .fetch_one(&mut *tx)
            .await?;
            if !same {
                return Err(StoreError::CommandIdCollision {
                    command_id: command_id.unwrap_or_default(),
                    what: "ledger entry",
                });
            }
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
                 SELECT $1, s.id, $3, $4, COALESCE($9, s.ram_mib), $5, $6, $7, $8 FROM servers s WHERE s.id = $2",
            )
            .bind(entry_id)
            .bind(server_id.0 as i64)
            .bind(entry.user_id.0 as i64)
            .bind(ledger_kind(entry.kind))
            .bind(to_db(entry.to) - to_db(entry.from))
            .bind(entry.amount_micros)
            .bind(to_db(entry.from))
            .bind(to_db(entry.to))
            .bind(ram_mib_billed.map(|ram_mib| ram_mib as i32))
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
}

fn ledger_kind(kind: LedgerKind) -> &'static str {
    match kind {
        LedgerKind::TopUp => "top_up",
        LedgerKind::RamTime => "ram_time",
        LedgerKind::Storage => "storage",
        LedgerKind::ArchiveStorage => "archive_storage",
    }
}
