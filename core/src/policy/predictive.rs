//! The predictive policy's memory: an hour-of-week demand profile (168 buckets) and
//! an hour-of-day profile (24 buckets) for the first week, each bucket an
//! exponentially decayed average of the peak demand seen in that hour.
//!
//! Fixed-size state, O(1) per observation: an evaluation only raises the running peak
//! of the current hour; when the hour changes the peak is folded into its buckets.

use serde::{Deserialize, Serialize};

use crate::types::{MS_PER_DAY, MS_PER_HOUR, MS_PER_MINUTE, Timestamp};

/// `[core.policy.predictive]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PredictiveConfig {
    /// How fast old weeks are forgotten: a week's peak weighs half as much after
    /// this long (the hour-of-day profile uses the same half-life).
    #[serde(rename = "half_life", with = "crate::units::duration_ms")]
    pub half_life_ms: u64,
    /// Added to the catalog's `expected_provision` to get the look-ahead: the policy
    /// provisions for the peak forecast over `[now, now + expected_provision + margin]`.
    #[serde(rename = "margin", with = "crate::units::duration_ms")]
    pub margin_ms: u64,
    /// Extra capacity on top of the forecast, in percent of it.
    pub headroom_pct: u32,
}

impl Default for PredictiveConfig {
    fn default() -> Self {
        PredictiveConfig {
            half_life_ms: 7 * MS_PER_DAY,
            margin_ms: 3 * MS_PER_MINUTE,
            headroom_pct: 0,
        }
    }
}

const HOURS_PER_WEEK: usize = 168;
const PPM: u64 = 1_000_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bucket {
    mib: u64,
    seen: bool,
}

impl Bucket {
    fn fold(&mut self, peak: u64, alpha_ppm: u64) {
        if self.seen {
            let old = self.mib as i128;
            let delta = (peak as i128 - old) * alpha_ppm as i128 / PPM as i128;
            self.mib = (old + delta).max(0) as u64;
        } else {
            self.mib = peak;
            self.seen = true;
        }
    }
}

/// The learned demand profile.
#[derive(Debug, Clone)]
pub struct DemandProfile {
    week: [Bucket; HOURS_PER_WEEK],
    day: [Bucket; 24],
    /// Weight of a new observation, per million: one per week for the week buckets,
    /// one per day for the day buckets.
    alpha_week_ppm: u64,
    alpha_day_ppm: u64,
    /// The absolute hour (ms / 1 h) being observed, and its peak so far.
    current_hour: Option<u64>,
    current_peak_mib: u64,
}

/// Weight of one observation every `period_ms` for a half-life of `half_life_ms`:
/// `1 - 0.5^(period / half_life)`, per million.
fn alpha_ppm(period_ms: u64, half_life_ms: u64) -> u64 {
    if half_life_ms == 0 {
        return PPM;
    }
    let keep = 0.5f64.powf(period_ms as f64 / half_life_ms as f64);
    (((1.0 - keep) * PPM as f64).round() as u64).clamp(1, PPM)
}

/// Monday 00:00 UTC is hour 0 of the week (1970-01-01 was a Thursday).
pub fn hour_of_week(at: Timestamp) -> usize {
    let hour = at.ms() / MS_PER_HOUR;
    ((hour + 3 * 24) % HOURS_PER_WEEK as u64) as usize
}

impl DemandProfile {
    pub fn new(config: &PredictiveConfig) -> DemandProfile {
        DemandProfile {
            week: [Bucket::default(); HOURS_PER_WEEK],
            day: [Bucket::default(); 24],
            alpha_week_ppm: alpha_ppm(7 * MS_PER_DAY, config.half_life_ms),
            alpha_day_ppm: alpha_ppm(MS_PER_DAY, config.half_life_ms),
            current_hour: None,
            current_peak_mib: 0,
        }
    }

