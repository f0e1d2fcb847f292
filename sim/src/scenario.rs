//! Scenario files (TOML): the core's configuration plus the fleet, the provider and
//! server timing models, the workload and the expected outcomes. Documented field by
//! field in `scenarios/README.md`. Unknown fields are errors, and every error names the
//! file, the line and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use payperplay_core::units::{duration_ms, eur_micros, eur_micros_signed, gb_mib};
use payperplay_core::{CoreConfig, MS_PER_DAY, Timestamp};
use serde::{Deserialize, Serialize};

use crate::dist::Dist;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Another scenario file this one starts from (relative to this file): its tables
    /// are merged key by key, this file's values win, arrays are replaced whole; its
    /// `[expect]` is not inherited.
    #[serde(default, skip_serializing)]
    pub extends: Option<PathBuf>,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Master seed; every random stream is derived from it.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Simulated time, e.g. "7days".
    #[serde(with = "duration_ms", rename = "duration")]
    pub duration_ms: u64,
    /// Outcomes ignore what happens before this (steady-state measurements).
    #[serde(with = "duration_ms", rename = "warmup", default)]
    pub warmup_ms: u64,
    /// First simulated day (UTC midnight), "YYYY-MM-DD". Default 2026-01-05, a Monday.
    #[serde(default = "default_start_date")]
    pub start_date: String,
    /// A start that takes longer than this from request to running is an SLO miss.
    #[serde(with = "duration_ms", rename = "slo_start_wait", default = "default_slo")]
    pub slo_start_wait_ms: u64,
    #[serde(default)]
    pub core: CoreConfig,
    #[serde(default)]
    pub fleet: Fleet,
    #[serde(default)]
    pub servers: ServerTiming,
    pub workload: Workload,
    /// Bounds on outcome metrics: `metric = { min = .., max = .. }`.
    #[serde(default)]
    pub expect: BTreeMap<String, Bound>,
    /// The loaded trace when `workload.kind = "trace"` (or `run --trace`).
    #[serde(skip)]
    pub trace: Option<std::sync::Arc<crate::trace::Trace>>,
}

fn default_seed() -> u64 {
    1
}

fn default_start_date() -> String {
    "2026-01-05".to_string()
}

fn default_slo() -> u64 {
    60_000
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    #[serde(default)]
    pub dedicated: Vec<DedicatedSpec>,
    #[serde(default)]
    pub cloud: CloudModel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedicatedSpec {
    pub name: String,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(rename = "ram_gb", with = "gb_mib")]
    pub ram_mib: u32,
    #[serde(rename = "monthly_eur", with = "eur_micros")]
    pub monthly_cost_micros: u64,
    /// Also runs the platform itself (keeps an extra reserve). Never inferred.
    #[serde(default)]
    pub is_system: bool,
}

fn one() -> u32 {
    1
}

/// How the cloud provider behaves (the catalog itself is `core.catalog`): latencies,
/// dated prices, and faults. Every fault is seeded like any other draw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CloudModel {
    /// From ordering a VM to it taking containers.
    pub provisioning_seconds: Dist,
    /// Per server type (`"cpx42"`) or type and location (`"cpx42@fsn1"`, which wins).
    pub provisioning_by_type: BTreeMap<String, Dist>,
    /// Draw provisioning latencies from the trace's `provisioning_observed` samples for
    /// that type and location when it has any.
    pub use_trace_latencies: bool,
    /// From asking for deletion to the provider confirming it (billing stops then).
    pub deletion_seconds: Dist,
    /// Chance (percent) that an order fails outright (HTTP 5xx); the VM never exists.
    pub create_failure_pct: f64,
    /// Chance (percent) per day of its life that a ready VM dies (host failure).
    pub vm_loss_pct_per_day: f64,
    /// Windows in which a type is sold out (`resource_unavailable`).
    pub sold_out: Vec<SoldOut>,
    /// Dated price changes; a VM keeps the price in effect on the day it was ordered.
    /// Before the first entry for a type, `core.catalog` prices apply.
    pub prices: Vec<DatedPrice>,
    pub rate_limit: RateLimit,
}

impl Default for CloudModel {
    fn default() -> Self {
        CloudModel {
            provisioning_seconds: Dist::Lognormal {
                median: 90.0,
                sigma: 0.4,
            },
            provisioning_by_type: BTreeMap::new(),
            use_trace_latencies: true,
            deletion_seconds: Dist::Const { value: 5.0 },
            create_failure_pct: 0.0,
            vm_loss_pct_per_day: 0.0,
            sold_out: Vec::new(),
            prices: Vec::new(),
            rate_limit: RateLimit::default(),
        }
    }
}

