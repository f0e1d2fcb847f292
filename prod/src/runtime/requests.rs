//! What the runtime keeps in the database about API requests besides the journal:
//! - the outcome of each request's input (`GET /v1/requests/{id}` answers from it when
//!   the client was told `outcome_unknown`), written off the loop once the core has
//!   handled the input;
//! - the servers' tiers: the core decides a tier change, so the `servers` table follows
//!   the core. The runtime writes an accepted change (fenced) before it answers; a
//!   failure there ends the loop, and every start of the loop first makes the table
//!   equal to the core's tiers, so a crash at any point converges.

use std::time::Duration;

use payperplay_core::{Input, Rejection, ServerId};

use super::{Runtime, RuntimeError};
use crate::store::{RequestOutcome, RequestTag, StoreError};

/// Tries to write an outcome before giving up (with doubling waits from 100 ms).
const OUTCOME_WRITE_ATTEMPTS_MAX: u32 = 8;

/// The server and tier of a tier change.
fn tier_change(input: &Input) -> Option<(ServerId, u32)> {
    match input {
        Input::UpdateServerTier { server_id, ram_mib } => Some((*server_id, *ram_mib)),
        _ => None,
    }
}

impl Runtime {
    /// Records (in its own task, not delaying the loop) what the core made of the input
    /// of `request`.
    pub(super) fn note_outcome(&self, request: Option<RequestTag>, verdict: Result<&Result<(), Rejection>, &str>) {
        let Some(request) = request else { return };
        let outcome = match verdict {
            Ok(Ok(())) => RequestOutcome::CarriedOut,
            Ok(Err(rejection)) => {
                let detail = crate::error::ApiError::from(rejection.clone()).detail();
                RequestOutcome::Rejected {
                    code: detail.code,
                    message: detail.message,
                }
            }
            Err(message) => RequestOutcome::Quarantined {
                message: message.to_string(),
            },
        };
        let store = self.deps.store.clone();
        let clock = self.deps.clock.clone();
        tokio::spawn(async move {
            let mut wait_ms = 100;
            for attempt in 1..=OUTCOME_WRITE_ATTEMPTS_MAX {
                match store.record_request_outcome(request.id, &outcome, clock.now()).await {
                    Ok(()) => return,
                    Err(error) if attempt == OUTCOME_WRITE_ATTEMPTS_MAX => {
                        tracing::warn!(request = request.id, %error, "request outcome not recorded");
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                        wait_ms *= 2;
                    }
                }
            }
        });
    }

    /// Journals and handles an API request's input (tagged with the request); then an
    /// accepted tier change is written to the servers table before the caller is
    /// answered. A failure there is `OutcomeUnknown` (the loop ends; the next start
    /// converges the table).
    pub(super) async fn handle_request(
        &mut self,
        input: Input,
        request: Option<RequestTag>,
    ) -> Result<Result<(), Rejection>, RuntimeError> {
        let tier = tier_change(&input);
        self.pending_request = request;
        let handled = self.journal_and_handle(input).await;
        let (Ok(Ok(())), Some((server_id, ram_mib))) = (&handled, tier) else {
            return handled;
        };
        let now = self.deps.clock.now();
        match self
            .deps
            .store
            .set_server_tiers(&[(server_id.0 as i64, ram_mib)], now)
            .await
        {
            Ok(_) => handled,
            Err(error) => Err(RuntimeError::OutcomeUnknown {
                seq: Some(self.next_seq - 1),
                reason: format!("the tier change was accepted but not written to the servers table: {error}"),
            }),
        }
    }

    /// Makes the servers table's tiers equal to the core's (after a failure between
    /// the two, or a crash).
    pub(super) async fn converge_server_tiers(&mut self) -> Result<(), StoreError> {
        let live = self.deps.store.all_live_servers().await?;
        let differing: Vec<(i64, u32)> = live
            .iter()
            .filter_map(|row| {
                let server = self.core.server(ServerId(row.id as u64))?;
                (server.ram_mib as i32 != row.ram_mib).then_some((row.id, server.ram_mib))
            })
            .collect();
        if !differing.is_empty() {
            tracing::warn!(servers = ?differing, "servers table tiers differ from the core's: set to the core's");
            self.deps
                .store
                .set_server_tiers(&differing, self.deps.clock.now())
                .await?;
        }
        Ok(())
    }
}
