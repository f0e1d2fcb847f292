//! The loop: every input is appended to the journal, then handled; the commands the
//! core issues are recorded in the command log and handed to the executor; the events
//! it reports feed metrics and the nodes table; due timers are handled as
//! `Input::Timeout`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use payperplay_core::{Command, CommandKind, Core, Event, Input, NodeId, NodeKind, Rejection, StartOutcome, Timestamp};
use tokio::sync::{Mutex, watch};

use super::executor::Executor;
use super::handle::{Inbox, RecoveryPhase, Request};
use super::{AlarmKind, Runtime, RuntimeError, handle_guarded};
use crate::drivers::cloud_node_name;
use crate::store::{NodeRecord, NodeRecordState, StoreError};

/// How long the loop sleeps at most before looking at the clock again (so a clock
/// moved by hand in tests, or a timer armed for later, is noticed).
const TIMER_RECHECK_MS_MAX: u64 = 1_000;
/// How often the loop checks that it still holds the journal lock and its epoch (a
/// runtime that lost them stops leading; its writes are fenced in any case).
const LOCK_CHECK_MS: u64 = 1_000;
/// How often every balance is checked against its ledger while running.
const BALANCE_CHECK_MS: u64 = 60_000;

/// The nodes table's row for a node the core knows (kind, name, flag, state).
pub fn node_record(core: &Core, node_id: NodeId) -> Option<NodeRecord> {
    let node = core.node(node_id)?;
    let (kind, name) = match &node.kind {
        NodeKind::Dedicated { name, .. } => ("dedicated", name.clone()),
        NodeKind::Cloud { server_type, location } => (
            "cloud",
            cloud_node_name(&core.config().catalog, node_id, *server_type, *location),
        ),
    };
    Some(NodeRecord {
        node_id,
        kind,
        name,
        is_system: node.is_system,
        state: node.state.into(),
    })
}

impl Runtime {
    /// The loop. Returns `Ok` on shutdown; an error (database gone, the journal lock
    /// lost to another runtime, an input that made the core panic) ends the task and
    /// its supervisor restarts it, which replays the journal again (or stands by).
    pub async fn run(
        mut self,
        inbox: Arc<Mutex<Inbox>>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), RuntimeError> {
        let mut inbox = inbox.lock().await;
        self.handle.progress.set_phase(RecoveryPhase::Ready);
        self.handle.ready.store(true, Ordering::SeqCst);
        tracing::info!(
            next_seq = self.next_seq,
            epoch = self.journal_lock.epoch,
            "runtime ready"
        );
        let result = self.run_loop(&mut inbox, &mut shutdown).await;
        self.handle.ready.store(false, Ordering::SeqCst);
        self.handle.progress.set_phase(RecoveryPhase::Standby);
        if let Err(error) = &result {
            tracing::error!(%error, "runtime stops leading");
        }
        result
    }

