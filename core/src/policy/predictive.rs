//! The predictive policy's memory: an hour-of-week demand profile (168 slots) and an
//! hour-of-day profile (24 slots) for hours of the week not seen often enough yet.
//! Each slot keeps the peak demand of its last few occurrences (`history_weeks`
//! weeks, `history_days` days) and forecasts their **lower median**: one outlier
//! (a launch day, an event) among them moves the forecast by at most one rank, so a
//! one-off surge is never learned as next week's peak. (An exponentially decayed mean
//! did learn it: after one 10x launch evening the next week peaked at 236 VMs instead
//! of 42, `scenarios/launch-day-predictive.toml`.)
//!
//! Fixed-size state, O(1) per observation: an evaluation only raises the running peak
//! of the current hour; when the hour changes the peak is pushed into its slots and
//! their medians recomputed (at most `HISTORY_MAX` values sorted).

use serde::{Deserialize, Serialize};

use crate::types::{MS_PER_HOUR, MS_PER_MINUTE, Timestamp};

/// `[core.policy.predictive]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PredictiveConfig {
    /// How many past weeks of an hour-of-week slot the forecast takes the median of
    /// (1 to `HISTORY_MAX`). A slot seen fewer than twice uses the hour-of-day profile.
    pub history_weeks: u32,
    /// How many past days of an hour-of-day slot the fallback takes the median of
    /// (1 to `HISTORY_MAX`).
    pub history_days: u32,
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
            history_weeks: 4,
            history_days: 7,
            margin_ms: 3 * MS_PER_MINUTE,
            headroom_pct: 0,
        }
    }
}

impl PredictiveConfig {
    /// Check the history lengths. The error names the field.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        for (field, value) in [
            ("history_weeks", self.history_weeks),
            ("history_days", self.history_days),
        ] {
            if !(1..=HISTORY_MAX as u32).contains(&value) {
                return Err(crate::config::ConfigError::new(
                    format!("core.policy.predictive.{field}"),
                    format!("must be between 1 and {HISTORY_MAX}, got {value}"),
                ));
            }
        }
        Ok(())
    }
}

const HOURS_PER_WEEK: usize = 168;
/// The longest history a slot keeps.
pub const HISTORY_MAX: usize = 16;
/// An hour-of-week slot is trusted once it has this many samples: with two, the
/// lower median ignores one outlier.
const WEEK_SAMPLES_MIN: u8 = 2;

/// The last `capacity` peaks of one slot (a ring) and their lower median.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Slot {
    peaks_mib: [u64; HISTORY_MAX],
    n: u8,
    next: u8,
    median_mib: u64,
}

impl Slot {
    fn push(&mut self, peak_mib: u64, capacity: usize) {
        let capacity = capacity.clamp(1, HISTORY_MAX);
        self.peaks_mib[self.next as usize] = peak_mib;
        self.next = ((self.next as usize + 1) % capacity) as u8;
        self.n = (self.n as usize + 1).min(capacity) as u8;
        let mut sorted = [0u64; HISTORY_MAX];
        let sorted = &mut sorted[..self.n as usize];
        sorted.copy_from_slice(&self.peaks_mib[..self.n as usize]);
        sorted.sort_unstable();
        self.median_mib = sorted[(sorted.len() - 1) / 2];
    }
}

/// The learned demand profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemandProfile {
    #[serde(with = "crate::snapshot::array")]
    week: [Slot; HOURS_PER_WEEK],
    day: [Slot; 24],
    history_weeks: usize,
    history_days: usize,
    /// The absolute hour (ms / 1 h) being observed, and its peak so far.
    current_hour: Option<u64>,
    current_peak_mib: u64,
}

/// Monday 00:00 UTC is hour 0 of the week (1970-01-01 was a Thursday).
pub fn hour_of_week(at: Timestamp) -> usize {
    let hour = at.ms() / MS_PER_HOUR;
    ((hour + 3 * 24) % HOURS_PER_WEEK as u64) as usize
}

impl DemandProfile {
    pub fn new(config: &PredictiveConfig) -> DemandProfile {
        DemandProfile {
            week: [Slot::default(); HOURS_PER_WEEK],
            day: [Slot::default(); 24],
            history_weeks: config.history_weeks as usize,
            history_days: config.history_days as usize,
            current_hour: None,
            current_peak_mib: 0,
        }
    }