/// A server type sold out in one location (or all) for a window of simulated time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoldOut {
    pub server_type: String,
    /// `None`: every location.
    #[serde(default)]
    pub location: Option<String>,
    /// When the window opens, counted from the start of the run ("1day 18h").
    #[serde(rename = "after", with = "duration_ms")]
    pub after_ms: u64,
    #[serde(rename = "duration", with = "duration_ms")]
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatedPrice {
    /// First day (UTC) the price applies to new orders, "YYYY-MM-DD".
    pub from: String,
    pub server_type: String,
    #[serde(rename = "hourly_eur", with = "eur_micros")]
    pub price_micros_per_hour: u64,
    #[serde(rename = "monthly_eur", with = "eur_micros")]
    pub monthly_cap_micros: u64,
}

/// Hetzner's API rate limit: a bucket of `requests_per_hour` that refills one request
/// per `refill_seconds`. Orders, deletions and action polls all take a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    pub enabled: bool,
    pub requests_per_hour: u32,
    pub refill_seconds: f64,
    /// How often the shell polls a create action until the VM is ready.
    pub poll_seconds: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            enabled: true,
            requests_per_hour: 3600,
            refill_seconds: 1.0,
            poll_seconds: 10.0,
        }
    }
}

/// How long containers take to start, Minecraft to boot, and a clean stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTiming {
    pub container_start_seconds: Dist,
    /// From the container running to Minecraft accepting players (Paper: 30–60 s).
    pub boot_seconds: Dist,
    pub stop_seconds: Dist,
}

impl Default for ServerTiming {
    fn default() -> Self {
        ServerTiming {
            container_start_seconds: Dist::Const { value: 2.0 },
            boot_seconds: Dist::Uniform { min: 30.0, max: 60.0 },
            stop_seconds: Dist::Const { value: 10.0 },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    /// Sessions drawn from the generator's distributions.
    Generator,
    /// A recorded or generated trace (`path`), see the trace format.
    Trace,
}

/// A synthetic workload: sessions arrive as a Poisson process whose rate follows a
/// daily and a weekly profile; each picks one server uniformly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub kind: WorkloadKind,
    /// The trace file for `kind = "trace"`, relative to the scenario file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub users: u32,
    #[serde(default = "one")]
    pub servers_per_user: u32,
    #[serde(rename = "initial_balance_eur", with = "eur_micros_signed", default)]
    pub initial_balance_micros: i64,
    /// Owners top up this much when warned of a low balance (0: never).
    #[serde(rename = "topup_eur", with = "eur_micros_signed", default)]
    pub topup_micros: i64,
    /// How long after the warning the top-up arrives.
    #[serde(rename = "topup_delay", with = "duration_ms", default = "default_topup_delay")]
    pub topup_delay_ms: u64,
    /// Mean session arrivals per hour before the profiles are applied.
    #[serde(default)]
    pub sessions_per_hour: f64,
    /// 24 multipliers, hour 0 = 00:00 UTC. Default: flat.
    #[serde(default = "flat_daily")]
    pub daily_profile: Vec<f64>,
    /// 7 multipliers, Monday first. Default: flat.
    #[serde(default = "flat_weekly")]
    pub weekly_profile: Vec<f64>,
    /// How long a session plays once the server runs.
    #[serde(default = "crate::workload::default_session_minutes")]
    pub session_minutes: Dist,
    /// Players in one session (rounded, at least 1).
    #[serde(default = "one_player")]
    pub players: Dist,
    /// RAM tier mix of the servers.
    #[serde(default)]
    pub tiers: Vec<TierWeight>,
    /// Owners who play at a regular time of day (for pre-warm).
    #[serde(default)]
    pub habits: Option<Habits>,
    /// Load spikes on top of the profiles (a launch day, an event).
    #[serde(default)]
    pub surges: Vec<Surge>,
}

/// The arrival rate climbs linearly to `factor` times its profile value over `ramp`,
/// holds for `hold`, and falls back over `ramp` again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Surge {
    /// When the climb starts, from the start of the run.
    #[serde(rename = "after", with = "duration_ms")]
    pub after_ms: u64,
    #[serde(rename = "ramp", with = "duration_ms")]
    pub ramp_ms: u64,
    #[serde(rename = "hold", with = "duration_ms")]
    pub hold_ms: u64,
    pub factor: f64,
}

