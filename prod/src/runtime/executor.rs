//! The executor: carries out one command against the drivers (or the store, for
//! ledger entries and mail) in a task of its own, with retries and backoff; a
//! panicking driver fails the attempt. Commands the core waits for get
//! `command_attempts_max` attempts and their failure goes back to the core; ledger,
//! mail and world commands (fire-and-forget for the core: money and worlds) are
//! retried until they succeed, with capped backoff and an alarm once they have failed
//! `command_attempts_max` times. A runtime that lost its leadership stops retrying
//! (its successor re-issues what is unfinished). The outcome goes into the command log
//! and, when the core waits for it, back to the runtime as an input.

use std::sync::Arc;
use std::time::Duration;

use payperplay_core::{Command, CommandId, CommandKind, Email, Input, NodeId, ServerId, Timestamp, UserId};

use super::{AlarmKind, Alarms, RuntimeDeps};
use crate::drivers::{
    DriverError, NodeRef, ObservationSink, StartFailure, cloud_node_name, location_name, vm_type_name,
};
use crate::email;
use crate::store::{NewEmail, StoreError};

/// Carries out one command with retries, records the outcome in the command log and
/// reports it to the core when the core waits for it.
#[derive(Clone)]
pub(super) struct Executor {
    pub(super) deps: RuntimeDeps,
    pub(super) sink: ObservationSink,
    pub(super) catalog: payperplay_core::Catalog,
    /// The name of a container command's node, resolved from the core at dispatch.
    pub(super) node_name: Option<String>,
    pub(super) alarms: Arc<Alarms>,
    /// The RAM a ledger command bills (for its usage row).
    pub(super) ram_mib_billed: Option<u32>,
}

/// The longest wait between two attempts of a command retried until it succeeds.
const RETRY_BACKOFF_MS_MAX: u64 = 60_000;

impl Executor {
    pub(super) async fn run(self, command: Command) {
        let attempts_max = self.deps.runtime_config.command_attempts_max;
        // What the core does not wait for (ledger entries, mail, worlds) is never
        // given up on.
        let until_success = !command.kind.awaits_result();
        let alarm_subject = format!("command {}", command.id);
        let mut attempts = 0u32;
        let outcome = loop {
            if self.deps.store.is_deposed() {
                tracing::warn!(command_id = %command.id, "no longer leading: the next leader carries this command out");
                return;
            }
            attempts += 1;
            // Each attempt runs in its own task: a driver that panics fails this
            // attempt (and is retried) instead of losing the command.
            let attempt = {
                let executor = self.clone();
                let command = command.clone();
                tokio::spawn(async move { executor.perform(&command).await })
            };
            let result = match attempt.await {
                Ok(result) => result,
                Err(join_error) => {
                    metrics::counter!("payperplay_driver_panics_total").increment(1);
                    Err(DriverError::Transient(format!("driver task ended: {join_error}")))
                }
            };
            let reason = match result {
                Ok(()) => break Ok(()),
                Err(error) if error.is_retried() && attempts < attempts_max => error.to_string(),
                Err(error) if until_success => {
                    let reason = error.to_string();
                    if attempts >= attempts_max {
                        self.alarms.raise(
                            AlarmKind::CommandRetrying,
                            alarm_subject.clone(),
                            format!(
                                "{} failed {attempts} times, still retrying: {reason}",
                                command.kind.name()
                            ),
                        );
                    }
                    reason
                }
                Err(error) => break Err(error),
            };
            if self.deps.store.is_deposed() {
                continue;
            }
            let backoff_ms = self
                .deps
                .runtime_config
                .command_retry_backoff_ms
                .saturating_mul(1 << (attempts - 1).min(16))
                .min(RETRY_BACKOFF_MS_MAX);
            tracing::warn!(command_id = %command.id, attempts, %reason, backoff_ms, "command failed, retrying");
            tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
        };
        self.alarms.clear(AlarmKind::CommandRetrying, &alarm_subject);
        let now = self.deps.clock.now();
        let error_text = outcome.as_ref().err().map(DriverError::to_string);
        let error = error_text.as_deref();
        if let Err(store_error) = self
            .deps
            .store
            .finish_command(command.id.0 as i64, outcome.is_ok(), attempts, error, now)
            .await
        {
            tracing::error!(command_id = %command.id, %store_error, "command outcome not recorded");
        }
        if let Err(reason) = &outcome {
            tracing::error!(command_id = %command.id, kind = command.kind.name(), %reason, "command failed");
        }
        if let CommandKind::StartContainer { server_id, .. } = &command.kind {
            self.record_start_outcome(*server_id, outcome.as_ref().err(), now).await;
        }
        if command.kind.awaits_result() {
            let input = match outcome {
                Ok(()) => Input::CommandSucceeded { command_id: command.id },
                Err(error) => Input::CommandFailed {
                    command_id: command.id,
                    kind: error.failure_kind(),
                    reason: error.to_string(),
                },
            };
            self.sink.observe(input).await;
        }
    }

