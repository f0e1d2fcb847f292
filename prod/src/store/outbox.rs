//! The mail outbox: mail queued in the database, sent by the mailer with retries.

use payperplay_core::Timestamp;
use sqlx::{Postgres, Transaction};

use super::{Store, StoreResult};
use crate::clock::to_db;

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

impl Store {
    /// Queues a mail (fenced on the runtime's store). With a `command_id`, queuing the
    /// same command twice queues once.
    pub async fn enqueue_email(&self, email: &NewEmail<'_>, now: Timestamp) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        self.check_fence(&mut tx).await?;
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

pub(super) async fn enqueue_email_tx(
    tx: &mut Transaction<'_, Postgres>,
    email: &NewEmail<'_>,
    now: Timestamp,
) -> StoreResult<()> {
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
