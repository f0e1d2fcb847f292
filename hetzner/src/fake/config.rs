//! The fake's configuration (TOML, or the defaults plus command-line flags).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FakeConfig {
    /// The one API token the fake accepts (`Authorization: Bearer TOKEN`).
    pub token: String,
    /// How long an action (create, start, delete) runs before it succeeds.
    pub action_delay_ms: u64,
    pub rate_limit: RateLimitConfig,
    /// Most VMs the project may hold; more is 403 `resource_limit_exceeded`.
    pub server_limit: Option<u64>,
    pub locations: Vec<LocationConfig>,
    pub server_types: Vec<ServerTypeConfig>,
    /// Sold-out windows (412 `resource_unavailable`), in seconds since the fake started.
    pub sold_out: Vec<SoldOutWindow>,
    /// Where the fake's VMs "are": VM number i (in creation order) gets
    /// `endpoints[i % len]`. Empty: each VM gets its own TEST-NET address and port 22.
    pub endpoints: Vec<EndpointConfig>,
    /// Also show a VM's SSH port and game port range as labels
    /// (`fake-hetzner/ssh-port`, `fake-hetzner/game-ports`), so a client that only
    /// speaks the Hetzner API can find them.
    pub hint_labels: bool,
    /// Give a VM whose user data carries an SSH host key (the worker template's
    /// `ssh_keys`) an sshd of its own presenting that key, as cloud-init would; its SSH
    /// port replaces the endpoint's. `None`: every VM is its endpoint as configured.
    pub vm_sshd: Option<VmSshdConfig>,
}

