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
    /// Stored answers to `Idempotency-Key` requests, after they were claimed.
    pub idempotency_keys_keep_ms: u64,
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
    /// Login attempts allowed per client address (an IPv6 /64) per minute.
    pub login_per_minute: u32,
    /// Registrations allowed per client address (an IPv6 /64) per minute.
    pub register_per_minute: u32,
    /// Ignored: nobody becomes admin by registering. An operator grants the role with
    /// `payperplay admin grant EMAIL` (audited); `serve` warns when this is set.
    pub admin_emails: Vec<String>,
    pub argon2: Argon2Config,
    /// Login attempts allowed per account (address typed) per minute, from anywhere.
    pub login_per_account_per_minute: u32,
    /// Authenticated requests that change something, per user per minute.
    pub mutations_per_user_per_minute: u32,
    /// Account mails (verification, reset, "you have an account") per user per day.
    pub account_mails_per_day: u32,
    /// Unverified accounts older than this are deleted (and their address freed).
    pub unverified_purge_after_ms: u64,
    /// How long a password reset link works.
    pub password_reset_ttl_ms: u64,
    /// Lifetime of an API token when its request names none, and the longest allowed.
    pub api_token_ttl_ms_default: u64,
    pub api_token_ttl_ms_max: u64,
    /// Live API tokens per user at most.
    pub api_tokens_per_user_max: u32,
    /// Servers (not deleted) per user at most.
    pub servers_per_user_max: u32,
    /// Password hashes computed at once at most (each takes `argon2.memory_kib`).
    pub password_hashing_concurrency_max: u32,
    /// Keys each rate limiter remembers at most (oldest forgotten first).
    pub rate_limiter_keys_max: usize,
    /// Reverse proxies ("IP" or "IP/PREFIX") whose `forwarded_header` names the
    /// client. A request from any other peer is limited by its peer address.
    pub trusted_proxies: Vec<String>,
    /// The header a trusted proxy puts the client address in (the last entry counts).
    pub forwarded_header: String,
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
            login_per_account_per_minute: 5,
            mutations_per_user_per_minute: 120,
            account_mails_per_day: 5,
            unverified_purge_after_ms: 7 * 24 * 3_600_000,
            password_reset_ttl_ms: 3_600_000,
            api_token_ttl_ms_default: 90 * 24 * 3_600_000,
            api_token_ttl_ms_max: 366 * 24 * 3_600_000,
            api_tokens_per_user_max: 20,
            servers_per_user_max: 20,
            password_hashing_concurrency_max: 4,
            rate_limiter_keys_max: 100_000,
            trusted_proxies: Vec::new(),
            forwarded_header: "x-forwarded-for".to_string(),
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
    /// owner of the core per database) before standing by (the API answers 503 and
    /// the runtime leads as soon as the other lets the lock go).
    pub journal_lock_wait_ms: u64,
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
    27565
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

/// OAuth 2.0 sign-in providers. The redirect URI registered at each provider is
/// `{http.public_base_url}/v1/oauth/{name}/callback`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    pub providers: Vec<OAuthProviderConfig>,
    /// How long a started sign-in may take at the provider.
    pub state_ttl_ms: u64,
    /// Bound on each request to a provider (token exchange, user info).
    pub request_timeout_ms: u64,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            providers: Vec::new(),
            state_ttl_ms: 600_000,
            request_timeout_ms: 10_000,
        }
    }
}

/// Presets fill in a provider's URLs, scopes and profile fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthPreset {
    Google,
    Discord,
}

/// One provider: a preset, or a generic OIDC-style provider by its issuer (its
/// `/authorize`, `/token`, `/userinfo`) or explicit URLs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthProviderConfig {
    /// In URLs: `/v1/oauth/{name}/...` (lower-case letters, digits, `-`).
    pub name: String,
    #[serde(default)]
    pub preset: Option<OAuthPreset>,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub auth_url: Option<String>,
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default)]
    pub userinfo_url: Option<String>,
    pub client_id: String,
    pub client_secret: SecretString,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// User info fields: the stable id, the address, whether it is verified.
    #[serde(default)]
    pub subject_field: Option<String>,
    #[serde(default)]
    pub email_field: Option<String>,
    #[serde(default)]
    pub email_verified_field: Option<String>,
}

/// A provider with every field decided.
#[derive(Debug, Clone)]
pub struct OAuthProvider {
    pub name: String,
    pub auth_url: String,
    pub token_url: String,
    pub userinfo_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub scopes: Vec<String>,
    pub subject_field: String,
    pub email_field: String,
    pub email_verified_field: String,
}

