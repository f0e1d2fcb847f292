//! Asking later about a request whose answer was `outcome_unknown` (503): that answer
//! carries `error.request_id` (and `Location: /v1/requests/{id}`); this route tells
//! whether the request's input was carried out, and with what result. Only the user
//! who sent the request may ask.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::Path;
use crate::auth::Authenticated;
use crate::error::{ApiError, ErrorBody, ErrorDetail};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(request_status))
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Its input never reached the journal: it had no effect; send it again.
    NotJournaled,
    /// Journaled: the core handles it (after a restart, during recovery); its result
    /// is not recorded yet. Ask again shortly.
    Journaled,
    /// Carried out: it had its effect.
    CarriedOut,
    /// Handled and refused (`error` says why): it had no effect.
    Rejected,
    /// It made the core fail and was set aside (an operator is alarmed): no effect.
    Quarantined,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RequestView {
    pub id: i64,
    pub state: RequestState,
    /// The journal sequence number of its input, once journaled.
    pub journal_seq: Option<i64>,
    /// Why it was refused (the error its answer would have carried), when rejected or
    /// quarantined.
    pub error: Option<ErrorDetail>,
    pub created_at_ms: i64,
    /// When its result was recorded.
    pub decided_at_ms: Option<i64>,
}

/// Whether a request answered with `outcome_unknown` was carried out, and its result.
#[utoipa::path(
    get, path = "/v1/requests/{id}", tag = "requests",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The `error.request_id` of an `outcome_unknown` answer")),
    responses(
        (status = 200, description = "Where the request stands", body = RequestView),
        (status = 404, description = "No such request of yours", body = ErrorBody),
    )
)]
async fn request_status(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<i64>,
) -> Result<axum::Json<RequestView>, ApiError> {
    let row = state
        .store
        .request(principal.user_id, id)
        .await?
        .ok_or(ApiError::NotFound { what: "request" })?;
    let request_state = match (row.seq, row.outcome.as_deref()) {
        (None, _) => RequestState::NotJournaled,
        (Some(_), None) => RequestState::Journaled,
        (Some(_), Some("carried_out")) => RequestState::CarriedOut,
        (Some(_), Some("rejected")) => RequestState::Rejected,
        (Some(_), Some(_)) => RequestState::Quarantined,
    };
    let error = match request_state {
        RequestState::Rejected => Some(ErrorDetail {
            code: row.error_code.unwrap_or_else(|| "rejected".to_string()),
            message: row.error_message.unwrap_or_default(),
            field: None,
        }),
        RequestState::Quarantined => Some(ErrorDetail {
            code: "quarantined".to_string(),
            message: format!(
                "the request's input made the core fail and was set aside: {}",
                row.error_message.unwrap_or_default()
            ),
            field: None,
        }),
        _ => None,
    };
    Ok(axum::Json(RequestView {
        id: row.id,
        state: request_state,
        journal_seq: row.seq,
        error,
        created_at_ms: row.created_at_ms,
        decided_at_ms: row.decided_at_ms,
    }))
}