impl Surge {
    /// The multiplier at `since_start` ms into the run.
    pub fn factor_at(&self, since_start: u64) -> f64 {
        let Some(t) = since_start.checked_sub(self.after_ms) else {
            return 1.0;
        };
        let ramp = self.ramp_ms.max(1) as f64;
        let up = |x: f64| 1.0 + (self.factor - 1.0) * x.clamp(0.0, 1.0);
        if t < self.ramp_ms {
            up(t as f64 / ramp)
        } else if t < self.ramp_ms + self.hold_ms {
            self.factor
        } else {
            up(1.0 - (t - self.ramp_ms - self.hold_ms) as f64 / ramp)
        }
    }
}

/// Some owners play every day around the same time: one extra session a day near a
/// usual time drawn per server between `from` and `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Habits {
    /// Share of servers whose owners have the habit, in percent.
    pub servers_pct: f64,
    /// Chance they play on a given day, in percent.
    #[serde(default = "habit_days_pct")]
    pub days_pct: f64,
    /// Window for the usual time of day (UTC), "HH:MM".
    #[serde(rename = "from", with = "hh_mm")]
    pub from_minute: u64,
    #[serde(rename = "to", with = "hh_mm")]
    pub to_minute: u64,
    /// The actual arrival is uniform within ± this of the usual time.
    #[serde(rename = "jitter", with = "duration_ms", default)]
    pub jitter_ms: u64,
    /// How long the habitual session lasts.
    #[serde(default = "crate::workload::default_session_minutes")]
    pub session_minutes: Dist,
}

fn habit_days_pct() -> f64 {
    100.0
}

/// "HH:MM" as minutes of the day.
mod hh_mm {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(minute: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:02}:{:02}", minute / 60, minute % 60))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        let parsed = text
            .split_once(':')
            .and_then(|(h, m)| Some((h.parse::<u64>().ok()?, m.parse::<u64>().ok()?)))
            .filter(|&(h, m)| h < 24 && m < 60);
        parsed
            .map(|(h, m)| h * 60 + m)
            .ok_or_else(|| D::Error::custom(format!("{text:?} is not a time of day written HH:MM")))
    }
}

fn default_topup_delay() -> u64 {
    3_600_000
}

fn flat_daily() -> Vec<f64> {
    vec![1.0; 24]
}

fn flat_weekly() -> Vec<f64> {
    vec![1.0; 7]
}

