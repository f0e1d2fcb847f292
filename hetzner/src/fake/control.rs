//! `/__fake/...`: no token, no rate limit; tests steer the fake at run time (sold-out
//! windows, injected failures, the rate limit) and read what it did (VMs, stats).

#[allow(clippy::wildcard_imports)]
use super::*;

// ------------------------------------------------------------------- control

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SoldOutRequest {
    windows: Vec<SoldOutWindow>,
}

/// Replaces the sold-out windows (times in seconds since the fake started; see
/// `GET /__fake/stats` for `now_s`).
pub(super) async fn set_sold_out(
    State(state): State<FakeState>,
    axum::Json(request): axum::Json<SoldOutRequest>,
) -> Response {
    state.lock().config.sold_out = request.windows;
    StatusCode::NO_CONTENT.into_response()
}

pub(super) async fn get_sold_out(State(state): State<FakeState>) -> Response {
    let inner = state.lock();
    axum::Json(json!({ "windows": inner.config.sold_out, "now_s": inner.now_ms() / 1_000 })).into_response()
}

pub(super) async fn add_failure(
    State(state): State<FakeState>,
    axum::Json(failure): axum::Json<InjectedFailure>,
) -> Response {
    if !failure.malformed && !(400..=599).contains(&failure.status) {
        return (StatusCode::BAD_REQUEST, "status must be 400..=599 unless malformed").into_response();
    }
    state.lock().failures.push(failure);
    StatusCode::NO_CONTENT.into_response()
}

pub(super) async fn clear_failures(State(state): State<FakeState>) -> Response {
    state.lock().failures.clear();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RateLimitRequest {
    /// Sets the bucket's current tokens (0 makes the next request a 429).
    #[serde(default)]
    remaining: Option<f64>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    refill_per_s: Option<f64>,
}

pub(super) async fn set_rate_limit(
    State(state): State<FakeState>,
    axum::Json(request): axum::Json<RateLimitRequest>,
) -> Response {
    let mut inner = state.lock();
    inner.refill();
    if let Some(limit) = request.limit {
        inner.config.rate_limit.limit = limit.max(1);
    }
    if let Some(refill) = request.refill_per_s {
        inner.config.rate_limit.refill_per_s = refill.max(0.0);
    }
    if let Some(remaining) = request.remaining {
        inner.tokens = remaining.clamp(0.0, inner.config.rate_limit.limit as f64);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Every fake VM with where it "is": IP, SSH port, game port range, user data.
pub(super) async fn list_vms(State(state): State<FakeState>) -> Response {
    let inner = state.lock();
    let vms: Vec<Value> = inner
        .servers
        .values()
        .map(|server| {
            json!({
                "id": server.id,
                "name": server.name,
                "ip": server.endpoint.ip,
                "ssh_port": server.endpoint.ssh_port,
                "game_port_first": server.endpoint.game_port_first,
                "game_port_last": server.endpoint.game_port_last,
                "labels": server.labels,
                "ssh_keys": server.ssh_keys,
                "user_data": server.user_data,
            })
        })
        .collect();
    axum::Json(json!({ "vms": vms })).into_response()
}

pub(super) async fn get_stats(State(state): State<FakeState>) -> Response {
    let mut inner = state.lock();
    inner.refill();
    let tokens = inner.tokens;
    let now_s = inner.now_ms() / 1_000;
    let mut body = serde_json::to_value(&inner.stats).unwrap_or(Value::Null);
    body["tokens"] = json!(tokens);
    body["now_s"] = json!(now_s);
    body["servers"] = json!(inner.servers.len());
    axum::Json(body).into_response()
}
