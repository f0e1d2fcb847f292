//! `[core.policy]`: the bounds and choices every component shares, one optional table
//! per component, and the reactive thresholds.

use serde::{Deserialize, Serialize};

use super::{
    CompositePolicy, FallbackConfig, PredictiveConfig, ScaleDownConfig, ScalingPolicy, ScheduledConfig, SpareConfig,
    StaticPolicy,
};
use crate::config::Catalog;
use crate::types::{LocationIdx, MS_PER_MINUTE, MS_PER_SECOND, VmTypeIdx};

/// The scaling configuration: bounds and choices shared by every policy, plus one
/// optional table per policy component. No component table means no autoscaling (a
/// static fleet). Several tables compose (see `CompositePolicy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// The periodic evaluation interval.
    #[serde(rename = "evaluate_every", with = "crate::units::duration_ms")]
    pub evaluate_every_ms: u64,
    /// Preferred VM type (by name); a larger one is chosen when a queued request
    /// does not fit it. `None`: the cheapest type that fits.
    pub server_type: Option<String>,
    /// Location to order in; `None`: the first of `locations`, else the catalog's first.
    pub location: Option<String>,
    /// Fallback order of locations (names from the catalog); empty: the catalog's order.
    pub locations: Vec<String>,
    pub min_cloud_nodes: u32,
    pub max_cloud_nodes: u32,
    /// At most this many nodes ordered per evaluation.
    pub max_provision_per_eval: u32,
    /// Reactive thresholds; `None`: the reactive policy is off.
    pub reactive: Option<ReactiveConfig>,
    /// Spare pool (Agones buffer); `None`: off.
    pub spare: Option<SpareConfig>,
    /// Hour-of-week forecast; `None`: off.
    pub predictive: Option<PredictiveConfig>,
    /// Minimum capacity in time windows; `None`: off.
    pub scheduled: Option<ScheduledConfig>,
    /// Which scale-down rule applies; `None`: `empty_after` with the reactive table's
    /// `scale_down_empty_after` and `scale_down_cooldown` (10 min each by default).
    pub scale_down: Option<ScaleDownConfig>,
    /// Provider back-off and fallback (always on).
    pub fallback: FallbackConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            evaluate_every_ms: 30 * MS_PER_SECOND,
            server_type: None,
            location: None,
            locations: Vec::new(),
            min_cloud_nodes: 0,
            max_cloud_nodes: 50,
            max_provision_per_eval: 10,
            reactive: None,
            spare: None,
            predictive: None,
            scheduled: None,
            scale_down: None,
            fallback: FallbackConfig::default(),
        }
    }
}

impl PolicyConfig {
    /// A reactive policy with default thresholds.
    pub fn reactive() -> PolicyConfig {
        PolicyConfig {
            reactive: Some(ReactiveConfig::default()),
            ..PolicyConfig::default()
        }
    }

    /// Whether any policy is on.
    pub fn autoscales(&self) -> bool {
        self.reactive.is_some()
            || self.spare.is_some()
            || self.predictive.is_some()
            || self.scheduled.is_some()
            || self.scale_down.is_some()
    }

    pub fn evaluate_every_ms(&self) -> Option<u64> {
        self.autoscales().then_some(self.evaluate_every_ms)
    }

    pub fn build(&self, catalog: &Catalog) -> Box<dyn ScalingPolicy> {
        if self.autoscales() {
            Box::new(CompositePolicy::new(self, catalog))
        } else {
            Box::new(StaticPolicy)
        }
    }

    fn location_idx(catalog: &Catalog, name: &str) -> LocationIdx {
        let idx = catalog
            .locations
            .iter()
            .position(|l| l == name)
            .unwrap_or_else(|| panic!("location {name:?} is not in the catalog"));
        LocationIdx(idx as u16)
    }

    /// The preferred VM type and the location, resolved against the catalog.
    pub fn resolve(&self, catalog: &Catalog) -> (Option<VmTypeIdx>, LocationIdx) {
        let preferred = self.server_type.as_ref().map(|name| {
            let idx = catalog
                .server_types
                .iter()
                .position(|t| &t.name == name)
                .unwrap_or_else(|| panic!("VM type {name:?} is not in the catalog"));
            VmTypeIdx(idx as u16)
        });
        let location = match (&self.location, self.locations.first()) {
            (Some(name), _) | (None, Some(name)) => Self::location_idx(catalog, name),
            (None, None) => LocationIdx(0),
        };
        (preferred, location)
    }

    /// The fallback order of locations: `locations`, else the catalog's order.
    pub fn location_order(&self, catalog: &Catalog) -> Vec<LocationIdx> {
        if self.locations.is_empty() {
            (0..catalog.locations.len()).map(|i| LocationIdx(i as u16)).collect()
        } else {
            self.locations.iter().map(|n| Self::location_idx(catalog, n)).collect()
        }
    }

    /// Check the policy against the catalog. The error names the field.
    pub fn validate(&self, catalog: &Catalog) -> Result<(), crate::config::ConfigError> {
        let err = |field: &str, message: String| {
            Err(crate::config::ConfigError::new(format!("core.policy.{field}"), message))
        };
        for (i, name) in self.locations.iter().enumerate() {
            if !catalog.locations.contains(name) {
                return err(
                    &format!("locations.{i}"),
                    format!("{name:?} is not in core.catalog.locations"),
                );
            }
        }
        if let Some(spare) = &self.spare {
            if spare.buffer_pct >= 100 {
                return err("spare.buffer_pct", "must be below 100".into());
            }
            if spare.min_mib > spare.max_mib {
                return err("spare.min_gb", "must not exceed max_gb".into());
            }
        }
        if let Some(scale_down) = &self.scale_down
            && scale_down.utilization_below_pct > 100
        {
            return err("scale_down.utilization_below_pct", "must be at most 100".into());
        }
        if let Some(scheduled) = &self.scheduled {
            scheduled.validate()?;
        }
        if let Some(predictive) = &self.predictive {
            predictive.validate()?;
        }
        Ok(())
    }
}

/// Reactive thresholds: scale up on a queue or on low free RAM, scale down cloud
/// nodes that stayed empty, with cooldowns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReactiveConfig {
    /// Order a node when free RAM on ready plus provisioning nodes falls below this.
    pub scale_up_free_mib_below: u64,
    /// After a scale-up, wait this long before a free-RAM-triggered scale-up.
    /// Queue-triggered scale-ups are not delayed: they count capacity on its way.
    #[serde(rename = "scale_up_cooldown", with = "crate::units::duration_ms")]
    pub scale_up_cooldown_ms: u64,
    /// A cloud node empty for this long is deleted.
    #[serde(rename = "scale_down_empty_after", with = "crate::units::duration_ms")]
    pub scale_down_empty_after_ms: u64,
    /// No scale-down for this long after a scale-up.
    #[serde(rename = "scale_down_cooldown", with = "crate::units::duration_ms")]
    pub scale_down_cooldown_ms: u64,
}

impl Default for ReactiveConfig {
    fn default() -> Self {
        ReactiveConfig {
            scale_up_free_mib_below: 0,
            scale_up_cooldown_ms: 60 * MS_PER_SECOND,
            scale_down_empty_after_ms: 10 * MS_PER_MINUTE,
            scale_down_cooldown_ms: 10 * MS_PER_MINUTE,
        }
    }
}
