//! Snapshots of the core, taken under the fence: every `snapshot_every_inputs` inputs,
//! every `snapshot_every_ms` when inputs came since the last one, at the end of a
//! recovery that replayed that many inputs, and on graceful shutdown. Recovery restores
//! the newest usable one and replays only the journal after it.

use payperplay_core::SnapshotHeader;

use super::Runtime;
use crate::config::RuntimeConfig;
use crate::store::StoreError;

/// Inputs handled since the last snapshot.
#[derive(Debug, Clone, Copy)]
pub(super) struct SnapshotDue {
    pub inputs_since: u64,
}

impl SnapshotDue {
    pub fn new(inputs_since: u64) -> SnapshotDue {
        SnapshotDue { inputs_since }
    }

    /// Enough inputs came since the last snapshot for another.
    pub fn by_inputs(&self, config: &RuntimeConfig) -> bool {
        config.snapshot_every_inputs > 0 && self.inputs_since >= config.snapshot_every_inputs
    }
}

impl Runtime {
    /// Stores a snapshot of the core at the journal's end (the outputs of every input
    /// are drained by then). Fenced: a runtime that lost the lead cannot write one.
    pub(super) async fn take_snapshot(&mut self) -> Result<(), StoreError> {
        let started = crate::clock::Stopwatch::start();
        let state = serde_json::to_vec(&self.core.snapshot())?;
        let serialized_ms = started.elapsed().as_millis() as u64;
        self.deps
            .store
            .save_snapshot(self.next_seq, &SnapshotHeader::current(), &state, self.deps.clock.now())
            .await?;
        self.snapshot_due = SnapshotDue::new(0);
        tracing::info!(
            seq = self.next_seq,
            bytes = state.len(),
            serialized_ms,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot of the core stored"
        );
        metrics::counter!("payperplay_snapshots_total").increment(1);
        metrics::gauge!("payperplay_snapshot_bytes").set(state.len() as f64);
        Ok(())
    }

    /// `take_snapshot` when one is due by inputs; a failure is logged (the journal
    /// still holds everything, so nothing is lost).
    pub(super) async fn snapshot_if_due(&mut self) {
        self.snapshot_due.inputs_since += 1;
        if self.snapshot_due.by_inputs(&self.deps.runtime_config) {
            self.snapshot_or_log().await;
        }
    }

    pub(super) async fn snapshot_or_log(&mut self) {
        if let Err(error) = self.take_snapshot().await {
            tracing::warn!(%error, "snapshot not stored");
        }
    }
}
