//! What the core remembers about the provider's refusals, and the fallback rule.
//!
//! - `resource_unavailable` (Hetzner 412, sold out): that (type, location) is skipped
//!   for `sold_out_backoff`.
//! - `rate_limit_exceeded` (429): no VM is ordered for `rate_limit_backoff`, doubling
//!   on each consecutive 429 up to `rate_limit_backoff_max`; demand is evaluated again
//!   afterwards, nothing is lost.
//! - any other failure: the first is retried at once; repeated failures of the same
//!   (type, location) back it off like Cluster Autoscaler's node-group back-off:
//!   `failure_backoff`, doubling up to `failure_backoff_max`. A success resets it.
//!
//! An order for a (type, location) that is backed off goes, in this order, to: the
//! same location, the wanted type if available, else the cheapest available type
//! whose usable RAM is at least the wanted type's; then the next locations (the
//! policy's `locations` list, else the catalog's order) the same way. When nothing
//! qualifies, nothing is ordered and the next evaluation tries again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{Catalog, ReserveConfig};
use crate::io::FailureKind;
use crate::types::{LocationIdx, MS_PER_MINUTE, Timestamp, VmTypeIdx};

/// `[core.policy.fallback]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FallbackConfig {
    #[serde(rename = "sold_out_backoff", with = "crate::units::duration_ms")]
    pub sold_out_backoff_ms: u64,
    #[serde(rename = "rate_limit_backoff", with = "crate::units::duration_ms")]
    pub rate_limit_backoff_ms: u64,
    #[serde(rename = "rate_limit_backoff_max", with = "crate::units::duration_ms")]
    pub rate_limit_backoff_max_ms: u64,
    #[serde(rename = "failure_backoff", with = "crate::units::duration_ms")]
    pub failure_backoff_ms: u64,
    #[serde(rename = "failure_backoff_max", with = "crate::units::duration_ms")]
    pub failure_backoff_max_ms: u64,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            sold_out_backoff_ms: 30 * MS_PER_MINUTE,
            rate_limit_backoff_ms: MS_PER_MINUTE,
            rate_limit_backoff_max_ms: 16 * MS_PER_MINUTE,
            failure_backoff_ms: MS_PER_MINUTE,
            failure_backoff_max_ms: 15 * MS_PER_MINUTE,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Backoff {
    until: Timestamp,
    consecutive_failures: u32,
}

/// Exponential back-off: `base × 2^(n-1)`, capped.
fn exponential(base_ms: u64, max_ms: u64, n: u32) -> u64 {
    base_ms
        .saturating_mul(1u64 << (n.saturating_sub(1)).min(30))
        .min(max_ms)
}

/// The provider's recent refusals. Bounded: one entry per (type, location).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProviderHealth {
    /// (A list of pairs in snapshots: JSON keys are text.)
    #[serde(with = "crate::snapshot::pairs")]
    backoff: BTreeMap<(VmTypeIdx, LocationIdx), Backoff>,
    rate_limited_until: Option<Timestamp>,
    consecutive_rate_limits: u32,
}

impl ProviderHealth {
    /// The same back-offs under new catalog indices (a reconfiguration); `map`
    /// returns `None` for a (type, location) that is gone, whose back-off is dropped.
    pub fn remap(&mut self, map: impl Fn((VmTypeIdx, LocationIdx)) -> Option<(VmTypeIdx, LocationIdx)>) {
        let backoff = std::mem::take(&mut self.backoff);
        self.backoff = backoff
            .into_iter()
            .filter_map(|(key, value)| Some((map(key)?, value)))
            .collect();
    }

    pub fn on_failure(
        &mut self,
        config: &FallbackConfig,
        kind: FailureKind,
        wanted: (VmTypeIdx, LocationIdx),
        now: Timestamp,
    ) {
        match kind {
            FailureKind::RateLimited => {
                self.consecutive_rate_limits += 1;
                let ms = exponential(
                    config.rate_limit_backoff_ms,
                    config.rate_limit_backoff_max_ms,
                    self.consecutive_rate_limits,
                );
                self.rate_limited_until = Some(now.plus_ms(ms));
            }
            FailureKind::ResourceUnavailable => {
                let entry = self.backoff.entry(wanted).or_default();
                entry.until = entry.until.max(now.plus_ms(config.sold_out_backoff_ms));
            }
            FailureKind::Other | FailureKind::Permanent => {
                let entry = self.backoff.entry(wanted).or_default();
                entry.consecutive_failures += 1;
                if entry.consecutive_failures >= 2 {
                    let ms = exponential(
                        config.failure_backoff_ms,
                        config.failure_backoff_max_ms,
                        entry.consecutive_failures - 1,
                    );
                    entry.until = entry.until.max(now.plus_ms(ms));
                }
            }
        }
    }

    pub fn on_success(&mut self, ordered: (VmTypeIdx, LocationIdx)) {
        self.consecutive_rate_limits = 0;
        if let Some(entry) = self.backoff.get_mut(&ordered) {
            entry.consecutive_failures = 0;
        }
    }

