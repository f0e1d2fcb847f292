//! What a server's container looks like: image, environment (itzg-style), memory, labels,
//! name, world volume. Pure functions of the server and the node, so a repeated command
//! asks for exactly the same container.

use std::collections::HashMap;
use std::net::IpAddr;

use secrecy::{ExposeSecret, SecretString};

/// The production image: the widely used Minecraft server image configured by env vars.
pub const ITZG_IMAGE: &str = "itzg/minecraft-server:latest";
/// Label keys every container and volume of the platform carries.
pub const LABEL_PLATFORM: &str = "payperplay.platform";
pub const LABEL_NODE: &str = "payperplay.node";
pub const LABEL_SERVER: &str = "payperplay.server";
pub const LABEL_COMMAND: &str = "payperplay.command";
pub const LABEL_GAME_PORT: &str = "payperplay.game-port";
pub const LABEL_RCON_PORT: &str = "payperplay.rcon-port";
/// Where the world lives inside the container (itzg and the test image alike).
pub const WORLD_PATH: &str = "/data";
/// Smallest JVM heap we hand out, whatever the tier.
pub const HEAP_MIB_MIN: u32 = 256;

/// The server software, as the image's `TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerSoftware {
    Vanilla,
    Paper,
    Purpur,
    Fabric,
    Forge,
}

impl ServerSoftware {
    pub fn image_type(self) -> &'static str {
        match self {
            ServerSoftware::Vanilla => "VANILLA",
            ServerSoftware::Paper => "PAPER",
            ServerSoftware::Purpur => "PURPUR",
            ServerSoftware::Fabric => "FABRIC",
            ServerSoftware::Forge => "FORGE",
        }
    }
}

/// One server to run, as the start command describes it.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub server_id: u64,
    /// The core's command id: the idempotency key, carried as a label.
    pub command_id: u64,
    /// The tier's RAM: the container's memory limit.
    pub ram_mib: u32,
    pub software: ServerSoftware,
    /// Minecraft version (`VERSION`), e.g. `1.21.4` or `LATEST`.
    pub version: String,
    pub motd: String,
    pub max_players: u32,
    /// The image to run (production: [`ITZG_IMAGE`]; tests: the test image).
    pub image: String,
    /// Decrypted from the store just for this call; never logged (`SecretString`).
    pub rcon_password: SecretString,
    /// Extra environment (e.g. the test server's `TESTGAME_BOOT_DELAY_MS`).
    pub extra_env: Vec<(String, String)>,
}

/// The JVM heap for a container limited to `ram_mib`: four fifths of the limit (the image
/// needs about 25% above its heap for the JVM's own memory), at least [`HEAP_MIB_MIN`].
pub fn heap_mib(ram_mib: u32) -> u32 {
    (ram_mib / 5 * 4 + ram_mib % 5 * 4 / 5).max(HEAP_MIB_MIN)
}

/// Container name for a server: one per server on an engine, so a repeated start finds it.
pub fn container_name(server_id: u64) -> String {
    format!("payperplay-server-{server_id}")
}

/// The server's world volume on its node.
pub fn volume_name(server_id: u64) -> String {
    format!("payperplay-world-{server_id}")
}

/// Ports a container listens on (host networking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub game: u16,
    pub rcon: u16,
}

/// The itzg-style environment: `EULA`, `TYPE`, `VERSION`, `MEMORY` (the heap), `MOTD`,
/// `MAX_PLAYERS`, the bind address and ports, RCON, then `extra_env`.
pub fn environment(spec: &ServerSpec, bind_address: IpAddr, ports: Ports) -> Vec<String> {
    let mut env = vec![
        "EULA=TRUE".to_string(),
        format!("TYPE={}", spec.software.image_type()),
        format!("VERSION={}", spec.version),
        format!("MEMORY={}M", heap_mib(spec.ram_mib)),
        format!("MOTD={}", spec.motd),
        format!("MAX_PLAYERS={}", spec.max_players),
        format!("SERVER_IP={bind_address}"),
        format!("SERVER_PORT={}", ports.game),
        "ENABLE_RCON=true".to_string(),
        format!("RCON_PORT={}", ports.rcon),
        format!("RCON_PASSWORD={}", spec.rcon_password.expose_secret()),
    ];
    env.extend(spec.extra_env.iter().map(|(key, value)| format!("{key}={value}")));
    env
}

