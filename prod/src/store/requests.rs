//! Requests whose outcome a client may have to ask for later (`GET /v1/requests/{id}`),
//! and the servers' tiers as the runtime writes them (the core decides a tier change;
//! the table follows it).

use payperplay_core::Timestamp;

use super::{Store, StoreResult};
use crate::clock::to_db;

/// The request an input came from: its id (given to the client when the outcome is
/// unknown) and the user who sent it (the only one who may ask about it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTag {
    pub id: i64,
    pub user_id: i64,
}

/// What the core made of a request's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    CarriedOut,
    Rejected { code: String, message: String },
    Quarantined { message: String },
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RequestRow {
    pub id: i64,
    pub seq: Option<i64>,
    pub outcome: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at_ms: i64,
    pub decided_at_ms: Option<i64>,
}

impl Store {
    /// In the journal append's transaction: the request `tag` was journaled at `seq`.
    /// When the API has already answered `outcome_unknown` and noted the request as not
    /// journaled, this fails and with it the append: "not journaled" stays true.
    pub(super) async fn record_journaled_request(
        tx: &mut sqlx::PgConnection,
        tag: RequestTag,
        seq: i64,
        at: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO requests (id, user_id, seq, created_at_ms) VALUES ($1, $2, $3, $4)")
            .bind(tag.id)
            .bind(tag.user_id)
            .bind(seq)
            .bind(to_db(at))
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// The API answered `outcome_unknown` for `tag`: makes sure the request can be asked
    /// about even when its input was never journaled (then it has no `seq`).
    pub async fn note_unknown_request(&self, tag: RequestTag, now: Timestamp) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO requests (id, user_id, created_at_ms) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(tag.id)
        .bind(tag.user_id)
        .bind(to_db(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records what the core made of request `id`'s input (the first outcome stays).
    pub async fn record_request_outcome(&self, id: i64, outcome: &RequestOutcome, now: Timestamp) -> StoreResult<()> {
        let (name, code, message) = match outcome {
            RequestOutcome::CarriedOut => ("carried_out", None, None),
            RequestOutcome::Rejected { code, message } => ("rejected", Some(code.as_str()), Some(message.as_str())),
            RequestOutcome::Quarantined { message } => ("quarantined", None, Some(message.as_str())),
        };
        sqlx::query(
            "UPDATE requests SET outcome = $2, error_code = $3, error_message = $4, decided_at_ms = $5
             WHERE id = $1 AND outcome IS NULL",
        )
        .bind(id)
        .bind(name)
        .bind(code)
        .bind(message)
        .bind(to_db(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Request `id` of `user_id` (None: no such request of theirs).
    pub async fn request(&self, user_id: i64, id: i64) -> StoreResult<Option<RequestRow>> {
        Ok(sqlx::query_as(
            "SELECT id, seq, outcome, error_code, error_message, created_at_ms, decided_at_ms
             FROM requests WHERE id = $1 AND user_id = $2",
        )
        .bind(id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Sets the servers' tiers as the core has them (fenced: only the leading runtime
    /// writes them). Returns how many rows changed.
    pub async fn set_server_tiers(&self, tiers: &[(i64, u32)], now: Timestamp) -> StoreResult<u64> {
        if tiers.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = tiers.iter().map(|(id, _)| *id).collect();
        let ram_mibs: Vec<i32> = tiers.iter().map(|(_, ram_mib)| *ram_mib as i32).collect();
        let mut tx = self.pool.begin().await?;
        self.check_fence(&mut tx).await?;
        let changed = sqlx::query(
            "UPDATE servers s SET ram_mib = t.ram_mib, updated_at_ms = $3
             FROM UNNEST($1::BIGINT[], $2::INTEGER[]) AS t (id, ram_mib)
             WHERE s.id = t.id AND s.ram_mib <> t.ram_mib",
        )
        .bind(&ids)
        .bind(&ram_mibs)
        .bind(to_db(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(changed)
    }
}
