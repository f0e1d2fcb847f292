//! The runtime loop: one task owns the core. Inputs from the API (requests) and from
//! drivers (observations, command results) arrive over channels; each is appended to
//! the journal in Postgres, then handled; the commands the core issues are recorded
//! in the command log and carried out by drivers in their own tasks, whose results
//! come back as inputs. On start the core is rebuilt by replaying the journal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use payperplay_core::{
    Command, CommandId, CommandKind, Core, CoreConfig, Email, Event, Input, NodeKind, Rejection, ServerId, Timestamp,
    UserId,
};
use tokio::sync::{Mutex, Notify, mpsc, oneshot, watch};

use crate::clock::Clock;
use crate::config::{FleetConfig, RuntimeConfig};
use crate::drivers::{DriverError, Drivers, ObservationSink};
use crate::email;
use crate::store::{NewEmail, Store, StoreError};

/// Journal rows read per query while replaying.
const REPLAY_PAGE_ROWS: i64 = 5_000;
/// How long the loop sleeps at most before looking at the clock again (so a clock
/// moved by hand in tests, or a timer armed for later, is noticed).
const TIMER_RECHECK_MS_MAX: u64 = 1_000;
/// How long an API request waits for room in the input channel.
const SUBMIT_WAIT_MS_MAX: u64 = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("rejected: {0}")]
    Rejected(Rejection),
    #[error("runtime input queue is full")]
    Busy,
    #[error("runtime is not running")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
}

type QueryFn = Box<dyn FnOnce(&Core) + Send>;

enum Request {
    Input {
        input: Input,
        reply: oneshot::Sender<Result<(), RuntimeError>>,
    },
    Query(QueryFn),
}

/// The receiving ends; they outlive a crashed runtime task so its successor can take
/// over without the API noticing more than a short 503.
pub struct Inbox {
    requests: mpsc::Receiver<Request>,
    observations: mpsc::Receiver<Input>,
}

/// How the API and drivers talk to the runtime.
#[derive(Clone)]
pub struct RuntimeHandle {
    requests: mpsc::Sender<Request>,
    observations: mpsc::Sender<Input>,
    ready: Arc<AtomicBool>,
}

pub fn channel(capacity: usize) -> (RuntimeHandle, Arc<Mutex<Inbox>>) {
    let (requests_tx, requests) = mpsc::channel(capacity);
    let (observations_tx, observations) = mpsc::channel(capacity);
    (
        RuntimeHandle {
            requests: requests_tx,
            observations: observations_tx,
            ready: Arc::new(AtomicBool::new(false)),
        },
        Arc::new(Mutex::new(Inbox { requests, observations })),
    )
}

impl RuntimeHandle {
    /// Journals and handles `input`; returns the core's verdict.
    pub async fn submit(&self, input: Input) -> Result<(), RuntimeError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send_timeout(
                Request::Input { input, reply },
                Duration::from_millis(SUBMIT_WAIT_MS_MAX),
            )
            .await
            .map_err(|error| match error {
                mpsc::error::SendTimeoutError::Timeout(_) => RuntimeError::Busy,
                mpsc::error::SendTimeoutError::Closed(_) => RuntimeError::Stopped,
            })?;
        answer.await.map_err(|_| RuntimeError::Stopped)?
    }

    /// Runs `f` against the core inside the runtime task and returns its answer.
    pub async fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Core) -> R + Send + 'static,
    ) -> Result<R, RuntimeError> {
        let (reply, answer) = oneshot::channel();
        let query: QueryFn = Box::new(move |core| {
            let _ = reply.send(f(core));
        });
        self.requests
            .send_timeout(Request::Query(query), Duration::from_millis(SUBMIT_WAIT_MS_MAX))
            .await
            .map_err(|error| match error {
                mpsc::error::SendTimeoutError::Timeout(_) => RuntimeError::Busy,
                mpsc::error::SendTimeoutError::Closed(_) => RuntimeError::Stopped,
            })?;
        answer.await.map_err(|_| RuntimeError::Stopped)
    }

    pub fn observation_sink(&self) -> ObservationSink {
        ObservationSink::new(self.observations.clone())
    }

    /// True once the journal is replayed and the loop takes inputs.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// What the runtime needs from the outside, passed in explicitly.
