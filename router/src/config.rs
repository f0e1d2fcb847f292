//! The router's configuration (the `[router]` section of `payperplay serve`'s file).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// Why a configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("router.{field}: {message}")]
    Invalid { field: &'static str, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Whether `payperplay serve` runs the router (the library itself ignores it).
    pub enabled: bool,
    /// Where players connect.
    pub listen: SocketAddr,
    /// Players type `<server name>.<domain>`; servers may also claim custom hostnames.
    pub domain: String,
    /// From accept to the end of the opening (handshake, then the status request or
    /// login start): a slower client is closed.
    pub handshake_timeout_ms: u64,
    /// How long a joining player is held while their server wakes before they are told
    /// to come back (a vanilla client gives up on a silent login after 30 s).
    pub hold_ms: u64,
    /// How often a held login asks the platform whether its server runs yet.
    pub hold_poll_ms: u64,
    /// Bound on connecting to a running server.
    pub backend_connect_timeout_ms: u64,
    /// New connections one address may open per second (sustained) ...
    pub connections_per_address_per_s: u32,
    /// ... and in a burst.
    pub connection_burst_per_address: u32,
    /// Addresses the rate limiter remembers; beyond it, addresses idle long enough to
    /// have a full burst again are forgotten, and if all are recent, new ones are refused.
    pub tracked_addresses_max: usize,
    /// Connections open at once; one more is closed at accept.
    pub connections_max: usize,
    /// Send a PROXY protocol v2 header to servers (a server's own setting wins).
    pub proxy_protocol: bool,
    /// The version name in status answers the router gives itself.
    pub status_version_name: String,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 25565)),
            domain: "play.localhost".to_owned(),
            handshake_timeout_ms: 5_000,
            hold_ms: 25_000,
            hold_poll_ms: 250,
            backend_connect_timeout_ms: 3_000,
            connections_per_address_per_s: 10,
            connection_burst_per_address: 30,
            tracked_addresses_max: 100_000,
            connections_max: 20_000,
            proxy_protocol: false,
            status_version_name: "PayPerPlay".to_owned(),
        }
    }
}

impl RouterConfig {
    /// Checks every field; the domain comes back lowercase without a trailing dot.
    pub fn validated(mut self) -> Result<Self, ConfigError> {
        let invalid = |field: &'static str, message: &str| ConfigError::Invalid {
            field,
            message: message.to_owned(),
        };
        let domain = self.domain.trim_end_matches('.').to_ascii_lowercase();
        if crate::hostname::normalize(&domain).as_deref() != Ok(domain.as_str()) {
            return Err(invalid("domain", &format!("{:?} is not a DNS name", self.domain)));
        }
        self.domain = domain;
        for (field, value) in [
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("hold_poll_ms", self.hold_poll_ms),
            ("backend_connect_timeout_ms", self.backend_connect_timeout_ms),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be above 0"));
            }
        }
        if self.connections_per_address_per_s == 0 || self.connection_burst_per_address == 0 {
            return Err(invalid(
                "connections_per_address_per_s",
                "the rate and the burst must be above 0",
            ));
        }
        if self.tracked_addresses_max == 0 || self.connections_max == 0 {
            return Err(invalid("connections_max", "the limits must be above 0"));
        }
        Ok(self)
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    pub fn hold(&self) -> Duration {
        Duration::from_millis(self.hold_ms)
    }

    pub fn hold_poll(&self) -> Duration {
        Duration::from_millis(self.hold_poll_ms)
    }

    pub fn backend_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.backend_connect_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_the_domain_is_normalised() {
        let config = RouterConfig {
            domain: "Play.Example.COM.".into(),
            ..RouterConfig::default()
        }
        .validated()
        .unwrap();
        assert_eq!(config.domain, "play.example.com");
        assert_eq!(config.hold(), Duration::from_secs(25));
        assert_eq!(config.listen.port(), 25565);
    }

    #[test]
    fn bad_fields_are_named() {
        let bad_domain = RouterConfig {
            domain: "not a domain".into(),
            ..RouterConfig::default()
        };
        assert!(matches!(
            bad_domain.validated(),
            Err(ConfigError::Invalid { field: "domain", .. })
        ));
        let zero_poll = RouterConfig {
            hold_poll_ms: 0,
            ..RouterConfig::default()
        };
        assert_eq!(
            zero_poll.validated().unwrap_err().to_string(),
            "router.hold_poll_ms: must be above 0"
        );
    }
}