    /// Record the demand (RAM held plus RAM queued) seen at `now`.
    pub fn observe(&mut self, now: Timestamp, demand_mib: u64) {
        let hour = now.ms() / MS_PER_HOUR;
        match self.current_hour {
            Some(h) if h == hour => self.current_peak_mib = self.current_peak_mib.max(demand_mib),
            Some(h) if h > hour => {}
            previous => {
                if let Some(h) = previous {
                    let at = Timestamp(h * MS_PER_HOUR);
                    self.week[hour_of_week(at)].fold(self.current_peak_mib, self.alpha_week_ppm);
                    self.day[(h % 24) as usize].fold(self.current_peak_mib, self.alpha_day_ppm);
                }
                self.current_hour = Some(hour);
                self.current_peak_mib = demand_mib;
            }
        }
    }

    /// The expected peak demand in the hour containing `at`: the hour-of-week bucket
    /// once that hour has been seen, else the hour-of-day bucket, else zero.
    pub fn expected_mib(&self, at: Timestamp) -> u64 {
        let week = self.week[hour_of_week(at)];
        if week.seen {
            return week.mib;
        }
        let day = self.day[((at.ms() / MS_PER_HOUR) % 24) as usize];
        if day.seen { day.mib } else { 0 }
    }

    /// The peak expected over `[now, now + lead_ms]` (every hour it touches, at most a week).
    pub fn forecast_peak_mib(&self, now: Timestamp, lead_ms: u64) -> u64 {
        let first = now.ms() / MS_PER_HOUR;
        let last = now.plus_ms(lead_ms).ms() / MS_PER_HOUR;
        let last = last.min(first + HOURS_PER_WEEK as u64 - 1);
        (first..=last)
            .map(|h| self.expected_mib(Timestamp(h * MS_PER_HOUR)))
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MONDAY: u64 = 4 * MS_PER_DAY; // 1970-01-05

    #[test]
    fn weeks_start_on_monday() {
        assert_eq!(hour_of_week(Timestamp(MONDAY)), 0);
        assert_eq!(hour_of_week(Timestamp(MONDAY + 25 * MS_PER_HOUR)), 25);
        assert_eq!(hour_of_week(Timestamp(0)), 3 * 24);
    }

    #[test]
    fn learns_the_evening_peak_and_forecasts_it_ahead() {
        let config = PredictiveConfig::default();
        let mut profile = DemandProfile::new(&config);
        let at = |day: u64, hour: u64, min: u64| {
            Timestamp(MONDAY + day * MS_PER_DAY + hour * MS_PER_HOUR + min * MS_PER_MINUTE)
        };
        // Day 0: 8 GB from 20:00 to 21:00, 1 GB otherwise, observed every 30 minutes.
        for half_hours in 0..48 {
            let (h, m) = (half_hours / 2, (half_hours % 2) * 30);
            let demand = if h == 20 { 8192 } else { 1024 };
            profile.observe(at(0, h, m), demand);
        }
        profile.observe(at(1, 0, 0), 1024);
        // Day 1 at 19:58: the next hour (in the look-ahead) is the peak, learned from day 0.
        assert_eq!(profile.forecast_peak_mib(at(1, 19, 58), 5 * MS_PER_MINUTE), 8192);
        assert_eq!(profile.forecast_peak_mib(at(1, 19, 30), 5 * MS_PER_MINUTE), 1024);
        // A week later the hour-of-week bucket takes over, and a lower peak decays it.
        for day in 1..8 {
            for h in 0..24 {
                let demand = if h == 20 { 4096 } else { 1024 };
                profile.observe(at(day, h, 0), demand);
            }
        }
        profile.observe(at(8, 0, 1), 0);
        let monday_20 = profile.expected_mib(at(7, 20, 0));
        assert!(monday_20 > 4096 && monday_20 < 8192, "{monday_20}");
        assert_eq!(profile.expected_mib(at(8, 20, 0)), 4096, "Tuesday saw 4 GB only");
    }

    #[test]
    fn half_life_sets_the_weight() {
        assert_eq!(alpha_ppm(7 * MS_PER_DAY, 7 * MS_PER_DAY), 500_000);
        assert_eq!(alpha_ppm(MS_PER_DAY, 0), PPM);
    }
}
