//! A fake Hetzner Cloud API: the paths and JSON shapes of the official API description
//! for what the platform uses (servers, actions, server types, locations, SSH keys),
//! with actions that finish after a delay, pagination, label selectors, the documented
//! error codes, Bearer tokens, the rate limit and its headers, sold-out windows and
//! prices. `/__fake/...` (no token, no rate limit) lets tests steer it at run time.
//!
//! `app(state)` is the router (tests may call it in process); the binary
//! `payperplay-fake-hetzner` serves it.

pub mod config;
pub mod labels;

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
pub use config::{EndpointConfig, FakeConfig, SoldOutWindow};
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

#[derive(Debug, Default)]
struct ListQuery {
    page: u64,
    per_page: u64,
    name: Option<String>,
    label_selector: Option<Selector>,
    status: Vec<String>,
}

fn parse_list_query(pairs: &[(String, String)]) -> Result<ListQuery, ApiError> {
    let mut query = ListQuery {
        page: 1,
        per_page: PER_PAGE_DEFAULT,
        ..ListQuery::default()
    };
    for (key, value) in pairs {
        match key.as_str() {
            "page" => {
                query.page = value
                    .parse()
                    .ok()
                    .filter(|page| *page >= 1)
                    .ok_or_else(|| ApiError::invalid_field("page", "must be an integer >= 1"))?;
            }
            "per_page" => {
                let per_page: u64 = value
                    .parse()
                    .ok()
                    .filter(|per_page| *per_page >= 1)
                    .ok_or_else(|| ApiError::invalid_field("per_page", "must be an integer >= 1"))?;
                query.per_page = per_page.min(PER_PAGE_MAX);
            }
            "name" => query.name = Some(value.clone()),
            "label_selector" => {
                query.label_selector =
                    Some(Selector::parse(value).map_err(|message| ApiError::invalid_field("label_selector", message))?);
            }
            "status" => query.status.push(value.clone()),
            _ => {}
        }
    }
    Ok(query)
}

/// The `Link` header of a page (`prev`, `next`, `last`), as relative URIs.
fn link_header(uri: &axum::http::Uri, meta: &Value) -> Option<(header::HeaderName, String)> {
    let pagination = &meta["pagination"];
    let kept: Vec<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("page="))
        .map(str::to_owned)
        .collect();
    let link = |page: &Value, rel: &str| {
        page.as_u64().map(|page| {
            let mut query = kept.clone();
            query.push(format!("page={page}"));
            format!("<{}?{}>; rel=\"{rel}\"", uri.path(), query.join("&"))
        })
    };
    let links: Vec<String> = [
        link(&pagination["previous_page"], "prev"),
        link(&pagination["next_page"], "next"),
        link(&pagination["last_page"], "last"),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!links.is_empty()).then(|| (header::LINK, links.join(", ")))
}

/// A list answer: `{ key: items, meta }` with the `Link` header.
fn list_response(uri: &axum::http::Uri, key: &str, items: Vec<Value>, meta: Value) -> Response {
    let link = link_header(uri, &meta);
    let mut response = axum::Json(json!({ key: items, "meta": meta })).into_response();
    if let Some((name, value)) = link
        && let Ok(value) = HeaderValue::from_str(&value)
    {
        response.headers_mut().insert(name, value);
    }
    response
}

/// One page of `items` and Hetzner's `meta.pagination`.
fn paginate(items: Vec<Value>, query: &ListQuery) -> (Vec<Value>, Value) {
    let total = items.len() as u64;
    let last_page = total.div_ceil(query.per_page).max(1);
    let start = (query.page - 1).saturating_mul(query.per_page);
    let page_items: Vec<Value> = items
        .into_iter()
        .skip(start as usize)
        .take(query.per_page as usize)
        .collect();
    let meta = json!({ "pagination": {
        "page": query.page,
        "per_page": query.per_page,
        "previous_page": if query.page > 1 { json!(query.page - 1) } else { Value::Null },
        "next_page": if query.page < last_page { json!(query.page + 1) } else { Value::Null },
        "last_page": last_page,
        "total_entries": total,
    }});
    (page_items, meta)
}

fn parse_id(text: &str, what: &str) -> Result<u64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::invalid_field("id", format!("{what} id {text:?} is not an integer")))
}

