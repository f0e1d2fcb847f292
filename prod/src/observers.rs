//! Observers: the core learns what happens on the nodes, never assumes it. One
//! supervised task per node with an engine; every observation is an `Input` through
//! the runtime's observation channel, journaled like any other.
//!
//! - **Exits**: the engine's event stream (die, OOM) → `ContainerExited`, for the
//!   container the server is tracked in only (a stop we asked for is untracked first).
//! - **Nodes**: the health probe (engine ping, version, free disk) every
//!   `probe_interval_ms`; its answer is the node's engine status (admin nodes view);
//!   `probe_misses_max` misses in a row → `NodeLost`; a lost dedicated node whose probe
//!   answers again → `NodeAnswered` (the core takes it back).
//! - **Players**: each running server every `player_poll_interval_ms`, by status ping
//!   or (`player_count_source = "rcon"`) RCON `list` → `PlayerCount` when the count
//!   differs from the core's.
//! - **Reconcile**: at start and every `reconcile_interval_ms`, the node's containers by
//!   label against the core: what the core knows is adopted (a booting server gets its
//!   readiness watch again), what it does not know is stopped and removed after
//!   `unknown_grace_ms`, a running server without a running container is reported
//!   exited.
//!
//! Readiness (`ServerBooted`) is watched by `NodeFleet::watch_readiness`, armed by the
//! start command and by reconciliation.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use payperplay_core::{Input, NodeId, NodeState, ServerId, ServerState};
use payperplay_nodes::{ContainerEventKind, NodeDriver};
use tokio::sync::watch;

use crate::clock::Stopwatch;
use crate::config::PlayerCountSource;
use crate::drivers::docker::{EngineStatus, NodeFleet, TrackedContainer, core_node_id};
use crate::drivers::{ObservationSink, docker::driver_error};
use crate::runtime::{RuntimeError, RuntimeHandle};

/// Status pings of one node's running servers in flight at once.
const PLAYER_PINGS_IN_FLIGHT_MAX: usize = 32;
/// Pause before subscribing to a node's event stream again after it ended.
const EVENTS_RESUBSCRIBE_MS: u64 = 1_000;
/// Bound on one health probe (an SSH connect to a dead host may hang longer).
const PROBE_TIMEOUT_MS_MAX: u64 = 10_000;
/// Bound on one RCON `list` (connect, login, command).
const RCON_LIST_TIMEOUT_MS: u64 = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum ObserverError {
    #[error("node {node}: observer cannot reach the runtime: {source}")]
    Runtime { node: String, source: RuntimeError },
}

/// A server placed on the node, as the core sees it.
#[derive(Debug, Clone)]
struct PlacedServer {
    server_id: ServerId,
    state: ServerState,
    players: u32,
    /// A start or stop command is in flight.
    command_pending: bool,
}

/// The core's view of one node: its id (when the core has it) and its servers.
#[derive(Debug, Clone, Default)]
struct NodeView {
    node_id: Option<NodeId>,
    node_state: Option<NodeState>,
    servers: Vec<PlacedServer>,
}

async fn node_view(handle: &RuntimeHandle, name: &str) -> Result<NodeView, ObserverError> {
    let node_name = name.to_string();
    handle
        .query(move |core| {
            let Some(node_id) = core_node_id(core, &node_name) else {
                return NodeView::default();
            };
            let servers = core
                .servers()
                .filter(|(_, server)| server.node == Some(node_id))
                .map(|(server_id, server)| PlacedServer {
                    server_id,
                    state: server.state,
                    players: server.players,
                    command_pending: server.pending_command.is_some(),
                })
                .collect();
            NodeView {
                node_id: Some(node_id),
                node_state: core.node(node_id).map(|node| node.state),
                servers,
            }
        })
        .await
        .map_err(|source| ObserverError::Runtime {
            node: name.to_string(),
            source,
        })
}

/// Starts a supervised observer per node of the fleet.
pub fn spawn(
    fleet: Arc<NodeFleet>,
    handle: RuntimeHandle,
    shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    fleet
        .node_names()
        .into_iter()
        .map(|name| spawn_node(fleet.clone(), handle.clone(), shutdown.clone(), name))
        .collect()
}

