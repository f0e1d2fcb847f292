//! In-process fakes of the drivers (the real Docker, SSH and Hetzner drivers replace
//! them): a cloud whose VMs are ready after a delay, a container engine whose servers
//! "boot" after a delay. Tests read their state to see what was carried out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use payperplay_core::{CommandId, Input, NodeId, ServerId};

use super::{BoxFuture, CloudProvider, ContainerDriver, DriverError, ObservationSink};

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
        vm_type: &'a str,
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
            let reference = format!("fake-{vm_type}-{location}-node-{node_id}");
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
    pub archived: Mutex<BTreeSet<ServerId>>,
}

impl FakeContainers {
    pub fn new(boot_ms: u64) -> Self {
        FakeContainers {
            boot_ms,
            ..FakeContainers::default()
        }
    }
}

impl ContainerDriver for FakeContainers {
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
