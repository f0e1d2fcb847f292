//! The REST API under /v1 (axum), with its OpenAPI document generated from the code
//! (utoipa) at /v1/openapi.json. `app(state)` builds the router without a socket,
//! so tests drive it with `oneshot`.

pub mod accounts;
pub mod admin;
pub mod billing;
pub mod extract;
pub mod health;
pub mod servers;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Response as OpenApiResponse, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::clock::Clock;
use crate::config::{AuthConfig, Config};
use crate::error::{ApiError, ErrorBody};
use crate::runtime::RuntimeHandle;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub runtime: RuntimeHandle,
    pub clock: Arc<dyn Clock>,
    pub auth: Arc<AuthConfig>,
    pub public_base_url: Arc<str>,
    pub tiers_mib: Arc<[u32]>,
    pub limits: Arc<RateLimits>,
    pub mail_wakeup: Arc<tokio::sync::Notify>,
    pub scaling_config: Arc<serde_json::Value>,
    pub principals: Arc<crate::auth::PrincipalCache>,
    /// Where players connect (server views show each server's address).
    pub router: Arc<payperplay_router::RouterConfig>,
    /// The nodes' engines (status in the admin nodes view), when containers are real.
    pub fleet: Option<Arc<crate::drivers::NodeFleet>>,
}

pub struct RateLimits {
    pub login: DefaultKeyedRateLimiter<IpAddr>,
    pub register: DefaultKeyedRateLimiter<IpAddr>,
}

impl RateLimits {
    pub fn new(auth: &AuthConfig) -> Self {
        let per_minute = |n: u32| Quota::per_minute(NonZeroU32::new(n).expect("validated >= 1"));
        RateLimits {
            login: RateLimiter::keyed(per_minute(auth.login_per_minute)),
            register: RateLimiter::keyed(per_minute(auth.register_per_minute)),
        }
    }
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
            limits: Arc::new(RateLimits::new(&config.auth)),
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
            }
            add("413", "Request body too large");
            add("429", "Rate limited");
            add("500", "Internal error (a bug; details are logged, not sent)");
            add("503", "Database or runtime temporarily unavailable");
        }
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
