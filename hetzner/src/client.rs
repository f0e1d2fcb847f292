//! `HetznerClient`: the Hetzner Cloud API calls the platform needs, with the rate limit
//! obeyed, bounded retries, and orders that are idempotent by VM name.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::clock::unix_now_ms;
use crate::error::{ErrorClass, HetznerError, classify_code, classify_status};
use crate::model::{
    Action, ActionEnvelope, ActionStatus, ActionsEnvelope, CreateServerEnvelope, DeleteServerEnvelope, ErrorBody,
    ErrorEnvelope, Location, LocationsEnvelope, Page, Pagination, Server, ServerEnvelope, ServerType,
    ServerTypesEnvelope, ServersEnvelope, SshKey, SshKeyEnvelope, SshKeysEnvelope,
};

/// Hetzner Cloud's public endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.hetzner.cloud/v1";
/// Label keys every VM the platform orders carries.
pub const LABEL_PLATFORM: &str = "payperplay/platform";
pub const LABEL_NODE: &str = "payperplay/node";
pub const LABEL_COMMAND: &str = "payperplay/command";
/// Hetzner's largest page.
pub const PER_PAGE_MAX: u64 = 50;
/// A list never reads more pages than this (50 × 400 = 20,000 entries).
pub const LIST_PAGES_MAX: u64 = 400;
/// Hetzner's limit on `user_data`.
pub const USER_DATA_BYTES_MAX: usize = 32 * 1024;
/// The longest platform name (it goes into every VM name and label).
pub const PLATFORM_NAME_CHARS_MAX: usize = 32;
/// How much of an unparsable answer an error message quotes.
const QUOTED_BODY_CHARS_MAX: usize = 200;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL including `/v1`, e.g. [`DEFAULT_BASE_URL`] or a fake's
    /// `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
    /// The project's API token. `SecretString` never shows it in `Debug`.
    pub token: SecretString,
    /// Names this platform instance: the value of [`LABEL_PLATFORM`] and the prefix of
    /// every VM name. Lowercase letters, digits and dashes.
    pub platform: String,
    /// The image VMs are created from.
    pub image: String,
    pub request_timeout_ms: u64,
    /// How long one request may wait out `429 rate_limit_exceeded` answers in total
    /// before the client gives up with `RateLimited`.
    pub rate_limit_wait_ms_max: u64,
    /// Retries of a request after a transient failure (5xx, `conflict`, `locked`, no
    /// answer).
    pub transient_retries_max: u32,
    /// The first transient retry waits this long; each next one twice as long.
    pub transient_backoff_ms: u64,
    /// Action polling starts at `action_poll_ms_min` and doubles up to
    /// `action_poll_ms_max` (polls count against the rate limit).
    pub action_poll_ms_min: u64,
    pub action_poll_ms_max: u64,
    /// An action still running after this long is `ActionTimedOut`.
    pub action_wait_ms_max: u64,
    /// Concurrent waits share one `GET /actions?id=..` poll, at most one per this gap,
    /// so polling costs the rate limit per interval, not per order.
    pub action_batch_gap_ms: u64,
    /// Below this many remaining requests, requests go one at a time (each sees the
    /// previous one's `RateLimit-Remaining`), and wait for the next token when none is
    /// left.
    pub pace_below_remaining: u64,
}

impl ClientConfig {
    pub fn new(base_url: impl Into<String>, token: SecretString) -> ClientConfig {
        ClientConfig {
            base_url: base_url.into(),
            token,
            platform: "payperplay".to_owned(),
            image: "ubuntu-24.04".to_owned(),
            request_timeout_ms: 30_000,
            rate_limit_wait_ms_max: 120_000,
            transient_retries_max: 3,
            transient_backoff_ms: 500,
            action_poll_ms_min: 1_000,
            action_poll_ms_max: 10_000,
            action_wait_ms_max: 600_000,
            action_batch_gap_ms: 5_000,
            pace_below_remaining: 10,
        }
    }
}

/// The rate limit as Hetzner last reported it (`RateLimit-*` headers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitStatus {
    /// Requests per hour.
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Unix time (s) when the budget is full again.
    pub reset_unix_s: Option<u64>,
    /// When these headers were read (unix ms).
    pub observed_at_unix_ms: u64,
}

impl RateLimitStatus {
    fn from_headers(headers: &HeaderMap, now_unix_ms: u64) -> Option<RateLimitStatus> {
        let read = |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
        let status = RateLimitStatus {
            limit: read("ratelimit-limit"),
            remaining: read("ratelimit-remaining"),
            reset_unix_s: read("ratelimit-reset"),
            observed_at_unix_ms: now_unix_ms,
        };
        (status.limit.is_some() || status.remaining.is_some()).then_some(status)
    }

