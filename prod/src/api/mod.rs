//! The REST API under /v1 (axum), with its OpenAPI document generated from the code
//! (utoipa) at /v1/openapi.json. `app(state)` builds the router without a socket,
//! so tests drive it with `oneshot`.

pub mod accounts;
pub mod admin;
pub mod billing;
pub mod extract;
pub mod health;
pub mod internal;
pub mod oauth;
pub mod requests;
pub mod servers;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Response as OpenApiResponse, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::clock::Clock;
use crate::config::{AuthConfig, Config};
use crate::error::{ApiError, ErrorBody};
use crate::runtime::{RequestScope, RuntimeHandle};
use crate::store::{IdempotencyClaim, Store};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub runtime: RuntimeHandle,
    pub clock: Arc<dyn Clock>,
    pub auth: Arc<AuthConfig>,
    pub public_base_url: Arc<str>,
    pub tiers_mib: Arc<[u32]>,
    /// The accounts side's limits (per address, per account, per user; hashing cap).
    pub accounts: Arc<crate::auth::AccountGuard>,
    /// OAuth sign-in providers and the key box sealing their tokens.
    pub oauth: Arc<oauth::OAuthProviders>,
    pub mail_wakeup: Arc<tokio::sync::Notify>,
    pub scaling_config: Arc<serde_json::Value>,
    pub principals: Arc<crate::auth::PrincipalCache>,
    /// Where players connect (server views show each server's address).
    pub router: Arc<payperplay_router::RouterConfig>,
    /// The nodes' engines (status in the admin nodes view), when containers are real.
    pub fleet: Option<Arc<crate::drivers::NodeFleet>>,
}

impl AppState {
    /// Shows the nodes' engine status in the admin nodes view.
    pub fn with_fleet(mut self, fleet: Arc<crate::drivers::NodeFleet>) -> Self {
        self.fleet = Some(fleet);
        self
    }

