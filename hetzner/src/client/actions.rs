//! Waiting for actions: polls back off, and the actions of concurrent waits are polled
//! together (`GET /actions?id=..`), so a burst of orders costs one poll per interval.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;

use super::{HetznerClient, PER_PAGE_MAX, decode};
use crate::error::HetznerError;
use crate::model::{Action, ActionEnvelope, ActionStatus, ActionsEnvelope};

/// The actions some caller waits for, and what the last batch poll said about them.
#[derive(Debug, Default)]
pub(super) struct ActionBatch {
    /// Action id → number of callers waiting for it.
    wanted: BTreeMap<u64, u32>,
    latest: BTreeMap<u64, Action>,
    last_poll_at: Option<tokio::time::Instant>,
}

/// A caller's wait for an action, in the batch until it ends, also when the waiting
/// future is dropped half-way (a timeout), so no stale id stays polled.
struct ActionRegistration<'a> {
    client: &'a HetznerClient,
    id: u64,
}

impl<'a> ActionRegistration<'a> {
    fn new(client: &'a HetznerClient, id: u64) -> ActionRegistration<'a> {
        *client
            .action_batch
            .lock()
            .expect("action batch lock")
            .wanted
            .entry(id)
            .or_insert(0) += 1;
        ActionRegistration { client, id }
    }
}

impl Drop for ActionRegistration<'_> {
    fn drop(&mut self) {
        let Ok(mut batch) = self.client.action_batch.lock() else {
            return;
        };
        let waiters_left = batch.wanted.get_mut(&self.id).map(|count| {
            *count -= 1;
            *count
        });
        if waiters_left == Some(0) {
            batch.wanted.remove(&self.id);
            batch.latest.remove(&self.id);
        }
    }
}

impl HetznerClient {
    /// How many actions callers are waiting for now (for metrics and tests).
    pub fn actions_waited_for(&self) -> usize {
        self.action_batch.lock().expect("action batch lock").wanted.len()
    }

    /// The action as Hetzner reports it now.
    pub async fn get_action(&self, id: u64) -> Result<Action, HetznerError> {
        const OP: &str = "get_action";
        let bytes = self
            .execute(OP, Method::GET, &format!("actions/{id}"), &[], None)
            .await
            .map_err(|failure| self.failure_to_error(OP, failure))?;
        Ok(decode::<ActionEnvelope>(OP, &bytes)?.action)
    }

    /// The actions with these ids, in one request (at most [`PER_PAGE_MAX`] ids).
    pub async fn get_actions(&self, ids: &[u64]) -> Result<Vec<Action>, HetznerError> {
        const OP: &str = "get_actions";
        let query: Vec<(&str, String)> = ids.iter().map(|id| ("id", id.to_string())).collect();
        let bytes = self
            .execute(OP, Method::GET, "actions", &query, None)
            .await
            .map_err(|failure| self.failure_to_error(OP, failure))?;
        Ok(decode::<ActionsEnvelope>(OP, &bytes)?.actions)
    }

    /// Waits for all of `actions`, registered together so their polls are shared.
    pub async fn wait_for_actions(&self, actions: Vec<Action>) -> Result<(), HetznerError> {
        let _registrations: Vec<ActionRegistration<'_>> = actions
            .iter()
            .map(|action| ActionRegistration::new(self, action.id))
            .collect();
        for action in actions {
            self.wait_for_action_registered(action).await?;
        }
        Ok(())
    }

    /// Polls an action until it succeeds (Ok), fails (`ActionFailed`) or outlasts
    /// `action_wait_ms_max` (`ActionTimedOut`). Polls start at `action_poll_ms_min` apart
    /// and back off to `action_poll_ms_max`, since every poll spends rate limit; the
    /// actions of concurrent waits are polled together, at most once per
    /// `action_batch_gap_ms`, so a burst of orders costs one poll per interval.
    pub async fn wait_for_action(&self, action: Action) -> Result<Action, HetznerError> {
        let _registration = ActionRegistration::new(self, action.id);
        self.wait_for_action_registered(action).await
    }

    async fn wait_for_action_registered(&self, action: Action) -> Result<Action, HetznerError> {
        let started = tokio::time::Instant::now();
        let wait_max = Duration::from_millis(self.config.action_wait_ms_max);
        let mut interval = Duration::from_millis(self.config.action_poll_ms_min.max(1));
        let interval_max = Duration::from_millis(self.config.action_poll_ms_max.max(1));
        let batch_gap = Duration::from_millis(self.config.action_batch_gap_ms);
        let mut current = action;
        loop {
            match current.status {
                ActionStatus::Success => return Ok(current),
                ActionStatus::Error => {
                    let (code, message) = current
                        .error
                        .map(|error| (error.code, error.message))
                        .unwrap_or_else(|| ("unknown".to_owned(), "no error given".to_owned()));
                    return Err(HetznerError::ActionFailed {
                        action_id: current.id,
                        command: current.command,
                        code,
                        message,
                    });
                }
                ActionStatus::Running => {}
            }
            let waited = started.elapsed();
            if waited >= wait_max {
                return Err(HetznerError::ActionTimedOut {
                    action_id: current.id,
                    command: current.command,
                    waited,
                });
            }
            // A batch poll may already have seen it finish (an order's create and start
            // actions are registered together, so one poll answers both).
            let finished = {
                let batch = self.action_batch.lock().expect("action batch lock");
                batch
                    .latest
                    .get(&current.id)
                    .filter(|latest| latest.status != ActionStatus::Running)
                    .cloned()
            };
            if let Some(finished) = finished {
                current = finished;
                continue;
            }
            let slept_from = tokio::time::Instant::now();
            tokio::time::sleep(interval.min(wait_max - waited)).await;
            interval = (interval * 2).min(interval_max);
            // Someone else's batch poll since we fell asleep may already have news.
            let (news, poll_ids) = {
                let mut batch = self.action_batch.lock().expect("action batch lock");
                let news = batch.latest.get(&current.id).cloned();
                let polled_since_sleep = batch.last_poll_at.is_some_and(|at| at >= slept_from);
                let gap_passed = batch.last_poll_at.is_none_or(|at| at.elapsed() >= batch_gap);
                let poll_ids = if !polled_since_sleep && gap_passed {
                    batch.last_poll_at = Some(tokio::time::Instant::now());
                    let mut ids: Vec<u64> = vec![current.id];
                    ids.extend(
                        batch
                            .wanted
                            .keys()
                            .copied()
                            .filter(|id| *id != current.id)
                            .take(PER_PAGE_MAX as usize - 1),
                    );
                    Some(ids)
                } else {
                    None
                };
                (news.filter(|_| polled_since_sleep), poll_ids)
            };
            if let Some(ids) = poll_ids {
                let actions = self.get_actions(&ids).await?;
                let mut batch = self.action_batch.lock().expect("action batch lock");
                for polled in actions {
                    if batch.wanted.contains_key(&polled.id) {
                        batch.latest.insert(polled.id, polled);
                    }
                }
                match batch.latest.get(&current.id) {
                    Some(polled) => current = polled.clone(),
                    None => {
                        return Err(HetznerError::NotFound {
                            what: format!("action {}", current.id),
                            message: "missing from the answer to GET /actions".to_owned(),
                        });
                    }
                }
            } else if let Some(news) = news {
                current = news;
            }
        }
    }
}