    /// How long until one more request is allowed, given that the budget refills
    /// evenly until `reset` (Hetzner: 1 per second at 3,600/h).
    pub fn token_interval(&self, now_unix_ms: u64) -> Duration {
        let limit = self.limit.unwrap_or(3_600).max(1);
        let remaining = self.remaining.unwrap_or(0).min(limit);
        let fallback_ms = 3_600_000 / limit;
        let interval_ms = match self.reset_unix_s {
            Some(reset_s) if remaining < limit && reset_s * 1_000 > now_unix_ms => {
                (reset_s * 1_000 - now_unix_ms) / (limit - remaining)
            }
            _ => fallback_ms,
        };
        Duration::from_millis(interval_ms.clamp(10, fallback_ms.max(10)))
    }
}

/// What the platform asks for when it orders a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmOrder {
    /// The core's command id: the idempotency key, and the VM's name.
    pub command_id: u64,
    /// The core's node id, written into a label.
    pub node_id: u64,
    pub server_type: String,
    pub location: String,
    /// Names (or ids) of SSH keys to install.
    pub ssh_keys: Vec<String>,
    /// Cloud-init user data (see `crate::cloud_init`).
    pub user_data: String,
}

/// The result of [`HetznerClient::create_vm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedVm {
    pub server: Server,
    /// The create action to wait for; None when the VM already existed.
    pub action: Option<Action>,
    /// Actions the create triggered (`start_server`); empty when the VM already existed.
    pub next_actions: Vec<Action>,
    /// True when an earlier order had already created it (found by name).
    pub already_existed: bool,
}

pub struct HetznerClient {
    http: reqwest::Client,
    config: ClientConfig,
    base_url: url::Url,
    rate_limit: Mutex<RateLimitStatus>,
    /// Held by each request sent while the budget is nearly spent, so those go one at
    /// a time, waiting for the next token when none is left, instead of racing into 429s.
    pacing: tokio::sync::Mutex<()>,
    /// Actions being waited for, polled together (`GET /actions?id=..`).
    action_batch: Mutex<ActionBatch>,
}

/// The actions some caller waits for, and what the last batch poll said about them.
#[derive(Debug, Default)]
struct ActionBatch {
    /// Action id → number of callers waiting for it.
    wanted: BTreeMap<u64, u32>,
    latest: BTreeMap<u64, Action>,
    last_poll_at: Option<tokio::time::Instant>,
}

impl std::fmt::Debug for HetznerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HetznerClient")
            .field("base_url", &self.base_url.as_str())
            .field("platform", &self.config.platform)
            .finish_non_exhaustive()
    }
}

/// A caller's wait for an action, in the batch until it ends, also when the waiting
/// future is dropped half-way (a timeout), so no stale id stays polled.
struct ActionRegistration<'a> {
    client: &'a HetznerClient,
    id: u64,
}

impl<'a> ActionRegistration<'a> {
    fn new(client: &'a HetznerClient, id: u64) -> ActionRegistration<'a> {
        *client
            .action_batch
            .lock()
            .expect("action batch lock")
            .wanted
            .entry(id)
            .or_insert(0) += 1;
        ActionRegistration { client, id }
    }
}

impl Drop for ActionRegistration<'_> {
    fn drop(&mut self) {
        let Ok(mut batch) = self.client.action_batch.lock() else {
            return;
        };
        let waiters_left = batch.wanted.get_mut(&self.id).map(|count| {
            *count -= 1;
            *count
        });
        if waiters_left == Some(0) {
            batch.wanted.remove(&self.id);
            batch.latest.remove(&self.id);
        }
    }
}

/// An error answer before it is given meaning by the call that got it.
enum Failure {
    Api { status: u16, error: ErrorBody },
    Other(HetznerError),
}

