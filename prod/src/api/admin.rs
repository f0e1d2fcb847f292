//! Admin routes (admin role only): users, credit a balance, fleet nodes, queue, the
//! active scaling configuration.

use axum::extract::State;
use axum::http::StatusCode;
use payperplay_core::{Input, ServerState, UserId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{Json, Path, Query};
use crate::api::accounts::UserView;
use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::runtime::node_record;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(credit_user))
        .routes(routes!(list_nodes))
        .routes(routes!(list_queue))
        .routes(routes!(scaling_config))
}

/// Largest single credit: 100 000 EUR.
const CREDIT_MICROS_MAX: i64 = 100_000 * 1_000_000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsersQuery {
    /// Users per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Only users with a larger id (paging forwards).
    pub after_id: Option<i64>,
}

/// All users, by id.
#[utoipa::path(
    get, path = "/v1/admin/users", tag = "admin",
    security(("bearer" = [])),
    params(UsersQuery),
    responses(
        (status = 200, description = "Users", body = [UserView]),
        (status = 403, description = "Not an admin", body = ErrorBody),
    )
)]
async fn list_users(
    State(state): State<AppState>,
    _admin: Admin,
    Query(query): Query<UsersQuery>,
) -> Result<axum::Json<Vec<UserView>>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid_field("limit", "must be 1 to 500"));
    }
    let users = state.store.list_users(limit, query.after_id.unwrap_or(0)).await?;
    Ok(axum::Json(users.into_iter().map(UserView::from).collect()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditRequest {
    /// Micro-euros to add, 1 to 100000000000 (100 000 EUR).
    #[schema(minimum = 1, maximum = 100000000000_i64)]
    pub amount_micros: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreditView {
    pub user_id: i64,
    /// The scheduler's booked balance after the credit; the ledger entry is posted
    /// right after.
    pub booked_balance_micros: i64,
}

/// Credit a user's balance (a top-up posted to the ledger).
#[utoipa::path(
    post, path = "/v1/admin/users/{id}/credit", tag = "admin",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "User id")),
    request_body = CreditRequest,
    responses(
        (status = 202, description = "Credited", body = CreditView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
async fn credit_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<i64>,
    Json(request): Json<CreditRequest>,
) -> Result<(StatusCode, axum::Json<CreditView>), ApiError> {
    if !(1..=CREDIT_MICROS_MAX).contains(&request.amount_micros) {
        return Err(ApiError::invalid_field(
            "amount_micros",
            format!("must be 1 to {CREDIT_MICROS_MAX}"),
        ));
    }
    state.store.user_by_id(id).await?;
    let user_id = UserId(id as u64);
    let booked = state
        .runtime
        .submit(
            Input::TopUp {
                user_id,
                amount_micros: request.amount_micros,
            },
            move |core| core.balance_micros(user_id),
        )
        .await?
        .ok_or(ApiError::NotFound { what: "user" })?;
    tracing::info!(
        admin_id = admin.user_id,
        user_id = id,
        amount_micros = request.amount_micros,
        "balance credited"
    );
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(CreditView {
            user_id: id,
            booked_balance_micros: booked,
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    pub id: u64,
    /// `dedicated` or `cloud`.
    pub kind: String,
    pub name: String,
    pub is_system: bool,
    /// provisioning, ready, draining, deleting, lost
    pub state: String,
    pub capacity_mib: u32,
    pub reserve_mib: u32,
    pub allocated_mib: u32,
    pub n_servers: u32,
    pub created_at_ms: u64,
    /// Whether the node's container engine answered its last health probe (absent for
    /// a node without an engine configured).
    pub engine_ready: Option<bool>,
    /// Why the engine is not ready (the probe's error, naming node and cause).
    pub engine_reason: Option<String>,
}

/// The fleet's nodes as the scheduler sees them.
#[utoipa::path(
    get, path = "/v1/admin/nodes", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Nodes", body = [NodeView]),
        (status = 403, description = "Not an admin", body = ErrorBody),
    )
)]
async fn list_nodes(State(state): State<AppState>, _admin: Admin) -> Result<axum::Json<Vec<NodeView>>, ApiError> {
    let nodes = state
        .runtime
        .query(|core| {
            core.nodes()
                .filter_map(|node| {
                    let record = node_record(core, node.id)?;
                    Some(NodeView {
                        id: node.id.0,
                        kind: record.kind.to_string(),
                        name: record.name,
                        is_system: node.is_system,
                        state: record.state.state_text().to_string(),
                        capacity_mib: node.capacity_mib,
                        reserve_mib: node.reserve_mib,
                        allocated_mib: node.allocated_mib,
                        n_servers: node.n_servers,
                        created_at_ms: node.created_at.0,
                        engine_ready: None,
                        engine_reason: None,
                    })
                })
                .collect::<Vec<_>>()
        })
        .await?;
    let mut nodes = nodes;
    if let Some(fleet) = &state.fleet {
        let statuses = fleet.statuses();
        for node in &mut nodes {
            if let Some(status) = statuses.get(&node.name) {
                node.engine_ready = Some(status.ready);
                node.engine_reason = status.reason.clone();
            }
        }
    }
    Ok(axum::Json(nodes))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueEntryView {
    pub server_id: u64,
    pub owner_id: u64,
    pub ram_mib: u32,
    /// 1 is the head.
    pub position: u32,
    pub requested_at_ms: u64,
    pub estimated_wait_ms: Option<u64>,
}

/// The start queue, head first.
#[utoipa::path(
    get, path = "/v1/admin/queue", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Queued starts", body = [QueueEntryView]),
        (status = 403, description = "Not an admin", body = ErrorBody),
    )
)]
async fn list_queue(State(state): State<AppState>, _admin: Admin) -> Result<axum::Json<Vec<QueueEntryView>>, ApiError> {
    let mut entries = state
        .runtime
        .query(|core| {
            core.servers()
                .filter(|(_, server)| server.state == ServerState::Queued)
                .filter_map(|(server_id, server)| {
                    let status = core.queue_status(server_id)?;
                    Some(QueueEntryView {
                        server_id: server_id.0,
                        owner_id: server.owner.0,
                        ram_mib: server.ram_mib,
                        position: status.position + 1,
                        requested_at_ms: server.start.map_or(0, |start| start.requested_at.0),
                        estimated_wait_ms: status.estimated_wait_ms,
                    })
                })
                .collect::<Vec<_>>()
        })
        .await?;
    entries.sort_by_key(|entry| entry.position);
    Ok(axum::Json(entries))
}

/// The scaling configuration the scheduler runs with (policy, catalog, queue,
/// lifecycle, reserve, billing, tiers).
#[utoipa::path(
    get, path = "/v1/admin/scaling", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Active configuration", body = Object),
        (status = 403, description = "Not an admin", body = ErrorBody),
    )
)]
async fn scaling_config(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    Ok(axum::Json(state.scaling_config.as_ref().clone()))
}