async fn list_servers(
    State(state): State<FakeState>,
    OriginalUri(uri): OriginalUri,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    if let Some(response) = injected(&state, "list_servers") {
        return Ok(response);
    }
    let query = parse_list_query(&pairs)?;
    let inner = state.lock();
    let items: Vec<Value> = inner
        .servers
        .values()
        .filter(|server| query.name.as_ref().is_none_or(|name| &server.name == name))
        .filter(|server| query.label_selector.as_ref().is_none_or(|s| s.matches(&server.labels)))
        .map(|server| inner.server_json(server))
        .filter(|json| query.status.is_empty() || query.status.iter().any(|status| json["status"] == status.as_str()))
        .collect();
    let (servers, meta) = paginate(items, &query);
    Ok(list_response(&uri, "servers", servers, meta))
}

async fn get_server(State(state): State<FakeState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if let Some(response) = injected(&state, "get_server") {
        return Ok(response);
    }
    let id = parse_id(&id, "server")?;
    let inner = state.lock();
    let server = inner.servers.get(&id).ok_or_else(|| ApiError::not_found("server"))?;
    Ok(axum::Json(json!({ "server": inner.server_json(server) })).into_response())
}

async fn delete_server(State(state): State<FakeState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if let Some(response) = injected(&state, "delete_server") {
        return Ok(response);
    }
    let id = parse_id(&id, "server")?;
    let mut inner = state.lock();
    if inner.servers.remove(&id).is_none() {
        return Err(ApiError::not_found("server"));
    }
    inner.stats.servers_deleted += 1;
    let action = inner.new_action("delete_server", vec![(id, "server")]);
    Ok(axum::Json(json!({ "action": inner.action_json(&action) })).into_response())
}

async fn get_action(State(state): State<FakeState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if let Some(response) = injected(&state, "get_action") {
        return Ok(response);
    }
    let id = parse_id(&id, "action")?;
    let inner = state.lock();
    let action = inner.actions.get(&id).ok_or_else(|| ApiError::not_found("action"))?;
    Ok(axum::Json(json!({ "action": inner.action_json(action) })).into_response())
}

/// `GET /actions?id=1&id=2`: the actions with these ids (unknown ids are left out).
async fn get_actions(
    State(state): State<FakeState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    if let Some(response) = injected(&state, "get_actions") {
        return Ok(response);
    }
    let mut ids = Vec::new();
    for (key, value) in &pairs {
        if key == "id" {
            ids.push(parse_id(value, "action")?);
        }
    }
    if ids.is_empty() {
        return Err(ApiError::invalid_field("id", "at least one action id is required"));
    }
    let inner = state.lock();
    let actions: Vec<Value> = ids
        .iter()
        .filter_map(|id| inner.actions.get(id))
        .map(|action| inner.action_json(action))
        .collect();
    Ok(axum::Json(json!({ "actions": actions })).into_response())
}

/// A string field of the request, or an `invalid_input` naming it.
fn string_field<'a>(body: &'a Value, field: &str, required: bool) -> Result<Option<&'a str>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(ApiError::invalid_field(field, "is required")),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(ApiError::invalid_field(field, "must be a string")),
    }
}

fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn valid_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    let prefix_ok = prefix
        .is_none_or(|prefix| !prefix.starts_with("hetzner.cloud") && prefix.len() <= 253 && valid_hostname(prefix));
    name_ok && prefix_ok
}

fn valid_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value.as_bytes()[0].is_ascii_alphanumeric()
            && value.as_bytes()[value.len() - 1].is_ascii_alphanumeric()
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
}

fn parse_labels(body: &Value) -> Result<BTreeMap<String, String>, ApiError> {
    let mut labels = BTreeMap::new();
    match body.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                let Value::String(value) = value else {
                    return Err(ApiError::invalid_field(
                        "labels",
                        format!("value of {key:?} must be a string"),
                    ));
                };
                if !valid_label_key(key) {
                    return Err(ApiError::invalid_field("labels", format!("invalid label key {key:?}")));
                }
                if !valid_label_value(value) {
                    return Err(ApiError::invalid_field(
                        "labels",
                        format!("invalid label value {value:?}"),
                    ));
                }
                labels.insert(key.clone(), value.clone());
            }
        }
        Some(_) => return Err(ApiError::invalid_field("labels", "must be an object")),
    }
    Ok(labels)
}

fn parse_json_body(bytes: &Bytes) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "json_error", format!("invalid JSON: {error}")))?;
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "json_error",
            "request body must be a JSON object",
        ));
    }
    Ok(value)
}

