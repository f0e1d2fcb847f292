//! `payperplay serve` configuration: a TOML file (see `prod/payperplay.example.toml`)
//! plus environment overrides. Unknown keys are errors, so a typo does not silently
//! fall back to a default.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use payperplay_core::CoreConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

mod accounts;
mod fleet;

pub use accounts::*;
pub use fleet::*;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {source}")]
    Parse { path: String, source: Box<toml::de::Error> },
    #[error("environment variable {name}: {message}")]
    Env { name: &'static str, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub smtp: SmtpConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    /// The loop that owns the core: its input queue, command retries, journal lock.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// The drivers that carry out commands (for now in-process fakes).
    #[serde(default)]
    pub drivers: DriversConfig,
    /// The core's configuration (tiers, billing, queue, catalog, scaling policy).
    #[serde(default)]
    pub core: CoreConfig,
    /// Dedicated machines added to the fleet on the first start.
    #[serde(default)]
    pub fleet: FleetConfig,
    /// The players' front door (the hostname router with wake-on-join).
    #[serde(default)]
    pub router: payperplay_router::RouterConfig,
    /// The servers' containers on the nodes' Docker engines and the observers that
    /// watch them.
    #[serde(default)]
    pub containers: ContainersConfig,
    /// Keys that seal secrets at rest (RCON passwords, OAuth provider tokens).
    #[serde(default)]
    pub secrets: SecretsConfig,
    /// Sign-in with OAuth 2.0 providers (authorization code with PKCE).
    #[serde(default)]
    pub oauth: OAuthConfig,
    /// How long finished records are kept before the pruner deletes them.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// The player router as its own process (`payperplay router`) and `serve`'s internal
    /// routes it asks.
    #[serde(default)]
    pub router_link: RouterLinkConfig,
    /// The cloud provider (Hetzner Cloud). Without it the fleet is the dedicated nodes
    /// alone and every `ProvisionNode` fails, naming the missing section.
    #[serde(default)]
    pub cloud: Option<CloudConfig>,
}

