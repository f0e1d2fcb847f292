//! Billing: balance, ledger, usage per server (the signed-in user's only).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::Query;
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::store::{LedgerRow, UsageRow};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(balance))
        .routes(routes!(ledger))
        .routes(routes!(usage))
}

const LEDGER_PAGE_MAX: i64 = 500;

#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceView {
    /// The sum of your posted ledger entries, in micro-euros.
    pub balance_micros: i64,
    /// The scheduler's booked balance (may run ahead of the ledger by entries being
    /// posted right now).
    pub booked_balance_micros: Option<i64>,
}

/// Your balance.
#[utoipa::path(
    get, path = "/v1/billing/balance", tag = "billing",
    security(("bearer" = [])),
    responses((status = 200, description = "Balance", body = BalanceView))
)]
async fn balance(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<axum::Json<BalanceView>, ApiError> {
    let balance_micros = state.store.balance(principal.user_id).await?;
    let user_id = payperplay_core::UserId(principal.user_id as u64);
    let booked_balance_micros = state.runtime.query(move |core| core.balance_micros(user_id)).await?;
    Ok(axum::Json(BalanceView {
        balance_micros,
        booked_balance_micros,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LedgerQuery {
    /// Entries per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Only entries with a smaller id (for paging backwards).
    pub before_id: Option<i64>,
}

/// Your ledger, newest first.
#[utoipa::path(
    get, path = "/v1/billing/ledger", tag = "billing",
    security(("bearer" = [])),
    params(LedgerQuery),
    responses((status = 200, description = "Ledger entries", body = [LedgerRow]))
)]
async fn ledger(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Query(query): Query<LedgerQuery>,
) -> Result<axum::Json<Vec<LedgerRow>>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=LEDGER_PAGE_MAX).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("must be 1 to {LEDGER_PAGE_MAX}"),
        ));
    }
    Ok(axum::Json(
        state.store.ledger(principal.user_id, limit, query.before_id).await?,
    ))
}

/// Your usage per server: RAM time held and what it cost.
#[utoipa::path(
    get, path = "/v1/billing/usage", tag = "billing",
    security(("bearer" = [])),
    responses((status = 200, description = "Usage per server", body = [UsageRow]))
)]
async fn usage(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<axum::Json<Vec<UsageRow>>, ApiError> {
    Ok(axum::Json(state.store.usage(principal.user_id).await?))
}