    async fn run_loop(&mut self, inbox: &mut Inbox, shutdown: &mut watch::Receiver<bool>) -> Result<(), RuntimeError> {
        let mut lock_check = tokio::time::interval(Duration::from_millis(LOCK_CHECK_MS));
        lock_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut balance_check = tokio::time::interval(Duration::from_millis(BALANCE_CHECK_MS));
        balance_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first ticks are immediate: recovery has just done both.
        lock_check.tick().await;
        balance_check.tick().await;
        self.converge_server_tiers().await?;
        let snapshot_every_ms = self.deps.runtime_config.snapshot_every_ms;
        let mut snapshot_tick = tokio::time::interval(Duration::from_millis(snapshot_every_ms.max(1_000)));
        snapshot_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        snapshot_tick.tick().await;
        loop {
            if *shutdown.borrow() {
                tracing::info!("runtime stopping");
                if self.snapshot_due.inputs_since > 0 {
                    self.snapshot_or_log().await;
                }
                return Ok(());
            }
            if self.deps.store.is_deposed() {
                return Err(StoreError::Fenced {
                    ours: self.journal_lock.epoch,
                }
                .into());
            }
            let now = self.deps.clock.now();
            if let Some(at) = self.core.poll_timeout()
                && at <= now
            {
                if let Err(rejection) = self.journal_and_handle(Input::Timeout).await? {
                    tracing::warn!(%rejection, "timeout rejected");
                }
                continue;
            }
            let wait_ms = self
                .core
                .poll_timeout()
                .map_or(TIMER_RECHECK_MS_MAX, |at| at.since(now).min(TIMER_RECHECK_MS_MAX));
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = lock_check.tick() => self.journal_lock.check().await?,
                _ = balance_check.tick() => self.check_balances().await?,
                _ = snapshot_tick.tick(), if snapshot_every_ms > 0 && self.snapshot_due.inputs_since > 0 => {
                    self.snapshot_or_log().await;
                }
                request = inbox.requests.recv() => match request {
                    Some(Request::Input { answer, expires_at, .. }) if expires_at <= tokio::time::Instant::now() => {
                        metrics::counter!("payperplay_runtime_requests_expired_total").increment(1);
                        answer(Err(RuntimeError::Expired));
                    }
                    Some(Request::Input { input, answer, request, .. }) => match self.handle_request(input, request).await {
                        Ok(Ok(())) => answer(Ok(&self.core)),
                        Ok(Err(rejection)) => answer(Err(RuntimeError::Rejected(rejection))),
                        Err(error) => {
                            let (told, kept) = split_error(error);
                            answer(Err(told));
                            return Err(kept);
                        }
                    },
                    Some(Request::Query { expires_at, .. }) if expires_at <= tokio::time::Instant::now() => {
                        metrics::counter!("payperplay_runtime_requests_expired_total").increment(1);
                    }
                    Some(Request::Query { query, .. }) => query(&self.core),
                    None => return Ok(()),
                },
                observation = inbox.observations.recv() => match observation {
                    Some(input) => {
                        if let Err(rejection) = self.journal_and_handle(input).await? {
                            tracing::debug!(%rejection, "observation rejected");
                        }
                    }
                    None => return Ok(()),
                },
                _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
            }
        }
    }

    /// Appends `input` to the journal, handles it (a panic quarantines it), carries
    /// out what follows. Errors: `Store` when the append failed (nothing happened),
    /// `OutcomeUnknown` when the input was journaled but what follows failed (the
    /// next recovery replays it), `Quarantined` when the core panicked on it.
    pub(super) async fn journal_and_handle(&mut self, input: Input) -> Result<Result<(), Rejection>, RuntimeError> {
        let now = self.deps.clock.now();
        let seq = self.next_seq;
        let request = self.pending_request.take();
        self.deps
            .store
            .append_journal_with(
                seq,
                now,
                &serde_json::to_value(&input).map_err(StoreError::from)?,
                request,
            )
            .await?;
        self.next_seq += 1;
        let hook = self.deps.runtime_config.input_hook.clone();
        let result = match handle_guarded(&mut self.core, hook.as_ref(), now, input) {
            Ok(result) => result,
            Err(message) => {
                self.note_outcome(request, Err(message.as_str()));
                tracing::error!(seq, %message, "input made the core panic: quarantined");
                metrics::counter!("payperplay_quarantined_inputs_total").increment(1);
                self.handle.alarms.raise(
                    AlarmKind::QuarantinedInput,
                    format!("journal {seq}"),
                    format!("the core panicked: {message}"),
                );
                if let Err(error) = self.deps.store.quarantine(seq, &message, now).await {
                    // The next recovery quarantines it when the replay panics on it.
                    tracing::error!(seq, %error, "quarantine not recorded");
                }
                return Err(RuntimeError::Quarantined { seq, message });
            }
        };
        self.note_outcome(request, Ok(&result));
        metrics::counter!("payperplay_core_inputs_total").increment(1);
        if result.is_err() {
            metrics::counter!("payperplay_core_rejections_total").increment(1);
        }
        if let Err(error) = self.after_handle(now).await {
            return Err(RuntimeError::OutcomeUnknown {
                seq: Some(seq),
                reason: error.to_string(),
            });
        }
        self.snapshot_if_due().await;
        Ok(result)
    }

    async fn after_handle(&mut self, now: Timestamp) -> Result<(), StoreError> {
        while let Some(command) = self.core.poll_command() {
            self.record_and_dispatch(command, now).await?;
        }
        while let Some(event) = self.core.poll_event() {
            self.observe_event(event, now).await?;
        }
        metrics::gauge!("payperplay_queue_len").set(self.core.queue_len() as f64);
        Ok(())
    }

    pub(super) async fn record_and_dispatch(&mut self, command: Command, now: Timestamp) -> Result<(), StoreError> {
        // A server's tier changes only while it holds no RAM, so right after the input
        // that settled it the core's tier is the RAM billed.
        let ram_mib_billed = match &command.kind {
            CommandKind::PostLedgerEntry { entry } => entry
                .server_id
                .and_then(|server_id| self.core.server(server_id))
                .map(|server| server.ram_mib),
            _ => None,
        };
        self.deps.store.record_command(&command, ram_mib_billed, now).await?;
        if let CommandKind::DeleteNode { node_id } = command.kind {
            // The node is deleting now (or lost, with its VM deleted).
            self.record_node(node_id, now).await?;
        }
        self.dispatch(command, ram_mib_billed);
        Ok(())
    }

    pub(super) fn dispatch(&self, command: Command, ram_mib_billed: Option<u32>) {
        metrics::counter!("payperplay_commands_total", "kind" => command.kind.name()).increment(1);
        // Container commands name their node by id; drivers know nodes by name.
        let node_name = match &command.kind {
            CommandKind::StartContainer { node_id, .. } | CommandKind::StopContainer { node_id, .. } => {
                node_record(&self.core, *node_id).map(|record| record.name)
            }
            _ => None,
        };
        let executor = Executor {
            deps: self.deps.clone(),
            sink: self.handle.observation_sink(),
            catalog: self.core.config().catalog.clone(),
            node_name,
            alarms: self.handle.alarms.clone(),
            ram_mib_billed,
        };
        tokio::spawn(executor.run(command));
    }

    /// Writes the node's state as the core has it now into the nodes table.
    async fn record_node(&mut self, node_id: NodeId, now: Timestamp) -> Result<(), StoreError> {
        match node_record(&self.core, node_id) {
            Some(record) => self.deps.store.upsert_node(&record, now).await,
            None => Ok(()),
        }
    }

    async fn observe_event(&mut self, event: Event, now: Timestamp) -> Result<(), StoreError> {
        tracing::debug!(?event, "core event");
        match &event {
            Event::NodeRequested { node_id, .. }
            | Event::NodeReady { node_id }
            | Event::NodeDraining { node_id, .. } => {
                self.record_node(*node_id, now).await?;
            }
            Event::NodeRemoved { node_id, reason } => {
                let removed = NodeRecordState::Removed { reason: *reason };
                match self.deps.store.set_node_state(*node_id, removed, now).await {
                    Err(StoreError::NotFound(_)) => tracing::warn!(%node_id, "removed node was never recorded"),
                    result => result?,
                }
            }
            Event::StartEnded { outcome, .. } => {
                let outcome = match outcome {
                    StartOutcome::Running => "running",
                    StartOutcome::Rejected { .. } => "rejected",
                    StartOutcome::Cancelled => "cancelled",
                };
                metrics::counter!("payperplay_starts_ended_total", "outcome" => outcome).increment(1);
            }
            Event::ServerRunning { requested_at, .. } => {
                metrics::histogram!("payperplay_start_wait_seconds").record(now.since(*requested_at) as f64 / 1000.0);
            }
            _ => {}
        }
        Ok(())
    }
}

/// What the caller of a failed input is told, and what ends the loop.
fn split_error(error: RuntimeError) -> (RuntimeError, RuntimeError) {
    let told = match &error {
        RuntimeError::Store(store_error) => RuntimeError::Store(StoreError::Unavailable(format!(
            "the input was not journaled: {store_error}"
        ))),
        RuntimeError::OutcomeUnknown { seq, reason } => RuntimeError::OutcomeUnknown {
            seq: *seq,
            reason: reason.clone(),
        },
        RuntimeError::Quarantined { seq, message } => RuntimeError::Quarantined {
            seq: *seq,
            message: message.clone(),
        },
        other => RuntimeError::Store(StoreError::Unavailable(other.to_string())),
    };
    (told, error)
}
