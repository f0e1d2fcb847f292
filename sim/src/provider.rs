//! The Hetzner Cloud model: dated prices, provisioning latency per type and location,
//! the API rate limit, sold-out windows, failed orders and lost VMs.
//!
//! Billing follows Hetzner: a VM bills from the moment its creation completes (the
//! order plus its provisioning delay; a refused order costs nothing) until its
//! deletion is confirmed, every started hour at the hourly price in effect (for its
//! type and location) when it was created, and never more than the monthly price per
//! *calendar* month (UTC): each started hour counts in the month in which it starts.
//! Its primary IPv4 and its volume (if the scenario gives VMs one) bill by the same
//! rule and count in the cloud cost, so in the margin.

use payperplay_core::{MS_PER_DAY, MS_PER_HOUR, Timestamp};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::dist::Dist;
use crate::scenario::{Scenario, parse_date};

/// Why an order failed, as the provider's API would say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderError {
    /// HTTP 412 `resource_unavailable`: the type is sold out in that location.
    ResourceUnavailable,
    /// HTTP 429 `rate_limit_exceeded`.
    RateLimited,
    /// Anything else (5xx): the VM was not created.
    Failed,
}

impl OrderError {
    pub fn code(self) -> &'static str {
        match self {
            OrderError::ResourceUnavailable => "resource_unavailable",
            OrderError::RateLimited => "rate_limit_exceeded",
            OrderError::Failed => "server_error",
        }
    }
}

/// A token bucket in integer milliseconds: `capacity` requests, one more every
/// `refill_ms`.
#[derive(Debug, Clone)]
struct Bucket {
    capacity: u64,
    refill_ms: u64,
    tokens: u64,
    last: Timestamp,
}

impl Bucket {
    fn refill(&mut self, now: Timestamp) {
        let n = now.since(self.last) / self.refill_ms;
        if n > 0 {
            self.tokens = (self.tokens + n).min(self.capacity);
            self.last = if self.tokens == self.capacity {
                now
            } else {
                self.last.plus_ms(n * self.refill_ms)
            };
        }
    }

    fn take(&mut self, now: Timestamp, n: u64) -> u64 {
        self.refill(now);
        let taken = n.min(self.tokens);
        self.tokens -= taken;
        taken
    }
}

#[derive(Debug, Clone, Copy)]
struct Price {
    from: Timestamp,
    /// `None`: every location.
    location: Option<u16>,
    hourly_micros: u64,
    monthly_micros: u64,
}

pub struct Provider {
    /// Latency per type and location: index into `dists`.
    latency: Vec<Vec<usize>>,
    dists: Vec<Dist>,
    deletion: Dist,
    /// Prices per type, by date, oldest first (the catalog's price from the epoch);
    /// at the same date a location's own entry comes after the general one.
    prices: Vec<Vec<Price>>,
    /// What every VM adds: its IPv4 and its volume, (hourly, monthly cap).
    ipv4_micros: (u64, u64),
    volume_micros: (u64, u64),
    /// (type, location or all, from, until).
    sold_out: Vec<(u16, Option<u16>, Timestamp, Timestamp)>,
    bucket: Option<Bucket>,
    poll_ms: u64,
    create_failure: f64,
    /// Hazard of VM loss per millisecond of life.
    loss_per_ms: f64,
    pub stats: ProviderStats,
}

#[derive(Debug, Clone, Default)]
pub struct ProviderStats {
    pub orders: u64,
    pub sold_out: u64,
    pub rate_limited: u64,
    pub failed: u64,
    pub requests: u64,
}