    /// Whether orders are on hold because of the API rate limit.
    pub fn rate_limited(&self, now: Timestamp) -> bool {
        self.rate_limited_until.is_some_and(|until| now < until)
    }

    pub fn available(&self, which: (VmTypeIdx, LocationIdx), now: Timestamp) -> bool {
        self.backoff.get(&which).is_none_or(|b| now >= b.until)
    }

    /// Where to order instead of `wanted`, following the fallback rule; `wanted`
    /// itself when it is available; `None` when nothing qualifies.
    pub fn choose(
        &self,
        catalog: &Catalog,
        reserve: &ReserveConfig,
        locations: &[LocationIdx],
        wanted: (VmTypeIdx, LocationIdx),
        now: Timestamp,
    ) -> Option<(VmTypeIdx, LocationIdx)> {
        if self.available(wanted, now) {
            return Some(wanted);
        }
        let usable = |t: VmTypeIdx| {
            let ram = catalog.server_types[t.0 as usize].ram_mib;
            ram - reserve.reserve_mib(ram, false)
        };
        let need = usable(wanted.0);
        let order = std::iter::once(wanted.1).chain(locations.iter().copied().filter(|&l| l != wanted.1));
        for location in order {
            if self.available((wanted.0, location), now) {
                return Some((wanted.0, location));
            }
            let cheapest = (0..catalog.server_types.len())
                .map(|i| VmTypeIdx(i as u16))
                .filter(|&t| usable(t) >= need && self.available((t, location), now))
                .min_by_key(|&t| (catalog.server_types[t.0 as usize].price_micros_per_hour, t));
            if let Some(t) = cheapest {
                return Some((t, location));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VmType;

    fn catalog() -> Catalog {
        let t = |name: &str, gb: u32, price: u64| VmType {
            name: name.into(),
            ram_mib: gb * 1024,
            vcpu: 2,
            price_micros_per_hour: price,
            monthly_cap_micros: price * 600,
        };
        Catalog {
            server_types: vec![
                t("small", 8, 20_000),
                t("pref", 16, 40_000),
                t("big", 32, 75_000),
                t("huge", 64, 150_000),
            ],
            locations: vec!["fsn1".into(), "nbg1".into()],
            ..Catalog::default()
        }
    }

    #[test]
    fn sold_out_falls_back_to_the_cheapest_larger_type_then_the_next_location() {
        let (catalog, reserve) = (catalog(), ReserveConfig::default());
        let config = FallbackConfig::default();
        let locations = [LocationIdx(0), LocationIdx(1)];
        let mut health = ProviderHealth::default();
        let now = Timestamp(1_000_000);
        let wanted = (VmTypeIdx(1), LocationIdx(0));
        assert_eq!(health.choose(&catalog, &reserve, &locations, wanted, now), Some(wanted));
        health.on_failure(&config, FailureKind::ResourceUnavailable, wanted, now);
        let big_fsn1 = (VmTypeIdx(2), LocationIdx(0));
        assert_eq!(
            health.choose(&catalog, &reserve, &locations, wanted, now),
            Some(big_fsn1)
        );
        health.on_failure(&config, FailureKind::ResourceUnavailable, big_fsn1, now);
        health.on_failure(
            &config,
            FailureKind::ResourceUnavailable,
            (VmTypeIdx(3), LocationIdx(0)),
            now,
        );
        // The wanted type in the next location beats a larger type.
        assert_eq!(
            health.choose(&catalog, &reserve, &locations, wanted, now),
            Some((VmTypeIdx(1), LocationIdx(1)))
        );
        // After the back-off the wanted one is used again.
        let later = now.plus_ms(config.sold_out_backoff_ms);
        assert_eq!(
            health.choose(&catalog, &reserve, &locations, wanted, later),
            Some(wanted)
        );
    }

    #[test]
    fn rate_limits_and_repeated_failures_back_off_exponentially() {
        let config = FallbackConfig::default();
        let mut health = ProviderHealth::default();
        let now = Timestamp(0);
        let wanted = (VmTypeIdx(0), LocationIdx(0));
        health.on_failure(&config, FailureKind::RateLimited, wanted, now);
        assert!(health.rate_limited(now.plus_ms(MS_PER_MINUTE - 1)));
        assert!(!health.rate_limited(now.plus_ms(MS_PER_MINUTE)));
        health.on_failure(&config, FailureKind::RateLimited, wanted, now);
        assert!(health.rate_limited(now.plus_ms(2 * MS_PER_MINUTE - 1)), "doubles");
        // One ordinary failure is retried at once; the second backs the type off.
        health.on_failure(&config, FailureKind::Other, wanted, now);
        assert!(health.available(wanted, now));
        health.on_failure(&config, FailureKind::Other, wanted, now);
        assert!(!health.available(wanted, now));
        assert!(health.available(wanted, now.plus_ms(MS_PER_MINUTE)));
        health.on_success(wanted);
        health.on_failure(&config, FailureKind::Other, wanted, now.plus_ms(MS_PER_MINUTE));
        assert!(
            health.available(wanted, now.plus_ms(MS_PER_MINUTE)),
            "a success reset the count"
        );
    }
}
