//! Driver traits: how the runtime carries out the core's commands against the world.
//! The real Docker, SSH and Hetzner drivers come later; here the container runtime
//! and the cloud provider are in-process fakes with the same shape. Every driver
//! call is idempotent by the command's id (the real ones key on deterministic names
//! and labels), because a command may be carried out again after a restart.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use payperplay_core::{CommandId, Input, NodeId, ServerId};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum DriverError {
    /// Worth retrying (network, rate limit, 5xx).
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying will not help (invalid input, resource sold out).
    #[error("permanent: {0}")]
    Permanent(String),
}

/// Where drivers report what they observe later (a server booted, a container died).
/// Passed per call, so no driver holds a reference back into the runtime.
#[derive(Clone)]
pub struct ObservationSink {
    tx: tokio::sync::mpsc::Sender<Input>,
}

impl ObservationSink {
    pub fn new(tx: tokio::sync::mpsc::Sender<Input>) -> Self {
        ObservationSink { tx }
    }

    /// Waits while the runtime is busy; drops the observation if it is gone.
    pub async fn observe(&self, input: Input) {
        if self.tx.send(input).await.is_err() {
            tracing::warn!("runtime gone, observation dropped");
        }
    }
}

/// What the cloud provider must be able to do (Hetzner Cloud later).
pub trait CloudProvider: Send + Sync + 'static {
    /// Creates the VM for `node_id` (deterministic name, labels) and returns when it is
    /// ready to take containers. "Already exists" counts as success.
    fn create_node<'a>(
        &'a self,
        command_id: CommandId,
        node_id: NodeId,
        server_type: &'a str,
        location: &'a str,
    ) -> BoxFuture<'a, Result<String, DriverError>>;

    /// Deletes the VM of `node_id`. "Already deleted" counts as success.
    fn delete_node(&self, command_id: CommandId, node_id: NodeId) -> BoxFuture<'_, Result<(), DriverError>>;
}

/// What a container engine on a node must be able to do (Docker over SSH later).
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Starts the server's container; returns once it runs. Reports
    /// `Input::ServerBooted` through `sink` when Minecraft accepts players.
    fn start_container(
        &self,
        command_id: CommandId,
        server_id: ServerId,
        node_id: NodeId,
        ram_mib: u32,
        restore_world: bool,
        sink: ObservationSink,
    ) -> BoxFuture<'_, Result<(), DriverError>>;

    /// Stops the container with the world saved; returns once it has exited.
    fn stop_container(
        &self,
        command_id: CommandId,
        server_id: ServerId,
        node_id: NodeId,
    ) -> BoxFuture<'_, Result<(), DriverError>>;

    fn archive_world(&self, command_id: CommandId, server_id: ServerId) -> BoxFuture<'_, Result<(), DriverError>>;

    fn delete_world(&self, command_id: CommandId, server_id: ServerId) -> BoxFuture<'_, Result<(), DriverError>>;
}

#[derive(Clone)]
pub struct Drivers {
    pub cloud: Arc<dyn CloudProvider>,
    pub containers: Arc<dyn ContainerRuntime>,
}

/// In-process fake of a cloud provider: VMs are ready after `provision_ms`.
#[derive(Debug, Default)]
pub struct FakeCloud {
    pub provision_ms: u64,
    /// node id → provider reference of VMs that exist.
    pub vms: Mutex<BTreeMap<NodeId, String>>,
    /// Fail this many create calls before succeeding (fault injection for tests).
    pub fail_creates: Mutex<u32>,
}

impl FakeCloud {
    pub fn new(provision_ms: u64) -> Self {
        FakeCloud {
            provision_ms,
            ..FakeCloud::default()
        }
    }
}

impl CloudProvider for FakeCloud {
    fn create_node<'a>(
        &'a self,
        _command_id: CommandId,
        node_id: NodeId,
        server_type: &'a str,
        location: &'a str,
    ) -> BoxFuture<'a, Result<String, DriverError>> {
        Box::pin(async move {
            {
                let mut fail = self.fail_creates.lock().expect("not poisoned");
                if *fail > 0 {
                    *fail -= 1;
                    return Err(DriverError::Transient("injected failure".to_string()));
                }
            }
            tokio::time::sleep(Duration::from_millis(self.provision_ms)).await;
            let reference = format!("fake-{server_type}-{location}-node-{node_id}");
            self.vms
                .lock()
                .expect("not poisoned")
                .insert(node_id, reference.clone());
            Ok(reference)
        })
    }

    fn delete_node(&self, _command_id: CommandId, node_id: NodeId) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async move {
            self.vms.lock().expect("not poisoned").remove(&node_id);
            Ok(())
        })
    }
}

/// In-process fake of a container engine: containers run at once, Minecraft
/// "boots" after `boot_ms`.
#[derive(Debug, Default)]
pub struct FakeContainers {
    pub boot_ms: u64,
    /// server id → node id of running containers.
    pub running: Mutex<BTreeMap<ServerId, NodeId>>,
    pub archived: Mutex<std::collections::BTreeSet<ServerId>>,
}

impl FakeContainers {
    pub fn new(boot_ms: u64) -> Self {
        FakeContainers {
            boot_ms,
            ..FakeContainers::default()
        }
    }
}

impl ContainerRuntime for FakeContainers {
    fn start_container(
        &self,
        _command_id: CommandId,
        server_id: ServerId,
        node_id: NodeId,
        _ram_mib: u32,
        restore_world: bool,
        sink: ObservationSink,
    ) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async move {
            if restore_world {
                self.archived.lock().expect("not poisoned").remove(&server_id);
            }
            self.running.lock().expect("not poisoned").insert(server_id, node_id);
            let boot_ms = self.boot_ms;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(boot_ms)).await;
                sink.observe(Input::ServerBooted { server_id }).await;
            });
            Ok(())
        })
    }

    fn stop_container(
        &self,
        _command_id: CommandId,
        server_id: ServerId,
        _node_id: NodeId,
    ) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async move {
            self.running.lock().expect("not poisoned").remove(&server_id);
            Ok(())
        })
    }

    fn archive_world(&self, _command_id: CommandId, server_id: ServerId) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async move {
            self.archived.lock().expect("not poisoned").insert(server_id);
            Ok(())
        })
    }

    fn delete_world(&self, _command_id: CommandId, server_id: ServerId) -> BoxFuture<'_, Result<(), DriverError>> {
        Box::pin(async move {
            self.archived.lock().expect("not poisoned").remove(&server_id);
            Ok(())
        })
    }
}