impl OAuthProviderConfig {
    /// Fills what the preset or the issuer implies; explicit fields win.
    pub fn resolve(&self) -> Result<OAuthProvider, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid(format!("oauth.providers {:?}: {message}", self.name));
        let (auth, token, userinfo, scopes, subject, email, verified) = match self.preset {
            Some(OAuthPreset::Google) => (
                Some("https://accounts.google.com/o/oauth2/v2/auth".to_string()),
                Some("https://oauth2.googleapis.com/token".to_string()),
                Some("https://openidconnect.googleapis.com/v1/userinfo".to_string()),
                vec!["openid", "email", "profile"],
                "sub",
                "email",
                "email_verified",
            ),
            Some(OAuthPreset::Discord) => (
                Some("https://discord.com/oauth2/authorize".to_string()),
                Some("https://discord.com/api/oauth2/token".to_string()),
                Some("https://discord.com/api/users/@me".to_string()),
                vec!["identify", "email"],
                "id",
                "email",
                "verified",
            ),
            None => {
                let issuer = self.issuer.as_deref().map(|issuer| issuer.trim_end_matches('/'));
                (
                    issuer.map(|issuer| format!("{issuer}/authorize")),
                    issuer.map(|issuer| format!("{issuer}/token")),
                    issuer.map(|issuer| format!("{issuer}/userinfo")),
                    vec!["openid", "email"],
                    "sub",
                    "email",
                    "email_verified",
                )
            }
        };
        let url = |explicit: &Option<String>, implied: Option<String>, what: &str| {
            let url = explicit
                .clone()
                .or(implied)
                .ok_or_else(|| invalid(format!("needs {what} (or an issuer or a preset)")))?;
            let parsed = url::Url::parse(&url).map_err(|error| invalid(format!("{what} {url:?}: {error}")))?;
            let loopback = parsed.host_str().is_some_and(is_loopback_host);
            if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
                return Err(invalid(format!("{what} {url:?} must be https (http only on loopback)")));
            }
            Ok(url)
        };
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 32
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_name {
            return Err(invalid(
                "name must be 1 to 32 lower-case letters, digits or `-`".to_string(),
            ));
        }
        if self.client_id.is_empty() {
            return Err(invalid("client_id is empty".to_string()));
        }
        Ok(OAuthProvider {
            name: self.name.clone(),
            auth_url: url(&self.auth_url, auth, "auth_url")?,
            token_url: url(&self.token_url, token, "token_url")?,
            userinfo_url: url(&self.userinfo_url, userinfo, "userinfo_url")?,
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            scopes: self
                .scopes
                .clone()
                .unwrap_or_else(|| scopes.into_iter().map(str::to_string).collect()),
            subject_field: self.subject_field.clone().unwrap_or_else(|| subject.to_string()),
            email_field: self.email_field.clone().unwrap_or_else(|| email.to_string()),
            email_verified_field: self
                .email_verified_field
                .clone()
                .unwrap_or_else(|| verified.to_string()),
        })
    }
}

impl Config {
    /// Settings that would weaken accounts silently are errors: credentials over
    /// plain SMTP to anything but loopback, argon2 parameters argon2 refuses (the
    /// dummy hash for unknown users would be empty and their logins fast), zero
    /// limits, unparsable proxies.
    pub fn validate_accounts(&self) -> Result<(), ConfigError> {
        let smtp = &self.smtp;
        let has_credentials = smtp.username.is_some() || smtp.password.is_some();
        if has_credentials && smtp.tls == SmtpTls::None && !is_loopback_host(&smtp.host) {
            return Err(ConfigError::Invalid(format!(
                "smtp: credentials would cross the network in clear to {:?}: set smtp.tls to \"start_tls\" or \"tls\" \
                 (tls = \"none\" is only for a relay on loopback)",
                smtp.host
            )));
        }
        let argon2 = self.auth.argon2;
        argon2::Params::new(argon2.memory_kib, argon2.iterations, argon2.parallelism, None).map_err(|error| {
            ConfigError::Invalid(format!(
                "auth.argon2 (memory_kib = {}, iterations = {}, parallelism = {}): {error}",
                argon2.memory_kib, argon2.iterations, argon2.parallelism
            ))
        })?;
        let auth = &self.auth;
        if auth.login_per_account_per_minute == 0
            || auth.mutations_per_user_per_minute == 0
            || auth.password_hashing_concurrency_max == 0
            || auth.rate_limiter_keys_max == 0
            || auth.api_tokens_per_user_max == 0
            || auth.servers_per_user_max == 0
        {
            return Err(ConfigError::Invalid(
                "auth: login_per_account_per_minute, mutations_per_user_per_minute, \
                 password_hashing_concurrency_max, rate_limiter_keys_max, api_tokens_per_user_max and \
                 servers_per_user_max must be at least 1"
                    .to_string(),
            ));
        }
        if auth.api_token_ttl_ms_default == 0 || auth.api_token_ttl_ms_default > auth.api_token_ttl_ms_max {
            return Err(ConfigError::Invalid(
                "auth.api_token_ttl_ms_default must be 1 to auth.api_token_ttl_ms_max".to_string(),
            ));
        }
        if auth.unverified_purge_after_ms < auth.verification_ttl_ms {
            return Err(ConfigError::Invalid(
                "auth.unverified_purge_after_ms must be at least auth.verification_ttl_ms (a code must not outlive its account)"
                    .to_string(),
            ));
        }
        for proxy in &auth.trusted_proxies {
            crate::auth::IpPrefix::parse(proxy)
                .map_err(|message| ConfigError::Invalid(format!("auth.trusted_proxies: {proxy:?}: {message}")))?;
        }
        let mut names = std::collections::BTreeSet::new();
        for provider in &self.oauth.providers {
            provider.resolve()?;
            if !names.insert(provider.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "oauth.providers: {:?} is configured twice",
                    provider.name
                )));
            }
        }
        if !self.oauth.providers.is_empty() && self.secrets.keys.is_empty() {
            return Err(ConfigError::Invalid(
                "oauth.providers need a secret key to seal provider tokens: set PAYPERPLAY_SECRET_KEY or [secrets]"
                    .to_string(),
            ));
        }
        if axum::http::HeaderName::try_from(auth.forwarded_header.as_str()).is_err() {
            return Err(ConfigError::Invalid(format!(
                "auth.forwarded_header {:?} is not a header name",
                auth.forwarded_header
            )));
        }
        Ok(())
    }
}

/// `localhost`, or an address in 127.0.0.0/8 or ::1.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
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