/// Starts the supervised observer of one node (a cloud VM's once it joined the fleet);
/// it ends when the node leaves the fleet.
pub fn spawn_node(
    fleet: Arc<NodeFleet>,
    handle: RuntimeHandle,
    shutdown: watch::Receiver<bool>,
    name: String,
) -> tokio::task::JoinHandle<()> {
    let task_shutdown = shutdown.clone();
    tokio::spawn(crate::supervise::supervise("node-observer", shutdown, move || {
        let driver = fleet.driver(&name);
        let observer = driver.map(|driver| NodeObserver {
            fleet: fleet.clone(),
            driver,
            sink: handle.observation_sink(),
            handle: handle.clone(),
            name: name.clone(),
            probe_misses: 0,
            lost_reported: false,
            unknown_since: BTreeMap::new(),
        });
        let shutdown = task_shutdown.clone();
        async move {
            match observer {
                Some(observer) => observer.run(shutdown).await,
                None => Ok(()),
            }
        }
    }))
}

struct NodeObserver {
    fleet: Arc<NodeFleet>,
    driver: Arc<NodeDriver>,
    handle: RuntimeHandle,
    sink: ObservationSink,
    name: String,
    probe_misses: u32,
    lost_reported: bool,
    /// Containers the core does not know, by container id: since when.
    unknown_since: BTreeMap<String, Stopwatch>,
}

