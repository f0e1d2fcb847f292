//! The real container driver: servers' containers on the nodes' Docker engines,
//! reached through their local unix socket or through SSH (`payperplay_nodes`).
//!
//! [`NodeFleet`] holds one `NodeDriver` per configured node, what the observers last
//! learned of each engine ([`EngineStatus`], shown in the admin nodes view) and the
//! container each server currently runs in (so an exit is reported once, and only for
//! the container the core is waiting on). [`DockerContainers`] carries out the core's
//! container commands; the RCON password of a server is made at its first start and
//! kept sealed in the store (`SecretBox`). Node errors keep their kind: transient and
//! unreachable ones are retried by the executor, permanent ones are not.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use payperplay_core::{CommandId, Input, NodeId, ServerId};
use payperplay_nodes::{
    EngineEndpoint, FailureKind, NodeConfig, NodeDriver, NodeError, SecretBox, ServerSpec, SshConfig, SshConnection,
    generate_rcon_password,
};

use super::{BoxFuture, ContainerDriver, DriverError, NodeRef, ObservationSink, StartFailure, StartFailureKind};
use crate::config::{ContainersConfig, DedicatedNodeConfig, SecretsConfig};
use crate::store::Store;

/// Pause between status pings while a server boots.
pub const READY_POLL_INTERVAL_MS: u64 = 100;

/// What the observers last learned of a node's engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineStatus {
    /// The last probe answered (engine ping, version, free disk).
    pub ready: bool,
    /// Why it is not ready (the probe's error, naming node and cause).
    pub reason: Option<String>,
    pub engine_version: Option<String>,
    pub disk_free_mib: Option<u64>,
}

/// The container a server runs in now, as this process started or adopted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedContainer {
    pub node: String,
    pub container_id: String,
    /// Where its game port answers status pings.
    pub game_address: SocketAddr,
    /// Where its RCON port answers (`None`: not labelled).
    pub rcon_address: Option<SocketAddr>,
}

/// The nodes' engines and what is known of the containers on them.
pub struct NodeFleet {
    pub config: ContainersConfig,
    /// The configured nodes' engines, and cloud VMs' once they answered (`add_node`).
    drivers: Mutex<BTreeMap<String, Arc<NodeDriver>>>,
    /// Told the name of every node added after start (its observer starts then).
    added: Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>,
    /// Bumped whenever a node leaves the fleet, so its observer ends then (not at its
    /// next probe tick).
    removed: tokio::sync::watch::Sender<u64>,
    status: Mutex<BTreeMap<String, EngineStatus>>,
    tracked: Mutex<BTreeMap<ServerId, TrackedContainer>>,
    /// Containers whose readiness is being watched (one watch per container).
    watching: Mutex<BTreeSet<(ServerId, String)>>,
    /// Servers whose exit this process reported and that have not been started since
    /// (so reconciliation does not report an exit twice while the core catches up).
    exit_reported: Mutex<BTreeSet<ServerId>>,
    /// Where servers' sealed RCON passwords are kept, and the keys that open them
    /// (set by `DockerContainers::new`).
    rcon_keys: Mutex<Option<(Store, SecretBox)>>,
    /// Opened RCON passwords, so player polls by RCON do not read the store each time
    /// (a server's password never changes once made).
    rcon_passwords: Mutex<BTreeMap<ServerId, secrecy::SecretString>>,
}