impl HetznerClient {
    pub fn new(config: ClientConfig) -> Result<HetznerClient, HetznerError> {
        let mut base = config.base_url.trim_end_matches('/').to_owned();
        base.push('/');
        let base_url = url::Url::parse(&base)
            .map_err(|error| HetznerError::Config(format!("base URL {:?}: {error}", config.base_url)))?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(HetznerError::Config(format!(
                "base URL {:?} is not http(s)",
                config.base_url
            )));
        }
        validate_platform_name(&config.platform)?;
        if config.token.expose_secret().is_empty() {
            return Err(HetznerError::Config("the API token is empty".to_owned()));
        }
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", config.token.expose_secret())).map_err(|_| {
            HetznerError::Config("the API token holds characters not allowed in an HTTP header".to_owned())
        })?;
        bearer.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, bearer);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("payperplay-hetzner/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .build()
            .map_err(|error| HetznerError::Config(format!("HTTP client: {error}")))?;
        Ok(HetznerClient {
            http,
            config,
            base_url,
            rate_limit: Mutex::new(RateLimitStatus::default()),
            pacing: tokio::sync::Mutex::new(()),
            action_batch: Mutex::new(ActionBatch::default()),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The rate limit as last reported by Hetzner.
    pub fn rate_limit(&self) -> RateLimitStatus {
        *self.rate_limit.lock().expect("rate limit lock")
    }

    /// How many actions callers are waiting for now (for metrics and tests).
    pub fn actions_waited_for(&self) -> usize {
        self.action_batch.lock().expect("action batch lock").wanted.len()
    }

    /// The VM name for a command: `{platform}-cmd-{command_id}` (a valid hostname,
    /// unique per project, the same for every retry of the command).
    pub fn vm_name(&self, command_id: u64) -> String {
        format!("{}-cmd-{command_id}", self.config.platform)
    }

    /// The labels of the VM a command orders.
    pub fn vm_labels(&self, order: &VmOrder) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_PLATFORM.to_owned(), self.config.platform.clone()),
            (LABEL_NODE.to_owned(), order.node_id.to_string()),
            (LABEL_COMMAND.to_owned(), order.command_id.to_string()),
        ])
    }

    /// The label selector matching every VM of this platform instance.
    pub fn platform_selector(&self) -> String {
        format!("{LABEL_PLATFORM}={}", self.config.platform)
    }

    // ---------------------------------------------------------------- servers

    /// Orders a VM, idempotently: a VM of the same name (an earlier try of the same
    /// command) is returned instead of a second one being made.
    pub async fn create_vm(&self, order: &VmOrder) -> Result<CreatedVm, HetznerError> {
        const OP: &str = "create_server";
        if order.user_data.len() > USER_DATA_BYTES_MAX {
            return Err(HetznerError::Config(format!(
                "user data is {} bytes, Hetzner takes at most {USER_DATA_BYTES_MAX}",
                order.user_data.len()
            )));
        }
        let name = self.vm_name(order.command_id);
        let body = json!({
            "name": name,
            "server_type": order.server_type,
            "location": order.location,
            "image": self.config.image,
            "ssh_keys": order.ssh_keys,
            "user_data": order.user_data,
            "labels": self.vm_labels(order),
            "start_after_create": true,
        });
        match self.execute(OP, Method::POST, "servers", &[], Some(&body)).await {
            Ok(bytes) => {
                let created: CreateServerEnvelope = decode(OP, &bytes)?;
                Ok(CreatedVm {
                    server: created.server,
                    action: Some(created.action),
                    next_actions: created.next_actions,
                    already_existed: false,
                })
            }
            Err(Failure::Api { error, .. }) if error.code == "uniqueness_error" => {
                let Some(server) = self.find_server_by_name(&name).await? else {
                    return Err(HetznerError::Api {
                        operation: OP,
                        status: 409,
                        code: error.code,
                        message: format!(
                            "{} (and no VM named {name} exists: another field is not unique)",
                            error.message
                        ),
                        class: ErrorClass::Permanent,
                    });
                };
                if server.labels.get(LABEL_PLATFORM) != Some(&self.config.platform) {
                    return Err(HetznerError::Api {
                        operation: OP,
                        status: 409,
                        code: error.code,
                        message: format!(
                            "a VM named {name} exists but does not carry {}",
                            self.platform_selector()
                        ),
                        class: ErrorClass::Permanent,
                    });
                }
                Ok(CreatedVm {
                    server,
                    action: None,
                    next_actions: Vec::new(),
                    already_existed: true,
                })
            }
            Err(Failure::Api { error, .. }) if error.code == "resource_unavailable" => Err(HetznerError::SoldOut {
                server_type: order.server_type.clone(),
                location: order.location.clone(),
                message: error.message,
            }),
            Err(failure) => Err(self.failure_to_error(OP, failure)),
        }
    }

    /// Orders a VM and waits until its create action and the actions it triggered
    /// (`start_server`) finished. Returns the VM as the create answer (or, for a repeated
    /// order, the list) described it: name, labels, IP; its `status` is from that
    /// moment, `get_server` gives a fresh one. One request per order plus shared polls.
    pub async fn order_vm(&self, order: &VmOrder) -> Result<Server, HetznerError> {
        let created = self.create_vm(order).await?;
        for action in created.action.into_iter().chain(created.next_actions) {
            self.wait_for_action(action).await?;
        }
        Ok(created.server)
    }

    /// The VM with this id; None when it does not exist.
    pub async fn get_server(&self, id: u64) -> Result<Option<Server>, HetznerError> {
        const OP: &str = "get_server";
        match self.execute(OP, Method::GET, &format!("servers/{id}"), &[], None).await {
            Ok(bytes) => Ok(Some(decode::<ServerEnvelope>(OP, &bytes)?.server)),
            Err(Failure::Api { status: 404, .. }) => Ok(None),
            Err(failure) => Err(self.failure_to_error(OP, failure)),
        }
    }

    /// The VM with this exact name, if any.
    pub async fn find_server_by_name(&self, name: &str) -> Result<Option<Server>, HetznerError> {
        let page = self
            .list_servers_page(&[("name", name.to_owned())], 1, PER_PAGE_MAX)
            .await?;
        Ok(page.items.into_iter().find(|server| server.name == name))
    }

    /// One page of VMs matching `label_selector` (Hetzner's selector syntax).
    pub async fn list_servers_by_label_page(
        &self,
        label_selector: &str,
        page: u64,
        per_page: u64,
    ) -> Result<Page<Server>, HetznerError> {
        self.list_servers_page(&[("label_selector", label_selector.to_owned())], page, per_page)
            .await
    }

    /// Every VM matching `label_selector`, all pages read.
    pub async fn list_servers(&self, label_selector: &str) -> Result<Vec<Server>, HetznerError> {
        let mut servers = Vec::new();
        let mut page = 1;
        loop {
            let answer = self
                .list_servers_by_label_page(label_selector, page, PER_PAGE_MAX)
                .await?;
            servers.extend(answer.items);
            match next_page("list_servers", &answer.pagination, page)? {
                Some(next) => page = next,
                None => return Ok(servers),
            }
        }
    }

    /// Every VM of this platform instance.
    pub async fn list_platform_vms(&self) -> Result<Vec<Server>, HetznerError> {
        self.list_servers(&self.platform_selector()).await
    }

    async fn list_servers_page(
        &self,
        filter: &[(&str, String)],
        page: u64,
        per_page: u64,
    ) -> Result<Page<Server>, HetznerError> {
        const OP: &str = "list_servers";
        let mut query: Vec<(&str, String)> = filter.to_vec();
        query.push(("page", page.to_string()));
        query.push(("per_page", per_page.clamp(1, PER_PAGE_MAX).to_string()));
        let bytes = self
            .execute(OP, Method::GET, "servers", &query, None)
            .await
            .map_err(|failure| self.failure_to_error(OP, failure))?;
        let answer: ServersEnvelope = decode(OP, &bytes)?;
        Ok(Page {
            items: answer.servers,
            pagination: answer.meta.pagination,
        })
    }

    /// Deletes a VM. A VM that does not exist (404) counts as deleted: Ok(None).
    pub async fn delete_server(&self, id: u64) -> Result<Option<Action>, HetznerError> {
        const OP: &str = "delete_server";
        match self
            .execute(OP, Method::DELETE, &format!("servers/{id}"), &[], None)
            .await
        {
            Ok(bytes) if bytes.is_empty() => Ok(None),
            Ok(bytes) => Ok(decode::<DeleteServerEnvelope>(OP, &bytes)?.action),
            Err(Failure::Api { status: 404, .. }) => Ok(None),
            Err(failure) => Err(self.failure_to_error(OP, failure)),
        }
    }

    /// Deletes the VM a command ordered, found by its name; absent counts as deleted.
    /// Returns whether a VM was there to delete.
    pub async fn delete_vm_of_command(&self, command_id: u64) -> Result<bool, HetznerError> {
        let name = self.vm_name(command_id);
        let Some(server) = self.find_server_by_name(&name).await? else {
            return Ok(false);
        };
        if let Some(action) = self.delete_server(server.id).await? {
            self.wait_for_action(action).await?;
        }
        Ok(true)
    }

    // ---------------------------------------------------------------- actions

    /// The action as Hetzner reports it now.
    pub async fn get_action(&self, id: u64) -> Result<Action, HetznerError> {
        const OP: &str = "get_action";
        let bytes = self
            .execute(OP, Method::GET, &format!("actions/{id}"), &[], None)
            .await
            .map_err(|failure| self.failure_to_error(OP, failure))?;
        Ok(decode::<ActionEnvelope>(OP, &bytes)?.action)
    }

    /// The actions with these ids, in one request (at most [`PER_PAGE_MAX`] ids).
    pub async fn get_actions(&self, ids: &[u64]) -> Result<Vec<Action>, HetznerError> {
        const OP: &str = "get_actions";
        let query: Vec<(&str, String)> = ids.iter().map(|id| ("id", id.to_string())).collect();
        let bytes = self
            .execute(OP, Method::GET, "actions", &query, None)
            .await
            .map_err(|failure| self.failure_to_error(OP, failure))?;
        Ok(decode::<ActionsEnvelope>(OP, &bytes)?.actions)
    }

    /// Polls an action until it succeeds (Ok), fails (`ActionFailed`) or outlasts
    /// `action_wait_ms_max` (`ActionTimedOut`). Polls start at `action_poll_ms_min` apart
    /// and back off to `action_poll_ms_max`, since every poll spends rate limit; the
    /// actions of concurrent waits are polled together, at most once per
    /// `action_batch_gap_ms`, so a burst of orders costs one poll per interval.
    pub async fn wait_for_action(&self, action: Action) -> Result<Action, HetznerError> {
        let _registration = ActionRegistration::new(self, action.id);
        self.wait_for_action_registered(action).await
    }

    async fn wait_for_action_registered(&self, action: Action) -> Result<Action, HetznerError> {
        let started = tokio::time::Instant::now();
        let wait_max = Duration::from_millis(self.config.action_wait_ms_max);
        let mut interval = Duration::from_millis(self.config.action_poll_ms_min.max(1));
        let interval_max = Duration::from_millis(self.config.action_poll_ms_max.max(1));
        let batch_gap = Duration::from_millis(self.config.action_batch_gap_ms);
        let mut current = action;
        loop {
            match current.status {
                ActionStatus::Success => return Ok(current),
                ActionStatus::Error => {
                    let (code, message) = current
                        .error
                        .map(|error| (error.code, error.message))
                        .unwrap_or_else(|| ("unknown".to_owned(), "no error given".to_owned()));
                    return Err(HetznerError::ActionFailed {
                        action_id: current.id,
                        command: current.command,
                        code,
                        message,
                    });
                }
                ActionStatus::Running => {}
            }
            let waited = started.elapsed();
            if waited >= wait_max {
                return Err(HetznerError::ActionTimedOut {
                    action_id: current.id,
                    command: current.command,
                    waited,
                });
            }
            let slept_from = tokio::time::Instant::now();
            tokio::time::sleep(interval.min(wait_max - waited)).await;
            interval = (interval * 2).min(interval_max);
            // Someone else's batch poll since we fell asleep may already have news.
            let (news, poll_ids) = {
                let mut batch = self.action_batch.lock().expect("action batch lock");
                let news = batch.latest.get(&current.id).cloned();
                let polled_since_sleep = batch.last_poll_at.is_some_and(|at| at >= slept_from);
                let gap_passed = batch.last_poll_at.is_none_or(|at| at.elapsed() >= batch_gap);
                let poll_ids = if !polled_since_sleep && gap_passed {
                    batch.last_poll_at = Some(tokio::time::Instant::now());
                    let mut ids: Vec<u64> = vec![current.id];
                    ids.extend(
                        batch
                            .wanted
                            .keys()
                            .copied()
                            .filter(|id| *id != current.id)
                            .take(PER_PAGE_MAX as usize - 1),
                    );
                    Some(ids)
                } else {
                    None
                };
                (news.filter(|_| polled_since_sleep), poll_ids)
            };
            if let Some(ids) = poll_ids {
                let actions = self.get_actions(&ids).await?;
                let mut batch = self.action_batch.lock().expect("action batch lock");
                for polled in actions {
                    if batch.wanted.contains_key(&polled.id) {
                        batch.latest.insert(polled.id, polled);
                    }
                }
                match batch.latest.get(&current.id) {
                    Some(polled) => current = polled.clone(),
                    None => {
                        return Err(HetznerError::NotFound {
                            what: format!("action {}", current.id),
                            message: "missing from the answer to GET /actions".to_owned(),
                        });
                    }
                }
            } else if let Some(news) = news {
                current = news;
            }
        }
    }

    // ---------------------------------------------------------------- catalog

    /// Every VM type with its prices and availability per location.
    pub async fn server_types(&self) -> Result<Vec<ServerType>, HetznerError> {
        const OP: &str = "list_server_types";
        let mut types = Vec::new();
        let mut page = 1;
        loop {
            let query = [("page", page.to_string()), ("per_page", PER_PAGE_MAX.to_string())];
            let bytes = self
                .execute(OP, Method::GET, "server_types", &query, None)
                .await
                .map_err(|failure| self.failure_to_error(OP, failure))?;
            let answer: ServerTypesEnvelope = decode(OP, &bytes)?;
            types.extend(answer.server_types);
            match next_page(OP, &answer.meta.pagination, page)? {
                Some(next) => page = next,
                None => return Ok(types),
            }
        }
    }

    /// Every location.
    pub async fn locations(&self) -> Result<Vec<Location>, HetznerError> {
        const OP: &str = "list_locations";
        let mut locations = Vec::new();
        let mut page = 1;
        loop {
            let query = [("page", page.to_string()), ("per_page", PER_PAGE_MAX.to_string())];
            let bytes = self
                .execute(OP, Method::GET, "locations", &query, None)
                .await
                .map_err(|failure| self.failure_to_error(OP, failure))?;
            let answer: LocationsEnvelope = decode(OP, &bytes)?;
            locations.extend(answer.locations);
            match next_page(OP, &answer.meta.pagination, page)? {
                Some(next) => page = next,
                None => return Ok(locations),
            }
        }
    }

    /// Checks that every configured VM type and location exists at Hetzner, and that
    /// each type is offered in each location; names the first one that is not.
    pub async fn check_catalog(
        &self,
        server_types: &[&str],
        locations: &[&str],
    ) -> Result<Vec<ServerType>, HetznerError> {
        let known_locations = self.locations().await?;
        for location in locations {
            if !known_locations.iter().any(|known| known.name == *location) {
                return Err(HetznerError::UnknownLocation {
                    name: (*location).to_owned(),
                    known: join_names(known_locations.iter().map(|known| known.name.as_str())),
                });
            }
        }
        let known_types = self.server_types().await?;
        for server_type in server_types {
            if !known_types.iter().any(|known| known.name == *server_type) {
                return Err(HetznerError::UnknownServerType {
                    name: (*server_type).to_owned(),
                    known: join_names(known_types.iter().map(|known| known.name.as_str())),
                });
            }
        }
        Ok(known_types)
    }

    // ---------------------------------------------------------------- SSH keys

    /// Makes sure the platform's SSH key exists under `name`; returns it. A key of that
    /// name with another public key is an error (we never replace a key silently).
    pub async fn ensure_ssh_key(&self, name: &str, public_key: &str) -> Result<SshKey, HetznerError> {
        const OP: &str = "create_ssh_key";
        let public_key = public_key.trim();
        if let Some(existing) = self.find_ssh_key(|key| key.name == name).await? {
            return same_key(existing, name, public_key);
        }
        let body = json!({
            "name": name,
            "public_key": public_key,
            "labels": { LABEL_PLATFORM: self.config.platform },
        });
        match self.execute(OP, Method::POST, "ssh_keys", &[], Some(&body)).await {
            Ok(bytes) => Ok(decode::<SshKeyEnvelope>(OP, &bytes)?.ssh_key),
            Err(Failure::Api { error, .. }) if error.code == "uniqueness_error" => {
                // Created meanwhile, or the same key exists under another name.
                if let Some(existing) = self.find_ssh_key(|key| key.name == name).await? {
                    return same_key(existing, name, public_key);
                }
                match self
                    .find_ssh_key(|key| key_body(&key.public_key) == key_body(public_key))
                    .await?
                {
                    Some(existing) => Ok(existing),
                    None => Err(HetznerError::Api {
                        operation: OP,
                        status: 409,
                        code: error.code,
                        message: error.message,
                        class: ErrorClass::Permanent,
                    }),
                }
            }
            Err(failure) => Err(self.failure_to_error(OP, failure)),
        }
    }

    async fn find_ssh_key(&self, matches: impl Fn(&SshKey) -> bool) -> Result<Option<SshKey>, HetznerError> {
        const OP: &str = "list_ssh_keys";
        let mut page = 1;
        loop {
            let query = [("page", page.to_string()), ("per_page", PER_PAGE_MAX.to_string())];
            let bytes = self
                .execute(OP, Method::GET, "ssh_keys", &query, None)
                .await
                .map_err(|failure| self.failure_to_error(OP, failure))?;
            let answer: SshKeysEnvelope = decode(OP, &bytes)?;
            if let Some(found) = answer.ssh_keys.into_iter().find(|key| matches(key)) {
                return Ok(Some(found));
            }
            match next_page(OP, &answer.meta.pagination, page)? {
                Some(next) => page = next,
                None => return Ok(None),
            }
        }
    }

    // ---------------------------------------------------------------- transport

    /// Sends one request, waiting out 429s (within `rate_limit_wait_ms_max`) and
    /// retrying transient failures (within `transient_retries_max`). Every request here
    /// is safe to repeat: reads, deletes (404 is success), and creates (a repeat meets
    /// `uniqueness_error`, which resolves to the existing object).
    async fn execute(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>, Failure> {
        let url = self
            .base_url
            .join(path)
            .map_err(|error| Failure::Other(HetznerError::Config(format!("path {path:?}: {error}"))))?;
        let rate_wait_max = Duration::from_millis(self.config.rate_limit_wait_ms_max);
        let mut rate_waited = Duration::ZERO;
        let mut transient_retries = 0;
        let mut backoff = Duration::from_millis(self.config.transient_backoff_ms.max(1));
        loop {
            // When the budget is nearly spent, requests take turns instead of racing
            // each other into 429s.
            let nearly_spent = {
                let status = *self.rate_limit.lock().expect("rate limit lock");
                status
                    .remaining
                    .is_some_and(|remaining| remaining < self.config.pace_below_remaining)
            };
            let pacing_turn = if nearly_spent {
                let turn = self.pacing.lock().await;
                let status = *self.rate_limit.lock().expect("rate limit lock");
                let now_ms = unix_now_ms();
                let interval = status.token_interval(now_ms);
                let since_ms = now_ms.saturating_sub(status.observed_at_unix_ms);
                // One request at a time sees the previous one's headers; only an
                // empty budget needs a wait (a Reset rounded to whole seconds makes
                // the per-token estimate coarse when few tokens are missing).
                if status.remaining == Some(0) && since_ms < interval.as_millis() as u64 {
                    tokio::time::sleep(interval - Duration::from_millis(since_ms)).await;
                }
                Some(turn)
            } else {
                None
            };
            let mut request = self.http.request(method.clone(), url.clone());
            if !query.is_empty() {
                request = request.query(query);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(source) => {
                    if transient_retries < self.config.transient_retries_max {
                        transient_retries += 1;
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                        continue;
                    }
                    return Err(Failure::Other(HetznerError::Transport { operation, source }));
                }
            };
            let status = response.status().as_u16();
            let now_ms = unix_now_ms();
            let observed = RateLimitStatus::from_headers(response.headers(), now_ms);
            if let Some(observed) = observed {
                *self.rate_limit.lock().expect("rate limit lock") = observed;
            }
            drop(pacing_turn);
            let bytes = match response.bytes().await {
                Ok(bytes) => bytes.to_vec(),
                Err(source) => {
                    if transient_retries < self.config.transient_retries_max {
                        transient_retries += 1;
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                        continue;
                    }
                    return Err(Failure::Other(HetznerError::Transport { operation, source }));
                }
            };
            if (200..300).contains(&status) {
                return Ok(bytes);
            }
            let error = parse_error_body(status, &bytes);
            let class = if error.code == "unknown" {
                classify_status(status)
            } else {
                classify_code(&error.code)
            };
            match class {
                ErrorClass::RateLimited => {
                    let retry_after = observed.unwrap_or_default().token_interval(now_ms);
                    if rate_waited + retry_after <= rate_wait_max {
                        tracing::debug!(
                            operation,
                            retry_after_ms = retry_after.as_millis() as u64,
                            "Hetzner rate limit: waiting"
                        );
                        tokio::time::sleep(retry_after).await;
                        rate_waited += retry_after;
                        continue;
                    }
                    return Err(Failure::Other(HetznerError::RateLimited { retry_after }));
                }
                ErrorClass::Transient if transient_retries < self.config.transient_retries_max => {
                    tracing::debug!(operation, status, code = %error.code, "Hetzner transient error: retrying");
                    transient_retries += 1;
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    continue;
                }
                _ => return Err(Failure::Api { status, error }),
            }
        }
    }

    fn failure_to_error(&self, operation: &'static str, failure: Failure) -> HetznerError {
        match failure {
            Failure::Other(error) => error,
            Failure::Api { status, error } => api_error(operation, status, error),
        }
    }
}

