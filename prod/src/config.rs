//! `payperplay serve` configuration: a TOML file (see `prod/payperplay.example.toml`)
//! plus environment overrides. Unknown keys are errors, so a typo does not silently
//! fall back to a default.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use payperplay_core::CoreConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

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
    /// Keys that seal secrets at rest (RCON passwords).
    #[serde(default)]
    pub secrets: SecretsConfig,
    /// The cloud provider (Hetzner Cloud). Without it the fleet is the dedicated nodes
    /// alone and every `ProvisionNode` fails, naming the missing section.
    #[serde(default)]
    pub cloud: Option<CloudConfig>,
}

/// `[cloud]`: Hetzner Cloud, where the platform orders and deletes its VMs. The token
/// comes from here or `PAYPERPLAY_HETZNER_TOKEN` (preferred); it is never logged and
/// `check-config` shows it redacted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudConfig {
    /// The API base URL including `/v1` (a fake's `http://127.0.0.1:PORT/v1` in tests).
    pub api_endpoint: String,
    pub token: SecretString,
    /// The value of the platform label and the prefix of every VM name.
    pub platform: String,
    /// The image VMs are created from.
    pub image: String,
    /// The platform's SSH key: its name at Hetzner and its public half (one line),
    /// put on every VM and into the worker's cloud-init.
    pub ssh_key_name: String,
    pub ssh_public_key: String,
    /// Where a worker POSTs readiness from cloud-init; empty for the marker file alone.
    pub ready_url: String,
    /// An order not finished (VM created and started) within this bound is deleted and
    /// fails; the core retries elsewhere.
    pub ready_wait_ms_max: u64,
    /// How long one request may wait out 429 answers before the order fails as rate
    /// limited (the core then backs off).
    pub rate_limit_wait_ms_max: u64,
    pub request_timeout_ms: u64,
    /// How often the provider's VMs are compared with the fleet.
    pub reconcile_interval_ms: u64,
    /// A VM of the platform the core does not know is deleted once reconciliation has
    /// seen it unknown this long (an order in flight is known: its node is).
    pub reconcile_grace_ms: u64,
    /// How a new VM is reached: SSH (user, port, the private half of
    /// `ssh_public_key`, pinned host keys; none pinned: the first key seen is pinned
    /// for this process) to the engine's socket. The fake Hetzner API names each
    /// VM's own SSH port and game ports in labels, which win over these.
    pub ssh_user: String,
    pub ssh_port: u16,
    pub ssh_key_file: String,
    pub ssh_host_keys: Vec<String>,
    pub engine_socket_path: String,
    /// Game ports handed out on a VM, "first-last"; RCON ports start
    /// `rcon_port_offset` above the first.
    pub game_ports: PortRange,
    pub rcon_port_offset: u16,
    /// A path on the VM on the engine's file system (free-disk check).
    pub data_path: String,
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            api_endpoint: "https://api.hetzner.cloud/v1".to_string(),
            token: SecretString::from(String::new()),
            platform: "payperplay".to_string(),
            image: "ubuntu-24.04".to_string(),
            ssh_key_name: "payperplay".to_string(),
            ssh_public_key: String::new(),
            ready_url: String::new(),
            ready_wait_ms_max: 600_000,
            rate_limit_wait_ms_max: 120_000,
            request_timeout_ms: 30_000,
            reconcile_interval_ms: 60_000,
            reconcile_grace_ms: 900_000,
            ssh_user: default_ssh_user(),
            ssh_port: default_ssh_port(),
            ssh_key_file: String::new(),
            ssh_host_keys: Vec::new(),
            engine_socket_path: default_engine_socket(),
            game_ports: default_game_ports(),
            rcon_port_offset: default_rcon_ports_first() - default_game_ports().first,
            data_path: default_data_path(),
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
pub struct AuthConfig {
    pub session_ttl_ms: u64,
    pub verification_ttl_ms: u64,
    /// Login attempts allowed per client address per minute.
    pub login_per_minute: u32,
    /// Registrations allowed per client address per minute.
    pub register_per_minute: u32,
    /// Accounts registered with these addresses get the admin role.
    pub admin_emails: Vec<String>,
    pub argon2: Argon2Config,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            session_ttl_ms: 30 * 24 * 3_600_000,
            verification_ttl_ms: 48 * 3_600_000,
            login_per_minute: 10,
            register_per_minute: 5,
            admin_emails: Vec::new(),
            argon2: Argon2Config::default(),
        }
    }
}