impl std::fmt::Debug for NodeFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeFleet").field("nodes", &self.node_names()).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("node {node}: cannot resolve SSH host {host}:{port}: {cause}")]
    Resolve {
        node: String,
        host: String,
        port: u16,
        cause: String,
    },
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Ssh(#[from] payperplay_nodes::SshError),
    #[error("secret keys: {0}")]
    Secrets(#[from] payperplay_nodes::SecretError),
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().expect("fleet state lock not poisoned")
}

impl NodeFleet {
    /// A driver per configured node that has an `engine`. A node whose engine cannot be
    /// set up (unreadable SSH key, bad host key) is kept out, with the reason as its
    /// status: `serve` still starts.
    pub fn from_config(config: &ContainersConfig, nodes: &[DedicatedNodeConfig]) -> NodeFleet {
        let mut drivers = BTreeMap::new();
        let mut status = BTreeMap::new();
        for node in nodes {
            let Some(engine) = &node.engine else { continue };
            match node_driver(config, node, engine) {
                Ok(driver) => {
                    drivers.insert(node.name.clone(), Arc::new(driver));
                    status.insert(
                        node.name.clone(),
                        EngineStatus {
                            ready: false,
                            reason: Some("not probed yet".to_string()),
                            engine_version: None,
                            disk_free_mib: None,
                        },
                    );
                }
                Err(error) => {
                    tracing::error!(node = %node.name, %error, "node engine not usable");
                    status.insert(
                        node.name.clone(),
                        EngineStatus {
                            ready: false,
                            reason: Some(error.to_string()),
                            engine_version: None,
                            disk_free_mib: None,
                        },
                    );
                }
            }
        }
        NodeFleet {
            config: config.clone(),
            drivers: Mutex::new(drivers),
            added: Mutex::new(None),
            removed: tokio::sync::watch::Sender::new(0),
            status: Mutex::new(status),
            tracked: Mutex::new(BTreeMap::new()),
            watching: Mutex::new(BTreeSet::new()),
            exit_reported: Mutex::new(BTreeSet::new()),
            rcon_keys: Mutex::new(None),
            rcon_passwords: Mutex::new(BTreeMap::new()),
        }
    }

    /// The server's RCON password: made and sealed at its first start, opened after.
    pub async fn rcon_password(&self, server_id: ServerId) -> Result<secrecy::SecretString, DriverError> {
        if let Some(password) = lock(&self.rcon_passwords).get(&server_id) {
            return Ok(password.clone());
        }
        let password = self.open_rcon_password(server_id).await?;
        lock(&self.rcon_passwords).insert(server_id, password.clone());
        Ok(password)
    }

    async fn open_rcon_password(&self, server_id: ServerId) -> Result<secrecy::SecretString, DriverError> {
        let keys = lock(&self.rcon_keys).clone();
        let (store, secrets) = keys.ok_or_else(|| {
            DriverError::Permanent(
                "no secret key configured to seal RCON passwords (set PAYPERPLAY_SECRET_KEY)".to_string(),
            )
        })?;
        let row_id = server_id.0 as i64;
        let store_error = |error: crate::store::StoreError| DriverError::Transient(error.to_string());
        let sealed = match store.rcon_password_sealed(row_id).await.map_err(store_error)? {
            Some(sealed) => sealed,
            None => {
                let password = generate_rcon_password().map_err(|error| DriverError::Transient(error.to_string()))?;
                let sealed = secrets
                    .encrypt(row_id, &password)
                    .map_err(|error| DriverError::Transient(error.to_string()))?;
                store
                    .set_rcon_password_sealed_once(row_id, &sealed)
                    .await
                    .map_err(store_error)?
            }
        };
        secrets.decrypt(row_id, &sealed).map_err(|error| {
            DriverError::Permanent(format!("server {server_id}: RCON password cannot be opened: {error}"))
        })
    }

    /// Names of the nodes with a usable engine driver, in name order.
    pub fn node_names(&self) -> Vec<String> {
        lock(&self.drivers).keys().cloned().collect()
    }

    pub fn driver(&self, node: &str) -> Option<Arc<NodeDriver>> {
        lock(&self.drivers).get(node).cloned()
    }

    /// The engine driver a node config describes (a cloud VM's, before it is added).
    pub fn node_driver_for(&self, node: &DedicatedNodeConfig) -> Result<NodeDriver, FleetError> {
        let engine = node.engine.as_ref().ok_or_else(|| {
            FleetError::Node(NodeError::BadConfig {
                node: node.name.clone(),
                reason: "no engine to reach".to_string(),
            })
        })?;
        node_driver(&self.config, node, engine)
    }

    /// Adds a node whose engine answered (a cloud VM); a node of that name is replaced.
    /// Whoever listens to [`NodeFleet::subscribe_added`] starts its observer.
    pub fn add_node(&self, name: String, driver: Arc<NodeDriver>) {
        self.insert_node(name, driver, None);
    }

    /// Adds a node whose engine has not answered yet (a VM adopted at start or by
    /// reconciliation): not ready until its observer's first probe answers.
    pub fn add_unprobed_node(&self, name: String, driver: Arc<NodeDriver>) {
        self.insert_node(name, driver, Some("not probed yet (adopted VM)".to_string()));
    }

    /// `not_ready`: why the node is not ready yet; `None`: its engine answered.
    fn insert_node(&self, name: String, driver: Arc<NodeDriver>, not_ready: Option<String>) {
        let fresh = lock(&self.drivers).insert(name.clone(), driver).is_none();
        if fresh {
            lock(&self.status).insert(
                name.clone(),
                EngineStatus {
                    ready: not_ready.is_none(),
                    reason: not_ready,
                    engine_version: None,
                    disk_free_mib: None,
                },
            );
            if let Some(added) = lock(&self.added).as_ref() {
                let _ = added.send(name);
            }
        }
    }

    /// Removes a node (its VM is deleted); its observer ends now. True when it was there.
    pub fn remove_node(&self, name: &str) -> bool {
        lock(&self.status).remove(name);
        let removed = lock(&self.drivers).remove(name).is_some();
        if removed {
            self.removed.send_modify(|removals| *removals += 1);
        }
        removed
    }

    /// Changes whenever a node leaves the fleet (an observer then checks its own).
    pub fn subscribe_removed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.removed.subscribe()
    }

    /// The names of nodes added from now on (one listener).
    pub fn subscribe_added(&self) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *lock(&self.added) = Some(tx);
        rx
    }

    fn driver_or_error(&self, node: &str) -> Result<Arc<NodeDriver>, DriverError> {
        self.driver(node).ok_or_else(|| {
            DriverError::Permanent(format!(
                "node {node} has no usable container engine ({})",
                self.status(node)
                    .and_then(|status| status.reason)
                    .unwrap_or_else(|| "no `engine` configured".to_string())
            ))
        })
    }

    /// The engine status of every node with an `engine` configured.
    pub fn statuses(&self) -> BTreeMap<String, EngineStatus> {
        lock(&self.status).clone()
    }

    pub fn status(&self, node: &str) -> Option<EngineStatus> {
        lock(&self.status).get(node).cloned()
    }

    /// Records a probe's finding for a node of the fleet. A node removed meanwhile (its
    /// probe was under way when its VM went) stays removed: no status comes back for it.
    pub fn set_status(&self, node: &str, status: EngineStatus) {
        if let Some(known) = lock(&self.status).get_mut(node) {
            *known = status;
        }
    }

    pub fn tracked(&self, server_id: ServerId) -> Option<TrackedContainer> {
        lock(&self.tracked).get(&server_id).cloned()
    }

    /// Servers tracked on `node`, in id order.
    pub fn tracked_on(&self, node: &str) -> Vec<(ServerId, TrackedContainer)> {
        lock(&self.tracked)
            .iter()
            .filter(|(_, tracked)| tracked.node == node)
            .map(|(server_id, tracked)| (*server_id, tracked.clone()))
            .collect()
    }

    pub fn track(&self, server_id: ServerId, container: TrackedContainer) {
        lock(&self.exit_reported).remove(&server_id);
        lock(&self.tracked).insert(server_id, container);
    }

    /// Forgets the server's container if it is `container_id` (or any, with `None`);
    /// true when it was tracked. Whoever gets `true` reports the exit: once.
    pub fn untrack(&self, server_id: ServerId, container_id: Option<&str>) -> bool {
        let mut tracked = lock(&self.tracked);
        match tracked.get(&server_id) {
            Some(found) if container_id.is_none_or(|id| id == found.container_id) => {
                tracked.remove(&server_id);
                true
            }
            _ => false,
        }
    }

    /// Claims the report of an exit: true for the first claim since the server's
    /// container was last tracked (by the start command or by adoption).
    pub fn claim_exit_report(&self, server_id: ServerId, container_id: Option<&str>) -> bool {
        let was_tracked = self.untrack(server_id, container_id);
        let first = lock(&self.exit_reported).insert(server_id);
        was_tracked || (container_id.is_none() && first)
    }

    /// Watches a started container until its game port answers a status ping
    /// (`ServerBooted`), or kills it after `boot_timeout_ms` and reports it exited (the
    /// core then starts the server again). Ends quietly when the container stops being
    /// the server's tracked one (it exited, or a stop began). One watch per container.
    pub fn watch_readiness(self: &Arc<Self>, server_id: ServerId, sink: ObservationSink) {
        let Some(container) = self.tracked(server_id) else {
            return;
        };
        let key = (server_id, container.container_id.clone());
        if !lock(&self.watching).insert(key.clone()) {
            return;
        }
        let fleet = self.clone();
        tokio::spawn(async move {
            let started = crate::clock::Stopwatch::start();
            let boot_timeout = Duration::from_millis(fleet.config.boot_timeout_ms);
            loop {
                if fleet.tracked(server_id).as_ref() != Some(&container) {
                    break;
                }
                if payperplay_nodes::ready::status(container.game_address).await.is_ok() {
                    metrics::histogram!("payperplay_container_boot_seconds").record(started.elapsed().as_secs_f64());
                    sink.observe(Input::ServerBooted { server_id }).await;
                    break;
                }
                if started.elapsed() >= boot_timeout {
                    tracing::warn!(server = %server_id, node = %container.node, timeout_ms = fleet.config.boot_timeout_ms,
                        "server did not answer a status ping in time: killing its container");
                    if let Some(driver) = fleet.driver(&container.node)
                        && let Err(error) = driver.kill(server_id.0).await
                    {
                        tracing::warn!(server = %server_id, %error, "kill after a boot timeout failed");
                    }
                    if fleet.claim_exit_report(server_id, Some(&container.container_id)) {
                        sink.observe(Input::ContainerExited { server_id }).await;
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(READY_POLL_INTERVAL_MS)).await;
            }
            lock(&fleet.watching).remove(&key);
        });
    }
}

