//! Configuration from environment variables, named and defaulted like the
//! `itzg/minecraft-server` image so the Docker driver passes one environment to both.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

/// The protocol the server advertises by default: 340, Minecraft 1.12.2 (the newest
/// version whose login goes straight from Login Success to play, and the one real
/// client libraries implement most completely).
pub const PROTOCOL_DEFAULT: i32 = 340;
/// The protocol whose play packets this server sends after a login.
pub const PROTOCOL_PLAY_SUPPORTED: i32 = 340;
const DATA_DIR_DEFAULT: &str = "/data";
const KEEPALIVE_MS_DEFAULT: u64 = 15_000;

/// Everything the server reads from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub bind_ip: IpAddr,
    pub server_port: u16,
    /// `None` when RCON is disabled (or no password is set, as vanilla does).
    pub rcon: Option<RconConfig>,
    pub motd: String,
    pub max_players: u32,
    /// `HIDE_ONLINE_PLAYERS` (vanilla's `hide-online-players`): status answers report
    /// 0 players online and no sample; RCON `list` still names them.
    pub hide_online_players: bool,
    pub memory: Option<String>,
    pub server_type: Option<String>,
    pub version: Option<String>,
    pub data_dir: PathBuf,
    pub boot_delay: Duration,
    /// A save on stop takes this long (a large world): a window to kill things in.
    pub save_delay: Duration,
    pub crash_after: Option<Duration>,
    pub protocol: i32,
    pub version_name: String,
    pub keepalive_interval: Duration,
    /// Why RCON is off although `ENABLE_RCON` asked for it (logged at start).
    pub rcon_warning: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RconConfig {
    pub port: u16,
    pub password: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "EULA is {found:?}: set EULA=TRUE to accept the Minecraft EULA (https://account.mojang.com/documents/minecraft_eula)"
    )]
    EulaNotAccepted { found: Option<String> },
    #[error("{variable}={value:?} is not {expected}")]
    Invalid {
        variable: &'static str,
        value: String,
        expected: &'static str,
    },
}

impl Config {
    /// Reads the configuration through `lookup` (the process environment in `main`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let eula = get("EULA");
        if !eula.as_deref().is_some_and(|value| value.eq_ignore_ascii_case("true")) {
            return Err(ConfigError::EulaNotAccepted { found: eula });
        }
        let bind_ip = match get("SERVER_IP") {
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(value) => value.parse().map_err(|_| ConfigError::Invalid {
                variable: "SERVER_IP",
                value,
                expected: "an IP address",
            })?,
        };
        let server_port = parse_port("SERVER_PORT", get("SERVER_PORT"), 25565)?;
        let rcon_enabled = parse_bool("ENABLE_RCON", get("ENABLE_RCON"), true)?;
        let rcon_port = parse_port("RCON_PORT", get("RCON_PORT"), 25575)?;
        let (rcon, rcon_warning) = match (rcon_enabled, get("RCON_PASSWORD")) {
            (false, _) => (None, None),
            (true, None) => (
                None,
                Some("No rcon password set in server.properties, rcon disabled!".to_owned()),
            ),
            (true, Some(password)) => (
                Some(RconConfig {
                    port: rcon_port,
                    password,
                }),
                None,
            ),
        };
        let max_players = parse_number("MAX_PLAYERS", get("MAX_PLAYERS"), 20)?;
        let protocol = parse_number("TESTGAME_PROTOCOL", get("TESTGAME_PROTOCOL"), PROTOCOL_DEFAULT)?;
        let version = get("VERSION");
        let version_name = match (&version, protocol) {
            (Some(version), _) if !is_moving_version(version) => version.clone(),
            (_, PROTOCOL_DEFAULT) => "1.12.2".to_owned(),
            (_, other) => format!("protocol {other}"),
        };
        Ok(Config {
            bind_ip,
            server_port,
            rcon,
            motd: get("MOTD").unwrap_or_else(|| "A Minecraft Server".to_owned()),
            max_players,
            hide_online_players: parse_bool("HIDE_ONLINE_PLAYERS", get("HIDE_ONLINE_PLAYERS"), false)?,
            memory: get("MEMORY"),
            server_type: get("TYPE"),
            version,
            data_dir: PathBuf::from(get("TESTGAME_DATA_DIR").unwrap_or_else(|| DATA_DIR_DEFAULT.to_owned())),
            boot_delay: Duration::from_millis(parse_number(
                "TESTGAME_BOOT_DELAY_MS",
                get("TESTGAME_BOOT_DELAY_MS"),
                0,
            )?),
            save_delay: Duration::from_millis(parse_number(
                "TESTGAME_SAVE_DELAY_MS",
                get("TESTGAME_SAVE_DELAY_MS"),
                0,
            )?),
            crash_after: get("TESTGAME_CRASH_AFTER_MS")
                .map(|value| parse_number("TESTGAME_CRASH_AFTER_MS", Some(value), 0))
                .transpose()?
                .map(Duration::from_millis),
            protocol,
            version_name,
            keepalive_interval: Duration::from_millis(parse_number(
                "TESTGAME_KEEPALIVE_MS",
                get("TESTGAME_KEEPALIVE_MS"),
                KEEPALIVE_MS_DEFAULT,
            )?)
            .max(Duration::from_millis(10)),
            rcon_warning,
        })
    }
}