impl Provider {
    pub fn new(scenario: &Scenario) -> Provider {
        let cloud = &scenario.fleet.cloud;
        let catalog = &scenario.core.catalog;
        let mut dists = vec![cloud.provisioning_seconds.clone()];
        let type_idx = |name: &str| catalog.server_types.iter().position(|t| t.name == name);
        let loc_idx = |name: &str| catalog.locations.iter().position(|l| l == name);
        let mut latency = vec![vec![0usize; catalog.locations.len().max(1)]; catalog.server_types.len()];
        // Type-wide entries first, then type@location ones, which win.
        let mut keys: Vec<(&String, &Dist)> = cloud.provisioning_by_type.iter().collect();
        keys.sort_by_key(|(k, _)| k.contains('@'));
        for (key, dist) in keys {
            let (t, loc) = key.split_once('@').map_or((key.as_str(), None), |(t, l)| (t, Some(l)));
            let t = type_idx(t).expect("validated");
            dists.push(dist.clone());
            let d = dists.len() - 1;
            match loc.map(|l| loc_idx(l).expect("validated")) {
                Some(l) => latency[t][l] = d,
                None => latency[t].iter_mut().for_each(|x| *x = d),
            }
        }
        if cloud.use_trace_latencies
            && let Some(trace) = &scenario.trace
        {
            for ((t, l), samples) in &trace.provisioning_samples {
                if let (Some(t), Some(l)) = (type_idx(t), loc_idx(l)) {
                    dists.push(Dist::Empirical {
                        samples: samples.clone(),
                    });
                    latency[t][l] = dists.len() - 1;
                }
            }
        }
        let mut prices: Vec<Vec<Price>> = catalog
            .server_types
            .iter()
            .map(|t| {
                vec![Price {
                    from: Timestamp::ZERO,
                    location: None,
                    hourly_micros: t.price_micros_per_hour,
                    monthly_micros: t.monthly_cap_micros,
                }]
            })
            .collect();
        for p in &cloud.prices {
            let t = type_idx(&p.server_type).expect("validated");
            prices[t].push(Price {
                from: Timestamp(parse_date(&p.from).expect("validated") as u64 * MS_PER_DAY),
                location: p.location.as_deref().map(|l| loc_idx(l).expect("validated") as u16),
                hourly_micros: p.price_micros_per_hour,
                monthly_micros: p.monthly_cap_micros,
            });
        }
        for list in &mut prices {
            list.sort_by_key(|p| (p.from, p.location.is_some()));
        }
        let start = scenario.start();
        let sold_out = cloud
            .sold_out
            .iter()
            .map(|w| {
                let from = start.plus_ms(w.after_ms);
                (
                    type_idx(&w.server_type).expect("validated") as u16,
                    w.location.as_deref().map(|l| loc_idx(l).expect("validated") as u16),
                    from,
                    from.plus_ms(w.duration_ms),
                )
            })
            .collect();
        let rl = &cloud.rate_limit;
        let bucket = rl.enabled.then(|| Bucket {
            capacity: rl.requests_per_hour as u64,
            refill_ms: ((rl.refill_seconds * 1000.0).round() as u64).max(1),
            tokens: rl.requests_per_hour as u64,
            last: start,
        });
        let p_day = cloud.vm_loss_pct_per_day / 100.0;
        let loss_per_ms = if p_day >= 1.0 {
            f64::INFINITY
        } else {
            -(1.0 - p_day).ln() / MS_PER_DAY as f64
        };
        let volume_monthly = cloud.volume_micros_per_gb_month * cloud.volume_gb;
        Provider {
            ipv4_micros: (cloud.ipv4_micros_per_hour, cloud.ipv4_monthly_cap_micros),
            volume_micros: (volume_monthly.div_ceil(730), volume_monthly),
            latency,
            dists,
            deletion: cloud.deletion_seconds.clone(),
            prices,
            sold_out,
            bucket,
            poll_ms: ((rl.poll_seconds * 1000.0).round() as u64).max(1),
            create_failure: cloud.create_failure_pct / 100.0,
            loss_per_ms,
            stats: ProviderStats::default(),
        }
    }

    fn request(&mut self, now: Timestamp) -> bool {
        self.stats.requests += 1;
        match &mut self.bucket {
            None => true,
            Some(bucket) => bucket.take(now, 1) == 1,
        }
    }

    /// Order a VM. `Ok(ms)`: it is ready after `ms` (and the shell's action polls have
    /// been charged to the rate limit). `Err`: the order failed at once.
    pub fn order(&mut self, now: Timestamp, t: u16, loc: u16, rng: &mut ChaCha8Rng) -> Result<u64, OrderError> {
        self.stats.orders += 1;
        if !self.request(now) {
            self.stats.rate_limited += 1;
            return Err(OrderError::RateLimited);
        }
        let sold_out = self
            .sold_out
            .iter()
            .any(|&(st, sl, from, until)| st == t && sl.is_none_or(|l| l == loc) && from <= now && now < until);
        if sold_out {
            self.stats.sold_out += 1;
            return Err(OrderError::ResourceUnavailable);
        }
        if self.create_failure > 0.0 && rng.random::<f64>() < self.create_failure {
            self.stats.failed += 1;
            return Err(OrderError::Failed);
        }
        let dist = &self.dists[self.latency[t as usize][loc as usize]];
        let delay = dist.seconds_as_ms(rng);
        // Polls until ready: they drain the bucket but never fail the order (a
        // throttled poll is retried; the VM is ready regardless).
        let polls = delay / self.poll_ms;
        self.stats.requests += polls;
        if let Some(bucket) = &mut self.bucket {
            bucket.take(now, polls);
        }
        Ok(delay)
    }

    /// Ask for a deletion: `Ok(ms)` until it is confirmed (billing stops then).
    pub fn delete(&mut self, now: Timestamp, rng: &mut ChaCha8Rng) -> Result<u64, OrderError> {
        if !self.request(now) {
            self.stats.rate_limited += 1;
            return Err(OrderError::RateLimited);
        }
        Ok(self.deletion.seconds_as_ms(rng))
    }

    /// How long a VM lives once ready before it dies; `None` when VMs are never lost.
    pub fn loss_after(&self, rng: &mut ChaCha8Rng) -> Option<u64> {
        if self.loss_per_ms <= 0.0 {
            return None;
        }
        if self.loss_per_ms.is_infinite() {
            return Some(0);
        }
        let u: f64 = rng.random();
        let ms = -(1.0 - u).ln() / self.loss_per_ms;
        (ms < u64::MAX as f64 / 2.0).then_some(ms as u64)
    }

