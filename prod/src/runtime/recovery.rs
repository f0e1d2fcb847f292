//! Start-up: the journal lock and leadership epoch (a standby waits here for the
//! leader to go), the replay that rebuilds the core (skipping quarantined inputs, and
//! quarantining one that panics), the re-issue of commands that were not finished
//! before the stop, reconciliation of users, servers and dedicated nodes between the
//! database, the configuration and the core, and the balance check.
//!
//! The replay runs under the recorded rules: it starts from the newest usable snapshot
//! (or an empty core under the first recorded configuration), and at each runtime
//! start's first sequence number the core is reconfigured to the configuration
//! recorded with it. Every stretch it replays must have been recorded by this core
//! version; one of another version is refused (`RecoveryError::CoreVersion`). The
//! configuration of this start then takes effect at the journal's end and is recorded
//! there.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use payperplay_core::{
    Command, Core, CoreConfig, Input, NodeKind, ServerId, Snapshot, SnapshotHeader, Timestamp, UserId,
};

use super::handle::RecoveryPhase;
use super::{AlarmKind, RecoveryError, Runtime, RuntimeDeps, RuntimeError, RuntimeHandle, handle_guarded};
use crate::store::{LockWait, RuntimeStart, StoreError};

/// Journal rows read per query while replaying.
const REPLAY_PAGE_ROWS: i64 = 5_000;
/// A replay that meets a panicking input quarantines it and starts again from the
/// beginning (the core it was building is not to be trusted); this many times at most.
const REPLAY_RESTARTS_MAX: u32 = 16;

/// What the replay found to carry out again.
struct Replayed {
    core: Core,
    next_seq: i64,
    /// Journal rows handled (after the snapshot it started from, if any).
    n_replayed: u64,
    /// Quarantined rows skipped (after the snapshot it started from).
    n_skipped: u64,
    /// Commands the core waits for a result of (issued again: drivers are idempotent).
    awaited: Vec<Command>,
    /// Fire-and-forget commands issued after the last one in the command log.
    unrecorded: Vec<Command>,
}

enum ReplayError {
    Store(StoreError),
    Recovery(RecoveryError),
    Panicked { seq: i64, message: String },
}

impl From<RecoveryError> for ReplayError {
    fn from(error: RecoveryError) -> Self {
        ReplayError::Recovery(error)
    }
}

impl From<StoreError> for ReplayError {
    fn from(error: StoreError) -> Self {
        ReplayError::Store(error)
    }
}

impl Runtime {
    /// Takes the journal lock (waiting as `wait` says: a standby waits until the
    /// leader goes) and a new leadership epoch, rebuilds the core from the journal,
    /// re-issues commands that were not finished, adds configured dedicated nodes that
    /// the core does not know, reconciles users and servers between the database and
    /// the core, and checks every balance against its ledger.
    pub async fn recover(deps: RuntimeDeps, handle: RuntimeHandle, wait: LockWait) -> Result<Runtime, RuntimeError> {
        handle.ready.store(false, Ordering::SeqCst);
        handle.progress.set_phase(RecoveryPhase::Standby);
        let holder = format!("pid {}", std::process::id());
        let journal_lock = deps.store.lock_journal(wait, &holder, deps.clock.now()).await?;
        let mut deps = deps;
        deps.store = deps.store.fenced(journal_lock.epoch);
        handle.progress.set_phase(RecoveryPhase::Replaying);
        let mut replayed = replay(&deps, &handle).await?;
        handle.progress.set_phase(RecoveryPhase::Reconciling);
        let now = deps.clock.now();
        // This start's configuration takes effect here, at the journal's end (refused,
        // naming the field, when the state cannot take it), and is recorded there.
        let recorded_command_id_max = deps.store.command_id_max().await?;
        replayed
            .core
            .reconfigure(now, deps.core_config.clone())
            .map_err(|error| RecoveryError::Reconfigure {
                seq: replayed.next_seq,
                error,
            })?;
        while let Some(command) = replayed.core.poll_command() {
            if !command.kind.awaits_result() && command.id.0 > recorded_command_id_max {
                replayed.unrecorded.push(command);
            }
        }
        while replayed.core.poll_event().is_some() {}
        deps.store
            .record_runtime_start(
                replayed.next_seq,
                &serde_json::to_value(&deps.core_config).map_err(StoreError::from)?,
                now,
            )
            .await?;
        let replayed_skipped = replayed.n_skipped;
        let mut runtime = Runtime {
            core: replayed.core,
            deps,
            handle,
            next_seq: replayed.next_seq,
            journal_lock,
            pending_request: None,
            snapshot_due: super::snapshots::SnapshotDue::new(replayed.n_replayed),
        };
        // Fire-and-forget commands recorded but not finished before the stop, and
        // ledger, mail and world commands that failed: carried out until they succeed.
        for (command, ram_mib_billed) in runtime.deps.store.pending_commands().await? {
            if !command.kind.awaits_result() {
                runtime.dispatch(command, ram_mib_billed);
            }
        }
        for command in replayed.unrecorded.into_iter().chain(replayed.awaited) {
            match runtime.record_and_dispatch(command, now).await {
                Ok(()) => {}
                // Only after a quarantined input was skipped can the replay issue a
                // command under an id recorded for another: not carried out, an alarm.
                Err(StoreError::CommandIdCollision { command_id, what }) => runtime.handle.alarms.raise(
                    AlarmKind::QuarantinedInput,
                    format!("command {command_id}"),
                    format!("replay issued another {what} under this recorded id: not carried out"),
                ),
                Err(error) => return Err(error.into()),
            }
        }
        runtime.reconcile().await?;
        runtime.check_balances().await?;
        // A long replay is not repeated on the next start, nor one that skipped a
        // quarantined input: the commands the core issued after a skipped input may
        // differ from those recorded (a row that panics only under newer code, were
        // CORE_VERSION not bumped); from the snapshot on, the state is this one.
        if replayed_skipped > 0 || runtime.snapshot_due.by_inputs(&runtime.deps.runtime_config) {
            runtime.take_snapshot().await?;
        }
        // Requests may be sent from now on: the loop takes them up when it starts.
        runtime.handle.progress.set_phase(RecoveryPhase::Ready);
        runtime.handle.ready.store(true, Ordering::SeqCst);
        Ok(runtime)
    }