#[derive(Clone)]
pub struct RuntimeDeps {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub drivers: Drivers,
    pub mail_wakeup: Arc<Notify>,
    pub core_config: CoreConfig,
    pub runtime_config: RuntimeConfig,
    pub fleet: FleetConfig,
    pub public_base_url: String,
}

pub struct Runtime {
    core: Core,
    deps: RuntimeDeps,
    handle: RuntimeHandle,
    next_seq: i64,
    /// Commands whose result the core waits for and has not had, by id.
    in_flight: BTreeMap<CommandId, Command>,
    /// Holds the journal's advisory lock while the runtime lives: one owner of the
    /// core per database, across processes. Dropping it closes the connection, which
    /// releases the lock.
    _journal_lock: sqlx::PgConnection,
}

/// Advisory lock key of the journal (any fixed number; "PPPJRNL" in ASCII).
const JOURNAL_LOCK_KEY: i64 = 0x0050_5050_4a52_4e4c;
/// Takes the journal lock on a connection of its own (not returned to the pool).
async fn lock_journal(store: &Store, wait_ms_max: u64) -> Result<sqlx::PgConnection, StoreError> {
    let mut connection = store.pool.acquire().await?.detach();
    let mut waited_ms = 0;
    loop {
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(JOURNAL_LOCK_KEY)
            .fetch_one(&mut connection)
            .await?;
        if locked {
            return Ok(connection);
        }
        if waited_ms >= wait_ms_max {
            return Err(StoreError::JournalLocked);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited_ms += 100;
    }
}

impl Runtime {
    /// Rebuilds the core from the journal, re-issues commands that were not finished,
    /// adds configured dedicated nodes that the core does not know, and reconciles
    /// users and servers between the database and the core.
    pub async fn recover(deps: RuntimeDeps, handle: RuntimeHandle) -> Result<Runtime, StoreError> {
        handle.ready.store(false, Ordering::SeqCst);
        let journal_lock = lock_journal(&deps.store, deps.runtime_config.journal_lock_wait_ms).await?;
        let started = crate::clock::Stopwatch::start();
        let mut core = Core::new(deps.core_config.clone());
        let recorded_command_id_max: i64 = sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(id) FROM commands")
            .fetch_one(&deps.store.pool)
            .await
            .map_err(StoreError::from)?
            .unwrap_or(0);
        let mut in_flight: BTreeMap<CommandId, Command> = BTreeMap::new();
        let mut unrecorded: Vec<Command> = Vec::new();
        let mut last_seq = 0i64;
        let mut n_replayed = 0u64;
        deps.store
            .for_each_journal_row(REPLAY_PAGE_ROWS, |row| -> Result<(), StoreError> {
                assert_eq!(row.seq, last_seq + 1, "journal has no gaps");
                last_seq = row.seq;
                let input: Input = serde_json::from_value(row.input)?;
                if let Input::CommandSucceeded { command_id } | Input::CommandFailed { command_id, .. } = &input {
                    in_flight.remove(command_id);
                }
                let _ = core.handle(Timestamp(row.at_ms as u64), input);
                while let Some(command) = core.poll_command() {
                    if command.kind.awaits_result() {
                        in_flight.insert(command.id, command);
                    } else if command.id.0 as i64 > recorded_command_id_max {
                        unrecorded.push(command);
                    }
                }
                while core.poll_event().is_some() {}
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
        let now = deps.clock.now();
        deps.store
            .record_runtime_start(last_seq + 1, &serde_json::to_value(&deps.core_config)?, now)
            .await?;
        let mut runtime = Runtime {
            core,
            deps,
            handle,
            next_seq: last_seq + 1,
            in_flight: BTreeMap::new(),
            _journal_lock: journal_lock,
        };
        // Fire-and-forget commands recorded but not finished before the stop.
        let pending: Vec<serde_json::Value> =
            sqlx::query_scalar("SELECT command FROM commands WHERE status = 'pending' ORDER BY id")
                .fetch_all(&runtime.deps.store.pool)
                .await
                .map_err(StoreError::from)?;
        for value in pending {
            let command: Command = serde_json::from_value(value)?;
            if !command.kind.awaits_result() {
                runtime.dispatch(command);
            }
        }
        for command in unrecorded {
            runtime.record_and_dispatch(command, now).await?;
        }
        for (_, command) in std::mem::take(&mut in_flight) {
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
        let live_ids: std::collections::BTreeSet<u64> = live.iter().map(|server| server.id as u64).collect();
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

    /// Appends `input` to the journal, handles it, carries out what follows.
    async fn journal_and_handle(&mut self, input: Input) -> Result<Result<(), Rejection>, StoreError> {
        let now = self.deps.clock.now();
        let seq = self.next_seq;
        self.deps
            .store
            .append_journal(seq, now, &serde_json::to_value(&input)?)
            .await?;
        self.next_seq += 1;
        if let Input::CommandSucceeded { command_id } | Input::CommandFailed { command_id, .. } = &input {
            self.in_flight.remove(command_id);
        }
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

    async fn record_and_dispatch(&mut self, command: Command, now: Timestamp) -> Result<(), StoreError> {
        self.deps
            .store
            .record_command(
                command.id.0 as i64,
                command.kind.name(),
                &serde_json::to_value(&command)?,
                now,
            )
            .await?;
        if command.kind.awaits_result() {
            self.in_flight.insert(command.id, command.clone());
        }
        self.dispatch(command);
        Ok(())
    }

    fn dispatch(&self, command: Command) {
        metrics::counter!("payperplay_commands_total", "kind" => command.kind.name()).increment(1);
        let executor = Executor {
            deps: self.deps.clone(),
            sink: self.handle.observation_sink(),
            catalog: self.core.config().catalog.clone(),
        };
        tokio::spawn(executor.run(command));
    }

    async fn observe_event(&mut self, event: Event, now: Timestamp) -> Result<(), StoreError> {
        tracing::debug!(?event, "core event");
        let store = &self.deps.store;
        match &event {
            Event::NodeRequested { node_id, .. } | Event::NodeReady { node_id } => {
                if let Some(node) = self.core.node(*node_id) {
                    let (kind, name) = match &node.kind {
                        NodeKind::Dedicated { name, .. } => ("dedicated", name.clone()),
                        NodeKind::Cloud { server_type, location } => {
                            let catalog = &self.core.config().catalog;
                            let type_name = catalog
                                .server_types
                                .get(server_type.0 as usize)
                                .map_or("unknown", |t| t.name.as_str());
                            let location = catalog
                                .locations
                                .get(location.0 as usize)
                                .map_or("unknown", String::as_str);
                            ("cloud", format!("ppp-node-{node_id}-{type_name}-{location}"))
                        }
                    };
                    let state = if matches!(event, Event::NodeReady { .. }) {
                        "ready"
                    } else {
                        "provisioning"
                    };
                    store
                        .upsert_node(node_id.0 as i64, kind, &name, node.is_system, None, state, now)
                        .await?;
                }
            }
            Event::NodeRemoved { node_id, reason } => {
                let state = serde_json::to_value(reason)?;
                let state = state.as_str().unwrap_or("removed").to_string();
                store
                    .set_node_state(node_id.0 as i64, &format!("removed_{state}"), now)
                    .await?;
            }
            Event::StartEnded { outcome, .. } => {
                let outcome = match outcome {
                    payperplay_core::StartOutcome::Running => "running",
                    payperplay_core::StartOutcome::Rejected { .. } => "rejected",
                    payperplay_core::StartOutcome::Cancelled => "cancelled",
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
                let _ = self.journal_and_handle(Input::Timeout).await?;
                continue;
            }
            let wait_ms = self
                .core
                .poll_timeout()
                .map_or(TIMER_RECHECK_MS_MAX, |at| at.since(now).min(TIMER_RECHECK_MS_MAX));
            tokio::select! {
                _ = shutdown.changed() => {}
                request = inbox.requests.recv() => match request {
                    Some(Request::Input { input, reply }) => {
                        let result = self.journal_and_handle(input).await;
                        match result {
                            Ok(verdict) => {
                                let _ = reply.send(verdict.map_err(RuntimeError::Rejected));
                            }
                            Err(error) => {
                                let _ = reply.send(Err(RuntimeError::Store(StoreError::Unavailable(
                                    "journal append failed".to_string(),
                                ))));
                                return Err(error);
                            }
                        }
                    }
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
}

/// Carries out one command with retries, records the outcome in the command log and
/// reports it to the core when the core waits for it.
#[derive(Clone)]
struct Executor {
    deps: RuntimeDeps,
    sink: ObservationSink,
    catalog: payperplay_core::Catalog,
}

impl Executor {
    async fn run(self, command: Command) {
        let attempts_max = self.deps.runtime_config.command_attempts_max;
        let mut attempts = 0u32;
        let outcome = loop {
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
            match result {
                Ok(()) => break Ok(()),
                Err(DriverError::Transient(reason)) if attempts < attempts_max => {
                    let backoff_ms = self
                        .deps
                        .runtime_config
                        .command_retry_backoff_ms
                        .saturating_mul(1 << (attempts - 1).min(16));
                    tracing::warn!(command_id = %command.id, attempts, %reason, backoff_ms, "command failed, retrying");
                    tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                }
                Err(error) => break Err(error.to_string()),
            }
        };
        let now = self.deps.clock.now();
        let error = outcome.as_ref().err().map(String::as_str);
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
        if command.kind.awaits_result() {
            let input = match outcome {
                Ok(()) => Input::CommandSucceeded { command_id: command.id },
                Err(reason) => Input::CommandFailed {
                    command_id: command.id,
                    reason,
                    kind: payperplay_core::FailureKind::Other,
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
                server_type,
                location,
            } => {
                let type_name = self
                    .catalog
                    .server_types
                    .get(server_type.0 as usize)
                    .map(|t| t.name.clone())
                    .ok_or_else(|| DriverError::Permanent("server type not in catalog".into()))?;
                let location_name = self
                    .catalog
                    .locations
                    .get(location.0 as usize)
                    .cloned()
                    .ok_or_else(|| DriverError::Permanent("location not in catalog".into()))?;
                let reference = drivers
                    .cloud
                    .create_node(command.id, *node_id, &type_name, &location_name)
                    .await?;
                self.deps
                    .store
                    .upsert_node(
                        node_id.0 as i64,
                        "cloud",
                        &format!("ppp-node-{node_id}-{type_name}-{location_name}"),
                        false,
                        Some(&reference),
                        "provisioned",
                        self.deps.clock.now(),
                    )
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
                        *node_id,
                        *ram_mib,
                        *restore_world,
                        self.sink.clone(),
                    )
                    .await
            }
            CommandKind::StopContainer { server_id, node_id, .. } => {
                drivers
                    .containers
                    .stop_container(command.id, *server_id, *node_id)
                    .await
            }
            CommandKind::ArchiveWorld { server_id } => drivers.containers.archive_world(command.id, *server_id).await,
            CommandKind::DeleteWorld { server_id } => drivers.containers.delete_world(command.id, *server_id).await,
            CommandKind::PostLedgerEntry { entry } => {
                let posted = self
                    .deps
                    .store
                    .post_ledger_entry(Some(command.id.0 as i64), entry, self.deps.clock.now())
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