    /// This learned profile under `config`'s history lengths (a reconfiguration): the
    /// peaks are kept, a shorter history forgets the oldest as new ones come.
    pub fn with_history_of(mut self, config: &PredictiveConfig) -> DemandProfile {
        self.history_weeks = config.history_weeks as usize;
        self.history_days = config.history_days as usize;
        self
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
                    self.week[hour_of_week(at)].push(self.current_peak_mib, self.history_weeks);
                    self.day[(h % 24) as usize].push(self.current_peak_mib, self.history_days);
                }
                self.current_hour = Some(hour);
                self.current_peak_mib = demand_mib;
            }
        }
    }

    /// The expected peak demand in the hour containing `at`: the median of the
    /// hour-of-week slot once it has two samples, else of the hour-of-day slot, else
    /// zero.
    pub fn expected_mib(&self, at: Timestamp) -> u64 {
        let week = &self.week[hour_of_week(at)];
        if week.n >= WEEK_SAMPLES_MIN.min(self.history_weeks as u8) {
            return week.median_mib;
        }
        let day = &self.day[((at.ms() / MS_PER_HOUR) % 24) as usize];
        if day.n > 0 { day.median_mib } else { 0 }
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
    use crate::types::MS_PER_DAY;

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
        // Two more weeks at 4 GB: the hour-of-week slot (8, 4, 4 GB) says 4 GB.
        for day in 1..15 {
            for h in 0..24 {
                let demand = if h == 20 { 4096 } else { 1024 };
                profile.observe(at(day, h, 0), demand);
            }
        }
        profile.observe(at(15, 0, 1), 0);
        assert_eq!(profile.expected_mib(at(14, 20, 0)), 4096);
        assert_eq!(profile.expected_mib(at(15, 20, 0)), 4096, "Tuesday saw 4 GB only");
    }

    #[test]
    fn a_one_off_surge_is_not_learned_as_next_weeks_peak() {
        let config = PredictiveConfig::default();
        let mut profile = DemandProfile::new(&config);
        let at = |day: u64, hour: u64| Timestamp(MONDAY + day * MS_PER_DAY + hour * MS_PER_HOUR);
        // Three weeks of 40 GB evenings; on day 3 (a Thursday) a launch: 400 GB.
        // The following Thursdays are forecast from the evening before.
        for day in 0..22 {
            if [10, 17].contains(&day) {
                // Day 10: one week sample (the surge), so the day profile, whose median
                // ignores it. Day 17: the surge and 40 GB, the lower median.
                assert_eq!(
                    profile.expected_mib(at(day, 18)),
                    40 * 1024,
                    "day {day}: the surge is an outlier"
                );
            }
            for h in 0..24 {
                let demand = match (day, h) {
                    (3, 17..=21) => 400 * 1024,
                    (_, 17..=21) => 40 * 1024,
                    _ => 4 * 1024,
                };
                profile.observe(at(day, h), demand);
            }
        }
        assert_eq!(
            profile.expected_mib(at(24, 18)),
            40 * 1024,
            "three weeks: 400, 40, 40 GB"
        );
    }

    #[test]
    fn the_lower_median_of_a_slot_ignores_one_high_outlier() {
        let mut slot = Slot::default();
        slot.push(10, 4);
        assert_eq!(slot.median_mib, 10);
        slot.push(1000, 4);
        assert_eq!(slot.median_mib, 10);
        slot.push(20, 4);
        assert_eq!(slot.median_mib, 20);
        slot.push(30, 4);
        slot.push(40, 4); // 10 leaves the ring: 1000, 20, 30, 40.
        assert_eq!(slot.median_mib, 30);
        assert_eq!(slot.n, 4);
    }

    #[test]
    fn history_lengths_are_bounded() {
        let mut config = PredictiveConfig::default();
        assert!(config.validate().is_ok());
        config.history_days = 0;
        assert_eq!(
            config.validate().expect_err("zero days").field,
            "core.policy.predictive.history_days"
        );
        config.history_days = HISTORY_MAX as u32 + 1;
        assert!(config.validate().is_err());
    }
}
