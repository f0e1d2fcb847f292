//! The scheduled minimum: capacity that must be there in time windows (days of the
//! week and a UTC time of day), whatever the demand.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};

use crate::types::{MS_PER_DAY, MS_PER_MINUTE, Timestamp};

/// `[core.policy.scheduled]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduledConfig {
    pub windows: Vec<ScheduleWindow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// The UTC weekday of `at` (1970-01-01 was a Thursday).
    pub fn of(at: Timestamp) -> Weekday {
        Weekday::ALL[((at.ms() / MS_PER_DAY + 3) % 7) as usize]
    }

    fn previous(self) -> Weekday {
        Weekday::ALL[(self as usize + 6) % 7]
    }
}

/// One window: on `days`, from `from` to `to` (UTC, "HH:MM"; `to` before `from`
/// crosses midnight into the next day; "24:00" is the end of the day), keep at least
/// `min_gb` of usable RAM (all nodes, dedicated included) and `min_nodes` cloud nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleWindow {
    #[serde(default = "all_days")]
    pub days: Vec<Weekday>,
    #[serde(with = "hh_mm")]
    pub from: u32,
    #[serde(with = "hh_mm")]
    pub to: u32,
    #[serde(default, rename = "min_gb", with = "crate::units::gb_mib")]
    pub min_mib: u32,
    #[serde(default)]
    pub min_nodes: u32,
}

fn all_days() -> Vec<Weekday> {
    Weekday::ALL.to_vec()
}

impl ScheduleWindow {
    /// Whether the window covers `at`.
    pub fn is_active(&self, at: Timestamp) -> bool {
        let minute = ((at.ms() % MS_PER_DAY) / MS_PER_MINUTE) as u32;
        let today = Weekday::of(at);
        if self.from < self.to {
            self.days.contains(&today) && (self.from..self.to).contains(&minute)
        } else {
            (self.days.contains(&today) && minute >= self.from)
                || (self.days.contains(&today.previous()) && minute < self.to)
        }
    }
}

impl ScheduledConfig {
    /// (usable MiB, cloud nodes) required at `at`: the maximum over active windows.
    pub fn minimum(&self, at: Timestamp) -> (u64, u32) {
        self.windows
            .iter()
            .filter(|w| w.is_active(at))
            .fold((0, 0), |(mib, nodes), w| {
                (mib.max(w.min_mib as u64), nodes.max(w.min_nodes))
            })
    }

    /// Check the windows; the error names the field.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        for (i, w) in self.windows.iter().enumerate() {
            if w.from == w.to {
                return Err(crate::config::ConfigError::new(
                    format!("core.policy.scheduled.windows.{i}.to"),
                    "must differ from `from` (use \"00:00\" to \"24:00\" for a whole day)",
                ));
            }
            if w.days.is_empty() {
                return Err(crate::config::ConfigError::new(
                    format!("core.policy.scheduled.windows.{i}.days"),
                    "needs at least one day (or leave it out for every day)",
                ));
            }
        }
        Ok(())
    }
}

/// Time of day as "HH:MM" (00:00 to 24:00), kept as minutes.
pub mod hh_mm {
    use super::*;

    pub fn serialize<S: Serializer>(minutes: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:02}:{:02}", minutes / 60, minutes % 60))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(D::Error::custom)
    }

    pub fn parse(text: &str) -> Result<u32, String> {
        let bad = || format!("invalid time of day {text:?}; write \"HH:MM\" (UTC), e.g. \"18:30\"");
        let (h, m) = text.split_once(':').ok_or_else(bad)?;
        let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if m >= 60 || h > 24 || (h == 24 && m > 0) {
            return Err(bad());
        }
        Ok(h * 60 + m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::MS_PER_HOUR;

    const MONDAY: u64 = 4 * MS_PER_DAY;

    fn window(days: &[Weekday], from: &str, to: &str, gb: u32) -> ScheduleWindow {
        ScheduleWindow {
            days: days.to_vec(),
            from: hh_mm::parse(from).unwrap(),
            to: hh_mm::parse(to).unwrap(),
            min_mib: gb * 1024,
            min_nodes: 0,
        }
    }

    #[test]
    fn windows_follow_days_and_cross_midnight() {
        let at = |day: u64, hour: u64| Timestamp(MONDAY + day * MS_PER_DAY + hour * MS_PER_HOUR);
        assert_eq!(Weekday::of(at(0, 0)), Weekday::Mon);
        assert_eq!(Weekday::of(at(6, 23)), Weekday::Sun);
        let evening = window(&[Weekday::Fri], "18:00", "02:00", 64);
        assert!(!evening.is_active(at(4, 17)));
        assert!(evening.is_active(at(4, 18)));
        assert!(evening.is_active(at(5, 1)), "Saturday 01:00 belongs to Friday's window");
        assert!(!evening.is_active(at(5, 2)));
        assert!(!evening.is_active(at(3, 20)), "not on Thursday");
        let config = ScheduledConfig {
            windows: vec![evening, window(&Weekday::ALL, "00:00", "24:00", 8)],
        };
        assert_eq!(config.minimum(at(4, 19)), (64 * 1024, 0));
        assert_eq!(config.minimum(at(2, 12)), (8 * 1024, 0));
        assert!(config.validate().is_ok());
    }

    #[test]
    fn times_of_day_are_checked() {
        assert_eq!(hh_mm::parse("18:30"), Ok(18 * 60 + 30));
        assert_eq!(hh_mm::parse("24:00"), Ok(24 * 60));
        assert!(hh_mm::parse("24:01").unwrap_err().contains("HH:MM"));
        assert!(hh_mm::parse("6pm").is_err());
    }
}
