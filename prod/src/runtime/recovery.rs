//! Start-up: the journal lock, the replay that rebuilds the core, the re-issue of
//! commands that were not finished before the stop, and reconciliation of users,
//! servers and dedicated nodes between the database, the configuration and the core.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use payperplay_core::{Command, Core, Input, NodeKind, ServerId, Timestamp, UserId};

use super::{Runtime, RuntimeDeps, RuntimeHandle};
use crate::store::StoreError;

/// Journal rows read per query while replaying.
const REPLAY_PAGE_ROWS: i64 = 5_000;

/// What the replay found to carry out again.
struct Replayed {
    core: Core,
    next_seq: i64,
    /// Commands the core waits for a result of (issued again: drivers are idempotent).
    awaited: Vec<Command>,
    /// Fire-and-forget commands issued after the last one in the command log.
    unrecorded: Vec<Command>,
}

impl Runtime {
    /// Rebuilds the core from the journal, re-issues commands that were not finished,
    /// adds configured dedicated nodes that the core does not know, and reconciles
    /// users and servers between the database and the core.
    pub async fn recover(deps: RuntimeDeps, handle: RuntimeHandle) -> Result<Runtime, StoreError> {
        handle.ready.store(false, Ordering::SeqCst);
        let journal_lock = deps
            .store
            .lock_journal(deps.runtime_config.journal_lock_wait_ms)
            .await?;
        let replayed = replay(&deps).await?;
        let now = deps.clock.now();
        deps.store
            .record_runtime_start(replayed.next_seq, &serde_json::to_value(&deps.core_config)?, now)
            .await?;
        let mut runtime = Runtime {
            core: replayed.core,
            deps,
            handle,
            next_seq: replayed.next_seq,
            _journal_lock: journal_lock,
        };
        // Fire-and-forget commands recorded but not finished before the stop.
        for command in runtime.deps.store.pending_commands().await? {
            if !command.kind.awaits_result() {
                runtime.dispatch(command);
            }
        }
        for command in replayed.unrecorded.into_iter().chain(replayed.awaited) {
            runtime.record_and_dispatch(command, now).await?;
        }
        runtime.reconcile().await?;
        Ok(runtime)
    }

    /// Brings the core in line with the database and the configured fleet: users and
    /// live servers it does not know are added, servers deleted in the database are
    /// deleted, configured dedicated nodes it does not have are added.
    async fn reconcile(&mut self) -> Result<(), StoreError> {
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

/// Replays the whole journal into a new core.
async fn replay(deps: &RuntimeDeps) -> Result<Replayed, StoreError> {
    let started = crate::clock::Stopwatch::start();
    let mut core = Core::new(deps.core_config.clone());
    let recorded_command_id_max = deps.store.command_id_max().await?;
    let mut unrecorded: Vec<Command> = Vec::new();
    let mut last_seq = 0i64;
    let mut n_replayed = 0u64;
    deps.store
        .for_each_journal_row(REPLAY_PAGE_ROWS, |row| -> Result<(), StoreError> {
            assert_eq!(row.seq, last_seq + 1, "journal has no gaps");
            last_seq = row.seq;
            let input: Input = serde_json::from_value(row.input)?;
            // A rejected input was rejected when it was journaled too: replaying it
            // changes nothing, so the verdict is not needed here.
            if let Err(rejection) = core.handle(Timestamp(row.at_ms as u64), input) {
                tracing::trace!(seq = row.seq, %rejection, "replayed input rejected, as before");
            }
            core.drain(
                |command| {
                    // Awaited commands are asked of the core once the replay is done.
                    if !command.kind.awaits_result() && command.id.0 > recorded_command_id_max {
                        unrecorded.push(command);
                    }
                },
                |_event| {},
            );
            n_replayed += 1;
            Ok(())
        })
        .await?;
    tracing::info!(
        n_replayed,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "journal replayed"
    );
    metrics::counter!("payperplay_journal_replayed_inputs_total").increment(n_replayed);
    let awaited = core.awaited_commands();
    Ok(Replayed {
        core,
        next_seq: last_seq + 1,
        awaited,
        unrecorded,
    })
}
