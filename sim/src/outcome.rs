//! What a run produced: cost, revenue, start waits, queueing, utilization, churn and
//! SLO misses; as JSON (machines) and markdown (people); and `[expect]` checks.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::scenario::Bound;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub scenario: String,
    pub seed: u64,
    pub simulated_hours: f64,
    pub sessions: Sessions,
    pub starts: Starts,
    /// Request to running.
    pub start_wait: Percentiles,
    /// Request to placement: queue plus VM boot.
    pub capacity_wait: Percentiles,
    /// Placement to running: container start plus Minecraft boot.
    pub boot_wait: Percentiles,
    /// Capacity wait of the requests that had to queue.
    pub queue_wait: Percentiles,
    /// From a player's arrival to a playable server, every session (0 when it runs).
    pub join_wait: Percentiles,
    /// The same for servers whose owners play at a regular time (pre-warm's target).
    pub regular_join_wait: Percentiles,
    pub queue: Queue,
    pub slo: Slo,
    pub cost: Cost,
    pub revenue: Revenue,
    pub margin_eur: f64,
    pub nodes: Nodes,
    pub utilization: Utilization,
    pub servers: Servers,
    pub provider: ProviderCalls,
    pub prewarm: Prewarm,
    pub incidents: Incidents,
    pub sim: SimCounters,
}

/// What the platform asked of the cloud provider and how it answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderCalls {
    pub orders: u64,
    /// Orders refused with `resource_unavailable` (sold out).
    pub sold_out: u64,
    /// Calls refused with `rate_limit_exceeded`.
    pub rate_limited: u64,
    /// Orders that failed outright.
    pub failed: u64,
    /// API requests made (orders, deletions, action polls).
    pub requests: u64,
    /// Times the core ordered another type or location than its first choice.
    pub fallbacks: u64,
}

/// Servers the core started ahead of their owners' usual play time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Prewarm {
    pub starts: u64,
    /// Of those, servers a player (or the owner) then claimed.
    pub claimed: u64,
    /// RAM-time of warm servers before their first player that the platform paid for
    /// (`billed_to = "platform"`), at the RAM list price.
    pub platform_paid_eur: f64,
}