fn one_player() -> Dist {
    Dist::Const { value: 1.0 }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierWeight {
    pub gb: u32,
    pub weight: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bound {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// An unusable scenario: which file, where, which field, and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{file}: cannot read: {source}")]
    Io { file: PathBuf, source: std::io::Error },
    #[error("{file}:{line}:{column}: {field}: {message}")]
    Invalid {
        file: PathBuf,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },
    #[error(transparent)]
    Trace(#[from] crate::trace::TraceError),
}

impl ScenarioError {
    pub fn field(&self) -> Option<&str> {
        match self {
            ScenarioError::Invalid { field, .. } => Some(field),
            ScenarioError::Io { .. } | ScenarioError::Trace(_) => None,
        }
    }

    pub fn line(&self) -> Option<usize> {
        match self {
            ScenarioError::Invalid { line, .. } => Some(*line),
            ScenarioError::Io { .. } | ScenarioError::Trace(_) => None,
        }
    }
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            file: path.into(),
            source,
        })?;
        Scenario::parse(&text, path)
    }

    /// Parse and validate scenario text; `file` is used in error messages only.
    pub fn parse(text: &str, file: &Path) -> Result<Scenario, ScenarioError> {
        let located = Locator::new(text);
        let syntax = |e: toml::de::Error| {
            let offset = e.span().map_or(0, |s| s.start);
            let (line, column) = located.line_column(offset);
            ScenarioError::Invalid {
                file: file.into(),
                line,
                column,
                field: located.path_at(offset).unwrap_or_else(|| "(document)".to_string()),
                message: e.message().trim().to_string(),
            }
        };
        let table: toml::Table = toml::from_str(text).map_err(&syntax)?;
        if table.contains_key("extends") {
            return Scenario::parse_extended(table, text, file);
        }
        let scenario: Scenario = toml::from_str(text).map_err(&syntax)?;
        scenario.validate().map_err(|(field, message)| {
            let offset = located.offset_of(&field).unwrap_or(0);
            let (line, column) = located.line_column(offset);
            ScenarioError::Invalid {
                file: file.into(),
                line,
                column,
                field,
                message,
            }
        })?;
        scenario.load_trace(file)
    }

    /// A scenario that `extends` another: merge the chain of files, then deserialize,
    /// and point errors at whichever file sets the offending field.
    fn parse_extended(table: toml::Table, text: &str, file: &Path) -> Result<Scenario, ScenarioError> {
        let mut sources = vec![(file.to_path_buf(), text.to_string())];
        let mut merged = table;
        let mut seen = vec![file.to_path_buf()];
        while let Some(parent) = merged.remove("extends") {
            let (child_file, _) = sources.last().expect("at least this file");
            let Some(relative) = parent.as_str() else {
                return Err(Scenario::error_in(&sources, "extends", "must be a file name".into()));
            };
            let path = child_file.parent().unwrap_or(Path::new(".")).join(relative);
            if seen.contains(&path) {
                return Err(Scenario::error_in(
                    &sources,
                    "extends",
                    format!("{} extends itself", path.display()),
                ));
            }
            seen.push(path.clone());
            let parent_text = std::fs::read_to_string(&path).map_err(|source| ScenarioError::Io {
                file: path.clone(),
                source,
            })?;
            let located = Locator::new(&parent_text);
            let mut parent_table: toml::Table = toml::from_str(&parent_text).map_err(|e| {
                let (line, column) = located.line_column(e.span().map_or(0, |s| s.start));
                ScenarioError::Invalid {
                    file: path.clone(),
                    line,
                    column,
                    field: "(document)".into(),
                    message: e.message().trim().to_string(),
                }
            })?;
            // Expectations belong to the file that states them: a scenario that extends
            // another describes another situation.
            parent_table.remove("expect");
            merge(&mut parent_table, merged);
            merged = parent_table;
            sources.push((path, parent_text));
        }
        let scenario: Scenario = serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
            // `a.b[0].c` as the other errors write it: `a.b.0.c`.
            let field = e.path().to_string().replace('[', ".").replace(']', "");
            let message = e.inner().message().trim().to_string();
            Scenario::error_in(&sources, &field, message)
        })?;
        scenario
            .validate()
            .map_err(|(field, message)| Scenario::error_in(&sources, &field, message))?;
        scenario.load_trace(file)
    }

    /// An error at `field`, located in the first of `sources` (child first) that sets it.
    fn error_in(sources: &[(PathBuf, String)], field: &str, message: String) -> ScenarioError {
        for (file, text) in sources {
            let located = Locator::new(text);
            if let Some(offset) = located.offset_of(field) {
                let (line, column) = located.line_column(offset);
                return ScenarioError::Invalid {
                    file: file.clone(),
                    line,
                    column,
                    field: field.to_string(),
                    message,
                };
            }
        }
        ScenarioError::Invalid {
            file: sources[0].0.clone(),
            line: 1,
            column: 1,
            field: field.to_string(),
            message,
        }
    }

    fn load_trace(self, file: &Path) -> Result<Scenario, ScenarioError> {
        let scenario = self;
        if scenario.workload.kind == WorkloadKind::Trace {
            let relative = scenario.workload.path.clone().expect("validated");
            let path = match file.parent() {
                Some(dir) if relative.is_relative() => dir.join(&relative),
                _ => relative,
            };
            let trace = crate::trace::Trace::load(&path)?;
            return scenario.with_trace(trace);
        }
        Ok(scenario)
    }

    /// Semantic checks serde cannot make. Returns the dotted field path and why.
    fn validate(&self) -> Result<(), (String, String)> {
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

    /// Replace the workload with a loaded trace.
    pub fn with_trace(mut self, trace: std::sync::Arc<crate::trace::Trace>) -> Result<Scenario, ScenarioError> {
        self.workload.kind = WorkloadKind::Trace;
        self.workload.path = Some(trace.file.clone());
        self.check_trace(&trace)?;
        self.trace = Some(trace);
        Ok(self)
    }

    fn check_trace(&self, trace: &crate::trace::Trace) -> Result<(), ScenarioError> {
        use crate::workload::WorkEvent;
        let bad = |message: String| {
            ScenarioError::Trace(crate::trace::TraceError::Invalid {
                file: trace.file.clone(),
                line: 0,
                message,
            })
        };
        let servers = trace.setup.iter().chain(trace.events.iter().map(|(_, e)| e));
        for event in servers {
            if let WorkEvent::CreateServer { ram_mib, .. } = event
                && !self.core.tiers_mib.contains(ram_mib)
            {
                return Err(bad(format!(
                    "ram_gb: {} GB is not one of the scenario's core.tiers_gb",
                    ram_mib / 1024
                )));
            }
        }
        Ok(())
    }

    /// The first simulated instant: the trace's start when replaying one, else
    /// `start_date` at midnight UTC.
    pub fn start(&self) -> Timestamp {
        if let Some(trace) = &self.trace {
            return trace.start;
        }
        Timestamp(parse_date(&self.start_date).expect("validated") as u64 * MS_PER_DAY)
    }
}

