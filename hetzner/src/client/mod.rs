//! `HetznerClient`: the Hetzner Cloud API calls the platform needs, with the rate limit
//! obeyed, bounded retries, and orders that are idempotent by VM name. By concern:
//! `transport` (one request: rate limit, retries, error answers), `servers` (VMs),
//! `actions` (waiting for actions, polled together), `catalog` (VM types, locations,
//! SSH keys).

mod actions;
mod catalog;
mod servers;
mod transport;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

use crate::error::HetznerError;
use crate::model::{Action, Pagination, Server};

use actions::ActionBatch;
pub use transport::RateLimitStatus;

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

impl std::fmt::Debug for HetznerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HetznerClient")
            .field("base_url", &self.base_url.as_str())
            .field("platform", &self.config.platform)
            .finish_non_exhaustive()
    }
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

    /// Every item of a paged list (`GET path?page=..`), all pages read: `items` takes
    /// an answer apart into its items and its pagination.
    async fn list_all<E: DeserializeOwned, T>(
        &self,
        operation: &'static str,
        path: &str,
        items: impl Fn(E) -> (Vec<T>, Pagination),
    ) -> Result<Vec<T>, HetznerError> {
        let mut all = Vec::new();
        let mut page = 1;
        loop {
            let query = [("page", page.to_string()), ("per_page", PER_PAGE_MAX.to_string())];
            let bytes = self
                .execute(operation, Method::GET, path, &query, None)
                .await
                .map_err(|failure| self.failure_to_error(operation, failure))?;
            let (found, pagination) = items(decode::<E>(operation, &bytes)?);
            all.extend(found);
            match next_page(operation, &pagination, page)? {
                Some(next) => page = next,
                None => return Ok(all),
            }
        }
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