/// How the fake starts a VM's own sshd (tests: the setup's OpenSSH server binary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSshdConfig {
    /// The sshd binary, e.g. `/usr/sbin/sshd`.
    pub binary: String,
    /// The keys allowed to log in (as root), e.g. the test client's public key.
    pub authorized_keys_file: String,
    /// Where each VM's host key and sshd configuration are written; the system's
    /// temporary directory when omitted.
    #[serde(default)]
    pub dir: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Requests per hour (the bucket's size and the `RateLimit-Limit` header).
    pub limit: u64,
    /// Tokens added per second (Hetzner: 1 at 3,600/h). A test may speed it up.
    pub refill_per_s: f64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            limit: 3_600,
            refill_per_s: 1.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationConfig {
    pub name: String,
    pub description: String,
    pub country: String,
    pub city: String,
    pub latitude: f64,
    pub longitude: f64,
    pub network_zone: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTypeConfig {
    pub name: String,
    pub description: String,
    pub cores: u32,
    pub memory_gb: f64,
    pub disk_gb: u32,
    #[serde(default = "shared")]
    pub cpu_type: String,
    #[serde(default = "x86")]
    pub architecture: String,
    #[serde(default)]
    pub deprecated: bool,
    /// The locations that offer the type, with its net prices there (EUR, as decimal
    /// text like Hetzner's: "0.0128").
    pub prices: Vec<PriceConfig>,
}

fn shared() -> String {
    "shared".to_owned()
}

fn x86() -> String {
    "x86".to_owned()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub location: String,
    pub hourly_net: String,
    pub monthly_net: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoldOutWindow {
    pub server_type: String,
    pub location: String,
    /// Seconds since the fake started; 0 when omitted.
    #[serde(default)]
    pub from_s: u64,
    /// Seconds since the fake started; for ever when omitted.
    #[serde(default)]
    pub until_s: Option<u64>,
}

impl SoldOutWindow {
    pub fn covers(&self, server_type: &str, location: &str, now_s: u64) -> bool {
        self.server_type == server_type
            && self.location == location
            && now_s >= self.from_s
            && self.until_s.is_none_or(|until| now_s < until)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// The VM's `public_net.ipv4.ip` (127.0.0.1 to reach a test sshd).
    pub ip: String,
    pub ssh_port: u16,
    /// The node's range of game ports (inclusive), so several fake VMs in front of one
    /// engine never hand out the same port.
    #[serde(default)]
    pub game_port_first: Option<u16>,
    #[serde(default)]
    pub game_port_last: Option<u16>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        let location =
            |name: &str, description: &str, country: &str, city: &str, lat: f64, lon: f64, zone: &str| LocationConfig {
                name: name.to_owned(),
                description: description.to_owned(),
                country: country.to_owned(),
                city: city.to_owned(),
                latitude: lat,
                longitude: lon,
                network_zone: zone.to_owned(),
            };
        let locations = vec![
            location(
                "fsn1",
                "Falkenstein DC Park 1",
                "DE",
                "Falkenstein",
                50.47612,
                12.370071,
                "eu-central",
            ),
            location(
                "nbg1",
                "Nuremberg DC Park 1",
                "DE",
                "Nuremberg",
                49.452102,
                11.076665,
                "eu-central",
            ),
            location(
                "hel1",
                "Helsinki DC Park 1",
                "FI",
                "Helsinki",
                60.169855,
                24.938379,
                "eu-central",
            ),
        ];
        // Illustrative prices, as in scenarios/large-fleet.toml.
        let server_type =
            |name: &str, cores: u32, memory_gb: f64, disk_gb: u32, hourly: &str, monthly: &str| ServerTypeConfig {
                name: name.to_owned(),
                description: format!("{} (shared AMD)", name.to_uppercase()),
                cores,
                memory_gb,
                disk_gb,
                cpu_type: shared(),
                architecture: x86(),
                deprecated: false,
                prices: ["fsn1", "nbg1", "hel1"]
                    .iter()
                    .map(|location| PriceConfig {
                        location: (*location).to_owned(),
                        hourly_net: hourly.to_owned(),
                        monthly_net: monthly.to_owned(),
                    })
                    .collect(),
            };
        let server_types = vec![
            server_type("cpx12", 1, 2.0, 40, "0.0072", "4.49"),
            server_type("cpx22", 2, 4.0, 80, "0.0128", "7.99"),
            server_type("cpx32", 4, 8.0, 160, "0.0224", "13.99"),
            server_type("cpx42", 8, 16.0, 320, "0.0400", "24.99"),
            server_type("cpx52", 12, 24.0, 480, "0.0576", "35.99"),
            server_type("cpx62", 16, 32.0, 640, "0.0752", "46.99"),
        ];
        FakeConfig {
            token: "fake-hetzner-token".to_owned(),
            action_delay_ms: 1_000,
            rate_limit: RateLimitConfig::default(),
            server_limit: None,
            locations,
            server_types,
            sold_out: Vec::new(),
            endpoints: Vec::new(),
            hint_labels: true,
            vm_sshd: None,
        }
    }
}

impl FakeConfig {
    /// Checks cross-references (prices and windows name known locations and types).
    pub fn validate(&self) -> Result<(), String> {
        if self.token.is_empty() {
            return Err("token must not be empty".to_owned());
        }
        let refill_ok = self.rate_limit.refill_per_s.is_finite() && self.rate_limit.refill_per_s >= 0.0;
        if self.rate_limit.limit == 0 || !refill_ok {
            return Err("rate_limit.limit must be > 0 and rate_limit.refill_per_s >= 0".to_owned());
        }
        let known_location = |name: &str| self.locations.iter().any(|l| l.name == name);
        for server_type in &self.server_types {
            for price in &server_type.prices {
                if !known_location(&price.location) {
                    return Err(format!(
                        "server_types.{}: price for unknown location {:?}",
                        server_type.name, price.location
                    ));
                }
            }
        }
        for window in &self.sold_out {
            if !known_location(&window.location) {
                return Err(format!("sold_out: unknown location {:?}", window.location));
            }
            if !self.server_types.iter().any(|t| t.name == window.server_type) {
                return Err(format!("sold_out: unknown server type {:?}", window.server_type));
            }
        }
        for endpoint in &self.endpoints {
            if endpoint.ip.parse::<std::net::Ipv4Addr>().is_err() {
                return Err(format!("endpoints: {:?} is not an IPv4 address", endpoint.ip));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_parses_and_keeps_the_default_catalog() {
        let config: FakeConfig = toml::from_str(include_str!("../../fake.example.toml")).unwrap();
        config.validate().unwrap();
        assert_eq!(config.token, "dev-token");
        assert_eq!(config.server_types.len(), 6);
        assert_eq!(config.endpoints.len(), 2);
        assert!(config.sold_out[0].covers("cpx42", "fsn1", 60));
        assert!(!config.sold_out[0].covers("cpx42", "fsn1", 600));
        assert!(!config.sold_out[0].covers("cpx42", "nbg1", 100));
    }

    #[test]
    fn an_unknown_key_or_location_is_refused_by_name() {
        let error = toml::from_str::<FakeConfig>("tokn = \"x\"").unwrap_err();
        assert!(error.to_string().contains("tokn"), "{error}");
        let mut config = FakeConfig::default();
        config.sold_out.push(SoldOutWindow {
            server_type: "cpx42".into(),
            location: "mars1".into(),
            from_s: 0,
            until_s: None,
        });
        assert!(config.validate().unwrap_err().contains("mars1"));
    }
}
