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
use super::handle::{Inbox, Request};
use super::{Runtime, RuntimeError};
use crate::drivers::cloud_node_name;
use crate::store::{NodeRecord, NodeRecordState, StoreError};

/// How long the loop sleeps at most before looking at the clock again (so a clock
/// moved by hand in tests, or a timer armed for later, is noticed).
const TIMER_RECHECK_MS_MAX: u64 = 1_000;

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
    /// The loop. Returns `Ok` on shutdown; an error (database gone, another runtime
    /// writing the journal) ends the task and its supervisor restarts it, which
    /// replays the journal again.
    pub async fn run(
        mut self,
        inbox: Arc<Mutex<Inbox>>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        let mut inbox = inbox.lock().await;
        self.handle.ready.store(true, Ordering::SeqCst);
        tracing::info!(next_seq = self.next_seq, "runtime ready");
        let result = self.run_loop(&mut inbox, &mut shutdown).await;
        self.handle.ready.store(false, Ordering::SeqCst);
        result
    }

    async fn run_loop(&mut self, inbox: &mut Inbox, shutdown: &mut watch::Receiver<bool>) -> Result<(), StoreError> {
        loop {
            if *shutdown.borrow() {
                tracing::info!("runtime stopping");
                return Ok(());
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
                request = inbox.requests.recv() => match request {
                    Some(Request::Input { input, answer }) => match self.journal_and_handle(input).await {
                        Ok(Ok(())) => answer(Ok(&self.core)),
                        Ok(Err(rejection)) => answer(Err(RuntimeError::Rejected(rejection))),
                        Err(error) => {
                            answer(Err(RuntimeError::Store(StoreError::Unavailable(
                                "journal append failed".to_string(),
                            ))));
                            return Err(error);
                        }
                    },
                    Some(Request::Query(query)) => query(&self.core),
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

    /// Appends `input` to the journal, handles it, carries out what follows.
    pub(super) async fn journal_and_handle(&mut self, input: Input) -> Result<Result<(), Rejection>, StoreError> {
        let now = self.deps.clock.now();
        let seq = self.next_seq;
        self.deps
            .store
            .append_journal(seq, now, &serde_json::to_value(&input)?)
            .await?;
        self.next_seq += 1;
        let result = self.core.handle(now, input);
        metrics::counter!("payperplay_core_inputs_total").increment(1);
        if result.is_err() {
            metrics::counter!("payperplay_core_rejections_total").increment(1);
        }
        self.after_handle(now).await?;
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
        self.deps.store.record_command(&command, now).await?;
        if let CommandKind::DeleteNode { node_id } = command.kind {
            // The node is deleting now (or lost, with its VM deleted).
            self.record_node(node_id, now).await?;
        }
        self.dispatch(command);
        Ok(())
    }

    pub(super) fn dispatch(&self, command: Command) {
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