    /// What a VM of type `t` in location `loc`, created at `created_at` and deleted at
    /// `until`, costs with its IPv4 and volume. Nothing when it was deleted before its
    /// creation completed.
    pub fn vm_cost_micros(&self, t: u16, loc: u16, created_at: Timestamp, until: Timestamp) -> u64 {
        if until < created_at {
            return 0;
        }
        let list = &self.prices[t as usize];
        let price = list
            .iter()
            .rev()
            .find(|p| p.from <= created_at && p.location.is_none_or(|l| l == loc))
            .unwrap_or(&list[0]);
        let bill = |(hourly, monthly): (u64, u64)| vm_cost_micros(hourly, monthly, created_at, until);
        bill((price.hourly_micros, price.monthly_micros)) + bill(self.ipv4_micros) + bill(self.volume_micros)
    }
}

/// The core input for a refused order.
pub fn failure_input(command_id: payperplay_core::CommandId, error: OrderError) -> payperplay_core::Input {
    use payperplay_core::FailureKind;
    payperplay_core::Input::CommandFailed {
        command_id,
        reason: format!("{}: the provider refused the request", error.code()),
        kind: match error {
            OrderError::ResourceUnavailable => FailureKind::ResourceUnavailable,
            OrderError::RateLimited => FailureKind::RateLimited,
            OrderError::Failed => FailureKind::Other,
        },
    }
}

/// Hetzner's rule: every started hour (at least one) at the hourly price, at most the
/// monthly cap per calendar month (UTC), each started hour counted in the month in
/// which it starts.
pub fn vm_cost_micros(
    price_micros_per_hour: u64,
    monthly_cap_micros: u64,
    created_at: Timestamp,
    until: Timestamp,
) -> u64 {
    let started_hours = until.since(created_at).div_ceil(MS_PER_HOUR).max(1);
    let end_ms = created_at.ms() + started_hours * MS_PER_HOUR;
    let mut total = 0;
    let mut month_start_ms = created_at.ms();
    while month_start_ms < end_ms {
        let month_end_ms = next_month_start_ms(month_start_ms).min(end_ms);
        // Hours start at created_at + k h: those starting in [month_start, month_end).
        let first_k = (month_start_ms - created_at.ms()).div_ceil(MS_PER_HOUR);
        let end_k = (month_end_ms - created_at.ms()).div_ceil(MS_PER_HOUR);
        total += ((end_k - first_k) * price_micros_per_hour).min(monthly_cap_micros);
        month_start_ms = month_end_ms;
    }
    total
}

/// The first millisecond of the calendar month (UTC) after the one holding `ms`.
fn next_month_start_ms(ms: u64) -> u64 {
    // Howard Hinnant's civil_from_days, then days_from_civil of the next month's 1st.
    let days = (ms / MS_PER_DAY) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (year, month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    let first = crate::scenario::parse_date(&format!("{year:04}-{month:02}-01")).expect("a valid date");
    first as u64 * MS_PER_DAY
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(date: &str) -> Timestamp {
        Timestamp(crate::scenario::parse_date(date).unwrap() as u64 * MS_PER_DAY)
    }

    #[test]
    fn vms_bill_every_started_hour_up_to_the_cap_of_each_calendar_month() {
        let (hourly, cap) = (20_000, 12_000_000);
        let at = day("2026-03-02");
        let cost = |ms| vm_cost_micros(hourly, cap, at, at.plus_ms(ms));
        assert_eq!(cost(0), 20_000);
        assert_eq!(cost(1), 20_000);
        assert_eq!(cost(MS_PER_HOUR), 20_000);
        assert_eq!(cost(MS_PER_HOUR + 1), 40_000);
        assert_eq!(cost(700 * MS_PER_HOUR), 12_000_000);
        // 2 March to 2 April: March is capped, April's 25 started hours bill on top.
        assert_eq!(cost(31 * MS_PER_DAY + MS_PER_HOUR), 12_000_000 + 25 * 20_000);
        // Across a month's end two caps apply, though fewer than 730 hours passed.
        let late = day("2026-03-20");
        assert_eq!(
            vm_cost_micros(hourly, 3_000_000, late, late.plus_ms(20 * MS_PER_DAY)),
            6_000_000
        );
        let feb = day("2028-02-29");
        assert_eq!(next_month_start_ms(feb.ms()), day("2028-03-01").ms());
        assert_eq!(next_month_start_ms(day("2026-12-31").ms() + 5), day("2027-01-01").ms());
    }

    #[test]
    fn the_bucket_refills_one_request_per_interval() {
        let mut b = Bucket {
            capacity: 3,
            refill_ms: 1000,
            tokens: 3,
            last: Timestamp(0),
        };
        assert_eq!(b.take(Timestamp(0), 5), 3);
        assert_eq!(b.take(Timestamp(999), 1), 0);
        assert_eq!(b.take(Timestamp(1000), 1), 1);
        assert_eq!(b.take(Timestamp(3500), 5), 2);
        assert_eq!(b.take(Timestamp(100_000), 5), 3);
    }
}