fn find_index<T>(items: &[T], name_or_id: &str, name_of: impl Fn(&T) -> &str) -> Option<usize> {
    if let Ok(id) = name_or_id.parse::<usize>() {
        return (id >= 1 && id <= items.len()).then(|| id - 1);
    }
    items.iter().position(|item| name_of(item) == name_or_id)
}

async fn create_server(State(state): State<FakeState>, body: Bytes) -> Result<Response, ApiError> {
    state.lock().stats.create_requests += 1;
    if let Some(response) = injected(&state, "create_server") {
        return Ok(response);
    }
    let body = parse_json_body(&body)?;
    let name = string_field(&body, "name", true)?.unwrap_or_default().to_owned();
    if !valid_hostname(&name) {
        return Err(ApiError::invalid_field("name", "must be a valid hostname (RFC 1123)"));
    }
    let server_type_text = string_field(&body, "server_type", true)?.unwrap_or_default();
    string_field(&body, "image", true)?;
    let location_text = string_field(&body, "location", false)?;
    let labels = parse_labels(&body)?;
    let start_after_create = match body.get("start_after_create") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(start)) => *start,
        Some(_) => return Err(ApiError::invalid_field("start_after_create", "must be a boolean")),
    };
    let user_data = string_field(&body, "user_data", false)?.unwrap_or_default().to_owned();
    if user_data.len() > USER_DATA_BYTES_MAX {
        return Err(ApiError::invalid_field("user_data", "is limited to 32KiB"));
    }
    let ssh_key_refs: Vec<String> = match body.get("ssh_keys") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(text.clone()),
                Value::Number(number) => Ok(number.to_string()),
                _ => Err(ApiError::invalid_field("ssh_keys", "must be IDs or names")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::invalid_field("ssh_keys", "must be an array")),
    };

    let mut inner = state.lock();
    let server_type = find_index(&inner.config.server_types, server_type_text, |t| t.name.as_str())
        .ok_or_else(|| ApiError::invalid_field("server_type", format!("server type {server_type_text:?} not found")))?;
    let offered: Vec<String> = inner.config.server_types[server_type]
        .prices
        .iter()
        .map(|price| price.location.clone())
        .collect();
    if offered.is_empty() {
        return Err(ApiError::invalid_field(
            "server_type",
            format!("server type {server_type_text:?} is not offered in any location"),
        ));
    }
    let location = match location_text {
        Some(text) => find_index(&inner.config.locations, text, |l| l.name.as_str())
            .ok_or_else(|| ApiError::invalid_field("location", format!("location {text:?} not found")))?,
        None => {
            let type_name = inner.config.server_types[server_type].name.clone();
            let first = offered
                .iter()
                .find(|l| !inner.sold_out(&type_name, l))
                .unwrap_or(&offered[0])
                .clone();
            inner.config.locations.iter().position(|l| l.name == first).unwrap_or(0)
        }
    };
    let type_name = inner.config.server_types[server_type].name.clone();
    let location_name = inner.config.locations[location].name.clone();
    if !offered.contains(&location_name) {
        return Err(ApiError::invalid_field(
            "location",
            format!("server type {type_name} is not offered in location {location_name}"),
        ));
    }
    let mut ssh_keys = Vec::new();
    for reference in &ssh_key_refs {
        let key = inner
            .ssh_keys
            .values()
            .find(|key| &key.name == reference || key.id.to_string() == *reference)
            .ok_or_else(|| ApiError::invalid_field("ssh_keys", format!("SSH key {reference:?} not found")))?;
        ssh_keys.push(key.id);
    }
    if inner.servers.values().any(|server| server.name == name) {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "uniqueness_error",
            message: "server name is already used".to_owned(),
            details: json!({ "fields": [{ "name": "name" }] }),
        });
    }
    if inner.sold_out(&type_name, &location_name) {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "resource_unavailable",
            format!("server type {type_name} is currently unavailable in location {location_name}"),
        ));
    }
    if let Some(limit) = inner.config.server_limit
        && inner.servers.len() as u64 >= limit
    {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            code: "resource_limit_exceeded",
            message: format!("server limit of {limit} exceeded"),
            details: json!({ "limits": [{ "name": "server_limit" }] }),
        });
    }

    let id = inner.allocate_id();
    let endpoint = if inner.config.endpoints.is_empty() {
        EndpointConfig {
            ip: format!("192.0.2.{}", inner.vms_created % 254 + 1),
            ssh_port: 22,
            game_port_first: None,
            game_port_last: None,
        }
    } else {
        let index = (inner.vms_created % inner.config.endpoints.len() as u64) as usize;
        inner.config.endpoints[index].clone()
    };
    inner.vms_created += 1;
    let mut labels = labels;
    if inner.config.hint_labels {
        labels.insert(HINT_LABEL_SSH_PORT.to_owned(), endpoint.ssh_port.to_string());
        if let (Some(first), Some(last)) = (endpoint.game_port_first, endpoint.game_port_last) {
            labels.insert(HINT_LABEL_GAME_PORTS.to_owned(), format!("{first}-{last}"));
        }
    }
    let create = inner.new_action("create_server", vec![(id, "server")]);
    let start = start_after_create.then(|| inner.new_action("start_server", vec![(id, "server")]));
    let created_unix_ms = inner.unix_ms(inner.now_ms());
    let server = FakeServer {
        id,
        name,
        server_type,
        location,
        labels,
        created_unix_ms,
        create_action: create.id,
        start_after_create,
        endpoint,
        user_data,
        ssh_keys: ssh_keys.clone(),
    };
    let server_json = inner.server_json(&server);
    inner.servers.insert(id, server);
    inner.stats.servers_created += 1;
    let body = json!({
        "server": server_json,
        "action": inner.action_json(&create),
        "next_actions": start.iter().map(|action| inner.action_json(action)).collect::<Vec<_>>(),
        "root_password": if ssh_keys.is_empty() { Value::String("fake-root-password".to_owned()) } else { Value::Null },
    });
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

