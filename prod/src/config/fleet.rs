//! Where servers run: `[cloud]`, `[[fleet.dedicated_nodes]]` (engines, SSH, ports)
//! and `[containers]`.

use super::*;

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
    /// `ssh_public_key`) to the engine's socket. The fake Hetzner API names each VM's
    /// own SSH port and game ports in labels, which win over these.
    pub ssh_user: String,
    pub ssh_port: u16,
    pub ssh_key_file: String,
    /// The VM's SSH host key. By default the platform makes one per VM (derived from
    /// `ssh_key_file`'s key and the node id), passes it in the cloud-init user data and
    /// pins its public half before it connects: a VM presenting another key is refused.
    /// `ssh_host_keys`: pin these instead (an image with known keys; the user data
    /// carries none). `learn_host_key_on_first_use`: pin the first key seen (for this
    /// process), only when no key is configured.
    pub ssh_host_keys: Vec<String>,
    pub learn_host_key_on_first_use: bool,
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
            learn_host_key_on_first_use: false,
            engine_socket_path: default_engine_socket(),
            game_ports: default_game_ports(),
            rcon_port_offset: default_rcon_ports_first() - default_game_ports().first,
            data_path: default_data_path(),
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
    /// Where running servers' player counts come from (`status_ping` or `rcon`).
    pub player_count_source: PlayerCountSource,
    /// A node whose free disk (the probe's `df` of its `data_path`) is below this
    /// takes no new container: the start fails as `disk_full`.
    pub disk_free_mib_min: u64,
}

/// How the node observer reads a running server's player count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlayerCountSource {
    /// The status ping's `players.online`.
    #[default]
    StatusPing,
    /// RCON `list` (counts players a server hides from status pings,
    /// `hide-online-players`); a server whose RCON does not answer is status-pinged.
    Rcon,
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
            player_count_source: PlayerCountSource::StatusPing,
            disk_free_mib_min: 1_024,
        }
    }
}