impl NodeObserver {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), ObserverError> {
        let config = self.fleet.config.clone();
        let events = tokio::spawn(watch_events(
            self.fleet.clone(),
            self.driver.clone(),
            self.handle.clone(),
            self.name.clone(),
        ));
        let _abort_events = AbortOnDrop(events);
        let mut probe = tokio::time::interval(Duration::from_millis(config.probe_interval_ms));
        let mut players = tokio::time::interval(Duration::from_millis(config.player_poll_interval_ms));
        let mut reconcile = tokio::time::interval(Duration::from_millis(config.reconcile_interval_ms));
        for interval in [&mut probe, &mut players, &mut reconcile] {
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let mut removed = self.fleet.subscribe_removed();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                _ = removed.changed() => {
                    if self.fleet.driver(&self.name).is_none() {
                        return Ok(()); // the node left the fleet (its VM was deleted)
                    }
                }
                _ = probe.tick() => {
                    if self.fleet.driver(&self.name).is_none() {
                        return Ok(()); // the node left the fleet (its VM was deleted)
                    }
                    self.probe().await?
                }
                _ = reconcile.tick() => {
                    if self.fleet.status(&self.name).is_some_and(|status| status.ready) {
                        self.reconcile().await?;
                    }
                }
                _ = players.tick() => {
                    if self.fleet.status(&self.name).is_some_and(|status| status.ready) {
                        self.poll_players().await?;
                    }
                }
            }
        }
    }

    async fn probe(&mut self) -> Result<(), ObserverError> {
        let bound = Duration::from_millis(self.fleet.config.probe_interval_ms.clamp(1_000, PROBE_TIMEOUT_MS_MAX));
        let result = match tokio::time::timeout(bound, self.driver.probe()).await {
            Ok(result) => result.map_err(|error| error.to_string()),
            Err(_) => Err(format!(
                "node {}: health probe timed out after {} ms",
                self.name,
                bound.as_millis()
            )),
        };
        match result {
            Ok(health) => {
                let was_ready = self.fleet.status(&self.name).is_some_and(|status| status.ready);
                if !was_ready {
                    tracing::info!(node = %self.name, engine = %health.engine_version, "node engine answers");
                }
                self.probe_misses = 0;
                self.fleet.set_status(
                    &self.name,
                    EngineStatus {
                        ready: true,
                        reason: None,
                        engine_version: Some(health.engine_version),
                        disk_free_mib: Some(health.disk_free_mib),
                    },
                );
                if self.lost_reported || !was_ready {
                    // Also at the first answer after a start: the node may have been
                    // lost before this process started.
                    self.report_answering().await?;
                }
                if !was_ready {
                    // Adopt what runs there as soon as the engine answers.
                    self.reconcile().await?;
                }
            }
            Err(reason) => {
                self.probe_misses += 1;
                tracing::warn!(node = %self.name, misses = self.probe_misses, %reason, "node health probe failed");
                self.fleet.set_status(
                    &self.name,
                    EngineStatus {
                        ready: false,
                        reason: Some(reason),
                        engine_version: None,
                        disk_free_mib: None,
                    },
                );
                if self.probe_misses >= self.fleet.config.probe_misses_max && !self.lost_reported {
                    let view = node_view(&self.handle, &self.name).await?;
                    if let (Some(node_id), Some(NodeState::Ready | NodeState::Draining)) =
                        (view.node_id, view.node_state)
                    {
                        tracing::error!(node = %self.name, %node_id, misses = self.probe_misses, "node lost");
                        for server in &view.servers {
                            self.fleet.untrack(server.server_id, None);
                        }
                        self.sink.observe(Input::NodeLost { node_id }).await;
                        self.lost_reported = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// The node answers (again): a dedicated node the core holds lost is taken back
    /// (`NodeAnswered`); a lost cloud node's VM is deleted instead.
    async fn report_answering(&mut self) -> Result<(), ObserverError> {
        let node_name = self.name.clone();
        let lost_node = self
            .handle
            .query(move |core| {
                core.nodes()
                    .find(|node| {
                        node.state == NodeState::Lost
                            && matches!(&node.kind, payperplay_core::NodeKind::Dedicated { name, .. } if *name == node_name)
                    })
                    .map(|node| node.id)
            })
            .await
            .map_err(|source| ObserverError::Runtime {
                node: self.name.clone(),
                source,
            })?;
        if let Some(node_id) = lost_node {
            tracing::info!(node = %self.name, %node_id, "lost node answers again: taken back");
            self.sink.observe(Input::NodeAnswered { node_id }).await;
        }
        self.lost_reported = false;
        Ok(())
    }

    /// Reads the node's running servers' player counts; reports those that differ from
    /// the core's.
    async fn poll_players(&mut self) -> Result<(), ObserverError> {
        let view = node_view(&self.handle, &self.name).await?;
        let targets: Vec<(ServerId, u32, TrackedContainer)> = view
            .servers
            .iter()
            .filter(|server| server.state == ServerState::Running)
            .filter_map(|server| {
                let tracked = self.fleet.tracked(server.server_id)?;
                Some((server.server_id, server.players, tracked))
            })
            .collect();
        let source = self.fleet.config.player_count_source;
        let fleet = &self.fleet;
        let answers: Vec<(ServerId, u32, Option<u32>)> = futures_util::stream::iter(targets)
            .map(|(server_id, known, tracked)| async move {
                let online = match (source, tracked.rcon_address) {
                    (PlayerCountSource::Rcon, Some(rcon_address)) => {
                        match rcon_player_count(fleet, server_id, rcon_address).await {
                            Ok(players) => Some(players),
                            Err(reason) => {
                                tracing::debug!(server = %server_id, %reason, "RCON list failed: status ping instead");
                                status_player_count(tracked.game_address).await
                            }
                        }
                    }
                    _ => status_player_count(tracked.game_address).await,
                };
                (server_id, known, online)
            })
            .buffer_unordered(PLAYER_PINGS_IN_FLIGHT_MAX)
            .collect()
            .await;
        for (server_id, known, online) in answers {
            match online {
                Some(players) if players != known => {
                    tracing::debug!(server = %server_id, players, "player count changed");
                    self.sink.observe(Input::PlayerCount { server_id, players }).await;
                }
                Some(_) => {}
                None => tracing::debug!(server = %server_id, "status ping for players failed"),
            }
        }
        Ok(())
    }

    /// The node's containers against the core (the core is asked first, so a container
    /// made after the question can only look unknown, and waits out the grace period).
    async fn reconcile(&mut self) -> Result<(), ObserverError> {
        let view = node_view(&self.handle, &self.name).await?;
        if view.node_id.is_none() {
            return Ok(());
        }
        let containers = match self.driver.list().await {
            Ok(containers) => containers,
            Err(error) => {
                tracing::warn!(node = %self.name, %error, "reconcile: cannot list containers");
                return Ok(());
            }
        };
        let placed: BTreeMap<ServerId, &PlacedServer> =
            view.servers.iter().map(|server| (server.server_id, server)).collect();
        let mut seen_running = BTreeMap::new();
        let mut still_unknown = BTreeMap::new();
        for container in &containers {
            let server_id = container.server_id.map(ServerId);
            let known = server_id.and_then(|id| placed.get(&id).copied());
            match known {
                Some(server) if holds_container(server.state) => {
                    if !container.running {
                        continue;
                    }
                    seen_running.insert(server.server_id, ());
                    let Some(ports) = container.ports else { continue };
                    let tracked = TrackedContainer {
                        node: self.name.clone(),
                        container_id: container.container_id.clone(),
                        game_address: SocketAddr::new(self.driver.config().bind_address, ports.game),
                        rcon_address: Some(SocketAddr::new(self.driver.config().bind_address, ports.rcon)),
                    };
                    if matches!(server.state, ServerState::Stopping { .. }) {
                        continue;
                    }
                    if self.fleet.tracked(server.server_id).as_ref() != Some(&tracked) {
                        tracing::info!(server = %server.server_id, node = %self.name, container = %container.container_id,
                            state = server.state.name(), "reconcile: adopting container");
                        self.fleet.track(server.server_id, tracked);
                    }
                    if server.state == ServerState::Starting && !server.command_pending {
                        // Booting when the shell stopped: watch it reach running.
                        self.fleet.watch_readiness(server.server_id, self.sink.clone());
                    }
                }
                _ => {
                    let since = self
                        .unknown_since
                        .remove(&container.container_id)
                        .unwrap_or_else(Stopwatch::start);
                    if since.elapsed() >= Duration::from_millis(self.fleet.config.unknown_grace_ms) {
                        self.remove_unknown(container.server_id, &container.container_id).await;
                    } else {
                        still_unknown.insert(container.container_id.clone(), since);
                    }
                }
            }
        }
        self.unknown_since = still_unknown;
        for server in &view.servers {
            let should_run = server.state == ServerState::Running
                || (server.state == ServerState::Starting && !server.command_pending);
            if should_run && !seen_running.contains_key(&server.server_id) {
                if !self.fleet.claim_exit_report(server.server_id, None) {
                    // Already reported; the core has not caught up with it yet.
                    continue;
                }
                tracing::warn!(server = %server.server_id, node = %self.name, state = server.state.name(),
                    "reconcile: the core's server has no running container");
                self.sink
                    .observe(Input::ContainerExited {
                        server_id: server.server_id,
                    })
                    .await;
            }
        }
        Ok(())
    }

    async fn remove_unknown(&self, server_id: Option<u64>, container_id: &str) {
        let Some(server_id) = server_id else {
            tracing::warn!(node = %self.name, container = container_id, "reconcile: a platform container without a server label; left alone");
            return;
        };
        tracing::warn!(node = %self.name, server = server_id, container = container_id,
            "reconcile: removing a container the core does not know");
        if let Err(error) = self.driver.stop(server_id).await {
            tracing::warn!(node = %self.name, server = server_id, error = %driver_error(error), "stopping an unknown container failed");
        }
        if let Err(error) = self.driver.remove(server_id).await {
            tracing::warn!(node = %self.name, server = server_id, %error, "removing an unknown container failed");
        }
    }
}

/// Players online by status ping; `None` when it does not answer.
async fn status_player_count(game_address: SocketAddr) -> Option<u32> {
    payperplay_nodes::ready::status(game_address)
        .await
        .ok()
        .map(|report| u32::try_from(report.players_online.max(0)).unwrap_or(u32::MAX))
}

/// Players online by RCON `list`.
async fn rcon_player_count(fleet: &NodeFleet, server_id: ServerId, rcon_address: SocketAddr) -> Result<u32, String> {
    let password = fleet
        .rcon_password(server_id)
        .await
        .map_err(|error| error.to_string())?;
    payperplay_nodes::ready::players_by_rcon(rcon_address, &password, Duration::from_millis(RCON_LIST_TIMEOUT_MS))
        .await
        .map_err(|error| error.to_string())
}

/// States in which a server's container belongs on its node.
fn holds_container(state: ServerState) -> bool {
    matches!(
        state,
        ServerState::Starting | ServerState::Running | ServerState::Stopping { .. }
    )
}

/// The node's engine events, subscribed again whenever the stream ends.
async fn watch_events(fleet: Arc<NodeFleet>, driver: Arc<NodeDriver>, handle: RuntimeHandle, name: String) {
    let sink = handle.observation_sink();
    let mut since_unix_s: Option<u64> = None;
    loop {
        match driver.events(since_unix_s).await {
            Ok(stream) => {
                let mut stream = std::pin::pin!(stream);
                while let Some(item) = stream.next().await {
                    let event = match item {
                        Ok(event) => event,
                        Err(error) => {
                            tracing::warn!(node = %name, %error, "event stream failed");
                            break;
                        }
                    };
                    if let Some(time_ns) = event.engine_time_unix_ns {
                        since_unix_s = Some(u64::try_from(time_ns / 1_000_000_000).unwrap_or(0));
                    }
                    let Some(server_id) = event.server_id.map(ServerId) else {
                        continue;
                    };
                    match event.kind {
                        ContainerEventKind::OutOfMemory => {
                            metrics::counter!("payperplay_container_oom_total").increment(1);
                            tracing::warn!(node = %name, server = %server_id, "container ran out of memory");
                        }
                        ContainerEventKind::Died { exit_code } => {
                            if fleet.claim_exit_report(server_id, Some(&event.container_id)) {
                                tracing::warn!(node = %name, server = %server_id, ?exit_code, "container exited on its own");
                                metrics::counter!("payperplay_container_exits_total").increment(1);
                                sink.observe(Input::ContainerExited { server_id }).await;
                            }
                        }
                    }
                }
            }
            Err(error) => tracing::debug!(node = %name, %error, "cannot subscribe to engine events"),
        }
        tokio::time::sleep(Duration::from_millis(EVENTS_RESUBSCRIBE_MS)).await;
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