    pub fn new(
        config: &Config,
        store: Store,
        runtime: RuntimeHandle,
        clock: Arc<dyn Clock>,
        mail_wakeup: Arc<tokio::sync::Notify>,
    ) -> Self {
        AppState {
            store,
            runtime,
            clock,
            auth: Arc::new(config.auth.clone()),
            public_base_url: config.http.public_base_url.clone().into(),
            tiers_mib: config.core.tiers_mib.clone().into(),
            accounts: Arc::new(crate::auth::AccountGuard::new(&config.auth)),
            oauth: Arc::new(oauth::OAuthProviders::new(config)),
            mail_wakeup,
            principals: Arc::new(crate::auth::PrincipalCache::default()),
            router: Arc::new(config.router.clone()),
            fleet: None,
            scaling_config: Arc::new(serde_json::json!({
                "policy": config.core.policy,
                "catalog": config.core.catalog,
                "queue": config.core.queue,
                "lifecycle": config.core.lifecycle,
                "reserve": config.core.reserve,
                "billing": config.core.billing,
                "tiers_mib": config.core.tiers_mib,
            })),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "PayPerPlay API",
        description = "Pay-per-play Minecraft hosting. Money is in integer micro-euros \
                       (1 EUR = 1000000), RAM in MiB, times in milliseconds since the Unix epoch (UTC).",
        version = "1"
    ),
    modifiers(&SecurityAddon),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Errors every operation may answer, documented on each (all JSON `ErrorBody`).
fn add_common_errors(openapi: &mut utoipa::openapi::OpenApi) {
    let error = |description: &str| -> RefOr<OpenApiResponse> {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build(),
        )
    };
    for path in openapi.paths.paths.values_mut() {
        let operations = [
            path.get.as_mut(),
            path.post.as_mut(),
            path.put.as_mut(),
            path.patch.as_mut(),
            path.delete.as_mut(),
        ];
        for operation in operations.into_iter().flatten() {
            let authenticated = operation.security.is_some();
            let responses = &mut operation.responses.responses;
            let mut add = |code: &str, description: &str| {
                responses.entry(code.to_string()).or_insert_with(|| error(description));
            };
            add("400", "Bad input: `error.field` names the offending field");
            if authenticated {
                add("401", "Missing, malformed, expired or revoked bearer token");
                add(
                    "403",
                    "The API token's scopes do not allow this, or the route needs a session",
                );
            }
            add("413", "Request body too large");
            add("429", "Rate limited");
            add("500", "Internal error (a bug; details are logged, not sent)");
            add(
                "503",
                "Database or runtime temporarily unavailable (`Retry-After` says when to retry); \
                 `outcome_unknown` when the request was taken up but its answer was lost: then \
                 `error.request_id` (and `Location`) names it for `GET /v1/requests/{id}`",
            );
        }
    }
    for (name, path) in openapi.paths.paths.iter_mut() {
        if IDEMPOTENCY_EXEMPT_PATHS.contains(&name.as_str()) {
            continue;
        }
        let Some(operation) = path.post.as_mut() else { continue };
        operation
            .responses
            .responses
            .entry("422".to_string())
            .or_insert_with(|| error("`Idempotency-Key` already used for another request (another path or body)"));
        operation
            .responses
            .responses
            .entry("409".to_string())
            .or_insert_with(|| {
                error("Conflict; or the first request with this `Idempotency-Key` is still being handled")
            });
        let header = utoipa::openapi::path::ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(utoipa::openapi::path::ParameterIn::Header)
            .required(utoipa::openapi::Required::False)
            .description(Some(
                "Makes the POST idempotent: the same key with the same body gets the first answer again \
                 (`Idempotent-Replayed: true`); with another body a 422. Up to 255 characters.",
            ))
            .schema(Some(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .min_length(Some(1))
                    .max_length(Some(IDEMPOTENCY_KEY_LEN_MAX)),
            ))
            .build();
        operation.parameters.get_or_insert_with(Vec::new).push(header);
    }
}

/// The whole application router, with the OpenAPI document.
pub fn app(state: AppState, body_limit_bytes: usize) -> Router {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(accounts::routes())
        .merge(servers::routes())
        .merge(billing::routes())
        .merge(admin::routes())
        .merge(health::routes())
        .merge(oauth::routes())
        .merge(requests::routes())
        .split_for_parts();
    let mut openapi = openapi;
    add_common_errors(&mut openapi);
    let openapi = Arc::new(openapi);
    router
        .route(
            "/v1/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move { Json(openapi.as_ref().clone()) }
            }),
        )
        .route("/metrics", get(health::metrics))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn(track_metrics))
        .layer(middleware::from_fn_with_state(
            RequestsState {
                store: state.store.clone(),
                clock: state.clock.clone(),
            },
            track_requests,
        ))
        .layer(middleware::from_fn_with_state(
            IdempotencyState {
                store: state.store.clone(),
                clock: state.clock.clone(),
                body_limit_bytes,
            },
            idempotent_posts,
        ))
        .layer(middleware::from_fn(bound_and_advise_retry))
        .layer(DefaultBodyLimit::max(body_limit_bytes))
        .with_state(state)
}

/// The generated OpenAPI document (for `payperplay openapi`).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let (_, mut openapi): (Router<AppState>, _) = OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
        .merge(accounts::routes())
        .merge(servers::routes())
        .merge(billing::routes())
        .merge(admin::routes())
        .merge(health::routes())
        .merge(oauth::routes())
        .merge(requests::routes())
        .split_for_parts();
    add_common_errors(&mut openapi);
    openapi
}

async fn fallback() -> ApiError {
    ApiError::NotFound { what: "route" }
}

async fn method_not_allowed() -> Response {
    let error = crate::error::ErrorBody {
        error: crate::error::ErrorDetail {
            code: "method_not_allowed".to_string(),
            message: "method not allowed on this route".to_string(),
            field: None,
        },
    };
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, Json(error)).into_response()
}

