//! The spare pool (Agones buffer): free capacity kept on top of the demand.

use serde::{Deserialize, Serialize};

/// `[core.policy.spare]`: keep free capacity (a buffer) on top of the demand (RAM
/// held plus RAM queued). The buffer is `buffer_gb`, or `buffer_pct` percent of the
/// capacity (`capacity = ceil(demand × 100 / (100 − pct))`), whichever is larger,
/// then clamped to `[min_gb, max_gb]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpareConfig {
    #[serde(rename = "buffer_gb", with = "crate::units::gb_mib")]
    pub buffer_mib: u32,
    pub buffer_pct: u32,
    #[serde(rename = "min_gb", with = "crate::units::gb_mib")]
    pub min_mib: u32,
    #[serde(rename = "max_gb", with = "crate::units::gb_mib")]
    pub max_mib: u32,
}

impl Default for SpareConfig {
    fn default() -> Self {
        SpareConfig {
            buffer_mib: 0,
            buffer_pct: 0,
            min_mib: 0,
            max_mib: 1024 * 1024,
        }
    }
}

impl SpareConfig {
    /// The capacity the spare pool asks for, given the demand.
    pub fn target_mib(&self, demand_mib: u64) -> u64 {
        let pct = self.buffer_pct.min(99) as u64;
        let by_pct = (demand_mib * 100).div_ceil(100 - pct) - demand_mib;
        let buffer = by_pct
            .max(self.buffer_mib as u64)
            .clamp(self.min_mib as u64, self.max_mib as u64);
        demand_mib + buffer
    }
}
