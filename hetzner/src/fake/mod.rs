//! A fake Hetzner Cloud API: the paths and JSON shapes of the official API description
//! for what the platform uses (servers, actions, server types, locations, SSH keys),
//! with actions that finish after a delay, pagination, label selectors, the documented
//! error codes, Bearer tokens, the rate limit and its headers, sold-out windows and
//! prices. `/__fake/...` (no token, no rate limit) lets tests steer it at run time.
//!
//! `app(state)` is the router (tests may call it in process); the binary
//! `payperplay-fake-hetzner` serves it.
//!
//! By concern: this file holds the state (VMs, actions, keys, the rate-limit bucket)
//! and the router with its token and rate-limit middleware; `routes` the Hetzner paths,
//! `selectors` list queries, label selectors and pagination, and the validation of
//! request bodies; `control` the `/__fake/` routes.

pub mod config;
mod control;
pub mod labels;
mod routes;
mod selectors;
mod vm_sshd;

use control::*;
use routes::*;
use selectors::*;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::clock::{Stopwatch, unix_now_ms};
pub use config::{EndpointConfig, FakeConfig, SoldOutWindow, VmSshdConfig};
use labels::Selector;

/// Label keys of the fake's per-VM hints.
pub const HINT_LABEL_SSH_PORT: &str = "fake-hetzner/ssh-port";
pub const HINT_LABEL_GAME_PORTS: &str = "fake-hetzner/game-ports";
/// Hetzner's default and largest page sizes.
const PER_PAGE_DEFAULT: u64 = 25;
const PER_PAGE_MAX: u64 = 50;
const USER_DATA_BYTES_MAX: usize = 32 * 1024;

/// The shared state behind the router.
#[derive(Clone)]
pub struct FakeState {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    config: FakeConfig,
    clock: Stopwatch,
    started_unix_ms: u64,
    tokens: f64,
    tokens_at_ms: u64,
    next_id: u64,
    vms_created: u64,
    servers: BTreeMap<u64, FakeServer>,
    actions: BTreeMap<u64, FakeAction>,
    ssh_keys: BTreeMap<u64, FakeSshKey>,
    failures: Vec<InjectedFailure>,
    stats: Stats,
}

#[derive(Debug, Clone)]
struct FakeServer {
    id: u64,
    name: String,
    server_type: usize,
    location: usize,
    labels: BTreeMap<String, String>,
    created_unix_ms: u64,
    create_action: u64,
    /// `start_after_create` (default true): running after the actions, else off.
    start_after_create: bool,
    endpoint: EndpointConfig,
    user_data: String,
    ssh_keys: Vec<u64>,
    /// The VM's own sshd (with the host key of its user data), ended with the VM.
    _sshd: Option<Arc<vm_sshd::VmSshd>>,
}

#[derive(Debug, Clone)]
struct FakeAction {
    id: u64,
    command: &'static str,
    started_ms: u64,
    delay_ms: u64,
    resources: Vec<(u64, &'static str)>,
}

#[derive(Debug, Clone)]
struct FakeSshKey {
    id: u64,
    name: String,
    public_key: String,
    labels: BTreeMap<String, String>,
    created_unix_ms: u64,
}

/// A failure a test asked for: the next `times` calls of `operation` (or of every
/// operation, `"*"`) answer it instead of doing their work.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct InjectedFailure {
    pub operation: String,
    #[serde(default = "one")]
    pub times: u32,
    /// An HTTP status with Hetzner's error JSON; or, with `malformed`, a 200 whose body
    /// is not the promised JSON.
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub malformed: bool,
    /// With `malformed`: the 200 answer's body (default: truncated JSON).
    #[serde(default)]
    pub body: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub requests: u64,
    pub rate_limited: u64,
    pub unauthorized: u64,
    pub servers_created: u64,
    pub servers_deleted: u64,
    pub create_requests: u64,
}

/// An API error in Hetzner's shape.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Value,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    fn invalid_field(field: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_input",
            details: json!({ "fields": [{ "name": field, "messages": [message.clone()] }] }),
            message: format!("invalid input in field '{field}': {message}"),
        }
    }

    fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.status, self.code, &self.message, self.details)
    }
}