/// Merge `child` into `base`: tables key by key, anything else replaced.
fn merge(base: &mut toml::Table, child: toml::Table) {
    for (key, value) in child {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(c)) => merge(b, c),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Days since 1970-01-01 of a "YYYY-MM-DD" date (proleptic Gregorian).
pub fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(1970..=9999).contains(&y) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// Maps byte offsets to lines and dotted field paths, using toml_edit's spans.
struct Locator<'a> {
    text: &'a str,
    doc: Option<toml_edit::Document<&'a str>>,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str) -> Self {
        Locator {
            text,
            doc: toml_edit::Document::parse(text).ok(),
        }
    }

    fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, column)
    }

    /// The deepest key whose entry contains `offset`.
    fn path_at(&self, offset: usize) -> Option<String> {
        let doc = self.doc.as_ref()?;
        let mut path = Vec::new();
        descend_table(doc.as_table(), offset, &mut path);
        (!path.is_empty()).then(|| path.join("."))
    }

    /// Where the entry for a dotted path (array elements by index) starts.
    fn offset_of(&self, dotted: &str) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let parts: Vec<&str> = dotted.split('.').collect();
        find_in_table(doc.as_table(), &parts)
    }
}

fn find_in_table(table: &dyn toml_edit::TableLike, parts: &[&str]) -> Option<usize> {
    let (first, rest) = parts.split_first()?;
    let (key, item) = table.get_key_value(first)?;
    let here = key.span().map(|s| s.start);
    if rest.is_empty() {
        return here;
    }
    let deeper = match item {
        toml_edit::Item::ArrayOfTables(array) => {
            let table = array.get(rest[0].parse().ok()?)?;
            find_in_table(table, &rest[1..]).or(table.span().map(|s| s.start))
        }
        toml_edit::Item::Value(toml_edit::Value::Array(array)) => rest[0]
            .parse::<usize>()
            .ok()
            .and_then(|i| array.get(i))
            .and_then(|v| v.span())
            .map(|s| s.start),
        other => other.as_table_like().and_then(|t| find_in_table(t, rest)),
    };
    deeper.or(here)
}

fn descend_table(table: &dyn toml_edit::TableLike, offset: usize, path: &mut Vec<String>) {
    for (key, item) in table.iter() {
        let key_span = table.key(key).and_then(|k| k.span());
        let contains =
            |span: &Option<std::ops::Range<usize>>| span.as_ref().is_some_and(|s| s.start <= offset && offset <= s.end);
        let item_span = match item {
            toml_edit::Item::Value(v) => v.span(),
            toml_edit::Item::Table(t) => t.span(),
            _ => None,
        };
        let in_value = contains(&item_span) || contains(&key_span);
        match item {
            toml_edit::Item::ArrayOfTables(array) => {
                for (i, t) in array.iter().enumerate() {
                    if contains(&t.span()) {
                        path.push(key.to_string());
                        path.push(i.to_string());
                        descend_table(t, offset, path);
                        return;
                    }
                }
            }
            toml_edit::Item::Table(t) => {
                // A [table] header's span covers only the header; its entries are
                // elsewhere in the file, so look inside regardless.
                let depth = path.len();
                path.push(key.to_string());
                descend_table(t, offset, path);
                if path.len() > depth + 1 || contains(&key_span) {
                    return;
                }
                path.truncate(depth);
            }
            toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) if in_value => {
                path.push(key.to_string());
                descend_table(t, offset, path);
                return;
            }
            _ if in_value => {
                path.push(key.to_string());
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_count_days_from_the_epoch() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2026-01-05"), Some(20458));
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date("yesterday"), None);
    }
}