    /// Checks every user's balance against their ledger: the database's balance must
    /// equal the sum of the user's entries, and the core's must equal that sum plus
    /// the entries the core issued that are not posted yet. A mismatch is an alarm
    /// naming the user; a balance that agrees again clears it.
    pub(super) async fn check_balances(&mut self) -> Result<(), StoreError> {
        let audits = self.deps.store.balance_audit().await?;
        let mut mismatched = Vec::new();
        for audit in audits {
            let core_micros = self
                .core
                .user(UserId(audit.user_id as u64))
                .map(|user| user.balance_micros);
            let expected_core_micros = audit.ledger_micros + audit.unposted_micros;
            let mut problems = Vec::new();
            if audit.balance_micros != audit.ledger_micros {
                problems.push(format!(
                    "stored balance {} but ledger sum {}",
                    audit.balance_micros, audit.ledger_micros
                ));
            }
            if let Some(core_micros) = core_micros
                && core_micros != expected_core_micros
            {
                problems.push(format!(
                    "core balance {core_micros} but ledger sum {} plus {} not yet posted",
                    audit.ledger_micros, audit.unposted_micros
                ));
            }
            if !problems.is_empty() {
                let subject = format!("user {}", audit.user_id);
                self.handle
                    .alarms
                    .raise(AlarmKind::BalanceMismatch, subject.clone(), problems.join("; "));
                mismatched.push(subject);
            }
        }
        self.handle.alarms.retain(AlarmKind::BalanceMismatch, &mismatched);
        Ok(())
    }

    /// Brings the core in line with the database and the configured fleet: users and
    /// live servers it does not know are added, servers deleted in the database are
    /// deleted, configured dedicated nodes it does not have are added.
    async fn reconcile(&mut self) -> Result<(), RuntimeError> {
        let mut inputs = Vec::new();
        for user_id in self.deps.store.all_user_ids().await? {
            if self.core.user(UserId(user_id as u64)).is_none() {
                inputs.push(Input::RegisterUser {
                    user_id: UserId(user_id as u64),
                });
            }
        }
        let live = self.deps.store.all_live_servers().await?;
        let live_ids: BTreeSet<u64> = live.iter().map(|server| server.id as u64).collect();
        for server in &live {
            if self.core.server(ServerId(server.id as u64)).is_none() {
                inputs.push(Input::CreateServer {
                    server_id: ServerId(server.id as u64),
                    owner: UserId(server.owner_id as u64),
                    ram_mib: server.ram_mib as u32,
                });
            }
        }
        for (server_id, _) in self.core.servers() {
            if !live_ids.contains(&server_id.0) {
                inputs.push(Input::DeleteServer { server_id });
            }
        }
        for node in &self.deps.fleet.dedicated_nodes {
            let known = self
                .core
                .nodes()
                .any(|existing| matches!(&existing.kind, NodeKind::Dedicated { name, .. } if *name == node.name));
            if !known {
                inputs.push(Input::AddDedicatedNode {
                    name: node.name.clone(),
                    capacity_mib: node.capacity_mib,
                    monthly_cost_micros: node.monthly_cost_micros,
                    is_system: node.is_system,
                });
            }
        }
        for input in inputs {
            tracing::info!(?input, "reconciling");
            if let Err(rejection) = self.journal_and_handle(input).await? {
                tracing::warn!(%rejection, "reconciling input rejected");
            }
        }
        Ok(())
    }
}