fn node_driver(
    config: &ContainersConfig,
    node: &DedicatedNodeConfig,
    engine: &crate::config::EngineConfig,
) -> Result<NodeDriver, FleetError> {
    let endpoint = match &engine.ssh {
        None => EngineEndpoint::Local {
            socket_path: engine.socket_path.clone(),
        },
        Some(ssh) => {
            let addr = (ssh.host.as_str(), ssh.port)
                .to_socket_addrs()
                .map_err(|error| error.to_string())
                .and_then(|mut addrs| addrs.next().ok_or_else(|| "no address".to_string()))
                .map_err(|cause| FleetError::Resolve {
                    node: node.name.clone(),
                    host: ssh.host.clone(),
                    port: ssh.port,
                    cause,
                })?;
            let connection = SshConnection::new(SshConfig {
                node: node.name.clone(),
                addr,
                user: ssh.user.clone(),
                key_path: PathBuf::from(&ssh.key_file),
                known_host_keys: ssh.host_keys.clone(),
                learn_host_key_on_first_use: ssh.learn_host_key_on_first_use,
            })?;
            EngineEndpoint::Ssh {
                ssh: Arc::new(connection),
                socket_path: engine.socket_path.clone(),
            }
        }
    };
    Ok(NodeDriver::new(NodeConfig {
        name: node.name.clone(),
        endpoint,
        bind_address: node.bind_address,
        game_ports: node.game_ports.first..=node.game_ports.last,
        rcon_ports_first: node.rcon_ports_first,
        platform: config.platform.clone(),
        data_path: node.data_path.clone(),
        stop_timeout_s: config.stop_timeout_s,
        stop_attempts: payperplay_nodes::driver::STOP_ATTEMPTS_DEFAULT,
    })?)
}