/// argon2id cost parameters (defaults: OWASP's 19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Config {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Config {
    fn default() -> Self {
        Argon2Config {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
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
    /// owner of the core per database) before giving up.
    pub journal_lock_wait_ms: u64,
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    pub dedicated_nodes: Vec<DedicatedNodeConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedicatedNodeConfig {
    pub name: String,
    pub capacity_mib: u32,
    #[serde(default)]
    pub monthly_cost_micros: u64,
    /// Whether this machine also runs the platform (gets a larger reserve).
    pub is_system: bool,
    /// How to reach the node's Docker engine. A node without one takes no containers
    /// (a start placed on it fails, naming the node).
    #[serde(default)]
    pub engine: Option<EngineConfig>,
    /// The address game servers bind on the node, where status pings reach them.
    #[serde(default = "default_bind_address")]
    pub bind_address: IpAddr,
    /// Game ports handed out on this node, as "first-last".
    #[serde(default = "default_game_ports")]
    pub game_ports: PortRange,
    /// The RCON port of game port `p` is `p - first game port + rcon_ports_first`.
    #[serde(default = "default_rcon_ports_first")]
    pub rcon_ports_first: u16,
    /// A path on the node on the engine's file system (for the free-disk check).
    #[serde(default = "default_data_path")]
    pub data_path: String,
}

fn default_bind_address() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

fn default_game_ports() -> PortRange {
    PortRange {
        first: 25565,
        last: 25664,
    }
}

fn default_rcon_ports_first() -> u16 {
    35565
}

fn default_data_path() -> String {
    "/var/lib/docker".to_string()
}

/// A port range written "first-last" (both included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bad = || {
            serde::de::Error::custom(format!(
                "port range {text:?}: expected \"first-last\", e.g. \"25565-25664\""
            ))
        };
        let (first, last) = text.split_once('-').ok_or_else(bad)?;
        let first: u16 = first.trim().parse().map_err(|_| bad())?;
        let last: u16 = last.trim().parse().map_err(|_| bad())?;
        if first > last {
            return Err(bad());
        }
        Ok(PortRange { first, last })
    }
}

/// A node's Docker engine: its unix socket on this machine, or the node's socket
/// through SSH.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// The engine's unix socket (on the node, when `ssh` is set).
    #[serde(default = "default_engine_socket")]
    pub socket_path: String,
    #[serde(default)]
    pub ssh: Option<SshNodeConfig>,
}

fn default_engine_socket() -> String {
    "/var/run/docker.sock".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshNodeConfig {
    pub host: String,
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    #[serde(default = "default_ssh_user")]
    pub user: String,
    /// The platform's private key (OpenSSH format).
    pub key_file: String,
    /// The node's pinned host keys (`ssh-ed25519 AAAA...`).
    #[serde(default)]
    pub host_keys: Vec<String>,
    /// With no pinned key: accept the first key seen (for this process only).
    #[serde(default)]
    pub learn_host_key_on_first_use: bool,
}

fn default_ssh_port() -> u16 {
    22
}

fn default_ssh_user() -> String {
    "root".to_string()
}

/// The servers' containers and their observers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainersConfig {
    /// The platform label's value: reconciliation only touches containers with it.
    pub platform: String,
    /// Image of every server (production: the itzg Minecraft image; tests: the test image).
    pub image: String,
    /// Server software (`TYPE`): vanilla, paper, purpur, fabric, forge.
    pub software: payperplay_nodes::ServerSoftware,
    /// Minecraft version (`VERSION`).
    pub version: String,
    pub motd: String,
    pub max_players: u32,
    /// Extra environment for every container (tests: `TESTGAME_BOOT_DELAY_MS`).
    pub extra_env: std::collections::BTreeMap<String, String>,
    /// A started container whose game port does not answer a status ping within this
    /// bound is killed and reported exited (the core then tries the start again).
    pub boot_timeout_ms: u64,
    /// How often running servers' player counts are read by status ping.
    pub player_poll_interval_ms: u64,
    /// How often each node's engine is probed.
    pub probe_interval_ms: u64,
    /// Consecutive failed probes after which a node is reported lost.
    pub probe_misses_max: u32,
    /// How often containers are listed by label and compared with the core.
    pub reconcile_interval_ms: u64,
    /// A container the core does not know is stopped and removed after this long.
    pub unknown_grace_ms: u64,
    /// Seconds the engine gives a stopping server before SIGKILL (above a world save).
    pub stop_timeout_s: u32,
}

impl Default for ContainersConfig {
    fn default() -> Self {
        ContainersConfig {
            platform: "payperplay".to_string(),
            image: payperplay_nodes::spec::ITZG_IMAGE.to_string(),
            software: payperplay_nodes::ServerSoftware::Vanilla,
            version: "LATEST".to_string(),
            motd: "A PayPerPlay server".to_string(),
            max_players: 20,
            extra_env: std::collections::BTreeMap::new(),
            boot_timeout_ms: 300_000,
            player_poll_interval_ms: 10_000,
            probe_interval_ms: 5_000,
            probe_misses_max: 3,
            reconcile_interval_ms: 60_000,
            unknown_grace_ms: 120_000,
            stop_timeout_s: payperplay_nodes::driver::STOP_TIMEOUT_S_DEFAULT,
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
        let text = include_str!("../payperplay.example.toml");
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
        let text = include_str!("../payperplay.example.toml");
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