/// The header naming a POST's idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;
/// A first request still unanswered this long after it claimed its key was lost with
/// its process: a repeat is told the outcome is unknown.
const IDEMPOTENCY_IN_FLIGHT_MS_MAX: u64 = REQUEST_TIMEOUT_MS + 5_000;
/// Routes whose answers carry a secret (a session or API token): never stored, so an
/// `Idempotency-Key` is ignored there (a repeat logs in again or makes another token).
const IDEMPOTENCY_EXEMPT_PATHS: &[&str] = &["/v1/accounts/login", "/v1/accounts/tokens"];

#[derive(Clone)]
struct IdempotencyState {
    store: Store,
    clock: Arc<dyn Clock>,
    body_limit_bytes: usize,
}

/// `Idempotency-Key` on POST: the first answer to a request is stored in Postgres; the
/// same key with the same request (path and body) gets it again (with
/// `Idempotent-Replayed: true`), with another request a 422. A request that certainly
/// had no effect (a 503 other than `outcome_unknown`, a 429) lets its key go, so
/// repeating it handles it then.
async fn idempotent_posts(State(state): State<IdempotencyState>, request: Request, next: Next) -> Response {
    use sha2::Digest;
    if request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get(IDEMPOTENCY_KEY_HEADER) else {
        return next.run(request).await;
    };
    let path = request.uri().path().to_string();
    if IDEMPOTENCY_EXEMPT_PATHS.contains(&path.as_str()) {
        return next.run(request).await;
    }
    let key = match key.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= IDEMPOTENCY_KEY_LEN_MAX => key.to_string(),
        _ => {
            return ApiError::invalid_field(
                "Idempotency-Key",
                format!("must be 1 to {IDEMPOTENCY_KEY_LEN_MAX} visible ASCII characters"),
            )
            .into_response();
        }
    };
    let scope = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map_or("anonymous".to_string(), |value| {
            hex::encode(sha2::Sha256::digest(value.as_bytes()))
        });
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, state.body_limit_bytes).await else {
        return ApiError::PayloadTooLarge.into_response();
    };
    let request_sha256 = sha2::Sha256::digest(&bytes);
    let now = state.clock.now();
    let claim = state
        .store
        .claim_idempotency_key(&scope, &key, "POST", &path, &request_sha256, now)
        .await;
    match claim {
        Err(error) => return ApiError::from(error).into_response(),
        Ok(IdempotencyClaim::New) => {}
        Ok(IdempotencyClaim::Mismatch) => {
            return ApiError::IdempotencyKeyReused(
                "Idempotency-Key: already used for another request (another path or body)".to_string(),
            )
            .into_response();
        }
        Ok(IdempotencyClaim::Replay { status, body }) => {
            let status = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK);
            let mut response = (status, body).into_response();
            let headers = response.headers_mut();
            headers.insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            headers.insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
            return response;
        }
        Ok(IdempotencyClaim::InFlight { claimed_at_ms }) => {
            let age_ms = crate::clock::to_db(now).saturating_sub(claimed_at_ms);
            return if age_ms > IDEMPOTENCY_IN_FLIGHT_MS_MAX as i64 {
                ApiError::OutcomeUnknown(
                    "the first request with this Idempotency-Key was taken up but never answered: \
                     check the resource before retrying with a new key"
                        .to_string(),
                )
            } else {
                ApiError::IdempotencyKeyInFlight(
                    "the first request with this Idempotency-Key is still being handled: repeat it shortly".to_string(),
                )
            }
            .into_response();
        }
    }
    let response = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let status = parts.status;
    let outcome_unknown = serde_json::from_slice::<serde_json::Value>(&bytes)
        .is_ok_and(|body| body["error"]["code"] == "outcome_unknown");
    let no_effect = (status == axum::http::StatusCode::SERVICE_UNAVAILABLE && !outcome_unknown)
        || status == axum::http::StatusCode::TOO_MANY_REQUESTS;
    let stored = if no_effect {
        state.store.release_idempotency_key(&scope, &key).await
    } else {
        state
            .store
            .finish_idempotency_key(&scope, &key, status.as_u16(), &bytes, state.clock.now())
            .await
    };
    if let Err(error) = stored {
        tracing::error!(%error, "idempotency key answer not stored");
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

#[derive(Clone)]
struct RequestsState {
    store: Store,
    clock: Arc<dyn Clock>,
}

/// Runs every mutating request in a [`RequestScope`], so the input it submits to the
/// runtime carries the request's id and user (journaled with it, its outcome recorded).
/// An `outcome_unknown` answer to a request that submitted an input gets that id as
/// `error.request_id` and `Location: /v1/requests/{id}`, where its user asks later.
async fn track_requests(State(state): State<RequestsState>, request: Request, next: Next) -> Response {
    use axum::http::{Method, StatusCode, header};
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    let scope = RequestScope::new();
    let response = scope.clone().run(next.run(request)).await;
    if response.status() != StatusCode::SERVICE_UNAVAILABLE {
        return response;
    }
    let Some(tag) = scope.tag_if_submitted() else {
        return response;
    };
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let mut body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(body) if body["error"]["code"] == "outcome_unknown" => body,
        _ => return Response::from_parts(parts, axum::body::Body::from(bytes)),
    };
    if let Err(error) = state.store.note_unknown_request(tag, state.clock.now()).await {
        // Without the row the route answers 404, which is right unless the input was
        // journaled (then the journal append wrote the row).
        tracing::warn!(request = tag.id, %error, "outcome-unknown request not noted");
    }
    body["error"]["request_id"] = tag.id.into();
    if let Some(message) = body["error"]["message"].as_str() {
        body["error"]["message"] = format!(
            "{message} (GET /v1/requests/{} tells whether it was carried out)",
            tag.id
        )
        .into();
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Ok(location) = axum::http::HeaderValue::from_str(&format!("/v1/requests/{}", tag.id)) {
        parts.headers.insert(header::LOCATION, location);
    }
    Response::from_parts(
        parts,
        axum::body::Body::from(serde_json::to_vec(&body).unwrap_or_default()),
    )
}

/// The longest any request may take: longer than the runtime's own bounds (a
/// request waits at most 2 s for room in its channel and 10 s for its answer), so it
/// only cuts what is stuck elsewhere (a database that does not answer).
pub const REQUEST_TIMEOUT_MS: u64 = 15_000;

/// Bounds every request by [`REQUEST_TIMEOUT_MS`] (then a 503 naming the timeout)
/// and adds `Retry-After` to every 503 (recovering, standby, busy, database down).
async fn bound_and_advise_retry(request: Request, next: Next) -> Response {
    let mut response =
        match tokio::time::timeout(std::time::Duration::from_millis(REQUEST_TIMEOUT_MS), next.run(request)).await {
            Ok(response) => response,
            Err(_) => {
                metrics::counter!("payperplay_http_request_timeouts_total").increment(1);
                ApiError::OutcomeUnknown(format!(
                    "the request timed out after {REQUEST_TIMEOUT_MS} ms: check the resource before retrying"
                ))
                .into_response()
            }
        };
    if response.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE
        && !response.headers().contains_key(axum::http::header::RETRY_AFTER)
    {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(health::RETRY_AFTER_S),
        );
    }
    response
}

async fn track_metrics(request: Request, next: Next) -> Response {
    let started = crate::clock::Stopwatch::start();
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_string();
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("payperplay_http_requests_total", "method" => method.clone(), "path" => path.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("payperplay_http_request_duration_seconds", "method" => method, "path" => path)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The client address for rate limiting (loopback when unknown, e.g. in tests that
/// call the router without a socket).
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([127, 0, 0, 1]), |ConnectInfo(address)| address.ip());
        Ok(ClientIp(ip))
    }
}

/// For handlers that need the state and nothing else typed.
pub type AppStateRef = State<AppState>;

/// The security requirement name used by authenticated operations.
pub const BEARER: &str = "bearer";
