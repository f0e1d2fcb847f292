//! Idempotency keys: the first answer to a POST with an `Idempotency-Key`, stored so
//! that the same request again gets the same answer instead of a second effect.

use payperplay_core::Timestamp;

use super::{Store, StoreResult};
use crate::clock::to_db;

/// What a claim of an idempotency key found.
#[derive(Debug, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key is new: handle the request, then `finish_idempotency_key`.
    New,
    /// The same request was answered before: answer this again.
    Replay { status: u16, body: Vec<u8> },
    /// The key was used for another request (other method, path or body).
    Mismatch,
    /// The first request with this key is being handled (claimed at this time).
    InFlight { claimed_at_ms: i64 },
}

#[derive(sqlx::FromRow)]
struct StoredKey {
    method: String,
    path: String,
    request_sha256: Vec<u8>,
    status: Option<i32>,
    response: Option<Vec<u8>>,
    claimed_at_ms: i64,
}

impl Store {
    /// Claims `key` in `scope` for this request (method, path, SHA-256 of the body).
    pub async fn claim_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        method: &str,
        path: &str,
        request_sha256: &[u8],
        now: Timestamp,
    ) -> StoreResult<IdempotencyClaim> {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, method, path, request_sha256, claimed_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope, key) DO NOTHING",
        )
        .bind(scope)
        .bind(key)
        .bind(method)
        .bind(path)
        .bind(request_sha256)
        .bind(to_db(now))
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(IdempotencyClaim::New);
        }
        let stored: StoredKey = sqlx::query_as(
            "SELECT method, path, request_sha256, status, response, claimed_at_ms
             FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_one(&self.pool)
        .await?;
        let StoredKey {
            method: stored_method,
            path: stored_path,
            request_sha256: stored_sha256,
            status,
            response: body,
            claimed_at_ms,
        } = stored;
        if stored_method != method || stored_path != path || stored_sha256 != request_sha256 {
            return Ok(IdempotencyClaim::Mismatch);
        }
        Ok(match status {
            Some(status) => IdempotencyClaim::Replay {
                status: status as u16,
                body: body.unwrap_or_default(),
            },
            None => IdempotencyClaim::InFlight { claimed_at_ms },
        })
    }

    /// Stores the answer to the request that claimed `key`.
    pub async fn finish_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        body: &[u8],
        now: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $3, response = $4, answered_at_ms = $5
             WHERE scope = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key)
        .bind(i32::from(status))
        .bind(body)
        .bind(to_db(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Lets `key` go unanswered (the request certainly had no effect): the same
    /// request may be sent again and is handled then.
    pub async fn release_idempotency_key(&self, scope: &str, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status IS NULL")
            .bind(scope)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