/// Things that went wrong in the fleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Incidents {
    pub vm_losses: u64,
    /// Servers that were running on a lost VM and were queued to start elsewhere.
    pub servers_restarted: u64,
    /// Of those, servers that had players at the time.
    pub sessions_interrupted: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sessions {
    pub total: u64,
    /// Sessions whose server could not be started (rejected or cancelled).
    pub lost: u64,
    /// Sessions whose players gave up waiting for the start (`[workload] patience`).
    pub abandoned: u64,
    /// Abandoned sessions in percent of all sessions.
    pub abandoned_pct: f64,
    /// Revenue the abandoned sessions would have brought: their server's RAM for the
    /// session length at the RAM price (an upper bound when sessions overlap).
    pub abandoned_revenue_eur: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Starts {
    pub requested: u64,
    pub running: u64,
    pub rejected: u64,
    pub cancelled: u64,
    pub pending_at_end: u64,
    /// Starts that did not run but whose wait so far is in the start-wait figures (a
    /// lower bound): those pending at the end and those withdrawn by impatient players.
    pub censored: u64,
    /// Starts of a tier no cloud VM type can hold (after reserve) in an autoscaled
    /// fleet: they wait for dedicated capacity, and the cloud policy ignores them.
    pub unservable_by_cloud: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_s: f64,
    pub p50_s: f64,
    pub p95_s: f64,
    pub p99_s: f64,
    pub max_s: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Queue {
    pub requests_queued: u64,
    pub queued_pct: f64,
    pub length_mean: f64,
    pub length_max: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    pub threshold_s: f64,
    pub misses: u64,
    pub miss_pct: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub dedicated_eur: f64,
    pub cloud_eur: f64,
    pub total_eur: f64,
    /// Cost by node type: `dedicated <name>` and `cloud <server type>`.
    pub by_type: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Revenue {
    pub ram_eur: f64,
    pub storage_eur: f64,
    pub total_eur: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Nodes {
    pub provisioned: u64,
    pub deleted: u64,
    pub lost: u64,
    pub cloud_peak: u64,
    pub cloud_node_hours: f64,
    pub dedicated_node_hours: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Utilization {
    /// Time-weighted allocated RAM over usable RAM of ready nodes.
    pub mean_pct: f64,
    pub peak_pct: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Servers {
    pub total: u64,
    /// Time-weighted mean number of servers holding RAM.
    pub holding_ram_mean: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimCounters {
    /// Engine events processed (arrivals, completions, timeouts, ...).
    pub events: u64,
    pub core_inputs: u64,
}

/// Latency histogram in milliseconds (HDR, 3 significant digits) with an exact mean.
pub struct LatencyRecorder {
    /// The samples above zero.
    histogram: Histogram<u64>,
    /// Zero samples, counted here and added to the histogram only when it is read: many
    /// waits are zero (a start placed at once, a player joining a running server), and
    /// a count is cheaper than a histogram record. Recording zeros in one go at the end
    /// leaves the histogram exactly as recording them one by one.
    zeros: u64,
    sum_ms: u128,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder {
            histogram: Histogram::new(3).expect("3 significant digits"),
            zeros: 0,
            sum_ms: 0,
        }
    }
}

impl LatencyRecorder {
    #[inline]
    pub fn record(&mut self, ms: u64) {
        if ms == 0 {
            self.zeros += 1;
        } else {
            self.histogram.record(ms).expect("auto-resizing histogram");
            self.sum_ms += ms as u128;
        }
    }

    pub fn count(&self) -> u64 {
        self.histogram.len() + self.zeros
    }

    pub fn mean_ms(&self) -> f64 {
        if self.count() == 0 {
            0.0
        } else {
            self.sum_ms as f64 / self.count() as f64
        }
    }

    pub fn percentiles(&self) -> Percentiles {
        if self.count() == 0 {
            return Percentiles::default();
        }
        let s = |ms: u64| ms as f64 / 1000.0;
        let histogram = self.histogram();
        Percentiles {
            count: self.count(),
            mean_s: round3(self.mean_ms() / 1000.0),
            p50_s: s(histogram.value_at_quantile(0.50)),
            p95_s: s(histogram.value_at_quantile(0.95)),
            p99_s: s(histogram.value_at_quantile(0.99)),
            max_s: s(histogram.max()),
        }
    }

    /// The distribution as `points + 1` (seconds, fraction at or below) pairs at evenly
    /// spaced quantiles, for CDF plots.
    pub fn cdf(&self, points: u32) -> Vec<(f64, f64)> {
        if self.count() == 0 {
            return Vec::new();
        }
        let histogram = self.histogram();
        (0..=points)
            .map(|i| {
                let q = i as f64 / points as f64;
                (histogram.value_at_quantile(q) as f64 / 1000.0, q)
            })
            .collect()
    }

    /// Fraction of samples at or below `ms` (for CDF plots).
    pub fn fraction_at_or_below(&self, ms: u64) -> f64 {
        if self.count() == 0 {
            return 0.0;
        }
        self.histogram().count_between(0, ms) as f64 / self.count() as f64
    }

    /// Every sample, zeros included (a copy when there are zeros to add).
    pub fn histogram(&self) -> Cow<'_, Histogram<u64>> {
        if self.zeros == 0 {
            return Cow::Borrowed(&self.histogram);
        }
        let mut histogram = self.histogram.clone();
        histogram.record_n(0, self.zeros).expect("zero is in range");
        Cow::Owned(histogram)
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// One failed `[expect]` bound.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectFailure {
    pub metric: String,
    pub actual: f64,
    pub bound: Bound,
}

impl std::fmt::Display for ExpectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.bound.min, self.bound.max) {
            (Some(min), _) if self.actual < min => {
                write!(f, "{} = {} is below the minimum {}", self.metric, self.actual, min)
            }
            (_, Some(max)) => write!(f, "{} = {} is above the maximum {}", self.metric, self.actual, max),
            _ => write!(f, "{} = {} is out of bounds", self.metric, self.actual),
        }
    }
}

impl Outcome {
    /// Every numeric field as a flat `section_field` name, e.g. `start_wait_p95_s`.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        flatten("", &serde_json::to_value(self).expect("outcome serializes"), &mut out);
        out
    }

    pub fn metric_names() -> BTreeSet<String> {
        Outcome::default().metrics().into_keys().collect()
    }

    pub fn check(&self, expect: &BTreeMap<String, Bound>) -> Vec<ExpectFailure> {
        let metrics = self.metrics();
        expect
            .iter()
            .filter_map(|(metric, bound)| {
                let actual = *metrics.get(metric)?;
                let below = bound.min.is_some_and(|min| actual < min);
                let above = bound.max.is_some_and(|max| actual > max);
                (below || above).then(|| ExpectFailure {
                    metric: metric.clone(),
                    actual,
                    bound: *bound,
                })
            })
            .collect()
    }

    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("outcome serializes");
        text.push('\n');
        text
    }

    pub fn to_markdown(&self, expect: &BTreeMap<String, Bound>) -> String {
        let mut md = String::new();
        let w = &mut md;
        let _ = writeln!(w, "# Scenario `{}` (seed {})\n", self.scenario, self.seed);
        let _ = writeln!(
            w,
            "{:.1} simulated hours, {} sessions, {} start requests.\n",
            self.simulated_hours, self.sessions.total, self.starts.requested
        );
        let _ = writeln!(w, "## Money\n");
        let _ = writeln!(w, "| | EUR |\n|---|---:|");
        let _ = writeln!(w, "| revenue (RAM-time) | {:.2} |", self.revenue.ram_eur);
        let _ = writeln!(w, "| revenue (storage) | {:.2} |", self.revenue.storage_eur);
        let _ = writeln!(w, "| cost (dedicated) | {:.2} |", self.cost.dedicated_eur);
        let _ = writeln!(w, "| cost (cloud) | {:.2} |", self.cost.cloud_eur);
        let _ = writeln!(w, "| **margin** | **{:.2}** |\n", self.margin_eur);
        let _ = writeln!(w, "## Start wait (seconds)\n");
        let _ = writeln!(
            w,
            "| | count | mean | p50 | p95 | p99 | max |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        for (name, p) in [
            ("request → running", &self.start_wait),
            ("capacity (queue + VM boot)", &self.capacity_wait),
            ("server boot", &self.boot_wait),
            ("queued requests only", &self.queue_wait),
            ("player join → playable", &self.join_wait),
            ("  regular owners only", &self.regular_join_wait),
        ] {
            let _ = writeln!(
                w,
                "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                p.count, p.mean_s, p.p50_s, p.p95_s, p.p99_s, p.max_s
            );
        }
        let _ = writeln!(w);
        let _ = writeln!(
            w,
            "SLO: {} of {} starts ({:.2}%) took longer than {:.0} s.\n",
            self.slo.misses, self.start_wait.count, self.slo.miss_pct, self.slo.threshold_s
        );
        let _ = writeln!(w, "## Fleet\n");
        let _ = writeln!(w, "| metric | value |\n|---|---:|");
        let rows: [(&str, String); 15] = [
            (
                "starts running / rejected / cancelled / pending",
                format!(
                    "{} / {} / {} / {}",
                    self.starts.running, self.starts.rejected, self.starts.cancelled, self.starts.pending_at_end
                ),
            ),
            ("sessions lost", self.sessions.lost.to_string()),
            (
                "sessions abandoned (players gave up waiting)",
                format!(
                    "{} ({:.2}%, {:.2} EUR of revenue)",
                    self.sessions.abandoned, self.sessions.abandoned_pct, self.sessions.abandoned_revenue_eur
                ),
            ),
            (
                "requests queued",
                format!("{} ({:.2}%)", self.queue.requests_queued, self.queue.queued_pct),
            ),
            (
                "queue length mean / max",
                format!("{:.3} / {}", self.queue.length_mean, self.queue.length_max),
            ),
            (
                "utilization mean / peak",
                format!("{:.1}% / {:.1}%", self.utilization.mean_pct, self.utilization.peak_pct),
            ),
            (
                "servers holding RAM (mean)",
                format!("{:.2}", self.servers.holding_ram_mean),
            ),
            (
                "cloud nodes provisioned / deleted / lost",
                format!(
                    "{} / {} / {}",
                    self.nodes.provisioned, self.nodes.deleted, self.nodes.lost
                ),
            ),
            ("cloud nodes peak", self.nodes.cloud_peak.to_string()),
            ("cloud node-hours", format!("{:.1}", self.nodes.cloud_node_hours)),
            (
                "dedicated node-hours",
                format!("{:.1}", self.nodes.dedicated_node_hours),
            ),
            (
                "provider orders / sold out / rate limited / failed / fallbacks",
                format!(
                    "{} / {} / {} / {} / {}",
                    self.provider.orders,
                    self.provider.sold_out,
                    self.provider.rate_limited,
                    self.provider.failed,
                    self.provider.fallbacks
                ),
            ),
            (
                "VMs lost / servers restarted elsewhere / with players",
                format!(
                    "{} / {} / {}",
                    self.incidents.vm_losses, self.incidents.servers_restarted, self.incidents.sessions_interrupted
                ),
            ),
            (
                "pre-warm starts / claimed / platform-paid EUR",
                format!(
                    "{} / {} / {:.2}",
                    self.prewarm.starts, self.prewarm.claimed, self.prewarm.platform_paid_eur
                ),
            ),
            ("engine events", self.sim.events.to_string()),
        ];
        for (name, value) in rows {
            let _ = writeln!(w, "| {name} | {value} |");
        }
        if !expect.is_empty() {
            let failures = self.check(expect);
            let metrics = self.metrics();
            let _ = writeln!(w, "\n## Expectations\n");
            let _ = writeln!(w, "| metric | min | max | actual | |\n|---|---:|---:|---:|---|");
            for (metric, bound) in expect {
                let ok = !failures.iter().any(|f| &f.metric == metric);
                let fmt = |v: Option<f64>| v.map_or("".to_string(), |v| v.to_string());
                let _ = writeln!(
                    w,
                    "| {metric} | {} | {} | {} | {} |",
                    fmt(bound.min),
                    fmt(bound.max),
                    metrics[metric],
                    if ok { "ok" } else { "**FAILED**" }
                );
            }
        }
        md
    }
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, f64>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}_{key}")
                };
                flatten(&name, v, out);
            }
        }
        serde_json::Value::Number(n) => {
            out.insert(prefix.to_string(), n.as_f64().unwrap_or(0.0));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_counted_aside_read_as_if_recorded() {
        let samples = [0, 1200, 0, 0, 35_000, 7, 0, 90_000_000, 0, 64];
        let mut recorder = LatencyRecorder::default();
        let mut plain = Histogram::<u64>::new(3).expect("3 significant digits");
        for ms in samples {
            recorder.record(ms);
            plain.record(ms).expect("auto-resizing histogram");
        }
        assert_eq!(*recorder.histogram(), plain);
        assert_eq!(recorder.count(), samples.len() as u64);
        assert_eq!(
            recorder.percentiles().p50_s,
            plain.value_at_quantile(0.5) as f64 / 1000.0
        );
        assert_eq!(recorder.fraction_at_or_below(0), 0.5);
        let cdf = recorder.cdf(10);
        assert_eq!(cdf[5].0, plain.value_at_quantile(0.5) as f64 / 1000.0);
    }
}