async fn list_server_types(
    State(state): State<FakeState>,
    OriginalUri(uri): OriginalUri,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    if let Some(response) = injected(&state, "list_server_types") {
        return Ok(response);
    }
    let query = parse_list_query(&pairs)?;
    let inner = state.lock();
    let items: Vec<Value> = (0..inner.config.server_types.len())
        .filter(|index| {
            query
                .name
                .as_ref()
                .is_none_or(|name| &inner.config.server_types[*index].name == name)
        })
        .map(|index| inner.server_type_json(index))
        .collect();
    let (server_types, meta) = paginate(items, &query);
    Ok(list_response(&uri, "server_types", server_types, meta))
}

async fn get_server_type(State(state): State<FakeState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id, "server type")?;
    let inner = state.lock();
    if id == 0 || id as usize > inner.config.server_types.len() {
        return Err(ApiError::not_found("server type"));
    }
    Ok(axum::Json(json!({ "server_type": inner.server_type_json(id as usize - 1) })).into_response())
}

async fn list_locations(
    State(state): State<FakeState>,
    OriginalUri(uri): OriginalUri,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    if let Some(response) = injected(&state, "list_locations") {
        return Ok(response);
    }
    let query = parse_list_query(&pairs)?;
    let inner = state.lock();
    let items: Vec<Value> = (0..inner.config.locations.len())
        .filter(|index| {
            query
                .name
                .as_ref()
                .is_none_or(|name| &inner.config.locations[*index].name == name)
        })
        .map(|index| inner.location_json(index))
        .collect();
    let (locations, meta) = paginate(items, &query);
    Ok(list_response(&uri, "locations", locations, meta))
}

async fn get_location(State(state): State<FakeState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id, "location")?;
    let inner = state.lock();
    if id == 0 || id as usize > inner.config.locations.len() {
        return Err(ApiError::not_found("location"));
    }
    Ok(axum::Json(json!({ "location": inner.location_json(id as usize - 1) })).into_response())
}

async fn list_ssh_keys(
    State(state): State<FakeState>,
    OriginalUri(uri): OriginalUri,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    if let Some(response) = injected(&state, "list_ssh_keys") {
        return Ok(response);
    }
    let query = parse_list_query(&pairs)?;
    let fingerprint_filter = pairs.iter().find(|(k, _)| k == "fingerprint").map(|(_, v)| v.clone());
    let inner = state.lock();
    let items: Vec<Value> = inner
        .ssh_keys
        .values()
        .filter(|key| query.name.as_ref().is_none_or(|name| &key.name == name))
        .filter(|key| query.label_selector.as_ref().is_none_or(|s| s.matches(&key.labels)))
        .filter(|key| {
            fingerprint_filter
                .as_ref()
                .is_none_or(|f| &fingerprint(&key.public_key) == f)
        })
        .map(|key| inner.ssh_key_json(key))
        .collect();
    let (ssh_keys, meta) = paginate(items, &query);
    Ok(list_response(&uri, "ssh_keys", ssh_keys, meta))
}