/// Replays the whole journal into a new core, skipping quarantined inputs (each an
/// alarm). An input that panics is quarantined and the replay starts again.
async fn replay(deps: &RuntimeDeps, handle: &RuntimeHandle) -> Result<Replayed, RuntimeError> {
    for _ in 0..=REPLAY_RESTARTS_MAX {
        let quarantined = deps.store.quarantined().await?;
        for row in &quarantined {
            handle.alarms.raise(
                AlarmKind::QuarantinedInput,
                format!("journal {}", row.seq),
                format!("skipped on replay: {}", row.error),
            );
        }
        let skipped: BTreeSet<i64> = quarantined.iter().map(|row| row.seq).collect();
        match replay_once(deps, handle, &skipped).await {
            Ok(replayed) => return Ok(replayed),
            Err(ReplayError::Store(error)) => return Err(error.into()),
            Err(ReplayError::Recovery(error)) => return Err(error.into()),
            Err(ReplayError::Panicked { seq, message }) => {
                tracing::error!(seq, %message, "replayed input made the core panic: quarantined, replaying again");
                metrics::counter!("payperplay_quarantined_inputs_total").increment(1);
                deps.store.quarantine(seq, &message, deps.clock.now()).await?;
            }
        }
    }
    Err(RuntimeError::Store(StoreError::Unavailable(format!(
        "the replay met more than {REPLAY_RESTARTS_MAX} panicking inputs"
    ))))
}

async fn replay_once(
    deps: &RuntimeDeps,
    handle: &RuntimeHandle,
    skipped: &BTreeSet<i64>,
) -> Result<Replayed, ReplayError> {
    let started = crate::clock::Stopwatch::start();
    let starts = deps.store.runtime_starts().await?;
    let journal_seq_max = deps.store.journal_seq_max().await?;
    let (mut core, first_seq) = starting_point(deps, &starts, journal_seq_max).await?;
    check_versions(&starts, first_seq, journal_seq_max)?;
    let recorded_command_id_max = deps.store.command_id_max().await?;
    handle.progress.journal_len.store(journal_seq_max, Ordering::SeqCst);
    handle.progress.replayed.store(first_seq - 1, Ordering::SeqCst);
    let hook = deps.runtime_config.input_hook.as_ref();
    let mut unrecorded: Vec<Command> = Vec::new();
    let mut last_seq = first_seq - 1;
    let mut n_replayed = 0u64;
    let mut n_skipped = 0u64;
    // The runtime starts at or after the starting point, each reconfiguring the core
    // at its first sequence number.
    let mut next_start = starts.partition_point(|start| start.first_seq < first_seq);
    let mut take_outputs = |core: &mut Core| {
        core.drain(
            |command| {
                // Awaited commands are asked of the core once the replay is done.
                if !command.kind.awaits_result() && command.id.0 > recorded_command_id_max {
                    unrecorded.push(command);
                }
            },
            |_event| {},
        )
    };
    deps.store
        .for_each_journal_row_from(first_seq, REPLAY_PAGE_ROWS, |row| -> Result<(), ReplayError> {
            assert_eq!(row.seq, last_seq + 1, "journal has no gaps");
            last_seq = row.seq;
            handle.progress.replayed.store(row.seq, Ordering::SeqCst);
            while let Some(start) = starts.get(next_start).filter(|start| start.first_seq <= row.seq) {
                reconfigure_at(&mut core, start)?;
                take_outputs(&mut core);
                next_start += 1;
            }
            if skipped.contains(&row.seq) {
                n_skipped += 1;
                return Ok(());
            }
            let input: Input = serde_json::from_value(row.input).map_err(StoreError::from)?;
            // A rejected input was rejected when it was journaled too: replaying it
            // changes nothing, so the verdict is not needed here.
            match handle_guarded(&mut core, hook, Timestamp(row.at_ms as u64), input) {
                Ok(Ok(())) => {}
                Ok(Err(rejection)) => {
                    tracing::trace!(seq = row.seq, %rejection, "replayed input rejected, as before");
                }
                Err(message) => return Err(ReplayError::Panicked { seq: row.seq, message }),
            }
            take_outputs(&mut core);
            n_replayed += 1;
            Ok(())
        })
        .await?;
    // Starts after the last input (a run that handled nothing) still reconfigured.
    for start in &starts[next_start..] {
        reconfigure_at(&mut core, start)?;
        take_outputs(&mut core);
    }
    tracing::info!(
        first_seq,
        n_replayed,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "journal replayed"
    );
    metrics::counter!("payperplay_journal_replayed_inputs_total").increment(n_replayed);
    // New commands get ids the command log has not seen (they differ from the
    // replayed ones only when a quarantined input was skipped).
    core.reserve_command_ids_through(payperplay_core::CommandId(recorded_command_id_max));
    let awaited = core.awaited_commands();
    Ok(Replayed {
        core,
        next_seq: last_seq + 1,
        n_replayed,
        n_skipped,
        awaited,
        unrecorded,
    })
}