fn api_error(operation: &'static str, status: u16, error: ErrorBody) -> HetznerError {
    match error.code.as_str() {
        "unauthorized" | "token_readonly" => HetznerError::Unauthorized {
            code: error.code,
            message: error.message,
        },
        "not_found" => HetznerError::NotFound {
            what: operation.to_owned(),
            message: error.message,
        },
        "invalid_input" | "json_error" => HetznerError::InvalidInput {
            operation,
            fields: error.field_names(),
            code: error.code,
            message: error.message,
        },
        "resource_unavailable" => HetznerError::SoldOut {
            server_type: String::new(),
            location: String::new(),
            message: error.message,
        },
        code => HetznerError::Api {
            operation,
            status,
            class: if code == "unknown" {
                classify_status(status)
            } else {
                classify_code(code)
            },
            code: error.code,
            message: error.message,
        },
    }
}

/// The error body of a non-2xx answer; one that is not Hetzner's error JSON becomes
/// code `unknown` with (the start of) the body as its message.
fn parse_error_body(status: u16, bytes: &[u8]) -> ErrorBody {
    match serde_json::from_slice::<ErrorEnvelope>(bytes) {
        Ok(envelope) => envelope.error,
        Err(_) => ErrorBody {
            code: "unknown".to_owned(),
            message: format!(
                "HTTP {status} with a body that is not Hetzner's error JSON: {:?}",
                quote(bytes)
            ),
            details: None,
        },
    }
}

