//! Liveness, readiness (database and runtime) and Prometheus metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::error::{ApiError, ErrorBody};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(live)).routes(routes!(ready))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    pub status: String,
}

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

/// Readiness: the database answers and the runtime has replayed its journal.
#[utoipa::path(
    get, path = "/v1/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready", body = HealthView),
        (status = 503, description = "Not ready", body = ErrorBody),
    )
)]
async fn ready(State(state): State<AppState>) -> Result<axum::Json<HealthView>, ApiError> {
    state.store.ping().await?;
    if !state.runtime.is_ready() {
        return Err(ApiError::Unavailable("runtime not ready".to_string()));
    }
    Ok(axum::Json(HealthView {
        status: "ready".to_string(),
    }))
}

/// Prometheus text format.
pub async fn metrics() -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::prometheus().render(),
    )
}
