//! Alarms an operator must look at: a quarantined input, a balance that disagrees
//! with its ledger, a money, mail or world command still failing after many attempts.
//! Each is logged at error level, counted in `payperplay_alarms_total{kind}`, shown
//! by `payperplay_alarms_active{kind}` and listed at `GET /v1/admin/alarms`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;
use utoipa::ToSchema;

/// What an alarm is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// An input made the core panic; it is skipped on replay.
    QuarantinedInput,
    /// A user's balance differs from the sum of their ledger entries (or the core's).
    BalanceMismatch,
    /// A ledger, mail or world command keeps failing; it is still being retried.
    CommandRetrying,
}

impl AlarmKind {
    fn name(self) -> &'static str {
        match self {
            AlarmKind::QuarantinedInput => "quarantined_input",
            AlarmKind::BalanceMismatch => "balance_mismatch",
            AlarmKind::CommandRetrying => "command_retrying",
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Alarm {
    pub kind: AlarmKind,
    /// What it is about: `user 42`, `command 17`, `journal 5`.
    pub subject: String,
    pub message: String,
}

/// The active alarms of this process, by kind and subject.
#[derive(Debug, Default)]
pub struct Alarms {
    active: Mutex<BTreeMap<(AlarmKind, String), String>>,
}

impl Alarms {
    /// Raises (or updates) the alarm on `subject`; logged and counted when new.
    pub fn raise(&self, kind: AlarmKind, subject: String, message: String) {
        let mut active = self.active.lock().expect("alarms lock");
        let is_new = active.insert((kind, subject.clone()), message.clone()).is_none();
        if is_new {
            tracing::error!(alarm = kind.name(), %subject, %message, "ALARM");
            metrics::counter!("payperplay_alarms_total", "kind" => kind.name()).increment(1);
        }
        Self::publish(&active, kind);
    }

    /// Clears the alarm on `subject`, if raised.
    pub fn clear(&self, kind: AlarmKind, subject: &str) {
        let mut active = self.active.lock().expect("alarms lock");
        if active.remove(&(kind, subject.to_string())).is_some() {
            tracing::info!(alarm = kind.name(), %subject, "alarm cleared");
        }
        Self::publish(&active, kind);
    }

    /// Clears every alarm of `kind` whose subject is not in `still`.
    pub fn retain(&self, kind: AlarmKind, still: &[String]) {
        let mut active = self.active.lock().expect("alarms lock");
        active.retain(|(alarm_kind, subject), _| *alarm_kind != kind || still.contains(subject));
        Self::publish(&active, kind);
    }

    pub fn list(&self) -> Vec<Alarm> {
        let active = self.active.lock().expect("alarms lock");
        active
            .iter()
            .map(|((kind, subject), message)| Alarm {
                kind: *kind,
                subject: subject.clone(),
                message: message.clone(),
            })
            .collect()
    }

    fn publish(active: &BTreeMap<(AlarmKind, String), String>, kind: AlarmKind) {
        let n_active = active.keys().filter(|(alarm_kind, _)| *alarm_kind == kind).count();
        metrics::gauge!("payperplay_alarms_active", "kind" => kind.name()).set(n_active as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alarm_is_listed_until_cleared() {
        let alarms = Alarms::default();
        alarms.raise(AlarmKind::BalanceMismatch, "user 7".into(), "off by 5".into());
        alarms.raise(AlarmKind::CommandRetrying, "command 3".into(), "smtp down".into());
        alarms.raise(AlarmKind::BalanceMismatch, "user 7".into(), "off by 6".into());
        let listed = alarms.list();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].message, "off by 6");
        alarms.retain(AlarmKind::BalanceMismatch, &[]);
        alarms.clear(AlarmKind::CommandRetrying, "command 3");
        assert!(alarms.list().is_empty());
    }
}