/// itzg's `VERSION=LATEST` / `SNAPSHOT` name no version.
fn is_moving_version(version: &str) -> bool {
    version.eq_ignore_ascii_case("latest") || version.eq_ignore_ascii_case("snapshot")
}

fn parse_port(variable: &'static str, value: Option<String>, default: u16) -> Result<u16, ConfigError> {
    match value {
        None => Ok(default),
        Some(value) => value.parse::<u16>().map_err(|_| ConfigError::Invalid {
            variable,
            value,
            expected: "a port number (0-65535)",
        }),
    }
}

fn parse_number<T: std::str::FromStr>(
    variable: &'static str,
    value: Option<String>,
    default: T,
) -> Result<T, ConfigError> {
    match value {
        None => Ok(default),
        Some(value) => value.parse::<T>().map_err(|_| ConfigError::Invalid {
            variable,
            value,
            expected: "a whole number",
        }),
    }
}

fn parse_bool(variable: &'static str, value: Option<String>, default: bool) -> Result<bool, ConfigError> {
    match value {
        None => Ok(default),
        Some(value) if value.eq_ignore_ascii_case("true") => Ok(true),
        Some(value) if value.eq_ignore_ascii_case("false") => Ok(false),
        Some(value) => Err(ConfigError::Invalid {
            variable,
            value,
            expected: "TRUE or FALSE",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_itzg_image() {
        let config = config(&[("EULA", "TRUE"), ("RCON_PASSWORD", "pw")]).unwrap();
        assert_eq!(config.bind_ip, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(config.server_port, 25565);
        assert_eq!(
            config.rcon,
            Some(RconConfig {
                port: 25575,
                password: "pw".into()
            })
        );
        assert_eq!(config.max_players, 20);
        assert_eq!(config.data_dir, PathBuf::from("/data"));
        assert_eq!((config.protocol, config.version_name.as_str()), (340, "1.12.2"));
        assert_eq!(config.boot_delay, Duration::ZERO);
        assert_eq!(config.crash_after, None);
        assert!(!config.hide_online_players);
        let hiding = super::Config::from_lookup(|name| match name {
            "EULA" => Some("TRUE".into()),
            "HIDE_ONLINE_PLAYERS" => Some("true".into()),
            _ => None,
        })
        .unwrap();
        assert!(hiding.hide_online_players);
    }

    #[test]
    fn the_eula_must_be_accepted() {
        assert_eq!(config(&[]), Err(ConfigError::EulaNotAccepted { found: None }));
        assert_eq!(
            config(&[("EULA", "false")]),
            Err(ConfigError::EulaNotAccepted {
                found: Some("false".into())
            })
        );
        assert!(config(&[("EULA", "true")]).is_ok());
    }

    #[test]
    fn bad_values_name_their_variable() {
        let error = config(&[("EULA", "TRUE"), ("SERVER_PORT", "70000")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "SERVER_PORT=\"70000\" is not a port number (0-65535)"
        );
        let error = config(&[("EULA", "TRUE"), ("ENABLE_RCON", "maybe")]).unwrap_err();
        assert!(error.to_string().starts_with("ENABLE_RCON=\"maybe\""), "{error}");
        assert!(config(&[("EULA", "TRUE"), ("SERVER_IP", "localhost")]).is_err());
    }

    #[test]
    fn rcon_needs_a_password_and_can_be_disabled() {
        let no_password = config(&[("EULA", "TRUE")]).unwrap();
        assert_eq!(no_password.rcon, None);
        assert!(no_password.rcon_warning.is_some());
        let disabled = config(&[("EULA", "TRUE"), ("ENABLE_RCON", "false"), ("RCON_PASSWORD", "x")]).unwrap();
        assert_eq!((disabled.rcon, disabled.rcon_warning), (None, None));
    }

    #[test]
    fn test_switches_and_version_are_read() {
        let config = config(&[
            ("EULA", "TRUE"),
            ("VERSION", "1.20.4"),
            ("TESTGAME_PROTOCOL", "765"),
            ("TESTGAME_BOOT_DELAY_MS", "1500"),
            ("TESTGAME_CRASH_AFTER_MS", "9000"),
            ("TESTGAME_SAVE_DELAY_MS", "2500"),
            ("TESTGAME_DATA_DIR", "/tmp/x"),
        ])
        .unwrap();
        assert_eq!((config.protocol, config.version_name.as_str()), (765, "1.20.4"));
        assert_eq!(config.boot_delay, Duration::from_millis(1500));
        assert_eq!(config.crash_after, Some(Duration::from_millis(9000)));
        assert_eq!(config.save_delay, Duration::from_millis(2500));
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
    }
}