/// The configuration recorded with a runtime start.
fn recorded_config(start: &RuntimeStart) -> Result<CoreConfig, RecoveryError> {
    serde_json::from_value(start.core_config.clone()).map_err(|error| RecoveryError::RecordedConfig {
        seq: start.first_seq,
        reason: error.to_string(),
    })
}

/// Reconfigures the core to the configuration recorded with `start` (it took effect
/// there when it was recorded, so it is accepted again).
fn reconfigure_at(core: &mut Core, start: &RuntimeStart) -> Result<(), RecoveryError> {
    let at = Timestamp(u64::try_from(start.started_at_ms).unwrap_or(0));
    core.reconfigure(at, recorded_config(start)?)
        .map_err(|error| RecoveryError::Reconfigure {
            seq: start.first_seq,
            error,
        })
}

/// Where the replay starts: the newest snapshot that can be restored and that the
/// journal continues (its format known, no pruned row after it), else an empty core
/// under the first recorded configuration (the current one when none is recorded) at
/// the journal's first row, which must be 1.
async fn starting_point(
    deps: &RuntimeDeps,
    starts: &[RuntimeStart],
    journal_seq_max: i64,
) -> Result<(Core, i64), ReplayError> {
    let journal_seq_min = deps.store.journal_seq_min().await?;
    for info in deps.store.snapshots().await? {
        let continues = info.seq <= journal_seq_max + 1 && (journal_seq_min == 0 || journal_seq_min <= info.seq);
        if !continues {
            tracing::warn!(
                seq = info.seq,
                journal_seq_min,
                journal_seq_max,
                "snapshot not continued by the journal: not used"
            );
            continue;
        }
        let header = SnapshotHeader {
            format_version: info.format_version as u32,
            core_version: info.core_version as u32,
            crate_version: info.crate_version.clone(),
        };
        if let Err(error) = header.check() {
            tracing::warn!(seq = info.seq, %error, "snapshot not used");
            continue;
        }
        let state = deps.store.snapshot_state(info.seq).await?;
        let restored = serde_json::from_slice::<Snapshot>(&state)
            .map_err(|error| error.to_string())
            .and_then(|snapshot| Core::restore(snapshot).map_err(|error| error.to_string()));
        match restored {
            Ok(core) => {
                tracing::info!(
                    seq = info.seq,
                    taken_at_ms = info.taken_at_ms,
                    "restored the core from a snapshot"
                );
                return Ok((core, info.seq));
            }
            Err(error) => tracing::warn!(seq = info.seq, %error, "snapshot does not restore: not used"),
        }
    }
    if journal_seq_min > 1 {
        return Err(RecoveryError::JournalPruned {
            first_seq: journal_seq_min,
        }
        .into());
    }
    let config = match starts.first() {
        Some(start) => recorded_config(start)?,
        None => deps.core_config.clone(),
    };
    Ok((Core::new(config), 1))
}

/// Every journal stretch from `first_seq` to `journal_seq_max` must have been recorded
/// by this core version.
fn check_versions(starts: &[RuntimeStart], first_seq: i64, journal_seq_max: i64) -> Result<(), RecoveryError> {
    for (i, start) in starts.iter().enumerate() {
        let end_seq = starts.get(i + 1).map_or(journal_seq_max, |next| next.first_seq - 1);
        let (from_seq, to_seq) = (start.first_seq.max(first_seq), end_seq.min(journal_seq_max));
        if from_seq <= to_seq && start.core_version != payperplay_core::CORE_VERSION as i32 {
            return Err(RecoveryError::CoreVersion {
                from_seq: start.first_seq,
                to_seq: end_seq,
                recorded: start.core_version,
                recorded_crate: start.crate_version.clone(),
                ours: payperplay_core::CORE_VERSION,
                ours_crate: payperplay_core::CRATE_VERSION,
                next_seq: end_seq + 1,
            });
        }
    }
    Ok(())
}