fn decode<T: DeserializeOwned>(operation: &'static str, bytes: &[u8]) -> Result<T, HetznerError> {
    serde_json::from_slice(bytes).map_err(|error| HetznerError::Malformed {
        operation,
        reason: format!("{error} in {:?}", quote(bytes)),
    })
}

fn quote(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(QUOTED_BODY_CHARS_MAX)
        .collect()
}

fn next_page(operation: &'static str, pagination: &Pagination, page: u64) -> Result<Option<u64>, HetznerError> {
    match pagination.next_page {
        None => Ok(None),
        Some(next) if next <= page => Err(HetznerError::Malformed {
            operation,
            reason: format!("page {page} names next_page {next}, which does not move forward"),
        }),
        Some(next) if next > LIST_PAGES_MAX => Err(HetznerError::Malformed {
            operation,
            reason: format!("more than {LIST_PAGES_MAX} pages"),
        }),
        Some(next) => Ok(Some(next)),
    }
}

fn same_key(existing: SshKey, name: &str, public_key: &str) -> Result<SshKey, HetznerError> {
    if key_body(&existing.public_key) == key_body(public_key) {
        Ok(existing)
    } else {
        Err(HetznerError::Config(format!(
            "an SSH key named {name:?} exists at Hetzner with another public key (fingerprint {})",
            existing.fingerprint
        )))
    }
}