/// The `SecretBox` of the configured keys (the first seals); `None` without keys.
pub fn secret_box(secrets: &SecretsConfig) -> Result<Option<SecretBox>, FleetError> {
    use secrecy::ExposeSecret;
    let Some(current) = secrets.keys.first() else {
        return Ok(None);
    };
    let keys: Vec<(u32, &str)> = secrets
        .keys
        .iter()
        .map(|key| (key.id, key.key_hex.expose_secret()))
        .collect();
    Ok(Some(SecretBox::from_hex_keys(current.id, keys)?))
}

/// A node error as the executor needs it: transient and unreachable are retried.
pub fn driver_error(error: NodeError) -> DriverError {
    match error.kind() {
        FailureKind::Transient | FailureKind::NodeUnreachable => DriverError::Transient(error.to_string()),
        FailureKind::Permanent => DriverError::Permanent(error.to_string()),
    }
}

/// Runs servers' containers on the fleet's engines.
pub struct DockerContainers {
    fleet: Arc<NodeFleet>,
}

impl DockerContainers {
    pub fn new(fleet: Arc<NodeFleet>, store: Store, secrets: Option<SecretBox>) -> DockerContainers {
        *lock(&fleet.rcon_keys) = secrets.map(|secrets| (store, secrets));
        DockerContainers { fleet }
    }

    /// Refuses a start on a node whose last probe found less free disk than
    /// `disk_free_mib_min` (a container and its world would not fit).
    fn check_disk(&self, node: &str) -> Result<(), DriverError> {
        let min_mib = self.fleet.config.disk_free_mib_min;
        match self.fleet.status(node).and_then(|status| status.disk_free_mib) {
            Some(free_mib) if free_mib < min_mib => Err(DriverError::Start(StartFailure {
                kind: StartFailureKind::DiskFull,
                node: node.to_string(),
                message: format!(
                    "node {node}: only {free_mib} MiB of disk free, below the minimum of {min_mib} MiB for a new container"
                ),
            })),
            _ => Ok(()),
        }
    }
}

