//! The parts of Hetzner Cloud's JSON the platform reads, as the API description names
//! them. Fields the platform does not use are not decoded; fields it uses are required,
//! so a malformed answer fails to decode with a message naming the field.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Pagination {
    pub page: u64,
    pub per_page: u64,
    pub previous_page: Option<u64>,
    pub next_page: Option<u64>,
    pub last_page: Option<u64>,
    pub total_entries: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Meta {
    pub pagination: Pagination,
}

/// One page of a list answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub pagination: Pagination,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ActionError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    Running,
    Success,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Action {
    pub id: u64,
    pub command: String,
    pub status: ActionStatus,
    pub progress: u32,
    pub started: String,
    pub finished: Option<String>,
    pub error: Option<ActionError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Ipv4 {
    pub ip: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PublicNet {
    pub ipv4: Option<Ipv4>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NamedRef {
    pub id: u64,
    pub name: String,
}

/// A VM as Hetzner reports it (Hetzner calls it a "server").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Server {
    pub id: u64,
    pub name: String,
    /// `running`, `initializing`, `starting`, `stopping`, `off`, `deleting`, ...
    pub status: String,
    pub created: String,
    pub public_net: PublicNet,
    pub server_type: NamedRef,
    pub location: NamedRef,
    pub labels: BTreeMap<String, String>,
}

impl Server {
    /// The VM's public IPv4 address, if it has one.
    pub fn ipv4(&self) -> Option<&str> {
        self.public_net.ipv4.as_ref().map(|ipv4| ipv4.ip.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Price {
    pub net: String,
    pub gross: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LocationPrice {
    pub location: String,
    pub price_hourly: Price,
    pub price_monthly: Price,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TypeLocation {
    pub id: u64,
    pub name: String,
    pub available: bool,
    pub recommended: bool,
}

/// A VM type (Hetzner: "server type") with its prices and availability per location.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServerType {
    pub id: u64,
    pub name: String,
    pub description: String,
    pub cores: f64,
    /// GB of RAM.
    pub memory: f64,
    /// GB of disk.
    pub disk: f64,
    pub deprecated: bool,
    pub cpu_type: String,
    pub architecture: String,
    pub prices: Vec<LocationPrice>,
    pub locations: Vec<TypeLocation>,
}

impl ServerType {
    /// Whether the type can be ordered in `location` now (false when sold out or not
    /// offered there).
    pub fn available_in(&self, location: &str) -> bool {
        self.locations
            .iter()
            .any(|entry| entry.name == location && entry.available)
    }

    /// The hourly and monthly net prices in `location`, in micro-EUR.
    pub fn price_micros_in(&self, location: &str) -> Option<(u64, u64)> {
        let price = self.prices.iter().find(|price| price.location == location)?;
        Some((
            decimal_to_micros(&price.price_hourly.net)?,
            decimal_to_micros(&price.price_monthly.net)?,
        ))
    }
}

/// `"0.0128000000000000"` → 12_800 micros. None for text that is not a non-negative
/// decimal number.
pub fn decimal_to_micros(text: &str) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let mut micros: u64 = 0;
    for (index, digit) in fraction.bytes().take(6).enumerate() {
        micros += u64::from(digit - b'0') * 10u64.pow(5 - index as u32);
    }
    whole.checked_mul(1_000_000)?.checked_add(micros)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Location {
    pub id: u64,
    pub name: String,
    pub description: String,
    pub country: String,
    pub city: String,
    pub network_zone: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SshKey {
    pub id: u64,
    pub name: String,
    pub fingerprint: String,
    pub public_key: String,
    pub labels: BTreeMap<String, String>,
}

// ---- envelopes ----

#[derive(Debug, Deserialize)]
pub(crate) struct ServerEnvelope {
    pub server: Server,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CreateServerEnvelope {
    pub server: Server,
    pub action: Action,
    pub next_actions: Vec<Action>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ServersEnvelope {
    pub servers: Vec<Server>,
    pub meta: Meta,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ActionEnvelope {
    pub action: Action,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ActionsEnvelope {
    pub actions: Vec<Action>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeleteServerEnvelope {
    pub action: Option<Action>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ServerTypesEnvelope {
    pub server_types: Vec<ServerType>,
    pub meta: Meta,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LocationsEnvelope {
    pub locations: Vec<Location>,
    pub meta: Meta,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SshKeysEnvelope {
    pub ssh_keys: Vec<SshKey>,
    pub meta: Meta,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SshKeyEnvelope {
    pub ssh_key: SshKey,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub details: Option<serde_json::Value>,
}

impl ErrorBody {
    /// The field names of an `invalid_input` / `uniqueness_error` answer's details.
    pub fn field_names(&self) -> Vec<String> {
        let Some(fields) = self
            .details
            .as_ref()
            .and_then(|details| details.get("fields"))
            .and_then(|fields| fields.as_array())
        else {
            return Vec::new();
        };
        fields
            .iter()
            .filter_map(|field| field.get("name").and_then(|name| name.as_str()))
            .map(str::to_owned)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_prices_become_micros_without_float_rounding() {
        assert_eq!(decimal_to_micros("0.0128000000000000"), Some(12_800));
        assert_eq!(decimal_to_micros("24.99"), Some(24_990_000));
        assert_eq!(decimal_to_micros("7"), Some(7_000_000));
        assert_eq!(decimal_to_micros("0.0000004"), Some(0));
        assert_eq!(decimal_to_micros("-1.0"), None);
        assert_eq!(decimal_to_micros("1.2e3"), None);
        assert_eq!(decimal_to_micros(""), None);
    }
}