/// `ssh-ed25519 AAAA... comment` → `ssh-ed25519 AAAA...` (comments do not matter).
fn key_body(public_key: &str) -> String {
    public_key.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

fn join_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

/// A platform name must be usable in a hostname and in a label value.
fn validate_platform_name(platform: &str) -> Result<(), HetznerError> {
    let valid = !platform.is_empty()
        && platform.len() <= PLATFORM_NAME_CHARS_MAX
        && platform
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !platform.starts_with('-')
        && !platform.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(HetznerError::Config(format!(
            "platform name {platform:?} must be 1 to {PLATFORM_NAME_CHARS_MAX} lowercase letters, digits or inner dashes"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_interval_follows_the_reset_header() {
        // 3600/h, budget empty, full again in an hour: one request per second.
        let status = RateLimitStatus {
            limit: Some(3_600),
            remaining: Some(0),
            reset_unix_s: Some(1_000 + 3_600),
            observed_at_unix_ms: 1_000_000,
        };
        assert_eq!(status.token_interval(1_000_000), Duration::from_secs(1));
        // A refill 60 times faster: full again in a minute.
        let fast = RateLimitStatus {
            reset_unix_s: Some(1_000 + 60),
            ..status
        };
        assert_eq!(fast.token_interval(1_000_000), Duration::from_millis(16));
        // No headers at all: assume Hetzner's default.
        assert_eq!(RateLimitStatus::default().token_interval(5), Duration::from_secs(1));
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let config = ClientConfig::new("http://127.0.0.1:1/v1", SecretString::from("sekrit-token-123"));
        let client = HetznerClient::new(config.clone()).unwrap();
        assert!(!format!("{config:?}").contains("sekrit-token-123"));
        assert!(!format!("{client:?}").contains("sekrit-token-123"));
    }

    #[test]
    fn a_bad_platform_name_or_base_url_is_refused_by_name() {
        let mut config = ClientConfig::new("http://127.0.0.1:1/v1", SecretString::from("t"));
        config.platform = "Pay Per Play".into();
        let error = HetznerClient::new(config).unwrap_err();
        assert!(error.to_string().contains("\"Pay Per Play\""), "{error}");
        let error = HetznerClient::new(ClientConfig::new("ftp://x/v1", SecretString::from("t"))).unwrap_err();
        assert!(error.to_string().contains("not http(s)"), "{error}");
    }

    #[test]
    fn vm_names_and_labels_derive_from_the_command() {
        let client = HetznerClient::new(ClientConfig::new("http://127.0.0.1:1/v1", SecretString::from("t"))).unwrap();
        assert_eq!(client.vm_name(42), "payperplay-cmd-42");
        let order = VmOrder {
            command_id: 42,
            node_id: 7,
            server_type: "cpx42".into(),
            location: "fsn1".into(),
            ssh_keys: vec![],
            user_data: String::new(),
        };
        let labels = client.vm_labels(&order);
        assert_eq!(labels[LABEL_NODE], "7");
        assert_eq!(labels[LABEL_COMMAND], "42");
        assert_eq!(labels[LABEL_PLATFORM], "payperplay");
    }

    #[test]
    fn a_pagination_that_does_not_advance_is_malformed() {
        let pagination = Pagination {
            page: 2,
            per_page: 50,
            previous_page: Some(1),
            next_page: Some(2),
            last_page: Some(3),
            total_entries: Some(120),
        };
        let error = next_page("list_servers", &pagination, 2).unwrap_err();
        assert!(error.to_string().contains("does not move forward"), "{error}");
    }
}
