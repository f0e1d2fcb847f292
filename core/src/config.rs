//! The core's configuration. Every threshold lives here, so policies are configuration,
//! not code edits. The simulator fills it from a scenario file, the production shell
//! from its TOML config.

use serde::{Deserialize, Serialize};

use crate::placement::Strategy;
use crate::policy::PolicyConfig;
use crate::prewarm::PrewarmConfig;
use crate::types::{MS_PER_DAY, MS_PER_MINUTE, MS_PER_SECOND};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoreConfig {
    /// RAM tiers a server may have, in MiB (2, 4, 8, 16, 32 GiB by default).
    #[serde(rename = "tiers_gb", with = "crate::units::gb_list_mib")]
    pub tiers_mib: Vec<u32>,
    pub reserve: ReserveConfig,
    pub lifecycle: LifecycleConfig,
    pub billing: BillingConfig,
    pub queue: QueueConfig,
    pub catalog: Catalog,
    pub placement: PlacementConfig,
    pub policy: PolicyConfig,
    pub prewarm: PrewarmConfig,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            tiers_mib: vec![2048, 4096, 8192, 16384, 32768],
            reserve: ReserveConfig::default(),
            lifecycle: LifecycleConfig::default(),
            billing: BillingConfig::default(),
            queue: QueueConfig::default(),
            catalog: Catalog::default(),
            placement: PlacementConfig::default(),
            policy: PolicyConfig::default(),
            prewarm: PrewarmConfig::default(),
        }
    }
}

/// A configuration value the core cannot work with; `field` is its dotted path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl CoreConfig {
    /// Check what `Core::new` relies on beyond the types: names the policy refers to
    /// exist in the catalog, percentages and windows make sense. Drivers call it after
    /// loading a file; the error names the field (`core.policy.spare.buffer_pct`, ...).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let catalog = &self.catalog;
        let policy = &self.policy;
        if let Some(name) = &policy.server_type
            && !catalog.server_types.iter().any(|t| &t.name == name)
        {
            return Err(ConfigError::new(
                "core.policy.server_type",
                format!("{name:?} is not in core.catalog.server_types"),
            ));
        }
        if let Some(name) = &policy.location
            && !catalog.locations.contains(name)
        {
            return Err(ConfigError::new(
                "core.policy.location",
                format!("{name:?} is not in core.catalog.locations"),
            ));
        }
        policy.validate(catalog)?;
        if self.prewarm.enabled {
            self.prewarm.validate()?;
        }
        Ok(())
    }
}

/// `[core.placement]`: where a start goes among ready nodes. Dedicated machines are
/// always tried first (they are paid for anyway), then cloud VMs.
/// `pack`: the node with the least free RAM that fits (best fit; consolidation: VMs
/// fill up, others empty out and can be deleted). `spread`: the node with the most
/// free RAM (shares load and noise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlacementConfig {
    pub dedicated: Strategy,
    pub cloud: Strategy,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            dedicated: Strategy::Spread,
            cloud: Strategy::Pack,
        }
    }
}

/// RAM held back on every node for the OS and Docker, in three tiers:
/// nodes up to `small_node_max_mib` keep `small_fixed_mib`; nodes up to
/// `medium_node_max_mib` keep `medium_pct` percent; larger nodes keep `large_pct`.
/// System nodes (machines that also run the platform) keep `system_extra_mib` more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReserveConfig {
    pub small_node_max_mib: u32,
    pub small_fixed_mib: u32,
    pub medium_node_max_mib: u32,
    pub medium_pct: u8,
    pub large_pct: u8,
    pub system_extra_mib: u32,
}

impl Default for ReserveConfig {
    fn default() -> Self {
        ReserveConfig {
            small_node_max_mib: 16 * 1024,
            small_fixed_mib: 1024,
            medium_node_max_mib: 64 * 1024,
            medium_pct: 8,
            large_pct: 5,
            system_extra_mib: 2048,
        }
    }
}