/// A node error of a start as its owner is shown it.
pub fn start_failure(node: &str, error: NodeError) -> DriverError {
    let kind = match &error {
        NodeError::UnknownImage { .. } => StartFailureKind::UnknownImage,
        NodeError::RefusedConfig { .. } => StartFailureKind::EngineRefused,
        NodeError::NoDisk { .. } => StartFailureKind::DiskFull,
        NodeError::NoFreePort { .. } => StartFailureKind::NoFreePort,
        other => match other.kind() {
            FailureKind::NodeUnreachable => StartFailureKind::NodeUnreachable,
            FailureKind::Transient => StartFailureKind::EngineError,
            FailureKind::Permanent => StartFailureKind::Other,
        },
    };
    DriverError::Start(StartFailure {
        kind,
        node: node.to_string(),
        message: error.to_string(),
    })
}

impl ContainerDriver for DockerContainers {
    fn game_address(&self, server_id: ServerId) -> Option<SocketAddr> {
        self.fleet.tracked(server_id).map(|container| container.game_address)
    }

    fn start_container(
        &self,
        command_id: CommandId,
        server_id: ServerId,
        node: NodeRef,
        ram_mib: u32,
        restore_world: bool,
        sink: ObservationSink,
    ) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async move {
            let driver = self.fleet.driver_or_error(&node.name)?;
            self.check_disk(&node.name)?;
            if restore_world {
                // No object storage yet: an "archived" world stays in its volume on the node.
                tracing::info!(server = %server_id, node = %node.name, "world kept in its volume; nothing to restore");
            }
            let config = &self.fleet.config;
            let spec = ServerSpec {
                server_id: server_id.0,
                command_id: command_id.0,
                ram_mib,
                software: config.software,
                version: config.version.clone(),
                motd: config.motd.clone(),
                max_players: config.max_players,
                image: config.image.clone(),
                rcon_password: self.fleet.rcon_password(server_id).await?,
                extra_env: config
                    .extra_env
                    .iter()
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect(),
            };
            let started = driver
                .start(&spec)
                .await
                .map_err(|error| start_failure(&node.name, error))?;
            tracing::info!(server = %server_id, node = %node.name, command_id = %command_id,
                container = %started.container_id, game_port = started.ports.game, created = started.created,
                "container running");
            self.fleet.track(
                server_id,
                TrackedContainer {
                    node: node.name.clone(),
                    container_id: started.container_id,
                    game_address: SocketAddr::new(driver.config().bind_address, started.ports.game),
                    rcon_address: Some(SocketAddr::new(driver.config().bind_address, started.ports.rcon)),
                },
            );
            self.fleet.watch_readiness(server_id, sink);
            Ok(())
        })
    }

    fn stop_container(
        &self,
        _command_id: CommandId,
        server_id: ServerId,
        node: NodeRef,
    ) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async move {
            let driver = self.fleet.driver_or_error(&node.name)?;
            // A stop we asked for is not a crash: the exit observer ignores it.
            self.fleet.untrack(server_id, None);
            let outcome = driver.stop(server_id.0).await.map_err(driver_error)?;
            driver.remove(server_id.0).await.map_err(driver_error)?;
            tracing::info!(server = %server_id, node = %node.name, ?outcome, "container stopped and removed");
            Ok(())
        })
    }

    fn archive_world(&self, _command_id: CommandId, server_id: ServerId) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async move {
            // No object storage yet: the world stays in its volume on its node.
            tracing::info!(server = %server_id, "archive: world kept in its volume (no object storage configured)");
            Ok(())
        })
    }

    fn delete_world(&self, _command_id: CommandId, server_id: ServerId) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async move {
            self.fleet.untrack(server_id, None);
            lock(&self.fleet.rcon_passwords).remove(&server_id);
            for name in self.fleet.node_names() {
                let driver = self.fleet.driver(&name).expect("listed");
                driver.remove(server_id.0).await.map_err(driver_error)?;
                driver.remove_world(server_id.0).await.map_err(driver_error)?;
            }
            Ok(())
        })
    }
}

/// Which core node a fleet node is: the dedicated node of that name, or the cloud node
/// whose VM name it is (`super::cloud_node_name`), that is not lost.
pub fn core_node_id(core: &payperplay_core::Core, name: &str) -> Option<NodeId> {
    let catalog = &core.config().catalog;
    core.nodes()
        .filter(|node| node.state != payperplay_core::NodeState::Lost)
        .find(|node| match &node.kind {
            payperplay_core::NodeKind::Dedicated { name: node_name, .. } => node_name == name,
            payperplay_core::NodeKind::Cloud { server_type, location } => {
                super::cloud_node_name(catalog, node.id, *server_type, *location) == name
            }
        })
        .map(|node| node.id)
}
