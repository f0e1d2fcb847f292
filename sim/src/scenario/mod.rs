//! Scenario files (TOML): the core's configuration plus the fleet, the provider and
//! server timing models, the workload and the expected outcomes. Documented field by
//! field in `scenarios/README.md`. Unknown fields are errors, and every error names the
//! file, the line and the field.
//!
//! This file holds the types and the error; [`load`] reads a file (with `extends`) and
//! [`validate`] makes the checks serde cannot.

use std::collections::BTreeMap;
use std::path::PathBuf;

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
    /// Each VM's primary IPv4, billed like the VM (started hours, capped per calendar
    /// month). Hetzner: 0.0008 EUR an hour, at most 0.50 EUR a month.
    #[serde(rename = "ipv4_hourly_eur", with = "eur_micros")]
    pub ipv4_micros_per_hour: u64,
    #[serde(rename = "ipv4_monthly_eur", with = "eur_micros")]
    pub ipv4_monthly_cap_micros: u64,
    /// A volume attached to each VM (worlds, backups), GB; 0: none.
    pub volume_gb: u64,
    /// The volume's price per GB and calendar month (billed per started hour at
    /// 1/730 of it, capped at the month). Hetzner: 0.044 EUR.
    #[serde(rename = "volume_eur_per_gb_month", with = "eur_micros")]
    pub volume_micros_per_gb_month: u64,
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
            ipv4_micros_per_hour: 800,
            ipv4_monthly_cap_micros: 500_000,
            volume_gb: 0,
            volume_micros_per_gb_month: 44_000,
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
    /// Only VMs in this location (a planner knob: per-location prices); `None`: every
    /// location. On the same date a location's own price wins.
    #[serde(default)]
    pub location: Option<String>,
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    /// Sessions drawn from the generator's distributions (the default).
    #[default]
    Generator,
    /// A recorded or generated trace (`path`), see the trace format.
    Trace,
}

/// A synthetic workload: sessions arrive as a Poisson process whose rate follows a
/// daily and a weekly profile; each picks one server uniformly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// `generator` unless given (as `scenarios/README.md` documents).
    #[serde(default)]
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
    /// Players give up a start that keeps them waiting longer than their patience.
    /// `false` makes them wait for ever (the queueing-theory checks).
    #[serde(default = "yes")]
    pub patience: bool,
    /// How long a waiting session stays before it gives up (seconds).
    #[serde(default = "crate::workload::default_patience_seconds")]
    pub patience_seconds: Dist,
}

fn yes() -> bool {
    true
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

mod load;
mod validate;

impl Scenario {
    /// The first simulated instant: the trace's start when replaying one, else
    /// `start_date` at midnight UTC.
    pub fn start(&self) -> Timestamp {
        if let Some(trace) = &self.trace {
            return trace.start;
        }
        Timestamp(parse_date(&self.start_date).expect("validated") as u64 * MS_PER_DAY)
    }
}

/// Days since 1970-01-01 of a "YYYY-MM-DD" date (proleptic Gregorian).
pub fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1970..=9999).contains(&y) {
        return None;
    }
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days_in_month = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=days_in_month).contains(&d) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_count_days_from_the_epoch() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2026-01-05"), Some(20458));
        assert_eq!(parse_date("2026-13-01"), None);
        // A day the month does not have is not a date (it used to roll into March).
        assert_eq!(parse_date("2026-02-31"), None);
        assert_eq!(parse_date("2026-02-29"), None);
        assert_eq!(
            parse_date("2028-02-29"),
            Some(parse_date("2028-02-28").expect("a date") + 1)
        );
        assert_eq!(parse_date("2100-02-29"), None);
        assert_eq!(parse_date("2026-04-31"), None);
        assert_eq!(parse_date("yesterday"), None);
    }
}