impl ReserveConfig {
    pub fn reserve_mib(&self, capacity_mib: u32, is_system: bool) -> u32 {
        let base = if capacity_mib <= self.small_node_max_mib {
            self.small_fixed_mib
        } else if capacity_mib <= self.medium_node_max_mib {
            (capacity_mib as u64 * self.medium_pct as u64 / 100) as u32
        } else {
            (capacity_mib as u64 * self.large_pct as u64 / 100) as u32
        };
        let extra = if is_system { self.system_extra_mib } else { 0 };
        base.saturating_add(extra).min(capacity_mib)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleConfig {
    /// A running server with no players for this long is stopped and sleeps.
    #[serde(rename = "idle_sleep_after", with = "crate::units::duration_ms")]
    pub idle_sleep_after_ms: u64,
    /// A server runs at least this long before the idle timer may stop it.
    #[serde(rename = "min_run", with = "crate::units::duration_ms")]
    pub min_run_ms: u64,
    /// A sleeping server is archived after this long.
    #[serde(rename = "archive_after", with = "crate::units::duration_ms")]
    pub archive_after_ms: u64,
    /// A RAM reservation whose container start is not confirmed within this time is
    /// released and the start goes back to the head of the queue.
    #[serde(rename = "reservation_timeout", with = "crate::units::duration_ms")]
    pub reservation_timeout_ms: u64,
    /// How many times a start may be retried (reservation timeouts, failed container
    /// starts, lost nodes) before it is rejected.
    pub start_attempts_max: u32,
    /// A provisioning node not ready within this time is abandoned and deleted.
    #[serde(rename = "provision_timeout", with = "crate::units::duration_ms")]
    pub provision_timeout_ms: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            idle_sleep_after_ms: 10 * MS_PER_MINUTE,
            min_run_ms: 5 * MS_PER_MINUTE,
            archive_after_ms: 30 * MS_PER_DAY,
            reservation_timeout_ms: 120 * MS_PER_SECOND,
            start_attempts_max: 3,
            provision_timeout_ms: 15 * MS_PER_MINUTE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    /// Price of one GiB of RAM held for one hour, in micros.
    #[serde(rename = "ram_eur_per_gb_hour", with = "crate::units::eur_micros")]
    pub ram_price_micros_per_gib_hour: u64,
    /// Price of one GiB of world storage for one month (730 h), in micros, for
    /// stopped and sleeping servers.
    #[serde(rename = "storage_eur_per_gb_month", with = "crate::units::eur_micros")]
    pub storage_price_micros_per_gib_month: u64,
    /// Same for archived worlds (cold storage).
    #[serde(rename = "archive_eur_per_gb_month", with = "crate::units::eur_micros")]
    pub archive_price_micros_per_gib_month: u64,
    /// World size assumed for storage billing, in MiB.
    pub world_size_mib: u32,
    /// A warning mail goes out when a balance is projected to fall below this.
    #[serde(rename = "low_balance_eur", with = "crate::units::eur_micros_signed")]
    pub low_balance_threshold_micros: i64,
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            ram_price_micros_per_gib_hour: 10_000,
            storage_price_micros_per_gib_month: 50_000,
            archive_price_micros_per_gib_month: 10_000,
            world_size_mib: 1024,
            low_balance_threshold_micros: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Start requests beyond this many waiting are rejected (`QueueFull`).
    pub max_len: u32,
    /// Smaller requests may start ahead of the head of the queue (backfill) only
    /// while the head has waited less than this. After that nothing overtakes it.
    #[serde(rename = "head_bypass_max", with = "crate::units::duration_ms")]
    pub head_bypass_ms_max: u64,
    /// How many queued requests one dispatch pass looks at.
    pub scan_max: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_len: 100_000,
            head_bypass_ms_max: 5 * MS_PER_MINUTE,
            scan_max: 64,
        }
    }
}

/// Cloud VM types and locations the platform may order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Catalog {
    pub server_types: Vec<VmType>,
    pub locations: Vec<String>,
    /// Expected time from ordering a VM to it being ready, used for queue ETAs and
    /// for predictive lead times.
    #[serde(rename = "expected_provision", with = "crate::units::duration_ms")]
    pub expected_provision_ms: u64,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            server_types: Vec::new(),
            locations: Vec::new(),
            expected_provision_ms: 2 * MS_PER_MINUTE,
        }
    }
}

/// A cloud VM type of the catalog (a Hetzner "server type"; *server* here means a
/// Minecraft server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmType {
    pub name: String,
    #[serde(rename = "ram_gb", with = "crate::units::gb_mib")]
    pub ram_mib: u32,
    pub vcpu: u32,
    #[serde(rename = "hourly_eur", with = "crate::units::eur_micros")]
    pub price_micros_per_hour: u64,
    #[serde(rename = "monthly_eur", with = "crate::units::eur_micros")]
    pub monthly_cap_micros: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{ScheduleWindow, ScheduledConfig, SpareConfig};

    #[test]
    fn validation_names_the_field() {
        let mut config = CoreConfig::default();
        config.catalog.locations = vec!["fsn1".into()];
        assert_eq!(config.validate(), Ok(()));
        config.policy.locations = vec!["fsn1".into(), "ash".into()];
        assert_eq!(config.validate().unwrap_err().field, "core.policy.locations.1");
        config.policy.locations.clear();
        config.policy.spare = Some(SpareConfig {
            buffer_pct: 100,
            ..SpareConfig::default()
        });
        assert_eq!(config.validate().unwrap_err().field, "core.policy.spare.buffer_pct");
        config.policy.spare = None;
        config.policy.scheduled = Some(ScheduledConfig {
            windows: vec![ScheduleWindow {
                days: Vec::new(),
                from: 0,
                to: 60,
                min_mib: 0,
                min_nodes: 1,
            }],
        });
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "core.policy.scheduled.windows.0.days: needs at least one day (or leave it out for every day)"
        );
        config.policy.scheduled = None;
        config.prewarm.enabled = true;
        config.prewarm.history_days = 40;
        assert_eq!(config.validate().unwrap_err().field, "core.prewarm.history_days");
    }
}
