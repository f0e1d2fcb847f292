//! Pre-warm: start a server shortly before its owner usually plays.
//!
//! The core remembers, per server, the time of day of the first demand on each of the
//! last `MAX_HISTORY_DAYS` days (a start request, or the first player of a pre-warmed
//! server): 28 slots, fixed size. When at least `min_days` of the last `history_days`
//! days had their first demand within `window` of each other, the earliest of them is
//! the usual time, and the core starts the server `lead` before it on the next day.
//! A pre-warmed server may wait `hold` for its first player before the idle timer
//! applies. `billed_to` says who pays the warm minutes before the first player (or
//! the owner's own start request): the owner, or the platform.

use serde::{Deserialize, Serialize};

use crate::types::{MS_PER_DAY, MS_PER_MINUTE, Timestamp};

/// At most this many days of history per server.
pub const MAX_HISTORY_DAYS: usize = 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BilledTo {
    /// Warm minutes are RAM-time like any other, charged to the owner.
    Owner,
    /// Warm minutes before the first player are not charged to the owner; the core
    /// counts them in `CoreStats::prewarm_platform_mib_ms`.
    Platform,
}

/// `[core.prewarm]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrewarmConfig {
    pub enabled: bool,
    /// How many past days are looked at (at most 28).
    pub history_days: u32,
    /// On how many of them the server must have started at a similar time.
    pub min_days: u32,
    /// How close the first starts of those days must be.
    #[serde(rename = "window", with = "crate::units::duration_ms")]
    pub window_ms: u64,
    /// How long before the usual time the core starts the server.
    #[serde(rename = "lead", with = "crate::units::duration_ms")]
    pub lead_ms: u64,
    /// How long a pre-warmed server may wait for its first player before the idle
    /// timer applies.
    #[serde(rename = "hold", with = "crate::units::duration_ms")]
    pub hold_ms: u64,
    pub billed_to: BilledTo,
}

impl Default for PrewarmConfig {
    fn default() -> Self {
        PrewarmConfig {
            enabled: false,
            history_days: 7,
            min_days: 4,
            window_ms: 30 * MS_PER_MINUTE,
            lead_ms: 5 * MS_PER_MINUTE,
            hold_ms: 20 * MS_PER_MINUTE,
            billed_to: BilledTo::Platform,
        }
    }
}

impl PrewarmConfig {
    /// Check the table; the error names the field.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        if self.history_days == 0 || self.history_days as usize > MAX_HISTORY_DAYS {
            return Err(crate::config::ConfigError::new(
                "core.prewarm.history_days",
                format!("must be between 1 and {MAX_HISTORY_DAYS}"),
            ));
        }
        if self.min_days == 0 || self.min_days > self.history_days {
            return Err(crate::config::ConfigError::new(
                "core.prewarm.min_days",
                "must be between 1 and history_days",
            ));
        }
        if self.lead_ms >= MS_PER_DAY {
            return Err(crate::config::ConfigError::new(
                "core.prewarm.lead",
                "must be shorter than a day",
            ));
        }
        Ok(())
    }
}

const NO_DAY: u32 = u32::MAX;

/// One server's habit: the minute of day of the first demand, per day, in a ring.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Habit {
    day: [u32; MAX_HISTORY_DAYS],
    minute: [u16; MAX_HISTORY_DAYS],
}

impl Default for Habit {
    fn default() -> Self {
        Habit {
            day: [NO_DAY; MAX_HISTORY_DAYS],
            minute: [0; MAX_HISTORY_DAYS],
        }
    }
}

fn day_of(at: Timestamp) -> u32 {
    (at.ms() / MS_PER_DAY) as u32
}

impl Habit {
    /// Record a demand at `at`; only the first of each day counts. Whether it did.
    pub fn record(&mut self, at: Timestamp) -> bool {
        let day = day_of(at);
        let slot = day as usize % MAX_HISTORY_DAYS;
        if self.day[slot] == day {
            return false;
        }
        self.day[slot] = day;
        self.minute[slot] = ((at.ms() % MS_PER_DAY) / MS_PER_MINUTE) as u16;
        true
    }

    /// The usual minute of day judged on the `history_days` days before `day`, if
    /// the habit is regular enough.
    pub fn usual_minute(&self, config: &PrewarmConfig, day: u32) -> Option<u32> {
        let first = day.saturating_sub(config.history_days);
        let mut minutes = [0u32; MAX_HISTORY_DAYS];
        let mut n = 0;
        for (&d, &m) in self.day.iter().zip(&self.minute) {
            if d != NO_DAY && d >= first && d < day {
                minutes[n] = m as u32;
                n += 1;
            }
        }
        let minutes = &mut minutes[..n];
        minutes.sort_unstable();
        let window = (config.window_ms / MS_PER_MINUTE) as u32;
        let mut best: Option<(usize, u32)> = None;
        for (i, &m) in minutes.iter().enumerate() {
            let count = minutes[i..].iter().take_while(|&&x| x - m <= window).count();
            if best.is_none_or(|(c, _)| count > c) {
                best = Some((count, m));
            }
        }
        best.filter(|&(count, _)| count >= config.min_days as usize)
            .map(|(_, m)| m)
    }

    /// When to pre-warm next: `lead` before the usual time, on the first day (from
    /// today) where that moment is still after `now`. `None` without a habit.
    pub fn next_prewarm(&self, config: &PrewarmConfig, now: Timestamp) -> Option<Timestamp> {
        let today = day_of(now);
        (today..today + 2).find_map(|day| {
            let minute = self.usual_minute(config, day)? as u64;
            let at = (day as u64 * MS_PER_DAY + minute * MS_PER_MINUTE).checked_sub(config.lead_ms)?;
            (at > now.ms()).then_some(Timestamp(at))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::MS_PER_HOUR;

    fn at(day: u64, hour: u64, minute: u64) -> Timestamp {
        Timestamp(day * MS_PER_DAY + hour * MS_PER_HOUR + minute * MS_PER_MINUTE)
    }

    #[test]
    fn a_regular_evening_player_is_prewarmed_before_the_usual_time() {
        let config = PrewarmConfig {
            enabled: true,
            ..PrewarmConfig::default()
        };
        let mut habit = Habit::default();
        // 20:00 ± 10 minutes on four of seven days, once at noon, later starts ignored.
        for (day, h, m) in [(100, 20, 5), (101, 19, 55), (102, 12, 0), (103, 20, 10), (105, 20, 0)] {
            habit.record(at(day, h, m));
            habit.record(at(day, 23, 0));
        }
        assert_eq!(habit.usual_minute(&config, 106), Some(19 * 60 + 55));
        assert_eq!(habit.next_prewarm(&config, at(106, 9, 0)), Some(at(106, 19, 50)));
        // Past today's moment: tomorrow's.
        assert_eq!(habit.next_prewarm(&config, at(106, 19, 51)), Some(at(107, 19, 50)));
        // Three of seven days is not a habit; eight days later the old days are forgotten.
        let strict = PrewarmConfig {
            min_days: 5,
            ..config.clone()
        };
        assert_eq!(habit.usual_minute(&strict, 106), None);
        assert_eq!(habit.usual_minute(&config, 112), None);
        assert!(config.validate().is_ok());
        assert!(
            PrewarmConfig { min_days: 9, ..config }
                .validate()
                .unwrap_err()
                .field
                .contains("min_days")
        );
    }
}