/// Pruning of finished records (the journal itself is kept whole: it is what a
/// restart replays and `export-trace` reads). 0 keeps a kind forever.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// How often the pruner runs.
    pub interval_ms: u64,
    /// Succeeded commands, after they finished (the newest command is always kept).
    pub commands_keep_ms: u64,
    /// Sent and failed mail (bodies included), after it was queued.
    pub outbox_keep_ms: u64,
    /// Sessions and verification codes, after they expired or were used or revoked.
    pub sessions_keep_ms: u64,
    /// Stored answers to `Idempotency-Key` requests, after they were claimed, and
    /// request outcomes (`GET /v1/requests/{id}`), after the request.
    pub idempotency_keys_keep_ms: u64,
    /// Journal rows covered by a snapshot taken this long ago (kept for `export-trace`
    /// and `export-journal` until then; 0 keeps the journal whole).
    pub journal_keep_ms: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        const DAY_MS: u64 = 24 * 3_600_000;
        RetentionConfig {
            interval_ms: 3_600_000,
            commands_keep_ms: 30 * DAY_MS,
            outbox_keep_ms: 30 * DAY_MS,
            sessions_keep_ms: 7 * DAY_MS,
            idempotency_keys_keep_ms: 7 * DAY_MS,
            journal_keep_ms: 30 * DAY_MS,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// Base URL put into verification mails.
    pub public_base_url: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit_bytes: 16 * 1024,
            public_base_url: "http://127.0.0.1:8080".to_string(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/db`. Override: `PAYPERPLAY_DATABASE_URL`
    /// or `DATABASE_URL`.
    pub url: SecretString,
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: SecretString::from("postgres://payperplay@127.0.0.1:5432/payperplay"),
            max_connections: 16,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain SMTP: only for a relay on loopback.
    None,
    StartTls,
    Tls,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub from: String,
    /// A mail is tried this many times before it is marked failed.
    pub send_attempts_max: u32,
    /// Backoff after the first failure; doubles per attempt.
    pub retry_backoff_ms: u64,
    /// How often the mailer looks for due mail when not woken earlier.
    pub poll_interval_ms: u64,
    pub timeout_ms: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: "127.0.0.1".to_string(),
            port: 25,
            tls: SmtpTls::None,
            username: None,
            password: None,
            from: "PayPerPlay <noreply@payperplay.invalid>".to_string(),
            send_attempts_max: 8,
            retry_backoff_ms: 2_000,
            poll_interval_ms: 5_000,
            timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Capacity of the channel into the core task; a full channel answers 503.
    pub input_queue_len_max: usize,
    /// Commands retried this many times before being reported failed to the core.
    pub command_attempts_max: u32,
    pub command_retry_backoff_ms: u64,
    /// How long a starting runtime waits for another runtime's journal lock (one
    /// owner of the core per database) before standing by (the API answers 503 and
    /// the runtime leads as soon as the other lets the lock go).
    pub journal_lock_wait_ms: u64,
    /// A snapshot of the core every this many inputs (0: not by count), and every
    /// `snapshot_every_ms` when inputs came since the last one (0: not by time); also
    /// on graceful shutdown. Recovery replays only the journal after the newest.
    pub snapshot_every_inputs: u64,
    pub snapshot_every_ms: u64,
    /// Tests only (not read from files): called with each input before the core
    /// handles it, to inject a panic.
    #[serde(skip)]
    pub input_hook: Option<crate::runtime::InputHook>,
    /// Older files set the fake drivers' delays here; `Config::from_toml` moves them
    /// to `[drivers]`.
    fake_boot_ms: Option<u64>,
    fake_provision_ms: Option<u64>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            input_queue_len_max: 4096,
            command_attempts_max: 3,
            command_retry_backoff_ms: 1_000,
            journal_lock_wait_ms: 10_000,
            snapshot_every_inputs: 100_000,
            snapshot_every_ms: 600_000,
            input_hook: None,
            fake_boot_ms: None,
            fake_provision_ms: None,
        }
    }
}

/// The drivers. Containers are real (`[containers]`, the nodes' `engine`), VMs come
/// from `[cloud]`; these old fake delays are accepted and ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriversConfig {
    /// Read for older files and ignored: containers run on real engines now.
    pub fake_boot_ms: u64,
    /// Delay the fake cloud provider waits before a VM is ready.
    pub fake_provision_ms: u64,
}

impl Default for DriversConfig {
    fn default() -> Self {
        DriversConfig {
            fake_boot_ms: 2_000,
            fake_provision_ms: 30_000,
        }
    }
}

/// Keys that seal secrets at rest (AES-256-GCM). Prefer the environment:
/// `PAYPERPLAY_SECRET_KEY` = `ID:HEX[,ID:HEX...]` (64 hex digits each; the first
/// seals new values, the others only open old ones). Never printed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    pub keys: Vec<SecretKeyConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyConfig {
    pub id: u32,
    pub key_hex: SecretString,
}

/// `payperplay router` runs the `[router]` section as its own process and asks `serve`
/// at `api_url`; both sides hold the same `token` (`PAYPERPLAY_ROUTER_TOKEN`). `serve`
/// offers its internal router routes only when a token is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterLinkConfig {
    /// `serve`'s API as the router process reaches it. Override: `PAYPERPLAY_ROUTER_API_URL`.
    pub api_url: String,
    /// The shared secret. Override: `PAYPERPLAY_ROUTER_TOKEN`. Never printed.
    pub token: Option<SecretString>,
    /// Bound on one request of the router process to `serve`.
    pub request_timeout_ms: u64,
}

impl Default for RouterLinkConfig {
    fn default() -> Self {
        RouterLinkConfig {
            api_url: "http://127.0.0.1:8080".to_string(),
            token: None,
            request_timeout_ms: 5_000,
        }
    }
}

impl Config {
    /// Reads `path` (when given), then applies environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Config::from_toml(&text).map_err(|source| ConfigError::Parse {
                    path: path.display().to_string(),
                    source: Box::new(source),
                })?
            }
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        let mut config: Config = toml::from_str(text)?;
        // Backward compatibility: the fake drivers' delays used to live in [runtime].
        if let Some(boot_ms) = config.runtime.fake_boot_ms.take() {
            config.drivers.fake_boot_ms = boot_ms;
        }
        if let Some(provision_ms) = config.runtime.fake_provision_ms.take() {
            config.drivers.fake_provision_ms = provision_ms;
        }
        Ok(config)
    }

    /// Environment overrides; `lookup` is `std::env::var` outside tests.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(url) = lookup("PAYPERPLAY_DATABASE_URL").or_else(|| lookup("DATABASE_URL")) {
            self.database.url = SecretString::from(url);
        }
        if let Some(listen) = lookup("PAYPERPLAY_LISTEN") {
            self.http.listen = listen.parse().map_err(|_| ConfigError::Env {
                name: "PAYPERPLAY_LISTEN",
                message: "expected an address like 127.0.0.1:8080".to_string(),
            })?;
        }
        if let Some(listen) = lookup("PAYPERPLAY_ROUTER_LISTEN") {
            self.router.listen = listen.parse().map_err(|_| ConfigError::Env {
                name: "PAYPERPLAY_ROUTER_LISTEN",
                message: "expected an address like 0.0.0.0:25565".to_string(),
            })?;
        }
        if let Some(url) = lookup("PAYPERPLAY_ROUTER_API_URL") {
            self.router_link.api_url = url;
        }
        if let Some(token) = lookup("PAYPERPLAY_ROUTER_TOKEN").filter(|token| !token.is_empty()) {
            self.router_link.token = Some(SecretString::from(token));
        }
        if let Some(url) = lookup("PAYPERPLAY_PUBLIC_BASE_URL") {
            self.http.public_base_url = url;
        }
        if let Some(host) = lookup("PAYPERPLAY_SMTP_HOST") {
            self.smtp.host = host;
        }
        if let Some(port) = lookup("PAYPERPLAY_SMTP_PORT") {
            self.smtp.port = port.parse().map_err(|_| ConfigError::Env {
                name: "PAYPERPLAY_SMTP_PORT",
                message: "expected a port number".to_string(),
            })?;
        }
        if let Some(username) = lookup("PAYPERPLAY_SMTP_USERNAME") {
            self.smtp.username = Some(username);
        }
        if let Some(password) = lookup("PAYPERPLAY_SMTP_PASSWORD") {
            self.smtp.password = Some(SecretString::from(password));
        }
        if let Some(from) = lookup("PAYPERPLAY_SMTP_FROM") {
            self.smtp.from = from;
        }
        if let Some(keys) = lookup("PAYPERPLAY_SECRET_KEY") {
            let mut parsed = Vec::new();
            for part in keys.split(',').map(str::trim).filter(|part| !part.is_empty()) {
                let (id, key_hex) = part.split_once(':').ok_or_else(|| ConfigError::Env {
                    name: "PAYPERPLAY_SECRET_KEY",
                    message: "expected ID:HEX[,ID:HEX...]".to_string(),
                })?;
                let id = id.parse().map_err(|_| ConfigError::Env {
                    name: "PAYPERPLAY_SECRET_KEY",
                    message: "a key id is not a number".to_string(),
                })?;
                parsed.push(SecretKeyConfig {
                    id,
                    key_hex: SecretString::from(key_hex.to_string()),
                });
            }
            self.secrets.keys = parsed;
        }
        if let Some(token) = lookup("PAYPERPLAY_HETZNER_TOKEN") {
            self.cloud.get_or_insert_with(CloudConfig::default).token = SecretString::from(token);
        }
        if let Some(emails) = lookup("PAYPERPLAY_ADMIN_EMAILS") {
            self.auth.admin_emails = emails
                .split(',')
                .map(|email| email.trim().to_lowercase())
                .filter(|email| !email.is_empty())
                .collect();
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.database.url.expose_secret().is_empty() {
            return Err(ConfigError::Invalid("database.url is empty".to_string()));
        }
        if self.smtp.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "smtp.from {:?} is not a mailbox",
                self.smtp.from
            )));
        }
        if self.smtp.send_attempts_max == 0 || self.runtime.command_attempts_max == 0 {
            return Err(ConfigError::Invalid(
                "smtp.send_attempts_max and runtime.command_attempts_max must be at least 1".to_string(),
            ));
        }
        if self.runtime.input_queue_len_max == 0 {
            return Err(ConfigError::Invalid(
                "runtime.input_queue_len_max must be at least 1".to_string(),
            ));
        }
        if self.auth.login_per_minute == 0 || self.auth.register_per_minute == 0 {
            return Err(ConfigError::Invalid(
                "auth.login_per_minute and auth.register_per_minute must be at least 1".to_string(),
            ));
        }
        self.validate_accounts()?;
        if let Some(cloud) = &self.cloud {
            if cloud.token.expose_secret().is_empty() {
                return Err(ConfigError::Invalid(
                    "cloud.token is empty: set it or PAYPERPLAY_HETZNER_TOKEN".to_string(),
                ));
            }
            if cloud.ssh_public_key.trim().is_empty() {
                return Err(ConfigError::Invalid(
                    "cloud.ssh_public_key is empty: VMs need the platform's SSH key".to_string(),
                ));
            }
            if cloud.learn_host_key_on_first_use && !cloud.ssh_host_keys.is_empty() {
                return Err(ConfigError::Invalid(
                    "cloud.learn_host_key_on_first_use with cloud.ssh_host_keys: pin the configured keys or learn, \
                     not both"
                        .to_string(),
                ));
            }
            if cloud.ready_wait_ms_max == 0 || cloud.reconcile_interval_ms == 0 {
                return Err(ConfigError::Invalid(
                    "cloud.ready_wait_ms_max and cloud.reconcile_interval_ms must be at least 1".to_string(),
                ));
            }
        }
        for node in &self.fleet.dedicated_nodes {
            if node.capacity_mib == 0 || node.name.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "fleet.dedicated_nodes: {:?} needs a name and a capacity",
                    node.name
                )));
            }
        }
        let containers = &self.containers;
        if containers.player_poll_interval_ms == 0
            || containers.probe_interval_ms == 0
            || containers.reconcile_interval_ms == 0
            || containers.probe_misses_max == 0
        {
            return Err(ConfigError::Invalid(
                "containers: player_poll_interval_ms, probe_interval_ms, reconcile_interval_ms and \
                 probe_misses_max must be at least 1"
                    .to_string(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_env_overrides_apply() {
        let text = include_str!("../../payperplay.example.toml");
        let mut config = Config::from_toml(text).expect("example config parses");
        config.validate().expect("example config is valid");
        assert_eq!(config.fleet.dedicated_nodes.len(), 1);
        assert_eq!(config.core.tiers_mib, vec![2048, 4096, 8192, 16384, 32768]);
        assert_eq!(config.core.lifecycle.idle_sleep_after_ms, 10 * 60 * 1000);
        config
            .apply_env(|name| match name {
                "PAYPERPLAY_LISTEN" => Some("127.0.0.1:9999".to_string()),
                "DATABASE_URL" => Some("postgres://x@127.0.0.1/y".to_string()),
                "PAYPERPLAY_SMTP_PORT" => Some("2525".to_string()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.http.listen.port(), 9999);
        assert_eq!(config.smtp.port, 2525);
        assert_eq!(config.database.url.expose_secret(), "postgres://x@127.0.0.1/y");
    }

    #[test]
    fn unknown_keys_and_bad_env_are_errors() {
        let error = Config::from_toml("[http]\nlisten_address = \"x\"\n").unwrap_err();
        assert!(error.to_string().contains("listen_address"), "{error}");
        let mut config = Config::default();
        let error = config
            .apply_env(|name| (name == "PAYPERPLAY_SMTP_PORT").then(|| "nope".to_string()))
            .unwrap_err();
        assert!(error.to_string().contains("PAYPERPLAY_SMTP_PORT"));
    }

    #[test]
    fn fake_driver_delays_in_the_old_runtime_section_still_apply() {
        let config = Config::from_toml("[runtime]\nfake_boot_ms = 7\nfake_provision_ms = 9\n").unwrap();
        assert_eq!((config.drivers.fake_boot_ms, config.drivers.fake_provision_ms), (7, 9));
        assert_eq!(config.runtime.fake_boot_ms, None, "moved, not kept twice");
        let config = Config::from_toml("[drivers]\nfake_boot_ms = 11\n").unwrap();
        assert_eq!(config.drivers.fake_boot_ms, 11);
        assert_eq!(
            config.drivers.fake_provision_ms,
            DriversConfig::default().fake_provision_ms
        );
    }

    #[test]
    fn nodes_name_their_engine_and_ports_and_secret_keys_come_from_the_environment() {
        let text = include_str!("../../payperplay.example.toml");
        let config = Config::from_toml(text).unwrap();
        let node = &config.fleet.dedicated_nodes[0];
        assert_eq!(
            node.game_ports,
            PortRange {
                first: 25565,
                last: 25664
            }
        );
        let engine = node.engine.as_ref().expect("the example's node has an engine");
        assert_eq!(engine.socket_path, "/var/run/docker.sock");
        assert!(engine.ssh.is_none());
        let error = Config::from_toml(
            "[[fleet.dedicated_nodes]]\nname = \"a\"\ncapacity_mib = 1\nis_system = false\ngame_ports = \"9-1\"\n",
        )
        .unwrap_err();
        assert!(error.to_string().contains("port range \"9-1\""), "{error}");
        let mut config = Config::default();
        let key = "ab".repeat(32);
        config
            .apply_env(|name| (name == "PAYPERPLAY_SECRET_KEY").then(|| format!("2:{key},1:{}", "cd".repeat(32))))
            .unwrap();
        assert_eq!(config.secrets.keys.len(), 2);
        assert_eq!(config.secrets.keys[0].id, 2, "the first key seals");
        assert_eq!(config.secrets.keys[0].key_hex.expose_secret(), key);
        assert!(!format!("{config:?}").contains(&key), "keys never show in debug output");
        let error = Config::default()
            .apply_env(|name| (name == "PAYPERPLAY_SECRET_KEY").then(|| "nokeyid".to_string()))
            .unwrap_err();
        assert!(error.to_string().contains("PAYPERPLAY_SECRET_KEY"), "{error}");
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let mut config = Config::default();
        config.database.url = SecretString::from("postgres://u:hunter2@127.0.0.1/db");
        config.smtp.password = Some(SecretString::from("smtp-hunter2"));
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
