//! The semantic checks of a scenario that serde cannot make.

use super::{Scenario, WorkloadKind, parse_date};

impl Scenario {
    /// Semantic checks serde cannot make. Returns the dotted field path and why.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let err = |field: &str, message: String| Err((field.to_string(), message));
        if self.duration_ms == 0 {
            return err("duration", "must be longer than zero".into());
        }
        if self.warmup_ms >= self.duration_ms {
            return err("warmup", "must be shorter than duration".into());
        }
        if parse_date(&self.start_date).is_none() {
            return err(
                "start_date",
                format!("{:?} is not a date written YYYY-MM-DD", self.start_date),
            );
        }
        let core = &self.core;
        if let Err(e) = core.validate() {
            return err(&format!("core.{}", e.field.trim_start_matches("core.")), e.message);
        }
        if core.tiers_mib.is_empty() {
            return err("core.tiers_gb", "needs at least one tier".into());
        }
        for (i, t) in core.catalog.server_types.iter().enumerate() {
            if t.ram_mib <= core.reserve.reserve_mib(t.ram_mib, false) {
                return err(
                    &format!("core.catalog.server_types.{i}.ram_gb"),
                    "leaves no RAM after the system reserve".into(),
                );
            }
        }
        let has_cloud = !core.catalog.server_types.is_empty();
        if has_cloud && core.catalog.locations.is_empty() {
            return err(
                "core.catalog.locations",
                "needs at least one location when server types are listed".into(),
            );
        }
        let policy = &core.policy;
        if let Some(name) = &policy.server_type
            && !core.catalog.server_types.iter().any(|t| &t.name == name)
        {
            return err(
                "core.policy.server_type",
                format!("{name:?} is not in core.catalog.server_types"),
            );
        }
        if let Some(name) = &policy.location
            && !core.catalog.locations.contains(name)
        {
            return err(
                "core.policy.location",
                format!("{name:?} is not in core.catalog.locations"),
            );
        }
        if policy.min_cloud_nodes > policy.max_cloud_nodes {
            return err("core.policy.min_cloud_nodes", "must not exceed max_cloud_nodes".into());
        }
        if policy.evaluate_every_ms == 0 {
            return err("core.policy.evaluate_every", "must be longer than zero".into());
        }
        if policy.autoscales() && !has_cloud && policy.max_cloud_nodes > 0 {
            return err(
                "core.policy",
                "autoscaling needs core.catalog.server_types (or no policy table)".into(),
            );
        }
        for (i, d) in self.fleet.dedicated.iter().enumerate() {
            if d.ram_mib <= core.reserve.reserve_mib(d.ram_mib, d.is_system) {
                return err(
                    &format!("fleet.dedicated.{i}.ram_gb"),
                    "leaves no RAM after the system reserve".into(),
                );
            }
        }
        let cloud = &self.fleet.cloud;
        let type_known = |name: &str| core.catalog.server_types.iter().any(|t| t.name == name);
        for (key, dist) in &cloud.provisioning_by_type {
            let (t, loc) = key.split_once('@').map_or((key.as_str(), None), |(t, l)| (t, Some(l)));
            let field = format!("fleet.cloud.provisioning_by_type.{key}");
            if !type_known(t) {
                return err(&field, format!("{t:?} is not in core.catalog.server_types"));
            }
            if let Some(loc) = loc
                && !core.catalog.locations.iter().any(|l| l == loc)
            {
                return err(&field, format!("{loc:?} is not in core.catalog.locations"));
            }
            dist.validate().or_else(|m| err(&field, m))?;
        }
        for (field, pct) in [
            ("fleet.cloud.create_failure_pct", cloud.create_failure_pct),
            ("fleet.cloud.vm_loss_pct_per_day", cloud.vm_loss_pct_per_day),
        ] {
            if !(0.0..=100.0).contains(&pct) {
                return err(field, format!("must be a percentage between 0 and 100, got {pct}"));
            }
        }
        for (i, w) in cloud.sold_out.iter().enumerate() {
            if !type_known(&w.server_type) {
                return err(
                    &format!("fleet.cloud.sold_out.{i}.server_type"),
                    format!("{:?} is not in core.catalog.server_types", w.server_type),
                );
            }
            if let Some(loc) = &w.location
                && !core.catalog.locations.contains(loc)
            {
                return err(
                    &format!("fleet.cloud.sold_out.{i}.location"),
                    format!("{loc:?} is not in core.catalog.locations"),
                );
            }
        }
        for (i, p) in cloud.prices.iter().enumerate() {
            if parse_date(&p.from).is_none() {
                return err(
                    &format!("fleet.cloud.prices.{i}.from"),
                    format!("{:?} is not a date written YYYY-MM-DD", p.from),
                );
            }
            if !type_known(&p.server_type) {
                return err(
                    &format!("fleet.cloud.prices.{i}.server_type"),
                    format!("{:?} is not in core.catalog.server_types", p.server_type),
                );
            }
            if let Some(loc) = &p.location
                && !core.catalog.locations.contains(loc)
            {
                return err(
                    &format!("fleet.cloud.prices.{i}.location"),
                    format!("{loc:?} is not in core.catalog.locations"),
                );
            }
        }
        let rl = &cloud.rate_limit;
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if rl.enabled && (rl.requests_per_hour == 0 || !positive(rl.refill_seconds) || !positive(rl.poll_seconds)) {
            return err(
                "fleet.cloud.rate_limit",
                "requests_per_hour, refill_seconds and poll_seconds must be positive".into(),
            );
        }
        let dists = [
            (
                "fleet.cloud.provisioning_seconds",
                &self.fleet.cloud.provisioning_seconds,
            ),
            ("fleet.cloud.deletion_seconds", &self.fleet.cloud.deletion_seconds),
            ("servers.container_start_seconds", &self.servers.container_start_seconds),
            ("servers.boot_seconds", &self.servers.boot_seconds),
            ("servers.stop_seconds", &self.servers.stop_seconds),
        ];
        for (field, dist) in dists {
            dist.validate().or_else(|m| err(field, m))?;
        }
        let g = &self.workload;
        g.patience_seconds
            .validate()
            .or_else(|m| err("workload.patience_seconds", m))?;
        for (i, surge) in g.surges.iter().enumerate() {
            if !(surge.factor.is_finite() && surge.factor >= 0.0) {
                return err(
                    &format!("workload.surges.{i}.factor"),
                    "must be a non-negative number".into(),
                );
            }
        }
        if let Some(h) = &g.habits {
            if !(0.0..=100.0).contains(&h.servers_pct) {
                return err("workload.habits.servers_pct", "must be between 0 and 100".into());
            }
            if !(0.0..=100.0).contains(&h.days_pct) {
                return err("workload.habits.days_pct", "must be between 0 and 100".into());
            }
            if h.from_minute > h.to_minute {
                return err("workload.habits.to", "must not be earlier than from".into());
            }
            h.session_minutes
                .validate()
                .or_else(|m| err("workload.habits.session_minutes", m))?;
        }
        if g.kind == WorkloadKind::Trace {
            if g.path.is_none() {
                return err("workload.path", "required when kind = \"trace\"".into());
            }
        } else {
            if g.users == 0 || g.servers_per_user == 0 {
                return err("workload.users", "users and servers_per_user must be at least 1".into());
            }
            if !(g.sessions_per_hour.is_finite() && g.sessions_per_hour > 0.0) {
                return err("workload.sessions_per_hour", "must be a positive number".into());
            }
            if g.daily_profile.len() != 24 {
                return err(
                    "workload.daily_profile",
                    format!("needs 24 values (one per hour), got {}", g.daily_profile.len()),
                );
            }
            if g.weekly_profile.len() != 7 {
                return err(
                    "workload.weekly_profile",
                    format!("needs 7 values (Monday first), got {}", g.weekly_profile.len()),
                );
            }
            for (field, profile) in [
                ("workload.daily_profile", &g.daily_profile),
                ("workload.weekly_profile", &g.weekly_profile),
            ] {
                if profile.iter().any(|v| !(v.is_finite() && *v >= 0.0)) || profile.iter().all(|v| *v == 0.0) {
                    return err(field, "values must be non-negative and not all zero".into());
                }
            }
            g.session_minutes
                .validate()
                .or_else(|m| err("workload.session_minutes", m))?;
            g.players.validate().or_else(|m| err("workload.players", m))?;
            if g.tiers.is_empty() {
                return err("workload.tiers", "needs at least one tier".into());
            }
            for (i, t) in g.tiers.iter().enumerate() {
                if !core.tiers_mib.contains(&(t.gb * 1024)) {
                    return err(
                        &format!("workload.tiers.{i}.gb"),
                        format!("{} GB is not one of core.tiers_gb", t.gb),
                    );
                }
                if !(t.weight.is_finite() && t.weight > 0.0) {
                    return err(
                        &format!("workload.tiers.{i}.weight"),
                        "must be a positive number".into(),
                    );
                }
            }
        }
        let known = crate::outcome::Outcome::metric_names();
        for (metric, bound) in &self.expect {
            if !known.contains(metric) {
                return err(
                    &format!("expect.{metric}"),
                    format!(
                        "unknown metric; known metrics: {}",
                        known.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
            if bound.min.is_none() && bound.max.is_none() {
                return err(&format!("expect.{metric}"), "give min, max or both".into());
            }
        }
        Ok(())
    }
}