async fn create_ssh_key(State(state): State<FakeState>, body: Bytes) -> Result<Response, ApiError> {
    if let Some(response) = injected(&state, "create_ssh_key") {
        return Ok(response);
    }
    let body = parse_json_body(&body)?;
    let name = string_field(&body, "name", true)?.unwrap_or_default().to_owned();
    let public_key = string_field(&body, "public_key", true)?
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mut parts = public_key.split_whitespace();
    let key_ok = parts
        .next()
        .is_some_and(|kind| kind.starts_with("ssh-") || kind.starts_with("ecdsa-"))
        && parts.next().is_some_and(|blob| !blob.is_empty());
    if !key_ok {
        return Err(ApiError::invalid_field("public_key", "is not a valid SSH public key"));
    }
    let labels = parse_labels(&body)?;
    let mut inner = state.lock();
    let body_of = |key: &str| key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    if let Some(clash) = inner
        .ssh_keys
        .values()
        .find(|key| key.name == name || body_of(&key.public_key) == body_of(&public_key))
    {
        let field = if clash.name == name { "name" } else { "public_key" };
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "uniqueness_error",
            message: format!("SSH key with the same {field} already exists"),
            details: json!({ "fields": [{ "name": field }] }),
        });
    }
    let id = inner.allocate_id();
    let key = FakeSshKey {
        id,
        name,
        public_key,
        labels,
        created_unix_ms: inner.unix_ms(inner.now_ms()),
    };
    let json = inner.ssh_key_json(&key);
    inner.ssh_keys.insert(id, key);
    Ok((StatusCode::CREATED, axum::Json(json!({ "ssh_key": json }))).into_response())
}

// ------------------------------------------------------------------- control

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SoldOutRequest {
    windows: Vec<SoldOutWindow>,
}

/// Replaces the sold-out windows (times in seconds since the fake started; see
/// `GET /__fake/stats` for `now_s`).
async fn set_sold_out(State(state): State<FakeState>, axum::Json(request): axum::Json<SoldOutRequest>) -> Response {
    state.lock().config.sold_out = request.windows;
    StatusCode::NO_CONTENT.into_response()
}

async fn get_sold_out(State(state): State<FakeState>) -> Response {
    let inner = state.lock();
    axum::Json(json!({ "windows": inner.config.sold_out, "now_s": inner.now_ms() / 1_000 })).into_response()
}

async fn add_failure(State(state): State<FakeState>, axum::Json(failure): axum::Json<InjectedFailure>) -> Response {
    if !failure.malformed && !(400..=599).contains(&failure.status) {
        return (StatusCode::BAD_REQUEST, "status must be 400..=599 unless malformed").into_response();
    }
    state.lock().failures.push(failure);
    StatusCode::NO_CONTENT.into_response()
}

async fn clear_failures(State(state): State<FakeState>) -> Response {
    state.lock().failures.clear();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitRequest {
    /// Sets the bucket's current tokens (0 makes the next request a 429).
    #[serde(default)]
    remaining: Option<f64>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    refill_per_s: Option<f64>,
}

async fn set_rate_limit(State(state): State<FakeState>, axum::Json(request): axum::Json<RateLimitRequest>) -> Response {
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
async fn list_vms(State(state): State<FakeState>) -> Response {
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

async fn get_stats(State(state): State<FakeState>) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_and_values_follow_the_documented_rules() {
        assert!(valid_label_key("payperplay/platform"));
        assert!(valid_label_key("example.com/my"));
        assert!(valid_label_key("just-a-key"));
        assert!(!valid_label_key("hetzner.cloud/x"));
        assert!(!valid_label_key("-bad"));
        assert!(valid_label_value(""));
        assert!(valid_label_value("30000-30999"));
        assert!(!valid_label_value("a b"));
    }

    #[test]
    fn pagination_names_previous_next_and_last_pages() {
        let items: Vec<Value> = (0..7).map(|i| json!(i)).collect();
        let query = ListQuery {
            page: 2,
            per_page: 3,
            ..ListQuery::default()
        };
        let (page, meta) = paginate(items, &query);
        assert_eq!(page, vec![json!(3), json!(4), json!(5)]);
        assert_eq!(meta["pagination"]["previous_page"], 1);
        assert_eq!(meta["pagination"]["next_page"], 3);
        assert_eq!(meta["pagination"]["last_page"], 3);
        assert_eq!(meta["pagination"]["total_entries"], 7);
    }
}