    async fn perform(&self, command: &Command) -> Result<(), DriverError> {
        let drivers = &self.deps.drivers;
        match &command.kind {
            CommandKind::ProvisionNode {
                node_id,
                server_type: vm_type,
                location,
            } => {
                let vm_type_name = vm_type_name(&self.catalog, *vm_type)
                    .ok_or_else(|| DriverError::Permanent(format!("VM type {} not in the catalog", vm_type.0)))?;
                let location_name = location_name(&self.catalog, *location)
                    .ok_or_else(|| DriverError::Permanent(format!("location {} not in the catalog", location.0)))?;
                let provider_ref = drivers
                    .cloud
                    .create_node(command.id, *node_id, vm_type_name, location_name)
                    .await?;
                let name = cloud_node_name(&self.catalog, *node_id, *vm_type, *location);
                self.deps
                    .store
                    .set_node_provider_ref(*node_id, &name, &provider_ref, self.deps.clock.now())
                    .await
                    .map_err(transient)
            }
            CommandKind::DeleteNode { node_id } => drivers.cloud.delete_node(command.id, *node_id).await,
            CommandKind::StartContainer {
                server_id,
                node_id,
                ram_mib,
                restore_world,
            } => {
                drivers
                    .containers
                    .start_container(
                        command.id,
                        *server_id,
                        self.node_ref(*node_id)?,
                        *ram_mib,
                        *restore_world,
                        self.sink.clone(),
                    )
                    .await
            }
            CommandKind::StopContainer { server_id, node_id, .. } => {
                drivers
                    .containers
                    .stop_container(command.id, *server_id, self.node_ref(*node_id)?)
                    .await
            }
            CommandKind::ArchiveWorld { server_id } => drivers.containers.archive_world(command.id, *server_id).await,
            CommandKind::DeleteWorld { server_id } => drivers.containers.delete_world(command.id, *server_id).await,
            CommandKind::PostLedgerEntry { entry } => {
                let posted = self
                    .deps
                    .store
                    .post_ledger_entry_billed(
                        Some(command.id.0 as i64),
                        entry,
                        self.ram_mib_billed,
                        self.deps.clock.now(),
                    )
                    .await
                    .map_err(transient)?;
                if posted {
                    metrics::counter!("payperplay_ledger_entries_total").increment(1);
                }
                Ok(())
            }
            CommandKind::SendEmail { user_id, email } => self.queue_mail(command.id, *user_id, email).await,
        }
    }

    /// Keeps a failed start's kind, node and message for the server view; a start
    /// that succeeded clears it.
    async fn record_start_outcome(&self, server_id: ServerId, error: Option<&DriverError>, now: Timestamp) {
        let server_id = server_id.0 as i64;
        let written = match error {
            None => self.deps.store.clear_start_failure(server_id).await,
            Some(error) => {
                let failure = StartFailure::of(error, self.node_name.as_deref().unwrap_or("unknown"));
                self.deps.store.record_start_failure(server_id, &failure, now).await
            }
        };
        if let Err(store_error) = written {
            tracing::warn!(server = server_id, %store_error, "start outcome not recorded for the server view");
        }
    }

    fn node_ref(&self, node_id: NodeId) -> Result<NodeRef, DriverError> {
        let name = self
            .node_name
            .clone()
            .ok_or_else(|| DriverError::Permanent(format!("node {node_id} is not known to the core")))?;
        Ok(NodeRef { id: node_id, name })
    }

    async fn queue_mail(&self, command_id: CommandId, user_id: UserId, mail: &Email) -> Result<(), DriverError> {
        let user = self.deps.store.user_by_id(user_id.0 as i64).await.map_err(transient)?;
        let (kind, subject, body) = email::render_core_mail(mail, &self.deps.public_base_url);
        self.deps
            .store
            .enqueue_email(
                &NewEmail {
                    user_id: user.id,
                    command_id: Some(command_id.0 as i64),
                    kind,
                    recipient: &user.email,
                    subject: &subject,
                    body: &body,
                },
                self.deps.clock.now(),
            )
            .await
            .map_err(transient)?;
        self.deps.mail_wakeup.notify_one();
        Ok(())
    }
}

fn transient(error: StoreError) -> DriverError {
    DriverError::Transient(error.to_string())
}
