//! A new configuration at a point in time (`reconfigure`): what the running state
//! cannot take is refused, naming the field; the rest takes effect from now on, never
//! retroactively (accruals are settled at the old prices first).

use super::*;
use crate::config::ConfigError;

impl Core {
    /// Runs under `config` from `now` on, like an input at `now` (due timers fire
    /// first). Refused (nothing changed) when `config` is invalid, removes a tier a
    /// server has, or removes a VM type or location a cloud node is of. Otherwise: open
    /// accruals are settled at the old prices up to `now` (ledger entries, drained as
    /// usual), VM types and locations are matched by name (a
    /// reordered catalog keeps every node's type), the policy is rebuilt keeping what
    /// it learned, timers are requeued under the new delays and balance deadlines
    /// re-armed. Timers already armed keep their deadlines. The same configuration
    /// again changes nothing.
    pub fn reconfigure(&mut self, now: Timestamp, config: CoreConfig) -> Result<(), ConfigError> {
        if config == self.config {
            return Ok(());
        }
        config.validate()?;
        for (server_id, server) in self.servers.iter() {
            if !config.tiers_mib.contains(&server.ram_mib) {
                return Err(ConfigError::new(
                    "core.tiers_gb",
                    format!(
                        "the tier of {} MiB is removed while server {server_id} has it",
                        server.ram_mib
                    ),
                ));
            }
        }
        let type_idx = |name: &str| {
            config
                .catalog
                .server_types
                .iter()
                .position(|t| t.name == name)
                .map(|i| VmTypeIdx(i as u16))
        };
        let location_idx = |name: &str| {
            config
                .catalog
                .locations
                .iter()
                .position(|l| l == name)
                .map(|i| LocationIdx(i as u16))
        };
        let old_catalog = &self.config.catalog;
        let type_map: Vec<Option<VmTypeIdx>> = old_catalog.server_types.iter().map(|t| type_idx(&t.name)).collect();
        let location_map: Vec<Option<LocationIdx>> = old_catalog.locations.iter().map(|l| location_idx(l)).collect();
        for node in self.nodes.values() {
            if let NodeKind::Cloud { server_type, location } = node.kind {
                if type_map[server_type.0 as usize].is_none() {
                    return Err(ConfigError::new(
                        "core.catalog.server_types",
                        format!(
                            "VM type {:?} is removed while node {} is of it",
                            old_catalog.server_types[server_type.0 as usize].name, node.id
                        ),
                    ));
                }
                if location_map[location.0 as usize].is_none() {
                    return Err(ConfigError::new(
                        "core.catalog.locations",
                        format!(
                            "location {:?} is removed while node {} is in it",
                            old_catalog.locations[location.0 as usize], node.id
                        ),
                    ));
                }
            }
        }
        // Accepted: from here on nothing fails.
        self.now = self.now.max(now);
        self.fire_due_timers();
        if config.billing != self.config.billing {
            self.settle_all(self.now);
        }
        let node_ids: Vec<NodeId> = self.nodes.keys().collect();
        for node_id in node_ids {
            let node = self.nodes.get_mut(&node_id).expect("listed");
            if let NodeKind::Cloud { server_type, location } = &mut node.kind {
                *server_type = type_map[server_type.0 as usize].expect("checked");
                *location = location_map[location.0 as usize].expect("checked");
            }
        }
        self.provider.remap(|(t, l)| {
            Some((
                type_map.get(t.0 as usize)?.as_ref().copied()?,
                location_map.get(l.0 as usize)?.as_ref().copied()?,
            ))
        });
        let learned = self.policy.state();
        self.config = config;
        self.policy = self.config.policy.build(&self.config.catalog);
        self.policy.set_state(learned);
        self.location_order = self.config.policy.location_order(&self.config.catalog);
        self.type_usable_mib = crate::policy::type_usable_mib(&self.config.catalog, &self.config.reserve);
        self.largest_placeable_mib = self.type_usable_mib.iter().copied().max().unwrap_or(0);
        self.timers = self.timers.with_delays(self.now, timer_lanes(&self.config));
        let user_ids: Vec<UserId> = self.users.keys().collect();
        for user_id in user_ids {
            self.arm_user_timer(user_id);
        }
        self.tidy_timers();
        self.assert_totals();
        debug_assert!(self.check_invariants().is_ok(), "{:?}", self.check_invariants());
        Ok(())
    }
}

/// The fixed delays that get a FIFO lane in the timer queue (see `timerq`).
pub(super) fn timer_lanes(config: &CoreConfig) -> [u64; 5] {
    [
        config.lifecycle.archive_after_ms,
        config.lifecycle.reservation_timeout_ms,
        config.lifecycle.idle_sleep_after_ms,
        config.lifecycle.provision_timeout_ms,
        config.policy.evaluate_every_ms().unwrap_or(0),
    ]
}
