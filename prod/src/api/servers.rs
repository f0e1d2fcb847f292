//! Servers: create, list, get, update, delete, start, stop, status. Every route is
//! scoped to the signed-in owner: another user's server answers 404, like a server
//! that does not exist.

use axum::extract::State;
use axum::http::StatusCode;
use payperplay_core::{Core, Input, RejectReason, Rejection, ServerId, ServerState, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{Json, Path};
use crate::auth::Authenticated;
use crate::error::{ApiError, ErrorBody};
use crate::runtime::RuntimeError;
use crate::store::{HostnameChange, LastStartFailure, Principal, ServerRow};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_server, list_servers))
        .routes(routes!(get_server, update_server, delete_server))
        .routes(routes!(start_server))
        .routes(routes!(stop_server))
        .routes(routes!(server_status))
}

const NAME_LEN_MAX: usize = 64;

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StateView {
    Stopped,
    Queued,
    Starting,
    Running,
    Stopping,
    Sleeping,
    Archived,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueView {
    /// 1 is the head of the queue.
    pub position: u32,
    pub queue_len: u32,
    /// Absent when no capacity is on its way and none can be ordered.
    pub estimated_wait_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusView {
    pub state: StateView,
    /// Why the server is stopping, while it is.
    pub stop_reason: Option<String>,
    pub players: u32,
    /// The node the server is placed on, while it holds RAM.
    pub node_id: Option<u64>,
    /// Where the start request waits, while queued.
    pub queue: Option<QueueView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServerView {
    pub id: i64,
    pub name: String,
    pub ram_mib: i32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// What players type in Minecraft to join (the player router's hostname for it).
    pub address: String,
    /// The server's custom hostname (players may type it instead of `address`), if set.
    pub hostname: Option<String>,
    pub status: StatusView,
    /// Why the server's last start failed (kind, node, message, when), until a start
    /// succeeds. Shown by GET /v1/servers/{id} and the start and stop answers, not in lists.
    pub last_start_failure: Option<LastStartFailure>,
}

fn status_of(core: &Core, server_id: ServerId) -> Option<StatusView> {
    let server = core.server(server_id)?;
    let (state, stop_reason) = match server.state {
        ServerState::Stopped => (StateView::Stopped, None),
        ServerState::Queued => (StateView::Queued, None),
        ServerState::Starting => (StateView::Starting, None),
        ServerState::Running => (StateView::Running, None),
        ServerState::Stopping { reason } => (
            StateView::Stopping,
            serde_json::to_value(reason)
                .ok()
                .and_then(|value| value.as_str().map(str::to_string)),
        ),
        ServerState::Sleeping => (StateView::Sleeping, None),
        ServerState::Archived => (StateView::Archived, None),
    };
    let queue = core.queue_status(server_id).map(|status| QueueView {
        position: status.position + 1,
        queue_len: status.queue_len,
        estimated_wait_ms: status.estimated_wait_ms,
    });
    Some(StatusView {
        state,
        stop_reason,
        players: server.players,
        node_id: server.node.map(|node| node.0),
        queue,
    })
}

async fn status(state: &AppState, server_id: i64) -> Result<StatusView, ApiError> {
    let status = state
        .runtime
        .query(move |core| status_of(core, ServerId(server_id as u64)))
        .await?;
    known_status(status)
}

fn known_status(status: Option<StatusView>) -> Result<StatusView, ApiError> {
    status.ok_or_else(|| ApiError::Unavailable("server not yet known to the runtime".to_string()))
}

fn server_view(router: &payperplay_router::RouterConfig, row: ServerRow, status: StatusView) -> ServerView {
    ServerView {
        id: row.id,
        address: crate::router::player_address(router, row.id, &row.name),
        name: row.name,
        hostname: row.hostname,
        ram_mib: row.ram_mib,
        created_at_ms: row.created_at_ms,
        updated_at_ms: row.updated_at_ms,
        status,
        last_start_failure: None,
    }
}

/// `view` with the server's last failed start from the store.
async fn with_start_failure(state: &AppState, mut view: ServerView) -> Result<ServerView, ApiError> {
    view.last_start_failure = state.store.start_failure(view.id).await?;
    Ok(view)
}

/// The server's view with its status asked of the core.
async fn view(state: &AppState, row: ServerRow) -> Result<ServerView, ApiError> {
    let status = status(state, row.id).await?;
    with_start_failure(state, server_view(&state.router, row, status)).await
}

/// Submits `input` about the server in `row`; answers with the server's view as the
/// core has it right after handling the input (one round trip to the runtime).
async fn submit_for_view(state: &AppState, input: Input, row: ServerRow) -> Result<ServerView, ApiError> {
    let server_id = ServerId(row.id as u64);
    let status = state
        .runtime
        .submit(input, move |core| status_of(core, server_id))
        .await?;
    with_start_failure(state, server_view(&state.router, row, known_status(status)?)).await
}

fn check_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    let valid = !name.is_empty()
        && name.chars().count() <= NAME_LEN_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'));
    if !valid {
        return Err(ApiError::invalid_field(
            "name",
            format!("must be 1 to {NAME_LEN_MAX} letters, digits, spaces, '-', '_' or '.'"),
        ));
    }
    Ok(name.to_string())
}

/// A custom hostname as stored: a DNS name of two labels or more outside the
/// platform's domain, lowercase, without a trailing dot.
fn check_hostname(state: &AppState, hostname: &str) -> Result<String, ApiError> {
    crate::router::check_custom_hostname(hostname, &state.router.domain)
        .map_err(|message| ApiError::invalid_field("hostname", message))
}

fn check_tier(state: &AppState, ram_mib: u32) -> Result<(), ApiError> {
    if !state.tiers_mib.contains(&ram_mib) {
        return Err(ApiError::invalid_field(
            "ram_mib",
            format!("must be one of the tiers {:?}", state.tiers_mib),
        ));
    }
    Ok(())
}

fn require_verified(principal: &Principal) -> Result<(), ApiError> {
    if !principal.email_verified {
        return Err(ApiError::Forbidden {
            code: "email_not_verified",
            message: "verify your email address first".to_string(),
        });
    }
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateServerRequest {
    /// 1 to 64 letters, digits, spaces, '-', '_' or '.'; unique per owner.
    #[schema(min_length = 1, max_length = 64, example = "survival")]
    pub name: String,
    /// One of the RAM tiers (2048, 4096, 8192, 16384, 32768 by default).
    #[schema(example = 4096)]
    pub ram_mib: u32,
    /// A custom hostname players may type (a DNS name of two labels or more, outside
    /// the platform's domain, unique across servers; case and a trailing dot ignored).
    #[schema(example = "mc.example.org")]
    pub hostname: Option<String>,
}

/// Create a server (stopped).
#[utoipa::path(
    post, path = "/v1/servers", tag = "servers",
    security(("bearer" = [])),
    request_body = CreateServerRequest,
    responses(
        (status = 201, description = "Created", body = ServerView),
        (status = 403, description = "Email not verified", body = ErrorBody),
        (status = 409, description = "Name or hostname taken, or refused by the scheduler", body = ErrorBody),
    )
)]
async fn create_server(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Json(request): Json<CreateServerRequest>,
) -> Result<(StatusCode, axum::Json<ServerView>), ApiError> {
    require_verified(&principal)?;
    let name = check_name(&request.name)?;
    check_tier(&state, request.ram_mib)?;
    crate::auth::check_server_quota(&state, principal.user_id).await?;
    let hostname = request
        .hostname
        .as_deref()
        .map(|hostname| check_hostname(&state, hostname))
        .transpose()?;
    let row = state
        .store
        .insert_server(
            principal.user_id,
            &name,
            request.ram_mib,
            hostname.as_deref(),
            state.clock.now(),
        )
        .await?;
    let server_id = ServerId(row.id as u64);
    let submitted = state
        .runtime
        .submit(
            Input::CreateServer {
                server_id,
                owner: UserId(principal.user_id as u64),
                ram_mib: request.ram_mib,
            },
            move |core| status_of(core, server_id),
        )
        .await;
    let status = match submitted {
        Ok(status) => known_status(status)?,
        Err(error @ (RuntimeError::Rejected(_) | RuntimeError::Busy | RuntimeError::Store(_))) => {
            // The core refused it or never saw it (not journaled): the row must not stay.
            state.store.remove_uncreated_server(row.id).await?;
            return Err(error.into());
        }
        // Journaled or not, reconciliation at the next runtime start creates it.
        Err(error) => return Err(error.into()),
    };
    Ok((StatusCode::CREATED, axum::Json(server_view(&state.router, row, status))))
}

/// List your servers (deleted ones never appear).
#[utoipa::path(
    get, path = "/v1/servers", tag = "servers",
    security(("bearer" = [])),
    responses((status = 200, description = "Your servers", body = [ServerView]))
)]
async fn list_servers(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<axum::Json<Vec<ServerView>>, ApiError> {
    let rows = state.store.servers_of(principal.user_id).await?;
    let ids: Vec<ServerId> = rows.iter().map(|row| ServerId(row.id as u64)).collect();
    let statuses = state
        .runtime
        .query(move |core| ids.into_iter().map(|id| status_of(core, id)).collect::<Vec<_>>())
        .await?;
    let views = rows
        .into_iter()
        .zip(statuses)
        .filter_map(|(row, status)| Some(server_view(&state.router, row, status?)))
        .collect();
    Ok(axum::Json(views))
}

/// One of your servers.
#[utoipa::path(
    get, path = "/v1/servers/{id}", tag = "servers",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Server id")),
    responses(
        (status = 200, description = "The server", body = ServerView),
        (status = 404, description = "No such server of yours", body = ErrorBody),
    )
)]
async fn get_server(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<i64>,
) -> Result<axum::Json<ServerView>, ApiError> {
    let row = state.store.server(principal.user_id, id).await?;
    Ok(axum::Json(view(&state, row).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateServerRequest {
    #[schema(min_length = 1, max_length = 64)]
    pub name: Option<String>,
    /// A new RAM tier; only while the server holds no RAM (stopped, sleeping, archived).
    pub ram_mib: Option<u32>,
    /// A new custom hostname (see `CreateServerRequest.hostname`); `""` removes it.
    #[schema(example = "mc.example.org")]
    pub hostname: Option<String>,
}

/// Rename a server, set or clear its custom hostname, or change its tier while it is
/// stopped.
#[utoipa::path(
    patch, path = "/v1/servers/{id}", tag = "servers",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Server id")),
    request_body = UpdateServerRequest,
    responses(
        (status = 200, description = "Updated", body = ServerView),
        (status = 404, description = "No such server of yours", body = ErrorBody),
        (status = 409, description = "Name or hostname taken, or tier change while running", body = ErrorBody),
    )
)]
async fn update_server(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<i64>,
    Json(request): Json<UpdateServerRequest>,
) -> Result<axum::Json<ServerView>, ApiError> {
    let name = request.name.as_deref().map(check_name).transpose()?;
    let hostname = match request.hostname.as_deref().map(str::trim) {
        None => None,
        Some("") => Some(None),
        Some(hostname) => Some(Some(check_hostname(&state, hostname)?)),
    };
    let hostname_change = match &hostname {
        None => HostnameChange::Keep,
        Some(None) => HostnameChange::Clear,
        Some(Some(hostname)) => HostnameChange::Set(hostname),
    };
    if let Some(ram_mib) = request.ram_mib {
        check_tier(&state, ram_mib)?;
    }
    // Ownership first: another user's server is a 404 before anything changes.
    let row = state.store.server(principal.user_id, id).await?;
    let server_id = ServerId(id as u64);
    let status_after_tier_change = match request.ram_mib {
        Some(ram_mib) if ram_mib as i32 != row.ram_mib => Some(
            state
                .runtime
                .submit(Input::UpdateServerTier { server_id, ram_mib }, move |core| {
                    status_of(core, server_id)
                })
                .await?,
        ),
        _ => None,
    };
    let row = state
        .store
        .update_server(
            principal.user_id,
            id,
            name.as_deref(),
            // The tier is the core's: the runtime wrote an accepted change already.
            None,
            hostname_change,
            state.clock.now(),
        )
        .await?;
    match status_after_tier_change {
        Some(status) => Ok(axum::Json(server_view(&state.router, row, known_status(status)?))),
        None => Ok(axum::Json(view(&state, row).await?)),
    }
}

/// Delete a server: it is stopped if needed, its world deleted, and it disappears
/// from every listing at once.
#[utoipa::path(
    delete, path = "/v1/servers/{id}", tag = "servers",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Server id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such server of yours", body = ErrorBody),
    )
)]
async fn delete_server(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    // Marked deleted first: if the runtime is down now, reconciliation at its next
    // start deletes it in the core.
    state
        .store
        .mark_server_deleted(principal.user_id, id, state.clock.now())
        .await?;
    match state
        .runtime
        .submit(
            Input::DeleteServer {
                server_id: ServerId(id as u64),
            },
            |_| (),
        )
        .await
    {
        Ok(()) => {}
        // The core never had it (its create was not journaled) or deleted it already:
        // the row is marked deleted, which is all there is to do.
        Err(RuntimeError::Rejected(Rejection {
            reason: RejectReason::UnknownServer | RejectReason::ServerDeleted,
        })) => {}
        Err(error) => tracing::warn!(server_id = id, %error, "delete left for reconciliation"),
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Start a server. It starts at once when capacity is free, else it is queued
/// (see `status.queue` for the position and estimated wait).
#[utoipa::path(
    post, path = "/v1/servers/{id}/start", tag = "servers",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Server id")),
    responses(
        (status = 202, description = "Start accepted (starting or queued)", body = ServerView),
        (status = 403, description = "Email not verified", body = ErrorBody),
        (status = 404, description = "No such server of yours", body = ErrorBody),
        (status = 409, description = "Refused: insufficient_balance, queue_full, ...", body = ErrorBody),
    )
)]
async fn start_server(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<i64>,
) -> Result<(StatusCode, axum::Json<ServerView>), ApiError> {
    let row = state.store.server(principal.user_id, id).await?;
    require_verified(&principal)?;
    let input = Input::StartServer {
        server_id: ServerId(id as u64),
    };
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(submit_for_view(&state, input, row).await?),
    ))
}

/// Stop a server (a queued start is cancelled).
#[utoipa::path(
    post, path = "/v1/servers/{id}/stop", tag = "servers",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Server id")),
    responses(
        (status = 202, description = "Stop accepted", body = ServerView),
        (status = 404, description = "No such server of yours", body = ErrorBody),
        (status = 409, description = "Refused by the scheduler", body = ErrorBody),
    )
)]
async fn stop_server(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<i64>,
) -> Result<(StatusCode, axum::Json<ServerView>), ApiError> {
    let row = state.store.server(principal.user_id, id).await?;
    let input = Input::StopServer {
        server_id: ServerId(id as u64),
    };
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(submit_for_view(&state, input, row).await?),
    ))
}

/// The state of a server, with queue position and estimated wait while queued.
#[utoipa::path(
    get, path = "/v1/servers/{id}/status", tag = "servers",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Server id")),
    responses(
        (status = 200, description = "Status", body = StatusView),
        (status = 404, description = "No such server of yours", body = ErrorBody),
    )
)]
async fn server_status(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<i64>,
) -> Result<axum::Json<StatusView>, ApiError> {
    state.store.server(principal.user_id, id).await?;
    Ok(axum::Json(status(&state, id).await?))
}