fn error_response(status: StatusCode, code: &str, message: &str, details: Value) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "code": code, "message": message, "details": details } })),
    )
        .into_response()
}

impl FakeState {
    pub fn new(config: FakeConfig) -> FakeState {
        let tokens = config.rate_limit.limit as f64;
        FakeState {
            inner: Arc::new(Mutex::new(Inner {
                config,
                clock: Stopwatch::start(),
                started_unix_ms: unix_now_ms(),
                tokens,
                tokens_at_ms: 0,
                next_id: 1,
                vms_created: 0,
                servers: BTreeMap::new(),
                actions: BTreeMap::new(),
                ssh_keys: BTreeMap::new(),
                failures: Vec::new(),
                stats: Stats::default(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("fake state lock")
    }
}

impl Inner {
    fn now_ms(&self) -> u64 {
        self.clock.elapsed_ms()
    }

    fn unix_ms(&self, clock_ms: u64) -> u64 {
        self.started_unix_ms + clock_ms
    }

    fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn refill(&mut self) {
        let now = self.now_ms();
        let elapsed_s = now.saturating_sub(self.tokens_at_ms) as f64 / 1_000.0;
        let limit = self.config.rate_limit.limit as f64;
        self.tokens = (self.tokens + elapsed_s * self.config.rate_limit.refill_per_s).min(limit);
        self.tokens_at_ms = now;
    }

    /// `RateLimit-Limit`, `-Remaining`, `-Reset` as Hetzner sends them.
    fn rate_limit_headers(&self) -> [(&'static str, String); 3] {
        let limit = self.config.rate_limit.limit;
        let missing = limit as f64 - self.tokens;
        let refill = self.config.rate_limit.refill_per_s;
        let full_in_ms = if missing <= 0.0 {
            0
        } else if refill > 0.0 {
            (missing / refill * 1_000.0).ceil() as u64
        } else {
            365 * 24 * 3_600 * 1_000
        };
        let reset_s = (self.unix_ms(self.now_ms()) + full_in_ms).div_ceil(1_000);
        [
            ("ratelimit-limit", limit.to_string()),
            ("ratelimit-remaining", (self.tokens.floor() as u64).to_string()),
            ("ratelimit-reset", reset_s.to_string()),
        ]
    }

    fn take_failure(&mut self, operation: &str) -> Option<InjectedFailure> {
        let index = self
            .failures
            .iter()
            .position(|f| f.times > 0 && (f.operation == operation || f.operation == "*"))?;
        let failure = &mut self.failures[index];
        failure.times -= 1;
        let taken = failure.clone();
        if failure.times == 0 {
            self.failures.remove(index);
        }
        Some(taken)
    }

    fn action_json(&self, action: &FakeAction) -> Value {
        let now = self.now_ms();
        let elapsed = now.saturating_sub(action.started_ms);
        let done = elapsed >= action.delay_ms;
        let progress = if done {
            100
        } else {
            (elapsed * 100 / action.delay_ms.max(1)).min(99)
        };
        json!({
            "id": action.id,
            "command": action.command,
            "status": if done { "success" } else { "running" },
            "progress": progress,
            "started": rfc3339(self.unix_ms(action.started_ms)),
            "finished": if done { Value::String(rfc3339(self.unix_ms(action.started_ms + action.delay_ms))) } else { Value::Null },
            "resources": action.resources.iter().map(|(id, kind)| json!({ "id": id, "type": kind })).collect::<Vec<_>>(),
            "error": Value::Null,
        })
    }

    fn action_done(&self, id: u64) -> bool {
        self.actions
            .get(&id)
            .is_none_or(|action| self.now_ms().saturating_sub(action.started_ms) >= action.delay_ms)
    }

    fn new_action(&mut self, command: &'static str, resources: Vec<(u64, &'static str)>) -> FakeAction {
        let id = self.allocate_id();
        let action = FakeAction {
            id,
            command,
            started_ms: self.now_ms(),
            delay_ms: self.config.action_delay_ms,
            resources,
        };
        self.actions.insert(id, action.clone());
        action
    }

    fn location_json(&self, index: usize) -> Value {
        let location = &self.config.locations[index];
        json!({
            "id": index as u64 + 1,
            "name": location.name,
            "description": location.description,
            "country": location.country,
            "city": location.city,
            "latitude": location.latitude,
            "longitude": location.longitude,
            "network_zone": location.network_zone,
        })
    }

    fn sold_out(&self, server_type: &str, location: &str) -> bool {
        let now_s = self.now_ms() / 1_000;
        self.config
            .sold_out
            .iter()
            .any(|window| window.covers(server_type, location, now_s))
    }

    fn server_type_json(&self, index: usize) -> Value {
        let server_type = &self.config.server_types[index];
        let locations: Vec<Value> = server_type
            .prices
            .iter()
            .filter_map(|price| {
                let location_index = self.config.locations.iter().position(|l| l.name == price.location)?;
                Some(json!({
                    "id": location_index as u64 + 1,
                    "name": price.location,
                    "deprecation": Value::Null,
                    "recommended": true,
                    "available": !self.sold_out(&server_type.name, &price.location),
                }))
            })
            .collect();
        let prices: Vec<Value> = server_type
            .prices
            .iter()
            .map(|price| {
                json!({
                    "location": price.location,
                    "price_hourly": { "net": price.hourly_net, "gross": gross(&price.hourly_net) },
                    "price_monthly": { "net": price.monthly_net, "gross": gross(&price.monthly_net) },
                    "included_traffic": 21_990_232_555_520u64,
                    "price_per_tb_traffic": { "net": "1.0000", "gross": "1.1900" },
                })
            })
            .collect();
        json!({
            "id": index as u64 + 1,
            "name": server_type.name,
            "description": server_type.description,
            "cores": server_type.cores,
            "memory": server_type.memory_gb,
            "disk": server_type.disk_gb,
            "deprecated": server_type.deprecated,
            "prices": prices,
            "storage_type": "local",
            "cpu_type": server_type.cpu_type,
            "category": "shared_vcpu",
            "architecture": server_type.architecture,
            "deprecation": Value::Null,
            "locations": locations,
        })
    }

    fn server_json(&self, server: &FakeServer) -> Value {
        let created = rfc3339(server.created_unix_ms);
        let running = self.action_done(server.create_action);
        let server_type = self.server_type_json(server.server_type);
        json!({
            "id": server.id,
            "name": server.name,
            "status": match (running, server.start_after_create) {
                (false, _) => "initializing",
                (true, true) => "running",
                (true, false) => "off",
            },
            "created": created,
            "public_net": {
                "ipv4": { "id": server.id, "ip": server.endpoint.ip, "blocked": false, "dns_ptr": format!("static.{}.clients.your-server.de", server.endpoint.ip) },
                "ipv6": Value::Null,
                "floating_ips": [],
                "firewalls": [],
            },
            "private_net": [],
            "server_type": server_type,
            "location": self.location_json(server.location),
            "image": {
                "id": 161547269,
                "type": "system",
                "status": "available",
                "name": "ubuntu-24.04",
                "description": "Ubuntu 24.04",
                "image_size": Value::Null,
                "disk_size": 5,
                "created": "2024-04-25T13:26:27Z",
                "created_from": Value::Null,
                "bound_to": Value::Null,
                "os_flavor": "ubuntu",
                "os_version": "24.04",
                "rapid_deploy": true,
                "protection": { "delete": false },
                "deprecated": Value::Null,
                "deleted": Value::Null,
                "labels": {},
                "architecture": self.config.server_types[server.server_type].architecture,
            },
            "iso": Value::Null,
            "rescue_enabled": false,
            "locked": false,
            "backup_window": Value::Null,
            "outgoing_traffic": 0,
            "ingoing_traffic": 0,
            "included_traffic": 21_990_232_555_520u64,
            "protection": { "delete": false, "rebuild": false },
            "labels": server.labels,
            "volumes": [],
            "load_balancers": [],
            "primary_disk_size": self.config.server_types[server.server_type].disk_gb,
            "placement_group": Value::Null,
        })
    }

    fn ssh_key_json(&self, key: &FakeSshKey) -> Value {
        json!({
            "id": key.id,
            "name": key.name,
            "fingerprint": fingerprint(&key.public_key),
            "public_key": key.public_key,
            "labels": key.labels,
            "created": rfc3339(key.created_unix_ms),
        })
    }
}

/// `0.0128` net → gross with 19% VAT, as decimal text.
fn gross(net: &str) -> String {
    let value: f64 = net.parse().unwrap_or(0.0);
    format!("{:.4}", value * 1.19)
}

/// A stable MD5-looking fingerprint (16 colon-separated bytes) of a public key.
fn fingerprint(public_key: &str) -> String {
    let mut state: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for byte in public_key.bytes() {
        state ^= u128::from(byte);
        state = state.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    state
        .to_be_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn rfc3339(unix_ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    humantime::format_rfc3339_seconds(time).to_string()
}

// ------------------------------------------------------------------- router

/// The fake's router: `/v1/...` (Hetzner's paths) and `/__fake/...` (test control).
pub fn app(state: FakeState) -> Router {
    let api = Router::new()
        .route("/servers", get(list_servers).post(create_server))
        .route("/servers/{id}", get(get_server).delete(delete_server))
        .route("/actions", get(get_actions))
        .route("/actions/{id}", get(get_action))
        .route("/server_types", get(list_server_types))
        .route("/server_types/{id}", get(get_server_type))
        .route("/locations", get(list_locations))
        .route("/locations/{id}", get(get_location))
        .route("/ssh_keys", get(list_ssh_keys).post(create_ssh_key))
        .fallback(api_not_found)
        .layer(middleware::from_fn_with_state(state.clone(), rate_limit_and_auth));
    let control = Router::new()
        .route("/sold_out", post(set_sold_out).get(get_sold_out))
        .route("/failures", post(add_failure).delete(clear_failures))
        .route("/rate_limit", post(set_rate_limit))
        .route("/vms", get(list_vms))
        .route("/stats", get(get_stats));
    Router::new()
        .nest("/v1", api)
        .nest("/__fake", control)
        .with_state(state)
}

/// Every `/v1` request spends one token of the bucket (authenticated or not, as the
/// documentation says), and carries the `RateLimit-*` headers; then the token is checked.
async fn rate_limit_and_auth(State(state): State<FakeState>, request: Request, next: Next) -> Response {
    let authorized = {
        let expected = format!("Bearer {}", state.lock().config.token);
        request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value == expected)
    };
    let (allowed, headers) = {
        let mut inner = state.lock();
        inner.stats.requests += 1;
        inner.refill();
        let allowed = inner.tokens >= 1.0;
        if allowed {
            inner.tokens -= 1.0;
        } else {
            inner.stats.rate_limited += 1;
        }
        if allowed && !authorized {
            inner.stats.unauthorized += 1;
        }
        (allowed, inner.rate_limit_headers())
    };
    let mut response = if !allowed {
        error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            "limit of 3600 requests per hour reached",
            Value::Null,
        )
    } else if !authorized {
        error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unable to authenticate",
            Value::Null,
        )
    } else {
        next.run(request).await
    };
    let response_headers = response.headers_mut();
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response_headers.insert(name, value);
        }
    }
    response
}

async fn api_not_found() -> ApiError {
    ApiError::not_found("endpoint")
}

/// Answers an injected failure for `operation`, if a test asked for one.
fn injected(state: &FakeState, operation: &str) -> Option<Response> {
    let failure = state.lock().take_failure(operation)?;
    if failure.malformed {
        let body = failure.body.unwrap_or_else(|| "{\"unexpected\": tru".to_owned());
        return Some((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response());
    }
    let status = StatusCode::from_u16(failure.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Some(error_response(status, &failure.code, &failure.message, Value::Null))
}
