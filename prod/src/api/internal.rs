//! Internal routes for the player router running as its own process (`payperplay
//! router`, [`crate::router::RemoteBackend`]): the router's [`Backend`] calls, one
//! route each, answered by `serve`'s own [`PlatformBackend`].
//!
//! - `POST /internal/router/resolve` `{"host": {"name": "alpha-42"}}` or
//!   `{"host": {"custom": "mc.example.org"}}` → `{"route": Route | null}`
//! - `POST /internal/router/wake` `{"server_id": 42}` → `{"outcome": WakeOutcome}`
//! - `POST /internal/router/players` `{"server_id": 42, "player": "Alex", "event":
//!   "joined" | "left"}` → 204
//!
//! Every request carries `Authorization: Bearer <router token>` (`router_link.token`,
//! `PAYPERPLAY_ROUTER_TOKEN`), compared in constant time; anything else is a 401. The
//! routes exist only when a token is configured, and they are not in the public
//! OpenAPI document (this is not an API for users).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use payperplay_router::{Backend, RequestedHost, Route, WakeOutcome};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::extract::Json;
use crate::error::ApiError;
use crate::router::PlatformBackend;

pub const RESOLVE_PATH: &str = "/internal/router/resolve";
pub const WAKE_PATH: &str = "/internal/router/wake";
pub const PLAYERS_PATH: &str = "/internal/router/players";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    pub host: RequestedHost,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ResolveResponse {
    pub route: Option<Route>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WakeRequest {
    pub server_id: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WakeResponse {
    pub outcome: WakeOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlayerEvent {
    Joined,
    Left,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlayersRequest {
    pub server_id: u64,
    pub player: String,
    pub event: PlayerEvent,
}

#[derive(Clone)]
struct InternalState {
    backend: Arc<PlatformBackend>,
    token: Arc<SecretString>,
}

/// The internal routes, to merge into `serve`'s application router.
pub fn routes(backend: Arc<PlatformBackend>, token: SecretString) -> Router {
    let state = InternalState {
        backend,
        token: Arc::new(token),
    };
    Router::new()
        .route(RESOLVE_PATH, post(resolve))
        .route(WAKE_PATH, post(wake))
        .route(PLAYERS_PATH, post(players))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_router_token))
        .with_state(state)
}

/// Whether `presented` is the token, in time independent of where they differ.
pub fn token_matches(presented: &[u8], token: &SecretString) -> bool {
    presented.ct_eq(token.expose_secret().as_bytes()).into()
}

async fn require_router_token(State(state): State<InternalState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        Some(presented) if token_matches(presented, &state.token) => next.run(request).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

fn unavailable(error: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(error.to_string())
}

async fn resolve(
    State(state): State<InternalState>,
    Json(request): Json<ResolveRequest>,
) -> Result<axum::Json<ResolveResponse>, ApiError> {
    let route = state.backend.resolve(&request.host).await.map_err(unavailable)?;
    Ok(axum::Json(ResolveResponse { route }))
}

async fn wake(
    State(state): State<InternalState>,
    Json(request): Json<WakeRequest>,
) -> Result<axum::Json<WakeResponse>, ApiError> {
    let outcome = state.backend.wake(request.server_id).await.map_err(unavailable)?;
    Ok(axum::Json(WakeResponse { outcome }))
}

async fn players(State(state): State<InternalState>, Json(request): Json<PlayersRequest>) -> StatusCode {
    match request.event {
        PlayerEvent::Joined => state.backend.player_joined(request.server_id, &request.player).await,
        PlayerEvent::Left => state.backend.player_left(request.server_id, &request.player).await,
    }
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let token = SecretString::from("s3cret-token");
        assert!(token_matches(b"s3cret-token", &token));
        for wrong in [&b""[..], b"s3cret-toke", b"s3cret-token2", b"S3cret-token"] {
            assert!(!token_matches(wrong, &token), "{wrong:?}");
        }
    }

    #[test]
    fn the_wire_format_is_snake_case_json() {
        let request: ResolveRequest = serde_json::from_str(r#"{"host": {"custom": "mc.example.org"}}"#).unwrap();
        assert_eq!(request.host, RequestedHost::Custom("mc.example.org".into()));
        let outcome = serde_json::to_value(WakeResponse {
            outcome: WakeOutcome::Queued { position: 2, eta_s: 30 },
        })
        .unwrap();
        assert_eq!(
            outcome,
            serde_json::json!({"outcome": {"queued": {"position": 2, "eta_s": 30}}})
        );
        let route = Route {
            server_id: 7,
            state: payperplay_router::ServerState::Running {
                address: "127.0.0.1:25566".parse().unwrap(),
            },
            players_max: 20,
            favicon: None,
            balance_allows_start: true,
            proxy_protocol: None,
        };
        let json = serde_json::to_value(&route).unwrap();
        assert_eq!(
            json["state"],
            serde_json::json!({"state": "running", "address": "127.0.0.1:25566"})
        );
        assert_eq!(serde_json::from_value::<Route>(json).unwrap(), route);
    }
}
