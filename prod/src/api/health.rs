//! Liveness, readiness (database and runtime, with recovery progress), Prometheus
//! metrics, and the durability alarms for admins (active alarms, quarantined inputs).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody, ErrorDetail};
use crate::runtime::{Alarm, RecoveryView};
use crate::store::QuarantineRow;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(alarms))
        .routes(routes!(quarantine))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    pub status: String,
}

/// Readiness: `ready`, or why not (an error body, as every 503) with the runtime's
/// recovery progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessView {
    /// `ready`, `database_unavailable` or `recovering`.
    pub status: String,
    pub recovery: RecoveryView,
    /// Set when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// How long a client should wait before retrying while the runtime recovers.
pub const RETRY_AFTER_S: u64 = 1;

/// Liveness: the process answers.
#[utoipa::path(
    get, path = "/v1/health/live", tag = "health",
    responses((status = 200, description = "Alive", body = HealthView))
)]
async fn live() -> axum::Json<HealthView> {
    axum::Json(HealthView {
        status: "ok".to_string(),
    })
}

/// Readiness: the database answers and the runtime has replayed its journal and
/// leads. While it stands by for another runtime's journal lock or replays, a 503
/// with `Retry-After` and the recovery progress (phase, inputs replayed of the
/// journal's).
#[utoipa::path(
    get, path = "/v1/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready", body = ReadinessView),
        (status = 503, description = "Not ready: database down, or recovering", body = ReadinessView),
    )
)]
async fn ready(State(state): State<AppState>) -> Response {
    let recovery = state.runtime.recovery();
    let status = if state.store.ping().await.is_err() {
        "database_unavailable"
    } else if !state.runtime.is_ready() {
        "recovering"
    } else {
        "ready"
    };
    let error = (status != "ready").then(|| ErrorDetail {
        code: status.to_string(),
        message: match status {
            "database_unavailable" => "the database does not answer".to_string(),
            _ => format!(
                "runtime {:?}: {} of {} journal inputs replayed",
                recovery.phase, recovery.replayed_inputs, recovery.journal_inputs
            ),
        },
        field: None,
    });
    let view = ReadinessView {
        status: status.to_string(),
        recovery,
        error,
    };
    if status == "ready" {
        (StatusCode::OK, axum::Json(view)).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, RETRY_AFTER_S.to_string())],
            axum::Json(view),
        )
            .into_response()
    }
}

/// Active alarms of this process: quarantined inputs, balances that disagree with
/// their ledger (naming the user), ledger, mail or world commands still failing.
#[utoipa::path(
    get, path = "/v1/admin/alarms", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Active alarms", body = [Alarm]),
        (status = 403, description = "Not an admin", body = ErrorBody),
    )
)]
async fn alarms(State(state): State<AppState>, _admin: Admin) -> axum::Json<Vec<Alarm>> {
    axum::Json(state.runtime.alarms().list())
}

/// Inputs that made the core panic, with the panic's message: skipped on replay.
#[utoipa::path(
    get, path = "/v1/admin/quarantine", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Quarantined inputs, by journal sequence number", body = [QuarantineRow]),
        (status = 403, description = "Not an admin", body = ErrorBody),
    )
)]
async fn quarantine(State(state): State<AppState>, _admin: Admin) -> Result<axum::Json<Vec<QuarantineRow>>, ApiError> {
    Ok(axum::Json(state.store.quarantined().await?))
}

/// Prometheus text format.
pub async fn metrics() -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::prometheus().render(),
    )
}