/// Labels of a server's container (and, without command and ports, of its volume).
pub fn labels(platform: &str, node: &str, spec: &ServerSpec, ports: Ports) -> HashMap<String, String> {
    let mut labels = volume_labels(platform, node, spec.server_id);
    labels.insert(LABEL_COMMAND.to_string(), spec.command_id.to_string());
    labels.insert(LABEL_GAME_PORT.to_string(), ports.game.to_string());
    labels.insert(LABEL_RCON_PORT.to_string(), ports.rcon.to_string());
    labels
}

pub fn volume_labels(platform: &str, node: &str, server_id: u64) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_PLATFORM.to_string(), platform.to_string()),
        (LABEL_NODE.to_string(), node.to_string()),
        (LABEL_SERVER.to_string(), server_id.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServerSpec {
        ServerSpec {
            server_id: 12,
            command_id: 345,
            ram_mib: 4096,
            software: ServerSoftware::Paper,
            version: "1.21.4".to_string(),
            motd: "hello".to_string(),
            max_players: 20,
            image: ITZG_IMAGE.to_string(),
            rcon_password: SecretString::from("pw".to_string()),
            extra_env: vec![("TESTGAME_BOOT_DELAY_MS".to_string(), "100".to_string())],
        }
    }

    #[test]
    fn the_heap_is_four_fifths_of_the_limit_and_never_below_the_minimum() {
        assert_eq!(heap_mib(4096), 3276);
        assert_eq!(heap_mib(2048), 1638);
        assert_eq!(heap_mib(32 * 1024), 26214);
        assert_eq!(heap_mib(300), HEAP_MIB_MIN);
        for ram_mib in [512u32, 1000, 2047, 2048, 6144, 32768] {
            // Independent oracle: floor(ram * 0.8) in exact integer arithmetic.
            let expected = (u64::from(ram_mib) * 4 / 5) as u32;
            assert_eq!(heap_mib(ram_mib), expected.max(HEAP_MIB_MIN), "ram {ram_mib}");
            // The container keeps at least 20% above the heap for the JVM itself.
            assert!(u64::from(heap_mib(ram_mib)) * 5 <= u64::from(ram_mib) * 4 || ram_mib < 320);
        }
    }

    #[test]
    fn the_environment_configures_the_image_like_itzg() {
        let ports = Ports {
            game: 25570,
            rcon: 35570,
        };
        let env = environment(&spec(), "127.0.0.1".parse().unwrap(), ports);
        for expected in [
            "EULA=TRUE",
            "TYPE=PAPER",
            "VERSION=1.21.4",
            "MEMORY=3276M",
            "SERVER_IP=127.0.0.1",
            "SERVER_PORT=25570",
            "ENABLE_RCON=true",
            "RCON_PORT=35570",
            "RCON_PASSWORD=pw",
            "TESTGAME_BOOT_DELAY_MS=100",
        ] {
            assert!(
                env.iter().any(|line| line == expected),
                "{expected} missing from {env:?}"
            );
        }
        let labels = labels("payperplay", "node-a", &spec(), ports);
        assert_eq!(labels[LABEL_SERVER], "12");
        assert_eq!(labels[LABEL_COMMAND], "345");
        assert_eq!(labels[LABEL_NODE], "node-a");
        assert_eq!(labels[LABEL_GAME_PORT], "25570");
        assert_eq!(container_name(12), "payperplay-server-12");
    }

    #[test]
    fn the_spec_debug_output_hides_the_rcon_password() {
        let debug = format!("{:?}", spec());
        assert!(!debug.contains("\"pw\""), "{debug}");
        assert!(debug.contains("rcon_password"), "{debug}");
    }
}
